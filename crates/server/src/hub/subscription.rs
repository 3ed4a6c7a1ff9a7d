//! One viewer's place in one match's stream ([`Subscription`]): what it has been handed, catching
//! up from the hub's encoded history or the store, then following the ring; what it gets next
//! ([`Next`]). The hub that feeds it and the shared [`super::Feed`] of parked viewers live beside.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::broadcast::{self, error::RecvError, error::TryRecvError};

use super::{EncodedEvent, Format, Frame, Hub, Topic, TopicKey};
use crate::locks::lock;
use crate::model::{EventKind, MatchId, Seq};
use crate::store::StoreError;
use crate::wire::ByeReason;

/// A viewer whose catch-up read fails tries again after this, doubled up to 16 times it, for
/// this many tries (about half a minute), then is told to come back (`bye shutdown`).
const CATCH_UP_RETRY: std::time::Duration = std::time::Duration::from_millis(100);
const CATCH_UP_TRIES: u32 = 20;

/// One viewer's place in one match's stream: which `seq` it has been handed last, and a
/// receiver on the match's ring. Idle, it holds no buffer.
pub(crate) struct Subscription {
    pub(super) hub: Arc<Hub>,
    pub(super) topic: Arc<Topic>,
    pub(super) rx: broadcast::Receiver<Arc<Frame>>,
    pub(super) format: Format,
    /// The last event handed out (or the `from` the viewer asked to resume after).
    pub(super) last: Seq,
    /// Catch up from history until `last` reaches this.
    pub(super) target: Seq,
    /// Bytes ready to hand out before anything else (the snapshot, a history chunk).
    pub(super) pending: VecDeque<Bytes>,
    /// A frame taken from the ring that must wait for the history before it: kept here so that
    /// `next` stays cancel-safe.
    pub(super) held: Option<Arc<Frame>>,
    /// Set once the stream is over; `next` then returns it.
    pub(super) ended: Option<ByeReason>,
    /// Catch-up reads that failed in a row.
    pub(super) failed_reads: u32,
}

/// What a viewer gets next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Next {
    /// Bytes to write, already in the viewer's format.
    Data(Bytes),
    /// The stream is over: say goodbye for this reason and close.
    End(ByeReason),
}

impl Subscription {
    /// The match this subscription follows.
    pub(crate) fn match_id(&self) -> &MatchId {
        &self.topic.id
    }

    /// The incarnation of the match this subscription follows.
    pub(crate) fn key(&self) -> TopicKey {
        TopicKey(self.topic.clone())
    }

    /// Has nothing to hand out but live events still to come.
    pub(crate) fn is_caught_up(&self) -> bool {
        self.pending.is_empty()
            && self.held.is_none()
            && self.ended.is_none()
            && self.last >= self.target
    }

    /// The last event handed out (or the `from` it resumed after).
    pub(crate) fn last(&self) -> Seq {
        self.last
    }

    /// Is the match at its live edge from this viewer's point of view (cheap: one lock)?
    /// Its stream has ended (the match is over, or was cancelled): nothing more will come.
    pub(crate) fn has_ended(&self) -> bool {
        self.ended.is_some()
    }

    pub(crate) fn at_head(&self) -> bool {
        self.is_caught_up() && self.last == lock(&self.topic.current).snapshot.state.seq
    }

    /// The next bytes for this viewer, or the end of its stream. Cancel-safe: dropping the
    /// future loses nothing.
    pub(crate) async fn next(&mut self) -> Next {
        loop {
            if let Some(b) = self.pending.pop_front() {
                return Next::Data(b);
            }
            if let Some(reason) = self.ended {
                return Next::End(reason);
            }
            if self.last < self.target {
                match self.catch_up().await {
                    Ok(()) => self.failed_reads = 0,
                    Err(StoreError::NotFound(_)) => return Next::End(ByeReason::Cancelled),
                    Err(e) => {
                        // The store is down (Redis restarting, a disk): the viewer waits for
                        // it, as viewers at the live edge do, and after long enough is sent
                        // to try again (another node, or this one later).
                        self.failed_reads += 1;
                        if self.failed_reads > CATCH_UP_TRIES {
                            tracing::warn!(match_id = %self.topic.id, error = %e, "catch-up failed");
                            return Next::End(ByeReason::Shutdown);
                        }
                        let pause = CATCH_UP_RETRY.saturating_mul(1 << self.failed_reads.min(4));
                        tokio::time::sleep(pause).await;
                    }
                }
                continue;
            }
            let frame = match self.held.take() {
                Some(f) => f,
                None => match self.rx.recv().await {
                    Ok(f) => f,
                    Err(RecvError::Lagged(_)) => {
                        if let Some(end) = self.check_lag() {
                            return end;
                        }
                        continue;
                    }
                    Err(RecvError::Closed) => return Next::End(ByeReason::Cancelled),
                },
            };
            if let Some(next) = self.accept(frame) {
                return next;
            }
        }
    }

    /// Whatever is ready right now without waiting: lets a transport gather a burst into one
    /// write. `None` when the next item would need waiting or a history read.
    pub(crate) fn try_next(&mut self) -> Option<Next> {
        loop {
            if let Some(b) = self.pending.pop_front() {
                return Some(Next::Data(b));
            }
            if self.ended.is_some() || self.last < self.target || self.held.is_some() {
                return None;
            }
            let frame = match self.rx.try_recv() {
                Ok(f) => f,
                Err(TryRecvError::Lagged(_)) => match self.check_lag() {
                    Some(end) => return Some(end),
                    None => continue,
                },
                Err(TryRecvError::Closed) => return Some(Next::End(ByeReason::Cancelled)),
                Err(TryRecvError::Empty) => return None,
            };
            if let Some(next) = self.accept(frame) {
                return Some(next);
            }
        }
    }

    /// Handles one frame from the ring: skips what was already handed out, holds a frame back
    /// when history must fill a gap before it.
    fn accept(&mut self, frame: Arc<Frame>) -> Option<Next> {
        let ev = match &*frame {
            Frame::End(reason) => return Some(Next::End(*reason)),
            Frame::Event(ev) => ev,
        };
        if ev.seq <= self.last {
            return None;
        }
        if ev.seq > self.last + 1 {
            self.target = ev.seq - 1;
            self.held = Some(frame);
            return None;
        }
        self.last = ev.seq;
        if ev.kind == EventKind::Stop {
            self.ended = Some(ByeReason::MatchOver);
        }
        Some(Next::Data(ev.bytes(self.format).clone()))
    }

    /// After the ring overran this viewer: how far behind is it now?
    fn check_lag(&mut self) -> Option<Next> {
        let head = lock(&self.topic.current).snapshot.state.seq;
        (head.saturating_sub(self.last) > self.hub.max_lag_events)
            .then_some(Next::End(ByeReason::TooSlow))
    }

    /// Brings the next events between `last` and `target` into `pending`: from the recent
    /// events kept in memory when they reach back far enough, else from a shared history read.
    async fn catch_up(&mut self) -> Result<(), StoreError> {
        if self.catch_up_from_memory() {
            return Ok(());
        }
        let chunk = self.hub.read_chunk(&self.topic, self.last).await?;
        if chunk.inc != self.topic.inc {
            // The id was cancelled and created anew: this incarnation is gone.
            return Err(StoreError::NotFound(self.topic.id.clone()));
        }
        let start = chunk.events.partition_point(|e| e.seq <= self.last);
        if chunk.events.get(start).is_none_or(|e| e.seq != self.last + 1) {
            return Err(StoreError::Backend(format!(
                "history of {} has no event after {}",
                self.topic.id, self.last
            )));
        }
        self.take_events(chunk.events[start..].iter());
        Ok(())
    }

    /// Catch-up from the recent events, if they hold the next one. True if it did.
    fn catch_up_from_memory(&mut self) -> bool {
        let topic = self.topic.clone();
        let current = lock(&topic.current);
        let first = current.recent.iter().find_map(|f| match &**f {
            Frame::Event(ev) => Some(ev.seq),
            Frame::End(_) => None,
        });
        if first.is_none_or(|first| first > self.last + 1) {
            return false;
        }
        let before = self.last;
        self.take_events(current.recent.iter().filter_map(|f| match &**f {
            Frame::Event(ev) => Some(ev),
            Frame::End(_) => None,
        }));
        self.last != before
    }

    /// Hands out (into `pending`) the events after `last` up to `target`, in order.
    fn take_events<'a>(&mut self, events: impl Iterator<Item = &'a EncodedEvent>) {
        for ev in events {
            if ev.seq <= self.last {
                continue;
            }
            if ev.seq > self.target || ev.seq != self.last + 1 {
                break;
            }
            self.pending.push_back(ev.bytes(self.format).clone());
            self.last = ev.seq;
            if ev.kind == EventKind::Stop {
                self.ended = Some(ByeReason::MatchOver);
                self.target = self.last;
                self.held = None;
                break;
            }
        }
    }
}
