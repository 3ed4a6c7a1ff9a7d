//! `SqliteStore`: the embedded, durable [`Store`] in `<data dir>/matchstream.db`: its options,
//! lifecycle and the queue to the writer. The schema and group commit live in `sqlite/writer.rs`,
//! the read connections and queries in `sqlite/read.rs`. It knows nothing of the rules of a match.
//!
//! Writes go through one bounded queue to one thread that owns the write connection: it takes
//! whatever is queued (up to `max_batch`), runs it in one transaction with a savepoint per
//! command, commits once (`synchronous=FULL`: fsync'd) and only then answers each command. Many
//! watchers thus share each fsync. Reads use their own connections on the blocking pool; WAL
//! lets them run beside the writer.
//!
//! The data directory is locked (`matchstream.lock`, `flock`) while the store is open, so a second
//! node on it refuses to start. `health` tells whether the writer runs and its last commit
//! succeeded; while it did not, each look queues a probe commit, so recovery shows without
//! waiting for a watcher.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Write};
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use super::saved;
#[cfg(test)]
use super::StoredMatch;
use super::{Append, AppendTicket, Head, Incarnation, Page, Resumed, Store, StoreError};
use crate::model::{Match, MatchId, MatchInfo, Seq};

mod read;
mod writer;

use read::Readers;
use writer::{Command, Op, Writer};

/// The database file inside the data directory.
pub(crate) const DB_FILE: &str = "matchstream.db";

/// How long a connection waits for a lock held by another before failing: long enough to ride
/// out a checkpoint, short enough that a stuck database shows up as an error.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Tuning of the writer.
#[derive(Debug, Clone)]
pub(crate) struct SqliteOptions {
    /// Writes that may wait for the writer; when full, callers wait (backpressure on watchers).
    /// Large enough that a burst from every live match fits. Default 16,384.
    pub queue: usize,
    /// Commands per transaction: bounds how long one commit holds the replies of the first
    /// command. Default 4,096.
    pub max_batch: usize,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions { queue: 16_384, max_batch: 4_096 }
    }
}

/// The durable store on SQLite. Dropping it lets the writer finish what is queued, and waits
/// for that (so the same directory can be reopened at once).
pub(crate) struct SqliteStore {
    /// `None` only while dropping: closing the queue is what stops the writer.
    tx: Option<mpsc::Sender<Command>>,
    writer: Option<JoinHandle<()>>,
    readers: Arc<Readers>,
    // Read by the store tests now, and by /metrics with the operations issue.
    #[cfg_attr(not(test), allow(dead_code))]
    commits: Arc<AtomicU64>,
    /// Why the writer's last commit failed, if it did.
    failure: Arc<Mutex<Option<String>>>,
    /// Held while the store is open (released when the file closes, after the writer stopped).
    _lock: File,
}

impl SqliteStore {
    /// Opens (creating if needed) `dir/matchstream.db` with default options.
    pub(crate) fn open(dir: &Path) -> Result<SqliteStore, StoreError> {
        SqliteStore::open_with(dir, SqliteOptions::default())
    }

    /// Opens (creating `dir` and the database if needed), checks the schema version, loads what
    /// the writer needs to check seqs, and starts the writer thread.
    pub(crate) fn open_with(dir: &Path, opts: SqliteOptions) -> Result<SqliteStore, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Backend(format!("cannot create data directory {}: {e}", dir.display()))
        })?;
        let lock = lock_dir(dir)?;
        let path = dir.join(DB_FILE);
        let conn = writer::open_writer(&path)?;
        let live = writer::load_live(&conn)?;
        let (tx, rx) = mpsc::channel(opts.queue.max(1));
        let commits = Arc::new(AtomicU64::new(0));
        let failure = Arc::new(Mutex::new(None));
        let writer =
            Writer { conn, live, commits: Arc::clone(&commits), failure: Arc::clone(&failure) };
        let max_batch = opts.max_batch.max(1);
        let handle = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer.run(rx, max_batch))
            .map_err(|e| StoreError::Backend(format!("cannot start the store writer: {e}")))?;
        Ok(SqliteStore {
            tx: Some(tx),
            writer: Some(handle),
            readers: Arc::new(Readers::new(path)),
            commits,
            failure,
            _lock: lock,
        })
    }

    /// Transactions committed so far by the writer (shows group commit at work).
    #[cfg(test)]
    pub(crate) fn commits(&self) -> u64 {
        self.commits.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Queues `op` (waiting for room) and returns where its answer will arrive.
    async fn send(&self, op: Op) -> Result<oneshot::Receiver<Result<u64, StoreError>>, StoreError> {
        let tx = self.tx.as_ref().ok_or_else(writer_stopped)?;
        let (reply, answer) = oneshot::channel();
        tx.send(Command { op, reply }).await.map_err(|_| writer_stopped())?;
        Ok(answer)
    }

    /// Queues `op` and waits until it is committed.
    async fn call(&self, op: Op) -> Result<u64, StoreError> {
        self.send(op).await?.await.unwrap_or_else(|_| Err(writer_stopped()))
    }

    /// Runs `f` on a read connection on the blocking pool.
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let readers = Arc::clone(&self.readers);
        tokio::task::spawn_blocking(move || readers.with(f))
            .await
            .map_err(|e| StoreError::Backend(format!("store read failed: {e}")))?
    }
}

/// The lock file inside the data directory; it holds the pid of the node that has it.
pub(crate) const LOCK_FILE: &str = "matchstream.lock";

/// How long a busy data directory lock is tried again before another node is said to hold it.
const LOCK_PATIENCE: std::time::Duration = std::time::Duration::from_millis(500);

/// Takes the data directory's lock, or says who has it. Two nodes writing one database would
/// each check appends against its own idea of the last seq; SQLite would let them. The lock is
/// the kernel's (`flock`), so it goes with the process, however the process ends.
fn lock_dir(dir: &Path) -> Result<File, StoreError> {
    let path = dir.join(LOCK_FILE);
    let fail = |e: std::io::Error| StoreError::Backend(format!("{}: {e}", path.display()));
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(fail)?;
    // A lock just let go of can still be held for a moment by a child process another thread
    // of this process is starting: between its fork and its exec, the child shares every open
    // file, this one included (seen: a store reopened at once in a test that other tests share).
    // So a busy lock is tried again for a short while before it counts as another node's. The
    // thread opening the store waits meanwhile: this happens once, while a node starts.
    let deadline = std::time::Instant::now() + LOCK_PATIENCE;
    let mut locked = file.try_lock();
    while matches!(locked, Err(TryLockError::WouldBlock)) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
        locked = file.try_lock();
    }
    match locked {
        Ok(()) => {
            file.set_len(0).map_err(fail)?;
            writeln!(file, "{}", std::process::id()).map_err(fail)?;
            Ok(file)
        }
        Err(TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = match holder.trim() {
                "" => String::new(),
                pid => format!(" (pid {pid})"),
            };
            Err(StoreError::Backend(format!(
                "data directory {} is in use by another matchstream{holder}: stop it, or give \
                 this node its own --data",
                dir.display()
            )))
        }
        Err(TryLockError::Error(e)) => Err(fail(e)),
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // Closing the queue makes the writer drain it and exit; joining makes sure the file is
        // no longer being written when `drop` returns. The writer never waits on a runtime, so
        // blocking here cannot deadlock.
        self.tx = None;
        if let Some(handle) = self.writer.take() {
            if handle.join().is_err() {
                tracing::error!("store writer panicked");
            }
        }
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_match(&self, info: &MatchInfo) -> Result<Incarnation, StoreError> {
        self.call(Op::Create(info.clone())).await
    }

    /// `NotFound` and `SeqConflict` arrive through the ticket (the writer decides them, in
    /// queue order); this call itself fails only when the writer has stopped.
    async fn submit_append(
        &self,
        id: &MatchId,
        append: Append,
    ) -> Result<AppendTicket, StoreError> {
        let answer = self.send(Op::Append(id.clone(), append)).await?;
        Ok(AppendTicket(Box::pin(async move {
            answer.await.unwrap_or_else(|_| Err(writer_stopped())).map(|_| ())
        })))
    }

    async fn cancel_match(&self, id: &MatchId, inc: Incarnation) -> Result<(), StoreError> {
        self.call(Op::Cancel(id.clone(), inc)).await.map(|_| ())
    }

    #[cfg(test)]
    async fn load_all(&self) -> Result<Vec<StoredMatch>, StoreError> {
        self.read(read::load_all).await
    }

    #[cfg(test)]
    async fn load(&self, id: &MatchId) -> Result<Option<StoredMatch>, StoreError> {
        let id = id.clone();
        self.read(move |conn| read::load(conn, &id)).await
    }

    async fn load_live(&self) -> Result<Vec<Resumed>, StoreError> {
        self.read(|conn| read::resume_where(conn, None)).await
    }

    async fn resume(&self, id: &MatchId) -> Result<Option<Resumed>, StoreError> {
        let id = id.clone();
        self.read(move |conn| Ok(read::resume_where(conn, Some(&id))?.pop())).await
    }

    async fn ended_ids(&self) -> Result<Vec<MatchId>, StoreError> {
        self.read(read::ended_ids).await
    }

    /// One more command in the next group commit; dropped (and logged) if the queue is full.
    fn save_state(&self, inc: Incarnation, state: &Match) {
        let json = match saved::encode(inc, state) {
            Ok(json) => json,
            Err(e) => return tracing::warn!(match_id = %state.id(), error = %e, "saving the state"),
        };
        let op = Op::Save(state.id().clone(), inc, state.seq, json, state.is_over());
        let (reply, _) = oneshot::channel();
        let queued = self.tx.as_ref().is_some_and(|tx| tx.try_send(Command { op, reply }).is_ok());
        if !queued {
            tracing::debug!(match_id = %state.id(), seq = state.seq, "state not saved: the store is busy");
        }
    }

    async fn heads(&self) -> Result<Vec<Head>, StoreError> {
        self.read(read::heads).await
    }

    async fn history(&self, id: &MatchId, after: Seq, limit: usize) -> Result<Page, StoreError> {
        let id = id.clone();
        self.read(move |conn| read::history(conn, &id, after, limit)).await
    }

    fn health(&self) -> Result<(), StoreError> {
        let Some(tx) = self.tx.as_ref().filter(|tx| !tx.is_closed()) else {
            return Err(writer_stopped());
        };
        let Some(why) = crate::locks::lock(&self.failure).clone() else { return Ok(()) };
        // Ask the writer to try a commit, so that a store that recovers says so even when no
        // watcher writes (a node out of rotation gets none); the next look sees its outcome.
        let (reply, _) = oneshot::channel();
        let _ = tx.try_send(Command { op: Op::Probe, reply });
        Err(StoreError::Backend(format!("the last commit failed: {why}")))
    }

    async fn flush(&self) -> Result<(), StoreError> {
        self.call(Op::Flush).await.map(|_| ())
    }
}

fn writer_stopped() -> StoreError {
    StoreError::Backend("store writer stopped".into())
}

fn db_err(e: rusqlite::Error) -> StoreError {
    StoreError::Backend(format!("database: {e}"))
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("stored {what} cannot be read: {e}"))
}

/// Seqs are `u64` in the model and `INTEGER` (i64) in SQLite; no real match comes near 2^63.
fn seq_to_sql(seq: Seq) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

fn seq_from_sql(seq: i64) -> Result<Seq, StoreError> {
    Seq::try_from(seq).map_err(|e| corrupt("seq", e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::tests::{after_seq, append, contract, event, info};
    use crate::store::Expect;
    use tempfile::TempDir;

    #[tokio::test]
    async fn sqlite_store_keeps_the_contract() {
        let dir = TempDir::new().unwrap();
        let store = SqliteStore::open(&dir.path().join("data")).unwrap();
        contract(&store, "s").await;
        assert!(dir.path().join("data").join(DB_FILE).is_file());
    }

    #[tokio::test]
    async fn everything_survives_a_reopen() {
        let dir = TempDir::new().unwrap();
        let (a, b, c) = (info("elp", "tig"), info("rma", "fcb"), info("bar", "val"));
        let (before, ia) = {
            let store = SqliteStore::open(dir.path()).unwrap();
            let ia = store.create_match(&a).await.unwrap();
            let ib = store.create_match(&b).await.unwrap();
            let ic = store.create_match(&c).await.unwrap();
            append(&store, &a.id, after_seq(ia, (1..=3).map(event).collect())).await.unwrap();
            append(&store, &c.id, after_seq(ic, vec![event(1)])).await.unwrap();
            store.cancel_match(&b.id, ib).await.unwrap();
            // Queued but not awaited: dropping the store must still write it.
            let _ticket = store.submit_append(&a.id, after_seq(ia, vec![event(4)])).await.unwrap();
            (store.load_all().await.unwrap(), ia)
        };
        let store = SqliteStore::open(dir.path()).unwrap();
        let after = store.load_all().await.unwrap();
        assert_eq!(after.len(), 2);
        assert_eq!((&after[0].info, after[0].inc), (&a, ia));
        assert_eq!(after[0].events, (1..=4).map(event).collect::<Vec<_>>());
        assert_eq!(after[1], before[1]);
        // The reopened writer knows where each match stands.
        let conflict = append(&store, &a.id, after_seq(ia, vec![event(4)])).await;
        assert!(matches!(conflict, Err(StoreError::SeqConflict { expected: 3, current: 4, .. })));
        assert!(matches!(store.create_match(&a).await, Err(StoreError::Exists(_))));
        let ib2 = store.create_match(&b).await.unwrap();
        assert!(ib2 > ia, "a new incarnation, never one used before");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_appends_share_commits_and_keep_order() {
        let dir = TempDir::new().unwrap();
        let store = Arc::new(SqliteStore::open(dir.path()).unwrap());
        let teams: Vec<String> = (0..20).map(|i| format!("t{i}")).collect();
        let mut ids = Vec::new();
        for t in &teams {
            let m = info(t, "opp");
            ids.push((m.id.clone(), store.create_match(&m).await.unwrap()));
        }
        let commits_before = store.commits();
        let mut tasks = Vec::new();
        for (id, inc) in ids.clone() {
            let store = Arc::clone(&store);
            tasks.push(tokio::spawn(async move {
                // A chain of appends, each naming the one before, all queued before any is
                // durable; then wait for all at once.
                let mut tickets = Vec::new();
                let mut tag = None;
                for seq in 1..=100 {
                    let a = Append {
                        expect: Expect { seq: seq - 1, tag, ts: None },
                        ..after_seq(inc, vec![event(seq)])
                    };
                    tag = Some(a.tag);
                    tickets.push(store.submit_append(&id, a).await.unwrap());
                }
                let waits: Vec<_> = tickets.into_iter().map(|t| tokio::spawn(t.0)).collect();
                for w in waits {
                    w.await.unwrap().unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        for (id, _) in &ids {
            let history = store.history(id, 0, 1_000).await.unwrap().events;
            assert_eq!(history, (1..=100).map(event).collect::<Vec<_>>());
        }
        let commits = store.commits() - commits_before;
        assert!(commits < 500, "2,000 appends took {commits} commits");
    }

    #[tokio::test]
    async fn one_batch_one_commit_and_a_refused_command_undoes_only_itself() {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join(DB_FILE);
        let conn = writer::open_writer(&path).unwrap();
        let live = writer::load_live(&conn).unwrap();
        let commits = Arc::new(AtomicU64::new(0));
        let failure = Arc::new(Mutex::new(None));
        let mut writer = Writer { conn, live, commits: Arc::clone(&commits), failure };
        let (a, b) = (info("elp", "tig"), info("rma", "fcb"));
        // A fresh file: the first match gets rowid 1, the second 2.
        let one = after_seq(1, vec![event(1)]);
        let chained = Append {
            expect: Expect { seq: 1, tag: Some(one.tag), ts: None },
            ..after_seq(1, vec![event(2)])
        };
        // Driving the writer directly makes these one batch for sure.
        let results = writer.write_batch(&[
            Op::Create(a.clone()),
            Op::Append(a.id.clone(), one),
            Op::Append(a.id.clone(), after_seq(1, vec![event(2), event(4)])),
            Op::Append(a.id.clone(), after_seq(1, vec![event(3)])),
            Op::Append(a.id.clone(), chained),
            Op::Append(a.id.clone(), after_seq(7, vec![event(3)])),
            Op::Create(a.clone()),
            Op::Cancel(b.id.clone(), 2),
            Op::Create(b.clone()),
            Op::Cancel(b.id.clone(), 2),
            Op::Flush,
        ]);
        let summary: Vec<String> = results
            .iter()
            .map(|r| match r {
                Ok(v) => format!("ok {v}"),
                Err(StoreError::SeqConflict { expected, current, .. }) => {
                    format!("seq {expected}/{current}")
                }
                Err(StoreError::Exists(_)) => "exists".to_owned(),
                Err(StoreError::NotFound(_)) => "not found".to_owned(),
                Err(e) => e.to_string(),
            })
            .collect();
        assert_eq!(
            summary,
            [
                "ok 1",
                "ok 0",
                "seq 3/1",
                "seq 2/1",
                "ok 0",
                "not found",
                "exists",
                "not found",
                "ok 2",
                "ok 0",
                "ok 0"
            ]
        );
        assert_eq!(commits.load(std::sync::atomic::Ordering::Relaxed), 1);
        drop(writer);

        let store = SqliteStore::open(dir.path()).unwrap();
        let all = store.load_all().await.unwrap();
        assert_eq!(all, vec![StoredMatch { info: a, inc: 1, events: vec![event(1), event(2)] }]);
    }

    #[test]
    fn a_second_store_on_the_same_directory_is_refused_until_the_first_closes() {
        let dir = TempDir::new().unwrap();
        let first = SqliteStore::open(dir.path()).unwrap();
        match SqliteStore::open(dir.path()) {
            Err(StoreError::Backend(msg)) => {
                assert!(msg.contains("in use by another matchstream"), "{msg}");
                assert!(msg.contains(&format!("pid {}", std::process::id())), "{msg}");
            }
            other => panic!("a second store opened: {:?}", other.map(|_| ())),
        }
        drop(first);
        SqliteStore::open(dir.path()).expect("free again once the first is closed");
    }

    #[tokio::test]
    async fn a_failed_store_is_probed_back_to_health() {
        let dir = TempDir::new().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        *crate::locks::lock(&store.failure) = Some("disk I/O error".into());
        let err = store.health().unwrap_err().to_string();
        assert_eq!(err, "storage failed: the last commit failed: disk I/O error");
        // The probe it queued commits on a working disk; then the store is healthy again.
        store.flush().await.unwrap();
        assert!(store.health().is_ok());
    }

    #[test]
    fn the_writer_runs_with_wal_and_an_fsync_per_commit() {
        let dir = TempDir::new().unwrap();
        let conn = writer::open_writer(&dir.path().join(DB_FILE)).unwrap();
        let mode: String = conn.pragma_query_value(None, "journal_mode", |r| r.get(0)).unwrap();
        let sync: i64 = conn.pragma_query_value(None, "synchronous", |r| r.get(0)).unwrap();
        assert_eq!(mode.to_lowercase(), "wal");
        assert_eq!(sync, 2, "synchronous=FULL");
    }

    #[tokio::test]
    async fn a_version_1_directory_is_migrated_its_ended_matches_marked_and_not_loaded() {
        let dir = TempDir::new().unwrap();
        let (live, ended) = (info("elp", "tig"), info("rma", "fcb"));
        {
            let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
            conn.execute_batch(writer::SCHEMA).unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
            for (rowid, m) in [(1, &live), (2, &ended)] {
                let json = serde_json::to_string(m).unwrap();
                conn.execute(
                    "INSERT INTO matches (rowid, id, info) VALUES (?1, ?2, ?3)",
                    rusqlite::params![rowid, m.id.as_str(), json],
                )
                .unwrap();
            }
            let events = "INSERT INTO events VALUES (1, 1, 5, 'comment', '{}'), \
                          (2, 1, 5, 'comment', '{}'), (2, 2, 6, 'stop', '{}')";
            conn.execute_batch(events).unwrap();
        }
        let store = SqliteStore::open(dir.path()).unwrap();
        let loaded: Vec<(MatchId, usize)> = store
            .load_live()
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.state.info.id, r.events.len()))
            .collect();
        assert_eq!(loaded, vec![(live.id.clone(), 1)]);
        assert_eq!(store.ended_ids().await.unwrap(), vec![ended.id.clone()]);
        assert!(store.heads().await.unwrap().iter().all(|h| h.id == live.id));
        // Read back on demand: no saved state yet, so the whole log; once saved, none of it.
        let back = store.resume(&ended.id).await.unwrap().unwrap();
        assert_eq!((back.inc, back.state.seq, back.events.len()), (2, 0, 2));
        let mut state = back.state;
        state.period = crate::model::Period::Ended;
        state.seq = 2;
        store.save_state(2, &state);
        store.flush().await.unwrap();
        let back = store.resume(&ended.id).await.unwrap().unwrap();
        assert_eq!((back.state, back.events.len()), (state, 0));
        // The ended match can be cancelled (it is not in the writer's map) and created anew.
        store.cancel_match(&ended.id, 2).await.unwrap();
        assert!(store.ended_ids().await.unwrap().is_empty());
        assert_eq!(store.create_match(&ended).await.unwrap(), 3);
        let version: i64 = Connection::open(dir.path().join(DB_FILE))
            .unwrap()
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, writer::SCHEMA_VERSION);
    }

    #[tokio::test]
    async fn a_newer_schema_is_refused() {
        let dir = TempDir::new().unwrap();
        let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
        conn.pragma_update(None, "user_version", writer::SCHEMA_VERSION + 1).unwrap();
        drop(conn);
        match SqliteStore::open(dir.path()) {
            Err(StoreError::Backend(msg)) => assert!(msg.contains("newer"), "{msg}"),
            Ok(_) => panic!("a newer schema was opened"),
            Err(e) => panic!("unexpected error {e}"),
        }
    }

    #[tokio::test]
    async fn a_stopped_writer_is_reported() {
        let dir = TempDir::new().unwrap();
        let mut store = SqliteStore::open(dir.path()).unwrap();
        assert!(store.health().is_ok());
        store.tx = None;
        let err = store.create_match(&info("elp", "tig")).await.unwrap_err();
        assert_eq!(err.to_string(), "storage failed: store writer stopped");
        assert_eq!(store.health().unwrap_err().to_string(), "storage failed: store writer stopped");
    }
}
