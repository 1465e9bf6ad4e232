//! Hostile network peers (hardening findings 9 and "lower"): connections that send half a
//! request head, idle, stall a body, or flood the server; and a client that sends a 50 MB JSON
//! body. Real HTTP on loopback, small knobs (1–2 s timeouts, a cap of 32). Every wait for the
//! server to act is bounded ([`closed_by_server`], `tokio::time::timeout`); nothing sleeps in
//! place of a condition.

use std::path::Path;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::durability::Server;
use crate::helpers::{TestApp, err_parts};

/// The longest any single expectation below is waited for: it proves "promptly, not never".
const BOUND: Duration = Duration::from_secs(15);

/// A request head cut short: no blank line ends it.
const HALF_HEAD: &[u8] = b"GET /health HTTP/1.1\r\nHost: oasis\r\nX-Slow: ";

fn host(app: &TestApp) -> String {
    app.base.trim_start_matches("http://").to_string()
}

async fn connect(addr: &str) -> TcpStream {
    TcpStream::connect(addr).await.expect("connecting")
}

/// Read from `s` until the server closes it (end of stream, or a reset), at most `within`;
/// how long that took, and what was read on the way.
async fn closed_by_server<R: AsyncReadExt + Unpin>(
    s: &mut R,
    within: Duration,
) -> Result<(Duration, Vec<u8>), String> {
    let started = Instant::now();
    let mut got = Vec::new();
    let read_all = async {
        let mut buf = [0u8; 8192];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    match tokio::time::timeout(within, read_all).await {
        Ok(()) => Ok((started.elapsed(), got)),
        Err(_) => Err(format!(
            "the server left the connection open for {within:?}"
        )),
    }
}

/// Read one whole response (head and `Content-Length` body) from a kept-alive connection.
async fn read_response(s: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        loop {
            if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |v| v.trim().parse().unwrap());
                if got.len() >= end + 4 + len {
                    return;
                }
            }
            let n = s.read(&mut buf).await.expect("reading a response");
            assert!(
                n > 0,
                "closed mid-response: {:?}",
                String::from_utf8_lossy(&got)
            );
            got.extend_from_slice(&buf[..n]);
        }
    };
    tokio::time::timeout(BOUND, read)
        .await
        .expect("a response in time");
    String::from_utf8(got).unwrap()
}

/// Finding 9 (a): a request head that never ends, one that trickles in a byte at a time, and a
/// connection that says nothing are all closed after the header timeout, well before the idle
/// timeout; the server serves on.
#[tokio::test(flavor = "multi_thread")]
async fn hostile2_09_unfinished_request_heads_are_cut_off_after_the_header_timeout() {
    let app = TestApp::spawn_with(None, |s| {
        s.api.connections.header_timeout = Duration::from_secs(1);
        s.api.connections.idle_timeout = Duration::from_secs(8);
    })
    .await;
    let addr = host(&app);

    let mut half = connect(&addr).await;
    half.write_all(HALF_HEAD).await.unwrap();
    let (took, got) = closed_by_server(&mut half, BOUND).await.unwrap();
    assert!(got.is_empty(), "{:?}", String::from_utf8_lossy(&got));
    assert!(
        took >= Duration::from_millis(500),
        "closed at once: {took:?}"
    );

    // A byte every 200 ms does not stretch the head's time: it ends at the header timeout,
    // not at the idle timeout or never.
    let (mut rx, mut tx) = connect(&addr).await.into_split();
    let trickle = tokio::spawn(async move {
        for b in HALF_HEAD.iter().cycle() {
            if tx.write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let (took, _) = closed_by_server(&mut rx, BOUND).await.unwrap();
    assert!(
        took < Duration::from_secs(6),
        "the trickle stretched it: {took:?}"
    );
    trickle.abort();

    let mut silent = connect(&addr).await;
    closed_by_server(&mut silent, BOUND).await.unwrap();

    let (s, v) = app.get("/health").await;
    assert_eq!((s, &v), (200, &json!({"status": "ok"})));
    app.stop().await;
}

/// Finding 9 (b): a kept-alive connection serves requests one after another, then is closed
/// once it has idled for the idle timeout (not the shorter header timeout).
#[tokio::test(flavor = "multi_thread")]
async fn hostile2_09_idle_keep_alive_connections_are_closed_after_the_idle_timeout() {
    let app = TestApp::spawn_with(None, |s| {
        s.api.connections.header_timeout = Duration::from_secs(1);
        s.api.connections.idle_timeout = Duration::from_secs(3);
    })
    .await;
    let mut c = connect(&host(&app)).await;
    for _ in 0..3 {
        c.write_all(b"GET /health HTTP/1.1\r\nHost: oasis\r\n\r\n")
            .await
            .unwrap();
        let res = read_response(&mut c).await;
        assert!(res.starts_with("HTTP/1.1 200"), "{res}");
        assert!(res.ends_with(r#"{"status":"ok"}"#), "{res}");
    }
    let (took, got) = closed_by_server(&mut c, BOUND).await.unwrap();
    assert!(got.is_empty(), "{:?}", String::from_utf8_lossy(&got));
    assert!(
        took >= Duration::from_secs(2),
        "closed before idling long: {took:?}"
    );
    let (s, _) = app.get("/v1/models").await;
    assert_eq!(s, 200);
    app.stop().await;
}

/// Finding 9, the body variant: a request whose body stops arriving is not waited for
/// forever. The handler's read ends after the idle timeout; the caller gets OpenAI's error and
/// the connection is closed.
#[tokio::test(flavor = "multi_thread")]
async fn hostile2_09_a_request_body_that_stops_arriving_is_given_up_on() {
    let app = TestApp::spawn_with(None, |s| {
        s.api.connections.idle_timeout = Duration::from_secs(2);
    })
    .await;
    let mut c = connect(&host(&app)).await;
    c.write_all(
        b"POST /v1/threads HTTP/1.1\r\nHost: oasis\r\nContent-Type: application/json\r\n\
          Content-Length: 100\r\n\r\n{\"metadata\": ",
    )
    .await
    .unwrap();
    let (_, got) = closed_by_server(&mut c, BOUND).await.unwrap();
    let res = String::from_utf8_lossy(&got);
    assert!(res.starts_with("HTTP/1.1 400"), "{res}");
    assert!(
        res.to_ascii_lowercase().contains("connection: close"),
        "{res}"
    );
    let body: Value = serde_json::from_str(&res[res.find("\r\n\r\n").unwrap() + 4..]).unwrap();
    err_parts(&body);
    let (s, _) = app.get("/health").await;
    assert_eq!(s, 200);
    app.stop().await;
}

/// Finding 9 (c): with the test holding twice the cap of half-open connections (timeouts far
/// away), the server closes the ones quiet the longest to make room, callers are served
/// within seconds, also while the flood goes on, and the server serves afterwards.
#[tokio::test(flavor = "multi_thread")]
async fn hostile2_09_a_flood_of_half_open_connections_does_not_lock_out_callers() {
    const CAP: usize = 32;
    let app = TestApp::spawn_with(None, |s| {
        s.api.connections.header_timeout = Duration::from_secs(120);
        s.api.connections.idle_timeout = Duration::from_secs(120);
        s.api.connections.max_connections = CAP;
    })
    .await;
    let addr = host(&app);
    let mut flood = Vec::new();
    for _ in 0..2 * CAP {
        let mut c = connect(&addr).await;
        c.write_all(HALF_HEAD).await.unwrap();
        flood.push(c);
    }
    // At least the excess is closed (the server holds at most CAP), long before any timeout.
    let mut waits: FuturesUnordered<_> = flood
        .iter_mut()
        .map(|c| closed_by_server(c, BOUND))
        .collect();
    let mut closed = 0;
    while closed < CAP {
        match waits.next().await {
            Some(Ok(_)) => closed += 1,
            Some(Err(e)) => panic!("only {closed} of {} closed: {e}", 2 * CAP),
            None => unreachable!(),
        }
    }
    drop(waits);

    let get = |path: &'static str| {
        let (client, url) = (reqwest::Client::new(), app.url(path));
        async move {
            let r = tokio::time::timeout(Duration::from_secs(5), client.get(url).send())
                .await
                .unwrap_or_else(|_| panic!("GET {path} was not served within 5 s"))
                .unwrap();
            assert_eq!(r.status(), 200, "GET {path}");
        }
    };
    get("/health").await;
    get("/v1/models").await;

    // The flood goes on while callers come.
    let more = {
        let addr = addr.clone();
        tokio::spawn(async move {
            let mut held = Vec::new();
            for _ in 0..4 * CAP {
                let Ok(mut c) = TcpStream::connect(&addr).await else {
                    continue;
                };
                let _ = c.write_all(HALF_HEAD).await;
                held.push(c);
                tokio::task::yield_now().await;
            }
            held
        })
    };
    for _ in 0..5 {
        get("/health").await;
        get("/v1/models").await;
    }
    let held = more.await.unwrap();
    get("/health").await;
    let (s, t) = app.post("/v1/threads", json!({})).await;
    assert_eq!(s, 200, "{t}");
    drop((flood, held));
    app.stop().await;
}

/// Finding 9 as probed: the real `oasis serve` under a 300-descriptor limit, with API keys,
/// flooded by 320 half-open connections (before, `accept` failed for good and keyed calls timed
/// out), still answers keyed callers within seconds.
#[tokio::test(flavor = "multi_thread")]
async fn hostile2_09_under_a_300_descriptor_limit_a_flood_does_not_lock_out_keyed_callers() {
    raise_own_descriptor_limit(2048);
    tokio::task::spawn_blocking(crate::helpers::sandbox)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = limited_server(dir.path()).await;
    let keyed = |path: &'static str| {
        let (client, url) = (reqwest::Client::new(), format!("{}{path}", server.base));
        async move {
            let r = tokio::time::timeout(
                Duration::from_secs(5),
                client.get(url).bearer_auth(KEY).send(),
            )
            .await
            .unwrap_or_else(|_| panic!("GET {path} was not served within 5 s"))
            .unwrap();
            assert_eq!(r.status(), 200, "GET {path}");
        }
    };
    keyed("/v1/models").await;
    let addr = server.base.trim_start_matches("http://").to_string();
    let mut flood = Vec::new();
    for _ in 0..320 {
        let mut c = connect(&addr).await;
        c.write_all(HALF_HEAD).await.unwrap();
        flood.push(c);
    }
    for _ in 0..5 {
        keyed("/v1/models").await;
        keyed("/v1/assistants").await;
    }
    drop(flood);
    keyed("/v1/models").await;
    server.kill().await;
}

const KEY: &str = "sk-hostile-net-0123456789";

/// Let this test process hold the flood's sockets.
fn raise_own_descriptor_limit(want: u64) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    if soft < want {
        setrlimit(Resource::RLIMIT_NOFILE, want.min(hard), hard).unwrap();
    }
}

/// The real binary under `ulimit -n 300`, with an API key.
async fn limited_server(dir: &Path) -> Server {
    let config = dir.join("oasis.toml");
    std::fs::write(&config, "isolation = \"in-process\"\nwarm_pool = 0\n").unwrap();
    Server::start_limited(
        &dir.join("data"),
        &config,
        &[("OASIS_API_KEYS", Path::new(KEY))],
        300,
    )
    .await
}

/// Lower finding: a 50 MB JSON body (past the 2 MiB JSON limit, within `max_upload_bytes`)
/// from a valid caller gets OpenAI's 413 on a connection the client can go on using; a
/// stranger declaring such a body gets its 401 at once, with `Connection: close`, and nothing
/// is read for it.
#[tokio::test(flavor = "multi_thread")]
async fn hostile2_lower_a_50_mb_json_body_gets_its_413_and_the_connection_survives() {
    let app = TestApp::spawn_with(None, |s| {
        s.api.keys = oasis::tenancy::Keys::new(Some(vec![KEY.to_string()]), None).unwrap();
    })
    .await;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()
        .unwrap();
    let body = format!(
        "{{\"metadata\": {{\"k\": \"{}\"}}}}",
        "a".repeat(50_000_000)
    );
    for round in 0..2 {
        let r = client
            .post(app.url("/v1/threads"))
            .bearer_auth(KEY)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap_or_else(|e| panic!("round {round}: the 413 was lost: {e:?}"));
        assert_eq!(r.status().as_u16(), 413, "round {round}");
        assert!(r.headers().get("connection").is_none(), "round {round}");
        let v: Value = r.json().await.unwrap();
        let (message, kind, _) = err_parts(&v);
        assert_eq!(kind, "invalid_request_error", "{v}");
        assert!(message.contains("length limit exceeded"), "{v}");
        for key in ["message", "type", "param", "code"] {
            assert!(v["error"].get(key).is_some(), "no {key}: {v}");
        }
        let r = client
            .get(app.url("/v1/models"))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap_or_else(|e| panic!("round {round}: the next request failed: {e:?}"));
        assert_eq!(r.status().as_u16(), 200, "round {round}");
    }

    let mut c = connect(&host(&app)).await;
    c.write_all(
        b"POST /v1/threads HTTP/1.1\r\nHost: oasis\r\nAuthorization: Bearer sk-wrong\r\n\
          Content-Type: application/json\r\nContent-Length: 50000000\r\n\r\n{\"metadata\": ",
    )
    .await
    .unwrap();
    let (took, got) = closed_by_server(&mut c, BOUND).await.unwrap();
    let res = String::from_utf8_lossy(&got).to_ascii_lowercase();
    assert!(res.starts_with("http/1.1 401"), "{res}");
    assert!(res.contains("connection: close"), "{res}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    app.stop().await;
}
