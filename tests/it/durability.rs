//! Durability: an acknowledged event survives `kill -9` of the node right after its `201`.

use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn kill_9_right_after_201_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let mut node = NodeProcess::start(dir.path());
    let base = node.base.clone();
    let post = |path: String, body: serde_json::Value| {
        http.post(format!("{base}{path}")).bearer_auth(TOKEN).json(&body).send()
    };
    let r =
        post("/1/matches".into(), json!({"home":"elp","visit":"tig","start_date":"2011-09-10"}))
            .await
            .unwrap();
    assert_eq!(r.status(), 201);
    let id = "elp-tig-2011-09-10";
    let r = post(format!("/1/match/{id}/events"), json!({"kind":"start","data": start_data()}))
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    // Many concurrent requests, then kill -9 the instant the last 201 arrives.
    let mut acks = Vec::new();
    let mut tasks = Vec::new();
    for i in 0..50 {
        let team = if i % 3 == 0 { "elp" } else { "tig" };
        tasks.push(post(
            format!("/1/match/{id}/events"),
            json!({"kind":"goal","data":{"team": team}}),
        ));
    }
    for r in futures_join(tasks).await {
        let r = r.unwrap();
        assert_eq!(r.status(), 201);
        acks.push(r.json::<serde_json::Value>().await.unwrap()["seq"].as_u64().unwrap());
    }
    node.kill9();

    let node = NodeProcess::start(dir.path());
    let m: serde_json::Value =
        http.get(format!("{}/1/match/{id}", node.base)).send().await.unwrap().json().await.unwrap();
    assert_eq!(m["seq"], 51);
    assert_eq!(m["home-score"], 17);
    assert_eq!(m["visit-score"], 33);
    assert_eq!(m["home-players"]["25"], "Albil");
    let h: Vec<serde_json::Value> = http
        .get(format!("{}/1/match/{id}/history", node.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(h.len(), 51);
    acks.sort();
    assert_eq!(acks, (2..=51).collect::<Vec<_>>());
    // And it keeps accepting where it left off.
    let r = http
        .post(format!("{}/1/match/{id}/events", node.base))
        .bearer_auth(TOKEN)
        .json(&json!({"kind":"stop"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["seq"], 52);
}

/// Awaits every future concurrently.
async fn futures_join<F>(fs: Vec<F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = fs.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.expect("task"));
    }
    out
}
