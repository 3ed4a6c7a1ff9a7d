//! The v2 JSON-lines frames (SPEC 4), also carried by WebSocket and SSE: event frames, the
//! `status` snapshot and the `bye` goodbye. One JSON object per frame, ending in exactly one
//! `\n` (JSON escapes line breaks inside strings, so none can occur elsewhere). Which frames a
//! viewer gets, and when, is the transport's and the hub's business.

use bytes::Bytes;
use serde::Serialize;

use super::Bye;
use crate::model::{Event, Match};

/// One event as `{"seq":5,"ts":1316094531000,"kind":"goal","data":{...}}\n`, encoded once and
/// shared by every v2, WebSocket and SSE viewer of the match.
pub(crate) fn event_frame(ev: &Event) -> Bytes {
    // The envelope holds only numbers and a kind name that needs no escaping, so it is written
    // directly; serde writes the data.
    let mut buf = Vec::with_capacity(96 + data_len(&ev.data));
    buf.extend_from_slice(b"{\"seq\":");
    push_uint(&mut buf, ev.seq);
    buf.extend_from_slice(b",\"ts\":");
    push_int(&mut buf, ev.ts);
    buf.extend_from_slice(b",\"kind\":\"");
    buf.extend_from_slice(ev.kind.as_str().as_bytes());
    buf.extend_from_slice(b"\",\"data\":");
    push_json(&mut buf, &ev.data, b"{}");
    buf.extend_from_slice(b"}\n");
    Bytes::from(buf)
}

/// The snapshot `{"seq":<last applied>,"kind":"status","data":{<match object>}}\n`, where the
/// match object is that of `GET /1/match/<id>`.
pub(crate) fn status_frame(m: &Match) -> Bytes {
    let players = m.home.on_pitch.iter().chain(&m.visit.on_pitch);
    let len = 320
        + players.map(|p| p.name.len() + 16).sum::<usize>()
        + m.info.home.name.as_ref().map_or(0, String::len)
        + m.info.visit.name.as_ref().map_or(0, String::len)
        + m.info.home.division.as_ref().map_or(0, String::len)
        + m.info.stadium.as_ref().map_or(0, String::len);
    let mut buf = Vec::with_capacity(len);
    buf.extend_from_slice(b"{\"seq\":");
    push_uint(&mut buf, m.seq);
    buf.extend_from_slice(b",\"kind\":\"status\",\"data\":");
    push_json(&mut buf, m, b"{}");
    buf.extend_from_slice(b"}\n");
    Bytes::from(buf)
}

/// The last frame before the server closes:
/// `{"kind":"bye","reason":"too_slow","retry_after_ms":N?,"try":"host:port"?}\n`.
pub(crate) fn bye_frame(bye: &Bye) -> Bytes {
    let try_len = bye.try_addr.as_ref().map_or(0, |a| a.len() + 16);
    let mut buf = Vec::with_capacity(64 + 40 + try_len);
    buf.extend_from_slice(b"{\"kind\":\"bye\",\"reason\":\"");
    buf.extend_from_slice(bye.reason.as_str().as_bytes());
    buf.push(b'"');
    if let Some(ms) = bye.retry_after_ms {
        buf.extend_from_slice(b",\"retry_after_ms\":");
        push_uint(&mut buf, ms);
    }
    if let Some(addr) = &bye.try_addr {
        buf.extend_from_slice(b",\"try\":");
        push_json(&mut buf, addr.as_str(), b"\"\"");
    }
    buf.extend_from_slice(b"}\n");
    Bytes::from(buf)
}

/// Appends `value` as JSON. Serializing these model types into a `Vec` cannot fail (no I/O, no
/// non-string map keys, no fallible `Serialize` impls); should that ever change, the frame stays
/// valid JSON with `fallback` in the value's place and the cause is logged.
fn push_json<T: Serialize + ?Sized>(buf: &mut Vec<u8>, value: &T, fallback: &[u8]) {
    let mark = buf.len();
    if let Err(e) = serde_json::to_writer(&mut *buf, value) {
        tracing::error!(error = %e, "v2 frame: value did not serialize");
        buf.truncate(mark);
        buf.extend_from_slice(fallback);
    }
}

fn push_int(buf: &mut Vec<u8>, n: i64) {
    if n < 0 {
        buf.push(b'-');
    }
    push_uint(buf, n.unsigned_abs());
}

/// Appends `n` in decimal without allocating.
fn push_uint(buf: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf.extend_from_slice(&digits[i..]);
}

/// About how many bytes the JSON of `d` takes, so the frame's buffer rarely grows.
fn data_len(d: &crate::model::EventData) -> usize {
    let players = d.home_players.iter().chain(&d.visit_players).flatten();
    let single = [&d.player, &d.player_out, &d.player_in];
    players.map(|p| p.name.len() + 32).sum::<usize>()
        + single.iter().filter_map(|p| p.as_ref()).map(|p| p.name.len() + 48).sum::<usize>()
        + d.text.as_ref().map_or(0, |t| t.len() + t.len() / 8 + 12)
        + 96
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        Card, EventData, EventKind, NewMatch, Period, Player, Side, TeamId, MAX_COMMENT_CHARS,
    };
    use crate::wire::ByeReason;
    use serde_json::{json, Value};

    /// Checks the framing (one line, one `\n` at the end) and returns the parsed object.
    fn parse(frame: &Bytes) -> Value {
        let s = std::str::from_utf8(frame).unwrap();
        let body = s.strip_suffix('\n').expect("frame ends in \\n");
        assert!(!body.contains('\n') && !body.contains('\r'), "line break inside: {s:?}");
        serde_json::from_str(body).unwrap()
    }

    fn keys(v: &Value) -> Vec<&str> {
        v.as_object().unwrap().keys().map(String::as_str).collect()
    }

    fn p(number: u32, name: &str) -> Player {
        Player { number, name: name.into() }
    }

    fn a_match() -> Match {
        let new: NewMatch = serde_json::from_str(
            r#"{"home":"elp","visit":"tig","start_date":"2011-09-10","home_name":"Estudiantes",
                "stadium":"Ciudad de La Plata"}"#,
        )
        .unwrap();
        let mut m = Match::new(new.into_info().unwrap());
        m.home = Side { on_pitch: vec![p(25, "Albil")], score: 1, ..Side::default() };
        m.visit = Side { on_pitch: vec![p(7, "Luna"), p(12, "Garcia")], ..Side::default() };
        m.period = Period::First;
        m.period_start = Some(1_315_921_728_000);
        m.seq = 12;
        m
    }

    #[test]
    fn goal_frame_has_the_exact_keys_and_bytes() {
        let ev = Event {
            seq: 5,
            ts: 1_316_094_531_000,
            kind: EventKind::Goal,
            data: EventData {
                player: Some(p(7, "Luna")),
                team: Some(TeamId::parse("tig").unwrap()),
                ..EventData::default()
            },
        };
        let frame = event_frame(&ev);
        assert_eq!(
            &frame[..],
            br#"{"seq":5,"ts":1316094531000,"kind":"goal","data":{"player":{"number":7,"name":"Luna"},"team":"tig"}}
"#
        );
        let v = parse(&frame);
        assert_eq!(keys(&v), ["seq", "ts", "kind", "data"]);
    }

    #[test]
    fn event_without_data_has_an_empty_object() {
        let ev = Event { seq: 1, ts: 0, kind: EventKind::Stop, data: EventData::default() };
        let v = parse(&event_frame(&ev));
        assert_eq!(v, json!({"seq": 1, "ts": 0, "kind": "stop", "data": {}}));
    }

    #[test]
    fn every_data_key_round_trips_and_text_stays_on_one_line() {
        let data = EventData {
            home_players: Some(vec![p(25, "Albil")]),
            visit_players: Some(vec![p(12, "Garcia")]),
            player: Some(p(3, "C")),
            player_out: Some(p(4, "D")),
            card: Some(Card::Red),
            team: Some(TeamId::parse("elp").unwrap()),
            player_in: Some(p(u32::MAX, "E")),
            player_team: Some(TeamId::parse("tig").unwrap()),
            text: Some("a \"quote\"\\\nnew line\r\u{2028}ü".repeat(MAX_COMMENT_CHARS / 20)),
        };
        let ev = Event { seq: u64::MAX, ts: -1, kind: EventKind::Comment, data: data.clone() };
        let v = parse(&event_frame(&ev));
        assert_eq!(v["seq"], json!(u64::MAX));
        assert_eq!(v["ts"], json!(-1));
        let back: EventData = serde_json::from_value(v["data"].clone()).unwrap();
        assert_eq!(back, data);
    }

    #[test]
    fn status_frame_carries_the_match_object() {
        let m = a_match();
        let v = parse(&status_frame(&m));
        assert_eq!(keys(&v), ["seq", "kind", "data"]);
        assert_eq!(v["seq"], json!(12));
        assert_eq!(v["kind"], json!("status"));
        assert_eq!(v["data"], serde_json::to_value(&m).unwrap());
        assert_eq!(v["data"]["home-players"], json!({"25": "Albil"}));
        assert_eq!(v["data"]["visit-players"], json!({"7": "Luna", "12": "Garcia"}));
        assert_eq!(v["data"]["home-score"], json!(1));
        assert_eq!(v["data"]["period"], json!("first"));
        assert_eq!(v["data"]["seq"], json!(12));
    }

    #[test]
    fn bye_without_options_has_kind_and_reason_only() {
        let frame = bye_frame(&Bye::new(ByeReason::MatchOver));
        assert_eq!(&frame[..], b"{\"kind\":\"bye\",\"reason\":\"match_over\"}\n");
        assert_eq!(keys(&parse(&frame)), ["kind", "reason"]);
    }

    #[test]
    fn bye_with_options_has_them_in_order() {
        let bye = Bye {
            reason: ByeReason::Full,
            retry_after_ms: Some(1500),
            try_addr: Some("127.0.0.1:9101".into()),
        };
        let frame = bye_frame(&bye);
        assert_eq!(
            &frame[..],
            &b"{\"kind\":\"bye\",\"reason\":\"full\",\"retry_after_ms\":1500,\"try\":\"127.0.0.1:9101\"}\n"[..]
        );
        let v = parse(&frame);
        assert_eq!(keys(&v), ["kind", "reason", "retry_after_ms", "try"]);

        let bye = Bye { try_addr: Some("odd\"\nhost:1".into()), ..Bye::new(ByeReason::TooSlow) };
        let v = parse(&bye_frame(&bye));
        assert_eq!(v, json!({"kind": "bye", "reason": "too_slow", "try": "odd\"\nhost:1"}));
    }

    #[test]
    fn numbers_print_in_decimal() {
        let mut buf = Vec::new();
        for n in [0, 9, 10, 1_316_094_531_000, i64::MIN, i64::MAX] {
            buf.clear();
            push_int(&mut buf, n);
            assert_eq!(buf, n.to_string().as_bytes());
        }
    }
}
