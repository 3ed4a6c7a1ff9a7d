//! The names the protocol gives things (SPEC section 1): sequence numbers, times, team and match
//! ids, dates, and a team as a watcher describes it. Validated on parse, so a value of these
//! types is always well-formed, on whichever side of the wire it was built.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A per-match event number: 1, 2, 3 ... gapless, assigned when the server accepts the event.
/// `0` means "before the first event".
pub type Seq = u64;

/// Milliseconds since the Unix epoch, server clock.
pub type Millis = i64;

/// Why an id or a date is malformed, for a person.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct IdError(pub String);

/// A team id: `[a-z0-9_]{1,16}`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct TeamId(String);

impl TeamId {
    pub fn parse(s: &str) -> Result<TeamId, IdError> {
        if TeamId::valid(s) {
            Ok(TeamId(s.to_owned()))
        } else {
            Err(IdError(format!("team id {s:?} must be 1 to 16 characters of a-z, 0-9 or _")))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn valid(s: &str) -> bool {
        (1..=16).contains(&s.len())
            && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    }
}

impl fmt::Display for TeamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for TeamId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        TeamId::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A calendar date `YYYY-MM-DD` (validated, kept as text: it is only ever printed).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Date(String);

impl Date {
    pub fn parse(s: &str) -> Result<Date, IdError> {
        if Date::valid(s) {
            Ok(Date(s.to_owned()))
        } else {
            Err(IdError(format!("date {s:?} must be a real date as YYYY-MM-DD")))
        }
    }

    /// Ten characters `YYYY-MM-DD` naming a day of the calendar. Read by hand rather than with a
    /// format string: every request naming a match checks one (a tenth of a read's cost with
    /// chrono's parser).
    fn valid(s: &str) -> bool {
        let b = s.as_bytes();
        let number = |r: std::ops::Range<usize>| -> Option<u32> {
            b[r].iter()
                .try_fold(0u32, |n, &d| d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0')))
        };
        if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
            return false;
        }
        match (number(0..4), number(5..7), number(8..10)) {
            (Some(y), Some(m), Some(d)) => {
                chrono::NaiveDate::from_ymd_opt(y as i32, m, d).is_some()
            }
            _ => false,
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Date {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Date::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// `<home>-<visit>-YYYY-MM-DD`, e.g. `elp-tig-2011-09-10`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct MatchId(String);

impl MatchId {
    pub fn new(home: &TeamId, visit: &TeamId, date: &Date) -> MatchId {
        MatchId(format!("{home}-{visit}-{}", date.as_str()))
    }

    /// Parses an id as it arrives from a URL or a connect line.
    pub fn parse(s: &str) -> Result<MatchId, IdError> {
        let bad = || IdError(format!("{s:?} is not a match id (<home>-<visit>-YYYY-MM-DD)"));
        // ASCII only (team ids and dates are), which also keeps the split on a char boundary:
        // these bytes come from URLs and connect lines.
        if s.len() < 14 || !s.is_ascii() {
            return Err(bad());
        }
        let (teams, date) = s.split_at(s.len() - 10);
        let teams = teams.strip_suffix('-').ok_or_else(bad)?;
        let (home, visit) = teams.split_once('-').ok_or_else(bad)?;
        // Checked in place: the id is the text itself (one allocation per request that names
        // a match).
        if TeamId::valid(home) && TeamId::valid(visit) && Date::valid(date) {
            Ok(MatchId(s.to_owned()))
        } else {
            Err(bad())
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for MatchId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        MatchId::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for MatchId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A team as the watcher describes it when creating a match.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Team {
    pub id: TeamId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub division: Option<String>,
}

#[cfg(test)]
mod tests {
    use chrono::Datelike;

    use super::*;

    #[test]
    fn match_id_round_trips_and_rejects_garbage() {
        let id = MatchId::parse("elp-tig-2011-09-10").unwrap();
        assert_eq!(id.as_str(), "elp-tig-2011-09-10");
        let bad = [
            "",
            "elp-tig",
            "ELP-tig-2011-09-10",
            "elp-tig-2011-13-10",
            "elp-2011-09-10",
            // Multi-byte characters where a byte split would fall inside one.
            "aaaaaa\u{e9}123456789",
            "elp-ti\u{e9}-2011-09-10",
            "elp-tig-2011-09-1\u{e9}",
        ];
        for bad in bad {
            assert!(MatchId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn team_ids_and_dates_are_checked() {
        assert!(TeamId::parse("river_plate1").is_ok());
        for bad in ["", "Boca", "a-b", "abcdefghijklmnopq", "\u{e9}"] {
            assert!(TeamId::parse(bad).is_err(), "{bad}");
        }
        assert!(Date::parse("2024-02-29").is_ok());
        for bad in [
            "2023-02-29",
            "2011-9-10",
            "2011-09-10x",
            "10/09/2011",
            "2011-00-10",
            "2011-09-00",
            "2011-09-31",
            "+011-09-10",
            "2011_09-10",
            "2011-09-1x",
            "2011-09--1",
        ] {
            assert!(Date::parse(bad).is_err(), "{bad}");
        }
        // Every day of a leap year and of the year after, as chrono writes them.
        let mut day = chrono::NaiveDate::from_ymd_opt(2024, 1, 1).unwrap();
        while day.year() < 2026 {
            let text = day.format("%Y-%m-%d").to_string();
            assert_eq!(Date::parse(&text).map(|d| d.as_str().to_owned()), Ok(text));
            day = day.succ_opt().unwrap();
        }
    }
}
