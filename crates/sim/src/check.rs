//! A simulated viewer's checker: the client's stream checkers for MatchStream viewers, the Redis
//! one for Redis subscribers, the Pusher one for Sockudo's, behind one interface so that one
//! viewer engine drives them all.

pub use matchstream_client::check::{Seen, State};

use super::pusher::PusherChecker;
use super::redis::RedisChecker;
use super::{Protocol, Violation};

/// One simulated viewer's checker, whatever it watches.
#[derive(Debug)]
pub enum Checker {
    Matchstream(matchstream_client::check::Checker),
    Redis(RedisChecker),
    Pusher(PusherChecker),
}

impl Checker {
    pub fn for_protocol(p: Protocol) -> Checker {
        Checker::Matchstream(matchstream_client::check::Checker::for_protocol(p))
    }

    /// A new connection starts; `from` is the seq it resumes after (v2 `FROM`).
    pub fn new_connection(&mut self, from: Option<u64>) {
        match self {
            Checker::Matchstream(c) => c.new_connection(from),
            Checker::Redis(c) => c.new_connection(),
            Checker::Pusher(c) => c.new_connection(),
        }
    }

    /// Forgets the stream so far, the end it saw included (a `bye shutdown` the viewer resumes
    /// after): [`Checker::new_connection`] then sets what comes next, `FROM` telling the seq.
    pub fn restart(&mut self) {
        *self = match self {
            Checker::Matchstream(matchstream_client::check::Checker::V1(_)) => {
                Checker::for_protocol(Protocol::V1)
            }
            Checker::Matchstream(_) => Checker::for_protocol(Protocol::V2),
            Checker::Redis(_) => Checker::Redis(RedisChecker::default()),
            Checker::Pusher(_) => Checker::Pusher(PusherChecker::default()),
        };
    }

    /// Checks the next bytes, appending what they complete to `seen`.
    pub fn feed(&mut self, data: &[u8], seen: &mut Vec<Seen>) -> Result<State, Violation> {
        match self {
            Checker::Matchstream(c) => c.feed(data, seen),
            Checker::Redis(c) => c.feed(data, seen),
            Checker::Pusher(c) => c.feed(data, seen),
        }
    }

    /// Must the viewer wait for the server's close after the end (v1), or may it hang up?
    pub fn needs_close(&self) -> bool {
        matches!(self, Checker::Matchstream(c) if c.needs_close())
    }

    /// The verdict when the server closes.
    pub fn at_eof(&self) -> Result<(), Violation> {
        match self {
            Checker::Matchstream(c) => c.at_eof(),
            Checker::Redis(c) => c.at_eof(),
            Checker::Pusher(c) => c.at_eof(),
        }
    }

    /// The seq to resume after (`FROM`), v2 only.
    pub fn resume_from(&self) -> Option<u64> {
        match self {
            Checker::Matchstream(c) => c.resume_from(),
            Checker::Redis(_) | Checker::Pusher(_) => None,
        }
    }

    /// Milliseconds of uncertainty in the event times it reports.
    pub fn ts_resolution_ms(&self) -> u64 {
        match self {
            Checker::Matchstream(c) => c.ts_resolution_ms(),
            Checker::Redis(_) | Checker::Pusher(_) => 1,
        }
    }
}
