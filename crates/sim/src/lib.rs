//! The load simulator (`matchstream sim`): many viewers that know only the protocol, spread over
//! worker processes, each checking its own stream; plus an HTTP load test, a benchmark watcher,
//! and the same subscriber engine against Redis pub/sub and Pusher-protocol servers (Sockudo)
//! so that they compare.
//!
//! ```text
//!  run::run_viewers ──job (JSON on stdin)──▶ `matchstream sim-worker` × W ──▶ worker::serve
//!        ▲                                        viewer.rs: connect, read, check.rs / redis.rs
//!        │                                        conn.rs: TCP, WebSocket or SSE as v2 lines
//!        │                                        checkin.rs: where to connect
//!        │                                        resume.rs: back after a lost node (--resume)
//!        └──progress and final report (JSON lines on stdout)──┘
//!  report.rs: counts, causes, histograms, the summary    display.rs: progress on stderr
//!  http.rs: `sim http`   publish.rs: `sim publish`   redis.rs: `sim redis`, `sim redis-publish`
//!  pusher.rs: `sim pusher`, `sim pusher-publish` (Sockudo: WebSockets, the signed HTTP API)
//!  pace.rs: both publishers' schedule (open or closed loop)
//! ```
//!
//! It knows MatchStream only as a client does, through `matchstream-client` (the stream checkers,
//! the causes a viewer fails with) and the wire. This file holds the vocabulary the parts share:
//! interaction paths, publish modes, and the error type. It prints nothing; the binary prints the
//! summaries it gets back.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

mod check;
mod checkin;
mod conn;
mod display;
mod full;
pub mod http;
mod job;
mod pace;
pub mod publish;
pub mod pusher;
pub mod redis;
mod report;
mod resume;
mod run;
mod viewer;
pub mod worker;

pub use checkin::servers;
pub use display::{Display, UiMode};
pub use job::{Behaviour, Job, Mix, PathCounts, ProtocolCounts, Target};
pub use matchstream_client::check::{Cause, Protocol, Violation};
pub use report::{Percentiles, Summary};
pub use run::{run_viewers, ViewerSim};

/// How a simulated user behaves (`--mix`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PathKind {
    /// Connects at once and watches to the end.
    Watch,
    /// Connects after a random delay, then watches to the end.
    Late,
    /// Closes after a random number of events.
    Leave,
    /// Drops after a random number of events and comes back with `FROM:<last seq>` (v2).
    Reconnect,
    /// Sleeps between reads.
    Slow,
}

impl PathKind {
    pub const ALL: [PathKind; 5] =
        [PathKind::Watch, PathKind::Late, PathKind::Leave, PathKind::Reconnect, PathKind::Slow];

    pub fn as_str(self) -> &'static str {
        match self {
            PathKind::Watch => "watch",
            PathKind::Late => "late",
            PathKind::Leave => "leave",
            PathKind::Reconnect => "reconnect",
            PathKind::Slow => "slow",
        }
    }
}

/// How a benchmark watcher publishes: at a steady rate for a while, or all at once.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PublishMode {
    /// `per_s` messages a second for `secs` seconds, each sent when due while fewer than
    /// `in_flight` are unanswered (open loop); `in_flight` 1 waits for each answer before the
    /// next message (closed loop). See `pace.rs`.
    Rate { per_s: f64, secs: f64, in_flight: usize },
    /// `n` messages at once (one request with a list, or one pipelined write).
    Burst { n: u32 },
}

impl PublishMode {
    /// Checks the numbers a person typed.
    pub fn validate(&self) -> Result<(), SimError> {
        match *self {
            PublishMode::Rate { per_s, secs, in_flight } => {
                if !(per_s.is_finite() && per_s > 0.0 && secs.is_finite() && secs >= 0.0) {
                    return Err(SimError::Usage(
                        "--rate must be above 0 and --duration at least 0".into(),
                    ));
                }
                if in_flight == 0 {
                    return Err(SimError::Usage("--in-flight must be at least 1".into()));
                }
            }
            PublishMode::Burst { n: 0 } => {
                return Err(SimError::Usage("--burst must be at least 1".into()))
            }
            PublishMode::Burst { .. } => {}
        }
        Ok(())
    }
}

/// Why a simulation could not run (as opposed to viewers that failed, which the summary counts).
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The options do not make sense together.
    #[error("{0}")]
    Usage(String),
    /// A worker process could not be started or spoke nonsense.
    #[error("worker {worker}: {reason}")]
    Worker { worker: usize, reason: String },
    /// The job a worker read is not a job.
    #[error("bad job on stdin: {0}")]
    BadJob(String),
    /// The server answered something unexpected (publishing, or finding a match).
    #[error("{0}")]
    Server(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Cancels `token` when `input` ends (EOF or error), reading and dropping whatever comes: how
/// a parent process says "stop now" by closing a pipe. The read runs on a thread of its own
/// because a blocking read cannot be cancelled and must not hold a runtime open at exit.
pub fn cancel_at_eof<R: std::io::Read + Send + 'static>(mut input: R, token: CancellationToken) {
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut input, &mut std::io::sink());
        token.cancel();
    });
}

/// Wall-clock time in Unix milliseconds: comparable across the worker processes of one machine
/// and with the server's event `ts`.
pub fn unix_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_modes_are_checked() {
        let rate = |per_s, in_flight| PublishMode::Rate { per_s, secs: 5.0, in_flight };
        assert!(rate(20.0, 1).validate().is_ok());
        assert!(rate(0.0, 1).validate().is_err());
        assert!(rate(20.0, 0).validate().is_err());
        assert!(PublishMode::Burst { n: 0 }.validate().is_err());
    }
}
