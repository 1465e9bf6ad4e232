"""The official `openai` SDK against Oasis: the calls the Assistants cookbook makes."""

import hashlib
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
    assert f"No such File object: {f.id}" in str(e.value)
    assert e.value.param == "id"


def test_files_created_with_expires_after_carry_their_expiry(client):
    f = client.files.create(
        file=("soon.txt", io.BytesIO(b"soon gone")),
        purpose="assistants",
        expires_after={"anchor": "created_at", "seconds": 3600},
    )
    assert f.expires_at == f.created_at + 3600
    assert client.files.retrieve(f.id).expires_at == f.expires_at
    plain = client.files.create(file=("kept.txt", io.BytesIO(b"kept")), purpose="assistants")
    assert plain.expires_at is None and plain.status_details is None
    with pytest.raises(openai.BadRequestError) as e:
        client.files.create(
            file=("x.txt", io.BytesIO(b"x")),
            purpose="assistants",
            expires_after={"anchor": "created_at", "seconds": 60},
        )
    assert (e.value.param, e.value.code) == ("expires_after.seconds", "integer_below_min_value")
    # Purposes Oasis has no API for are refused, not stored unchecked.
    with pytest.raises(openai.BadRequestError) as e:
        client.files.create(file=("batch.jsonl", io.BytesIO(b"{}\n")), purpose="batch")
    assert e.value.param == "purpose"
    for x in (f, plain):
        client.files.delete(x.id)


def test_files_list_takes_openais_limit_of_10000(client):
    made = [
        client.files.create(file=(f"{i}.txt", io.BytesIO(b"x")), purpose="user_data").id
        for i in range(3)
    ]
    page = client.files.list(limit=1000, purpose="user_data")
    assert set(made) <= {f.id for f in page.data}
    assert not page.has_more
    # The SDK walks pages of one with `after`.
    walked = [f.id for f in client.files.list(limit=1, order="asc", purpose="user_data")]
    assert [i for i in walked if i in made] == made
    with pytest.raises(openai.BadRequestError) as e:
        client.files.list(limit=10001)
    assert e.value.param == "limit"
    for i in made:
        client.files.delete(i)


def test_uploads_upload_file_chunked(client, tmp_path):
    data = bytes(range(256)) * 1000
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    up = client.uploads.upload_file_chunked(
        file=path,
        mime_type="application/octet-stream",
        purpose="assistants",
        part_size=100_000,
        md5=hashlib.md5(data).hexdigest(),
    )
    assert up.object == "upload" and up.status == "completed"
    assert (up.file.bytes, up.file.filename, up.file.purpose) == (len(data), "big.bin", "assistants")
    assert client.files.content(up.file.id).read() == data
    # From memory, in three-byte parts.
    small = client.uploads.upload_file_chunked(
        file=b"a,b\n1,2\n", filename="t.csv", bytes=8, mime_type="text/csv", purpose="user_data", part_size=3
    )
    assert client.files.content(small.file.id).read() == b"a,b\n1,2\n"
    with pytest.raises(openai.BadRequestError) as e:
        client.uploads.upload_file_chunked(
            file=b"abc", filename="x.txt", bytes=3, mime_type="text/plain", purpose="assistants", md5="0" * 32
        )
    assert e.value.param == "md5"
    # By hand: parts in any order, a File that expires, and a cancel.
    u = client.uploads.create(
        bytes=4,
        filename="c.txt",
        mime_type="text/plain",
        purpose="assistants",
        expires_after={"anchor": "created_at", "seconds": 3600},
    )
    assert (u.status, u.file, u.expires_at) == ("pending", None, u.created_at + 3600)
    cd = client.uploads.parts.create(upload_id=u.id, data=b"cd")
    ab = client.uploads.parts.create(upload_id=u.id, data=b"ab")
    assert (ab.object, ab.upload_id) == ("upload.part", u.id)
    done = client.uploads.complete(u.id, part_ids=[ab.id, cd.id])
    assert client.files.content(done.file.id).read() == b"abcd"
    assert done.file.expires_at == done.file.created_at + 3600
    with pytest.raises(openai.BadRequestError):
        client.uploads.complete(u.id, part_ids=[ab.id, cd.id])
    c = client.uploads.create(bytes=2, filename="n.txt", mime_type="text/plain", purpose="assistants")
    assert client.uploads.cancel(c.id).status == "cancelled"
    with pytest.raises(openai.BadRequestError):
        client.uploads.parts.create(upload_id=c.id, data=b"no")
    with pytest.raises(openai.NotFoundError):
        client.uploads.cancel("upload_nope")
    for x in (up, small, done):
        client.files.delete(x.file.id)


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


def test_request_ids_response_formats_and_nested_params(client):
    """The SDK's `_request_id` is set; a `json_schema` format reads back typed; a bad one is a
    400 naming the field; a nested unknown field is named by its whole path."""
    fmt = {"type": "json_schema", "json_schema": {"name": "answer", "schema": {"type": "object"}}}
    a = client.beta.assistants.create(model="oasis-local", response_format=fmt)
    assert a._request_id and a._request_id.startswith("req_")
    assert a.response_format.type == "json_schema"
    assert a.response_format.json_schema.name == "answer"
    again = client.beta.assistants.retrieve(a.id)
    assert again._request_id != a._request_id
    with pytest.raises(openai.BadRequestError) as e:
        client.beta.assistants.create(model="oasis-local", response_format={"type": "json_schema"})
    assert e.value.param == "response_format.json_schema"
    assert e.value.request_id and e.value.request_id.startswith("req_")
    with pytest.raises(openai.BadRequestError) as e:
        client.beta.threads.create_and_run(assistant_id=a.id, thread={"messages": [{"role": "user"}]})
    assert e.value.param == "thread.messages[0].content"
    assert "Missing required parameter: 'thread.messages[0].content'." in str(e.value)


def test_code_interpreter_execute_through_the_client(client):
    r = client.post("/code_interpreter/execute", body={"code": "x = 6\nx * 7"}, cast_to=object)
    assert r["status"] == "completed" and r["result"] == "42"
    r2 = client.post("/code_interpreter/execute", body={"code": "x + 1", "session_id": r["session_id"]}, cast_to=object)
    assert r2["result"] == "7"
