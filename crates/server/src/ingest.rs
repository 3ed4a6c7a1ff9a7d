//! The publishing path: validate an event against its match (`state`), append it to the store
//! (which makes it durable and fixes its `seq`), then hand it to the hub. Owns each match's
//! authoritative state and the order of its events; knows nothing of HTTP or sockets.
//!
//! One match's events are validated and queued for the store one request at a time (a per-match
//! lock), but the lock is released before the fsync: many requests then wait for the same group
//! commit, and once an append is durable the events before it are too (the store's ordering
//! contract), so whichever request wakes first publishes every durable event, in order.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};

use crate::hub::{Hub, TopicHandle};
use crate::locks::{lock, read, write};
use crate::model::{Event, EventInput, Match, MatchId, MatchInfo, Millis, Seq};
use crate::state::Rejection;
use crate::store::{Store, StoreError};

/// How often a failed `?after=` check waits for the match's pending commits, and how long each
/// time, before answering that the store is busy.
const SETTLE_TRIES: usize = 100;
const SETTLE_PAUSE: std::time::Duration = std::time::Duration::from_millis(2);

/// Why a watcher's request was refused.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("no match {0}")]
    NotFound(MatchId),
    #[error("match {0} already exists")]
    Exists(MatchId),
    /// An event of the request cannot apply; nothing of the request was applied.
    #[error("event {index} ({kind}): {rejection}")]
    Rejected { index: usize, kind: &'static str, rejection: Rejection },
    /// The request's precondition (`?after=`) does not hold: the match is elsewhere.
    #[error(
        "match {id} is at seq {current}, not {after}: nothing was applied (the request asked \
         for after={after}; read the match or its history to see what is there)"
    )]
    NotAt { id: MatchId, after: Seq, current: Seq },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// An event as acknowledged to the watcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted {
    pub seq: Seq,
    pub ts: Millis,
}

/// Events accepted and queued for the store, waiting to be published once durable.
struct Pending {
    events: Vec<Event>,
    after: Arc<Match>,
}

struct Slot {
    /// The match with every accepted event applied (some may still await their fsync).
    /// A tokio mutex because it is held while the store queues the append (which may wait for
    /// room in its queue): that wait is what keeps one match's appends in `seq` order.
    state: tokio::sync::Mutex<Arc<Match>>,
    /// Accepted events in `seq` order, not yet published.
    pending: Mutex<VecDeque<Pending>>,
    /// Where this match's events go: this very match's topic, even if the id is cancelled and
    /// created anew meanwhile.
    topic: TopicHandle,
}

/// Every match this node publishes.
pub struct Ingest {
    store: Arc<dyn Store>,
    hub: Arc<Hub>,
    slots: RwLock<HashMap<MatchId, Arc<Slot>>>,
}

impl Ingest {
    /// Rebuilds every live match from the store and makes it available on the hub.
    pub async fn restore(store: Arc<dyn Store>, hub: Arc<Hub>) -> Result<Ingest, StoreError> {
        let ingest = Ingest { store: store.clone(), hub, slots: RwLock::new(HashMap::new()) };
        for stored in store.load_all().await? {
            let mut m = Match::new(stored.info);
            for ev in &stored.events {
                m.apply_stored(ev).map_err(|r| {
                    StoreError::Backend(format!(
                        "stored event {} of {} no longer applies: {r}",
                        ev.seq,
                        m.id()
                    ))
                })?;
            }
            ingest.insert(m);
        }
        Ok(ingest)
    }

    /// How many matches were restored or created.
    pub fn len(&self) -> usize {
        read(&self.slots).len()
    }

    /// Creates a match (durably) and opens it to viewers.
    pub async fn create(&self, info: MatchInfo) -> Result<MatchId, IngestError> {
        let id = info.id.clone();
        self.store.create_match(&info).await.map_err(|e| match e {
            StoreError::Exists(id) => IngestError::Exists(id),
            e => IngestError::Store(e),
        })?;
        self.insert(Match::new(info));
        tracing::info!(match_id = %id, "match created");
        Ok(id)
    }

    /// Applies, stores and publishes a watcher's events, all or none. Returns once they are
    /// durable and on their way to viewers.
    /// With `after`, the events apply only if the match stands at that seq: a watcher that
    /// retries a request whose answer it never got cannot record its events twice.
    pub async fn publish(
        &self,
        id: &MatchId,
        inputs: &[EventInput],
        after: Option<Seq>,
    ) -> Result<Vec<Accepted>, IngestError> {
        let slot = self.slot(id)?;
        let (ticket, last_seq, accepted) = {
            let mut state = slot.state.lock().await;
            if let Some(after) = after.filter(|a| *a != state.seq) {
                state = self.settled(&slot, state).await?;
                if after != state.seq {
                    return Err(IngestError::NotAt { id: id.clone(), after, current: state.seq });
                }
            }
            // Applied to a copy: a request is all or none.
            let mut next = Match::clone(&state);
            let mut events = Vec::with_capacity(inputs.len());
            for (index, input) in inputs.iter().enumerate() {
                let ts = now_ms();
                let data = next.apply(input.kind, &input.data, ts).map_err(|rejection| {
                    IngestError::Rejected { index, kind: input.kind.as_str(), rejection }
                })?;
                events.push(Event { seq: next.seq, ts, kind: input.kind, data });
            }
            let accepted: Vec<Accepted> =
                events.iter().map(|e| Accepted { seq: e.seq, ts: e.ts }).collect();
            let ticket = self.store.submit_append(id, events.clone()).await?;
            let after = Arc::new(next);
            lock(&slot.pending).push_back(Pending { events, after: after.clone() });
            *state = after;
            (ticket, state.seq, accepted)
        };
        if let Err(e) = ticket.await {
            // The store logged the cause (once per failing spell); this is per request.
            tracing::debug!(match_id = %id, error = %e, "append failed; reloading the match");
            self.resync(id, &slot).await;
            return Err(e.into());
        }
        self.publish_durable(&slot, last_seq);
        tracing::trace!(match_id = %id, seq = last_seq, "published");
        Ok(accepted)
    }

    /// The match once none of its accepted events awaits its commit any more, so that a failed
    /// `?after=` precondition answers with a seq that is durable: a watcher takes "the match is
    /// one past my `after`" to mean its lost request was applied, which must not be undone by a
    /// commit that then fails. Waits for the store to flush and the waiting requests to publish;
    /// a store still busy after [`SETTLE_TRIES`] is answered as unavailable (the watcher retries).
    async fn settled<'a>(
        &self,
        slot: &'a Slot,
        mut state: tokio::sync::MutexGuard<'a, Arc<Match>>,
    ) -> Result<tokio::sync::MutexGuard<'a, Arc<Match>>, IngestError> {
        for _ in 0..SETTLE_TRIES {
            if lock(&slot.pending).is_empty() {
                return Ok(state);
            }
            drop(state);
            self.store.flush().await?;
            // The requests whose commits the flush waited for publish (or resync) on waking.
            tokio::time::sleep(SETTLE_PAUSE).await;
            state = slot.state.lock().await;
        }
        Err(IngestError::Store(StoreError::Backend(
            "the match's earlier events are still being stored".into(),
        )))
    }

    /// Cancels a match: gone from the store and the hub; its viewers get `cancelled`.
    pub async fn cancel(&self, id: &MatchId) -> Result<(), IngestError> {
        let slot = self.slot(id)?;
        // Held so that no request queues events between the cancel and the removal.
        let _state = slot.state.lock().await;
        self.store.cancel_match(id).await.map_err(|e| match e {
            StoreError::NotFound(id) => IngestError::NotFound(id),
            e => IngestError::Store(e),
        })?;
        {
            let mut slots = write(&self.slots);
            if slots.get(id).is_some_and(|s| Arc::ptr_eq(s, &slot)) {
                slots.remove(id);
            }
        }
        self.hub.cancel(&slot.topic);
        tracing::info!(match_id = %id, "match cancelled");
        Ok(())
    }

    fn insert(&self, m: Match) {
        let m = Arc::new(m);
        let topic = self.hub.add(m.clone());
        let id = m.id().clone();
        let slot =
            Slot { state: tokio::sync::Mutex::new(m), pending: Mutex::new(VecDeque::new()), topic };
        write(&self.slots).insert(id, Arc::new(slot));
    }

    fn slot(&self, id: &MatchId) -> Result<Arc<Slot>, IngestError> {
        read(&self.slots).get(id).cloned().ok_or_else(|| IngestError::NotFound(id.clone()))
    }

    /// Publishes, in order, every pending batch up to `durable` (everything up to it is on disk).
    fn publish_durable(&self, slot: &Slot, durable: Seq) {
        // Held while publishing so that two requests finishing together cannot interleave.
        let mut pending = lock(&slot.pending);
        while pending.front().is_some_and(|p| p.after.seq <= durable) {
            if let Some(p) = pending.pop_front() {
                self.hub.publish(&slot.topic, &p.events, p.after);
            }
        }
    }

    /// After a failed append the in-memory state ran ahead of the store: rebuild it from what
    /// the store holds, and drop what was never stored.
    async fn resync(&self, id: &MatchId, slot: &Slot) {
        let mut state = slot.state.lock().await;
        let mut m = Match::new(state.info.clone());
        let mut after = 0;
        loop {
            match self.store.history(id, after, 1024).await {
                Ok(events) if events.is_empty() => break,
                Ok(events) => {
                    for ev in &events {
                        if let Err(r) = m.apply_stored(ev) {
                            tracing::error!(match_id = %id, seq = ev.seq, error = %r, "stored event does not apply");
                        }
                        after = ev.seq;
                    }
                }
                Err(e) => {
                    tracing::error!(match_id = %id, error = %e, "cannot reload the match");
                    return;
                }
            }
        }
        self.publish_durable(slot, m.seq);
        lock(&slot.pending).retain(|p| p.after.seq <= m.seq);
        *state = Arc::new(m);
    }
}

/// The server clock, in Unix milliseconds.
pub fn now_ms() -> Millis {
    chrono::Utc::now().timestamp_millis()
}
