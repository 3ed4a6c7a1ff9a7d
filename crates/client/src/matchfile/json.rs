//! The JSON twin of the Erlang-term match files (SPEC section 6): the same content read with
//! serde, every error placed at a line and column by serde_json.

use std::fmt;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

use super::{MatchFile, MatchFileError, Step};
use matchstream_proto::{Date, Team, TeamId};

/// Reads a whole JSON match file.
pub(super) fn parse(text: &str) -> Result<MatchFile, MatchFileError> {
    let file: JsonFile = serde_json::from_str(text).map_err(|e| {
        // serde_json ends its messages with " at line L column C"; we lead with the place.
        let place = format!(" at line {} column {}", e.line(), e.column());
        let full = e.to_string();
        let message = full.strip_suffix(&place).unwrap_or(&full).to_owned();
        let (line, column) = (e.line(), e.column());
        match e.classify() {
            serde_json::error::Category::Data => MatchFileError::Invalid { line, column, message },
            _ => MatchFileError::Syntax { line, column, message },
        }
    })?;
    Ok(MatchFile {
        home: file.home.0,
        visit: file.visit.0,
        start_date: file.start_date,
        stadium: file.stadium,
        steps: file.steps.into_iter().map(|s| s.0).collect(),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonFile {
    home: JsonTeam,
    visit: JsonTeam,
    start_date: Date,
    #[serde(default)]
    stadium: Option<String>,
    steps: Vec<JsonStep>,
}

/// `"elp"` or `{"id":"elp","name":..,"division":..}`. Written by hand rather than as an
/// untagged enum so that a mistake gets a precise message instead of "did not match any variant".
struct JsonTeam(Team);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonTeamFields {
    id: TeamId,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    division: Option<String>,
}

impl<'de> Deserialize<'de> for JsonTeam {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = JsonTeam;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#"a team id such as "elp" or {"id":"elp","name":"Estudiantes"}"#)
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<JsonTeam, E> {
                let id = TeamId::parse(s).map_err(E::custom)?;
                Ok(JsonTeam(Team { id, name: None, division: None }))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<JsonTeam, A::Error> {
                let f = JsonTeamFields::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(JsonTeam(Team { id: f.id, name: f.name, division: f.division }))
            }
        }
        d.deserialize_any(V)
    }
}

/// `{"sleep": 3000}` or `{"kind": "goal", "data": {...}}` (`data` may be left out).
struct JsonStep(Step);

impl<'de> Deserialize<'de> for JsonStep {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = JsonStep;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#"a step: {"sleep": ms} or {"kind": "..", "data": {..}}"#)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<JsonStep, A::Error> {
                let mut sleep: Option<u64> = None;
                let mut kind: Option<String> = None;
                let mut data: Option<Map<String, Value>> = None;
                while let Some(key) = map.next_key::<String>()? {
                    let dup = match key.as_str() {
                        "sleep" => sleep.replace(map.next_value()?).is_some(),
                        "kind" => kind.replace(map.next_value()?).is_some(),
                        "data" => data.replace(map.next_value()?).is_some(),
                        other => {
                            return Err(de::Error::unknown_field(other, &["sleep", "kind", "data"]))
                        }
                    };
                    if dup {
                        return Err(de::Error::custom(format_args!("`{key}` is given twice")));
                    }
                }
                match (sleep, kind) {
                    (Some(ms), None) if data.is_none() => Ok(JsonStep(Step::Sleep(ms))),
                    (None, Some(kind)) => {
                        let data = Value::Object(data.unwrap_or_default());
                        Ok(JsonStep(Step::Event(serde_json::json!({"kind": kind, "data": data}))))
                    }
                    (Some(_), _) => Err(de::Error::custom(
                        "a step is either {\"sleep\": ms} or an event, not both",
                    )),
                    (None, None) => Err(de::Error::custom(
                        "a step needs \"sleep\" (a pause) or \"kind\" (an event)",
                    )),
                }
            }
        }
        d.deserialize_map(V)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{err, seed_as_json};

    #[test]
    fn json_errors_name_the_place() {
        let good = seed_as_json();
        let msg = err(&good[..200]);
        assert!(msg.starts_with("line ") && msg.contains("EOF"), "{msg}");

        let unknown = good.replacen("\"visit\"", "\"vistor\"", 1);
        let msg = err(&unknown);
        assert!(msg.starts_with("line ") && msg.contains("unknown field `vistor`"), "{msg}");

        let bad_date = good.replacen("2011-09-10", "2011-9-10", 1);
        let msg = err(&bad_date);
        assert!(
            msg.contains("column") && msg.contains("\"2011-9-10\" must be a real date"),
            "{msg}"
        );

        let bad_step = r#"{"home": "elp", "visit": "tig", "start_date": "2011-09-10",
            "steps": [{"sleep": 1, "kind": "goal"}]}"#;
        assert_eq!(
            err(bad_step),
            "line 2, column 50: a step is either {\"sleep\": ms} or an event, not both"
        );
        let no_steps = r#"{"home": "elp", "visit": "tig", "start_date": "2011-09-10"}"#;
        assert!(err(no_steps).contains("missing field `steps`"));
    }
}
