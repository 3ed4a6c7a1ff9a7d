//! The writer thread of the SQLite store: the schema, the one write connection and group
//! commit. It alone decides whether a write is accepted (seq checks against its map of live
//! matches); reads never come here.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rusqlite::{params, Connection, TransactionBehavior};
use tokio::sync::{mpsc, oneshot};

use super::{corrupt, db_err, seq_from_sql, seq_to_sql, BUSY_TIMEOUT};
use crate::locks::lock;
use crate::model::{MatchId, MatchInfo, Seq};
use crate::store::{check_append, Append, Incarnation, StoreError};

/// The schema this code writes, kept in `PRAGMA user_version`. A newer file is refused rather
/// than misread.
pub(super) const SCHEMA_VERSION: i64 = 2;

pub(super) const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS matches (
        rowid INTEGER PRIMARY KEY,
        id TEXT NOT NULL,
        info TEXT NOT NULL,
        cancelled INTEGER NOT NULL DEFAULT 0
    );
    CREATE UNIQUE INDEX IF NOT EXISTS matches_live_id ON matches(id) WHERE cancelled = 0;
    CREATE TABLE IF NOT EXISTS events (
        match_rowid INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        ts INTEGER NOT NULL,
        kind TEXT NOT NULL,
        data TEXT NOT NULL,
        PRIMARY KEY (match_rowid, seq)
    ) WITHOUT ROWID;
";

/// Version 2 (SPEC 10, "Memory over time"): a match's saved state (`store/saved.rs`) and
/// whether it has ended, so that a node loads only the matches still to be played and reads a
/// past one back without replaying its log. A data directory of version 1 is brought up to it
/// on open: its matches that have a `stop` are marked ended; they have no saved state until
/// one is read back (their log is replayed once then, and the state saved).
const SCHEMA_2: &str = "
    ALTER TABLE matches ADD COLUMN ended INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE matches ADD COLUMN saved TEXT;
    ALTER TABLE matches ADD COLUMN saved_seq INTEGER NOT NULL DEFAULT 0;
    UPDATE matches SET ended = 1 WHERE cancelled = 0 AND EXISTS
        (SELECT 1 FROM events e WHERE e.match_rowid = matches.rowid AND e.kind = 'stop');
    CREATE INDEX IF NOT EXISTS matches_unended ON matches(rowid)
        WHERE cancelled = 0 AND ended = 0;
    CREATE INDEX IF NOT EXISTS matches_ended_ids ON matches(id)
        WHERE cancelled = 0 AND ended = 1;
";

/// A command's answer: the new match's incarnation for `Create`, 0 for the others.
pub(super) type Reply = oneshot::Sender<Result<u64, StoreError>>;

/// What the writer is asked to do.
pub(super) enum Op {
    Create(MatchInfo),
    Append(MatchId, Append),
    Cancel(MatchId, Incarnation),
    /// A saved state (`store/saved.rs`): the incarnation, its seq, the JSON, whether it ended.
    Save(MatchId, Incarnation, Seq, String, bool),
    /// Nothing: its answer means everything queued before it is durable.
    Flush,
    /// A write that changes nothing (the schema version written again): its commit tells
    /// whether a store whose last commit failed can write again.
    Probe,
}

pub(super) struct Command {
    pub(super) op: Op,
    pub(super) reply: Reply,
}

/// `PRAGMA synchronous` value of FULL (EXTRA, 3, is stricter still and also accepted).
const SYNCHRONOUS_FULL: i64 = 2;

/// Opens the write connection and brings the schema up to date (or refuses a newer one).
pub(super) fn open_writer(path: &Path) -> Result<Connection, StoreError> {
    let mut conn = Connection::open(path)
        .map_err(|e| StoreError::Backend(format!("cannot open {}: {e}", path.display())))?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(db_err)?;
    // Check the version before touching anything else of a file we may not understand.
    let version: i64 =
        conn.pragma_query_value(None, "user_version", |row| row.get(0)).map_err(db_err)?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::Backend(format!(
            "{} has schema version {version}, newer than this matchstream understands \
             ({SCHEMA_VERSION}); use a newer matchstream or another data directory",
            path.display()
        )));
    }
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .map_err(db_err)?;
    if !mode.eq_ignore_ascii_case("wal") {
        // Still correct, only reads then wait for the writer.
        tracing::warn!(path = %path.display(), %mode, "store could not switch to WAL");
    }
    // FULL: a commit is fsync'd before it returns, so an acknowledged event survives a crash,
    // of the process or of the machine. Read back, not assumed: a build or a file that does not
    // honour it would make every 201 a promise the node cannot keep.
    conn.pragma_update(None, "synchronous", "FULL").map_err(db_err)?;
    let synchronous: i64 =
        conn.pragma_query_value(None, "synchronous", |row| row.get(0)).map_err(db_err)?;
    if synchronous < SYNCHRONOUS_FULL {
        return Err(StoreError::Backend(format!(
            "{}: SQLite runs with synchronous={synchronous}, not FULL ({SYNCHRONOUS_FULL}): \
             acknowledged events would not be durable",
            path.display()
        )));
    }
    tracing::info!(path = %path.display(), journal_mode = %mode, synchronous, "store open");
    if version < SCHEMA_VERSION {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err)?;
        if version < 1 {
            tx.execute_batch(SCHEMA).map_err(db_err)?;
        }
        tx.execute_batch(SCHEMA_2).map_err(db_err)?;
        tracing::info!(path = %path.display(), from = version, to = SCHEMA_VERSION, "store schema updated");
        tx.pragma_update(None, "user_version", SCHEMA_VERSION).map_err(db_err)?;
        tx.commit().map_err(db_err)?;
    }
    Ok(conn)
}

/// A live match as the writer knows it: its rowid (which is its incarnation), the last seq in
/// its log and the tag of the append that wrote it (unknown after a restart).
#[derive(Debug, Clone, Copy)]
pub(super) struct Live {
    rowid: i64,
    last: Seq,
    tag: Option<u64>,
}

/// Every live match's id, rowid and last seq: what the writer checks appends against. Ended
/// matches are left out (nothing can follow a `stop`; a cancel of one reads its row), so the
/// writer's memory does not grow with past seasons.
pub(super) fn load_live(conn: &Connection) -> Result<HashMap<MatchId, Live>, StoreError> {
    let mut stmt = conn
        .prepare(
            "SELECT m.rowid, m.id, COALESCE((SELECT MAX(seq) FROM events e \
             WHERE e.match_rowid = m.rowid), 0) FROM matches m \
             WHERE m.cancelled = 0 AND m.ended = 0",
        )
        .map_err(db_err)?;
    let rows = stmt
        .query_map([], |row| Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?, row.get(2)?)))
        .map_err(db_err)?;
    let mut live = HashMap::new();
    for row in rows {
        let (rowid, id, last) = row.map_err(db_err)?;
        let id = MatchId::parse(&id).map_err(|e| corrupt("match id", e))?;
        live.insert(id, Live { rowid, last: seq_from_sql(last)?, tag: None });
    }
    Ok(live)
}

/// The writer thread's state: the only write connection and, per live match, its rowid and
/// last seq (so appends are checked without a query).
pub(super) struct Writer {
    pub(super) conn: Connection,
    pub(super) live: HashMap<MatchId, Live>,
    pub(super) commits: Arc<AtomicU64>,
    /// Why the last commit failed; `None` once one succeeds. Read by `SqliteStore::health`.
    pub(super) failure: Arc<Mutex<Option<String>>>,
}

/// A change to `Writer::live` to revert if the batch's commit fails: the id and what it held.
type Undo = (MatchId, Option<Live>);

impl Writer {
    /// Until the queue is closed and empty: wait for a command, take whatever else is queued,
    /// commit it all at once, answer.
    pub(super) fn run(mut self, mut rx: mpsc::Receiver<Command>, max_batch: usize) {
        while let Some(first) = rx.blocking_recv() {
            let mut batch = vec![first];
            while batch.len() < max_batch {
                match rx.try_recv() {
                    Ok(cmd) => batch.push(cmd),
                    Err(_) => break,
                }
            }
            let (ops, replies): (Vec<Op>, Vec<Reply>) =
                batch.into_iter().map(|c| (c.op, c.reply)).unzip();
            let results = self.write_batch(&ops);
            for (reply, result) in replies.into_iter().zip(results) {
                // The caller may have stopped waiting; the write stands either way.
                let _ = reply.send(result);
            }
        }
        tracing::debug!("store writer stopped");
    }

    /// Runs `ops` in one transaction, one savepoint each, and returns each one's answer.
    pub(super) fn write_batch(&mut self, ops: &[Op]) -> Vec<Result<u64, StoreError>> {
        if ops.iter().all(|op| matches!(op, Op::Flush)) {
            // Everything before these was answered only after its commit.
            return ops.iter().map(|_| Ok(0)).collect();
        }
        let mut undo = Vec::new();
        let mut results = Vec::with_capacity(ops.len());
        match self.transaction(ops, &mut undo, &mut results) {
            Ok(()) => {
                self.commits.fetch_add(1, Ordering::Relaxed);
                if lock(&self.failure).take().is_some() {
                    tracing::warn!("store commits succeed again");
                }
                tracing::trace!(commands = ops.len(), "store batch committed");
                results
            }
            Err(e) => {
                // Logged once per failing spell, not once per batch of a disk that stays bad.
                if lock(&self.failure).replace(e.to_string()).is_none() {
                    tracing::error!(error = %e, commands = ops.len(), "store commit failed");
                } else {
                    tracing::debug!(error = %e, commands = ops.len(), "store commit failed again");
                }
                // Nothing of the batch is stored: forget what it did to the map.
                for (id, before) in undo.into_iter().rev() {
                    match before {
                        Some(v) => self.live.insert(id, v),
                        None => self.live.remove(&id),
                    };
                }
                let failed = db_err(e);
                results.resize_with(ops.len(), || Ok(0));
                // A refusal (SeqConflict, Exists ...) is still the true answer; what would
                // have been stored was not.
                results.into_iter().map(|r| r.and(Err(failed.clone()))).collect()
            }
        }
    }

    fn transaction(
        &mut self,
        ops: &[Op],
        undo: &mut Vec<Undo>,
        results: &mut Vec<Result<u64, StoreError>>,
    ) -> Result<(), rusqlite::Error> {
        let mut tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        for op in ops {
            results.push(apply(&mut tx, &mut self.live, undo, op));
        }
        tx.commit()
    }
}

/// Applies one command inside the batch's transaction. Refusals are decided from `live` before
/// any SQL; the SQL runs in a savepoint so a failure undoes this command only.
fn apply(
    tx: &mut rusqlite::Transaction<'_>,
    live: &mut HashMap<MatchId, Live>,
    undo: &mut Vec<Undo>,
    op: &Op,
) -> Result<u64, StoreError> {
    match op {
        Op::Flush => Ok(0),
        Op::Probe => {
            tx.pragma_update(None, "user_version", SCHEMA_VERSION).map_err(db_err)?;
            Ok(0)
        }
        Op::Create(info) => {
            if live.contains_key(&info.id) {
                return Err(StoreError::Exists(info.id.clone()));
            }
            let json = serde_json::to_string(info).map_err(|e| corrupt("match", e))?;
            let rowid = in_savepoint(tx, |sp| {
                sp.execute(
                    "INSERT INTO matches (id, info) VALUES (?1, ?2)",
                    params![info.id.as_str(), json],
                )?;
                Ok(sp.last_insert_rowid())
            })
            .map_err(|e| match e.sqlite_error_code() {
                // Only if another process wrote the file behind our back.
                Some(rusqlite::ErrorCode::ConstraintViolation) => {
                    StoreError::Exists(info.id.clone())
                }
                _ => db_err(e),
            })?;
            undo.push((info.id.clone(), None));
            live.insert(info.id.clone(), Live { rowid, last: 0, tag: None });
            // Rowids only grow (the table's key), so they never repeat for an id.
            Ok(rowid as u64)
        }
        Op::Append(id, append) => {
            let before = *live_incarnation(live, id, append.inc)?;
            let new_last = check_append(id, before.last, before.tag, append)?;
            if append.events.is_empty() {
                return Ok(0);
            }
            let rowid = before.rowid;
            let rows = append
                .events
                .iter()
                .map(|e| {
                    let data = serde_json::to_string(&e.data).map_err(|e| corrupt("event", e))?;
                    Ok((seq_to_sql(e.seq), e.ts, e.kind.as_str(), data))
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
            in_savepoint(tx, |sp| {
                let mut stmt = sp.prepare_cached(
                    "INSERT INTO events (match_rowid, seq, ts, kind, data) \
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )?;
                for (seq, ts, kind, data) in &rows {
                    stmt.execute(params![rowid, seq, ts, kind, data])?;
                }
                Ok(())
            })
            .map_err(db_err)?;
            undo.push((id.clone(), Some(before)));
            live.insert(id.clone(), Live { rowid, last: new_last, tag: Some(append.tag) });
            Ok(0)
        }
        Op::Cancel(id, inc) => {
            let before = match live_incarnation(live, id, *inc) {
                Ok(before) => Some(*before),
                // An ended match is not in `live`: its row says whether it is this incarnation.
                Err(_) if ended_incarnation(tx, id, *inc)? => None,
                Err(e) => return Err(e),
            };
            let rowid = before.map_or(*inc as i64, |b| b.rowid);
            // The rows stay (a record of what was played) but are never shown again.
            in_savepoint(tx, |sp| {
                sp.execute("UPDATE matches SET cancelled = 1 WHERE rowid = ?1", [rowid])
            })
            .map_err(db_err)?;
            if let Some(before) = before {
                undo.push((id.clone(), Some(before)));
                live.remove(id);
            }
            Ok(0)
        }
        Op::Save(id, inc, seq, json, ended) => {
            let rowid = i64::try_from(*inc).unwrap_or(i64::MAX);
            // Only a state further than the one saved, of a live incarnation, whose events are
            // in the log (the log is the truth).
            in_savepoint(tx, |sp| {
                sp.execute(
                    "UPDATE matches SET saved = ?2, saved_seq = ?3, ended = ?4 \
                     WHERE rowid = ?1 AND cancelled = 0 AND saved_seq <= ?3 \
                     AND ?3 <= COALESCE((SELECT MAX(seq) FROM events e \
                     WHERE e.match_rowid = ?1), 0)",
                    params![rowid, json, seq_to_sql(*seq), i64::from(*ended)],
                )
            })
            .map_err(db_err)?;
            if *ended {
                if let Some(before) = live.get(id).filter(|l| l.rowid == rowid).copied() {
                    undo.push((id.clone(), Some(before)));
                    live.remove(id);
                }
            }
            Ok(0)
        }
    }
}

/// The live match `id` if it is incarnation `inc`; `NotFound` otherwise.
fn live_incarnation<'a>(
    live: &'a HashMap<MatchId, Live>,
    id: &MatchId,
    inc: Incarnation,
) -> Result<&'a Live, StoreError> {
    live.get(id).filter(|l| l.rowid as u64 == inc).ok_or_else(|| StoreError::NotFound(id.clone()))
}

/// Whether incarnation `inc` of `id` is live but ended (so not in the writer's map).
fn ended_incarnation(
    tx: &rusqlite::Transaction<'_>,
    id: &MatchId,
    inc: Incarnation,
) -> Result<bool, StoreError> {
    let rowid = i64::try_from(inc).unwrap_or(i64::MAX);
    tx.query_row(
        "SELECT COUNT(*) FROM matches WHERE rowid = ?1 AND id = ?2 AND cancelled = 0 AND ended = 1",
        params![rowid, id.as_str()],
        |row| row.get::<_, i64>(0),
    )
    .map(|n| n > 0)
    .map_err(db_err)
}

/// Runs `f` in a savepoint: released if it succeeds, rolled back (on drop) if it fails.
fn in_savepoint<T>(
    tx: &mut rusqlite::Transaction<'_>,
    f: impl FnOnce(&rusqlite::Savepoint<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    let sp = tx.savepoint()?;
    let value = f(&sp)?;
    sp.commit()?;
    Ok(value)
}
