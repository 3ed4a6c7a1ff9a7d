//! `RedisStore` against a real `redis-server` of the test's own (and a three-master Redis
//! Cluster): the store contract every store keeps, the refusal of a Redis that may lose
//! acknowledged writes, and what another node hears through the log. A missing `redis-server`
//! fails loudly; every process is killed by its PID when its helper is dropped.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::codec::MAX_ANNOUNCED_BYTES;
use super::*;
use crate::store::memory::tests::{after_seq, append, contract, event, info};
use crate::store::Expect;

/// How long a helper waits for a server to be ready or for an entry of the log.
const PATIENCE: Duration = Duration::from_secs(20);
const DURABLE: &[&str] = &["--appendonly", "yes", "--appendfsync", "always"];

/// A redis-server on a free port in a temp dir of its own.
struct Server {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Server {
    /// Starts with `args` on a random port (another if that one is taken: redis-server then
    /// exits before its "Ready to accept connections" line).
    fn start(args: &[&str]) -> Server {
        for _ in 0..10 {
            let port = rand::random_range(20_000..55_000u16);
            let free = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
            if !free(port) || !free(port + 10_000) {
                continue;
            }
            if let Some(server) = Server::start_on(port, args) {
                return server;
            }
        }
        panic!("redis-server did not start on 10 ports");
    }

    fn start_on(port: u16, args: &[&str]) -> Option<Server> {
        let dir = tempfile::tempdir().expect("temp dir");
        let spawned = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .arg("--dir")
            .arg(dir.path())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn();
        let mut child = spawned.unwrap_or_else(|e| {
            panic!("redis-server cannot run ({e}): `apt-get install -y redis-server`")
        });
        let (tx, rx) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().expect("stdout");
        // Reads the log to its end, so that the server never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("Ready to accept connections") {
                    let _ = tx.send(true);
                }
            }
            let _ = tx.send(false);
        });
        match rx.recv_timeout(PATIENCE) {
            Ok(true) => Some(Server { child, port, _dir: dir }),
            Ok(false) => {
                let _ = child.wait();
                None
            }
            Err(_) => panic!("redis-server on port {port} not ready within {PATIENCE:?}"),
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Three masters joined by `redis-cli --cluster create`.
fn cluster() -> (Vec<Server>, String) {
    let mut args = vec!["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"];
    args.extend_from_slice(DURABLE);
    let nodes: Vec<Server> = (0..3).map(|_| Server::start(&args)).collect();
    let addrs: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
    let out = Command::new("redis-cli")
        .args(["--cluster", "create"])
        .args(&addrs)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .stdin(Stdio::null())
        .output()
        .expect("redis-cli runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let deadline = Instant::now() + PATIENCE;
    for node in &nodes {
        loop {
            let info = Command::new("redis-cli")
                .args(["-p", &node.port.to_string(), "cluster", "info"])
                .output()
                .expect("redis-cli runs");
            if String::from_utf8_lossy(&info.stdout).contains("cluster_state:ok") {
                break;
            }
            assert!(Instant::now() < deadline, "cluster node {} never became ok", node.port);
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let url = format!("redis+cluster://{}", addrs.join(","));
    (nodes, url)
}

fn options(url: &str) -> RedisOptions {
    RedisOptions { url: url.to_owned(), ca_cert: None, wait_replicas: 0, volatile: false }
}

async fn open(url: &str) -> RedisStore {
    RedisStore::open(&options(url)).await.expect("the store opens")
}

async fn open_volatile(url: &str) -> RedisStore {
    let opts = RedisOptions { volatile: true, ..options(url) };
    RedisStore::open(&opts).await.expect("the store opens")
}

/// The next entry of the log other than `Resync`.
async fn next_entry(rx: &mut mpsc::Receiver<LogEntry>) -> LogEntry {
    loop {
        let entry = tokio::time::timeout(PATIENCE, rx.recv()).await.expect("an entry in time");
        match entry.expect("the log goes on") {
            LogEntry::Resync => {}
            entry => return entry,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_keeps_the_contract() {
    let server = Server::start(DURABLE);
    contract(&open(&server.url()).await, "r").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_store_keeps_the_contract() {
    let (_nodes, url) = cluster();
    let store = open(&url).await;
    // Several prefixes: their matches land on different shards.
    for prefix in ["c", "d", "e"] {
        contract(&store, prefix).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_confirmed_by_replicas_keep_the_contract_and_are_announced() {
    // No fsync on the primary: the replica's confirmation (WAIT) is what makes a write durable.
    let primary = Server::start(&["--appendonly", "no"]);
    let primary_port = primary.port.to_string();
    let replica = Server::start(&["--replicaof", "127.0.0.1", &primary_port]);
    let deadline = Instant::now() + PATIENCE;
    loop {
        let info = Command::new("redis-cli")
            .args(["-p", &replica.port.to_string(), "info", "replication"])
            .output()
            .expect("redis-cli runs");
        if String::from_utf8_lossy(&info.stdout).contains("master_link_status:up") {
            break;
        }
        assert!(Instant::now() < deadline, "the replica never caught up with its primary");
        std::thread::sleep(Duration::from_millis(50));
    }
    let confirmed = RedisOptions { wait_replicas: 1, ..options(&primary.url()) };
    let store = RedisStore::open(&confirmed).await.expect("WAIT stands in for fsync");
    let other = open_volatile(&primary.url()).await;
    let mut log = other.follow().expect("followed");
    contract(&store, "w").await;
    // The announcements came, though only once the replica had each write.
    let mut appended = 0;
    while let Ok(Some(entry)) = tokio::time::timeout(Duration::from_millis(500), log.recv()).await {
        appended += usize::from(matches!(entry, LogEntry::Appended { .. }));
    }
    assert!(appended >= 5, "{appended} appends announced");
    // More replicas than there are: refused at start, naming the master and the count ...
    let two = RedisOptions { wait_replicas: 2, ..options(&primary.url()) };
    let why = RedisStore::open(&two).await.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(why.contains("has 1 connected replicas") && why.contains("wants 2"), "{why}");
    // ... and, if the operator accepts the risk, an append is not confirmed, and says so.
    let two = RedisOptions { volatile: true, ..two };
    let store = RedisStore::open(&two).await.unwrap();
    let m = info("two", "tig");
    let inc = store.create_match(&m).await.err();
    assert!(inc.is_some_and(|e| e.to_string().contains("only 1 of 2 replicas")));
    let inc = other.create_match(&info("tw2", "tig")).await.unwrap();
    let refused = append(&store, &info("tw2", "tig").id, after_seq(inc, vec![event(1)])).await;
    assert!(refused.is_err_and(|e| e.to_string().contains("only 1 of 2 replicas")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_may_lose_acknowledged_writes_is_refused_unless_volatile() {
    let pauses_on_rewrite =
        &["--appendonly", "yes", "--appendfsync", "always", "--no-appendfsync-on-rewrite", "yes"];
    for args in [
        &["--appendonly", "no"][..],
        &["--appendonly", "yes", "--appendfsync", "everysec"],
        pauses_on_rewrite,
    ] {
        let server = Server::start(args);
        let refused = RedisStore::open(&options(&server.url())).await.err();
        let why = refused.map(|e| e.to_string()).unwrap_or_default();
        assert!(why.contains("may lose acknowledged events"), "{args:?}: {why:?}");
        let volatile = RedisOptions { volatile: true, ..options(&server.url()) };
        let store = RedisStore::open(&volatile).await.expect("--redis-volatile accepts it");
        store.create_match(&info("vol", "tig")).await.expect("and it works");
    }
    let bad = RedisStore::open(&options("http://127.0.0.1:1")).await.err();
    assert!(bad.is_some_and(|e| e.to_string().contains("expected redis://")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_node_hears_every_write_in_order() {
    let server = Server::start(DURABLE);
    let writer = open(&server.url()).await;
    let reader = open(&server.url()).await;
    let mut log = reader.follow().expect("a shared store is followed");
    assert!(reader.follow().is_none(), "followed once");
    // The subscription is up once its first Resync arrived.
    let first = tokio::time::timeout(PATIENCE, log.recv()).await.expect("in time");
    assert_eq!(first, Some(LogEntry::Resync));

    let m = info("fol", "tig");
    let id = m.id.clone();
    let inc = writer.create_match(&m).await.unwrap();
    assert_eq!(next_entry(&mut log).await, LogEntry::Created { id: id.clone(), inc });
    append(&writer, &id, after_seq(inc, vec![event(1), event(2)])).await.unwrap();
    assert_eq!(
        next_entry(&mut log).await,
        LogEntry::Appended { id: id.clone(), inc, events: vec![event(1), event(2)] }
    );
    // Too large to announce: the others are told how far the log reaches and read it.
    let mut big = event(3);
    big.data.text = Some("x".repeat(MAX_ANNOUNCED_BYTES));
    append(&writer, &id, after_seq(inc, vec![big.clone()])).await.unwrap();
    assert_eq!(next_entry(&mut log).await, LogEntry::Behind { id: id.clone(), inc, seq: 3 });
    assert_eq!(reader.history(&id, 2, 10).await.unwrap().events, vec![big]);
    writer.cancel_match(&id, inc).await.unwrap();
    assert_eq!(next_entry(&mut log).await, LogEntry::Cancelled { id: id.clone(), inc });
    assert_eq!(reader.heads().await.unwrap(), Vec::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_queued_by_one_caller_are_decided_in_queue_order() {
    let server = Server::start(DURABLE);
    let store = open(&server.url()).await;
    let m = info("ord", "tig");
    let inc = store.create_match(&m).await.unwrap();
    // A chain of appends, each naming the one before, queued before any is awaited: what the
    // publishing path does with concurrent requests to one match.
    let mut tickets = Vec::new();
    let mut expect = Expect { seq: 0, tag: None, ts: None };
    for seq in 1..=200 {
        let next = Append { inc, expect, tag: rand::random(), events: vec![event(seq)] };
        expect = Expect { seq, tag: Some(next.tag), ts: None };
        tickets.push(store.submit_append(&m.id, next).await.unwrap());
    }
    for (i, ticket) in tickets.into_iter().enumerate() {
        assert!(ticket.await.is_ok(), "append {} was refused", i + 1);
    }
    let all: Vec<Seq> =
        store.history(&m.id, 0, 1000).await.unwrap().events.iter().map(|e| e.seq).collect();
    assert_eq!(all, (1..=200).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_report_their_ports_and_read_each_other() {
    let server = Server::start(DURABLE);
    let store = open(&server.url()).await;
    let nodes = store.conn_for_nodes();
    let (a, b) = (r#"{"node":"a"}"#, r#"{"node":"b","ports":[]}"#);
    nodes.report("a", a).await.unwrap();
    nodes.report("b", b).await.unwrap();
    let mut live = nodes.live().await.unwrap();
    live.sort();
    assert_eq!(live, vec![a, b]);
    nodes.leave("b").await.unwrap();
    assert_eq!(nodes.live().await.unwrap(), vec![a]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_sent_again_after_a_lost_answer_is_recognised_not_applied_twice() {
    // What a client that resends a pipeline after a timeout does: the same append (same tag,
    // same expected end), the same cancel.
    let server = Server::start(DURABLE);
    let store = open(&server.url()).await;
    let m = info("again", "tig");
    let inc = store.create_match(&m).await.unwrap();
    let first = after_seq(inc, vec![event(1), event(2)]);
    let second = Append {
        expect: Expect { seq: 2, tag: Some(first.tag), ts: None },
        ..after_seq(inc, vec![event(3)])
    };
    append(&store, &m.id, first.clone()).await.unwrap();
    append(&store, &m.id, second.clone()).await.unwrap();
    // Both sent again, in order: each answers as it did.
    append(&store, &m.id, first.clone()).await.unwrap();
    append(&store, &m.id, second).await.unwrap();
    let page = store.history(&m.id, 0, 100).await.unwrap();
    assert_eq!(page.events, (1..=3).map(event).collect::<Vec<_>>());
    // Someone else's append expecting the same end is still refused.
    let other = Append { tag: rand::random(), ..first };
    assert!(matches!(
        append(&store, &m.id, other).await,
        Err(StoreError::SeqConflict { expected: 0, current: 3, .. })
    ));
    // A cancel sent again answers as it did; an older incarnation is still not found.
    store.cancel_match(&m.id, inc).await.unwrap();
    store.cancel_match(&m.id, inc).await.unwrap();
    let inc2 = store.create_match(&m).await.unwrap();
    assert!(matches!(store.cancel_match(&m.id, inc).await, Err(StoreError::NotFound(_))));
    store.cancel_match(&m.id, inc2).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_refused_for_a_conflict_goes_next() {
    let server = Server::start(DURABLE);
    let (a, b) = (open(&server.url()).await, open(&server.url()).await);
    let m = info("turn", "tig");
    let inc = a.create_match(&m).await.unwrap();
    append(&a, &m.id, after_seq(inc, vec![event(1)])).await.unwrap();
    // b had not heard of seq 1: refused, and it takes the turn.
    let stale =
        Append { expect: Expect { seq: 0, tag: None, ts: None }, ..after_seq(inc, vec![event(1)]) };
    assert!(matches!(append(&b, &m.id, stale).await, Err(StoreError::SeqConflict { .. })));
    // a, though right about the end of the log, waits for b ...
    let a2 =
        Append { expect: Expect { seq: 1, tag: None, ts: None }, ..after_seq(inc, vec![event(2)]) };
    assert!(matches!(append(&a, &m.id, a2.clone()).await, Err(StoreError::NotYourTurn(_))));
    // ... until b has written: then the turn is free again.
    let b2 =
        Append { expect: Expect { seq: 1, tag: None, ts: None }, ..after_seq(inc, vec![event(2)]) };
    append(&b, &m.id, b2).await.unwrap();
    let a3 =
        Append { expect: Expect { seq: 2, tag: None, ts: None }, ..after_seq(inc, vec![event(3)]) };
    append(&a, &m.id, a3).await.unwrap();

    // A writer that took the turn and has nothing to write gives it back at once ...
    let stale =
        Append { expect: Expect { seq: 0, tag: None, ts: None }, ..after_seq(inc, vec![event(1)]) };
    assert!(matches!(append(&b, &m.id, stale.clone()).await, Err(StoreError::SeqConflict { .. })));
    b.give_turn_back(&m.id).await;
    let a4 =
        Append { expect: Expect { seq: 3, tag: None, ts: None }, ..after_seq(inc, vec![event(4)]) };
    append(&a, &m.id, a4).await.unwrap();
    // ... and one that does not (it died) holds it for a moment only.
    assert!(matches!(append(&b, &m.id, stale).await, Err(StoreError::SeqConflict { .. })));
    let a5 =
        Append { expect: Expect { seq: 4, tag: None, ts: None }, ..after_seq(inc, vec![event(5)]) };
    assert!(matches!(append(&a, &m.id, a5.clone()).await, Err(StoreError::NotYourTurn(_))));
    tokio::time::sleep(Duration::from_millis(keys::TURN_MS + 50)).await;
    append(&a, &m.id, a5).await.unwrap();
    let page = a.history(&m.id, 0, 100).await.unwrap();
    assert_eq!(page.events.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2, 3, 4, 5]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_built_on_another_event_under_the_same_seq_is_refused() {
    // After a rewind, the log may hold other events under seqs a node applied: an append that
    // names the ts of the event it was validated on is refused unless the log holds that event.
    let server = Server::start(DURABLE);
    let store = open(&server.url()).await;
    let m = info("lts", "tig");
    let inc = store.create_match(&m).await.unwrap();
    append(&store, &m.id, after_seq(inc, vec![event(1)])).await.unwrap();
    let head = store.heads().await.unwrap().into_iter().find(|h| h.id == m.id).unwrap();
    assert_eq!((head.seq, head.ts), (1, Some(event(1).ts)));
    let elsewhere = Expect { seq: 1, tag: None, ts: Some(event(1).ts + 1) };
    let wrong = Append { expect: elsewhere, ..after_seq(inc, vec![event(2)]) };
    assert!(matches!(
        append(&store, &m.id, wrong).await,
        Err(StoreError::SeqConflict { expected: 1, current: 1, .. })
    ));
    let right = Expect { seq: 1, tag: None, ts: Some(event(1).ts) };
    append(&store, &m.id, Append { expect: right, ..after_seq(inc, vec![event(2)]) })
        .await
        .unwrap();
}

/// The members of a set, sorted.
async fn members(store: &RedisStore, set: &str) -> Vec<String> {
    let mut m: Vec<String> =
        redis::cmd("SMEMBERS").arg(set).query_async(&mut store.conn()).await.expect("SMEMBERS");
    m.sort();
    m
}

/// A match ended (its final state saved) moves from `ms:live` to `ms:ended`: heads (what every
/// node's resync reads) and `load_live` (a node's start) no longer read it; it is read back
/// from its saved state. A match of an older deployment's `ms:matches` is still read as live,
/// and moved once found ended. On one Redis and on a cluster (the sets on other shards).
async fn ended_matches_leave_the_live_set(url: &str) {
    let store = open(url).await;
    let (a, b, c) = (info("sea", "liv"), info("sea", "end"), info("sea", "old"));
    let ia = store.create_match(&a).await.unwrap();
    let ib = store.create_match(&b).await.unwrap();
    let ic = store.create_match(&c).await.unwrap();
    append(&store, &b.id, after_seq(ib, vec![event(1), event(2)])).await.unwrap();
    let mut over = crate::model::Match::new(b.clone());
    over.period = crate::model::Period::Ended;
    over.seq = 2;
    store.save_state(ib, &over);
    let ended = vec![b.id.to_string()];
    let deadline = Instant::now() + PATIENCE;
    while members(&store, keys::ENDED).await != ended {
        assert!(Instant::now() < deadline, "the ended match never moved");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!members(&store, keys::LIVE).await.contains(&b.id.to_string()));
    let heads: Vec<MatchId> = store.heads().await.unwrap().into_iter().map(|h| h.id).collect();
    assert_eq!(heads, vec![a.id.clone(), c.id.clone()]);
    let live: Vec<MatchId> =
        store.load_live().await.unwrap().into_iter().map(|r| r.state.info.id).collect();
    assert_eq!(live, vec![a.id.clone(), c.id.clone()]);
    assert_eq!(store.ended_ids().await.unwrap(), vec![b.id.clone()]);
    let back = store.resume(&b.id).await.unwrap().expect("read back");
    assert_eq!((back.inc, &back.state, back.events.len()), (ib, &over, 0));

    // An older deployment: `c` only in `ms:matches`, ended with its state saved but not moved.
    let mut conn = store.conn();
    let cid = c.id.as_str();
    command(&mut conn, redis::cmd("SREM").arg(keys::LIVE).arg(cid)).await.unwrap();
    command(&mut conn, redis::cmd("SADD").arg(keys::LEGACY_MATCHES).arg(cid)).await.unwrap();
    let heads: Vec<MatchId> = store.heads().await.unwrap().into_iter().map(|h| h.id).collect();
    assert_eq!(heads, vec![a.id.clone(), c.id.clone()], "the old set is still read");
    let mut c_over = crate::model::Match::new(c.clone());
    c_over.period = crate::model::Period::Ended;
    let json = saved::encode(ic, &c_over).unwrap();
    let hset = redis::cmd("HSET")
        .arg(keys::meta(&c.id))
        .arg("saved")
        .arg(json)
        .arg("saved_seq")
        .arg(0)
        .clone();
    command(&mut conn, &hset).await.unwrap();
    let live: Vec<MatchId> =
        store.load_live().await.unwrap().into_iter().map(|r| r.state.info.id).collect();
    assert_eq!(live, vec![a.id.clone()], "found ended: not loaded");
    assert_eq!(members(&store, keys::LEGACY_MATCHES).await, Vec::<String>::new());
    assert_eq!(members(&store, keys::ENDED).await, vec![b.id.to_string(), c.id.to_string()]);
    // A cancel unlists it; the id can be created anew, live.
    store.cancel_match(&b.id, ib).await.unwrap();
    assert_eq!(members(&store, keys::ENDED).await, vec![c.id.to_string()]);
    store.create_match(&b).await.unwrap();
    assert!(members(&store, keys::LIVE).await.contains(&b.id.to_string()));
    let _ = ia;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ended_matches_leave_the_live_set_on_redis() {
    let server = Server::start(DURABLE);
    ended_matches_leave_the_live_set(&server.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ended_matches_leave_the_live_set_on_a_redis_cluster() {
    let (_nodes, url) = cluster();
    ended_matches_leave_the_live_set(&url).await;
}
