//! The limits of SPEC 10 on publishing and history, each hit once, and the errors of the watcher
//! API (SPEC 10: every 4xx names the field and what a valid value looks like).

use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::*;

/// Posts `body` as it is (it may not be JSON) with the test token: the status and the error.
async fn post_raw(
    s: &TestServer,
    path: &str,
    body: impl Into<reqwest::Body>,
) -> (StatusCode, String) {
    let answer = reqwest::Client::new()
        .post(format!("{}{path}", s.base))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("POST");
    let status = answer.status();
    let body: Value = answer.json().await.expect("a JSON error");
    (status, body["error"].as_str().unwrap_or_default().to_owned())
}

/// Posts events to a started match and expects them refused with `status`: the error.
async fn refused(s: &TestServer, id: &str, events: &str, status: StatusCode) -> String {
    let (got, error) = post_raw(s, &format!("/1/match/{id}/events"), events.to_owned()).await;
    assert_eq!(got, status, "{events} -> {error}");
    error
}

/// A GET of the read API: status, headers and the body as JSON.
async fn get(s: &TestServer, path: &str) -> (StatusCode, HeaderMap, Value) {
    let answer = reqwest::get(format!("{}{path}", s.base)).await.expect("GET");
    let (status, headers) = (answer.status(), answer.headers().clone());
    (status, headers, answer.json().await.unwrap_or(Value::Null))
}

/// The events of a list of `n` corners.
fn corners(n: usize) -> Value {
    Value::Array(vec![json!({"kind": "corner", "data": {"team": "elp"}}); n])
}

/// A started match with `events` events in all (start and corners).
async fn match_of(s: &TestServer, events: usize) -> String {
    let id = s.started_match().await;
    let mut sent = 1;
    while sent < events {
        let n = (events - sent).min(256);
        let (status, body) = s.post_events(&id, corners(n)).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        sent += n;
    }
    id
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).map(|v| v.to_str().expect("text"))
}

#[tokio::test]
async fn bad_json_is_told_where_it_stops_being_json() {
    let s = TestServer::start().await;
    let id = s.started_match().await;
    let e =
        refused(&s, &id, "[{\"kind\": \"corner\"},\n {kind: 1}]", StatusCode::BAD_REQUEST).await;
    assert!(
        e.starts_with(
            r#"the body is not valid JSON (line 2, column 3): send one event {"kind": "goal""#
        ),
        "{e}"
    );
}

#[tokio::test]
async fn an_unknown_kind_is_told_the_kinds() {
    let s = TestServer::start().await;
    let id = s.started_match().await;
    let e = refused(&s, &id, r#"{"kind": "dance"}"#, StatusCode::BAD_REQUEST).await;
    assert_eq!(
        e,
        r#"kind: unknown kind "dance": the kinds are start, stop, halftime_start, halftime_stop, extratime, penalties, shot, save, goal, corner, goalkick, offside, foul, penalty, freekick, card, substitution, throwin, comment"#
    );
}

#[tokio::test]
async fn an_unknown_data_key_is_named_with_the_valid_keys() {
    let s = TestServer::start().await;
    let id = s.started_match().await;
    let body = r#"[{"kind": "corner"}, {"kind": "goal", "data": {"team": "tig", "scorer": 7}}]"#;
    let e = refused(&s, &id, body, StatusCode::BAD_REQUEST).await;
    assert_eq!(
        e,
        r#"[1].data: unknown key "scorer": goal takes team, player, player_team (the keys of any event are home_players, visit_players, player, player_out, card, team, player_in, player_team, text)"#
    );
}

#[tokio::test]
async fn a_bad_player_is_shown_what_a_player_is() {
    let s = TestServer::start().await;
    let id = s.create_match("elp", "tig", "2011-09-10").await;
    let body = r#"{"kind": "start", "data": {"home_players": [1, 2]}}"#;
    let e = refused(&s, &id, body, StatusCode::BAD_REQUEST).await;
    assert_eq!(
        e,
        r#"data.home_players[0]: a player is {"number": 7, "name": "Luna"} (or a pair [7, "Luna"]), not 1"#
    );
    let body = r#"{"kind": "start", "data": {"home_players": [{"number": "7", "name": "Luna"}]}}"#;
    let e = refused(&s, &id, body, StatusCode::BAD_REQUEST).await;
    assert_eq!(
        e,
        r#"data.home_players[0].number: a shirt number is a whole number such as 7, not "7""#
    );
}

#[tokio::test]
async fn a_bad_line_up_is_shown_the_three_shapes() {
    let s = TestServer::start().await;
    let id = s.create_match("elp", "tig", "2011-09-10").await;
    let body = r#"{"kind": "start", "data": {"visit_players": "Luna, Morales"}}"#;
    let e = refused(&s, &id, body, StatusCode::BAD_REQUEST).await;
    assert_eq!(
        e,
        r#"data.visit_players: a line-up is a list of players [{"number": 7, "name": "Luna"}, ...], a list of pairs [[7, "Luna"], ...] or a map {"7": "Luna", ...}; not "Luna, Morales""#
    );
}

#[tokio::test]
async fn a_bad_card_is_told_the_two_cards() {
    let s = TestServer::start().await;
    let id = s.started_match().await;
    let body = r#"{"kind": "card", "data": {"team": "elp", "player": 25, "card": "blue"}}"#;
    let e = refused(&s, &id, body, StatusCode::BAD_REQUEST).await;
    assert_eq!(e, r#"data.card: a card is "yellow" or "red", not "blue""#);
}

#[tokio::test]
async fn a_bad_team_id_is_told_what_an_id_looks_like() {
    let s = TestServer::start().await;
    let id = s.started_match().await;
    let e =
        refused(&s, &id, r#"{"kind": "goal", "data": {"team": "Tig"}}"#, StatusCode::BAD_REQUEST)
            .await;
    assert_eq!(
        e,
        r#"data.team: a team id is 1 to 16 of a-z, 0-9 and _ ([a-z0-9_]{1,16}), e.g. "elp", not "Tig""#
    );
}

#[tokio::test]
async fn a_bad_new_match_names_the_missing_or_wrong_field() {
    let s = TestServer::start().await;
    let cases = [
        (
            json!({"home": "elp", "visit": "tig"}),
            r#"start_date is missing: a match needs home, visit and start_date, {"home": "elp", "visit": "tig", "start_date": "2011-09-10"}"#,
        ),
        (
            json!({"home": "elp", "visit": "tig", "start_date": "10/09/2011"}),
            r#"start_date: a date is "2011-09-10" (year-month-day, a day of the calendar), not "10/09/2011""#,
        ),
        (
            json!({"home": "elp", "visit": 7, "start_date": "2011-09-10"}),
            r#"visit: a team id is 1 to 16 of a-z, 0-9 and _ ([a-z0-9_]{1,16}), e.g. "elp", not 7"#,
        ),
        (
            json!({"home": "elp", "visit": "tig", "start_date": "2011-09-10", "date": "x"}),
            r#"unknown key "date": a match has the keys home, visit, start_date, home_name, visit_name, division, stadium (the first three are needed)"#,
        ),
    ];
    for (body, want) in cases {
        let (status, e) = post_raw(&s, "/1/matches", body.to_string()).await;
        assert_eq!((status, e.as_str()), (StatusCode::BAD_REQUEST, want), "{body}");
    }
    assert_eq!(s.get("/1/matches").await.1, json!([]), "nothing was created");
}

#[tokio::test]
async fn a_bad_after_is_told_it_is_a_seq() {
    let s = TestServer::start().await;
    let id = s.started_match().await;
    let path = format!("/1/match/{id}/events?after=one");
    let (status, e) = post_raw(&s, &path, r#"{"kind": "corner"}"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        e,
        r#"after: the seq the match must be at, a whole number such as 12 (?after=12), not "one""#
    );
    let (status, _, body) = get(&s, &format!("/1/match/{id}/history?after=-1")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["error"],
        r#"after: the seq to list events after, a whole number such as 12 (0, the default, lists from the first), not "-1""#
    );
}

#[tokio::test]
async fn a_limit_of_zero_or_not_a_number_is_told_its_range() {
    let s = TestServer::start().await;
    let id = s.started_match().await;
    for limit in ["0", "all"] {
        let (status, _, body) = get(&s, &format!("/1/match/{id}/history?limit={limit}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(
            body["error"].as_str().unwrap(),
            format!(
                "limit: the most events of a page, a whole number from 1 to 2000 (a larger one \
                 is capped at 2000; without it, 500), not \"{limit}\""
            )
        );
    }
}

#[tokio::test]
async fn at_most_256_events_per_request() {
    let s = TestServer::start().await;
    let id = s.started_match().await;
    let (status, e) =
        post_raw(&s, &format!("/1/match/{id}/events"), corners(257).to_string()).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        e,
        "at most 256 events per request (--max-events-per-request), this one has 257: send the \
         rest in another request"
    );
    assert_eq!(s.get(&format!("/1/match/{id}")).await.1["seq"], 1, "nothing applied");
    let (status, acks) = s.post_events(&id, corners(256)).await;
    assert_eq!(status, StatusCode::CREATED, "{acks}");
    assert_eq!(acks.as_array().map(Vec::len), Some(256));
    assert_eq!(acks[255]["seq"], 257);
}

#[tokio::test]
async fn at_most_60_players_per_team_in_a_line_up() {
    let s = TestServer::start().await;
    let id = s.create_match("elp", "tig", "2011-09-10").await;
    let players: Vec<Value> = (1..=61).map(|n| json!({"number": n, "name": "P"})).collect();
    let body = json!({"kind": "start", "data": {"home_players": players}}).to_string();
    let e = refused(&s, &id, &body, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(e, "data.home_players: at most 60 players per team in a line-up, this one has 61");
    let sixty = json!({"home_players": players[..60]});
    assert_eq!(s.publish(&id, "start", sixty).await, 1);
}

#[tokio::test]
async fn names_stadiums_and_comments_have_their_length() {
    let s = TestServer::start().await;
    let id = s.started_match().await;
    // Characters, not bytes: "é" is two bytes.
    let name = "é".repeat(65);
    let body = json!({"kind": "substitution", "data": {"team": "elp", "player_out": 25,
        "player_in": {"number": 9, "name": name}}});
    let e = refused(&s, &id, &body.to_string(), StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(e, "data.player_in.name: at most 64 characters, this one has 65");
    let body = json!({"kind": "comment", "data": {"text": "é".repeat(281)}});
    let e = refused(&s, &id, &body.to_string(), StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(e, "data.text: at most 280 characters, this one has 281");
    let body = json!({"kind": "comment", "data": {"text": "é".repeat(280)}});
    assert_eq!(s.post_events(&id, body).await.0, StatusCode::CREATED);

    let new = |key: &str, value: String| {
        let mut m = json!({"home": "aaa", "visit": "bbb", "start_date": "2020-01-01"});
        m[key] = Value::String(value);
        m.to_string()
    };
    for (key, max) in [("stadium", 200), ("division", 200), ("home_name", 64), ("visit_name", 64)] {
        let (status, e) = post_raw(&s, "/1/matches", new(key, "é".repeat(max + 1))).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{key}: {e}");
        assert_eq!(e, format!("{key}: at most {max} characters, this one has {}", max + 1));
    }
    let (status, e) = post_raw(&s, "/1/matches", new("stadium", "é".repeat(200))).await;
    assert_eq!(status, StatusCode::CREATED, "{e}");
}

#[tokio::test]
async fn a_history_is_read_page_by_page_following_the_next_link() {
    let s = TestServer::start().await;
    let id = match_of(&s, 600).await;
    let (status, headers, page) = get(&s, &format!("/1/match/{id}/history")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page.as_array().map(Vec::len), Some(500), "the default page");
    assert_eq!(page[499]["seq"], 500);
    let link = header(&headers, "link").expect("a Link to the next page");
    assert_eq!(link, format!("</1/match/{id}/history?after=500&limit=500>; rel=\"next\""));
    assert_eq!(header(&headers, "x-next-after"), Some("500"));
    // Revalidated: a 304 that still points at the next page.
    let etag = header(&headers, "etag").expect("an ETag").to_owned();
    let again = reqwest::Client::new()
        .get(format!("{}/1/match/{id}/history", s.base))
        .header("if-none-match", &etag)
        .send()
        .await
        .expect("GET");
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(header(again.headers(), "x-next-after"), Some("500"));

    let next = link.trim_start_matches('<').split('>').next().expect("a URL");
    let (status, headers, page) = get(&s, next).await;
    assert_eq!(status, StatusCode::OK);
    let seqs: Vec<u64> =
        page.as_array().unwrap().iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (501..=600).collect::<Vec<_>>());
    assert_eq!((header(&headers, "link"), header(&headers, "x-next-after")), (None, None));

    // A full page that ends with the match has no next page, until the match moves on.
    let full = format!("/1/match/{id}/history?after=501&limit=99");
    let (_, headers, page) = get(&s, &full).await;
    assert_eq!((&page[98]["seq"], header(&headers, "x-next-after")), (&json!(600), None));
    s.publish(&id, "corner", json!({"team": "tig"})).await;
    let (_, headers, page) = get(&s, &full).await;
    assert_eq!((&page[98]["seq"], header(&headers, "x-next-after")), (&json!(600), Some("600")));
}

#[tokio::test]
async fn a_larger_limit_is_capped_and_the_answer_points_at_the_rest() {
    let s = TestServer::start().await;
    let id = match_of(&s, 2001).await;
    let (status, headers, page) = get(&s, &format!("/1/match/{id}/history?limit=5000")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page.as_array().map(Vec::len), Some(2000));
    assert_eq!(
        header(&headers, "link"),
        Some(&*format!("</1/match/{id}/history?after=2000&limit=2000>; rel=\"next\""))
    );
    assert_eq!(header(&headers, "x-next-after"), Some("2000"));
    let (_, headers, page) = get(&s, &format!("/1/match/{id}/history?after=2000&limit=2000")).await;
    assert_eq!(page.as_array().map(Vec::len), Some(1));
    assert_eq!(header(&headers, "x-next-after"), None);
}

#[tokio::test]
async fn the_history_of_an_unknown_match_is_404() {
    let s = TestServer::start().await;
    // Whether the store was read is seen by a unit test (api/read.rs): here, what a user sees.
    let (status, _, body) = get(&s, "/1/match/abc-def-2020-01-01/history").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body, json!({"error": "no match abc-def-2020-01-01"}));
}
