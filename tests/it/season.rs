//! A season in bounded memory (SPEC 10, "Memory over time"): an ended match leaves memory
//! `--keep-ended` after its end and is read back from the store when someone asks for it (its
//! page, its history, the list, a viewer, a viewer resuming `FROM`); a restart holds only the
//! matches not ended. On SQLite here, and on Redis with two nodes.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::redis::RedisServer;
use crate::support::*;

/// How long a test waits for an ended match to leave memory (`--keep-ended 1s`, looked at
/// every 250 ms).
const EVICTION: Duration = Duration::from_secs(10);

fn in_memory(s: &TestServer) -> usize {
    s.node.as_ref().expect("running").matches_in_memory()
}

async fn left_memory(s: &TestServer, want: usize) {
    eventually(&format!("{want} matches in memory"), EVICTION, async || {
        (in_memory(s) == want).then_some(())
    })
    .await;
}

/// `elp-tig-2011-09-10` started, one goal, then stopped: 3 events.
async fn ended_match(s: &TestServer) -> String {
    let id = s.started_match().await;
    s.publish(&id, "goal", json!({"team": "tig", "player": 7})).await;
    s.publish(&id, "stop", json!({})).await;
    id
}

#[tokio::test]
async fn an_ended_match_leaves_memory_and_is_read_back_on_demand() {
    let s = TestServer::start_with(|c| c.keep_ended = Duration::from_secs(1)).await;
    let id = ended_match(&s).await;
    let live = s.create_match("rma", "fcb", "2011-09-11").await;
    let (_, page) = s.get(&format!("/1/match/{id}")).await;
    let (_, history) = s.get(&format!("/1/match/{id}/history")).await;
    let (_, list) = s.get("/1/matches").await;
    assert_eq!(in_memory(&s), 2);
    left_memory(&s, 1).await;
    // What an operator sees.
    let text = crate::metrics::scrape(&s).await;
    assert_eq!(crate::metrics::value(&text, "matchstream_matches_in_memory"), 1.0);

    // The list, the page and the history, as before.
    assert_eq!(s.get("/1/matches").await, (StatusCode::OK, list));
    assert_eq!(s.get(&format!("/1/match/{id}/history")).await, (StatusCode::OK, history));
    assert_eq!(in_memory(&s), 2, "read back");
    left_memory(&s, 1).await;
    let (status, again) = s.get(&format!("/1/match/{id}")).await;
    assert_eq!((status, &again), (StatusCode::OK, &page));
    assert_eq!(again["period"], "ended");
    left_memory(&s, 1).await;

    // A viewer joining gets the state and `bye match_over`; one resuming gets what it missed.
    let mut v = Viewer::connect(s.viewer(), &format!("VERSION:2:CONNECT:me:MATCH:{id}")).await;
    let status = v.frame().await.expect("status");
    assert_eq!((status["kind"].as_str(), status["seq"].as_u64()), (Some("status"), Some(3)));
    let bye = v.frame().await.expect("bye");
    assert_eq!((bye["kind"].as_str(), bye["reason"].as_str()), (Some("bye"), Some("match_over")));
    left_memory(&s, 1).await;
    let line = format!("VERSION:2:CONNECT:me:MATCH:{id}:FROM:1");
    let mut v = Viewer::connect(s.viewer(), &line).await;
    let (seqs, bye) = collect_v2(&mut v).await;
    assert_eq!((seqs, bye["reason"].as_str()), (vec![2, 3], Some("match_over")));

    // A watcher is told the match is over (409), not that it does not exist.
    left_memory(&s, 1).await;
    let (status, body) =
        s.post_events(&id, json!({"kind": "comment", "data": {"text": "x"}})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    // An unknown match is still a 404; the live one never left.
    assert_eq!(s.get("/1/match/abc-def-2020-01-01/history").await.0, StatusCode::NOT_FOUND);
    assert_eq!(s.get(&format!("/1/match/{live}")).await.0, StatusCode::OK);
    // A cancel of an ended match out of memory removes it from the list.
    left_memory(&s, 1).await;
    let (status, _) = s.send(reqwest::Method::DELETE, &format!("/1/match/{id}"), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(s.get("/1/matches").await.1, json!([live]));
    assert_eq!(s.get(&format!("/1/match/{id}")).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_restart_holds_only_the_matches_not_ended() {
    let s = TestServer::start().await;
    let ended = ended_match(&s).await;
    let live = s.create_match("rma", "fcb", "2011-09-11").await;
    s.publish(&live, "start", start_data()).await;
    let (_, page) = s.get(&format!("/1/match/{ended}")).await;
    let (_, list) = s.get("/1/matches").await;
    let dir = s.stop().await;

    let s = TestServer::start_in(dir, |_| {}).await;
    assert_eq!(in_memory(&s), 1, "only the live match is loaded");
    assert_eq!(s.get("/1/matches").await.1, list);
    assert_eq!(s.get(&format!("/1/match/{ended}")).await.1, page);
    assert_eq!(in_memory(&s), 2, "the ended one read back");
    assert_eq!(s.publish(&live, "goal", json!({"team": "fcb", "player": 7})).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_redis_an_ended_match_leaves_every_node_and_is_read_back() {
    let redis = RedisServer::start().await;
    let url = redis.url();
    let tune = |c: &mut matchstream::config::Config| {
        c.redis = Some(url.clone());
        c.keep_ended = Duration::from_secs(1);
    };
    let a = TestServer::start_with(tune).await;
    let b = TestServer::start_with(tune).await;
    let id = ended_match(&a).await;
    let live = a.create_match("rma", "fcb", "2011-09-11").await;
    eventually("b hears of both matches", EVICTION, async || {
        (b.get(&format!("/1/match/{live}")).await.0 == StatusCode::OK).then_some(())
    })
    .await;
    let (_, page) = a.get(&format!("/1/match/{id}")).await;
    left_memory(&a, 1).await;
    left_memory(&b, 1).await;
    for node in [&a, &b] {
        assert_eq!(node.get(&format!("/1/match/{id}")).await, (StatusCode::OK, page.clone()));
        let (_, history) = node.get(&format!("/1/match/{id}/history")).await;
        assert_eq!(history.as_array().map(Vec::len), Some(3));
        let mut ids = vec![id.clone(), live.clone()];
        ids.sort();
        assert_eq!(node.get("/1/matches").await.1, json!(ids));
    }
    // A node started now loads only the live match, and knows the ended one.
    let c = TestServer::start_with(tune).await;
    assert_eq!(in_memory(&c), 1);
    let mut v =
        Viewer::connect(c.viewer(), &format!("VERSION:2:CONNECT:me:MATCH:{id}:FROM:2")).await;
    let (seqs, bye) = collect_v2(&mut v).await;
    assert_eq!((seqs, bye["reason"].as_str()), (vec![3], Some("match_over")));
}
