//! Which matches this node holds in memory (SPEC 10): inserting one (created here, read from
//! the store, or a newer incarnation replacing an older), finding one that is not in memory
//! (created on another node, or ended and evicted), and evicting ended matches `--keep-ended`
//! after their end once nobody follows them. The publishing path that uses them is `ingest.rs`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::watch;

use super::{apply_logged, Ingest, IngestError, LogView, Slot, Tip};
use crate::locks::{lock, read, write};
use crate::model::{Match, MatchId, Millis};
use crate::store::{Incarnation, Resumed, StoreError};

impl Ingest {
    /// How many matches this node holds in memory (ended ones that left it are not counted).
    pub(crate) fn len(&self) -> usize {
        read(&self.slots).len()
    }

    /// Takes out of memory the ended matches whose `--keep-ended` has passed and that nobody
    /// follows any more (one still followed waits until its viewers are gone). They stay
    /// listed and are read back on demand ([`Ingest::revive`]). Returns how many left.
    pub(crate) fn evict_ended(&self) -> usize {
        let now = Instant::now();
        let mut due = Vec::new();
        {
            let mut ending = lock(&self.ending);
            while ending.front().is_some_and(|(at, _)| *at + self.keep_ended <= now) {
                if let Some((_, slot)) = ending.pop_front() {
                    due.push(slot);
                }
            }
        }
        let mut evicted = 0;
        for slot in due {
            let Some(slot) = slot.upgrade() else { continue };
            if self.hub.followers(&slot.topic) > 0 {
                // Viewers still on it: looked at again after another period.
                lock(&self.ending).push_back((now, Arc::downgrade(&slot)));
                continue;
            }
            let id = slot.topic.id().clone();
            {
                let mut slots = write(&self.slots);
                if !slots.get(&id).is_some_and(|s| Arc::ptr_eq(s, &slot)) {
                    continue;
                }
                // Known as evicted before it leaves the slots: whoever misses the slot from
                // now on finds it among the evicted and reads it back (never a wrong 404).
                self.hub.evict(&slot.topic);
                slots.remove(&id);
            }
            evicted += 1;
        }
        if evicted > 0 {
            tracing::debug!(evicted, "ended matches left memory");
        }
        evicted
    }

    /// Brings an ended match that left memory back from the store (its saved state), so that
    /// its page, history and viewers are served as before. True if the match is now served;
    /// false if there is no such match (or it was cancelled meanwhile).
    pub(crate) async fn revive(&self, id: &MatchId) -> Result<bool, StoreError> {
        if self.known(id).is_some() {
            return Ok(true);
        }
        if !self.hub.is_evicted(id) {
            return Ok(false);
        }
        let _one = self.reviving.lock().await;
        if self.known(id).is_some() {
            return Ok(true);
        }
        match self.store.resume(id).await? {
            Some(resumed) => {
                // Replayed (no saved state yet: a data directory of an older version): its
                // state is saved, so that the next read back does not replay again.
                let replayed = !resumed.events.is_empty();
                self.insert_resumed(resumed, replayed);
                tracing::debug!(match_id = %id, "ended match read back");
                Ok(self.known(id).is_some())
            }
            None => {
                self.hub.forget(id);
                Ok(false)
            }
        }
    }

    /// The incarnation of `id` this node serves, if any.
    pub(super) fn known(&self, id: &MatchId) -> Option<Incarnation> {
        read(&self.slots).get(id).map(|s| s.inc)
    }

    /// Loads a match created elsewhere (or its newer incarnation) from the store.
    pub(super) async fn load(&self, id: &MatchId) -> Result<(), StoreError> {
        if let Some(resumed) = self.store.resume(id).await? {
            let inc = resumed.inc;
            // An ended match found among the live ones is marked ended (by whoever finds it).
            if self.insert_resumed(resumed, true) {
                tracing::info!(match_id = %id, inc, "match created on another node");
            }
        }
        Ok(())
    }

    /// Serves a match from its saved state and the events after it, unless this or a newer
    /// incarnation is already served. True if it was inserted. `mark`: an ended one is saved
    /// and marked ended in the store (idempotent), for a match found among the live ones or
    /// one whose events had to be replayed.
    pub(super) fn insert_resumed(&self, resumed: Resumed, mark: bool) -> bool {
        let (inc, last_ts) = (resumed.inc, resumed.last_ts());
        let m = resumed_state(resumed);
        if mark && m.is_over() {
            self.save_later(inc, Arc::new(m.clone()));
        }
        self.insert(m, inc, last_ts)
    }

    /// Queues saving `m` (durable events only) in the store: a saved state is a cache of the
    /// log, so one not written only means a longer replay later (or, for an ended match, that
    /// it is marked ended by whoever finds it next). Never waits.
    pub(super) fn save_later(&self, inc: Incarnation, m: Arc<Match>) {
        self.store.save_state(inc, &m);
    }

    /// Serves incarnation `inc` of a match, replacing an older one (whose viewers are told it
    /// was cancelled). True if it was inserted; false if this or a newer one is served already
    /// (the log and this node's own request may both bring it).
    pub(super) fn insert(&self, m: Match, inc: Incarnation, last_ts: Option<Millis>) -> bool {
        let mut slots = write(&self.slots);
        if slots.get(m.id()).is_some_and(|s| s.inc >= inc) {
            return false;
        }
        let m = Arc::new(m);
        let topic = self.hub.add(m.clone(), inc);
        let id = m.id().clone();
        let over = m.is_over();
        let slot = Slot {
            inc,
            topic,
            tip: tokio::sync::Mutex::new(Tip {
                state: m.clone(),
                last_ts,
                tag: None,
                stale: false,
            }),
            applied: watch::Sender::new(m.seq),
            log: Mutex::new(LogView { state: m, last_ts, early: BTreeMap::new() }),
            catching_up: tokio::sync::Mutex::new(()),
        };
        let slot = Arc::new(slot);
        slots.insert(id, slot.clone());
        drop(slots);
        if over {
            lock(&self.ending).push_back((Instant::now(), Arc::downgrade(&slot)));
        }
        true
    }

    /// Stops serving `slot` (if it is still what `id` names); its viewers get `cancelled`.
    pub(super) fn remove(&self, id: &MatchId, slot: &Arc<Slot>) {
        {
            let mut slots = write(&self.slots);
            if slots.get(id).is_some_and(|s| Arc::ptr_eq(s, slot)) {
                slots.remove(id);
            }
        }
        self.hub.cancel(&slot.topic);
    }

    /// Whether match `id` is served, reading it from the store when it is not in memory (see
    /// [`Ingest::find`]): for a viewer about to join it.
    pub(crate) async fn ensure(&self, id: &MatchId) -> Result<bool, StoreError> {
        match self.find(id).await {
            Ok(_) => Ok(true),
            Err(IngestError::Store(e)) => Err(e),
            Err(_) => Ok(false),
        }
    }

    /// The match, read from the store if it is not in memory: an ended match that left it
    /// ([`Ingest::revive`]), or, with other nodes, one created elsewhere a moment ago, which is
    /// in the store before its announcement arrives here (SPEC 7: created everywhere). Alone on
    /// its store, a node knows every match, so an unknown one costs no read.
    pub(super) async fn find(&self, id: &MatchId) -> Result<Arc<Slot>, IngestError> {
        if let Ok(slot) = self.slot(id) {
            return Ok(slot);
        }
        if self.hub.is_evicted(id) {
            self.revive(id).await?;
        } else if !self.hub.knows_every_match() {
            self.load(id).await?;
        }
        self.slot(id)
    }

    /// Whether `slot` is still what this node serves under its id.
    pub(super) fn is_current(&self, slot: &Arc<Slot>) -> bool {
        read(&self.slots).get(slot.topic.id()).is_some_and(|s| Arc::ptr_eq(s, slot))
    }

    pub(super) fn slot(&self, id: &MatchId) -> Result<Arc<Slot>, IngestError> {
        read(&self.slots).get(id).cloned().ok_or_else(|| IngestError::NotFound(id.clone()))
    }
}

/// A match as resumed from the store: its saved state with the events after it applied.
pub(super) fn resumed_state(resumed: Resumed) -> Match {
    let mut m = resumed.state;
    for ev in &resumed.events {
        apply_logged(&mut m, ev);
    }
    m
}
