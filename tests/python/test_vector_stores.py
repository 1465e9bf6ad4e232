"""file_search's vector stores through the official SDK: stores, files, batches and search."""

import io
import zipfile

import openai
import pytest

MANUAL = """# Aquarium pump manual

## Cleaning the impeller
Switch the pump off and unplug it. Twist the front cover anticlockwise, pull the impeller out
and rinse it under lukewarm water. Never use soap: residues harm fish.

## Noise
A rattling pump usually has air trapped in it. Tilt it under water until the bubbles escape.

## Warranty
The pump is covered for two years from the date of purchase when used in fresh water.
"""

RECIPES = """Pancakes: mix flour, eggs and milk into a smooth batter, rest it for half an hour,
then fry thin layers in a hot buttered pan until golden on both sides.

Lemonade: squeeze six lemons, add sugar syrup and cold water, and serve over ice."""


def docx(paragraphs):
    """A minimal Word document holding these paragraphs."""
    body = "".join(f"<w:p><w:r><w:t>{p}</w:t></w:r></w:p>" for p in paragraphs)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("[Content_Types].xml",
                   '<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
                   '<Override PartName="/word/document.xml" ContentType="application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/></Types>')
        z.writestr("word/document.xml",
                   '<?xml version="1.0"?><w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main">'
                   f"<w:body>{body}</w:body></w:document>")
    return buf.getvalue()


def upload(client, name, data):
    return client.files.create(file=(name, io.BytesIO(data)), purpose="assistants")


def test_create_and_poll_then_search_finds_the_right_passage(client):
    manual = upload(client, "pump-manual.md", MANUAL.encode())
    recipes = upload(client, "recipes.txt", RECIPES.encode())
    vs = client.vector_stores.create(name="docs", file_ids=[manual.id, recipes.id])
    assert vs.object == "vector_store" and vs.name == "docs"
    assert vs.file_counts.total == 2
    # The SDK's own poll, per file, until each is read.
    for f in (manual, recipes):
        assert client.vector_stores.files.poll(f.id, vector_store_id=vs.id).status == "completed"
    vs = client.vector_stores.retrieve(vs.id)
    assert vs.status == "completed"
    assert vs.file_counts.completed == 2 and vs.file_counts.total == 2
    assert vs.usage_bytes > 0
    files = list(client.vector_stores.files.list(vector_store_id=vs.id))
    assert {f.id for f in files} == {manual.id, recipes.id}
    assert all(f.status == "completed" and f.last_error is None for f in files)
    assert files[0].chunking_strategy.type == "static"
    assert files[0].chunking_strategy.static.max_chunk_size_tokens == 800

    page = client.vector_stores.search(vector_store_id=vs.id, query="how do I wash the impeller")
    results = list(page)
    assert results, "no results"
    assert results[0].file_id == manual.id
    assert results[0].filename == "pump-manual.md"
    assert "impeller" in results[0].content[0].text
    assert 0 <= results[0].score <= 1
    assert len(results) <= 10

    content = client.vector_stores.files.content(file_id=recipes.id, vector_store_id=vs.id)
    assert "Pancakes" in "".join(c.text for c in content)


def test_upload_and_poll_batches_attributes_and_filters(client):
    vs = client.vector_stores.create(name="filtered")
    a = client.vector_stores.files.upload_and_poll(
        vector_store_id=vs.id, file=("a.txt", io.BytesIO(b"The red fox jumps over the fence.")))
    assert a.status == "completed"
    client.vector_stores.files.update(file_id=a.id, vector_store_id=vs.id, attributes={"colour": "red", "year": 2020})
    batch = client.vector_stores.file_batches.upload_and_poll(
        vector_store_id=vs.id,
        files=[("b.docx", io.BytesIO(docx(["The blue fox sleeps under the fence."])))],
    )
    assert batch.object == "vector_store.files_batch"
    assert batch.status == "completed" and batch.file_counts.completed == 1
    b_id = list(client.vector_stores.file_batches.list_files(batch_id=batch.id, vector_store_id=vs.id))[0].id
    client.vector_stores.files.update(file_id=b_id, vector_store_id=vs.id, attributes={"colour": "blue", "year": 2024})

    both = list(client.vector_stores.search(vector_store_id=vs.id, query="fox fence"))
    assert {r.file_id for r in both} == {a.id, b_id}
    blue = list(client.vector_stores.search(
        vector_store_id=vs.id, query="fox fence", filters={"type": "eq", "key": "colour", "value": "blue"}))
    assert [r.file_id for r in blue] == [b_id]
    assert blue[0].attributes == {"colour": "blue", "year": 2024}
    recent = list(client.vector_stores.search(
        vector_store_id=vs.id, query="fox",
        filters={"type": "and", "filters": [{"type": "gte", "key": "year", "value": 2021},
                                            {"type": "ne", "key": "colour", "value": "red"}]}))
    assert [r.file_id for r in recent] == [b_id]

    # Deleting a File removes it from the store.
    client.files.delete(a.id)
    left = list(client.vector_stores.files.list(vector_store_id=vs.id))
    assert [f.id for f in left] == [b_id]
    assert all(r.file_id != a.id for r in client.vector_stores.search(vector_store_id=vs.id, query="red fox"))


def test_files_that_cannot_be_read_fail_with_openais_codes(client):
    vs = client.vector_stores.create(name="bad files")
    junk = client.vector_stores.files.upload_and_poll(
        vector_store_id=vs.id, file=("junk.txt", io.BytesIO(bytes(range(256)) * 64)))
    assert junk.status == "failed" and junk.last_error.code == "invalid_file"
    exe = client.vector_stores.files.upload_and_poll(
        vector_store_id=vs.id, file=("tool.exe", io.BytesIO(b"MZ\x90\x00")))
    assert exe.status == "failed" and exe.last_error.code == "unsupported_file"
    vs = client.vector_stores.retrieve(vs.id)
    assert vs.status == "completed" and vs.file_counts.failed == 2


def test_bad_vector_store_requests_are_openai_errors(client):
    with pytest.raises(openai.NotFoundError):
        client.vector_stores.retrieve("vs_nope")
    vs = client.vector_stores.create()
    with pytest.raises(openai.BadRequestError) as e:
        client.vector_stores.search(vector_store_id=vs.id, query="x", max_num_results=51)
    assert e.value.param == "max_num_results"
    with pytest.raises(openai.BadRequestError) as e:
        client.vector_stores.files.create(vector_store_id=vs.id, file_id="file-nope")
    assert e.value.param == "file_id"
    f = upload(client, "x.txt", b"hello")
    with pytest.raises(openai.BadRequestError) as e:
        client.vector_stores.files.create(
            vector_store_id=vs.id, file_id=f.id,
            chunking_strategy={"type": "static", "static": {"max_chunk_size_tokens": 200, "chunk_overlap_tokens": 150}})
    assert e.value.param == "chunking_strategy.static.chunk_overlap_tokens"
    deleted = client.vector_stores.delete(vs.id)
    assert deleted.deleted and deleted.object == "vector_store.deleted"


def test_ask_a_manual_and_get_an_answer_citing_it(backend):
    """The cookbook's file_search flow, with both backends: upload a manual, put it in a store,
    ask an assistant with file_search, get an answer whose citation points at the manual;
    polled and streamed."""
    client, model = backend
    manual = upload(client, "pump-manual.md", MANUAL.encode())
    other = upload(client, "recipes.txt", RECIPES.encode())
    vs = client.vector_stores.create(name="manuals")
    batch = client.vector_stores.file_batches.create_and_poll(vector_store_id=vs.id, file_ids=[manual.id, other.id])
    assert batch.file_counts.completed == 2
    assistant = client.beta.assistants.create(
        model=model, instructions="Answer from the user's files.", tools=[{"type": "file_search"}],
        tool_resources={"file_search": {"vector_store_ids": [vs.id]}})
    assert assistant.tool_resources.file_search.vector_store_ids == [vs.id]
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "How do I clean the impeller?"}])
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
    assert run.status == "completed", run.last_error
    reply = client.beta.threads.messages.list(thread_id=thread.id, run_id=run.id).data[0]
    text = reply.content[0].text
    citations = [a for a in text.annotations if a.type == "file_citation"]
    assert citations, text
    assert citations[0].file_citation.file_id == manual.id
    assert text.value[citations[0].start_index:citations[0].end_index] == citations[0].text
    steps = client.beta.threads.runs.steps.list(thread_id=thread.id, run_id=run.id).data
    searches = [c for s in steps if s.type == "tool_calls" for c in s.step_details.tool_calls if c.type == "file_search"]
    assert searches and searches[0].file_search.results[0].file_id == manual.id
    assert searches[0].file_search.results[0].content is None
    with_content = client.beta.threads.runs.steps.retrieve(
        step_id=[s for s in steps if s.type == "tool_calls"][0].id, thread_id=thread.id, run_id=run.id,
        include=["step_details.tool_calls[*].file_search.results[*].content"])
    assert "impeller" in with_content.step_details.tool_calls[0].file_search.results[0].content[0].text

    # Streamed: the same question, the same kind of answer.
    client.beta.threads.messages.create(thread_id=thread.id, role="user", content="Is the pump covered by a warranty?")
    events = []
    searched = []
    with client.beta.threads.runs.stream(thread_id=thread.id, assistant_id=assistant.id) as stream:
        for event in stream:
            events.append(event.event)
            if event.event == "thread.run.step.completed" and event.data.type == "tool_calls":
                searched += [c.file_search for c in event.data.step_details.tool_calls if c.type == "file_search"]
    final = stream.get_final_run()
    assert final.status == "completed"
    assert "thread.run.step.created" in events and "thread.message.delta" in events
    (message,) = stream.get_final_messages()
    cited = [a for a in message.content[0].text.annotations if a.type == "file_citation"]
    assert cited and cited[0].file_citation.file_id == manual.id
    assert searched and searched[0].results and searched[0].results[0].content is None

    # Streamed with include[]: the step's results carry their text.
    client.beta.threads.messages.create(thread_id=thread.id, role="user", content="Why does my pump rattle?")
    searched = []
    with client.beta.threads.runs.stream(
            thread_id=thread.id, assistant_id=assistant.id,
            include=["step_details.tool_calls[*].file_search.results[*].content"]) as stream:
        for event in stream:
            if event.event == "thread.run.step.completed" and event.data.type == "tool_calls":
                searched += [c.file_search for c in event.data.step_details.tool_calls if c.type == "file_search"]
    assert stream.get_final_run().status == "completed"
    assert searched and searched[0].results
    assert "air" in " ".join(r.content[0].text for r in searched[0].results)


def test_the_file_search_tools_options_shape_its_searches(backend):
    """`max_num_results` and `ranking_options` of the tool bound what a search returns, and
    the step shows the ranking it used; out-of-range options are refused."""
    client, model = backend
    vs = client.vector_stores.create(name="two")
    a = upload(client, "pump-manual.md", MANUAL.encode())
    b = upload(client, "recipes.txt", RECIPES.encode())
    client.vector_stores.file_batches.create_and_poll(vector_store_id=vs.id, file_ids=[a.id, b.id])
    tool = {"type": "file_search",
            "file_search": {"max_num_results": 1, "ranking_options": {"score_threshold": 0.01}}}
    assistant = client.beta.assistants.create(
        model=model, tools=[tool], tool_resources={"file_search": {"vector_store_ids": [vs.id]}})
    assert assistant.tools[0].file_search.max_num_results == 1
    assert assistant.tools[0].file_search.ranking_options.ranker == "auto"
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "How do I clean the impeller?"}])
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
    assert run.status == "completed", run.last_error
    steps = client.beta.threads.runs.steps.list(thread_id=thread.id, run_id=run.id).data
    calls = [c for s in steps if s.type == "tool_calls" for c in s.step_details.tool_calls if c.type == "file_search"]
    assert calls
    assert len(calls[0].file_search.results) == 1
    assert calls[0].file_search.ranking_options.score_threshold == pytest.approx(0.01)
    assert calls[0].file_search.ranking_options.ranker == "default_2024_08_21"

    for bad, param in [
        ({"max_num_results": 0}, "tools[0].file_search.max_num_results"),
        ({"max_num_results": 51}, "tools[0].file_search.max_num_results"),
        ({"ranking_options": {"score_threshold": 1.5}}, "tools[0].file_search.ranking_options.score_threshold"),
        ({"ranking_options": {"ranker": "best", "score_threshold": 0.5}}, "tools[0].file_search.ranking_options.ranker"),
    ]:
        with pytest.raises(openai.BadRequestError) as e:
            client.beta.assistants.create(model=model, tools=[{"type": "file_search", "file_search": bad}])
        assert e.value.body["param"] == param, e.value.body
