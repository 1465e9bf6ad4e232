"""The official `openai` SDK against Oasis: the calls the Assistants cookbook makes."""

import io
import warnings

import openai
import pytest

warnings.filterwarnings("ignore", category=DeprecationWarning)


def test_files_round_trip(client):
    f = client.files.create(file=("data.csv", io.BytesIO(b"x,y\n1,2\n")), purpose="assistants")
    assert f.id.startswith("file-")
    assert (f.filename, f.bytes, f.purpose, f.object) == ("data.csv", 8, "assistants", "file")
    assert client.files.retrieve(f.id).filename == "data.csv"
    assert client.files.content(f.id).read() == b"x,y\n1,2\n"
    ids = [x.id for x in client.files.list(purpose="assistants")]
    assert f.id in ids
    deleted = client.files.delete(f.id)
    assert deleted.deleted and deleted.id == f.id
    with pytest.raises(openai.NotFoundError) as e:
        client.files.retrieve(f.id)
    assert e.value.status_code == 404
    assert f"No file found with id '{f.id}'." in str(e.value)


def test_math_tutor_assistant_and_pagination(client):
    created = []
    for i in range(5):
        a = client.beta.assistants.create(
            name=f"Math Tutor {i}",
            instructions="You are a personal math tutor. Answer questions briefly, in a sentence or less.",
            model="gpt-4o",
            tools=[{"type": "code_interpreter"}],
            metadata={"i": str(i)},
        )
        created.append(a.id)
        assert a.tools[0].type == "code_interpreter"
    a = client.beta.assistants.update(created[0], name="Renamed", tools=[{"type": "function", "function": {
        "name": "display_quiz", "description": "Displays a quiz", "parameters": {"type": "object", "properties": {}}}}])
    assert a.name == "Renamed"
    assert a.tools[0].function.name == "display_quiz"
    assert client.beta.assistants.retrieve(created[0]).name == "Renamed"
    # The SDK's auto-pagination walks every page with `after` cursors.
    page = client.beta.assistants.list(limit=2, order="asc")
    assert len(page.data) == 2 and page.has_more
    seen = [x.id for x in client.beta.assistants.list(limit=2, order="asc")]
    assert [x for x in seen if x in created] == created
    assert client.beta.assistants.delete(created[1]).deleted
    with pytest.raises(openai.NotFoundError):
        client.beta.assistants.retrieve(created[1])


def test_threads_and_messages(client):
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "I need to solve the equation `3x + 11 = 14`. Can you help me?"}])
    assert thread.id.startswith("thread_")
    msg = client.beta.threads.messages.create(thread_id=thread.id, role="user", content="Could you explain this to me?")
    assert msg.content[0].text.value == "Could you explain this to me?"
    assert msg.role == "user" and msg.thread_id == thread.id
    messages = client.beta.threads.messages.list(thread_id=thread.id, order="asc")
    assert [m.content[0].text.value for m in messages] == [
        "I need to solve the equation `3x + 11 = 14`. Can you help me?",
        "Could you explain this to me?",
    ]
    for i in range(3):
        client.beta.threads.messages.create(thread_id=thread.id, role="user", content=f"m{i}")
    texts = [m.content[0].text.value for m in client.beta.threads.messages.list(thread_id=thread.id, limit=2)]
    assert texts[:3] == ["m2", "m1", "m0"] and len(texts) == 5
    got = client.beta.threads.messages.retrieve(message_id=msg.id, thread_id=thread.id)
    assert got.id == msg.id
    upd = client.beta.threads.messages.update(message_id=msg.id, thread_id=thread.id, metadata={"k": "v"})
    assert upd.metadata == {"k": "v"}
    t = client.beta.threads.update(thread.id, metadata={"user": "abc123"})
    assert t.metadata == {"user": "abc123"}
    assert client.beta.threads.retrieve(thread.id).metadata == {"user": "abc123"}
    assert client.beta.threads.delete(thread.id).deleted
    with pytest.raises(openai.NotFoundError) as e:
        client.beta.threads.retrieve(thread.id)
    assert f"No thread found with id '{thread.id}'." in str(e.value)


def test_attachments_and_tool_resources(client):
    f = client.files.create(file=("sales.csv", io.BytesIO(b"month,revenue\nJan,1\n")), purpose="assistants")
    a = client.beta.assistants.create(model="gpt-4o", tools=[{"type": "code_interpreter"}],
                                      tool_resources={"code_interpreter": {"file_ids": [f.id]}})
    assert a.tool_resources.code_interpreter.file_ids == [f.id]
    t = client.beta.threads.create(messages=[{"role": "user", "content": "Chart it",
                                              "attachments": [{"file_id": f.id, "tools": [{"type": "code_interpreter"}]}]}])
    m = client.beta.threads.messages.list(thread_id=t.id).data[0]
    assert m.attachments[0].file_id == f.id


def test_errors_are_openai_errors(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.beta.assistants.create(model="gpt-4o", name="x" * 300)
    assert e.value.status_code == 400
    assert e.value.body["param"] == "name"
    with pytest.raises(openai.BadRequestError):
        client.beta.threads.messages.create(thread_id=client.beta.threads.create().id, role="system", content="x")
    with pytest.raises(openai.NotFoundError):
        client.beta.threads.messages.create(thread_id="thread_missing", role="user", content="x")
    with pytest.raises(openai.BadRequestError) as e:
        client.beta.assistants.create(model="gpt-4o", extra_body={"unknown_thing": 1})
    assert "Unrecognized request argument supplied: unknown_thing" in str(e.value)


def test_code_interpreter_execute_through_the_client(client):
    r = client.post("/code_interpreter/execute", body={"code": "x = 6\nx * 7"}, cast_to=object)
    assert r["status"] == "completed" and r["result"] == "42"
    r2 = client.post("/code_interpreter/execute", body={"code": "x + 1", "session_id": r["session_id"]}, cast_to=object)
    assert r2["result"] == "7"
