//! Oasis as a cluster: real `oasis serve` processes on loopback sharing one PostgreSQL
//! (records, the run queue, heartbeats, session leases) and one S3 (File bytes, session state),
//! with requests spread over the nodes as a load balancer would. Nodes run as a user runs them
//! (sandboxes in supervised worker processes), with a 3 s node lease so that a lost node is
//! noticed quickly.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::durability::Server;
use crate::services::{Postgres, S3};

/// Held by each test of this file: one cluster at a time (each starts PostgreSQL, S3 and
/// several nodes, on a machine that may have 2 cores).
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Seconds a node may go without a heartbeat before the others count it lost.
const LEASE_SECS: u64 = 3;
/// How often a state is polled.
const POLL: Duration = Duration::from_millis(50);
/// How long a run of a few lines of Python may take (its session fetched from S3 included).
const RUN_BOUND: Duration = Duration::from_secs(90);
/// Runs that are over.
const ENDED: [&str; 6] = [
    "completed",
    "failed",
    "cancelled",
    "expired",
    "incomplete",
    "requires_action",
];

/// What a request got: its status and JSON body (`Null` if not JSON), or why no HTTP answer
/// came (refused, reset, timed out).
type Answer = Result<(u16, Value), String>;

/// One `oasis serve` process of a [`Cluster`].
pub struct Node {
    /// Its `OASIS_NODE_ID`: `node-<index>`.
    pub id: String,
    pub data: PathBuf,
    /// `None` once killed.
    pub server: Option<Server>,
}

/// N nodes on one database and one object-store prefix.
pub struct Cluster {
    pub nodes: Vec<Node>,
    /// The database the nodes share (for `Postgres::psql`).
    pub database_url: String,
    http: reqwest::Client,
    turn: AtomicUsize,
    /// Last: removed once the nodes are gone.
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// `n` nodes on a new database `name` of `pg` and the prefix `name` of `s3`, each with its
    /// own data dir (the runtime cache shared), `OASIS_NODE_ID=node-<i>`, a 3 s node lease and
    /// `extra` environment variables; returns once every node answers `/health`.
    pub async fn start(
        pg: &Postgres,
        s3: &S3,
        name: &str,
        n: usize,
        extra: &[(&str, &str)],
    ) -> Cluster {
        let database_url = pg.fresh_database(name);
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("oasis.toml");
        std::fs::write(
            &config,
            "# a cluster node: its settings come from the environment\n",
        )
        .unwrap();
        let mut common: Vec<(String, String)> = vec![
            ("OASIS_DATABASE_URL".into(), database_url.clone()),
            ("OASIS_OBJECT_STORE_URL".into(), s3.url(name)),
            ("OASIS_NODE_LEASE_SECS".into(), LEASE_SECS.to_string()),
        ];
        common.extend(s3.env());
        common.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let t = Instant::now();
        let nodes = futures::future::join_all((0..n).map(|i| {
            let id = format!("node-{i}");
            let data = dir.path().join(&id);
            let mut env = common.clone();
            env.push(("OASIS_NODE_ID".into(), id.clone()));
            let config = config.clone();
            async move {
                let vars: Vec<(&str, &str)> =
                    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                let server = Server::start_with_vars(&data, &config, &vars).await;
                Node {
                    id,
                    data,
                    server: Some(server),
                }
            }
        }))
        .await;
        eprintln!(
            "cluster {name}: {n} nodes up in {:?}: {}",
            t.elapsed(),
            nodes
                .iter()
                .map(|n| format!("{} {}", n.id, n.server.as_ref().unwrap().base))
                .collect::<Vec<_>>()
                .join(", ")
        );
        Cluster {
            nodes,
            database_url,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
            turn: AtomicUsize::new(0),
            _dir: dir,
        }
    }

    /// The indices of the nodes not killed.
    pub fn live(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].server.is_some())
            .collect()
    }

    /// The live node the next request goes to (round robin).
    pub fn next(&self) -> usize {
        let live = self.live();
        assert!(!live.is_empty(), "no node of the cluster is alive");
        live[self.turn.fetch_add(1, Ordering::Relaxed) % live.len()]
    }

    pub fn base(&self, i: usize) -> &str {
        match &self.nodes[i].server {
            Some(s) => &s.base,
            None => panic!("{} was killed", self.nodes[i].id),
        }
    }

    /// Every node's `base` URL, comma-separated.
    pub fn bases(&self) -> String {
        self.live()
            .iter()
            .map(|&i| self.base(i).to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The index of the node named `id`.
    pub fn index_of(&self, id: &str) -> usize {
        self.nodes
            .iter()
            .position(|n| n.id == id)
            .unwrap_or_else(|| panic!("no node {id:?}"))
    }

    /// The last lines each node wrote on stderr, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for n in &self.nodes {
            match &n.server {
                None => out.push_str(&format!("\n--- {} (killed) ---\n", n.id)),
                Some(s) => {
                    let tail = s.stderr_tail();
                    let lines: Vec<&str> = tail.lines().collect();
                    out.push_str(&format!(
                        "\n--- {} ({}), last lines ---\n{}\n",
                        n.id,
                        s.base,
                        lines[lines.len().saturating_sub(40)..].join("\n")
                    ));
                }
            }
        }
        out
    }

    /// `method path` on node `i`, with a JSON `body` if any.
    pub async fn send(
        &self,
        i: usize,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Answer {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base(i)))
            .header("OpenAI-Beta", "assistants=v2");
        if let Some(b) = body {
            req = req.json(b);
        }
        answer(req.send().await).await
    }

    /// `GET path` on node `i`; panics (with the nodes' logs) if no HTTP answer came.
    pub async fn get_on(&self, i: usize, path: &str) -> (u16, Value) {
        let a = self.send(i, reqwest::Method::GET, path, None).await;
        self.answered(i, &format!("GET {path}"), a)
    }

    /// `POST path` on node `i`; panics (with the nodes' logs) if no HTTP answer came.
    pub async fn post_on(&self, i: usize, path: &str, body: Value) -> (u16, Value) {
        let a = self.send(i, reqwest::Method::POST, path, Some(&body)).await;
        self.answered(i, &format!("POST {path}"), a)
    }

    /// `GET path` on the next node.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.get_on(self.next(), path).await
    }

    /// `GET path` on the next node, which must answer 200: its body.
    pub async fn get_ok(&self, path: &str) -> Value {
        let i = self.next();
        let (s, v) = self.get_on(i, path).await;
        assert_eq!(
            s,
            200,
            "GET {path} on {}: {v}{}",
            self.nodes[i].id,
            self.logs()
        );
        v
    }

    /// `POST path` on the next node, which must answer 200: its body.
    pub async fn post_ok(&self, path: &str, body: Value) -> Value {
        let i = self.next();
        let (s, v) = self.post_on(i, path, body).await;
        assert_eq!(
            s,
            200,
            "POST {path} on {}: {v}{}",
            self.nodes[i].id,
            self.logs()
        );
        v
    }

    fn answered(&self, i: usize, what: &str, a: Answer) -> (u16, Value) {
        a.unwrap_or_else(|e| {
            panic!(
                "{what} on {}: no HTTP answer: {e}{}",
                self.nodes[i].id,
                self.logs()
            )
        })
    }

    /// `POST /v1/files` of `bytes` named `name` (purpose `assistants`) on node `i`.
    pub async fn upload_on(&self, i: usize, name: &str, bytes: Vec<u8>) -> Answer {
        let form = reqwest::multipart::Form::new()
            .text("purpose", "assistants")
            .part(
                "file",
                reqwest::multipart::Part::bytes(bytes).file_name(name.to_string()),
            );
        answer(
            self.http
                .post(format!("{}/v1/files", self.base(i)))
                .multipart(form)
                .send()
                .await,
        )
        .await
    }

    /// `GET /v1/files/{id}/content` on node `i`: status and bytes.
    pub async fn download_on(&self, i: usize, id: &str) -> (u16, Vec<u8>) {
        let r = self
            .http
            .get(format!("{}/v1/files/{id}/content", self.base(i)))
            .send()
            .await
            .unwrap_or_else(|e| panic!("download {id} from {}: {e}", self.nodes[i].id));
        let status = r.status().as_u16();
        (status, r.bytes().await.unwrap().to_vec())
    }

    /// Every item of a list endpoint (`path` without a query), paged with `after`, oldest
    /// first, each page from the next node.
    pub async fn list_all(&self, path: &str) -> Vec<Value> {
        let mut out: Vec<Value> = vec![];
        loop {
            let sep = if path.contains('?') { '&' } else { '?' };
            let mut q = format!("{path}{sep}order=asc&limit=100");
            if let Some(last) = out.last() {
                q.push_str(&format!("&after={}", last["id"].as_str().unwrap()));
            }
            let page = self.get_ok(&q).await;
            out.extend(page["data"].as_array().unwrap().iter().cloned());
            if page["has_more"] != true {
                return out;
            }
        }
    }

    /// Poll a run (each poll on the next node) until it is over; panics after `bound`.
    pub async fn wait_run(&self, thread: &str, run: &str, bound: Duration) -> Value {
        let start = Instant::now();
        loop {
            let r = self
                .get_ok(&format!("/v1/threads/{thread}/runs/{run}"))
                .await;
            if ENDED.contains(&r["status"].as_str().unwrap_or("")) {
                return r;
            }
            assert!(
                start.elapsed() < bound,
                "run {run} still {} after {bound:?}: {r}{}",
                r["status"],
                self.logs()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// The node that claimed run `id`, from the database (empty until one has).
    pub fn run_node(&self, pg: &Postgres, id: &str) -> String {
        pg.psql(
            &self.database_url,
            &format!("SELECT node FROM runs WHERE id = '{id}' AND claimed_at IS NOT NULL"),
        )
        .unwrap_or_else(|e| panic!("asking which node holds {id}: {e}"))
    }

    /// The node whose worker holds run `id`, once one does (every `POLL`, until `deadline`).
    pub async fn holder(&self, pg: &Postgres, id: &str, deadline: Instant) -> String {
        loop {
            let node = self.run_node(pg, id);
            if !node.is_empty() {
                return node;
            }
            assert!(
                Instant::now() < deadline,
                "no node claimed {id}{}",
                self.logs()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// The node that drove run `id` (that finished it, once it is over).
    pub fn ran_on(&self, pg: &Postgres, id: &str) -> String {
        pg.psql(
            &self.database_url,
            &format!("SELECT node FROM runs WHERE id = '{id}'"),
        )
        .unwrap_or_else(|e| panic!("asking which node ran {id}: {e}"))
    }

    /// One turn of a thread: `code` as a user message (on the next node), a run of `assistant`
    /// (created on the next node), which must complete; the run and its reply's text.
    pub async fn turn(&self, assistant: &str, thread: &str, code: &str) -> (Value, String) {
        self.post_ok(
            &format!("/v1/threads/{thread}/messages"),
            json!({"role": "user", "content": format!("```python\n{code}\n```")}),
        )
        .await;
        let run = self
            .post_ok(
                &format!("/v1/threads/{thread}/runs"),
                json!({"assistant_id": assistant}),
            )
            .await;
        let id = run["id"].as_str().unwrap();
        let run = self.wait_run(thread, id, RUN_BOUND).await;
        assert_eq!(run["status"], "completed", "{run}{}", self.logs());
        let reply = self.reply(thread, id).await;
        (run, text_of(&reply))
    }

    /// One turn of a thread on node `i`: `code` as a user message and a streamed run there (so
    /// node `i`, which holds the stream, drives it), which must complete; the run and its
    /// reply's text.
    pub async fn turn_on(
        &self,
        i: usize,
        assistant: &str,
        thread: &str,
        code: &str,
    ) -> (Value, String) {
        let (s, m) = self
            .post_on(
                i,
                &format!("/v1/threads/{thread}/messages"),
                json!({"role": "user", "content": format!("```python\n{code}\n```")}),
            )
            .await;
        assert_eq!(s, 200, "{m}");
        let events = streamed_run(&self.http, self.base(i), thread, assistant).await;
        let run = last_event(&events, "thread.run.completed");
        let reply = self.reply(thread, run["id"].as_str().unwrap()).await;
        (run, text_of(&reply))
    }

    /// The one message run `run` wrote.
    pub async fn reply(&self, thread: &str, run: &str) -> Value {
        let list = self
            .get_ok(&format!("/v1/threads/{thread}/messages?run_id={run}"))
            .await;
        let data = list["data"].as_array().unwrap();
        assert_eq!(
            data.len(),
            1,
            "run {run} wrote {} messages: {list}",
            data.len()
        );
        data[0].clone()
    }

    /// SIGTERM node `i` and wait for it to exit (at most `bound`); whether it exited by itself.
    pub async fn terminate(&mut self, i: usize, bound: Duration) -> bool {
        let server = self.nodes[i].server.take().expect("a live node");
        server.terminate(bound).await
    }

    /// SIGKILL node `i` (its sandbox workers die with it).
    pub async fn kill(&mut self, i: usize) {
        let server = self.nodes[i].server.take().expect("a live node");
        server.kill().await;
    }
}

/// A reqwest result as an [`Answer`].
async fn answer(r: reqwest::Result<reqwest::Response>) -> Answer {
    match r {
        Err(e) => Err(format!("{e:?}")),
        Ok(r) => {
            let status = r.status().as_u16();
            match r.bytes().await {
                Ok(b) => Ok((status, serde_json::from_slice(&b).unwrap_or(Value::Null))),
                Err(e) => Err(format!("status {status}, then the body failed: {e:?}")),
            }
        }
    }
}

/// The text of a message's one text part.
fn text_of(message: &Value) -> String {
    let texts: Vec<&str> = message["content"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["type"] == "text")
        .map(|c| c["text"]["value"].as_str().unwrap())
        .collect();
    assert_eq!(texts.len(), 1, "{message}");
    texts[0].to_string()
}

/// The File a message links as `sandbox:/mnt/data/<name>` (a `file_path` annotation).
fn linked_file(message: &Value, name: &str) -> String {
    let link = format!("sandbox:/mnt/data/{name}");
    message["content"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["type"] == "text")
        .flat_map(|c| c["text"]["annotations"].as_array().unwrap().iter())
        .find(|a| a["type"] == "file_path" && a["text"] == link.as_str())
        .and_then(|a| a["file_path"]["file_id"].as_str())
        .unwrap_or_else(|| panic!("no file_path annotation for {link}: {message}"))
        .to_string()
}

/// Whether `body` is OpenAI's error body of a server error: `{"error": {"message": "…",
/// "type": "server_error", "param": …, "code": …}}`.
fn is_server_error_body(body: &Value) -> bool {
    let e = &body["error"];
    e["message"].as_str().is_some_and(|m| !m.is_empty())
        && e["type"] == "server_error"
        && e.as_object()
            .is_some_and(|o| o.contains_key("param") && o.contains_key("code"))
}

/// Event names with each run of equal ones (deltas) counted once.
fn shape(events: &[(String, String)]) -> Vec<String> {
    let mut out: Vec<String> = vec![];
    for (name, _) in events {
        if out.last() != Some(name) {
            out.push(name.clone());
        }
    }
    out
}

/// `POST /v1/threads/{thread}/runs` with `stream: true` on `base`: the events, in order.
async fn streamed_run(
    http: &reqwest::Client,
    base: &str,
    thread: &str,
    assistant: &str,
) -> Vec<(String, String)> {
    let resp = http
        .post(format!("{base}/v1/threads/{thread}/runs"))
        .json(&json!({"assistant_id": assistant, "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    crate::runs::sse_events(resp).await
}

/// The `data` of the last event named `name`, as JSON.
fn last_event(events: &[(String, String)], name: &str) -> Value {
    let (_, data) = events
        .iter()
        .rev()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no {name} event in {:?}", shape(events)));
    serde_json::from_str(data).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_share_threads_runs_and_sessions() {
    let _one = ONE_AT_A_TIME.lock().await;
    let t0 = Instant::now();
    let pg = Postgres::start();
    let s3 = S3::start();
    // One node alone (SQLite, files on disk), for the stream's shape as one node sends it.
    let solo_dir = tempfile::tempdir().unwrap();
    let solo_config = solo_dir.path().join("oasis.toml");
    std::fs::write(&solo_config, "").unwrap();
    let solo_data = solo_dir.path().join("data");
    let (c, solo) = tokio::join!(
        Cluster::start(&pg, &s3, "share", 3, &[]),
        Server::start_with(&solo_data, &solo_config, &[]),
    );

    let assistant = c
        .post_ok(
            "/v1/assistants",
            json!({"model": "oasis-local", "tools": [{"type": "code_interpreter"}]}),
        )
        .await;
    let assistant = assistant["id"].as_str().unwrap().to_string();
    let thread = c.post_ok("/v1/threads", json!({})).await;
    let thread = thread["id"].as_str().unwrap().to_string();

    // Turns in a row, each streamed through the next node (so that node drives it); each
    // sees the last one's variables and files.
    let (r1, text1) = c
        .turn_on(
            0,
            &assistant,
            &thread,
            "x = 41\nwith open('/mnt/data/notes.txt', 'w') as f:\n    f.write('written in turn 1')\nprint('turn 1 done')",
        )
        .await;
    assert!(text1.contains("turn 1 done"), "{text1}");
    let csv: String = "n,square\n".to_string()
        + &(0..5)
            .map(|i| format!("{i},{}\n", i * i))
            .collect::<String>();
    let (r2, text2) = c
        .turn_on(
            1,
            &assistant,
            &thread,
            "print(x + 1)\nprint(open('/mnt/data/notes.txt').read())\nx = x + 1\n\
             with open('/mnt/data/notes.txt', 'a') as f:\n    f.write(' + turn 2')\n\
             with open('/mnt/data/report.csv', 'w') as f:\n    \
             f.write('n,square\\n' + ''.join(f'{i},{i * i}\\n' for i in range(5)))",
        )
        .await;
    assert!(
        text2.contains("42\nwritten in turn 1"),
        "turn 2 does not see turn 1's x and file: {text2}"
    );
    let (r3, text3) = c
        .turn_on(
            2,
            &assistant,
            &thread,
            "print(x + 1, '|', open('/mnt/data/notes.txt').read(), '|', \
             len(open('/mnt/data/report.csv').read().splitlines()))",
        )
        .await;
    assert!(
        text3.contains("43 | written in turn 1 + turn 2 | 6"),
        "turn 3 does not see turn 2's x and files: {text3}"
    );
    let runs = [&r1, &r2, &r3].map(|r| r["id"].as_str().unwrap().to_string());
    let ran_on: Vec<String> = runs.iter().map(|r| c.ran_on(&pg, r)).collect();
    eprintln!("turns ran on {ran_on:?}");
    assert_eq!(
        ran_on,
        ["node-0", "node-1", "node-2"],
        "each turn runs on the node holding its stream"
    );

    // The CSV the code wrote is a File, downloadable through every node.
    let reply2 = c.reply(&thread, &runs[1]).await;
    let report = linked_file(&reply2, "report.csv");
    for i in c.live() {
        let (s, bytes) = c.download_on(i, &report).await;
        assert_eq!(s, 200, "download {report} from {}", c.nodes[i].id);
        assert_eq!(String::from_utf8_lossy(&bytes), csv, "{}", c.nodes[i].id);
        let (s, f) = c.get_on(i, &format!("/v1/files/{report}")).await;
        assert_eq!(
            (s, &f["purpose"]),
            (200, &json!("assistants_output")),
            "{f}"
        );
    }

    // A streamed run through one node: the same events as one node sends, and the session.
    c.post_ok(
        &format!("/v1/threads/{thread}/messages"),
        json!({"role": "user", "content": "```python\nprint(x * 2)\n```"}),
    )
    .await;
    let streaming = c.next();
    let events = streamed_run(&c.http, c.base(streaming), &thread, &assistant).await;
    let (_, solo_a) = solo
        .post(
            "/v1/assistants",
            json!({"model": "oasis-local", "tools": [{"type": "code_interpreter"}]}),
        )
        .await;
    let (_, solo_t) = solo
        .post(
            "/v1/threads",
            json!({"messages": [{"role": "user", "content": "```python\nx = 42\nprint(x * 2)\n```"}]}),
        )
        .await;
    let solo_events = streamed_run(
        &solo.client,
        &solo.base,
        solo_t["id"].as_str().unwrap(),
        solo_a["id"].as_str().unwrap(),
    )
    .await;
    assert_eq!(
        shape(&events),
        shape(&solo_events),
        "the cluster's stream (left) is not shaped as one node's (right){}",
        c.logs()
    );
    assert_eq!(events.last().unwrap(), &("done".into(), "[DONE]".into()));
    let run4 = last_event(&events, "thread.run.completed");
    let streamed_text = text_of(&last_event(&events, "thread.message.completed"));
    assert!(streamed_text.contains("84"), "{streamed_text}");
    let polled = c
        .wait_run(&thread, run4["id"].as_str().unwrap(), RUN_BOUND)
        .await;
    assert_eq!(polled["status"], "completed", "{polled}");

    // Every node lists the same messages and runs.
    let mut lists = vec![];
    for i in c.live() {
        let (s, m) = c
            .get_on(
                i,
                &format!("/v1/threads/{thread}/messages?order=asc&limit=100"),
            )
            .await;
        assert_eq!(s, 200, "{m}");
        let (s, r) = c
            .get_on(i, &format!("/v1/threads/{thread}/runs?order=asc&limit=100"))
            .await;
        assert_eq!(s, 200, "{r}");
        lists.push((c.nodes[i].id.clone(), m["data"].clone(), r["data"].clone()));
    }
    let roles: Vec<&str> = lists[0]
        .1
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["user", "assistant"].repeat(4), "{}", lists[0].1);
    assert_eq!(lists[0].2.as_array().unwrap().len(), 4, "{}", lists[0].2);
    for (node, messages, runs) in &lists[1..] {
        assert_eq!(
            messages, &lists[0].1,
            "{node} lists other messages than {}",
            lists[0].0
        );
        assert_eq!(
            runs, &lists[0].2,
            "{node} lists other runs than {}",
            lists[0].0
        );
    }
    eprintln!(
        "three_nodes_share_threads_runs_and_sessions: {:?}",
        t0.elapsed()
    );
}

/// The cookbook flows of the Python SDK suite (`tests/python/test_runs.py`), each on both
/// backends: the built-in model on one cluster, the suite's scripted upstream on another (on
/// the same PostgreSQL server and S3, their own database and prefix), the SDK's requests sent
/// to the nodes in turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_sdks_cookbook_flows_pass_on_three_nodes() {
    let _one = ONE_AT_A_TIME.lock().await;
    let t0 = Instant::now();
    let python = tokio::task::spawn_blocking(crate::helpers::python_venv)
        .await
        .unwrap();
    let pg = Postgres::start();
    let s3 = S3::start();
    // The scripted upstream is served by pytest, on this socket (bound here, so that its port
    // is known before the nodes that call it start).
    let upstream_socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let upstream_url = format!(
        "http://127.0.0.1:{}/v1",
        upstream_socket.local_addr().unwrap().port()
    );
    let upstream_env = [("OASIS_UPSTREAM_BASE_URL", upstream_url.as_str())];
    let (local, upstream) = tokio::join!(
        Cluster::start(&pg, &s3, "cookbook_local", 3, &[]),
        Cluster::start(&pg, &s3, "cookbook_upstream", 3, &upstream_env),
    );
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut pytest = tokio::process::Command::new(&python);
    pytest
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "-k"])
        .arg(
            "math_tutor or fibonacci or csv_to_chart or function_calling or streaming \
             or create_and_run_stream",
        )
        .arg(root.join("tests/python/test_runs.py"))
        .env("OASIS_BASE_URL", local.base(0))
        .env("OASIS_BASE_URLS", local.bases())
        .env("OASIS_UPSTREAM_OASIS_URL", upstream.base(0))
        .env("OASIS_UPSTREAM_OASIS_URLS", upstream.bases())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env_remove("SCRIPTED_UPSTREAM_PORT");
    crate::helpers::hand_down_upstream_socket(&mut pytest, &upstream_socket);
    let out = pytest.output().await.unwrap();
    drop(upstream_socket);
    let text = crate::helpers::printed(&out);
    println!("{text}");
    assert!(
        out.status.success(),
        "the SDK's cookbook flows failed on the clusters:\n{text}\nbuilt-in model's cluster:{}\nupstream's cluster:{}",
        local.logs(),
        upstream.logs()
    );
    // 9 flows, each on both backends.
    let passed: usize = text
        .lines()
        .rev()
        .find_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            let at = words
                .iter()
                .position(|w| w.trim_end_matches(',') == "passed")?;
            words.get(at.checked_sub(1)?)?.parse().ok()
        })
        .unwrap_or(0);
    assert!(passed >= 18, "only {passed} cookbook tests passed:\n{text}");
    // The runs were driven by more than one node of each cluster.
    for c in [&local, &upstream] {
        let nodes = pg
            .psql(
                &c.database_url,
                "SELECT count(DISTINCT node) FROM runs WHERE node IS NOT NULL",
            )
            .unwrap();
        eprintln!("runs were driven by {nodes} nodes");
        assert!(
            nodes.parse::<usize>().unwrap() >= 2,
            "all runs ran on one node"
        );
    }
    eprintln!(
        "the_sdks_cookbook_flows_pass_on_three_nodes: {:?}",
        t0.elapsed()
    );
}

/// Each of `ids` is in `listed` exactly once.
fn each_once(what: &str, listed: &[Value], ids: &[String]) {
    let listed: Vec<&str> = listed.iter().map(|v| v["id"].as_str().unwrap()).collect();
    let unique: HashSet<&str> = listed.iter().copied().collect();
    assert_eq!(
        unique.len(),
        listed.len(),
        "{what}: duplicates in {listed:?}"
    );
    for id in ids {
        assert!(
            listed.contains(&id.as_str()),
            "{what}: {id} is missing from {listed:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_killed_during_a_run_loses_nothing_acknowledged() {
    let _one = ONE_AT_A_TIME.lock().await;
    let t0 = Instant::now();
    let pg = Postgres::start();
    let s3 = S3::start();
    let mut c = Cluster::start(&pg, &s3, "kill", 3, &[]).await;

    let assistant = c
        .post_ok(
            "/v1/assistants",
            json!({"model": "oasis-local", "tools": [{"type": "code_interpreter"}]}),
        )
        .await;
    let assistant = assistant["id"].as_str().unwrap().to_string();
    // Files uploaded through each node.
    let mut files: Vec<(String, Vec<u8>)> = vec![];
    for k in 0..4u32 {
        let bytes: Vec<u8> = (0..150_000u32)
            .map(|i| (i.wrapping_mul(31).wrapping_add(k * 7) % 251) as u8)
            .collect();
        let i = c.next();
        let (s, f) = c
            .upload_on(i, &format!("part-{k}.bin"), bytes.clone())
            .await
            .unwrap();
        assert_eq!(s, 200, "upload on {}: {f}", c.nodes[i].id);
        files.push((f["id"].as_str().unwrap().to_string(), bytes));
    }
    // A thread of notes, written through each node.
    let notes = c
        .post_ok(
            "/v1/threads",
            json!({"messages": [{"role": "user", "content": "note 0"}]}),
        )
        .await;
    let notes = notes["id"].as_str().unwrap().to_string();
    let mut note_ids = vec![];
    for k in 1..7 {
        let m = c
            .post_ok(
                &format!("/v1/threads/{notes}/messages"),
                json!({"role": "user", "content": format!("note {k}")}),
            )
            .await;
        note_ids.push(m["id"].as_str().unwrap().to_string());
    }
    // A thread with two finished turns.
    let thread = c.post_ok("/v1/threads", json!({})).await;
    let thread = thread["id"].as_str().unwrap().to_string();
    let (r1, _) = c
        .turn(
            &assistant,
            &thread,
            "total = 99\nwith open('/mnt/data/kept.txt', 'w') as f:\n    f.write('kept')\nprint(total)",
        )
        .await;
    let (r2, text2) = c
        .turn(&assistant, &thread, "total += 1\nprint(total)")
        .await;
    assert!(text2.contains("100"), "{text2}");
    let finished = [&r1, &r2].map(|r| r["id"].as_str().unwrap().to_string());

    // A turn that runs long; the node holding it is killed while its code runs.
    let long = c
        .post_ok(
            &format!("/v1/threads/{thread}/messages"),
            json!({"role": "user", "content": "```python\nduring = 'the lost turn'\n\
                open('/mnt/data/started', 'w').write('1')\nimport time\ntime.sleep(60)\n```"}),
        )
        .await;
    let long_message = long["id"].as_str().unwrap().to_string();
    let run = c
        .post_ok(
            &format!("/v1/threads/{thread}/runs"),
            json!({"assistant_id": assistant}),
        )
        .await;
    let run = run["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    let holder = c.holder(&pg, &run, deadline).await;
    let victim = c.index_of(&holder);
    // Its code is running: the cell wrote its marker into the session's folder on that node.
    let marker = c.nodes[victim]
        .data
        .join("sessions")
        .join(&thread)
        .join("data")
        .join("started");
    while !marker.exists() {
        assert!(
            Instant::now() < deadline,
            "the long cell never started on {holder} ({} absent){}",
            marker.display(),
            c.logs()
        );
        tokio::time::sleep(POLL).await;
    }
    let killed_at = Instant::now();
    c.kill(victim).await;
    eprintln!("killed {holder}, which held {run}");

    // The survivors fail the run, saying why.
    let bound = Duration::from_secs(3 * LEASE_SECS + 10);
    let failed = loop {
        let r = c.get_ok(&format!("/v1/threads/{thread}/runs/{run}")).await;
        if ENDED.contains(&r["status"].as_str().unwrap_or("")) {
            break r;
        }
        assert!(
            killed_at.elapsed() < bound,
            "{run} still {} {bound:?} after its node was killed: {r}{}",
            r["status"],
            c.logs()
        );
        tokio::time::sleep(POLL).await;
    };
    eprintln!(
        "the run ended {} {:?} after the kill",
        failed["status"],
        killed_at.elapsed()
    );
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(failed["last_error"]["code"], "server_error", "{failed}");
    assert_eq!(
        failed["last_error"]["message"],
        format!("The Oasis node running this run ({holder}) stopped answering; the run was lost."),
        "{failed}"
    );

    // Everything acknowledged is listed once, through every surviving node.
    for _ in c.live() {
        let listed = c.list_all(&format!("/v1/threads/{notes}/messages")).await;
        each_once("notes", &listed, &note_ids);
        assert_eq!(listed.len(), 1 + note_ids.len(), "{listed:?}");
        let listed = c.list_all(&format!("/v1/threads/{thread}/messages")).await;
        each_once(
            "the thread's messages",
            &listed,
            std::slice::from_ref(&long_message),
        );
        let roles: Vec<&str> = listed.iter().map(|m| m["role"].as_str().unwrap()).collect();
        assert_eq!(
            roles,
            ["user", "assistant", "user", "assistant", "user"],
            "{listed:?}"
        );
        let listed = c.list_all(&format!("/v1/threads/{thread}/runs")).await;
        each_once(
            "runs",
            &listed,
            &[finished[0].clone(), finished[1].clone(), run.clone()],
        );
        assert_eq!(listed.len(), 3);
        for r in &listed[..2] {
            assert_eq!(r["status"], "completed", "{r}");
        }
        let listed = c.get_ok("/v1/files").await;
        let listed = listed["data"].as_array().unwrap();
        let ids: Vec<String> = files.iter().map(|(id, _)| id.clone()).collect();
        each_once("files", listed, &ids);
    }
    for i in c.live() {
        for (id, bytes) in &files {
            let (s, got) = c.download_on(i, id).await;
            assert_eq!(s, 200, "{id} from {}", c.nodes[i].id);
            assert!(
                got == *bytes,
                "{id} from {} is not what was uploaded",
                c.nodes[i].id
            );
        }
    }

    // The thread goes on, on another node, from its last finished turn.
    let (r3, text3) = c
        .turn(
            &assistant,
            &thread,
            "print(total + 1, open('/mnt/data/kept.txt').read())",
        )
        .await;
    assert!(text3.contains("101 kept"), "{text3}");
    let r3_node = c.ran_on(&pg, r3["id"].as_str().unwrap());
    assert_ne!(r3_node, holder);
    eprintln!(
        "a_node_killed_during_a_run_loses_nothing_acknowledged: {:?}",
        t0.elapsed()
    );
}

/// One answer a load client got.
struct Seen {
    node: usize,
    /// 0: before the first outage; odd: during an outage; even: after it.
    phase: u8,
    what: String,
    answer: Answer,
}

/// What the load clients share.
#[derive(Default)]
struct Load {
    seen: Mutex<Vec<Seen>>,
    /// Acknowledged threads, with their acknowledged messages.
    acked: Mutex<HashMap<String, Vec<String>>>,
    phase: AtomicU8,
    stop: AtomicBool,
}

impl Load {
    fn count(&self, f: impl Fn(&Seen) -> bool) -> usize {
        self.seen.lock().unwrap().iter().filter(|s| f(s)).count()
    }
    fn acked_messages(&self) -> usize {
        self.acked.lock().unwrap().values().map(Vec::len).sum()
    }
}

/// A client that, until told to stop, creates a thread, writes a message into one of its
/// threads and lists that thread's messages, each request on the next node.
async fn load_client(c: Arc<Cluster>, load: Arc<Load>, me: usize) {
    let mut mine: Vec<String> = vec![];
    let mut k = 0u32;
    while !load.stop.load(Ordering::SeqCst) {
        k += 1;
        let i = c.next();
        let phase = load.phase.load(Ordering::SeqCst);
        let a = c
            .send(
                i,
                reqwest::Method::POST,
                "/v1/threads",
                Some(&json!({"metadata": {"client": me.to_string()}})),
            )
            .await;
        if let Ok((200, t)) = &a {
            let id = t["id"].as_str().unwrap().to_string();
            load.acked.lock().unwrap().insert(id.clone(), vec![]);
            mine.push(id);
        }
        load.seen.lock().unwrap().push(Seen {
            node: i,
            phase,
            what: "POST /v1/threads".into(),
            answer: a,
        });
        let Some(thread) = mine.get(k as usize % mine.len().max(1)).cloned() else {
            continue;
        };
        let i = c.next();
        let phase = load.phase.load(Ordering::SeqCst);
        let path = format!("/v1/threads/{thread}/messages");
        let body = json!({"role": "user", "content": format!("client {me} message {k}")});
        let a = c.send(i, reqwest::Method::POST, &path, Some(&body)).await;
        if let Ok((200, m)) = &a {
            let id = m["id"].as_str().unwrap().to_string();
            load.acked
                .lock()
                .unwrap()
                .get_mut(&thread)
                .unwrap()
                .push(id);
        }
        load.seen.lock().unwrap().push(Seen {
            node: i,
            phase,
            what: format!("POST {path}"),
            answer: a,
        });
        let i = c.next();
        let phase = load.phase.load(Ordering::SeqCst);
        let path = format!("{path}?limit=100");
        let a = c.send(i, reqwest::Method::GET, &path, None).await;
        load.seen.lock().unwrap().push(Seen {
            node: i,
            phase,
            what: format!("GET {path}"),
            answer: a,
        });
    }
}

/// Wait until `done` holds, polling; panics after `bound` with `what`.
async fn until(bound: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < bound, "{what} within {bound:?}");
        tokio::time::sleep(POLL).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgresql_restarted_under_load_gives_503s_then_recovers() {
    let _one = ONE_AT_A_TIME.lock().await;
    let t0 = Instant::now();
    let mut pg = Postgres::start();
    let s3 = S3::start();
    let c = Arc::new(Cluster::start(&pg, &s3, "restart", 2, &[]).await);
    // Runs in flight across the outage, at least one on each node: each one's cell runs until
    // the test writes a file into its folder, once PostgreSQL is back.
    let assistant = c
        .post_ok(
            "/v1/assistants",
            json!({"model": "oasis-local", "tools": [{"type": "code_interpreter"}]}),
        )
        .await;
    let assistant = assistant["id"].as_str().unwrap().to_string();
    let code = "open('/mnt/data/started', 'w').write('1')\nimport os, time\n\
                while not os.path.exists('/mnt/data/go'):\n    time.sleep(0.05)\n\
                print('ran across the outage')";
    // (thread, run, the node holding it, its session's folder there)
    let mut in_flight: Vec<(String, String, String, PathBuf)> = vec![];
    let deadline = Instant::now() + Duration::from_secs(60);
    while in_flight.len() < 6
        && c.live()
            .iter()
            .any(|&i| !in_flight.iter().any(|f| f.2 == c.nodes[i].id))
    {
        let on = in_flight.len() % 2;
        let (s, t) = c
            .post_on(
                on,
                "/v1/threads",
                json!({"messages": [{"role": "user", "content": format!("```python\n{code}\n```")}]}),
            )
            .await;
        assert_eq!(s, 200, "{t}");
        let thread = t["id"].as_str().unwrap().to_string();
        let (s, r) = c
            .post_on(
                on,
                &format!("/v1/threads/{thread}/runs"),
                json!({"assistant_id": assistant}),
            )
            .await;
        assert_eq!(s, 200, "{r}");
        let run = r["id"].as_str().unwrap().to_string();
        let holder = c.holder(&pg, &run, deadline).await;
        let session = c.nodes[c.index_of(&holder)]
            .data
            .join("sessions")
            .join(&thread)
            .join("data");
        until(Duration::from_secs(60), "the cell started", || {
            session.join("started").exists()
        })
        .await;
        in_flight.push((thread, run, holder, session));
    }
    eprintln!(
        "runs in flight on {:?}",
        in_flight.iter().map(|f| &f.2).collect::<Vec<_>>()
    );

    let load = Arc::new(Load::default());
    let clients: Vec<_> = (0..4)
        .map(|me| tokio::spawn(load_client(c.clone(), load.clone(), me)))
        .collect();

    until(Duration::from_secs(60), "20 messages acknowledged", || {
        load.acked_messages() >= 20
    })
    .await;
    // Three outages, each longer than the node lease (every node's heartbeat lapses), under
    // load. (Which node reaches the database first after a restart is a race: three give it
    // more than one chance.) Phases: 1, 3, 5 the outages, 2, 4, 6 after them.
    for outage in [1u8, 3, 5] {
        load.phase.store(outage, Ordering::SeqCst);
        let stopped = Instant::now();
        tokio::task::block_in_place(|| pg.stop());
        eprintln!(
            "PostgreSQL stopped ({} messages acknowledged so far)",
            load.acked_messages()
        );
        // The outage is seen: both nodes answer during it.
        let lease = Duration::from_secs(LEASE_SECS + 1);
        until(
            Duration::from_secs(60),
            "both nodes answered during the outage",
            || {
                stopped.elapsed() > lease
                    && (0..2).all(|n| {
                        load.count(|s| s.phase == outage && s.node == n && s.answer.is_ok()) >= 2
                    })
            },
        )
        .await;
        load.phase.store(outage + 1, Ordering::SeqCst);
        tokio::task::block_in_place(|| pg.start_again());
        let restarted = Instant::now();
        eprintln!("PostgreSQL started again after {:?}", stopped.elapsed());
        // Both nodes write again soon.
        let bound = Duration::from_secs(30);
        let before = load.acked_messages();
        until(
            bound,
            "both nodes acknowledge writes again after the restart",
            || {
                (0..2).all(|n| {
                    load.count(|s| {
                        s.phase == outage + 1
                            && s.node == n
                            && s.what.starts_with("POST")
                            && matches!(s.answer, Ok((200, _)))
                    }) >= 2
                }) && load.acked_messages() >= before + 10
            },
        )
        .await;
        eprintln!(
            "writes acknowledged again {:?} after the restart",
            restarted.elapsed()
        );
    }
    load.stop.store(true, Ordering::SeqCst);
    for client in clients {
        client.await.unwrap();
    }

    // Every answer was a success or OpenAI's 503; never a 500, never a dropped connection.
    let seen = std::mem::take(&mut *load.seen.lock().unwrap());
    let bad: Vec<String> = seen
        .iter()
        .filter(|s| match &s.answer {
            Ok((200..=299, _)) => false,
            Ok((503, body)) => !is_server_error_body(body),
            _ => true,
        })
        .map(|s| {
            format!(
                "phase {} {} on {}: {:?}",
                s.phase, s.what, c.nodes[s.node].id, s.answer
            )
        })
        .collect();
    let unavailable = seen
        .iter()
        .filter(|s| s.phase % 2 == 1 && matches!(s.answer, Ok((503, _))))
        .count();
    eprintln!(
        "{} answers: {} during the outages ({unavailable} of them 503s), {} wrong",
        seen.len(),
        seen.iter().filter(|s| s.phase % 2 == 1).count(),
        bad.len()
    );
    if let Some(s) = seen.iter().find(|s| matches!(s.answer, Ok((503, _)))) {
        eprintln!("a 503: {:?}", s.answer);
    }
    assert!(
        bad.is_empty(),
        "{} answers were neither 2xx nor OpenAI's 503, e.g.:\n{}{}",
        bad.len(),
        bad.iter().take(12).cloned().collect::<Vec<_>>().join("\n"),
        c.logs()
    );
    assert!(unavailable > 0, "no 503 during the outages");

    // Nothing acknowledged was lost.
    let acked = load.acked.lock().unwrap().clone();
    for (thread, messages) in &acked {
        let (s, t) = c.get(&format!("/v1/threads/{thread}")).await;
        assert_eq!(s, 200, "acknowledged thread {thread} lost: {t}");
        let listed = c.list_all(&format!("/v1/threads/{thread}/messages")).await;
        each_once(&format!("thread {thread}"), &listed, messages);
    }
    eprintln!(
        "{} threads and {} messages acknowledged, all there",
        acked.len(),
        acked.values().map(Vec::len).sum::<usize>(),
    );

    // The runs in flight went on: their nodes never stopped, only the database did.
    let mut lost = vec![];
    for (thread, run, holder, session) in &in_flight {
        std::fs::write(session.join("go"), "1").unwrap();
        let ended = c.wait_run(thread, run, RUN_BOUND).await;
        eprintln!(
            "{run} on {holder}: {} {}",
            ended["status"], ended["last_error"]
        );
        if ended["status"] == "completed" {
            let reply = text_of(&c.reply(thread, run).await);
            assert!(reply.contains("ran across the outage"), "{reply}");
        } else {
            lost.push(format!("{run} on {holder}: {ended}"));
        }
    }
    assert!(
        lost.is_empty(),
        "runs in flight on nodes that kept running did not survive a database outage longer \
         than the node lease:\n{}{}",
        lost.join("\n"),
        c.logs()
    );
    eprintln!(
        "postgresql_restarted_under_load_gives_503s_then_recovers: {:?}",
        t0.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_object_store_down_fails_uploads_cleanly() {
    let _one = ONE_AT_A_TIME.lock().await;
    let t0 = Instant::now();
    let pg = Postgres::start();
    let mut s3 = S3::start();
    let c = Cluster::start(&pg, &s3, "s3down", 2, &[]).await;
    let before: Vec<u8> = (0..300_000u32).map(|i| (i * 13 % 256) as u8).collect();
    let (s, f) = c.upload_on(0, "before.bin", before.clone()).await.unwrap();
    assert_eq!(s, 200, "{f}");
    let before_id = f["id"].as_str().unwrap().to_string();

    tokio::task::block_in_place(|| s3.kill());
    for i in c.live() {
        let name = format!("during-{i}.bin");
        let t = Instant::now();
        let (s, body) = c
            .upload_on(i, &name, vec![7u8; 200_000])
            .await
            .unwrap_or_else(|e| {
                panic!("upload on {} got no answer: {e}{}", c.nodes[i].id, c.logs())
            });
        eprintln!(
            "upload with S3 down on {}: {s} in {:?}: {body}",
            c.nodes[i].id,
            t.elapsed()
        );
        assert_eq!(s, 503, "{body}{}", c.logs());
        assert!(is_server_error_body(&body), "{body}");
    }
    // Files stored before: served (from a node's copy) or a 503, never a 500.
    for i in c.live() {
        let r = c
            .http
            .get(format!("{}/v1/files/{before_id}/content", c.base(i)))
            .send()
            .await
            .unwrap_or_else(|e| panic!("download on {} got no answer: {e}", c.nodes[i].id));
        let status = r.status().as_u16();
        let body = r.bytes().await.unwrap();
        eprintln!("download with S3 down on {}: {status}", c.nodes[i].id);
        match status {
            200 => assert!(
                body == before,
                "{before_id} on {} is not what was uploaded",
                c.nodes[i].id
            ),
            503 => assert!(
                is_server_error_body(&serde_json::from_slice(&body).unwrap_or_default()),
                "{}",
                String::from_utf8_lossy(&body)
            ),
            _ => panic!(
                "download with S3 down on {}: {status} {}{}",
                c.nodes[i].id,
                String::from_utf8_lossy(&body),
                c.logs()
            ),
        }
    }
    // No File record for them, on any node.
    for i in c.live() {
        let (s, list) = c.get_on(i, "/v1/files").await;
        assert_eq!(s, 200, "{list}");
        let names: Vec<&str> = list["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["filename"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["before.bin"], "on {}", c.nodes[i].id);
    }

    tokio::task::block_in_place(|| s3.start_again());
    let after: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 253) as u8).collect();
    let restarted = Instant::now();
    let after_id = loop {
        let i = c.next();
        match c.upload_on(i, "after.bin", after.clone()).await {
            Ok((200, f)) => break f["id"].as_str().unwrap().to_string(),
            Ok((503, body)) if is_server_error_body(&body) => {}
            other => panic!(
                "upload after S3 came back, on {}: {other:?}{}",
                c.nodes[i].id,
                c.logs()
            ),
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(30),
            "uploads still fail 30 s after S3 came back{}",
            c.logs()
        );
        tokio::time::sleep(POLL).await;
    };
    eprintln!(
        "uploads work again {:?} after S3 came back",
        restarted.elapsed()
    );
    for i in c.live() {
        for (id, bytes) in [(&before_id, &before), (&after_id, &after)] {
            let (s, got) = c.download_on(i, id).await;
            assert_eq!(s, 200, "{id} on {}", c.nodes[i].id);
            assert!(
                got == *bytes,
                "{id} on {} is not what was uploaded",
                c.nodes[i].id
            );
        }
        let (_, list) = c.get_on(i, "/v1/files").await;
        let mut names: Vec<&str> = list["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["filename"].as_str().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["after.bin", "before.bin"], "on {}", c.nodes[i].id);
    }
    eprintln!(
        "the_object_store_down_fails_uploads_cleanly: {:?}",
        t0.elapsed()
    );
}

/// A node stopped gracefully (SIGTERM) drains: it claims no more runs, finishes the one it is
/// driving before it exits, and the thread carries on on another node.
#[tokio::test(flavor = "multi_thread")]
async fn a_node_stopped_gracefully_finishes_its_run_first() {
    let _one = ONE_AT_A_TIME.lock().await;
    let pg = Postgres::start();
    let s3 = S3::start();
    let mut c = Cluster::start(&pg, &s3, "drain", 2, &[]).await;
    let assistant = c
        .post_ok(
            "/v1/assistants",
            json!({"model": "oasis-local", "tools": [{"type": "code_interpreter"}]}),
        )
        .await;
    let assistant = assistant["id"].as_str().unwrap().to_string();
    let thread = c.post_ok("/v1/threads", json!({})).await;
    let thread = thread["id"].as_str().unwrap().to_string();
    let (_, text) = c
        .turn(&assistant, &thread, "kept = 'before'\nprint(kept)")
        .await;
    assert!(text.contains("before"), "{text}");
    // A run whose cell takes a few seconds (well within the drain's 10 s).
    c.post_ok(
        &format!("/v1/threads/{thread}/messages"),
        json!({"role": "user", "content": "```python\nimport time\ntime.sleep(3)\nkept = 'drained'\nprint(kept)\n```"}),
    )
    .await;
    let run = c
        .post_ok(
            &format!("/v1/threads/{thread}/runs"),
            json!({"assistant_id": assistant}),
        )
        .await;
    let run = run["id"].as_str().unwrap().to_string();
    let holder = c.holder(&pg, &run, Instant::now() + RUN_BOUND).await;
    let i = c.index_of(&holder);
    let other = 1 - i;
    assert!(
        c.terminate(i, Duration::from_secs(30)).await,
        "{holder} did not exit by itself after SIGTERM{}",
        c.logs()
    );
    // It finished the run before it left.
    let (s, r) = c
        .get_on(other, &format!("/v1/threads/{thread}/runs/{run}"))
        .await;
    assert_eq!((s, r["status"].as_str()), (200, Some("completed")), "{r}");
    let (s, msgs) = c
        .get_on(
            other,
            &format!("/v1/threads/{thread}/messages?run_id={run}"),
        )
        .await;
    assert_eq!(s, 200);
    assert!(text_of(&msgs["data"][0]).contains("drained"), "{msgs}");
    // The thread goes on on the other node, with what the drained turn left.
    let (_, text) = c.turn(&assistant, &thread, "print(kept * 2)").await;
    assert!(text.contains("draineddrained"), "{text}");
    assert_eq!(c.ran_on(&pg, &run), holder);
}
