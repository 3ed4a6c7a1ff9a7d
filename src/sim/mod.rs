//! The load simulator (`matchstream sim`): many viewers that know only the protocol, spread over
//! worker processes, each checking its own stream; plus an HTTP load test, a benchmark watcher,
//! and the same subscriber engine against Redis pub/sub so that the two compare.
//!
//! ```text
//!  run::run_viewers ──job (JSON on stdin)──▶ `matchstream sim-worker` × W ──▶ worker::serve
//!        ▲                                        viewer.rs: connect, read, check.rs / redis.rs
//!        └──progress and final report (JSON lines on stdout)──┘
//!  report.rs: counts, causes, histograms, the summary    display.rs: progress on stderr
//!  http.rs: `sim http`   publish.rs: `sim publish`   redis.rs: RESP, `sim redis-publish`
//! ```
//!
//! This file holds the vocabulary the parts share: targets, protocols, interaction paths, the
//! causes a viewer can fail with, and the error type. It prints nothing; the binary prints the
//! summaries it gets back.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

pub mod check;
pub mod display;
pub mod http;
pub mod job;
pub mod publish;
pub mod redis;
pub mod report;
pub mod run;
mod viewer;
pub mod worker;

pub use display::{Display, UiMode};
pub use job::{Behaviour, Job, Mix, PathCounts, Target};
pub use report::{Percentiles, Summary};
pub use run::{run_viewers, ViewerSim};

/// Which viewer protocol a MatchStream viewer speaks (SPEC 4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    V1,
    V2,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::V1 => "v1",
            Protocol::V2 => "v2",
        }
    }
}

impl std::str::FromStr for Protocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "v1" | "1" => Ok(Protocol::V1),
            "v2" | "2" => Ok(Protocol::V2),
            _ => Err(format!("unknown protocol {s:?} (v1 or v2)")),
        }
    }
}

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

/// Why a viewer failed. Every summary lists them all, zeros included, in this order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// The TCP connection was refused, or the server refused the viewer (v1 `ERROR:`, v2
    /// `bye` full / not_found / bad_request).
    Refused,
    /// No first byte within the connect timeout, or no close after v1's `stop`.
    Timeout,
    /// The connection was reset or broken.
    Reset,
    /// The server closed before the end of the match (no `stop` / no `bye`, or `bye shutdown`).
    ClosedEarly,
    /// Still watching when the run ended (duration limit or interrupted), or, for Redis, the
    /// end came with fewer messages than were published.
    Incomplete,
    /// A `seq` other than the next one: a gap or a reordering.
    OutOfOrder,
    /// A `seq` seen before.
    Duplicate,
    /// Bytes that are not a frame of the protocol.
    BadFrame,
    /// The match was cancelled (v2 `bye cancelled`).
    Cancelled,
    /// The server dropped the viewer as too slow (v2 `bye too_slow`).
    TooSlow,
    /// `/1/checkin` did not name a viewer port.
    Checkin,
    /// Another socket error (e.g. out of local ports or descriptors).
    Io,
    /// The worker process running the viewer died without a report.
    WorkerLost,
}

impl Cause {
    pub const ALL: [Cause; 13] = [
        Cause::Refused,
        Cause::Timeout,
        Cause::Reset,
        Cause::ClosedEarly,
        Cause::Incomplete,
        Cause::OutOfOrder,
        Cause::Duplicate,
        Cause::BadFrame,
        Cause::Cancelled,
        Cause::TooSlow,
        Cause::Checkin,
        Cause::Io,
        Cause::WorkerLost,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Refused => "refused",
            Cause::Timeout => "timeout",
            Cause::Reset => "reset",
            Cause::ClosedEarly => "closed_early",
            Cause::Incomplete => "incomplete",
            Cause::OutOfOrder => "out_of_order",
            Cause::Duplicate => "duplicate",
            Cause::BadFrame => "bad_frame",
            Cause::Cancelled => "cancelled",
            Cause::TooSlow => "too_slow",
            Cause::Checkin => "checkin",
            Cause::Io => "io",
            Cause::WorkerLost => "worker_lost",
        }
    }

    /// The cause of a socket error.
    pub fn of_io(e: &std::io::Error) -> Cause {
        use std::io::ErrorKind as K;
        match e.kind() {
            K::ConnectionRefused => Cause::Refused,
            K::TimedOut => Cause::Timeout,
            K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe | K::UnexpectedEof => {
                Cause::Reset
            }
            _ => Cause::Io,
        }
    }
}

/// What went wrong with one viewer's stream, for a person.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub cause: Cause,
    pub detail: String,
}

impl Violation {
    pub fn new(cause: Cause, detail: impl Into<String>) -> Violation {
        Violation { cause, detail: detail.into() }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.cause.as_str(), self.detail)
    }
}

/// How a benchmark watcher publishes: at a steady rate for a while, or all at once.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PublishMode {
    /// `per_s` messages a second for `secs` seconds.
    Rate { per_s: f64, secs: f64 },
    /// `n` messages at once (one request with a list, or one pipelined write).
    Burst { n: u32 },
}

impl PublishMode {
    /// Checks the numbers a person typed.
    pub fn validate(&self) -> Result<(), SimError> {
        match *self {
            PublishMode::Rate { per_s, secs } => {
                if !(per_s.is_finite() && per_s > 0.0 && secs.is_finite() && secs >= 0.0) {
                    return Err(SimError::Usage(
                        "--rate must be above 0 and --duration at least 0".into(),
                    ));
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
    fn causes_have_distinct_names_and_io_errors_map_to_them() {
        let mut names: Vec<_> = Cause::ALL.iter().map(|c| c.as_str()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), Cause::ALL.len());
        let e = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(Cause::of_io(&e), Cause::Refused);
        let e = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert_eq!(Cause::of_io(&e), Cause::Reset);
        let e = std::io::Error::from(std::io::ErrorKind::AddrNotAvailable);
        assert_eq!(Cause::of_io(&e), Cause::Io);
        assert_eq!(serde_json::to_string(&Cause::ClosedEarly).unwrap(), "\"closed_early\"");
    }

    #[test]
    fn publish_modes_are_checked() {
        assert!(PublishMode::Rate { per_s: 20.0, secs: 5.0 }.validate().is_ok());
        assert!(PublishMode::Rate { per_s: 0.0, secs: 5.0 }.validate().is_err());
        assert!(PublishMode::Burst { n: 0 }.validate().is_err());
        assert_eq!("v1".parse::<Protocol>(), Ok(Protocol::V1));
        assert!("v3".parse::<Protocol>().is_err());
    }
}
