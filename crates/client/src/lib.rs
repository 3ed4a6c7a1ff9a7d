//! A client of MatchStream that knows only its protocols, like the original's `fake_client`:
//! nothing here depends on the server's crate.
//!
//! - `viewer`: a TCP viewer (SPEC 4): connect line, raw bytes, v2 frames checked as they come.
//! - `check`: the stream checkers (v1 framing, v2 gapless `seq`, the `bye`), fed bytes in any
//!   pieces; used by the viewer, the tests and the load simulator.
//! - `watcher`: the HTTP API (SPEC 2 and 3): requests and whole answers.
//! - `matchfile` and `replay`: match files (SPEC 6) and the replaying watcher.

pub mod check;
pub mod matchfile;
pub mod replay;
mod verdict;
pub mod viewer;
pub mod watcher;

pub use viewer::{Viewer, ViewerError};
pub use watcher::{Answer, Watcher, WatcherError};
