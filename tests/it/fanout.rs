//! Fan-out: many viewers of one match each get every event of a burst, in order, exactly once.

use serde_json::{json, Value};

use crate::support::*;

const VIEWERS: usize = 2_000;
const EVENTS: u64 = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_viewers_each_get_a_burst_of_300_in_order() {
    let s = TestServer::start().await;
    let id = s.create_match("elp", "tig", "2011-09-10").await;
    let line = format!("VERSION:2:CONNECT:fan:MATCH:{id}");

    // Every viewer holds its snapshot (seq 0: nothing published yet) before the burst begins, so
    // each must see the whole burst, 1 to 300: wait for all 2,000 snapshots, on any machine.
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel(VIEWERS);
    let mut viewers = Vec::with_capacity(VIEWERS);
    for i in 0..VIEWERS {
        let mut v = Viewer::connect(s.viewers[i % s.viewers.len()], &line).await;
        let ready = ready_tx.clone();
        viewers.push(tokio::spawn(async move {
            let status = v.frame().await.expect("status");
            assert_eq!((&status["kind"], &status["seq"]), (&json!("status"), &json!(0)));
            ready.send(()).await.expect("the test waits");
            collect_v2(&mut v).await
        }));
    }
    for _ in 0..VIEWERS {
        ready_rx.recv().await.expect("a viewer task ended before its snapshot");
    }

    // The burst: start, 298 events in batches of various sizes, stop.
    s.publish(&id, "start", start_data()).await;
    let mut sent = 1;
    let mut batch_size = 1;
    while sent < EVENTS - 1 {
        let n = batch_size.min(EVENTS - 1 - sent);
        let batch: Vec<Value> =
            (0..n).map(|i| json!({"kind": "shot", "data": {"team": if i % 2 == 0 { "elp" } else { "tig" }}})).collect();
        let (st, b) = s.post_events(&id, Value::Array(batch)).await;
        assert_eq!(st, reqwest::StatusCode::CREATED, "{b}");
        sent += n;
        batch_size = batch_size % 50 + 7;
    }
    assert_eq!(s.publish(&id, "stop", json!({})).await, EVENTS);

    let want: Vec<u64> = (1..=EVENTS).collect();
    for (i, v) in viewers.into_iter().enumerate() {
        let (seqs, bye) = v.await.expect("viewer task");
        assert_eq!(seqs, want, "viewer {i}");
        assert_eq!(bye["reason"], "match_over", "viewer {i}");
    }
}
