"""Projects through the official SDK (run by the Rust test `projects::the_python_sdk_*`, not by
the main suite): two projects' clients on one Oasis never see each other's objects, and a
project at its run limit gets the SDK's `RateLimitError`.

Keys come from OASIS_KEY_A and OASIS_KEY_B (projects `alpha` and `beta`) and OASIS_KEY_LIMITED
(project `gamma`, at most one unfinished run); the server is OASIS_BASE_URL.
"""

import os

import openai
import pytest

BASE = os.environ["OASIS_BASE_URL"] + "/v1"
SECRET = "alpha-sdk-secret-41c9"
LOOKUP = {"type": "function", "function": {"name": "lookup",
                                           "parameters": {"type": "object", "properties": {}}}}


def client(var):
    return openai.OpenAI(base_url=BASE, api_key=os.environ[var], max_retries=0, timeout=120)


def test_another_projects_objects_are_not_found_through_the_sdk():
    a, b = client("OASIS_KEY_A"), client("OASIS_KEY_B")
    f = a.files.create(file=("alpha.txt", f"{SECRET}\n".encode()), purpose="assistants")
    vs = a.vector_stores.create(name="alpha", file_ids=[f.id])
    asst = a.beta.assistants.create(
        model="oasis-local", tools=[{"type": "code_interpreter"}],
        tool_resources={"code_interpreter": {"file_ids": [f.id]}})
    thread = a.beta.threads.create(messages=[{"role": "user", "content":
        f"```python\nprint(open('/mnt/data/alpha.txt').read().strip())\n```"}])
    run = a.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=asst.id,
                                              poll_interval_ms=50)
    assert run.status == "completed", run.last_error
    reply = a.beta.threads.messages.list(thread_id=thread.id, order="desc", limit=1).data[0]
    assert SECRET in reply.content[0].text.value

    b_asst = b.beta.assistants.create(model="oasis-local", tools=[{"type": "code_interpreter"}])
    for attempt in [
        lambda: b.files.retrieve(f.id),
        lambda: b.files.content(f.id),
        lambda: b.files.delete(f.id),
        lambda: b.vector_stores.retrieve(vs.id),
        lambda: b.vector_stores.search(vs.id, query=SECRET),
        lambda: b.beta.assistants.retrieve(asst.id),
        lambda: b.beta.assistants.update(asst.id, name="taken"),
        lambda: b.beta.threads.retrieve(thread.id),
        lambda: b.beta.threads.messages.list(thread_id=thread.id),
        lambda: b.beta.threads.messages.create(thread_id=thread.id, role="user", content="hi"),
        lambda: b.beta.threads.runs.retrieve(run.id, thread_id=thread.id),
        lambda: b.beta.threads.runs.steps.list(run.id, thread_id=thread.id),
        lambda: b.beta.threads.runs.create(thread_id=thread.id, assistant_id=b_asst.id),
        lambda: b.beta.threads.create_and_run(assistant_id=asst.id),
        lambda: b.beta.threads.delete(thread.id),
    ]:
        with pytest.raises(openai.NotFoundError):
            attempt()
    # A stream on another project's thread fails before any event.
    with pytest.raises(openai.NotFoundError):
        with b.beta.threads.runs.stream(thread_id=thread.id, assistant_id=b_asst.id) as s:
            s.until_done()
    # Naming A's File in B's own objects is refused.
    with pytest.raises(openai.BadRequestError, match="No file found"):
        b.beta.assistants.create(model="oasis-local",
                                 tool_resources={"code_interpreter": {"file_ids": [f.id]}})
    # Lists hold only B's own.
    assert f.id not in [x.id for x in b.files.list()]
    assert asst.id not in [x.id for x in b.beta.assistants.list()]
    assert vs.id not in [x.id for x in b.vector_stores.list()]
    # A's objects are unchanged.
    assert a.beta.assistants.retrieve(asst.id).name is None
    assert a.files.content(f.id).text == f"{SECRET}\n"
    assert a.beta.threads.retrieve(thread.id).id == thread.id


def test_a_project_at_its_run_limit_gets_a_rate_limit_error():
    g = client("OASIS_KEY_LIMITED")
    asst = g.beta.assistants.create(model="oasis-local", tools=[LOOKUP])
    waiting = g.beta.threads.create_and_run_poll(
        assistant_id=asst.id, poll_interval_ms=50,
        thread={"messages": [{"role": "user", "content": "```call lookup\n{}\n```"}]})
    assert waiting.status == "requires_action"
    other = g.beta.threads.create()
    with pytest.raises(openai.RateLimitError) as e:
        g.beta.threads.runs.create(thread_id=other.id, assistant_id=asst.id)
    assert e.value.status_code == 429
    assert e.value.code == "rate_limit_exceeded"
    # Once the waiting run ends, there is room again.
    g.beta.threads.runs.cancel(waiting.id, thread_id=waiting.thread_id)
    run = g.beta.threads.runs.create_and_poll(thread_id=other.id, assistant_id=asst.id,
                                              poll_interval_ms=50)
    assert run.status == "completed"
