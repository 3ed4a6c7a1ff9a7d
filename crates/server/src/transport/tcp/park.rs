//! Parked viewers: a viewer at the live edge of its match costs no task, no timer and no reactor
//! registration, only a small entry in a shard. One task per shard (up to `PER_SHARD` viewers)
//! takes each burst from the match's [`Feed`] and writes it to every member without waiting: a
//! member whose socket cannot take the whole burst goes back to a task of its own (which catches
//! up, or ends `too_slow`), so a slow viewer never holds up the others.

use std::collections::HashMap;
use std::io::{self, IoSlice, Read, Write};
use std::net::TcpStream as StdStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rand::Rng;
use tokio::net::TcpStream;

use super::write::MAX_BATCH;
use super::{follow, ViewerContext};
use crate::hub::{EncodedEvent, Feed, FeedItem, Format, Frame, Subscription, TopicKey};
use crate::locks::lock;
use crate::model::{EventKind, MatchId, Seq};
use crate::transport::close::close_all;
use crate::transport::PortGuard;
use crate::wire::{v2, Bye, ByeReason};

/// Viewers one shard task writes to: enough to make a task per viewer pointless, few enough
/// that a burst reaches the last member of a shard within a few milliseconds.
const PER_SHARD: usize = 512;

/// A parked viewer.
struct Member {
    stream: StdStream,
    last: Seq,
    format: Format,
    _counted: PortGuard,
}

struct Shard {
    /// The match incarnation the shard's feed follows; only its viewers may join.
    key: TopicKey,
    /// Viewers handed over since the shard task last looked.
    incoming: Mutex<Vec<Member>>,
    /// Set (under the `incoming` lock) when the shard task ends; nobody may park here then.
    closed: AtomicBool,
    /// Members and incoming, roughly: to choose a shard with room.
    size: AtomicUsize,
}

/// The shards of every match, per transport.
#[derive(Default)]
pub struct Parking {
    shards: Mutex<HashMap<MatchId, Vec<Arc<Shard>>>>,
}

/// A viewer handed back because it could not be parked.
pub struct NotParked(pub Subscription, pub TcpStream, pub PortGuard);

impl Parking {
    /// Hands a viewer at the live edge to a shard; gives it back otherwise.
    // The error is the viewer itself, handed back whole; boxing it would cost an allocation on
    // a path taken while the viewer is busy.
    #[allow(clippy::result_large_err)]
    pub fn park(
        &self,
        ctx: &Arc<ViewerContext>,
        sub: Subscription,
        stream: TcpStream,
        guard: PortGuard,
        format: Format,
    ) -> Result<(), NotParked> {
        if ctx.shutdown.is_cancelled() || !sub.at_head() {
            return Err(NotParked(sub, stream, guard));
        }
        let id = sub.match_id().clone();
        let key = sub.key();
        let Some(shard) = self.shard_for(ctx, &id, &key) else {
            return Err(NotParked(sub, stream, guard));
        };
        let std_stream = match stream.into_std() {
            Ok(s) => s,
            // The socket could not leave the reactor: the viewer is as good as gone.
            Err(_) => return Ok(()),
        };
        let last = sub.last();
        let mut member = Some(Member { stream: std_stream, last, format, _counted: guard });
        let parked = ctx.hub.park(sub, |_| {
            let mut incoming = lock(&shard.incoming);
            if !shard.closed.load(Ordering::Relaxed) {
                if let Some(m) = member.take() {
                    incoming.push(m);
                    shard.size.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        match (parked, member) {
            (Ok(()), None) => Ok(()),
            (Ok(()), Some(m)) => {
                // The shard closed between choosing it and parking: the match is over or the
                // node is stopping. Follow on in a task, which will learn which.
                resume_in_task(ctx, &key, m, Vec::new());
                Ok(())
            }
            (Err(sub), Some(m)) => match TcpStream::from_std(m.stream) {
                Ok(stream) => Err(NotParked(sub, stream, m._counted)),
                Err(_) => Ok(()),
            },
            (Err(_), None) => Ok(()),
        }
    }

    /// A shard of this match with room, created (with its task and feed) when none has.
    fn shard_for(
        &self,
        ctx: &Arc<ViewerContext>,
        id: &MatchId,
        key: &TopicKey,
    ) -> Option<Arc<Shard>> {
        let mut all = lock(&self.shards);
        let list = all.entry(id.clone()).or_default();
        let open = |s: &&Arc<Shard>| !s.closed.load(Ordering::Relaxed) && s.key == *key;
        if let Some(s) =
            list.iter().filter(open).find(|s| s.size.load(Ordering::Relaxed) < PER_SHARD)
        {
            return Some(s.clone());
        }
        list.retain(|s| !s.closed.load(Ordering::Relaxed));
        let Some(feed) = ctx.hub.feed(id).filter(|f| f.key() == *key) else {
            if list.is_empty() {
                all.remove(id);
            }
            return None;
        };
        let shard = Arc::new(Shard {
            key: key.clone(),
            incoming: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
            size: AtomicUsize::new(0),
        });
        list.push(shard.clone());
        ctx.tracker.spawn(run_shard(ctx.clone(), shard.clone(), feed, id.clone()));
        Some(shard)
    }

    fn forget(&self, id: &MatchId, shard: &Arc<Shard>) {
        let mut all = lock(&self.shards);
        if let Some(list) = all.get_mut(id) {
            list.retain(|s| !Arc::ptr_eq(s, shard));
            if list.is_empty() {
                all.remove(id);
            }
        }
    }
}

/// One shard's task: writes each burst of its match to every member, until the match ends or
/// the node stops. Every `idle_probe` it looks for members that hung up: a parked socket is out
/// of the reactor, so a viewer that leaves would otherwise be noticed only at the next event.
async fn run_shard(ctx: Arc<ViewerContext>, shard: Arc<Shard>, mut feed: Feed, id: MatchId) {
    let mut members: Vec<Member> = Vec::new();
    let mut frames: Vec<Arc<Frame>> = Vec::with_capacity(MAX_BATCH);
    let mut probe = tokio::time::interval(ctx.idle_probe.max(Duration::from_millis(10)));
    probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let end = loop {
        let item = tokio::select! {
            biased;
            _ = ctx.shutdown.cancelled() => break Some(ByeReason::Shutdown),
            item = feed.recv() => item,
            _ = probe.tick() => {
                members.append(&mut lock(&shard.incoming));
                members.retain(still_there);
                shard.size.store(members.len(), Ordering::Relaxed);
                continue;
            }
        };
        let mut lagged = false;
        let mut end = None;
        let mut next = Some(item);
        while let Some(item) = next.take() {
            match item {
                FeedItem::Frame(f) => match &*f {
                    Frame::Cancelled => end = Some(ByeReason::Cancelled),
                    Frame::Event(_) => frames.push(f),
                },
                FeedItem::Lagged => lagged = true,
                FeedItem::Closed => end = Some(ByeReason::Cancelled),
            }
            if end.is_none() && !lagged && frames.len() < MAX_BATCH {
                next = feed.try_recv();
            }
        }
        // Taken only now, after the last frame of this burst was received: a viewer parked
        // meanwhile may need any of them (it skips those it has).
        members.append(&mut lock(&shard.incoming));
        if !frames.is_empty() {
            deliver(&ctx, &shard.key, &mut members, &frames);
            if frames.iter().any(|f| is_stop(f)) {
                end = Some(ByeReason::MatchOver);
            }
            frames.clear();
        }
        if lagged {
            // The whole shard fell a ring behind: each member catches up on its own.
            for m in members.drain(..) {
                resume_in_task(&ctx, &shard.key, m, Vec::new());
            }
        }
        shard.size.store(members.len() + lock(&shard.incoming).len(), Ordering::Relaxed);
        if end.is_some() {
            break end;
        }
    };
    let late = {
        let mut incoming = lock(&shard.incoming);
        shard.closed.store(true, Ordering::Relaxed);
        std::mem::take(&mut *incoming)
    };
    members.extend(late);
    ctx.parking.forget(&id, &shard);
    if let Some(reason) = end {
        say_goodbye(&ctx, members, reason);
    }
}

/// Most a probe reads and drops from one viewer: a viewer has nothing to say after its connect
/// line, so this only bounds the work a chatty one costs per probe.
const PROBE_DRAIN: usize = 16 * 1024;

/// Has the viewer not hung up? End of stream or an error means it left, as in the original. What
/// it sent is read and dropped, not peeked at: a peek would see those bytes at every probe and
/// never the hang-up queued behind them.
fn still_there(m: &Member) -> bool {
    let mut sink = [0u8; 4096];
    let mut left = PROBE_DRAIN;
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

fn is_stop(f: &Frame) -> bool {
    matches!(f, Frame::Event(EncodedEvent { kind: EventKind::Stop, .. }))
}

/// Writes `frames` to every member that has not seen them, without waiting. Members that leave
/// (gone) or cannot take it all (back to a task) are removed; those that took a burst ending the
/// match stay, for `say_goodbye`.
fn deliver(
    ctx: &Arc<ViewerContext>,
    key: &TopicKey,
    members: &mut Vec<Member>,
    frames: &[Arc<Frame>],
) {
    let events: Vec<&EncodedEvent> = frames
        .iter()
        .filter_map(|f| match &**f {
            Frame::Event(e) => Some(e),
            Frame::Cancelled => None,
        })
        .collect();
    let Some(newest) = events.last().map(|e| e.seq) else { return };
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
            resume_in_task(ctx, key, m, Vec::new());
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
        if written == total {
            i += 1;
            continue;
        }
        let m = members.swap_remove(i);
        let rest = unwritten(&events[from..], m.format, written);
        resume_in_task(ctx, key, m, rest);
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
fn resume_in_task(ctx: &Arc<ViewerContext>, key: &TopicKey, m: Member, rest: Vec<Bytes>) {
    let sub = ctx.hub.rejoin(key, m.format, m.last);
    back_to_task(ctx, sub, m, rest);
}

fn back_to_task(ctx: &Arc<ViewerContext>, sub: Subscription, m: Member, rest: Vec<Bytes>) {
    let Member { stream, format, _counted: guard, .. } = m;
    let ctx2 = ctx.clone();
    ctx.tracker.spawn(async move {
        let Ok(stream) = TcpStream::from_std(stream) else { return };
        follow(&ctx2, stream, sub, guard, format, rest).await;
    });
}

/// Says goodbye to every member (v2 gets a `bye`; both are closed), without waiting for anyone:
/// the goodbye is best effort (a socket too full for it is being closed anyway), and the close
/// lingers elsewhere.
fn say_goodbye(ctx: &ViewerContext, members: Vec<Member>, reason: ByeReason) {
    let shared = (reason != ByeReason::Shutdown).then(|| v2::bye_frame(&Bye::new(reason)));
    let mut rng = rand::rng();
    for m in &members {
        if m.format != Format::V2 {
            continue;
        }
        let frame = match &shared {
            Some(f) => f.clone(),
            None => {
                let base = ctx.retry_after_ms;
                let mut bye = Bye::new(reason);
                bye.retry_after_ms = Some(rng.random_range(base..=base.saturating_mul(2)));
                // With other nodes, each goodbye names one, chosen like /1/checkin chooses
                // (so a shard's viewers spread over the others rather than all go to one).
                bye.try_addr = ctx.ports.other_node().map(|o| o.addr_string());
                v2::bye_frame(&bye)
            }
        };
        let _ = (&m.stream).write(&frame);
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
        let ev = |seq, text: &'static str| EncodedEvent {
            seq,
            kind: EventKind::Comment,
            v1: Bytes::from_static(b"v1"),
            v2: Bytes::from_static(text.as_bytes()),
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
