//! A scripted upstream model server for tests: a real HTTP/1.1 server on loopback that answers
//! each request with the next reply of its script (Chat Completions streams, JSON bodies,
//! errors, silence), and can pause a stream at a [`Cue`] until the test says go.
//!
//! It depends only on tokio and serde_json, so the same file serves this module's unit tests
//! and the integration tests (`tests/oasis/upstream_fake.rs` includes it by path).

#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// A request the test server received.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    /// Lower-case names.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("the request body is JSON")
    }
}

/// A point a scripted stream waits at until the test gives the cue (or `timeout` passes).
#[derive(Clone)]
pub struct Cue {
    notify: Arc<Notify>,
    given: Arc<AtomicBool>,
    timeout: Duration,
}

impl Cue {
    pub fn new(timeout: Duration) -> Cue {
        Cue {
            notify: Arc::new(Notify::new()),
            given: Arc::new(AtomicBool::new(false)),
            timeout,
        }
    }

    /// Lets the stream go on (remembered if it is not waiting yet).
    pub fn go(&self) {
        self.notify.notify_one();
    }

    /// Whether the stream went on because of the cue (not because it waited too long).
    pub fn was_given(&self) -> bool {
        self.given.load(Ordering::SeqCst)
    }

    async fn wait(&self) {
        if tokio::time::timeout(self.timeout, self.notify.notified())
            .await
            .is_ok()
        {
            self.given.store(true, Ordering::SeqCst);
        }
    }
}

#[derive(Clone)]
pub enum Piece {
    /// Sent as one HTTP chunk.
    Bytes(Vec<u8>),
    /// Waits for the cue.
    Await(Cue),
    /// Sends nothing more until the client hangs up.
    Hold,
}

#[derive(Clone)]
pub enum Reply {
    Whole {
        status: u16,
        content_type: &'static str,
        headers: Vec<(&'static str, &'static str)>,
        body: String,
    },
    /// `200 text/event-stream`, chunked; `abrupt` closes the connection mid-chunk.
    Stream { pieces: Vec<Piece>, abrupt: bool },
    /// Never answers.
    Silent,
}

/// The `n`th request gets `replies[n]`; the last reply repeats.
pub struct Server {
    /// `http://127.0.0.1:PORT/v1`.
    pub base: String,
    received: Arc<Mutex<Vec<Received>>>,
    /// Each request's body as JSON (`null` if it is not JSON).
    bodies: Arc<Mutex<Vec<Value>>>,
}

impl Server {
    pub async fn start(replies: Vec<Reply>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let logs = (received.clone(), bodies.clone());
        let replies = Arc::new(replies);
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let (logs, replies) = (logs.clone(), replies.clone());
                tokio::spawn(async move { serve_one(socket, &replies, &logs.0, &logs.1).await });
            }
        });
        Server {
            base: format!("http://{addr}/v1"),
            received,
            bodies,
        }
    }

    pub fn port(&self) -> u16 {
        let port = self.base.rsplit(':').next().unwrap();
        port.trim_end_matches("/v1").parse().unwrap()
    }

    /// The requests' bodies as JSON, as they arrive (the server runs on when this is dropped).
    pub fn bodies(&self) -> Arc<Mutex<Vec<Value>>> {
        self.bodies.clone()
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

async fn serve_one(
    mut socket: TcpStream,
    replies: &[Reply],
    log: &Mutex<Vec<Received>>,
    bodies: &Mutex<Vec<Value>>,
) {
    let Some(request) = read_request(&mut socket).await else {
        return;
    };
    let body = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
    let n = {
        let mut log = log.lock().unwrap();
        log.push(request);
        bodies.lock().unwrap().push(body);
        log.len() - 1
    };
    let _ = write_reply(&mut socket, &replies[n.min(replies.len() - 1)]).await;
}

async fn read_request(socket: &mut TcpStream) -> Option<Received> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_len = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buf[..head_len].to_vec()).ok()?;
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let (method, path) = (first.next()?.to_string(), first.next()?.to_string());
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < head_len + len {
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Some(Received {
        method,
        path,
        headers,
        body: buf[head_len..head_len + len].to_vec(),
    })
}

async fn write_reply(socket: &mut TcpStream, reply: &Reply) -> std::io::Result<()> {
    match reply {
        Reply::Whole {
            status,
            content_type,
            headers,
            body,
        } => {
            let mut head = format!(
                "HTTP/1.1 {status} Scripted\r\nContent-Type: {content_type}\r\n\
                 Content-Length: {}\r\nConnection: close\r\n",
                body.len()
            );
            for (name, value) in headers {
                head.push_str(&format!("{name}: {value}\r\n"));
            }
            head.push_str("\r\n");
            socket.write_all(head.as_bytes()).await?;
            socket.write_all(body.as_bytes()).await?;
            socket.shutdown().await
        }
        Reply::Stream { pieces, abrupt } => {
            socket
                .write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n\
                      Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
                )
                .await?;
            for piece in pieces {
                match piece {
                    Piece::Bytes(bytes) => {
                        let mut frame = format!("{:x}\r\n", bytes.len()).into_bytes();
                        frame.extend_from_slice(bytes);
                        frame.extend_from_slice(b"\r\n");
                        socket.write_all(&frame).await?;
                        socket.flush().await?;
                    }
                    Piece::Await(cue) => cue.wait().await,
                    Piece::Hold => {
                        let mut buf = [0u8; 256];
                        while matches!(socket.read(&mut buf).await, Ok(n) if n > 0) {}
                        return Ok(());
                    }
                }
            }
            if *abrupt {
                socket.write_all(b"40\r\ncut short").await?;
            } else {
                socket.write_all(b"0\r\n\r\n").await?;
            }
            socket.shutdown().await
        }
        Reply::Silent => {
            let mut buf = [0u8; 256];
            while matches!(socket.read(&mut buf).await, Ok(n) if n > 0) {}
            Ok(())
        }
    }
}

// ---- Scripts -----------------------------------------------------------------------------

pub fn json_reply(status: u16, body: Value) -> Reply {
    Reply::Whole {
        status,
        content_type: "application/json",
        headers: vec![],
        body: body.to_string(),
    }
}

/// `bytes` as pieces of `n` bytes (splitting UTF-8 characters and `\r\n` pairs).
pub fn pieces(bytes: &[u8], n: usize) -> Vec<Piece> {
    bytes.chunks(n).map(|c| Piece::Bytes(c.to_vec())).collect()
}

pub fn stream(body: &str, n: usize) -> Reply {
    Reply::Stream {
        pieces: pieces(body.as_bytes(), n),
        abrupt: false,
    }
}

/// One event as a `data:` line.
pub fn data(event: &Value) -> String {
    format!("data: {event}\n\n")
}

/// Events as `data:` lines, then `[DONE]`.
pub fn sse(events: &[Value]) -> String {
    let mut body: String = events.iter().map(data).collect();
    body.push_str("data: [DONE]\n\n");
    body
}

pub fn text_event(text: &str) -> Value {
    json!({"id": "chatcmpl-1", "object": "chat.completion.chunk",
           "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}]})
}

pub fn finish_event(reason: &str) -> Value {
    json!({"choices": [{"index": 0, "delta": {}, "finish_reason": reason}]})
}

/// A delta holding tool-call fragments.
pub fn call_event(calls: Value) -> Value {
    json!({"choices": [{"index": 0, "delta": {"tool_calls": calls}, "finish_reason": null}]})
}

/// The first fragment of call `index`: its id and name.
pub fn call_start_event(index: u64, id: &str, name: &str) -> Value {
    call_event(json!([{"index": index, "id": id, "type": "function",
                       "function": {"name": name, "arguments": ""}}]))
}

/// A fragment of call `index`'s arguments.
pub fn arguments_event(index: u64, fragment: &str) -> Value {
    call_event(json!([{"index": index, "function": {"arguments": fragment}}]))
}

/// `s` in pieces of `n` characters.
pub fn char_pieces(s: &str, n: usize) -> Vec<String> {
    let chars: Vec<char> = s.chars().collect();
    chars.chunks(n).map(|c| c.iter().collect()).collect()
}
