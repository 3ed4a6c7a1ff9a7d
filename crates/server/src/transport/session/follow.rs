//! Following a match in a task of its own: writing what the hub hands out (joining, catching up,
//! a full socket), answering what the viewer sends (dropped for TCP and SSE; pings and closes
//! for WebSocket, each frame whole within `--ws-frame-timeout`), until the viewer reaches the
//! live edge or its stream ends. It decides nothing past that: it says how the stretch ended
//! ([`Outcome`]) and `session.rs` parks the viewer or closes it.

use std::io;

use bytes::Bytes;
use tokio::time::Instant;

use super::input::{drain_input, Drained, INPUT_DRAIN};
use super::state::{Following, Input};
use crate::hub::{Format, Next, Subscription};
use crate::transport::conn::Conn;
use crate::transport::context::{keepalive, ViewerContext};
use crate::transport::write::{cut_mid_frame, write_all, MAX_BATCH};
use crate::wire::ws::{self, ClientFrame};
use crate::wire::ByeReason;

/// How a stretch of following a match in a task ended.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    /// Caught up with the live edge, owing the viewer nothing: it can be parked.
    AtHead,
    /// Say goodbye for this reason and close.
    Bye(ByeReason),
    /// The viewer went away: nobody to tell.
    Gone,
    /// A WebSocket client closed, or broke the protocol: answer with a close frame of this
    /// code, and close.
    Close(u16),
    /// Too slow, and its stream was cut in the middle of a frame: nothing can follow (a goodbye
    /// would read as the rest of that frame), so close.
    Cut,
    /// A WebSocket client sent part of a frame and not the rest within `ws_frame_timeout`.
    FrameTimeout,
}

/// Follows the match in this task: first writes what a shard could not, and answers what the
/// viewer already sent, then whatever the subscription hands out, until the viewer is at the
/// live edge (with `may_park` false: not before one more item was handed out) or must leave.
pub(super) async fn follow(ctx: &ViewerContext, v: &mut Following, may_park: bool) -> Outcome {
    if !v.unwritten.is_empty() {
        let unwritten = std::mem::take(&mut v.unwritten);
        match write_all(&mut v.stream, &unwritten, ctx.write_timeout).await {
            Ok(()) => {}
            // It begins with the end of a frame: stopping anywhere in it is mid-frame.
            Err(e) if e.kind() == io::ErrorKind::TimedOut => return Outcome::Cut,
            Err(_) => return Outcome::Gone,
        }
    }
    if !v.input.bytes.is_empty() {
        if let Err(outcome) = answer_frames(ctx, &mut v.stream, &mut v.input, false).await {
            return outcome;
        }
    }
    stream_to_viewer(ctx, &mut v.stream, &mut v.sub, may_park, v.format, &mut v.input).await
}

/// Writes what the subscription hands out until the viewer reaches the live edge, its stream
/// ends or the node stops (a reason for goodbye), or it goes away.
async fn stream_to_viewer(
    ctx: &ViewerContext,
    stream: &mut Conn,
    sub: &mut Subscription,
    mut may_park: bool,
    format: Format,
    input: &mut Input,
) -> Outcome {
    let mut batch: Vec<Bytes> = Vec::new();
    let ping = keepalive(format, 0);
    let quiet = if format == Format::Ws { ctx.keepalive * 2 } else { ctx.keepalive };
    // While the node drains, this viewer keeps getting events until its moment comes.
    // Boxed: the timer exists only in this stretch, not in every viewer task's state.
    let mut goodbye = Box::pin(ctx.goodbye_time());
    // When this task last wrote events, while writes are spaced (`--min-write-interval`).
    let mut last_write: Option<Instant> = None;
    // A TLS viewer stays in this task (conn.rs says why).
    let parkable = stream.parkable();
    loop {
        // Half a WebSocket frame read cannot be parked (a shard keeps no buffer): it waits here
        // for the rest, until its deadline.
        if parkable && may_park && input.bytes.is_empty() && sub.at_head() {
            return Outcome::AtHead;
        }
        may_park = true;
        let next = tokio::select! {
            biased;
            _ = &mut goodbye => return Outcome::Bye(ByeReason::Shutdown),
            _ = until(input.whole_by), if input.whole_by.is_some() => return Outcome::FrameTimeout,
            n = sub.next() => n,
            r = std::future::poll_fn(|cx| stream.poll_read_ready(cx)) => {
                if r.is_err() {
                    return Outcome::Gone;
                }
                if let Err(outcome) = answer_input(ctx, stream, format, input).await {
                    return outcome;
                }
                continue;
            }
            // Only a viewer waiting in a task between events gets here; parked ones get their
            // pings from their shard.
            _ = tokio::time::sleep(quiet), if ping.is_some() => {
                if let Some(p) = &ping {
                    if let Err(e) = write_all(stream, std::slice::from_ref(p), ctx.write_timeout).await {
                        return written_outcome(e);
                    }
                }
                continue;
            }
        };
        match next {
            Next::Data(b) => batch.push(b),
            Next::End(reason) => return Outcome::Bye(reason),
        }
        let mut end = gather(sub, &mut batch);
        // Events coming fast: this write waits for the interval since the last one, and takes
        // what came meanwhile (a viewer catching up fills its writes and never waits; the
        // match's last event and a stopping node never wait). The wait ends early when the
        // node begins to stop or the viewer sends something, so that the goodbye or the answer
        // follows the write at once. Boxed: the timer exists only then.
        if let Some(at) = last_write.map(|at| at + ctx.min_write_interval) {
            let last_words = end.is_some() || sub.has_ended() || ctx.shutdown.is_cancelled();
            if !last_words && batch.len() < MAX_BATCH && at > Instant::now() {
                Box::pin(async {
                    tokio::select! {
                        biased;
                        _ = ctx.shutdown.cancelled() => {}
                        _ = std::future::poll_fn(|cx| stream.poll_read_ready(cx)) => {}
                        _ = tokio::time::sleep_until(at) => {}
                    }
                })
                .await;
                end = gather(sub, &mut batch);
            }
        }
        let written = write_all(stream, &batch, ctx.write_timeout).await;
        last_write = (!ctx.min_write_interval.is_zero()).then(Instant::now);
        if written.is_ok() {
            ctx.ports.metrics.delivered(format, batch.len() as u64, 1);
        }
        batch.clear();
        if batch.capacity() > MAX_BATCH {
            batch = Vec::new();
        }
        if let Err(e) = written {
            return written_outcome(e);
        }
        if let Some(reason) = end {
            return Outcome::Bye(reason);
        }
    }
}

/// Takes what the subscription has ready, without waiting, until `batch` holds a write's worth;
/// the stream's end if it came.
fn gather(sub: &mut Subscription, batch: &mut Vec<Bytes>) -> Option<ByeReason> {
    while batch.len() < MAX_BATCH {
        match sub.try_next() {
            Some(Next::Data(b)) => batch.push(b),
            Some(Next::End(reason)) => return Some(reason),
            None => break,
        }
    }
    None
}

/// Waits until `at`, if it is set (the timer exists only once this is polled).
pub(super) async fn until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn written_outcome(e: io::Error) -> Outcome {
    if cut_mid_frame(&e) {
        Outcome::Cut
    } else if e.kind() == io::ErrorKind::TimedOut {
        Outcome::Bye(ByeReason::TooSlow)
    } else {
        Outcome::Gone
    }
}

/// Reads what the viewer sent, without waiting. TCP and SSE viewers have nothing to say: their
/// bytes are dropped, and the end of their input ends the session (as in the original). A
/// WebSocket client's frames are kept and answered.
async fn answer_input(
    ctx: &ViewerContext,
    stream: &mut Conn,
    format: Format,
    input: &mut Input,
) -> Result<(), Outcome> {
    let read = |buf: &mut [u8]| stream.try_read(buf);
    if format != Format::Ws {
        return match drain_input(read, None, INPUT_DRAIN) {
            Drained::Open => Ok(()),
            Drained::Ended => Err(Outcome::Gone),
        };
    }
    let ended = drain_input(read, Some(&mut input.bytes), 2 * ws::MAX_CLIENT_FRAME as usize)
        == Drained::Ended;
    // A WebSocket client may send its close frame and its FIN together: the close is answered.
    if ended && input.bytes.is_empty() {
        return Err(Outcome::Gone);
    }
    answer_frames(ctx, stream, input, ended).await
}

/// Answers a WebSocket client's whole frames in `input`: pings are answered, a close or a
/// protocol error ends the viewer, messages are ignored; what is left, the start of a frame,
/// gets a deadline. `ended`: the client hung up after these bytes.
async fn answer_frames(
    ctx: &ViewerContext,
    stream: &mut Conn,
    input: &mut Input,
    ended: bool,
) -> Result<(), Outcome> {
    let Input { bytes, whole_by } = input;
    let frames = ws::read_client(bytes).map_err(|e| Outcome::Close(e.code()))?;
    if bytes.is_empty() && bytes.capacity() > 0 {
        *bytes = bytes::BytesMut::new();
    }
    // A frame's deadline runs from its first byte: what is left began in this read when a
    // whole frame was taken before it; otherwise it is the frame that was already waiting.
    let fresh = || Some(Instant::now() + ctx.ws_frame_timeout);
    *whole_by = match (bytes.is_empty(), frames.is_empty()) {
        (true, _) => None,
        (false, false) => fresh(),
        (false, true) => whole_by.or_else(fresh),
    };
    for frame in frames {
        match frame {
            ClientFrame::Ping(payload) => {
                let pong = ws::pong(&payload);
                write_all(stream, &[pong], ctx.write_timeout).await.map_err(written_outcome)?;
            }
            ClientFrame::Close(code) => {
                // Echo a code the client may send back; anything else is answered with 1000.
                let code = code.filter(|c| matches!(c, 1000..=1003 | 1007..=1011 | 3000..=4999));
                return Err(Outcome::Close(code.unwrap_or(1000)));
            }
            ClientFrame::Ignored => {}
        }
    }
    if ended {
        return Err(Outcome::Gone);
    }
    Ok(())
}
