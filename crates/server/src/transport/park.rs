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
//! Shards keep `matchstream_viewers_parked` (their members, and those handed over to them).

use std::collections::HashMap;
use std::net::TcpStream as StdStream;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use mio::unix::SourceFd;
use tokio::io::unix::AsyncFd;
use tokio::net::TcpStream;

use super::viewer::ViewerContext;
use super::write::MAX_BATCH;
use crate::hub::{Feed, FeedItem, Format, Frame, Subscription, TopicKey};
use crate::locks::lock;
use crate::model::{MatchId, Seq};
use crate::transport::PortGuard;
use crate::wire::ByeReason;

mod members;

use members::{answer_input, deliver, is_stop, ping_members, resume_in_task, say_goodbye};

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
    /// Members and incoming (as of the shard task's last look): to choose a shard with room,
    /// and the shard's share of `matchstream_viewers_parked`.
    size: AtomicUsize,
}

impl Shard {
    /// Sets the shard's size to `members` and those handed over since (under the `incoming`
    /// lock, which a viewer is counted under when parked, so that no change is lost), and moves
    /// the node's gauge by the difference.
    fn recount(&self, members: usize, parked: &metrics::Gauge) {
        let incoming = lock(&self.incoming);
        let size = if self.closed.load(Ordering::Relaxed) { 0 } else { members + incoming.len() };
        let was = self.size.swap(size, Ordering::Relaxed);
        parked.increment(size as f64 - was as f64);
    }
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
                    ctx.ports.metrics.parked.increment(1.0);
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
    let parked = &ctx.ports.metrics.parked;
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
    let drain_tick = (ctx.drain_window / 50).max(std::time::Duration::from_millis(20));
    let end = loop {
        let item = tokio::select! {
            biased;
            _ = ctx.shutdown.cancelled(), if drain.is_none() => {
                drain = Some(tokio::time::interval(drain_tick));
                continue;
            }
            _ = tick(&mut drain) => {
                members.append(&mut lock(&shard.incoming));
                let ends = ctx.drain_start() + ctx.drain_window;
                let now = tokio::time::Instant::now();
                let due = match ends.checked_duration_since(now) {
                    Some(left) if !left.is_zero() => {
                        let share = drain_tick.as_secs_f64() / left.as_secs_f64();
                        ((members.len() as f64 * share).ceil() as usize).min(members.len())
                    }
                    _ => members.len(),
                };
                let leaving = members.split_off(members.len() - due);
                say_goodbye(&ctx, leaving, ByeReason::Shutdown);
                shard.recount(members.len(), parked);
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
                shard.recount(members.len(), parked);
                continue;
            }
            _ = &mut ping => {
                ping.as_mut().reset(tokio::time::Instant::now() + ctx.keepalive);
                quiet_ticks = quiet_ticks.wrapping_add(1);
                members.append(&mut lock(&shard.incoming));
                ping_members(&ctx, &shard, &mut members, quiet_ticks);
                shard.recount(members.len(), parked);
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
                    Frame::End(reason) => end = Some(*reason),
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
        shard.recount(members.len(), parked);
        if end.is_some() {
            break end;
        }
    };
    let late = {
        let mut incoming = lock(&shard.incoming);
        shard.closed.store(true, Ordering::Relaxed);
        std::mem::take(&mut *incoming)
    };
    // Closed: nobody is parked here any more (those left are told goodbye below).
    shard.recount(0, parked);
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
