//! Refusing a request before its body is read (a 413, a 401, a 404 on an upload) must not
//! break the client's connection. If the server closed it with body bytes unread, the kernel
//! would answer the rest of the upload with a reset: the client then sees a broken connection
//! instead of the error (or, having pooled the connection, fails its *next* request).
//!
//! This layer follows the request body through the handlers. If a handler answers without
//! reading it to the end, the rest is read and thrown away — at most [`DRAIN_BYTES`] within
//! [`DRAIN_TIME`] — so the answer arrives cleanly and the connection stays usable. A body too
//! big or too slow to drain gets `Connection: close` on the answer, so no client reuses a
//! connection the server is about to drop.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use http_body::{Frame, SizeHint};

/// The most a refused body is read for nothing.
pub const DRAIN_BYTES: usize = 16 << 20;
/// The longest a refused body is waited for.
pub const DRAIN_TIME: Duration = Duration::from_secs(5);
/// The same bounds for a caller without a valid API key: enough for any JSON request to get
/// its 401, not enough to make the server a sink for strangers' uploads.
pub const DRAIN_BYTES_UNAUTHENTICATED: usize = 1 << 20;
pub const DRAIN_TIME_UNAUTHENTICATED: Duration = Duration::from_secs(1);

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
pub async fn settle_request_body(req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    if body.is_end_stream() {
        return next.run(Request::from_parts(parts, body)).await;
    }
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
    let (bytes, time) = if res.status() == StatusCode::UNAUTHORIZED {
        (DRAIN_BYTES_UNAUTHENTICATED, DRAIN_TIME_UNAUTHENTICATED)
    } else {
        (DRAIN_BYTES, DRAIN_TIME)
    };
    if !drain(rest, bytes, time).await {
        res.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    res
}

/// Read and drop what is left of `body`; whether it ended within the bounds.
async fn drain(mut body: Body, max_bytes: usize, max_time: Duration) -> bool {
    let read_all = async {
        let mut seen = 0usize;
        loop {
            match std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
                None => return true,
                Some(Err(_)) => return false,
                Some(Ok(frame)) => {
                    seen += frame.data_ref().map_or(0, Bytes::len);
                    if seen > max_bytes {
                        return false;
                    }
                }
            }
        }
    };
    tokio::time::timeout(max_time, read_all)
        .await
        .unwrap_or(false)
}
