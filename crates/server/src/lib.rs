//! MatchStream: live football matches streamed to very many viewers.
//!
//! ```text
//!  watcher --HTTP--> api --> ingest --(validate: state)--> store (durable, assigns order)
//!                                  \--(once durable)-----> hub --(bytes encoded once per format)
//!                                                           |--> transport::tcp (v1, v2)
//!                                                           |--> transport::web (WebSocket, SSE)
//!  reader  --HTTP--> api (matches, match, history) <-- hub snapshots + store history
//! ```
//!
//! `model` is plain data, `state` the rules of a match, `wire` the encodings, `store` the durable
//! log, `hub` the fan-out, `transport` the viewer listeners and connections, `cluster` what a
//! node knows of the others (where a viewer is sent, the load reports), `http` the HTTP
//! listener, `api` the HTTP routes, `server` the wiring and lifecycle. The server only: clients
//! (the replaying watcher, the test client) are `matchstream-client`, the load simulator
//! `matchstream-sim`, the command line `matchstream`.

mod api;
mod budget;
mod cluster;
pub mod config;
#[doc(hidden)]
pub mod fuzzing;
mod http;
mod hub;
mod ingest;
mod locks;
mod model;
mod ops;
pub mod server;
mod state;
mod store;
mod telemetry;
mod transport;
mod wire;
