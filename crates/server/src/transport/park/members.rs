//! What a shard does to its members, without ever waiting: a burst written to each, their input
//! (a hang-up, a WebSocket client's frame), keepalive pings, goodbyes; and a member handed back
//! to a task of its own (`viewer::follow`) when it needs more than that.

use std::io::{self, IoSlice, Read, Write};
use std::net::TcpStream as StdStream;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use mio::unix::SourceFd;
use tokio::net::TcpStream;

use super::{Member, Shard};
use crate::hub::{EncodedEvent, Format, Frame, Subscription};
use crate::model::EventKind;
use crate::transport::close::close_all;
use crate::transport::viewer::{follow, goodbye, keepalive, ViewerContext};
use crate::transport::write::MAX_BATCH;
use crate::wire::ByeReason;

/// Handles the members whose sockets have input: one that hung up is dropped; a WebSocket client
/// goes back to a task, which reads its frames and answers them, and which waits for the rest
/// of a frame sent in part until `--ws-frame-timeout` (SPEC 10: so a member keeps no buffer and
/// no deadline, and a shard no timer per member); what a TCP or SSE viewer sends is read and
/// dropped (it has nothing to say).
pub(super) fn answer_input(
    ctx: &Arc<ViewerContext>,
    shard: &Shard,
    members: &mut Vec<Member>,
    fds: &[RawFd],
) {
    for fd in fds {
        let Some(i) = members.iter().position(|m| m.stream.as_raw_fd() == *fd) else { continue };
        if members[i].format == Format::Ws {
            let m = members.swap_remove(i);
            resume_in_task(ctx, shard, m, Vec::new());
        } else if !still_there(&members[i]) {
            members.swap_remove(i);
        }
    }
}

/// Pings the WebSocket and SSE members due for it after `quiet_ticks` keepalive periods
/// without traffic (the same bytes for all of a format).
pub(super) fn ping_members(
    ctx: &Arc<ViewerContext>,
    shard: &Shard,
    members: &mut Vec<Member>,
    quiet_ticks: u32,
) {
    let mut i = 0;
    while i < members.len() {
        let Some(ping) = keepalive(members[i].format, quiet_ticks) else {
            i += 1;
            continue;
        };
        match (&members[i].stream).write(&ping) {
            Ok(n) if n == ping.len() => i += 1,
            Ok(n) => {
                let m = members.swap_remove(i);
                resume_in_task(ctx, shard, m, vec![ping.slice(n..)]);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let m = members.swap_remove(i);
                resume_in_task(ctx, shard, m, vec![ping]);
            }
            Err(_) => {
                members.swap_remove(i);
            }
        }
    }
}

/// Most a shard reads and drops from one viewer at a time: a viewer has nothing to say after its
/// connect line, so this only bounds the work a chatty one costs.
const INPUT_DRAIN: usize = 16 * 1024;

/// Has the viewer not hung up? End of stream or an error means it left, as in the original. What
/// it sent is read and dropped (the shard is told again only when more arrives).
fn still_there(m: &Member) -> bool {
    let mut sink = [0u8; 4096];
    let mut left = INPUT_DRAIN;
    while left > 0 {
        match (&m.stream).read(&mut sink) {
            Ok(0) => return false,
            Ok(n) => left = left.saturating_sub(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return e.kind() == io::ErrorKind::WouldBlock,
        }
    }
    true
}

pub(super) fn is_stop(f: &Frame) -> bool {
    matches!(f, Frame::Event(EncodedEvent { kind: EventKind::Stop, .. }))
}

/// Writes `frames` to every member that has not seen them, without waiting. Members that leave
/// (gone) or cannot take it all (back to a task) are removed; those that took a burst ending the
/// match stay, for `say_goodbye`.
pub(super) fn deliver(
    ctx: &Arc<ViewerContext>,
    shard: &Shard,
    members: &mut Vec<Member>,
    frames: &[Arc<Frame>],
) {
    let events: Vec<&EncodedEvent> = frames
        .iter()
        .filter_map(|f| match &**f {
            Frame::Event(e) => Some(e),
            Frame::End(_) => None,
        })
        .collect();
    let Some(newest) = events.last().map(|e| e.seq) else { return };
    // Counted for the metrics once per burst: frames per format, and viewers reached per event.
    let mut frames_by_format = [0u64; 4];
    let mut reached = [0usize; MAX_BATCH];
    let mut i = 0;
    while i < members.len() {
        let m = &mut members[i];
        let from = events.partition_point(|e| e.seq <= m.last);
        if from == events.len() {
            i += 1;
            continue;
        }
        if events[from].seq != m.last + 1 {
            // Never expected (parking hands over at the live edge), but a gap must be filled
            // from history, never skipped.
            let m = members.swap_remove(i);
            resume_in_task(ctx, shard, m, Vec::new());
            continue;
        }
        let mut slices = [IoSlice::new(&[]); MAX_BATCH];
        let mut n = 0;
        for e in events[from..].iter().take(MAX_BATCH) {
            slices[n] = IoSlice::new(e.bytes(m.format));
            n += 1;
        }
        let total: usize = slices[..n].iter().map(|s| s.len()).sum();
        let written = match (&m.stream).write_vectored(&slices[..n]) {
            Ok(w) => w,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            // Reset or closed: the viewer is gone.
            Err(_) => {
                members.swap_remove(i);
                continue;
            }
        };
        m.last = newest;
        // What the socket did not take is handed to the viewer's task below, and written
        // there: every frame of the burst counts as delivered here.
        frames_by_format[m.format as usize] += n as u64;
        for r in &mut reached[from..from + n] {
            *r += 1;
        }
        if written == total {
            i += 1;
            continue;
        }
        let m = members.swap_remove(i);
        let rest = unwritten(&events[from..], m.format, written);
        resume_in_task(ctx, shard, m, rest);
    }
    let metrics = &ctx.ports.metrics;
    for (format, frames) in Format::ALL.into_iter().zip(frames_by_format) {
        if frames > 0 {
            metrics.delivered(format, frames);
        }
    }
    let now = crate::ingest::now_ms();
    for (ev, count) in events.iter().zip(reached).filter(|(_, c)| *c > 0) {
        let lag = now.saturating_sub(ev.ts).max(0) as f64 / 1000.0;
        metrics.delivery_lag.record_many(lag, count);
    }
}

/// What a partial write left of a member's burst.
fn unwritten(events: &[&EncodedEvent], format: Format, mut written: usize) -> Vec<Bytes> {
    let mut rest = Vec::new();
    for b in events.iter().map(|e| e.bytes(format)) {
        if written >= b.len() {
            written -= b.len();
        } else {
            rest.push(b.slice(written..));
            written = 0;
        }
    }
    rest
}

/// Sends a member back to a task of its own: it writes `rest` (the end of a burst the socket
/// could not take), then follows the match from `m.last` through a subscription.
/// It follows the very incarnation of the match it was parked on: if that was cancelled, it
/// is told so, even when a match of the same id was created since.
pub(super) fn resume_in_task(ctx: &Arc<ViewerContext>, shard: &Shard, m: Member, rest: Vec<Bytes>) {
    let sub = ctx.hub.rejoin(&shard.key, m.format, m.last);
    // Out of the shard's epoll set before tokio's reactor takes the socket.
    let _ = shard.registry.deregister(&mut SourceFd(&m.stream.as_raw_fd()));
    back_to_task(ctx, sub, m, rest);
}

fn back_to_task(ctx: &Arc<ViewerContext>, sub: Subscription, m: Member, rest: Vec<Bytes>) {
    let Member { stream, format, _counted: guard, .. } = m;
    // What a WebSocket client sent is read here, before tokio's reactor has seen the socket
    // (it would report no input until its next turn, and the task would park the viewer again
    // at once, with the input still unread).
    let mut input = BytesMut::new();
    // A client that closed with a close frame still gets the close answered (by the task).
    if format == Format::Ws && !read_input(&stream, &mut input) && input.is_empty() {
        return;
    }
    let ctx2 = ctx.clone();
    ctx.tracker.spawn(async move {
        let Ok(stream) = TcpStream::from_std(stream) else { return };
        follow(&ctx2, stream, sub, guard, format, rest, input).await;
    });
}

/// Reads what the peer sent so far, without waiting (at most [`INPUT_DRAIN`] bytes). False if
/// it hung up.
fn read_input(stream: &StdStream, input: &mut BytesMut) -> bool {
    let mut chunk = [0u8; 1024];
    while input.len() < INPUT_DRAIN {
        match (&*stream).read(&mut chunk) {
            Ok(0) => return false,
            Ok(n) => input.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return e.kind() == io::ErrorKind::WouldBlock,
        }
    }
    true
}

/// Says goodbye to every member in its format (v1 has none) and closes them all, without
/// waiting for anyone: the goodbye is best effort (a socket too full for it is being closed
/// anyway), and the close lingers elsewhere.
pub(super) fn say_goodbye(ctx: &ViewerContext, mut members: Vec<Member>, reason: ByeReason) {
    // Every goodbye but `shutdown` is the same for all, encoded once per format (a `shutdown`
    // one is jittered per viewer).
    let mut shared: [Option<Bytes>; 4] = Default::default();
    for m in &mut members {
        m._counted.leaving(reason);
        if m.format == Format::V1 {
            continue;
        }
        let frame = if reason == ByeReason::Shutdown {
            goodbye(m.format, &ctx.bye(reason, m.format))
        } else {
            let slot = &mut shared[m.format as usize];
            if slot.is_none() {
                *slot = goodbye(m.format, &ctx.bye(reason, m.format));
            }
            slot.clone()
        };
        if let Some(frame) = frame {
            let _ = (&m.stream).write(&frame);
        }
    }
    close_all(&ctx.tracker, members.into_iter().map(|m| (m.stream, m._counted)));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An idle viewer at the live edge costs this entry (plus its socket in the kernel); the
    /// benchmark holds the node to about a KiB per idle viewer, all in, so keep it small.
    #[test]
    fn a_parked_viewer_is_a_few_dozen_bytes() {
        assert!(std::mem::size_of::<Member>() <= 32, "{}", std::mem::size_of::<Member>());
    }

    #[test]
    fn a_partial_write_leaves_exactly_the_unwritten_bytes() {
        let ev = |seq, text: &'static str| {
            EncodedEvent::from_parts(
                seq,
                0,
                EventKind::Comment,
                Bytes::from_static(b"v1"),
                Bytes::from_static(text.as_bytes()),
            )
        };
        let (a, b, c) = (ev(1, "aaaa"), ev(2, "bbb"), ev(3, "cc"));
        let events = [&a, &b, &c];
        let join = |rest: Vec<Bytes>| rest.concat();
        assert_eq!(join(unwritten(&events, Format::V2, 0)), b"aaaabbbcc");
        assert_eq!(join(unwritten(&events, Format::V2, 4)), b"bbbcc");
        assert_eq!(join(unwritten(&events, Format::V2, 6)), b"bcc");
        assert_eq!(unwritten(&events, Format::V2, 6).len(), 2);
        assert!(unwritten(&events, Format::V2, 9).is_empty());
        assert_eq!(join(unwritten(&events, Format::V1, 3)), b"1v1");
    }
}
