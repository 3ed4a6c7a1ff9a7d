//! The domain's plain data (SPEC section 1): teams, players, periods, events and the match (the
//! ids and dates are `matchstream_proto`'s, shared with the clients).
//! No I/O and no rules here: applying an event to a match lives in `state.rs`, wire formats in
//! `wire/`.

use std::collections::BTreeMap;

use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};
use utoipa::ToSchema;

pub(crate) use matchstream_proto::{Date, IdError, MatchId, Millis, Seq, Team, TeamId};

/// The server clock, in Unix milliseconds.
pub(crate) fn now_ms() -> Millis {
    chrono::Utc::now().timestamp_millis()
}

/// Why a piece of domain input is malformed (an id, a date, a kind).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct ModelError(pub String);

impl From<IdError> for ModelError {
    fn from(e: IdError) -> ModelError {
        ModelError(e.0)
    }
}

/// What a match is before any event: the body of `POST /1/matches`, validated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct MatchInfo {
    pub id: MatchId,
    pub home: Team,
    pub visit: Team,
    pub start_date: Date,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stadium: Option<String>,
}

/// The body of `POST /1/matches` as sent by a watcher. (Its schema is `/openapi.json`'s;
/// `api/input.rs` reads the body by hand, for errors that name the field.)
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"home": "elp", "visit": "tig", "start_date": "2011-09-10"}))]
pub(crate) struct NewMatch {
    /// The home team's id.
    #[schema(value_type = String, pattern = "^[a-z0-9_]{1,16}$", example = "elp")]
    pub home: TeamId,
    /// The visiting team's id (not the home team's).
    #[schema(value_type = String, pattern = "^[a-z0-9_]{1,16}$", example = "tig")]
    pub visit: TeamId,
    /// The match's day: a date of the calendar.
    #[schema(value_type = String, format = Date, example = "2011-09-10")]
    pub start_date: Date,
    /// 1 to 64 characters on one line.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 64)]
    pub home_name: Option<String>,
    /// 1 to 64 characters on one line.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 64)]
    pub visit_name: Option<String>,
    /// 1 to 200 characters on one line.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 200)]
    pub division: Option<String>,
    /// 1 to 200 characters on one line.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 200)]
    pub stadium: Option<String>,
}

impl NewMatch {
    pub(crate) fn into_info(self) -> Result<MatchInfo, ModelError> {
        if self.home == self.visit {
            return Err(ModelError("home and visit must be different teams".into()));
        }
        Ok(MatchInfo {
            id: MatchId::new(&self.home, &self.visit, &self.start_date),
            home: Team { id: self.home, name: self.home_name, division: self.division.clone() },
            visit: Team { id: self.visit, name: self.visit_name, division: self.division },
            start_date: self.start_date,
            stadium: self.stadium,
        })
    }
}

/// Where a match is. Printed bare in v1 (`first`) and as a string in JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Period {
    NotStarted,
    First,
    Halftime,
    Last,
    FirstExtra,
    HalftimeExtra,
    LastExtra,
    Penalties,
    Ended,
}

impl Period {
    /// Every period, in the order a match goes through them (the tests' list).
    #[cfg(test)]
    pub(crate) const ALL: [Period; 9] = [
        Period::NotStarted,
        Period::First,
        Period::Halftime,
        Period::Last,
        Period::FirstExtra,
        Period::HalftimeExtra,
        Period::LastExtra,
        Period::Penalties,
        Period::Ended,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Period::NotStarted => "not_started",
            Period::First => "first",
            Period::Halftime => "halftime",
            Period::Last => "last",
            Period::FirstExtra => "first_extra",
            Period::HalftimeExtra => "halftime_extra",
            Period::LastExtra => "last_extra",
            Period::Penalties => "penalties",
            Period::Ended => "ended",
        }
    }
}

/// The kinds of event a watcher may publish (`status` is synthetic and never one of them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum EventKind {
    Start,
    Stop,
    HalftimeStart,
    HalftimeStop,
    Extratime,
    Penalties,
    Shot,
    Save,
    Goal,
    Corner,
    Goalkick,
    Offside,
    Foul,
    Penalty,
    Freekick,
    Card,
    Substitution,
    Throwin,
    Comment,
}

impl EventKind {
    pub(crate) const ALL: [EventKind; 19] = [
        EventKind::Start,
        EventKind::Stop,
        EventKind::HalftimeStart,
        EventKind::HalftimeStop,
        EventKind::Extratime,
        EventKind::Penalties,
        EventKind::Shot,
        EventKind::Save,
        EventKind::Goal,
        EventKind::Corner,
        EventKind::Goalkick,
        EventKind::Offside,
        EventKind::Foul,
        EventKind::Penalty,
        EventKind::Freekick,
        EventKind::Card,
        EventKind::Substitution,
        EventKind::Throwin,
        EventKind::Comment,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            EventKind::Start => "start",
            EventKind::Stop => "stop",
            EventKind::HalftimeStart => "halftime_start",
            EventKind::HalftimeStop => "halftime_stop",
            EventKind::Extratime => "extratime",
            EventKind::Penalties => "penalties",
            EventKind::Shot => "shot",
            EventKind::Save => "save",
            EventKind::Goal => "goal",
            EventKind::Corner => "corner",
            EventKind::Goalkick => "goalkick",
            EventKind::Offside => "offside",
            EventKind::Foul => "foul",
            EventKind::Penalty => "penalty",
            EventKind::Freekick => "freekick",
            EventKind::Card => "card",
            EventKind::Substitution => "substitution",
            EventKind::Throwin => "throwin",
            EventKind::Comment => "comment",
        }
    }

    /// Parses a kind as accepted on input, including the original's aliases
    /// (`halftime` = `halftime_start`, `continue` = `halftime_stop`).
    pub(crate) fn parse(s: &str) -> Result<EventKind, ModelError> {
        match s {
            "halftime" => return Ok(EventKind::HalftimeStart),
            "continue" => return Ok(EventKind::HalftimeStop),
            _ => {}
        }
        EventKind::ALL.into_iter().find(|k| k.as_str() == s).ok_or_else(|| {
            ModelError(format!(
                "unknown event kind {s:?} (one of: {})",
                EventKind::ALL.map(EventKind::as_str).join(", ")
            ))
        })
    }
}

impl<'de> Deserialize<'de> for EventKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        EventKind::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A player as shown to viewers: `{"number": 7, "name": "Luna"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub(crate) struct Player {
    /// The shirt number.
    pub number: u32,
    /// 1 to 64 characters, no control characters.
    #[schema(min_length = 1, max_length = 64)]
    pub name: String,
}

impl Player {
    /// The name given to a shirt number the roster does not know.
    pub(crate) const UNKNOWN_NAME: &'static str = "N/N";
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Card {
    Yellow,
    Red,
}

impl Card {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Card::Yellow => "yellow",
            Card::Red => "red",
        }
    }
}

// The content limits of SPEC 10, counted in characters (not bytes: a name in Cyrillic is as long
// as one in Latin letters). They are constants rather than flags because every node of a cluster
// must validate alike: a watcher's request gets the same answer from whichever node it reaches,
// and a match file accepted by one node is accepted by all.

/// The most `text` a `comment` may carry (SPEC 1 and 10).
pub(crate) const MAX_COMMENT_CHARS: usize = 280;
/// The most characters of a name, a player's or a team's (SPEC 10). Player names are printed on
/// one line of the v1 text protocol, so they are also kept free of control characters.
pub(crate) const MAX_NAME_CHARS: usize = 64;
/// The most characters of any other free text: a division, a stadium (SPEC 10).
pub(crate) const MAX_TEXT_CHARS: usize = 200;
/// The most players of one team's line-up on `start` (SPEC 10): a squad with every substitute
/// has fewer than 30, and each player is sent to every viewer in every snapshot.
pub(crate) const MAX_LINEUP_PLAYERS: usize = 60;

/// An accepted event's data, normalized (players resolved to number and name).
/// Field order is the order of v1's detail lines; JSON carries only the keys that are present.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventData {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub home_players: Option<Vec<Player>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visit_players: Option<Vec<Player>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub player: Option<Player>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub player_out: Option<Player>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card: Option<Card>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, pattern = "^[a-z0-9_]{1,16}$")]
    pub team: Option<TeamId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub player_in: Option<Player>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, pattern = "^[a-z0-9_]{1,16}$")]
    pub player_team: Option<TeamId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 280)]
    pub text: Option<String>,
}

/// A player as a watcher may name one: a bare shirt number (resolved against the roster) or a
/// number with a name.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(untagged)]
pub(crate) enum PlayerRef {
    Number(u32),
    Full { number: u32, name: String },
}

impl From<&Player> for PlayerRef {
    fn from(p: &Player) -> Self {
        PlayerRef::Full { number: p.number, name: p.name.clone() }
    }
}

/// A line-up as a watcher may send it: `[{"number":25,"name":"Albil"}, ...]`,
/// `[[25,"Albil"], ...]` or `{"25":"Albil", ...}`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(untagged)]
pub(crate) enum RosterInput {
    Players(Vec<Player>),
    Pairs(Vec<(u32, String)>),
    Map(BTreeMap<String, String>),
}

impl RosterInput {
    /// The players in the order given; a map key that is not a shirt number is an error.
    pub(crate) fn into_players(self) -> Result<Vec<Player>, ModelError> {
        match self {
            RosterInput::Players(v) => Ok(v),
            RosterInput::Pairs(v) => {
                Ok(v.into_iter().map(|(number, name)| Player { number, name }).collect())
            }
            RosterInput::Map(m) => m
                .into_iter()
                .map(|(k, name)| {
                    k.parse::<u32>()
                        .map(|number| Player { number, name })
                        .map_err(|_| ModelError(format!("line-up key {k:?} is not a shirt number")))
                })
                .collect(),
        }
    }
}

/// An event's data as a watcher sends it, before the rules of `state.rs` resolve it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventDataInput {
    #[serde(default)]
    pub home_players: Option<RosterInput>,
    #[serde(default)]
    pub visit_players: Option<RosterInput>,
    #[serde(default)]
    pub player: Option<PlayerRef>,
    #[serde(default)]
    pub player_out: Option<PlayerRef>,
    #[serde(default)]
    pub card: Option<Card>,
    #[serde(default)]
    #[schema(value_type = Option<String>, pattern = "^[a-z0-9_]{1,16}$")]
    pub team: Option<TeamId>,
    #[serde(default)]
    pub player_in: Option<PlayerRef>,
    #[serde(default)]
    #[schema(value_type = Option<String>, pattern = "^[a-z0-9_]{1,16}$")]
    pub player_team: Option<TeamId>,
    /// On `comment`: at most 280 characters.
    #[serde(default)]
    #[schema(max_length = 280)]
    pub text: Option<String>,
}

impl From<&EventData> for EventDataInput {
    /// Turns stored, normalized data back into input, to rebuild a match's state on restart.
    fn from(d: &EventData) -> Self {
        EventDataInput {
            home_players: d.home_players.clone().map(RosterInput::Players),
            visit_players: d.visit_players.clone().map(RosterInput::Players),
            player: d.player.as_ref().map(PlayerRef::from),
            player_out: d.player_out.as_ref().map(PlayerRef::from),
            card: d.card,
            team: d.team.clone(),
            player_in: d.player_in.as_ref().map(PlayerRef::from),
            player_team: d.player_team.clone(),
            text: d.text.clone(),
        }
    }
}

/// One event as a watcher publishes it: `{"kind":"goal","data":{...}}`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"kind": "goal", "data": {"team": "tig", "player": 7}}))]
pub(crate) struct EventInput {
    /// An event kind, or one of the original's aliases: `halftime` (= `halftime_start`),
    /// `continue` (= `halftime_stop`).
    #[schema(value_type = String, example = "goal")]
    pub kind: EventKind,
    /// Left out for events that need none.
    #[serde(default)]
    pub data: EventDataInput,
}

/// An accepted event: numbered, timestamped, normalized.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Event {
    pub seq: Seq,
    pub ts: Millis,
    pub kind: EventKind,
    pub data: EventData,
}

/// The players of one side: everyone the match has heard of (for resolving bare numbers) and who
/// is on the pitch now, in line-up order (substitutes take the place of the player they replace).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Side {
    pub roster: BTreeMap<u32, String>,
    pub on_pitch: Vec<Player>,
    pub score: u32,
}

/// A match as it stands after `seq` events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Match {
    pub info: MatchInfo,
    pub home: Side,
    pub visit: Side,
    pub period: Period,
    /// When the current period began (the `ts` of the event that began it).
    pub period_start: Option<Millis>,
    pub seq: Seq,
}

impl Match {
    pub(crate) fn new(info: MatchInfo) -> Match {
        Match {
            info,
            home: Side::default(),
            visit: Side::default(),
            period: Period::NotStarted,
            period_start: None,
            seq: 0,
        }
    }

    pub(crate) fn id(&self) -> &MatchId {
        &self.info.id
    }

    /// Has ended (after `stop`): nothing more can happen.
    pub(crate) fn is_over(&self) -> bool {
        self.period == Period::Ended
    }
}

/// The match object of `GET /1/match/<id>` and of the v2 `status` frame (the original's keys,
/// hyphens included, plus ours).
impl Serialize for Match {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct Players<'a>(&'a [Player]);
        impl Serialize for Players<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut m = s.serialize_map(Some(self.0.len()))?;
                for p in self.0 {
                    m.serialize_entry(&p.number.to_string(), &p.name)?;
                }
                m.end()
            }
        }
        let info = &self.info;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("id", &info.id)?;
        m.serialize_entry("home", &info.home.id)?;
        if let Some(name) = &info.home.name {
            m.serialize_entry("home-name", name)?;
        }
        m.serialize_entry("home-players", &Players(&self.home.on_pitch))?;
        m.serialize_entry("home-score", &self.home.score)?;
        m.serialize_entry("visit", &info.visit.id)?;
        if let Some(name) = &info.visit.name {
            m.serialize_entry("visit-name", name)?;
        }
        m.serialize_entry("visit-players", &Players(&self.visit.on_pitch))?;
        m.serialize_entry("visit-score", &self.visit.score)?;
        m.serialize_entry("period", &self.period)?;
        m.serialize_entry("period_start", &self.period_start)?;
        m.serialize_entry("start_time", &info.start_date)?;
        if let Some(d) = info.home.division.as_ref().or(info.visit.division.as_ref()) {
            m.serialize_entry("division", d)?;
        }
        if let Some(stadium) = &info.stadium {
            m.serialize_entry("stadium", stadium)?;
        }
        m.serialize_entry("seq", &self.seq)?;
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_parse_with_aliases() {
        assert_eq!(EventKind::parse("halftime").unwrap(), EventKind::HalftimeStart);
        assert_eq!(EventKind::parse("continue").unwrap(), EventKind::HalftimeStop);
        for k in EventKind::ALL {
            assert_eq!(EventKind::parse(k.as_str()).unwrap(), k);
        }
        assert!(EventKind::parse("status").is_err());
    }

    #[test]
    fn event_data_serializes_in_spec_order_without_absent_keys() {
        let d = EventData {
            player: Some(Player { number: 7, name: "Luna".into() }),
            team: Some(TeamId::parse("tig").unwrap()),
            ..EventData::default()
        };
        assert_eq!(
            serde_json::to_string(&d).unwrap(),
            r#"{"player":{"number":7,"name":"Luna"},"team":"tig"}"#
        );
    }

    #[test]
    fn rosters_accept_three_shapes() {
        let a: RosterInput = serde_json::from_str(r#"[{"number":25,"name":"Albil"}]"#).unwrap();
        let b: RosterInput = serde_json::from_str(r#"[[25,"Albil"]]"#).unwrap();
        let c: RosterInput = serde_json::from_str(r#"{"25":"Albil"}"#).unwrap();
        let want = vec![Player { number: 25, name: "Albil".into() }];
        for r in [a, b, c] {
            assert_eq!(r.into_players().unwrap(), want);
        }
    }
}
