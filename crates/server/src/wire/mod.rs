//! The viewer wire formats, one file each: `v1.rs` (the original's text blocks), `v2.rs` (JSON
//! lines), `ws.rs` (v2 frames as WebSocket messages) and `sse.rs` (v2 frames as Server-Sent
//! Events). Each event is encoded once per format by the hub and the bytes are shared by every
//! viewer. This file holds what the formats share: the goodbye (its reasons and the connect line are
//! `matchstream_proto`'s, shared with the clients).

pub(crate) mod sse;
pub(crate) mod v1;
pub(crate) mod v2;
pub(crate) mod ws;

pub(crate) use matchstream_proto::{parse_connect, sniff_version, ByeReason, ConnectLine};

/// A goodbye: the reason, and optionally when and where to come back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Bye {
    pub reason: ByeReason,
    pub retry_after_ms: Option<u64>,
    /// `host:port` of another listener to try.
    pub try_addr: Option<String>,
}

impl Bye {
    pub(crate) fn new(reason: ByeReason) -> Bye {
        Bye { reason, retry_after_ms: None, try_addr: None }
    }
}
