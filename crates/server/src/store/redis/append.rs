//! The writer of appends: one task that sends every append in the order it was queued, so that
//! a chain of appends (each naming the one before by its tag) reaches Redis in that order, as
//! the [`Store`](crate::store::Store) contract says. Appends queued while a batch is being
//! written go out together as the next batch: one pipeline per match (a cluster routes a
//! pipeline to one shard), all matches at once, and Redis fsyncs each shard's share once.
//!
//! A task per append (what this replaced) let the runtime reorder them: an append could reach
//! Redis before the one it names and be refused, and every request of the chain behind it with it.
//!
//! With `--redis-wait-replicas`, `WAIT` goes in the same pipeline as the appends: a pipeline
//! is written on one connection, so `WAIT` counts exactly these writes (a `WAIT` sent alone
//! after a reconnect or a slot move would run on a connection that wrote nothing, and confirm
//! nothing).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures_util::future::join_all;
use redis::aio::ConnectionLike;
use redis::Value;
use tokio::sync::{mpsc, oneshot};

use super::codec::announcement_appended;
use super::{confirmed, corrupt, keys, note_outcome, redis_err, Conn, WAIT_TIMEOUT_MS};
use crate::model::{MatchId, Seq};
use crate::store::{check_seqs, Append, StoreError};

/// Appends waiting for the writer; past it, `submit_append` waits for room.
pub(super) const QUEUE: usize = 4096;
/// Most appends one batch takes from the queue.
const MAX_BATCH: usize = 1024;

/// An append waiting for the writer, and where its outcome goes.
pub(super) struct Queued {
    pub id: MatchId,
    pub append: Append,
    pub done: oneshot::Sender<Result<(), StoreError>>,
}

/// Until every sender is gone: take what is queued, write it, answer each append.
pub(super) async fn run(
    mut queue: mpsc::Receiver<Queued>,
    conn: Conn,
    wait_replicas: u32,
    writer: Arc<str>,
    failure: Arc<Mutex<Option<String>>>,
) {
    while let Some(first) = queue.recv().await {
        // Grouped by match, each group in queue order.
        let mut groups: HashMap<MatchId, Vec<Queued>> = HashMap::new();
        let mut taken = 1;
        groups.entry(first.id.clone()).or_default().push(first);
        while taken < MAX_BATCH {
            let Ok(next) = queue.try_recv() else { break };
            groups.entry(next.id.clone()).or_default().push(next);
            taken += 1;
        }
        let writes = groups
            .into_iter()
            .map(|(id, group)| write_group(conn.clone(), wait_replicas, &writer, id, group));
        for outcomes in join_all(writes).await {
            for (done, outcome) in outcomes {
                note_outcome(&failure, outcome.as_ref().err());
                // The requester may have stopped waiting; the append stands either way.
                let _ = done.send(outcome);
            }
        }
    }
}

type Outcomes = Vec<(oneshot::Sender<Result<(), StoreError>>, Result<(), StoreError>)>;

/// Writes one match's appends as one pipeline, in order, and says how each went.
async fn write_group(
    mut conn: Conn,
    wait_replicas: u32,
    writer: &str,
    id: MatchId,
    group: Vec<Queued>,
) -> Outcomes {
    let mut pipe = redis::pipe();
    let mut sent = Vec::with_capacity(group.len());
    let mut outcomes = Vec::with_capacity(group.len());
    for queued in group {
        match command(&id, &queued.append, wait_replicas, writer) {
            Ok((cmd, announce)) => {
                pipe.add_command(cmd);
                sent.push((queued, announce));
            }
            Err(e) => outcomes.push((queued.done, Err(e))),
        }
    }
    if sent.is_empty() {
        return outcomes;
    }
    let expected = sent.len() + usize::from(wait_replicas > 0);
    if wait_replicas > 0 {
        pipe.cmd("WAIT").arg(wait_replicas).arg(WAIT_TIMEOUT_MS);
    }
    let replies = conn.req_packed_commands(&pipe, 0, expected).await.map_err(redis_err);
    let mut replies = match replies {
        Ok(replies) if replies.len() == expected => replies,
        Ok(replies) => {
            let e =
                StoreError::Backend(format!("{} appends answered {}", sent.len(), replies.len()));
            outcomes.extend(sent.into_iter().map(|(q, _)| (q.done, Err(e.clone()))));
            return outcomes;
        }
        Err(e) => {
            outcomes.extend(sent.into_iter().map(|(q, _)| (q.done, Err(e.clone()))));
            return outcomes;
        }
    };
    // What `WAIT` answered: how many replicas have every write of this pipeline.
    let confirmed =
        (wait_replicas > 0).then(|| replies.pop()).flatten().map(|v| confirmed(v, wait_replicas));
    let mut stored = Vec::new();
    for ((queued, announce), reply) in sent.into_iter().zip(replies) {
        let outcome = outcome(&id, &queued.append, reply);
        if outcome.is_ok() {
            stored.push((queued.done, announce));
        } else {
            outcomes.push((queued.done, outcome));
        }
    }
    if let Some(confirmed) = confirmed.filter(|_| !stored.is_empty()) {
        // With WAIT, the others hear of the appends only once replicas have them.
        let confirmed = match confirmed {
            Ok(()) => announce_all(&mut conn, stored.iter().map(|(_, a)| a.as_str())).await,
            Err(e) => Err(e),
        };
        outcomes.extend(stored.into_iter().map(|(done, _)| (done, confirmed.clone())));
    } else {
        outcomes.extend(stored.into_iter().map(|(done, _)| (done, Ok(()))));
    }
    outcomes
}

/// The script call of one append (EVAL: no script cache to miss after a restart, so nothing
/// to resend out of order), and its announcement.
fn command(
    id: &MatchId,
    append: &Append,
    wait_replicas: u32,
    writer: &str,
) -> Result<(redis::Cmd, String), StoreError> {
    let last = check_seqs(id, append.expect.seq, &append.events)?;
    let announce = announcement_appended(id, append.inc, last, &append.events);
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(keys::APPEND)
        .arg(3)
        .arg(keys::meta(id))
        .arg(keys::log(id))
        .arg(keys::turn(id))
        .arg(append.inc)
        .arg(append.expect.seq)
        .arg(append.expect.tag.map(|t| t.to_string()).unwrap_or_default())
        .arg(append.tag.to_string())
        .arg(keys::CHANNEL)
        .arg(if wait_replicas > 0 { "" } else { announce.as_str() })
        .arg(writer)
        .arg(keys::TURN_MS)
        .arg(append.expect.ts.map(|t| t.to_string()).unwrap_or_default());
    for ev in &append.events {
        let data = serde_json::to_string(&ev.data).map_err(|e| corrupt("event", e))?;
        cmd.arg(ev.ts).arg(ev.kind.as_str()).arg(data);
    }
    Ok((cmd, announce))
}

/// What the script answered for one append.
fn outcome(id: &MatchId, append: &Append, reply: Value) -> Result<(), StoreError> {
    if let Value::ServerError(e) = &reply {
        return Err(StoreError::Backend(format!("redis: append to {id}: {e:?}")));
    }
    let reply: Vec<i64> = redis::from_redis_value(reply).map_err(redis_err)?;
    match reply.as_slice() {
        [0, _] => Ok(()),
        [-1] => Err(StoreError::NotFound(id.clone())),
        [-3, _] => Err(StoreError::NotYourTurn(id.clone())),
        [-2, current] => Err(StoreError::SeqConflict {
            id: id.clone(),
            expected: append.expect.seq,
            current: *current as Seq,
        }),
        other => Err(StoreError::Backend(format!("append answered {other:?}"))),
    }
}

/// Publishes announcements held back for `WAIT`.
async fn announce_all<'a>(
    conn: &mut Conn,
    announcements: impl Iterator<Item = &'a str>,
) -> Result<(), StoreError> {
    let mut pipe = redis::pipe();
    for a in announcements {
        pipe.cmd("PUBLISH").arg(keys::CHANNEL).arg(a).ignore();
    }
    pipe.query_async::<()>(conn).await.map_err(redis_err)
}
