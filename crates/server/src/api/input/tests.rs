//! What a watcher is told about each malformed body and query, and what valid ones become.

use serde_json::json;

use super::*;

/// The status and message of a refused body of events.
fn events_refused(body: &str) -> (u16, String) {
    let e = events(body.as_bytes(), 256).expect_err(body);
    (e.status.as_u16(), e.message)
}

fn match_refused(body: &str) -> (u16, String) {
    let e = new_match(body.as_bytes()).expect_err(body);
    (e.status.as_u16(), e.message)
}

#[test]
fn one_event_or_a_list_become_inputs() {
    let (one, batch) = events(br#"{"kind":"goal","data":{"team":"tig","player":7}}"#, 256).unwrap();
    assert!(!batch);
    assert_eq!(one[0].kind, EventKind::Goal);
    assert_eq!(one[0].data.player, Some(PlayerRef::Number(7)));
    assert_eq!(one[0].data.team, Some(TeamId::parse("tig").unwrap()));
    let (list, batch) =
        events(br#"[{"kind":"halftime"},{"kind":"stop","data":null},{"kind":"corner","data":{"player":null}}]"#, 256)
            .unwrap();
    assert!(batch);
    let kinds: Vec<_> = list.iter().map(|e| e.kind).collect();
    assert_eq!(kinds, [EventKind::HalftimeStart, EventKind::Stop, EventKind::Corner]);
    assert_eq!(list[2].data, EventDataInput::default());
}

#[test]
fn line_ups_come_in_three_shapes() {
    let want = vec![
        Player { number: 25, name: "Albil".into() },
        Player { number: 7, name: "Luna".into() },
    ];
    for shape in [
        json!([{"number": 25, "name": "Albil"}, {"number": 7, "name": "Luna"}]),
        json!([[25, "Albil"], [7, "Luna"]]),
        json!({"25": "Albil", "7": "Luna"}),
    ] {
        let body = json!({"kind": "start", "data": {"home_players": shape}}).to_string();
        let (got, _) = events(body.as_bytes(), 256).unwrap();
        let mut players = got[0].data.home_players.clone().unwrap().into_players().unwrap();
        players.sort_by_key(|p| std::cmp::Reverse(p.number));
        assert_eq!(players, want, "{body}");
    }
}

#[test]
fn bad_json_says_where_in_our_words() {
    let (status, e) = events_refused("{not json");
    assert_eq!(status, 400);
    assert!(
        e.starts_with("the body is not valid JSON (line 1, column 2): send one event {"),
        "{e}"
    );
    let (_, e) = events_refused("[{\"kind\": \"goal\",\n");
    assert!(e.starts_with("the body ends before its JSON does (line 2, column 0)"), "{e}");
    let (_, e) = events_refused("  ");
    assert!(e.starts_with("the body is empty: send one event"), "{e}");
    let (_, e) = events_refused("42");
    assert!(e.starts_with(r#"an event is {"kind": "goal", "data""#), "{e}");
    assert!(e.ends_with("not 42"), "{e}");
}

#[test]
fn a_list_holds_one_to_max_events() {
    let (status, e) = events_refused("[]");
    assert_eq!(status, 400);
    assert!(e.starts_with("an empty list publishes nothing"), "{e}");
    let list = format!("[{}]", [r#"{"kind":"corner"}"#; 4].join(","));
    let e = events(list.as_bytes(), 3).unwrap_err();
    assert_eq!(e.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        e.message,
        "at most 3 events per request (--max-events-per-request), this one has 4: send the rest \
         in another request"
    );
    assert_eq!(events(list.as_bytes(), 4).unwrap().0.len(), 4);
}

#[test]
fn an_unknown_kind_lists_the_kinds() {
    let (status, e) = events_refused(r#"[{"kind":"corner"},{"kind":"dance"}]"#);
    assert_eq!(status, 400);
    assert!(e.starts_with(r#"[1].kind: unknown kind "dance": the kinds are start, stop, "#), "{e}");
    assert!(e.ends_with("throwin, comment"), "{e}");
    let (_, e) = events_refused(r#"{"data":{}}"#);
    assert!(e.starts_with("kind is missing: "), "{e}");
    let (_, e) = events_refused(r#"{"kind":7}"#);
    assert!(e.starts_with("kind: a kind is a string, one of start, "), "{e}");
    let (_, e) = events_refused(r#"{"kind":"goal","team":"elp"}"#);
    assert!(e.starts_with(r#"unknown key "team": an event has the keys kind and data"#), "{e}");
    let (_, e) = events_refused(r#"{"kind":"goal","data":"elp"}"#);
    assert!(e.starts_with("data: the data of an event is an object such as"), "{e}");
}

#[test]
fn an_unknown_data_key_is_named_with_the_keys_of_its_kind() {
    let (status, e) = events_refused(r#"{"kind":"goal","data":{"team":"elp","scorer":7}}"#);
    assert_eq!(status, 400);
    assert!(
        e.starts_with(r#"data: unknown key "scorer": goal takes team, player, player_team (the keys of any event are home_players, "#),
        "{e}"
    );
    let (_, e) = events_refused(r#"{"kind":"stop","data":{"why":1}}"#);
    assert!(e.starts_with(r#"data: unknown key "why": stop takes no data"#), "{e}");
}

#[test]
fn a_bad_player_shows_what_a_player_is() {
    let (status, e) = events_refused(r#"{"kind":"start","data":{"home_players":[1,2]}}"#);
    assert_eq!(status, 400);
    assert_eq!(
        e,
        r#"data.home_players[0]: a player is {"number": 7, "name": "Luna"} (or a pair [7, "Luna"]), not 1"#
    );
    let (_, e) = events_refused(
        r#"[{"kind":"corner"},{"kind":"goal","data":{"team":"elp","player":"Luna"}}]"#,
    );
    assert!(
        e.starts_with(
            r#"[1].data.player: a player is {"number": 7, "name": "Luna"}, or the shirt number"#
        ),
        "{e}"
    );
    assert!(e.ends_with(r#"not "Luna""#), "{e}");
    let (_, e) =
        events_refused(r#"{"kind":"start","data":{"visit_players":[{"number":-1,"name":"X"}]}}"#);
    assert_eq!(
        e,
        "data.visit_players[0].number: a shirt number is a whole number such as 7, not -1"
    );
    let (_, e) = events_refused(r#"{"kind":"start","data":{"visit_players":[{"number":1}]}}"#);
    assert!(e.starts_with("data.visit_players[0]: a player needs a number and a name"), "{e}");
    let (_, e) = events_refused(r#"{"kind":"start","data":{"visit_players":[[1, 2]]}}"#);
    assert_eq!(e, "data.visit_players[0][1]: a text of 1 to 64 characters, not 2");
}

#[test]
fn a_bad_line_up_shows_the_three_shapes() {
    let (status, e) = events_refused(r#"{"kind":"start","data":{"home_players":"Albil"}}"#);
    assert_eq!(status, 400);
    assert_eq!(
        e,
        r#"data.home_players: a line-up is a list of players [{"number": 7, "name": "Luna"}, ...], a list of pairs [[7, "Luna"], ...] or a map {"7": "Luna", ...}; not "Albil""#
    );
    let (_, e) = events_refused(r#"{"kind":"start","data":{"home_players":{"seven":"Luna"}}}"#);
    assert!(e.starts_with(r#"data.home_players: the key "seven" is not a shirt number"#), "{e}");
}

#[test]
fn content_limits_are_422_naming_the_field() {
    let players: Vec<_> = (0..61).map(|n| json!([n, "P"])).collect();
    let body = json!({"kind": "start", "data": {"home_players": players}}).to_string();
    let (status, e) = events_refused(&body);
    assert_eq!(status, 422);
    assert_eq!(e, "data.home_players: at most 60 players per team in a line-up, this one has 61");
    let sixty: serde_json::Map<String, Value> =
        (0..60).map(|n| (n.to_string(), json!("P"))).collect();
    let body = json!({"kind": "start", "data": {"visit_players": sixty}}).to_string();
    assert!(events(body.as_bytes(), 256).is_ok());
    // Characters, not bytes: 64 of "é" (128 bytes) is a valid name, 65 is not.
    let body = json!({"kind": "start", "data": {"home_players": {"7": "é".repeat(65)}}});
    let (status, e) = events_refused(&body.to_string());
    assert_eq!(status, 422);
    assert_eq!(e, r#"data.home_players["7"]: at most 64 characters, this one has 65"#);
    let body = json!({"kind": "start", "data": {"home_players": {"7": "é".repeat(64)}}});
    assert!(events(body.to_string().as_bytes(), 256).is_ok());
    let body = json!({"kind": "comment", "data": {"text": "ñ".repeat(281)}});
    let (status, e) = events_refused(&body.to_string());
    assert_eq!(status, 422);
    assert_eq!(e, "data.text: at most 280 characters, this one has 281");
}

#[test]
fn bad_cards_and_team_ids_say_what_is_valid() {
    let (status, e) =
        events_refused(r#"{"kind":"card","data":{"team":"elp","player":7,"card":"blue"}}"#);
    assert_eq!(status, 400);
    assert_eq!(e, r#"data.card: a card is "yellow" or "red", not "blue""#);
    let (_, e) = events_refused(r#"{"kind":"goal","data":{"team":"ELP!"}}"#);
    assert_eq!(
        e,
        r#"data.team: a team id is 1 to 16 of a-z, 0-9 and _ ([a-z0-9_]{1,16}), e.g. "elp", not "ELP!""#
    );
    // A hostile value is not echoed whole.
    let long = "x".repeat(10_000);
    let (_, e) =
        events_refused(&json!({"kind": "goal", "data": {"player_team": long}}).to_string());
    assert!(
        e.ends_with(r#"not "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"... (10000 characters)"#),
        "{e}"
    );
}

#[test]
fn a_new_match_is_validated_field_by_field() {
    let info = new_match(
        br#"{"home":"elp","visit":"tig","start_date":"2011-09-10","home_name":"Estudiantes","stadium":null}"#,
    )
    .unwrap();
    assert_eq!(info.id.to_string(), "elp-tig-2011-09-10");
    assert_eq!(info.home.name.as_deref(), Some("Estudiantes"));
    assert_eq!(info.stadium, None);
    let cases = [
        (
            r#"{"home":"elp","visit":"tig"}"#,
            400,
            "start_date is missing: a match needs home, visit and start_date",
        ),
        (
            r#"{"home":"elp","visit":"tig","start_date":"2011-02-30"}"#,
            400,
            r#"start_date: a date is "2011-09-10" (year-month-day, a day of the calendar), not "2011-02-30""#,
        ),
        (r#"{"home":"Elp","visit":"tig","start_date":"2011-09-10"}"#, 400, "home: a team id is"),
        (r#"{"home":"elp","visit":"elp","start_date":"2011-09-10"}"#, 400, "visit: home and visit"),
        (
            r#"{"home":"elp","visit":"tig","start_date":"2011-09-10","city":"La Plata"}"#,
            400,
            r#"unknown key "city": a match has the keys home, visit, start_date, home_name"#,
        ),
        (
            r#"{"home":"elp","visit":"tig","start_date":"2011-09-10","division":""}"#,
            422,
            "division: 1 to 200 characters on one line",
        ),
        (r#"["elp","tig"]"#, 400, "the body is a match {"),
    ];
    for (body, status, start) in cases {
        let (got, e) = match_refused(body);
        assert_eq!(got, status, "{body}: {e}");
        assert!(e.starts_with(start), "{body}: {e}");
    }
    let name = "n".repeat(65);
    let body =
        json!({"home": "elp", "visit": "tig", "start_date": "2011-09-10", "visit_name": name});
    assert_eq!(
        match_refused(&body.to_string()),
        (422, "visit_name: at most 64 characters, this one has 65".into())
    );
    let body = json!({"home": "elp", "visit": "tig", "start_date": "2011-09-10", "stadium": "s".repeat(201)});
    assert_eq!(
        match_refused(&body.to_string()),
        (422, "stadium: at most 200 characters, this one has 201".into())
    );
}

#[test]
fn queries_name_after_and_limit_and_their_ranges() {
    assert_eq!(history_query(None, 500, 2000).unwrap(), (0, 500));
    assert_eq!(history_query(Some("after=12&limit=7&_=1"), 500, 2000).unwrap(), (12, 7));
    assert_eq!(history_query(Some("limit=5000"), 500, 2000).unwrap(), (0, 2000));
    assert_eq!(history_query(Some("limit=99999999999999999999999"), 500, 2000).unwrap(), (0, 2000));
    for bad in ["limit=0", "limit=ten", "limit=-1", "limit="] {
        let e = history_query(Some(bad), 500, 2000).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(
            e.message.starts_with("limit: the most events of a page, a whole number from 1 to 2000 (a larger one is capped at 2000; without it, 500), not"),
            "{bad}: {}",
            e.message
        );
    }
    let e = history_query(Some("after=x"), 500, 2000).unwrap_err();
    assert!(
        e.message.starts_with("after: the seq to list events after, a whole number"),
        "{}",
        e.message
    );
    assert_eq!(publish_after(None).unwrap(), None);
    assert_eq!(publish_after(Some("after=3")).unwrap(), Some(3));
    let e = publish_after(Some("after=two")).unwrap_err();
    assert_eq!(
        e.message,
        r#"after: the seq the match must be at, a whole number such as 12 (?after=12), not "two""#
    );
}
