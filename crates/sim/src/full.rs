//! What a simulated viewer told `full` does next, like a real client (SPEC 7: a viewer told
//! `full` with `try` connects there, so that a crowd never stalls on one full node): the
//! address the refusal names (v2, WebSocket and SSE: the `bye`'s `try`; v1: the error block's
//! "server full, try host:port"), else the `retry_after_ms` to wait before checking in again,
//! in every phase and with or without `--resume`. How many times in a row before the viewer
//! fails is [`HOPS`]; viewer.rs does the reconnecting.

use std::time::Duration;

use matchstream_proto::ByeReason;

use super::resume::Bye;
use super::{Cause, Violation};

/// Refusals in a row after which the viewer fails: enough to go round a cluster whose nodes
/// fill while the viewer moves, few enough that a full cluster ends the run.
pub(crate) const HOPS: u32 = 8;
/// Wait before checking in again after a `full` that named nowhere to go and no wait.
const NO_HINT: Duration = Duration::from_millis(500);
/// A `retry_after_ms` above this is cut to it: a benchmark waits seconds, not minutes.
const WAIT_CAP: Duration = Duration::from_secs(5);

/// Where a viewer told `full` goes next.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Refused {
    /// The address named: the next attempt goes there at once.
    pub try_addr: Option<String>,
    /// How long to wait first (nothing when an address was named).
    pub wait: Duration,
}

impl Refused {
    /// The refusal `v` ended a connection with, if it is a `full`; `bye`: the first `bye` line
    /// that connection read (v2, WebSocket, SSE), the v1 error block being in `v` itself.
    pub fn of(v: &Violation, bye: Option<Bye>) -> Option<Refused> {
        if v.cause != Cause::Refused {
            return None;
        }
        if let Some(reason) = v.detail.strip_prefix("ERROR: server full") {
            // "server full, try host:port", or "..., try another server or again later".
            let named = reason.strip_prefix(", try ").filter(|a| !a.contains(' '));
            return Some(Refused::new(named.map(str::to_owned), None));
        }
        let bye =
            bye.filter(|b| b.reason.as_deref().map(str::parse) == Some(Ok(ByeReason::Full)))?;
        Some(Refused::new(bye.try_addr.filter(|a| !a.is_empty()), bye.retry_after_ms))
    }

    fn new(try_addr: Option<String>, retry_after_ms: Option<u64>) -> Refused {
        let wait = match (&try_addr, retry_after_ms) {
            (Some(_), _) => Duration::ZERO,
            (None, Some(ms)) => Duration::from_millis(ms).min(WAIT_CAP),
            (None, None) => NO_HINT,
        };
        Refused { try_addr, wait }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resume::LineTail;

    fn refused(detail: &str) -> Violation {
        Violation::new(Cause::Refused, detail)
    }

    #[test]
    fn a_full_names_where_to_go_in_every_protocol() {
        let bye = |text: &str| LineTail::default().bye_in(text.as_bytes());
        let v2 = bye("{\"kind\":\"bye\",\"reason\":\"full\",\"try\":\"10.0.0.2:9000\"}\n");
        assert_eq!(
            Refused::of(&refused("bye full"), v2),
            Some(Refused { try_addr: Some("10.0.0.2:9000".into()), wait: Duration::ZERO })
        );
        let later = bye("{\"kind\":\"bye\",\"reason\":\"full\",\"retry_after_ms\":60000}\n");
        assert_eq!(
            Refused::of(&refused("bye full"), later),
            Some(Refused { try_addr: None, wait: WAIT_CAP })
        );
        let v1 = refused("ERROR: server full, try 10.0.0.3:9001");
        assert_eq!(Refused::of(&v1, None).unwrap().try_addr.as_deref(), Some("10.0.0.3:9001"));
        let v1 = refused("ERROR: server full, try another server or again later");
        assert_eq!(Refused::of(&v1, None), Some(Refused { try_addr: None, wait: NO_HINT }));
    }

    #[test]
    fn other_refusals_and_byes_are_not_a_full() {
        let bye = |text: &str| LineTail::default().bye_in(text.as_bytes());
        let not_found = bye("{\"kind\":\"bye\",\"reason\":\"not_found\"}\n");
        assert_eq!(Refused::of(&refused("bye not_found"), not_found), None);
        assert_eq!(Refused::of(&refused("ERROR: unknown match x"), None), None);
        let full = bye("{\"kind\":\"bye\",\"reason\":\"full\"}\n");
        assert_eq!(Refused::of(&Violation::new(Cause::TooSlow, "bye too_slow"), full), None);
    }
}
