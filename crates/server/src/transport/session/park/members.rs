//! A shard's members and what it does to them, without ever waiting: a burst written to each,
//! their input (a hang-up, a WebSocket client's frame), keepalive pings, goodbyes; a member that
//! needs more than that is handed back to a task of its own ([`Shard::hand_back`]). Members are
//! kept in the order of their descriptors, so that the one a readiness event names is found by
//! a binary search, with nothing stored per member for it.

use std::io::{self, IoSlice, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use bytes::Bytes;

use super::Shard;
use crate::hub::{EncodedEvent, Format, Frame};
use crate::model::EventKind;
use crate::transport::close::close_all;
use crate::transport::context::{goodbye, keepalive, ViewerContext};
use crate::transport::session::input::{drain_input, Drained, INPUT_DRAIN};
use crate::transport::session::state::Parked;
use crate::transport::write::MAX_BATCH;
use crate::wire::ByeReason;

/// A shard's parked viewers, in the order of their descriptors.
#[derive(Default)]
pub(super) struct Members(Vec<Parked>);

/// What writing a burst to one member came to.
enum Wrote {
    /// All of it (or it had it all already): it stays.
    All,
    /// Part of it: back to a task, which writes the rest.
    Part(Vec<Bytes>),
    /// Its next event is not in this burst (never expected: parking hands over at the live
    /// edge), so a gap would follow: back to a task, which fills it from history.
    Gap,
    /// Reset or closed: it is gone.
    Gone,
}

impl Members {
    pub(super) fn len(&self) -> usize {
        self.0.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Takes the viewers handed to the shard since it last looked.
    pub(super) fn add(&mut self, incoming: &mut Vec<Parked>) {
        if incoming.is_empty() {
            return;
        }
        self.0.append(incoming);
        self.0.sort_unstable_by_key(|m| m.stream.as_raw_fd());
        if incoming.capacity() > 64 {
            *incoming = Vec::new();
        }
    }

    /// The member whose socket is `fd`.
    fn find(&self, fd: RawFd) -> Option<usize> {
        self.0.binary_search_by_key(&fd, |m| m.stream.as_raw_fd()).ok()
    }

    /// Handles the members whose sockets have input: one that hung up is dropped; a WebSocket
    /// client goes back to a task, which reads its frames and answers them, and which waits
    /// for the rest of a frame sent in part until `--ws-frame-timeout` (SPEC 10: so a member
    /// keeps no buffer and no deadline, and a shard no timer per member); what a TCP or SSE
    /// viewer sends is read and dropped (it has nothing to say).
    pub(super) fn answer_input(&mut self, ctx: &Arc<ViewerContext>, shard: &Shard, fds: &[RawFd]) {
        for fd in fds {
            let Some(i) = self.find(*fd) else { continue };
            if self.0[i].format == Format::Ws {
                let m = self.0.remove(i);
                shard.hand_back(ctx, m, Vec::new());
            } else {
                let read = |buf: &mut [u8]| io::Read::read(&mut &self.0[i].stream, buf);
                if drain_input(read, None, INPUT_DRAIN) == Drained::Ended {
                    self.0.remove(i);
                }
            }
        }
    }

    /// Pings the WebSocket and SSE members due for it after `quiet_ticks` keepalive periods
    /// without traffic (the same bytes for all of a format).
    pub(super) fn ping(&mut self, ctx: &Arc<ViewerContext>, shard: &Shard, quiet_ticks: u32) {
        let mut leaving: Vec<Option<Vec<Bytes>>> = Vec::new();
        let removed: Vec<Parked> = self
            .0
            .extract_if(.., |m| {
                let Some(ping) = keepalive(m.format, quiet_ticks) else { return false };
                let rest = match (&m.stream).write(&ping) {
                    Ok(n) if n == ping.len() => return false,
                    Ok(n) => Some(vec![ping.slice(n..)]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => Some(vec![ping]),
                    Err(_) => None,
                };
                leaving.push(rest);
                true
            })
            .collect();
        for (m, rest) in removed.into_iter().zip(leaving) {
            if let Some(rest) = rest {
                shard.hand_back(ctx, m, rest);
            }
        }
    }

    /// Writes `frames` to every member that has not seen them, without waiting. Members that
    /// leave (gone) or cannot take it all (back to a task) are removed; those that took a burst
    /// ending the match stay, for `say_goodbye`.
    pub(super) fn deliver(
        &mut self,
        ctx: &Arc<ViewerContext>,
        shard: &Shard,
        frames: &[Arc<Frame>],
    ) {
        let events: Vec<&EncodedEvent> = frames
            .iter()
            .filter_map(|f| match &**f {
                Frame::Event(e) => Some(e),
                Frame::End(_) => None,
            })
            .collect();
        if events.is_empty() {
            return;
        }
        // Counted for the metrics once per burst: frames per format, and viewers reached per
        // event.
        // By format: (frames, writes).
        let mut written = [(0u64, 0u64); 4];
        let mut reached = [0usize; MAX_BATCH];
        let mut leaving: Vec<Wrote> = Vec::new();
        let removed: Vec<Parked> = self
            .0
            .extract_if(.., |m| {
                let wrote = write_burst(m, &events, &mut written, &mut reached);
                if matches!(wrote, Wrote::All) {
                    return false;
                }
                leaving.push(wrote);
                true
            })
            .collect();
        for (m, wrote) in removed.into_iter().zip(leaving) {
            match wrote {
                Wrote::Part(rest) => shard.hand_back(ctx, m, rest),
                Wrote::Gap => shard.hand_back(ctx, m, Vec::new()),
                Wrote::All | Wrote::Gone => {}
            }
        }
        let metrics = &ctx.ports.metrics;
        for (format, (frames, writes)) in Format::ALL.into_iter().zip(written) {
            if frames > 0 {
                metrics.delivered(format, frames, writes);
            }
        }
        let now = crate::model::now_ms();
        for (ev, count) in events.iter().zip(reached).filter(|(_, c)| *c > 0) {
            let lag = now.saturating_sub(ev.ts).max(0) as f64 / 1000.0;
            metrics.delivery_lag.record_many(lag, count);
        }
    }

    /// Hands every member back to a task (the shard fell a ring behind: each catches up on its
    /// own).
    pub(super) fn hand_all_back(&mut self, ctx: &Arc<ViewerContext>, shard: &Shard) {
        for m in self.0.drain(..) {
            shard.hand_back(ctx, m, Vec::new());
        }
    }

    /// Says goodbye to `n` members in their format (v1 has none) and closes them, without
    /// waiting for anyone: the goodbye is best effort (a socket too full for it is being closed
    /// anyway), and the close lingers elsewhere.
    pub(super) fn say_goodbye(&mut self, ctx: &ViewerContext, n: usize, reason: ByeReason) {
        let mut leaving = self.0.split_off(self.0.len() - n.min(self.0.len()));
        // Every goodbye but `shutdown` is the same for all, encoded once per format (a
        // `shutdown` one is jittered per viewer).
        let mut shared: [Option<Bytes>; 4] = Default::default();
        for m in &mut leaving {
            m.guard.leaving(reason);
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
        close_all(&ctx.tracker, leaving.into_iter().map(|m| (m.stream, m.guard)));
    }
}

/// Writes to `m` the events of a burst it has not seen, in one vectored write without waiting,
/// and counts them (frames and writes per format, viewers reached per event) as delivered: what the socket
/// did not take is written by the member's task.
fn write_burst(
    m: &mut Parked,
    events: &[&EncodedEvent],
    by_format: &mut [(u64, u64); 4],
    reached: &mut [usize; MAX_BATCH],
) -> Wrote {
    let from = events.partition_point(|e| e.seq <= m.last);
    if from == events.len() {
        return Wrote::All;
    }
    if events[from].seq != m.last + 1 {
        return Wrote::Gap;
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
        Err(_) => return Wrote::Gone,
    };
    m.last = events[from + n - 1].seq;
    let (frames, writes) = &mut by_format[m.format as usize];
    *frames += n as u64;
    *writes += 1;
    for r in &mut reached[from..from + n] {
        *r += 1;
    }
    if written == total {
        Wrote::All
    } else {
        Wrote::Part(unwritten(&events[from..from + n], m.format, written))
    }
}

pub(super) fn is_stop(f: &Frame) -> bool {
    matches!(f, Frame::Event(EncodedEvent { kind: EventKind::Stop, .. }))
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

#[cfg(test)]
mod tests {
    use super::*;

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
