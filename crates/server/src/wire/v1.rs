//! The original's v1 text blocks (SPEC 4), byte-compatible: event blocks, the `status` block and
//! the `ERROR:` block. Each function builds one block in one pre-sized buffer; when and to whom
//! blocks are sent is the transport's business.
//!
//! A block is a header line `YYYY-MM-DD HH:MM:SS: <kind>:\n`, tab-indented detail lines and a
//! lone `\r\n`. The original printed values with Erlang's `io_lib:format`: team ids and texts as
//! binaries (`<<"tig">>`, `~p`), atoms and numbers bare, players as `~s (~p) ` (trailing space).

use bytes::Bytes;
use chrono::{DateTime, Datelike, Timelike, Utc};

use crate::model::{Event, EventData, Match, Millis, Player};

/// The line that ends every block.
const END: &[u8] = b"\r\n";

/// `YYYY-MM-DD HH:MM:SS: ` + `:\n` around the kind, plus the closing `\r\n`.
const FRAME_LEN: usize = 21 + 2 + END.len();

/// One event's block, encoded once and shared by every v1 viewer of the match.
pub(crate) fn event_block(ev: &Event) -> Bytes {
    let d = &ev.data;
    let mut buf = Vec::with_capacity(FRAME_LEN + ev.kind.as_str().len() + data_len(d));
    push_header(&mut buf, ev.ts, ev.kind.as_str());
    if let Some(players) = &d.home_players {
        push_lineup(&mut buf, b"home_players", players);
    }
    if let Some(players) = &d.visit_players {
        push_lineup(&mut buf, b"visit_players", players);
    }
    if let Some(p) = &d.player {
        push_player_line(&mut buf, b"player", p);
    }
    if let Some(p) = &d.player_out {
        push_player_line(&mut buf, b"player_out", p);
    }
    if let Some(card) = d.card {
        push_line(&mut buf, b"card", card.as_str().as_bytes());
    }
    if let Some(team) = &d.team {
        push_binary_line(&mut buf, b"team", team.as_str());
    }
    if let Some(p) = &d.player_in {
        push_player_line(&mut buf, b"player_in", p);
    }
    if let Some(team) = &d.player_team {
        push_binary_line(&mut buf, b"player_team", team.as_str());
    }
    if let Some(text) = &d.text {
        push_binary_line(&mut buf, b"text", text);
    }
    buf.extend_from_slice(END);
    Bytes::from(buf)
}

/// The `status` block a v1 viewer gets on connecting: teams, players on the pitch, scores and
/// period, with `now` (the time of sending) in the header.
pub(crate) fn status_block(m: &Match, now: Millis) -> Bytes {
    let (home, visit) = (m.info.home.id.as_str(), m.info.visit.id.as_str());
    let len = FRAME_LEN
        + "status".len()
        + lineup_len(b"home_players", &m.home.on_pitch)
        + lineup_len(b"visit_players", &m.visit.on_pitch)
        + home.len()
        + visit.len()
        // home:, home_score:, visit:, visit_score:, period: lines around their values.
        + 5 * 24;
    let mut buf = Vec::with_capacity(len);
    push_header(&mut buf, now, "status");
    push_binary_line(&mut buf, b"home", home);
    push_lineup(&mut buf, b"home_players", &m.home.on_pitch);
    push_number_line(&mut buf, b"home_score", m.home.score.into());
    push_binary_line(&mut buf, b"visit", visit);
    push_lineup(&mut buf, b"visit_players", &m.visit.on_pitch);
    push_number_line(&mut buf, b"visit_score", m.visit.score.into());
    push_line(&mut buf, b"period", m.period.as_str().as_bytes());
    buf.extend_from_slice(END);
    Bytes::from(buf)
}

/// The block sent before closing a v1 viewer: `ERROR: <reason>\n\r\n`. Line breaks in `reason`
/// are escaped so the block stays one line.
pub(crate) fn error_block(reason: &str) -> Bytes {
    let mut buf = Vec::with_capacity("ERROR: \n".len() + reason.len() + 8 + END.len());
    buf.extend_from_slice(b"ERROR: ");
    push_escaped(&mut buf, reason.as_bytes(), false);
    buf.push(b'\n');
    buf.extend_from_slice(END);
    Bytes::from(buf)
}

/// `YYYY-MM-DD HH:MM:SS: <kind>:\n`, the time in UTC truncated to the second.
fn push_header(buf: &mut Vec<u8>, ms: Millis, kind: &str) {
    // Only a timestamp hundreds of millennia away is out of chrono's range; the epoch is a
    // harmless stand-in for a clock that far off.
    let t = DateTime::<Utc>::from_timestamp(ms.div_euclid(1000), 0).unwrap_or_default();
    let year = t.year();
    if year < 0 {
        buf.push(b'-');
    }
    push_padded(buf, year.unsigned_abs().into(), 4);
    buf.push(b'-');
    push_padded(buf, t.month().into(), 2);
    buf.push(b'-');
    push_padded(buf, t.day().into(), 2);
    buf.push(b' ');
    push_padded(buf, t.hour().into(), 2);
    buf.push(b':');
    push_padded(buf, t.minute().into(), 2);
    buf.push(b':');
    push_padded(buf, t.second().into(), 2);
    buf.extend_from_slice(b": ");
    buf.extend_from_slice(kind.as_bytes());
    buf.extend_from_slice(b":\n");
}

/// `\t<key>:\n` then `\t\t <Name> (<Number>) \n` per player.
fn push_lineup(buf: &mut Vec<u8>, key: &[u8], players: &[Player]) {
    buf.push(b'\t');
    buf.extend_from_slice(key);
    buf.extend_from_slice(b":\n");
    for p in players {
        buf.extend_from_slice(b"\t\t ");
        push_player(buf, p);
        buf.push(b'\n');
    }
}

/// `\t<key>: <Name> (<Number>) \n`.
fn push_player_line(buf: &mut Vec<u8>, key: &[u8], p: &Player) {
    push_key(buf, key);
    push_player(buf, p);
    buf.push(b'\n');
}

/// `<Name> (<Number>) ` with the original's trailing space.
fn push_player(buf: &mut Vec<u8>, p: &Player) {
    // The original printed names raw (`~s`); only line breaks are escaped, so that a name can
    // never end a line or a block early.
    push_escaped(buf, p.name.as_bytes(), false);
    buf.extend_from_slice(b" (");
    push_padded(buf, p.number.into(), 1);
    buf.extend_from_slice(b") ");
}

/// `\t<key>: <<"<value, escaped>">>\n`: how the original printed binaries (team ids, texts).
fn push_binary_line(buf: &mut Vec<u8>, key: &[u8], value: &str) {
    push_key(buf, key);
    buf.extend_from_slice(b"<<\"");
    push_escaped(buf, value.as_bytes(), true);
    buf.extend_from_slice(b"\">>\n");
}

/// `\t<key>: <number>\n`.
fn push_number_line(buf: &mut Vec<u8>, key: &[u8], n: u64) {
    push_key(buf, key);
    push_padded(buf, n, 1);
    buf.push(b'\n');
}

/// `\t<key>: <value>\n` for an atom, printed bare.
fn push_line(buf: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    push_key(buf, key);
    buf.extend_from_slice(value);
    buf.push(b'\n');
}

fn push_key(buf: &mut Vec<u8>, key: &[u8]) {
    buf.push(b'\t');
    buf.extend_from_slice(key);
    buf.extend_from_slice(b": ");
}

/// Appends `s`, escaping newline, CR and tab as `\n`, `\r`, `\t` (so no value can break the
/// framing), and with `quoted` also `"` and `\` (as Erlang's `~p` did inside `<<"...">>`).
fn push_escaped(buf: &mut Vec<u8>, s: &[u8], quoted: bool) {
    let mut start = 0;
    for (i, &b) in s.iter().enumerate() {
        let escape: &[u8] = match b {
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            b'"' if quoted => b"\\\"",
            b'\\' if quoted => b"\\\\",
            _ => continue,
        };
        buf.extend_from_slice(&s[start..i]);
        buf.extend_from_slice(escape);
        start = i + 1;
    }
    buf.extend_from_slice(&s[start..]);
}

/// Appends `n` in decimal, zero-padded to at least `width` digits, without allocating.
fn push_padded(buf: &mut Vec<u8>, mut n: u64, width: usize) {
    let mut digits = [b'0'; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let start = i.min(digits.len().saturating_sub(width));
    buf.extend_from_slice(&digits[start..]);
}

/// About how many bytes the detail lines of `d` take; exact for plain values, a little short
/// only when a text needs many escapes (the buffer then grows once).
fn data_len(d: &EventData) -> usize {
    let player = |key: &[u8], p: &Option<Player>| p.as_ref().map_or(0, |p| player_line_len(key, p));
    let binary = |key: &[u8], v: Option<&str>| v.map_or(0, |v| binary_line_len(key, v));
    d.home_players.as_ref().map_or(0, |ps| lineup_len(b"home_players", ps))
        + d.visit_players.as_ref().map_or(0, |ps| lineup_len(b"visit_players", ps))
        + player(b"player", &d.player)
        + player(b"player_out", &d.player_out)
        + d.card.map_or(0, |c| "\tcard: \n".len() + c.as_str().len())
        + binary(b"team", d.team.as_ref().map(|t| t.as_str()))
        + player(b"player_in", &d.player_in)
        + binary(b"player_team", d.player_team.as_ref().map(|t| t.as_str()))
        + binary(b"text", d.text.as_deref())
}

/// `\t<key>:\n` + `\t\t <Name> (<Number>) \n` each; 10 digits cover any u32.
fn lineup_len(key: &[u8], players: &[Player]) -> usize {
    key.len() + 3 + players.iter().map(|p| p.name.len() + 8 + 10).sum::<usize>()
}

/// `\t<key>: <Name> (<Number>) \n`.
fn player_line_len(key: &[u8], p: &Player) -> usize {
    key.len() + 3 + p.name.len() + 5 + 10
}

/// `\t<key>: <<"<value>">>\n`, with room for a few escapes.
fn binary_line_len(key: &[u8], value: &str) -> usize {
    key.len() + 3 + 6 + value.len() + value.len() / 16 + 4
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Card, EventKind, MatchInfo, NewMatch, Period, Side, TeamId};

    /// 2011-09-13 13:48:48 UTC, the first line of the original's transcript.
    const T0: Millis = 1_315_921_728_000;

    fn p(number: u32, name: &str) -> Player {
        Player { number, name: name.into() }
    }

    fn team(id: &str) -> Option<TeamId> {
        Some(TeamId::parse(id).unwrap())
    }

    fn ev(ts: Millis, kind: EventKind, data: EventData) -> Event {
        Event { seq: 1, ts, kind, data }
    }

    fn text(b: &Bytes) -> &str {
        std::str::from_utf8(b).unwrap()
    }

    fn info() -> MatchInfo {
        let new: NewMatch =
            serde_json::from_str(r#"{"home":"elp","visit":"tig","start_date":"2011-09-10"}"#)
                .unwrap();
        new.into_info().unwrap()
    }

    #[test]
    fn status_block_matches_the_original() {
        let mut m = Match::new(info());
        m.home = Side { on_pitch: vec![p(25, "Albil"), p(14, "Mercado")], ..Side::default() };
        m.visit = Side { on_pitch: vec![p(12, "Garcia")], score: 3, ..Side::default() };
        m.period = Period::First;
        assert_eq!(
            text(&status_block(&m, T0 + 999)),
            "2011-09-13 13:48:48: status:\n\thome: <<\"elp\">>\n\thome_players:\n\
             \t\t Albil (25) \n\t\t Mercado (14) \n\thome_score: 0\n\tvisit: <<\"tig\">>\n\
             \tvisit_players:\n\t\t Garcia (12) \n\tvisit_score: 3\n\tperiod: first\n\r\n"
        );
    }

    #[test]
    fn status_block_of_a_match_not_started_has_empty_lineups() {
        let m = Match::new(info());
        assert_eq!(
            text(&status_block(&m, 0)),
            "1970-01-01 00:00:00: status:\n\thome: <<\"elp\">>\n\thome_players:\n\
             \thome_score: 0\n\tvisit: <<\"tig\">>\n\tvisit_players:\n\tvisit_score: 0\n\
             \tperiod: not_started\n\r\n"
        );
    }

    #[test]
    fn goal_card_and_substitution_match_the_transcript() {
        let goal =
            EventData { player: Some(p(7, "Luna")), team: team("tig"), ..Default::default() };
        assert_eq!(
            text(&event_block(&ev(T0 + 3_000, EventKind::Goal, goal))),
            "2011-09-13 13:48:51: goal:\n\tplayer: Luna (7) \n\tteam: <<\"tig\">>\n\r\n"
        );
        let card = EventData {
            player: Some(p(25, "Albil")),
            card: Some(Card::Red),
            team: team("elp"),
            ..Default::default()
        };
        assert_eq!(
            text(&event_block(&ev(T0 + 16_000, EventKind::Card, card))),
            "2011-09-13 13:49:04: card:\n\tplayer: Albil (25) \n\tcard: red\n\tteam: <<\"elp\">>\n\r\n"
        );
        let sub = EventData {
            player_out: Some(p(18, "Fernandez")),
            team: team("elp"),
            player_in: Some(p(21, "Silva")),
            ..Default::default()
        };
        assert_eq!(
            text(&event_block(&ev(T0 + 17_500, EventKind::Substitution, sub))),
            "2011-09-13 13:49:05: substitution:\n\tplayer_out: Fernandez (18) \n\
             \tteam: <<\"elp\">>\n\tplayer_in: Silva (21) \n\r\n"
        );
    }

    #[test]
    fn own_goal_prints_player_team_after_team() {
        let d = EventData {
            player: Some(p(2, "Desabato")),
            team: team("tig"),
            player_team: team("elp"),
            ..Default::default()
        };
        assert_eq!(
            text(&event_block(&ev(T0, EventKind::Goal, d))),
            "2011-09-13 13:48:48: goal:\n\tplayer: Desabato (2) \n\tteam: <<\"tig\">>\n\
             \tplayer_team: <<\"elp\">>\n\r\n"
        );
    }

    #[test]
    fn comment_text_is_escaped_and_cannot_break_the_framing() {
        let d = EventData {
            text: Some("He said \"wow\" \\o/\nnext\r\n\tline".into()),
            ..Default::default()
        };
        let block = event_block(&ev(T0, EventKind::Comment, d));
        assert_eq!(
            text(&block),
            "2011-09-13 13:48:48: comment:\n\ttext: <<\"He said \\\"wow\\\" \\\\o/\\nnext\\r\\n\\tline\">>\n\r\n"
        );
        assert_eq!(block.iter().filter(|&&b| b == b'\n').count(), 3);
    }

    #[test]
    fn names_cannot_break_the_framing_but_print_raw_otherwise() {
        let d = EventData { player: Some(p(9, "O\"Neil\\\r\n")), ..Default::default() };
        assert_eq!(
            text(&event_block(&ev(T0, EventKind::Shot, d))),
            "2011-09-13 13:48:48: shot:\n\tplayer: O\"Neil\\\\r\\n (9) \n\r\n"
        );
    }

    #[test]
    fn event_without_data_is_header_and_end() {
        assert_eq!(
            text(&event_block(&ev(T0, EventKind::Stop, EventData::default()))),
            "2011-09-13 13:48:48: stop:\n\r\n"
        );
        assert_eq!(
            text(&event_block(&ev(T0, EventKind::HalftimeStart, EventData::default()))),
            "2011-09-13 13:48:48: halftime_start:\n\r\n"
        );
    }

    #[test]
    fn start_lists_both_lineups() {
        let d = EventData {
            home_players: Some(vec![p(25, "Albil"), p(2, "Desabato")]),
            visit_players: Some(vec![p(12, "Garcia")]),
            ..Default::default()
        };
        assert_eq!(
            text(&event_block(&ev(T0, EventKind::Start, d))),
            "2011-09-13 13:48:48: start:\n\thome_players:\n\t\t Albil (25) \n\t\t Desabato (2) \n\
             \tvisit_players:\n\t\t Garcia (12) \n\r\n"
        );
    }

    #[test]
    fn every_key_comes_in_spec_order_and_the_estimate_holds() {
        let d = EventData {
            home_players: Some(vec![p(1, "A")]),
            visit_players: Some(vec![p(2, "B")]),
            player: Some(p(3, "C")),
            player_out: Some(p(4, "D")),
            card: Some(Card::Yellow),
            team: team("elp"),
            player_in: Some(p(u32::MAX, "E")),
            player_team: team("tig"),
            text: Some("t".into()),
        };
        let block = event_block(&ev(T0, EventKind::Comment, d.clone()));
        let keys: Vec<&str> = text(&block)
            .lines()
            .filter_map(|l| l.strip_prefix('\t'))
            .filter(|l| !l.starts_with('\t'))
            .filter_map(|l| l.split(':').next())
            .collect();
        assert_eq!(
            keys,
            [
                "home_players",
                "visit_players",
                "player",
                "player_out",
                "card",
                "team",
                "player_in",
                "player_team",
                "text"
            ]
        );
        assert!(block.len() <= FRAME_LEN + "comment".len() + data_len(&d));
    }

    #[test]
    fn header_time_is_utc_truncated_to_the_second() {
        let b = event_block(&ev(T0 - 1, EventKind::Corner, EventData::default()));
        assert!(text(&b).starts_with("2011-09-13 13:48:47: corner:\n"), "{}", text(&b));
        let b = event_block(&ev(-1, EventKind::Corner, EventData::default()));
        assert!(text(&b).starts_with("1969-12-31 23:59:59: "), "{}", text(&b));
    }

    #[test]
    fn error_block_is_one_line_then_end() {
        assert_eq!(text(&error_block("unknown match m")), "ERROR: unknown match m\n\r\n");
        assert_eq!(text(&error_block("a\r\nb")), "ERROR: a\\r\\nb\n\r\n");
    }

    #[test]
    fn padded_numbers() {
        let mut buf = Vec::new();
        push_padded(&mut buf, 7, 2);
        push_padded(&mut buf, 2011, 4);
        push_padded(&mut buf, 0, 1);
        push_padded(&mut buf, u64::MAX, 4);
        assert_eq!(
            buf,
            b"0720110".iter().chain(u64::MAX.to_string().as_bytes()).copied().collect::<Vec<_>>()
        );
    }
}
