//! `MemoryStore`: the [`Store`] kept in process memory, for tests. It has exactly the semantics of
//! the SQLite store (seq checks, cancel, `Exists`, errors through the ticket) but nothing survives
//! the process. It applies [`check_append`], the one rule every store shares.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;

use super::{check_append, Append, AppendTicket, Head, Incarnation, Page, Store, StoreError};
use super::{Resumed, StoredMatch};
use crate::model::{Match, MatchId, MatchInfo, Seq};

/// The state behind the lock. Matches are keyed by their incarnation, a creation counter like
/// SQLite's rowid, so `load_all` lists them in creation order in both stores.
#[derive(Default)]
struct Inner {
    next_inc: Incarnation,
    live: HashMap<MatchId, Incarnation>,
    matches: BTreeMap<Incarnation, (StoredMatch, Option<u64>)>,
    /// Saved states by incarnation (as SQLite keeps them beside the match's row).
    saved: HashMap<Incarnation, Match>,
}

impl Inner {
    fn live_mut(
        &mut self,
        id: &MatchId,
        inc: Option<Incarnation>,
    ) -> Result<&mut (StoredMatch, Option<u64>), StoreError> {
        self.live
            .get(id)
            .filter(|live| inc.is_none_or(|inc| inc == **live))
            .and_then(|key| self.matches.get_mut(key))
            .ok_or_else(|| StoreError::NotFound(id.clone()))
    }

    fn append(&mut self, id: &MatchId, append: Append) -> Result<(), StoreError> {
        let (stored, tag) = self.live_mut(id, Some(append.inc))?;
        let last = stored.events.last().map_or(0, |e| e.seq);
        check_append(id, last, *tag, &append)?;
        if !append.events.is_empty() {
            *tag = Some(append.tag);
        }
        stored.events.extend(append.events);
        Ok(())
    }

    fn resumed(&self, stored: &StoredMatch) -> Resumed {
        let state = self.saved.get(&stored.inc).cloned();
        let state = state.unwrap_or_else(|| Match::new(stored.info.clone()));
        let events = stored.events.iter().filter(|e| e.seq > state.seq).cloned().collect();
        Resumed { inc: stored.inc, state, events }
    }

    fn ended(&self, inc: Incarnation) -> bool {
        self.saved.get(&inc).is_some_and(Match::is_over)
    }
}

/// A [`Store`] in memory (tests only: nothing is durable). Every operation completes before it
/// returns, so an [`AppendTicket`] from it is already resolved.
#[derive(Default)]
pub(crate) struct MemoryStore {
    inner: Mutex<Inner>,
}

impl MemoryStore {
    /// An empty store.
    pub(crate) fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave `Inner` half-updated (every change is one
        // insert, remove or extend after the checks), so a poisoned lock is still consistent.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl Store for MemoryStore {
    fn health(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn create_match(&self, info: &MatchInfo) -> Result<Incarnation, StoreError> {
        let mut inner = self.lock();
        if inner.live.contains_key(&info.id) {
            return Err(StoreError::Exists(info.id.clone()));
        }
        inner.next_inc += 1;
        let inc = inner.next_inc;
        inner.live.insert(info.id.clone(), inc);
        inner
            .matches
            .insert(inc, (StoredMatch { info: info.clone(), inc, events: Vec::new() }, None));
        Ok(inc)
    }

    async fn submit_append(
        &self,
        id: &MatchId,
        append: Append,
    ) -> Result<AppendTicket, StoreError> {
        // Like SQLite, refusals (NotFound, SeqConflict) come through the ticket.
        let result = self.lock().append(id, append);
        Ok(AppendTicket(Box::pin(std::future::ready(result))))
    }

    async fn cancel_match(&self, id: &MatchId, inc: Incarnation) -> Result<(), StoreError> {
        let mut inner = self.lock();
        inner.live_mut(id, Some(inc))?;
        inner.live.remove(id);
        // SQLite keeps a cancelled match's rows but never shows them; dropping them here is the
        // same as far as any caller can tell.
        inner.matches.remove(&inc);
        inner.saved.remove(&inc);
        Ok(())
    }

    async fn load_live(&self) -> Result<Vec<Resumed>, StoreError> {
        let inner = self.lock();
        Ok(inner
            .matches
            .values()
            .filter(|(m, _)| !inner.ended(m.inc))
            .map(|(m, _)| inner.resumed(m))
            .collect())
    }

    async fn resume(&self, id: &MatchId) -> Result<Option<Resumed>, StoreError> {
        let mut inner = self.lock();
        let stored = inner.live_mut(id, None).ok().map(|(m, _)| m.clone());
        Ok(stored.map(|m| inner.resumed(&m)))
    }

    async fn ended_ids(&self) -> Result<Vec<MatchId>, StoreError> {
        let inner = self.lock();
        Ok(inner
            .matches
            .values()
            .filter(|(m, _)| inner.ended(m.inc))
            .map(|(m, _)| m.info.id.clone())
            .collect())
    }

    fn save_state(&self, inc: Incarnation, state: &Match) {
        let mut inner = self.lock();
        let head = inner.matches.get(&inc).map(|(m, _)| m.events.last().map_or(0, |e| e.seq));
        let newer = inner.saved.get(&inc).is_none_or(|s| s.seq <= state.seq);
        if head.is_some_and(|head| newer && state.seq <= head) {
            inner.saved.insert(inc, state.clone());
        }
    }

    #[cfg(test)]
    async fn load_all(&self) -> Result<Vec<StoredMatch>, StoreError> {
        Ok(self.lock().matches.values().map(|(m, _)| m.clone()).collect())
    }

    #[cfg(test)]
    async fn load(&self, id: &MatchId) -> Result<Option<StoredMatch>, StoreError> {
        Ok(self.lock().live_mut(id, None).ok().map(|(m, _)| m.clone()))
    }

    async fn heads(&self) -> Result<Vec<Head>, StoreError> {
        let inner = self.lock();
        Ok(inner
            .matches
            .values()
            .filter(|(m, _)| !inner.ended(m.inc))
            .map(|(m, _)| Head {
                id: m.info.id.clone(),
                inc: m.inc,
                seq: m.events.last().map_or(0, |e| e.seq),
                ts: None,
            })
            .collect())
    }

    async fn history(&self, id: &MatchId, after: Seq, limit: usize) -> Result<Page, StoreError> {
        let mut inner = self.lock();
        let (stored, _) = inner.live_mut(id, None)?;
        let events = stored.events.iter().filter(|e| e.seq > after).take(limit).cloned().collect();
        Ok(Page { inc: stored.inc, events })
    }

    async fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::Event;
    use crate::model::{Date, EventData, EventKind, Player, Team, TeamId};
    use crate::store::{check_seqs, Expect, LogEntry};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// A store that counts history reads, and makes each take a while so that readers overlap.
    #[derive(Default)]
    pub(crate) struct Counting {
        inner: MemoryStore,
        pub(crate) reads: AtomicUsize,
        /// History reads running now, and the most that ever ran at once.
        running: AtomicUsize,
        pub(crate) most_at_once: AtomicUsize,
    }

    #[async_trait]
    impl Store for Counting {
        async fn create_match(&self, info: &MatchInfo) -> Result<Incarnation, StoreError> {
            self.inner.create_match(info).await
        }
        async fn submit_append(&self, id: &MatchId, a: Append) -> Result<AppendTicket, StoreError> {
            self.inner.submit_append(id, a).await
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
        async fn history(
            &self,
            id: &MatchId,
            after: Seq,
            limit: usize,
        ) -> Result<Page, StoreError> {
            self.reads.fetch_add(1, Ordering::Relaxed);
            let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.most_at_once.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(50)).await;
            self.running.fetch_sub(1, Ordering::SeqCst);
            self.inner.history(id, after, limit).await
        }
        async fn flush(&self) -> Result<(), StoreError> {
            Ok(())
        }
        fn health(&self) -> Result<(), StoreError> {
            Ok(())
        }
        fn follow(&self) -> Option<tokio::sync::mpsc::Receiver<LogEntry>> {
            None
        }
    }

    pub(crate) fn info(home: &str, visit: &str) -> MatchInfo {
        let home = TeamId::parse(home).unwrap();
        let visit = TeamId::parse(visit).unwrap();
        let date = Date::parse("2011-09-10").unwrap();
        MatchInfo {
            id: MatchId::new(&home, &visit, &date),
            home: Team { id: home, name: Some("El Paso".into()), division: Some("1a".into()) },
            visit: Team { id: visit, name: None, division: None },
            start_date: date,
            stadium: Some("Estadio \"Azteca\"".into()),
        }
    }

    /// An event with some data, so a round trip through JSON is exercised.
    pub(crate) fn event(seq: Seq) -> Event {
        Event {
            seq,
            ts: 1_316_094_531_000 + seq as i64,
            kind: if seq.is_multiple_of(2) { EventKind::Goal } else { EventKind::Comment },
            data: EventData {
                player: Some(Player { number: seq as u32, name: "Luna".into() }),
                team: Some(TeamId::parse("tig").unwrap()),
                text: Some(format!("event {seq}")),
                ..EventData::default()
            },
        }
    }

    fn events(seqs: std::ops::RangeInclusive<Seq>) -> Vec<Event> {
        seqs.map(event).collect()
    }

    /// An append of `evs` to incarnation `inc`, expecting the log to end just before them.
    pub(crate) fn after_seq(inc: Incarnation, evs: Vec<Event>) -> Append {
        let seq = evs.first().map_or(0, |e| e.seq - 1);
        Append {
            inc,
            expect: Expect { seq, tag: None, ts: None },
            tag: rand::random(),
            events: evs,
        }
    }

    pub(crate) async fn append(
        store: &dyn Store,
        id: &MatchId,
        append: Append,
    ) -> Result<(), StoreError> {
        store.submit_append(id, append).await?.await
    }

    fn conflict(r: Result<(), StoreError>) -> (Seq, Seq) {
        match r {
            Err(StoreError::SeqConflict { expected, current, .. }) => (expected, current),
            other => panic!("expected SeqConflict, got {other:?}"),
        }
    }

    /// The behaviour every store must show; run against each implementation. Ids are made
    /// from `prefix` so that stores shared between tests (a Redis) do not collide.
    pub(crate) async fn contract(store: &dyn Store, prefix: &str) {
        let a = info(&format!("{prefix}a"), "tig");
        let b = info(&format!("{prefix}b"), "fcb");
        let unknown = info(&format!("{prefix}z"), "yyy").id;

        let ia = store.create_match(&a).await.unwrap();
        let ib = store.create_match(&b).await.unwrap();
        // An incarnation is never reused for an id (see below); two ids may have the same one
        // (Redis counts them per id, on the id's own shard).
        assert!(matches!(store.create_match(&a).await, Err(StoreError::Exists(id)) if id == a.id));

        // seq 1..3 in two calls; the other match is independent.
        append(store, &a.id, after_seq(ia, events(1..=2))).await.unwrap();
        append(store, &a.id, after_seq(ia, events(3..=3))).await.unwrap();
        append(store, &b.id, after_seq(ib, events(1..=1))).await.unwrap();

        // Appends that expect another end of the log, or whose events do not follow it: none
        // of it is stored.
        assert_eq!(conflict(append(store, &a.id, after_seq(ia, events(5..=5))).await), (4, 3));
        assert_eq!(conflict(append(store, &a.id, after_seq(ia, events(3..=4))).await), (2, 3));
        let gap = Append { events: vec![event(4), event(6)], ..after_seq(ia, events(4..=4)) };
        assert_eq!(conflict(append(store, &a.id, gap).await).1, 3);
        assert_eq!(store.history(&a.id, 0, 100).await.unwrap().events, events(1..=3));

        // A chain of this writer's own appends: the second names the first by its tag.
        let first = after_seq(ia, events(4..=4));
        let chained = Append {
            expect: Expect { seq: 4, tag: Some(first.tag), ts: None },
            ..after_seq(ia, events(5..=5))
        };
        let wrong_tag = Append {
            expect: Expect { seq: 5, tag: Some(first.tag), ts: None },
            ..after_seq(ia, events(6..=6))
        };
        append(store, &a.id, first).await.unwrap();
        append(store, &a.id, chained).await.unwrap();
        // Seq 5 is there, but not written by the append this one names.
        assert_eq!(conflict(append(store, &a.id, wrong_tag).await), (5, 5));

        let page = store.history(&a.id, 0, 100).await.unwrap();
        assert_eq!((page.inc, page.events), (ia, events(1..=5)));
        assert_eq!(store.history(&a.id, 2, 100).await.unwrap().events, events(3..=5));
        assert_eq!(store.history(&a.id, 1, 2).await.unwrap().events, events(2..=3));
        assert_eq!(store.history(&a.id, 5, 100).await.unwrap().events, Vec::new());
        assert_eq!(store.history(&a.id, 0, 0).await.unwrap().events, Vec::new());

        let mine = |all: Vec<StoredMatch>| -> Vec<StoredMatch> {
            all.into_iter().filter(|m| m.info.id.as_str().starts_with(prefix)).collect()
        };
        let all = mine(store.load_all().await.unwrap());
        let stored_a = StoredMatch { info: a.clone(), inc: ia, events: events(1..=5) };
        let stored_b = StoredMatch { info: b.clone(), inc: ib, events: events(1..=1) };
        assert_eq!(all, vec![stored_a.clone(), stored_b.clone()]);
        assert_eq!(store.load(&a.id).await.unwrap(), Some(stored_a));
        assert_eq!(store.load(&unknown).await.unwrap(), None);
        let mut heads: Vec<Head> = store
            .heads()
            .await
            .unwrap()
            .into_iter()
            .filter(|h| h.id.as_str().starts_with(prefix))
            .collect();
        heads.sort_by(|x, y| x.id.cmp(&y.id));
        // A store that keeps the last event's ts gives that very event's.
        for h in &mut heads {
            let last = if h.id == a.id { event(5) } else { event(1) };
            assert!(h.ts.is_none_or(|ts| ts == last.ts), "{h:?}");
            h.ts = None;
        }
        assert_eq!(
            heads,
            vec![
                Head { id: a.id.clone(), inc: ia, seq: 5, ts: None },
                Head { id: b.id.clone(), inc: ib, seq: 1, ts: None }
            ]
        );

        // Cancel: gone from history and load_all; the id can be created anew, starting at 1,
        // as another incarnation that nothing of the old one reaches.
        assert!(matches!(
            store.cancel_match(&a.id, ia + ib + 100).await,
            Err(StoreError::NotFound(_))
        ));
        store.cancel_match(&a.id, ia).await.unwrap();
        assert!(matches!(store.history(&a.id, 0, 10).await, Err(StoreError::NotFound(_))));
        // Cancelling it again: NotFound, or Ok from a store that takes it for the same cancel
        // sent again after a lost answer (Redis); never anything else.
        let again = store.cancel_match(&a.id, ia).await;
        assert!(matches!(again, Ok(()) | Err(StoreError::NotFound(_))), "{again:?}");
        assert!(matches!(
            append(store, &a.id, after_seq(ia, events(6..=6))).await,
            Err(StoreError::NotFound(_))
        ));
        assert_eq!(mine(store.load_all().await.unwrap()), vec![stored_b.clone()]);

        let mut a2 = a.clone();
        a2.stadium = None;
        let ia2 = store.create_match(&a2).await.unwrap();
        assert_ne!(ia2, ia);
        assert!(matches!(
            append(store, &a2.id, after_seq(ia, events(1..=1))).await,
            Err(StoreError::NotFound(_))
        ));
        assert_eq!(conflict(append(store, &a2.id, after_seq(ia2, events(6..=6))).await), (5, 0));
        append(store, &a2.id, after_seq(ia2, events(1..=1))).await.unwrap();
        let page = store.history(&a2.id, 0, 10).await.unwrap();
        assert_eq!((page.inc, page.events), (ia2, events(1..=1)));
        let all = mine(store.load_all().await.unwrap());
        assert_eq!(all.len(), 2);
        assert!(all.contains(&StoredMatch { info: a2, inc: ia2, events: events(1..=1) }));

        // Unknown ids.
        assert!(matches!(store.history(&unknown, 0, 10).await, Err(StoreError::NotFound(_))));
        assert!(matches!(store.cancel_match(&unknown, 1).await, Err(StoreError::NotFound(_))));
        assert!(matches!(
            append(store, &unknown, after_seq(1, events(1..=1))).await,
            Err(StoreError::NotFound(id)) if id == unknown
        ));

        store.flush().await.unwrap();
    }

    #[tokio::test]
    async fn memory_store_keeps_the_contract() {
        contract(&MemoryStore::new(), "m").await;
    }

    #[test]
    fn check_seqs_reports_the_first_wrong_seq() {
        let id = info("elp", "tig").id;
        assert_eq!(check_seqs(&id, 3, &[event(4), event(5)]).unwrap(), 5);
        assert_eq!(check_seqs(&id, 3, &[]).unwrap(), 3);
        assert!(matches!(
            check_seqs(&id, 0, &[event(1), event(3)]),
            Err(StoreError::SeqConflict { expected: 2, current: 0, .. })
        ));
    }
}
