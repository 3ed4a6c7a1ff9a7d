//! Properties of the match rules over random scripts (proptest): after every event the scores
//! and the players on the pitch are what a plain model of SPEC 1 says (a score is its team's
//! goals; the pitch is the line-up after red cards and substitutions), a rejected event changes
//! nothing, and the match rebuilt from its stored events, as on a restart, equals the live one.
//! The scripts (`script`, `expected`) are shared with ingest's restart property.

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::{json, Value};

use super::*;
use crate::model::{Event, EventInput};

/// Cases per property: enough for a wide spread of scripts, few enough to keep the suite fast.
pub(crate) const CASES: u32 = 256;

/// One step of a script. Players and periods are chosen when the step is played, from the
/// match as the model has it then, so most steps are valid and some are meant not to be.
#[derive(Debug, Clone)]
pub(crate) enum Step {
    /// A goal for home (0), visit (1) or a team not in the match (2); by one of `side`'s
    /// players, or the other side's (an own goal), or nobody named.
    Goal {
        side: u8,
        scorer: Option<(bool, u8)>,
    },
    Card {
        home: bool,
        red: bool,
        who: u8,
    },
    Substitution {
        home: bool,
        out: u8,
        into: u8,
        name: Option<String>,
    },
    /// One of [`MOVES`].
    Move(u8),
    /// One of [`PLAYS`], for a team or none, naming a player or not.
    Play {
        kind: u8,
        home: Option<bool>,
        who: Option<u8>,
    },
    Comment(String),
}

/// Events that move the period, aliases included, and `start` (refused once started).
const MOVES: [&str; 8] = [
    "halftime_start",
    "halftime_stop",
    "extratime",
    "penalties",
    "halftime",
    "continue",
    "stop",
    "start",
];

const PLAYS: [&str; 9] =
    ["shot", "save", "corner", "goalkick", "offside", "foul", "penalty", "freekick", "throwin"];

/// Names as watchers type them: accents, quotes, backslashes, spaces, the unknown name itself.
fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Z][a-z]{1,10}",
        Just("Zé Roberto".to_owned()),
        Just("O'Neil \"El Loco\"".to_owned()),
        Just("Back\\slash".to_owned()),
        Just("N/N".to_owned()),
        Just("李 明".to_owned()),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0u8..=2, prop::option::of((any::<bool>(), any::<u8>())))
            .prop_map(|(side, scorer)| Step::Goal { side: side.min(2), scorer }),
        3 => (any::<bool>(), prop::bool::weighted(0.3), any::<u8>())
            .prop_map(|(home, red, who)| Step::Card { home, red, who }),
        3 => (any::<bool>(), any::<u8>(), any::<u8>(), prop::option::of(name()))
            .prop_map(|(home, out, into, name)| Step::Substitution { home, out, into, name }),
        2 => (0..MOVES.len() as u8).prop_map(Step::Move),
        3 => (0..PLAYS.len() as u8, prop::option::of(any::<bool>()), prop::option::of(any::<u8>()))
            .prop_map(|(kind, home, who)| Step::Play { kind, home, who }),
        1 => "[a-zA-Z0-9 \n\t\"\\\\é]{0,12}".prop_map(Step::Comment),
    ]
}

/// A line-up: distinct shirt numbers in any order, and the shape it is sent in (0: objects,
/// 1: pairs, 2: a map from number to name, which serde reads in key order).
fn lineup() -> impl Strategy<Value = (Vec<(u32, String)>, u8)> {
    let players = prop::collection::btree_map(1u32..=99, name(), 0..=11)
        .prop_map(|m| m.into_iter().collect::<Vec<_>>())
        .prop_shuffle();
    (players, 0u8..3)
}

/// Steps before the start (refused, except comments and a bare `start`), the start's line-ups,
/// and the steps after it.
#[derive(Debug, Clone)]
pub(crate) struct Script {
    pub(crate) before: Vec<Step>,
    pub(crate) home: (Vec<(u32, String)>, u8),
    pub(crate) visit: (Vec<(u32, String)>, u8),
    pub(crate) after: Vec<Step>,
}

pub(crate) fn script(steps: usize) -> impl Strategy<Value = Script> {
    (
        prop::collection::vec(step(), 0..3),
        lineup(),
        lineup(),
        prop::collection::vec(step(), 0..steps),
    )
        .prop_map(|(before, home, visit, after)| Script { before, home, visit, after })
}

/// One side as the model sees it.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ModelSide {
    pub(crate) on_pitch: Vec<(u32, String)>,
    pub(crate) roster: BTreeMap<u32, String>,
    pub(crate) score: u32,
}

/// The match as the model sees it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Model {
    pub(crate) period: Period,
    pub(crate) seq: u64,
    pub(crate) sides: [ModelSide; 2],
}

/// A script's event: what to send, whether the model expects it accepted, and the match after.
#[derive(Debug, Clone)]
pub(crate) struct Expected {
    pub(crate) input: EventInput,
    pub(crate) accepted: bool,
    pub(crate) after: Model,
}

const TEAMS: [&str; 2] = ["elp", "tig"];

impl Model {
    fn new() -> Model {
        Model { period: Period::NotStarted, seq: 0, sides: Default::default() }
    }

    /// A shirt number of side `s` chosen by `who`: someone on the pitch, someone who left it,
    /// or a number the side has never heard of.
    fn pick(&self, s: usize, who: u8) -> u32 {
        let side = &self.sides[s];
        let mut candidates: Vec<u32> = side.on_pitch.iter().map(|p| p.0).collect();
        candidates.extend(side.roster.keys().filter(|n| side.on_pitch.iter().all(|p| p.0 != **n)));
        candidates.extend([96, 97, 98]);
        candidates[who as usize % candidates.len()]
    }

    fn name_of(&self, s: usize, number: u32) -> String {
        self.sides[s].roster.get(&number).cloned().unwrap_or_else(|| "N/N".to_owned())
    }

    fn on_pitch(&self, s: usize, number: u32) -> Option<usize> {
        self.sides[s].on_pitch.iter().position(|p| p.0 == number)
    }

    /// Where `kind` moves the period, `Err` if it cannot apply now, `Ok(None)` if it does not
    /// move it.
    fn period_after(&self, kind: &str) -> Result<Option<Period>, ()> {
        use Period::*;
        match (self.period, kind) {
            (Ended, _) => Err(()),
            (NotStarted, "start") => Ok(Some(First)),
            (NotStarted, "comment") => Ok(None),
            (NotStarted, _) | (_, "start") => Err(()),
            (First, "halftime_start" | "halftime") => Ok(Some(Halftime)),
            (FirstExtra, "halftime_start" | "halftime") => Ok(Some(HalftimeExtra)),
            (Halftime, "halftime_stop" | "continue") => Ok(Some(Last)),
            (HalftimeExtra, "halftime_stop" | "continue") => Ok(Some(LastExtra)),
            (Last, "extratime") => Ok(Some(FirstExtra)),
            (Last | LastExtra, "penalties") => Ok(Some(Penalties)),
            (_, "stop") => Ok(Some(Ended)),
            (_, "halftime_start" | "halftime" | "halftime_stop" | "continue" | "extratime")
            | (_, "penalties") => Err(()),
            _ => Ok(None),
        }
    }

    /// Plays one step: the event to send and, if the model accepts it, the model after it.
    fn play(&self, step: &Step) -> (Value, Option<Model>) {
        let mut next = self.clone();
        let (kind, data, ok) = match step {
            Step::Goal { side, scorer } => {
                let team = TEAMS.get(*side as usize).copied().unwrap_or("xyz");
                let mut data = json!({ "team": team });
                if let Some((own, who)) = scorer {
                    let s = (*side as usize).min(1) ^ usize::from(*own);
                    data["player"] = json!(self.pick(s, *who));
                    if *own {
                        data["player_team"] = json!(TEAMS[s]);
                    }
                }
                let ok = *side < 2;
                if ok {
                    next.sides[*side as usize].score += 1;
                }
                ("goal", data, ok)
            }
            Step::Card { home, red, who } => {
                let s = usize::from(!home);
                let number = self.pick(s, *who);
                let card = if *red { "red" } else { "yellow" };
                let data = json!({ "card": card, "team": TEAMS[s], "player": number });
                let ok = match (red, self.on_pitch(s, number)) {
                    (false, _) => true,
                    (true, Some(slot)) => {
                        next.sides[s].on_pitch.remove(slot);
                        true
                    }
                    (true, None) => false,
                };
                ("card", data, ok)
            }
            Step::Substitution { home, out, into, name } => {
                let s = usize::from(!home);
                let out = self.pick(s, *out);
                let into = self.pick(s, *into);
                let player_in = match name {
                    Some(name) => json!({ "number": into, "name": name }),
                    None => json!(into),
                };
                let data = json!({ "team": TEAMS[s], "player_in": player_in, "player_out": out });
                let slot = self.on_pitch(s, out);
                let ok = slot.is_some() && self.on_pitch(s, into).is_none();
                if let (true, Some(slot)) = (ok, slot) {
                    let name = name.clone().unwrap_or_else(|| self.name_of(s, into));
                    next.sides[s].roster.insert(into, name.clone());
                    next.sides[s].on_pitch[slot] = (into, name);
                }
                ("substitution", data, ok)
            }
            Step::Move(k) => (MOVES[*k as usize % MOVES.len()], json!({}), true),
            Step::Play { kind, home, who } => {
                let mut data = json!({});
                if let Some(home) = home {
                    data["team"] = json!(TEAMS[usize::from(!home)]);
                }
                if let Some(who) = who {
                    data["player"] = json!(self.pick(usize::from(!home.unwrap_or(true)), *who));
                }
                // A player without a team is refused: nobody can tell whose it is.
                let ok = !(home.is_none() && who.is_some());
                (PLAYS[*kind as usize % PLAYS.len()], data, ok)
            }
            Step::Comment(text) => ("comment", json!({ "text": text }), !text.is_empty()),
        };
        let event = json!({ "kind": kind, "data": data });
        let Ok(period) = self.period_after(kind) else { return (event, None) };
        if !ok {
            return (event, None);
        }
        if kind == "start" {
            // A bare start: empty sides.
            next.sides = Default::default();
        }
        if let Some(p) = period {
            next.period = p;
        }
        next.seq += 1;
        (event, Some(next))
    }

    /// The script's start, with its line-ups in their shapes.
    fn start(&self, script: &Script) -> (Value, Option<Model>) {
        let mut data = json!({});
        let mut next = self.clone();
        for (s, (players, shape)) in [&script.home, &script.visit].into_iter().enumerate() {
            let key = ["home_players", "visit_players"][s];
            let mut on_pitch = players.clone();
            data[key] = match shape {
                0 => players.iter().map(|(n, name)| json!({"number": n, "name": name})).collect(),
                1 => players.iter().map(|(n, name)| json!([n, name])).collect(),
                _ => {
                    // serde reads a map in key order: "10" before "7".
                    on_pitch.sort_by_key(|(n, _)| n.to_string());
                    Value::Object(
                        players.iter().map(|(n, name)| (n.to_string(), json!(name))).collect(),
                    )
                }
            };
            next.sides[s] =
                ModelSide { roster: players.iter().cloned().collect(), on_pitch, score: 0 };
        }
        let event = json!({ "kind": "start", "data": data });
        if self.period != Period::NotStarted {
            return (event, None);
        }
        next.period = Period::First;
        next.seq += 1;
        (event, Some(next))
    }
}

/// Every event of `script` with what the model expects of it.
pub(crate) fn expected(script: &Script) -> Vec<Expected> {
    let mut model = Model::new();
    let mut out = Vec::new();
    let steps = script.before.iter().map(Some).chain([None]).chain(script.after.iter().map(Some));
    for step in steps {
        let (event, next) = match step {
            Some(step) => model.play(step),
            None => model.start(script),
        };
        let input: EventInput = serde_json::from_value(event.clone())
            .unwrap_or_else(|e| panic!("the script's event {event} reads: {e}"));
        let accepted = next.is_some();
        if let Some(next) = next {
            model = next;
        }
        out.push(Expected { input, accepted, after: model.clone() });
    }
    out
}

/// The model's view of `m`.
pub(crate) fn model_of(m: &Match) -> Model {
    let side = |s: &Side| ModelSide {
        on_pitch: s.on_pitch.iter().map(|p| (p.number, p.name.clone())).collect(),
        roster: s.roster.clone(),
        score: s.score,
    };
    Model { period: m.period, seq: m.seq, sides: [side(&m.home), side(&m.visit)] }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    /// Scores are the goals of each team, the pitch is the line-up after cards and
    /// substitutions, the period follows SPEC 1, and a refused event changes nothing.
    #[test]
    fn scores_and_lineups_follow_the_events(script in script(40)) {
        let mut m = new_match();
        let all = expected(&script);
        for (i, want) in all.iter().enumerate() {
            let before = m.clone();
            let ts = T0 + i as i64 * 1000;
            let got = m.apply(want.input.kind, &want.input.data, ts);
            let kind = want.input.kind.as_str();
            prop_assert_eq!(got.is_ok(), want.accepted, "event {} ({}): {:?}", i, kind, got);
            if got.is_err() {
                prop_assert_eq!(&m, &before, "a refused {} changed the match", kind);
            }
            prop_assert_eq!(model_of(&m), want.after.clone(), "after event {} ({})", i, kind);
            let goals = |team: &str| {
                let goal = |e: &&Expected| e.accepted && e.input.kind == EventKind::Goal;
                let team = |e: &&Expected| e.input.data.team.as_ref().map(TeamId::as_str) == Some(team);
                all[..=i].iter().filter(goal).filter(team).count() as u32
            };
            prop_assert_eq!((m.home.score, m.visit.score), (goals("elp"), goals("tig")));
        }
    }

    /// The match rebuilt from its accepted events as stored (their data through JSON, then
    /// `apply_stored`, as `Ingest::restore` does) equals the live one.
    #[test]
    fn a_match_rebuilt_from_its_stored_events_equals_the_live_one(script in script(40)) {
        let mut live = new_match();
        let mut stored = Vec::new();
        for (i, want) in expected(&script).iter().enumerate() {
            let ts = T0 + i as i64 * 1000;
            if let Ok(data) = live.apply(want.input.kind, &want.input.data, ts) {
                let json = serde_json::to_string(&data).unwrap();
                let data: EventData = serde_json::from_str(&json).unwrap();
                stored.push(Event { seq: live.seq, ts, kind: want.input.kind, data });
            }
        }
        let mut rebuilt = new_match();
        for ev in &stored {
            rebuilt.apply_stored(ev).unwrap_or_else(|r| panic!("seq {}: {r}", ev.seq));
        }
        prop_assert_eq!(rebuilt, live);
    }
}
