//! Unit tests of ingest's failure paths: an append that fails before or after it is stored (in
//! the middle of a chain of appends in flight), another writer getting to the log first, the
//! `after` precondition, replies arriving out of order, a match cancelled and created anew. They
//! run on [`FailingStore`], a [`MemoryStore`] with switches, and compare what a viewer receives
//! with what the store holds.

use std::collections::VecDeque;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::*;
use crate::hub::{Format, Next, Subscription};
use crate::model::EventKind;
use crate::state::RejectKind;
use crate::store::memory::tests::{append, info};
use crate::store::memory::MemoryStore;
use crate::store::{AppendTicket, Head, Page, Resumed, StoredMatch};
use crate::wire::{v2, ByeReason};

mod restore;

/// What an append decided by [`FailingStore`] goes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// Decided by the store as usual.
    None,
    /// Fails with `Backend`; nothing is stored.
    Before,
    /// Stored, but the caller is told `Backend`: the reply was lost on the way.
    After,
}

/// How an append was decided, by the first seq it carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Stored,
    Conflict { expected: Seq, current: Seq },
    Failed,
    Lost,
    Gone,
}

type Held = (MatchId, Append, oneshot::Sender<Result<(), StoreError>>);

#[derive(Default)]
struct Switches {
    /// What the next appends decided go through, in order; `Fault::None` once it runs out.
    script: VecDeque<Fault>,
    /// While `Some`, appends wait here undecided (in flight) until [`FailingStore::release`].
    held: Option<Vec<Held>>,
    decisions: Vec<(Seq, Outcome)>,
}

/// A [`MemoryStore`] that fails on purpose, holds appends in flight, and lets another writer
/// (another node) append behind ingest's back.
struct FailingStore {
    inner: MemoryStore,
    switches: Mutex<Switches>,
    /// How many appends are held.
    queued: watch::Sender<usize>,
}

impl FailingStore {
    fn new() -> FailingStore {
        FailingStore {
            inner: MemoryStore::new(),
            switches: Mutex::new(Switches::default()),
            queued: watch::Sender::new(0),
        }
    }

    fn script(&self, faults: &[Fault]) {
        lock(&self.switches).script = faults.iter().copied().collect();
    }

    /// From now on appends wait, undecided, for [`FailingStore::release`].
    fn hold(&self) {
        lock(&self.switches).held = Some(Vec::new());
    }

    async fn wait_queued(&self, n: usize) {
        self.queued.subscribe().wait_for(|q| *q >= n).await.unwrap();
    }

    /// Decides the held appends in the order they were queued (as a store decides one caller's
    /// appends), then replies to all of them, in that order or the reverse one (replies
    /// travelling on different connections); later appends are decided as they come. The tests
    /// submit nothing while this runs.
    async fn release(&self, reverse_replies: bool) {
        let held = lock(&self.switches).held.take().unwrap_or_default();
        self.queued.send_replace(0);
        let mut replies = Vec::new();
        for (id, append, reply) in held {
            replies.push((reply, self.decide(&id, append).await));
        }
        if reverse_replies {
            replies.reverse();
        }
        for (reply, result) in replies {
            let _ = reply.send(result);
        }
    }

    async fn decide(&self, id: &MatchId, a: Append) -> Result<(), StoreError> {
        let first = a.events.first().map_or(a.expect.seq, |e| e.seq);
        let fault = lock(&self.switches).script.pop_front().unwrap_or(Fault::None);
        let stored = match fault {
            Fault::Before => Err(StoreError::Backend("failed before storing".into())),
            Fault::None | Fault::After => append(&self.inner, id, a).await,
        };
        let outcome = match &stored {
            Ok(()) if fault == Fault::After => Outcome::Lost,
            Ok(()) => Outcome::Stored,
            Err(StoreError::SeqConflict { expected, current, .. }) => {
                Outcome::Conflict { expected: *expected, current: *current }
            }
            Err(StoreError::NotFound(_)) => Outcome::Gone,
            Err(_) => Outcome::Failed,
        };
        lock(&self.switches).decisions.push((first, outcome));
        match outcome {
            Outcome::Lost => Err(StoreError::Backend("stored, but the reply was lost".into())),
            _ => stored,
        }
    }

    /// Queues `append` undecided if appends are held; gives it back if not.
    fn try_hold(
        &self,
        id: &MatchId,
        append: Append,
    ) -> Result<oneshot::Receiver<Result<(), StoreError>>, Append> {
        let mut switches = lock(&self.switches);
        let Some(held) = switches.held.as_mut() else {
            return Err(append);
        };
        let (reply, decided) = oneshot::channel();
        held.push((id.clone(), append, reply));
        self.queued.send_replace(held.len());
        Ok(decided)
    }

    fn take_decisions(&self) -> Vec<(Seq, Outcome)> {
        std::mem::take(&mut lock(&self.switches).decisions)
    }

    /// Another node's events: validated by the rules against the stored match and appended
    /// straight to the log, where ingest can learn of them only by reading the store.
    async fn write_behind(&self, id: &MatchId, inputs: &[EventInput]) -> Vec<Event> {
        let stored = self.inner.load(id).await.unwrap().unwrap();
        let mut m = Match::new(stored.info);
        for ev in &stored.events {
            m.apply_stored(ev).unwrap();
        }
        let expect = Expect { seq: m.seq, tag: None, ts: None };
        let mut events = Vec::new();
        for input in inputs {
            let ts = now_ms();
            let data = m.apply(input.kind, &input.data, ts).unwrap();
            events.push(Event { seq: m.seq, ts, kind: input.kind, data });
        }
        let a = Append { inc: stored.inc, expect, tag: rand::random(), events: events.clone() };
        append(&self.inner, id, a).await.unwrap();
        events
    }
}

#[async_trait]
impl Store for FailingStore {
    async fn create_match(&self, info: &MatchInfo) -> Result<Incarnation, StoreError> {
        self.inner.create_match(info).await
    }

    async fn submit_append(
        &self,
        id: &MatchId,
        append: Append,
    ) -> Result<AppendTicket, StoreError> {
        match self.try_hold(id, append) {
            Ok(decided) => Ok(AppendTicket(Box::pin(async move {
                decided.await.unwrap_or_else(|_| Err(StoreError::Backend("never decided".into())))
            }))),
            Err(append) => {
                let result = self.decide(id, append).await;
                Ok(AppendTicket(Box::pin(std::future::ready(result))))
            }
        }
    }

    async fn cancel_match(&self, id: &MatchId, inc: Incarnation) -> Result<(), StoreError> {
        self.inner.cancel_match(id, inc).await
    }

    async fn load_all(&self) -> Result<Vec<StoredMatch>, StoreError> {
        self.inner.load_all().await
    }

    async fn load(&self, id: &MatchId) -> Result<Option<StoredMatch>, StoreError> {
        self.inner.load(id).await
    }

    async fn load_live(&self) -> Result<Vec<Resumed>, StoreError> {
        self.inner.load_live().await
    }

    async fn resume(&self, id: &MatchId) -> Result<Option<Resumed>, StoreError> {
        self.inner.resume(id).await
    }

    async fn ended_ids(&self) -> Result<Vec<MatchId>, StoreError> {
        self.inner.ended_ids().await
    }

    fn save_state(&self, inc: Incarnation, state: &Match) {
        self.inner.save_state(inc, state)
    }

    async fn heads(&self) -> Result<Vec<Head>, StoreError> {
        self.inner.heads().await
    }

    async fn history(&self, id: &MatchId, after: Seq, limit: usize) -> Result<Page, StoreError> {
        self.inner.history(id, after, limit).await
    }

    async fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn health(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

const START: &str = r#"{"home_players":[[25,"Albil"],[2,"Desabato"],[18,"Fernandez"]],
    "visit_players":{"7":"Luna","6":"Martinez","3":"Blengio"}}"#;

fn input(kind: &str, json: &str) -> EventInput {
    EventInput { kind: EventKind::parse(kind).unwrap(), data: serde_json::from_str(json).unwrap() }
}

fn goal(team: &str, player: u32) -> EventInput {
    input("goal", &format!(r#"{{"team":"{team}","player":{player}}}"#))
}

fn red(team: &str, player: u32) -> EventInput {
    input("card", &format!(r#"{{"card":"red","team":"{team}","player":{player}}}"#))
}

/// What the watcher is told, in a form the tests compare.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    Ok(Vec<Seq>),
    Rejected { index: usize, kind: &'static str, why: RejectKind },
    NotAt { after: Seq, current: Seq },
    NotFound,
    Backend,
}

fn answer(r: Result<Vec<Accepted>, IngestError>) -> Answer {
    match r {
        Ok(accepted) => Answer::Ok(accepted.iter().map(|a| a.seq).collect()),
        Err(IngestError::Rejected { index, kind, rejection }) => {
            Answer::Rejected { index, kind, why: rejection.kind }
        }
        Err(IngestError::NotAt { after, current, .. }) => Answer::NotAt { after, current },
        Err(IngestError::NotFound(_)) => Answer::NotFound,
        Err(IngestError::Store(StoreError::Backend(_))) => Answer::Backend,
        Err(e) => panic!("unexpected answer: {e}"),
    }
}

/// The v2 lines a viewer must receive for `events`.
fn frames(events: &[Event]) -> Vec<Bytes> {
    events.iter().map(v2::event_frame).collect()
}

/// Every frame the viewer has ready now; a goodbye here is a failure.
fn ready(sub: &mut Subscription) -> Vec<Bytes> {
    let mut out = Vec::new();
    while let Some(next) = sub.try_next() {
        match next {
            Next::Data(b) => out.push(b),
            Next::End(reason) => panic!("viewer told {reason:?} after {} frames", out.len()),
        }
    }
    out
}

/// What the viewer gets next; it must get something soon.
async fn next(sub: &mut Subscription) -> Next {
    let next = tokio::time::timeout(Duration::from_secs(10), sub.next()).await;
    next.unwrap_or_else(|_| panic!("the viewer got nothing for 10 s"))
}

/// One node (ingest and hub) on a [`FailingStore`], with match elp-tig created and started.
struct Node {
    store: Arc<FailingStore>,
    hub: Arc<Hub>,
    ingest: Arc<Ingest>,
    id: MatchId,
}

impl Node {
    async fn started() -> Node {
        let store = Arc::new(FailingStore::new());
        let hub = Arc::new(Hub::new(store.clone(), 64, 1_000));
        let ingest = Arc::new(Ingest::restore(store.clone(), hub.clone()).await.unwrap());
        let id = ingest.create(info("elp", "tig")).await.unwrap();
        let node = Node { store, hub, ingest, id };
        assert_eq!(node.publish(&[input("start", START)], None).await, Answer::Ok(vec![1]));
        node.store.take_decisions();
        node
    }

    async fn publish(&self, inputs: &[EventInput], after: Option<Seq>) -> Answer {
        answer(self.ingest.publish(&self.id, inputs, after).await)
    }

    /// A request in flight on its own task; waits until its append is held by the store.
    async fn spawn_held(&self, inputs: Vec<EventInput>, queued: usize) -> JoinHandle<Answer> {
        let (ingest, id) = (self.ingest.clone(), self.id.clone());
        let task = tokio::spawn(async move { answer(ingest.publish(&id, &inputs, None).await) });
        self.store.wait_queued(queued).await;
        task
    }

    /// A v2 viewer resuming after `from`.
    fn watch(&self, from: Seq) -> Subscription {
        self.hub.join(self.id.as_str(), Format::V2, Some(from), 0).unwrap().0
    }

    fn snapshot(&self) -> Arc<Match> {
        self.hub.current(&self.id).unwrap().1.state.clone()
    }

    async fn stored(&self) -> Vec<Event> {
        self.store.history(&self.id, 0, 1_000).await.unwrap().events
    }

    /// The store holds seqs 1..=`last`, the viewer has exactly the frames of those after `from`
    /// ready, and the snapshot stands at `last`. Returns the stored events.
    async fn assert_log(&self, viewer: &mut Subscription, from: Seq, last: Seq) -> Vec<Event> {
        let events = self.stored().await;
        let seqs: Vec<Seq> = events.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (1..=last).collect::<Vec<_>>());
        assert_eq!(ready(viewer), frames(&events[from as usize..]));
        assert_eq!(self.snapshot().seq, last);
        events
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failure_inside_a_chain_of_appends_publishes_exactly_what_was_stored() {
    let n = Node::started().await;
    let mut viewer = n.watch(1);
    // Five requests in flight at once, each built on the one before (seqs 2..=6); the scorers
    // tell them apart.
    let scorers = [("tig", 7), ("tig", 6), ("tig", 3), ("elp", 2), ("elp", 18)];
    n.store.hold();
    let mut tasks = Vec::new();
    for (i, (team, player)) in scorers.iter().enumerate() {
        tasks.push(n.spawn_held(vec![goal(team, *player)], i + 1).await);
    }
    // The third fails before it is stored; the two built on it are refused by the store.
    n.store.script(&[Fault::None, Fault::None, Fault::Before]);
    n.store.release(false).await;
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.unwrap());
    }

    assert_eq!(answers[..3], [Answer::Ok(vec![2]), Answer::Ok(vec![3]), Answer::Backend]);
    // The two after it: validated again on the log, stored at 4 and 5 in either order.
    let (four, five) = (Answer::Ok(vec![4]), Answer::Ok(vec![5]));
    assert!(answers[3..] == [four.clone(), five.clone()] || answers[3..] == [five, four]);
    let decisions = n.store.take_decisions();
    assert_eq!(
        decisions[..5],
        [
            (2, Outcome::Stored),
            (3, Outcome::Stored),
            (4, Outcome::Failed),
            (5, Outcome::Conflict { expected: 4, current: 3 }),
            (6, Outcome::Conflict { expected: 5, current: 3 }),
        ]
    );
    // Their retries may conflict again, depending on how they interleave; nothing else.
    let retries: Vec<(Seq, Outcome)> = decisions[5..]
        .iter()
        .copied()
        .filter(|(_, o)| !matches!(o, Outcome::Conflict { .. }))
        .collect();
    assert_eq!(retries, [(4, Outcome::Stored), (5, Outcome::Stored)]);

    // The viewer got every acknowledged event once, in order, and nothing else (each publish
    // returned only once its event was in the hub). Each acknowledged seq holds that request's
    // goal; the refused one is nowhere.
    let events = n.assert_log(&mut viewer, 1, 5).await;
    for (answer, (team, player)) in answers.iter().zip(scorers) {
        let Answer::Ok(seqs) = answer else { continue };
        let data = &events[seqs[0] as usize - 1].data;
        let scorer = (data.team.as_ref().unwrap().as_str(), data.player.as_ref().unwrap().number);
        assert_eq!(scorer, (team, player));
    }
    assert!(events.iter().all(|e| e.data.player.as_ref().is_none_or(|p| p.number != 3)));
    assert_eq!((n.snapshot().home.score, n.snapshot().visit.score), (2, 2));

    assert_eq!(n.publish(&[goal("tig", 3)], None).await, Answer::Ok(vec![6]));
    n.assert_log(&mut viewer, 5, 6).await;
}

#[tokio::test]
async fn another_writer_first_then_validated_again_on_the_log() {
    let n = Node::started().await;
    let mut viewer = n.watch(1);
    // The other node wrote one event at the seq this node's append began with.
    let conflict = |seq| (seq, Outcome::Conflict { expected: seq - 1, current: seq });
    let invalid = |index, kind| Answer::Rejected { index, kind, why: RejectKind::Invalid };

    // Another node sends Albil off (seq 2); this node's goal, validated at seq 1, conflicts,
    // catches up and lands at 3.
    let theirs = n.store.write_behind(&n.id, &[red("elp", 25)]).await;
    assert_eq!(n.publish(&[goal("tig", 7)], None).await, Answer::Ok(vec![3]));
    assert_eq!(n.store.take_decisions(), [conflict(2), (3, Outcome::Stored)]);
    assert_eq!(n.assert_log(&mut viewer, 1, 3).await[1], theirs[0]);
    // Byte for byte, what the viewer got first:
    let data = r#"{"player":{"number":25,"name":"Albil"},"card":"red","team":"elp"}"#;
    let line = format!(r#"{{"seq":2,"ts":{},"kind":"card","data":{data}}}"#, theirs[0].ts);
    assert_eq!(frames(&theirs)[0], format!("{line}\n"));

    // Two requests in flight, the second built on the first (a substitute comes on, then is
    // sent off), when another node sends off the player going out. The first no longer applies;
    // the second is refused by the store although seq 4 is there now (it names the first by its
    // tag), and no longer applies on the log either.
    n.store.hold();
    let sub = r#"{"team":"elp","player_in":{"number":21,"name":"Silva"},"player_out":18}"#;
    let first = n.spawn_held(vec![input("substitution", sub)], 1).await;
    let second = n.spawn_held(vec![red("elp", 21)], 2).await;
    n.store.write_behind(&n.id, &[red("elp", 18)]).await;
    n.store.release(false).await;
    assert_eq!(first.await.unwrap(), invalid(0, "substitution"));
    assert_eq!(second.await.unwrap(), invalid(0, "card"));
    let tagged = (5, Outcome::Conflict { expected: 4, current: 4 });
    assert_eq!(n.store.take_decisions(), [conflict(4), tagged]);
    n.assert_log(&mut viewer, 3, 4).await;

    // A red card for a player the other node sent off meanwhile no longer applies.
    n.store.write_behind(&n.id, &[red("tig", 7)]).await;
    assert_eq!(n.publish(&[red("tig", 7)], None).await, invalid(0, "card"));
    assert_eq!(n.store.take_decisions(), [conflict(5)]);
    // All or none: a goal before an event that no longer applies is not stored either.
    n.store.write_behind(&n.id, &[red("tig", 6)]).await;
    assert_eq!(n.publish(&[goal("elp", 2), red("tig", 6)], None).await, invalid(1, "card"));
    assert_eq!(n.store.take_decisions(), [conflict(6)]);
    n.assert_log(&mut viewer, 4, 6).await;

    // Nothing after another node's stop.
    n.store.write_behind(&n.id, &[input("stop", "{}")]).await;
    let over = Answer::Rejected { index: 0, kind: "goal", why: RejectKind::Conflict };
    assert_eq!(n.publish(&[goal("elp", 2)], None).await, over);
    assert_eq!(n.store.take_decisions(), [conflict(7)]);
    n.assert_log(&mut viewer, 6, 7).await;
    assert_eq!(next(&mut viewer).await, Next::End(ByeReason::MatchOver));
    assert_eq!((n.snapshot().home.score, n.snapshot().visit.score), (0, 1));
}

#[tokio::test]
async fn after_applies_only_where_the_log_stands() {
    let n = Node::started().await;
    let mut viewer = n.watch(1);
    let not_at = |after, current| Answer::NotAt { after, current };
    assert_eq!(n.publish(&[goal("tig", 7)], Some(0)).await, not_at(0, 1));
    assert_eq!(n.publish(&[goal("tig", 7)], Some(9)).await, not_at(9, 1));
    assert_eq!(n.publish(&[goal("tig", 7)], Some(1)).await, Answer::Ok(vec![2]));
    // The same request again (its answer lost): not applied twice.
    assert_eq!(n.publish(&[goal("tig", 7)], Some(1)).await, not_at(1, 2));
    n.assert_log(&mut viewer, 1, 2).await;

    // Another node wrote 3: a watcher that read it there publishes after 3, though this node
    // has not learned of 3 yet.
    n.store.write_behind(&n.id, &[input("comment", r#"{"text":"from elsewhere"}"#)]).await;
    assert_eq!(n.publish(&[goal("tig", 6)], Some(3)).await, Answer::Ok(vec![4]));
    // One that is behind is told where the log ends, not where this node last saw it end.
    n.store.write_behind(&n.id, &[goal("elp", 2)]).await;
    assert_eq!(n.publish(&[goal("tig", 6)], Some(4)).await, not_at(4, 5));
    n.assert_log(&mut viewer, 2, 5).await;
}

#[tokio::test]
async fn a_lost_reply_is_learned_from_the_log_once() {
    let n = Node::started().await;
    let mut viewer = n.watch(1);

    // Stored, but the watcher is told it failed; viewers see nothing yet (the log view has not
    // learned it).
    n.store.script(&[Fault::After]);
    assert_eq!(n.publish(&[goal("tig", 7)], None).await, Answer::Backend);
    assert_eq!(n.stored().await.len(), 2);
    assert_eq!(ready(&mut viewer), Vec::<Bytes>::new());
    assert_eq!(n.snapshot().seq, 1);
    // The next request conflicts with it, catches up and continues after it.
    assert_eq!(n.publish(&[goal("elp", 2)], None).await, Answer::Ok(vec![3]));
    let conflict = Outcome::Conflict { expected: 1, current: 2 };
    let decided = [(2, Outcome::Lost), (2, conflict), (3, Outcome::Stored)];
    assert_eq!(n.store.take_decisions(), decided);
    n.assert_log(&mut viewer, 1, 3).await;

    // A lost reply with a request in flight built on it: that one is stored and acknowledged,
    // and the lost one's retry (with `after`) finds both there.
    n.store.hold();
    let lost = n.spawn_held(vec![goal("tig", 6)], 1).await;
    let chained = n.spawn_held(vec![goal("tig", 3)], 2).await;
    n.store.script(&[Fault::After]);
    n.store.release(false).await;
    assert_eq!(lost.await.unwrap(), Answer::Backend);
    assert_eq!(chained.await.unwrap(), Answer::Ok(vec![5]));
    assert_eq!(n.store.take_decisions(), [(4, Outcome::Lost), (5, Outcome::Stored)]);
    // Acknowledged once in the hub, after the lost one (read from the store to fill the gap).
    n.assert_log(&mut viewer, 3, 5).await;
    let retried = n.publish(&[goal("tig", 6)], Some(3)).await;
    assert_eq!(retried, Answer::NotAt { after: 3, current: 5 });
    assert_eq!(n.publish(&[goal("elp", 18)], None).await, Answer::Ok(vec![6]));
    n.assert_log(&mut viewer, 5, 6).await;
}

/// Current-thread: the replies wake the publishers in the order they are sent.
#[tokio::test]
async fn an_event_ahead_of_a_gap_reaches_viewers_when_the_gap_fills() {
    let n = Node::started().await;
    let mut viewer = n.watch(1);
    n.store.hold();
    let first = n.spawn_held(vec![goal("tig", 7)], 1).await;
    let second = n.spawn_held(vec![goal("elp", 2)], 2).await;
    // Both stored; the second's reply arrives first, so its event waits for seq 2.
    n.store.release(true).await;
    assert_eq!(first.await.unwrap(), Answer::Ok(vec![2]));
    // Seq 2 filled the gap: seq 3 went out with it, not after a timeout and a store read.
    n.assert_log(&mut viewer, 1, 3).await;
    assert_eq!(second.await.unwrap(), Answer::Ok(vec![3]));
}

#[tokio::test]
async fn a_match_created_anew_reaches_none_of_the_old_viewers() {
    let n = Node::started().await;
    let old = [goal("tig", 7), goal("tig", 6), goal("elp", 2)];
    assert_eq!(n.publish(&old, None).await, Answer::Ok(vec![2, 3, 4]));
    let mut live = n.watch(4);
    // Still to catch up from 0: it will read the history of the new incarnation.
    let mut behind = n.watch(0);

    // An append of the old incarnation still in flight while it is cancelled and created anew.
    n.store.hold();
    let late = n.spawn_held(vec![goal("elp", 18)], 1).await;
    n.ingest.cancel(&n.id).await.unwrap();
    assert_eq!(live.try_next(), Some(Next::End(ByeReason::Cancelled)));
    assert_eq!(n.ingest.create(info("elp", "tig")).await.unwrap(), n.id);
    let mut fresh = n.watch(0);
    n.store.release(false).await;
    assert_eq!(late.await.unwrap(), Answer::NotFound);
    assert_eq!(n.store.take_decisions(), [(2, Outcome::Stored), (5, Outcome::Gone)]);

    let new = [input("start", START), goal("elp", 25), goal("elp", 2), goal("tig", 3)];
    assert_eq!(n.publish(&new, None).await, Answer::Ok(vec![1, 2, 3, 4]));
    n.assert_log(&mut fresh, 0, 4).await;
    assert_eq!((n.snapshot().home.score, n.snapshot().visit.score), (2, 1));
    // The old viewers: the one at the head has had its goodbye and gets nothing more; the one
    // behind finds another incarnation in the history and says goodbye too.
    assert_eq!(live.try_next(), None);
    assert_eq!(next(&mut behind).await, Next::End(ByeReason::Cancelled));
    assert_eq!(behind.try_next(), None);
}

#[tokio::test]
async fn an_ended_match_leaves_memory_once_nobody_follows_it_and_comes_back_from_its_saved_state() {
    let store = Arc::new(MemoryStore::new());
    let hub = Arc::new(Hub::new(store.clone(), 64, 1_000));
    let ingest =
        Ingest::restore(store.clone(), hub.clone()).await.unwrap().keep_ended(Duration::ZERO);
    let id = ingest.create(info("elp", "tig")).await.unwrap();
    ingest.publish(&id, &[input("start", START)], None).await.unwrap();
    let viewer = hub.join(id.as_str(), Format::V2, None, 0).unwrap().0;
    ingest.publish(&id, &[input("stop", "{}")], None).await.unwrap();
    let ended = hub.current(&id).unwrap().1.state.clone();
    assert_eq!(ingest.evict_ended(), 0, "a viewer still follows it");
    assert_eq!(ingest.len(), 1);
    drop(viewer);
    assert_eq!(ingest.evict_ended(), 1);
    assert_eq!((ingest.len(), hub.current(&id).is_none()), (0, true));
    assert_eq!(hub.ids(), vec![id.clone()], "still listed");
    // Its final state was saved when it ended: read back without replaying a single event.
    let saved = store.resume(&id).await.unwrap().unwrap();
    assert_eq!((&saved.state, saved.events.len()), (&*ended, 0));
    assert!(ingest.revive(&id).await.unwrap());
    assert_eq!(hub.current(&id).unwrap().1.state, ended);
    // A restart knows it without holding it.
    let again =
        Ingest::restore(store.clone(), Arc::new(Hub::new(store.clone(), 64, 1_000))).await.unwrap();
    assert_eq!(again.len(), 0);
    assert!(again.revive(&id).await.unwrap());
    assert!(!again.revive(&MatchId::parse("abc-def-2020-01-01").unwrap()).await.unwrap());
}

#[tokio::test]
async fn a_match_ended_but_never_marked_is_marked_by_the_node_that_finds_it() {
    // Ended in the log, its state never saved (a node stopped in between, or an older store).
    let store = Arc::new(MemoryStore::new());
    let m = info("elp", "tig");
    let inc = store.create_match(&m).await.unwrap();
    let mut state = Match::new(m.clone());
    let mut events = Vec::new();
    for (kind, data) in [("start", START), ("stop", "{}")] {
        let input = input(kind, data);
        let data = state.apply(input.kind, &input.data, 1_000).unwrap();
        events.push(Event { seq: state.seq, ts: 1_000, kind: input.kind, data });
    }
    let append_all = crate::store::memory::tests::after_seq(inc, events);
    append(&*store, &m.id, append_all).await.unwrap();
    assert!(store.ended_ids().await.unwrap().is_empty());

    let hub = Arc::new(Hub::new(store.clone(), 64, 1_000));
    let ingest = Ingest::restore(store.clone(), hub.clone()).await.unwrap();
    assert_eq!(ingest.len(), 0, "not held: it has ended");
    assert_eq!(hub.ids(), vec![m.id.clone()]);
    assert_eq!(store.ended_ids().await.unwrap(), vec![m.id.clone()], "marked ended");
    let saved = store.resume(&m.id).await.unwrap().unwrap();
    assert_eq!((&saved.state, saved.events.len()), (&state, 0), "its state saved");
    assert!(ingest.revive(&m.id).await.unwrap());
    assert_eq!(hub.current(&m.id).unwrap().1.state.as_ref(), &state);
}
