//! The replaying watcher's client (SPEC sections 2 and 6): publishes a [`MatchFile`] to a server
//! through the watcher API, keeping the file's pauses divided by a speed. It does not read files
//! (`matchfile`) or print (the caller gets [`Progress`] reports). Each event is posted with
//! `?after=<seq before it>`, so an event whose answer was lost can be posted again safely: if
//! the server had applied it, the retry gets a `409` naming the seq it reached, and nothing is
//! recorded twice. The same precondition makes resuming safe: a match already at `seq` k gets
//! the file's events from the (k+1)-th on, each after the seq before it.

use std::time::Duration;

use matchstream_proto::{MatchId, Seq};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::Value;

use crate::matchfile::{MatchFile, Step};
use crate::tls::TlsClient;
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
    /// What to do when the match already exists on the server.
    pub if_exists: IfExists,
    /// The certificates an `https://` server's is checked against (`--ca-cert`); `None`: the
    /// system's roots.
    pub tls: Option<TlsClient>,
}

/// What a replay does when the match already exists on the server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IfExists {
    /// Stop with [`ReplayError::Exists`]: replaying into someone else's match by accident would
    /// mix two feeds.
    #[default]
    Fail,
    /// Cancel it (its viewers get `bye cancelled`) and create it anew.
    Replace,
    /// Continue it: read its `seq` k (SPEC 3, `GET /1/match/<id>`), skip the file's first k
    /// events and the pauses before the next one, and publish the rest. For a match created
    /// ahead of time (viewers connected before the first event) or a replay that was stopped.
    Resume,
}

/// What the replay is doing, reported as it happens.
#[derive(Clone, Debug, PartialEq)]
pub enum Progress<'a> {
    /// The match existed and is being cancelled ([`IfExists::Replace`]).
    Replacing { id: &'a MatchId },
    /// The match was created; its steps follow.
    Created { id: &'a MatchId },
    /// The match existed with `seq` events applied ([`IfExists::Resume`]): the file's first
    /// `seq` events are skipped, with every pause before the next one; the rest follow. When
    /// `seq` reaches the file's number of events, nothing follows.
    Resuming { id: &'a MatchId, seq: Seq },
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
    /// How many events this replay published (on resume, not counting those skipped).
    pub events: usize,
    /// The match's `seq` at the end: the one the server gave the last event published, or
    /// the one it was resumed at if none was (0 for a new match and a file without events).
    pub last_seq: Seq,
}

/// Why a replay stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("speed must be a finite number above 0, not {0}")]
    BadSpeed(f64),
    #[error("{server:?} is not a server URL such as http://127.0.0.1:8888 ({reason})")]
    BadServer { server: String, reason: String },
    /// An `https://` server and no certificates to check it with.
    #[error("{0}")]
    Tls(String),
    /// No answer at all: the server is down, unreachable or too slow.
    #[error("cannot reach the server at {server} while {during}: {reason}")]
    Unreachable { server: String, during: String, reason: String },
    #[error(
        "match {id} already exists on {server}; pass --resume to continue it, \
         or --replace to cancel it and replay it anew"
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

/// Publishes `file` to `opts.server`: creates the match (if it exists: fails, cancels it first,
/// or continues it after the events it has, as `opts.if_exists` says), then walks its steps,
/// sleeping for pauses and posting events one at a time. Stops at the first error; the events
/// already published stay published, and [`IfExists::Resume`] continues from there.
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

    let total = file.events().count();
    // The seq the match is at before our first event, the file's events already on the server
    // and the steps still to play: 0, none and all of them unless resumed.
    let (mut last_seq, mut skipped, mut steps) = (0, 0, &file.steps[..]);
    if api.create(file, &id).await? {
        progress(Progress::Created { id: &id });
    } else {
        match opts.if_exists {
            IfExists::Fail => return Err(ReplayError::Exists { id, server: opts.server.clone() }),
            IfExists::Replace => {
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
                progress(Progress::Created { id: &id });
            }
            IfExists::Resume => {
                last_seq = api.seq(&id).await?;
                skipped = usize::try_from(last_seq).unwrap_or(usize::MAX).min(total);
                steps = after_events(steps, skipped);
                progress(Progress::Resuming { id: &id, seq: last_seq });
            }
        }
    }

    let mut index = skipped;
    for step in steps {
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
    Ok(Summary { id, events: index - skipped, last_seq })
}

/// The steps from the (`n`+1)-th event on: the first `n` events and every pause before the
/// next one are left out. A resumed match gets its next event at once: the pause before it
/// was waited for by whoever published the events before (or, for a match created ahead of
/// time, the audience is already there). Empty if the file has no more than `n` events.
fn after_events(steps: &[Step], n: usize) -> &[Step] {
    let next = steps.iter().enumerate().filter(|(_, s)| matches!(s, Step::Event(_))).nth(n);
    &steps[next.map_or(steps.len(), |(at, _)| at)..]
}

/// How long one event is retried while the server gives no answer (restarting, a lost answer)
/// or answers `503` (its store is down) before `replay` gives up (SPEC 8). Safe because each
/// carries `?after=`: an event the server did apply is not applied again.
const RETRY_FOR: Duration = Duration::from_secs(60);
/// Wait before the first retry, doubled before each next one up to [`MAX_RETRY_WAIT`].
const RETRY_WAIT: Duration = Duration::from_millis(500);
const MAX_RETRY_WAIT: Duration = Duration::from_secs(5);

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
        let watcher = Watcher::with_tls(&opts.server, &opts.token, opts.tls.as_ref());
        let watcher = watcher.map_err(|e| match e {
            WatcherError::BadServer { server, reason } => ReplayError::BadServer { server, reason },
            WatcherError::Tls(why) => ReplayError::Tls(why),
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
        self.watcher.send(method, path, body).await.map_err(|e| unreachable(e, during()))
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

    /// `GET /1/match/<id>` (SPEC 3): the number of events the match has applied, its `seq`.
    async fn seq(&self, id: &MatchId) -> Result<Seq, ReplayError> {
        let during = || format!("reading match {id} to resume it");
        // The read API is public: no token, as any reader.
        let answer = self
            .watcher
            .get(&format!("/1/match/{id}"))
            .await
            .map_err(|e| unreachable(e, during()))?;
        if !answer.status.is_success() {
            // A 404 here: it was cancelled since our create found it.
            return Err(self.refused(during(), &answer));
        }
        #[derive(Deserialize)]
        struct Snapshot {
            seq: Seq,
        }
        serde_json::from_str::<Snapshot>(&answer.text).map(|m| m.seq).map_err(|e| {
            self.bad_answer(during(), &answer, format!("{e} in {}", quote(&answer.text)))
        })
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
        let give_up = tokio::time::Instant::now() + RETRY_FOR;
        let answer = loop {
            let reason = match self.send(Method::POST, &path, Some(event), &during).await {
                Ok(answer) if answer.status == StatusCode::SERVICE_UNAVAILABLE => {
                    format!("the server answered 503: {}", answer.error_message())
                }
                Ok(answer) => break answer,
                Err(ReplayError::Unreachable { reason, .. }) => reason,
                Err(e) => return Err(e),
            };
            if tokio::time::Instant::now() + wait > give_up {
                let server = self.server.to_owned();
                let reason = format!("{reason} (still after {}s of retries)", RETRY_FOR.as_secs());
                return Err(ReplayError::Unreachable { server, during: during(), reason });
            }
            let wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
            progress(Progress::Retrying { index, wait_ms, reason });
            tokio::time::sleep(wait).await;
            (attempt, wait) = (attempt + 1, (wait * 2).min(MAX_RETRY_WAIT));
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

/// A request that got no answer, `during` what.
fn unreachable(e: WatcherError, during: String) -> ReplayError {
    match e {
        WatcherError::Unreachable { server, reason }
        | WatcherError::BadServer { server, reason } => {
            ReplayError::Unreachable { server, during, reason }
        }
        WatcherError::Tls(why) => ReplayError::Tls(why),
    }
}

#[cfg(test)]
mod tests;
