"""Benchmark: the cookbook's Fibonacci run through the official SDK against a running Oasis.

    python bench/runs.py --base-url http://127.0.0.1:8080 [--samples 50]

Each sample creates a thread with the user's message (a fenced Python cell computing
fib(20)), then times `client.beta.threads.runs.create_and_poll` with the built-in model
`oasis-local`: the run is queued, a worker asks the model, runs the cell in the thread's new
sandbox session (from the warm pool), writes the answer and the SDK polls until `completed`.
It prints percentiles and the ratio to the 30 ms target; it asserts nothing except that each
run completed with the right answer.
"""

import argparse
import statistics
import time
import warnings

import openai

warnings.filterwarnings("ignore", category=DeprecationWarning)

CODE = """def fib(n):
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a
print(fib(20))"""


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base-url", default="http://127.0.0.1:8080")
    ap.add_argument("--samples", type=int, default=50)
    ap.add_argument("--pause-ms", type=int, default=100, help="idle time between runs")
    args = ap.parse_args()
    client = openai.OpenAI(base_url=args.base_url + "/v1", api_key="sk-bench", max_retries=0)
    a = client.beta.assistants.create(
        name="Math Tutor",
        instructions="You are a personal math tutor. Write and run code to answer math questions.",
        tools=[{"type": "code_interpreter"}],
        model="oasis-local",
    )
    times = []
    for i in range(args.samples + 3):
        t = client.beta.threads.create(
            messages=[{"role": "user", "content": f"Compute fib(20):\n```python\n{CODE}\n```"}]
        )
        start = time.perf_counter()
        run = client.beta.threads.runs.create_and_poll(thread_id=t.id, assistant_id=a.id)
        took = (time.perf_counter() - start) * 1000
        assert run.status == "completed", run
        reply = client.beta.threads.messages.list(thread_id=t.id).data[0]
        assert "6765" in reply.content[0].text.value, reply
        if i >= 3:  # warm-up: first sessions, first connections
            times.append(took)
        client.beta.threads.delete(t.id)
        time.sleep(args.pause_ms / 1000)
    p50 = statistics.median(times)
    print(f"oasis bench runs: Fibonacci create_and_poll, built-in model, n={len(times)}")
    print(
        f"create_and_poll (new thread, code cell)   p50 {p50:8.2f} ms   p90 {pct(times, 90):8.2f} ms"
        f"   min {min(times):8.2f} ms   max {max(times):8.2f} ms"
    )
    print(f"p50 / target (30 ms): {p50 / 30:.2f}x")


if __name__ == "__main__":
    main()
