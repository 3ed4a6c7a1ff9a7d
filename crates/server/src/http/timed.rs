//! A connection's deadlines that no request sees (SPEC 10): its next request's head within the
//! head timeout of its first byte (or of the accept), no request for the idle timeout, and
//! writes that make no progress for the write timeout. Hyper's own header timeout cannot tell a
//! kept-alive connection waiting for its next request from a slow head, so the socket is
//! wrapped instead: [`Timed`] reads and writes it for hyper and ends it with `TimedOut` once a
//! deadline passes, and the connection's service says when a request is being answered
//! ([`Activity`]), during which no read deadline runs (the body's is the extractor's, and a
//! publish may wait for its store).
//!
//! One timer per connection, moved only when it fires early or a nearer deadline needs it: a
//! request answered at once does not touch it.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::io::Io;
use super::Limits;

/// What a connection is doing, as its service tells it.
#[derive(Debug)]
pub(super) struct Activity {
    /// Twice the number of the idle period the connection is in (a new one starts with each
    /// answer), plus [`BUSY`] while a request is answered.
    state: AtomicU64,
}

const BUSY: u64 = 1;

impl Default for Activity {
    fn default() -> Activity {
        Activity { state: AtomicU64::new(0) }
    }
}

impl Activity {
    /// A request's head is in: it is being answered.
    pub(super) fn busy(&self) {
        let state = self.state.load(Ordering::Relaxed);
        self.state.store(state | BUSY, Ordering::Relaxed);
    }

    /// Its answer is out: the connection waits for its next request.
    pub(super) fn idle(&self) {
        // Only the connection's task changes it: no read-modify-write needed.
        let next = (self.state.load(Ordering::Relaxed) | BUSY).wrapping_add(1);
        self.state.store(next, Ordering::Relaxed);
    }
}

/// A socket with the connection's deadlines.
pub(super) struct Timed {
    io: Io,
    activity: Arc<Activity>,
    limits: Limits,
    /// The idle period last seen, and when it began (`None`: the connection's first, which has
    /// the head's deadline from the accept).
    period: (u64, Option<Instant>),
    /// When the first byte of a request not yet answered arrived, in this idle period.
    head_began: Option<Instant>,
    /// Since when writes have been refused (the socket full).
    write_stalled: Option<Instant>,
    timer: Pin<Box<Sleep>>,
    accepted: Instant,
    /// `matchstream_limit_refusals_total{limit="http_deadline"}`.
    passed: metrics::Counter,
}

impl Timed {
    /// `accepted`: when the connection was accepted (its first head is due within the head
    /// timeout of it, a TLS handshake included).
    pub(super) fn new(
        io: Io,
        accepted: Instant,
        activity: Arc<Activity>,
        limits: Limits,
        passed: metrics::Counter,
    ) -> Timed {
        Timed {
            io,
            activity,
            limits,
            period: (0, None),
            head_began: None,
            write_stalled: None,
            timer: Box::pin(tokio::time::sleep_until(accepted + limits.head_timeout)),
            accepted,
            passed,
        }
    }

    pub(super) fn into_inner(self) -> Io {
        self.io
    }

    /// The read deadline now (`None` while a request is answered).
    fn read_deadline(&mut self, now: Instant) -> Option<Instant> {
        let state = self.activity.state.load(Ordering::Relaxed);
        if state & BUSY != 0 {
            self.head_began = None;
            return None;
        }
        if state != self.period.0 {
            self.period = (state, Some(now));
            self.head_began = None;
        }
        Some(match (self.head_began, self.period.1) {
            (Some(began), _) => began + self.limits.head_timeout,
            (None, Some(idle_since)) => idle_since + self.limits.idle_timeout,
            (None, None) => self.accepted + self.limits.head_timeout,
        })
    }

    /// `Ready(Err)` once `deadline` has passed; otherwise `Pending`, with the timer set to
    /// wake the task by then.
    fn check(
        &mut self,
        cx: &mut Context<'_>,
        deadline: Instant,
        now: Instant,
        what: &str,
    ) -> Poll<io::Result<()>> {
        if now >= deadline {
            tracing::debug!(what, "HTTP connection closed: a deadline passed");
            self.passed.increment(1);
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, what.to_owned())));
        }
        // Moved only when it would fire late, or has fired (early, for a deadline moved on).
        if self.timer.deadline() > deadline || self.timer.is_elapsed() {
            self.timer.as_mut().reset(deadline);
        }
        // Registers the task's waker: the timer is ahead, so this is `Pending`.
        let _ = self.timer.as_mut().poll(cx);
        Poll::Pending
    }
}

impl AsyncRead for Timed {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                // A first request's head runs from the accept, a later one's from its first
                // byte (the wait before it is the idle timeout's).
                if buf.filled().len() > before && this.head_began.is_none() {
                    let now = Instant::now();
                    if this.read_deadline(now).is_some() && this.period.1.is_some() {
                        this.head_began = Some(now);
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                let now = Instant::now();
                match this.read_deadline(now) {
                    None => Poll::Pending,
                    Some(deadline) => {
                        let what = match this.head_began {
                            Some(_) => "the request head did not arrive in time",
                            None => "no request in time",
                        };
                        ready!(this.check(cx, deadline, now, what))?;
                        Poll::Pending
                    }
                }
            }
        }
    }
}

impl Timed {
    /// After a write: progress clears the stall; none starts or checks it.
    fn written<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match polled {
            Poll::Pending => {
                let now = Instant::now();
                let since = *self.write_stalled.get_or_insert(now);
                let deadline = since + self.limits.write_timeout;
                ready!(self.check(cx, deadline, now, "the client took no answer in time"))?;
                Poll::Pending
            }
            ready => {
                self.write_stalled = None;
                let now = Instant::now();
                // Past it already, the next read says so.
                if let Some(deadline) = self.read_deadline(now).filter(|d| *d > now) {
                    let _ = self.check(cx, deadline, now, "no request in time");
                }
                ready
            }
        }
    }
}

impl AsyncWrite for Timed {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write(cx, buf);
        this.written(cx, polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.written(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
