//! Lifecycle: a clean stop says goodbye to viewers and keeps every match; SIGTERM stops the
//! binary with exit code 0.

use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn shutdown_says_bye_with_a_jittered_retry_and_restart_restores_everything() {
    let s = TestServer::start_with(|c| c.retry_after_ms = 1000).await;
    let id = s.started_match().await;
    s.publish(&id, "goal", json!({"team": "tig", "player": 7})).await;
    s.publish(
        &id,
        "substitution",
        json!({"team": "elp", "player_out": 18, "player_in": {"number": 21, "name": "Silva"}}),
    )
    .await;
    let mut viewers = Vec::new();
    for _ in 0..3 {
        let mut v = Viewer::connect(s.viewer(), &format!("VERSION:2:CONNECT:me:MATCH:{id}")).await;
        assert_eq!(v.frame().await.unwrap()["kind"], "status");
        viewers.push(v);
    }
    let (_, before) = s.get(&format!("/1/match/{id}")).await;
    let (_, history_before) = s.get(&format!("/1/match/{id}/history")).await;
    let dir = s.stop().await;
    for v in &mut viewers {
        let bye = v.frame().await.unwrap();
        assert_eq!(bye["kind"], "bye");
        assert_eq!(bye["reason"], "shutdown");
        let retry = bye["retry_after_ms"].as_u64().unwrap();
        assert!((1000..=2000).contains(&retry), "{retry}");
        assert!(v.frame().await.is_none());
    }

    let s = TestServer::start_in(dir, |_| {}).await;
    let (_, after) = s.get(&format!("/1/match/{id}")).await;
    assert_eq!(after, before);
    assert_eq!(after["home-players"], json!({"25": "Albil", "21": "Silva"}));
    let (_, history_after) = s.get(&format!("/1/match/{id}/history")).await;
    assert_eq!(history_after, history_before);
    // Resume across the restart.
    let mut v =
        Viewer::connect(s.viewer(), &format!("VERSION:2:CONNECT:me:MATCH:{id}:FROM:1")).await;
    assert_eq!(v.frame().await.unwrap()["seq"], 2);
    assert_eq!(v.frame().await.unwrap()["seq"], 3);
}

#[tokio::test]
async fn sigterm_stops_the_binary_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = NodeProcess::start(dir.path());
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{}/1/matches", node.base))
        .bearer_auth(TOKEN)
        .json(&json!({"home":"elp","visit":"tig","start_date":"2011-09-10"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let mut v =
        Viewer::connect(node.viewers[0], "VERSION:2:CONNECT:me:MATCH:elp-tig-2011-09-10").await;
    assert_eq!(v.frame().await.unwrap()["kind"], "status");
    // SAFETY: sending a signal to a child process we started and still own.
    unsafe { libc::kill(node.child.id() as i32, libc::SIGTERM) };
    assert_eq!(v.frame().await.unwrap()["reason"], "shutdown");
    let status = node.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn readyz_says_draining_once_the_node_stops_while_http_still_answers() {
    let s = TestServer::start().await;
    assert_eq!(s.get("/readyz").await.0, reqwest::StatusCode::OK);
    s.node.as_ref().unwrap().shutdown();
    let (st, body) = s.get("/readyz").await;
    assert_eq!(st, reqwest::StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body["error"].as_str().unwrap().contains("draining"), "{body}");
    assert_eq!(s.get("/healthz").await.0, reqwest::StatusCode::OK);
    s.stop().await;
}
