//! The seed match (`seed/elp-tig-2011-09-10.config`) played through the rules, and rebuilt from
//! its stored events as on a restart.

use super::*;
use crate::model::Event;

/// The events of `seed/elp-tig-2011-09-10.config`, in order, without the sleeps.
const SEED: &[(&str, &str)] = &[
    (
        "start",
        r#"{"home_players":[[25,"Albil"],[14,"Mercado"],[2,"Desabato"],[3,"Cellay"],
        [27,"Dominguez"],[11,"Veron"],[10,"Fernandez"],[5,"Sanchez"],[19,"Gonzalez"],
        [18,"Fernandez"],[9,"Boselli"]],
      "visit_players":[[12,"Garcia"],[13,"Casteglione"],[21,"Echeverria"],[3,"Blengio"],
        [15,"Diaz"],[5,"Castano"],[6,"Martinez"],[11,"Leone"],[10,"Morales"],[7,"Luna"],
        [9,"Maggiolo"]]}"#,
    ),
    ("goal", r#"{"team":"tig","player":7}"#),
    ("penalty", r#"{"team":"tig","player":6}"#),
    ("card", r#"{"card":"red","team":"elp","player":25}"#),
    ("substitution", r#"{"team":"elp","player_in":{"number":21,"name":"Silva"},"player_out":18}"#),
    ("card", r#"{"card":"yellow","team":"elp","player":11}"#),
    ("card", r#"{"card":"yellow","team":"elp","player":2}"#),
    ("goal", r#"{"team":"tig","player":10}"#),
    ("goal", r#"{"team":"tig","player":6}"#),
    ("shot", r#"{"team":"tig","player":3}"#),
    ("shot", r#"{"team":"tig","player":5}"#),
    ("shot", r#"{"team":"tig","player":3}"#),
    ("shot", r#"{"team":"tig","player":9}"#),
    ("shot", r#"{"team":"tig","player":5}"#),
    ("shot", r#"{"team":"tig","player":3}"#),
    ("shot", r#"{"team":"tig","player":9}"#),
    ("shot", r#"{"team":"tig","player":5}"#),
    ("shot", r#"{"team":"tig","player":3}"#),
    ("shot", r#"{"team":"tig","player":9}"#),
    ("shot", r#"{"team":"elp","player":9}"#),
    ("halftime_start", "{}"),
    ("halftime_stop", "{}"),
    ("goal", r#"{"team":"elp","player":7,"player_team":"tig"}"#),
    ("substitution", r#"{"team":"elp","player_in":{"number":22,"name":"Galvan"},"player_out":19}"#),
    ("card", r#"{"card":"yellow","team":"tig","player":3}"#),
    ("substitution", r#"{"team":"tig","player_in":{"number":22,"name":"Pio"},"player_out":6}"#),
    (
        "substitution",
        r#"{"team":"elp","player_in":{"number":23,"name":"Benitez"},"player_out":11}"#,
    ),
    (
        "substitution",
        r#"{"team":"tig","player_in":{"number":23,"name":"Rodales"},"player_out":15}"#,
    ),
    (
        "substitution",
        r#"{"team":"tig","player_in":{"number":24,"name":"Carrasco"},"player_out":9}"#,
    ),
    ("card", r#"{"card":"yellow","team":"tig","player":10}"#),
    ("stop", "{}"),
];

/// Plays the seed match, returning the match and its events as the store would keep them.
fn play_seed() -> (Match, Vec<Event>) {
    let mut m = new_match();
    let mut events = Vec::new();
    for (i, (k, json)) in SEED.iter().enumerate() {
        let ts = T0 + i as i64 * 1000;
        let out = m.apply(kind(k), &data(json), ts).unwrap_or_else(|e| panic!("{k}: {e}"));
        events.push(Event { seq: m.seq, ts, kind: kind(k), data: out });
    }
    (m, events)
}

#[test]
fn the_seed_match_plays_through() {
    let (m, events) = play_seed();
    assert_eq!((m.home.score, m.visit.score), (1, 3));
    assert_eq!(m.period, Period::Ended);
    assert_eq!(m.period_start, Some(T0 + (SEED.len() as i64 - 1) * 1000));
    assert_eq!(m.seq, SEED.len() as u64);
    let own_goal = &events[22].data;
    assert_eq!(own_goal.team, Some(team("elp")));
    assert_eq!(own_goal.player, Some(p(7, "Luna")));
    assert_eq!(own_goal.player_team, Some(team("tig")));
    assert_eq!(events[2].data.player, Some(p(6, "Martinez")));
    let home: Vec<u32> = m.home.on_pitch.iter().map(|p| p.number).collect();
    assert_eq!(home, [14, 2, 3, 27, 23, 10, 5, 22, 21, 9]);
    let visit: Vec<u32> = m.visit.on_pitch.iter().map(|p| p.number).collect();
    assert_eq!(visit, [12, 13, 21, 3, 23, 5, 22, 11, 10, 7, 24]);
    assert_eq!(m.visit.on_pitch[6], p(22, "Pio"));
}

#[test]
fn stored_events_rebuild_the_same_match() {
    let (played, events) = play_seed();
    let mut rebuilt = new_match();
    for ev in &events {
        rebuilt.apply_stored(ev).unwrap();
    }
    assert_eq!(rebuilt, played);
    // The normalized data re-applies to the same normalized data.
    let mut again = new_match();
    for ev in &events {
        let out = again.apply(ev.kind, &EventDataInput::from(&ev.data), ev.ts).unwrap();
        assert_eq!(out, ev.data, "seq {}", ev.seq);
    }
}

#[test]
fn stored_events_must_follow_on() {
    let (_, events) = play_seed();
    let mut m = new_match();
    let before = m.clone();
    let err = m.apply_stored(&events[1]).unwrap_err();
    assert_eq!(err.kind, RejectKind::Conflict);
    assert!(
        err.reason.contains("stored event 2") && err.reason.contains("event 0"),
        "{}",
        err.reason
    );
    assert_eq!(m, before);
    m.apply_stored(&events[0]).unwrap();
    let err = m.apply_stored(&events[0]).unwrap_err();
    assert_eq!(err.kind, RejectKind::Conflict);
    assert_eq!(m.seq, 1);
}
