//! Many nodes on one shared Redis (SPEC 7), each node a real one in this process: the same seqs
//! and bytes from every node, two watchers on two nodes at once, a cancel seen everywhere, a
//! retried publish across nodes, a node joining late. The scenarios where Redis Cluster's shards
//! matter run twice: on one `redis-server` and on a three-master cluster. What happens when
//! something dies (a node, Redis) is in `cluster/failures.rs`.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::redis::{RedisCluster, RedisServer};
use crate::support::*;

mod contention;
mod crowds;
mod failures;
mod rewind;
mod tls;

/// Longest a test waits for what one node did to show on another. Announcements take
/// milliseconds; a lost one is made up by the resync every 5 s.
const PROPAGATION: Duration = Duration::from_secs(15);

/// `n` nodes in this process on the shared Redis at `url`.
async fn nodes(url: &str, n: usize) -> Vec<TestServer> {
    let mut nodes = Vec::with_capacity(n);
    for _ in 0..n {
        nodes.push(TestServer::start_with(|c| c.redis = Some(url.to_owned())).await);
    }
    nodes
}

/// Waits until `node` shows match `id` at `seq` (it learned every event before that).
async fn reaches(node: &TestServer, id: &str, seq: u64) {
    let path = format!("/1/match/{id}");
    eventually(&format!("{} reaches {id} seq {seq}", node.base), PROPAGATION, async || {
        let (status, m) = node.get(&path).await;
        (status == StatusCode::OK && m["seq"] == seq).then_some(())
    })
    .await;
}

/// Waits until every node answers `path` alike (200, one body that passes `want`); returns it.
async fn agreed(nodes: &[TestServer], path: &str, want: impl Fn(&Value) -> bool) -> Value {
    eventually(&format!("every node agrees on {path}"), PROPAGATION, async || {
        let mut bodies = Vec::new();
        for node in nodes {
            let (status, body) = node.get(path).await;
            if status != StatusCode::OK || !want(&body) {
                return None;
            }
            bodies.push(body);
        }
        bodies.windows(2).all(|w| w[0] == w[1]).then(|| bodies.remove(0))
    })
    .await
}

/// The seqs of a history answer.
fn seqs_of(history: &Value) -> Vec<u64> {
    history.as_array().expect("a list").iter().map(|e| e["seq"].as_u64().expect("seq")).collect()
}

fn v2_line(user: &str, id: &str) -> String {
    format!("VERSION:2:CONNECT:{user}:MATCH:{id}")
}

/// A v2 viewer of `id` on `addr` that got its first frame (so the node took it in before the
/// test goes on), reading on in its own task until the server closes: every byte.
async fn raw_viewer(
    addr: std::net::SocketAddr,
    user: &str,
    id: &str,
) -> tokio::task::JoinHandle<Vec<u8>> {
    let mut v = Viewer::connect(addr, &v2_line(user, id)).await;
    let first = v.read_until_contains(b"\n").await;
    tokio::spawn(async move { [first, v.read_to_clean_eof().await].concat() })
}

/// A v2 viewer on `addr` that got its first frame (so the node took it in before the test goes
/// on), reading on in its own task up to its `bye`: (event seqs, bye).
async fn viewer_to_bye(
    addr: std::net::SocketAddr,
    line: &str,
) -> tokio::task::JoinHandle<(Vec<u64>, Value)> {
    let mut v = Viewer::connect(addr, line).await;
    let first = v.frame().await.expect("a first frame");
    assert_ne!(first["kind"], "bye", "{first}");
    let first = first["seq"].as_u64().filter(|_| first["kind"] != "status");
    tokio::spawn(async move {
        let (seqs, bye) = collect_v2(&mut v).await;
        (first.into_iter().chain(seqs).collect(), bye)
    })
}

/// A match created on the first node and started there, known to every node, with a v2 viewer
/// on each node that joined before the start: the match id and the viewers.
async fn started_with_a_viewer_per_node(
    nodes: &[TestServer],
) -> (String, Vec<tokio::task::JoinHandle<(Vec<u64>, Value)>>) {
    let id = nodes[0].create_match("elp", "tig", "2011-09-10").await;
    agreed(nodes, &format!("/1/match/{id}"), |m| m["seq"] == 0).await;
    let mut viewers = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        viewers.push(viewer_to_bye(node.viewer(), &v2_line(&format!("v{i}"), &id)).await);
    }
    assert_eq!(nodes[0].publish(&id, "start", start_data()).await, 1);
    for node in &nodes[1..] {
        reaches(node, &id, 1).await;
    }
    (id, viewers)
}

/// Same seqs and the same bytes from every node: three nodes, a viewer on each, events published
/// to each in turn.
async fn same_seqs_and_bytes_on_every_node(url: String) {
    let nodes = nodes(&url, 3).await;
    let id = nodes[0].create_match("elp", "tig", "2011-09-10").await;
    agreed(&nodes, &format!("/1/match/{id}"), |m| m["seq"] == 0).await;
    let mut viewers = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        viewers.push(raw_viewer(node.viewer(), &format!("v{i}"), &id).await);
    }
    let steps = [
        ("start", start_data()),
        ("goal", json!({"team": "tig", "player": 7})),
        ("card", json!({"team": "elp", "player": 18, "card": "yellow"})),
        ("comment", json!({"text": "¡Qué golazo! \"Luna\" \\o/"})),
        (
            "substitution",
            json!({"team": "tig", "player_out": 10, "player_in": {"number": 11, "name": "Suárez"}}),
        ),
        ("goal", json!({"team": "elp", "player": 25})),
        ("card", json!({"team": "tig", "player": 11, "card": "red"})),
        ("halftime_start", json!({})),
        ("halftime_stop", json!({})),
        ("goal", json!({"team": "tig", "player": 25, "player_team": "elp"})),
        ("stop", json!({})),
    ];
    for (i, (kind, data)) in steps.into_iter().enumerate() {
        let seq = i as u64 + 1;
        let node = &nodes[i % nodes.len()];
        // A node validates a request against what it has heard of so far, and refuses a goal
        // it takes for one before the start when the start's announcement has not reached it
        // yet (a race with the announcement); so each node waits for the event before.
        reaches(node, &id, seq - 1).await;
        assert_eq!(node.publish(&id, kind, data).await, seq, "{kind}");
    }
    let mut streams = Vec::new();
    for v in viewers {
        streams.push(v.await.expect("viewer"));
    }
    for (i, s) in streams.iter().enumerate() {
        assert_eq!(s, &streams[0], "viewer {i} got other bytes than viewer 0");
    }
    let frames: Vec<Value> = std::str::from_utf8(&streams[0])
        .expect("UTF-8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON frame"))
        .collect();
    let kinds: Vec<&str> = frames.iter().map(|f| f["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds.first(), Some(&"status"));
    assert_eq!(frames.last(), Some(&json!({"kind": "bye", "reason": "match_over"})));
    let seqs: Vec<u64> =
        frames[1..frames.len() - 1].iter().map(|f| f["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=11).collect::<Vec<_>>());

    let m = agreed(&nodes, &format!("/1/match/{id}"), |m| m["seq"] == 11).await;
    assert_eq!((m["home-score"].clone(), m["visit-score"].clone()), (json!(1), json!(2)));
    assert_eq!(m["period"], "ended");
    assert_eq!(m["visit-players"], json!({"7": "Luna"}), "10 went off for 11, 11 was sent off");
    assert_eq!(agreed(&nodes, "/1/matches", |_| true).await, json!([id]));
    let history = agreed(&nodes, &format!("/1/match/{id}/history"), |_| true).await;
    assert_eq!(seqs_of(&history), (1..=11).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_seqs_and_bytes_on_every_node_one_redis() {
    let redis = RedisServer::start().await;
    same_seqs_and_bytes_on_every_node(redis.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_seqs_and_bytes_on_every_node_redis_cluster() {
    let redis = RedisCluster::start().await;
    same_seqs_and_bytes_on_every_node(redis.url()).await;
}

/// Two watchers publishing to one match on two nodes at once: distinct seqs, nothing lost, and
/// each event validated against every event before it, whichever node took it.
async fn two_watchers_on_two_nodes(url: String) {
    const EACH: u64 = 50;
    let nodes = nodes(&url, 2).await;
    let (id, viewers) = started_with_a_viewer_per_node(&nodes).await;

    let mut watchers = Vec::new();
    for (w, node) in nodes.iter().enumerate() {
        let http = node.http.clone();
        let path = format!("/1/match/{id}/events");
        watchers.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..EACH {
                let body =
                    json!({"kind": "comment", "data": {"text": format!("watcher {w}: {i}")}});
                // A healthy Redis never yields a 503 (SPEC 7): no retry.
                let answer = http.send(Method::POST, &path, Some(&body)).await.expect("POST");
                assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text);
                seqs.push(answer.json()["seq"].as_u64().expect("seq"));
            }
            seqs
        }));
    }
    let mut acked = vec![1];
    for w in watchers {
        let seqs = w.await.expect("watcher");
        assert!(seqs.windows(2).all(|p| p[0] < p[1]), "one watcher's seqs rise: {seqs:?}");
        acked.extend(seqs);
    }
    acked.sort();
    let n = 1 + 2 * EACH;
    assert_eq!(acked, (1..=n).collect::<Vec<_>>(), "distinct seqs, none missing");

    // A red card on one node; the same on the other is refused, whatever it had heard of yet.
    let red = json!({"kind": "card", "data": {"team": "elp", "player": 25, "card": "red"}});
    let (status, body) = nodes[0].post_events(&id, red.clone()).await;
    assert_eq!((status, body["seq"].as_u64()), (StatusCode::CREATED, Some(n + 1)), "{body}");
    let (status, body) = nodes[1].post_events(&id, red).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body["error"].as_str().unwrap().contains("not on the pitch"), "{body}");
    for node in &nodes {
        let (_, m) = node.get(&format!("/1/match/{id}")).await;
        assert_eq!(m["seq"], n + 1, "the refused card changed nothing on {}", node.base);
        assert_eq!(m["home-players"], json!({"18": "Fernandez"}));
        let (_, history) = node.get(&format!("/1/match/{id}/history")).await;
        assert_eq!(seqs_of(&history), (1..=n + 1).collect::<Vec<_>>());
    }

    assert_eq!(nodes[1].publish(&id, "stop", json!({})).await, n + 2);
    for v in viewers {
        let (seqs, bye) = v.await.expect("viewer");
        assert_eq!(seqs, (1..=n + 2).collect::<Vec<_>>());
        assert_eq!(bye["reason"], "match_over");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_watchers_on_two_nodes_one_redis() {
    let redis = RedisServer::start().await;
    two_watchers_on_two_nodes(redis.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_watchers_on_two_nodes_redis_cluster() {
    let redis = RedisCluster::start().await;
    two_watchers_on_two_nodes(redis.url()).await;
}

/// Cancel on one node: every node's viewers get `cancelled` and the match is gone everywhere; a
/// new match under the same id, created on another node right after a cancel (before every node
/// heard of it), never reaches a viewer of the old one.
async fn cancel_on_one_node(url: String) {
    let nodes = nodes(&url, 3).await;
    let id = nodes[0].create_match("elp", "tig", "2011-09-10").await;
    nodes[0].publish(&id, "start", start_data()).await;
    nodes[0].publish(&id, "goal", json!({"team": "tig"})).await;
    agreed(&nodes, &format!("/1/match/{id}"), |m| m["seq"] == 2).await;
    let mut viewers = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        viewers.push(viewer_to_bye(node.viewer(), &v2_line(&format!("old{i}"), &id)).await);
    }
    let (status, _) = nodes[1].send(Method::DELETE, &format!("/1/match/{id}"), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    for v in viewers {
        let (seqs, bye) = v.await.expect("viewer");
        assert_eq!(seqs, Vec::<u64>::new(), "it joined after both events (snapshot)");
        assert_eq!(bye, json!({"kind": "bye", "reason": "cancelled"}));
    }
    agreed(&nodes, "/1/matches", |l| l == &json!([])).await;
    for node in &nodes {
        assert_eq!(node.get(&format!("/1/match/{id}")).await.0, StatusCode::NOT_FOUND);
        assert_eq!(node.get(&format!("/1/match/{id}/history")).await.0, StatusCode::NOT_FOUND);
    }

    // Created again on another node; its viewers on every node; then cancelled on a third node
    // and at once created again on the first, and published to before anyone waits.
    assert_eq!(nodes[2].create_match("elp", "tig", "2011-09-10").await, id);
    nodes[2].publish(&id, "start", start_data()).await;
    agreed(&nodes, &format!("/1/match/{id}"), |m| m["seq"] == 1).await;
    let mut viewers = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let line = format!("{}:FROM:0", v2_line(&format!("second{i}"), &id));
        viewers.push(viewer_to_bye(node.viewer(), &line).await);
    }
    let (status, _) = nodes[0].send(Method::DELETE, &format!("/1/match/{id}"), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(nodes[1].create_match("elp", "tig", "2011-09-10").await, id);
    nodes[1].publish(&id, "start", start_data()).await;
    for i in 0..5 {
        nodes[1].publish(&id, "comment", json!({"text": format!("third {i}")})).await;
    }
    for v in viewers {
        let (seqs, bye) = v.await.expect("viewer");
        assert_eq!(seqs, vec![1], "only the second match's start");
        assert_eq!(bye, json!({"kind": "bye", "reason": "cancelled"}));
    }
    let m = agreed(&nodes, &format!("/1/match/{id}"), |m| m["seq"] == 6).await;
    assert_eq!(m["period"], "first");
    assert_eq!(agreed(&nodes, "/1/matches", |_| true).await, json!([id]));
    let history = agreed(&nodes, &format!("/1/match/{id}/history"), |_| true).await;
    assert_eq!(seqs_of(&history), (1..=6).collect::<Vec<_>>());
    assert_eq!(history[5]["data"]["text"], "third 4");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_on_one_node_one_redis() {
    let redis = RedisServer::start().await;
    cancel_on_one_node(redis.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_on_one_node_redis_cluster() {
    let redis = RedisCluster::start().await;
    cancel_on_one_node(redis.url()).await;
}

/// A node that joins later serves every live match at once, exactly as the others do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_joining_late_serves_every_match() {
    let redis = RedisServer::start().await;
    let mut nodes = nodes(&redis.url(), 2).await;
    let live = nodes[0].create_match("elp", "tig", "2011-09-10").await;
    nodes[0].publish(&live, "start", start_data()).await;
    nodes[0].publish(&live, "goal", json!({"team": "tig", "player": 7})).await;
    reaches(&nodes[1], &live, 3 - 1).await;
    nodes[1].publish(&live, "comment", json!({"text": "from the other node"})).await;
    let over = nodes[1].create_match("fcb", "rma", "2011-09-11").await;
    nodes[1].publish(&over, "start", start_data()).await;
    nodes[1].publish(&over, "stop", json!({})).await;
    // A cancelled match stays out of everything.
    let gone = nodes[0].create_match("gon", "tig", "2011-09-12").await;
    nodes[0].send(Method::DELETE, &format!("/1/match/{gone}"), None).await;
    let list = agreed(&nodes, "/1/matches", |l| l.as_array().is_some_and(|l| l.len() == 2)).await;
    agreed(&nodes, &format!("/1/match/{live}"), |m| m["seq"] == 3).await;
    agreed(&nodes, &format!("/1/match/{over}"), |m| m["seq"] == 2).await;

    nodes.push(TestServer::start_with(|c| c.redis = Some(redis.url())).await);
    let late = &nodes[2];
    // No waiting: what it restored on start is all there.
    assert_eq!(late.get("/1/matches").await, (StatusCode::OK, list));
    for id in [&live, &over] {
        for path in [format!("/1/match/{id}"), format!("/1/match/{id}/history")] {
            assert_eq!(late.get(&path).await, nodes[0].get(&path).await, "{path}");
        }
    }
    assert_eq!(late.get(&format!("/1/match/{gone}")).await.0, StatusCode::NOT_FOUND);

    let (seqs, bye) = collect_v2(
        &mut Viewer::connect(late.viewer(), &format!("{}:FROM:0", v2_line("o", &over))).await,
    )
    .await;
    assert_eq!((seqs, bye["reason"].clone()), (vec![1, 2], json!("match_over")));
    let viewer = viewer_to_bye(late.viewer(), &format!("{}:FROM:0", v2_line("l", &live))).await;
    nodes[0].publish(&live, "stop", json!({})).await;
    let (seqs, bye) = viewer.await.expect("viewer");
    assert_eq!((seqs, bye["reason"].clone()), (vec![1, 2, 3, 4], json!("match_over")));
}

/// A watcher that retries with `?after=` on another node does not record its event twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_with_after_on_another_node_is_not_applied_twice() {
    let redis = RedisServer::start().await;
    let nodes = nodes(&redis.url(), 2).await;
    let id = nodes[0].started_match().await;
    let path = format!("/1/match/{id}/events?after=1");
    let goal = json!({"kind": "goal", "data": {"team": "tig", "player": 7}});
    let (status, body) = nodes[0].send(Method::POST, &path, Some(goal.clone())).await;
    assert_eq!((status, body["seq"].as_u64()), (StatusCode::CREATED, Some(2)), "{body}");
    // At once, on the other node, whether or not it heard of the goal yet.
    let (status, body) = nodes[1].send(Method::POST, &path, Some(goal)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["seq"], 2, "{body}");
    assert!(body["error"].is_string(), "{body}");
    let history = agreed(&nodes, &format!("/1/match/{id}/history"), |_| true).await;
    assert_eq!(seqs_of(&history), vec![1, 2]);
    let m = agreed(&nodes, &format!("/1/match/{id}"), |m| m["seq"] == 2).await;
    assert_eq!(m["visit-score"], 1, "one goal");
}

/// `/ops.json` (SPEC 9) of one node shows every live node, with the figures each reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ops_on_one_node_shows_every_node() {
    let redis = RedisServer::start().await;
    let nodes = nodes(&redis.url(), 2).await;
    let id = nodes[0].started_match().await;
    reaches(&nodes[1], &id, 1).await;
    let mut viewer = Viewer::connect(nodes[1].viewer(), &v2_line("me", &id)).await;
    assert_eq!(viewer.frame().await.unwrap()["kind"], "status");
    let other = nodes[1].http_host();
    let ops_url = format!("{}/ops.json", nodes[0].admin);
    let row =
        eventually("node 1's /ops.json shows node 2 with its viewer", PROPAGATION, async || {
            let ops: Value = reqwest::get(&ops_url).await.ok()?.json().await.ok()?;
            let row =
                ops["nodes"].as_array()?.iter().find(|n| n["http"] == other.as_str())?.clone();
            (row["sample"]["viewers"]["tcp_v2"] == 1).then_some(row)
        })
        .await;
    assert!(row["sample"]["rss_bytes"].as_u64().is_some_and(|b| b > 0), "{row}");
}

/// A draining node (SPEC 9) names another live node in `try` in every goodbye of its window
/// (a viewer port to TCP viewers, its HTTP port to WebSocket ones),
/// however many it sends there: what it sent since the other's last report is not held against
/// it for longer than that report (before, 30 goodbyes filled a node of 60 in its estimate).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_node_names_another_node_in_every_goodbye() {
    let redis = RedisServer::start().await;
    let url = redis.url();
    let draining = TestServer::start_with(|c| {
        c.redis = Some(url.clone());
        c.drain_window = Duration::from_secs(3);
    })
    .await;
    let other = TestServer::start_with(|c| {
        c.redis = Some(url.clone());
        c.max_viewers = 60;
    })
    .await;
    let id = draining.started_match().await;
    let mut viewers = Vec::new();
    for i in 0..40 {
        viewers.push(viewer_to_bye(draining.viewer(), &v2_line(&format!("v{i}"), &id)).await);
    }
    // The draining node knows the other one's viewer port (its `/ops.json` shows the node).
    let other_http = other.http_host();
    let ops_url = format!("{}/ops.json", draining.admin);
    eventually("the draining node knows the other", PROPAGATION, async || {
        let ops: Value = reqwest::get(&ops_url).await.ok()?.json().await.ok()?;
        ops["nodes"].as_array()?.iter().any(|n| n["http"] == other_http.as_str()).then_some(())
    })
    .await;
    // A WebSocket viewer is named the other node's HTTP port, where it can ask again.
    let mut ws = matchstream_client::WsViewer::watch(&draining.http_host(), &id, None)
        .await
        .expect("upgrade");
    assert_eq!(ws.frame().await.expect("a frame").expect("a snapshot")["kind"], "status");
    draining.node.as_ref().expect("node").shutdown();
    let (_, bye) = tokio::time::timeout(PATIENCE, ws.collect_v2())
        .await
        .expect("a goodbye")
        .expect("frames in order");
    assert_eq!((&bye["reason"], &bye["try"]), (&"shutdown".into(), &other_http.as_str().into()));
    let ports: Vec<String> =
        other.viewers.iter().map(|a| format!("127.0.0.1:{}", a.port())).collect();
    for v in viewers {
        let (_, bye) = tokio::time::timeout(PATIENCE, v).await.expect("a goodbye").unwrap();
        assert_eq!(bye["reason"], "shutdown", "{bye}");
        let named = bye["try"].as_str().unwrap_or_default().to_owned();
        assert!(ports.contains(&named), "{bye}: not one of the other node's ports {ports:?}");
    }
}
