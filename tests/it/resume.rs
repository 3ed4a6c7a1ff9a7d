//! v2 resume under load: viewers joining with `FROM:n` while events are being published each get
//! n+1..last exactly once, in order.

use std::sync::Arc;

use serde_json::json;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_resuming_from_many_points_during_publishing_miss_nothing() {
    let s = Arc::new(TestServer::start_with(|c| c.ring_events = 32).await);
    let id = s.started_match().await;
    const TOTAL: u64 = 400;

    // The publisher itself lets viewers in every few events, from points behind, at and past the
    // ring's reach: each is connected, with its line sent, before the next publish, and catches
    // up while publishing goes on. Every viewer joins during publishing by construction, however
    // fast or slow the machine.
    let mut viewers = Vec::new();
    let mut seq = 1;
    let mut round = 0u64;
    while seq < TOTAL - 1 {
        if round.is_multiple_of(3) {
            for from in [0, seq / 2, seq.saturating_sub(40), seq.saturating_sub(1), seq] {
                let addr = s.viewers[viewers.len() % 2];
                let line = format!("VERSION:2:CONNECT:r{}:MATCH:{id}:FROM:{from}", viewers.len());
                let mut v = Viewer::connect(addr, &line).await;
                viewers.push(tokio::spawn(async move {
                    let (seqs, bye) = collect_v2(&mut v).await;
                    (from, seqs, bye)
                }));
            }
        }
        round += 1;
        // Mostly single events, sometimes a batch of several.
        let n = if round.is_multiple_of(10) { 5.min(TOTAL - 1 - seq) } else { 1 };
        let batch: Vec<_> =
            (0..n).map(|_| json!({"kind": "corner", "data": {"team": "tig"}})).collect();
        let (st, b) = s.post_events(&id, serde_json::Value::Array(batch)).await;
        assert_eq!(st, reqwest::StatusCode::CREATED, "{b}");
        seq = b.as_array().unwrap().last().unwrap()["seq"].as_u64().unwrap();
    }
    assert_eq!(s.publish(&id, "stop", json!({})).await, TOTAL);
    assert!(viewers.len() >= 400, "{} viewers", viewers.len());
    for v in viewers {
        let (from, seqs, bye) = v.await.expect("viewer");
        assert_eq!(seqs, ((from + 1)..=TOTAL).collect::<Vec<_>>(), "viewer from {from}");
        assert_eq!(bye["reason"], "match_over");
    }
}
