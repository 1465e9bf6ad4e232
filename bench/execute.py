"""Benchmark: `POST /v1/code_interpreter/execute` running `print(1)` on a warm session.

    python bench/execute.py --base-url http://127.0.0.1:8080 [--samples 300]

Uses one keep-alive connection (standard library only). The session is created and warmed
first; each sample then times one request from sending it to the parsed body: HTTP, the
sandbox call, and with `isolation = process` the round trip to the sandbox worker. Prints
percentiles and asserts only that each call completed with the right output.
"""

import argparse
import http.client
import json
import statistics
import time
import urllib.parse


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base-url", default="http://127.0.0.1:8080")
    ap.add_argument("--samples", type=int, default=300)
    ap.add_argument("--session", default="bench-execute")
    args = ap.parse_args()
    url = urllib.parse.urlparse(args.base_url)
    conn = http.client.HTTPConnection(url.hostname, url.port or 80)
    body = json.dumps({"code": "print(1)", "session_id": args.session})
    headers = {"Content-Type": "application/json", "Authorization": "Bearer sk-bench"}

    def call():
        conn.request("POST", "/v1/code_interpreter/execute", body, headers)
        r = json.loads(conn.getresponse().read())
        assert r["status"] == "completed" and r["stdout"] == "1\n", r
        return r

    for _ in range(20):  # warm-up: the session's interpreter, the connection
        call()
    times, inner = [], []
    for _ in range(args.samples):
        start = time.perf_counter()
        r = call()
        times.append((time.perf_counter() - start) * 1000)
        inner.append(r["duration_ms"])
    print(f"oasis bench execute: print(1) on a warm session, n={len(times)}")
    print(
        f"POST /v1/code_interpreter/execute   p50 {statistics.median(times):7.3f} ms"
        f"   p90 {pct(times, 90):7.3f} ms   min {min(times):7.3f} ms   max {max(times):7.3f} ms"
    )
    print(f"  of which the sandbox call (duration_ms) p50 {statistics.median(inner):7.3f} ms")


if __name__ == "__main__":
    main()
