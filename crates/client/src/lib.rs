//! A client of MatchStream that knows only its protocols, like the original's `fake_client`:
//! nothing here depends on the server's crate.
//!
//! - `viewer`: a TCP viewer (SPEC 4): connect line, raw bytes, v2 frames checked as they come.
//! - `ws` and `sse`: the browser transports (SPEC 5) as viewers: the same v2 frames, checked the
//!   same way, plus what each transport adds (close codes, pings; event ids and names); `http1`
//!   is the bit of HTTP they need on a raw socket.
//! - `check`: the stream checkers (v1 framing, v2 gapless `seq`, the `bye`), fed bytes in any
//!   pieces; used by the viewer, the tests and the load simulator.
//! - `watcher`: the HTTP API (SPEC 2 and 3): requests and whole answers.
//! - `matchfile` and `replay`: match files (SPEC 6) and the replaying watcher.
//! - `tls`: a node with a certificate (SPEC 11): the certificates trusted (`--ca-cert`, or the
//!   system's), and a connection that is plain TCP or TLS, for every viewer and the watcher.

pub mod check;
pub mod http1;
pub mod matchfile;
pub mod replay;
pub mod sse;
pub mod tls;
mod verdict;
pub mod viewer;
pub mod watcher;
pub mod ws;

pub use http1::WebError;
pub use sse::{SseEvent, SseItem, SseViewer};
pub use tls::{Stream, TlsClient};
pub use viewer::{Viewer, ViewerError};
pub use watcher::{Answer, Watcher, WatcherError};
pub use ws::{Closed, Incoming, WsViewer};
