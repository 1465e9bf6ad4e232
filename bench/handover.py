"""Benchmark: a session moving between nodes, and how soon a queued run is claimed.

    python bench/cluster.py --nodes 2 --database postgres --objects s3 -- \\
        python bench/handover.py --base-url {urls}

Part 1 (lease hand-over): a code-interpreter session holding a 10k-row pandas DataFrame runs
`--turns` short cells through `POST /v1/code_interpreter/execute`, first all on one node
(each turn takes the session's lease, runs, uploads its state), then alternating between two
nodes (each turn also drops the other node's stale copy and fetches the shared state). The
difference of the two p50s is what a hand-over costs. Part 2 (claim latency): `--runs` runs
created without streaming (so any node may claim them), each polled every 2 ms until it has
left `queued`: the time from the create's answer to a worker starting it (an upper bound: the
poll's own round trip is in it). Prints percentiles; asserts only that every call succeeded.
"""

import argparse
import json
import subprocess
import sys
import time
import urllib.request


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def call(base, path, body=None, method=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read())


def execute(base, session, code):
    start = time.perf_counter()
    out = call(base, "/v1/code_interpreter/execute", {"session_id": session, "code": code})
    took = (time.perf_counter() - start) * 1000
    if out.get("status") != "completed":
        sys.exit(f"execute failed: {out}")
    return took, out


def db_counts(url):
    """Commits and row writes of the database so far (PostgreSQL's statistics)."""
    if not url:
        return None
    time.sleep(1)  # the statistics collector reports with a short delay
    out = subprocess.run(
        ["psql", url, "-tAc", "SELECT xact_commit, tup_inserted, tup_updated, tup_deleted, "
         "pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint "
         "FROM pg_stat_database WHERE datname = current_database()"],
        capture_output=True, text=True, check=True).stdout.strip()
    return [int(x) for x in out.split("|")]


def line(name, xs):
    return f"{name:<44} n={len(xs):<4} p50 {pct(xs, 50):7.1f} ms  p90 {pct(xs, 90):7.1f} ms  p99 {pct(xs, 99):7.1f} ms"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base-url", required=True, help="two or more nodes, comma-separated")
    ap.add_argument("--turns", type=int, default=40)
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--database-url", help="PostgreSQL: count its transactions and row writes per run")
    args = ap.parse_args()
    bases = args.base_url.split(",")
    a, b = bases[0], bases[1 % len(bases)]
    session = f"handover-{time.time_ns()}"
    setup = ("import pandas as pd, numpy as np\n"
             "df = pd.DataFrame({'x': np.arange(10_000), 'y': np.random.rand(10_000)})\n"
             "n = 0\nprint(len(df))")
    execute(a, session, setup)
    step = "n += 1\nprint(n, round(float(df.y.sum()), 3))"
    stay, moved = [], []
    for _ in range(args.turns):
        stay.append(execute(a, session, step)[0])
    for i in range(args.turns):
        moved.append(execute(b if i % 2 == 0 else a, session, step)[0])
    last = execute(a, session, "print(n)")[1]
    expected = 2 * args.turns
    if last.get("stdout", "").strip() != str(expected):
        sys.exit(f"the session lost turns: n = {last.get('stdout')!r}, expected {expected}")

    asst = call(a, "/v1/assistants", {"model": "oasis-local", "tools": [{"type": "code_interpreter"}]})
    claim = []
    before = db_counts(args.database_url)
    for i in range(args.runs):
        base = bases[i % len(bases)]
        msg = "```python\nprint(6 * 7)\n```"
        thread = call(base, "/v1/threads", {"messages": [{"role": "user", "content": msg}]})
        run = call(base, f"/v1/threads/{thread['id']}/runs", {"assistant_id": asst["id"]})
        start = time.perf_counter()
        while True:
            r = call(base, f"/v1/threads/{thread['id']}/runs/{run['id']}")
            if r["status"] != "queued":
                break
            time.sleep(0.002)
        claim.append((time.perf_counter() - start) * 1000)
        while r["status"] not in ("completed", "failed", "cancelled", "expired", "incomplete"):
            time.sleep(0.01)
            r = call(base, f"/v1/threads/{thread['id']}/runs/{run['id']}")
        if r["status"] != "completed":
            sys.exit(f"run ended {r['status']}: {r.get('last_error')}")
    after = db_counts(args.database_url)

    print(f"oasis handover: {len(bases)} node(s), a 10k-row DataFrame session, {args.turns} turns each way")
    print(line("execute, every turn on the same node", stay))
    print(line("execute, every turn on the other node", moved))
    print(f"{'hand-over cost (difference of p50s)':<44} {pct(moved, 50) - pct(stay, 50):7.1f} ms")
    print(line("run created -> left queued (claim + start)", claim))
    if before and after:
        per = [(x - y) / args.runs for x, y in zip(after, before)]
        print(f"PostgreSQL per run with a code cell (thread + message + run + its polls; "
              f"heartbeats included): {per[0]:.1f} transactions (reads included), "
              f"{per[1]:.1f} rows inserted, {per[2]:.1f} updated, {per[3]:.1f} deleted, "
              f"{per[4] / 1024:.1f} KiB of WAL")


if __name__ == "__main__":
    main()
