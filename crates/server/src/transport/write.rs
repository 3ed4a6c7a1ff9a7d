//! Writing to viewer connections without waiting when they have room: a burst goes out in one
//! vectored write, and only a socket that is full gets a deadline (and a timer).

use std::io::{self, IoSlice};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use crate::transport::conn::Conn;

/// Most buffers gathered into one write.
pub(super) const MAX_BATCH: usize = 64;

/// Writes every buffer, in one syscall when the socket has room. Only a write the socket cannot
/// take at once gets a deadline: a viewer that accepts nothing for `timeout` is too slow. Over
/// TLS, done means sent: what was encrypted earlier goes first, and all of it leaves rustls'
/// buffer before this returns (so `&[]` sends what is left there). A TLS stream is never cut
/// mid-frame (rustls holds the rest of a record), so its timeout is a plain `TimedOut`.
pub(super) async fn write_all(
    stream: &mut Conn,
    bufs: &[Bytes],
    timeout: Duration,
) -> io::Result<()> {
    let (mut idx, mut off) = (0usize, 0usize);
    let mut deadline = None;
    loop {
        let attempt = match stream.try_flush() {
            Ok(true) if idx == bufs.len() => return Ok(()),
            Ok(true) => try_write_from(stream, bufs, idx, off),
            Ok(false) => Err(io::ErrorKind::WouldBlock.into()),
            Err(e) => Err(e),
        };
        match attempt {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(mut written) => {
                while written > 0 {
                    let left = bufs[idx].len() - off;
                    if written >= left {
                        written -= left;
                        idx += 1;
                        off = 0;
                    } else {
                        off += written;
                        written = 0;
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let at = *deadline.get_or_insert_with(|| Instant::now() + timeout);
                // Boxed: the timer exists only while a viewer's socket is full, so it is not
                // part of every idle viewer's task.
                match Box::pin(wait_writable(stream, at)).await {
                    Err(e)
                        if e.kind() == io::ErrorKind::TimedOut && off > 0 && !stream.is_tls() =>
                    {
                        return Err(io::Error::new(io::ErrorKind::TimedOut, MidFrame));
                    }
                    r => r?,
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// A write that timed out partway through one of its buffers (each buffer is a frame, or the
/// rest of one): the viewer's stream is cut mid-frame, so nothing may follow it (no goodbye).
#[derive(Debug)]
struct MidFrame;

impl std::fmt::Display for MidFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("write timed out in the middle of a frame")
    }
}

impl std::error::Error for MidFrame {}

/// Did this write time out partway through a frame?
pub(super) fn cut_mid_frame(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::TimedOut && e.get_ref().is_some_and(|inner| inner.is::<MidFrame>())
}

/// Waits until the socket takes bytes again, or fails with `TimedOut` at `deadline`.
async fn wait_writable(stream: &Conn, deadline: Instant) -> io::Result<()> {
    let ready = std::future::poll_fn(|cx| stream.poll_write_ready(cx));
    match tokio::time::timeout_at(deadline, ready).await {
        Ok(ready) => ready,
        Err(_) => Err(io::ErrorKind::TimedOut.into()),
    }
}

/// One non-blocking vectored write of `bufs[idx..]` (the first from `off`). A plain function so
/// that its slice array never becomes part of a viewer's task.
pub(super) fn try_write_from(
    stream: &mut Conn,
    bufs: &[Bytes],
    idx: usize,
    off: usize,
) -> io::Result<usize> {
    let mut slices = [IoSlice::new(&[]); MAX_BATCH];
    let mut n = 0;
    for (i, b) in bufs[idx..].iter().take(MAX_BATCH).enumerate() {
        slices[i] = IoSlice::new(if i == 0 { &b[off..] } else { &b[..] });
        n += 1;
    }
    stream.try_write_vectored(&slices[..n])
}
