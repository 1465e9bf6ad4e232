"""Load test against a running Oasis: many threads with runs at once, then many execute calls.

    python bench/load.py --base-url http://127.0.0.1:8080 [--threads 200 --runs 5 --executes 50]
    python bench/load.py --base-url http://127.0.0.1:8081,http://127.0.0.1:8082,http://127.0.0.1:8083
    python bench/load.py --api-keys KEY_A,KEY_B   # keys of different projects, taken in turn

Several comma-separated API keys (of different projects: see the README's "Projects and
keys") are taken in turn by the conversations and executes, each project with its own assistant.
Several comma-separated base URLs (the nodes of a cluster) take the requests in turn, as a
round-robin load balancer would: each HTTP request goes to the next node.

Part 1: `--threads` conversations run concurrently through the official SDK with the built-in
model; each adds `--runs` messages one after another, each with a Python cell printing a value
unique to (thread, turn), and runs `create_and_poll` after each. Then every thread's messages
are read back and checked: exactly one user and one assistant message per turn, in order, each
assistant message showing its own turn's value (nothing lost, nothing duplicated).
Part 2: `--executes` concurrent `POST /v1/code_interpreter/execute` calls on distinct sessions.
Every HTTP status is counted; the script exits non-zero on any 5xx, lost or duplicated message.
"""

import argparse
import collections
import concurrent.futures as cf
import json
import statistics
import sys
import threading
import time
import urllib.request
import warnings

try:
    import httpx
except ImportError:  # newer openai releases ship it as httpx2
    import httpx2 as httpx
import openai

warnings.filterwarnings("ignore", category=DeprecationWarning)

statuses = collections.Counter()
lock = threading.Lock()


class RoundRobin(httpx.BaseTransport):
    """Sends each request to the next of several base URLs (a round-robin load balancer)."""

    def __init__(self, bases, **kwargs):
        self.bases = [httpx.URL(b) for b in bases]
        self.inner = httpx.HTTPTransport(**kwargs)
        self.next = 0

    def handle_request(self, request):
        with lock:
            base = self.bases[self.next % len(self.bases)]
            self.next += 1
        request.url = request.url.copy_with(scheme=base.scheme, host=base.host, port=base.port)
        request.headers["host"] = f"{base.host}:{base.port}"
        return self.inner.handle_request(request)

    def close(self):
        self.inner.close()


def count(response):
    with lock:
        statuses[response.status_code] += 1


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))] if xs else float("nan")


def summary(name, xs):
    return (f"{name:<38} n={len(xs):<5} p50 {pct(xs, 50):8.1f} ms  p90 {pct(xs, 90):8.1f} ms  "
            f"p99 {pct(xs, 99):8.1f} ms  max {max(xs) if xs else float('nan'):8.1f} ms")


def conversation(client, assistant_id, i, runs, latencies, problems):
    thread = client.beta.threads.create()
    for k in range(runs):
        value = i * 1000 + k
        client.beta.threads.messages.create(
            thread_id=thread.id, role="user", content=f"turn {k}\n```python\nprint({value})\n```")
        start = time.perf_counter()
        run = client.beta.threads.runs.create_and_poll(
            thread_id=thread.id, assistant_id=assistant_id, poll_interval_ms=50)
        latencies.append((time.perf_counter() - start) * 1000)
        if run.status != "completed":
            problems.append(f"thread {i} turn {k}: run {run.id} ended {run.status} {run.last_error}")
    msgs = list(client.beta.threads.messages.list(thread_id=thread.id, order="asc", limit=100))
    if len(msgs) != 2 * runs:
        problems.append(f"thread {i}: {len(msgs)} messages, expected {2 * runs}")
        return
    for k in range(runs):
        user, reply = msgs[2 * k], msgs[2 * k + 1]
        value = str(i * 1000 + k)
        if user.role != "user" or f"print({value})" not in user.content[0].text.value:
            problems.append(f"thread {i} turn {k}: user message out of place")
        text = "".join(c.text.value for c in reply.content if c.type == "text")
        if reply.role != "assistant" or value not in text:
            problems.append(f"thread {i} turn {k}: reply {text!r} does not show {value}")


def execute(base, key, i, latencies, problems):
    body = json.dumps({"code": f"x = {i}\nprint(x * 2)", "session_id": f"load-{i}-{time.time_ns()}"})
    req = urllib.request.Request(base + "/v1/code_interpreter/execute", data=body.encode(),
                                 headers={"Content-Type": "application/json",
                                          "Authorization": f"Bearer {key}"})
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=300) as r:
            status, out = r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        status, out = e.code, json.loads(e.read() or b"{}")
    latencies.append((time.perf_counter() - start) * 1000)
    with lock:
        statuses[status] += 1
    if status != 200 or out.get("stdout") != f"{i * 2}\n":
        problems.append(f"execute {i}: {status} {out}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base-url", default="http://127.0.0.1:8080")
    ap.add_argument("--threads", type=int, default=200)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--executes", type=int, default=50)
    ap.add_argument("--api-keys", default="sk-load")
    args = ap.parse_args()
    keys = args.api_keys.split(",")
    bases = args.base_url.split(",")
    limits = httpx.Limits(max_connections=args.threads + 10)
    http = httpx.Client(event_hooks={"response": [count]}, timeout=300,
                        transport=RoundRobin(bases, limits=limits))
    clients = [openai.OpenAI(base_url=bases[0] + "/v1", api_key=k, max_retries=0, http_client=http)
               for k in keys]
    assistants = [c.beta.assistants.create(model="oasis-local", tools=[{"type": "code_interpreter"}])
                  for c in clients]

    problems, run_lat = [], []
    start = time.perf_counter()
    with cf.ThreadPoolExecutor(args.threads) as pool:
        futures = [pool.submit(conversation, clients[i % len(keys)], assistants[i % len(keys)].id,
                               i, args.runs, run_lat, problems)
                   for i in range(args.threads)]
        for f in cf.as_completed(futures):
            try:
                f.result()
            except Exception as e:  # an SDK error is a failed request: record it
                problems.append(f"conversation raised {type(e).__name__}: {e}")
    part1 = time.perf_counter() - start

    exec_lat = []
    start = time.perf_counter()
    with cf.ThreadPoolExecutor(args.executes) as pool:
        list(pool.map(lambda i: execute(bases[i % len(bases)], keys[i % len(keys)], i, exec_lat, problems),
                      range(args.executes)))
    part2 = time.perf_counter() - start

    total_runs = args.threads * args.runs
    print(f"oasis load: {args.threads} threads x {args.runs} runs (built-in model), then {args.executes} concurrent executes, over {len(bases)} node(s), {len(keys)} key(s)")
    print(summary("run create_and_poll (under load)", run_lat))
    print(f"{'runs completed per second':<38} {total_runs / part1:8.1f}  ({total_runs} runs in {part1:.1f} s)")
    print(summary("execute print (50 at once)", exec_lat))
    print(f"{'executes wall time':<38} {part2:8.2f} s")
    five = sum(n for s, n in statuses.items() if s >= 500)
    print(f"HTTP statuses: {dict(sorted(statuses.items()))}; 5xx: {five}")
    print(f"problems (lost/duplicated/misplaced messages, failed runs or calls): {len(problems)}")
    for p in problems[:20]:
        print("  " + p)
    if problems or five:
        sys.exit(1)


if __name__ == "__main__":
    main()
