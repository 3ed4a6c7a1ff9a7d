//! Drain (SPEC 9): a stopping node says goodbye to its viewers spread over `--drain-window`,
//! with `retry_after_ms` jittered over the same window; meanwhile it is not ready, takes no new
//! viewer (`full`), and those not told yet still get the match.

use std::time::Duration;

use matchstream_client::WsViewer;
use serde_json::json;
use tokio::time::Instant;

use crate::support::{TestServer, Viewer, PATIENCE};

const WINDOW: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn goodbyes_are_spread_over_the_drain_window_and_the_rest_still_get_the_match() {
    let s = TestServer::start_with(|c| c.drain_window = WINDOW).await;
    let id = s.started_match().await;
    let line = format!("VERSION:2:CONNECT:me:MATCH:{id}");
    let mut viewers = Vec::new();
    for _ in 0..80 {
        let mut v = Viewer::connect(s.viewer(), &line).await;
        assert_eq!(v.frame().await.unwrap()["kind"], "status");
        viewers.push(v);
    }
    let begun = Instant::now();
    // Each viewer reads until its goodbye: when it came, and whether the comment published
    // during the drain came before it.
    let readers: Vec<_> = viewers
        .into_iter()
        .map(|mut v| {
            tokio::spawn(async move {
                let mut got_comment = false;
                loop {
                    let frame = v.frame().await.expect("a frame before the close");
                    match frame["kind"].as_str() {
                        Some("comment") => got_comment = true,
                        Some("bye") => return (begun.elapsed(), frame, got_comment),
                        other => panic!("unexpected {other:?}"),
                    }
                }
            })
        })
        .collect();
    let node = s.node.as_ref().expect("node");
    node.shutdown();

    // Draining: not ready, and a new viewer is told `full`.
    let ready = reqwest::get(format!("{}/readyz", s.base)).await.expect("readyz");
    assert_eq!(ready.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
    let http = s.http_host();
    let mut late = WsViewer::watch(&http, &id, None).await.expect("the upgrade still answers");
    let bye = late.frame().await.expect("a frame").expect("the bye");
    assert_eq!((&bye["kind"], &bye["reason"]), (&json!("bye"), &json!("full")), "{bye}");

    // Published during the drain: it reaches every viewer not told goodbye yet.
    let (status, ack) =
        s.post_events(&id, json!({"kind": "comment", "data": {"text": "still on"}})).await;
    assert_eq!(status, reqwest::StatusCode::CREATED, "{ack}");
    let published = begun.elapsed();

    let mut at = Vec::new();
    for r in readers {
        let (when, bye, got_comment) = tokio::time::timeout(PATIENCE, r).await.unwrap().unwrap();
        assert_eq!(bye["reason"], "shutdown", "{bye}");
        let retry = bye["retry_after_ms"].as_u64().expect("retry_after_ms");
        // From --retry-after (1 s in the tests' config) to that plus the window.
        assert!((1000..=3000).contains(&retry), "{retry}");
        if when > published + Duration::from_millis(200) {
            assert!(
                got_comment,
                "a viewer told goodbye at {when:?} missed the comment published at {published:?}"
            );
        }
        at.push(when);
    }
    at.sort();
    let (first, last) = (at[0], at[at.len() - 1]);
    // Spread over the window: not all at once, none long after it.
    assert!(last - first >= WINDOW / 2, "goodbyes from {first:?} to {last:?}");
    assert!(last <= WINDOW + Duration::from_secs(1), "the last goodbye at {last:?}");
    let early = at.iter().filter(|t| **t < WINDOW / 4).count();
    assert!(early <= at.len() / 2, "{early} of {} in the first quarter: {at:?}", at.len());
    s.stop().await;
}
