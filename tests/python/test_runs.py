"""Runs, run steps, streaming, code_interpreter and function tools through the official SDK.

Most tests run twice (the `backend` fixture): on Oasis's built-in model `oasis-local`, and on a
second Oasis whose upstream is the scripted Chat Completions server of `scripted_upstream.py`.
Both models follow the same conventions: fenced python blocks are code cells to run, fenced
`call NAME` blocks are function calls with JSON arguments.
"""

import io
import json
import signal
import time
import uuid
import warnings

import openai
import pytest
from openai import AssistantEventHandler

import scripted_upstream

warnings.filterwarnings("ignore", category=DeprecationWarning)
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

POLL_MS = 50
ENDED = {"completed", "failed", "cancelled", "expired", "incomplete", "requires_action"}
PNG = b"\x89PNG\r\n\x1a\n"
MATH_TUTOR = "You are a personal math tutor. Answer questions briefly, in a sentence or less."
CODE_INTERPRETER = {"type": "code_interpreter"}

# The cookbook's quiz function.
DISPLAY_QUIZ = {
    "name": "display_quiz",
    "description": "Displays a quiz to the student, and returns the student's response. A single quiz can have multiple questions.",
    "parameters": {
        "type": "object",
        "properties": {
            "title": {"type": "string"},
            "questions": {
                "type": "array",
                "description": "An array of questions, each with a title and potentially options (if multiple choice).",
                "items": {
                    "type": "object",
                    "properties": {
                        "question_text": {"type": "string"},
                        "question_type": {"type": "string", "enum": ["MULTIPLE_CHOICE", "FREE_RESPONSE"]},
                        "choices": {"type": "array", "items": {"type": "string"}},
                    },
                    "required": ["question_text"],
                },
            },
        },
        "required": ["title", "questions"],
    },
}
QUIZ = {
    "title": "Mathematics Quiz",
    "questions": [
        {"question_text": "Explain why the square root of a negative number is not a real number.", "question_type": "FREE_RESPONSE"},
        {"question_text": "What is the value of x if 3x + 11 = 14?", "question_type": "MULTIPLE_CHOICE", "choices": ["0", "1", "2", "3"]},
    ],
}
QUIZ_2 = {"title": "Geometry Quiz", "questions": [{"question_text": "How many sides does a hexagon have?", "question_type": "FREE_RESPONSE"}]}

FIB_CODE = """def fib(n):
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a

fibs = [fib(i) for i in range(20)]
print(fib(10))
fibs[:5]"""

SALES_CSV = b"month,revenue\nJan,100\nFeb,150\nMar,120\nApr,180\n"
CHART_CODE = """import pandas as pd
import matplotlib.pyplot as plt
df = pd.read_csv('/mnt/data/sales.csv')
df.plot(x='month', y='revenue', kind='bar', legend=False, title='Revenue by month')
plt.savefig('/mnt/data/chart.png')
with open('/mnt/data/summary.txt', 'w') as f:
    f.write(f"total={df['revenue'].sum()}\\n")
print(df['revenue'].sum())"""

SLEEP_CODE = """with open('/mnt/data/keep.txt', 'w') as f:
    f.write('kept')
defined_before_cancel = 1
import time
time.sleep(60)"""


# --- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def time_limit():
    """A hung server must fail a test, not the whole suite."""

    def expired(signum, frame):
        raise TimeoutError("the test took longer than 90 s")

    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(90)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


@pytest.fixture(autouse=True)
def no_scripted_failures_left():
    scripted_upstream.FAIL_NEXT.clear()
    yield
    scripted_upstream.FAIL_NEXT.clear()


# --- helpers ------------------------------------------------------------------------------------


def is_upstream(model):
    return model == scripted_upstream.MODEL


def fenced(code, info="python"):
    return f"```{info}\n{code}\n```"


def marker():
    return "m" + uuid.uuid4().hex[:12]


def upload(client, name, data):
    return client.files.create(file=(name, io.BytesIO(data)), purpose="assistants")


def create_and_poll(client, thread_id, assistant_id, **kw):
    return client.beta.threads.runs.create_and_poll(thread_id=thread_id, assistant_id=assistant_id, poll_interval_ms=POLL_MS, **kw)


def wait_for(client, thread_id, run_id, until=ENDED, timeout=30):
    deadline = time.monotonic() + timeout
    while True:
        run = client.beta.threads.runs.retrieve(run_id=run_id, thread_id=thread_id)
        if run.status in until:
            return run
        assert time.monotonic() < deadline, f"run {run_id} still {run.status} after {timeout} s"
        time.sleep(POLL_MS / 1000)


def assert_usage(usage, what):
    assert usage is not None, f"{what} has no usage"
    assert usage.prompt_tokens > 0 and usage.completion_tokens > 0, f"{what}: {usage}"
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens, f"{what}: {usage}"


def assert_completed(run):
    assert run.status == "completed", f"run {run.id} ended {run.status}: {run.last_error}"
    assert run.object == "thread.run"
    assert run.started_at and run.completed_at
    assert run.last_error is None and run.required_action is None and run.failed_at is None and run.cancelled_at is None
    assert_usage(run.usage, f"run {run.id}")


def steps_of(client, run):
    steps = list(client.beta.threads.runs.steps.list(thread_id=run.thread_id, run_id=run.id, order="asc"))
    for s in steps:
        assert s.object == "thread.run.step"
        assert (s.run_id, s.thread_id, s.assistant_id) == (run.id, run.thread_id, run.assistant_id)
        if s.status == "completed":
            assert s.completed_at
            assert s.usage is not None, f"completed step {s.id} has no usage"
            assert s.usage.total_tokens == s.usage.prompt_tokens + s.usage.completion_tokens
    return steps


def code_calls(steps):
    return [tc for s in steps if s.type == "tool_calls" for tc in s.step_details.tool_calls if tc.type == "code_interpreter"]


def logs_of(call):
    return "".join(o.logs for o in call.code_interpreter.outputs if o.type == "logs")


def images_of(call):
    return [o.image.file_id for o in call.code_interpreter.outputs if o.type == "image"]


def reply_of(client, run):
    """The run's one assistant message."""
    msgs = [m for m in client.beta.threads.messages.list(thread_id=run.thread_id, order="asc") if m.run_id == run.id]
    assert len(msgs) == 1, f"run {run.id} wrote {len(msgs)} messages"
    m = msgs[0]
    assert (m.role, m.assistant_id, m.thread_id, m.status) == ("assistant", run.assistant_id, run.thread_id, "completed")
    return m


def text_of(message):
    texts = [c.text for c in message.content if c.type == "text"]
    assert len(texts) == 1, f"message {message.id} has {len(texts)} text parts"
    return texts[0]


def assert_message_step_last(steps, message):
    assert steps[-1].type == "message_creation" and steps[-1].status == "completed"
    assert steps[-1].step_details.message_creation.message_id == message.id
    assert [s.type for s in steps].count("message_creation") == 1


def upstream_requests(mark):
    """The chat-completions requests the scripted upstream received whose messages contain `mark`."""
    with scripted_upstream.LOCK:
        reqs = list(scripted_upstream.REQUESTS)
    return [r for r in reqs if any(mark in scripted_upstream.text_of(m.get("content")) for m in r.get("messages", []))]


def check_annotations(client, text, expected):
    """Each `sandbox:/mnt/data/NAME` link of `expected` ({name: bytes or None}) has a file_path
    annotation whose file downloads to those bytes (None: a PNG). Returns {name: file_id}."""
    anns = text.annotations
    assert all(a.type == "file_path" for a in anns), anns
    by_text = {a.text: a for a in anns}
    assert sorted(by_text) == sorted(f"sandbox:/mnt/data/{n}" for n in expected), anns
    assert len(anns) == len(expected), anns
    ids = {}
    for name, data in expected.items():
        a = by_text[f"sandbox:/mnt/data/{name}"]
        assert f"[{name}](sandbox:/mnt/data/{name})" in text.value
        assert text.value[a.start_index:a.end_index] == a.text, (a, text.value)
        f = client.files.retrieve(a.file_path.file_id)
        assert f.purpose == "assistants_output"
        content = client.files.content(f.id).read()
        if data is None:
            assert content.startswith(PNG)
        else:
            assert content == data
        ids[name] = f.id
    return ids


class Recorder(AssistantEventHandler):
    """Records what the SDK's stream helper reports."""

    def __init__(self):
        super().__init__()
        self.events = []
        self.texts = []
        self.calls = []  # per tool call: {"type", "id", "input": [...], "logs": [...], "images": [...]}
        self.delta_message = None  # the message as accumulated from its deltas alone
        self.done = []  # (id, logs) per on_tool_call_done

    def on_event(self, event):
        self.events.append(event.event)

    def on_text_delta(self, delta, snapshot):
        self.texts.append(delta.value or "")

    def on_message_delta(self, delta, snapshot):
        self.delta_message = snapshot.model_dump()

    def on_tool_call_created(self, tool_call):
        # The SDK builds the created tool call from its first delta; later ones come as deltas.
        self.calls.append({"type": tool_call.type, "id": tool_call.id, "input": [], "logs": [], "images": []})
        self._absorb(tool_call)

    def on_tool_call_delta(self, delta, snapshot):
        self._absorb(delta)

    def on_tool_call_done(self, tool_call):
        # What the SDK hands over as the finished call: its id, and its outputs' logs.
        logs = []
        if tool_call.type == "code_interpreter":
            logs = [o.logs for o in tool_call.code_interpreter.outputs or [] if o.type == "logs"]
        self.done.append((tool_call.id, logs))

    def _absorb(self, tc):
        rec = self.calls[-1]
        if tc.type == "code_interpreter" and tc.code_interpreter is not None:
            rec["input"].append(tc.code_interpreter.input or "")
            for o in tc.code_interpreter.outputs or []:
                if o.type == "logs":
                    rec["logs"].append(o.logs or "")
                elif o.type == "image" and o.image is not None and o.image.file_id:
                    rec["images"].append(o.image.file_id)

    def text(self):
        return "".join(self.texts)


def assert_run_events(events, last="thread.run.completed"):
    assert events[:3] == ["thread.run.created", "thread.run.queued", "thread.run.in_progress"], events
    assert events[-1] == last, events
    assert "error" not in events, events


# --- the scripted upstream itself (needs no Oasis) ---------------------------------------------


def test_scripted_upstream_speaks_chat_completions():
    server = scripted_upstream.serve(0)
    try:
        c = openai.OpenAI(base_url=f"http://127.0.0.1:{server.server_address[1]}/v1", api_key="x", max_retries=0, timeout=10)
        assert [m.id for m in c.models.list()] == ["scripted-model"]
        code_tool = {"type": "function", "function": {"name": "run_python", "parameters": {"type": "object", "properties": {"code": {"type": "string"}}}}}
        tools = [{"type": "function", "function": DISPLAY_QUIZ}, code_tool]
        user = "Two cells and a quiz.\n\n" + fenced("print(1)") + "\n\n" + fenced("x = 'a' * 30\nx", "py") + "\n\n" + fenced(json.dumps(QUIZ, indent=1), "call display_quiz")
        messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": user}]
        before = len(scripted_upstream.REQUESTS)

        chunks = list(c.chat.completions.create(model="scripted-model", messages=messages, tools=tools, stream=True))
        calls, order, finish = {}, [], None
        for ch in chunks:
            assert ch.object == "chat.completion.chunk"
            for choice in ch.choices:
                finish = choice.finish_reason or finish
                for tc in choice.delta.tool_calls or []:
                    order.append(tc.index)
                    slot = calls.setdefault(tc.index, {"id": None, "name": "", "arguments": ""})
                    slot["id"] = tc.id or slot["id"]
                    slot["name"] += (tc.function and tc.function.name) or ""
                    slot["arguments"] += (tc.function and tc.function.arguments) or ""
        assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == chunks[-1].usage.prompt_tokens + chunks[-1].usage.completion_tokens > 0
        assert finish == "tool_calls"
        assert order != sorted(order) and len(order) > 20  # interleaved, small fragments
        got = [calls[i] for i in sorted(calls)]
        assert [x["name"] for x in got] == ["run_python", "run_python", "display_quiz"]
        assert [json.loads(x["arguments"]) for x in got] == [{"code": "print(1)"}, {"code": "x = 'a' * 30\nx"}, QUIZ]
        assert len({x["id"] for x in got}) == 3 and all(x["id"].startswith("call_") for x in got)

        r = c.chat.completions.create(model="scripted-model", messages=messages, tools=tools)
        msg = r.choices[0].message
        assert r.choices[0].finish_reason == "tool_calls" and r.usage.prompt_tokens > 0
        assert [(t.function.name, json.loads(t.function.arguments)) for t in msg.tool_calls] == [
            ("run_python", {"code": "print(1)"}), ("run_python", {"code": "x = 'a' * 30\nx"}), ("display_quiz", QUIZ)]

        # Tool results: one line each.
        results = [
            json.dumps({"status": "completed", "logs": "1\n", "files": ["/mnt/data/a b.png"], "images": 1}),
            json.dumps({"status": "completed", "logs": "'aaa'\n", "files": [], "images": 0}),
            '["a", "b"]',
        ]
        follow = messages + [msg.model_dump(exclude_none=True)] + [
            {"role": "tool", "tool_call_id": t.id, "content": out} for t, out in zip(msg.tool_calls, results)]
        chunks = list(c.chat.completions.create(model="scripted-model", messages=follow, tools=tools, stream=True))
        text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
        assert text == "Result: 1 [a b.png](sandbox:/mnt/data/a b.png)\nResult: 'aaa'\ndisplay_quiz returned: [\"a\", \"b\"]"
        assert sum(1 for ch in chunks if ch.choices and ch.choices[0].delta.content) > 5
        assert chunks[-2].choices[0].finish_reason == "stop" and chunks[-1].usage.completion_tokens > 0
        r = c.chat.completions.create(model="scripted-model", messages=follow, tools=tools)
        assert r.choices[0].message.content == text and r.choices[0].finish_reason == "stop"

        def reply(msgs, **kw):
            return c.chat.completions.create(model="scripted-model", messages=msgs, **kw).choices[0].message.content

        assert reply(messages, tools=tools, tool_choice="none") == "Scripted reply without tools."
        assert reply([{"role": "user", "content": "Hello"}]) == "Scripted reply to: Hello"
        assert reply([{"role": "user", "content": [{"type": "text", "text": "Hi"}]}], tools=tools) == "Scripted reply to: Hi"
        # Code blocks but no code tool: nothing to call.
        assert reply([{"role": "user", "content": fenced("print(1)")}], tools=[tools[0]]) == f"Scripted reply to: {fenced('print(1)')}"

        # What OpenAI refuses, it refuses too.
        with pytest.raises(openai.BadRequestError, match="must be a response to a preceeding message"):
            reply([{"role": "user", "content": "x"}, {"role": "tool", "tool_call_id": "call_nope", "content": "1"}])
        with pytest.raises(openai.BadRequestError, match="did not have response messages"):
            reply(follow[:3] + [{"role": "user", "content": "x"}], tools=tools)
        with pytest.raises(openai.BadRequestError, match="code tool result must be JSON"):
            reply(follow[:3] + [{"role": "tool", "tool_call_id": t.id, "content": "not json"} for t in msg.tool_calls], tools=tools)
        with pytest.raises(openai.BadRequestError, match="'tool_choice' is only allowed when 'tools' are specified"):
            reply(messages, tool_choice="auto")
        with pytest.raises(openai.BadRequestError, match="'parallel_tool_calls' is only allowed"):
            reply(messages, parallel_tool_calls=True)
        with pytest.raises(openai.BadRequestError, match="Invalid 'tools'"):
            reply(messages, tools=[])
        with pytest.raises(openai.BadRequestError, match="stream_options"):
            reply(messages, stream_options={"include_usage": True})
        with pytest.raises(openai.NotFoundError):
            c.chat.completions.create(model="gpt-4o", messages=messages)

        # Scripted failures, one request each.
        scripted_upstream.FAIL_NEXT[:] = [500, 400]
        with pytest.raises(openai.InternalServerError, match="scripted failure 500"):
            reply([{"role": "user", "content": "Hello"}])
        with pytest.raises(openai.BadRequestError, match="scripted failure 400"):
            reply([{"role": "user", "content": "Hello"}], stream=False)
        assert reply([{"role": "user", "content": "Hello"}]) == "Scripted reply to: Hello"
        assert len(scripted_upstream.REQUESTS) - before == 19
    finally:
        server.shutdown()
        server.server_close()


# --- Oasis --------------------------------------------------------------------------------------


def test_models(local_client, upstream_client):
    assert "oasis-local" in [m.id for m in local_client.models.list()]
    ids = [m.id for m in upstream_client.models.list()]
    assert "oasis-local" in ids and "scripted-model" in ids
    # On the upstream server, `oasis-local` is still the built-in model.
    mark = marker()
    a = upstream_client.beta.assistants.create(model="oasis-local")
    t = upstream_client.beta.threads.create(messages=[{"role": "user", "content": f"Hello {mark}"}])
    run = create_and_poll(upstream_client, t.id, a.id)
    assert_completed(run)
    assert "oasis-local" in text_of(reply_of(upstream_client, run)).value
    assert upstream_requests(mark) == []


def test_math_tutor(backend):
    client, model = backend
    assistant = client.beta.assistants.create(name="Math Tutor", instructions=MATH_TUTOR, model=model)
    thread = client.beta.threads.create()
    q = "I need to solve the equation `3x + 11 = 14`. Can you help me?"
    message = client.beta.threads.messages.create(thread_id=thread.id, role="user", content=q)
    run = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)
    assert run.object == "thread.run" and run.id.startswith("run_")
    assert (run.thread_id, run.assistant_id, run.instructions, run.model) == (thread.id, assistant.id, MATH_TUTOR, model)
    deadline = time.monotonic() + 30
    while run.status in ("queued", "in_progress"):  # the cookbook's wait_on_run
        assert time.monotonic() < deadline
        time.sleep(POLL_MS / 1000)
        run = client.beta.threads.runs.retrieve(thread_id=thread.id, run_id=run.id)
    assert_completed(run)
    messages = list(client.beta.threads.messages.list(thread_id=thread.id, order="asc", after=message.id))
    assert len(messages) == 1
    reply = messages[0]
    assert (reply.role, reply.run_id, reply.assistant_id) == ("assistant", run.id, assistant.id)
    text = text_of(reply).value
    if is_upstream(model):
        assert text == f"Scripted reply to: {q}"
    else:
        assert "oasis-local" in text
    steps = steps_of(client, run)
    assert [s.type for s in steps] == ["message_creation"]
    assert_message_step_last(steps, reply)
    assert [m.id for m in client.beta.threads.messages.list(thread_id=thread.id, run_id=run.id)] == [reply.id]

    # A second turn sees the whole conversation.
    q2 = f"Could you explain this to me? {marker()}"
    client.beta.threads.messages.create(thread_id=thread.id, role="user", content=q2)
    run2 = create_and_poll(client, thread.id, assistant.id)
    assert_completed(run2)
    if is_upstream(model):
        assert text_of(reply_of(client, run2)).value == f"Scripted reply to: {q2}"
        (req,) = upstream_requests(q2)
        msgs = req["messages"]
        assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user"]
        assert msgs[0]["content"].startswith(MATH_TUTOR)
        assert [scripted_upstream.text_of(m["content"]) for m in msgs[1:]] == [q, text, q2]
    assert [r.id for r in client.beta.threads.runs.list(thread_id=thread.id)] == [run2.id, run.id]


def test_fibonacci_with_code_and_a_persistent_session(backend):
    client, model = backend
    assistant = client.beta.assistants.create(name="Math Tutor", instructions=MATH_TUTOR, model=model, tools=[CODE_INTERPRETER])
    thread = client.beta.threads.create()
    client.beta.threads.messages.create(
        thread_id=thread.id, role="user", content="Generate the first 20 fibbonaci numbers with code.\n\n" + fenced(FIB_CODE))
    run = create_and_poll(client, thread.id, assistant.id)
    assert_completed(run)
    assert [t.type for t in run.tools] == ["code_interpreter"]
    steps = steps_of(client, run)
    assert [s.type for s in steps] == ["tool_calls", "message_creation"]
    (call,) = code_calls(steps)
    assert call.id and call.code_interpreter.input.strip() == FIB_CODE
    assert call.code_interpreter.outputs[0].type == "logs"
    assert logs_of(call).strip() == "55\n[0, 1, 1, 2, 3]"  # stdout, then the last expression
    assert images_of(call) == []
    reply = reply_of(client, run)
    assert_message_step_last(steps, reply)
    assert [c.type for c in reply.content] == ["text"]
    text = text_of(reply).value
    assert "55" in text and "[0, 1, 1, 2, 3]" in text
    if is_upstream(model):
        assert text.startswith("Result: 55\n[0, 1, 1, 2, 3]")
    else:
        assert "Output of cell 1:" in text

    # The next run in the thread uses what the first one defined.
    client.beta.threads.messages.create(thread_id=thread.id, role="user", content=fenced("print(fibs[19] + fib(10))"))
    run2 = create_and_poll(client, thread.id, assistant.id)
    assert_completed(run2)
    (call2,) = code_calls(steps_of(client, run2))
    assert logs_of(call2).strip() == "4236"
    assert "4236" in text_of(reply_of(client, run2)).value


def test_cells_run_in_order_in_one_session(backend):
    client, model = backend
    cells = ["x = 2", "print(x * 21)\nx + 1", "import sys\nprint('out')\nprint('err', file=sys.stderr)\n1/0"]
    content = "Three cells.\n\n" + "\n\n".join(fenced(c, info) for c, info in zip(cells, ["python", "py", ""]))
    assistant = client.beta.assistants.create(model=model, tools=[CODE_INTERPRETER])
    thread = client.beta.threads.create(messages=[{"role": "user", "content": content}])
    run = create_and_poll(client, thread.id, assistant.id)
    assert_completed(run)
    calls = code_calls(steps_of(client, run))
    assert [c.code_interpreter.input.strip() for c in calls] == cells
    assert len({c.id for c in calls}) == 3
    logs = [logs_of(c) for c in calls]
    assert logs[0].strip() == "" and logs[1].strip() == "42\n3"
    assert logs[2].startswith("out\nerr\n") and "ZeroDivisionError: division by zero" in logs[2]
    text = text_of(reply_of(client, run)).value
    if is_upstream(model):
        assert text.startswith("Result: \nResult: 42\n3\nResult: out\nerr\n")
    else:
        assert "Cell 1 produced no output." in text
        assert text.index("Output of cell 2:") < text.index("42") < text.index("Output of cell 3:") < text.index("ZeroDivisionError")


def test_csv_to_chart(backend):
    client, model = backend
    f = upload(client, "sales.csv", SALES_CSV)
    assistant = client.beta.assistants.create(instructions="You are a data analyst.", model=model, tools=[CODE_INTERPRETER])
    thread = client.beta.threads.create(messages=[{
        "role": "user", "content": "Chart the revenue by month.\n\n" + fenced(CHART_CODE),
        "attachments": [{"file_id": f.id, "tools": [CODE_INTERPRETER]}]}])
    run = create_and_poll(client, thread.id, assistant.id)
    assert_completed(run)
    steps = steps_of(client, run)
    (call,) = code_calls(steps)
    assert call.code_interpreter.input.strip() == CHART_CODE
    assert logs_of(call).strip() == "550"
    (image_id,) = images_of(call)  # the figure left open
    image = client.files.retrieve(image_id)
    assert image.purpose == "assistants_output"
    assert client.files.content(image_id).read().startswith(PNG)
    reply = reply_of(client, run)
    assert_message_step_last(steps, reply)
    assert [c.type for c in reply.content] == ["image_file", "text"]
    assert reply.content[0].image_file.file_id == image_id
    text = text_of(reply)
    assert "550" in text.value
    check_annotations(client, text, {"chart.png": None, "summary.txt": b"total=550\n"})


def test_code_interpreter_not_enabled(backend):
    client, model = backend
    assistant = client.beta.assistants.create(model=model)
    content = f"Run this. {marker()}\n\n" + fenced("print(1 + 1)")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": content}])
    run = create_and_poll(client, thread.id, assistant.id)
    assert_completed(run)
    assert [s.type for s in steps_of(client, run)] == ["message_creation"]
    text = text_of(reply_of(client, run)).value
    if is_upstream(model):
        assert text == f"Scripted reply to: {content}"
        (req,) = upstream_requests(content)
        assert scripted_upstream.code_tool_name(req.get("tools")) is None
    else:
        assert "code_interpreter" in text


def test_tool_choice_none(backend):
    client, model = backend
    assistant = client.beta.assistants.create(model=model, tools=[CODE_INTERPRETER])
    thread = client.beta.threads.create(messages=[{"role": "user", "content": fenced("print(1 + 1)")}])
    run = create_and_poll(client, thread.id, assistant.id, tool_choice="none")
    assert_completed(run)
    assert run.tool_choice == "none"
    assert [s.type for s in steps_of(client, run)] == ["message_creation"]
    text = text_of(reply_of(client, run)).value
    if is_upstream(model):
        assert text == "Scripted reply without tools."


def quiz_assistant(client, model):
    return client.beta.assistants.create(
        name="Math Tutor", instructions=MATH_TUTOR, model=model,
        tools=[CODE_INTERPRETER, {"type": "function", "function": DISPLAY_QUIZ}])


def assert_locked(client, thread_id, run_id, assistant_id):
    with pytest.raises(openai.BadRequestError) as e:
        client.beta.threads.messages.create(thread_id=thread_id, role="user", content="Am I locked out?")
    assert f"Can't add messages to {thread_id} while a run {run_id} is active." in str(e.value)
    with pytest.raises(openai.BadRequestError) as e:
        client.beta.threads.runs.create(thread_id=thread_id, assistant_id=assistant_id)
    assert "already has an active run" in str(e.value)


def test_function_calling_quiz(backend):
    client, model = backend
    assistant = quiz_assistant(client, model)
    thread = client.beta.threads.create()
    client.beta.threads.messages.create(
        thread_id=thread.id, role="user",
        content="Make a quiz with 2 questions: One open ended, one multiple choice. Then, give me feedback for the responses.\n\n"
        + fenced(json.dumps(QUIZ, indent=2), "call display_quiz"))
    run = create_and_poll(client, thread.id, assistant.id)
    assert run.status == "requires_action", f"{run.status}: {run.last_error}"
    assert run.required_action.type == "submit_tool_outputs"
    (tool_call,) = run.required_action.submit_tool_outputs.tool_calls
    assert tool_call.type == "function" and tool_call.id
    assert tool_call.function.name == "display_quiz"
    assert json.loads(tool_call.function.arguments) == QUIZ
    (step,) = steps_of(client, run)
    assert (step.type, step.status) == ("tool_calls", "in_progress")
    (fc,) = step.step_details.tool_calls
    assert (fc.type, fc.id, fc.function.name, fc.function.output) == ("function", tool_call.id, "display_quiz", None)
    assert_locked(client, thread.id, run.id, assistant.id)

    output = json.dumps(["I don't know.", "a"])
    run = client.beta.threads.runs.submit_tool_outputs_and_poll(
        thread_id=thread.id, run_id=run.id, tool_outputs=[{"tool_call_id": tool_call.id, "output": output}], poll_interval_ms=POLL_MS)
    assert_completed(run)
    reply = reply_of(client, run)
    assert f"display_quiz returned: {output}" in text_of(reply).value.splitlines()
    steps = steps_of(client, run)
    assert [s.type for s in steps] == ["tool_calls", "message_creation"]
    assert_message_step_last(steps, reply)
    (fc,) = steps[0].step_details.tool_calls
    assert (fc.id, fc.function.name, fc.function.output) == (tool_call.id, "display_quiz", output)
    assert json.loads(fc.function.arguments) == QUIZ
    # Unlocked again; a finished run takes no more outputs.
    client.beta.threads.messages.create(thread_id=thread.id, role="user", content="Thanks!")
    with pytest.raises(openai.BadRequestError):
        client.beta.threads.runs.submit_tool_outputs(thread_id=thread.id, run_id=run.id, tool_outputs=[{"tool_call_id": tool_call.id, "output": "again"}])


def test_parallel_function_calls(backend):
    client, model = backend
    assistant = quiz_assistant(client, model)
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "Two quizzes, please.\n\n"
                                                   + fenced(json.dumps(QUIZ), "call display_quiz") + "\n\n"
                                                   + fenced(json.dumps(QUIZ_2), "call display_quiz")}])
    run = create_and_poll(client, thread.id, assistant.id)
    assert run.status == "requires_action", f"{run.status}: {run.last_error}"
    calls = run.required_action.submit_tool_outputs.tool_calls
    assert [json.loads(c.function.arguments) for c in calls] == [QUIZ, QUIZ_2]
    assert len({c.id for c in calls}) == 2
    (step,) = steps_of(client, run)
    assert [tc.id for tc in step.step_details.tool_calls] == [c.id for c in calls]
    outputs = {calls[0].id: '["first"]', calls[1].id: '["second"]'}
    run = client.beta.threads.runs.submit_tool_outputs_and_poll(
        thread_id=thread.id, run_id=run.id, poll_interval_ms=POLL_MS,
        tool_outputs=[{"tool_call_id": cid, "output": out} for cid, out in reversed(outputs.items())])
    assert_completed(run)
    lines = text_of(reply_of(client, run)).value.splitlines()
    assert 'display_quiz returned: ["first"]' in lines and 'display_quiz returned: ["second"]' in lines
    step = steps_of(client, run)[0]
    assert {tc.id: tc.function.output for tc in step.step_details.tool_calls} == outputs


def test_streaming_fibonacci(backend):
    client, model = backend
    assistant = client.beta.assistants.create(name="Math Tutor", instructions=MATH_TUTOR, model=model, tools=[CODE_INTERPRETER])
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "Generate the first 20 fibbonaci numbers with code.\n\n" + fenced(FIB_CODE)}])
    with client.beta.threads.runs.stream(thread_id=thread.id, assistant_id=assistant.id, event_handler=Recorder()) as stream:
        stream.until_done()
    run = stream.get_final_run()
    assert_completed(run)
    assert_run_events(stream.events)
    for e in ("thread.run.step.created", "thread.run.step.delta", "thread.run.step.completed",
              "thread.message.created", "thread.message.delta", "thread.message.completed"):
        assert e in stream.events, (e, stream.events)
    assert stream.events.index("thread.message.created") < stream.events.index("thread.message.delta")
    polled = wait_for(client, thread.id, run.id)
    assert_completed(polled)
    steps = steps_of(client, polled)
    (call,) = code_calls(steps)
    (streamed,) = stream.calls
    assert (streamed["type"], streamed["id"]) == ("code_interpreter", call.id)
    assert "".join(streamed["input"]) == call.code_interpreter.input
    assert "".join(streamed["logs"]) == logs_of(call)
    assert "55" in logs_of(call)
    reply = reply_of(client, polled)
    assert stream.text() == text_of(reply).value
    assert "55" in stream.text()
    assert [m.id for m in stream.get_final_messages()] == [reply.id]
    assert {s.id for s in stream.get_final_run_steps()} == {s.id for s in steps}


def test_streaming_two_cells_reports_each_call_once_with_its_own_output(backend):
    # The SDK ends a tool call when a delta for the next index arrives: each call's outputs
    # must be streamed before the next call starts, or it reports calls twice, or done early.
    client, model = backend
    assistant = client.beta.assistants.create(name="Math Tutor", instructions=MATH_TUTOR, model=model, tools=[CODE_INTERPRETER])
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "Two cells.\n\n"
                                                   + fenced("print('first', 6 * 7)") + "\n\n" + fenced("print('second', 2 ** 10)")}])
    with client.beta.threads.runs.stream(thread_id=thread.id, assistant_id=assistant.id, event_handler=Recorder()) as stream:
        stream.until_done()
    run = stream.get_final_run()
    assert_completed(run)
    calls = code_calls(steps_of(client, wait_for(client, thread.id, run.id)))
    assert len(calls) == 2
    assert [c["id"] for c in stream.calls] == [c.id for c in calls]
    assert ["".join(c["logs"]) for c in stream.calls] == ["first 42\n", "second 1024\n"]
    assert ["".join(c["input"]) for c in stream.calls] == [c.code_interpreter.input for c in calls]
    # The SDK fires on_tool_call_done again for its last call at each later step and run end;
    # what matters is each call's first "done", in order, with its own outputs.
    firsts = [d for i, d in enumerate(stream.done) if i == 0 or stream.done[i - 1][0] != d[0]]
    assert firsts == [(calls[0].id, ["first 42\n"]), (calls[1].id, ["second 1024\n"])], stream.done


def test_streaming_chart(backend):
    client, model = backend
    f = upload(client, "sales.csv", SALES_CSV)
    assistant = client.beta.assistants.create(model=model, tools=[CODE_INTERPRETER], tool_resources={"code_interpreter": {"file_ids": [f.id]}})
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "Chart it.\n\n" + fenced(CHART_CODE)}])
    with client.beta.threads.runs.stream(thread_id=thread.id, assistant_id=assistant.id, event_handler=Recorder()) as stream:
        stream.until_done()
    assert_completed(stream.get_final_run())
    assert_run_events(stream.events)
    run = wait_for(client, thread.id, stream.get_final_run().id)
    (call,) = code_calls(steps_of(client, run))
    (streamed,) = stream.calls
    assert "".join(streamed["input"]) == call.code_interpreter.input
    assert "".join(streamed["logs"]) == logs_of(call)
    assert streamed["images"] == images_of(call) and len(streamed["images"]) == 1
    reply = reply_of(client, run)
    text = text_of(reply)
    check_annotations(client, text, {"chart.png": None, "summary.txt": b"total=550\n"})
    assert stream.text() == text.value

    def shape(content):
        out = []
        for c in content:
            if c["type"] == "image_file":
                out.append(("image_file", c["image_file"]["file_id"]))
            elif c["type"] == "text":
                anns = sorted((a["type"], a["text"], a["start_index"], a["end_index"], a["file_path"]["file_id"])
                              for a in c["text"]["annotations"] or [])
                out.append(("text", c["text"]["value"], anns))
        return out

    polled = shape(reply.model_dump()["content"])
    assert [p[0] for p in polled] == ["image_file", "text"]
    (final,) = stream.get_final_messages()
    assert shape(final.model_dump()["content"]) == polled
    # What the deltas alone add up to (the SDK sums numbers and merges lists by index).
    assert stream.delta_message is not None
    assert shape(stream.delta_message["content"]) == polled


def test_create_and_run_stream_and_poll(backend):
    client, model = backend
    assistant = client.beta.assistants.create(instructions=MATH_TUTOR, model=model)
    q = "What is 3x + 11 = 14?"
    with client.beta.threads.create_and_run_stream(
            assistant_id=assistant.id, thread={"messages": [{"role": "user", "content": q}]}, event_handler=Recorder()) as stream:
        stream.until_done()
    assert stream.events[0] == "thread.created"
    assert_run_events(stream.events[1:])
    run = stream.get_final_run()
    assert_completed(run)
    msgs = list(client.beta.threads.messages.list(thread_id=run.thread_id, order="asc"))
    assert [m.role for m in msgs] == ["user", "assistant"]
    assert text_of(msgs[0]).value == q
    assert stream.text() == text_of(msgs[1]).value
    if is_upstream(model):
        assert stream.text() == f"Scripted reply to: {q}"

    run = client.beta.threads.create_and_run_poll(
        assistant_id=assistant.id, thread={"messages": [{"role": "user", "content": q}]}, poll_interval_ms=POLL_MS)
    assert_completed(run)
    assert run.thread_id != stream.get_final_run().thread_id
    assert reply_of(client, run).run_id == run.id


def test_streaming_function_tools(backend):
    client, model = backend
    assistant = quiz_assistant(client, model)
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "Quiz me.\n\n" + fenced(json.dumps(QUIZ), "call display_quiz")}])
    with client.beta.threads.runs.stream(thread_id=thread.id, assistant_id=assistant.id, event_handler=Recorder()) as stream:
        stream.until_done()
    assert_run_events(stream.events, last="thread.run.requires_action")
    run = stream.get_final_run()
    assert run.status == "requires_action"
    (tool_call,) = run.required_action.submit_tool_outputs.tool_calls
    assert json.loads(tool_call.function.arguments) == QUIZ
    (step,) = stream.get_final_run_steps()  # as the stream's events add up
    (fc,) = step.step_details.tool_calls
    assert (fc.type, fc.id, fc.function.name) == ("function", tool_call.id, "display_quiz")
    assert json.loads(fc.function.arguments) == QUIZ
    assert_locked(client, thread.id, run.id, assistant.id)

    output = '["b"]'
    with client.beta.threads.runs.submit_tool_outputs_stream(
            thread_id=thread.id, run_id=run.id, tool_outputs=[{"tool_call_id": tool_call.id, "output": output}],
            event_handler=Recorder()) as stream2:
        stream2.until_done()
    assert stream2.events[-1] == "thread.run.completed", stream2.events
    assert "error" not in stream2.events
    final = stream2.get_final_run()
    assert_completed(final)
    assert final.id == run.id
    reply = reply_of(client, final)
    assert stream2.text() == text_of(reply).value
    assert f"display_quiz returned: {output}" in stream2.text().splitlines()


def test_cancel_a_long_cell(backend):
    client, model = backend
    assistant = client.beta.assistants.create(model=model, tools=[CODE_INTERPRETER])
    thread = client.beta.threads.create(messages=[{"role": "user", "content": fenced(SLEEP_CODE)}])
    run = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)
    deadline = time.monotonic() + 15
    while not any(s.type == "tool_calls" and s.status == "in_progress" for s in steps_of(client, run)):
        r = client.beta.threads.runs.retrieve(thread_id=thread.id, run_id=run.id)
        assert r.status in ("queued", "in_progress"), f"{r.status}: {r.last_error}"
        assert time.monotonic() < deadline, "the code step never started"
        time.sleep(POLL_MS / 1000)
    assert_locked(client, thread.id, run.id, assistant.id)

    started = time.monotonic()
    cancelling = client.beta.threads.runs.cancel(thread_id=thread.id, run_id=run.id)
    assert cancelling.id == run.id and cancelling.status in ("cancelling", "cancelled")
    run = wait_for(client, thread.id, run.id, timeout=15)
    assert run.status == "cancelled", f"{run.status}: {run.last_error}"
    assert run.cancelled_at and time.monotonic() - started < 15
    (code_step,) = [s for s in steps_of(client, run) if s.type == "tool_calls"]
    assert code_step.status == "cancelled"
    (call,) = code_calls([code_step])
    assert call.code_interpreter.input.strip() == SLEEP_CODE

    # The thread takes messages and runs again; the session was reset, /mnt/data was kept.
    client.beta.threads.messages.create(
        thread_id=thread.id, role="user",
        content=fenced("print(open('/mnt/data/keep.txt').read())\nprint('defined_before_cancel' in globals())"))
    run2 = create_and_poll(client, thread.id, assistant.id)
    assert_completed(run2)
    (call2,) = code_calls(steps_of(client, run2))
    assert logs_of(call2).strip() == "kept\nFalse"


def test_run_errors(backend):
    client, model = backend
    assistant = client.beta.assistants.create(model=model)
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "Hello"}])
    with pytest.raises(openai.NotFoundError) as e:
        client.beta.threads.runs.create(thread_id="thread_nope", assistant_id=assistant.id)
    assert "No thread found with id 'thread_nope'." in str(e.value)
    with pytest.raises(openai.NotFoundError) as e:
        client.beta.threads.runs.create(thread_id=thread.id, assistant_id="asst_nope")
    assert "No assistant found with id 'asst_nope'." in str(e.value)
    with pytest.raises(openai.NotFoundError) as e:
        client.beta.threads.runs.retrieve(thread_id=thread.id, run_id="run_nope")
    assert "No run found with id 'run_nope'." in str(e.value)
    run = create_and_poll(client, thread.id, assistant.id)
    assert_completed(run)
    with pytest.raises(openai.BadRequestError):
        client.beta.threads.runs.submit_tool_outputs(thread_id=thread.id, run_id=run.id, tool_outputs=[{"tool_call_id": "call_x", "output": "1"}])


def test_files_in_mnt_data_and_the_system_prompt(backend):
    client, model = backend
    fa, fb, fc = (upload(client, n, f"{n}\n".encode()) for n in ("a.csv", "b.csv", "c.csv"))
    instructions = f"You are a data analyst. {marker()}"
    assistant = client.beta.assistants.create(
        model=model, instructions=instructions, tools=[CODE_INTERPRETER], tool_resources={"code_interpreter": {"file_ids": [fa.id]}})
    mark = marker()
    thread = client.beta.threads.create(
        tool_resources={"code_interpreter": {"file_ids": [fb.id]}},
        messages=[{"role": "user", "content": f"What files do I have? {mark}\n\n"
                   + fenced("import os\nprint(sorted(os.listdir('/mnt/data')))\nprint(open('/mnt/data/c.csv').read())"),
                   "attachments": [{"file_id": fc.id, "tools": [CODE_INTERPRETER]}]}])
    run = create_and_poll(client, thread.id, assistant.id)
    assert_completed(run)
    (call,) = code_calls(steps_of(client, run))
    logs = logs_of(call)
    assert "'a.csv', 'b.csv', 'c.csv'" in logs and "c.csv\n" in logs, logs
    if is_upstream(model):
        first = upstream_requests(mark)[0]
        system = first["messages"][0]
        assert system["role"] == "system"
        assert system["content"].startswith(instructions)
        for p in ("/mnt/data/a.csv", "/mnt/data/b.csv", "/mnt/data/c.csv"):
            assert p in system["content"], system["content"]


def test_an_upstream_400_fails_the_run(upstream_client):
    client = upstream_client
    assistant = client.beta.assistants.create(model=scripted_upstream.MODEL)
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "Hello"}])
    scripted_upstream.FAIL_NEXT[:] = [400]
    run = create_and_poll(client, thread.id, assistant.id)
    assert run.status == "failed", f"{run.status}: {run.last_error}"
    assert run.last_error.code == "invalid_prompt" and run.failed_at
    assert scripted_upstream.FAIL_NEXT == []
    client.beta.threads.messages.create(thread_id=thread.id, role="user", content="Still there?")  # not locked


def test_an_upstream_500_is_retried(upstream_client):
    client = upstream_client
    mark = marker()
    assistant = client.beta.assistants.create(model=scripted_upstream.MODEL)
    thread = client.beta.threads.create(messages=[{"role": "user", "content": f"Hello {mark}"}])
    scripted_upstream.FAIL_NEXT[:] = [500]
    run = create_and_poll(client, thread.id, assistant.id)
    assert_completed(run)
    assert scripted_upstream.FAIL_NEXT == []
    assert len(upstream_requests(mark)) == 2
    assert text_of(reply_of(client, run)).value == f"Scripted reply to: Hello {mark}"


# --- the streaming handler as OpenAI's docs write it --------------------------------------------


class DocsHandler(AssistantEventHandler):
    """The handler of OpenAI's Assistants streaming docs, printing into `out` instead of the
    terminal, plus what an app collecting function arguments does."""

    def __init__(self):
        super().__init__()
        self.out = []
        self.code = []  # per code call: the input pieces printed by on_tool_call_delta
        self.arguments = {}  # function call id -> the arguments collected from its deltas
        self.current = None
        self.required = None

    def on_text_created(self, text):
        self.out.append("\nassistant > ")

    def on_text_delta(self, delta, snapshot):
        self.out.append(delta.value)

    def on_tool_call_created(self, tool_call):
        self.out.append(f"\nassistant > {tool_call.type}\n")
        self.current = tool_call.id
        if tool_call.type == "code_interpreter":
            self.code.append([])
        elif tool_call.type == "function":
            self.arguments[tool_call.id] = ""

    def on_tool_call_delta(self, delta, snapshot):
        if delta.type == "code_interpreter":
            if delta.code_interpreter.input:
                self.out.append(delta.code_interpreter.input)
                self.code[-1].append(delta.code_interpreter.input)
            if delta.code_interpreter.outputs:
                self.out.append("\n\noutput >")
                for output in delta.code_interpreter.outputs:
                    if output.type == "logs":
                        self.out.append(f"\n{output.logs}")
        elif delta.type == "function":
            self.arguments[self.current] += delta.function.arguments or ""

    def on_event(self, event):
        if event.event == "thread.run.requires_action":
            self.required = event.data.required_action.submit_tool_outputs.tool_calls


def test_the_docs_handler_prints_the_code_as_it_arrives(backend):
    client, model = backend
    assistant = client.beta.assistants.create(name="Math Tutor", instructions=MATH_TUTOR, model=model, tools=[CODE_INTERPRETER])
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "Two cells.\n\n"
                                                   + fenced(FIB_CODE) + "\n\n" + fenced("print('second', 2 ** 10)")}])
    handler = DocsHandler()
    with client.beta.threads.runs.stream(thread_id=thread.id, assistant_id=assistant.id, event_handler=handler) as stream:
        stream.until_done()
    run = wait_for(client, thread.id, stream.get_final_run().id)
    assert_completed(run)
    calls = code_calls(steps_of(client, run))
    assert len(calls) == 2
    # Each call's code reaches on_tool_call_delta (none of it hides in the creation delta), and
    # the pieces add up to the stored input.
    assert ["".join(pieces) for pieces in handler.code] == [c.code_interpreter.input for c in calls]
    assert all(pieces for pieces in handler.code)
    printed = "".join(handler.out)
    assert "assistant > code_interpreter\n" + calls[0].code_interpreter.input in printed
    assert "output >\n" in printed and "second 1024" in printed


def test_the_docs_handler_collects_function_arguments(backend):
    client, model = backend
    assistant = quiz_assistant(client, model)
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "Two quizzes, please.\n\n"
                                                   + fenced(json.dumps(QUIZ), "call display_quiz") + "\n\n"
                                                   + fenced(json.dumps(QUIZ_2), "call display_quiz")}])
    handler = DocsHandler()
    with client.beta.threads.runs.stream(thread_id=thread.id, assistant_id=assistant.id, event_handler=handler) as stream:
        stream.until_done()
    run = stream.get_final_run()
    assert run.status == "requires_action"
    stored = run.required_action.submit_tool_outputs.tool_calls
    assert [c.id for c in handler.required] == [c.id for c in stored]
    # What the handler collected from on_tool_call_delta is each call's arguments, exactly.
    assert handler.arguments == {c.id: c.function.arguments for c in stored}
    assert [json.loads(handler.arguments[c.id]) for c in stored] == [QUIZ, QUIZ_2]
    (step,) = steps_of(client, run)
    assert [tc.function.arguments for tc in step.step_details.tool_calls] == [c.function.arguments for c in stored]
