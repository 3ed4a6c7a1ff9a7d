//! What both sides of MatchStream's wire agree on, and nothing else: the ids of SPEC section 1,
//! the viewer's connect line of SPEC 4 (parsed by the server, written by clients) and the
//! reasons of a `bye`. The server (`matchstream`) and the clients (`matchstream-client`,
//! `matchstream-sim`) both depend on this crate and on nothing of each other.
//!
//! The frames themselves are deliberately not here: the server encodes v1 and v2 its own way
//! (`matchstream::wire`, once per event, for speed) and the clients decode them their own way
//! (`matchstream_client::check`, with serde), so every test that reads the server's bytes checks
//! them against an independent reading of the SPEC, not against the encoder's own types.

mod bye;
pub mod connect;
mod ids;

pub use bye::{ByeReason, UnknownReason};
pub use connect::{parse_connect, sniff_version, ConnectError, ConnectLine};
pub use ids::{Date, IdError, MatchId, Millis, Seq, Team, TeamId};
