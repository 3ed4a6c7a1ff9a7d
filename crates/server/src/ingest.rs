//! The publishing path, and the one way into the hub: following the log.
//!
//! A watcher's events are validated against the match as this node sees it, then appended to
//! the store with a compare-and-set on the end of the log ([`Expect`]). The store alone decides
//! the order: when another writer (another node) got there first, the append is refused, this
//! node catches up from the log, validates again and retries (a few times). Nothing reaches
//! viewers before the store has it durably.
//!
//! Each match has two views. The *tip* is what requests validate against: the log plus this
//! node's own appends still waiting for their commit (many requests then share one group commit,
//! each naming the one before by its tag). The *log* view is what the store holds, applied in
//! `seq` order: only it feeds the hub. Events enter it from this node's own durable appends and,
//! with a shared store, from [`Store::follow`]; whatever arrives ahead of a gap waits, and a gap
//! nobody fills is read from the store. A failed append only marks the tip stale: the next
//! request starts again from the log, so a refused event is never published and an
//! acknowledged one never dropped.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use crate::hub::{Hub, TopicHandle};
use crate::locks::{lock, read, write};
use crate::model::{Event, EventInput, Match, MatchId, MatchInfo, Millis, Seq};
use crate::state::Rejection;
use crate::store::{Append, Expect, Incarnation, LogEntry, Resumed, Store, StoreError};

/// How many times a request is validated and appended again after another writer got there
/// first, before the watcher is told to retry.
const MAX_ATTEMPTS: usize = 12;
/// After the n-th conflict in a row, a request pauses up to n times this (jittered).
const CONFLICT_PAUSE_US: u64 = 500;
/// How long a request waits for this node's earlier appends to reach the log view before it
/// reads the store itself.
const OWN_APPENDS_WAIT: Duration = Duration::from_millis(200);
/// Events read from the store per history page while catching a match up.
const CATCH_UP_PAGE: usize = 1024;
/// A live match's state is saved in the store every this many events (and when it ends), so
/// that serving it again applies at most this many events rather than its whole log.
const SAVE_EVERY: Seq = 64;
/// How long an ended match stays in memory after its end unless told otherwise (SPEC 10).
pub const KEEP_ENDED: Duration = Duration::from_secs(600);
/// Batches kept ahead of a gap in the log view; beyond this they are dropped (the store has
/// them; catching up reads them again).
const MAX_EARLY: usize = 4096;

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

/// What requests validate against: the log view plus this node's appends in flight.
struct Tip {
    state: Arc<Match>,
    /// The tag of the last append of this node in `state`, if it may not be durable yet.
    tag: Option<u64>,
    /// An append built on this tip failed: start again from the log view.
    stale: bool,
}

/// The log as this node has applied it.
struct LogView {
    state: Arc<Match>,
    /// Events that arrived ahead of a gap, by their first seq.
    early: BTreeMap<Seq, Vec<Event>>,
}

struct Slot {
    inc: Incarnation,
    /// Where this incarnation's events go.
    topic: TopicHandle,
    /// A tokio mutex because it is held while the store queues the append (which may wait for
    /// room): that is what keeps this node's appends to one match in `seq` order.
    tip: tokio::sync::Mutex<Tip>,
    log: Mutex<LogView>,
    /// The last seq in the log view, for requests waiting for their events to be applied.
    applied: watch::Sender<Seq>,
    /// One catch-up read at a time per match.
    catching_up: tokio::sync::Mutex<()>,
}

impl Slot {
    fn logged(&self) -> Arc<Match> {
        lock(&self.log).state.clone()
    }
}

/// Every match this node serves.
pub struct Ingest {
    store: Arc<dyn Store>,
    hub: Arc<Hub>,
    slots: RwLock<HashMap<MatchId, Arc<Slot>>>,
    /// Ended matches in memory, in the order they ended (or were read back): each leaves
    /// memory `keep_ended` after that, once nobody follows it ([`Ingest::evict_ended`]).
    ending: Mutex<VecDeque<(Instant, Weak<Slot>)>>,
    keep_ended: Duration,
    /// One read-back of an ended match at a time: a crowd asking for the same one reads once.
    reviving: tokio::sync::Mutex<()>,
}

impl Ingest {
    /// Serves every match of the store that has not ended (from its saved state), and knows
    /// the ended ones without holding them (SPEC 10: start-up does not grow with past seasons).
    pub async fn restore(store: Arc<dyn Store>, hub: Arc<Hub>) -> Result<Ingest, StoreError> {
        let ingest = Ingest {
            store: store.clone(),
            hub,
            slots: RwLock::new(HashMap::new()),
            ending: Mutex::new(VecDeque::new()),
            keep_ended: KEEP_ENDED,
            reviving: tokio::sync::Mutex::new(()),
        };
        let mut ended = Vec::new();
        for resumed in store.load_live().await? {
            let inc = resumed.inc;
            let m = resumed_state(resumed);
            if m.is_over() {
                // Ended without being marked so (stopped in between, or an older store):
                // marked now, and not held.
                ingest.save_later(inc, Arc::new(m.clone()));
                ended.push(m.id().clone());
            } else {
                ingest.insert(m, inc);
            }
        }
        ended.extend(store.ended_ids().await?);
        ingest.hub.set_evicted(ended);
        Ok(ingest)
    }

    /// How long an ended match stays in memory after its end (`--keep-ended`).
    pub fn keep_ended(mut self, keep: Duration) -> Ingest {
        self.keep_ended = keep;
        self
    }

    /// How many matches this node holds in memory (ended ones that left it are not counted).
    pub fn len(&self) -> usize {
        read(&self.slots).len()
    }

    /// Takes out of memory the ended matches whose `--keep-ended` has passed and that nobody
    /// follows any more (one still followed waits until its viewers are gone). They stay
    /// listed and are read back on demand ([`Ingest::revive`]). Returns how many left.
    pub fn evict_ended(&self) -> usize {
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
                slots.remove(&id);
            }
            self.hub.evict(&slot.topic);
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
    pub async fn revive(&self, id: &MatchId) -> Result<bool, StoreError> {
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

    /// The slot of `id`, reading an ended match back from the store if it left memory.
    async fn slot_or_revive(&self, id: &MatchId) -> Result<Arc<Slot>, IngestError> {
        if let Ok(slot) = self.slot(id) {
            return Ok(slot);
        }
        self.revive(id).await?;
        self.slot(id)
    }

    /// Creates a match (durably) and opens it to viewers.
    pub async fn create(&self, info: MatchInfo) -> Result<MatchId, IngestError> {
        let id = info.id.clone();
        let inc = self.store.create_match(&info).await.map_err(|e| match e {
            StoreError::Exists(id) => IngestError::Exists(id),
            e => IngestError::Store(e),
        })?;
        self.insert(Match::new(info), inc);
        tracing::info!(match_id = %id, inc, "match created");
        Ok(id)
    }

    /// Applies, stores and publishes a watcher's events, all or none. Returns once they are
    /// durable and in the hub (a read right after sees them).
    /// With `after`, the events apply only if the match stands at that seq: a watcher that
    /// retries a request whose answer it never got cannot record its events twice.
    pub async fn publish(
        &self,
        id: &MatchId,
        inputs: &[EventInput],
        after: Option<Seq>,
    ) -> Result<Vec<Accepted>, IngestError> {
        let slot = self.slot_or_revive(id).await?;
        // Whether this request has read the store to check `after` (see below).
        let mut read_store = false;
        for attempt in 0..MAX_ATTEMPTS {
            let (ticket, events, accepted) = {
                let mut tip = slot.tip.lock().await;
                let logged = slot.logged();
                if tip.stale || tip.state.seq < logged.seq {
                    *tip = Tip { state: logged.clone(), tag: None, stale: false };
                }
                if let Some(after) = after.filter(|a| *a != tip.state.seq) {
                    if tip.state.seq == logged.seq {
                        if after > logged.seq && !read_store {
                            // The watcher has seen events this node has not learned yet
                            // (another node wrote them): read the store before refusing.
                            drop(tip);
                            self.catch_up(&slot).await?;
                            read_store = true;
                            continue;
                        }
                        return Err(IngestError::NotAt {
                            id: id.clone(),
                            after,
                            current: logged.seq,
                        });
                    }
                    // This node's own appends are in flight: answer with a seq that is durable
                    // (a watcher takes "one past my `after`" to mean its lost request was
                    // applied), so wait for them to land or fail, then look again.
                    let target = tip.state.seq;
                    drop(tip);
                    self.wait_applied(&slot, target).await?;
                    continue;
                }
                // Applied to a copy: a request is all or none.
                let mut next = Match::clone(&tip.state);
                let mut events = Vec::with_capacity(inputs.len());
                let mut refused = None;
                for (index, input) in inputs.iter().enumerate() {
                    let ts = now_ms();
                    match next.apply(input.kind, &input.data, ts) {
                        Ok(data) => {
                            events.push(Event { seq: next.seq, ts, kind: input.kind, data })
                        }
                        Err(rejection) => {
                            let kind = input.kind.as_str();
                            refused = Some(IngestError::Rejected { index, kind, rejection });
                            break;
                        }
                    }
                }
                if let Some(refused) = refused {
                    if !read_store {
                        // Refused against this node's view: with a shared store, another node
                        // may have written events it has not heard of yet (the `start` this
                        // goal needs). Read the store once before refusing.
                        drop(tip);
                        self.catch_up(&slot).await?;
                        read_store = true;
                        continue;
                    }
                    return Err(refused);
                }
                let accepted: Vec<Accepted> =
                    events.iter().map(|e| Accepted { seq: e.seq, ts: e.ts }).collect();
                let append = Append {
                    inc: slot.inc,
                    expect: Expect { seq: tip.state.seq, tag: tip.tag },
                    tag: rand::random(),
                    events: events.clone(),
                };
                let tag = append.tag;
                let ticket = self.store.submit_append(id, append).await?;
                *tip = Tip { state: Arc::new(next), tag: Some(tag), stale: false };
                (ticket, events, accepted)
            };
            match ticket.await {
                Ok(()) => {
                    let last = events.last().map_or(0, |e| e.seq);
                    self.apply(&slot, events);
                    self.wait_applied(&slot, last).await?;
                    tracing::trace!(match_id = %id, seq = last, "published");
                    return Ok(accepted);
                }
                Err(StoreError::SeqConflict { current, .. }) => {
                    // Someone else's events (or none, if one of ours failed) end the log:
                    // learn them, then validate again.
                    slot.tip.lock().await.stale = true;
                    tracing::debug!(match_id = %id, current, "append conflicted; catching up");
                    self.catch_up(&slot).await?;
                    // Two nodes racing for the same match take turns rather than collide again.
                    let pause = rand::random_range(0..=CONFLICT_PAUSE_US * (attempt as u64 + 1));
                    tokio::time::sleep(Duration::from_micros(pause)).await;
                }
                Err(StoreError::NotFound(_)) => {
                    slot.tip.lock().await.stale = true;
                    // Cancelled, maybe elsewhere: this incarnation is gone here too.
                    self.remove(id, &slot);
                    return Err(IngestError::NotFound(id.clone()));
                }
                Err(e) => {
                    // The store logged the cause (once per failing spell); this is per request.
                    slot.tip.lock().await.stale = true;
                    tracing::debug!(match_id = %id, error = %e, "append failed");
                    return Err(e.into());
                }
            }
        }
        Err(IngestError::Store(StoreError::Backend(format!(
            "other watchers kept publishing to {id} first ({MAX_ATTEMPTS} tries): try again"
        ))))
    }

    /// Cancels a match: gone from the store and the hub; its viewers get `cancelled`.
    pub async fn cancel(&self, id: &MatchId) -> Result<(), IngestError> {
        let slot = self.slot_or_revive(id).await?;
        // Held so that no request of this node queues events between the cancel and the removal.
        let _tip = slot.tip.lock().await;
        match self.store.cancel_match(id, slot.inc).await {
            Ok(()) => {}
            Err(StoreError::NotFound(id)) => {
                self.remove(&id, &slot);
                return Err(IngestError::NotFound(id));
            }
            Err(e) => return Err(e.into()),
        }
        self.remove(id, &slot);
        tracing::info!(match_id = %id, inc = slot.inc, "match cancelled");
        Ok(())
    }

    /// Follows what other nodes write to the shared log, until the store stops sending.
    pub async fn follow(self: Arc<Self>, mut entries: mpsc::Receiver<LogEntry>) {
        while let Some(entry) = entries.recv().await {
            if let Err(e) = self.follow_one(entry).await {
                // The store logs its own failures; the next entry or resync tries again.
                tracing::debug!(error = %e, "following the log");
            }
        }
    }

    async fn follow_one(&self, entry: LogEntry) -> Result<(), StoreError> {
        match entry {
            LogEntry::Created { id, inc } => {
                if self.known(&id).is_none_or(|known| known < inc) {
                    self.load(&id).await?;
                }
            }
            LogEntry::Appended { id, inc, events } => match self.slot(&id).ok() {
                Some(slot) if slot.inc == inc => {
                    if !self.apply(&slot, events) {
                        self.catch_up(&slot).await?;
                    }
                }
                Some(slot) if slot.inc > inc => {}
                _ => self.load(&id).await?,
            },
            LogEntry::Behind { id, inc, seq } => match self.slot(&id).ok() {
                Some(slot) if slot.inc == inc => {
                    if slot.logged().seq < seq {
                        self.catch_up(&slot).await?;
                    }
                }
                Some(slot) if slot.inc > inc => {}
                _ => self.load(&id).await?,
            },
            LogEntry::Cancelled { id, inc } => {
                // An ended match out of memory: no longer listed.
                self.hub.forget(&id);
                if let Ok(slot) = self.slot(&id) {
                    if slot.inc == inc {
                        self.remove(&id, &slot);
                        tracing::info!(match_id = %id, inc, "match cancelled on another node");
                    }
                }
            }
            LogEntry::Resync => self.resync().await?,
        }
        Ok(())
    }

    /// Compares every match with the store's heads: loads new ones, drops cancelled ones,
    /// catches up those behind.
    async fn resync(&self) -> Result<(), StoreError> {
        // Only what this node served before the heads were read can be missing from them
        // because it was cancelled; a match created meanwhile may be missing for being new.
        let before: Vec<(MatchId, Arc<Slot>)> =
            read(&self.slots).iter().map(|(id, slot)| (id.clone(), slot.clone())).collect();
        let heads = self.store.heads().await?;
        let live: HashSet<&MatchId> = heads.iter().map(|h| &h.id).collect();
        // Ended matches are not among the heads (they no longer move): kept until evicted.
        let gone: Vec<(MatchId, Arc<Slot>)> = before
            .into_iter()
            .filter(|(id, slot)| !live.contains(id) && !slot.logged().is_over())
            .collect();
        for (id, slot) in gone {
            // Cancelled, or ended on another node before this one heard the end: the store
            // tells which.
            match self.store.resume(&id).await? {
                Some(r) if r.inc == slot.inc => self.catch_up(&slot).await?,
                _ => self.remove(&id, &slot),
            }
        }
        for head in &heads {
            match self.slot(&head.id).ok() {
                Some(slot) if slot.inc == head.inc => {
                    if slot.logged().seq < head.seq {
                        self.catch_up(&slot).await?;
                    }
                }
                Some(slot) if slot.inc > head.inc => {}
                _ => self.load(&head.id).await?,
            }
        }
        Ok(())
    }

    /// The incarnation of `id` this node serves, if any.
    fn known(&self, id: &MatchId) -> Option<Incarnation> {
        read(&self.slots).get(id).map(|s| s.inc)
    }

    /// Loads a match created elsewhere (or its newer incarnation) from the store.
    async fn load(&self, id: &MatchId) -> Result<(), StoreError> {
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
    fn insert_resumed(&self, resumed: Resumed, mark: bool) -> bool {
        let inc = resumed.inc;
        let m = resumed_state(resumed);
        if mark && m.is_over() {
            self.save_later(inc, Arc::new(m.clone()));
        }
        self.insert(m, inc)
    }

    /// Queues saving `m` (durable events only) in the store: a saved state is a cache of the
    /// log, so one not written only means a longer replay later (or, for an ended match, that
    /// it is marked ended by whoever finds it next). Never waits.
    fn save_later(&self, inc: Incarnation, m: Arc<Match>) {
        self.store.save_state(inc, &m);
    }

    /// Serves incarnation `inc` of a match, replacing an older one (whose viewers are told it
    /// was cancelled). True if it was inserted; false if this or a newer one is served already
    /// (the log and this node's own request may both bring it).
    fn insert(&self, m: Match, inc: Incarnation) -> bool {
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
            tip: tokio::sync::Mutex::new(Tip { state: m.clone(), tag: None, stale: false }),
            applied: watch::Sender::new(m.seq),
            log: Mutex::new(LogView { state: m, early: BTreeMap::new() }),
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
    fn remove(&self, id: &MatchId, slot: &Arc<Slot>) {
        {
            let mut slots = write(&self.slots);
            if slots.get(id).is_some_and(|s| Arc::ptr_eq(s, slot)) {
                slots.remove(id);
            }
        }
        self.hub.cancel(&slot.topic);
    }

    fn slot(&self, id: &MatchId) -> Result<Arc<Slot>, IngestError> {
        read(&self.slots).get(id).cloned().ok_or_else(|| IngestError::NotFound(id.clone()))
    }

    /// Puts durable events of the log into the log view and the hub, in `seq` order: what is
    /// already there is skipped, what comes after a gap waits for the gap to be filled. False
    /// if a gap remains.
    fn apply(&self, slot: &Slot, events: Vec<Event>) -> bool {
        let mut log = lock(&slot.log);
        let mut next = Some(events);
        let before = log.state.seq;
        while let Some(mut events) = next.take() {
            events.retain(|e| e.seq > log.state.seq);
            match events.first().map(|e| e.seq) {
                None => {}
                Some(first) if first == log.state.seq + 1 => {
                    let mut m = Match::clone(&log.state);
                    for ev in &events {
                        apply_logged(&mut m, ev);
                    }
                    let m = Arc::new(m);
                    self.hub.publish(&slot.topic, &events, m.clone());
                    if m.is_over() {
                        // The end is durable: save the final state and mark the match ended
                        // (every node that applies it does; the store keeps one), and let it
                        // leave memory `keep_ended` from now.
                        self.save_later(slot.inc, m.clone());
                        if let Some(me) =
                            read(&self.slots).get(m.id()).filter(|s| s.inc == slot.inc)
                        {
                            lock(&self.ending).push_back((Instant::now(), Arc::downgrade(me)));
                        }
                    } else if m.seq / SAVE_EVERY > log.state.seq / SAVE_EVERY {
                        self.save_later(slot.inc, m.clone());
                    }
                    log.state = m;
                }
                Some(first) if log.early.len() < MAX_EARLY => {
                    log.early.insert(first, events);
                }
                // Too many waiting: the store has them; catching up reads them again.
                Some(_) => {}
            }
            // Whatever waited for this.
            let head = log.state.seq;
            while log.early.first_key_value().is_some_and(|(first, _)| *first <= head + 1) {
                if let Some((_, events)) = log.early.pop_first() {
                    if events.last().is_some_and(|e| e.seq > head) {
                        next = Some(events);
                        break;
                    }
                }
            }
        }
        if log.state.seq != before {
            slot.applied.send_replace(log.state.seq);
        }
        log.early.is_empty()
    }

    /// Reads the log from the store past the log view, and applies it.
    async fn catch_up(&self, slot: &Slot) -> Result<(), StoreError> {
        let _one = slot.catching_up.lock().await;
        loop {
            let from = slot.logged().seq;
            let page = self.store.history(slot.topic.id(), from, CATCH_UP_PAGE).await?;
            if page.inc != slot.inc {
                return Err(StoreError::NotFound(slot.topic.id().clone()));
            }
            let full = page.events.len() == CATCH_UP_PAGE;
            if page.events.is_empty() {
                return Ok(());
            }
            self.apply(slot, page.events);
            if !full {
                return Ok(());
            }
        }
    }

    /// Waits until the log view reaches `seq` (this node's earlier appends landing first);
    /// reads the store if they take too long (an earlier request may have failed after all).
    async fn wait_applied(&self, slot: &Slot, seq: Seq) -> Result<(), StoreError> {
        let mut applied = slot.applied.subscribe();
        let wait = async move { applied.wait_for(|s| *s >= seq).await.is_ok() };
        let reached = tokio::time::timeout(OWN_APPENDS_WAIT, wait).await;
        if reached != Ok(true) {
            self.catch_up(slot).await?;
        }
        Ok(())
    }
}

/// A match as resumed from the store: its saved state with the events after it applied.
fn resumed_state(resumed: Resumed) -> Match {
    let mut m = resumed.state;
    for ev in &resumed.events {
        apply_logged(&mut m, ev);
    }
    m
}

/// Applies an event of the log to `m`. Every stored event was validated against the state with
/// every event before it, so this cannot fail unless the rules changed since; then the event
/// still counts (the log is the truth) and the mismatch is logged.
fn apply_logged(m: &mut Match, ev: &Event) {
    if let Err(r) = m.apply_stored(ev) {
        tracing::error!(match_id = %m.id(), seq = ev.seq, error = %r, "stored event does not apply");
        m.seq = ev.seq;
    }
}

/// The server clock, in Unix milliseconds.
pub fn now_ms() -> Millis {
    chrono::Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests;
