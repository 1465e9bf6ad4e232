//! Refusing a request before its body is read (a 413, a 401, a 404 on an upload) must not
//! break the client's connection. If the server closed it with body bytes unread, the kernel
//! would answer the rest of the upload with a reset: the client then sees a broken connection
//! instead of the error (or, having pooled the connection, fails its *next* request).
//!
//! This layer follows the request body through the handlers. If a handler answers without
//! reading it to the end, the rest is read and thrown away, frame by frame (nothing is kept),
//! within bounds that depend on the caller:
//!
//! - a caller with a valid API key (every caller when no keys are set) gets up to
//!   `max_upload_bytes` (at least [`DRAIN_BYTES`]) read away, for [`DRAIN_TIME`] plus one
//!   second per [`DRAIN_MIN_RATE`] bytes read: a 50 MB JSON body sent at any reasonable speed
//!   still gets its 413, and a slow one cannot hold the connection longer than its size
//!   warrants;
//! - a caller without one gets [`DRAIN_BYTES_UNAUTHENTICATED`] within
//!   [`DRAIN_TIME_UNAUTHENTICATED`]: enough for any JSON request to get its 401, not enough to
//!   make the server a sink for strangers' uploads.
//!
//! A body beyond the bounds (or declared by `Content-Length` to be) gets `Connection: close`
//! on the answer at once, so no client reuses a connection the server is about to drop.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;
use http_body::{Frame, SizeHint};

use super::AppState;

/// The least a refused body of a valid caller is read for nothing (more when
/// `max_upload_bytes` is larger).
pub const DRAIN_BYTES: u64 = 16 << 20;
/// The time a refused body of a valid caller is waited for, before the time its size earns.
pub const DRAIN_TIME: Duration = Duration::from_secs(5);
/// Each this many bytes of a valid caller's refused body read earn it another second.
pub const DRAIN_MIN_RATE: u64 = 256 << 10;
/// The bounds for a caller without a valid API key.
pub const DRAIN_BYTES_UNAUTHENTICATED: u64 = 1 << 20;
pub const DRAIN_TIME_UNAUTHENTICATED: Duration = Duration::from_secs(1);

/// How much of a refused body is read away, and for how long.
#[derive(Debug, Clone, Copy)]
struct Bounds {
    bytes: u64,
    time: Duration,
    /// Bytes per extra second of `time` (none: `time` is all).
    rate: Option<u64>,
}

impl Bounds {
    fn for_caller(valid: bool, max_upload_bytes: u64) -> Bounds {
        if valid {
            Bounds {
                bytes: max_upload_bytes.max(DRAIN_BYTES),
                time: DRAIN_TIME,
                rate: Some(DRAIN_MIN_RATE),
            }
        } else {
            Bounds {
                bytes: DRAIN_BYTES_UNAUTHENTICATED,
                time: DRAIN_TIME_UNAUTHENTICATED,
                rate: None,
            }
        }
    }

    /// The time allowed once `seen` bytes have been read.
    fn time_after(&self, seen: u64) -> Duration {
        self.time
            + self.rate.map_or(Duration::ZERO, |r| {
                Duration::from_millis(seen.saturating_mul(1000) / r)
            })
    }
}

/// The request body, shared between the handler (through [`Tracked`]) and the layer.
struct Shared {
    body: Mutex<Option<Body>>,
    ended: AtomicBool,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Body>> {
        self.body.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What the handlers see: the real body, noting when it has been read to its end.
struct Tracked(Arc<Shared>);

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let mut body = self.0.lock();
        let Some(b) = body.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(b).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) {
            self.0.ended.store(true, Ordering::Release);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.0.lock().as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.0
            .lock()
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), |b| b.size_hint())
    }
}

/// The layer: see the module docs.
pub async fn settle_request_body(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let (parts, body) = req.into_parts();
    if body.is_end_stream() {
        return next.run(Request::from_parts(parts, body)).await;
    }
    let bounds = Bounds::for_caller(
        super::scope::caller(&state.config, &parts.headers).is_some(),
        state.config.max_upload_bytes,
    );
    let shared = Arc::new(Shared {
        body: Mutex::new(Some(body)),
        ended: AtomicBool::new(false),
    });
    let req = Request::from_parts(parts, Body::new(Tracked(shared.clone())));
    let mut res = next.run(req).await;
    // A handler still holding the body (none does today) keeps it: it may still be reading.
    if shared.ended.load(Ordering::Acquire) || Arc::strong_count(&shared) > 1 {
        return res;
    }
    let Some(rest) = shared.lock().take() else {
        return res;
    };
    // A body declared longer than the bounds is not worth reading at all.
    if rest.size_hint().lower() > bounds.bytes || !drain(rest, bounds).await {
        res.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    res
}

/// Read and drop what is left of `body`; whether it ended within the bounds.
async fn drain(mut body: Body, bounds: Bounds) -> bool {
    let start = tokio::time::Instant::now();
    let mut seen = 0u64;
    loop {
        let frame = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx));
        match tokio::time::timeout_at(start + bounds.time_after(seen), frame).await {
            Ok(None) => return true,
            Err(_) | Ok(Some(Err(_))) => return false,
            Ok(Some(Ok(frame))) => {
                seen += frame.data_ref().map_or(0, |d| d.len() as u64);
                if seen > bounds.bytes {
                    return false;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_callers_may_send_up_to_the_upload_limit_at_the_minimum_rate() {
        let b = Bounds::for_caller(true, 512 << 20);
        assert_eq!(b.bytes, 512 << 20);
        assert_eq!(b.time_after(0), DRAIN_TIME);
        assert_eq!(
            b.time_after(50 << 20),
            DRAIN_TIME + Duration::from_secs(200)
        );
        assert_eq!(Bounds::for_caller(true, 1000).bytes, DRAIN_BYTES);
        let s = Bounds::for_caller(false, 512 << 20);
        assert_eq!(s.bytes, DRAIN_BYTES_UNAUTHENTICATED);
        assert_eq!(s.time_after(1 << 20), DRAIN_TIME_UNAUTHENTICATED);
    }
}
