//! `matchstream sim` as a harness runs it: viewers over worker processes against a real node
//! (v1, v2, WebSocket, SSE, a mix of protocols, a mix of paths, a cancelled match), the HTTP
//! load test, the benchmark watcher, and the same subscriber engine against a real
//! redis-server.

use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use crate::redis::RedisServer;
use crate::support::*;

const BIN: &str = env!("CARGO_BIN_EXE_matchstream");

/// A `matchstream sim ...` run in its own process group of workers.
struct SimRun {
    child: Child,
    stderr: mpsc::UnboundedReceiver<String>,
    seen: Vec<String>,
}

impl SimRun {
    /// `args`: the words after `matchstream sim`, separated by spaces.
    fn spawn(args: &str) -> SimRun {
        let mut child = Command::new(BIN)
            .arg("sim")
            .args(args.split_whitespace())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn matchstream sim");
        let (tx, stderr) = mpsc::unbounded_channel();
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let _ = tx.send(line);
            }
        });
        SimRun { child, stderr, seen: Vec::new() }
    }

    /// Waits for a line on stderr (such as `connected 200`).
    async fn wait_for(&mut self, want: &str) {
        let found = tokio::time::timeout(PATIENCE, async {
            while let Some(line) = self.stderr.recv().await {
                let hit = line == want;
                self.seen.push(line);
                if hit {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(found, Ok(true), "no {want:?} on stderr; got:\n{}", self.seen.join("\n"));
    }

    /// Closes the run's stdin, which releases held viewers.
    fn release(&mut self) {
        drop(self.child.stdin.take());
    }

    /// Waits for the run to end: exit status, the JSON summary, and stderr.
    async fn finish(mut self) -> (ExitStatus, Value, String) {
        let mut out = String::new();
        let mut stdout = self.child.stdout.take().expect("stdout");
        let status = tokio::time::timeout(Duration::from_secs(90), async {
            stdout.read_to_string(&mut out).await.expect("read stdout");
            self.child.wait().await.expect("wait")
        })
        .await
        .expect("the sim ends in time");
        // The rest of stderr, up to its end (the reader task may lag behind the exit).
        let rest = tokio::time::timeout(PATIENCE, async {
            while let Some(line) = self.stderr.recv().await {
                self.seen.push(line);
            }
        });
        rest.await.expect("stderr ends with the run");
        let stderr = self.seen.join("\n");
        let summary = serde_json::from_str(out.trim())
            .unwrap_or_else(|e| panic!("summary {out:?}: {e}\nstderr:\n{stderr}"));
        (status, summary, stderr)
    }
}

/// Runs a one-shot command (`sim publish`, `sim http`...) and returns its status and JSON.
async fn run_json(args: &str) -> (ExitStatus, Value) {
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        Command::new(BIN).arg("sim").args(args.split_whitespace()).stdin(Stdio::null()).output(),
    )
    .await
    .expect("in time")
    .expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    let value = serde_json::from_str(text.trim()).unwrap_or_else(|e| {
        panic!("{args:?}: {e}: {text}\n{}", String::from_utf8_lossy(&out.stderr))
    });
    (out.status, value)
}

/// Checks a summary in which every viewer completed.
fn assert_all_complete(s: &Value, n: u64, deliveries: u64) {
    assert_eq!(s["complete"], n, "{s:#}");
    assert_eq!(s["failed"], 0, "{s:#}");
    assert!(s["failures"].as_object().unwrap().values().all(|v| v == 0), "{s:#}");
    assert_eq!(s["deliveries"], deliveries, "{s:#}");
    assert_eq!(s["connect_ms"]["count"], n, "{s:#}");
    assert!(s["connects_per_s"].as_f64().unwrap() > 0.0, "{s:#}");
    assert!(s["all_connected_after_ms"].as_u64().is_some(), "{s:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_viewers_over_two_workers_get_every_event_published_at_a_rate() {
    let s = TestServer::start().await;
    let id = s.started_match().await;
    let mut sim = SimRun::spawn(&format!(
        "--server {} --match {} -n 200 -c 50 --workers 2 --json",
        s.base, id
    ));
    sim.wait_for("connected 200").await;
    let (st, published) = run_json(&format!(
        "publish --server {} --token {TOKEN} --match {id} --rate 100 --duration 0.3 \
         --payload 200 --stop --json",
        s.base
    ))
    .await;
    assert!(st.success(), "{published}");
    assert_eq!(published["published"], 30);
    assert_eq!(published["first_seq"], 2);
    assert_eq!(published["last_seq"], 31);
    assert_eq!(published["stop_seq"], 32);
    assert_eq!(published["frame_bytes"], 200);
    assert_eq!(published["in_flight"], 64, "open loop by default");
    assert_eq!(published["reply_ms"]["count"], 30, "a round trip per comment");

    let (status, summary, stderr) = sim.finish().await;
    assert!(status.success(), "{stderr}");
    assert_all_complete(&summary, 200, 200 * 31);
    assert_eq!(summary["workers"], 2);
    assert_eq!(summary["protocol"], "v2");
    assert_eq!(summary["paths"]["watch"]["complete"], 200);
    assert_eq!(summary["latency_ms"]["count"], 200 * 31);
    assert_eq!(summary["latency_resolution_ms"], 1);
    assert!(stderr.contains("\"type\":\"progress\""), "JSON progress on stderr: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_viewers_check_the_framing_and_the_close_after_stop() {
    let s = TestServer::start().await;
    let id = s.started_match().await;
    let mut sim = SimRun::spawn(&format!(
        "--server {} --match {} -n 200 --workers 2 --protocol v1 --json",
        s.base, id
    ));
    sim.wait_for("connected 200").await;
    // Closed loop: each comment waits for the previous one's 201.
    let (st, published) = run_json(&format!(
        "publish --server {} --token {} --match {} --rate 100 --duration 0.1 --in-flight 1 --json",
        s.base, TOKEN, id
    ))
    .await;
    assert!(st.success(), "{published}");
    assert_eq!(published["in_flight"], 1);
    assert_eq!(
        (published["first_seq"].as_u64(), published["last_seq"].as_u64()),
        (Some(2), Some(11))
    );
    let (st, published) = run_json(&format!(
        "publish --server {} --token {} --match {} --burst 30 --stop --json",
        s.base, TOKEN, id
    ))
    .await;
    assert!(st.success(), "{published}");
    assert_eq!(
        (published["first_seq"].as_u64(), published["last_seq"].as_u64()),
        (Some(12), Some(41))
    );
    assert_eq!(published["in_flight"], 0, "a burst is one request");
    let (status, summary, stderr) = sim.finish().await;
    assert!(status.success(), "{stderr}");
    assert_all_complete(&summary, 200, 200 * 41);
    assert_eq!(summary["protocol"], "v1");
    assert_eq!(summary["latency_resolution_ms"], 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_sse_and_a_mix_of_protocols_get_every_event_each_checked_alike() {
    let s = TestServer::start().await;
    let id = s.started_match().await;
    // Three runs at once on one match: all WebSocket, all SSE, and a mix of the three
    // protocols in which a fifth of the viewers drop and come back with FROM / from.
    let mut ws =
        SimRun::spawn(&format!("--server {} --match {id} -n 100 --protocol ws --json", s.base));
    let mut sse =
        SimRun::spawn(&format!("--server {} --match {id} -n 100 --protocol sse --json", s.base));
    let mut mix = SimRun::spawn(&format!(
        "--server {} --match {id} -n 100 --workers 2 --mix watch=80,reconnect=20,tcp:50,ws:30,sse:20 \
         --act-after 20 --json",
        s.base
    ));
    for run in [&mut ws, &mut sse, &mut mix] {
        run.wait_for("connected 100").await;
    }
    let (st, published) = run_json(&format!(
        "publish --server {} --token {TOKEN} --match {id} --rate 200 --duration 0.15 --json",
        s.base
    ))
    .await;
    assert!(st.success(), "{published}");
    let (st, published) = run_json(&format!(
        "publish --server {} --token {TOKEN} --match {id} --burst 30 --stop --json",
        s.base
    ))
    .await;
    assert!(st.success(), "{published}");
    assert_eq!(published["stop_seq"], 62, "{published}");

    for (run, protocol) in [(ws, "ws"), (sse, "sse")] {
        let (status, summary, stderr) = run.finish().await;
        assert!(status.success(), "{protocol}: {summary:#}\n{stderr}");
        assert_all_complete(&summary, 100, 100 * 61);
        assert_eq!(summary["protocol"], protocol);
        assert_eq!(summary["latency_ms"]["count"], 100 * 61, "{summary:#}");
        let only = &summary["protocols"][protocol];
        assert_eq!(
            (&only["viewers"], &only["complete"]),
            (&json!(100), &json!(100)),
            "{summary:#}"
        );
        assert_eq!(summary["protocols"].as_object().unwrap().len(), 1, "{summary:#}");
    }
    let (status, summary, stderr) = mix.finish().await;
    assert!(status.success(), "{summary:#}\n{stderr}");
    assert_eq!(summary["protocol"], "v2:50,ws:30,sse:20");
    assert_eq!(summary["complete"], 100, "{summary:#}");
    assert_eq!(summary["connects"], 120, "each reconnecting viewer came back once: {summary:#}");
    let mut deliveries = 0;
    for (protocol, n) in [("v2", 50), ("ws", 30), ("sse", 20)] {
        let p = &summary["protocols"][protocol];
        assert_eq!(
            (&p["viewers"], &p["complete"], &p["failed"]),
            (&json!(n), &json!(n), &json!(0)),
            "{protocol}"
        );
        assert!(p["latency_ms"]["count"].as_u64().unwrap() > 0, "{protocol}: {summary:#}");
        deliveries += p["deliveries"].as_u64().unwrap();
    }
    assert_eq!((summary["deliveries"].as_u64(), deliveries), (Some(100 * 61), 100 * 61));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_viewers_of_every_protocol_get_every_event_from_a_tls_node() {
    let pki = crate::tls::Pki::new();
    let s = crate::tls::tls_node(&pki, |_| {}).await;
    let id = s.started_match().await;
    let ca = pki.ca_path().display().to_string();
    // The viewer ports through /1/checkin (over https), the HTTP port for ws and sse: all TLS.
    let mut sim = SimRun::spawn(&format!(
        "--server {} --ca-cert {ca} --match {id} -n 100 --workers 2 --mix tcp:40,ws:30,sse:30 --json",
        s.base
    ));
    sim.wait_for("connected 100").await;
    let (st, published) = run_json(&format!(
        "publish --server {} --ca-cert {ca} --token {TOKEN} --match {id} --burst 40 --stop --json",
        s.base
    ))
    .await;
    assert!(st.success(), "{published}");
    assert_eq!(published["stop_seq"], 42, "{published}");
    let (status, summary, stderr) = sim.finish().await;
    assert!(status.success(), "{summary:#}\n{stderr}");
    assert_all_complete(&summary, 100, 100 * 41);
    for (protocol, n) in [("v2", 40), ("ws", 30), ("sse", 30)] {
        let p = &summary["protocols"][protocol];
        assert_eq!((&p["viewers"], &p["complete"]), (&json!(n), &json!(n)), "{summary:#}");
        assert_eq!(p["deliveries"], n * 41, "{protocol}: {summary:#}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_match_fails_every_viewer_with_its_cause() {
    let s = TestServer::start().await;
    // The benchmark watcher creates and starts the match itself.
    let id = "abc-xyz-2024-05-01";
    let (st, created) = run_json(&format!(
        "publish --server {} --token {} --match {} --create --start --burst 1 --json",
        s.base, TOKEN, id
    ))
    .await;
    assert!(st.success(), "{created}");
    assert_eq!(
        (created["created"].as_bool(), created["started"].as_bool()),
        (Some(true), Some(true))
    );
    let mut sim = SimRun::spawn(&format!("--server {} --match {} -n 50 --json", s.base, id));
    sim.wait_for("connected 50").await;
    s.publish(id, "comment", json!({"text": "about to be cancelled"})).await;
    let (st, _) = s.send(reqwest::Method::DELETE, &format!("/1/match/{id}"), None).await;
    assert_eq!(st, reqwest::StatusCode::NO_CONTENT);

    let (status, summary, stderr) = sim.finish().await;
    assert!(!status.success(), "a failed viewer fails the run");
    assert!(stderr.contains("matchstream: 50 of 50 viewers failed"), "{stderr}");
    assert_eq!(summary["complete"], 0);
    assert_eq!(summary["failed"], 50);
    assert_eq!(summary["failures"]["cancelled"], 50, "{summary:#}");
    assert_eq!(summary["deliveries"], 50, "the comment got through first");
    let sample = summary["failure_samples"][0].as_str().unwrap();
    assert!(sample.contains("cancelled: bye cancelled"), "{sample}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mix_of_paths_with_reconnects_completes_without_gap_or_duplicate() {
    let s = TestServer::start_with(|c| c.ring_events = 16).await;
    let id = s.started_match().await;
    let mut sim = SimRun::spawn(&format!(
        "--server {} --match {id} -n 200 --workers 2 -c 40 \
         --mix watch=40,late=10,leave=20,reconnect=20,slow=10 --late-within 0.2 --act-after 20 \
         --json",
        s.base
    ));
    sim.wait_for("connected 200").await;
    // Batches with pauses, so that viewers leave and come back while the match goes on.
    for _ in 0..12 {
        let batch: Vec<Value> =
            (0..5).map(|_| json!({"kind": "corner", "data": {"team": "elp"}})).collect();
        let (st, b) = s.post_events(&id, Value::Array(batch)).await;
        assert_eq!(st, reqwest::StatusCode::CREATED, "{b}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s.publish(&id, "stop", json!({})).await;
    let (status, summary, stderr) = sim.finish().await;
    assert!(status.success(), "{summary:#}\n{stderr}");
    assert_eq!(summary["complete"], 200, "{summary:#}");
    for (path, n) in [("watch", 80), ("late", 20), ("leave", 40), ("reconnect", 40), ("slow", 20)] {
        assert_eq!(summary["paths"][path]["viewers"], n, "{path}");
        assert_eq!(summary["paths"][path]["complete"], n, "{path}");
    }
    // Every reconnecting viewer acted within the 61 events: one more connect each.
    assert_eq!(summary["connects"], 240, "{summary:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_viewers_come_back_when_their_node_restarts_and_miss_nothing() {
    // The node goes away with `bye shutdown` and comes back on the same store and HTTP port;
    // the first URL of the list is a node that is gone (its port refuses).
    let s = TestServer::start_with(|c| c.retry_after_ms = 50).await;
    let id = s.started_match().await;
    let http = s.node.as_ref().expect("node").http_addr;
    let dead = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).unwrap();
    let mut sim = SimRun::spawn(&format!(
        "--server http://{dead},{} --match {id} -n 40 --workers 2 -c 20 --resume --json",
        s.base
    ));
    sim.wait_for("connected 40").await;
    let corners = || Value::Array(vec![json!({"kind": "corner", "data": {"team": "elp"}}); 5]);
    let (st, b) = s.post_events(&id, corners()).await;
    assert_eq!(st, reqwest::StatusCode::CREATED, "{b}");
    let dir = s.stop().await;
    let s = TestServer::start_in(dir, |c| c.http = http).await;
    let (st, b) = s.post_events(&id, corners()).await;
    assert_eq!(st, reqwest::StatusCode::CREATED, "{b}");
    s.publish(&id, "stop", json!({})).await;
    let (status, summary, stderr) = sim.finish().await;
    assert!(status.success(), "{summary:#}\n{stderr}");
    // Every event after the snapshot exactly once (the checker fails a viewer on a gap or a
    // duplicate): 5 corners before the restart, 5 after, and the stop.
    assert_eq!(summary["complete"], 40, "{summary:#}");
    assert_eq!(summary["deliveries"], 40 * 11, "{summary:#}");
    assert_eq!(summary["resumes"], 40, "{summary:#}");
    assert_eq!(summary["resumed_viewers"], 40, "{summary:#}");
    assert_eq!(summary["connects"], 80, "{summary:#}");
    let (first, last) = (&summary["drop_first_ms"], &summary["resume_last_ms"]);
    assert!(first.as_i64().unwrap() <= last.as_i64().unwrap(), "{summary:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_viewers_stay_until_released_and_a_duration_limit_bounds_a_run() {
    let s = TestServer::start().await;
    let id = s.started_match().await;
    let mut sim = SimRun::spawn(&format!(
        "--server {} --match {id} -n 300 --workers 3 --hold --json",
        s.base
    ));
    sim.wait_for("connected 300").await;
    let (_, m) = s.get(&format!("/1/match/{id}")).await;
    assert_eq!(m["period"], "first", "holding viewers do not end the match");
    sim.release();
    let (status, summary, stderr) = sim.finish().await;
    assert!(status.success(), "{summary:#}\n{stderr}");
    assert_eq!(summary["hold"], true);
    assert_eq!(summary["stopped"], true);
    assert_all_complete(&summary, 300, 0);
    assert!(stderr.contains("\"all_connected\":true") || stderr.contains("connected 300"));

    // Without --hold, viewers still watching at the limit are incomplete, and the run ends.
    let started = std::time::Instant::now();
    let sim = SimRun::spawn(&format!(
        "--server {} --match {id} -n 20 --duration-limit 0.5 --json",
        s.base
    ));
    let (status, summary, _) = sim.finish().await;
    assert!(!status.success());
    assert!(started.elapsed() < Duration::from_secs(20), "{:?}", started.elapsed());
    assert_eq!(summary["failures"]["incomplete"], 20, "{summary:#}");
    assert_eq!(summary["stopped"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sim_http_reads_the_api_on_kept_alive_and_new_connections() {
    let s = TestServer::start().await;
    let id = s.started_match().await;
    let (st, summary) =
        run_json(&format!("http --server {} -n 500 -c 16 --match {} --json", s.base, id)).await;
    assert!(st.success(), "{summary:#}");
    assert_eq!(summary["requests"], 500);
    assert_eq!(summary["ok"], 500);
    assert_eq!(summary["status"], json!({"200": 500}));
    assert_eq!(summary["latency_ms"]["count"], 500);
    assert_eq!(summary["paths"], json!(["checkin", "matches", "match", "history"]));
    let (st, summary) = run_json(&format!(
        "http --server {} -n 100 -c 4 --paths checkin,history --new-connection --json",
        s.base
    ))
    .await;
    assert!(st.success(), "{summary:#}");
    assert_eq!(summary["status"], json!({"200": 100}));
    // An unknown match is a failure the exit code reports.
    let (st, summary) = run_json(&format!(
        "http --server {} -n 10 --paths match --match no-such-2020-01-01 --json",
        s.base
    ))
    .await;
    assert!(!st.success());
    assert_eq!(summary["status"], json!({"404": 10}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_subscribers_are_measured_by_the_same_engine() {
    let redis = RedisServer::start().await;
    let mut sim = SimRun::spawn(&format!(
        "redis --redis {} --channel bench -n 200 --workers 2 --json",
        redis.addr
    ));
    sim.wait_for("connected 200").await;
    let (st, published) = run_json(&format!(
        "redis-publish --redis {} --channel bench --burst 50 --payload 200 --json",
        redis.addr
    ))
    .await;
    assert!(st.success(), "{published}");
    assert_eq!(published["published"], 50);
    assert_eq!(published["receivers_min"], 200);
    assert_eq!(published["in_flight"], 0, "one pipeline");
    let (status, summary, stderr) = sim.finish().await;
    assert!(status.success(), "{summary:#}\n{stderr}");
    assert_all_complete(&summary, 200, 200 * 50);
    assert_eq!(summary["system"], "redis");
    assert_eq!(summary["latency_ms"]["count"], 200 * 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_messages_sent_open_and_closed_loop_arrive_gapless() {
    let redis = RedisServer::start().await;
    for in_flight in [64, 1] {
        let mut sim = SimRun::spawn(&format!(
            "redis --redis redis://{}/ --channel ch{in_flight} -n 100 --json",
            redis.addr
        ));
        sim.wait_for("connected 100").await;
        let (st, published) = run_json(&format!(
            "redis-publish --redis {} --channel ch{in_flight} --rate 400 --duration 0.2 \
             --in-flight {in_flight} --json",
            redis.addr
        ))
        .await;
        assert!(st.success(), "{published}");
        assert_eq!(published["published"], 80);
        assert_eq!(published["in_flight"], in_flight);
        assert_eq!(
            (&published["receivers_min"], &published["receivers_max"]),
            (&json!(100), &json!(100))
        );
        assert_eq!(published["reply_ms"]["count"], 80);
        let (status, summary, stderr) = sim.finish().await;
        assert!(status.success(), "{summary:#}\n{stderr}");
        assert_all_complete(&summary, 100, 100 * 80);
    }
}

/// SPEC 7: a viewer told `full` with `try` connects there, in every run (no `--resume`). All
/// given one viewer port of node a (20 places, 10 a port), v1, v2 and WebSocket viewers are
/// told `full` past a's places and go where it says (a's other port, then node b): all 60
/// complete, none refused for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_told_full_go_where_try_says_in_every_run() {
    let redis = RedisServer::start().await;
    let url = redis.url();
    let a = TestServer::start_with(|c| {
        c.redis = Some(url.clone());
        c.max_viewers = 20;
    })
    .await;
    let b = TestServer::start_with(|c| c.redis = Some(url.clone())).await;
    let id = a.started_match().await;
    // Node a knows b's ports (and b the match) before the crowd comes.
    let ops_url = format!("{}/ops.json", a.admin);
    eventually("node a knows node b", PATIENCE, async || {
        let ops: Value = reqwest::get(&ops_url).await.ok()?.json().await.ok()?;
        (ops["nodes"].as_array()?.len() == 1).then_some(())
    })
    .await;
    eventually("node b knows the match", PATIENCE, async || {
        (b.get(&format!("/1/match/{id}")).await.1["seq"] == 1).then_some(())
    })
    .await;
    let mut sim = SimRun::spawn(&format!(
        "--server {} --viewers {} --match {id} -n 60 -c 60 --mix v1:30,v2:40,ws:30 --json",
        a.base,
        a.viewer()
    ));
    sim.wait_for("connected 60").await;
    a.publish(&id, "stop", json!({})).await;
    let (status, summary, stderr) = sim.finish().await;
    assert!(status.success(), "{summary:#}\n{stderr}");
    assert_eq!(summary["complete"], 60, "{summary:#}");
    assert_eq!(summary["failed"], 0, "{summary:#}");
    // More connections than viewers: the ones told `full` connected again elsewhere.
    assert!(summary["connects"].as_u64().unwrap() > 60, "{summary:#}");
}
