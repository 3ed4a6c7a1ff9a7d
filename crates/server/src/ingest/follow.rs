//! Following the shared log: what other nodes write, the comparison with the store's heads
//! every few seconds, reading what is missing, and repairing a log that rewound (SPEC 7, "Redis
//! is the truth").

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::mpsc;

use super::{Ingest, Slot, CATCH_UP_PAGE};
use crate::locks::{read, write};
use crate::model::{Event, MatchId, Millis, Seq};
use crate::store::{Head, LogEntry, StoreError};

impl Ingest {
    /// Follows what other nodes write to the shared log, until the store stops sending.
    pub(crate) async fn follow(self: Arc<Self>, mut entries: mpsc::Receiver<LogEntry>) {
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
                    // Another event under the seq this node applied last: the store rewound
                    // (catching up reads the store and sees it).
                    let (logged, ts) = slot.logged_at();
                    let other = |e: &Event| e.seq == logged.seq && ts.is_some_and(|t| t != e.ts);
                    if events.iter().any(other) || !self.apply(&slot, events) {
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
    /// catches up those behind, and reads again those the store holds less of than this node
    /// applied (a rewind: see [`Ingest::rewind`]).
    async fn resync(&self) -> Result<(), StoreError> {
        // What this node served and had applied before the heads were read: only that can be
        // missing from them for being cancelled (a match created meanwhile may be missing for
        // being new), and only that must be there (this node may apply more meanwhile).
        // (The slots are copied out first: a slot's log lock is never taken under `slots`,
        // which `apply` takes under the log lock.)
        let slots: Vec<(MatchId, Arc<Slot>)> =
            read(&self.slots).iter().map(|(id, slot)| (id.clone(), slot.clone())).collect();
        let before: Vec<(MatchId, Arc<Slot>, Seq, Option<Millis>)> = slots
            .into_iter()
            .map(|(id, slot)| {
                let (logged, ts) = slot.logged_at();
                (id, slot, logged.seq, ts)
            })
            .collect();
        let heads = self.store.heads().await?;
        let live: HashMap<&MatchId, &Head> = heads.iter().map(|h| (&h.id, h)).collect();
        for (id, slot, seq, ts) in &before {
            let Some(head) = live.get(id) else {
                // Ended matches are not among the heads (they no longer move): kept until
                // evicted. Another one was cancelled, or ended on another node before this one
                // heard the end: the store tells which.
                if !slot.logged().is_over() {
                    match self.store.resume(id).await? {
                        Some(r) if r.inc == slot.inc => self.catch_up(slot).await?,
                        _ => self.remove(id, slot),
                    }
                }
                continue;
            };
            let why = if head.inc < slot.inc {
                Some(format!("the store's incarnation is {}, this node's {}", head.inc, slot.inc))
            } else if head.inc > slot.inc {
                None
            } else if head.seq < *seq {
                Some(format!("the store's log ends at seq {}, this node applied {seq}", head.seq))
            } else if head.seq == *seq && head.ts.is_some() && ts.is_some() && head.ts != *ts {
                Some(format!("the event at seq {seq} is another one in the store"))
            } else {
                None
            };
            if let Some(why) = why {
                self.rewind(slot, &why).await?;
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

    /// Reads the log from the store past the log view, and applies it. The read starts at the
    /// log view's last event, one early: if the store no longer holds that very event (its log
    /// ends before it, or another event has its seq), the store rewound, and the match is read
    /// again from it ([`Ingest::rewind`]).
    pub(super) async fn catch_up(&self, slot: &Arc<Slot>) -> Result<(), StoreError> {
        let rewound = {
            let _one = slot.catching_up.lock().await;
            loop {
                let (logged, last_ts) = slot.logged_at();
                let from = logged.seq;
                let page = self
                    .store
                    .history(slot.topic.id(), from.saturating_sub(1), CATCH_UP_PAGE)
                    .await?;
                if page.inc != slot.inc {
                    return Err(StoreError::NotFound(slot.topic.id().clone()));
                }
                let full = page.events.len() == CATCH_UP_PAGE;
                let mut events = page.events.into_iter().peekable();
                if from > 0 {
                    match events.next_if(|e| e.seq == from) {
                        Some(e) if last_ts.is_none_or(|ts| ts == e.ts) => {}
                        Some(e) => {
                            break Some(format!(
                                "the event at seq {from} is another one in the store (ts {} \
                                 there, {} here)",
                                e.ts,
                                last_ts.unwrap_or_default()
                            ))
                        }
                        None => break Some(format!("the store's log ends before seq {from}")),
                    }
                }
                let events: Vec<Event> = events.collect();
                if events.is_empty() {
                    break None;
                }
                self.apply(slot, events);
                if !full {
                    break None;
                }
            }
        };
        if let Some(why) = rewound {
            self.rewind(slot, &why).await?;
        }
        Ok(())
    }

    /// The store holds less than this node applied to `slot`, or other events under the same
    /// seqs: Redis came back from an older copy (an AOF restored from a backup, a replica
    /// promoted without the last writes). Redis is the truth (SPEC 7): the match is read again
    /// from it, its viewers are told `shutdown` (they come back, resuming, and get what the
    /// store holds), and publishing goes on from there at once.
    pub(super) async fn rewind(&self, slot: &Arc<Slot>, why: &str) -> Result<(), StoreError> {
        let id = slot.topic.id().clone();
        let stored = self.store.resume(&id).await?;
        {
            let mut slots = write(&self.slots);
            if !slots.get(&id).is_some_and(|s| Arc::ptr_eq(s, slot)) {
                // Repaired already, by another path that noticed too.
                return Ok(());
            }
            slots.remove(&id);
        }
        self.hub.rewound(&slot.topic);
        self.rewinds.increment(1);
        let held = stored.as_ref().map(|r| r.events.last().map_or(r.state.seq, |e| e.seq));
        tracing::error!(
            match_id = %id,
            applied = slot.logged().seq,
            store_holds = held.map_or_else(|| "nothing".to_owned(), |s| format!("seq {s}")),
            why,
            "the log rewound: the store holds less than this node applied (restored from an \
             older copy?); following what it holds, and telling the match's viewers to come back"
        );
        if let Some(stored) = stored {
            self.insert_resumed(stored, false);
        }
        Ok(())
    }
}
