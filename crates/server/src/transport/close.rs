//! Closing a connection that the server ends, without a reset: every transport closes through
//! here (TCP today, WebSocket and SSE later). What to say before closing is the transport's; a
//! connection whose peer went away first needs none of this.
//!
//! Why: closing a socket that still holds unread input makes Linux answer with an RST instead of
//! a FIN, and an RST makes the peer's kernel discard what it has received but not yet handed to
//! the application, so a viewer could lose its `ERROR:` block, its `bye` frame or the stop block.
//! So a close (1) shuts down the write side, so that the FIN goes after the last byte sent, (2)
//! reads and drops the peer's input until its FIN, for at most [`LINGER`] and [`DRAIN_LIMIT`]
//! bytes, (3) closes.
//!
//! Cost: nothing until a close. Then what is already readable is drained with non-blocking reads
//! and only a socket whose peer has not sent its FIN yet lingers, in the reactor: a viewer with a
//! task of its own lingers in that task, and a batch (a shard's 512 viewers at the end of a
//! match) shares one task and one deadline, so a shard never waits and no close adds a task or a
//! timer per viewer.

use std::future::poll_fn;
use std::io::{self, Read};
use std::net::{Shutdown, TcpStream as StdStream};
use std::task::{Context, Poll};
use std::time::Duration;

use socket2::SockRef;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use crate::transport::PortGuard;

/// How long a closing socket waits for its peer's FIN. A viewer that reads what it was sent
/// closes within a round trip or two of our FIN; one that does not (stalled, or gone without a
/// word) should not keep its descriptor, and a stopping node waits for lingering closes within
/// its grace period, so this stays short.
pub(crate) const LINGER: Duration = Duration::from_secs(2);

/// Most input read and dropped while closing one connection: far more than an honest peer sends
/// (a connect line is at most 1 KiB, a viewer has nothing else to say), so that only a peer that
/// floods us after its goodbye gets the reset, and a close never reads without bound.
pub(crate) const DRAIN_LIMIT: usize = 64 * 1024;

/// Bytes one read drops; on the stack of a plain function, never in a task.
const SINK: usize = 8 * 1024;

/// Closes a connection from its own task: shuts down its write side and drains its input, and
/// only if the peer has not sent its FIN yet waits for it (at most [`LINGER`]). `counted` (a
/// viewer's [`PortGuard`], or a refused connection's place in its handshake budget) is held
/// until the connection is closed, since it holds a descriptor till then.
pub(crate) async fn close<T>(stream: TcpStream, counted: T) {
    let mut left = DRAIN_LIMIT;
    if begin(SockRef::from(&stream), &mut left) == Drained::Pending {
        let mut lingering = Lingering { stream, left };
        let _ = tokio::time::timeout(LINGER, poll_fn(|cx| lingering.poll_drain(cx))).await;
    } else {
        drop(stream);
    }
    drop(counted);
}

/// Closes a connection refused before it cost anything, without waiting: its write side is
/// shut down after what was written and what it sent so far is drained (so that the close is a
/// FIN, not a reset), but it does not linger for the peer's FIN. For refusals that must stay
/// cheap however many arrive (a flood from one address).
pub(crate) fn close_now(stream: TcpStream) {
    let mut left = DRAIN_LIMIT;
    let _ = begin(SockRef::from(&stream), &mut left);
}

/// Closes connections from a task that must not wait (a parking shard): each is shut down and
/// drained at once; those whose peer has not sent its FIN yet linger together in one task
/// under one deadline. That task is tracked, so a stopping node waits for it (within its grace
/// period). The sockets must be non-blocking, as sockets taken out of tokio are.
pub(crate) fn close_all(
    tracker: &TaskTracker,
    conns: impl IntoIterator<Item = (StdStream, PortGuard)>,
) {
    let mut waiting = Vec::new();
    for (stream, counted) in conns {
        let mut left = DRAIN_LIMIT;
        if begin(SockRef::from(&stream), &mut left) == Drained::Pending {
            waiting.push((stream, left, counted));
        }
        // Otherwise dropped here: the input is drained and the FIN seen, or the peer is gone.
    }
    if !waiting.is_empty() {
        tracker.spawn(linger_all(waiting, Instant::now() + LINGER));
    }
}

/// Waits for the FIN of every socket of a batch until `deadline`; closes each as soon as its FIN
/// arrives, and the rest at the deadline.
async fn linger_all(batch: Vec<(StdStream, usize, PortGuard)>, deadline: Instant) {
    let mut waiting: Vec<(Lingering, PortGuard)> = batch
        .into_iter()
        // A socket the reactor cannot take cannot be waited for: it is closed as it is.
        .filter_map(|(stream, left, counted)| {
            let stream = TcpStream::from_std(stream).ok()?;
            Some((Lingering { stream, left }, counted))
        })
        .collect();
    let all_closed = poll_fn(|cx| {
        waiting.retain_mut(|(l, _)| l.poll_drain(cx).is_pending());
        if waiting.is_empty() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    });
    let _ = tokio::time::timeout_at(deadline, all_closed).await;
}

/// A socket whose write side is shut down, waiting for its peer's FIN.
struct Lingering {
    stream: TcpStream,
    /// Bytes it may still drop before it is closed regardless.
    left: usize,
}

impl Lingering {
    /// Drains what arrives; ready once the peer's FIN came (or the limit, or an error), pending
    /// (registered with the reactor) while the peer may still send.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            match self.stream.poll_read_ready(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(_)) => return Poll::Ready(()),
                Poll::Ready(Ok(())) => {}
            }
            // `try_read` clears the readiness that a `WouldBlock` disproves, so the next turn of
            // the loop registers for the next input instead of spinning.
            if drain_ready(|buf| self.stream.try_read(buf), &mut self.left) != Drained::Pending {
                return Poll::Ready(());
            }
        }
    }
}

/// Where draining a socket's input stands.
#[derive(Debug, PartialEq, Eq)]
enum Drained {
    /// Nothing more to read for now, and the peer's FIN has not come: wait for it.
    Pending,
    /// The FIN came, the peer is gone, or it sent more than [`DRAIN_LIMIT`]: close now.
    Done,
}

/// Steps 1 and 2 without waiting: shuts down the write side, then drains what is readable.
fn begin(socket: SockRef<'_>, left: &mut usize) -> Drained {
    // Fails only when the connection is already gone (reset): nothing to protect then.
    if socket.shutdown(Shutdown::Write).is_err() {
        return Drained::Done;
    }
    drain_ready(|buf| (&*socket).read(buf), left)
}

/// Reads and drops input with non-blocking reads until none is left, the FIN, an error, or the
/// end of the budget `left`.
fn drain_ready(mut read: impl FnMut(&mut [u8]) -> io::Result<usize>, left: &mut usize) -> Drained {
    let mut sink = [0u8; SINK];
    while *left > 0 {
        let want = (*left).min(SINK);
        match read(&mut sink[..want]) {
            Ok(0) => return Drained::Done,
            Ok(n) => *left = left.saturating_sub(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Drained::Pending,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Drained::Done,
        }
    }
    Drained::Done
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads as a socket would: the chunks, then `end` (0 for the FIN, or an error).
    fn socket_like(
        chunks: Vec<usize>,
        end: io::Result<usize>,
    ) -> impl FnMut(&mut [u8]) -> io::Result<usize> {
        let mut chunks = chunks.into_iter();
        let mut end = Some(end);
        move |buf: &mut [u8]| match chunks.next() {
            Some(n) => Ok(n.min(buf.len())),
            None => end.take().unwrap_or(Ok(0)),
        }
    }

    #[test]
    fn draining_waits_only_for_a_peer_that_has_not_sent_its_fin() {
        let would_block = || Err(io::ErrorKind::WouldBlock.into());
        let mut left = DRAIN_LIMIT;
        assert_eq!(drain_ready(socket_like(vec![], would_block()), &mut left), Drained::Pending);
        assert_eq!(left, DRAIN_LIMIT);
        assert_eq!(
            drain_ready(socket_like(vec![100, 200], would_block()), &mut left),
            Drained::Pending
        );
        assert_eq!(left, DRAIN_LIMIT - 300);
        assert_eq!(drain_ready(socket_like(vec![100], Ok(0)), &mut left), Drained::Done);
        let mut left = DRAIN_LIMIT;
        let reset = Err(io::ErrorKind::ConnectionReset.into());
        assert_eq!(drain_ready(socket_like(vec![], reset), &mut left), Drained::Done);
    }

    #[test]
    fn draining_stops_at_the_limit() {
        let mut left = DRAIN_LIMIT;
        let flood = socket_like(vec![SINK; 1000], Err(io::ErrorKind::WouldBlock.into()));
        assert_eq!(drain_ready(flood, &mut left), Drained::Done);
        assert_eq!(left, 0);
        let mut left = 10;
        let mut seen = Vec::new();
        let read = |buf: &mut [u8]| {
            seen.push(buf.len());
            Ok(buf.len())
        };
        assert_eq!(drain_ready(read, &mut left), Drained::Done);
        assert_eq!(seen, vec![10], "never reads past the limit");
    }
}
