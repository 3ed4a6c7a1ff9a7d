//! Writers racing on one shared log (SPEC 7): many watchers publishing to one match through
//! three nodes, each sending its next event the moment the last is answered, all get `201` with
//! distinct seqs (a healthy Redis never yields a `503`); and a match created on one node can be
//! published to, and watched, on another right after the create's `201`.

use reqwest::{Method, StatusCode};
use serde_json::json;

use super::{agreed, nodes, reaches, seqs_of, v2_line, viewer_to_bye};
use crate::redis::{RedisCluster, RedisServer};
use crate::support::*;

/// `watchers` watchers, watcher `w` on node `w % 3`, each publishing `each` comments one after
/// the other; every answer must be `201`.
async fn watchers_on_three_nodes(url: String, watchers: usize, each: u64) {
    let nodes = nodes(&url, 3).await;
    let id = nodes[0].started_match().await;
    for node in &nodes[1..] {
        reaches(node, &id, 1).await;
    }
    let mut tasks = Vec::new();
    for w in 0..watchers {
        let http = nodes[w % nodes.len()].http.clone();
        let path = format!("/1/match/{id}/events");
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..each {
                let body = json!({"kind": "comment", "data": {"text": format!("w{w} {i}")}});
                let answer = http.send(Method::POST, &path, Some(&body)).await.expect("POST");
                assert_eq!(
                    answer.status,
                    StatusCode::CREATED,
                    "watcher {w}, event {i}: {}",
                    answer.text
                );
                seqs.push(answer.json()["seq"].as_u64().expect("seq"));
            }
            seqs
        }));
    }
    let mut acked = vec![1];
    for task in tasks {
        let seqs = task.await.expect("watcher");
        assert!(seqs.windows(2).all(|p| p[0] < p[1]), "one watcher's seqs rise: {seqs:?}");
        acked.extend(seqs);
    }
    acked.sort();
    let last = 1 + watchers as u64 * each;
    assert_eq!(acked, (1..=last).collect::<Vec<_>>(), "distinct seqs, none missing");
    let history = agreed(&nodes, &format!("/1/match/{id}/history?limit=2000"), |h| {
        h.as_array().is_some_and(|a| a.len() as u64 == last)
    })
    .await;
    assert_eq!(seqs_of(&history), (1..=last).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_watchers_on_three_nodes_never_get_503_one_redis() {
    let redis = RedisServer::start().await;
    watchers_on_three_nodes(redis.url(), 2, 200).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_watchers_on_three_nodes_never_get_503_one_redis() {
    let redis = RedisServer::start().await;
    watchers_on_three_nodes(redis.url(), 8, 200).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_watchers_on_three_nodes_never_get_503_redis_cluster() {
    let redis = RedisCluster::start().await;
    watchers_on_three_nodes(redis.url(), 2, 200).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_watchers_on_three_nodes_never_get_503_redis_cluster() {
    let redis = RedisCluster::start().await;
    watchers_on_three_nodes(redis.url(), 8, 200).await;
}

/// Created on node a, then at once on node b: a publish (40 times) and a viewer (10 times)
/// find the match, whether or not b has heard of it yet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_match_created_on_one_node_is_there_at_once_on_another() {
    let redis = RedisServer::start().await;
    let nodes = nodes(&redis.url(), 2).await;
    for round in 0..40 {
        let date = format!("2012-01-{:02}", round % 28 + 1);
        let home = if round < 28 { "elp" } else { "boc" };
        let id = nodes[0].create_match(home, "tig", &date).await;
        if round % 4 == 0 {
            let viewer = viewer_to_bye(nodes[1].viewer(), &v2_line("late", &id)).await;
            let (status, body) =
                nodes[1].post_events(&id, json!({"kind": "start", "data": start_data()})).await;
            assert_eq!(status, StatusCode::CREATED, "round {round}: {body}");
            let (status, body) =
                nodes[1].post_events(&id, json!({"kind": "stop", "data": {}})).await;
            assert_eq!(status, StatusCode::CREATED, "round {round}: {body}");
            let (seqs, bye) = viewer.await.expect("viewer");
            assert_eq!(
                (seqs, bye["reason"].clone()),
                (vec![1, 2], json!("match_over")),
                "round {round}"
            );
        } else {
            let (status, body) =
                nodes[1].post_events(&id, json!({"kind": "start", "data": start_data()})).await;
            assert_eq!(status, StatusCode::CREATED, "round {round}: {body}");
        }
    }
}
