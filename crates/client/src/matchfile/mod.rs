//! Match files for the replaying watcher (SPEC section 6): the original's Erlang-term files and
//! their JSON twin, read into one [`MatchFile`]. Reading only: sending it to a server is
//! `replay.rs`, and the event kinds and data are checked by the server, not here.

mod erlang;
mod json;
mod terms;

use serde_json::{Map, Value};

use matchstream_proto::{Date, MatchId, Team};

/// A match as a file describes it: who plays, when, and the steps to publish.
#[derive(Clone, Debug, PartialEq)]
pub struct MatchFile {
    pub home: Team,
    pub visit: Team,
    pub start_date: Date,
    pub stadium: Option<String>,
    pub steps: Vec<Step>,
}

/// One step of a match file, in file order.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// Wait this many milliseconds (before dividing by the replay speed).
    Sleep(u64),
    /// Publish this event: `{"kind":..,"data":{..}}` exactly as POSTed to
    /// `/1/match/<id>/events`. The kind is passed through as written (aliases included).
    Event(Value),
}

impl Step {
    /// The event's kind, `None` for a sleep.
    pub fn kind(&self) -> Option<&str> {
        match self {
            Step::Sleep(_) => None,
            Step::Event(event) => event.get("kind").and_then(Value::as_str),
        }
    }
}

/// Why a match file cannot be read. Every message names the line and column it is about,
/// except a missing entry, which has no place.
#[derive(Debug, thiserror::Error)]
pub enum MatchFileError {
    /// Not well-formed Erlang terms or JSON.
    #[error("line {line}, column {column}: {message}")]
    Syntax { line: usize, column: usize, message: String },
    /// Well-formed, but a key or value is not one a match file allows there.
    #[error("line {line}, column {column}: {message}")]
    Invalid { line: usize, column: usize, message: String },
    /// A required entry is absent from an Erlang-term file (serde reports it for JSON files as
    /// `Invalid`, placed at the end of the object).
    #[error("the file has no `{key}` entry (expected something like {example})")]
    Missing { key: &'static str, example: &'static str },
}

/// Reads a match file in either format. The format is told by the first `{`: followed by a `"`
/// (after any whitespace or `%` comments) it is JSON, otherwise Erlang terms.
pub fn parse(text: &str) -> Result<MatchFile, MatchFileError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if is_json(text) {
        json::parse(text)
    } else {
        erlang::parse(text)
    }
}

impl MatchFile {
    /// The match's id, `<home>-<visit>-YYYY-MM-DD`.
    pub fn id(&self) -> MatchId {
        MatchId::new(&self.home.id, &self.visit.id, &self.start_date)
    }

    /// The body of `POST /1/matches`. The API takes one division for the match: the home team's,
    /// else the visit's.
    pub fn create_body(&self) -> Value {
        let mut body = Map::new();
        body.insert("home".into(), self.home.id.as_str().into());
        body.insert("visit".into(), self.visit.id.as_str().into());
        body.insert("start_date".into(), self.start_date.as_str().into());
        if let Some(name) = &self.home.name {
            body.insert("home_name".into(), name.as_str().into());
        }
        if let Some(name) = &self.visit.name {
            body.insert("visit_name".into(), name.as_str().into());
        }
        if let Some(division) = self.home.division.as_ref().or(self.visit.division.as_ref()) {
            body.insert("division".into(), division.as_str().into());
        }
        if let Some(stadium) = &self.stadium {
            body.insert("stadium".into(), stadium.as_str().into());
        }
        Value::Object(body)
    }

    /// The event steps, in order.
    pub fn events(&self) -> impl Iterator<Item = &Value> {
        self.steps.iter().filter_map(|s| match s {
            Step::Event(e) => Some(e),
            Step::Sleep(_) => None,
        })
    }
}

fn skip_blank(mut text: &str) -> &str {
    loop {
        text = text.trim_start();
        match text.strip_prefix('%') {
            Some(comment) => text = comment.split_once('\n').map_or("", |(_, rest)| rest),
            None => return text,
        }
    }
}

fn is_json(text: &str) -> bool {
    skip_blank(text).strip_prefix('{').is_some_and(|rest| skip_blank(rest).starts_with('"'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use matchstream_proto::TeamId;
    use serde_json::json;

    const SEED: &str = include_str!("../../../../matches/elp-tig-2011-09-10.config");

    pub(super) fn seed() -> MatchFile {
        parse(SEED).unwrap()
    }

    #[test]
    fn the_seed_file_parses() {
        let m = seed();
        assert_eq!(m.id().as_str(), "elp-tig-2011-09-10");
        assert_eq!(m.home, Team { id: TeamId::parse("elp").unwrap(), name: None, division: None });
        assert_eq!(m.visit.id.as_str(), "tig");
        assert_eq!(m.start_date.as_str(), "2011-09-10");
        assert_eq!(m.stadium, None);
        assert_eq!(m.steps.len(), 61);
        assert_eq!(m.events().count(), 31);
        assert_eq!(m.steps[0], Step::Sleep(3000));
        let Step::Event(start) = &m.steps[1] else { panic!("{:?}", m.steps[1]) };
        assert_eq!(start["kind"], "start");
        assert_eq!(start["data"]["home_players"].as_array().map(Vec::len), Some(11));
        assert_eq!(start["data"]["home_players"][0], json!({"number": 25, "name": "Albil"}));
        assert_eq!(start["data"]["visit_players"][10], json!({"number": 9, "name": "Maggiolo"}));
        assert_eq!(m.steps.last(), Some(&Step::Event(json!({"kind": "stop", "data": {}}))));
        let slept: u64 =
            m.steps.iter().map(|s| if let Step::Sleep(ms) = s { *ms } else { 0 }).sum();
        assert_eq!(slept, 113_000);
    }

    #[test]
    fn the_seed_file_keeps_players_cards_and_own_goals() {
        let m = seed();
        let events: Vec<&Value> = m.events().collect();
        assert_eq!(events[1], &json!({"kind": "goal", "data": {"team": "tig", "player": 7}}));
        assert_eq!(
            events[3],
            &json!({"kind": "card", "data": {"card": "red", "team": "elp", "player": 25}})
        );
        assert_eq!(
            events[4],
            &json!({"kind": "substitution", "data": {"team": "elp",
                "player_in": {"number": 21, "name": "Silva"}, "player_out": 18}})
        );
        let own_goals: Vec<_> =
            events.iter().filter(|e| e["data"].get("player_team").is_some()).collect();
        assert_eq!(
            own_goals,
            [&&json!({"kind": "goal", "data": {"team": "elp", "player": 7, "player_team": "tig"}})]
        );
        // Keys keep the file's order, so what is POSTed reads like the file.
        let keys: Vec<&String> = events[3]["data"].as_object().unwrap().keys().collect();
        assert_eq!(keys, ["card", "team", "player"]);
    }

    /// The seed file written as JSON by hand from its parsed steps.
    pub(super) fn seed_as_json() -> String {
        let m = seed();
        let steps: Vec<Value> = m
            .steps
            .iter()
            .map(|s| match s {
                Step::Sleep(ms) => json!({"sleep": ms}),
                Step::Event(e) => e.clone(),
            })
            .collect();
        serde_json::to_string_pretty(
            &json!({"home": "elp", "visit": "tig", "start_date": "2011-09-10", "steps": steps}),
        )
        .unwrap()
    }

    #[test]
    fn json_and_erlang_forms_give_the_same_match() {
        assert_eq!(parse(&seed_as_json()).unwrap(), seed());
    }

    #[test]
    fn full_teams_and_stadium_in_both_formats_make_the_create_body() {
        let erl = r#"
            %% Full form.
            {home, [{id, <<"elp">>}, {name, <<"Estudiantes">>}, {division, <<"Primera">>}]}.
            {visit, [{id, tig}, {name, "Tigre"}]}.
            {start_date, {2011, 9, 10}}.
            {stadium, <<"Ciudad de La Plata">>}.
            {steps, [{halftime, []}, {sleep, 5}, {continue, []}]}.
        "#;
        let json = r#"
            {"home": {"id": "elp", "name": "Estudiantes", "division": "Primera"},
             "visit": {"id": "tig", "name": "Tigre"}, "start_date": "2011-09-10",
             "stadium": "Ciudad de La Plata",
             "steps": [{"kind": "halftime"}, {"sleep": 5}, {"kind": "continue", "data": {}}]}
        "#;
        let (a, b) = (parse(erl).unwrap(), parse(json).unwrap());
        assert_eq!(a, b);
        assert_eq!(a.steps[2], Step::Event(json!({"kind": "continue", "data": {}})));
        assert_eq!(
            a.create_body(),
            json!({"home": "elp", "visit": "tig", "start_date": "2011-09-10",
                "home_name": "Estudiantes", "visit_name": "Tigre", "division": "Primera",
                "stadium": "Ciudad de La Plata"})
        );
        assert_eq!(
            seed().create_body().to_string(),
            r#"{"home":"elp","visit":"tig","start_date":"2011-09-10"}"#
        );
    }

    pub(super) fn err(text: &str) -> String {
        match parse(text) {
            Ok(m) => panic!("parsed {m:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn erlang_errors_name_the_place() {
        // Cut just before the last step: the list is left open after a comma.
        let truncated = &SEED[..SEED.find("{stop").unwrap()];
        assert_eq!(err(truncated), "line 91, column 11: expected a term, found end of file");
        let truncated = &SEED[..SEED.len() - 1];
        assert_eq!(
            err(truncated),
            "line 92, column 11: expected `.` to end the term begun at line 4, column 1, \
             found end of file"
        );

        let no_dot = "{home, <<\"elp\">>}\n{visit, <<\"tig\">>}.";
        assert_eq!(
            err(no_dot),
            "line 2, column 1: expected `.` to end the term begun at line 1, column 1, found `{`"
        );

        let unknown = SEED.replacen("{visit,", "{vistor,", 1);
        assert_eq!(
            err(&unknown),
            "line 2, column 1: unknown entry `vistor` (expected home, visit, start_date, stadium or steps)"
        );

        let bad_date = SEED.replacen("{2011,09,10}", "{2011,02,30}", 1);
        let msg = err(&bad_date);
        assert!(msg.starts_with("line 3, column 14: start_date: date \"2011-02-30\""), "{msg}");

        let twice = format!("{{home, x}}.\n{SEED}");
        assert!(err(&twice).starts_with("line 2, column 1: `home` is given twice (first at line 1"));

        let bad_team = SEED.replacen("<<\"elp\">>", "<<\"Estudiantes\">>", 1);
        assert!(err(&bad_team).starts_with("line 1, column 8: team id \"Estudiantes\""));
    }

    #[test]
    fn missing_entries_are_named() {
        let no_steps = SEED.split("{steps").next().unwrap();
        assert_eq!(
            err(no_steps),
            "the file has no `steps` entry (expected something like {steps, [{sleep, 1000}, ...]}.)"
        );
        assert!(err("% nothing here\n").contains("no `home` entry"));
        assert!(err("{home, elp}.").contains("no `visit` entry"));
    }

    /// The `match_file` fuzz target's crash inputs (`fuzz/regressions/match_file/`), kept: each
    /// reads to a match or to an error, never a panic or a stack overflow.
    #[test]
    fn fuzz_regressions_hold() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz/regressions/match_file");
        for entry in std::fs::read_dir(dir).into_iter().flatten() {
            let path = entry.expect("a directory entry").path();
            let bytes = std::fs::read(&path).expect("readable");
            let _ = parse(&String::from_utf8_lossy(&bytes));
        }
    }

    #[test]
    fn the_format_is_told_by_what_follows_the_first_brace() {
        assert!(is_json("  {\n \"home\": 1}"));
        assert!(is_json("{ %% odd but allowed\n \"home\": 1}"));
        assert!(!is_json("%% {\"a\"\n{home, <<\"elp\">>}."));
        assert!(!is_json("{home, 1}."));
    }
}
