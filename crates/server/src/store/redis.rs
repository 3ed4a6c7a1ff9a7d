//! `RedisStore`: the shared log of many nodes (SPEC 7), on one Redis server or a Redis Cluster.
//! Keys and scripts are in `redis/keys.rs`; the writer that sends appends in order in
//! `redis/append.rs`; following other nodes' writes in `redis/follow.rs`; the directory of
//! nodes (each node's latest report, which `crate::cluster` writes and reads) in `redis/nodes.rs`.
//!
//! Each write is one Lua script on the match's own keys (one shard of a cluster), so it is
//! atomic: an append checks the incarnation and the end of the log, adds the events to the
//! match's stream and announces them on a pub/sub channel, or does nothing. Acknowledged means
//! durable: the node refuses a Redis that does not fsync every write (`appendfsync always`, whose
//! fsync Redis shares between every write of one event-loop turn: group commit) unless writes are
//! confirmed by replicas (`WAIT`, `--redis-wait-replicas`) or the operator said
//! `--redis-volatile`. While Redis is unreachable every call fails fast (`Backend`, a 503 to
//! the watcher); the connection comes back by itself.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use redis::aio::ConnectionLike;
use redis::cluster_routing::{MultipleNodeRoutingInfo, ResponsePolicy, RoutingInfo};
use redis::{Script, Value};
use tokio::sync::{mpsc, oneshot};

#[cfg(test)]
use super::StoredMatch;
use super::{
    saved, Append, AppendTicket, Head, Incarnation, LogEntry, Page, Resumed, Store, StoreError,
};
use crate::locks::lock;
use crate::model::{Event, Match, MatchId, MatchInfo, Seq};

mod append;
mod codec;
mod conn;
mod follow;
mod keys;

use conn::{connect, Conn, Target};
pub(crate) mod nodes;

/// How long `WAIT` waits for replicas before the append is reported as not durable.
const WAIT_TIMEOUT_MS: u64 = 1_000;
/// Matches whose heads are read at once.
const HEADS_PER_PIPELINE: usize = 1_000;

/// Where and how to reach Redis.
#[derive(Debug, Clone)]
pub(crate) struct RedisOptions {
    /// `redis://host:port[/db]` (one server) or `redis+cluster://host:port,host:port,...`;
    /// `rediss` for TLS.
    pub url: String,
    /// A private CA's certificate (PEM) that TLS connections trust instead of the system's.
    pub ca_cert: Option<std::path::PathBuf>,
    /// Replicas that must confirm each write (`WAIT`) before it is acknowledged.
    pub wait_replicas: u32,
    /// Accept a Redis that may lose acknowledged writes.
    pub volatile: bool,
}

/// The shared store on Redis.
pub(crate) struct RedisStore {
    conn: Conn,
    /// Names this node's appends when it takes a match's turn (`keys::APPEND`).
    writer: Arc<str>,
    wait_replicas: u32,
    /// Why the last call failed, while Redis cannot be reached or written.
    failure: Arc<Mutex<Option<String>>>,
    scripts: Scripts,
    /// Appends, in the order they were submitted, to the writer (`append.rs`).
    appends: mpsc::Sender<append::Queued>,
    /// Taken by the node when it starts following.
    follow: Mutex<Option<mpsc::Receiver<LogEntry>>>,
    follower: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

struct Scripts {
    read: Script,
    give_turn_back: Script,
    resume: Script,
    save: Script,
}

impl RedisStore {
    /// Connects, checks that acknowledged writes will be durable, and starts following the log.
    pub(crate) async fn open(opts: &RedisOptions) -> Result<RedisStore, StoreError> {
        let ca_pem = match &opts.ca_cert {
            Some(path) => Some(std::fs::read(path).map_err(|e| {
                StoreError::Backend(format!("cannot read --redis-ca-cert {}: {e}", path.display()))
            })?),
            None => None,
        };
        let target = Target::parse(&opts.url, ca_pem)?;
        let conn = connect(&target).await?;
        let failure = Arc::new(Mutex::new(None));
        let (appends, queue) = mpsc::channel(append::QUEUE);
        let writer: Arc<str> = format!("{:016x}", rand::random::<u64>()).into();
        // Ends once the store is dropped and every queued append is answered.
        tokio::spawn(append::run(
            queue,
            conn.clone(),
            opts.wait_replicas,
            writer.clone(),
            failure.clone(),
        ));
        let store = RedisStore {
            conn,
            writer,
            wait_replicas: opts.wait_replicas,
            failure,
            appends,
            scripts: Scripts {
                read: Script::new(keys::READ),
                give_turn_back: Script::new(keys::GIVE_TURN_BACK),
                resume: Script::new(keys::RESUME),
                save: Script::new(keys::SAVE),
            },
            follow: Mutex::new(None),
            follower: Mutex::new(None),
        };
        store.check_durability(opts).await?;
        let (tx, rx) = mpsc::channel(4096);
        let follower = tokio::spawn(follow::run(target, tx, store.failure.clone()));
        *lock(&store.follower) = Some(follower);
        *lock(&store.follow) = Some(rx);
        Ok(store)
    }

    /// The connection, to run commands on (a cheap clone of a multiplexed connection).
    fn conn(&self) -> Conn {
        self.conn.clone()
    }

    /// Refuses a Redis that may lose an acknowledged write, unless the operator accepts it.
    /// Durable means: every master fsyncs every write (`appendonly yes`, `appendfsync always`,
    /// and no pause of the fsync while the AOF is rewritten: `no-appendfsync-on-rewrite no`), or,
    /// with `--redis-wait-replicas N`, every master has at least N replicas connected to confirm
    /// each write.
    async fn check_durability(&self, opts: &RedisOptions) -> Result<(), StoreError> {
        let unsafe_because = if opts.wait_replicas > 0 {
            match self.replicas().await {
                Ok(counts) => counts
                    .iter()
                    .filter(|(_, n)| *n < opts.wait_replicas)
                    .map(|(master, n)| format!("{master} has {n} connected replicas"))
                    .reduce(|a, b| format!("{a}, {b}"))
                    .map(|bad| {
                        format!("{bad}; --redis-wait-replicas wants {}", opts.wait_replicas)
                    }),
                Err(e) => Some(format!("its replication cannot be read ({e})")),
            }
        } else {
            let names = ["appendonly", "appendfsync", "no-appendfsync-on-rewrite"];
            match self.config_get(&names).await {
                Ok(pairs) => {
                    let bad: Vec<String> = pairs
                        .iter()
                        .filter(|(k, v)| match k.as_str() {
                            "appendonly" => v != "yes",
                            "appendfsync" => v != "always",
                            "no-appendfsync-on-rewrite" => v != "no",
                            _ => false,
                        })
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect();
                    (!bad.is_empty()).then(|| bad.join(", "))
                }
                Err(e) => Some(format!("its persistence settings cannot be read ({e})")),
            }
        };
        let Some(why) = unsafe_because else {
            if opts.wait_replicas > 0 {
                tracing::info!(
                    replicas = opts.wait_replicas,
                    "each write waits for replicas (WAIT)"
                );
            } else {
                tracing::info!(url = %conn::redacted(&opts.url), "redis persists every write (appendfsync always)");
            }
            return Ok(());
        };
        if opts.volatile {
            tracing::warn!(
                url = %conn::redacted(&opts.url), %why,
                "--redis-volatile: acknowledged events may be lost if Redis stops"
            );
            return Ok(());
        }
        Err(StoreError::Backend(format!(
            "redis at {} may lose acknowledged events ({why}). Make it fsync every write \
             (`redis-cli CONFIG SET appendonly yes`, `CONFIG SET appendfsync always` and \
             `CONFIG SET no-appendfsync-on-rewrite no`, and the same in redis.conf), or confirm \
             writes on replicas with --redis-wait-replicas N (each master needs N connected \
             replicas), or accept the risk with --redis-volatile",
            conn::redacted(&opts.url)
        )))
    }

    /// How many replicas are connected to each master (`INFO replication`).
    async fn replicas(&self) -> Result<Vec<(String, u32)>, StoreError> {
        let mut cmd = redis::cmd("INFO");
        cmd.arg("replication");
        let answers: Vec<(String, Value)> = match self.conn() {
            Conn::Single(mut c) => {
                vec![(
                    "redis".to_owned(),
                    cmd.query_async::<Value>(&mut c).await.map_err(redis_err)?,
                )]
            }
            Conn::Cluster(mut c) => {
                let all = RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None));
                match c.route_command(cmd, all).await.map_err(redis_err)? {
                    Value::Map(pairs) => pairs
                        .into_iter()
                        .map(|(k, v)| {
                            Ok((redis::from_redis_value::<String>(k).map_err(redis_err)?, v))
                        })
                        .collect::<Result<_, StoreError>>()?,
                    v => vec![("redis".to_owned(), v)],
                }
            }
        };
        answers
            .into_iter()
            .map(|(master, info)| {
                let info: String = redis::from_redis_value(info).map_err(redis_err)?;
                let n = info
                    .lines()
                    .find_map(|l| l.trim().strip_prefix("connected_slaves:"))
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(|| corrupt("INFO replication", "no connected_slaves"))?;
                Ok((master, n))
            })
            .collect()
    }

    /// `CONFIG GET` of each name, on every master of a cluster.
    async fn config_get(&self, names: &[&str]) -> Result<Vec<(String, String)>, StoreError> {
        let mut out = Vec::new();
        for name in names {
            let mut cmd = redis::cmd("CONFIG");
            cmd.arg("GET").arg(*name);
            let value = match self.conn() {
                Conn::Single(mut c) => cmd.query_async::<Value>(&mut c).await,
                Conn::Cluster(mut c) => {
                    let all = RoutingInfo::MultiNode((
                        MultipleNodeRoutingInfo::AllMasters,
                        Some(ResponsePolicy::CombineArrays),
                    ));
                    c.route_command(cmd, all).await
                }
            }
            .map_err(redis_err)?;
            let strings: Vec<String> =
                redis::from_redis_value(flatten(value)).map_err(redis_err)?;
            for pair in strings.chunks(2) {
                if let [k, v] = pair {
                    out.push((k.clone(), v.clone()));
                }
            }
        }
        Ok(out)
    }

    /// Runs `f`, and keeps `failure` up to date with how it went (logged once per spell).
    async fn track<T>(
        &self,
        f: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let result = f.await;
        note_outcome(&self.failure, result.as_ref().err());
        result
    }

    /// Runs one write (a script call on one match's keys) and, with `--redis-wait-replicas`,
    /// `WAIT` in the same pipeline, so that it runs on the connection that carried the write
    /// (see `append.rs`). Returns the write's answer, and whether replicas confirmed it.
    async fn write(&self, cmd: redis::Cmd) -> Result<(Value, Result<(), StoreError>), StoreError> {
        let mut pipe = redis::pipe();
        pipe.add_command(cmd);
        let waits = self.wait_replicas > 0;
        if waits {
            pipe.cmd("WAIT").arg(self.wait_replicas).arg(WAIT_TIMEOUT_MS);
        }
        let n = 1 + usize::from(waits);
        let mut replies = self.conn().req_packed_commands(&pipe, 0, n).await.map_err(redis_err)?;
        if replies.len() != n {
            return Err(StoreError::Backend(format!("a write answered {} replies", replies.len())));
        }
        let confirmation = match waits.then(|| replies.pop()).flatten() {
            Some(acked) => confirmed(acked, self.wait_replicas),
            None => Ok(()),
        };
        match replies.pop() {
            Some(Value::ServerError(e)) => Err(StoreError::Backend(format!("redis: {e:?}"))),
            Some(reply) => Ok((reply, confirmation)),
            None => Err(StoreError::Backend("a write answered nothing".into())),
        }
    }

    /// A match and its log from `first` (an entry id), `count` entries (-1: all), read at once.
    async fn read(
        &self,
        id: &MatchId,
        first: Seq,
        count: i64,
    ) -> Result<Option<(MatchInfo, Incarnation, Vec<Event>)>, StoreError> {
        let value: Value = self
            .scripts
            .read
            .key(keys::meta(id))
            .key(keys::log(id))
            .arg(format!("{first}-0"))
            .arg(count)
            .invoke_async(&mut self.conn())
            .await
            .map_err(redis_err)?;
        let Value::Array(parts) = value else {
            return Err(StoreError::Backend(format!("read of {id} answered {value:?}")));
        };
        // Not live (cancelled, or never created): `None`, which `load_all` skips (the id stays
        // in the set of matches after a cancel).
        if parts.is_empty() {
            return Ok(None);
        }
        let [info, inc, entries] = <[Value; 3]>::try_from(parts).map_err(|parts| {
            StoreError::Backend(format!("read of {id} answered {} parts", parts.len()))
        })?;
        let info: String = redis::from_redis_value(info).map_err(redis_err)?;
        let info: MatchInfo = serde_json::from_str(&info).map_err(|e| corrupt("match", e))?;
        let inc: String = redis::from_redis_value(inc).map_err(redis_err)?;
        let inc = inc.parse().map_err(|e| corrupt("incarnation", e))?;
        let entries: Vec<(String, Vec<(String, String)>)> =
            redis::from_redis_value(entries).map_err(redis_err)?;
        let events: Result<Vec<Event>, StoreError> =
            entries.into_iter().map(|(eid, f)| codec::event_from_entry(&eid, &f)).collect();
        Ok(Some((info, inc, events?)))
    }

    /// The ids that may be live and not ended: [`keys::LIVE`] and what is left of the set of
    /// an older deployment ([`keys::LEGACY_MATCHES`]), each with whether it came from there.
    async fn ids(&self) -> Result<Vec<(MatchId, bool)>, StoreError> {
        let mut ids = Vec::new();
        for (set, legacy) in [(keys::LIVE, false), (keys::LEGACY_MATCHES, true)] {
            let members: Vec<String> = redis::cmd("SMEMBERS")
                .arg(set)
                .query_async(&mut self.conn())
                .await
                .map_err(redis_err)?;
            ids.extend(
                members.iter().filter_map(|id| MatchId::parse(id).ok()).map(|id| (id, legacy)),
            );
        }
        ids.sort();
        ids.dedup_by(|a, b| a.0 == b.0);
        Ok(ids)
    }

    /// Runs one command (each may go to another shard of a cluster).
    async fn command(&self, cmd: &redis::Cmd) -> Result<(), StoreError> {
        command(&mut self.conn(), cmd).await
    }

    /// A match from its saved state and the log after it; `None` when it is not live.
    async fn resume_one(&self, id: &MatchId) -> Result<Option<Resumed>, StoreError> {
        let value: Value = self
            .scripts
            .resume
            .key(keys::meta(id))
            .key(keys::log(id))
            .invoke_async(&mut self.conn())
            .await
            .map_err(redis_err)?;
        let Value::Array(parts) = value else {
            return Err(StoreError::Backend(format!("resume of {id} answered {value:?}")));
        };
        if parts.is_empty() {
            return Ok(None);
        }
        let [info, inc, json, entries] = <[Value; 4]>::try_from(parts).map_err(|parts| {
            StoreError::Backend(format!("resume of {id} answered {} parts", parts.len()))
        })?;
        let info: String = redis::from_redis_value(info).map_err(redis_err)?;
        let info: MatchInfo = serde_json::from_str(&info).map_err(|e| corrupt("match", e))?;
        let inc: String = redis::from_redis_value(inc).map_err(redis_err)?;
        let inc: Incarnation = inc.parse().map_err(|e| corrupt("incarnation", e))?;
        let json: String = redis::from_redis_value(json).map_err(redis_err)?;
        let entries: Vec<(String, Vec<(String, String)>)> =
            redis::from_redis_value(entries).map_err(redis_err)?;
        let events: Vec<Event> = entries
            .into_iter()
            .map(|(eid, f)| codec::event_from_entry(&eid, &f))
            .collect::<Result<_, _>>()?;
        if json.is_empty() {
            return Ok(Some(Resumed { inc, state: Match::new(info), events }));
        }
        // The script checked the seq against the log; `decode` checks the incarnation.
        let head = events.last().map_or(Seq::MAX, |e| e.seq);
        match saved::decode(&json, inc, head) {
            Some(state) => Ok(Some(Resumed { inc, state, events })),
            // Unusable: the whole log, then.
            None => Ok(self.read(id, 0, -1).await?.map(|(info, inc, events)| Resumed {
                inc,
                state: Match::new(info),
                events,
            })),
        }
    }

    /// The directory of the cluster's nodes, for `crate::cluster`'s reports (see `nodes.rs`).
    pub(crate) fn conn_for_nodes(&self) -> nodes::NodesConn {
        nodes::NodesConn::new(self.conn())
    }
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        if let Some(f) = lock(&self.follower).take() {
            f.abort();
        }
    }
}

/// What `WAIT` answered (sent in the pipeline of the writes it confirms): enough replicas, or
/// why not.
fn confirmed(acked: Value, replicas: u32) -> Result<(), StoreError> {
    match redis::from_redis_value::<i64>(acked) {
        Ok(n) if n >= i64::from(replicas) => Ok(()),
        Ok(n) => Err(StoreError::Backend(format!(
            "only {n} of {replicas} replicas confirmed the write within {WAIT_TIMEOUT_MS} ms"
        ))),
        Err(e) => Err(redis_err(e)),
    }
}

/// Moves an ended match from the live sets to [`keys::ENDED`]: added there first, so that
/// it is never in neither. In a cluster these sets are on other shards than the match, so
/// this follows its script rather than being part of it; it is idempotent, and a match
/// found ended in the live set is moved again by whoever finds it.
async fn mark_ended(conn: &mut Conn, id: &MatchId, inc: Incarnation) -> Result<(), StoreError> {
    command(conn, redis::cmd("SADD").arg(keys::ENDED).arg(id.as_str())).await?;
    command(conn, redis::cmd("SREM").arg(keys::LIVE).arg(id.as_str())).await?;
    command(conn, redis::cmd("SREM").arg(keys::LEGACY_MATCHES).arg(id.as_str())).await?;
    // Cancelled and created anew meanwhile (by another node): that one is live.
    relist_if_live(conn, id, Some(inc)).await
}

/// Lists `id` in [`keys::LIVE`] again if an incarnation other than `not` is live: what a
/// removal from that set does after it, so that it never unlists a match another node has
/// just created under the same id.
async fn relist_if_live(
    conn: &mut Conn,
    id: &MatchId,
    not: Option<Incarnation>,
) -> Result<(), StoreError> {
    let live: Option<String> = redis::cmd("HGET")
        .arg(keys::meta(id))
        .arg("inc")
        .query_async(conn)
        .await
        .map_err(redis_err)?;
    let other = live.and_then(|v| v.parse::<Incarnation>().ok()).filter(|i| Some(*i) != not);
    if other.is_some() {
        command(conn, redis::cmd("SADD").arg(keys::LIVE).arg(id.as_str())).await?;
    }
    Ok(())
}

/// Runs one command (each may go to another shard of a cluster).
async fn command(conn: &mut Conn, cmd: &redis::Cmd) -> Result<(), StoreError> {
    cmd.query_async::<Value>(conn).await.map_err(redis_err).map(|_| ())
}

/// Saves a match's state (`keys::SAVE`) and, if it ended, moves it to the ended set.
async fn save(
    conn: &mut Conn,
    script: &Script,
    inc: Incarnation,
    state: &Match,
) -> Result<(), StoreError> {
    let id = state.id();
    let kept: i64 = script
        .key(keys::meta(id))
        .arg(inc)
        .arg(state.seq)
        .arg(saved::encode(inc, state)?)
        .invoke_async(conn)
        .await
        .map_err(redis_err)?;
    if kept == 0 {
        return Err(StoreError::NotFound(id.clone()));
    }
    if kept == 2 {
        // The log holds less than this state: Redis rewound, and the node will notice.
        return Ok(());
    }
    if state.is_over() {
        mark_ended(conn, id, inc).await?;
    }
    Ok(())
}

/// Records a call's outcome: the first failure of a spell is logged, and so is the recovery.
fn note_outcome(failure: &Mutex<Option<String>>, error: Option<&StoreError>) {
    match error {
        Some(StoreError::Backend(why)) => {
            if lock(failure).replace(why.clone()).is_none() {
                tracing::error!(error = %why, "redis cannot be used");
            }
        }
        // A refusal is an answer: Redis works.
        _ => {
            if lock(failure).take().is_some() {
                tracing::warn!("redis works again");
            }
        }
    }
}

/// The arrays of a multi-node answer, one after the other.
fn flatten(value: Value) -> Value {
    match value {
        Value::Map(pairs) => {
            Value::Array(pairs.into_iter().flat_map(|(k, v)| [k, flatten(v)]).collect())
        }
        v => v,
    }
}

fn redis_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("redis: {e}"))
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("stored {what} cannot be read: {e}"))
}

#[async_trait]
impl Store for RedisStore {
    async fn create_match(&self, info: &MatchInfo) -> Result<Incarnation, StoreError> {
        self.track(async {
            let id = &info.id;
            // Listed first: a match is never live without being listed (a listed id without a
            // live match is skipped by every reader).
            self.command(redis::cmd("SADD").arg(keys::LIVE).arg(id.as_str())).await?;
            let json = serde_json::to_string(info).map_err(|e| corrupt("match", e))?;
            let prefix = format!(r#"{{"t":"c","id":"{id}","inc":"#);
            let mut cmd = redis::cmd("EVAL");
            cmd.arg(keys::CREATE)
                .arg(3)
                .arg(keys::meta(id))
                .arg(keys::inc(id))
                .arg(keys::log(id))
                .arg(json)
                .arg(keys::CHANNEL)
                .arg(prefix)
                // Names this create: sent again after a lost answer, it is recognised.
                .arg(format!("{:016x}", rand::random::<u64>()));
            let (inc, confirmation) = self.write(cmd).await?;
            let inc: i64 = redis::from_redis_value(inc).map_err(redis_err)?;
            if inc < 0 {
                return Err(StoreError::Exists(id.clone()));
            }
            // Listed again after the script: a cancel of the incarnation before, on another
            // node, may have unlisted the id between the first listing and the script. And
            // not among the ended ones, whatever a race with the one before left there.
            self.command(redis::cmd("SADD").arg(keys::LIVE).arg(id.as_str())).await?;
            self.command(redis::cmd("SREM").arg(keys::ENDED).arg(id.as_str())).await?;
            confirmation?;
            Ok(inc as Incarnation)
        })
        .await
    }

    async fn submit_append(
        &self,
        id: &MatchId,
        append: Append,
    ) -> Result<AppendTicket, StoreError> {
        // Queued in the caller's order; the writer sends them in that order (see `append.rs`).
        let (done, outcome) = oneshot::channel();
        let queued = append::Queued { id: id.clone(), append, done };
        self.appends
            .send(queued)
            .await
            .map_err(|_| StoreError::Backend("the redis writer has stopped".into()))?;
        Ok(AppendTicket(Box::pin(async move {
            outcome
                .await
                .unwrap_or_else(|_| Err(StoreError::Backend("the redis writer has stopped".into())))
        })))
    }

    async fn cancel_match(&self, id: &MatchId, inc: Incarnation) -> Result<(), StoreError> {
        self.track(async {
            let message = codec::announcement_cancelled(id, inc)?;
            let mut cmd = redis::cmd("EVAL");
            cmd.arg(keys::CANCEL)
                .arg(3)
                .arg(keys::meta(id))
                .arg(keys::log(id))
                .arg(keys::inc(id))
                .arg(inc)
                .arg(keys::CHANNEL)
                .arg(message);
            let (done, confirmation) = self.write(cmd).await?;
            let done: i64 = redis::from_redis_value(done).map_err(redis_err)?;
            if done == 0 {
                return Err(StoreError::NotFound(id.clone()));
            }
            confirmation?;
            // Unlisted once cancelled, so the sets do not grow with cancelled matches (a
            // failure here leaves a member that readers skip).
            for set in [keys::LIVE, keys::ENDED, keys::LEGACY_MATCHES] {
                self.command(redis::cmd("SREM").arg(set).arg(id.as_str())).await?;
            }
            relist_if_live(&mut self.conn(), id, Some(inc)).await
        })
        .await
    }

    #[cfg(test)]
    async fn load_all(&self) -> Result<Vec<StoredMatch>, StoreError> {
        self.track(async {
            let mut all = Vec::new();
            for (id, _) in self.ids().await? {
                if let Some((info, inc, events)) = self.read(&id, 0, -1).await? {
                    all.push(StoredMatch { info, inc, events });
                }
            }
            all.sort_by_key(|m| m.info.id.clone());
            Ok(all)
        })
        .await
    }

    #[cfg(test)]
    async fn load(&self, id: &MatchId) -> Result<Option<StoredMatch>, StoreError> {
        self.track(async {
            Ok(self.read(id, 0, -1).await?.map(|(info, inc, events)| StoredMatch {
                info,
                inc,
                events,
            }))
        })
        .await
    }

    async fn load_live(&self) -> Result<Vec<Resumed>, StoreError> {
        self.track(async {
            let ids = self.ids().await?;
            let mut live = Vec::with_capacity(ids.len());
            for chunk in ids.chunks(HEADS_PER_PIPELINE) {
                let reads = chunk.iter().map(|(id, _)| self.resume_one(id));
                let found = futures_util::future::try_join_all(reads).await?;
                for ((id, legacy), resumed) in chunk.iter().zip(found) {
                    match resumed {
                        // Its final state is saved: the move to the ended set did not happen
                        // (a node stopped in between, or an older deployment). Done now.
                        Some(r) if r.state.is_over() => {
                            mark_ended(&mut self.conn(), id, r.inc).await?
                        }
                        Some(r) => live.push(r),
                        // Cancelled; nobody adds to the old set any more.
                        None if *legacy => {
                            let cmd = redis::cmd("SREM")
                                .arg(keys::LEGACY_MATCHES)
                                .arg(id.as_str())
                                .clone();
                            self.command(&cmd).await?;
                        }
                        None => {}
                    }
                }
            }
            Ok(live)
        })
        .await
    }

    async fn resume(&self, id: &MatchId) -> Result<Option<Resumed>, StoreError> {
        self.track(self.resume_one(id)).await
    }

    async fn ended_ids(&self) -> Result<Vec<MatchId>, StoreError> {
        self.track(async {
            let members: Vec<String> = redis::cmd("SMEMBERS")
                .arg(keys::ENDED)
                .query_async(&mut self.conn())
                .await
                .map_err(redis_err)?;
            Ok(members.iter().filter_map(|id| MatchId::parse(id).ok()).collect())
        })
        .await
    }

    /// Sent in the background (a cache of the log: a failure is logged, and repaired by
    /// whoever finds the match again).
    fn save_state(&self, inc: Incarnation, state: &Match) {
        let (mut conn, script, state) = (self.conn(), self.scripts.save.clone(), state.clone());
        tokio::spawn(async move {
            if let Err(e) = save(&mut conn, &script, inc, &state).await {
                tracing::debug!(match_id = %state.id(), seq = state.seq, error = %e, "saving the state");
            }
        });
    }

    async fn heads(&self) -> Result<Vec<Head>, StoreError> {
        self.track(async {
            let ids: Vec<MatchId> = self.ids().await?.into_iter().map(|(id, _)| id).collect();
            let mut heads = Vec::with_capacity(ids.len());
            // A thousand reads at a time on the multiplexed connection (in a cluster each to
            // its match's shard), not a round trip per match: this runs on every node every few
            // seconds.
            for chunk in ids.chunks(HEADS_PER_PIPELINE) {
                let reads = chunk.iter().map(|id| {
                    let mut conn = self.conn();
                    async move {
                        redis::cmd("HMGET")
                            .arg(keys::meta(id))
                            .arg("inc")
                            .arg("seq")
                            .arg("lts")
                            .query_async::<(Option<String>, Option<String>, Option<String>)>(
                                &mut conn,
                            )
                            .await
                    }
                });
                let rows = futures_util::future::try_join_all(reads).await.map_err(redis_err)?;
                for (id, row) in chunk.iter().zip(rows) {
                    // Not live (a cancelled match's id stays listed): skipped.
                    if let (Some(inc), Some(seq), ts) = row {
                        heads.push(Head {
                            id: id.clone(),
                            inc: inc.parse().map_err(|e| corrupt("incarnation", e))?,
                            seq: seq.parse().map_err(|e| corrupt("seq", e))?,
                            ts: ts.map(|t| t.parse()).transpose().map_err(|e| corrupt("ts", e))?,
                        });
                    }
                }
            }
            Ok(heads)
        })
        .await
    }

    async fn history(&self, id: &MatchId, after: Seq, limit: usize) -> Result<Page, StoreError> {
        self.track(async {
            // COUNT 0 would mean "all" to some Redis versions: read one and drop it.
            let count = i64::try_from(limit.max(1)).unwrap_or(i64::MAX);
            let (_, inc, mut events) = self
                .read(id, after + 1, count)
                .await?
                .ok_or_else(|| StoreError::NotFound(id.clone()))?;
            events.truncate(limit);
            Ok(Page { inc, events })
        })
        .await
    }

    async fn flush(&self) -> Result<(), StoreError> {
        // Every acknowledged write is already durable in Redis.
        Ok(())
    }

    fn health(&self) -> Result<(), StoreError> {
        let Some(why) = lock(&self.failure).clone() else { return Ok(()) };
        // Ask Redis, so that recovery shows without waiting for a watcher; the next look sees
        // the outcome.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let mut conn = self.conn();
            let failure = self.failure.clone();
            runtime.spawn(async move {
                let pong = redis::cmd("PING").query_async::<String>(&mut conn).await;
                note_outcome(&failure, pong.map_err(redis_err).err().as_ref());
            });
        }
        Err(StoreError::Backend(why))
    }

    fn follow(&self) -> Option<mpsc::Receiver<LogEntry>> {
        lock(&self.follow).take()
    }

    async fn give_turn_back(&self, id: &MatchId) {
        let given: Result<i64, _> = self
            .scripts
            .give_turn_back
            .key(keys::turn(id))
            .arg(&*self.writer)
            .invoke_async(&mut self.conn())
            .await;
        if let Err(e) = given {
            // It expires by itself within `keys::TURN_MS`.
            tracing::debug!(match_id = %id, error = %e, "giving the turn back");
        }
    }
}

#[cfg(test)]
mod tests;
