//! The original's Erlang-term match files (SPEC section 6): what the terms read by `terms.rs`
//! mean, and the [`MatchFile`] they make.

use serde_json::{Map, Value};

use super::terms::{self, Kind, Pos, Term};
use super::{MatchFile, MatchFileError, Step};
use matchstream_proto::{Date, Team, TeamId};

/// Reads a whole Erlang-term match file.
pub(super) fn parse(text: &str) -> Result<MatchFile, MatchFileError> {
    to_match_file(&terms::read(text)?)
}

const TOP_KEYS: &str = "home, visit, start_date, stadium or steps";

fn to_match_file(terms: &[Term]) -> Result<MatchFile, MatchFileError> {
    let mut home = None;
    let mut visit = None;
    let mut start_date = None;
    let mut stadium = None;
    let mut steps = None;
    let mut seen: Vec<(&str, Pos)> = Vec::new();
    for term in terms {
        let (key, value) = term.as_pair("a `{key, Value}` entry such as {home, <<\"elp\">>}")?;
        if let Some((_, first)) = seen.iter().find(|(k, _)| *k == key) {
            return Err(term.invalid(format!(
                "`{key}` is given twice (first at line {}, column {})",
                first.line, first.column
            )));
        }
        seen.push((key, term.pos));
        match key {
            "home" => home = Some(team(value)?),
            "visit" => visit = Some(team(value)?),
            "start_date" => start_date = Some(date(value)?),
            "stadium" => {
                let text = value.as_text().ok_or_else(|| {
                    value
                        .invalid(format!("expected the stadium's name, found {}", value.describe()))
                })?;
                stadium = Some(text.to_owned());
            }
            "steps" => steps = Some(step_list(value)?),
            other => {
                return Err(term.invalid(format!("unknown entry `{other}` (expected {TOP_KEYS})")))
            }
        }
    }
    let missing =
        |key: &'static str, example: &'static str| MatchFileError::Missing { key, example };
    Ok(MatchFile {
        home: home.ok_or_else(|| missing("home", "{home, <<\"elp\">>}."))?,
        visit: visit.ok_or_else(|| missing("visit", "{visit, <<\"tig\">>}."))?,
        start_date: start_date
            .ok_or_else(|| missing("start_date", "{start_date, {2011,9,10}}."))?,
        stadium,
        steps: steps.ok_or_else(|| missing("steps", "{steps, [{sleep, 1000}, ...]}."))?,
    })
}

/// `<<"elp">>` or `[{id, <<"elp">>}, {name, <<"Estudiantes">>}, {division, <<"Primera">>}]`.
fn team(value: &Term) -> Result<Team, MatchFileError> {
    let team_id = |t: &Term| -> Result<TeamId, MatchFileError> {
        let text = t.as_text().ok_or_else(|| {
            t.invalid(format!("expected a team id such as <<\"elp\">>, found {}", t.describe()))
        })?;
        TeamId::parse(text).map_err(|e| t.invalid(e.0))
    };
    let Kind::List(fields) = &value.kind else {
        return Ok(Team { id: team_id(value)?, name: None, division: None });
    };
    let mut id = None;
    let mut name = None;
    let mut division = None;
    for field in fields {
        let (key, v) = field.as_pair("a team field such as {name, <<\"Estudiantes\">>}")?;
        let text = || {
            v.as_text().map(str::to_owned).ok_or_else(|| {
                v.invalid(format!("expected the team's {key} as text, found {}", v.describe()))
            })
        };
        match key {
            "id" => id = Some(team_id(v)?),
            "name" => name = Some(text()?),
            "division" => division = Some(text()?),
            other => {
                return Err(field.invalid(format!(
                    "unknown team field `{other}` (expected id, name or division)"
                )))
            }
        }
    }
    let id = id.ok_or_else(|| value.invalid("the team has no {id, <<\"...\">>}"))?;
    Ok(Team { id, name, division })
}

/// `{2011, 9, 10}` (or the text `"2011-09-10"`).
fn date(value: &Term) -> Result<Date, MatchFileError> {
    let text = match &value.kind {
        Kind::Tuple(items) => match items.as_slice() {
            [Term { kind: Kind::Int(y), .. }, Term { kind: Kind::Int(m), .. }, Term { kind: Kind::Int(d), .. }]
                if (0..=9999).contains(y) && (0..=99).contains(m) && (0..=99).contains(d) =>
            {
                format!("{y:04}-{m:02}-{d:02}")
            }
            _ => {
                return Err(value.invalid(format!(
                    "start_date {{{}}} is not a date {{Year, Month, Day}}",
                    items.iter().map(Term::describe).collect::<Vec<_>>().join(", ")
                )))
            }
        },
        Kind::Text(s) => s.clone(),
        _ => {
            return Err(value.invalid(format!(
                "expected a date {{Year, Month, Day}}, found {}",
                value.describe()
            )))
        }
    };
    Date::parse(&text).map_err(|e| value.invalid(format!("start_date: {e}")))
}

fn step_list(value: &Term) -> Result<Vec<Step>, MatchFileError> {
    let Kind::List(items) = &value.kind else {
        return Err(value.invalid(format!("expected a list of steps, found {}", value.describe())));
    };
    items.iter().map(step).collect()
}

/// `{sleep, Ms}` or `{Kind, [{Key, Value}, ...]}`.
fn step(term: &Term) -> Result<Step, MatchFileError> {
    let (kind, value) = term.as_pair("a step: {sleep, Ms} or {Kind, [{Key, Value}, ...]}")?;
    if kind == "sleep" {
        return match value.kind {
            Kind::Int(ms) if ms >= 0 => Ok(Step::Sleep(ms.unsigned_abs())),
            _ => Err(value.invalid(format!(
                "expected the pause in milliseconds (0 or more), found {}",
                value.describe()
            ))),
        };
    }
    let Kind::List(fields) = &value.kind else {
        return Err(value.invalid(format!(
            "expected the `{kind}` event's data as a list [{{Key, Value}}, ...], found {}",
            value.describe()
        )));
    };
    let mut data = Map::new();
    for field in fields {
        let (key, v) = field.as_pair("a data field such as {team, <<\"tig\">>}")?;
        if data.insert(key.to_owned(), data_value(v)?).is_some() {
            return Err(field.invalid(format!("`{key}` is given twice in this `{kind}` event")));
        }
    }
    Ok(Step::Event(serde_json::json!({ "kind": kind, "data": data })))
}

/// An event's data value as JSON: text and atoms become strings, `{21, <<"Silva">>}` a player.
fn data_value(term: &Term) -> Result<Value, MatchFileError> {
    Ok(match &term.kind {
        Kind::Text(s) | Kind::Atom(s) => Value::String(s.clone()),
        Kind::Int(i) => Value::from(*i),
        Kind::Float(f) => Value::from(*f),
        Kind::List(items) => Value::Array(items.iter().map(data_value).collect::<Result<_, _>>()?),
        Kind::Tuple(items) => match items.as_slice() {
            [Term { kind: Kind::Int(number), .. }, name] if name.as_text().is_some() => {
                serde_json::json!({ "number": number, "name": name.as_text() })
            }
            _ => {
                return Err(term.invalid(format!(
                    "expected a player {{Number, <<\"Name\">>}}, found {}",
                    term.describe()
                )))
            }
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_values_convert_to_json() {
        let step = |s: &str| super::step(&terms::read(&format!("{s}.")).unwrap()[0]);
        let got = step(
            "{substitution, [{team, <<\"elp\">>}, {player_in, {21, <<\"Silva\">>}}, {player_out, 18}, {card, red}, {x, 1.5}]}",
        )
        .unwrap();
        let want = serde_json::json!({"kind": "substitution", "data": {
            "team": "elp", "player_in": {"number": 21, "name": "Silva"}, "player_out": 18,
            "card": "red", "x": 1.5}});
        assert_eq!(got, Step::Event(want));
        assert_eq!(
            step("{start, [{home_players, [{25, <<\"Albil\">>}, {2, \"Desabato\"}]}]}").unwrap(),
            Step::Event(serde_json::json!({"kind": "start", "data": {"home_players": [
                {"number": 25, "name": "Albil"}, {"number": 2, "name": "Desabato"}]}}))
        );
        assert_eq!(
            step("{halftime, []}").unwrap(),
            Step::Event(serde_json::json!({"kind": "halftime", "data": {}}))
        );
        assert_eq!(step("{sleep, 250}").unwrap(), Step::Sleep(250));
        let bad = [
            ("{sleep, -1}", "line 1, column 9: expected the pause in milliseconds"),
            ("{goal, {team, x}}", "line 1, column 8: expected the `goal` event's data as a list"),
            (
                "{goal, [{player, {7, 8}}]}",
                "line 1, column 18: expected a player {Number, <<\"Name\">>}",
            ),
            ("{goal, [{team, x}, {team, y}]}", "line 1, column 20: `team` is given twice"),
            ("{<<\"goal\">>, []}", "line 1, column 1: expected a step"),
        ];
        for (input, want) in bad {
            let msg = step(input).unwrap_err().to_string();
            assert!(msg.starts_with(want), "{input}: {msg}");
        }
    }
}
