//! The HTTP listener: Oasis's own accept loop, serving HTTP/1.1 with hyper on each connection.
//!
//! axum's `serve` keeps a connection open for as long as its peer likes: one that sends half a
//! request head, or nothing at all, or idles between requests, holds a descriptor forever, and
//! enough of them make `accept` fail for everyone. Here every connection has a deadline while
//! no request of it is being served:
//!
//! - from its opening, and from the first byte of each later request head, the head must be
//!   complete within [`ConnLimits::header_timeout`] (a byte at a time does not stretch it);
//! - after a response, the next request must begin within [`ConnLimits::idle_timeout`];
//! - while a handler waits for more of a request body, no gap between its bytes may exceed
//!   `idle_timeout` (the body then ends in an error).
//!
//! A request being served (a long poll, a stream of events, a handler at work) has no
//! deadline here. At most [`ConnLimits::max_connections`] connections are open. At that cap a
//! new connection is not refused, nor left waiting while idle or half-open connections hold
//! every slot: the connection that has been quiet the longest (no request in flight, nothing
//! left to write) is closed to make room, once it has been quiet for [`EVICTION_GRACE`] (a
//! caller that has just connected gets that long to send its request head, however fast a
//! flood comes); one that turned busy meanwhile closes after its response instead. A flood of
//! idle or half-open connections thus pushes out its own oldest members, at most
//! `max_connections` per grace period, and a caller that sends its request promptly is
//! served. Errors of `accept` (out of descriptors) close the quietest connection, wait 50 ms
//! and go on.
//!
//! When the `shutdown` future resolves, no connection is accepted any more, quiet connections
//! close at once, and busy ones finish their request (answered with `Connection: close`).

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::Request;
use axum::response::Response;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// Bounds on connections; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// How long a request head may take, from a connection's opening or a head's first byte.
    pub header_timeout: Duration,
    /// How long a connection may idle between requests; also the longest wait for the next
    /// bytes of a request body a handler is reading.
    pub idle_timeout: Duration,
    /// Connections open at once.
    pub max_connections: usize,
}

/// The defaults. 10 s for a head: a client writes it at once after connecting, and 10 s still
/// covers a few TCP retransmissions on a poor link, while a slowloris holds a slot no longer.
/// 30 s idle: longer than the gaps of clients that reuse connections (runs are polled every
/// second at most; the `openai` SDK's httpx pool drops idle connections after 5 s), short
/// enough that idle connections do not pile up. 1024 connections: far more than API clients
/// hold at once (a few each), at one descriptor and a few KiB apiece.
impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            max_connections: 1024,
        }
    }
}

/// How long `accept` rests after an error that is not the peer's (out of descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// How often a new connection waiting at the cap looks again for one to close (when every
/// open one was busy).
const ROOM_RETRY: Duration = Duration::from_millis(100);
/// A connection quiet for less than this is not closed to make room: a caller that has just
/// connected gets this long to send its request head however fast a flood comes. (So a flood
/// churns at most `max_connections` connections per this time.)
const EVICTION_GRACE: Duration = Duration::from_millis(250);
/// Warnings about the cap or `accept` errors come at most this often.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Serve `app` on `listener` within `limits` until `shutdown` resolves; then stop accepting,
/// close quiet connections, let requests in flight finish, and return.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let cap = limits
        .max_connections
        .clamp(1, Semaphore::MAX_PERMITS.min(1 << 24));
    let server = Arc::new(Server {
        limits,
        start: Instant::now(),
        conns: Mutex::new(HashMap::new()),
        next_id: AtomicU64::new(0),
        warned: Mutex::new(None),
    });
    let slots = Arc::new(Semaphore::new(cap));
    let mut shutdown = std::pin::pin!(shutdown);
    'accept: loop {
        let accepted = tokio::select! {
            biased;
            () = &mut shutdown => break,
            r = listener.accept() => r,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            // The peer gave up before we took it: nothing to do.
            Err(e) if peer_error(&e) => continue,
            Err(e) => {
                server.warn(|| tracing::warn!(error = %e, "accepting a connection failed"));
                let _ = server.evict_quietest();
                tokio::select! {
                    biased;
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                }
            }
        };
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => loop {
                server.warn(|| {
                    tracing::warn!(
                        max_connections = cap,
                        "connection cap reached: closing the connections quiet the longest \
                         (new ones wait while all are busy)"
                    )
                });
                // Look again when the quietest comes of age, or (when one was asked to close but
                // turned busy, or all are busy) a little later.
                let again = match server.evict_quietest() {
                    Room::Later(wait) => wait.min(ROOM_RETRY),
                    Room::Made | Room::NoneQuiet => ROOM_RETRY,
                };
                tokio::select! {
                    biased;
                    () = &mut shutdown => break 'accept,
                    slot = slots.clone().acquire_owned() => {
                        break slot.expect("the semaphore is never closed");
                    }
                    () = tokio::time::sleep(again) => {}
                }
            },
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(run(server.register(), stream, app.clone(), slot));
    }
    drop(listener);
    server.close_all();
    // Every connection holds a slot until it has ended.
    let all = u32::try_from(cap).unwrap_or(u32::MAX);
    let _ = slots.acquire_many(all).await;
    Ok(())
}

/// Errors of `accept` that concern one connection only.
fn peer_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
    )
}

/// What the accept loop and the connections share.
struct Server {
    limits: ConnLimits,
    /// Times below are milliseconds since this.
    start: Instant,
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
    next_id: AtomicU64,
    warned: Mutex<Option<Instant>>,
}

impl Server {
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Arc<Conn>>> {
        self.conns.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn register(self: &Arc<Self>) -> Registered {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn::new(self.start));
        self.lock().insert(id, conn.clone());
        Registered {
            server: self.clone(),
            id,
            conn,
        }
    }

    /// Ask the connection quiet the longest to close, if it has been quiet for
    /// [`EVICTION_GRACE`].
    fn evict_quietest(&self) -> Room {
        let now = self.start.elapsed().as_millis() as u64;
        let grace = EVICTION_GRACE.as_millis() as u64;
        let conns = self.lock();
        let victim = conns
            .values()
            .filter(|c| !c.leave.load(Ordering::Acquire) && c.quiet())
            .min_by_key(|c| c.quiet_since.load(Ordering::Acquire));
        let Some(c) = victim else {
            return Room::NoneQuiet;
        };
        let of_age = c.quiet_since.load(Ordering::Acquire) + grace;
        if of_age > now {
            return Room::Later(Duration::from_millis(of_age - now));
        }
        c.ask_to_leave();
        Room::Made
    }

    fn close_all(&self) {
        for c in self.lock().values() {
            c.ask_to_leave();
        }
    }

    /// Run `warn` unless a warning was logged within [`WARN_EVERY`].
    fn warn(&self, warn: impl FnOnce()) {
        let mut last = self.warned.lock().unwrap_or_else(PoisonError::into_inner);
        if last.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
            *last = Some(Instant::now());
            warn();
        }
    }
}

/// What [`Server::evict_quietest`] did.
enum Room {
    /// Asked a connection to close.
    Made,
    /// The quietest connection may be closed after this long.
    Later(Duration),
    /// Every connection is busy.
    NoneQuiet,
}

/// A connection in the registry, removed from it when dropped (however its task ends).
struct Registered {
    server: Arc<Server>,
    id: u64,
    conn: Arc<Conn>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.server.lock().remove(&self.id);
    }
}

/// Serve one connection until it ends, times out or is asked to leave.
async fn run(reg: Registered, stream: TcpStream, app: Router, _slot: OwnedSemaphorePermit) {
    let (conn, limits, start) = (reg.conn.clone(), reg.server.limits, reg.server.start);
    let io = TokioIo::new(Watched {
        io: stream,
        conn: conn.clone(),
    });
    let service = AppService {
        app: TowerToHyperService::new(app),
        conn: conn.clone(),
        body_gap: limits.idle_timeout,
    };
    let http = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(io, service);
    let mut http = std::pin::pin!(http);
    let mut closing = false;
    loop {
        if conn.leave.load(Ordering::Acquire) {
            if conn.quiet() {
                // Nothing in flight and nothing left to write: a half-sent head or an idle
                // keep-alive is all that is lost.
                break;
            }
            if !closing {
                // Finish the request in flight and answer it with `Connection: close`.
                http.as_mut().graceful_shutdown();
                closing = true;
            }
        }
        let deadline = conn.deadline(&limits);
        let wake_at = tokio::time::Instant::from_std(
            start + Duration::from_millis(deadline.unwrap_or_default()),
        );
        tokio::select! {
            r = http.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                break;
            }
            () = conn.wake.notified() => {}
            () = tokio::time::sleep_until(wake_at), if deadline.is_some() => {
                if conn.deadline(&limits).is_some_and(|d| d <= conn.now()) {
                    tracing::debug!("closing a connection: request head or idle timeout");
                    break;
                }
            }
        }
    }
}

/// One connection's state, kept by the socket wrapper ([`Watched`]), the service
/// ([`AppService`]) and its task.
struct Conn {
    start: Instant,
    /// Requests handed to the app whose response has not been fully handed to hyper.
    in_flight: AtomicUsize,
    /// When the connection last had no request in flight (its opening, or a response's end).
    quiet_since: AtomicU64,
    /// 1 + when the request head now awaited began (the opening, or its first byte); 0 while
    /// none has begun.
    head_since: AtomicU64,
    /// Bytes were handed to the socket and not yet flushed.
    unflushed: AtomicBool,
    /// Close when quiet (the cap was reached, or the server is shutting down).
    leave: AtomicBool,
    /// Wakes the connection's task to look at the above again.
    wake: Notify,
}

impl Conn {
    fn new(start: Instant) -> Conn {
        let now = start.elapsed().as_millis() as u64;
        Conn {
            start,
            in_flight: AtomicUsize::new(0),
            quiet_since: AtomicU64::new(now),
            // The first head's clock starts at the opening: a client that connects sends.
            head_since: AtomicU64::new(now + 1),
            unflushed: AtomicBool::new(false),
            leave: AtomicBool::new(false),
            wake: Notify::new(),
        }
    }

    fn now(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// No request in flight and nothing left to write: closing loses no answer.
    fn quiet(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0 && !self.unflushed.load(Ordering::Acquire)
    }

    /// When the connection is to be closed unless a request begins (ms), if it has a deadline.
    fn deadline(&self, limits: &ConnLimits) -> Option<u64> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        match self.head_since.load(Ordering::Acquire) {
            0 => Some(
                self.quiet_since.load(Ordering::Acquire) + limits.idle_timeout.as_millis() as u64,
            ),
            h => Some(h - 1 + limits.header_timeout.as_millis() as u64),
        }
    }

    /// Bytes arrived. With no request in flight they begin a request head.
    fn on_bytes_in(&self) {
        if self.in_flight.load(Ordering::Acquire) == 0
            && self
                .head_since
                .compare_exchange(0, self.now() + 1, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            self.wake.notify_one();
        }
    }

    fn begin_request(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.head_since.store(0, Ordering::Release);
        self.wake.notify_one();
        InFlight(self.clone())
    }

    fn ask_to_leave(&self) {
        self.leave.store(true, Ordering::Release);
        self.wake.notify_one();
    }
}

/// A request in flight, until its response body is done with (dropped by hyper).
struct InFlight(Arc<Conn>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let c = &self.0;
        c.quiet_since.store(c.now(), Ordering::Release);
        c.in_flight.fetch_sub(1, Ordering::AcqRel);
        c.wake.notify_one();
    }
}

/// The socket, noting what the deadlines need: bytes in, and whether all out was flushed.
struct Watched {
    io: TcpStream,
    conn: Arc<Conn>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.conn.on_bytes_in();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.conn.unflushed.store(true, Ordering::Release);
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.conn.unflushed.store(true, Ordering::Release);
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    /// hyper flushes after writing all it buffered.
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.io).poll_flush(cx);
        if matches!(polled, Poll::Ready(Ok(())))
            && self.conn.unflushed.swap(false, Ordering::AcqRel)
        {
            self.conn.wake.notify_one();
        }
        polled
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// The router as hyper calls it, with the request accounted for until its response is done.
struct AppService {
    app: TowerToHyperService<Router>,
    conn: Arc<Conn>,
    body_gap: Duration,
}

impl hyper::service::Service<hyper::Request<Incoming>> for AppService {
    type Response = Response;
    type Error = Infallible;
    type Future = futures::future::BoxFuture<'static, Result<Response, Infallible>>;

    fn call(&self, req: hyper::Request<Incoming>) -> Self::Future {
        let in_flight = self.conn.begin_request();
        let gap = self.body_gap;
        let req: Request = req.map(|b| Body::new(GapLimited::new(b, gap)));
        let res = hyper::service::Service::call(&self.app, req);
        Box::pin(async move {
            let res = res.await?;
            Ok(res.map(|body| {
                Body::new(Accounted {
                    body,
                    _in_flight: in_flight,
                })
            }))
        })
    }
}

/// A response body that keeps its request in flight until hyper drops it.
struct Accounted {
    body: Body,
    _in_flight: InFlight,
}

impl HttpBody for Accounted {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A request body whose reader waits at most `gap` for each next frame.
struct GapLimited {
    body: Incoming,
    gap: Duration,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    stalled: bool,
}

impl GapLimited {
    fn new(body: Incoming, gap: Duration) -> GapLimited {
        GapLimited {
            body,
            gap,
            timer: None,
            stalled: false,
        }
    }
}

/// The error a stalled request body ends with.
#[derive(Debug)]
struct Stalled(Duration);

impl std::fmt::Display for Stalled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "no request body bytes arrived for {} s",
            self.0.as_secs()
        )
    }
}

impl std::error::Error for Stalled {}

impl HttpBody for GapLimited {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if this.stalled {
            return Poll::Ready(Some(Err(Stalled(this.gap).into())));
        }
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.timer = None;
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let gap = this.gap;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(gap)));
                if timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                this.timer = None;
                this.stalled = true;
                Poll::Ready(Some(Err(Stalled(gap).into())))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        !self.stalled && self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
