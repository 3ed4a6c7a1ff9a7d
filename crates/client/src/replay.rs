//! The replaying watcher's client (SPEC sections 2 and 6): publishes a [`MatchFile`] to a server
//! through the watcher API, keeping the file's pauses divided by a speed. It does not read files
//! (`matchfile`) or print (the caller gets [`Progress`] reports). Each event is posted with
//! `?after=<seq before it>`, so an event whose answer was lost can be posted again safely: if
//! the server had applied it, the retry gets a `409` naming the seq it reached, and nothing is
//! recorded twice.

use std::time::Duration;

use matchstream_proto::{MatchId, Seq};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::Value;

use crate::matchfile::{MatchFile, Step};
use crate::watcher::{quote, Answer, Watcher, WatcherError};

/// Where and how to replay.
#[derive(Clone, Debug)]
pub struct ReplayOptions {
    /// The server's base URL, like `http://127.0.0.1:8888`.
    pub server: String,
    /// A watcher token the server is configured with.
    pub token: String,
    /// Pauses are divided by this: `10.0` plays ten times faster. Finite and above 0.
    pub speed: f64,
    /// If the match exists, cancel it and create it anew instead of failing.
    pub replace: bool,
}

/// What the replay is doing, reported as it happens.
#[derive(Clone, Debug, PartialEq)]
pub enum Progress<'a> {
    /// The match existed and is being cancelled (with `replace`).
    Replacing { id: &'a MatchId },
    /// The match was created; its steps follow.
    Created { id: &'a MatchId },
    /// About to wait this many milliseconds of real time (the file's pause divided by the speed).
    Waiting { ms: u64 },
    /// Event `index` of `total` (1-based, events only) was accepted with this `seq`.
    Published { index: usize, total: usize, kind: &'a str, seq: Seq },
    /// Event `index` got no answer (`reason`); it is posted again after `wait_ms`.
    Retrying { index: usize, wait_ms: u64, reason: String },
}

/// What a finished replay did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    pub id: MatchId,
    /// How many events were published.
    pub events: usize,
    /// The `seq` the server gave the last event (0 if the file has none).
    pub last_seq: Seq,
}

/// Why a replay stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("speed must be a finite number above 0, not {0}")]
    BadSpeed(f64),
    #[error("{server:?} is not a server URL such as http://127.0.0.1:8888 ({reason})")]
    BadServer { server: String, reason: String },
    /// No answer at all: the server is down, unreachable or too slow.
    #[error("cannot reach the server at {server} while {during}: {reason}")]
    Unreachable { server: String, during: String, reason: String },
    #[error(
        "match {id} already exists on {server}; pass --replace to cancel it and replay it anew"
    )]
    Exists { id: MatchId, server: String },
    /// The server refused to create or cancel the match (bad token, bad body...).
    #[error("{server} refused {during}: {status}: {message}")]
    Refused { server: String, during: String, status: StatusCode, message: String },
    /// The server refused an event; the events before it were published.
    #[error("{server} refused event {index} of {total} ({kind}): {status}: {message}")]
    EventRefused {
        server: String,
        index: usize,
        total: usize,
        kind: String,
        status: StatusCode,
        message: String,
    },
    /// A success status with a body that is not what SPEC section 2 says.
    #[error("{server} answered {during} with {status} but an unexpected body: {detail}")]
    BadAnswer { server: String, during: String, status: StatusCode, detail: String },
}

/// Publishes `file` to `opts.server`: creates the match (cancelling an existing one first if
/// `opts.replace`), then walks its steps, sleeping for pauses and posting events one at a time.
/// Stops at the first error; the events already published stay published.
pub async fn replay(
    file: &MatchFile,
    opts: &ReplayOptions,
    mut progress: impl FnMut(Progress<'_>),
) -> Result<Summary, ReplayError> {
    if !(opts.speed.is_finite() && opts.speed > 0.0) {
        return Err(ReplayError::BadSpeed(opts.speed));
    }
    let api = Api::new(opts)?;
    let id = file.id();

    if !api.create(file, &id).await? {
        if !opts.replace {
            return Err(ReplayError::Exists { id, server: opts.server.clone() });
        }
        progress(Progress::Replacing { id: &id });
        api.cancel(&id).await?;
        if !api.create(file, &id).await? {
            // Someone created it again between our cancel and create: do not fight them.
            return Err(ReplayError::Refused {
                server: opts.server.clone(),
                during: format!("creating match {id} after cancelling it"),
                status: StatusCode::CONFLICT,
                message: "it was created again in the meantime".into(),
            });
        }
    }
    progress(Progress::Created { id: &id });

    let total = file.events().count();
    let mut index = 0;
    let mut last_seq = 0;
    for step in &file.steps {
        match step {
            Step::Sleep(ms) => {
                // Checked above: speed is finite and positive, so only overflow can fail here.
                let wait = Duration::try_from_secs_f64(*ms as f64 / 1000.0 / opts.speed)
                    .unwrap_or(Duration::MAX);
                progress(Progress::Waiting {
                    ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                });
                tokio::time::sleep(wait).await;
            }
            Step::Event(event) => {
                index += 1;
                let kind = step.kind().unwrap_or("event");
                let at = EventAt { after: last_seq, index, total, kind };
                last_seq = api.publish(&id, event, &at, &mut progress).await?;
                progress(Progress::Published { index, total, kind, seq: last_seq });
            }
        }
    }
    Ok(Summary { id, events: index, last_seq })
}

/// Attempts for one event that gets no answer (the server restarting, a lost answer). Safe
/// because each carries `?after=`: an event the server did apply is not applied again.
const PUBLISH_ATTEMPTS: u32 = 4;
/// Wait before the first retry, doubled before each next one (0.5 + 1 + 2 s in all).
const RETRY_WAIT: Duration = Duration::from_millis(500);

/// Where an event stands in the replay.
struct EventAt<'a> {
    /// The seq the match is at before it.
    after: Seq,
    index: usize,
    total: usize,
    kind: &'a str,
}

/// The watcher API calls a replay makes, with its errors.
struct Api<'a> {
    watcher: Watcher,
    /// The server as the user gave it, for messages.
    server: &'a str,
}

impl<'a> Api<'a> {
    fn new(opts: &'a ReplayOptions) -> Result<Api<'a>, ReplayError> {
        let watcher = Watcher::new(&opts.server, &opts.token).map_err(|e| match e {
            WatcherError::BadServer { server, reason } => ReplayError::BadServer { server, reason },
            WatcherError::Unreachable { server, reason } => {
                ReplayError::Unreachable { server, during: "setting up".into(), reason }
            }
        })?;
        Ok(Api { watcher, server: &opts.server })
    }

    /// Sends one request and reads the whole answer.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        during: &dyn Fn() -> String,
    ) -> Result<Answer, ReplayError> {
        self.watcher.send(method, path, body).await.map_err(|e| match e {
            WatcherError::Unreachable { server, reason }
            | WatcherError::BadServer { server, reason } => {
                ReplayError::Unreachable { server, during: during(), reason }
            }
        })
    }

    /// `POST /1/matches`: `Ok(true)` when created, `Ok(false)` when it already exists.
    async fn create(&self, file: &MatchFile, id: &MatchId) -> Result<bool, ReplayError> {
        let during = || format!("creating match {id}");
        let answer =
            self.send(Method::POST, "/1/matches", Some(&file.create_body()), &during).await?;
        if answer.status == StatusCode::CONFLICT {
            return Ok(false);
        }
        if !answer.status.is_success() {
            return Err(self.refused(during(), &answer));
        }
        #[derive(Deserialize)]
        struct Created {
            id: String,
        }
        match serde_json::from_str::<Created>(&answer.text) {
            Ok(created) if created.id == id.as_str() => Ok(true),
            Ok(created) => {
                Err(self.bad_answer(during(), &answer, format!("it created {:?}", created.id)))
            }
            Err(e) => {
                let detail = format!("{e} in {}", quote(&answer.text));
                Err(self.bad_answer(during(), &answer, detail))
            }
        }
    }

    /// `DELETE /1/match/<id>`.
    async fn cancel(&self, id: &MatchId) -> Result<(), ReplayError> {
        let during = || format!("cancelling match {id}");
        let answer = self.send(Method::DELETE, &format!("/1/match/{id}"), None, &during).await?;
        if answer.status.is_success() {
            Ok(())
        } else {
            Err(self.refused(during(), &answer))
        }
    }

    /// `POST /1/match/<id>/events?after=<seq>` with one event, posted again while no answer
    /// comes; returns the `seq` the server gave it.
    async fn publish(
        &self,
        id: &MatchId,
        event: &Value,
        at: &EventAt<'_>,
        progress: &mut impl FnMut(Progress<'_>),
    ) -> Result<Seq, ReplayError> {
        let EventAt { after, index, total, kind } = *at;
        let during = || format!("publishing event {index} of {total} ({kind})");
        let path = format!("/1/match/{id}/events?after={after}");
        let (mut attempt, mut wait) = (1, RETRY_WAIT);
        let answer = loop {
            match self.send(Method::POST, &path, Some(event), &during).await {
                Ok(answer) => break answer,
                Err(ReplayError::Unreachable { reason, .. }) if attempt < PUBLISH_ATTEMPTS => {
                    let wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
                    progress(Progress::Retrying { index, wait_ms, reason });
                    tokio::time::sleep(wait).await;
                    (attempt, wait) = (attempt + 1, wait * 2);
                }
                Err(e) => return Err(e),
            }
        };
        // A retry finding the match one past `after`: the lost answer was a success.
        if answer.status == StatusCode::CONFLICT
            && attempt > 1
            && answer.json()["seq"].as_u64() == Some(after + 1)
        {
            return Ok(after + 1);
        }
        if !answer.status.is_success() {
            return Err(ReplayError::EventRefused {
                server: self.server.to_owned(),
                index,
                total,
                kind: kind.to_owned(),
                status: answer.status,
                message: answer.error_message(),
            });
        }
        #[derive(Deserialize)]
        struct Accepted {
            seq: Seq,
        }
        serde_json::from_str::<Accepted>(&answer.text).map(|a| a.seq).map_err(|e| {
            self.bad_answer(during(), &answer, format!("{e} in {}", quote(&answer.text)))
        })
    }

    fn refused(&self, during: String, answer: &Answer) -> ReplayError {
        ReplayError::Refused {
            server: self.server.to_owned(),
            during,
            status: answer.status,
            message: answer.error_message(),
        }
    }

    fn bad_answer(&self, during: String, answer: &Answer, detail: String) -> ReplayError {
        ReplayError::BadAnswer {
            server: self.server.to_owned(),
            during,
            status: answer.status,
            detail,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use axum::extract::{Path, Query, State};
    use axum::http::HeaderMap;
    use axum::response::{IntoResponse, Response};
    use axum::routing::{delete, post};
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
        /// Refuse the event with this seq (1-based) with a 422.
        refuse: Option<u64>,
        /// Apply the event with this seq, then hang up without answering (a lost answer).
        lose_answer: Option<u64>,
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
            .route("/1/match/{id}", delete(cancel))
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
            replace: false,
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

    #[tokio::test]
    async fn the_seed_file_replays_whole() {
        let file =
            matchfile::parse(include_str!("../../../matches/elp-tig-2011-09-10.config")).unwrap();
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
                 pass --replace to cancel it and replay it anew"
            )
        );
        assert_eq!(fake.lock().unwrap().seen, [CREATE]);
    }

    #[tokio::test]
    async fn replace_cancels_then_creates_anew() {
        let (server, fake) = fake_server(Fake { exists: true, seq: 40, ..Fake::default() }).await;
        let opts = ReplayOptions { replace: true, ..options(&server) };
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
}
