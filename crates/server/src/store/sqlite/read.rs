//! The read side of the SQLite store: a small pool of read-only connections and the queries
//! behind `load_all`, `load`, `heads` and `history`. Writes never come here.

#[cfg(test)]
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use super::{corrupt, db_err, seq_from_sql, seq_to_sql, BUSY_TIMEOUT};
use crate::model::{Event, EventData, EventKind, Match, MatchId, Seq};
use crate::store::{saved, Head, Page, Resumed, StoreError};
#[cfg(test)]
use crate::{model::MatchInfo, store::StoredMatch};

/// Idle read connections kept for reuse; more may be open while reads are in flight.
const MAX_IDLE_READERS: usize = 8;

/// Read-only connections, reused. Each read takes one, so reads never wait for each other.
pub(super) struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl Readers {
    pub(super) fn new(path: PathBuf) -> Readers {
        Readers { path, idle: Mutex::new(Vec::new()) }
    }

    pub(super) fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        // A panic elsewhere while holding this lock leaves a valid Vec; keep using it.
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut conn = match idle {
            Some(conn) => conn,
            None => {
                let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
                let conn = Connection::open_with_flags(&self.path, flags).map_err(|e| {
                    StoreError::Backend(format!("cannot open {}: {e}", self.path.display()))
                })?;
                conn.busy_timeout(BUSY_TIMEOUT).map_err(db_err)?;
                conn
            }
        };
        let result = f(&mut conn);
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE_READERS {
            idle.push(conn);
        }
        result
    }
}

/// Builds an event from the columns (seq, ts, kind, data) of `row`, from column `first` on.
fn event_at(row: &rusqlite::Row<'_>, first: usize) -> Result<Event, StoreError> {
    let kind: String = row.get(first + 2).map_err(db_err)?;
    let data: String = row.get(first + 3).map_err(db_err)?;
    Ok(Event {
        seq: seq_from_sql(row.get(first).map_err(db_err)?)?,
        ts: row.get(first + 1).map_err(db_err)?,
        kind: EventKind::parse(&kind).map_err(|e| corrupt("event kind", e))?,
        data: serde_json::from_str::<EventData>(&data).map_err(|e| corrupt("event data", e))?,
    })
}

/// Every event of rows whose columns are (seq, ts, kind, data).
fn events(mut rows: rusqlite::Rows<'_>) -> Result<Vec<Event>, StoreError> {
    let mut events = Vec::new();
    while let Some(row) = rows.next().map_err(db_err)? {
        events.push(event_at(row, 0)?);
    }
    Ok(events)
}

#[cfg(test)]
pub(super) fn load_all(conn: &mut Connection) -> Result<Vec<StoredMatch>, StoreError> {
    load_where(conn, None)
}

#[cfg(test)]
pub(super) fn load(conn: &mut Connection, id: &MatchId) -> Result<Option<StoredMatch>, StoreError> {
    Ok(load_where(conn, Some(id))?.pop())
}

/// Every live match (or the one named `only`), with its events, in creation order. A match's
/// incarnation is its rowid.
#[cfg(test)]
fn load_where(
    conn: &mut Connection,
    only: Option<&MatchId>,
) -> Result<Vec<StoredMatch>, StoreError> {
    // One read transaction: matches and events from the same snapshot.
    let tx = conn.transaction().map_err(db_err)?;
    let only = only.map(|id| id.as_str().to_owned());
    let mut matches = Vec::new();
    let mut index = HashMap::new();
    {
        let mut stmt = tx
            .prepare(
                "SELECT rowid, info FROM matches WHERE cancelled = 0 \
                 AND (?1 IS NULL OR id = ?1) ORDER BY rowid",
            )
            .map_err(db_err)?;
        let mut rows = stmt.query([&only]).map_err(db_err)?;
        while let Some(row) = rows.next().map_err(db_err)? {
            let rowid: i64 = row.get(0).map_err(db_err)?;
            let info: String = row.get(1).map_err(db_err)?;
            let info: MatchInfo = serde_json::from_str(&info).map_err(|e| corrupt("match", e))?;
            index.insert(rowid, matches.len());
            matches.push(StoredMatch { info, inc: rowid as u64, events: Vec::new() });
        }
    }
    {
        let mut stmt = tx
            .prepare(
                "SELECT e.match_rowid, e.seq, e.ts, e.kind, e.data FROM events e \
                 JOIN matches m ON m.rowid = e.match_rowid \
                 WHERE m.cancelled = 0 AND (?1 IS NULL OR m.id = ?1) \
                 ORDER BY e.match_rowid, e.seq",
            )
            .map_err(db_err)?;
        let mut rows = stmt.query([&only]).map_err(db_err)?;
        while let Some(row) = rows.next().map_err(db_err)? {
            let rowid: i64 = row.get(0).map_err(db_err)?;
            let event = event_at(row, 1)?;
            if let Some(&i) = index.get(&rowid) {
                matches[i].events.push(event);
            }
        }
    }
    Ok(matches)
}

/// Every live match that has not ended (or the one named `only`, ended or not), from its
/// saved state and the events after it, in creation order.
pub(super) fn resume_where(
    conn: &mut Connection,
    only: Option<&MatchId>,
) -> Result<Vec<Resumed>, StoreError> {
    let tx = conn.transaction().map_err(db_err)?;
    let only = only.map(|id| id.as_str().to_owned());
    let mut found = Vec::new();
    {
        let mut stmt = tx
            .prepare_cached(
                "SELECT rowid, info, saved, saved_seq FROM matches WHERE cancelled = 0 \
                 AND ((?1 IS NULL AND ended = 0) OR id = ?1) ORDER BY rowid",
            )
            .map_err(db_err)?;
        let mut rows = stmt.query([&only]).map_err(db_err)?;
        while let Some(row) = rows.next().map_err(db_err)? {
            let rowid: i64 = row.get(0).map_err(db_err)?;
            let info: String = row.get(1).map_err(db_err)?;
            let json: Option<String> = row.get(2).map_err(db_err)?;
            let saved_seq = seq_from_sql(row.get(3).map_err(db_err)?)?;
            let inc = rowid as u64;
            // A save is only written for events already in the log (`writer.rs`).
            let state = json.and_then(|json| saved::decode(&json, inc, saved_seq));
            let state = match state {
                Some(state) => state,
                None => Match::new(serde_json::from_str(&info).map_err(|e| corrupt("match", e))?),
            };
            found.push((rowid, state));
        }
    }
    let mut resumed = Vec::with_capacity(found.len());
    let mut stmt = tx
        .prepare_cached(
            "SELECT seq, ts, kind, data FROM events WHERE match_rowid = ?1 AND seq > ?2 \
             ORDER BY seq",
        )
        .map_err(db_err)?;
    for (rowid, state) in found {
        let rows = stmt.query(params![rowid, seq_to_sql(state.seq)]).map_err(db_err)?;
        let events = events(rows)?;
        resumed.push(Resumed { inc: rowid as u64, state, events });
    }
    Ok(resumed)
}

/// The ids of the ended (live, not cancelled) matches.
pub(super) fn ended_ids(conn: &mut Connection) -> Result<Vec<MatchId>, StoreError> {
    let mut stmt = conn
        .prepare_cached("SELECT id FROM matches WHERE cancelled = 0 AND ended = 1")
        .map_err(db_err)?;
    let mut rows = stmt.query([]).map_err(db_err)?;
    let mut ids = Vec::new();
    while let Some(row) = rows.next().map_err(db_err)? {
        let id: String = row.get(0).map_err(db_err)?;
        ids.push(MatchId::parse(&id).map_err(|e| corrupt("match id", e))?);
    }
    Ok(ids)
}

pub(super) fn heads(conn: &mut Connection) -> Result<Vec<Head>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT m.rowid, m.id, COALESCE((SELECT MAX(seq) FROM events e \
             WHERE e.match_rowid = m.rowid), 0) FROM matches m \
             WHERE m.cancelled = 0 AND m.ended = 0 ORDER BY m.rowid",
        )
        .map_err(db_err)?;
    let mut rows = stmt.query([]).map_err(db_err)?;
    let mut heads = Vec::new();
    while let Some(row) = rows.next().map_err(db_err)? {
        let rowid: i64 = row.get(0).map_err(db_err)?;
        let id: String = row.get(1).map_err(db_err)?;
        heads.push(Head {
            id: MatchId::parse(&id).map_err(|e| corrupt("match id", e))?,
            inc: rowid as u64,
            seq: seq_from_sql(row.get(2).map_err(db_err)?)?,
            ts: None,
        });
    }
    Ok(heads)
}

pub(super) fn history(
    conn: &mut Connection,
    id: &MatchId,
    after: Seq,
    limit: usize,
) -> Result<Page, StoreError> {
    let tx = conn.transaction().map_err(db_err)?;
    let rowid: i64 = tx
        .query_row(
            "SELECT rowid FROM matches WHERE id = ?1 AND cancelled = 0",
            [id.as_str()],
            |row| row.get(0),
        )
        .optional()
        .map_err(db_err)?
        .ok_or_else(|| StoreError::NotFound(id.clone()))?;
    let mut stmt = tx
        .prepare_cached(
            "SELECT seq, ts, kind, data FROM events WHERE match_rowid = ?1 AND seq > ?2 \
             ORDER BY seq LIMIT ?3",
        )
        .map_err(db_err)?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = stmt.query(params![rowid, seq_to_sql(after), limit]).map_err(db_err)?;
    Ok(Page { inc: rowid as u64, events: events(rows)? })
}
