//! The crash loop (issue 18): a node process is killed with SIGKILL 20 times at random moments
//! while a watcher publishes as fast as it is answered, each event with `?after=<seq>` (SPEC 2),
//! resending the same request after a lost answer. After each kill every acknowledged event is
//! there, with its seq, kind and data; seqs run 1, 2, 3... with none twice; and the SQLite file
//! passes `PRAGMA integrity_check`. The kill moments and the events come from a seed printed
//! at the start (`CRASH_LOOP_SEED=<n>` replays the same choices; the timing of the processes
//! is the machine's).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use matchstream_client::{Watcher, WatcherError};
use rand::{Rng, SeedableRng};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::redis::RedisServer;
use crate::support::*;

/// Kills in one run.
const KILLS: usize = 20;
/// The longest a node lives between its start and its kill; each lives a random part of it.
const MAX_LIFE: Duration = Duration::from_millis(400);
/// How long one event may go unanswered (nodes being killed and restarted) before the test
/// fails: a restart takes well under a second.
const EVENT_PATIENCE: Duration = Duration::from_secs(30);
/// The match every round publishes to.
const MATCH: &str = "elp-tig-2011-09-10";

/// An event the node applied, as the watcher knows it.
#[derive(Clone, Debug)]
struct Applied {
    seq: u64,
    kind: &'static str,
    data: Value,
    /// Its `201` was lost with the node; a resend found the match one past its `after`.
    answer_lost: bool,
}

/// What the watcher did, shared with the loop that kills.
#[derive(Default)]
struct Log {
    applied: Vec<Applied>,
    /// Requests sent again after they got no answer.
    resent: usize,
}

/// The seed of this run: `CRASH_LOOP_SEED` if set, else from the clock; printed either way.
fn seed() -> u64 {
    let seed = match std::env::var("CRASH_LOOP_SEED") {
        Ok(s) => s.parse().expect("CRASH_LOOP_SEED is a whole number"),
        Err(_) => {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
            now.expect("clock after 1970").as_nanos() as u64
        }
    };
    eprintln!("crash loop seed {seed} (CRASH_LOOP_SEED={seed} replays its choices)");
    seed
}

/// The `n`-th event of the match after its start: kinds that always apply to a started match,
/// with data that comes back as sent.
fn event(rng: &mut impl Rng, n: u64) -> (&'static str, Value) {
    let team = if rng.random_bool(0.5) { "elp" } else { "tig" };
    match rng.random_range(0..4) {
        0 => ("comment", json!({"text": format!("crash loop comment {n}")})),
        1 => ("goal", json!({"team": team})),
        2 => ("corner", json!({"team": team})),
        _ => ("foul", json!({"team": team})),
    }
}

/// A watcher that publishes event after event with `?after=`, to the first live node of
/// `bases`, moving to the next on a request that gets no answer and sending it again there.
async fn watcher(
    mut bases: watch::Receiver<Vec<String>>,
    log: Arc<Mutex<Log>>,
    seed: u64,
    stop: CancellationToken,
) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut at = 0;
    let mut clients: Vec<Watcher> = Vec::new();
    let mut after = log.lock().unwrap().applied.last().map_or(0, |a| a.seq);
    while !stop.is_cancelled() {
        let (kind, data) = event(&mut rng, after + 1);
        let body = json!({"kind": kind, "data": data});
        let path = format!("/1/match/{MATCH}/events?after={after}");
        let deadline = tokio::time::Instant::now() + EVENT_PATIENCE;
        let mut sent_before = false;
        let answer = loop {
            if bases.has_changed().unwrap_or(false) || clients.is_empty() {
                let now = bases.borrow_and_update().clone();
                clients = now.iter().map(|b| Watcher::new(b, TOKEN).expect("client")).collect();
            }
            let client = &clients[at % clients.len()];
            match client.send(Method::POST, &path, Some(&body)).await {
                Ok(answer) => break answer,
                Err(WatcherError::Unreachable { server, reason }) => {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "event {} unanswered for {EVENT_PATIENCE:?} (last: {server}: {reason})",
                        after + 1
                    );
                    if !sent_before {
                        log.lock().unwrap().resent += 1;
                    }
                    sent_before = true;
                    // Another node if there is one; else wait for this one's restart.
                    at += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(e) => panic!("{e}"),
            }
        };
        let got = answer.json();
        let answer_lost = match answer.status {
            StatusCode::CREATED => false,
            // Only this watcher publishes: a match one past `after` holds its lost request.
            StatusCode::CONFLICT if sent_before && got["seq"] == after + 1 => true,
            status => panic!("event {} ({path}): {status} {got}", after + 1),
        };
        if !answer_lost {
            assert_eq!(got["seq"], after + 1, "the seq after {after}: {got}");
        }
        after += 1;
        log.lock().unwrap().applied.push(Applied { seq: after, kind, data, answer_lost });
    }
}

/// The whole history of the match on `base`, page by page.
async fn history(base: &str) -> Vec<Value> {
    let client = Watcher::new(base, TOKEN).expect("client");
    let mut out: Vec<Value> = Vec::new();
    loop {
        let after = out.last().map_or(0, |e| e["seq"].as_u64().expect("seq"));
        let path = format!("/1/match/{MATCH}/history?after={after}&limit=2000");
        let answer = client.get(&path).await.expect("history");
        assert_eq!(answer.status, StatusCode::OK, "{path}: {}", answer.text);
        let page = answer.json().as_array().cloned().expect("a history is a list");
        if page.is_empty() {
            return out;
        }
        out.extend(page);
    }
}

/// The history on `base` holds seqs 1, 2, 3... once each and every event of `applied` as the
/// watcher sent it; returns its length.
async fn check_history(base: &str, applied: &[Applied], round: usize) -> (usize, u64) {
    // The match's seq first: the watcher may publish more before the history is read.
    let answer = Watcher::new(base, TOKEN).unwrap().get(&format!("/1/match/{MATCH}")).await;
    let answer = answer.expect("match");
    assert_eq!(answer.status, StatusCode::OK, "after kill {round}: {}", answer.text);
    let match_seq = answer.json()["seq"].as_u64().expect("the match's seq");
    // On Redis, a node hears of events published through another one a moment later.
    let want = applied.last().map_or(0, |a| a.seq) as usize;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let history = loop {
        let history = history(base).await;
        if history.len() >= want || tokio::time::Instant::now() > deadline {
            break history;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let seqs: Vec<u64> = history.iter().map(|e| e["seq"].as_u64().expect("seq")).collect();
    let want: Vec<u64> = (1..=seqs.len() as u64).collect();
    assert_eq!(seqs, want, "after kill {round}: seqs are not 1..n, each once");
    assert_eq!(history[0]["kind"], "start", "after kill {round}");
    for a in applied {
        let got = history.get(a.seq as usize - 1).unwrap_or_else(|| {
            panic!(
                "after kill {round}: seq {} ({:?}) is lost: history ends at {}",
                a.seq,
                a,
                seqs.len()
            )
        });
        assert_eq!(
            (&got["kind"], &got["data"]),
            (&json!(a.kind), &a.data),
            "after kill {round}: seq {} is not the event applied ({a:?})",
            a.seq
        );
    }
    assert!(
        match_seq <= seqs.len() as u64,
        "after kill {round}: the match is at seq {match_seq}, its history ends at {}",
        seqs.len()
    );
    (seqs.len(), match_seq)
}

/// `PRAGMA integrity_check` of the node's SQLite file, opened read-only (its node is dead).
fn integrity_check(dir: &std::path::Path, round: usize) {
    use rusqlite::OpenFlags;
    let path = dir.join("matchstream.db");
    let db = rusqlite::Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap_or_else(|e| panic!("after kill {round}: opening {}: {e}", path.display()));
    let result: Vec<String> = db
        .prepare("PRAGMA integrity_check")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .unwrap_or_else(|e| panic!("after kill {round}: integrity_check: {e}"));
    assert_eq!(result, ["ok"], "after kill {round}: PRAGMA integrity_check");
}

/// Creates the match and publishes its `start` through `base`.
async fn started(base: &str, log: &Arc<Mutex<Log>>) {
    let client = Watcher::new(base, TOKEN).unwrap();
    let create = json!({"home": "elp", "visit": "tig", "start_date": "2011-09-10"});
    let created = client.send(Method::POST, "/1/matches", Some(&create)).await.unwrap();
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let start = json!({"kind": "start", "data": start_data()});
    let path = format!("/1/match/{MATCH}/events?after=0");
    let answer = client.send(Method::POST, &path, Some(&start)).await.unwrap();
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text);
    let applied = Applied { seq: 1, kind: "start", data: start_data(), answer_lost: false };
    log.lock().unwrap().applied.push(applied);
}

/// Nodes on `dirs` (with `extra` arguments) and the watcher; kills a node (picked at random
/// when there are several) `KILLS` times, checking after each kill (before its restart, on a
/// node still up or the node restarted) what `check` and the history say.
async fn crash_loop(dirs: Vec<tempfile::TempDir>, extra: Vec<String>, sqlite: bool) {
    let seed = seed();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let start = |dir: &std::path::Path| NodeProcess::start_with(dir, &extra);
    let mut nodes: Vec<NodeProcess> = dirs.iter().map(|d| start(d.path())).collect();
    let log = Arc::new(Mutex::new(Log::default()));
    started(&nodes[0].base, &log).await;
    for n in &nodes[1..] {
        // Created everywhere (SPEC 7): each node has it before the watcher may go there.
        let url = format!("/1/match/{MATCH}");
        let client = Watcher::new(&n.base, TOKEN).unwrap();
        eventually("the match on every node", PATIENCE, async || {
            client.get(&url).await.ok().filter(|a| a.status == StatusCode::OK)
        })
        .await;
    }
    let (bases_tx, bases) = watch::channel(nodes.iter().map(|n| n.base.clone()).collect());
    let stop = CancellationToken::new();
    let publishing = tokio::spawn(watcher(bases, log.clone(), seed.wrapping_add(1), stop.clone()));
    let mut events_at_kills = Vec::new();
    for round in 1..=KILLS {
        let life = rng.random_range(Duration::ZERO..MAX_LIFE);
        tokio::time::sleep(life).await;
        assert!(!publishing.is_finished(), "the watcher stopped before kill {round}");
        let victim = rng.random_range(0..nodes.len());
        nodes[victim].kill9();
        // What was acknowledged up to the kill; later answers are checked at the next round.
        let applied = log.lock().unwrap().applied.clone();
        events_at_kills.push(applied.len());
        if sqlite {
            integrity_check(dirs[victim].path(), round);
        }
        let path = dirs[victim].path().to_owned();
        nodes[victim] = tokio::task::spawn_blocking({
            let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
            move || {
                let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
                NodeProcess::start_with(&path, &extra)
            }
        })
        .await
        .expect("restart");
        bases_tx.send_replace(nodes.iter().map(|n| n.base.clone()).collect());
        for n in &nodes {
            check_history(&n.base, &applied, round).await;
        }
    }
    stop.cancel();
    publishing.await.expect("the watcher ran to the end");
    let log = std::mem::take(&mut *log.lock().unwrap());
    for n in &nodes {
        // On Redis a node hears of the other node's last event a moment later: its seq, read
        // before its history, may still be one behind at first.
        let deadline = tokio::time::Instant::now() + PATIENCE;
        let (held, match_seq) = loop {
            let (held, seq) = check_history(&n.base, &log.applied, KILLS + 1).await;
            if seq == held as u64 || tokio::time::Instant::now() > deadline {
                break (held, seq);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(held, log.applied.len(), "every event the node holds is one the watcher sent");
        assert_eq!(match_seq, held as u64, "the match's seq against its history");
    }
    let lost = log.applied.iter().filter(|a| a.answer_lost).count();
    eprintln!(
        "crash loop: {} events, {KILLS} kills (events applied at each: {events_at_kills:?}), \
         {} requests resent, {lost} answers lost with their node",
        log.applied.len(),
        log.resent
    );
    // The watcher did publish across the kills, and some of its requests met a dead node.
    assert!(events_at_kills.windows(2).filter(|w| w[1] > w[0]).count() >= KILLS / 2);
    assert!(log.resent > 0, "no request ever met a killed node");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_loop_sqlite_kill_9_loses_no_acknowledged_event() {
    crash_loop(vec![tempfile::tempdir().unwrap()], Vec::new(), true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_loop_redis_two_nodes_kill_9_loses_no_acknowledged_event() {
    let redis = RedisServer::start().await;
    let dirs = vec![tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    crash_loop(dirs, vec!["--redis".into(), redis.url()], false).await;
}
