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
mod tests;
