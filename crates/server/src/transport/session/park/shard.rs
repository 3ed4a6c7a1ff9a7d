//! One shard's task: writes each burst of its match to every member, until the match ends or
//! the node stops; meanwhile answers its members' input and pings its WebSocket and SSE members
//! when it has sent them nothing for `keepalive`; once the node stops, says goodbye to a share
//! of its members at every tick of the drain window.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::time::Instant;

use super::members::{is_stop, Members};
use super::Shard;
use crate::hub::{Feed, FeedItem, Frame};
use crate::locks::lock;
use crate::transport::context::ViewerContext;
use crate::transport::session::follow::until;
use crate::transport::write::MAX_BATCH;
use crate::wire::ByeReason;

/// A shard's epoll set, as tokio watches it.
pub(super) struct Polled(pub(super) mio::Poll);

impl AsRawFd for Polled {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// Readiness events taken from a shard's epoll set at once.
const EVENTS: usize = 256;

/// Runs the shard until its match ends or the node has stopped and every member was told;
/// returns the shard (closed) for its parking to forget.
pub(super) async fn run_shard(
    ctx: Arc<ViewerContext>,
    shard: Arc<Shard>,
    mut feed: Feed,
    mut poll: AsyncFd<Polled>,
) -> Arc<Shard> {
    let parked = &ctx.ports.metrics.parked;
    let mut members = Members::default();
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
    let drain_tick = drain_tick(ctx.drain_window);
    // Writes spaced by `--min-write-interval` while events come fast: when the shard last
    // wrote a burst. Frames left in `frames` between turns are held until the interval since.
    let interval = ctx.min_write_interval;
    let mut last_write: Option<Instant> = None;
    let end = loop {
        let held_until = last_write.map(|at| at + interval).filter(|_| !frames.is_empty());
        let item = tokio::select! {
            biased;
            _ = ctx.shutdown.cancelled(), if drain.is_none() => {
                drain = Some(tokio::time::interval(drain_tick));
                continue;
            }
            _ = tick(&mut drain) => {
                // What was held for the interval, and what is waiting in the feed, goes out
                // before any goodbye: a viewer told `shutdown` has every event published
                // before it. Viewers parked meanwhile are taken after the feed is read (they
                // skip what they have), as for any burst.
                // A lag is left to the goodbye: a viewer comes back from its last seq.
                let taken = gather(None, &mut feed, &mut frames);
                members.add(&mut lock(&shard.incoming));
                if !frames.is_empty() {
                    members.deliver(&ctx, &shard, &frames);
                    frames.clear();
                }
                if taken.end.is_some() {
                    break taken.end;
                }
                let ends = ctx.drain_start() + ctx.drain_window;
                let left = ends.saturating_duration_since(tokio::time::Instant::now());
                let due = due_now(members.len(), drain_tick, left);
                members.say_goodbye(&ctx, due, ByeReason::Shutdown);
                shard.recount(members.len(), parked);
                if members.is_empty() {
                    break Some(ByeReason::Shutdown);
                }
                continue;
            }
            _ = until(held_until), if held_until.is_some() => None,
            item = feed.recv() => Some(item),
            ready = poll.readable_mut() => {
                let Ok(mut ready) = ready else { continue };
                let fds = take_events(ready.get_inner_mut(), &mut events);
                if fds.len() < EVENTS {
                    ready.clear_ready();
                }
                members.add(&mut lock(&shard.incoming));
                members.answer_input(&ctx, &shard, &fds);
                shard.recount(members.len(), parked);
                continue;
            }
            _ = &mut ping => {
                ping.as_mut().reset(tokio::time::Instant::now() + ctx.keepalive);
                quiet_ticks = quiet_ticks.wrapping_add(1);
                members.add(&mut lock(&shard.incoming));
                members.ping(&ctx, &shard, quiet_ticks);
                shard.recount(members.len(), parked);
                continue;
            }
        };
        // When the hold ends, what came meanwhile is taken too.
        let Gathered { end, lagged } = gather(item, &mut feed, &mut frames);
        // Events coming fast: the burst waits for the interval since the last write, gathering
        // what comes meanwhile, unless it fills a write, ends the stream (a stop included) or
        // the node stops.
        let now = Instant::now();
        if let Some(at) = last_write.map(|at| at + interval) {
            let last_words = end.is_some() || lagged || ctx.shutdown.is_cancelled();
            if !last_words && frames.len() < MAX_BATCH && at > now {
                continue;
            }
        }
        ping.as_mut().reset(now + ctx.keepalive);
        quiet_ticks = 0;
        // Taken only now, after the last frame of this burst was received: a viewer parked
        // meanwhile may need any of them (it skips those it has).
        members.add(&mut lock(&shard.incoming));
        if !frames.is_empty() {
            members.deliver(&ctx, &shard, &frames);
            last_write = (!interval.is_zero()).then_some(now);
            frames.clear();
        }
        if lagged {
            // The whole shard fell a ring behind: each member catches up on its own.
            shard.lags.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            members.hand_all_back(&ctx, &shard);
        }
        shard.recount(members.len(), parked);
        if end.is_some() {
            break end;
        }
    };
    let mut late = shard.close();
    // Closed: nobody is parked here any more (those left are told goodbye below).
    shard.recount(0, parked);
    members.add(&mut late);
    if let Some(reason) = end {
        let all = members.len();
        members.say_goodbye(&ctx, all, reason);
    }
    shard
}

/// How often a stopping shard says goodbye to a share of its members: 50 times over the drain
/// window, at most every 20 ms.
fn drain_tick(window: Duration) -> Duration {
    (window / 50).max(Duration::from_millis(20))
}

/// How many of `members` to tell goodbye at a drain tick, `left` before the drain window ends:
/// their share of the time left (rounded up, so that the last are told by the end), everyone
/// once the window is over.
fn due_now(members: usize, tick: Duration, left: Duration) -> usize {
    if left.is_zero() {
        return members;
    }
    let share = tick.as_secs_f64() / left.as_secs_f64();
    ((members as f64 * share).ceil() as usize).min(members)
}

/// What [`gather`] found besides events.
struct Gathered {
    /// The stream's end: the match's last event (a stop) was taken, or it was cancelled or
    /// rewound.
    end: Option<ByeReason>,
    /// The shard fell a ring behind its feed.
    lagged: bool,
}

/// Takes `first` and what waits in the feed after it, without waiting, into `frames` until a
/// write's worth, the stream's end or a lag.
fn gather(first: Option<FeedItem>, feed: &mut Feed, frames: &mut Vec<Arc<Frame>>) -> Gathered {
    let mut got = Gathered { end: None, lagged: false };
    let mut next = first.or_else(|| feed.try_recv());
    while let Some(item) = next.take() {
        match item {
            FeedItem::Frame(f) => match &*f {
                Frame::End(reason) => got.end = Some(*reason),
                Frame::Event(_) => {
                    if is_stop(&f) {
                        got.end = Some(ByeReason::MatchOver);
                    }
                    frames.push(f);
                }
            },
            FeedItem::Lagged => got.lagged = true,
            FeedItem::Closed => got.end = Some(ByeReason::Cancelled),
        }
        if got.end.is_none() && !got.lagged && frames.len() < MAX_BATCH {
            next = feed.try_recv();
        }
    }
    got
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
    if poll.0.poll(events, Some(Duration::ZERO)).is_err() {
        return Vec::new();
    }
    events.iter().map(|e| e.token().0 as RawFd).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goodbyes_are_spread_evenly_over_the_window_and_all_are_told_by_its_end() {
        let window = Duration::from_secs(10);
        let tick = drain_tick(window);
        assert_eq!(tick, Duration::from_millis(200));
        // 1,000 members, ticks every 200 ms: 20 at each tick (give or take the rounding up),
        // whatever is left.
        let mut left_members = 1000;
        let mut told = Vec::new();
        for i in 1..=50u32 {
            let left = window.saturating_sub(tick * (i - 1));
            let due = due_now(left_members, tick, left);
            told.push(due);
            left_members -= due;
        }
        assert_eq!(left_members, 0, "everyone told within the window: {told:?}");
        assert!(told.iter().all(|n| (19..=21).contains(n)), "{told:?}");
    }

    #[test]
    fn a_share_is_rounded_up_so_that_few_members_still_leave_before_the_end() {
        let tick = Duration::from_millis(200);
        assert_eq!(due_now(3, tick, Duration::from_secs(10)), 1);
        assert_eq!(due_now(0, tick, Duration::from_secs(10)), 0);
        assert_eq!(due_now(7, tick, Duration::from_millis(100)), 7, "less than a tick left");
    }

    #[test]
    fn once_the_window_is_over_everyone_left_is_told() {
        assert_eq!(due_now(500, Duration::from_millis(20), Duration::ZERO), 500);
    }

    #[test]
    fn a_short_window_still_ticks_at_most_every_20_ms() {
        assert_eq!(drain_tick(Duration::ZERO), Duration::from_millis(20));
        assert_eq!(drain_tick(Duration::from_millis(500)), Duration::from_millis(20));
    }
}
