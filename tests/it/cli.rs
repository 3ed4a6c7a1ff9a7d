//! The command line as a user runs it: `replay` of both file formats into a node, and `demo`.

use std::process::Command;

use crate::support::*;

const BIN: &str = env!("CARGO_BIN_EXE_matchstream");

fn bundled_path() -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/matches/elp-tig-2011-09-10.config").to_owned()
}

#[tokio::test]
async fn replay_publishes_a_file_and_refuses_to_overwrite_without_replace() {
    let s = TestServer::start().await;
    let base = s.base.clone();
    let run = move |args: Vec<String>| {
        let base = base.clone();
        tokio::task::spawn_blocking(move || {
            Command::new(BIN)
                .arg("replay")
                .args(&args)
                .args(["--server", &base, "--token", TOKEN, "--speed", "1000"])
                .output()
                .expect("run replay")
        })
    };
    let out = run(vec![bundled_path()]).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("[1/"), "a progress line per step: {stdout}");
    let (_, m) = s.get("/1/match/elp-tig-2011-09-10").await;
    assert_eq!(m["period"], "ended");
    assert_eq!(m["home-score"], 1);
    assert_eq!(m["visit-score"], 3);
    let last_seq = m["seq"].as_u64().unwrap();

    let out = run(vec![bundled_path()]).await.unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("matchstream: ") && stderr.contains("--replace"), "{stderr}");

    // The same match as JSON, replacing the first.
    let dir = tempfile::tempdir().unwrap();
    let json_path = dir.path().join("match.json");
    std::fs::write(
        &json_path,
        r#"{"home":{"id":"elp","name":"Estudiantes"},"visit":"tig","start_date":"2011-09-10",
            "steps":[{"sleep":10},{"kind":"start","data":{"home_players":[{"number":9,"name":"Boselli"}],"visit_players":[{"number":7,"name":"Luna"}]}},
                     {"kind":"goal","data":{"team":"elp","player":9}},{"kind":"stop"}]}"#,
    )
    .unwrap();
    let out = run(vec![json_path.display().to_string(), "--replace".into()]).await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (_, m) = s.get("/1/match/elp-tig-2011-09-10").await;
    assert_eq!(m["seq"], 3);
    assert_ne!(last_seq, 3);
    assert_eq!(m["home-score"], 1);
    assert_eq!(m["home-name"], "Estudiantes");
}

#[tokio::test]
async fn replay_of_a_broken_file_says_where() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.config");
    std::fs::write(&path, "{home, <<\"elp\">>}.\n{visit, <<\"tig\">>\n").unwrap();
    let out = Command::new(BIN)
        .args(["replay", path.to_str().unwrap(), "--token", "x"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("broken.config") && stderr.contains("line"), "{stderr}");
}

#[tokio::test]
async fn demo_serves_the_bundled_match_to_a_v1_viewer() {
    let out = tokio::task::spawn_blocking(|| {
        Command::new(BIN)
            .args(["demo", "--speed", "50", "--exit-when-done"])
            .output()
            .expect("run demo")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("nc 127.0.0.1 "), "{stdout}");
    assert!(stdout.contains("VERSION:1:CONNECT:me:MATCH:elp-tig-2011-09-10"), "{stdout}");
    assert!(stdout.contains("curl http://127.0.0.1:"), "{stdout}");
    assert!(stdout.contains(": status:\n\thome: <<\"elp\">>\n"), "{stdout}");
    assert!(stdout.contains(": goal:\n\tplayer: Luna (7) \n\tteam: <<\"tig\">>\n\r\n"), "{stdout}");
    assert!(stdout.contains(": stop:\n\r\n"), "{stdout}");
    assert!(stdout.contains("The match is over"), "{stdout}");
}

#[test]
fn a_second_serve_on_the_same_data_directory_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let _first = NodeProcess::start(dir.path());
    let out = Command::new(BIN)
        .args(["serve", "--http", "127.0.0.1:0", "--viewers", "127.0.0.1:0", "--data"])
        .arg(dir.path())
        .output()
        .expect("run serve");
    assert!(!out.status.success(), "the second node started");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let expected =
        format!("data directory {} is in use by another matchstream", dir.path().display());
    assert!(stderr.contains(&expected), "{stderr}");
    assert!(stderr.contains("matchstream: cannot start the node"), "{stderr}");
}

#[test]
fn doctor_judges_this_machine_and_exits_non_zero_when_a_limit_stops_the_viewers() {
    // A thousand viewers fit any machine the tests run on (they hold more themselves).
    let out = Command::new(BIN).args(["doctor", "--viewers", "1000", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert_eq!(report["viewers"], 1000);
    assert_eq!(report["blocked"], false);
    let limits: Vec<_> =
        report["findings"].as_array().unwrap().iter().map(|f| f["limit"].clone()).collect();
    for limit in ["fs.nr_open", "fs.file-max", "net.core.somaxconn", "net.ipv4.tcp_mem"] {
        assert!(limits.contains(&serde_json::json!(limit)), "{limit} missing: {limits:?}");
    }
    // More descriptors than any kernel allows a process: the open-file limit stops it.
    let out = Command::new(BIN).args(["doctor", "--viewers", "4000000000"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("STOPS ulimit -n"), "{text}");
    assert!(text.contains("fix: ulimit -Hn 4000000512"), "{text}");
}

/// Every duration, size and count is checked at start (SPEC 10): out of range, `serve` exits 2
/// with the flag and its range, never a panic; durations take units (SPEC 8).
#[test]
fn serve_refuses_a_flag_out_of_range_naming_it_and_its_range() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&[&str], &str); 7] = [
        (
            &["--shutdown-grace", "18446744073709551615"],
            "--shutdown-grace must be between 0s and 24h",
        ),
        (&["--connect-timeout", "18446744073709551615"], "--connect-timeout must be between"),
        (&["--http-max-body", "0"], "--http-max-body must be between 1024 and"),
        (&["--keepalive", "20s"], "--keepalive must be between 10ms and 15s"),
        (
            &["--max-history-limit", "100", "--history-limit", "500"],
            "--history-limit must not be above",
        ),
        (&["--write-timeout", "soon"], "\"soon\" is not a duration"),
        (&["--keep-ended", "500ms"], "--keep-ended must be between 1s and 168h (got 500ms)"),
    ];
    for (args, expected) in cases {
        let out = Command::new(BIN)
            .args(["serve", "--http", "127.0.0.1:0", "--viewers", "127.0.0.1:0", "--data"])
            .arg(dir.path())
            .args(args)
            .output()
            .expect("run serve");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

/// A token never shows in `--help` (its variable's value is hidden), and a node reads its
/// tokens from `--watcher-token-file` as well: one a line, comments skipped.
#[tokio::test]
async fn tokens_stay_secret_and_come_from_a_file_too() {
    let help = Command::new(BIN)
        .args(["serve", "--help"])
        .env("MATCHSTREAM_WATCHER_TOKEN", "s3cr3t-in-env")
        .env("MATCHSTREAM_REDIS", "redis://:pa55word@127.0.0.1:1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(text.contains("--watcher-token-file"), "{text}");
    assert!(!text.contains("s3cr3t-in-env") && !text.contains("pa55word"), "{text}");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens");
    std::fs::write(&file, "# the stadium's feed\nfeed-token\n\nsecond-token\n").unwrap();
    let data = dir.path().join("data");
    let node = NodeProcess::start_with(&data, &["--watcher-token-file", file.to_str().unwrap()]);
    for token in ["feed-token", "second-token", TOKEN] {
        let watcher = matchstream_client::Watcher::new(&node.base, token).unwrap();
        let (home, visit) = (&token[..3], "tig");
        let body = serde_json::json!({"home": home, "visit": visit, "start_date": "2011-09-10"});
        let made = watcher.send(reqwest::Method::POST, "/1/matches", Some(&body)).await.unwrap();
        assert_eq!(made.status, 201, "{token}: {}", made.json());
    }
    let log = node.log.join("\n");
    assert!(!log.contains("feed-token") && !log.contains(TOKEN), "{log}");
}
