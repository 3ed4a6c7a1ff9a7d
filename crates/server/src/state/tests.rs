//! Unit tests of the match rules in `state.rs`: one per rule, each acceptance and each rejection,
//! with the seed match's full run and the stored round trip in `tests/seed.rs`, and properties
//! over random scripts in `tests/properties.rs`.

use super::*;
use crate::model::{MatchInfo, NewMatch};

pub(crate) mod properties;
mod seed;

const T0: Millis = 1_315_660_000_000;

fn new_match() -> Match {
    let info: MatchInfo = serde_json::from_str::<NewMatch>(
        r#"{"home":"elp","visit":"tig","start_date":"2011-09-10"}"#,
    )
    .unwrap()
    .into_info()
    .unwrap();
    Match::new(info)
}

fn data(json: &str) -> EventDataInput {
    serde_json::from_str(json).unwrap()
}

fn kind(s: &str) -> EventKind {
    EventKind::parse(s).unwrap()
}

fn team(s: &str) -> TeamId {
    TeamId::parse(s).unwrap()
}

fn p(number: u32, name: &str) -> Player {
    Player { number, name: name.into() }
}

/// Applies and expects success.
fn ok(m: &mut Match, k: &str, json: &str) -> EventData {
    let ts = T0 + m.seq as i64 * 1000;
    m.apply(kind(k), &data(json), ts).unwrap_or_else(|e| panic!("{k} {json}: {e}"))
}

/// Applies, expects a rejection of `want` kind, and checks the whole match is unchanged.
fn rejected(m: &mut Match, k: &str, json: &str, want: RejectKind) -> String {
    let before = m.clone();
    let err = m.apply(kind(k), &data(json), T0 + 999_999).unwrap_err();
    assert_eq!(err.kind, want, "{k} {json}: {}", err.reason);
    assert_eq!(*m, before, "{k} {json} changed the match");
    err.reason
}

const SMALL_START: &str = r#"{"home_players":[[25,"Albil"],[2,"Desabato"],[18,"Fernandez"]],
    "visit_players":{"7":"Luna","6":"Martinez","3":"Blengio"}}"#;

fn started() -> Match {
    let mut m = new_match();
    ok(&mut m, "start", SMALL_START);
    m
}

/// A match moved to `period` along the shortest path.
fn in_period(period: Period) -> Match {
    let path: &[&str] = match period {
        Period::NotStarted => &[],
        Period::First => &["start"],
        Period::Halftime => &["start", "halftime"],
        Period::Last => &["start", "halftime", "continue"],
        Period::FirstExtra => &["start", "halftime", "continue", "extratime"],
        Period::HalftimeExtra => &["start", "halftime", "continue", "extratime", "halftime"],
        Period::LastExtra => {
            &["start", "halftime", "continue", "extratime", "halftime", "continue"]
        }
        Period::Penalties => &["start", "halftime", "continue", "penalties"],
        Period::Ended => &["start", "stop"],
    };
    let mut m = new_match();
    for k in path {
        ok(&mut m, k, "{}");
    }
    assert_eq!(m.period, period);
    m
}

const ALL_PERIODS: [Period; 9] = Period::ALL;

#[test]
fn start_sets_rosters_pitch_order_scores_and_period() {
    let mut m = new_match();
    let out = m.apply(EventKind::Start, &data(SMALL_START), T0).unwrap();
    assert_eq!(m.period, Period::First);
    assert_eq!(m.period_start, Some(T0));
    assert_eq!(m.seq, 1);
    assert_eq!(m.home.on_pitch, vec![p(25, "Albil"), p(2, "Desabato"), p(18, "Fernandez")]);
    assert_eq!(m.home.roster.get(&2).map(String::as_str), Some("Desabato"));
    assert_eq!(m.visit.roster.len(), 3);
    assert_eq!((m.home.score, m.visit.score), (0, 0));
    assert_eq!(out.home_players.as_deref(), Some(&m.home.on_pitch[..]));
    assert_eq!(out.visit_players.as_deref(), Some(&m.visit.on_pitch[..]));
}

#[test]
fn start_without_lineups_means_empty_sides() {
    let mut m = new_match();
    let out = ok(&mut m, "start", "{}");
    assert_eq!(out, EventData::default());
    assert!(m.home.on_pitch.is_empty() && m.visit.roster.is_empty());
    assert_eq!(m.period, Period::First);
}

#[test]
fn start_twice_is_a_conflict() {
    let mut m = started();
    let why = rejected(&mut m, "start", "{}", RejectKind::Conflict);
    assert_eq!(why, "match has already started (it is in first)");
}

#[test]
fn start_rejects_duplicate_numbers_bad_keys_and_bad_names() {
    let mut m = new_match();
    let why =
        rejected(&mut m, "start", r#"{"home_players":[[7,"A"],[7,"B"]]}"#, RejectKind::Invalid);
    assert!(why.contains("shirt number 7") && why.contains("home_players (elp)"), "{why}");
    // The same number on both sides is fine.
    let mut m2 = new_match();
    ok(&mut m2, "start", r#"{"home_players":[[7,"A"]],"visit_players":[[7,"B"]]}"#);

    let why = rejected(&mut m, "start", r#"{"visit_players":{"x":"A"}}"#, RejectKind::Invalid);
    assert!(why.contains("visit_players (tig)"), "{why}");
    rejected(&mut m, "start", r#"{"home_players":[[1,""]]}"#, RejectKind::Invalid);
    rejected(&mut m, "start", r#"{"home_players":[[1,"A\nB"]]}"#, RejectKind::Invalid);
    let long = "x".repeat(MAX_NAME_CHARS + 1);
    rejected(
        &mut m,
        "start",
        &format!(r#"{{"home_players":[[1,"{long}"]]}}"#),
        RejectKind::Invalid,
    );
    // 64 characters, multi-byte: counted as characters, not bytes.
    let max = "é".repeat(MAX_NAME_CHARS);
    ok(&mut m, "start", &format!(r#"{{"home_players":[[1,"{max}"]]}}"#));
}

#[test]
fn nothing_but_start_and_comment_before_start() {
    let mut m = new_match();
    let why = rejected(&mut m, "goal", r#"{"team":"tig","player":7}"#, RejectKind::Conflict);
    assert!(why.starts_with("match has not started"), "{why}");
    for k in EventKind::ALL {
        if !matches!(k, EventKind::Start | EventKind::Comment) {
            rejected(&mut m, k.as_str(), "{}", RejectKind::Conflict);
        }
    }
    let out = ok(&mut m, "comment", r#"{"text":"warming up","team":"elp","player":9}"#);
    assert_eq!(out.player, Some(p(9, Player::UNKNOWN_NAME)));
    assert_eq!((m.seq, m.period, m.period_start), (1, Period::NotStarted, None));
}

#[test]
fn nothing_after_stop() {
    let mut m = in_period(Period::Ended);
    for k in EventKind::ALL {
        let why = rejected(&mut m, k.as_str(), "{}", RejectKind::Conflict);
        assert!(why.starts_with("match is over"), "{why}");
    }
    let why = rejected(&mut m, "comment", r#"{"text":"late"}"#, RejectKind::Conflict);
    assert!(why.starts_with("match is over"), "{why}");
}

#[test]
fn period_machine_moves_and_stamps_period_start() {
    let mut m = new_match();
    let steps = [
        ("start", Period::First),
        ("halftime_start", Period::Halftime),
        ("halftime_stop", Period::Last),
        ("extratime", Period::FirstExtra),
        ("halftime_start", Period::HalftimeExtra),
        ("halftime_stop", Period::LastExtra),
        ("penalties", Period::Penalties),
        ("stop", Period::Ended),
    ];
    for (i, (k, want)) in steps.into_iter().enumerate() {
        let ts = T0 + i as i64 * 60_000;
        m.apply(kind(k), &EventDataInput::default(), ts).unwrap();
        assert_eq!((m.period, m.period_start), (want, Some(ts)), "after {k}");
    }
    assert_eq!(m.seq, 8);
    // Penalties straight after normal time.
    let mut m = in_period(Period::Last);
    ok(&mut m, "penalties", "{}");
    assert_eq!(m.period, Period::Penalties);
}

#[test]
fn stop_ends_any_started_period() {
    for period in &ALL_PERIODS[1..8] {
        let mut m = in_period(*period);
        ok(&mut m, "stop", "{}");
        assert_eq!(m.period, Period::Ended, "from {period:?}");
    }
}

#[test]
fn period_changes_from_the_wrong_period_are_conflicts() {
    let allowed: [(&str, &[Period]); 5] = [
        ("start", &[Period::NotStarted]),
        ("halftime_start", &[Period::First, Period::FirstExtra]),
        ("halftime_stop", &[Period::Halftime, Period::HalftimeExtra]),
        ("extratime", &[Period::Last]),
        ("penalties", &[Period::Last, Period::LastExtra]),
    ];
    for (k, from) in allowed {
        for period in ALL_PERIODS {
            let mut m = in_period(period);
            if from.contains(&period) {
                ok(&mut m, k, "{}");
            } else {
                rejected(&mut m, k, "{}", RejectKind::Conflict);
            }
        }
    }
    let mut m = in_period(Period::First);
    let why = rejected(&mut m, "halftime_stop", "{}", RejectKind::Conflict);
    assert_eq!(why, "halftime_stop needs period halftime or halftime_extra, the match is in first");
}

#[test]
fn keys_that_do_not_apply_to_a_kind_are_invalid() {
    let samples = [
        ("home_players", r#"[]"#),
        ("visit_players", r#"[]"#),
        ("player", "7"),
        ("player_out", "7"),
        ("card", r#""yellow""#),
        ("team", r#""tig""#),
        ("player_in", "7"),
        ("player_team", r#""tig""#),
        ("text", r#""hi""#),
    ];
    for k in EventKind::ALL {
        let (accepted, _) = keys_of(k);
        for (key, value) in samples {
            if accepted.contains(&key) {
                continue;
            }
            // A period where the kind itself is allowed, so only its data can be wrong.
            let mut m = in_period(match k {
                EventKind::Start => Period::NotStarted,
                EventKind::HalftimeStop => Period::Halftime,
                EventKind::Extratime | EventKind::Penalties => Period::Last,
                _ => Period::First,
            });
            let why = rejected(
                &mut m,
                k.as_str(),
                &format!(r#"{{"{key}":{value}}}"#),
                RejectKind::Invalid,
            );
            assert!(
                why.starts_with(&format!("key {key} does not apply to {}", k.as_str())),
                "{why}"
            );
        }
    }
}

#[test]
fn required_keys_must_be_present() {
    let mut m = started();
    let cases = [
        ("goal", r#"{"player":7}"#, "goal needs key team"),
        ("card", r#"{"team":"tig","player":7}"#, "card needs key card"),
        ("card", r#"{"card":"red","player":7}"#, "card needs key team"),
        ("card", r#"{"card":"red","team":"tig"}"#, "card needs key player"),
        ("substitution", r#"{"player_in":9,"player_out":7}"#, "substitution needs key team"),
        ("substitution", r#"{"team":"tig","player_out":7}"#, "substitution needs key player_in"),
        ("substitution", r#"{"team":"tig","player_in":9}"#, "substitution needs key player_out"),
        ("comment", r#"{"team":"tig"}"#, "comment needs key text"),
    ];
    for (k, json, want) in cases {
        assert_eq!(rejected(&mut m, k, json, RejectKind::Invalid), want);
    }
}

#[test]
fn teams_must_belong_to_the_match() {
    let mut m = started();
    let why = rejected(&mut m, "shot", r#"{"team":"boc"}"#, RejectKind::Invalid);
    assert_eq!(why, "unknown team boc (this match is elp vs tig)");
    rejected(&mut m, "goal", r#"{"team":"boc"}"#, RejectKind::Invalid);
    rejected(
        &mut m,
        "goal",
        r#"{"team":"elp","player":7,"player_team":"boc"}"#,
        RejectKind::Invalid,
    );
    rejected(&mut m, "comment", r#"{"text":"x","team":"boc"}"#, RejectKind::Invalid);
    let out = ok(&mut m, "corner", r#"{"team":"elp"}"#);
    assert_eq!(out.team, Some(team("elp")));
    assert_eq!(ok(&mut m, "throwin", "{}"), EventData::default());
}

#[test]
fn a_player_needs_a_team_to_resolve_against() {
    let mut m = started();
    let why = rejected(&mut m, "foul", r#"{"player":7}"#, RejectKind::Invalid);
    assert!(why.contains("player 7") && why.contains("team"), "{why}");
    rejected(&mut m, "comment", r#"{"text":"x","player":7}"#, RejectKind::Invalid);
}

#[test]
fn players_resolve_from_the_roster_or_as_given() {
    let mut m = started();
    let known = ok(&mut m, "shot", r#"{"team":"tig","player":7}"#);
    assert_eq!(known.player, Some(p(7, "Luna")));
    let unknown = ok(&mut m, "save", r#"{"team":"tig","player":99}"#);
    assert_eq!(unknown.player, Some(p(99, "N/N")));
    let full = ok(&mut m, "offside", r#"{"team":"tig","player":{"number":7,"name":"El Loco"}}"#);
    assert_eq!(full.player, Some(p(7, "El Loco")));
    // Naming a player on an ordinary event does not rename them in the roster.
    assert_eq!(m.visit.roster.get(&7).map(String::as_str), Some("Luna"));
    for bad in ["", "tab\there", "\u{7f}"] {
        let json = format!(
            r#"{{"team":"tig","player":{{"number":7,"name":{}}}}}"#,
            serde_json::to_string(bad).unwrap()
        );
        rejected(&mut m, "freekick", &json, RejectKind::Invalid);
    }
}

#[test]
fn goals_add_to_the_team_and_own_goals_resolve_against_the_scorers_side() {
    let mut m = started();
    let out = ok(&mut m, "goal", r#"{"team":"tig","player":7}"#);
    assert_eq!((out.team, out.player), (Some(team("tig")), Some(p(7, "Luna"))));
    assert_eq!((m.home.score, m.visit.score), (0, 1));
    let own = ok(&mut m, "goal", r#"{"team":"elp","player":7,"player_team":"tig"}"#);
    assert_eq!(own.player, Some(p(7, "Luna")));
    assert_eq!(own.player_team, Some(team("tig")));
    assert_eq!((m.home.score, m.visit.score), (1, 1));
    ok(&mut m, "goal", r#"{"team":"elp"}"#);
    assert_eq!(m.home.score, 2);
}

#[test]
fn goals_during_penalties_count_in_the_score() {
    let mut m = in_period(Period::Penalties);
    ok(&mut m, "goal", r#"{"team":"tig"}"#);
    assert_eq!((m.home.score, m.visit.score, m.period), (0, 1, Period::Penalties));
}

#[test]
fn a_red_card_takes_a_player_off_the_pitch() {
    let mut m = started();
    let out = ok(&mut m, "card", r#"{"card":"red","team":"elp","player":25}"#);
    assert_eq!((out.card, out.player), (Some(Card::Red), Some(p(25, "Albil"))));
    assert_eq!(m.home.on_pitch, vec![p(2, "Desabato"), p(18, "Fernandez")]);
    // Still in the roster: later mentions keep resolving the name.
    assert_eq!(m.home.roster.get(&25).map(String::as_str), Some("Albil"));
    let why =
        rejected(&mut m, "card", r#"{"card":"red","team":"elp","player":25}"#, RejectKind::Invalid);
    assert_eq!(why, "player 25 of elp is not on the pitch");
    rejected(&mut m, "card", r#"{"card":"red","team":"tig","player":25}"#, RejectKind::Invalid);
}

#[test]
fn a_yellow_card_needs_no_pitch() {
    let mut m = started();
    let out = ok(&mut m, "card", r#"{"card":"yellow","team":"elp","player":30}"#);
    assert_eq!(out.player, Some(p(30, "N/N")));
    ok(&mut m, "card", r#"{"card":"yellow","team":"elp","player":25}"#);
    assert_eq!(m.home.on_pitch.len(), 3);
}

#[test]
fn a_substitute_takes_the_place_and_joins_the_roster() {
    let mut m = started();
    let out = ok(
        &mut m,
        "substitution",
        r#"{"team":"elp","player_in":{"number":21,"name":"Silva"},"player_out":2}"#,
    );
    assert_eq!(out.player_in, Some(p(21, "Silva")));
    assert_eq!(out.player_out, Some(p(2, "Desabato")));
    assert_eq!(out.team, Some(team("elp")));
    assert_eq!(m.home.on_pitch, vec![p(25, "Albil"), p(21, "Silva"), p(18, "Fernandez")]);
    let later = ok(&mut m, "shot", r#"{"team":"elp","player":21}"#);
    assert_eq!(later.player, Some(p(21, "Silva")));
    // A bare unknown number comes on as N/N, and joins the roster as N/N: the stored event
    // names it so, and a restart must rebuild the same roster (found by the properties).
    let before = m.clone();
    let sub = ok(&mut m, "substitution", r#"{"team":"elp","player_in":40,"player_out":18}"#);
    assert_eq!(m.home.on_pitch[2], p(40, "N/N"));
    assert_eq!(m.home.roster.get(&40).map(String::as_str), Some("N/N"));
    let mut rebuilt = before;
    let stored = Event { seq: m.seq, ts: T0, kind: kind("substitution"), data: sub };
    rebuilt.apply_stored(&stored).unwrap();
    assert_eq!(rebuilt, m);
    // The player who went off may come back on (the rules do not track who was replaced).
    ok(&mut m, "substitution", r#"{"team":"elp","player_in":2,"player_out":40}"#);
    assert_eq!(m.home.on_pitch[2], p(2, "Desabato"));
}

#[test]
fn substitutions_need_the_right_players_on_and_off() {
    let mut m = started();
    let why = rejected(
        &mut m,
        "substitution",
        r#"{"team":"elp","player_in":21,"player_out":7}"#,
        RejectKind::Invalid,
    );
    assert_eq!(why, "player 7 of elp is not on the pitch");
    let why = rejected(
        &mut m,
        "substitution",
        r#"{"team":"elp","player_in":25,"player_out":2}"#,
        RejectKind::Invalid,
    );
    assert_eq!(why, "player 25 of elp is already on the pitch");
    rejected(
        &mut m,
        "substitution",
        r#"{"team":"elp","player_in":2,"player_out":2}"#,
        RejectKind::Invalid,
    );
    rejected(
        &mut m,
        "substitution",
        r#"{"team":"boc","player_in":21,"player_out":2}"#,
        RejectKind::Invalid,
    );
    let bad_name = r#"{"team":"elp","player_in":{"number":21,"name":""},"player_out":2}"#;
    rejected(&mut m, "substitution", bad_name, RejectKind::Invalid);
}

#[test]
fn comment_text_is_1_to_280_characters_without_control_characters() {
    let mut m = started();
    let max = "ñ".repeat(MAX_COMMENT_CHARS);
    let out = ok(&mut m, "comment", &format!(r#"{{"text":"{max}"}}"#));
    assert_eq!(out.text.as_deref(), Some(max.as_str()));
    let out = ok(&mut m, "comment", r#"{"text":"line one\n\tline two","team":"tig","player":7}"#);
    assert_eq!((out.team, out.player), (Some(team("tig")), Some(p(7, "Luna"))));
    let long = "ñ".repeat(MAX_COMMENT_CHARS + 1);
    rejected(&mut m, "comment", &format!(r#"{{"text":"{long}"}}"#), RejectKind::Invalid);
    rejected(&mut m, "comment", r#"{"text":""}"#, RejectKind::Invalid);
    for bad in ["a\rb", "a\u{0}b", "a\u{1b}[2Jb"] {
        let json = format!(r#"{{"text":{}}}"#, serde_json::to_string(bad).unwrap());
        let why = rejected(&mut m, "comment", &json, RejectKind::Invalid);
        assert!(why.contains("control characters"), "{why}");
    }
}
