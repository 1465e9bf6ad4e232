"""Schemathesis fuzzes every operation of Oasis's own `/openapi.json` against the live server.

Checks on every answer: no 5xx; every non-2xx body is OpenAI's error
(`{"error": {"message": str, "type": str, "param", "code"}}`); the status, content type and JSON
body are the ones the document promises; and requests that break the documented schema are
refused.

The document is fuzzed as served, except for a few fuzz-only narrowings (the served document
stays truthful; these only steer the generator):

- `stream` is removed from request bodies (streams are covered by the SDK suite);
- `POST /v1/code_interpreter/execute` gets positive cases only, with `code` drawn from a few
  harmless snippets, two fixed sessions and a short `timeout_ms` (so no random Python runs);
  its invalid inputs are covered by tests/oasis/bad_input.rs;
- in valid cases, path ids (and `assistant_id` in run bodies) are ids of real objects made
  here, so they reach past the "not found" check (invalid cases get other ids, and a 404);
  delete operations and session ids keep random ids.

The run is bounded: at most 60 generated examples per operation (6 for execute) on top of
schemathesis's coverage cases, derandomized, so it is the same run every time (about 50 s on
2 cores).
"""

import copy
import os
import time

import pytest
import requests
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

BASE = os.environ.get("OASIS_BASE_URL", "")
HEADERS = {"Authorization": "Bearer sk-fuzz", "OpenAI-Beta": "assistants=v2"}
# Examples per operation (Hypothesis's fuzzing phase; the coverage phase adds its own
# boundary cases on top).
MAX_EXAMPLES = 60
EXECUTE_EXAMPLES = 6
SAFE_CODE = ["print(1)", "x = 2", "x * 21", "import sys; sys.version_info[0]"]
SESSIONS = ["fuzz-session-a", "fuzz-session-b"]


@schemathesis.check
def openai_error_body(ctx, response, case):
    """A non-2xx answer carries OpenAI's error body."""
    if 200 <= response.status_code < 300:
        return None
    content_type = response.headers.get("content-type", [""])
    content_type = content_type[0] if isinstance(content_type, list) else content_type
    assert content_type.startswith("application/json"), f"error with content type {content_type!r}"
    body = response.json()
    assert isinstance(body, dict) and isinstance(body.get("error"), dict), f"not an error body: {body!r}"
    err = body["error"]
    assert isinstance(err.get("message"), str) and err["message"], f"no message: {body!r}"
    assert isinstance(err.get("type"), str) and err["type"], f"no type: {body!r}"
    assert "param" in err and "code" in err, f"param/code missing: {body!r}"
    assert err["param"] is None or isinstance(err["param"], str), body
    assert err["code"] is None or isinstance(err["code"], str), body
    return None


@schemathesis.check
def schema_violations_refused(ctx, response, case):
    """Schemathesis's `negative_data_rejection`, except for a body that is empty or only
    whitespace: Oasis reads that as `{}` (as the document says), which is valid wherever a
    body is optional."""
    if isinstance(case.body, (bytes, str)) and not case.body.strip():
        return None
    return negative_data_rejection(ctx, response, case)


CHECKS = [
    not_a_server_error,
    openai_error_body,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    schema_violations_refused,
]
# Refusing a request as too large (a string past its `maxLength` can be past the 2 MiB body
# limit too) is refusing it.
REFUSALS = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429"]


# --- real objects for the fuzzer to aim at ------------------------------------------------------


def call(method, path, **kw):
    r = requests.request(method, BASE + path, headers=HEADERS, timeout=60, **kw)
    assert r.status_code == 200, f"{method} {path}: {r.status_code} {r.text}"
    return r.json()


def run_until(thread_id, run_id, statuses):
    deadline = time.time() + 60
    while time.time() < deadline:
        run = call("GET", f"/v1/threads/{thread_id}/runs/{run_id}")
        if run["status"] in statuses:
            return run
        time.sleep(0.05)
    raise AssertionError(f"run {run_id} never reached {statuses}: {run}")


def make_targets():
    """A file, an assistant with a function tool, and three threads: T1 with a message and a
    completed run (and its step), T2 and T3 each with a run waiting for tool outputs (T2's for
    submit_tool_outputs, T3's for cancel), and two code sessions."""
    f = call("POST", "/v1/files", files={"file": ("fuzz.txt", b"fuzz\n")}, data={"purpose": "assistants"})
    tool = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}
    a = call("POST", "/v1/assistants", json={"model": "oasis-local", "tools": [tool]})
    t1 = call("POST", "/v1/threads", json={"messages": [{"role": "user", "content": "hello"}]})
    m1 = call("GET", f"/v1/threads/{t1['id']}/messages")["data"][0]
    r1 = call("POST", f"/v1/threads/{t1['id']}/runs", json={"assistant_id": a["id"]})
    run_until(t1["id"], r1["id"], {"completed"})
    s1 = call("GET", f"/v1/threads/{t1['id']}/runs/{r1['id']}/steps")["data"][0]
    waiting = []
    for _ in range(2):
        r = call("POST", "/v1/threads/runs", json={
            "assistant_id": a["id"],
            "thread": {"messages": [{"role": "user", "content": "```call lookup\n{}\n```"}]},
        })
        run_until(r["thread_id"], r["id"], {"requires_action"})
        waiting.append(r)
    for s in SESSIONS:
        call("POST", "/v1/code_interpreter/execute", json={"code": "x = 1", "session_id": s})
    return {
        "file": f["id"], "assistant": a["id"], "message": m1["id"], "step": s1["id"],
        "t1": t1["id"], "r1": r1["id"],
        "t2": waiting[0]["thread_id"], "r2": waiting[0]["id"],
        "t3": waiting[1]["thread_id"], "r3": waiting[1]["id"],
    }


def real_ids(op_id, t):
    """The real id each path parameter of an operation takes in valid cases."""
    if op_id.startswith("delete"):
        return {}
    if op_id == "submitToolOutputs":
        return {"thread_id": t["t2"], "run_id": t["r2"]}
    if op_id == "cancelRun":
        return {"thread_id": t["t3"], "run_id": t["r3"]}
    return {
        "file_id": t["file"], "assistant_id": t["assistant"], "thread_id": t["t1"],
        "message_id": t["message"], "run_id": t["r1"], "step_id": t["step"],
        "model": "oasis-local",
    }


def narrow_for_fuzzing(doc, t):
    """The fuzz-only narrowings listed in this module's docstring."""
    doc = copy.deepcopy(doc)
    schemas = doc["components"]["schemas"]
    for name, body in schemas.items():
        if name.endswith("Request"):
            body["properties"].pop("stream", None)
    for name in ("CreateRunRequest", "CreateThreadAndRunRequest"):
        schemas[name]["properties"]["assistant_id"] = {"type": "string", "enum": [t["assistant"]]}
    execute = schemas["ExecuteRequest"]
    execute["required"] = ["code", "session_id"]
    execute["properties"].update({
        "code": {"enum": SAFE_CODE},
        "session_id": {"enum": SESSIONS},
        "timeout_ms": {"anyOf": [{"type": "null"}, {"type": "integer", "minimum": 500, "maximum": 5000}]},
        "image": {"enum": [None, "scientific"]},
        "file_ids": {"type": "array", "maxItems": 2, "items": {"anyOf": [{"enum": [t["file"]]}, {"type": "string"}]}},
    })
    for path, item in doc["paths"].items():
        shared = item.pop("parameters", [])
        for method, op in item.items():
            ids = real_ids(op["operationId"], t)
            params = copy.deepcopy(shared) + op.get("parameters", [])
            for p in params:
                if p["in"] == "path" and p["name"] in ids:
                    p["schema"] = {"type": "string", "enum": [ids[p["name"]]]}
            if params:
                op["parameters"] = params
    return doc


def load_schema():
    assert BASE, "OASIS_BASE_URL names the Oasis server to fuzz"
    doc = requests.get(BASE + "/openapi.json", timeout=60).json()
    config = schemathesis.Config.from_dict({
        "base-url": BASE,
        "headers": HEADERS,
        "request-timeout": 60,
        "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True, "database": "none"},
        "phases": {"stateful": {"enabled": False}},
        "checks": {"negative_data_rejection": {"expected-statuses": REFUSALS}},
        "operations": [{
            "include-operation-id": "executeCode",
            "generation": {"mode": "positive", "max-examples": EXECUTE_EXAMPLES},
        }],
    })
    return schemathesis.openapi.from_dict(narrow_for_fuzzing(doc, make_targets()), config=config)


# Schemathesis makes one test per operation when this module is collected, so the document is
# fetched (and the objects above made) then.
schema = load_schema()


@pytest.fixture(scope="module", autouse=True)
def end_sessions():
    yield
    for s in SESSIONS:
        requests.delete(f"{BASE}/v1/code_interpreter/sessions/{s}", headers=HEADERS, timeout=60)


@schema.parametrize()
def test_fuzzed_requests_get_documented_answers_and_openai_errors(case):
    case.call_and_validate(checks=CHECKS)
