//! v2 resume under load: viewers joining with `FROM:n` while events are being published each get
//! n+1..last exactly once, in order.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde_json::json;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_resuming_from_many_points_during_publishing_miss_nothing() {
    let s = Arc::new(TestServer::start_with(|c| c.ring_events = 32).await);
    let id = s.started_match().await;
    let published = Arc::new(AtomicU64::new(1));
    const TOTAL: u64 = 400;

    let publisher = {
        let (s, id, published) = (s.clone(), id.clone(), published.clone());
        tokio::spawn(async move {
            let mut seq = 1;
            while seq < TOTAL - 1 {
                // Mostly single events, sometimes a batch of several, from concurrent requests.
                let n = if seq % 10 == 0 { 5.min(TOTAL - 1 - seq) } else { 1 };
                let batch: Vec<_> =
                    (0..n).map(|_| json!({"kind": "corner", "data": {"team": "tig"}})).collect();
                let (st, b) = s.post_events(&id, serde_json::Value::Array(batch)).await;
                assert_eq!(st, reqwest::StatusCode::CREATED, "{b}");
                seq = b.as_array().unwrap().last().unwrap()["seq"].as_u64().unwrap();
                published.store(seq, Ordering::SeqCst);
            }
            assert_eq!(s.publish(&id, "stop", json!({})).await, TOTAL);
        })
    };

    let mut viewers = Vec::new();
    let mut i = 0u64;
    while !publisher.is_finished() || i < 5 {
        let now = published.load(Ordering::SeqCst);
        let from =
            [0, now / 2, now.saturating_sub(1), now, now.saturating_sub(40)][(i % 5) as usize];
        let addr = s.viewers[(i % 2) as usize];
        let line = format!("VERSION:2:CONNECT:r{i}:MATCH:{id}:FROM:{from}");
        viewers.push(tokio::spawn(async move {
            let mut v = Viewer::connect(addr, &line).await;
            let (seqs, bye) = collect_v2(&mut v).await;
            (from, seqs, bye)
        }));
        i += 1;
        tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    }
    publisher.await.expect("publisher");
    assert!(viewers.len() >= 20, "only {} viewers joined during the run", viewers.len());
    for v in viewers {
        let (from, seqs, bye) = v.await.expect("viewer");
        assert_eq!(seqs, ((from + 1)..=TOTAL).collect::<Vec<_>>(), "viewer from {from}");
        assert_eq!(bye["reason"], "match_over");
    }
}
