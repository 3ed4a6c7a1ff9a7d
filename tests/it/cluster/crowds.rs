//! A crowd arriving at once (SPEC 7, last rule): three nodes of 300 places, 855 viewers all
//! asking node a's `/1/checkin` and connecting where it says, following `try` when told
//! `full`, end with every node within 10% of the mean and nobody refused for good (issue 18:
//! node a filled to 300 while b and c held 175, and 218 viewers got `full` with no `try`). And
//! a `full` names another node with room in every protocol.

use std::net::SocketAddr;

use matchstream_client::WsViewer;
use serde_json::Value;

use super::{reaches, v2_line, PROPAGATION};
use crate::redis::RedisServer;
use crate::support::*;

/// Nodes of `max_viewers` places each on the Redis at `url`, each knowing the others' ports
/// (each one's `/ops.json` lists the others, itself apart).
async fn nodes_of(url: &str, n: usize, max_viewers: usize) -> Vec<TestServer> {
    let mut nodes = Vec::with_capacity(n);
    for _ in 0..n {
        let url = url.to_owned();
        nodes.push(
            TestServer::start_with(|c| {
                c.redis = Some(url);
                c.max_viewers = max_viewers;
            })
            .await,
        );
    }
    for node in &nodes {
        let ops_url = format!("{}/ops.json", node.admin);
        eventually("every node knows the others", PROPAGATION, async || {
            let ops: Value = reqwest::get(&ops_url).await.ok()?.json().await.ok()?;
            let known = ops["nodes"].as_array()?.len();
            (known + 1 >= n).then_some(())
        })
        .await;
    }
    nodes
}

/// `/1/checkin` of the node at `base`: the viewer address it names.
async fn checkin(http: &reqwest::Client, base: &str) -> SocketAddr {
    let answer: Value = http
        .get(format!("{base}/1/checkin"))
        .send()
        .await
        .expect("checkin")
        .json()
        .await
        .expect("checkin JSON");
    let addr = format!("{}:{}", answer["host"].as_str().expect("host"), answer["port"]);
    addr.parse().unwrap_or_else(|e| panic!("{answer}: {e}"))
}

/// A v2 viewer of `id` at `addr`, moving on wherever a `full` says: the viewer, connected
/// where it got its snapshot, and how many times it was sent on; or the last `bye` when a
/// `full` named nowhere to go.
async fn follow_try(addr: SocketAddr, user: &str, id: &str) -> Result<(Viewer, SocketAddr), Value> {
    let mut addr = addr;
    for _ in 0..8 {
        let mut v = Viewer::connect(addr, &v2_line(user, id)).await;
        let first = v.frame().await.expect("a first frame");
        if first["kind"] == "status" {
            return Ok((v, addr));
        }
        assert_eq!((&first["kind"], &first["reason"]), (&"bye".into(), &"full".into()));
        match first["try"].as_str() {
            Some(named) => addr = named.parse().unwrap_or_else(|e| panic!("{first}: {e}")),
            None => return Err(first),
        }
    }
    panic!("{user}: told full 8 times in a row");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crowd_through_one_node_fills_every_node_evenly() {
    let redis = RedisServer::start().await;
    let nodes = nodes_of(&redis.url(), 3, 300).await;
    let id = nodes[0].started_match().await;
    for node in &nodes[1..] {
        reaches(node, &id, 1).await;
    }
    let http = reqwest::Client::new();
    // 855 = 95% of the cluster's 900 places, all at once, all through node a.
    let crowd: Vec<_> = (0..855)
        .map(|i| {
            let (http, a, id) = (http.clone(), nodes[0].base.clone(), id.clone());
            tokio::spawn(async move {
                let named = checkin(&http, &a).await;
                follow_try(named, &format!("c{i}"), &id).await
            })
        })
        .collect();
    let mut held = Vec::new();
    let mut refused = Vec::new();
    for v in crowd {
        match v.await.expect("viewer task") {
            Ok(viewer) => held.push(viewer),
            Err(bye) => refused.push(bye),
        }
    }
    assert!(refused.is_empty(), "{} refused for good, e.g. {}", refused.len(), refused[0]);
    let per_node: Vec<usize> = nodes
        .iter()
        .map(|n| held.iter().filter(|(_, at)| n.viewers.contains(at)).count())
        .collect();
    assert_eq!(per_node.iter().sum::<usize>(), 855, "{per_node:?}");
    let mean = 855.0 / 3.0;
    for &n in &per_node {
        assert!((n as f64 - mean).abs() <= mean * 0.10, "{per_node:?}: not within 10% of {mean}");
    }
}

/// A node that is full names another node with room in `try`, over v2 (a viewer port) and
/// WebSocket (an HTTP port), and only says `retry_after_ms` once every node is full.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_names_another_node_with_room() {
    let redis = RedisServer::start().await;
    // Two places on each node, one on each of its two viewer ports.
    let nodes = nodes_of(&redis.url(), 2, 2).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let id = a.started_match().await;
    reaches(b, &id, 1).await;
    let mut held = Vec::new();
    for (i, port) in a.viewers.iter().enumerate() {
        let mut v = Viewer::connect(*port, &v2_line(&format!("a{i}"), &id)).await;
        assert_eq!(v.frame().await.expect("a snapshot")["kind"], "status");
        held.push(v);
    }
    // Node b's report of 0 viewers is what a knows: a v2 `full` names one of b's ports...
    let mut v = Viewer::connect(a.viewer(), &v2_line("late", &id)).await;
    let bye = v.frame().await.expect("a bye");
    assert_eq!(bye["reason"], "full", "{bye}");
    let named: SocketAddr = bye["try"].as_str().expect("a try").parse().expect("an address");
    assert!(b.viewers.contains(&named), "{bye}: not one of b's ports {:?}", b.viewers);
    assert!(bye.get("retry_after_ms").is_none(), "{bye}");
    // ... and a WebSocket `full` names b's HTTP port, where the same request is served.
    let mut ws = WsViewer::watch(&a.http_host(), &id, None).await.expect("upgrade");
    let bye = ws.frame().await.expect("a frame").expect("a bye");
    assert_eq!((&bye["reason"], &bye["try"]), (&"full".into(), &b.http_host().into()), "{bye}");
    let mut there = WsViewer::watch(&b.http_host(), &id, None).await.expect("upgrade at b");
    assert_eq!(there.frame().await.expect("a frame").expect("a snapshot")["kind"], "status");
    // Once b's viewer ports are full too (a WebSocket viewer counts towards its limit, not
    // theirs) and b has reported it, a `full` says when to come back instead.
    let mut at_b = Vec::new();
    for (i, port) in b.viewers.iter().enumerate() {
        let mut v = Viewer::connect(*port, &v2_line(&format!("b{i}"), &id)).await;
        assert_eq!(v.frame().await.expect("a snapshot")["kind"], "status");
        at_b.push(v);
    }
    let bye = eventually("a full with nowhere to go", PROPAGATION, async || {
        let mut v = Viewer::connect(a.viewer(), &v2_line("later", &id)).await;
        let bye = v.frame().await?;
        bye.get("try").is_none().then_some(bye)
    })
    .await;
    assert_eq!(bye["reason"], "full", "{bye}");
    assert!(bye["retry_after_ms"].is_u64(), "{bye}");
}
