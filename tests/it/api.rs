//! The watcher API (SPEC 2) and the read API (SPEC 3), including every documented error.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn create_publish_and_read_back() {
    let s = TestServer::start().await;
    let (status, body) = s
        .send(
            Method::POST,
            "/1/matches",
            Some(json!({"home":"elp","visit":"tig","start_date":"2011-09-10","home_name":"Estudiantes","stadium":"Ciudad de La Plata"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(body, json!({"id": "elp-tig-2011-09-10"}));
    let id = "elp-tig-2011-09-10";
    assert_eq!(s.publish(id, "start", start_data()).await, 1);
    let (status, body) = s
        .post_events(
            id,
            json!([
                {"kind": "goal", "data": {"team": "tig", "player": 7}},
                {"kind": "card", "data": {"team": "elp", "player": 25, "card": "red"}},
            ]),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let acks = body.as_array().expect("a list for a list");
    assert_eq!(acks.iter().map(|a| a["seq"].as_u64().unwrap()).collect::<Vec<_>>(), vec![2, 3]);
    assert!(acks[0]["ts"].as_i64().unwrap() > 1_600_000_000_000);

    let (status, list) = s.get("/1/matches").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list, json!([id]));

    let (status, m) = s.get(&format!("/1/match/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(m["home"], "elp");
    assert_eq!(m["visit"], "tig");
    assert_eq!(m["home-score"], 0);
    assert_eq!(m["visit-score"], 1);
    assert_eq!(m["home-players"], json!({"18": "Fernandez"}), "the red card took Albil off");
    assert_eq!(m["visit-players"], json!({"7": "Luna", "10": "Morales"}));
    assert_eq!(m["period"], "first");
    assert_eq!(m["start_time"], "2011-09-10");
    assert_eq!(m["seq"], 3);
    assert_eq!(m["home-name"], "Estudiantes");
    assert_eq!(m["stadium"], "Ciudad de La Plata");

    let (status, h) = s.get(&format!("/1/match/{id}/history")).await;
    assert_eq!(status, StatusCode::OK);
    let h = h.as_array().unwrap();
    assert_eq!(h.len(), 3);
    assert_eq!(h[1]["seq"], 2);
    assert_eq!(h[1]["kind"], "goal");
    assert_eq!(h[1]["data"], json!({"player": {"number": 7, "name": "Luna"}, "team": "tig"}));
    assert!(h[1]["timestamp"].as_i64().is_some());

    let (_, page) = s.get(&format!("/1/match/{id}/history?after=1&limit=1")).await;
    assert_eq!(page.as_array().unwrap().len(), 1);
    assert_eq!(page[0]["seq"], 2);
}

#[tokio::test]
async fn checkin_names_the_least_loaded_viewer_port_and_never_a_full_one() {
    // Two ports of 2 viewers each.
    let s = TestServer::start_with(|c| c.max_viewers = 4).await;
    assert_eq!(s.viewers.len(), 2);
    let (status, c) = s.get("/1/checkin").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(c["host"], "127.0.0.1");
    let first = c["port"].as_u64().unwrap() as u16;
    assert!(s.viewers.iter().any(|a| a.port() == first));
    let port_of = |p: u16| s.viewers.iter().find(|a| a.port() == p).copied().unwrap();
    let other = s.viewers.iter().find(|a| a.port() != first).unwrap().port();
    // A viewer counts on its port once it joined, before its snapshot is sent (a connection
    // that has not sent its connect line is no load: tests/it/hostile.rs).
    let id = s.started_match().await;
    let watch = async |port: u16| {
        let mut v =
            Viewer::connect(port_of(port), &format!("VERSION:2:CONNECT:me:MATCH:{id}")).await;
        assert_eq!(v.frame().await.unwrap()["kind"], "status");
        v
    };
    // One viewer on the named port: the other is now less loaded.
    let mut held = vec![watch(first).await];
    for _ in 0..20 {
        assert_eq!(s.get("/1/checkin").await.1["port"], u64::from(other));
    }
    // Both full (2 each): no port has room.
    held.push(watch(first).await);
    held.push(watch(other).await);
    held.push(watch(other).await);
    assert_eq!(s.get("/1/checkin").await.0, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn cors_is_answered_for_browsers() {
    let s = TestServer::start().await;
    let r = reqwest::Client::new()
        .request(Method::OPTIONS, format!("{}/1/matches", s.base))
        .header("Origin", "http://example.test")
        .header("Access-Control-Request-Method", "GET")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    assert!(r.headers().contains_key("access-control-allow-origin"));
}

#[tokio::test]
async fn watcher_errors_get_their_documented_answers() {
    let s = TestServer::start().await;
    let id = s.started_match().await;
    let base = &s.base;
    // Raw requests: these carry no token, a wrong one, or a body the client would not send.
    let http = reqwest::Client::new();

    // No token, wrong token.
    let r = http.post(format!("{base}/1/matches")).json(&json!({})).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.json::<serde_json::Value>().await.unwrap()["error"]
        .as_str()
        .unwrap()
        .contains("Bearer"));
    let r = http
        .post(format!("{base}/1/match/{id}/events"))
        .bearer_auth("nope")
        .json(&json!({"kind":"corner"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = http.delete(format!("{base}/1/match/{id}")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // Bad JSON and bad bodies.
    let r = http
        .post(format!("{base}/1/match/{id}/events"))
        .bearer_auth(TOKEN)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.json::<serde_json::Value>().await.unwrap()["error"].is_string());
    let (st, b) = s.post_events(&id, json!({"kind": "dance"})).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(b["error"].as_str().unwrap().contains("dance"), "{b}");
    let (st, _) = s
        .send(
            Method::POST,
            "/1/matches",
            Some(json!({"home":"ELP!","visit":"tig","start_date":"2011-09-10"})),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, _) = s
        .send(
            Method::POST,
            "/1/matches",
            Some(json!({"home":"elp","visit":"tig","start_date":"2011-02-30"})),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);

    // Unknown and duplicate matches.
    let (st, b) = s.post_events("abc-def-2020-01-01", json!({"kind": "corner"})).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert!(b["error"].is_string());
    let (st, _) = s.send(Method::DELETE, "/1/match/abc-def-2020-01-01", None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, _) = s
        .send(
            Method::POST,
            "/1/matches",
            Some(json!({"home":"elp","visit":"tig","start_date":"2011-09-10"})),
        )
        .await;
    assert_eq!(st, StatusCode::CONFLICT);

    // Events that cannot apply: nothing changes.
    let cases = [
        (json!({"kind":"goal","data":{"team":"xyz"}}), StatusCode::UNPROCESSABLE_ENTITY, "xyz"),
        (
            json!({"kind":"card","data":{"team":"elp","player":99,"card":"red"}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "pitch",
        ),
        (
            json!({"kind":"substitution","data":{"team":"tig","player_out":99,"player_in":{"number":22,"name":"Pio"}}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "pitch",
        ),
    ];
    for (event, want, mention) in cases {
        let (st, b) = s.post_events(&id, event.clone()).await;
        assert_eq!(st, want, "{event} -> {b}");
        assert!(b["error"].as_str().unwrap().contains(mention), "{event} -> {b}");
    }
    // A batch with one bad event applies none of it.
    let (st, _) = s
        .post_events(
            &id,
            json!([{"kind":"goal","data":{"team":"tig"}}, {"kind":"goal","data":{"team":"nope"}}]),
        )
        .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
    let (_, m) = s.get(&format!("/1/match/{id}")).await;
    assert_eq!(m["visit-score"], 0);
    assert_eq!(m["seq"], 1);

    // Goal before start, event after stop.
    let fresh = s.create_match("aaa", "bbb", "2020-01-01").await;
    let (st, b) = s.post_events(&fresh, json!({"kind":"goal","data":{"team":"aaa"}})).await;
    assert_eq!(st, StatusCode::CONFLICT, "{b}");
    assert!(b["error"].as_str().unwrap().contains("not started"), "{b}");
    s.publish(&id, "stop", json!({})).await;
    let (st, b) = s.post_events(&id, json!({"kind":"corner","data":{"team":"elp"}})).await;
    assert_eq!(st, StatusCode::CONFLICT);
    assert!(b["error"].as_str().unwrap().contains("over"), "{b}");

    // Read API errors.
    let (st, b) = s.get("/1/match/abc-def-2020-01-01").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert!(b["error"].is_string());
    let (st, _) = s.get("/1/match/abc-def-2020-01-01/history").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, _) = s.get(&format!("/1/match/{id}/history?after=x")).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, _) = s.get("/nowhere").await;
    assert_eq!(st, StatusCode::NOT_FOUND);

    // The node still serves everyone.
    let (st, list) = s.get("/1/matches").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(list.as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn cancel_says_goodbye_and_frees_the_id() {
    let s = TestServer::start().await;
    let id = s.started_match().await;
    let mut v = Viewer::connect(s.viewer(), &format!("VERSION:2:CONNECT:u:MATCH:{id}")).await;
    assert_eq!(v.frame().await.unwrap()["kind"], "status");
    let (st, _) = s.send(Method::DELETE, &format!("/1/match/{id}"), None).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let bye = v.frame().await.unwrap();
    assert_eq!(bye, json!({"kind": "bye", "reason": "cancelled"}));
    assert!(v.frame().await.is_none());
    let (st, _) = s.get(&format!("/1/match/{id}")).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    // The same match can be created anew and starts over, and its viewers follow the new one.
    s.create_match("elp", "tig", "2011-09-10").await;
    let mut v = Viewer::connect(s.viewer(), &format!("VERSION:2:CONNECT:u:MATCH:{id}")).await;
    assert_eq!(v.frame().await.unwrap()["seq"], 0);
    assert_eq!(s.publish(&id, "start", start_data()).await, 1);
    let start = v.frame().await.unwrap();
    assert_eq!((start["seq"].as_u64(), start["kind"].as_str()), (Some(1), Some("start")));
}

#[tokio::test]
async fn no_configured_token_means_nobody_publishes() {
    let s = TestServer::start_with(|c| c.watcher_tokens.clear()).await;
    let (st, b) = s
        .send(
            Method::POST,
            "/1/matches",
            Some(json!({"home":"elp","visit":"tig","start_date":"2011-09-10"})),
        )
        .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    assert!(b["error"].as_str().unwrap().contains("no watcher token"));
}

#[tokio::test]
async fn a_publish_with_after_applies_only_at_that_seq_so_a_retry_is_safe() {
    let s = TestServer::start().await;
    let id = s.started_match().await;
    let path = format!("/1/match/{id}/events?after=1");
    let corner = json!({"kind": "corner", "data": {"team": "elp"}});
    let (st, b) = s.send(reqwest::Method::POST, &path, Some(corner.clone())).await;
    assert_eq!((st, &b["seq"]), (StatusCode::CREATED, &json!(2)), "{b}");
    // The same request again, as a watcher whose answer was lost would send it: not applied.
    let (st, b) = s.send(reqwest::Method::POST, &path, Some(corner.clone())).await;
    assert_eq!(st, StatusCode::CONFLICT, "{b}");
    assert_eq!(b["seq"], 2, "the 409 says where the match is: {b}");
    assert!(b["error"].as_str().unwrap().contains("at seq 2, not 1"), "{b}");
    // A batch at the right seq applies whole.
    let batch = json!([corner.clone(), corner.clone()]);
    let path = format!("/1/match/{id}/events?after=2");
    let (st, b) = s.send(reqwest::Method::POST, &path, Some(batch)).await;
    assert_eq!(st, StatusCode::CREATED, "{b}");
    assert_eq!(b, json!([{"seq": 3, "ts": b[0]["ts"]}, {"seq": 4, "ts": b[1]["ts"]}]));
    let path = format!("/1/match/{id}/events?after=two");
    let (st, b) = s.send(reqwest::Method::POST, &path, Some(corner)).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{b}");
    let (_, history) = s.get(&format!("/1/match/{id}/history")).await;
    assert_eq!(history.as_array().unwrap().len(), 4, "{history}");
}

#[tokio::test]
async fn healthz_and_readyz_answer_on_a_running_node() {
    let s = TestServer::start().await;
    let (st, body) = s.get("/healthz").await;
    assert_eq!((st, body), (StatusCode::OK, json!({"status": "ok"})));
    let (st, body) = s.get("/readyz").await;
    assert_eq!((st, body), (StatusCode::OK, json!({"status": "ready"})));
}

#[tokio::test]
async fn a_match_id_with_multi_byte_characters_is_simply_unknown() {
    let s = TestServer::start().await;
    // 17 bytes, the split between teams and date falling inside the "é".
    let (st, body) = s.get("/1/match/aaaaaa%C3%A9123456789").await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{body}");
    let mut v =
        Viewer::connect(s.viewer(), "VERSION:2:CONNECT:u:MATCH:aaaaaa\u{e9}123456789").await;
    assert_eq!(v.frame().await.unwrap()["reason"], "not_found");
    // The node is still there.
    assert_eq!(s.get("/healthz").await.0, StatusCode::OK);
}
