//! Where matches and their events live durably: the shared log that decides their order. One
//! trait, [`Store`]; `sqlite.rs` is the embedded default (one node), `redis/` the shared one
//! (many nodes, one Redis or a Redis Cluster), `memory.rs` serves the tests (built only for them).
//!
//! The store does not know the rules of a match. It keeps what `ingest` hands it, and it alone
//! decides the order: an append names the match's incarnation and the end of the log it was
//! validated against ([`Expect`]), and is refused (`SeqConflict`) when the log ends elsewhere —
//! another writer (another node) got there first. The caller then catches up and tries again.

use std::future::Future;
use std::pin::Pin;

use async_trait::async_trait;
use tokio::sync::mpsc;

use crate::model::{Event, Match, MatchId, MatchInfo, Millis, Seq};

#[cfg(test)]
pub(crate) mod memory;
pub(crate) mod redis;
pub(crate) mod saved;
pub(crate) mod sqlite;

/// Which creation of a match id this is: a match cancelled and created again under the same id
/// is a new incarnation, and nothing of the old one (an append, a history page, a viewer still
/// catching up) ever mixes with it. Never reused for an id.
pub(crate) type Incarnation = u64;

/// Why a store operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("match {0} already exists")]
    Exists(MatchId),
    /// No live match with that id (or not that incarnation of it: it was cancelled).
    #[error("no match {0}")]
    NotFound(MatchId),
    /// The log of the match does not end where the append expected: someone else appended
    /// first (or an earlier append of this node failed). Nothing of the append was stored.
    #[error("match {id}: the append expected seq {expected}, the log is at {current}")]
    SeqConflict { id: MatchId, expected: Seq, current: Seq },
    /// Another writer's turn: it was refused a moment ago and goes first (a shared store makes
    /// writers take turns when they collide). Nothing of the append was stored; try again
    /// shortly.
    #[error("match {0}: another node goes first")]
    NotYourTurn(MatchId),
    /// The backend itself failed (disk, database, connection).
    #[error("storage failed: {0}")]
    Backend(String),
}

/// A match as stored: what it was created with, its incarnation and every event since.
#[cfg(test)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredMatch {
    pub info: MatchInfo,
    pub inc: Incarnation,
    pub events: Vec<Event>,
}

/// A match as a node needs it to serve it: its state at some seq (saved by
/// [`Store::save_state`], else the match as created) and the events of the log after that.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Resumed {
    pub inc: Incarnation,
    pub state: Match,
    pub events: Vec<Event>,
}

impl Resumed {
    /// The `ts` of its last event, when the events after the saved state are not empty (a saved
    /// state does not say which event it ends with).
    pub(crate) fn last_ts(&self) -> Option<Millis> {
        self.events.last().map(|e| e.ts)
    }
}

/// Where the log of a live match ends: what a node compares with its own view to catch up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Head {
    pub id: MatchId,
    pub inc: Incarnation,
    pub seq: Seq,
    /// The `ts` of the event at `seq`, where the store keeps it (Redis): with `seq`, it tells
    /// whether the store still holds the very event this node applied there (see
    /// `ingest::Ingest::resync`).
    pub ts: Option<Millis>,
}

/// A page of a match's history, with the incarnation it was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Page {
    pub inc: Incarnation,
    pub events: Vec<Event>,
}

/// The end of the log an append was validated against. `seq` alone is enough when the caller
/// read those events from the log (a log never changes what it holds); `tag` names an append
/// of the caller's own that is not known to be durable yet, so that an append built on one that
/// failed is refused even when someone else's events have since reached the same seq.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Expect {
    pub seq: Seq,
    pub tag: Option<u64>,
    /// The `ts` of the event at `seq` as the caller applied it, checked where the store keeps
    /// it (Redis): a store that came back holding other events under the same seqs (a rewind)
    /// refuses the append instead of letting it build on events the caller never saw.
    pub ts: Option<Millis>,
}

/// Events to append to one incarnation of a match, if its log ends as expected.
#[derive(Debug, Clone)]
pub(crate) struct Append {
    pub inc: Incarnation,
    pub expect: Expect,
    /// Names this append (random): a later append of the same node may expect it.
    pub tag: u64,
    /// Consecutive seqs following `expect.seq`.
    pub events: Vec<Event>,
}

/// What happened in the log, as another node learns it. Entries may arrive late, twice or not
/// at all (a lost connection): the follower applies only what continues its view, reads the
/// store for a gap, and compares everything with [`Store::heads`] on `Resync`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LogEntry {
    Created {
        id: MatchId,
        inc: Incarnation,
    },
    Appended {
        id: MatchId,
        inc: Incarnation,
        events: Vec<Event>,
    },
    Cancelled {
        id: MatchId,
        inc: Incarnation,
    },
    /// The log of the match reaches `seq`: read what is missing from the store.
    Behind {
        id: MatchId,
        inc: Incarnation,
        seq: Seq,
    },
    /// Entries may have been missed: compare every match with the store.
    Resync,
}

/// An append that has been queued; awaiting it resolves once the events are durable,
/// or with the reason they could not be stored.
pub(crate) struct AppendTicket(pub Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send>>);

impl std::future::IntoFuture for AppendTicket {
    type Output = Result<(), StoreError>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        self.0
    }
}

/// Durable storage of matches and their events.
#[async_trait]
pub(crate) trait Store: Send + Sync + 'static {
    /// Creates a match; `Exists` if a live (not cancelled) match has that id. Durable on return.
    async fn create_match(&self, info: &MatchInfo) -> Result<Incarnation, StoreError>;

    /// Queues an append. It is stored only if the match's live incarnation is `append.inc`
    /// (else `NotFound`) and its log ends as `append.expect` says (else `SeqConflict`); all of it
    /// or nothing. Returning means queued, not durable: await the ticket. Appends queued by one
    /// caller are decided in the order they were queued. Refusals arrive through the ticket;
    /// the call itself fails only when the store can take no more writes (`Backend`).
    async fn submit_append(&self, id: &MatchId, append: Append)
        -> Result<AppendTicket, StoreError>;

    /// Cancels incarnation `inc` of a match: it disappears from `load_all`, `heads` and
    /// `history`, and its id may be created anew. `NotFound` if that incarnation is not live.
    /// Durable on return.
    async fn cancel_match(&self, id: &MatchId, inc: Incarnation) -> Result<(), StoreError>;

    /// Every live match with all its events, ended or not (what the store tests compare).
    #[cfg(test)]
    async fn load_all(&self) -> Result<Vec<StoredMatch>, StoreError>;

    /// One live match with all its events.
    #[cfg(test)]
    async fn load(&self, id: &MatchId) -> Result<Option<StoredMatch>, StoreError>;

    /// Every live match that has not ended (see [`Store::save_state`]), from its saved state:
    /// what a node serves on start. A season of past matches is not read.
    async fn load_live(&self) -> Result<Vec<Resumed>, StoreError>;

    /// One live match (ended or not) from its saved state: an ended match read back on demand,
    /// or a match created elsewhere.
    async fn resume(&self, id: &MatchId) -> Result<Option<Resumed>, StoreError>;

    /// The ids of the ended matches (live: not cancelled), which `load_live` leaves out.
    async fn ended_ids(&self) -> Result<Vec<MatchId>, StoreError>;

    /// Queues saving the state of incarnation `inc` at `state.seq`, whose events are durable
    /// (kept only if it is further than the one saved). An ended state also marks the match
    /// ended: it leaves `load_live` and `heads`, and is listed by `ended_ids`. Idempotent: any
    /// node that sees the match end (or finds it ended but not marked) may call it. Never
    /// waits: a saved state is a cache of the log, so one that is not written (a full queue, a
    /// store down) is logged and costs a longer replay later; a match ended but not marked is
    /// marked by whoever loads it next. `flush` waits for what was queued.
    fn save_state(&self, inc: Incarnation, state: &Match);

    /// Where every live match's log ends, except ended matches' (they do not move any more).
    async fn heads(&self) -> Result<Vec<Head>, StoreError>;

    /// Up to `limit` events of a live match with `seq > after`, in `seq` order.
    async fn history(&self, id: &MatchId, after: Seq, limit: usize) -> Result<Page, StoreError>;

    /// Waits until everything queued so far is durable (used on shutdown).
    async fn flush(&self) -> Result<(), StoreError>;

    /// Whether the store can take writes now, as far as it knows without waiting. `/readyz`
    /// shows it.
    fn health(&self) -> Result<(), StoreError>;

    /// What other writers (other nodes) put in the log, from now on. `None` for a store that
    /// only this node writes. Called once, by the node.
    fn follow(&self) -> Option<mpsc::Receiver<LogEntry>> {
        None
    }

    /// Gives back the turn this node may have taken on `id` when one of its appends conflicted
    /// ([`StoreError::NotYourTurn`]), because it has nothing to append after all (its events
    /// were refused once it learned what it missed). Best effort: a turn also expires by
    /// itself. Only a store shared by many writers has turns.
    async fn give_turn_back(&self, _id: &MatchId) {}
}

/// Checks that `events` continue a log whose last seq is `last` (1, 2, 3 ... without gap or
/// reuse) and returns the new last seq. Shared so every store refuses exactly alike.
pub(crate) fn check_seqs(id: &MatchId, last: Seq, events: &[Event]) -> Result<Seq, StoreError> {
    let mut expected = last;
    for event in events {
        expected += 1;
        if event.seq != expected {
            return Err(StoreError::SeqConflict {
                id: id.clone(),
                expected: event.seq.saturating_sub(1),
                current: last,
            });
        }
    }
    Ok(expected)
}

/// Checks an append against the end of the log (`last` and the tag of the append that wrote
/// it, if known) and returns the new last seq.
pub(crate) fn check_append(
    id: &MatchId,
    last: Seq,
    last_tag: Option<u64>,
    append: &Append,
) -> Result<Seq, StoreError> {
    let tag_ok = append.expect.tag.is_none() || append.expect.tag == last_tag;
    if append.expect.seq != last || !tag_ok {
        return Err(StoreError::SeqConflict {
            id: id.clone(),
            expected: append.expect.seq,
            current: last,
        });
    }
    check_seqs(id, last, &append.events)
}
