//! Per-match fan-out. `ingest` publishes each accepted, durable event here once, in `seq` order;
//! the hub encodes it once per wire format and shares the bytes with every viewer of the match
//! through a bounded ring (a tokio broadcast channel). A viewer that joins with `FROM`, or falls
//! behind, is caught up from the last `ring_events` events kept encoded beside the ring; only
//! beyond them is the store read, in aligned chunks that every viewer needing the same range
//! shares (one read, one encoding), so a crowd reconnecting after a node loss is not N reads.
//! One too far behind is told `too_slow`. Lag and catch-up live here and only here: transports
//! just write what [`Subscription::next`] hands them.
//!
//! Two ways to follow a match: a [`Subscription`] per viewer (joining, catching up, a slow
//! socket), and a [`Feed`] shared by many caught-up viewers that a transport parks together
//! ([`Hub::park`] hands a viewer over without gap or duplicate).
//!
//! The publisher never waits for a viewer: sending into the ring never blocks, and a viewer's
//! memory is its small [`Subscription`] plus at most one history chunk while catching up.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::broadcast;
use tokio::sync::{OnceCell, Semaphore};

use crate::locks::{lock, read, write};
use crate::model::{Event, Match, MatchId, Millis, Seq};
use crate::store::{Incarnation, Store, StoreError};
use crate::wire::ByeReason;

mod chunk;
mod encoded;
mod feed;
mod subscription;

pub(crate) use encoded::{EncodedEvent, Format, Frame, Snapshot};
pub(crate) use feed::{Feed, FeedItem};
pub(crate) use subscription::{Next, Subscription};

/// How many events one history read brings while catching a viewer up. Reads start at a
/// multiple of it, so viewers a few events apart share one.
const CATCH_UP_CHUNK: u64 = 256;

/// A match's topic, as its publisher holds it.
pub(crate) struct TopicHandle(Arc<Topic>);

impl TopicHandle {
    /// The match this topic carries.
    pub(crate) fn id(&self) -> &MatchId {
        &self.0.id
    }
}

/// Which incarnation of a match something follows: a match cancelled and created anew under the
/// same id is another topic. Holding the key keeps the identity from being reused.
#[derive(Clone)]
pub(crate) struct TopicKey(Arc<Topic>);

impl PartialEq for TopicKey {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

struct Topic {
    id: MatchId,
    inc: Incarnation,
    tx: broadcast::Sender<Arc<Frame>>,
    /// Publishing and subscribing both hold this lock, so a new subscriber learns exactly which
    /// `seq` its ring starts after.
    current: Mutex<Current>,
}

/// A topic's state under its lock.
struct Current {
    /// The last published state.
    snapshot: Arc<Snapshot>,
    /// The last events published, oldest first (at most `ring_events`): catch-up reads these
    /// before it reads the store.
    recent: VecDeque<Arc<Frame>>,
    /// Set once this topic is closed (the match was cancelled, or its log rewound): nobody
    /// joins it any more, and whoever follows it is told goodbye for this reason.
    closed: Option<ByeReason>,
}

/// A chunk of history read once and encoded once, for every viewer that needs it.
struct Chunk {
    inc: Incarnation,
    events: Vec<EncodedEvent>,
}

/// A read in progress or just done, shared by whoever asks for the same chunk meanwhile.
type SharedRead = Arc<OnceCell<Result<Arc<Chunk>, StoreError>>>;

/// The fan-out of every match on this node.
pub(crate) struct Hub {
    topics: RwLock<HashMap<MatchId, Arc<Topic>>>,
    /// Ended matches that left memory (`--keep-ended`, SPEC 10): known to exist (listed,
    /// never a wrong 404) and read back from the store when asked for. An id each.
    evicted: RwLock<HashSet<MatchId>>,
    store: Arc<dyn Store>,
    ring_events: usize,
    max_lag_events: u64,
    /// History reads for catching viewers up, at most a few at once: a shard that falls behind
    /// hands hundreds of viewers back at the same moment, and the store must not drown.
    catch_up_reads: Semaphore,
    /// History chunks being read, by match, incarnation and first seq (exclusive).
    reads: Mutex<HashMap<(MatchId, Incarnation, Seq), SharedRead>>,
    /// Moves whenever a match is added or removed (what `/1/matches` lists).
    generation: std::sync::atomic::AtomicU64,
    /// Other nodes write the same matches: a viewer may know of a match or an event this node
    /// has not heard of yet.
    shared: bool,
}

/// How long a viewer of a shared store waits for this node to learn of the match, or of the
/// events it resumes after, before it is told `not_found` or given a snapshot.
const WAIT_FOR_THE_LOG: std::time::Duration = std::time::Duration::from_secs(2);

/// Concurrent history reads for catch-up.
const CATCH_UP_READS: usize = 4;

/// Why a viewer cannot join.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum JoinError {
    #[error("unknown match {0}")]
    NotFound(String),
}

impl Hub {
    /// `ring_events`: events kept per match for viewers that are briefly behind;
    /// `max_lag_events`: beyond this many events behind, a viewer is `too_slow`.
    pub(crate) fn new(store: Arc<dyn Store>, ring_events: usize, max_lag_events: u64) -> Hub {
        Hub {
            topics: RwLock::new(HashMap::new()),
            evicted: RwLock::new(HashSet::new()),
            store,
            ring_events: ring_events.max(1),
            max_lag_events,
            catch_up_reads: Semaphore::new(CATCH_UP_READS),
            reads: Mutex::new(HashMap::new()),
            generation: std::sync::atomic::AtomicU64::new(0),
            shared: false,
        }
    }

    /// Marks the matches as shared with other nodes (see [`Hub::wait_ready`]).
    pub(crate) fn shared(mut self, shared: bool) -> Hub {
        self.shared = shared;
        self
    }

    /// With other nodes, waits (at most [`WAIT_FOR_THE_LOG`]) until this node serves match `id`
    /// and, for a viewer resuming after `from`, has reached `from`: a viewer sent here by
    /// `/1/checkin` after its node died may have seen events (or a match) this node has not
    /// heard of yet, and must get what follows them, not an older snapshot. Alone, a node
    /// knows everything already and this returns at once.
    pub(crate) async fn wait_ready(&self, id: &str, from: Option<Seq>) {
        if !self.shared {
            return;
        }
        let Ok(id) = MatchId::parse(id) else { return };
        let deadline = tokio::time::Instant::now() + WAIT_FOR_THE_LOG;
        loop {
            let ready = self.topic(&id).is_some_and(|t| {
                let state = &lock(&t.current).snapshot.state;
                from.is_none_or(|n| state.seq >= n || state.is_over())
            });
            if ready || tokio::time::Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// Makes a match available to viewers (a new match, or one restored on start).
    /// Returns the handle its publisher keeps: a match cancelled and created anew under the same
    /// id gets a new topic, and a late publish for the old one cannot reach the new one's viewers.
    pub(crate) fn add(&self, state: Arc<Match>, inc: Incarnation) -> TopicHandle {
        let (tx, _) = broadcast::channel(self.ring_events);
        let topic = Arc::new(Topic {
            id: state.id().clone(),
            inc,
            tx,
            current: Mutex::new(Current {
                snapshot: Snapshot::new(state.clone()),
                recent: VecDeque::new(),
                closed: None,
            }),
        });
        let old = write(&self.topics).insert(state.id().clone(), topic.clone());
        write(&self.evicted).remove(state.id());
        self.generation.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        if let Some(old) = old {
            Hub::close(&old, ByeReason::Cancelled);
        }
        TopicHandle(topic)
    }

    /// Sends accepted, durable events to every viewer, and makes `after` (the match once they
    /// are applied) the match's current state. Callers publish each match's events in `seq`
    /// order, exactly once.
    pub(crate) fn publish(&self, handle: &TopicHandle, events: &[Event], after: Arc<Match>) {
        let topic = &handle.0;
        let encoded: Vec<Arc<Frame>> =
            events.iter().map(|e| Arc::new(Frame::Event(EncodedEvent::new(e)))).collect();
        let mut current = lock(&topic.current);
        current.snapshot = Snapshot::new(after);
        for frame in encoded {
            if current.recent.len() == self.ring_events {
                current.recent.pop_front();
            }
            current.recent.push_back(frame.clone());
            // An error only means nobody is subscribed right now.
            let _ = topic.tx.send(frame);
        }
        if current.snapshot.state.is_over() {
            // Nothing more comes: the few still catching up read the store (shared reads);
            // an ended match keeps no events in memory.
            current.recent = VecDeque::new();
        }
    }

    /// Removes a cancelled match (if `handle` is still its topic); its viewers get `cancelled`.
    pub(crate) fn cancel(&self, handle: &TopicHandle) {
        self.remove(handle, ByeReason::Cancelled);
    }

    /// Removes a match whose log the store no longer holds as this topic has it (the store came
    /// back with less): its viewers get `shutdown`, so that they come back and follow what the
    /// store holds. The caller adds the match again from the store.
    pub(crate) fn rewound(&self, handle: &TopicHandle) {
        self.remove(handle, ByeReason::Shutdown);
    }

    fn remove(&self, handle: &TopicHandle, reason: ByeReason) {
        let mut topics = write(&self.topics);
        if topics.get(&handle.0.id).is_some_and(|t| Arc::ptr_eq(t, &handle.0)) {
            topics.remove(&handle.0.id);
            self.generation.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        }
        drop(topics);
        self.forget(&handle.0.id);
        Hub::close(&handle.0, reason);
    }

    fn close(topic: &Topic, reason: ByeReason) {
        let mut current = lock(&topic.current);
        if current.closed.is_none() {
            current.closed = Some(reason);
            current.recent.clear();
            let _ = topic.tx.send(Arc::new(Frame::End(reason)));
        }
    }

    /// The incarnation served under `id` and its current state.
    pub(crate) fn current(&self, id: &MatchId) -> Option<(Incarnation, Arc<Snapshot>)> {
        self.topic(id).map(|t| (t.inc, lock(&t.current).snapshot.clone()))
    }

    /// How many matches are under way (started, not over).
    pub(crate) fn live_count(&self) -> usize {
        let topics: Vec<Arc<Topic>> = read(&self.topics).values().cloned().collect();
        topics
            .iter()
            .filter(|t| {
                let state = &lock(&t.current).snapshot.state;
                state.period != crate::model::Period::NotStarted && !state.is_over()
            })
            .count()
    }

    /// Ended matches this node does not hold in memory (at start: every ended match).
    pub(crate) fn set_evicted(&self, ids: impl IntoIterator<Item = MatchId>) {
        write(&self.evicted).extend(ids);
        self.generation.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    /// Whether `id` is an ended match that left memory (and is read back on demand).
    pub(crate) fn is_evicted(&self, id: &MatchId) -> bool {
        read(&self.evicted).contains(id)
    }

    /// Takes an ended match out of memory (if `handle` is still its topic): its id stays
    /// listed; its viewers, if any, keep the topic they hold until they leave.
    pub(crate) fn evict(&self, handle: &TopicHandle) {
        let mut topics = write(&self.topics);
        if topics.get(&handle.0.id).is_some_and(|t| Arc::ptr_eq(t, &handle.0)) {
            topics.remove(&handle.0.id);
            write(&self.evicted).insert(handle.0.id.clone());
        }
    }

    /// Forgets an ended match that left memory: cancelled, or no longer in the store.
    pub(crate) fn forget(&self, id: &MatchId) {
        if write(&self.evicted).remove(id) {
            self.generation.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        }
    }

    /// How many viewers (and parked groups) follow this topic now.
    pub(crate) fn followers(&self, handle: &TopicHandle) -> usize {
        handle.0.tx.receiver_count()
    }

    /// How many matches are in memory (ended ones that left it are not).
    pub(crate) fn in_memory(&self) -> usize {
        read(&self.topics).len()
    }

    /// A number that changes whenever the list of matches does.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Every match's id, sorted: those in memory and the ended ones that left it.
    pub(crate) fn ids(&self) -> Vec<MatchId> {
        let mut ids: Vec<MatchId> = read(&self.topics).keys().cloned().collect();
        ids.extend(read(&self.evicted).iter().cloned());
        ids.sort();
        ids.dedup();
        ids
    }

    /// Joins a match's stream. Without `from`, the first thing [`Subscription::next`] hands out
    /// is the snapshot; with `from = n`, every event after `n`, then live ones (or the snapshot
    /// when `n` lies beyond the match's last event). Also returns the state the subscription
    /// starts from, for protocols whose behaviour depends on it.
    pub(crate) fn join(
        self: &Arc<Self>,
        id: &str,
        format: Format,
        from: Option<Seq>,
        now: Millis,
    ) -> Result<(Subscription, Arc<Snapshot>), JoinError> {
        let not_found = || JoinError::NotFound(id.to_owned());
        let match_id = MatchId::parse(id).map_err(|_| not_found())?;
        let topic = self.topic(&match_id).ok_or_else(not_found)?;
        let (mut sub, snapshot) = self.subscribe(topic, format);
        let head = snapshot.state.seq;
        match from {
            Some(n) if n <= head => {
                sub.last = n;
                if snapshot.state.is_over() && n == head {
                    sub.ended = Some(ByeReason::MatchOver);
                }
            }
            _ => {
                sub.pending.push_back(snapshot.frame(format, now));
                if snapshot.state.is_over() {
                    sub.ended = Some(ByeReason::MatchOver);
                }
            }
        }
        Ok((sub, snapshot))
    }

    /// Follows the very incarnation `key` names again, after `last` (a viewer handed back from
    /// a parked group). If that incarnation was cancelled meanwhile, the stream ends with
    /// `cancelled`: a viewer never moves silently into a match created anew under the same id.
    pub(crate) fn rejoin(
        self: &Arc<Self>,
        key: &TopicKey,
        format: Format,
        last: Seq,
    ) -> Subscription {
        let (mut sub, snapshot) = self.subscribe(key.0.clone(), format);
        sub.last = last;
        // Handed back with the match's last event (a partial write of the final burst): its
        // stream ends there, as a join at the end of an ended match does.
        if snapshot.state.is_over() && last == snapshot.state.seq {
            sub.ended = Some(ByeReason::MatchOver);
        }
        sub
    }

    /// A subscription at the topic's current head, and the snapshot of that head.
    fn subscribe(
        self: &Arc<Self>,
        topic: Arc<Topic>,
        format: Format,
    ) -> (Subscription, Arc<Snapshot>) {
        let (rx, snapshot, closed) = {
            let current = lock(&topic.current);
            (topic.tx.subscribe(), current.snapshot.clone(), current.closed)
        };
        let head = snapshot.state.seq;
        let sub = Subscription {
            hub: self.clone(),
            topic,
            rx,
            format,
            last: head,
            target: head,
            pending: VecDeque::new(),
            held: None,
            ended: closed,
            failed_reads: 0,
        };
        (sub, snapshot)
    }

    /// Every frame of a match from now on, for a group of parked viewers.
    pub(crate) fn feed(&self, id: &MatchId) -> Option<Feed> {
        self.topic(id).map(|topic| Feed::new(topic.tx.subscribe(), TopicKey(topic)))
    }

    /// Hands a caught-up viewer over to a group fed by a [`Feed`] created before this call:
    /// `put(last)` runs with the match's lock held, so every event after `last` reaches that
    /// feed and none before it is missing. Gives the subscription back when the viewer is not
    /// caught up (or its match is over).
    pub(crate) fn park(
        &self,
        sub: Subscription,
        put: impl FnOnce(Seq),
    ) -> Result<(), Subscription> {
        let topic = sub.topic.clone();
        let current = lock(&topic.current);
        let state = &current.snapshot.state;
        if !sub.is_caught_up()
            || sub.last != state.seq
            || state.is_over()
            || current.closed.is_some()
        {
            return Err(sub);
        }
        put(sub.last);
        Ok(())
    }

    /// Whether this node knows every match there is: alone on its store, it restored every
    /// match at start and creates every new one itself, so a match it does not hold does not
    /// exist (no store read needed to say so). With other nodes, a match created elsewhere a
    /// moment ago is in the store before this node hears of it.
    pub(crate) fn knows_every_match(&self) -> bool {
        !self.shared
    }

    fn topic(&self, id: &MatchId) -> Option<Arc<Topic>> {
        read(&self.topics).get(id).cloned()
    }
}

#[cfg(test)]
mod tests;
