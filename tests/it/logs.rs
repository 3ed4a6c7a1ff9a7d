//! `--log-format json` (SPEC 11) as a log collector reads it: every line a node writes to stderr
//! through a whole life (start on a Redis with a password, a replay, viewers over TCP,
//! WebSocket and SSE, a refused publisher, a stop) is one JSON object with `timestamp`,
//! `level`, `target` and `message` at the top level and the event's fields beside them; no line
//! holds the watcher token or the Redis password. What stops the program is such a line too.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;

use matchstream_client::{SseViewer, Watcher, WsViewer};
use serde_json::Value;

use crate::redis::RedisServer;
use crate::support::*;

const BIN: &str = env!("CARGO_BIN_EXE_matchstream");
/// Secrets that no log line may hold.
const WATCHER_TOKEN: &str = "tok-3f9a1c77e2b4d8";
const REDIS_PASSWORD: &str = "pw-81c4d0e5a9f2c3";
const MATCH: &str = "elp-tig-2011-09-10";

/// One line of stderr as a collector would take it: a JSON object with the four keys as
/// strings at its top level, and nothing nested under `fields`.
fn parse(line: &str) -> Value {
    let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    for key in ["timestamp", "level", "target", "message"] {
        assert!(v[key].is_string(), "no {key} string at the top level: {line}");
    }
    assert!(v.get("fields").is_none(), "the event's fields are nested, not flattened: {line}");
    v
}

/// The lines of a child's stderr, as they come, on a channel (read by a thread of their own,
/// so that the child never blocks on a full pipe).
fn lines_of(stderr: std::process::ChildStderr) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

#[tokio::test]
async fn json_logs_are_one_object_per_line_through_a_nodes_life_and_hold_no_secret() {
    let redis = RedisServer::start_with_password(REDIS_PASSWORD).await;
    let dir = tempfile::tempdir().unwrap();
    // The format on `serve`, the token in its variable, per-connection lines (debug) included.
    let mut node = Command::new(BIN)
        .args(["serve", "--log-format", "json", "--http", "127.0.0.1:0"])
        .args(["--viewers", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--drain-window", "100ms"])
        .arg("--redis")
        .arg(format!("redis://:{REDIS_PASSWORD}@{}", redis.addr))
        .arg("--data")
        .arg(dir.path())
        .env("MATCHSTREAM_WATCHER_TOKEN", WATCHER_TOKEN)
        .env("RUST_LOG", "debug")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn matchstream serve");
    let lines = lines_of(node.stderr.take().expect("stderr"));
    let mut log = Vec::new();
    let (mut base, mut viewer_port) = (None, None);
    while base.is_none() {
        let line = lines.recv_timeout(PATIENCE).unwrap_or_else(|_| {
            let _ = node.kill();
            panic!("the node did not say it was ready:\n{}", log.join("\n"))
        });
        let v = parse(&line);
        let addr = v["addr"].as_str().map(str::to_owned);
        match v["message"].as_str().unwrap_or_default() {
            "http listener ready" => base = addr.map(|a| format!("http://{a}")),
            "viewer listener ready" => viewer_port = addr,
            _ => {}
        }
        log.push(line);
    }
    let base = base.unwrap();
    let http_host = base.trim_start_matches("http://").to_owned();
    let viewer: std::net::SocketAddr = viewer_port.expect("a viewer port").parse().unwrap();

    // A publisher with a wrong token is refused (and the right token never shows).
    let wrong = Watcher::new(&base, "not-the-token").unwrap();
    let body = serde_json::json!({"home": "elp", "visit": "tig", "start_date": "2011-09-10"});
    let refused = wrong.send(reqwest::Method::POST, "/1/matches", Some(&body)).await.unwrap();
    assert_eq!(refused.status, 401);

    // The replay (the format given before the subcommand, in its variable's spelling).
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/matches/elp-tig-2011-09-10.config");
    let replay = Command::new(BIN)
        .args(["replay", file, "--server", &base, "--speed", "50"])
        .env("MATCHSTREAM_LOG_FORMAT", "json")
        .env("MATCHSTREAM_WATCHER_TOKEN", WATCHER_TOKEN)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn matchstream replay");
    let reader = Watcher::new(&base, "").unwrap();
    eventually("the replay created the match", PATIENCE, async || {
        let answer = reader.get(&format!("/1/match/{MATCH}")).await.ok()?;
        (answer.status == 200).then_some(())
    })
    .await;
    // Viewers of each transport follow it from its first event to its end.
    let connect = format!("VERSION:2:CONNECT:me:MATCH:{MATCH}:FROM:0");
    let mut tcp = Viewer::connect(viewer, &connect).await;
    let mut ws = WsViewer::watch(&http_host, MATCH, Some(0)).await.expect("a WebSocket viewer");
    let mut sse = SseViewer::watch(&http_host, MATCH, Some(0)).await.expect("an SSE viewer");
    let (tcp_seqs, bye) = collect_v2(&mut tcp).await;
    assert_eq!(bye["reason"], "match_over", "{bye}");
    let ws_seqs = tokio::time::timeout(PATIENCE, ws.collect_v2()).await.unwrap().unwrap().0;
    let sse_seqs = tokio::time::timeout(PATIENCE, sse.collect_v2()).await.unwrap().unwrap().0;
    assert!(!tcp_seqs.is_empty());
    assert_eq!(ws_seqs, tcp_seqs);
    assert_eq!(sse_seqs, tcp_seqs);
    let replay = tokio::task::spawn_blocking(move || replay.wait_with_output()).await.unwrap();
    let replay = replay.expect("the replay ends");
    assert!(replay.status.success(), "{}", String::from_utf8_lossy(&replay.stderr));
    let replay_log = String::from_utf8_lossy(&replay.stderr).into_owned();

    // A stop, as systemd asks for it.
    // SAFETY: a signal to a child process this test started and has not reaped.
    unsafe { libc::kill(node.id() as libc::pid_t, libc::SIGTERM) };
    let status = tokio::task::spawn_blocking(move || node.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status:?}");
    // The reader thread ends with the pipe: every line the node wrote is in.
    log.extend(lines.iter());

    let every_line: Vec<&str> = log.iter().map(String::as_str).chain(replay_log.lines()).collect();
    let objects: Vec<Value> = every_line.iter().map(|l| parse(l)).collect();
    let all = every_line.join("\n");
    assert!(!all.contains(WATCHER_TOKEN), "the watcher token in a log line:\n{all}");
    assert!(!all.contains(REDIS_PASSWORD), "the Redis password in a log line:\n{all}");
    let messages: Vec<&str> = objects.iter().filter_map(|v| v["message"].as_str()).collect();
    for expected in ["node ready", "stopping", "stopped"] {
        assert!(messages.contains(&expected), "no {expected:?} line:\n{all}");
    }
    // Per-connection lines (debug) were there too, and an event's fields sit beside its message.
    assert!(objects.iter().any(|v| v["level"] == "DEBUG"), "no debug line:\n{all}");
    let ready = objects.iter().find(|v| v["message"] == "http listener ready").unwrap();
    assert_eq!(ready["addr"], http_host.as_str());
    assert_eq!(ready["level"], "INFO");
    assert_eq!(ready["target"], "matchstream::server");
}

/// A value out of range stops `serve` with status 2, and with JSON logs the reason is a JSON
/// line like every other (a collector sees why the service did not start).
#[test]
fn a_node_that_cannot_start_says_why_in_a_json_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["--log-format", "json", "serve", "--http", "127.0.0.1:0"])
        .args(["--viewers", "127.0.0.1:0", "--keepalive", "20s", "--data"])
        .arg(dir.path())
        .output()
        .expect("run serve");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let objects: Vec<Value> = stderr.lines().map(parse).collect();
    let last = objects.last().expect("a line");
    assert_eq!(last["level"], "ERROR", "{stderr}");
    let message = last["message"].as_str().unwrap();
    assert!(message.contains("--keepalive must be between 10ms and 15s"), "{stderr}");
}
