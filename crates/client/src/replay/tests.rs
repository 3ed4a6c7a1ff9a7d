//! Replay against a fake watcher API (axum): the requests it sends, in order, with the token and
//! `?after=`, and what it does on existing matches (fail, replace, resume), refusals, lost
//! answers and bad servers.
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use super::*;
use crate::matchfile;

const TOKEN: &str = "s3cret";

/// What the fake server saw and how it behaves.
#[derive(Default)]
struct Fake {
    /// `METHOD path body` per request, in arrival order.
    seen: Vec<String>,
    /// The `Authorization` header of each request.
    auth: Vec<Option<String>>,
    exists: bool,
    seq: u64,
    /// Answer `GET /1/match/<id>` with a 404 although it exists (cancelled in the meantime).
    unreadable: bool,
    /// Refuse the event with this seq (1-based) with a 422.
    refuse: Option<u64>,
    /// Apply the event with this seq, then hang up without answering (a lost answer).
    lose_answer: Option<u64>,
    /// Answer this many event requests with `503` (the store is down) before taking them.
    unavailable: usize,
}

type Shared = Arc<Mutex<Fake>>;

/// Records the request; says whether it carries the right token.
fn record(fake: &Shared, headers: &HeaderMap, what: String) -> bool {
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let mut f = fake.lock().unwrap();
    f.seen.push(what);
    let ok = auth.as_deref() == Some(&format!("Bearer {TOKEN}"));
    f.auth.push(auth);
    ok
}

/// What the real server answers without a valid token.
fn unauthorized() -> Response {
    (StatusCode::UNAUTHORIZED, Json(json!({"error": "no valid watcher token"}))).into_response()
}

async fn create(
    State(fake): State<Shared>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if !record(&fake, &headers, format!("POST /1/matches {body}")) {
        return unauthorized();
    }
    let mut f = fake.lock().unwrap();
    if f.exists {
        return (StatusCode::CONFLICT, Json(json!({"error": "exists"}))).into_response();
    }
    f.exists = true;
    let id = format!(
        "{}-{}-{}",
        body["home"].as_str().unwrap(),
        body["visit"].as_str().unwrap(),
        body["start_date"].as_str().unwrap()
    );
    (StatusCode::CREATED, Json(json!({ "id": id }))).into_response()
}

async fn cancel(
    State(fake): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if !record(&fake, &headers, format!("DELETE /1/match/{id}")) {
        return unauthorized();
    }
    let mut f = fake.lock().unwrap();
    f.exists = false;
    f.seq = 0;
    StatusCode::NO_CONTENT.into_response()
}

/// `GET /1/match/<id>`: the public read API, no token needed; a part of the match object.
async fn read(State(fake): State<Shared>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    record(&fake, &headers, format!("GET /1/match/{id}"));
    let f = fake.lock().unwrap();
    if !f.exists || f.unreadable {
        let error = json!({ "error": format!("no match {id}") });
        return (StatusCode::NOT_FOUND, Json(error)).into_response();
    }
    Json(json!({"home": "elp", "visit": "tig", "period": "first", "seq": f.seq})).into_response()
}

#[derive(serde::Deserialize)]
struct After {
    after: Option<u64>,
}

async fn events(
    State(fake): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<After>,
    Json(body): Json<Value>,
) -> Response {
    let after = q.after.map(|a| format!("?after={a}")).unwrap_or_default();
    if !record(&fake, &headers, format!("POST /1/match/{id}/events{after} {body}")) {
        return unauthorized();
    }
    let mut f = fake.lock().unwrap();
    if f.unavailable > 0 {
        f.unavailable -= 1;
        let error = json!({"error": "the store cannot take this now: try again shortly"});
        return (StatusCode::SERVICE_UNAVAILABLE, Json(error)).into_response();
    }
    if q.after.is_some_and(|a| a != f.seq) {
        let error = json!({"error": "not at that seq", "seq": f.seq});
        return (StatusCode::CONFLICT, Json(error)).into_response();
    }
    if f.refuse == Some(f.seq + 1) {
        let error = json!({"error": "goal before start"});
        return (StatusCode::UNPROCESSABLE_ENTITY, Json(error)).into_response();
    }
    f.seq += 1;
    if f.lose_answer == Some(f.seq) {
        f.lose_answer = None;
        drop(f);
        // Unwinding out of the handler makes hyper drop the connection unanswered.
        std::panic::resume_unwind(Box::new("the fake loses this answer"));
    }
    (StatusCode::CREATED, Json(json!({"seq": f.seq, "ts": 1316094531000u64}))).into_response()
}

/// Starts the fake on a free port; returns its base URL and what it records.
async fn fake_server(fake: Fake) -> (String, Shared) {
    let shared = Arc::new(Mutex::new(fake));
    let app = Router::new()
        .route("/1/matches", post(create))
        .route("/1/match/{id}", get(read).delete(cancel))
        .route("/1/match/{id}/events", post(events))
        .with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), shared)
}

fn small_file() -> MatchFile {
    matchfile::parse(
        r#"{home, [{id, <<"elp">>}, {name, <<"Estudiantes">>}]}.
           {visit, <<"tig">>}.
           {start_date, {2011, 9, 10}}.
           {steps, [{sleep, 2000}, {start, []}, {sleep, 1000},
                    {goal, [{team, <<"tig">>}, {player, 7}]}, {stop, []}]}."#,
    )
    .unwrap()
}

fn options(server: &str) -> ReplayOptions {
    ReplayOptions {
        server: server.to_owned(),
        token: TOKEN.into(),
        speed: 1000.0,
        if_exists: IfExists::Fail,
        tls: None,
    }
}

/// Runs a replay, returning its result and its progress reports written out.
async fn run(
    file: &MatchFile,
    opts: &ReplayOptions,
) -> (Result<Summary, ReplayError>, Vec<String>) {
    let mut reports = Vec::new();
    let result = replay(file, opts, |p| reports.push(format!("{p:?}"))).await;
    (result, reports)
}

const CREATE: &str = r#"POST /1/matches {"home":"elp","visit":"tig","start_date":"2011-09-10","home_name":"Estudiantes"}"#;

#[tokio::test]
async fn publishes_every_step_in_order_with_the_token() {
    let (server, fake) = fake_server(Fake::default()).await;
    let (result, reports) = run(&small_file(), &options(&server)).await;
    let id = MatchId::parse("elp-tig-2011-09-10").unwrap();
    assert_eq!(result.unwrap(), Summary { id: id.clone(), events: 3, last_seq: 3 });
    let f = fake.lock().unwrap();
    assert_eq!(
        f.seen,
        [
            CREATE,
            r#"POST /1/match/elp-tig-2011-09-10/events?after=0 {"kind":"start","data":{}}"#,
            r#"POST /1/match/elp-tig-2011-09-10/events?after=1 {"kind":"goal","data":{"team":"tig","player":7}}"#,
            r#"POST /1/match/elp-tig-2011-09-10/events?after=2 {"kind":"stop","data":{}}"#,
        ]
    );
    assert!(f.auth.iter().all(|a| a.as_deref() == Some("Bearer s3cret")), "{:?}", f.auth);
    let published =
        |index, kind, seq| format!("{:?}", Progress::Published { index, total: 3, kind, seq });
    assert_eq!(
        reports,
        [
            format!("{:?}", Progress::Created { id: &id }),
            format!("{:?}", Progress::Waiting { ms: 2 }),
            published(1, "start", 1),
            format!("{:?}", Progress::Waiting { ms: 1 }),
            published(2, "goal", 2),
            published(3, "stop", 3),
        ]
    );
}

#[tokio::test]
async fn a_lost_answer_is_retried_without_publishing_twice() {
    let (server, fake) = fake_server(Fake { lose_answer: Some(2), ..Fake::default() }).await;
    let (result, reports) = run(&small_file(), &options(&server)).await;
    let summary = result.unwrap();
    assert_eq!((summary.events, summary.last_seq), (3, 3));
    let f = fake.lock().unwrap();
    assert_eq!(f.seq, 3, "each event applied once");
    let goals: Vec<_> = f.seen.iter().filter(|r| r.contains("goal")).collect();
    assert_eq!(goals.len(), 2, "the goal was posted again: {:?}", f.seen);
    assert!(goals.iter().all(|r| r.contains("?after=1")), "{goals:?}");
    assert!(reports.iter().any(|r| r.starts_with("Retrying { index: 2")), "{reports:?}");
    assert!(reports.contains(&format!(
        "{:?}",
        Progress::Published { index: 2, total: 3, kind: "goal", seq: 2 }
    )));
}

/// A store down for a while (SPEC 8: retried for up to 60 s): four `503`s in a row take
/// 0.5 + 1 + 2 + 4 s of waiting, more than the 3.5 s replay used to give a server.
#[tokio::test]
async fn a_store_down_for_a_while_is_waited_for() {
    let (server, fake) = fake_server(Fake { unavailable: 4, ..Fake::default() }).await;
    let (result, reports) = run(&small_file(), &options(&server)).await;
    assert_eq!(result.unwrap().last_seq, 3);
    let retries: Vec<_> = reports.iter().filter(|r| r.starts_with("Retrying")).collect();
    assert_eq!(retries.len(), 4, "{reports:?}");
    assert!(retries.iter().all(|r| r.contains("503")), "{retries:?}");
    assert_eq!(fake.lock().unwrap().seq, 3, "each event applied once");
}

#[tokio::test]
async fn the_seed_file_replays_whole() {
    let file =
        matchfile::parse(include_str!("../../../../matches/elp-tig-2011-09-10.config")).unwrap();
    let (server, fake) = fake_server(Fake::default()).await;
    let opts = ReplayOptions { server: format!("{server}/"), ..options(&server) };
    let summary = run(&file, &opts).await.0.unwrap();
    assert_eq!((summary.events, summary.last_seq), (31, 31));
    assert_eq!(fake.lock().unwrap().seen.len(), 32);
}

#[tokio::test]
async fn an_existing_match_is_an_error_without_replace() {
    let (server, fake) = fake_server(Fake { exists: true, ..Fake::default() }).await;
    let err = run(&small_file(), &options(&server)).await.0.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "match elp-tig-2011-09-10 already exists on {server}; \
             pass --resume to continue it, or --replace to cancel it and replay it anew"
        )
    );
    assert_eq!(fake.lock().unwrap().seen, [CREATE]);
}

#[tokio::test]
async fn replace_cancels_then_creates_anew() {
    let (server, fake) = fake_server(Fake { exists: true, seq: 40, ..Fake::default() }).await;
    let opts = ReplayOptions { if_exists: IfExists::Replace, ..options(&server) };
    let (result, reports) = run(&small_file(), &opts).await;
    assert_eq!(result.unwrap().last_seq, 3);
    let seen = fake.lock().unwrap().seen.clone();
    assert_eq!(seen[..3], [CREATE, "DELETE /1/match/elp-tig-2011-09-10", CREATE]);
    assert_eq!(seen.len(), 6);
    assert!(
        reports[0].starts_with("Replacing") && reports[1].starts_with("Created"),
        "{reports:?}"
    );
}

const READ: &str = "GET /1/match/elp-tig-2011-09-10";
const START: &str = r#"POST /1/match/elp-tig-2011-09-10/events?after=0 {"kind":"start","data":{}}"#;
const GOAL: &str = r#"POST /1/match/elp-tig-2011-09-10/events?after=1 {"kind":"goal","data":{"team":"tig","player":7}}"#;
const STOP: &str = r#"POST /1/match/elp-tig-2011-09-10/events?after=2 {"kind":"stop","data":{}}"#;

fn resume(server: &str) -> ReplayOptions {
    ReplayOptions { if_exists: IfExists::Resume, ..options(server) }
}

#[tokio::test]
async fn resume_publishes_only_the_events_after_the_matchs_seq() {
    let (server, fake) = fake_server(Fake { exists: true, seq: 1, ..Fake::default() }).await;
    let (result, reports) = run(&small_file(), &resume(&server)).await;
    let id = MatchId::parse("elp-tig-2011-09-10").unwrap();
    assert_eq!(result.unwrap(), Summary { id: id.clone(), events: 2, last_seq: 3 });
    let f = fake.lock().unwrap();
    assert_eq!(f.seen, [CREATE, READ, GOAL, STOP]);
    assert_eq!(f.seq, 3);
    // The pause before the goal (the next event) is skipped: it goes out at once.
    let published =
        |index, kind, seq| format!("{:?}", Progress::Published { index, total: 3, kind, seq });
    assert_eq!(
        reports,
        [
            format!("{:?}", Progress::Resuming { id: &id, seq: 1 }),
            published(2, "goal", 2),
            published(3, "stop", 3),
        ]
    );
}

#[tokio::test]
async fn resume_of_a_match_created_ahead_starts_at_once_with_the_first_event() {
    let (server, fake) = fake_server(Fake { exists: true, ..Fake::default() }).await;
    let (result, reports) = run(&small_file(), &resume(&server)).await;
    assert_eq!((result.unwrap().events, fake.lock().unwrap().seq), (3, 3));
    assert_eq!(fake.lock().unwrap().seen, [CREATE, READ, START, GOAL, STOP]);
    // The file's opening pause is skipped, the one between its events kept.
    let waits: Vec<_> = reports.iter().filter(|r| r.starts_with("Waiting")).collect();
    assert_eq!(waits, [&format!("{:?}", Progress::Waiting { ms: 1 })], "{reports:?}");
    assert!(reports[1].starts_with("Published { index: 1,"), "{reports:?}");
}

#[tokio::test]
async fn resume_of_a_match_that_does_not_exist_creates_it_and_publishes_all() {
    let (server, fake) = fake_server(Fake::default()).await;
    let (result, reports) = run(&small_file(), &resume(&server)).await;
    let summary = result.unwrap();
    assert_eq!((summary.events, summary.last_seq), (3, 3));
    assert_eq!(fake.lock().unwrap().seen, [CREATE, START, GOAL, STOP]);
    let id = MatchId::parse("elp-tig-2011-09-10").unwrap();
    assert_eq!(reports[0], format!("{:?}", Progress::Created { id: &id }));
    assert_eq!(reports.iter().filter(|r| r.starts_with("Waiting")).count(), 2, "{reports:?}");
}

#[tokio::test]
async fn resume_at_or_past_the_files_end_publishes_nothing() {
    let id = MatchId::parse("elp-tig-2011-09-10").unwrap();
    for seq in [3, 40] {
        let (server, fake) = fake_server(Fake { exists: true, seq, ..Fake::default() }).await;
        let (result, reports) = run(&small_file(), &resume(&server)).await;
        assert_eq!(result.unwrap(), Summary { id: id.clone(), events: 0, last_seq: seq });
        assert_eq!(fake.lock().unwrap().seen, [CREATE, READ], "at seq {seq}");
        assert_eq!(reports, [format!("{:?}", Progress::Resuming { id: &id, seq })]);
    }
}

#[tokio::test]
async fn resume_of_a_match_gone_before_it_is_read_is_refused() {
    let fake = Fake { exists: true, seq: 1, unreadable: true, ..Fake::default() };
    let (server, fake) = fake_server(fake).await;
    let err = run(&small_file(), &resume(&server)).await.0.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{server} refused reading match elp-tig-2011-09-10 to resume it: \
             404 Not Found: no match elp-tig-2011-09-10"
        )
    );
    assert_eq!(fake.lock().unwrap().seen, [CREATE, READ], "nothing published");
}

#[tokio::test]
async fn a_refused_event_stops_the_replay_and_is_named() {
    let (server, fake) = fake_server(Fake { refuse: Some(2), ..Fake::default() }).await;
    let (result, reports) = run(&small_file(), &options(&server)).await;
    let err = result.unwrap_err();
    assert!(
        matches!(&err, ReplayError::EventRefused { index: 2, total: 3, kind, status, message, .. }
            if kind == "goal" && *status == StatusCode::UNPROCESSABLE_ENTITY
                && message == "goal before start"),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "{server} refused event 2 of 3 (goal): 422 Unprocessable Entity: goal before start"
        )
    );
    assert_eq!(fake.lock().unwrap().seen.len(), 3, "nothing is sent after the refused event");
    assert_eq!(reports.iter().filter(|r| r.starts_with("Published")).count(), 1);
}

#[tokio::test]
async fn a_wrong_token_is_refused_with_the_servers_reason() {
    let (server, _fake) = fake_server(Fake::default()).await;
    let opts = ReplayOptions { token: "wrong".into(), ..options(&server) };
    let err = run(&small_file(), &opts).await.0.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("{server} refused creating match elp-tig-2011-09-10: 401 Unauthorized: no valid watcher token")
    );
}

#[tokio::test]
async fn bad_speeds_and_servers_fail_before_any_request() {
    let (server, fake) = fake_server(Fake::default()).await;
    for speed in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        let opts = ReplayOptions { speed, ..options(&server) };
        let err = run(&small_file(), &opts).await.0.unwrap_err();
        assert!(matches!(err, ReplayError::BadSpeed(_)), "{speed}: {err:?}");
    }
    for bad in ["127.0.0.1:8888", "ftp://127.0.0.1", "http://127.0.0.1:8888/?x=1"] {
        let err = run(&small_file(), &options(bad)).await.0.unwrap_err();
        assert!(matches!(err, ReplayError::BadServer { .. }), "{bad}: {err:?}");
    }
    assert!(fake.lock().unwrap().seen.is_empty());
}

#[tokio::test]
async fn an_unreachable_server_is_named() {
    // A port that was free a moment ago: nothing listens there now.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let server = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let err = run(&small_file(), &options(&server)).await.0.unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!(
            "cannot reach the server at {server} while creating match elp-tig-2011-09-10: "
        )),
        "{msg}"
    );
    assert!(msg.to_lowercase().contains("refused"), "{msg}");
}
