//! Redis coming back holding less than the nodes applied (SPEC 7, "Redis is the truth"): an
//! append-only file restored from an older copy, and a replica promoted without the last writes.
//! Every node notices, follows what Redis holds, tells the match's viewers `bye shutdown` (so
//! that they come back and get what Redis holds), counts `matchstream_log_rewinds_total`, and
//! publishing works again at once. Real redis-server processes; the nodes are real ones in this
//! process.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::{agreed, nodes, reaches, seqs_of, v2_line, PROPAGATION};
use crate::metrics::{scrape, value};
use crate::redis::RedisServer;
use crate::support::*;

const REWINDS: &str = "matchstream_log_rewinds_total";

/// A match started on node 0 with `comment`s up to seq `last`, known to every node.
async fn match_at(nodes: &[TestServer], last: u64) -> String {
    let id = nodes[0].started_match().await;
    for seq in 2..=last {
        let text = format!("kept {seq}");
        let node = &nodes[seq as usize % nodes.len()];
        assert_eq!(node.publish(&id, "comment", json!({ "text": text })).await, seq);
    }
    for node in nodes {
        reaches(node, &id, last).await;
    }
    id
}

/// A v2 viewer of `id` on `node` that got its snapshot at `seq`.
async fn viewer_at(node: &TestServer, id: &str, seq: u64) -> Viewer {
    let mut v = Viewer::connect(node.viewer(), &v2_line("before", id)).await;
    let status = v.frame().await.expect("a snapshot");
    assert_eq!((status["kind"].as_str(), status["seq"].as_u64()), (Some("status"), Some(seq)));
    v
}

/// Reads `v` to its `bye`: the event seqs it got, and the bye.
async fn to_bye(v: &mut Viewer) -> (Vec<u64>, Value) {
    tokio::time::timeout(PROPAGATION, collect_v2(v)).await.expect("a bye in time")
}

/// Everything the SPEC promises once Redis holds the match only up to `held` while the nodes
/// applied up to `applied`: they converge on Redis's log, their viewers were told to come back,
/// a viewer resuming beyond Redis's head gets a fresh snapshot, publishing works at once.
async fn every_node_follows_redis(
    nodes: &[TestServer],
    id: &str,
    held: u64,
    applied: u64,
    viewers: Vec<Viewer>,
) {
    for mut v in viewers {
        let (seqs, bye) = to_bye(&mut v).await;
        assert_eq!(seqs, (held + 1..=applied).collect::<Vec<_>>(), "what it saw before");
        assert_eq!(bye["reason"], "shutdown", "{bye}");
    }
    let history = agreed(nodes, &format!("/1/match/{id}/history"), |h| {
        h.as_array().is_some_and(|a| a.len() as u64 == held)
    })
    .await;
    assert_eq!(seqs_of(&history), (1..=held).collect::<Vec<_>>());
    for node in nodes {
        reaches(node, id, held).await;
        let metrics = scrape(node).await;
        assert_eq!(value(&metrics, REWINDS), 1.0, "{} counted one rewind", node.base);
    }
    // Resuming after a seq Redis no longer holds: a fresh snapshot first. (Read as plain lines:
    // the client's stream checker rightly calls a snapshot behind `FROM` a duplicate, which it
    // is for a viewer unless the log rewound.)
    let line = format!("{}:FROM:{}", v2_line("resumer", id), applied - 1);
    let mut resumer = Lines::connect(nodes[1].viewer(), &line).await;
    let status = resumer.frame().await;
    assert_eq!((status["kind"].as_str(), status["seq"].as_u64()), (Some("status"), Some(held)));
    // Publishing works again at once, on every node, after what Redis holds.
    for (i, node) in nodes.iter().enumerate() {
        let text = format!("after {i}");
        let (status, body) =
            node.post_events(id, json!({"kind": "comment", "data": {"text": text}})).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(body["seq"].as_u64(), Some(held + 1 + i as u64), "{body}");
        let event = tokio::time::timeout(PROPAGATION, resumer.frame()).await.expect("in time");
        assert_eq!(
            (event["seq"].as_u64(), &event["data"]["text"]),
            (body["seq"].as_u64(), &json!(text))
        );
    }
    let last = held + nodes.len() as u64;
    let history = agreed(nodes, &format!("/1/match/{id}/history"), |h| {
        h.as_array().is_some_and(|a| a.len() as u64 == last)
    })
    .await;
    assert_eq!(seqs_of(&history), (1..=last).collect::<Vec<_>>());
    assert_eq!(history[held as usize]["data"]["text"], "after 0");
}

/// A v2 viewer read as plain JSON lines, without the client's checks.
struct Lines(tokio::io::Lines<BufReader<TcpStream>>);

impl Lines {
    async fn connect(addr: SocketAddr, line: &str) -> Lines {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream.write_all(format!("{line}\n").as_bytes()).await.expect("send the line");
        Lines(BufReader::new(stream).lines())
    }

    async fn frame(&mut self) -> Value {
        let line = self.0.next_line().await.expect("read").expect("a frame");
        serde_json::from_str(&line).expect("a JSON frame")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restored_from_an_older_copy_is_followed_by_every_node() {
    let mut redis = RedisServer::start().await;
    let nodes = nodes(&redis.url(), 2).await;
    let id = match_at(&nodes, 5).await;
    // The operator's backup, mid-match.
    let backup = redis.copy_data();
    let viewers = vec![viewer_at(&nodes[0], &id, 5).await, viewer_at(&nodes[1], &id, 5).await];
    for seq in 6..=10 {
        let text = format!("lost {seq}");
        assert_eq!(nodes[0].publish(&id, "comment", json!({ "text": text })).await, seq);
    }
    for node in &nodes {
        reaches(node, &id, 10).await;
    }
    redis.stop().await;
    redis.restore_data(&backup);
    redis.start_again().await;
    every_node_follows_redis(&nodes, &id, 5, 10, viewers).await;
}

/// A TCP proxy standing for the address the nodes know Redis by (a virtual IP, a DNS name):
/// [`Proxy::point_at`] moves it to another server and cuts every connection through it.
struct Proxy {
    addr: SocketAddr,
    target: Arc<Mutex<SocketAddr>>,
    moved: watch::Sender<u64>,
}

impl Proxy {
    async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let addr = listener.local_addr().expect("its address");
        let target = Arc::new(Mutex::new(target));
        let (moved, _) = watch::channel(0);
        let (to, moves) = (target.clone(), moved.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let to = *to.lock().unwrap();
                let mut moved = moves.subscribe();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(to).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = moved.changed() => {}
                    }
                });
            }
        });
        Proxy { addr, target, moved }
    }

    fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    fn point_at(&self, target: SocketAddr) {
        *self.target.lock().unwrap() = target;
        self.moved.send_modify(|n| *n += 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_promoted_without_the_last_writes_is_followed_by_every_node() {
    let mut master = RedisServer::start().await;
    let replica = RedisServer::replica_of(&master).await;
    let proxy = Proxy::start(master.addr.parse().expect("an address")).await;
    let nodes = nodes(&proxy.url(), 2).await;
    let id = match_at(&nodes, 5).await;
    // Every write so far has reached the replica ...
    let offset = |info: String| {
        info.lines().find_map(|l| l.trim().strip_prefix("master_repl_offset:")?.parse::<u64>().ok())
    };
    let target = offset(master.cli(&["info", "replication"]).await);
    eventually("the replica has every write so far", PROPAGATION, async || {
        (offset(replica.cli(&["info", "replication"]).await) >= target).then_some(())
    })
    .await;
    // ... and none after: it is promoted now (a replica promoted once its master died holds
    // whatever had reached it; on one box, a lag cannot be made reliably any other way).
    assert!(replica.cli(&["replicaof", "no", "one"]).await.contains("OK"));
    let viewers = vec![viewer_at(&nodes[0], &id, 5).await, viewer_at(&nodes[1], &id, 5).await];
    for seq in 6..=10 {
        let text = format!("lost {seq}");
        assert_eq!(nodes[1].publish(&id, "comment", json!({ "text": text })).await, seq);
    }
    for node in &nodes {
        reaches(node, &id, 10).await;
    }
    master.kill().await;
    proxy.point_at(replica.addr.parse().expect("an address"));
    every_node_follows_redis(&nodes, &id, 5, 10, viewers).await;
}
