//! Why a server ends a viewer's stream (SPEC 4, the v2 `bye` frame's `reason`): the one list both
//! the server that sends it and the clients that branch on it read.

use std::fmt;
use std::str::FromStr;

/// Why the server closes a viewer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
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
    /// Every reason, in the SPEC's order.
    pub const ALL: [ByeReason; 7] = [
        ByeReason::MatchOver,
        ByeReason::Cancelled,
        ByeReason::Shutdown,
        ByeReason::TooSlow,
        ByeReason::BadRequest,
        ByeReason::NotFound,
        ByeReason::Full,
    ];

    /// The reason as it travels: `match_over`, `too_slow`...
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

impl fmt::Display for ByeReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A reason this version does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown bye reason {0:?}")]
pub struct UnknownReason(pub String);

impl FromStr for ByeReason {
    type Err = UnknownReason;
    fn from_str(s: &str) -> Result<ByeReason, UnknownReason> {
        ByeReason::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownReason(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_reads_back() {
        for r in ByeReason::ALL {
            assert_eq!(r.as_str().parse::<ByeReason>(), Ok(r));
        }
        assert!("gone".parse::<ByeReason>().is_err());
    }
}
