//! Browser viewers in numbers and under strain: 300 WebSocket and 300 SSE viewers each get a
//! burst whole, viewers of both come back after a node's restart missing nothing, and a
//! WebSocket viewer far behind is told `too_slow`.

use serde_json::{json, Value};

use super::{within, Sse, Ws};
use crate::support::*;

/// Viewers of one match, each holding its snapshot of a match not started (seq 0), then a burst
/// of 200 events published as one list: each gets 1..=200 exactly once, in order.
async fn burst_to(s: &TestServer, id: &str, tasks: Vec<tokio::task::JoinHandle<Vec<u64>>>) {
    let mut burst = vec![json!({"kind": "start", "data": start_data()})];
    burst.extend((0..198).map(
        |i| json!({"kind": "shot", "data": {"team": if i % 2 == 0 { "elp" } else { "tig" }}}),
    ));
    burst.push(json!({"kind": "stop", "data": {}}));
    let (st, b) = s.post_events(id, Value::Array(burst)).await;
    assert_eq!(st, reqwest::StatusCode::CREATED, "{b}");
    let want: Vec<u64> = (1..=200).collect();
    for (i, t) in tasks.into_iter().enumerate() {
        assert_eq!(t.await.expect("viewer task"), want, "viewer {i}");
    }
}

const CROWD: usize = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_ws_viewers_each_get_a_burst_of_200_in_order() {
    let s = TestServer::start().await;
    let id = s.create_match("elp", "tig", "2011-09-10").await;
    let (ready_tx, mut ready) = tokio::sync::mpsc::channel(CROWD);
    let mut tasks = Vec::with_capacity(CROWD);
    for _ in 0..CROWD {
        let mut ws = Ws::watch(&s, &id, None).await;
        let ready_tx = ready_tx.clone();
        tasks.push(tokio::spawn(async move {
            assert_eq!(ws.frame().await["seq"], 0);
            ready_tx.send(()).await.expect("the test waits");
            let (seqs, bye) = ws.collect().await;
            assert_eq!(bye["reason"], "match_over");
            assert_eq!(ws.closed().await.code, 1000);
            seqs
        }));
    }
    for _ in 0..CROWD {
        within("every snapshot", ready.recv()).await.expect("a viewer failed before its snapshot");
    }
    burst_to(&s, &id, tasks).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_sse_viewers_each_get_a_burst_of_200_in_order() {
    let s = TestServer::start().await;
    let id = s.create_match("elp", "tig", "2011-09-10").await;
    let (ready_tx, mut ready) = tokio::sync::mpsc::channel(CROWD);
    let mut tasks = Vec::with_capacity(CROWD);
    for _ in 0..CROWD {
        let mut sse = Sse::open(&s, &format!("/1/match/{id}/stream"), &[], None).await;
        let ready_tx = ready_tx.clone();
        tasks.push(tokio::spawn(async move {
            assert_eq!(sse.event().await.id.as_deref(), Some("0"));
            ready_tx.send(()).await.expect("the test waits");
            let (seqs, bye) = sse.collect().await;
            assert_eq!(bye["reason"], "match_over");
            sse.ends().await;
            seqs
        }));
    }
    for _ in 0..CROWD {
        within("every snapshot", ready.recv()).await.expect("a viewer failed before its snapshot");
    }
    burst_to(&s, &id, tasks).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_and_sse_viewers_get_bye_shutdown_and_resume_on_the_restarted_node_missing_nothing() {
    let s = TestServer::start().await;
    let id = s.started_match().await;
    let http = s.node.as_ref().expect("node").http_addr;
    let mut ws = Ws::watch(&s, &id, None).await;
    let mut sse = Sse::open(&s, &format!("/1/match/{id}/stream"), &[], None).await;
    for _ in 0..3 {
        s.publish(&id, "corner", json!({"team": "elp"})).await;
    }
    // Read up to the goodbye while the node stops: it waits (within its grace period) for its
    // viewers to go.
    let readers = tokio::spawn(async move {
        let (ws_seqs, ws_bye) = ws.collect().await;
        let code = ws.closed().await.code;
        let (sse_seqs, sse_bye) = sse.collect().await;
        sse.ends().await;
        (ws_seqs, ws_bye, code, sse_seqs, sse_bye)
    });
    let dir = s.stop().await;
    let (ws_seqs, ws_bye, code, sse_seqs, sse_bye) = readers.await.expect("readers");
    assert_eq!((ws_seqs, &ws_bye["reason"], code), (vec![2, 3, 4], &json!("shutdown"), 1001));
    assert_eq!((sse_seqs, &sse_bye["reason"]), (vec![2, 3, 4], &json!("shutdown")));

    // The node comes back on the same store and port; events go on meanwhile and after.
    let s = TestServer::start_in(dir, |c| c.http = http).await;
    s.publish(&id, "corner", json!({"team": "tig"})).await;
    let mut ws = Ws::watch(&s, &id, Some(4)).await;
    let mut sse =
        Sse::open(&s, &format!("/1/match/{id}/stream"), &[("Last-Event-ID", "4")], Some(4)).await;
    s.publish(&id, "goal", json!({"team": "tig", "player": 7})).await;
    s.publish(&id, "stop", json!({})).await;
    let bye = json!({"kind": "bye", "reason": "match_over"});
    assert_eq!(ws.collect().await, (vec![5, 6, 7], bye.clone()));
    assert_eq!(ws.closed().await.code, 1000);
    assert_eq!(sse.collect().await, (vec![5, 6, 7], bye));
    sse.ends().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_a_viewer_far_behind_is_told_too_slow_and_closed_with_1008() {
    // A small ring and lag limit, and writes that may wait: a viewer that stops reading is held
    // up by its own socket, falls out of the ring, and is let go when it reads again.
    let s = TestServer::start_with(|c| {
        c.ring_events = 16;
        c.max_lag_events = 50;
    })
    .await;
    let id = s.started_match().await;
    let mut slow = Ws::watch(&s, &id, None).await;
    assert_eq!(slow.frame().await["kind"], "status");
    // More than the kernel buffers between the node and the viewer hold on loopback (4 MiB
    // each way at most here): the node's writes to it block.
    const EVENTS: u64 = 16_000;
    let text = "x".repeat(280);
    for _ in 0..EVENTS / 250 {
        let batch: Vec<_> =
            (0..250).map(|_| json!({"kind": "comment", "data": {"text": text}})).collect();
        let (st, b) = s.post_events(&id, Value::Array(batch)).await;
        assert_eq!(st, reqwest::StatusCode::CREATED, "{b}");
    }
    s.publish(&id, "stop", json!({})).await;
    // The slow one reads again: what was in flight, in order and without a gap, then the
    // goodbye and the close code that says why.
    let (seqs, bye) = slow.collect().await;
    assert_eq!(seqs, (2..=seqs.len() as u64 + 1).collect::<Vec<_>>(), "in order, no gap");
    assert!((seqs.len() as u64) < EVENTS, "{} events", seqs.len());
    assert_eq!(bye, json!({"kind": "bye", "reason": "too_slow"}));
    assert_eq!(slow.closed().await.code, 1008);
}
