//! Entry points for the fuzz targets (`fuzz/`) and their regression tests, not an API.
//!
//! Thin functions that hand bytes to the crate's own code the way the node does (the watcher
//! API's event JSON to the state rules, a WebSocket client's bytes to the frame reader, events
//! to the wire encoders) and panic when an invariant of SPEC 1, 4 or 5 does not hold: a panic is
//! what a fuzzer reports. The node never calls them; the integration tests use [`play`] to read
//! the encoders' bytes with the client's decoders.

use bytes::BytesMut;
use serde_json::Value;

use crate::model::{
    Date, Event, EventData, EventDataInput, EventInput, EventKind, Match, MatchId, MatchInfo,
    Millis, Period, Player, Team, TeamId,
};
use crate::wire::ws::{self, ClientFrame};
use crate::wire::{sse, v1, v2};

/// The time of the first event of [`apply_events_json`] (2011-09-10, the seed match's day).
const T0: Millis = 1_315_660_000_000;

/// The seed match's line-ups (`matches/elp-tig-2011-09-10.config`).
const HOME: &[(u32, &str)] = &[
    (25, "Albil"),
    (14, "Mercado"),
    (2, "Desabato"),
    (3, "Cellay"),
    (27, "Dominguez"),
    (11, "Veron"),
    (10, "Fernandez"),
    (5, "Sanchez"),
    (19, "Gonzalez"),
    (18, "Fernandez"),
    (9, "Boselli"),
];
const VISIT: &[(u32, &str)] = &[
    (12, "Garcia"),
    (13, "Casteglione"),
    (21, "Echeverria"),
    (3, "Blengio"),
    (15, "Diaz"),
    (5, "Castano"),
    (6, "Martinez"),
    (11, "Leone"),
    (10, "Morales"),
    (7, "Luna"),
    (9, "Maggiolo"),
];

/// elp-tig-2011-09-10, not started.
fn new_match() -> Match {
    let team = |id: &str| TeamId::parse(id).expect("a valid team id");
    let (home, visit) = (team("elp"), team("tig"));
    let date = Date::parse("2011-09-10").expect("a valid date");
    Match::new(MatchInfo {
        id: MatchId::new(&home, &visit, &date),
        home: Team { id: home, name: Some("Estudiantes".into()), division: None },
        visit: Team { id: visit, name: None, division: None },
        start_date: date,
        stadium: None,
    })
}

/// The same match started with the seed's line-ups, at `T0 - 1000`.
fn started_match() -> Match {
    let lineup = |players: &[(u32, &str)]| {
        Value::Array(players.iter().map(|(n, name)| serde_json::json!([n, name])).collect())
    };
    let data = serde_json::json!({"home_players": lineup(HOME), "visit_players": lineup(VISIT)});
    let data: EventDataInput = serde_json::from_value(data).expect("the seed line-ups");
    let mut m = new_match();
    m.apply(EventKind::Start, &data, T0 - 1000).expect("the seed's start applies");
    m
}

/// Parses `bytes` as the body of `POST /1/match/<id>/events` does (one event or a list), then
/// applies the events in order, each as a request of its own, to a match that has started with
/// the seed's line-ups (or that has not, when the first event is a `start`). Every step is
/// checked: an accepted event moves `seq` by one, changes the scores and the players on the
/// pitch only as its kind allows, and is encoded into well-formed v1, v2, WebSocket and SSE
/// frames (the v2 frame's data reading back as the event's); a rejected one changes nothing.
/// At the end, the match rebuilt from the events as stored (JSON, as the stores keep them)
/// equals the live one. Returns how many events were accepted, or why the body is not events.
pub fn apply_events_json(bytes: &[u8]) -> Result<usize, String> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| format!("bad JSON: {e}"))?;
    let inputs: Vec<EventInput> = if value.is_array() {
        serde_json::from_value(value)
    } else {
        serde_json::from_value(value).map(|one| vec![one])
    }
    .map_err(|e| format!("bad event: {e}"))?;
    let first = if inputs.first().is_some_and(|e| e.kind == EventKind::Start) {
        new_match()
    } else {
        started_match()
    };
    let mut live = first.clone();
    let mut events = Vec::new();
    for (i, input) in inputs.iter().enumerate() {
        let ts = T0 + i as Millis * 1000;
        let before = live.clone();
        match live.apply(input.kind, &input.data, ts) {
            Ok(data) => {
                let ev = Event { seq: live.seq, ts, kind: input.kind, data };
                check_step(&before, &live, &ev);
                check_frames(&ev);
                events.push(ev);
            }
            Err(rejection) => {
                assert_eq!(live, before, "a rejected {} changed the match", input.kind.as_str());
                assert!(
                    !rejection.reason.is_empty() && !rejection.reason.contains(['\r', '\n']),
                    "a rejection's reason is one line: {:?}",
                    rejection.reason
                );
            }
        }
    }
    check_status(&live);
    check_rebuilt(&first, &events, &live);
    Ok(events.len())
}

/// What one accepted event may change (SPEC 1).
fn check_step(before: &Match, after: &Match, ev: &Event) {
    let kind = ev.kind.as_str();
    assert_eq!(after.seq, before.seq + 1, "{kind}: seq moves by one");
    assert_eq!(ev.seq, after.seq, "{kind}: the event carries the match's new seq");
    assert_eq!(after.info, before.info, "{kind}: the match's teams and date never change");
    for side in [&after.home, &after.visit] {
        let mut numbers: Vec<u32> = side.on_pitch.iter().map(|p| p.number).collect();
        numbers.sort_unstable();
        let count = numbers.len();
        numbers.dedup();
        assert_eq!(numbers.len(), count, "{kind}: a shirt number twice on the pitch");
    }
    let scores = |m: &Match| (m.home.score, m.visit.score);
    let pitch = |m: &Match| (m.home.on_pitch.len(), m.visit.on_pitch.len());
    match ev.kind {
        EventKind::Start => {
            assert_eq!(before.period, Period::NotStarted);
            assert_eq!(scores(after), (0, 0), "start: 0-0");
        }
        EventKind::Goal => {
            let (h, v) = scores(before);
            let home = ev.data.team.as_ref() == Some(&after.info.home.id);
            let want = if home {
                (h.checked_add(1).expect("home score overflows"), v)
            } else {
                (h, v.checked_add(1).expect("visit score overflows"))
            };
            assert_eq!(scores(after), want, "goal: one more for its team");
            assert_eq!(pitch(after), pitch(before), "goal: the pitch is unchanged");
        }
        EventKind::Card => {
            assert_eq!(scores(after), scores(before), "card: scores unchanged");
            let (h, v) = pitch(before);
            let sent_off = match ev.data.card {
                Some(crate::model::Card::Red) => 1,
                _ => 0,
            };
            let home = ev.data.team.as_ref() == Some(&after.info.home.id);
            let want = if home { (h - sent_off, v) } else { (h, v - sent_off) };
            assert_eq!(pitch(after), want, "card: a red one takes one player off");
        }
        _ => {
            assert_eq!(scores(after), scores(before), "{kind}: scores unchanged");
            assert_eq!(pitch(after), pitch(before), "{kind}: as many players on the pitch");
        }
    }
    if ev.kind == EventKind::Substitution {
        let (Some(p_in), Some(p_out)) = (&ev.data.player_in, &ev.data.player_out) else {
            panic!("substitution without its players: {:?}", ev.data);
        };
        let side = if ev.data.team.as_ref() == Some(&after.info.home.id) {
            &after.home
        } else {
            &after.visit
        };
        assert!(side.on_pitch.contains(p_in), "substitution: {p_in:?} is on the pitch");
        assert!(
            side.on_pitch.iter().all(|p| p.number != p_out.number),
            "substitution: {p_out:?} has left"
        );
    }
    if after.period != before.period {
        assert_eq!(after.period_start, Some(ev.ts), "{kind}: a new period starts at its ts");
    } else {
        assert_eq!(after.period_start, before.period_start, "{kind}: same period, same start");
    }
}

/// The frames of one event, in every format, are well formed; the v2 frame reads back.
fn check_frames(ev: &Event) {
    check_v1_block(&v1::event_block(ev), ev.kind.as_str());
    let frame = v2::event_frame(ev);
    let value = check_v2_line(&frame);
    assert_eq!(value["seq"], ev.seq, "v2 seq");
    assert_eq!(value["ts"], ev.ts, "v2 ts");
    assert_eq!(value["kind"], ev.kind.as_str(), "v2 kind");
    let data: EventData =
        serde_json::from_value(value["data"].clone()).expect("v2 data reads back as event data");
    assert_eq!(data, ev.data, "v2 data reads back");
    let text = ws::text(&frame);
    // One unmasked text frame whose payload is the line without its newline.
    let payload = &frame[..frame.len() - 1];
    let header = match payload.len() {
        0..=125 => 2,
        126..=65535 => 4,
        _ => 10,
    };
    assert_eq!(text[0], 0x81, "a final text frame");
    assert_eq!(&text[header..], payload, "the WebSocket payload is the v2 line");
    let event = sse::event(Some(ev.seq), ev.kind.as_str(), &frame);
    let want = format!("id: {}\nevent: {}\ndata: ", ev.seq, ev.kind.as_str());
    assert!(event.starts_with(want.as_bytes()) && event.ends_with(b"\n\n"), "SSE framing");
    assert_eq!(event.iter().filter(|&&b| b == b'\n').count(), 4, "SSE: three lines and a blank");
}

/// The snapshots of `m` are well formed and tell its scores.
fn check_status(m: &Match) {
    check_v1_block(&v1::status_block(m, T0), "status");
    let value = check_v2_line(&v2::status_frame(m));
    assert_eq!(value["seq"], m.seq);
    assert_eq!(value["kind"], "status");
    assert_eq!(value["data"]["home-score"], m.home.score);
    assert_eq!(value["data"]["visit-score"], m.visit.score);
    let players = value["data"]["home-players"].as_object().map_or(0, |o| o.len());
    assert_eq!(players, m.home.on_pitch.len(), "one entry per player on the pitch");
}

/// A v1 block (SPEC 4): `<time>: <kind>:\n`, tab-indented lines, a lone `\r\n`, and no other
/// CR or line break that could end a line or the block early.
fn check_v1_block(block: &[u8], kind: &str) {
    let shown = || String::from_utf8_lossy(block).into_owned();
    let body = block.strip_suffix(b"\r\n").unwrap_or_else(|| panic!("v1 block end: {}", shown()));
    assert!(!body.contains(&b'\r'), "v1: a CR inside the block: {}", shown());
    let body = body.strip_suffix(b"\n").unwrap_or_else(|| panic!("v1 last line: {}", shown()));
    let mut lines = body.split(|&b| b == b'\n');
    let header = lines.next().unwrap_or_default();
    let want = format!(": {kind}:");
    assert!(header.len() > 19 && header[19..] == *want.as_bytes(), "v1 header: {}", shown());
    assert!(
        lines.all(|l| l.first() == Some(&b'\t')),
        "v1 detail lines start with a tab: {}",
        shown()
    );
}

/// A v2 frame: one JSON object on one line.
fn check_v2_line(frame: &[u8]) -> Value {
    let shown = || String::from_utf8_lossy(frame).into_owned();
    let line = frame.strip_suffix(b"\n").unwrap_or_else(|| panic!("v2 line end: {}", shown()));
    assert!(!line.contains(&b'\n'), "v2: a line break inside the frame: {}", shown());
    let value: Value = serde_json::from_slice(line).unwrap_or_else(|e| panic!("v2 JSON: {e}"));
    assert!(value.is_object(), "v2: an object: {}", shown());
    value
}

/// The match rebuilt from `events` as a restart does (their data through JSON, as the stores
/// keep it, then `apply_stored`) equals `live`, and each stored event's data re-applies to itself.
fn check_rebuilt(first: &Match, events: &[Event], live: &Match) {
    let mut rebuilt = first.clone();
    for ev in events {
        let json = serde_json::to_string(&ev.data).expect("event data serializes");
        let data: EventData = serde_json::from_str(&json).expect("stored event data reads back");
        assert_eq!(data, ev.data, "seq {}: stored data reads back", ev.seq);
        let mut again = rebuilt.clone();
        let out = again.apply(ev.kind, &EventDataInput::from(&data), ev.ts);
        assert_eq!(out.as_ref(), Ok(&ev.data), "seq {}: stored data re-applies", ev.seq);
        let stored = Event { seq: ev.seq, ts: ev.ts, kind: ev.kind, data };
        rebuilt.apply_stored(&stored).unwrap_or_else(|r| panic!("seq {}: {r}", ev.seq));
    }
    assert_eq!(&rebuilt, live, "the match rebuilt from its stored events");
}

/// The pieces a fuzz input is cut into for [`read_ws_client`]: the first byte says how many
/// cuts (at most 16), the next bytes how long each piece is (0 to 255; 0 is a read that brought
/// nothing), and the rest of the input is cut so, its remainder being the last piece.
pub fn chunks(data: &[u8]) -> Vec<&[u8]> {
    let Some((&n, rest)) = data.split_first() else { return Vec::new() };
    let n = (n as usize % 17).min(rest.len());
    let (lens, mut input) = rest.split_at(n);
    let mut out = Vec::with_capacity(n + 1);
    for &len in lens {
        let (piece, tail) = input.split_at((len as usize).min(input.len()));
        out.push(piece);
        input = tail;
    }
    out.push(input);
    out
}

/// A client frame as [`read_ws_client`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WsFrame {
    Ping(Vec<u8>),
    Close(Option<u16>),
    Ignored,
}

/// What the reader made of a client's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsRead {
    /// The frames read, in order.
    pub frames: Vec<WsFrame>,
    /// The close code the input ended the connection with, if it did.
    pub error: Option<u16>,
    /// Bytes left unread (an incomplete frame) when the input ran out without an error.
    pub left: usize,
}

/// Feeds `pieces` to the WebSocket client-frame reader one at a time, as a viewer's reads bring
/// them, and checks that each call consumes exactly the whole frames it returns (their lengths
/// and payloads worked out here independently, from RFC 6455), leaves the rest in place, never
/// holds more than one incomplete frame, and that the outcome does not depend on how the input
/// was cut: the same bytes in one piece end in the same error, or in none and the same frames.
/// (An error drops the frames read with it in the same call, as `read_client` says: those
/// differ with the cuts, and the connection ends with the error's code either way.)
pub fn read_ws_client(pieces: &[&[u8]]) -> WsRead {
    let cut = read_pieces(pieces);
    let whole: Vec<u8> = pieces.concat();
    let once = read_pieces(&[&whole]);
    assert_eq!(cut.error, once.error, "the error depends on how the input was cut");
    if once.error.is_none() {
        assert_eq!(cut, once, "the frames depend on how the input was cut");
    }
    cut
}

fn read_pieces(pieces: &[&[u8]]) -> WsRead {
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for piece in pieces {
        buf.extend_from_slice(piece);
        let unread = buf.to_vec();
        match ws::read_client(&mut buf) {
            Ok(read) => {
                let mut at = 0;
                for frame in read {
                    let (len, payload) = reference_frame(&unread[at..])
                        .unwrap_or_else(|| panic!("a frame read from too few bytes: {unread:?}"));
                    let want = match frame {
                        ClientFrame::Ping(p) => {
                            assert_eq!(p, payload, "the ping's payload, unmasked");
                            WsFrame::Ping(p)
                        }
                        ClientFrame::Close(code) => {
                            let want = (payload.len() >= 2)
                                .then(|| u16::from_be_bytes([payload[0], payload[1]]));
                            assert_eq!(code, want, "the close code");
                            WsFrame::Close(code)
                        }
                        ClientFrame::Ignored => WsFrame::Ignored,
                    };
                    frames.push(want);
                    at += len;
                }
                assert_eq!(&buf[..], &unread[at..], "consumed exactly the frames read");
                let most = 14 + ws::MAX_CLIENT_FRAME as usize;
                assert!(buf.len() < most, "{} bytes left unread: more than one frame", buf.len());
                if let Some((len, _)) = reference_frame(&buf) {
                    panic!("a whole frame of {len} bytes left unread: {:?}", &buf[..]);
                }
            }
            Err(e) => return WsRead { frames, error: Some(e.code()), left: 0 },
        }
    }
    WsRead { frames, error: None, left: buf.len() }
}

/// The length and unmasked payload of the whole, masked frame at the start of `b`, read
/// straight from RFC 6455 section 5.2; `None` if `b` holds less than a whole frame.
fn reference_frame(b: &[u8]) -> Option<(usize, Vec<u8>)> {
    let short = u64::from(*b.get(1)? & 0x7F);
    let (len, at) = match short {
        126 => (u64::from(u16::from_be_bytes([*b.get(2)?, *b.get(3)?])), 4),
        127 => (u64::from_be_bytes(b.get(2..10)?.try_into().ok()?), 10),
        n => (n, 2),
    };
    let masked = b[1] & 0x80 != 0;
    let mask: [u8; 4] = if masked { b.get(at..at + 4)?.try_into().ok()? } else { [0; 4] };
    let start = at + if masked { 4 } else { 0 };
    let end = start.checked_add(usize::try_from(len).ok()?)?;
    let payload = b.get(start..end)?.iter().enumerate().map(|(i, x)| x ^ mask[i % 4]).collect();
    Some((end, payload))
}

/// The frames of a match played from `events` (each `(ts, {"kind":..,"data":..})`, all
/// accepted, applied to elp-tig-2011-09-10 from before its start), as every viewer format
/// encodes them: for the integration tests that read them with the client's decoders.
pub fn play(events: &[(Millis, Value)]) -> Result<Played, String> {
    let mut m = new_match();
    let status = |m: &Match, now: Millis| Frames {
        v1: v1::status_block(m, now).to_vec(),
        v2: v2::status_frame(m).to_vec(),
    };
    let before = status(&m, events.first().map_or(T0, |(ts, _)| *ts));
    let mut played = Vec::with_capacity(events.len());
    for (i, (ts, value)) in events.iter().enumerate() {
        let input: EventInput =
            serde_json::from_value(value.clone()).map_err(|e| format!("event {i}: {e}"))?;
        let data = m.apply(input.kind, &input.data, *ts).map_err(|e| format!("event {i}: {e}"))?;
        let ev = Event { seq: m.seq, ts: *ts, kind: input.kind, data };
        played
            .push(Frames { v1: v1::event_block(&ev).to_vec(), v2: v2::event_frame(&ev).to_vec() });
    }
    let after = status(&m, events.last().map_or(T0, |(ts, _)| *ts));
    let lineup = |players: &[Player]| players.iter().map(|p| (p.number, p.name.clone())).collect();
    Ok(Played {
        before,
        events: played,
        after,
        home_on_pitch: lineup(&m.home.on_pitch),
        visit_on_pitch: lineup(&m.visit.on_pitch),
        score: (m.home.score, m.visit.score),
    })
}

/// One frame in the two TCP formats (WebSocket and SSE carry the v2 bytes).
#[derive(Debug, Clone)]
pub struct Frames {
    pub v1: Vec<u8>,
    pub v2: Vec<u8>,
}

/// What [`play`] returns.
#[derive(Debug, Clone)]
pub struct Played {
    /// The snapshot before the first event (its v1 time: the first event's).
    pub before: Frames,
    /// Each event's frames, in order (`seq` 1, 2, ...).
    pub events: Vec<Frames>,
    /// The snapshot after the last event (its v1 time: the last event's).
    pub after: Frames,
    /// Who is on the pitch at the end, in line-up order.
    pub home_on_pitch: Vec<(u32, String)>,
    pub visit_on_pitch: Vec<(u32, String)>,
    /// Home and visit score at the end.
    pub score: (u32, u32),
}

#[cfg(test)]
mod tests {
    //! The fuzz targets' crash inputs, kept as regression tests: every file under
    //! `fuzz/regressions/<target>/` goes through its target's entry point.

    use super::*;

    fn regressions(target: &str) -> Vec<(String, Vec<u8>)> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fuzz/regressions")
            .join(target);
        let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
            .map(|entries| {
                entries
                    .map(|e| e.expect("a directory entry").path())
                    .map(|p| (p.display().to_string(), std::fs::read(&p).expect("readable")))
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        files
    }

    #[test]
    fn event_apply_regressions_hold() {
        for (name, bytes) in regressions("event_apply") {
            eprintln!("{name}");
            let _ = apply_events_json(&bytes);
        }
    }

    #[test]
    fn ws_client_frames_regressions_hold() {
        for (name, bytes) in regressions("ws_client_frames") {
            eprintln!("{name}");
            read_ws_client(&chunks(&bytes));
        }
    }

    #[test]
    fn the_seed_events_apply_with_every_check() {
        let seed = r#"[{"kind":"goal","data":{"team":"tig","player":7}},
            {"kind":"card","data":{"card":"red","team":"elp","player":25}},
            {"kind":"substitution","data":{"team":"elp","player_in":{"number":21,"name":"Silva"},
                "player_out":18}},
            {"kind":"goal","data":{"team":"elp","player":7,"player_team":"tig"}},
            {"kind":"comment","data":{"text":"two\nlines\tand \"quotes\""}},
            {"kind":"halftime"},{"kind":"continue"},{"kind":"stop"},{"kind":"goal"}]"#;
        assert_eq!(apply_events_json(seed.as_bytes()), Ok(8));
        assert!(apply_events_json(b"{").unwrap_err().starts_with("bad JSON"));
        assert!(apply_events_json(br#"{"kind":"nope"}"#).unwrap_err().starts_with("bad event"));
    }

    #[test]
    fn client_frames_cut_anywhere_read_the_same() {
        let mask = [1u8, 2, 3, 4];
        let mut bytes = vec![0x89, 0x82];
        bytes.extend_from_slice(&mask);
        bytes.extend(b"hi".iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        bytes.extend_from_slice(&[0x88, 0x82, 0, 0, 0, 0, 0x03, 0xE8]);
        for cut in 0..=bytes.len() {
            let (a, b) = bytes.split_at(cut);
            let read = read_ws_client(&[a, b]);
            assert_eq!(read.frames, [WsFrame::Ping(b"hi".to_vec()), WsFrame::Close(Some(1000))]);
            assert_eq!((read.error, read.left), (None, 0));
        }
        let read = read_ws_client(&chunks(&[2, 3, 0, 0x89, 0x02, b'h', b'i']));
        assert_eq!(read.error, Some(1002), "unmasked");
    }
}
