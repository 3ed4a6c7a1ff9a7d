//! MatchStream: live football matches streamed to very many viewers.
//!
//! ```text
//!  watcher --HTTP--> api --> ingest --(validate: state)--> store (durable, assigns order)
//!                                  \--(once durable)-----> hub --(bytes encoded once per format)
//!                                                           |--> transport::tcp (v1, v2)
//!  reader  --HTTP--> api (matches, match, history) <-- hub snapshots + store history
//! ```
//!
//! `model` is plain data, `state` the rules of a match, `wire` the encodings, `store` the durable
//! log, `hub` the fan-out, `transport` the viewer listeners, `api` the HTTP routes, `server` the
//! wiring and lifecycle, `matchfile` and `replay` the replaying watcher, `sim` the load simulator
//! (its viewer doubles as a test client).

pub mod api;
pub mod config;
pub mod demo;
pub mod hub;
pub mod ingest;
mod locks;
pub mod matchfile;
pub mod model;
pub mod replay;
pub mod server;
pub mod sim;
pub mod state;
pub mod store;
pub mod transport;
pub mod wire;
