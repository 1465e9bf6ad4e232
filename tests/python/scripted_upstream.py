"""A scripted stand-in for an OpenAI Chat Completions server, the "upstream" model of the run tests.

It is deterministic and follows the same two conventions as Oasis's built-in `oasis-local`
model, so that one test message drives both backends:

- fenced blocks whose info string is `python`, `py` or empty are code: if the request offers a
  code tool (the function whose parameters have a `code` property; its name is Oasis's choice),
  each block becomes one call of it with `{"code": block}`;
- fenced blocks whose info string is `call NAME` hold JSON arguments for a call of function NAME.

When Oasis offers `file_search` (its vector-store search), a message without blocks is searched;
after the results it answers `From the files: <best passage> 【n:i†file】`, citing as OpenAI's
models did.

After tool results it writes one line per result (`Result: <logs>` plus `[name](sandbox:path)`
links for a code call, `NAME returned: <output>` otherwise); with nothing to call it answers
`Scripted reply to: <user text>`, and with `tool_choice: "none"` it answers
`Scripted reply without tools.`.

Like OpenAI it refuses (400) requests that break the Chat Completions protocol: a `tool`
message answering no open call, a call left without an answer, `tools: []`, `tool_choice` or
`parallel_tool_calls` without tools, `stream_options` without streaming, an unknown model (404).
The error message says what was wrong and ends up in the run's `last_error`.

Tests can read `REQUESTS` (every chat-completions body received, in order) and script failures
with `FAIL_NEXT` (HTTP status codes to answer the next requests with, one each).
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODEL = "scripted-model"

REQUESTS: list = []
"""Every `POST /v1/chat/completions` body received (parsed JSON), in arrival order."""

FAIL_NEXT: list = []
"""Status codes for the next chat-completions requests: each request pops one and fails with it."""

LOCK = threading.Lock()

FENCE = re.compile(r"^```[ \t]*([^\n`]*)\n(.*?)^```[ \t]*$", re.M | re.S)
TEXT_PIECE = 6
ARGS_PIECE = 7


class ProtocolError(Exception):
    """The request breaks the Chat Completions protocol: answered with a 400."""

    def __init__(self, message: str, param: str | None = "messages"):
        super().__init__(message)
        self.message = message
        self.param = param


def error_body(message: str, type_: str = "invalid_request_error", param=None, code=None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def text_of(content) -> str:
    """A message's text: content is a string, null, or a list of parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    raise ProtocolError(f"scripted upstream: content must be a string or a list of parts, got {content!r}")


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """(info string, body) of each fenced block, in order; the body loses its final newline."""
    out = []
    for m in FENCE.finditer(text):
        body = m.group(2)
        if body.endswith("\n"):
            body = body[:-1]
        out.append((m.group(1).strip(), body))
    return out


def code_tool_name(tools) -> str | None:
    """The function offered for running code: the one whose parameters have a `code` property."""
    for t in tools or []:
        props = ((t.get("function") or {}).get("parameters") or {}).get("properties") or {}
        if "code" in props:
            return t["function"]["name"]
    return None


def new_call_id() -> str:
    return "call_" + uuid.uuid4().hex[:24]


def validate(body) -> None:
    if not isinstance(body, dict):
        raise ProtocolError("scripted upstream: the body must be a JSON object", None)
    if body.get("model") != MODEL:
        raise ProtocolError(f"The model `{body.get('model')}` does not exist or you do not have access to it.", "model")
    tools = body.get("tools")
    for key in ("tool_choice", "parallel_tool_calls"):
        if body.get(key) is not None and not tools:
            raise ProtocolError(f"Invalid value for '{key}': '{key}' is only allowed when 'tools' are specified.", key)
    if body.get("stream_options") is not None and body.get("stream") is not True:
        raise ProtocolError("The 'stream_options' parameter is only allowed when 'stream' is enabled.", "stream_options")
    if tools is not None:
        if not isinstance(tools, list) or not tools:
            raise ProtocolError("Invalid 'tools': expected a non-empty array (leave it out when there are none).", "tools")
        for t in tools:
            f = t.get("function") if isinstance(t, dict) else None
            if t.get("type") != "function" or not isinstance(f, dict) or not isinstance(f.get("name"), str):
                raise ProtocolError(f"scripted upstream: every tool must be {{type: function, function: {{name, parameters}}}}, got {t!r}", "tools")
            if "parameters" in f and not isinstance(f["parameters"], dict):
                raise ProtocolError(f"scripted upstream: parameters of {f['name']} must be an object", "tools")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ProtocolError("scripted upstream: messages must be a non-empty list")
    pending: dict[str, str] = {}  # call id -> function name, for calls not answered yet
    for i, m in enumerate(messages):
        role = m.get("role") if isinstance(m, dict) else None
        if role not in ("system", "developer", "user", "assistant", "tool"):
            raise ProtocolError(f"scripted upstream: messages[{i}] has an invalid role {role!r}")
        text_of(m.get("content"))
        if role == "tool":
            cid = m.get("tool_call_id")
            if cid not in pending:
                raise ProtocolError(
                    f"Invalid parameter: messages[{i}]: messages with role 'tool' must be a response to a preceeding "
                    f"message with 'tool_calls' (no open call has id {cid!r})."
                )
            del pending[cid]
            continue
        if pending:
            raise ProtocolError(
                f"An assistant message with 'tool_calls' must be followed by tool messages responding to each "
                f"'tool_call_id'. The following tool_call_ids did not have response messages: {', '.join(pending)} "
                f"(at messages[{i}])."
            )
        if role == "assistant":
            for tc in m.get("tool_calls") or []:
                f = tc.get("function") or {}
                if tc.get("type") != "function" or not tc.get("id") or not isinstance(f.get("name"), str) or not isinstance(f.get("arguments"), str):
                    raise ProtocolError(f"scripted upstream: messages[{i}] has a malformed tool call {tc!r}")
                pending[tc["id"]] = f["name"]
    if pending:
        raise ProtocolError(
            "An assistant message with 'tool_calls' must be followed by tool messages responding to each "
            f"'tool_call_id'. The following tool_call_ids did not have response messages: {', '.join(pending)}"
        )


def tool_results_reply(body) -> str:
    messages = body["messages"]
    last_assistant = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    names = {tc["id"]: tc["function"]["name"] for tc in messages[last_assistant].get("tool_calls") or []}
    code_tool = code_tool_name(body.get("tools"))
    lines = []
    for m in messages[last_assistant + 1:]:
        if m["role"] != "tool":
            continue
        name = names[m["tool_call_id"]]
        content = text_of(m.get("content"))
        if name == "file_search":
            # Cite the best passage as OpenAI's models did: its marker after what it supports.
            # Passages follow one another, each opening a paragraph with its marker; a
            # passage may hold blank lines of its own.
            first = re.split(r"\n\n(?=【\d+:\d+†)", content.strip())[0]
            if first.startswith("【") and "】" in first:
                marker, passage = first.split("】", 1)
                passage = " ".join(passage.split())
                lines.append(f"From the files: {passage[:120]} {marker}】")
            else:
                lines.append("The files say nothing about that.")
            continue
        if code_tool is not None and name == code_tool:
            try:
                result = json.loads(content)
                logs, files = result["logs"], result["files"]
                assert isinstance(result["status"], str) and isinstance(logs, str) and isinstance(result["images"], int)
                assert isinstance(files, list) and all(isinstance(p, str) for p in files)
            except Exception:
                raise ProtocolError(
                    "scripted upstream: a code tool result must be JSON "
                    f'{{"status": str, "logs": str, "files": [str], "images": int}}, got {content!r}'
                )
            line = f"Result: {logs.strip()}"
            for p in files:
                line += f" [{p.rsplit('/', 1)[-1]}](sandbox:{p})"
            lines.append(line)
        else:
            lines.append(f"{name} returned: {content}")
    return "\n".join(lines)


def decide(body) -> tuple[str | None, list[dict]]:
    """The answer to a (validated) request: (text, []) or (None, [{id, name, arguments}, ...])."""
    messages = body["messages"]
    last = messages[-1]
    if last["role"] == "tool":
        return tool_results_reply(body), []
    user_text = text_of(last.get("content"))
    if last["role"] != "user":
        return f"Scripted reply to: {user_text}", []
    if body.get("tool_choice") == "none":
        return "Scripted reply without tools.", []
    tools = body.get("tools") or []
    offered = {t["function"]["name"] for t in tools}
    code_tool = code_tool_name(tools)
    calls = []
    for info, block in fenced_blocks(user_text):
        words = info.split()
        if info.lower() in ("python", "py", "") and code_tool is not None:
            calls.append({"id": new_call_id(), "name": code_tool, "arguments": json.dumps({"code": block})})
        elif len(words) == 2 and words[0] == "call" and words[1] in offered:
            calls.append({"id": new_call_id(), "name": words[1], "arguments": block.strip()})
    if calls and body.get("parallel_tool_calls") is False:
        calls = calls[:1]
    if calls:
        return None, calls
    if "file_search" in offered and not fenced_blocks(user_text):
        return None, [{"id": new_call_id(), "name": "file_search",
                       "arguments": json.dumps({"queries": [user_text]})}]
    return f"Scripted reply to: {user_text}", []


def usage_of(body, text, calls) -> dict:
    prompt = max(1, len(json.dumps(body["messages"])) // 4)
    completion = max(1, (len(text or "") + sum(len(c["arguments"]) + len(c["name"]) for c in calls)) // 4)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def pieces(s: str, n: int) -> list[str]:
    return [s[i:i + n] for i in range(0, len(s), n)]


def stream_chunks(body, text, calls) -> list[dict]:
    """The `chat.completion.chunk` objects of a streamed answer, the usage chunk last."""
    cid = "chatcmpl-" + uuid.uuid4().hex[:24]
    created = int(time.time())

    def chunk(delta, finish=None):
        return {
            "id": cid, "object": "chat.completion.chunk", "created": created, "model": body["model"],
            "system_fingerprint": None,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }

    out = []
    if calls:
        out.append(chunk({"role": "assistant", "content": None}))
        # Per call: the opening fragment (id, name) then the arguments in small pieces. The
        # calls' fragments are interleaved, so a client must assemble them by `index`.
        fragments = []
        for i, c in enumerate(calls):
            frags = [{"index": i, "id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": ""}}]
            frags += [{"index": i, "function": {"arguments": p}} for p in pieces(c["arguments"], ARGS_PIECE)]
            fragments.append(frags)
        for k in range(max(len(f) for f in fragments)):
            for frags in fragments:
                if k < len(frags):
                    out.append(chunk({"tool_calls": [frags[k]]}))
        out.append(chunk({}, "tool_calls"))
    else:
        out.append(chunk({"role": "assistant", "content": "", "refusal": None}))
        out += [chunk({"content": p}) for p in pieces(text, TEXT_PIECE)]
        out.append(chunk({}, "stop"))
    last = chunk({})
    last["choices"] = []
    last["usage"] = usage_of(body, text, calls)
    out.append(last)
    return out


def completion(body, text, calls) -> dict:
    message = {"role": "assistant", "content": text, "refusal": None}
    if calls:
        message["tool_calls"] = [
            {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}} for c in calls
        ]
    return {
        "id": "chatcmpl-" + uuid.uuid4().hex[:24], "object": "chat.completion", "created": int(time.time()),
        "model": body["model"], "system_fingerprint": None,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": "tool_calls" if calls else "stop"}],
        "usage": usage_of(body, text, calls),
    }


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ScriptedUpstream/1"

    def log_message(self, format, *args):  # quiet
        pass

    def send_json(self, status: int, obj) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def do_GET(self):
        if self.path.rstrip("/") == "/v1/models":
            self.send_json(200, {"object": "list", "data": [{"id": MODEL, "object": "model", "created": 0, "owned_by": "scripted"}]})
        else:
            self.send_json(404, error_body(f"Unknown path {self.path}"))

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if self.path.rstrip("/") != "/v1/chat/completions":
            self.send_json(404, error_body(f"Unknown path {self.path}"))
            return
        try:
            body = json.loads(raw)
        except ValueError:
            self.send_json(400, error_body("scripted upstream: the body is not JSON"))
            return
        with LOCK:
            REQUESTS.append(body)
            fail = FAIL_NEXT.pop(0) if FAIL_NEXT else None
        if fail is not None:
            self.send_json(fail, error_body(f"scripted failure {fail}", "server_error"))
            return
        try:
            validate(body)
            text, calls = decide(body)
        except ProtocolError as e:
            status, code = (404, "model_not_found") if e.param == "model" else (400, None)
            self.send_json(status, error_body(e.message, param=e.param, code=code))
            return
        if body.get("stream") is True:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for c in stream_chunks(body, text, calls):
                self.write_chunk(f"data: {json.dumps(c)}\n\n".encode())
            self.write_chunk(b"data: [DONE]\n\n")
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        else:
            self.send_json(200, completion(body, text, calls))

    def write_chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()


def serve(
    port: int = 0, host: str = "127.0.0.1", sock: socket.socket | None = None
) -> ThreadingHTTPServer:
    """Start the server on a daemon thread; `server.server_address[1]` is its port. With `sock`
    (a bound, listening TCP socket, e.g. inherited from the process that started this one) it
    serves on that socket instead of binding `host:port`."""
    if sock is None:
        server = ThreadingHTTPServer((host, port), Handler)
    else:
        server = ThreadingHTTPServer(sock.getsockname()[:2], Handler, bind_and_activate=False)
        server.socket.close()
        server.socket = sock
        server.server_address = sock.getsockname()
        server.server_name, server.server_port = server.server_address[:2]
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="scripted-upstream", daemon=True).start()
    return server


if __name__ == "__main__":
    inherited = os.environ.get("SCRIPTED_UPSTREAM_FD")
    if inherited is not None:
        srv = serve(sock=socket.socket(fileno=int(inherited)))
    else:
        srv = serve(int(os.environ.get("SCRIPTED_UPSTREAM_PORT", "0")))
    print(f"scripted upstream on http://127.0.0.1:{srv.server_address[1]}/v1", flush=True)
    threading.Event().wait()
