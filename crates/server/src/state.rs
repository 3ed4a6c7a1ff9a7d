//! The rules of a match (SPEC section 1): whether an event can apply to a match, and what it
//! changes. Pure code on `model` types: no I/O, no clock (the caller passes `ts`), no seq
//! assignment beyond counting applied events. Storing, publishing and encoding live elsewhere.
//!
//! Each event is checked in three steps before anything changes, so a rejection leaves the match
//! untouched: the period (409 `Conflict`), the shape of its data (422 `Invalid`), then what its
//! data names (teams, players; 422). Only then is the planned [`Effect`] committed.

use std::collections::BTreeMap;

use crate::model::{
    Card, Event, EventData, EventDataInput, EventKind, Match, Millis, Period, Player, PlayerRef,
    RosterInput, Side, TeamId, MAX_COMMENT_CHARS, MAX_NAME_CHARS,
};

/// Why an event cannot apply. `Invalid` -> HTTP 422 (names something that does not exist, bad
/// shape for its kind), `Conflict` -> HTTP 409 (the match is in a state where this cannot happen:
/// not started, over, wrong period).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub(crate) struct Rejection {
    pub kind: RejectKind,
    /// A sentence for the watcher: what is wrong, naming the team, player or period involved.
    pub reason: String,
}

/// The two ways an event can fail to apply (see [`Rejection`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RejectKind {
    /// The event itself is wrong: a key that does not belong, a missing key, an unknown team, a
    /// player not on the pitch, a malformed name or text.
    Invalid,
    /// The event is well formed but the match's period does not allow it.
    Conflict,
}

fn invalid(reason: impl Into<String>) -> Rejection {
    Rejection { kind: RejectKind::Invalid, reason: reason.into() }
}

fn conflict(reason: impl Into<String>) -> Rejection {
    Rejection { kind: RejectKind::Conflict, reason: reason.into() }
}

/// The data keys each kind accepts, and which of those it requires.
pub(crate) fn keys_of(kind: EventKind) -> (&'static [&'static str], &'static [&'static str]) {
    use EventKind::*;
    match kind {
        Start => (&["home_players", "visit_players"], &[]),
        Stop | HalftimeStart | HalftimeStop | Extratime | Penalties => (&[], &[]),
        Shot | Save | Corner | Goalkick | Offside | Foul | Penalty | Freekick | Throwin => {
            (&["team", "player"], &[])
        }
        Goal => (&["team", "player", "player_team"], &["team"]),
        Card => (&["card", "team", "player"], &["card", "team", "player"]),
        Substitution => {
            (&["team", "player_in", "player_out"], &["team", "player_in", "player_out"])
        }
        Comment => (&["text", "team", "player"], &["text"]),
    }
}

/// Which keys of `d` are present, in the SPEC's key order.
fn present_keys(d: &EventDataInput) -> impl Iterator<Item = &'static str> {
    [
        ("home_players", d.home_players.is_some()),
        ("visit_players", d.visit_players.is_some()),
        ("player", d.player.is_some()),
        ("player_out", d.player_out.is_some()),
        ("card", d.card.is_some()),
        ("team", d.team.is_some()),
        ("player_in", d.player_in.is_some()),
        ("player_team", d.player_team.is_some()),
        ("text", d.text.is_some()),
    ]
    .into_iter()
    .filter_map(|(key, present)| present.then_some(key))
}

fn check_keys(kind: EventKind, d: &EventDataInput) -> Result<(), Rejection> {
    let (allowed, required) = keys_of(kind);
    let present: Vec<&str> = present_keys(d).collect();
    if let Some(key) = present.iter().find(|k| !allowed.contains(k)) {
        let accepts = if allowed.is_empty() {
            "it takes no data".to_owned()
        } else {
            format!("it accepts {}", allowed.join(", "))
        };
        return Err(invalid(format!("key {key} does not apply to {} ({accepts})", kind.as_str())));
    }
    if let Some(key) = required.iter().find(|k| !present.contains(k)) {
        return Err(invalid(format!("{} needs key {key}", kind.as_str())));
    }
    Ok(())
}

/// Where an event sends the match, or `None` if it does not move the period. Also refuses
/// everything the period rules out (before `start`, after `stop`).
fn next_period(kind: EventKind, now: Period) -> Result<Option<Period>, Rejection> {
    use Period::*;
    if now == Ended {
        return Err(conflict("match is over: no event can follow stop"));
    }
    if now == NotStarted && !matches!(kind, EventKind::Start | EventKind::Comment) {
        return Err(conflict(format!(
            "match has not started: send start before {} (only start and comment are accepted \
             before it)",
            kind.as_str()
        )));
    }
    let wrong = |needs: &str| {
        conflict(format!(
            "{} needs period {needs}, the match is in {}",
            kind.as_str(),
            now.as_str()
        ))
    };
    let next = match kind {
        EventKind::Start => match now {
            NotStarted => First,
            _ => {
                return Err(conflict(format!(
                    "match has already started (it is in {})",
                    now.as_str()
                )))
            }
        },
        EventKind::HalftimeStart => match now {
            First => Halftime,
            FirstExtra => HalftimeExtra,
            _ => return Err(wrong("first or first_extra")),
        },
        EventKind::HalftimeStop => match now {
            Halftime => Last,
            HalftimeExtra => LastExtra,
            _ => return Err(wrong("halftime or halftime_extra")),
        },
        EventKind::Extratime => match now {
            Last => FirstExtra,
            _ => return Err(wrong("last")),
        },
        EventKind::Penalties => match now {
            Last | LastExtra => Penalties,
            _ => return Err(wrong("last or last_extra")),
        },
        // Not started and ended were refused above: every other period can stop.
        EventKind::Stop => Ended,
        _ => return Ok(None),
    };
    Ok(Some(next))
}

/// One of the match's two sides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Which {
    Home,
    Visit,
}

/// What an accepted event changes besides `seq` and the period; planned while the match is only
/// read, committed once every check has passed.
enum Effect {
    None,
    Lineups { home: Vec<Player>, visit: Vec<Player> },
    Goal(Which),
    SendOff { side: Which, number: u32 },
    Substitution { side: Which, slot: usize, player_in: Player },
}

fn check_name(name: &str, number: u32) -> Result<(), Rejection> {
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(invalid(format!(
            "name {name:?} of player {number} must be 1 to {MAX_NAME_CHARS} characters without \
             control characters"
        )));
    }
    Ok(())
}

fn check_text(text: &str) -> Result<(), Rejection> {
    let chars = text.chars().count();
    if chars == 0 || chars > MAX_COMMENT_CHARS {
        return Err(invalid(format!(
            "text must be 1 to {MAX_COMMENT_CHARS} characters, it has {chars}"
        )));
    }
    // Newlines and tabs are fine inside a comment (the v1 encoder indents them); any other
    // control character would break the line-based protocols.
    if text.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(invalid("text may not contain control characters other than newline and tab"));
    }
    Ok(())
}

/// A `start` line-up: in the order given, names checked, each shirt number once.
fn lineup(input: Option<&RosterInput>, key: &str, team: &TeamId) -> Result<Vec<Player>, Rejection> {
    let Some(input) = input else {
        return Ok(Vec::new());
    };
    let players =
        input.clone().into_players().map_err(|e| invalid(format!("{key} ({team}): {e}")))?;
    let mut seen = std::collections::BTreeSet::new();
    for p in &players {
        check_name(&p.name, p.number)?;
        if !seen.insert(p.number) {
            return Err(invalid(format!(
                "shirt number {} appears more than once in {key} ({team})",
                p.number
            )));
        }
    }
    Ok(players)
}

impl Match {
    /// Applies one event at time `ts`. On success: updates the match (including `seq += 1`) and
    /// returns the normalized data to store and send. On error: the match is unchanged.
    pub(crate) fn apply(
        &mut self,
        kind: EventKind,
        data: &EventDataInput,
        ts: Millis,
    ) -> Result<EventData, Rejection> {
        let period = next_period(kind, self.period)?;
        check_keys(kind, data)?;
        let (out, effect) = self.plan(kind, data)?;
        self.commit(effect);
        if let Some(p) = period {
            self.period = p;
            self.period_start = Some(ts);
        }
        self.seq += 1;
        Ok(out)
    }

    /// Re-applies an event read back from the store on restart (`ev.seq` must be `self.seq + 1`,
    /// else `Conflict`); uses `EventDataInput::from(&ev.data)` and `ev.ts`.
    pub(crate) fn apply_stored(&mut self, ev: &Event) -> Result<(), Rejection> {
        if ev.seq != self.seq + 1 {
            return Err(conflict(format!(
                "stored event {} of match {} does not follow event {}",
                ev.seq,
                self.id(),
                self.seq
            )));
        }
        self.apply(ev.kind, &EventDataInput::from(&ev.data), ev.ts).map(|_| ())
    }

    fn side(&self, which: Which) -> &Side {
        match which {
            Which::Home => &self.home,
            Which::Visit => &self.visit,
        }
    }

    fn side_mut(&mut self, which: Which) -> &mut Side {
        match which {
            Which::Home => &mut self.home,
            Which::Visit => &mut self.visit,
        }
    }

    fn team_id(&self, which: Which) -> &TeamId {
        match which {
            Which::Home => &self.info.home.id,
            Which::Visit => &self.info.visit.id,
        }
    }

    fn which(&self, team: &TeamId) -> Result<Which, Rejection> {
        if *team == self.info.home.id {
            Ok(Which::Home)
        } else if *team == self.info.visit.id {
            Ok(Which::Visit)
        } else {
            Err(invalid(format!(
                "unknown team {team} (this match is {} vs {})",
                self.info.home.id, self.info.visit.id
            )))
        }
    }

    fn optional_team(&self, team: Option<&TeamId>) -> Result<Option<Which>, Rejection> {
        team.map(|t| self.which(t)).transpose()
    }

    /// A player named by number (looked up in `side`'s roster, `N/N` if unknown) or in full.
    fn resolve(&self, side: Which, player: &PlayerRef) -> Result<Player, Rejection> {
        match player {
            PlayerRef::Number(n) => {
                let name = self.side(side).roster.get(n).map_or(Player::UNKNOWN_NAME, |s| s);
                Ok(Player { number: *n, name: name.to_owned() })
            }
            PlayerRef::Full { number, name } => {
                check_name(name, *number)?;
                Ok(Player { number: *number, name: name.clone() })
            }
        }
    }

    /// Resolves an optional `key` player against an optional side; a player without a side to
    /// look them up in is refused rather than guessed.
    fn resolve_opt(
        &self,
        side: Option<Which>,
        player: Option<&PlayerRef>,
        key: &str,
        kind: EventKind,
    ) -> Result<Option<Player>, Rejection> {
        match (side, player) {
            (_, None) => Ok(None),
            (Some(side), Some(p)) => self.resolve(side, p).map(Some),
            (None, Some(p)) => {
                let number = match p {
                    PlayerRef::Number(n) | PlayerRef::Full { number: n, .. } => n,
                };
                Err(invalid(format!(
                    "{key} {number} of {} needs a team: add key team to say whose player it is",
                    kind.as_str()
                )))
            }
        }
    }

    /// Where on `side`'s pitch shirt `number` stands, if there.
    fn slot(&self, side: Which, number: u32) -> Option<usize> {
        self.side(side).on_pitch.iter().position(|p| p.number == number)
    }

    fn not_on_pitch(&self, side: Which, number: u32) -> Rejection {
        invalid(format!("player {number} of {} is not on the pitch", self.team_id(side)))
    }

    /// Checks everything `data` names and works out the normalized data and the effect, without
    /// changing the match.
    fn plan(&self, kind: EventKind, d: &EventDataInput) -> Result<(EventData, Effect), Rejection> {
        // Data with no player or side rules: the keys are already checked, copy them.
        let mut out = EventData { card: d.card, ..EventData::default() };
        let effect = match kind {
            EventKind::Start => {
                let home = lineup(d.home_players.as_ref(), "home_players", &self.info.home.id)?;
                let visit = lineup(d.visit_players.as_ref(), "visit_players", &self.info.visit.id)?;
                // Absent line-ups stay absent in the stored data: they mean "empty".
                out.home_players = d.home_players.as_ref().map(|_| home.clone());
                out.visit_players = d.visit_players.as_ref().map(|_| visit.clone());
                Effect::Lineups { home, visit }
            }
            EventKind::Stop
            | EventKind::HalftimeStart
            | EventKind::HalftimeStop
            | EventKind::Extratime
            | EventKind::Penalties => Effect::None,
            EventKind::Goal => {
                let side = self.optional_team(d.team.as_ref())?;
                // An own goal: the scorer is one of `player_team`'s players, the goal counts for
                // `team`.
                let scorer_side = self.optional_team(d.player_team.as_ref())?.or(side);
                out.player = self.resolve_opt(scorer_side, d.player.as_ref(), "player", kind)?;
                out.team = d.team.clone();
                out.player_team = d.player_team.clone();
                // A goal counts for `team` in every period, penalties included: a shoot-out's
                // goals are added to the score, as the original did (it had no separate tally).
                match side {
                    Some(side) => Effect::Goal(side),
                    None => return Err(invalid("goal needs key team")),
                }
            }
            EventKind::Card => {
                let side = self.optional_team(d.team.as_ref())?;
                let player = self.resolve_opt(side, d.player.as_ref(), "player", kind)?;
                let effect = match (d.card, side, &player) {
                    (Some(Card::Red), Some(side), Some(p)) => {
                        if self.slot(side, p.number).is_none() {
                            return Err(self.not_on_pitch(side, p.number));
                        }
                        Effect::SendOff { side, number: p.number }
                    }
                    // A yellow card may be shown to someone on the bench: no pitch check.
                    _ => Effect::None,
                };
                out.team = d.team.clone();
                out.player = player;
                effect
            }
            EventKind::Substitution => {
                let Some(side) = self.optional_team(d.team.as_ref())? else {
                    return Err(invalid("substitution needs key team"));
                };
                let (Some(in_ref), Some(out_ref)) = (&d.player_in, &d.player_out) else {
                    return Err(invalid("substitution needs keys player_in and player_out"));
                };
                let player_out = self.resolve(side, out_ref)?;
                let player_in = self.resolve(side, in_ref)?;
                let slot = self
                    .slot(side, player_out.number)
                    .ok_or_else(|| self.not_on_pitch(side, player_out.number))?;
                if self.slot(side, player_in.number).is_some() {
                    return Err(invalid(format!(
                        "player {} of {} is already on the pitch",
                        player_in.number,
                        self.team_id(side)
                    )));
                }
                out.team = d.team.clone();
                out.player_out = Some(player_out);
                out.player_in = Some(player_in.clone());
                Effect::Substitution { side, slot, player_in }
            }
            EventKind::Comment => {
                if let Some(text) = &d.text {
                    check_text(text)?;
                }
                let side = self.optional_team(d.team.as_ref())?;
                out.player = self.resolve_opt(side, d.player.as_ref(), "player", kind)?;
                out.team = d.team.clone();
                out.text = d.text.clone();
                Effect::None
            }
            EventKind::Shot
            | EventKind::Save
            | EventKind::Corner
            | EventKind::Goalkick
            | EventKind::Offside
            | EventKind::Foul
            | EventKind::Penalty
            | EventKind::Freekick
            | EventKind::Throwin => {
                let side = self.optional_team(d.team.as_ref())?;
                out.player = self.resolve_opt(side, d.player.as_ref(), "player", kind)?;
                out.team = d.team.clone();
                Effect::None
            }
        };
        Ok((out, effect))
    }

    fn commit(&mut self, effect: Effect) {
        match effect {
            Effect::None => {}
            Effect::Lineups { home, visit } => {
                for (which, players) in [(Which::Home, home), (Which::Visit, visit)] {
                    let roster: BTreeMap<u32, String> =
                        players.iter().map(|p| (p.number, p.name.clone())).collect();
                    *self.side_mut(which) = Side { roster, on_pitch: players, score: 0 };
                }
            }
            Effect::Goal(which) => self.side_mut(which).score += 1,
            Effect::SendOff { side, number } => {
                self.side_mut(side).on_pitch.retain(|p| p.number != number);
            }
            Effect::Substitution { side, slot, player_in } => {
                let s = self.side_mut(side);
                // Whoever comes on joins the roster, so later bare numbers find them. Named or
                // not: the stored event names them (as the roster did, or `N/N`), and a match
                // rebuilt from its stored events must have the same roster as the live one.
                s.roster.insert(player_in.number, player_in.name.clone());
                if let Some(place) = s.on_pitch.get_mut(slot) {
                    *place = player_in;
                }
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
