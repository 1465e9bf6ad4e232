//! Server-sent events, parsed by `eventsource-stream`, with two fences in front of it: the
//! bytes must be UTF-8 (refused at the first bad byte, not at the stream's end), and no event
//! may grow past [`MAX_EVENT_BYTES`].

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use eventsource_stream::{EventStream, EventStreamError};
use futures::{Stream, StreamExt};

/// The largest single server-sent event accepted (more exactly: the most bytes read since the
/// last whole event, so the bound is kept within one network read).
pub(super) const MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;

/// Why a stream of events could not be read.
#[derive(Debug)]
pub(super) enum SseError<E> {
    /// The bytes could not be read.
    Transport(E),
    /// What was read is not an event stream we accept.
    Malformed(String),
}

/// The `data` of each event of a byte stream, in order.
pub(super) struct Events<S> {
    inner: EventStream<Checked<S>>,
    /// Bytes read since the last whole event.
    since_event: Arc<AtomicUsize>,
}

impl<S, B, E> Events<S>
where
    S: Stream<Item = Result<B, E>> + Unpin,
    B: AsRef<[u8]>,
{
    pub(super) fn new(bytes: S) -> Events<S> {
        let since_event = Arc::new(AtomicUsize::new(0));
        let checked = Checked {
            inner: bytes,
            partial_char: Vec::new(),
            since_event: since_event.clone(),
            done: false,
        };
        Events {
            inner: EventStream::new(checked),
            since_event,
        }
    }

    /// The next event's data; `None` at the stream's end. An unterminated last event counts.
    pub(super) async fn next(&mut self) -> Option<Result<String, SseError<E>>> {
        let item = self.inner.next().await?;
        Some(match item {
            Ok(event) => {
                self.since_event.store(0, Ordering::Relaxed);
                Ok(event.data)
            }
            Err(EventStreamError::Transport(Fault::Transport(e))) => Err(SseError::Transport(e)),
            Err(EventStreamError::Transport(Fault::Malformed(what))) => {
                Err(SseError::Malformed(what))
            }
            Err(EventStreamError::Utf8(_)) => Err(SseError::Malformed(NOT_UTF8.to_string())),
            Err(EventStreamError::Parser(e)) => Err(SseError::Malformed(e.to_string())),
        })
    }
}

const NOT_UTF8: &str = "a line is not UTF-8";

enum Fault<E> {
    Transport(E),
    Malformed(String),
}

/// A piece of the source as the parser gets it.
enum Piece<B> {
    /// As read.
    Read(B),
    /// What of a read was whole characters, or a split character made whole.
    Owned(Vec<u8>),
    /// The blank line that ends the stream's last event.
    End,
}

impl<B: AsRef<[u8]>> AsRef<[u8]> for Piece<B> {
    fn as_ref(&self) -> &[u8] {
        match self {
            Piece::Read(b) => b.as_ref(),
            Piece::Owned(v) => v,
            Piece::End => b"\n\n",
        }
    }
}

/// The source's bytes, checked (UTF-8, event size) before the parser buffers them.
struct Checked<S> {
    inner: S,
    /// The start of a character split across reads.
    partial_char: Vec<u8>,
    since_event: Arc<AtomicUsize>,
    /// The source ended (with [`Piece::End`]) or failed.
    done: bool,
}

impl<S, B, E> Stream for Checked<S>
where
    S: Stream<Item = Result<B, E>> + Unpin,
    B: AsRef<[u8]>,
{
    type Item = Result<Piece<B>, Fault<E>>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        let fail = |this: &mut Checked<S>, what: String| {
            this.done = true;
            Poll::Ready(Some(Err(Fault::Malformed(what))))
        };
        match this.inner.poll_next_unpin(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Fault::Transport(e)))),
            Poll::Ready(None) if !this.partial_char.is_empty() => fail(this, NOT_UTF8.into()),
            Poll::Ready(None) => {
                this.done = true;
                Poll::Ready(Some(Ok(Piece::End)))
            }
            Poll::Ready(Some(Ok(read))) => {
                let len = read.as_ref().len();
                let before = this.since_event.fetch_add(len, Ordering::Relaxed);
                if before + len > MAX_EVENT_BYTES {
                    return fail(this, format!("an event exceeded {MAX_EVENT_BYTES} bytes"));
                }
                let (piece, bytes) = if this.partial_char.is_empty() {
                    (None, read.as_ref())
                } else {
                    let mut joined = std::mem::take(&mut this.partial_char);
                    joined.extend_from_slice(read.as_ref());
                    (Some(joined), &[][..])
                };
                let bytes = piece.as_deref().unwrap_or(bytes);
                match std::str::from_utf8(bytes) {
                    Ok(_) => {}
                    // A character split across reads: keep its start for the next read.
                    Err(e) if e.error_len().is_none() => {
                        let whole = e.valid_up_to();
                        this.partial_char = bytes[whole..].to_vec();
                        let owned = bytes[..whole].to_vec();
                        return Poll::Ready(Some(Ok(Piece::Owned(owned))));
                    }
                    Err(_) => return fail(this, NOT_UTF8.into()),
                }
                Poll::Ready(Some(Ok(match piece {
                    Some(joined) => Piece::Owned(joined),
                    None => Piece::Read(read),
                })))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every event's data from `bytes` read `step` bytes at a time.
    fn parse_all(bytes: &[u8], step: usize) -> Result<Vec<String>, String> {
        let pieces: Vec<Result<&[u8], std::convert::Infallible>> =
            bytes.chunks(step).map(Ok).collect();
        let mut events = Events::new(futures::stream::iter(pieces));
        futures::executor::block_on(async {
            let mut out = Vec::new();
            while let Some(event) = events.next().await {
                match event {
                    Ok(data) => out.push(data),
                    Err(SseError::Malformed(what)) => return Err(what),
                    Err(SseError::Transport(e)) => match e {},
                }
            }
            Ok(out)
        })
    }

    #[test]
    fn sse_parsing_does_not_depend_on_how_bytes_arrive() {
        let stream = "retry: 10\n: comment\ndata: one\n\n\
                      data:two\r\n\r\n\
                      event: x\rdata: three\rdata: 3b\r\r\
                      id: 7\n\n\
                      data: four ü\r\n\r\n\
                      data: five";
        let expected = ["one", "two", "three\n3b", "four ü", "five"];
        for step in [1, 2, 3, 5, 8, stream.len()] {
            assert_eq!(
                parse_all(stream.as_bytes(), step).unwrap(),
                expected,
                "step {step}"
            );
        }
    }

    #[test]
    fn sse_rejects_invalid_utf8() {
        assert!(parse_all(b"data: \xff\xfe\n\n", 64).is_err());
        // Refused where it is, not at the end of the stream.
        let mut bytes = b"data: \xff\n\n".to_vec();
        bytes.extend(std::iter::repeat_n(b'x', 1000));
        assert!(parse_all(&bytes, 8).is_err());
        // A character cut off by the stream's end.
        assert!(parse_all("data: ü".as_bytes().split_last().unwrap().1, 64).is_err());
    }

    #[test]
    fn an_event_past_the_cap_is_refused() {
        let mut bytes = b"data: ".to_vec();
        bytes.extend(std::iter::repeat_n(b'a', MAX_EVENT_BYTES));
        bytes.extend_from_slice(b"\n\n");
        let err = parse_all(&bytes, 64 * 1024).unwrap_err();
        assert!(err.contains("exceeded"), "{err}");
        // Many events adding up to more than the cap are fine.
        let event = format!("data: {}\n\n", "b".repeat(1024 * 1024));
        let many = event.repeat(20);
        assert_eq!(parse_all(many.as_bytes(), 64 * 1024).unwrap().len(), 20);
    }
}
