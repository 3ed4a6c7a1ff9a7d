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
use crate::locks::{lock, read};
use crate::model::{now_ms, Event, EventInput, Match, MatchId, MatchInfo, Millis, Seq};
use crate::state::Rejection;
use crate::store::{Append, Expect, Incarnation, Store, StoreError};

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
mod memory;
use memory::resumed_state;
#[cfg(test)]
mod tests;
