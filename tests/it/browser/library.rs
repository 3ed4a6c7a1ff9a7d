//! The client library (SPEC 12) in a real browser: the live page, built on it, follows a match
//! through a `kill -9` of the node it watches, on two nodes joined by Redis behind a real nginx
//! with the repository's site (`ops/nginx/matchstream.conf`, over https: the way a site is
//! deployed, one address with nodes behind it); and `examples/scoreboard.html`, opened from disk
//! as a developer would, follows a node.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fantoccini::Client;
use reqwest::{Method, StatusCode};
use serde_json::json;

use super::{feed, js, open, run, until, until_live, Screen};
use crate::redis::RedisServer;
use crate::support::*;

/// The node's `matchstream_viewers{transport="ws"}`, from its admin listener.
async fn ws_viewers(admin: &str) -> Option<u64> {
    let text = reqwest::get(format!("{admin}/metrics")).await.ok()?.text().await.ok()?;
    let line = text.lines().find(|l| l.starts_with("matchstream_viewers{transport=\"ws\"}"))?;
    line.rsplit(' ').next()?.parse::<f64>().ok().map(|v| v as u64)
}

/// Two nodes on one Redis behind nginx; the live page, opened through nginx, follows a match
/// over WebSocket while a watcher publishes without pause; the node holding the page's
/// WebSocket is killed with `kill -9` (no goodbye). The library comes back through nginx to the
/// other node with `from=<last seq>`: at full time the feed holds every event exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_follows_a_match_through_a_kill_9_of_its_node_behind_nginx() {
    let name = "the_page_follows_a_match_through_a_kill_9_of_its_node_behind_nginx";
    run(name, Screen::Desktop, |c| async move {
        let redis = RedisServer::start().await;
        let redis_url = redis.url();
        let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mut nodes = [
            Some(NodeProcess::start_with(dir_a.path(), &["--redis", &redis_url])),
            Some(NodeProcess::start_with(dir_b.path(), &["--redis", &redis_url])),
        ];
        let upstreams: Vec<String> = nodes
            .iter()
            .flatten()
            .map(|n| n.base.trim_start_matches("http://").to_owned())
            .collect();
        let upstreams: Vec<&str> = upstreams.iter().map(String::as_str).collect();
        let ca = TestCa::new();
        let nginx = Nginx::start(2, |ports| NginxConf {
            http: site(ports[0], ports[1], &upstreams, &ca.cert, &ca.key),
            ..NginxConf::default()
        });
        let site = format!("https://{TLS_HOST}:{}", nginx.ports[0]);
        let watchers: Vec<matchstream_client::Watcher> = nodes
            .iter()
            .flatten()
            .map(|n| matchstream_client::Watcher::new(&n.base, TOKEN).expect("a watcher"))
            .collect();
        let id = "elp-tig-2011-09-10";
        let new = json!({"home": "elp", "visit": "tig", "start_date": "2011-09-10"});
        let created = watchers[0].send(Method::POST, "/1/matches", Some(&new)).await.unwrap();
        assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
        let start = json!({"kind": "start", "data": start_data()});
        let path = format!("/1/match/{id}/events");
        let started = watchers[0].send(Method::POST, &path, Some(&start)).await.unwrap();
        assert_eq!(started.status, StatusCode::CREATED, "{}", started.text);
        for w in &watchers {
            let known = || async { w.get(&format!("/1/match/{id}")).await.ok().map(|a| a.json()) };
            let deadline = tokio::time::Instant::now() + PATIENCE;
            while known().await.is_none_or(|m| m["seq"] != 1) {
                assert!(tokio::time::Instant::now() < deadline, "both nodes know the match");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }

        open(&c, &format!("{site}/?mid={id}")).await;
        until_live(&c, "ws", 1).await;
        // The node holding the page's WebSocket dies; the watcher publishes to the other.
        // (Loops by hand, not `eventually`: this future must be `Send` for the browser's task.)
        let deadline = tokio::time::Instant::now() + PATIENCE;
        let mut holder = None;
        while holder.is_none() {
            for (i, node) in nodes.iter().enumerate() {
                let admin = node.as_ref().expect("a node").admin.clone();
                if ws_viewers(&admin).await == Some(1) {
                    holder = Some(i);
                }
            }
            assert!(tokio::time::Instant::now() < deadline, "one node holds the page's WebSocket");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let doomed = holder.expect("the holder");
        let survivor = watchers[1 - doomed].clone();

        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicU64::new(1));
        let publisher = {
            let (stop, acked, path) = (stop.clone(), acked.clone(), path.clone());
            tokio::spawn(async move {
                let mut n = 0;
                loop {
                    let done = stop.load(Ordering::SeqCst);
                    let body = if done {
                        json!({"kind": "stop"})
                    } else {
                        n += 1;
                        json!({"kind": "comment", "data": {"text": format!("c{n}")}})
                    };
                    let answer = survivor.send(Method::POST, &path, Some(&body)).await.unwrap();
                    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text);
                    acked.store(answer.json()["seq"].as_u64().expect("seq"), Ordering::SeqCst);
                    if done {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        };
        until(&c, "ten events live", "return document.querySelectorAll('#feed > li').length >= 10")
            .await;
        nodes[doomed].take().expect("the doomed node").kill9();
        let at_kill = acked.load(Ordering::SeqCst);
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while acked.load(Ordering::SeqCst) < at_kill + 20 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "twenty events published after the kill"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        until_live(&c, "ws", 2).await;
        stop.store(true, Ordering::SeqCst);
        publisher.await.expect("the publisher");
        let last = acked.load(Ordering::SeqCst);
        until(&c, "full time", "return document.getElementById('conn').dataset.state === 'ended'")
            .await;
        let shown: Vec<u64> = feed(&c).await.into_iter().map(|(seq, _)| seq).collect();
        assert_eq!(shown, (1..=last).rev().collect::<Vec<_>>(), "every event once, newest first");
        assert_eq!(
            js(&c, "return document.getElementById('conn').textContent.trim()").await,
            "Ended"
        );
        // The page came back over WebSocket, not SSE.
        assert_eq!(js(&c, "return document.getElementById('conn').dataset.transport").await, "ws");
        (nginx, ca, nodes, redis, dir_a, dir_b)
    })
    .await;
}

/// What `examples/scoreboard.html` shows.
async fn scoreboard(c: &Client) -> serde_json::Value {
    js(
        c,
        "return {score: document.getElementById('score').textContent,
                 state: document.getElementById('state').textContent,
                 events: [...document.querySelectorAll('#events > li')]
                     .map(li => [Number(li.dataset.seq), li.textContent])};",
    )
    .await
}

/// `examples/scoreboard.html`, opened from disk (`file://`), loads the library from the node
/// and follows a match: the score, each event once, and the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scoreboard_example_follows_a_node_from_a_file() {
    run("the_scoreboard_example_follows_a_node_from_a_file", Screen::Phone, |c| async move {
        let s = TestServer::start().await;
        let id = s.started_match().await;
        s.publish(&id, "goal", json!({"team": "tig", "player": 7})).await;
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/scoreboard.html");
        let url = format!("file://{}?server={}&match={id}", file.display(), s.base);
        open(&c, &url).await;
        let live = "return document.getElementById('state').textContent === 'live'";
        until(&c, "the scoreboard is live", live).await;
        until(
            &c,
            "the score",
            "return document.getElementById('score').textContent === 'elp 0 – 1 tig'",
        )
        .await;
        s.publish(&id, "goal", json!({"team": "elp", "player": 25})).await;
        s.publish(&id, "card", json!({"team": "tig", "player": 10, "card": "red"})).await;
        s.publish(&id, "stop", json!({})).await;
        until(&c, "the end", "return document.getElementById('state').textContent === 'ended'")
            .await;
        let shown = scoreboard(&c).await;
        assert_eq!(shown["score"], "elp 1 – 1 tig", "{shown:#}");
        assert_eq!(
            shown["events"],
            json!([[5, "stop"], [4, "card tig Morales (10)"], [3, "goal elp Albil (25)"]]),
            "the events after the snapshot, each once, newest first: {shown:#}"
        );
        s
    })
    .await;
}
