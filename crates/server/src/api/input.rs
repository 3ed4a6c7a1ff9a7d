//! Turns what clients send (the watcher API's bodies, the query strings of both APIs) into model
//! inputs, with errors a person can act on (SPEC 10): each names the field by its path
//! (`[3].data.home_players[0]`) and shows what a valid value looks like, never a parser's words.
//! The publishing limits of SPEC 10 are checked here on the whole request, before anything is
//! applied; whether an event can apply to its match is `state.rs`'s to say, afterwards.
//!
//! Bodies are read as a `serde_json::Value` and walked by hand: serde's derived errors name
//! types (`untagged enum RosterInput`) where a watcher needs the field and an example.

use std::collections::BTreeMap;
use std::fmt;

use axum::http::StatusCode;
use serde_json::{Map, Value};

use super::error::ApiError;
use crate::model::{
    Card, Date, EventDataInput, EventInput, EventKind, MatchInfo, NewMatch, Player, PlayerRef,
    RosterInput, Seq, TeamId, MAX_COMMENT_CHARS, MAX_LINEUP_PLAYERS, MAX_NAME_CHARS,
    MAX_TEXT_CHARS,
};

const EVENT: &str = r#"{"kind": "goal", "data": {"team": "elp", "player": 7}}"#;
const MATCH: &str = r#"{"home": "elp", "visit": "tig", "start_date": "2011-09-10"}"#;
pub(super) const MATCH_KEYS: [&str; 7] =
    ["home", "visit", "start_date", "home_name", "visit_name", "division", "stadium"];
pub(super) const DATA_KEYS: [&str; 9] = [
    "home_players",
    "visit_players",
    "player",
    "player_out",
    "card",
    "team",
    "player_in",
    "player_team",
    "text",
];
const PLAYER: &str = r#"a player is {"number": 7, "name": "Luna"}"#;
const TEAM_ID: &str = r#"a team id is 1 to 16 of a-z, 0-9 and _ ([a-z0-9_]{1,16}), e.g. "elp""#;
const DATE: &str = r#"a date is "2011-09-10" (year-month-day, a day of the calendar)"#;
const LINEUP: &str = r#"a line-up is a list of players [{"number": 7, "name": "Luna"}, ...], a list of pairs [[7, "Luna"], ...] or a map {"7": "Luna", ...}"#;
/// Longest piece of a request quoted back in an error: enough to recognise it, and a hostile
/// body is not echoed whole.
const QUOTE_CHARS: usize = 40;

/// The events of `POST /1/match/<id>/events`: one event or a list of at most `max`, and whether
/// it was a list (the answer is then a list too).
pub(super) fn events(body: &[u8], max: usize) -> Result<(Vec<EventInput>, bool), ApiError> {
    let expected = format!("one event {EVENT} or a list of them");
    match json(body, &expected)? {
        Value::Array(items) if items.is_empty() => {
            Err(bad(&Path::Root, format!("an empty list publishes nothing: send {expected}")))
        }
        Value::Array(items) if items.len() > max => Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "at most {max} events per request (--max-events-per-request), this one has {}: \
                 send the rest in another request",
                items.len()
            ),
        )),
        Value::Array(items) => {
            let events = items
                .iter()
                .enumerate()
                .map(|(i, item)| event(&Path::Index(&Path::Root, i), item))
                .collect::<Result<_, _>>()?;
            Ok((events, true))
        }
        one => Ok((vec![event(&Path::Root, &one)?], false)),
    }
}

/// The body of `POST /1/matches`, validated into the match it creates.
pub(super) fn new_match(body: &[u8]) -> Result<MatchInfo, ApiError> {
    let root = Path::Root;
    let value = json(body, &format!("a match {MATCH}"))?;
    let Value::Object(fields) = &value else {
        return Err(bad(&root, format!("the body is a match {MATCH}, not {}", shown(&value))));
    };
    if let Some(key) = fields.keys().find(|k| !MATCH_KEYS.contains(&k.as_str())) {
        return Err(bad(
            &root,
            format!(
                "unknown key {}: a match has the keys {} (the first three are needed)",
                quoted(key),
                MATCH_KEYS.join(", ")
            ),
        ));
    }
    let needed = |key: &'static str| {
        fields.get(key).filter(|v| !v.is_null()).ok_or_else(|| {
            bad(
                &root,
                format!("{key} is missing: a match needs home, visit and start_date, {MATCH}"),
            )
        })
    };
    let home = team_id(&Path::Key(&root, "home"), needed("home")?)?;
    let visit = team_id(&Path::Key(&root, "visit"), needed("visit")?)?;
    let start_date = date(&Path::Key(&root, "start_date"), needed("start_date")?)?;
    let line = |key: &'static str, max: usize| match fields.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => one_line(&Path::Key(&root, key), v, max).map(Some),
    };
    let new = NewMatch {
        home,
        visit,
        start_date,
        home_name: line("home_name", MAX_NAME_CHARS)?,
        visit_name: line("visit_name", MAX_NAME_CHARS)?,
        division: line("division", MAX_TEXT_CHARS)?,
        stadium: line("stadium", MAX_TEXT_CHARS)?,
    };
    new.into_info().map_err(|e| bad(&Path::Key(&root, "visit"), e.0))
}

/// `after` of `POST /1/match/<id>/events?after=<seq>`: publish only if the match is at it.
pub(super) fn publish_after(query: Option<&str>) -> Result<Option<Seq>, ApiError> {
    let mut after = None;
    for (key, value) in pairs(query)? {
        if key == "after" {
            after = Some(whole(&value).ok_or_else(|| {
                bad(
                    &Path::Key(&Path::Root, "after"),
                    format!(
                        "the seq the match must be at, a whole number such as 12 (?after=12), \
                         not {}",
                        quoted(&value)
                    ),
                )
            })?);
        }
    }
    Ok(after)
}

/// `after` and `limit` of `GET /1/match/<id>/history`: `limit` is `default` when absent and
/// capped at `max`.
pub(super) fn history_query(
    query: Option<&str>,
    default: usize,
    max: usize,
) -> Result<(Seq, usize), ApiError> {
    let (mut after, mut limit) = (0, default.min(max));
    for (key, value) in pairs(query)? {
        match key.as_str() {
            "after" => {
                after = whole(&value).ok_or_else(|| {
                    bad(
                        &Path::Key(&Path::Root, "after"),
                        format!(
                            "the seq to list events after, a whole number such as 12 (0, the \
                             default, lists from the first), not {}",
                            quoted(&value)
                        ),
                    )
                })?;
            }
            "limit" => {
                // A number too large for any type is as good as the largest page.
                let n = whole(&value).or_else(|| {
                    (!value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()))
                        .then_some(u64::MAX)
                });
                limit = match n {
                    Some(n) if n > 0 => usize::try_from(n).unwrap_or(usize::MAX).min(max),
                    _ => {
                        return Err(bad(
                            &Path::Key(&Path::Root, "limit"),
                            format!(
                                "the most events of a page, a whole number from 1 to {max} (a \
                                 larger one is capped at {max}; without it, {default}), not {}",
                                quoted(&value)
                            ),
                        ))
                    }
                };
            }
            // Anything else (a browser's cache buster) names nothing of ours.
            _ => {}
        }
    }
    Ok((after, limit))
}

/// Where a value sits in a request, for messages: `[3].data.home_players[0].name`. Built on the
/// stack while walking; turned into text only for an error.
enum Path<'a> {
    Root,
    Key(&'a Path<'a>, &'a str),
    Index(&'a Path<'a>, usize),
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Path::Root => Ok(()),
            Path::Key(parent, key) => {
                write!(f, "{parent}")?;
                let plain = !key.is_empty()
                    && key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                    && key.len() <= QUOTE_CHARS;
                match (plain, parent) {
                    (true, Path::Root) => write!(f, "{key}"),
                    (true, _) => write!(f, ".{key}"),
                    // A key of the watcher's own (a line-up map's shirt number).
                    (false, _) => write!(f, "[{}]", quoted(key)),
                }
            }
            Path::Index(parent, i) => write!(f, "{parent}[{i}]"),
        }
    }
}

/// A malformed request (400): `<path>: <what is wrong>`.
fn bad(at: &Path, what: impl fmt::Display) -> ApiError {
    ApiError::bad_request(located(at, what))
}

/// Well formed, but past a limit of SPEC 10 (422).
fn over(at: &Path, what: impl fmt::Display) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, located(at, what))
}

fn located(at: &Path, what: impl fmt::Display) -> String {
    match at {
        Path::Root => what.to_string(),
        _ => format!("{at}: {what}"),
    }
}

/// A value as an error quotes it: short strings and numbers as they are, anything else by kind.
fn shown(v: &Value) -> String {
    match v {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => quoted(s),
        Value::Array(items) => format!("a list of {} items", items.len()),
        Value::Object(_) => "an object".to_owned(),
    }
}

/// `s` in JSON quotes, cut after [`QUOTE_CHARS`] characters.
fn quoted(s: &str) -> String {
    let chars = s.chars().count();
    if chars <= QUOTE_CHARS {
        Value::from(s).to_string()
    } else {
        let head: String = s.chars().take(QUOTE_CHARS).collect();
        format!("{}... ({chars} characters)", Value::from(head))
    }
}

/// The body as JSON, or where it stops being JSON.
fn json(body: &[u8], expected: &str) -> Result<Value, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(bad(&Path::Root, format!("the body is empty: send {expected}")));
    }
    serde_json::from_slice(body).map_err(|e| {
        let why = match e.classify() {
            serde_json::error::Category::Eof => "ends before its JSON does",
            _ => "is not valid JSON",
        };
        bad(
            &Path::Root,
            format!("the body {why} (line {}, column {}): send {expected}", e.line(), e.column()),
        )
    })
}

/// The `name=value` pairs of a query string, decoded.
fn pairs(query: Option<&str>) -> Result<Vec<(String, String)>, ApiError> {
    serde_urlencoded::from_str(query.unwrap_or_default())
        .map_err(|_| bad(&Path::Root, "the query is name=value pairs joined by &"))
}

/// A whole number written in decimal digits only.
fn whole(s: &str) -> Option<u64> {
    s.bytes().all(|b| b.is_ascii_digit()).then(|| s.parse().ok()).flatten()
}

fn event(at: &Path, v: &Value) -> Result<EventInput, ApiError> {
    let Value::Object(fields) = v else {
        return Err(bad(at, format!("an event is {EVENT}, not {}", shown(v))));
    };
    if let Some(key) = fields.keys().find(|k| !matches!(k.as_str(), "kind" | "data")) {
        return Err(bad(
            at,
            format!("unknown key {}: an event has the keys kind and data, {EVENT}", quoted(key)),
        ));
    }
    let kinds = || EventKind::ALL.map(EventKind::as_str).join(", ");
    let kind_at = Path::Key(at, "kind");
    let kind = match fields.get("kind") {
        None | Some(Value::Null) => {
            return Err(bad(at, format!("kind is missing: {EVENT}; the kinds are {}", kinds())))
        }
        Some(Value::String(s)) => EventKind::parse(s).map_err(|_| {
            bad(&kind_at, format!("unknown kind {}: the kinds are {}", quoted(s), kinds()))
        })?,
        Some(other) => {
            return Err(bad(
                &kind_at,
                format!("a kind is a string, one of {}; not {}", kinds(), shown(other)),
            ))
        }
    };
    let data_at = Path::Key(at, "data");
    let data = match fields.get("data") {
        None | Some(Value::Null) => EventDataInput::default(),
        Some(Value::Object(d)) => data(&data_at, kind, d)?,
        Some(other) => {
            return Err(bad(
                &data_at,
                format!(
                    r#"the data of an event is an object such as {{"team": "elp"}}, not {}"#,
                    shown(other)
                ),
            ))
        }
    };
    Ok(EventInput { kind, data })
}

fn data(at: &Path, kind: EventKind, d: &Map<String, Value>) -> Result<EventDataInput, ApiError> {
    let mut out = EventDataInput::default();
    for (key, v) in d {
        // An absent value, as serde reads `Option`s.
        if v.is_null() && DATA_KEYS.contains(&key.as_str()) {
            continue;
        }
        let here = Path::Key(at, key);
        match key.as_str() {
            "home_players" => out.home_players = Some(lineup(&here, v)?),
            "visit_players" => out.visit_players = Some(lineup(&here, v)?),
            "player" => out.player = Some(player_ref(&here, v)?),
            "player_out" => out.player_out = Some(player_ref(&here, v)?),
            "player_in" => out.player_in = Some(player_ref(&here, v)?),
            "card" => out.card = Some(card(&here, v)?),
            "team" => out.team = Some(team_id(&here, v)?),
            "player_team" => out.player_team = Some(team_id(&here, v)?),
            "text" => out.text = Some(text(&here, v, MAX_COMMENT_CHARS)?),
            _ => {
                let (accepted, _) = crate::state::keys_of(kind);
                let takes = if accepted.is_empty() {
                    format!("{} takes no data", kind.as_str())
                } else {
                    format!("{} takes {}", kind.as_str(), accepted.join(", "))
                };
                return Err(bad(
                    at,
                    format!(
                        "unknown key {}: {takes} (the keys of any event are {})",
                        quoted(key),
                        DATA_KEYS.join(", ")
                    ),
                ));
            }
        }
    }
    Ok(out)
}

/// A line-up in one of its three shapes, at most [`MAX_LINEUP_PLAYERS`] players.
fn lineup(at: &Path, v: &Value) -> Result<RosterInput, ApiError> {
    let count = match v {
        Value::Array(items) => items.len(),
        Value::Object(map) => map.len(),
        other => return Err(bad(at, format!("{LINEUP}; not {}", shown(other)))),
    };
    if count > MAX_LINEUP_PLAYERS {
        return Err(over(
            at,
            format!(
                "at most {MAX_LINEUP_PLAYERS} players per team in a line-up, this one has {count}"
            ),
        ));
    }
    match v {
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| lineup_player(&Path::Index(at, i), item))
            .collect::<Result<_, _>>()
            .map(RosterInput::Players),
        Value::Object(map) => {
            let mut players = BTreeMap::new();
            for (number, name) in map {
                if whole(number).is_none_or(|n| u32::try_from(n).is_err()) {
                    return Err(bad(
                        at,
                        format!(
                            r#"the key {} is not a shirt number: a line-up map is {{"7": "Luna", ...}}"#,
                            quoted(number)
                        ),
                    ));
                }
                players.insert(number.clone(), player_name(&Path::Key(at, number), name)?);
            }
            Ok(RosterInput::Map(players))
        }
        // Refused above.
        _ => Ok(RosterInput::Players(Vec::new())),
    }
}

/// One player of a line-up list: `{"number": 7, "name": "Luna"}` or `[7, "Luna"]`.
fn lineup_player(at: &Path, v: &Value) -> Result<Player, ApiError> {
    match v {
        Value::Object(fields) => player(at, fields),
        Value::Array(pair) if pair.len() == 2 => Ok(Player {
            number: shirt_number(&Path::Index(at, 0), &pair[0])?,
            name: player_name(&Path::Index(at, 1), &pair[1])?,
        }),
        other => Err(bad(at, format!(r#"{PLAYER} (or a pair [7, "Luna"]), not {}"#, shown(other)))),
    }
}

/// `{"number": 7, "name": "Luna"}`.
fn player(at: &Path, fields: &Map<String, Value>) -> Result<Player, ApiError> {
    if let Some(key) = fields.keys().find(|k| !matches!(k.as_str(), "number" | "name")) {
        return Err(bad(at, format!("unknown key {}: {PLAYER}", quoted(key))));
    }
    let (Some(number), Some(name)) = (fields.get("number"), fields.get("name")) else {
        return Err(bad(at, format!("a player needs a number and a name: {PLAYER}")));
    };
    Ok(Player {
        number: shirt_number(&Path::Key(at, "number"), number)?,
        name: player_name(&Path::Key(at, "name"), name)?,
    })
}

/// A player named in an event: in full, or by a shirt number of the line-up.
fn player_ref(at: &Path, v: &Value) -> Result<PlayerRef, ApiError> {
    match v {
        Value::Number(_) => Ok(PlayerRef::Number(shirt_number(at, v)?)),
        Value::Object(fields) => {
            let Player { number, name } = player(at, fields)?;
            Ok(PlayerRef::Full { number, name })
        }
        other => Err(bad(
            at,
            format!(
                "{PLAYER}, or the shirt number of one in the line-up such as 7; not {}",
                shown(other)
            ),
        )),
    }
}

fn shirt_number(at: &Path, v: &Value) -> Result<u32, ApiError> {
    v.as_u64().and_then(|n| u32::try_from(n).ok()).ok_or_else(|| {
        bad(at, format!("a shirt number is a whole number such as 7, not {}", shown(v)))
    })
}

/// A player's name: at most [`MAX_NAME_CHARS`] (whether it is empty or holds control characters
/// is the rules' to say, for every way a name arrives).
fn player_name(at: &Path, v: &Value) -> Result<String, ApiError> {
    text(at, v, MAX_NAME_CHARS)
}

/// A string of at most `max` characters.
fn text(at: &Path, v: &Value, max: usize) -> Result<String, ApiError> {
    let Value::String(s) = v else {
        return Err(bad(at, format!("a text of 1 to {max} characters, not {}", shown(v))));
    };
    let chars = s.chars().count();
    if chars > max {
        return Err(over(at, format!("at most {max} characters, this one has {chars}")));
    }
    Ok(s.clone())
}

/// A name or a place shown on one line: 1 to `max` characters, no control characters.
fn one_line(at: &Path, v: &Value, max: usize) -> Result<String, ApiError> {
    let s = text(at, v, max)?;
    if s.is_empty() || s.chars().any(char::is_control) {
        return Err(over(
            at,
            format!("1 to {max} characters on one line (no control characters), not {}", shown(v)),
        ));
    }
    Ok(s)
}

fn card(at: &Path, v: &Value) -> Result<Card, ApiError> {
    match v.as_str() {
        Some("yellow") => Ok(Card::Yellow),
        Some("red") => Ok(Card::Red),
        _ => Err(bad(at, format!(r#"a card is "yellow" or "red", not {}"#, shown(v)))),
    }
}

fn team_id(at: &Path, v: &Value) -> Result<TeamId, ApiError> {
    v.as_str()
        .and_then(|s| TeamId::parse(s).ok())
        .ok_or_else(|| bad(at, format!("{TEAM_ID}, not {}", shown(v))))
}

fn date(at: &Path, v: &Value) -> Result<Date, ApiError> {
    v.as_str()
        .and_then(|s| Date::parse(s).ok())
        .ok_or_else(|| bad(at, format!("{DATE}, not {}", shown(v))))
}

#[cfg(test)]
mod tests;
