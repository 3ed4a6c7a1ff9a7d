//! `serve --config` and `--print-config` as an operator uses them (SPEC 8, 11): precedence flag >
//! variable > file > default, unknown keys and bad values named, secrets masked, the example
//! file complete; durations with units on every subcommand, host names, one token variable,
//! and `top` on a node that does not answer.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use reqwest::StatusCode;
use serde_json::json;

use crate::support::*;

const BIN: &str = env!("CARGO_BIN_EXE_matchstream");

/// The example that the package installs as /etc/matchstream/matchstream.toml.
fn example_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("ops/matchstream.toml")
}

/// `matchstream <args>` with the given variables, its own MATCHSTREAM_* cleared so that the
/// shell running the tests cannot change what a case means.
fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(BIN);
    for (name, _) in std::env::vars() {
        if name.starts_with("MATCHSTREAM_") {
            command.env_remove(name);
        }
    }
    command.args(args).envs(env.iter().copied()).output().expect("run matchstream")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A config file holding `text`, in a directory kept as long as the returned guard.
fn config_file(text: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("matchstream.toml");
    std::fs::write(&path, text).unwrap();
    (dir, path.display().to_string())
}

/// `serve --print-config` with more arguments and variables: the configuration in effect.
fn print_config(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut all = vec!["serve", "--print-config"];
    all.extend(args);
    let out = run(&all, env);
    assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    stdout(&out)
}

/// The line of `key` in `--print-config`'s output.
fn line<'a>(printed: &'a str, key: &str) -> &'a str {
    let prefix = format!("{key} = ");
    printed.lines().find(|l| l.starts_with(&prefix)).unwrap_or_else(|| panic!("{key}:\n{printed}"))
}

#[test]
fn a_flag_beats_its_variable_which_beats_the_file_which_beats_the_default() {
    let (_dir, path) = config_file(
        "ring_events = 2048\nmax_lag_events = 5000\nhistory_limit = 400\n\
         drain_window = \"5s\"\nkeepalive = \"5s\"\n",
    );
    let env = [
        ("MATCHSTREAM_CONFIG", path.as_str()),
        ("MATCHSTREAM_MAX_LAG_EVENTS", "6000"),
        ("MATCHSTREAM_HISTORY_LIMIT", "300"),
        // The older spellings in milliseconds weigh as their newer names do.
        ("MATCHSTREAM_DRAIN_WINDOW_MS", "300"),
    ];
    let printed = print_config(&["--history-limit", "200", "--keepalive-ms", "250"], &env);
    assert_eq!(line(&printed, "ring_events"), "ring_events = 2048", "file over default");
    assert_eq!(line(&printed, "max_lag_events"), "max_lag_events = 6000", "variable over file");
    assert_eq!(line(&printed, "history_limit"), "history_limit = 200", "flag over variable");
    assert_eq!(line(&printed, "drain_window"), "drain_window = \"300ms\"", "variable over file");
    assert_eq!(line(&printed, "keepalive"), "keepalive = \"250ms\"", "flag over file");
    assert_eq!(line(&printed, "max_store_reads"), "max_store_reads = 64", "the default");
    assert!(printed.contains("\n# admin: not set\n"), "{printed}");
}

/// The same order through a running node: the file's publish limit is beaten by the variable,
/// its token by the flag, and its history page size holds where nothing else says.
#[tokio::test]
async fn a_running_node_takes_the_file_under_its_flags_and_variables() {
    let (dir, path) = config_file(
        "watcher_token = [\"file-token\"]\nmax_events_per_request = 3\nhistory_limit = 2\n",
    );
    let mut command = Command::new(BIN);
    command
        .args(["serve", "--config", &path, "--http", "127.0.0.1:0", "--viewers", "127.0.0.1:0"])
        .args(["--watcher-token", TOKEN, "--data"])
        .arg(dir.path().join("data"))
        .env("MATCHSTREAM_MAX_EVENTS_PER_REQUEST", "5");
    let node = tokio::task::spawn_blocking(move || NodeProcess::spawn(command)).await.unwrap();
    let post = |token: &'static str, path: String, body: serde_json::Value| {
        let url = format!("{}{path}", node.base);
        async move {
            let answer = reqwest::Client::new()
                .post(url)
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .expect("POST");
            answer.status()
        }
    };
    let made = json!({"home": "elp", "visit": "tig", "start_date": "2011-09-10"});
    assert_eq!(post("file-token", "/1/matches".into(), made.clone()).await, 401, "flag > file");
    assert_eq!(post(TOKEN, "/1/matches".into(), made).await, StatusCode::CREATED);
    let events = "/1/match/elp-tig-2011-09-10/events".to_owned();
    let start = json!({"kind": "start", "data": start_data()});
    assert_eq!(post(TOKEN, events.clone(), start).await, StatusCode::CREATED);
    let corners = |n| json!(vec![json!({"kind": "corner", "data": {"team": "elp"}}); n]);
    assert_eq!(post(TOKEN, events.clone(), corners(5)).await, 201, "variable (5) > file (3)");
    assert_eq!(post(TOKEN, events, corners(6)).await, StatusCode::PAYLOAD_TOO_LARGE);
    let history = reqwest::get(format!("{}/1/match/elp-tig-2011-09-10/history", node.base))
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap();
    assert_eq!(history.as_array().map(Vec::len), Some(2), "file (2) > default (500): {history}");
}

#[test]
fn an_unknown_key_is_named_with_the_closest_known_one() {
    let (_dir, path) = config_file("max_viewer = 10\n");
    let out = run(&["serve", "--config", &path], &[]);
    assert_eq!(out.status.code(), Some(2));
    let expected =
        format!("matchstream: unknown key `max_viewer` in {path}; did you mean `max_viewers`?\n");
    assert_eq!(stderr(&out), expected);
    // An older spelling is a flag, not a key: the file says it once, in the newer one.
    let (_dir, path) = config_file("drain_window_ms = 100\n");
    let err = stderr(&run(&["serve", "--config", &path], &[]));
    assert!(
        err.contains("unknown key `drain_window_ms`") && err.contains("`drain_window`"),
        "{err}"
    );
}

#[test]
fn a_bad_value_is_named_with_its_key_its_file_and_why() {
    let cases = [
        ("write_timeout = \"soon\"", "`write_timeout` in {}: \"soon\" is not a duration"),
        ("ring_events = [1, 2]", "`ring_events` in {}: takes one value, not a list"),
        ("ring_events = -1", "`ring_events` in {}: \"-1\": invalid digit"),
        ("redis_volatile = \"yes\"", "`redis_volatile` in {}: expected true or false"),
        ("viewers = \"127.0.0.1:9103-9100\"", "`viewers` in {}: viewer address"),
        // A value out of range is found by the same checks as a flag's, and names both.
        (
            "keep_ended = \"500ms\"",
            "--keep-ended must be between 1s and 168h (got 500ms) (`keep_ended` in {})",
        ),
        ("http = \"127.0.0.1:8888\"\nhttp", "config file {}: TOML parse error at line 2"),
    ];
    for (text, expected) in cases {
        let (_dir, path) = config_file(text);
        let out = run(&["serve", "--config", &path], &[]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{text}: {err}");
        assert!(err.contains(&expected.replace("{}", &path)), "{text}: {err}");
    }
    let out = run(&["serve", "--config", "/nonexistent/matchstream.toml"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("cannot read the config file /nonexistent/matchstream.toml"));
}

#[test]
fn durations_take_units_in_the_file_on_every_flag_and_the_ms_spellings_stay() {
    let (_dir, path) = config_file(
        "min_write_interval = \"250ms\"\nconnect_timeout = 2\nwrite_timeout = 1.5\n\
         shutdown_grace = \"1m 30s\"\n",
    );
    let printed = print_config(
        &["--config", &path, "--keep-ended", "2m", "--drain-window-ms", "100", "--keepalive", "3"],
        &[],
    );
    for expected in [
        "min_write_interval = \"250ms\"",
        "connect_timeout = 2",
        "write_timeout = \"1.5\"",
        "shutdown_grace = \"1m 30s\"",
        "keep_ended = \"2m\"",
        "drain_window = \"100ms\"",
        "keepalive = 3",
    ] {
        assert!(printed.lines().any(|l| l == expected), "{expected}:\n{printed}");
    }
    // The simulator's times: units, bare (decimal) seconds, and --slow-read-ms. Nothing
    // listens on the port: each run gets past its flags and fails on the connection.
    let port = closed_port().to_string();
    let server = format!("http://127.0.0.1:{port}");
    let viewer = format!("127.0.0.1:{port}");
    let runs: [&[&str]; 4] = [
        &["sim", "-n", "1", "--match", "a-b-2011-01-01", "--viewers", &viewer],
        &["sim", "http", "-n", "1", "--server", &server, "--timeout", "250ms"],
        &["sim", "publish", "--server", &server, "--token", "x", "--match", "a-b-2011-01-01"],
        &["sim", "-n", "1", "--match", "a-b-2011-01-01", "--viewers", &viewer, "--slow-read-ms"],
    ];
    let extra: [&[&str]; 4] = [
        &["--connect-timeout", "250ms", "--late-within", "0.2", "--duration-limit", "2s"],
        &[],
        &["--duration", "1.5", "--rate", "2"],
        &["5", "--slow-read", "5ms"],
    ];
    for (i, (args, more)) in runs.iter().zip(extra).enumerate() {
        let out = run(&[*args, more].concat(), &[]);
        let err = stderr(&out);
        if i == 3 {
            // Both spellings at once: which one was meant is not guessed.
            assert_eq!(out.status.code(), Some(2), "{err}");
            assert!(err.contains("cannot be used with"), "{err}");
        } else {
            assert_eq!(out.status.code(), Some(1), "{args:?} {more:?}: {err}");
            assert!(!err.contains("invalid value"), "{args:?} {more:?}: {err}");
        }
    }
    let older = ["sim", "-n", "1", "--match", "a-b-2011-01-01", "--viewers", &viewer];
    let out = run(&[&older[..], &["--slow-read-ms", "5"]].concat(), &[]);
    assert_ne!(out.status.code(), Some(2), "the older spelling alone: {}", stderr(&out));
}

#[test]
fn print_config_masks_secrets_and_reads_back_as_the_same_configuration() {
    let (dir, path) = config_file(
        "watcher_token = [\"file-s3cret\", \"second-s3cret\"]\n\
         redis = \"redis://:pa55word@127.0.0.1:1\"\nviewers = \"127.0.0.1:9200-9203\"\n\
         redis_volatile = true\nmin_write_interval = \"0s\"\npublic_host = \"stream.example\"\n",
    );
    let printed = print_config(&["--config", &path, "--max-viewers", "100"], &[]);
    assert!(!printed.contains("s3cret") && !printed.contains("pa55word"), "{printed}");
    assert_eq!(line(&printed, "watcher_token"), "watcher_token = [\"***\", \"***\"]");
    assert_eq!(line(&printed, "redis"), "redis = \"redis://:***@127.0.0.1:1\"");
    assert_eq!(line(&printed, "redis_volatile"), "redis_volatile = true");
    assert_eq!(line(&printed, "max_viewers"), "max_viewers = 100");
    // The output is a config file, which says the same again.
    let again = dir.path().join("printed.toml");
    std::fs::write(&again, &printed).unwrap();
    let again = again.display().to_string();
    assert_eq!(print_config(&["--config", &again], &[]), printed);
    // A token from the variable is masked too.
    let from_env = print_config(&[], &[("MATCHSTREAM_WATCHER_TOKEN", "env-s3cret")]);
    assert_eq!(line(&from_env, "watcher_token"), "watcher_token = [\"***\"]");
    // Started as it is, a node would take "***" as a token anyone can guess: it refuses.
    let out = run(&["serve", "--config", &again], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("`redis` holds \"***\", what --print-config shows"));
    let (_dir, masked) = config_file("watcher_token = [\"***\"]\n");
    let out = run(&["serve", "--config", &masked], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("`watcher_token` holds \"***\""), "{}", stderr(&out));
}

/// ops/matchstream.toml names every key of `serve --help` (set, or commented out when it has
/// no default), and what it sets is the default: it cannot drift from the flags. `data` may
/// differ: the package points it at its own directory.
#[test]
fn the_example_config_names_every_key_with_its_default() {
    let help = stdout(&run(&["serve", "--help"], &[]));
    let keys: Vec<String> = help
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("--"))
        .filter_map(|l| l.split([' ', '\n']).next())
        .filter(|flag| !["help", "config", "print-config"].contains(flag))
        .map(|flag| flag.replace('-', "_"))
        .collect();
    assert!(keys.len() > 30 && keys.contains(&"watcher_token".to_owned()), "{keys:?}");
    let example = std::fs::read_to_string(example_path()).unwrap();
    for key in &keys {
        let set = format!("{key} = ");
        let commented = format!("# {key} = ");
        assert!(
            example.lines().any(|l| l.starts_with(&set) || l.starts_with(&commented)),
            "ops/matchstream.toml does not name `{key}`"
        );
    }
    let path = example_path().display().to_string();
    let from_example = print_config(&["--config", &path], &[]);
    let defaults = print_config(&[], &[]);
    let without_data =
        |s: &str| s.lines().filter(|l| !l.starts_with("data = ")).collect::<Vec<_>>().join("\n");
    assert_eq!(without_data(&from_example), without_data(&defaults));
}

/// `--http`, `--viewers` and `--admin` take host names; the watcher token is one variable for
/// every command that publishes; `top` pointed at the public port says where to look.
#[tokio::test]
async fn host_names_listen_and_one_variable_holds_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(BIN);
    command
        .args(["serve", "--http", "localhost:0", "--viewers", "localhost:0"])
        .args(["--admin", "localhost:0", "--watcher-token", TOKEN, "--data"])
        .arg(dir.path());
    let node = tokio::task::spawn_blocking(move || NodeProcess::spawn(command)).await.unwrap();
    assert!(node.base.starts_with("http://127.0.0.1:"), "{}", node.base);
    assert!(node.viewers[0].ip().is_loopback());
    let health = reqwest::get(format!("{}/healthz", node.base)).await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    let admin = reqwest::get(format!("{}/ops.json", node.admin)).await.unwrap();
    assert_eq!(admin.status(), StatusCode::OK);

    let base = node.base.clone();
    let out = tokio::task::spawn_blocking(move || {
        let args = ["sim", "publish", "--server", &base, "--match", "elp-tig-2011-09-10"];
        run(
            &[&args[..], &["--create", "--start", "--burst", "2"]].concat(),
            &[("MATCHSTREAM_WATCHER_TOKEN", TOKEN)],
        )
    })
    .await
    .unwrap();
    assert!(out.status.success(), "sim publish: {}", stderr(&out));
    // replay reads the same variable, and the older MATCHSTREAM_TOKEN too.
    for variable in ["MATCHSTREAM_WATCHER_TOKEN", "MATCHSTREAM_TOKEN"] {
        let base = node.base.clone();
        let out = tokio::task::spawn_blocking(move || {
            let file = concat!(env!("CARGO_MANIFEST_DIR"), "/matches/elp-tig-2011-09-10.config");
            let args = ["replay", file, "--server", &base, "--speed", "1000", "--replace"];
            run(&args, &[(variable, TOKEN)])
        })
        .await
        .unwrap();
        assert!(out.status.success(), "replay with {variable}: {}", stderr(&out));
    }

    let base = node.base.clone();
    let out = tokio::task::spawn_blocking(move || run(&["top", "--once", "--server", &base], &[]))
        .await
        .unwrap();
    assert!(!out.status.success());
    let expected = format!(
        "matchstream: cannot read {}/ops.json: 404 Not Found (is this the node's admin listener, \
         its --admin address?)\n",
        node.base
    );
    assert_eq!(stderr(&out), expected);

    for (flag, value) in [("--http", "nosuch.invalid:8888"), ("--viewers", "nosuch.invalid:9100")] {
        let out = run(&["serve", flag, value], &[]);
        assert_eq!(out.status.code(), Some(2), "{flag}");
        let err = stderr(&out);
        assert!(err.contains("cannot resolve host \"nosuch.invalid\""), "{flag}: {err}");
    }
}

/// A port on which nothing listens (bound, then closed).
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[test]
fn top_on_a_node_that_does_not_answer_says_which_url_and_why() {
    let port = closed_port();
    let server = format!("http://127.0.0.1:{port}");
    let expected = format!(
        "matchstream: cannot read {server}/ops.json: connection refused (is the node running \
         with --admin 127.0.0.1:{port}?)\n"
    );
    // Live (before it takes the terminal) and --once alike.
    for once in [true, false] {
        let args = if once { vec!["top", "--once"] } else { vec!["top"] };
        let out = run(&[&args[..], &["--server", &server]].concat(), &[]);
        assert_eq!(out.status.code(), Some(1), "once: {once}");
        assert_eq!(stderr(&out), expected, "once: {once}");
    }
}
