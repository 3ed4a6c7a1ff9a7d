//! Redis over TLS (`rediss://`, SPEC 11) with a password and a private CA (`--redis-ca-cert`):
//! a node on one TLS Redis serves a replayed match to a viewer, every event, and its password
//! shows in no log line and no answer, not even while Redis is down; without the CA, or with a
//! wrong password, it refuses to start, saying why without the password; nodes on a TLS Redis
//! Cluster whose URL gives the password once serve the same events.

use std::process::Command;

use reqwest::{Method, StatusCode};
use serde_json::json;

use super::{agreed, v2_line, viewer_to_bye};
use crate::redis::{RedisCluster, RedisServer, Tls};
use crate::support::*;

const PASSWORD: &str = "pw-9f3b1c7e-never-shown";
const BIN: &str = env!("CARGO_BIN_EXE_matchstream");

fn bundled() -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/matches/elp-tig-2011-09-10.config").to_owned()
}

/// A node process on `rediss://` with the CA serves a replayed match: a v2 viewer that joined
/// before the first event gets every event in order and the end. The password is in none of
/// the node's log lines (at `debug`), nor in `/readyz` and the log while Redis is stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_on_rediss_serves_a_replayed_match_and_never_shows_the_password() {
    let ca = TestCa::new();
    let mut redis = RedisServer::start_tls(&Tls::new(&ca, PASSWORD)).await;
    let url = redis.url();
    assert!(url.starts_with("rediss://:") && url.contains(PASSWORD), "{url}");
    let dir = tempfile::tempdir().expect("a temp dir");
    let ca_path = ca.ca.display().to_string();
    let node = NodeProcess::start_logging(
        dir.path(),
        &["--redis", &url, "--redis-ca-cert", &ca_path],
        "debug",
    );
    let watcher = matchstream_client::Watcher::new(&node.base, TOKEN).expect("a watcher");
    let new = json!({"home": "elp", "visit": "tig", "start_date": "2011-09-10"});
    let created = watcher.send(Method::POST, "/1/matches", Some(&new)).await.expect("create");
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let id = "elp-tig-2011-09-10";
    let viewer = viewer_to_bye(node.viewers[0], &v2_line("tls", id)).await;

    let base = node.base.clone();
    let replay = tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args(["replay", &bundled(), "--resume", "--speed", "1000"])
            .args(["--server", &base, "--token", TOKEN])
            .output()
            .expect("run replay")
    });
    let out = replay.await.expect("replay ran");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let last = watcher.get(&format!("/1/match/{id}")).await.expect("the match").json()["seq"]
        .as_u64()
        .expect("its seq");
    assert!(last > 10, "the whole match was replayed: seq {last}");
    let (seqs, bye) = viewer.await.expect("the viewer");
    assert_eq!(seqs, (1..=last).collect::<Vec<_>>(), "every event once, in order");
    assert_eq!(bye["reason"], "match_over");

    // Redis goes away: /readyz says why, without the password.
    redis.stop().await;
    let readyz = format!("{}/readyz", node.admin);
    let why = eventually("/readyz says the store is down", PATIENCE, async || {
        let answer = reqwest::get(&readyz).await.ok()?;
        (answer.status() == StatusCode::SERVICE_UNAVAILABLE).then_some(answer.text().await.ok()?)
    })
    .await;
    assert!(why.contains("store unavailable"), "{why}");
    assert!(!why.contains(PASSWORD), "/readyz shows the password: {why}");
    let lines = {
        let later = node.later.lock().expect("the log");
        [node.log.clone(), later.clone()].concat()
    };
    assert!(lines.iter().any(|l| l.contains("DEBUG")), "the log is at debug level");
    let shown: Vec<&String> = lines.iter().filter(|l| l.contains(PASSWORD)).collect();
    assert!(shown.is_empty(), "log lines show the password: {shown:#?}");
}

/// `serve` refuses to start on a TLS Redis whose certificate it cannot check (no
/// `--redis-ca-cert`: the system's roots do not know the test's CA) or with a wrong password,
/// exiting non-zero with a reason that shows neither password.
#[tokio::test]
async fn a_node_refuses_a_tls_redis_it_cannot_trust_or_log_in_to_without_showing_the_password() {
    let ca = TestCa::new();
    let redis = RedisServer::start_tls(&Tls::new(&ca, PASSWORD)).await;
    let wrong = "wrong-5d2e8a";
    let ca_path = ca.ca.display().to_string();
    let cases = [
        (redis.url(), None, "certificate"),
        (redis.url().replace(PASSWORD, wrong), Some(ca_path.as_str()), "password"),
    ];
    for (url, ca_cert, why) in cases {
        let dir = tempfile::tempdir().expect("a temp dir");
        let mut serve = Command::new(BIN);
        serve
            .args(["serve", "--http", "127.0.0.1:0", "--viewers", "127.0.0.1:0"])
            .arg("--data")
            .arg(dir.path())
            .args(["--redis", &url])
            .env("RUST_LOG", "debug");
        if let Some(ca) = ca_cert {
            serve.args(["--redis-ca-cert", ca]);
        }
        let out = tokio::task::spawn_blocking(move || serve.output().expect("run serve"))
            .await
            .expect("serve ran");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{why}: serve must not start:\n{stderr}");
        let last = stderr.lines().last().unwrap_or_default();
        assert!(last.starts_with("matchstream: cannot start the node"), "{why}: {last}");
        assert!(last.to_lowercase().contains(why), "the reason names the {why}: {last}");
        for secret in [PASSWORD, wrong] {
            assert!(!stderr.contains(secret), "{why}: the output shows a password:\n{stderr}");
        }
    }
}

/// Two nodes on a three-master Redis Cluster over TLS (`rediss+cluster://`, the password given
/// once, before the first host, and `--redis-ca-cert`): events published to one reach a viewer
/// of the other, every one in order, and both answer the same history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_on_a_tls_redis_cluster_with_one_password_serve_the_same_events() {
    let ca = TestCa::new();
    let cluster = RedisCluster::start_tls(&Tls::new(&ca, PASSWORD)).await;
    let url = cluster.url();
    assert_eq!(url.matches(PASSWORD).count(), 1, "the password written once: {url}");
    let mut nodes = Vec::new();
    for _ in 0..2 {
        let tune = |c: &mut matchstream::config::Config| {
            c.redis = Some(url.clone());
            c.redis_ca_cert = Some(ca.ca.clone());
        };
        nodes.push(TestServer::start_with(tune).await);
    }
    let id = nodes[0].create_match("elp", "tig", "2011-09-10").await;
    agreed(&nodes, &format!("/1/match/{id}"), |m| m["seq"] == 0).await;
    let viewer = viewer_to_bye(nodes[1].viewer(), &v2_line("tls", &id)).await;
    nodes[0].publish(&id, "start", start_data()).await;
    for player in [7, 10, 7] {
        nodes[0].publish(&id, "goal", json!({"team": "tig", "player": player})).await;
    }
    let last = nodes[0].publish(&id, "stop", json!({})).await;
    let (seqs, bye) = viewer.await.expect("the viewer");
    assert_eq!(seqs, (1..=last).collect::<Vec<_>>(), "every event once, in order");
    assert_eq!(bye["reason"], "match_over");
    let history = agreed(&nodes, &format!("/1/match/{id}/history"), |h| {
        h.as_array().is_some_and(|events| events.len() as u64 == last)
    })
    .await;
    assert_eq!(history[0]["seq"], 1);
}
