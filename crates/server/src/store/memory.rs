//! `MemoryStore`: the [`Store`] kept in process memory, for tests. It has exactly the semantics of
//! the SQLite store (seq checks, cancel, `Exists`, errors through the ticket) but nothing survives
//! the process. It applies [`check_seqs`], the one seq rule both stores share.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;

use super::{check_seqs, AppendTicket, Store, StoreError, StoredMatch};
use crate::model::{Event, MatchId, MatchInfo, Seq};

/// The state behind the lock. Matches are keyed by a creation counter, like SQLite's rowid, so
/// `load_all` lists them in creation order in both stores.
#[derive(Default)]
struct Inner {
    next_key: u64,
    live: HashMap<MatchId, u64>,
    matches: BTreeMap<u64, StoredMatch>,
}

impl Inner {
    fn live_mut(&mut self, id: &MatchId) -> Result<&mut StoredMatch, StoreError> {
        self.live
            .get(id)
            .and_then(|key| self.matches.get_mut(key))
            .ok_or_else(|| StoreError::NotFound(id.clone()))
    }

    fn append(&mut self, id: &MatchId, events: Vec<Event>) -> Result<(), StoreError> {
        let stored = self.live_mut(id)?;
        let last = stored.events.last().map_or(0, |e| e.seq);
        check_seqs(id, last, &events)?;
        stored.events.extend(events);
        Ok(())
    }
}

/// A [`Store`] in memory (tests only: nothing is durable). Every operation completes before it
/// returns, so an [`AppendTicket`] from it is already resolved.
#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
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

    async fn create_match(&self, info: &MatchInfo) -> Result<(), StoreError> {
        let mut inner = self.lock();
        if inner.live.contains_key(&info.id) {
            return Err(StoreError::Exists(info.id.clone()));
        }
        let key = inner.next_key;
        inner.next_key += 1;
        inner.live.insert(info.id.clone(), key);
        inner.matches.insert(key, StoredMatch { info: info.clone(), events: Vec::new() });
        Ok(())
    }

    async fn submit_append(
        &self,
        id: &MatchId,
        events: Vec<Event>,
    ) -> Result<AppendTicket, StoreError> {
        // Like SQLite, content errors (NotFound, SeqConflict) come through the ticket.
        let result = self.lock().append(id, events);
        Ok(AppendTicket(Box::pin(std::future::ready(result))))
    }

    async fn cancel_match(&self, id: &MatchId) -> Result<(), StoreError> {
        let mut inner = self.lock();
        let key = inner.live.remove(id).ok_or_else(|| StoreError::NotFound(id.clone()))?;
        // SQLite keeps a cancelled match's rows but never shows them; dropping them here is the
        // same as far as any caller can tell.
        inner.matches.remove(&key);
        Ok(())
    }

    async fn load_all(&self) -> Result<Vec<StoredMatch>, StoreError> {
        Ok(self.lock().matches.values().cloned().collect())
    }

    async fn history(
        &self,
        id: &MatchId,
        after: Seq,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        let mut inner = self.lock();
        let stored = inner.live_mut(id)?;
        Ok(stored.events.iter().filter(|e| e.seq > after).take(limit).cloned().collect())
    }

    async fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::{Date, EventData, EventKind, Player, Team, TeamId};

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

    async fn append(store: &dyn Store, id: &MatchId, evs: Vec<Event>) -> Result<(), StoreError> {
        store.submit_append(id, evs).await?.await
    }

    /// The behaviour every store must show; run against each implementation.
    pub(crate) async fn contract(store: &dyn Store) {
        let a = info("elp", "tig");
        let b = info("rma", "fcb");
        let unknown = info("zzz", "yyy").id;

        store.create_match(&a).await.unwrap();
        store.create_match(&b).await.unwrap();
        assert!(matches!(store.create_match(&a).await, Err(StoreError::Exists(id)) if id == a.id));

        // seq 1..3 in two calls; the other match is independent.
        append(store, &a.id, events(1..=2)).await.unwrap();
        append(store, &a.id, events(3..=3)).await.unwrap();
        append(store, &b.id, events(1..=1)).await.unwrap();
        append(store, &a.id, Vec::new()).await.unwrap();

        // A gap, a reuse, and a batch that goes wrong half-way: none of it is stored.
        for (bad, expected, got) in
            [(events(5..=5), 4, 5), (events(3..=4), 4, 3), (vec![event(4), event(6)], 5, 6)]
        {
            match append(store, &a.id, bad).await {
                Err(StoreError::SeqConflict { id, expected: e, got: g }) => {
                    assert_eq!((id, e, g), (a.id.clone(), expected, got));
                }
                other => panic!("expected SeqConflict, got {other:?}"),
            }
        }
        assert_eq!(store.history(&a.id, 0, 100).await.unwrap(), events(1..=3));
        // After the refusals the sequence still continues from 3.
        append(store, &a.id, events(4..=5)).await.unwrap();

        assert_eq!(store.history(&a.id, 0, 100).await.unwrap(), events(1..=5));
        assert_eq!(store.history(&a.id, 2, 100).await.unwrap(), events(3..=5));
        assert_eq!(store.history(&a.id, 1, 2).await.unwrap(), events(2..=3));
        assert_eq!(store.history(&a.id, 5, 100).await.unwrap(), Vec::new());
        assert_eq!(store.history(&a.id, 0, 0).await.unwrap(), Vec::new());

        let all = store.load_all().await.unwrap();
        assert_eq!(
            all,
            vec![
                StoredMatch { info: a.clone(), events: events(1..=5) },
                StoredMatch { info: b.clone(), events: events(1..=1) },
            ]
        );

        // Cancel: gone from history and load_all; the id can be created anew, starting at 1.
        store.cancel_match(&a.id).await.unwrap();
        assert!(matches!(store.history(&a.id, 0, 10).await, Err(StoreError::NotFound(_))));
        assert!(matches!(store.cancel_match(&a.id).await, Err(StoreError::NotFound(_))));
        assert!(matches!(append(store, &a.id, events(6..=6)).await, Err(StoreError::NotFound(_))));
        let all = store.load_all().await.unwrap();
        assert_eq!(all, vec![StoredMatch { info: b.clone(), events: events(1..=1) }]);

        let mut a2 = a.clone();
        a2.stadium = None;
        store.create_match(&a2).await.unwrap();
        assert!(matches!(
            append(store, &a2.id, events(6..=6)).await,
            Err(StoreError::SeqConflict { expected: 1, got: 6, .. })
        ));
        append(store, &a2.id, events(1..=1)).await.unwrap();
        assert_eq!(store.history(&a2.id, 0, 10).await.unwrap(), events(1..=1));
        let all = store.load_all().await.unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[1], StoredMatch { info: a2, events: events(1..=1) });

        // Unknown ids.
        assert!(matches!(store.history(&unknown, 0, 10).await, Err(StoreError::NotFound(_))));
        assert!(matches!(store.cancel_match(&unknown).await, Err(StoreError::NotFound(_))));
        assert!(matches!(
            append(store, &unknown, events(1..=1)).await,
            Err(StoreError::NotFound(id)) if id == unknown
        ));

        store.flush().await.unwrap();
    }

    #[tokio::test]
    async fn memory_store_keeps_the_contract() {
        contract(&MemoryStore::new()).await;
    }

    #[test]
    fn check_seqs_reports_the_first_wrong_seq() {
        let id = info("elp", "tig").id;
        assert_eq!(check_seqs(&id, 3, &[event(4), event(5)]).unwrap(), 5);
        assert_eq!(check_seqs(&id, 3, &[]).unwrap(), 3);
        assert!(matches!(
            check_seqs(&id, 0, &[event(1), event(3)]),
            Err(StoreError::SeqConflict { expected: 2, got: 3, .. })
        ));
    }
}
