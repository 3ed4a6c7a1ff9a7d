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

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::hub::{Hub, TopicHandle};
use crate::locks::{lock, read, write};
use crate::model::{now_ms, Event, EventInput, Match, MatchId, MatchInfo, Millis, Seq};
use crate::state::Rejection;
use crate::store::{Append, Expect, Incarnation, Resumed, Store, StoreError};

/// How long a request keeps validating and appending again while other writers (other nodes)
/// get there first. Each refusal means another writer's events landed, and a shared store makes
/// writers take turns (the one refused goes next), so every request gets its turn well within
/// this; it bounds only a request that a store broken in some new way keeps refusing.
const CONTENTION_PATIENCE: Duration = Duration::from_secs(10);
/// After the n-th refusal for another writer's turn, a request pauses up to n times this
/// (jittered), at most [`MAX_TURN_PAUSE_US`].
const TURN_PAUSE_US: u64 = 500;
const MAX_TURN_PAUSE_US: u64 = 20_000;
/// How long a request waits for this node's earlier appends to reach the log view before it
/// reads the store itself.
const OWN_APPENDS_WAIT: Duration = Duration::from_millis(200);
/// Events read from the store per history page while catching a match up.
const CATCH_UP_PAGE: usize = 1024;
/// A live match's state is saved in the store every this many events (and when it ends), so
/// that serving it again applies at most this many events rather than its whole log.
const SAVE_EVERY: Seq = 64;
/// How long an ended match stays in memory after its end unless told otherwise (SPEC 10).
pub(crate) const KEEP_ENDED: Duration = Duration::from_secs(600);
/// Batches kept ahead of a gap in the log view; beyond this they are dropped (the store has
/// them; catching up reads them again).
const MAX_EARLY: usize = 4096;

/// Why a watcher's request was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum IngestError {
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
pub(crate) struct Accepted {
    pub seq: Seq,
    pub ts: Millis,
}

/// What requests validate against: the log view plus this node's appends in flight.
struct Tip {
    state: Arc<Match>,
    /// The `ts` of the event at `state.seq`, if known (the store checks it: see [`Expect`]).
    last_ts: Option<Millis>,
    /// The tag of the last append of this node in `state`, if it may not be durable yet.
    tag: Option<u64>,
    /// An append built on this tip failed: start again from the log view.
    stale: bool,
}

/// The log as this node has applied it.
struct LogView {
    state: Arc<Match>,
    /// The `ts` of the event at `state.seq` (`None` before the first event): which event this
    /// node applied there, to tell whether the store still holds it.
    last_ts: Option<Millis>,
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

    /// The log view and the `ts` of its last event.
    fn logged_at(&self) -> (Arc<Match>, Option<Millis>) {
        let log = lock(&self.log);
        (log.state.clone(), log.last_ts)
    }
}

/// Every match this node serves.
pub(crate) struct Ingest {
    store: Arc<dyn Store>,
    hub: Arc<Hub>,
    slots: RwLock<HashMap<MatchId, Arc<Slot>>>,
    /// `matchstream_log_rewinds_total`.
    rewinds: metrics::Counter,
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
    pub(crate) async fn restore(
        store: Arc<dyn Store>,
        hub: Arc<Hub>,
    ) -> Result<Ingest, StoreError> {
        let ingest = Ingest {
            store: store.clone(),
            hub,
            slots: RwLock::new(HashMap::new()),
            rewinds: metrics::Counter::noop(),
            ending: Mutex::new(VecDeque::new()),
            keep_ended: KEEP_ENDED,
            reviving: tokio::sync::Mutex::new(()),
        };
        let mut ended = Vec::new();
        for resumed in store.load_live().await? {
            let (inc, last_ts) = (resumed.inc, resumed.last_ts());
            let m = resumed_state(resumed);
            if m.is_over() {
                // Ended without being marked so (stopped in between, or an older store):
                // marked now, and not held.
                ingest.save_later(inc, Arc::new(m.clone()));
                ended.push(m.id().clone());
            } else {
                ingest.insert(m, inc, last_ts);
            }
        }
        ended.extend(store.ended_ids().await?);
        ingest.hub.set_evicted(ended);
        Ok(ingest)
    }

    /// Counts the rewinds it repairs (see [`Ingest::rewind`]) on `counter`.
    pub(crate) fn counting_rewinds(mut self, counter: metrics::Counter) -> Ingest {
        self.rewinds = counter;
        self
    }

    /// How long an ended match stays in memory after its end (`--keep-ended`).
    pub(crate) fn keep_ended(mut self, keep: Duration) -> Ingest {
        self.keep_ended = keep;
        self
    }

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

    /// Creates a match (durably) and opens it to viewers.
    pub(crate) async fn create(&self, info: MatchInfo) -> Result<MatchId, IngestError> {
        let id = info.id.clone();
        let inc = self.store.create_match(&info).await.map_err(|e| match e {
            StoreError::Exists(id) => IngestError::Exists(id),
            e => IngestError::Store(e),
        })?;
        self.insert(Match::new(info), inc, None);
        tracing::info!(match_id = %id, inc, "match created");
        Ok(id)
    }

    /// Applies, stores and publishes a watcher's events, all or none. Returns once they are
    /// durable and in the hub (a read right after sees them).
    /// With `after`, the events apply only if the match stands at that seq: a watcher that
    /// retries a request whose answer it never got cannot record its events twice.
    pub(crate) async fn publish(
        &self,
        id: &MatchId,
        inputs: &[EventInput],
        after: Option<Seq>,
    ) -> Result<Vec<Accepted>, IngestError> {
        let mut slot = self.find(id).await?;
        // Whether this request has read the store to check `after` (see below).
        let mut read_store = false;
        // Whether an append of this request was refused for another writer's (and so this
        // node may hold the match's turn).
        let mut conflicted = false;
        let mut waited_turns = 0;
        let deadline = tokio::time::Instant::now() + CONTENTION_PATIENCE;
        // In a block of its own, so that a request leaving early (`?`) still gives back a turn
        // it may have taken.
        let outcome: Result<Vec<Accepted>, IngestError> = async {
            loop {
                if tokio::time::Instant::now() >= deadline {
                    let e = format!(
                        "other writers kept publishing to {id} first for {CONTENTION_PATIENCE:?}"
                    );
                    tracing::warn!(match_id = %id, "a request gave up: {e}");
                    break Err(IngestError::Store(StoreError::Backend(format!("{e}: try again"))));
                }
                if !self.is_current(&slot) {
                    // Its log rewound (and was read again from the store) meanwhile.
                    slot = self.find(id).await?;
                }
                let (ticket, events, accepted) = {
                    let mut tip = slot.tip.lock().await;
                    let (logged, logged_ts) = slot.logged_at();
                    if tip.stale || tip.state.seq < logged.seq {
                        let state = logged.clone();
                        *tip = Tip { state, last_ts: logged_ts, tag: None, stale: false };
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
                            break Err(IngestError::NotAt {
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
                        break Err(refused);
                    }
                    let accepted: Vec<Accepted> =
                        events.iter().map(|e| Accepted { seq: e.seq, ts: e.ts }).collect();
                    let append = Append {
                        inc: slot.inc,
                        expect: Expect { seq: tip.state.seq, tag: tip.tag, ts: tip.last_ts },
                        tag: rand::random(),
                        events: events.clone(),
                    };
                    let tag = append.tag;
                    let ticket = self.store.submit_append(id, append).await?;
                    let last_ts = events.last().map(|e| e.ts);
                    *tip = Tip { state: Arc::new(next), last_ts, tag: Some(tag), stale: false };
                    (ticket, events, accepted)
                };
                match ticket.await {
                    Ok(()) => {
                        let last = events.last().map_or(0, |e| e.seq);
                        self.apply(&slot, events);
                        self.wait_applied(&slot, last).await?;
                        tracing::trace!(match_id = %id, seq = last, "published");
                        break Ok(accepted);
                    }
                    Err(StoreError::SeqConflict { current, .. }) => {
                        // Someone else's events (or none, if one of ours failed) end the log:
                        // learn them, then validate again at once (this node may hold the turn
                        // now, and the others wait for it).
                        slot.tip.lock().await.stale = true;
                        conflicted = true;
                        tracing::debug!(match_id = %id, current, "append conflicted; catching up");
                        self.catch_up(&slot).await?;
                    }
                    Err(StoreError::NotYourTurn(_)) => {
                        // Another node was refused a moment ago and goes first: let it.
                        slot.tip.lock().await.stale = true;
                        waited_turns += 1;
                        let most = (TURN_PAUSE_US * waited_turns).min(MAX_TURN_PAUSE_US);
                        let pause = rand::random_range(most / 2..=most);
                        tokio::time::sleep(Duration::from_micros(pause)).await;
                    }
                    Err(StoreError::NotFound(_)) => {
                        slot.tip.lock().await.stale = true;
                        // Cancelled, maybe elsewhere: this incarnation is gone here too.
                        self.remove(id, &slot);
                        break Err(IngestError::NotFound(id.clone()));
                    }
                    Err(e) => {
                        // The store logged the cause (once per failing spell); this is per request.
                        slot.tip.lock().await.stale = true;
                        tracing::warn!(match_id = %id, error = %e, "an append failed");
                        break Err(e.into());
                    }
                }
            }
        }
        .await;
        if conflicted && outcome.is_err() {
            // This request may have taken the match's turn and will not use it.
            let (store, id) = (self.store.clone(), id.clone());
            tokio::spawn(async move { store.give_turn_back(&id).await });
        }
        outcome
    }

    /// Cancels a match: gone from the store and the hub; its viewers get `cancelled`.
    pub(crate) async fn cancel(&self, id: &MatchId) -> Result<(), IngestError> {
        let slot = self.find(id).await?;
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
    fn save_later(&self, inc: Incarnation, m: Arc<Match>) {
        self.store.save_state(inc, &m);
    }

    /// Serves incarnation `inc` of a match, replacing an older one (whose viewers are told it
    /// was cancelled). True if it was inserted; false if this or a newer one is served already
    /// (the log and this node's own request may both bring it).
    fn insert(&self, m: Match, inc: Incarnation, last_ts: Option<Millis>) -> bool {
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
    fn remove(&self, id: &MatchId, slot: &Arc<Slot>) {
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
    async fn find(&self, id: &MatchId) -> Result<Arc<Slot>, IngestError> {
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
    fn is_current(&self, slot: &Arc<Slot>) -> bool {
        read(&self.slots).get(slot.topic.id()).is_some_and(|s| Arc::ptr_eq(s, slot))
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
        let mut ended = None;
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
                        ended = Some(m.id().clone());
                    } else if m.seq / SAVE_EVERY > log.state.seq / SAVE_EVERY {
                        self.save_later(slot.inc, m.clone());
                    }
                    log.state = m;
                    log.last_ts = events.last().map(|e| e.ts);
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
        let whole = log.early.is_empty();
        drop(log);
        // Queued for eviction once the log lock is released: `slots` is never taken under a
        // slot's log lock (`resync` takes them the other way round).
        if let Some(id) = ended {
            if let Some(me) = read(&self.slots).get(&id).filter(|s| s.inc == slot.inc) {
                lock(&self.ending).push_back((Instant::now(), Arc::downgrade(me)));
            }
        }
        whole
    }

    /// Waits until the log view reaches `seq` (this node's earlier appends landing first);
    /// reads the store if they take too long (an earlier request may have failed after all).
    async fn wait_applied(&self, slot: &Arc<Slot>, seq: Seq) -> Result<(), StoreError> {
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

mod follow;
#[cfg(test)]
mod tests;
