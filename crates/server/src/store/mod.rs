//! Where matches and their events live durably. One trait, [`Store`]; `sqlite.rs` is the
//! embedded default, `memory.rs` serves the tests (it is built only for them), and a Redis Streams store (many nodes) comes later.
//!
//! The store does not know the rules of a match: it keeps what `ingest` hands it, checking only
//! that each match's `seq` runs 1, 2, 3 ... without gap or reuse.

use std::future::Future;
use std::pin::Pin;

use async_trait::async_trait;

use crate::model::{Event, MatchId, MatchInfo, Seq};

#[cfg(test)]
pub mod memory;
pub mod sqlite;

/// Why a store operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("match {0} already exists")]
    Exists(MatchId),
    #[error("no match {0}")]
    NotFound(MatchId),
    /// The events handed to `append` do not continue the stored sequence.
    #[error("match {id}: expected seq {expected}, got {got}")]
    SeqConflict { id: MatchId, expected: Seq, got: Seq },
    /// The backend itself failed (disk, database, connection).
    #[error("storage failed: {0}")]
    Backend(String),
}

/// A match as stored: what it was created with and every event since, in `seq` order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMatch {
    pub info: MatchInfo,
    pub events: Vec<Event>,
}

/// An append that has been queued; awaiting it resolves once the events are durable (fsync'd),
/// or with the reason they could not be stored.
pub struct AppendTicket(pub Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send>>);

impl std::future::IntoFuture for AppendTicket {
    type Output = Result<(), StoreError>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        self.0
    }
}

/// Durable storage of matches and their events.
///
/// Ordering contract: for one match, appends become durable in the order in which their
/// `submit_append` calls returned. `ingest` relies on it to publish events in `seq` order while
/// many appends wait for the same group commit.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Creates a match; `Exists` if a live (not cancelled) match has that id. Durable on return.
    async fn create_match(&self, info: &MatchInfo) -> Result<(), StoreError>;

    /// Queues events of one match for appending. They must carry consecutive seqs that follow
    /// the last stored (or queued) one; otherwise the ticket resolves to `SeqConflict` and
    /// nothing of this call is stored. Returning means queued, not durable: await the ticket.
    /// When the queue is full, this waits for room (backpressure on the watcher).
    /// `NotFound` and `SeqConflict` arrive through the ticket, in both stores; the call itself
    /// fails only when the store can take no more writes (`Backend`).
    async fn submit_append(
        &self,
        id: &MatchId,
        events: Vec<Event>,
    ) -> Result<AppendTicket, StoreError>;

    /// Cancels a live match: it disappears from `load_all` and `history`, and its id may be
    /// created anew. Durable on return.
    async fn cancel_match(&self, id: &MatchId) -> Result<(), StoreError>;

    /// Every live match with all its events, to rebuild the node's state on start.
    async fn load_all(&self) -> Result<Vec<StoredMatch>, StoreError>;

    /// Up to `limit` events of a live match with `seq > after`, in `seq` order.
    async fn history(
        &self,
        id: &MatchId,
        after: Seq,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError>;

    /// Waits until everything queued so far is durable (used on shutdown).
    async fn flush(&self) -> Result<(), StoreError>;

    /// Whether the store can take writes now, as far as it knows without I/O: its writer is
    /// running and its last commit did not fail. `/readyz` shows it.
    fn health(&self) -> Result<(), StoreError>;
}

/// Checks that `events` continue a match whose last stored seq is `last` (1, 2, 3 ... without
/// gap or reuse) and returns the new last seq. Shared so both stores refuse exactly alike.
pub(crate) fn check_seqs(id: &MatchId, last: Seq, events: &[Event]) -> Result<Seq, StoreError> {
    let mut expected = last;
    for event in events {
        expected += 1;
        if event.seq != expected {
            return Err(StoreError::SeqConflict { id: id.clone(), expected, got: event.seq });
        }
    }
    Ok(expected)
}
