//! A match's state saved in the store at some seq of its log, so that a node serving the match
//! again (at start, or an ended match read back on demand) applies only the events after it
//! instead of replaying, and validating again, every event since the kick-off (SPEC 10).
//!
//! The log stays the truth: a saved state is a cache of a prefix of it, written after the
//! events it covers are durable, and trusted only for the same incarnation and a seq the log
//! has reached. Losing one (a crash before it is written) costs replay time, nothing else.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Incarnation, StoreError};
use crate::model::{Match, MatchInfo, Millis, Period, Player, Seq, Side};

/// The stored form: every field of [`Match`] (whose own `Serialize` is the public page shape).
#[derive(Serialize, Deserialize)]
struct Saved {
    /// The incarnation it belongs to: a match created anew under the same id never starts
    /// from the old one's state.
    inc: Incarnation,
    info: MatchInfo,
    home: SavedSide,
    visit: SavedSide,
    period: Period,
    period_start: Option<Millis>,
    seq: Seq,
}

#[derive(Serialize, Deserialize)]
struct SavedSide {
    roster: BTreeMap<u32, String>,
    on_pitch: Vec<Player>,
    score: u32,
}

impl From<&Side> for SavedSide {
    fn from(s: &Side) -> Self {
        SavedSide { roster: s.roster.clone(), on_pitch: s.on_pitch.clone(), score: s.score }
    }
}

impl From<SavedSide> for Side {
    fn from(s: SavedSide) -> Self {
        Side { roster: s.roster, on_pitch: s.on_pitch, score: s.score }
    }
}

/// The JSON saved for incarnation `inc` of `m`.
pub(crate) fn encode(inc: Incarnation, m: &Match) -> Result<String, StoreError> {
    let saved = Saved {
        inc,
        info: m.info.clone(),
        home: (&m.home).into(),
        visit: (&m.visit).into(),
        period: m.period,
        period_start: m.period_start,
        seq: m.seq,
    };
    serde_json::to_string(&saved).map_err(|e| super::StoreError::Backend(format!("saving: {e}")))
}

/// The state saved in `json`, if it belongs to incarnation `inc` and the log has reached its
/// seq (`head`); `None` otherwise (then the caller replays the log from the start). A saved
/// state that cannot be read is logged and ignored for the same reason.
pub(crate) fn decode(json: &str, inc: Incarnation, head: Seq) -> Option<Match> {
    let saved: Saved = match serde_json::from_str(json) {
        Ok(saved) => saved,
        Err(e) => {
            tracing::warn!(error = %e, "a saved match state cannot be read; replaying its log");
            return None;
        }
    };
    if saved.inc != inc || saved.seq > head {
        return None;
    }
    Some(Match {
        info: saved.info,
        home: saved.home.into(),
        visit: saved.visit.into(),
        period: saved.period,
        period_start: saved.period_start,
        seq: saved.seq,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{EventDataInput, EventKind, RosterInput};
    use crate::store::memory::tests::info;

    #[test]
    fn a_saved_state_comes_back_whole_for_its_incarnation_only() {
        let mut m = Match::new(info("elp", "tig"));
        let lineup = |n: u32| RosterInput::Players(vec![Player { number: n, name: "A".into() }]);
        let data = EventDataInput {
            home_players: Some(lineup(7)),
            visit_players: Some(lineup(9)),
            ..EventDataInput::default()
        };
        m.apply(EventKind::Start, &data, 1_000).unwrap();
        let json = encode(3, &m).unwrap();
        assert_eq!(decode(&json, 3, 1), Some(m.clone()));
        assert_eq!(decode(&json, 3, 5), Some(m));
        assert_eq!(decode(&json, 4, 1), None, "another incarnation");
        assert_eq!(decode(&json, 3, 0), None, "beyond the log (a rewound store)");
        assert_eq!(decode("{", 3, 1), None);
    }
}
