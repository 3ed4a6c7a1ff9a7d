//! Properties across the wire (proptest): the server's v1 and v2 encoders read back by the
//! client's stream checkers and, for v1, by SPEC 4's block grammar written out here; and any
//! bytes sent as a connect line to a real node get an answer, never silence or a crash.

use std::net::SocketAddr;
use std::time::Duration;

use matchstream::fuzzing::{self, Played};
use matchstream_client::check::{Checker, Protocol, Seen, State};
use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, TestRunner};
use serde_json::{json, Map, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

/// Players' names as watchers type them; the v1 grammar must read them back even with
/// parentheses, quotes, backslashes and spaces at either end.
fn name() -> impl Strategy<Value = String> {
    "[A-Za-z0-9é李 ()'\"\\\\]{1,16}"
}

/// An event of a script, chosen among the players on the pitch when it is played.
#[derive(Debug, Clone)]
enum Ev {
    Goal {
        home: bool,
        who: u8,
        own: bool,
    },
    Card {
        home: bool,
        who: u8,
        red: bool,
    },
    Substitution {
        home: bool,
        who: u8,
        number: u32,
        name: String,
    },
    Shot {
        home: bool,
        who: u8,
    },
    Comment(String),
    /// The next period change of halftime, continue, extratime, halftime, continue, penalties.
    Period,
}

fn ev() -> impl Strategy<Value = Ev> {
    prop_oneof![
        3 => (any::<bool>(), any::<u8>(), prop::bool::weighted(0.2))
            .prop_map(|(home, who, own)| Ev::Goal { home, who, own }),
        2 => (any::<bool>(), any::<u8>(), any::<bool>())
            .prop_map(|(home, who, red)| Ev::Card { home, who, red }),
        2 => (any::<bool>(), any::<u8>(), 1u32..=99, name())
            .prop_map(|(home, who, number, name)| Ev::Substitution { home, who, number, name }),
        2 => (any::<bool>(), any::<u8>()).prop_map(|(home, who)| Ev::Shot { home, who }),
        1 => "[a-z \n\t\"\\\\é:<>]{1,24}".prop_map(Ev::Comment),
        1 => Just(Ev::Period),
    ]
}

fn lineup() -> impl Strategy<Value = Vec<(u32, String)>> {
    prop::collection::btree_map(1u32..=99, name(), 1..=11)
        .prop_map(|m| m.into_iter().collect::<Vec<_>>())
        .prop_shuffle()
}

/// The script's events with their times, each with the data every format must carry (players
/// are named in full, so the server's normalized data is the data sent), and the line-ups at
/// the end.
struct Script {
    events: Vec<(i64, Value)>,
    on_pitch: [Vec<(u32, String)>; 2],
}

const TEAMS: [&str; 2] = ["elp", "tig"];
const PERIODS: [&str; 6] = [
    "halftime_start",
    "halftime_stop",
    "extratime",
    "halftime_start",
    "halftime_stop",
    "penalties",
];

fn player(p: &(u32, String)) -> Value {
    json!({"number": p.0, "name": p.1})
}

fn build(
    home: Vec<(u32, String)>,
    visit: Vec<(u32, String)>,
    evs: &[Ev],
    t0: i64,
    gaps: &[u32],
    stop: bool,
) -> Script {
    let mut on_pitch = [home, visit];
    let lineups =
        |s: &[Vec<(u32, String)>; 2], i: usize| Value::Array(s[i].iter().map(player).collect());
    let mut events = vec![json!({"kind": "start", "data": {
        "home_players": lineups(&on_pitch, 0), "visit_players": lineups(&on_pitch, 1)}})];
    let mut periods = PERIODS.iter();
    for ev in evs {
        let side = |home: &bool| usize::from(!home);
        let pick = |s: &[Vec<(u32, String)>; 2], i: usize, who: u8| {
            (!s[i].is_empty()).then(|| s[i][who as usize % s[i].len()].clone())
        };
        let event = match ev {
            Ev::Goal { home, who, own } => {
                let scorer = side(home) ^ usize::from(*own);
                let Some(p) = pick(&on_pitch, scorer, *who) else { continue };
                let mut data = json!({"team": TEAMS[side(home)], "player": player(&p)});
                if *own {
                    data["player_team"] = json!(TEAMS[scorer]);
                }
                json!({"kind": "goal", "data": data})
            }
            Ev::Card { home, who, red } => {
                let s = side(home);
                let Some(p) = pick(&on_pitch, s, *who) else { continue };
                if *red {
                    on_pitch[s].retain(|q| q.0 != p.0);
                }
                let card = if *red { "red" } else { "yellow" };
                json!({"kind": "card", "data": {"card": card, "team": TEAMS[s], "player": player(&p)}})
            }
            Ev::Substitution { home, who, number, name } => {
                let s = side(home);
                let Some(out) = pick(&on_pitch, s, *who) else { continue };
                if on_pitch[s].iter().any(|q| q.0 == *number) {
                    continue;
                }
                let into = (*number, name.clone());
                if let Some(slot) = on_pitch[s].iter_mut().find(|q| q.0 == out.0) {
                    *slot = into.clone();
                }
                json!({"kind": "substitution", "data": {"team": TEAMS[s],
                    "player_in": player(&into), "player_out": player(&out)}})
            }
            Ev::Shot { home, who } => {
                let s = side(home);
                let Some(p) = pick(&on_pitch, s, *who) else { continue };
                json!({"kind": "shot", "data": {"team": TEAMS[s], "player": player(&p)}})
            }
            Ev::Comment(text) => json!({"kind": "comment", "data": {"text": text}}),
            Ev::Period => match periods.next() {
                Some(kind) => json!({"kind": kind, "data": {}}),
                None => continue,
            },
        };
        events.push(event);
    }
    if stop {
        events.push(json!({"kind": "stop", "data": {}}));
    }
    let mut ts = t0;
    let events = events
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            ts += i64::from(gaps[i % gaps.len()]);
            (ts, e)
        })
        .collect();
    Script { events, on_pitch }
}

/// Cuts `bytes` at `cuts` (positions taken modulo its length), as reads would bring them.
fn pieces<'a>(bytes: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut at: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    at.sort_unstable();
    let mut out = Vec::new();
    let mut from = 0;
    for cut in at {
        out.push(&bytes[from..cut]);
        from = cut;
    }
    out.push(&bytes[from..]);
    out
}

/// Feeds a checker `bytes` in pieces; what it saw and where the stream stands.
fn check(protocol: Protocol, bytes: &[u8], cuts: &[usize]) -> (Vec<Seen>, State) {
    let mut checker = Checker::for_protocol(protocol);
    let mut seen = Vec::new();
    let mut state = State::Open;
    for piece in pieces(bytes, cuts) {
        state = checker.feed(piece, &mut seen).unwrap_or_else(|v| panic!("{protocol:?}: {v}"));
    }
    (seen, state)
}

/// The detail keys of a v1 block in SPEC 4's order.
const V1_ORDER: [&str; 9] = [
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

/// A v1 block read by SPEC 4's grammar: its header's kind and its detail lines, in order, as
/// JSON (binaries and atoms as strings, players as `{"number","name"}`, line-ups as lists).
fn read_v1_block(block: &[u8]) -> (String, Vec<(String, Value)>) {
    let text = std::str::from_utf8(block).expect("UTF-8 in, UTF-8 out");
    let body = text.strip_suffix("\n\r\n").unwrap_or_else(|| panic!("a lone CRLF ends {text:?}"));
    let mut lines = body.split('\n').peekable();
    let header = lines.next().unwrap_or_default();
    let kind = header
        .get(21..)
        .and_then(|k| k.strip_suffix(':'))
        .unwrap_or_else(|| panic!("a header `<time>: <kind>:`: {header:?}"));
    let mut details = Vec::new();
    while let Some(line) = lines.next() {
        let line = line.strip_prefix('\t').unwrap_or_else(|| panic!("a tab starts {line:?}"));
        match line.split_once(": ") {
            Some((key, value)) => details.push((key.to_owned(), v1_value(value))),
            None => {
                let key = line.strip_suffix(':').unwrap_or_else(|| panic!("a key in {line:?}"));
                let mut players = Vec::new();
                while let Some(p) = lines.next_if(|l| l.starts_with("\t\t ")) {
                    players.push(v1_player(&p[3..]));
                }
                details.push((key.to_owned(), Value::Array(players)));
            }
        }
    }
    (kind.to_owned(), details)
}

/// `<<"..">>` (escapes undone), `Name (Number) `, a number or a bare atom.
fn v1_value(v: &str) -> Value {
    if let Some(inner) = v.strip_prefix("<<\"").and_then(|v| v.strip_suffix("\">>")) {
        let mut out = String::new();
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                out.push(match chars.next() {
                    Some('n') => '\n',
                    Some('r') => '\r',
                    Some('t') => '\t',
                    Some(c @ ('"' | '\\')) => c,
                    other => panic!("an escape \\{other:?} in {v:?}"),
                });
            } else {
                assert!(c != '"', "a bare quote inside {v:?}");
                out.push(c);
            }
        }
        return Value::String(out);
    }
    if v.ends_with(") ") {
        return v1_player(v);
    }
    if let Ok(n) = v.parse::<u64>() {
        return json!(n);
    }
    assert!(v.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'), "an atom: {v:?}");
    Value::String(v.to_owned())
}

/// `Name (Number) `: the number is in the last parentheses, the name is everything before.
fn v1_player(p: &str) -> Value {
    let rest = p.strip_suffix(") ").unwrap_or_else(|| panic!("`) ` ends a player: {p:?}"));
    let (name, number) = rest.rsplit_once(" (").unwrap_or_else(|| panic!("a player: {p:?}"));
    let number: u32 = number.parse().unwrap_or_else(|_| panic!("a shirt number in {p:?}"));
    json!({"number": number, "name": name})
}

fn object(details: Vec<(String, Value)>) -> Value {
    Value::Object(details.into_iter().collect::<Map<String, Value>>())
}

fn lineup_json(players: &[(u32, String)]) -> Value {
    Value::Array(players.iter().map(player).collect())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Every event's v1 block and v2 frame carry its kind, time and data (v1 read by SPEC 4's
    /// grammar, v2 by serde), the client's checkers accept both streams cut anywhere, and the
    /// snapshots after the last event show its score and line-ups.
    #[test]
    fn v1_and_v2_frames_read_back_through_the_clients_decoders(
        home in lineup(),
        visit in lineup(),
        evs in prop::collection::vec(ev(), 0..24),
        stop in any::<bool>(),
        t0 in 946_684_800_000i64..4_102_444_800_000,
        gaps in prop::collection::vec(0u32..200_000, 1..8),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        let script = build(home, visit, &evs, t0, &gaps, stop);
        let played: Played = fuzzing::play(&script.events).unwrap_or_else(|e| panic!("{e}"));
        let n = script.events.len();

        // v2, through the client's checker, cut anywhere, ending with the server's goodbye.
        let mut stream = played.before.v2.clone();
        for f in &played.events {
            stream.extend_from_slice(&f.v2);
        }
        stream.extend_from_slice(b"{\"kind\":\"bye\",\"reason\":\"match_over\"}\n");
        let (seen, state) = check(Protocol::V2, &stream, &cuts);
        let mut want = vec![Seen::Status { seq: Some(0) }];
        want.extend(script.events.iter().enumerate().map(|(i, (ts, _))| {
            Seen::Event { seq: Some(i as u64 + 1), ts_ms: *ts }
        }));
        prop_assert_eq!(seen, want);
        prop_assert_eq!(state, State::Ended);

        // v1, through the client's checker: times to the second, the end after stop.
        let mut stream = played.before.v1.clone();
        for f in &played.events {
            stream.extend_from_slice(&f.v1);
        }
        let (seen, state) = check(Protocol::V1, &stream, &cuts);
        let mut want = vec![Seen::Status { seq: None }];
        want.extend(script.events.iter().map(|(ts, _)| {
            Seen::Event { seq: None, ts_ms: ts.div_euclid(1000) * 1000 }
        }));
        prop_assert_eq!(seen, want);
        prop_assert_eq!(state, if stop { State::Ended } else { State::Open });

        // Each event, read in both formats, is the event sent.
        for (i, ((ts, event), frames)) in script.events.iter().zip(&played.events).enumerate() {
            let v2: Value = serde_json::from_slice(&frames.v2).expect("a v2 frame is JSON");
            let want = json!({"seq": i + 1, "ts": ts, "kind": event["kind"], "data": event["data"]});
            prop_assert_eq!(&v2, &want, "v2 frame {}", i + 1);
            let (kind, details) = read_v1_block(&frames.v1);
            prop_assert_eq!(kind.as_str(), event["kind"].as_str().unwrap_or_default());
            let order: Vec<usize> = details
                .iter()
                .map(|(k, _)| V1_ORDER.iter().position(|o| o == k).expect("a SPEC 4 key"))
                .collect();
            prop_assert!(order.windows(2).all(|w| w[0] < w[1]), "v1 key order {:?}", details);
            prop_assert_eq!(object(details), event["data"].clone(), "v1 block {}", i + 1);
        }

        // The snapshots after the last event.
        let (kind, details) = read_v1_block(&played.after.v1);
        prop_assert_eq!(kind, "status");
        let keys: Vec<&str> = details.iter().map(|(k, _)| k.as_str()).collect();
        prop_assert_eq!(keys, ["home", "home_players", "home_score", "visit", "visit_players",
            "visit_score", "period"]);
        let status = object(details);
        prop_assert_eq!(&status["home_players"], &lineup_json(&script.on_pitch[0]));
        prop_assert_eq!(&status["visit_players"], &lineup_json(&script.on_pitch[1]));
        prop_assert_eq!(&played.home_on_pitch, &script.on_pitch[0]);
        prop_assert_eq!(&played.visit_on_pitch, &script.on_pitch[1]);
        prop_assert_eq!((&status["home_score"], &status["visit_score"]),
            (&json!(played.score.0), &json!(played.score.1)));
        let goals = |team: &str| script.events.iter()
            .filter(|(_, e)| e["kind"] == "goal" && e["data"]["team"] == team).count() as u32;
        prop_assert_eq!(played.score, (goals("elp"), goals("tig")));
        let v2: Value = serde_json::from_slice(&played.after.v2).expect("a v2 snapshot is JSON");
        prop_assert_eq!(&v2["seq"], &json!(n));
        prop_assert_eq!(&v2["data"]["period"], &status["period"]);
        let shown = |players: &[(u32, String)]| Value::Object(
            players.iter().map(|(n, name)| (n.to_string(), json!(name))).collect());
        prop_assert_eq!(&v2["data"]["home-players"], &shown(&script.on_pitch[0]));
        prop_assert_eq!(&v2["data"]["visit-score"], &json!(played.score.1));
    }
}

/// What a node answered a connect line with.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    /// A v1 `ERROR:` block, then the close.
    Error,
    /// A v2 `bye` with this reason, then the close.
    Bye(String),
    /// A v1 `status` block (then the close if the match is not live).
    V1Status,
    /// A v2 frame of this kind (`status`, or the first event after `FROM`).
    V2Frame(String),
}

/// The matches the connect lines name: one live at `seq`, one over, and unknown ones.
struct Matches {
    live: String,
    live_seq: u64,
    ended: String,
}

/// A connect line: anything at all, or something shaped like one (a version, any user id, a
/// known or unknown match, a `FROM` the live match can honour at once, stray fields).
fn connect_bytes(live: String, live_seq: u64, ended: String) -> impl Strategy<Value = Vec<u8>> {
    let any_bytes = prop::collection::vec(any::<u8>(), 0..300);
    let long = prop::collection::vec(1u8..=255, 1000..1100).prop_map(|v| {
        v.into_iter().map(|b| if b == b'\n' || b == b'\r' { b'x' } else { b }).collect()
    });
    let user = prop_oneof![
        3 => "[a-z0-9 é]{1,8}".prop_map(String::into_bytes),
        1 => prop::collection::vec(any::<u8>(), 0..12),
    ];
    let id = prop_oneof![Just(live), Just(ended), "[a-z]{1,4}-[a-z]{1,4}-20[0-9]{2}-0[1-9]-1[0-9]"];
    let from = prop::option::of(prop_oneof![
        (0..live_seq).prop_map(|n| n.to_string()),
        Just("x".to_owned()),
        Just("99999999999999999999".to_owned())
    ]);
    let version = prop_oneof![
        2 => Just("VERSION:1:"),
        3 => Just("VERSION:2:"),
        1 => Just("VERSION:3:"),
        1 => Just(""),
    ];
    let shaped = (
        version,
        user,
        id,
        from,
        prop::option::weighted(0.1, Just(":EXTRA")),
        prop::option::of(Just("\r")),
    )
        .prop_map(|(version, user, id, from, extra, cr)| {
            let mut line = format!("{version}CONNECT:").into_bytes();
            line.extend_from_slice(&user);
            line.extend_from_slice(format!(":MATCH:{id}").as_bytes());
            if let Some(n) = from {
                line.extend_from_slice(format!(":FROM:{n}").as_bytes());
            }
            line.extend_from_slice(extra.unwrap_or_default().as_bytes());
            line.extend_from_slice(cr.unwrap_or_default().as_bytes());
            line
        });
    prop_oneof![2 => any_bytes, 1 => long, 5 => shaped]
}

/// What SPEC 4 says the node answers `sent` (the bytes before the `\n` the test adds).
fn expected_answer(sent: &[u8], m: &Matches) -> Answer {
    let line = sent.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let refused = |version: Option<u8>, reason: &str| match version {
        Some(2) => Answer::Bye(reason.to_owned()),
        _ => Answer::Error,
    };
    if line.len() > 1024 {
        return refused(matchstream_proto::sniff_version(line), "bad_request");
    }
    match matchstream_proto::parse_connect(line) {
        Err(e) => refused(e.version, "bad_request"),
        Ok(matchstream_proto::ConnectLine::V1 { match_id, .. }) => {
            if match_id == m.live || match_id == m.ended {
                Answer::V1Status
            } else {
                Answer::Error
            }
        }
        Ok(matchstream_proto::ConnectLine::V2 { match_id, from, .. }) => {
            if match_id == m.ended {
                // Everything after FROM, then the goodbye: the snapshot when FROM is absent.
                match from {
                    None => Answer::V2Frame("status".into()),
                    Some(n) if n < 2 => {
                        Answer::V2Frame(if n == 0 { "start" } else { "stop" }.into())
                    }
                    Some(_) => Answer::Bye("match_over".into()),
                }
            } else if match_id == m.live {
                match from {
                    None => Answer::V2Frame("status".into()),
                    Some(n) => {
                        assert!(n < m.live_seq, "the test only sends FROMs answered at once");
                        Answer::V2Frame(if n == 0 { "start" } else { "goal" }.into())
                    }
                }
            } else {
                Answer::Bye("not_found".into())
            }
        }
    }
}

/// Sends `sent` and a `\n` as a connect line; reads until the answer is known, and to the close
/// when the answer is a refusal or a goodbye.
async fn answer_to(addr: SocketAddr, sent: &[u8]) -> Answer {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let mut line = sent.to_vec();
    line.push(b'\n');
    // The node may refuse and close before it has read everything (a line too long): a write
    // that fails then is part of the answer, not a failure.
    let _ = stream.write_all(&line).await;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let complete = match got.first() {
            Some(b'E') => got.ends_with(b"\n\r\n"),
            Some(b'{') => got.contains(&b'\n'),
            Some(_) => got.windows(3).any(|w| w == b"\n\r\n"),
            None => false,
        };
        if complete {
            break;
        }
        let read = tokio::time::timeout(PATIENCE, stream.read(&mut buf)).await;
        let n = read.expect("an answer in time").unwrap_or(0);
        assert!(
            n > 0,
            "closed without an answer to {:?}: {:?}",
            String::from_utf8_lossy(sent),
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got).into_owned();
    let answer = if text.starts_with("ERROR: ") {
        assert!(text.ends_with("\n\r\n") && text.lines().count() == 2, "one ERROR line: {text:?}");
        Answer::Error
    } else if got.first() == Some(&b'{') {
        let first = text.split('\n').next().unwrap_or_default();
        let frame: Value = serde_json::from_str(first).expect("a v2 frame is JSON");
        match frame["kind"].as_str() {
            Some("bye") => Answer::Bye(frame["reason"].as_str().unwrap_or_default().to_owned()),
            Some(kind) => Answer::V2Frame(kind.to_owned()),
            None => panic!("a frame without kind: {text}"),
        }
    } else {
        assert!(text.get(19..).is_some_and(|t| t.starts_with(": status:\n")), "{text:?}");
        Answer::V1Status
    };
    if matches!(answer, Answer::Error | Answer::Bye(_)) {
        // The answer is the last thing sent: the node closes (its FIN, not a reset).
        let rest = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut got)).await;
        let read = rest.expect("the node closes after refusing");
        read.unwrap_or_else(|e| panic!("closed with {e} after {text:?}"));
        assert_eq!(String::from_utf8_lossy(&got), text, "nothing after the refusal");
    }
    answer
}

/// Any bytes as a connect line, on one node: an `ERROR:` block or a `bye` (and the close), or
/// the match's status or first frame (and the node keeps serving). Never silence, never a crash.
#[test]
fn any_connect_line_gets_an_answer() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let (server, matches) = runtime.block_on(async {
        let s = TestServer::start().await;
        let ended = s.create_match("abc", "def", "2011-09-10").await;
        s.publish(&ended, "start", start_data()).await;
        s.publish(&ended, "stop", json!({})).await;
        let live = s.started_match().await;
        let live_seq = s.publish(&live, "goal", json!({"team": "tig", "player": 7})).await;
        (s, Matches { live, live_seq, ended })
    });
    let mut runner = TestRunner::new(RunnerConfig {
        cases: 64,
        failure_persistence: None,
        ..RunnerConfig::default()
    });
    let strategy = connect_bytes(matches.live.clone(), matches.live_seq, matches.ended.clone());
    let addr = server.viewer();
    runner
        .run(&strategy, |sent| {
            let want = expected_answer(&sent, &matches);
            let got = runtime.block_on(answer_to(addr, &sent));
            prop_assert_eq!(got, want, "{:?}", String::from_utf8_lossy(&sent));
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
    // The node kept serving through all of it.
    runtime.block_on(async {
        let mut v =
            Viewer::connect(addr, &format!("VERSION:2:CONNECT:me:MATCH:{}", matches.live)).await;
        let status = v.frame().await.expect("a snapshot");
        assert_eq!(status["seq"], matches.live_seq);
        tokio::time::timeout(Duration::from_secs(30), server.stop()).await.expect("the node stops");
    });
}
