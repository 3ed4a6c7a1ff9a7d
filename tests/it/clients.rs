//! What the people who build on MatchStream use (SPEC 12), run for real: the JavaScript client
//! library in Node (`node`, as `scripts/test` installs it) against a real node over SSE and
//! WebSocket, through a restart of the node; and the curl/nc walk-through of
//! `examples/walkthrough.md`, its commands run as written. The library in a browser is in
//! `browser/library.rs`; its unit tests (`node --test`) and types (`tsc`) run in `scripts/test`.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

use crate::support::*;

fn repository() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `node`, with the flag that gives Node 20 its (experimental) global WebSocket where the
/// runtime does not have one by default.
async fn node() -> Command {
    let probe =
        Command::new("node").args(["-p", "typeof WebSocket"]).output().await.unwrap_or_else(|e| {
            panic!("cannot run node ({e}); scripts/test installs it (Debian: nodejs)")
        });
    let mut command = Command::new("node");
    if String::from_utf8_lossy(&probe.stdout).trim() != "function" {
        command.arg("--experimental-websocket");
    }
    command
}

/// `clients/js/test/e2e/follow.mjs` following match `id` on `server` over `transport`: what
/// each of the library's handlers gets, one line each.
struct Follower {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    /// Every line so far, as `[what, value]`.
    seen: Vec<(String, Value)>,
}

impl Follower {
    async fn start(server: &str, id: &str, transport: &str) -> Follower {
        let script: PathBuf = repository().join("clients/js/test/e2e/follow.mjs");
        let mut child = node()
            .await
            .arg(script)
            .args([server, id, transport])
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("node follow.mjs");
        let stdout = child.stdout.take().expect("stdout");
        Follower { child, lines: BufReader::new(stdout).lines(), seen: Vec::new() }
    }

    /// Reads lines until one passes `want`; fails with everything seen otherwise.
    async fn until(&mut self, what: &str, want: impl Fn(&str, &Value) -> bool) {
        loop {
            let line = tokio::time::timeout(PATIENCE, self.lines.next_line()).await;
            let line = match line {
                Ok(Ok(Some(line))) => line,
                other => panic!("{what}: not seen ({other:?}); seen:\n{:#?}", self.seen),
            };
            let parsed: Value =
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
            let entry = (parsed[0].as_str().unwrap_or("").to_owned(), parsed[1].clone());
            let done = want(&entry.0, &entry.1);
            self.seen.push(entry);
            if done {
                return;
            }
        }
    }

    /// Waits for the script to end by itself (the watch ended) and reads what is left.
    async fn ended(&mut self) {
        self.until("the watch ends", |what, v| what == "state" && v["state"] == "ended").await;
        let status = tokio::time::timeout(PATIENCE, self.child.wait()).await;
        assert!(matches!(status, Ok(Ok(s)) if s.success()), "node exits 0: {status:?}");
    }

    fn of(&self, kind: &str) -> Vec<&Value> {
        self.seen.iter().filter(|(what, _)| what == kind).map(|(_, v)| v).collect()
    }
}

/// The library in Node follows a match through a restart of its node: the snapshot, every
/// event once and in order (one published while the node was away), the `bye shutdown` it came
/// back from, and `match_over` at the end, which ends it.
async fn node_follows_a_match_through_a_restart(transport: &str) {
    let s = TestServer::start_with(|c| c.retry_after_ms = 50).await;
    let id = s.started_match().await;
    s.publish(&id, "corner", json!({"team": "elp"})).await;
    let mut f = Follower::start(&s.base, &id, transport).await;
    f.until("the snapshot", |what, v| what == "status" && v["seq"] == 2).await;
    s.publish(&id, "goal", json!({"team": "tig", "player": 7})).await;
    f.until("the live goal", |what, v| what == "event" && v["seq"] == 3).await;

    let http = s.node.as_ref().expect("node").http_addr;
    let dir = s.stop().await;
    f.until("the node's goodbye", |what, v| what == "bye" && v["reason"] == "shutdown").await;
    let s = TestServer::start_in(dir, |c| {
        c.http = http;
        c.retry_after_ms = 50;
    })
    .await;
    s.publish(&id, "card", json!({"team": "tig", "player": 10, "card": "yellow"})).await;
    f.until("back, with what it missed", |what, v| what == "event" && v["seq"] == 4).await;
    s.publish(&id, "stop", json!({})).await;
    f.ended().await;

    let seqs: Vec<u64> = f.of("event").iter().map(|e| e["seq"].as_u64().expect("seq")).collect();
    assert_eq!(seqs, [3, 4, 5], "every event once, in order");
    let kinds: Vec<&str> = f.of("event").iter().map(|e| e["kind"].as_str().unwrap_or("")).collect();
    assert_eq!(kinds, ["goal", "card", "stop"]);
    assert_eq!(
        f.of("event")[0]["data"],
        json!({"team": "tig", "player": {"number": 7, "name": "Luna"}})
    );
    let status = f.of("status");
    assert_eq!(status.len(), 1, "one snapshot: the resume needed none");
    assert_eq!(status[0]["data"]["home-score"], 0);
    let byes: Vec<&str> = f.of("bye").iter().map(|b| b["reason"].as_str().unwrap_or("")).collect();
    assert_eq!(byes, ["shutdown", "match_over"]);
    let last = f.of("state").last().cloned().cloned().expect("a state");
    assert_eq!(last["connects"], 2, "{last}");
    assert!(f.of("state").iter().all(|st| st["transport"] == transport), "{:#?}", f.seen);
}

#[tokio::test]
async fn the_library_in_node_follows_a_match_over_sse_through_a_restart() {
    node_follows_a_match_through_a_restart("sse").await;
}

#[tokio::test]
async fn the_library_in_node_follows_a_match_over_websocket_through_a_restart() {
    node_follows_a_match_through_a_restart("ws").await;
}

/// An unknown match: the node's 404 (before any upgrade or stream) ends the watch with a
/// `not_found` bye, over either transport.
#[tokio::test]
async fn the_library_in_node_stops_on_an_unknown_match() {
    let s = TestServer::start().await;
    for transport in ["sse", "ws"] {
        let mut f = Follower::start(&s.base, "nob-ody-2011-09-10", transport).await;
        f.ended().await;
        assert_eq!(f.of("bye"), [&json!({"kind": "bye", "reason": "not_found"})], "{transport}");
        assert!(f.of("event").is_empty() && f.of("status").is_empty(), "{transport}");
    }
}

/// The `sh` blocks of `examples/walkthrough.md`, each with the `text` block after it (the
/// output it shows), if any.
fn walkthrough_steps(markdown: &str) -> Vec<(String, Option<String>)> {
    let mut steps: Vec<(String, Option<String>)> = Vec::new();
    let mut block: Option<(String, String)> = None; // (fence info, lines)
    for line in markdown.lines() {
        match (&mut block, line.strip_prefix("```")) {
            (None, Some(info)) => block = Some((info.trim().to_owned(), String::new())),
            (Some(_), Some("")) => {
                let (info, body) = block.take().expect("a block");
                match info.as_str() {
                    "sh" => steps.push((body, None)),
                    "text" => {
                        let last = steps.last_mut().expect("a text block follows an sh block");
                        assert!(last.1.is_none(), "one text block per sh block");
                        last.1 = Some(body);
                    }
                    _ => {} // `console`: for the reader only (starting a node)
                }
            }
            (Some((_, body)), _) => {
                body.push_str(line);
                body.push('\n');
            }
            (None, None) => {}
        }
    }
    assert!(block.is_none(), "an unclosed block");
    steps
}

/// Unix-ms times differ from run to run: `<ms>` in their place.
fn mask_ms(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut digits = String::new();
    for ch in text.chars().chain(std::iter::once(' ')) {
        if ch.is_ascii_digit() {
            digits.push(ch);
            continue;
        }
        out.push_str(if digits.len() == 13 { "<ms>" } else { &digits });
        digits.clear();
        out.push(ch);
    }
    out.pop();
    out
}

/// `examples/walkthrough.md` run as written: its `sh` blocks in order in one bash, in a temp
/// dir, with `NODE`, `TCP_HOST`, `TCP_PORT` and `TOKEN` naming a fresh node, and each block's
/// output what the walk-through shows under it.
#[tokio::test]
async fn the_curl_and_nc_walkthrough_runs_as_written() {
    let markdown = std::fs::read_to_string(repository().join("examples/walkthrough.md"))
        .expect("examples/walkthrough.md");
    let steps = walkthrough_steps(&markdown);
    assert!(steps.len() >= 6, "{steps:#?}");
    let s = TestServer::start().await;
    let marker = "--- end of a walk-through step ---";
    let script: String =
        steps.iter().map(|(commands, _)| format!("{commands}echo '{marker}'\n")).collect();
    let dir = tempfile::tempdir().expect("a temp dir");
    let run = Command::new("bash")
        .args(["-u", "-c", &script])
        .current_dir(dir.path())
        .env("NODE", &s.base)
        .env("TCP_HOST", s.viewer().ip().to_string())
        .env("TCP_PORT", s.viewer().port().to_string())
        .env("TOKEN", TOKEN)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(PATIENCE, run).await.expect("in time").expect("bash");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let outputs: Vec<&str> = stdout.split(&format!("{marker}\n")).collect();
    assert_eq!(outputs.len(), steps.len() + 1, "every step ran: {stdout}");
    // Every step that differs, with what it printed: what the walk-through should show.
    let mut differ = Vec::new();
    for ((commands, shown), got) in steps.iter().zip(&outputs) {
        if mask_ms(got) != mask_ms(shown.as_deref().unwrap_or("")) {
            differ.push(format!("{commands}printed:\n{got}"));
        }
    }
    assert!(differ.is_empty(), "steps print otherwise:\n\n{}", differ.join("\n\n"));
}

/// A full node's `try`, followed for real: node a (one place, taken) says `bye full` naming
/// node b's HTTP port; the library in Node goes there and follows the match on b, every event
/// once, over WebSocket and over SSE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_library_in_node_follows_a_full_nodes_try_to_another_node() {
    let redis = crate::redis::RedisServer::start().await;
    let a = TestServer::start_with(|c| {
        c.redis = Some(redis.url());
        c.max_viewers = 1;
    })
    .await;
    let b = TestServer::start_with(|c| c.redis = Some(redis.url())).await;
    let ops_url = format!("{}/ops.json", a.admin);
    eventually("node a knows node b", PATIENCE, async || {
        let ops: Value = reqwest::get(&ops_url).await.ok()?.json().await.ok()?;
        (!ops["nodes"].as_array()?.is_empty()).then_some(())
    })
    .await;
    let id = a.started_match().await;
    eventually("node b knows the match", PATIENCE, async || {
        let (_, m) = b.get(&format!("/1/match/{id}")).await;
        (m["seq"] == 1).then_some(())
    })
    .await;
    // a's one place, taken.
    let mut holder = Viewer::connect(a.viewer(), &format!("VERSION:2:CONNECT:h:MATCH:{id}")).await;
    assert_eq!(holder.frame().await.expect("a snapshot")["kind"], "status");

    for (transport, seq) in [("ws", 2), ("sse", 4)] {
        let mut f = Follower::start(&a.base, &id, transport).await;
        f.until("sent to b", |what, v| what == "status" && v["seq"] == seq - 1).await;
        let bye = f.of("bye");
        assert_eq!(bye, [&json!({"kind": "bye", "reason": "full", "try": b.http_host()})]);
        a.publish(&id, "corner", json!({"team": "elp"})).await;
        f.until("the event, through b", |what, v| what == "event" && v["seq"] == seq).await;
        a.publish(&id, "shot", json!({"team": "tig", "player": 7})).await;
        f.until("the next", |what, v| what == "event" && v["seq"] == seq + 1).await;
        let last = f.of("state").last().cloned().cloned().expect("a state");
        assert_eq!(last["host"], b.http_host().as_str(), "{transport}: {last}");
        assert_eq!(last["state"], "live", "{transport}: {last}");
        let seqs: Vec<u64> =
            f.of("event").iter().map(|e| e["seq"].as_u64().expect("seq")).collect();
        assert_eq!(seqs, [seq, seq + 1], "{transport}");
    }
}
