//! Many nodes when something fails: a node killed with `kill -9` under its viewers, Redis
//! restarted mid-match, a dead node named by `/1/checkin`, and a Redis that may lose
//! acknowledged events (refused unless `--redis-volatile`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use matchstream_client::{ViewerError, Watcher};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use super::{
    agreed, eventually, nodes, reaches, seqs_of, started_with_a_viewer_per_node, v2_line,
    PROPAGATION,
};
use crate::redis::RedisServer;
use crate::support::*;

/// How long Redis may take to be usable again after it restarted: the connection comes back on
/// the next command, the subscription after its backoff (at most 2 s).
const RECOVERY: Duration = Duration::from_secs(20);

/// What a viewer that resumes on another node saw, over all its connections.
struct Resumed {
    /// The snapshot's seq on the first connection (0 with `FROM:0`).
    from: u64,
    seqs: Vec<u64>,
    connections: usize,
}

/// A v2 viewer (connect line `line`, without `FROM`) that starts on `first`, from the start
/// with `from_start` (`FROM:0`) or else from a snapshot, and, when that node dies (after `killed`
/// is set), resumes on `fallback` with `FROM:<last seq>`; it reads to its `bye`.
async fn resuming_viewer(
    first: SocketAddr,
    fallback: SocketAddr,
    (line, from_start): (String, bool),
    killed: Arc<AtomicBool>,
    seen: Arc<AtomicU64>,
) -> Resumed {
    let mut out = Resumed { from: 0, seqs: Vec::new(), connections: 0 };
    let mut last = from_start.then_some(0);
    let mut addr = first;
    loop {
        let line = match (out.connections, last) {
            (0, None) => line.clone(),
            (_, Some(last)) => format!("{line}:FROM:{last}"),
            (_, None) => panic!("the node died before the viewer's snapshot"),
        };
        out.connections += 1;
        let mut viewer = Viewer::connect(addr, &line).await;
        loop {
            let frame = tokio::time::timeout(PATIENCE, viewer.0.frame()).await.expect("in time");
            let frame = match frame {
                Ok(Some(frame)) => frame,
                // The node went away (a frame cut in the middle is a violation of its own).
                Ok(None) | Err(ViewerError::Io(_)) | Err(ViewerError::Violation(_))
                    if killed.load(Ordering::SeqCst) && addr == first =>
                {
                    break
                }
                other => panic!("viewer on {addr}: {other:?}"),
            };
            let seq = frame["seq"].as_u64();
            match frame["kind"].as_str() {
                Some("status") => {
                    assert_eq!(out.connections, 1, "a snapshot instead of a resume: {frame}");
                    out.from = seq.expect("seq");
                    last = seq;
                }
                Some("bye") => {
                    assert_eq!(frame["reason"], "match_over", "{frame}");
                    return out;
                }
                _ => {
                    let seq = seq.expect("seq");
                    assert_eq!(Some(seq), last.map(|l| l + 1), "after {last:?} on {addr}");
                    out.seqs.push(seq);
                    last = Some(seq);
                    seen.store(seq, Ordering::SeqCst);
                }
            }
        }
        addr = fallback;
    }
}

/// `kill -9` of a node under its viewers while a watcher publishes to another node: each viewer
/// resumes on the other node and ends with every seq exactly once; every acknowledged event is
/// in the history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_of_a_killed_node_resume_on_another() {
    let redis = RedisServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut doomed = NodeProcess::start_with(dir.path(), &["--redis", &redis.url()]);
    let other = TestServer::start_with(|c| c.redis = Some(redis.url())).await;
    let id = other.started_match().await;
    let doomed_http = Watcher::new(&doomed.base, TOKEN).unwrap();
    eventually("the doomed node knows the match", PROPAGATION, async || {
        let m = doomed_http.get(&format!("/1/match/{id}")).await.unwrap().json();
        (m["seq"] == 1).then_some(())
    })
    .await;

    let killed = Arc::new(AtomicBool::new(false));
    let mut viewers = Vec::new();
    let mut seen = Vec::new();
    for i in 0..4 {
        let line = (v2_line(&format!("v{i}"), &id), i % 2 == 0);
        let progress = Arc::new(AtomicU64::new(0));
        seen.push(progress.clone());
        let resumed =
            resuming_viewer(doomed.viewers[0], other.viewer(), line, killed.clone(), progress);
        viewers.push(tokio::spawn(resumed));
    }

    // The watcher publishes without pause until told to stop, then ends the match.
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(1));
    let publisher = {
        let (http, stop, acked) = (other.http.clone(), stop.clone(), acked.clone());
        let path = format!("/1/match/{id}/events");
        tokio::spawn(async move {
            let mut seqs = Vec::new();
            loop {
                let done = stop.load(Ordering::SeqCst);
                let body = if done {
                    json!({"kind": "stop"})
                } else {
                    json!({"kind": "comment", "data": {"text": format!("c{}", seqs.len())}})
                };
                let answer = http.send(Method::POST, &path, Some(&body)).await.expect("POST");
                assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text);
                let seq = answer.json()["seq"].as_u64().expect("seq");
                seqs.push(seq);
                acked.store(seq, Ordering::SeqCst);
                if done {
                    return seqs;
                }
            }
        })
    };
    eventually("every viewer is 10 events in", PROPAGATION, async || {
        seen.iter().all(|s| s.load(Ordering::SeqCst) >= 10).then_some(())
    })
    .await;
    killed.store(true, Ordering::SeqCst);
    doomed.kill9();
    let at_kill = acked.load(Ordering::SeqCst);
    eventually("20 more events after the kill", PROPAGATION, async || {
        (acked.load(Ordering::SeqCst) >= at_kill + 20).then_some(())
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    let published = publisher.await.expect("publisher");
    let last = *published.last().unwrap();

    for v in viewers {
        let v = v.await.expect("viewer");
        assert_eq!(v.connections, 2, "one resume each");
        assert_eq!(v.seqs, (v.from + 1..=last).collect::<Vec<_>>(), "from {}", v.from);
    }
    let (_, history) = other.get(&format!("/1/match/{id}/history")).await;
    let history = seqs_of(&history);
    assert_eq!(history, (1..=last).collect::<Vec<_>>());
    assert!(published.iter().all(|s| history.contains(s)));
}

/// Posts a comment with `?after=<last>` until it is taken (503 while Redis is unusable); returns
/// its seq. A 409 naming `last + 1` is an earlier try that was applied after all.
async fn publish_when_redis_is_back(node: &TestServer, id: &str, last: u64) -> u64 {
    let path = format!("/1/match/{id}/events?after={last}");
    let body = json!({"kind": "comment", "data": {"text": format!("after {last}")}});
    eventually(&format!("{} publishes again", node.base), RECOVERY, async || {
        let (status, answer) = node.send(Method::POST, &path, Some(body.clone())).await;
        match status {
            StatusCode::CREATED => answer["seq"].as_u64(),
            StatusCode::CONFLICT if answer["seq"] == last + 1 => Some(last + 1),
            StatusCode::SERVICE_UNAVAILABLE => None,
            other => panic!("{other}: {answer}"),
        }
    })
    .await
}

async fn readyz(node: &TestServer) -> StatusCode {
    node.get("/readyz").await.0
}

/// Redis restarted mid-match: 503 while it is down, publishing again once it is back, every
/// acknowledged event kept, and viewers on both nodes see every event, before and after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_mid_match_loses_nothing() {
    let mut redis = RedisServer::start().await;
    let nodes = nodes(&redis.url(), 2).await;
    let (id, viewers) = started_with_a_viewer_per_node(&nodes).await;
    assert_eq!(nodes[1].publish(&id, "comment", json!({"text": "before"})).await, 2);

    redis.stop().await;
    for node in &nodes {
        let (status, body) =
            node.post_events(&id, json!({"kind": "comment", "data": {"text": "lost"}})).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(body["error"].is_string(), "{body}");
        eventually("/readyz says the store is down", RECOVERY, async || {
            (readyz(node).await == StatusCode::SERVICE_UNAVAILABLE).then_some(())
        })
        .await;
    }
    redis.start_again().await;

    // Back on the node that publishes and on the other one, in turns.
    let mut last = 2;
    for round in 0..4 {
        let next = publish_when_redis_is_back(&nodes[round % 2], &id, last).await;
        assert_eq!(next, last + 1);
        last = next;
    }
    for node in &nodes {
        eventually("/readyz is ready again", RECOVERY, async || {
            (readyz(node).await == StatusCode::OK).then_some(())
        })
        .await;
    }
    reaches(&nodes[1], &id, last).await;
    assert_eq!(nodes[1].publish(&id, "stop", json!({})).await, last + 1);
    let all: Vec<u64> = (1..=last + 1).collect();
    for v in viewers {
        let (seqs, bye) = v.await.expect("viewer");
        assert_eq!(seqs, all);
        assert_eq!(bye["reason"], "match_over");
    }
    let history: Value = agreed(&nodes, &format!("/1/match/{id}/history"), |_| true).await;
    assert_eq!(seqs_of(&history), all);
    assert_eq!(history[1]["data"]["text"], "before");
    assert!(history.as_array().unwrap().iter().all(|e| e["data"]["text"] != "lost"));

    // Redis keeps it all through another restart (its append-only file).
    redis.restart().await;
    let path = format!("/1/match/{id}/history");
    let again = eventually("the history is read again", RECOVERY, async || {
        let (status, body) = nodes[0].get(&path).await;
        (status == StatusCode::OK).then_some(body)
    })
    .await;
    assert_eq!(again, history);
}

/// `/1/checkin` names another node's port while that node reports, and never once it is dead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkin_stops_naming_a_dead_node() {
    let redis = RedisServer::start().await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let url = redis.url();
    let a = NodeProcess::start_with(dir_a.path(), &["--redis", &url, "--max-viewers", "4"]);
    let mut b = NodeProcess::start_with(dir_b.path(), &["--redis", &url]);
    let (a_port, b_port) = (a.viewers[0].port(), b.viewers[0].port());
    let http = Watcher::new(&a.base, TOKEN).unwrap();
    let checkin = async || -> u16 {
        let answer = http.get("/1/checkin").await.expect("checkin");
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
        answer.json()["port"].as_u64().expect("port") as u16
    };
    // A holds 3 viewers of its 4 (joined: a connection that has not sent its connect line is
    // no load): nearly all the room is B's.
    let body = json!({"home": "elp", "visit": "tig", "start_date": "2011-09-10"});
    let created = http.send(Method::POST, "/1/matches", Some(&body)).await.expect("create");
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let id = created.json()["id"].as_str().expect("id").to_owned();
    let mut held = Vec::new();
    for i in 0..3 {
        let mut v = Viewer::connect(a.viewers[0], &v2_line(&format!("v{i}"), &id)).await;
        assert_eq!(v.frame().await.expect("a frame")["kind"], "status");
        held.push(v);
    }
    eventually("A names B's port", PROPAGATION, async || (checkin().await == b_port).then_some(()))
        .await;

    b.kill9();
    // B's last report ages past 3 s, and A reads the cluster every second: from then on A never
    // names B. (Before that it may, and may not: A counts the viewers it sent B since B's last
    // report, so that a crowd does not all go to the least loaded port at once.)
    tokio::time::sleep(Duration::from_millis(4_500)).await;
    let since = tokio::time::Instant::now();
    while since.elapsed() < Duration::from_millis(1500) {
        assert_eq!(checkin().await, a_port, "B is named again");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(held);
}

/// A node refuses a Redis without `appendfsync always` (and says why), and runs on it with
/// `--redis-volatile` (and says so in its log).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_refuses_a_redis_that_may_lose_events() {
    let redis = RedisServer::start_volatile().await;
    let url = redis.url();
    let dir = tempfile::tempdir().unwrap();
    let serve = tokio::process::Command::new(env!("CARGO_BIN_EXE_matchstream"))
        .args(["serve", "--http", "127.0.0.1:0", "--viewers", "127.0.0.1:0"])
        .args(["--watcher-token", TOKEN, "--redis", &url])
        .arg("--data")
        .arg(dir.path())
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(PATIENCE, serve).await.expect("it exits").expect("it runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("may lose acknowledged events"), "{stderr}");
    assert!(stderr.contains("--redis-volatile"), "the message says how to go on: {stderr}");

    let node = NodeProcess::start_with(dir.path(), &["--redis", &url, "--redis-volatile"]);
    let warned = node.log.iter().any(|l| l.contains("WARN") && l.contains("--redis-volatile"));
    assert!(warned, "{:#?}", node.log);
    let http = Watcher::new(&node.base, TOKEN).unwrap();
    assert_eq!(http.get("/readyz").await.unwrap().status, StatusCode::OK);
    let body = json!({"home": "elp", "visit": "tig", "start_date": "2011-09-10"});
    let created = http.send(Method::POST, "/1/matches", Some(&body)).await.unwrap();
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
}
