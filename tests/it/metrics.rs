//! `GET /metrics` (SPEC 9): every metric family exists, and moves when it should, as a
//! Prometheus scrape sees it.

use std::time::Duration;

use tokio::time::Instant;

use matchstream_client::{SseViewer, WsViewer};
use serde_json::json;

use crate::support::{eventually, NodeProcess, TestServer, Viewer, PATIENCE, TOKEN};

/// Waits until the node's `series` reads `want`.
pub(crate) async fn metric_is(s: &TestServer, series: &str, want: f64) {
    let what = format!("{series} reads {want}");
    eventually(&what, PATIENCE, async || (value(&scrape(s).await, series) == want).then_some(()))
        .await;
}

/// One scrape, as text.
pub(crate) async fn scrape(s: &TestServer) -> String {
    let answer = reqwest::get(format!("{}/metrics", s.admin)).await.expect("GET /metrics");
    assert_eq!(answer.status(), reqwest::StatusCode::OK);
    let kind = answer.headers().get("content-type").and_then(|t| t.to_str().ok()).unwrap_or("");
    assert!(kind.starts_with("text/plain; version=0.0.4"), "{kind}");
    answer.text().await.expect("a body")
}

/// The value of one series (name and labels exactly as exposed), 0 when absent.
pub(crate) fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

/// Scrapes until `series` reaches `want` (the count of a viewer that left moves once its
/// connection is closed, which may linger a moment).
async fn until(s: &TestServer, series: &str, want: f64) -> String {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let text = scrape(s).await;
        if value(&text, series) == want {
            return text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{series} is {} (want {want}):\n{text}",
            value(&text, series)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn every_spec_metric_is_exposed_before_anything_happens() {
    let s = TestServer::start().await;
    let text = scrape(&s).await;
    for name in [
        "matchstream_viewers{transport=\"tcp_v1\"}",
        "matchstream_viewers{transport=\"tcp_v2\"}",
        "matchstream_viewers{transport=\"ws\"}",
        "matchstream_viewers{transport=\"sse\"}",
        "matchstream_matches_live",
        "matchstream_matches_in_memory",
        "matchstream_events_published_total",
        "matchstream_deliveries_total{transport=\"tcp_v2\"}",
        "matchstream_viewer_writes_total{transport=\"sse\"}",
        "matchstream_viewer_connects_total{transport=\"ws\"}",
        "matchstream_viewer_disconnects_total{reason=\"hangup\"}",
        "matchstream_viewer_disconnects_total{reason=\"too_slow\"}",
        "matchstream_accept_errors_total",
        "# TYPE matchstream_publish_seconds histogram",
        "# TYPE matchstream_delivery_lag_seconds histogram",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_cpu_seconds_total",
    ] {
        assert!(text.lines().any(|l| l.starts_with(name)), "{name} missing:\n{text}");
    }
    assert!(value(&text, "process_resident_memory_bytes") > 1e6);
    assert!(value(&text, "process_open_fds") > 3.0);
}

#[tokio::test]
async fn publishing_and_watching_move_their_metrics() {
    let s = TestServer::start().await;
    let id = s.create_match("elp", "tig", "2011-09-10").await;
    assert_eq!(value(&scrape(&s).await, "matchstream_matches_live"), 0.0);
    s.publish(&id, "start", crate::support::start_data()).await;
    let text = scrape(&s).await;
    assert_eq!(value(&text, "matchstream_matches_live"), 1.0);
    assert_eq!(value(&text, "matchstream_events_published_total"), 1.0);
    assert_eq!(value(&text, "matchstream_publish_seconds_count"), 1.0);

    let mut tcp = Viewer::connect(s.viewer(), &format!("VERSION:2:CONNECT:me:MATCH:{id}")).await;
    assert_eq!(tcp.frame().await.unwrap()["kind"], "status");
    let http = s.http_host();
    let mut ws = WsViewer::watch(&http, &id, None).await.expect("ws");
    let mut sse = SseViewer::watch(&http, &id, None).await.expect("sse");
    assert_eq!(ws.frame().await.unwrap().unwrap()["kind"], "status");
    assert_eq!(sse.frame().await.unwrap().unwrap()["kind"], "status");
    let text = scrape(&s).await;
    for t in ["tcp_v2", "ws", "sse"] {
        assert_eq!(value(&text, &format!("matchstream_viewers{{transport=\"{t}\"}}")), 1.0, "{t}");
        let connects = format!("matchstream_viewer_connects_total{{transport=\"{t}\"}}");
        assert_eq!(value(&text, &connects), 1.0, "{t}");
    }

    // Live events reach the parked viewers: deliveries and their lag are counted.
    for _ in 0..5 {
        s.publish(&id, "comment", json!({"text": "on the ball"})).await;
        assert_eq!(tcp.frame().await.unwrap()["kind"], "comment");
        assert_eq!(ws.frame().await.unwrap().unwrap()["kind"], "comment");
        assert_eq!(sse.frame().await.unwrap().unwrap()["kind"], "comment");
    }
    let text = scrape(&s).await;
    assert_eq!(value(&text, "matchstream_events_published_total"), 6.0);
    for t in ["tcp_v2", "ws", "sse"] {
        // The snapshot and the 5 comments.
        let series = format!("matchstream_deliveries_total{{transport=\"{t}\"}}");
        assert_eq!(value(&text, &series), 6.0, "{t}:\n{text}");
        // Each came alone (the next was published once every viewer had it): one write each.
        let series = format!("matchstream_viewer_writes_total{{transport=\"{t}\"}}");
        assert_eq!(value(&text, &series), 6.0, "{t}:\n{text}");
    }
    assert!(value(&text, "matchstream_delivery_lag_seconds_count") >= 1.0, "{text}");

    // A viewer that hangs up, and the rest told the match is over.
    drop(tcp);
    until(&s, "matchstream_viewer_disconnects_total{reason=\"hangup\"}", 1.0).await;
    until(&s, "matchstream_viewers{transport=\"tcp_v2\"}", 0.0).await;
    s.publish(&id, "stop", json!({})).await;
    until(&s, "matchstream_viewer_disconnects_total{reason=\"match_over\"}", 2.0).await;
    let text = until(&s, "matchstream_viewers{transport=\"ws\"}", 0.0).await;
    assert_eq!(value(&text, "matchstream_viewers{transport=\"sse\"}"), 0.0);
    assert_eq!(value(&text, "matchstream_matches_live"), 0.0);
    drop((ws, sse));
}

#[tokio::test]
async fn refusals_count_as_disconnects_with_their_reason() {
    let s = TestServer::start().await;
    let mut v =
        Viewer::connect(s.viewer(), "VERSION:2:CONNECT:me:MATCH:nope-nope-2011-01-01").await;
    assert_eq!(v.frame().await.unwrap()["reason"], "not_found");
    let mut bad = Viewer::connect(s.viewer(), "HELLO").await;
    bad.read_to_end().await;
    until(&s, "matchstream_viewer_disconnects_total{reason=\"not_found\"}", 1.0).await;
    until(&s, "matchstream_viewer_disconnects_total{reason=\"bad_request\"}", 1.0).await;
}

/// `matchstream_accept_errors_total` counts the accepts a node could not make: a node limited to
/// 600 open files (so to 88 viewers, past which it still accepts up to 1,024 to tell them
/// `full`) is sent 700 connections. It lives on, counts the failed accepts, and takes viewers
/// again once the crowd leaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepts_past_the_open_file_limit_are_counted_and_the_node_lives_on() {
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut node = NodeProcess::start_limited(dir.path(), &[], Some(600));
    let http = reqwest::Client::new();
    let created = http
        .post(format!("{}/1/matches", node.base))
        .bearer_auth(TOKEN)
        .json(&json!({"home": "elp", "visit": "tig", "start_date": "2011-09-10"}))
        .send()
        .await
        .expect("POST /1/matches");
    assert_eq!(created.status(), reqwest::StatusCode::CREATED);
    let line = "VERSION:2:CONNECT:me:MATCH:elp-tig-2011-09-10\r\n";
    // More connections than descriptors left: the kernel completes every handshake, the node
    // cannot accept them all.
    let mut crowd = Vec::new();
    for _ in 0..700 {
        let mut s = tokio::net::TcpStream::connect(node.viewers[0]).await.expect("connect");
        s.write_all(line.as_bytes()).await.expect("the connect line");
        crowd.push(s);
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    drop(crowd);
    let errors = eventually("an accept error counted", PATIENCE, async || {
        // While the node is out of descriptors, the scrape itself may not be accepted.
        let scrape =
            async { http.get(format!("{}/metrics", node.admin)).send().await?.text().await };
        let text = tokio::time::timeout(Duration::from_secs(2), scrape).await.ok()?.ok()?;
        Some(value(&text, "matchstream_accept_errors_total")).filter(|n| *n >= 1.0)
    })
    .await;
    assert!(node.child.try_wait().expect("the node's status").is_none(), "the node died");
    // Once the node has seen the crowd go, a new viewer is served.
    eventually("a viewer served once the crowd left", PATIENCE, async || {
        let mut v = Viewer::connect(node.viewers[0], line.trim_end()).await;
        let frame = v.frame().await.expect("a frame");
        assert!(frame["kind"] == "status" || frame["reason"] == "full", "after {errors}: {frame}");
        (frame["kind"] == "status").then_some(())
    })
    .await;
}

/// `ops/`: the shipped Grafana dashboard parses, and every metric it charts is one a node
/// exposes; the Prometheus config scrapes the path nodes serve.
#[tokio::test]
async fn the_shipped_dashboard_names_only_metrics_a_node_exposes() {
    let root = env!("CARGO_MANIFEST_DIR");
    let text = std::fs::read_to_string(format!("{root}/ops/grafana-dashboard.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("the dashboard parses");
    let exprs: Vec<&str> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|p| p["targets"].as_array().expect("targets"))
        .map(|t| t["expr"].as_str().expect("expr"))
        .collect();
    assert!(exprs.len() >= 10, "{exprs:?}");
    let s = TestServer::start().await;
    let exposed = scrape(&s).await;
    let mut named = 0;
    for expr in &exprs {
        let words = expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'));
        for name in words.filter(|w| w.starts_with("matchstream_") || w.starts_with("process_")) {
            named += 1;
            let present = exposed
                .lines()
                .any(|l| l.strip_prefix(name).is_some_and(|rest| rest.starts_with(['{', ' '])));
            assert!(present, "the dashboard charts {name}, which a node does not expose");
        }
    }
    assert!(named >= 12, "{named}");
    let prometheus = std::fs::read_to_string(format!("{root}/ops/prometheus.yml")).unwrap();
    assert!(prometheus.contains("metrics_path: /metrics"), "{prometheus}");
}

/// `/ops` (SPEC 9): the page, the figures it reads, and `matchstream top --once` over them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ops_shows_this_node_and_its_live_match_and_top_prints_them() {
    let s = TestServer::start().await;
    let id = s.started_match().await;
    let mut v = Viewer::connect(s.viewer(), &format!("VERSION:2:CONNECT:me:MATCH:{id}")).await;
    assert_eq!(v.frame().await.unwrap()["kind"], "status");
    let page = reqwest::get(format!("{}/ops", s.admin)).await.expect("GET /ops");
    assert_eq!(page.status(), reqwest::StatusCode::OK);
    assert!(page.text().await.unwrap().contains("MatchStream operations"));
    // A sample is the difference of two readings a second apart.
    let ops = eventually("/ops.json shows the viewer", PATIENCE, async || {
        let (status, ops) = s.admin_get("/ops.json").await;
        (status == reqwest::StatusCode::OK && ops["latest"]["viewers"]["tcp_v2"] == 1)
            .then_some(ops)
    })
    .await;
    assert_eq!(ops["matches"][0]["id"], id.as_str(), "{ops}");
    assert!(ops["latest"]["rss_bytes"].as_u64().unwrap() > 1_000_000, "{ops}");
    assert!(ops["history"].as_array().is_some_and(|h| !h.is_empty()), "{ops}");
    let base = s.admin.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_matchstream"))
            .args(["top", "--once", "--server", &base])
            .output()
            .expect("run top")
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text} {}", String::from_utf8_lossy(&out.stderr));
    let here = text.lines().find(|l| l.contains("(here)")).unwrap_or_else(|| panic!("{text}"));
    assert_eq!(here.split_whitespace().nth(2), Some("1"), "viewers column: {text}");
    assert!(text.contains(&id), "{text}");
}

/// `matchstream top` in a real terminal (tmux): it draws this node's row and quits on `q`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_draws_in_a_terminal_and_quits_on_q() {
    let s = TestServer::start().await;
    let id = s.started_match().await;
    let socket = format!("matchstream-top-{}", std::process::id());
    let tmux = move |args: &[&str]| {
        std::process::Command::new("tmux")
            .args(["-L", &socket])
            .args(args)
            .output()
            .expect("tmux (scripts/test installs it)")
    };
    let command = format!("{} top --server {}", env!("CARGO_BIN_EXE_matchstream"), s.admin);
    let started = tmux(&["new-session", "-d", "-s", "top", "-x", "160", "-y", "30", &command]);
    assert!(started.status.success(), "{}", String::from_utf8_lossy(&started.stderr));
    let deadline = Instant::now() + PATIENCE;
    let screen = eventually("top draws its rows", PATIENCE, async || {
        let pane = tmux(&["capture-pane", "-p", "-t", "top"]);
        let screen = String::from_utf8_lossy(&pane.stdout).into_owned();
        (screen.contains("(here)") && screen.contains(&id)).then_some(screen)
    })
    .await;
    assert!(screen.contains("live matches") && screen.contains("q to quit"), "{screen}");
    tmux(&["send-keys", "-t", "top", "q"]);
    while tmux(&["has-session", "-t", "top"]).status.success() {
        assert!(Instant::now() < deadline, "top did not quit on q");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tmux(&["kill-server"]);
}
