//! Parked viewers, of every transport: a viewer at the live edge of its match costs no task, no
//! timer and no buffer, only a small entry in a shard. One task per shard (up to `PER_SHARD`
//! viewers) takes each burst from the match's [`Feed`] and writes it to every member without
//! waiting: a member whose socket cannot take the whole burst goes back to a task of its own
//! (which catches up, or ends `too_slow`), so a slow viewer never holds up the others.
//!
//! A shard watches its members' sockets for input through an epoll set of its own (mio), which
//! its task waits on like any other source: a viewer that hangs up is dropped at once, and a
//! WebSocket client that sends a frame (a ping, a close) goes back to a task that answers it.
//! The kernel keeps that registration; the process keeps nothing per member for it. Every
//! `keepalive` a shard that sent nothing pings its WebSocket and SSE members (one shared buffer).

use std::collections::HashMap;
use std::io::{self, IoSlice, Read, Write};
use std::net::TcpStream as StdStream;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use mio::unix::SourceFd;
use tokio::io::unix::AsyncFd;
use tokio::net::TcpStream;

use super::viewer::{follow, goodbye, keepalive, ViewerContext};
use super::write::MAX_BATCH;
use crate::hub::{EncodedEvent, Feed, FeedItem, Format, Frame, Subscription, TopicKey};
use crate::locks::lock;
use crate::model::{EventKind, MatchId, Seq};
use crate::transport::close::close_all;
use crate::transport::PortGuard;
use crate::wire::ByeReason;

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
    /// The shard's epoll set: members are added when parked, under the `incoming` lock.
    registry: mio::Registry,
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
                    // Registered before it is visible to the shard task, which looks at its
                    // events only after taking `incoming`: no event finds it missing.
                    let fd = m.stream.as_raw_fd();
                    let _ = shard.registry.register(
                        &mut SourceFd(&fd),
                        mio::Token(fd as usize),
                        mio::Interest::READABLE,
                    );
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
                resume_in_task(ctx, &shard, m, Vec::new());
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
        let poll = match mio::Poll::new().and_then(|p| Ok((p.registry().try_clone()?, p))) {
            Ok(p) => p,
            Err(e) => {
                // Out of descriptors, most likely: the viewer stays in its task.
                tracing::warn!(error = %e, "cannot create a parking shard");
                return None;
            }
        };
        let (registry, poll) = poll;
        // SAFETY: `Polled` owns the epoll descriptor, which stays open for as long as the
        // `AsyncFd` holds it (it is closed only when both are dropped together).
        let watched =
            unsafe { AsyncFd::register_with_interest(Polled(poll), tokio::io::Interest::READABLE) };
        let poll = match watched {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch a parking shard");
                return None;
            }
        };
        let shard = Arc::new(Shard {
            key: key.clone(),
            registry,
            incoming: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
            size: AtomicUsize::new(0),
        });
        list.push(shard.clone());
        ctx.tracker.spawn(run_shard(ctx.clone(), shard.clone(), feed, poll, id.clone()));
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

/// A shard's epoll set, as tokio watches it.
struct Polled(mio::Poll);

impl AsRawFd for Polled {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// Readiness events taken from a shard's epoll set at once.
const EVENTS: usize = 256;

/// One shard's task: writes each burst of its match to every member, until the match ends or
/// the node stops; meanwhile answers its members' input (see the file's comment) and pings its
/// WebSocket and SSE members when it has sent them nothing for `keepalive`.
async fn run_shard(
    ctx: Arc<ViewerContext>,
    shard: Arc<Shard>,
    mut feed: Feed,
    mut poll: AsyncFd<Polled>,
    id: MatchId,
) {
    let mut members: Vec<Member> = Vec::new();
    let mut frames: Vec<Arc<Frame>> = Vec::with_capacity(MAX_BATCH);
    let mut events = mio::Events::with_capacity(EVENTS);
    // Reset by every burst: members hear something at least every `keepalive` (SSE) or every
    // other one (WebSocket).
    let ping = tokio::time::sleep(ctx.keepalive);
    tokio::pin!(ping);
    let mut quiet_ticks: u32 = 0;
    // Once the node stops: goodbyes spread over the drain window, a share at every tick, while
    // the members not told yet still get the match.
    let mut drain: Option<tokio::time::Interval> = None;
    let end = loop {
        let item = tokio::select! {
            biased;
            _ = ctx.shutdown.cancelled(), if drain.is_none() => {
                let tick = (ctx.drain_window / 50).max(std::time::Duration::from_millis(20));
                drain = Some(tokio::time::interval(tick));
                continue;
            }
            _ = tick(&mut drain) => {
                members.append(&mut lock(&shard.incoming));
                let ends = ctx.drain_start() + ctx.drain_window;
                let now = tokio::time::Instant::now();
                let due = match ends.checked_duration_since(now) {
                    Some(left) if !left.is_zero() => {
                        let tick = drain.as_ref().map_or(left, |d| d.period());
                        let share = tick.as_secs_f64() / left.as_secs_f64();
                        ((members.len() as f64 * share).ceil() as usize).min(members.len())
                    }
                    _ => members.len(),
                };
                let leaving = members.split_off(members.len() - due);
                say_goodbye(&ctx, leaving, ByeReason::Shutdown);
                shard.size.store(members.len(), Ordering::Relaxed);
                if members.is_empty() {
                    break Some(ByeReason::Shutdown);
                }
                continue;
            }
            item = feed.recv() => item,
            ready = poll.readable_mut() => {
                let Ok(mut ready) = ready else { continue };
                let fds = take_events(ready.get_inner_mut(), &mut events);
                if fds.len() < EVENTS {
                    ready.clear_ready();
                }
                members.append(&mut lock(&shard.incoming));
                answer_input(&ctx, &shard, &mut members, &fds);
                shard.size.store(members.len(), Ordering::Relaxed);
                continue;
            }
            _ = &mut ping => {
                ping.as_mut().reset(tokio::time::Instant::now() + ctx.keepalive);
                quiet_ticks = quiet_ticks.wrapping_add(1);
                members.append(&mut lock(&shard.incoming));
                ping_members(&ctx, &shard, &mut members, quiet_ticks);
                continue;
            }
        };
        ping.as_mut().reset(tokio::time::Instant::now() + ctx.keepalive);
        quiet_ticks = 0;
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
            deliver(&ctx, &shard, &mut members, &frames);
            if frames.iter().any(|f| is_stop(f)) {
                end = Some(ByeReason::MatchOver);
            }
            frames.clear();
        }
        if lagged {
            // The whole shard fell a ring behind: each member catches up on its own.
            for m in members.drain(..) {
                resume_in_task(&ctx, &shard, m, Vec::new());
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

/// The next tick of the drain, once there is one.
async fn tick(drain: &mut Option<tokio::time::Interval>) {
    match drain {
        Some(d) => {
            d.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// The descriptors of the members that have input (or hung up), without waiting.
fn take_events(poll: &mut Polled, events: &mut mio::Events) -> Vec<RawFd> {
    if poll.0.poll(events, Some(std::time::Duration::ZERO)).is_err() {
        return Vec::new();
    }
    events.iter().map(|e| e.token().0 as RawFd).collect()
}

/// Handles the members whose sockets have input: one that hung up is dropped; a WebSocket client
/// goes back to a task, which reads its frames and answers them; what a TCP or SSE viewer sends
/// is read and dropped (it has nothing to say).
fn answer_input(ctx: &Arc<ViewerContext>, shard: &Shard, members: &mut Vec<Member>, fds: &[RawFd]) {
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
fn ping_members(
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

fn is_stop(f: &Frame) -> bool {
    matches!(f, Frame::Event(EncodedEvent { kind: EventKind::Stop, .. }))
}

/// Writes `frames` to every member that has not seen them, without waiting. Members that leave
/// (gone) or cannot take it all (back to a task) are removed; those that took a burst ending the
/// match stay, for `say_goodbye`.
fn deliver(
    ctx: &Arc<ViewerContext>,
    shard: &Shard,
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
    for (format, frames) in
        [Format::V1, Format::V2, Format::Ws, Format::Sse].into_iter().zip(frames_by_format)
    {
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
fn resume_in_task(ctx: &Arc<ViewerContext>, shard: &Shard, m: Member, rest: Vec<Bytes>) {
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
    if format == Format::Ws && !read_input(&stream, &mut input) {
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
fn say_goodbye(ctx: &ViewerContext, mut members: Vec<Member>, reason: ByeReason) {
    // Every goodbye but `shutdown` is the same for all, encoded once per format (a `shutdown`
    // one is jittered per viewer).
    let mut shared: [Option<Bytes>; 4] = Default::default();
    for m in &mut members {
        m._counted.leaving(reason);
        if m.format == Format::V1 {
            continue;
        }
        let frame = if reason == ByeReason::Shutdown {
            goodbye(m.format, &ctx.bye(reason))
        } else {
            let slot = &mut shared[m.format as usize];
            if slot.is_none() {
                *slot = goodbye(m.format, &ctx.bye(reason));
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
