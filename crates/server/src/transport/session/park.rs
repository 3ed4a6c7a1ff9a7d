//! Parked viewers, of every transport: a viewer at the live edge of its match costs no task, no
//! timer and no buffer, only its [`Parked`] entry in a shard. One task per shard (up to
//! `PER_SHARD` viewers, `shard.rs`) takes each burst from the match's [`crate::hub::Feed`] and writes it to
//! every member without waiting (`members.rs`): a member whose socket cannot take the whole
//! burst is handed back to a task of its own (which catches up, or ends `too_slow`), so a slow
//! viewer never holds up the others.
//!
//! A shard watches its members' sockets for input through an epoll set of its own (mio), which
//! its task waits on like any other source: a viewer that hangs up is dropped at once, and a
//! WebSocket client that sends a frame (a ping, a close) goes back to a task that answers it.
//! The kernel keeps that registration; the process keeps nothing per member for it. Every
//! `keepalive` a shard that sent nothing pings its WebSocket and SSE members (one shared buffer).
//! Shards keep `matchstream_viewers_parked` (their members, and those handed over to them).

use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use mio::unix::SourceFd;
use tokio::io::unix::AsyncFd;

use super::state::{Following, Parked};
use crate::hub::TopicKey;
use crate::locks::lock;
use crate::model::MatchId;
use crate::transport::conn::Conn;
use crate::transport::context::ViewerContext;

mod members;
mod shard;

use shard::{run_shard, Polled};

/// Viewers one shard task writes to: enough to make a task per viewer pointless, few enough
/// that a burst reaches the last member of a shard within a few milliseconds.
const PER_SHARD: usize = 512;

/// Gives a viewer that a shard hands back a task of its own (the session's life goes on there).
pub(super) type ToTask = Arc<dyn Fn(Following) + Send + Sync>;

pub(super) struct Shard {
    /// The match incarnation the shard's feed follows; only its viewers may join.
    key: TopicKey,
    /// The shard's epoll set: members are added when parked, under the `incoming` lock.
    registry: mio::Registry,
    /// Viewers handed over since the shard task last looked.
    incoming: Mutex<Vec<Parked>>,
    /// Set (under the `incoming` lock) when the shard task ends; nobody may park here then.
    closed: AtomicBool,
    /// Members and incoming (as of the shard task's last look): to choose a shard with room,
    /// and the shard's share of `matchstream_viewers_parked`.
    size: AtomicUsize,
    to_task: ToTask,
    /// Members handed back to a task, ever (the node's count, shared by its shards).
    handed_back: Arc<AtomicU64>,
    /// Times a shard fell a ring behind its feed, ever (the node's count).
    lags: Arc<AtomicU64>,
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

    /// Closes the shard (nobody may park here from now on) and takes those handed to it since
    /// its task last looked.
    pub(super) fn close(&self) -> Vec<Parked> {
        let mut incoming = lock(&self.incoming);
        self.closed.store(true, Ordering::Relaxed);
        std::mem::take(&mut *incoming)
    }

    /// Registers `viewer` in the shard's epoll set and hands it to the shard task, unless the
    /// shard has closed (then it is given back). Registered before it is visible to the shard
    /// task, which looks at its events only after taking `incoming`: no event finds it missing.
    fn take(&self, viewer: Parked, parked: &metrics::Gauge) -> Result<(), Parked> {
        let mut incoming = lock(&self.incoming);
        if self.closed.load(Ordering::Relaxed) {
            return Err(viewer);
        }
        let fd = viewer.stream.as_raw_fd();
        let _ = self.registry.register(
            &mut SourceFd(&fd),
            mio::Token(fd as usize),
            mio::Interest::READABLE,
        );
        incoming.push(viewer);
        self.size.fetch_add(1, Ordering::Relaxed);
        parked.increment(1.0);
        Ok(())
    }

    /// Sends a member back to a task of its own: it writes `unwritten` (the end of a burst the
    /// socket could not take), then follows the match from `viewer.last`. It follows the very
    /// incarnation of the match it was parked on: if that was cancelled, it is told so, even
    /// when a match of the same id was created since.
    fn hand_back(&self, ctx: &Arc<ViewerContext>, viewer: Parked, unwritten: Vec<bytes::Bytes>) {
        let sub = ctx.hub.rejoin(&self.key, viewer.format, viewer.last);
        // Out of the shard's epoll set before tokio's reactor takes the socket.
        let _ = self.registry.deregister(&mut SourceFd(&viewer.stream.as_raw_fd()));
        self.handed_back.fetch_add(1, Ordering::Relaxed);
        if let Some(following) = viewer.follow(sub, unwritten) {
            (self.to_task)(following);
        }
    }
}

/// The shards of each match, by match: a shard task removes its own when it ends.
type Shards = Mutex<HashMap<MatchId, Vec<Arc<Shard>>>>;

/// The node's parked viewers.
pub(super) struct Parking {
    shards: Arc<Shards>,
    to_task: ToTask,
    handed_back: Arc<AtomicU64>,
    lags: Arc<AtomicU64>,
}

impl Parking {
    pub(super) fn new(to_task: ToTask) -> Parking {
        Parking {
            shards: Arc::default(),
            to_task,
            handed_back: Arc::default(),
            lags: Arc::default(),
        }
    }

    /// Viewers in every shard (and those being handed to one), as of each shard's last look.
    #[cfg(test)]
    pub(super) fn parked(&self) -> usize {
        let shards = lock(&self.shards);
        shards.values().flatten().map(|s| s.size.load(Ordering::Relaxed)).sum()
    }

    /// Members ever handed back by a shard to a task (a full socket, a frame to answer, a gap,
    /// a shard that fell a ring behind).
    #[cfg(test)]
    pub(super) fn handed_back(&self) -> u64 {
        self.handed_back.load(Ordering::Relaxed)
    }

    /// Times a shard fell a ring behind its feed.
    #[cfg(test)]
    pub(super) fn lags(&self) -> u64 {
        self.lags.load(Ordering::Relaxed)
    }

    /// Hands a viewer at the live edge, owed nothing, to a shard; gives it back otherwise.
    // The error is the viewer itself, handed back whole; boxing it would cost an allocation on
    // a path taken while the viewer is busy.
    #[allow(clippy::result_large_err)]
    pub(super) fn park(
        &self,
        ctx: &Arc<ViewerContext>,
        viewer: Following,
    ) -> Result<(), Following> {
        if ctx.shutdown.is_cancelled() || !viewer.may_park() {
            return Err(viewer);
        }
        let key = viewer.sub.key();
        let Some(shard) = self.shard_for(ctx, viewer.sub.match_id(), &key) else {
            return Err(viewer);
        };
        self.park_in(ctx, &shard, viewer)
    }

    /// Parks `viewer` in `shard`, under its match's lock (so that every event after the
    /// viewer's last reaches the shard's feed); gives it back when it is not caught up after
    /// all, or when the shard closed after it was chosen.
    #[allow(clippy::result_large_err)]
    pub(super) fn park_in(
        &self,
        ctx: &Arc<ViewerContext>,
        shard: &Arc<Shard>,
        viewer: Following,
    ) -> Result<(), Following> {
        let key = viewer.sub.key();
        let Following { stream, sub, format, guard, input, unwritten } = viewer;
        let stream = match stream {
            Conn::Plain(tcp) => match tcp.into_std() {
                Ok(s) => s,
                // The socket could not leave the reactor: the viewer is as good as gone.
                Err(_) => return Ok(()),
            },
            // A shard cannot write to it (conn.rs): it stays in its task.
            tls => return Err(Following { stream: tls, sub, format, guard, input, unwritten }),
        };
        let mut viewer = Some(Parked { stream, last: sub.last(), format, guard });
        // A viewer the shard gave back: it closed between choosing it and parking.
        let mut refused = None;
        let parked = ctx.hub.park(sub, |_| {
            if let Some(v) = viewer.take() {
                refused = shard.take(v, &ctx.ports.metrics.parked).err();
            }
        });
        match (parked, viewer.or(refused)) {
            (_, None) => Ok(()),
            // The match is over or the node is stopping: follow on in a task, which will learn
            // which.
            (Ok(()), Some(v)) => {
                let sub = ctx.hub.rejoin(&key, v.format, v.last);
                v.follow(sub, Vec::new()).map_or(Ok(()), Err)
            }
            // Not caught up after all (an event slipped in), or the match is over.
            (Err(sub), Some(v)) => v.follow(sub, Vec::new()).map_or(Ok(()), Err),
        }
    }

    /// A shard of this match with room, created (with its task and feed) when none has.
    pub(super) fn shard_for(
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
        let (shard, poll) = self.new_shard(key)?;
        list.push(shard.clone());
        let shards = self.shards.clone();
        let task = run_shard(ctx.clone(), shard.clone(), feed, poll);
        let id = id.clone();
        ctx.tracker.spawn(async move {
            let shard = task.await;
            forget(&shards, &id, &shard);
        });
        Some(shard)
    }

    /// A shard and its epoll set, as tokio watches it; `None` (logged) when the node is out of
    /// descriptors, most likely: the viewer then stays in its task.
    fn new_shard(&self, key: &TopicKey) -> Option<(Arc<Shard>, AsyncFd<Polled>)> {
        let poll = match mio::Poll::new().and_then(|p| Ok((p.registry().try_clone()?, p))) {
            Ok(p) => p,
            Err(e) => {
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
            to_task: self.to_task.clone(),
            handed_back: self.handed_back.clone(),
            lags: self.lags.clone(),
        });
        Some((shard, poll))
    }
}

/// Removes a shard whose task ended.
fn forget(shards: &Shards, id: &MatchId, shard: &Arc<Shard>) {
    let mut all = lock(shards);
    if let Some(list) = all.get_mut(id) {
        list.retain(|s| !Arc::ptr_eq(s, shard));
        if list.is_empty() {
            all.remove(id);
        }
    }
}
