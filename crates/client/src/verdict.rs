//! What a client concludes about a viewer's stream: which protocol it speaks, and why it failed
//! ([`Cause`], with a [`Violation`] for a person). The checkers (`check.rs`) produce them; the
//! simulator counts them.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Which viewer protocol a MatchStream viewer speaks: v1 or v2 over TCP (SPEC 4), or v2's
/// frames over WebSocket or Server-Sent Events (SPEC 5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    V1,
    V2,
    Ws,
    Sse,
}

impl Protocol {
    pub const ALL: [Protocol; 4] = [Protocol::V1, Protocol::V2, Protocol::Ws, Protocol::Sse];

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::V1 => "v1",
            Protocol::V2 => "v2",
            Protocol::Ws => "ws",
            Protocol::Sse => "sse",
        }
    }

    /// Spoken on a viewer port (TCP, SPEC 4) rather than the HTTP port (SPEC 5).
    pub fn is_tcp(self) -> bool {
        matches!(self, Protocol::V1 | Protocol::V2)
    }

    /// Carries `seq`s, and so can resume after one (`FROM`, `from`, `Last-Event-ID`).
    pub fn resumes(self) -> bool {
        self != Protocol::V1
    }
}

impl std::str::FromStr for Protocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "v1" | "1" => Ok(Protocol::V1),
            "v2" | "2" | "tcp" => Ok(Protocol::V2),
            "ws" | "websocket" => Ok(Protocol::Ws),
            "sse" => Ok(Protocol::Sse),
            _ => Err(format!("unknown protocol {s:?} (v1, v2 or tcp, ws, sse)")),
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
