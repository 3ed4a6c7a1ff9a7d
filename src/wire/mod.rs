//! The viewer wire formats, one file each: `v1.rs` (the original's text blocks) and `v2.rs` (JSON
//! lines). Each event is encoded once per format by the hub and the bytes are shared by every
//! viewer. This file holds what the formats share: the connect line and the goodbye reasons.

pub mod connect;
pub mod v1;
pub mod v2;

pub use connect::{parse_connect, sniff_version, ConnectError, ConnectLine};

/// Why the server closes a viewer (SPEC 4, v2 `bye`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ByeReason {
    MatchOver,
    Cancelled,
    Shutdown,
    TooSlow,
    BadRequest,
    NotFound,
    Full,
}

impl ByeReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ByeReason::MatchOver => "match_over",
            ByeReason::Cancelled => "cancelled",
            ByeReason::Shutdown => "shutdown",
            ByeReason::TooSlow => "too_slow",
            ByeReason::BadRequest => "bad_request",
            ByeReason::NotFound => "not_found",
            ByeReason::Full => "full",
        }
    }
}

/// A goodbye: the reason, and optionally when and where to come back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bye {
    pub reason: ByeReason,
    pub retry_after_ms: Option<u64>,
    /// `host:port` of another listener to try.
    pub try_addr: Option<String>,
}

impl Bye {
    pub fn new(reason: ByeReason) -> Bye {
        Bye { reason, retry_after_ms: None, try_addr: None }
    }
}
