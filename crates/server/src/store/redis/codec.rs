//! What goes into Redis and out of it, as text: announcements on the log's channel (with the
//! events when they are small enough, so that other nodes need not read the log) and the events
//! of a match's stream.

use serde::{Deserialize, Serialize};

use super::corrupt;
use crate::model::{Event, EventData, EventKind, MatchId, Seq};
use crate::store::{Incarnation, LogEntry, StoreError};

/// Announcements larger than this carry no events: followers read them from the log.
pub(super) const MAX_ANNOUNCED_BYTES: usize = 64 * 1024;

/// An event as the log's announcements carry it.
#[derive(Debug, Serialize, Deserialize)]
struct Announced {
    seq: Seq,
    ts: i64,
    k: String,
    d: EventData,
}

/// An announcement on the channel.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "t")]
enum Announcement {
    #[serde(rename = "c")]
    Created { id: String, inc: Incarnation },
    /// `events` is empty when they were too large to announce: read them from the log.
    #[serde(rename = "a")]
    Appended { id: String, inc: Incarnation, seq: Seq, events: Vec<Announced> },
    #[serde(rename = "x")]
    Cancelled { id: String, inc: Incarnation },
}

pub(super) fn announcement_appended(
    id: &MatchId,
    inc: Incarnation,
    seq: Seq,
    events: &[Event],
) -> String {
    let announced: Vec<Announced> = events
        .iter()
        .map(|e| Announced {
            seq: e.seq,
            ts: e.ts,
            k: e.kind.as_str().to_owned(),
            d: e.data.clone(),
        })
        .collect();
    let full = Announcement::Appended { id: id.to_string(), inc, seq, events: announced };
    let text = serde_json::to_string(&full).unwrap_or_default();
    if text.len() <= MAX_ANNOUNCED_BYTES {
        return text;
    }
    let bare = Announcement::Appended { id: id.to_string(), inc, seq, events: Vec::new() };
    serde_json::to_string(&bare).unwrap_or_default()
}

pub(super) fn event_from_entry(
    entry_id: &str,
    fields: &[(String, String)],
) -> Result<Event, StoreError> {
    let seq = entry_id
        .split_once('-')
        .and_then(|(s, _)| s.parse().ok())
        .ok_or_else(|| corrupt("entry id", entry_id))?;
    let field = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .ok_or_else(|| corrupt("event", format!("{entry_id} has no {name}")))
    };
    Ok(Event {
        seq,
        ts: field("ts")?.parse().map_err(|e| corrupt("event ts", e))?,
        kind: EventKind::parse(field("k")?).map_err(|e| corrupt("event kind", e))?,
        data: serde_json::from_str(field("d")?).map_err(|e| corrupt("event data", e))?,
    })
}

/// A log entry from an announcement on the channel.
pub(super) fn entry_from_announcement(text: &[u8]) -> Option<LogEntry> {
    let parsed: Announcement = serde_json::from_slice(text).ok()?;
    Some(match parsed {
        Announcement::Created { id, inc } => {
            LogEntry::Created { id: MatchId::parse(&id).ok()?, inc }
        }
        Announcement::Cancelled { id, inc } => {
            LogEntry::Cancelled { id: MatchId::parse(&id).ok()?, inc }
        }
        Announcement::Appended { id, inc, seq, events } => {
            let id = MatchId::parse(&id).ok()?;
            let events: Option<Vec<Event>> = events
                .into_iter()
                .map(|a| {
                    Some(Event {
                        seq: a.seq,
                        ts: a.ts,
                        kind: EventKind::parse(&a.k).ok()?,
                        data: a.d,
                    })
                })
                .collect();
            match events {
                // Too large to announce, or unreadable: the follower reads the log up to `seq`.
                Some(events) if !events.is_empty() => LogEntry::Appended { id, inc, events },
                _ => LogEntry::Behind { id, inc, seq },
            }
        }
    })
}

/// The announcement of a cancel.
pub(super) fn announcement_cancelled(id: &MatchId, inc: Incarnation) -> Result<String, StoreError> {
    serde_json::to_string(&Announcement::Cancelled { id: id.to_string(), inc })
        .map_err(|e| corrupt("announcement", e))
}
