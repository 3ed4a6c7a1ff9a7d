//! Durability: an acknowledged event survives `kill -9` of the node right after its `201`, and
//! every `201` leaves only after the store's log was fsync'd (which `kill -9` alone cannot show:
//! the page cache outlives the process, so that test would pass with `synchronous=OFF`).

use std::io::BufRead;
use std::process::{Command, Stdio};

use serde_json::json;

use crate::support::*;

/// What the node's threads did, as `strace -f -y` printed it, reduced to what durability needs.
#[derive(Debug, PartialEq)]
enum Syscall {
    /// A write to the SQLite write-ahead log began.
    LogWrite,
    /// An fsync/fdatasync of the write-ahead log returned.
    LogSynced,
    /// A `201` response began to leave.
    Created,
}

/// Reads an strace log: entry lines for writes, completion lines for syncs (a sync that strace
/// split into `<unfinished ...>` and `<... resumed>` completes at the resumed line).
fn syscalls(log: &str) -> Vec<Syscall> {
    let mut out = Vec::new();
    let mut syncing = std::collections::HashSet::new();
    for line in log.lines() {
        let pid = line.split_whitespace().next().unwrap_or("");
        let is_sync = line.contains("fsync(") || line.contains("fdatasync(");
        if line.contains("\"HTTP/1.1 201") {
            out.push(Syscall::Created);
        } else if is_sync && line.contains("-wal>") {
            if line.contains("<unfinished ...>") {
                syncing.insert(pid.to_owned());
            } else if line.contains(" = 0") {
                out.push(Syscall::LogSynced);
            }
        } else if line.contains("sync resumed>") && syncing.remove(pid) {
            if line.contains(" = 0") {
                out.push(Syscall::LogSynced);
            }
        } else if line.contains("-wal>") && line.contains("write") && !line.contains("resumed>") {
            out.push(Syscall::LogWrite);
        }
    }
    out
}

#[tokio::test]
async fn every_201_leaves_after_the_log_is_fsynced() {
    let dir = tempfile::tempdir().unwrap();
    let trace_dir = tempfile::tempdir().unwrap();
    let trace = trace_dir.path().join("strace.txt");
    let mut node = NodeProcess::start(dir.path());
    let pid = node.child.id();
    let mut strace = Command::new("strace")
        .args(["-f", "-y", "-s", "48", "-e"])
        .arg("trace=write,writev,pwrite64,pwritev,pwritev2,fsync,fdatasync,sendto,sendmsg")
        .arg("-o")
        .arg(&trace)
        .arg("-p")
        .arg(pid.to_string())
        .stderr(Stdio::piped())
        .spawn()
        .expect("strace runs (scripts/test installs it)");
    // strace reports "Process N attached with M threads" once it traces them all.
    let mut lines = std::io::BufReader::new(strace.stderr.take().unwrap()).lines();
    let first = lines.next().expect("strace reports").unwrap();
    assert!(first.contains("attached"), "strace cannot trace the node here: {first}");
    std::thread::spawn(move || for _ in lines {});
    // One request at a time, so no other append's log writes can fall between a commit and its
    // 201 (with concurrent requests the next batch's writes rightly may).
    let watcher = matchstream_client::Watcher::new(&node.base, TOKEN).unwrap();
    let body = json!({"home":"elp","visit":"tig","start_date":"2011-09-10"});
    let created = watcher.send(reqwest::Method::POST, "/1/matches", Some(&body)).await.unwrap();
    assert_eq!(created.status, 201);
    let path = "/1/match/elp-tig-2011-09-10/events";
    let start = json!({"kind":"start","data": start_data()});
    assert_eq!(watcher.send(reqwest::Method::POST, path, Some(&start)).await.unwrap().status, 201);
    for _ in 0..10 {
        let goal = json!({"kind":"goal","data":{"team":"tig"}});
        assert_eq!(
            watcher.send(reqwest::Method::POST, path, Some(&goal)).await.unwrap().status,
            201
        );
    }
    // SIGINT detaches strace and flushes its log; then the node goes.
    // SAFETY: a signal to a process this test started and has not reaped.
    unsafe { libc::kill(strace.id() as i32, libc::SIGINT) };
    strace.wait().unwrap();
    node.kill9();

    let calls = syscalls(&std::fs::read_to_string(&trace).unwrap());
    let created = calls.iter().filter(|c| **c == Syscall::Created).count();
    assert_eq!(created, 12, "every 201 is in the trace: {calls:?}");
    let (mut written, mut synced) = (false, false);
    for (i, call) in calls.iter().enumerate() {
        match call {
            Syscall::LogWrite => (written, synced) = (true, false),
            Syscall::LogSynced => synced = true,
            Syscall::Created => assert!(
                written && synced,
                "201 number {i} left before the log writes before it were fsync'd: {calls:?}"
            ),
        }
    }
}

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
