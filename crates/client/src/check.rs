//! The stream checkers: what a viewer that knows only the protocol can tell about its own
//! stream. Bytes go in as they arrive (in any pieces); frames come out as [`Seen`], and anything
//! the protocol forbids comes out as a [`Violation`]. No sockets, no clocks: the viewer feeds
//! them, the tests feed them by hand.
//!
//! v1 (SPEC 4): blocks are a header `YYYY-MM-DD HH:MM:SS: kind:\n`, tab-indented lines and a
//! lone `\r\n`; the first block is `status`; the match ends with a `stop` block and then the
//! server closes. v1 carries no `seq`, so order cannot be checked, and its header time has a
//! resolution of one second. v2: one JSON object per line; the first frame of a connection
//! without `FROM` is the `status` snapshot; event `seq`s follow each other without gap or
//! duplicate, also across a reconnect with `FROM`; the stream ends with `bye`.

use matchstream_proto::ByeReason;
use serde::Deserialize;

pub use crate::verdict::{Cause, Protocol, Violation};

/// Longest line a checker buffers: far above any real frame, so that a server that never sends
/// a line break cannot make a viewer grow without bound.
pub const MAX_LINE: usize = 1 << 20;

/// A frame the checker accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    /// A snapshot (v2: with the seq it stands at), or Redis's subscribe confirmation.
    Status { seq: Option<u64> },
    /// An event, counted as a delivery; `ts_ms` is when the server accepted it (Unix ms).
    Event { seq: Option<u64>, ts_ms: i64 },
}

/// Where a stream stands after some bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// More to come.
    Open,
    /// The end was seen and was good: v2 `bye match_over`, v1 `stop` (the server's close is
    /// still to come: see [`Checker::needs_close`]), Redis's end message.
    Ended,
}

/// One viewer's checker, whatever its protocol.
#[derive(Debug)]
pub enum Checker {
    V1(V1Checker),
    V2(V2Checker),
}

impl Checker {
    pub fn for_protocol(p: Protocol) -> Checker {
        match p {
            Protocol::V1 => Checker::V1(V1Checker::default()),
            // WebSocket and SSE carry exactly the v2 frames (SPEC 5), one per message or event.
            Protocol::V2 | Protocol::Ws | Protocol::Sse => Checker::V2(V2Checker::default()),
        }
    }

    /// A new connection starts; `from` is the seq it resumes after (v2 `FROM`).
    pub fn new_connection(&mut self, from: Option<u64>) {
        match self {
            Checker::V1(c) => c.partial.clear(),
            Checker::V2(c) => c.new_connection(from),
        }
    }

    /// Checks the next bytes, appending what they complete to `seen`.
    pub fn feed(&mut self, data: &[u8], seen: &mut Vec<Seen>) -> Result<State, Violation> {
        match self {
            Checker::V1(c) => c.feed(data, seen),
            Checker::V2(c) => c.feed(data, seen),
        }
    }

    /// Must the viewer wait for the server's close after the end (v1), or may it hang up?
    pub fn needs_close(&self) -> bool {
        matches!(self, Checker::V1(_))
    }

    /// The verdict when the server closes.
    pub fn at_eof(&self) -> Result<(), Violation> {
        match self {
            Checker::V1(c) => c.at_eof(),
            Checker::V2(c) => c.at_eof(),
        }
    }

    /// The seq to resume after (`FROM`), v2 only.
    pub fn resume_from(&self) -> Option<u64> {
        match self {
            Checker::V2(c) => c.next.map(|n| n.saturating_sub(1)),
            _ => None,
        }
    }

    /// Seconds of uncertainty in the event times it reports: v1 headers have one-second
    /// resolution.
    pub fn ts_resolution_ms(&self) -> u64 {
        match self {
            Checker::V1(_) => 1000,
            _ => 1,
        }
    }
}

/// Splits `data` into complete lines (with their `\n`) kept in `partial` across calls, handing
/// each to `line`. A line longer than [`MAX_LINE`] is a bad frame.
fn for_each_line(
    partial: &mut Vec<u8>,
    mut data: &[u8],
    mut line: impl FnMut(&[u8]) -> Result<(), Violation>,
) -> Result<(), Violation> {
    while let Some(pos) = data.iter().position(|&b| b == b'\n') {
        let (head, rest) = data.split_at(pos + 1);
        data = rest;
        if partial.is_empty() {
            line(head)?;
        } else {
            partial.extend_from_slice(head);
            let whole = std::mem::take(partial);
            line(&whole)?;
        }
    }
    partial.extend_from_slice(data);
    if partial.len() > MAX_LINE {
        return Err(Violation::new(Cause::BadFrame, format!("a line over {MAX_LINE} bytes")));
    }
    Ok(())
}

/// Quotes the start of a line for a failure message.
fn quoted(line: &[u8]) -> String {
    let shown = &line[..line.len().min(80)];
    format!("{:?}", String::from_utf8_lossy(shown))
}

/// v1 text blocks.
#[derive(Debug, Default)]
pub struct V1Checker {
    partial: Vec<u8>,
    /// The block being read: its kind and header time.
    block: Option<(String, i64)>,
    seen_status: bool,
    /// `period` of the status block, to tell a match that is over from an early close.
    period: Option<String>,
    stopped: bool,
}

impl V1Checker {
    fn feed(&mut self, data: &[u8], seen: &mut Vec<Seen>) -> Result<State, Violation> {
        let mut partial = std::mem::take(&mut self.partial);
        let result = for_each_line(&mut partial, data, |line| self.line(line, seen));
        self.partial = partial;
        result?;
        Ok(if self.stopped { State::Ended } else { State::Open })
    }

    fn line(&mut self, line: &[u8], seen: &mut Vec<Seen>) -> Result<(), Violation> {
        let bad = |why: &str| Violation::new(Cause::BadFrame, format!("{why}: {}", quoted(line)));
        if self.stopped {
            return Err(bad("data after the stop block"));
        }
        let Some((kind, ts)) = &self.block else {
            if let Some(reason) = line.strip_prefix(b"ERROR: ") {
                let reason = String::from_utf8_lossy(reason).trim_end().to_owned();
                return Err(Violation::new(Cause::Refused, format!("ERROR: {reason}")));
            }
            let (ts, kind) = parse_header(line).ok_or_else(|| bad("not a block header"))?;
            if !self.seen_status && kind != "status" {
                return Err(bad("the first block is not status"));
            }
            if self.seen_status && kind == "status" {
                return Err(bad("a second status block"));
            }
            self.block = Some((kind.to_owned(), ts));
            return Ok(());
        };
        if line == b"\r\n" {
            if kind == "status" {
                self.seen_status = true;
                seen.push(Seen::Status { seq: None });
            } else {
                self.stopped = kind == "stop";
                seen.push(Seen::Event { seq: None, ts_ms: *ts });
            }
            self.block = None;
            return Ok(());
        }
        if line.first() != Some(&b'\t') || line.contains(&b'\r') {
            return Err(bad("a detail line must start with a tab"));
        }
        if kind == "status" {
            if let Some(p) = line.strip_prefix(b"\tperiod: ") {
                self.period = Some(String::from_utf8_lossy(p).trim_end().to_owned());
            }
        }
        Ok(())
    }

    fn at_eof(&self) -> Result<(), Violation> {
        if self.stopped {
            return Ok(());
        }
        if self.block.is_some() || !self.partial.is_empty() {
            return Err(Violation::new(Cause::ClosedEarly, "closed in the middle of a block"));
        }
        // A match that is already over is shown as its status block and a close: nothing missed.
        if self.period.as_deref() == Some("ended") {
            return Ok(());
        }
        let detail = match &self.period {
            None => "closed before the status block".to_owned(),
            Some(p) => format!("closed without a stop block (status period {p})"),
        };
        Err(Violation::new(Cause::ClosedEarly, detail))
    }
}

/// Parses `YYYY-MM-DD HH:MM:SS: kind:\n` into the time (Unix ms, UTC) and the kind.
fn parse_header(line: &[u8]) -> Option<(i64, &str)> {
    let text = std::str::from_utf8(line).ok()?;
    let rest = text.strip_suffix(":\n")?;
    if rest.len() < 22 || !rest.is_char_boundary(19) || rest.as_bytes().get(19..21) != Some(b": ") {
        return None;
    }
    let (time, kind) = (&rest[..19], &rest[21..]);
    if kind.is_empty() || !kind.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
        return None;
    }
    let b = time.as_bytes();
    let shape_ok = b.iter().enumerate().all(|(i, c)| match i {
        4 | 7 => *c == b'-',
        10 => *c == b' ',
        13 | 16 => *c == b':',
        _ => c.is_ascii_digit(),
    });
    if !shape_ok {
        return None;
    }
    let num = |r: std::ops::Range<usize>| time[r].parse::<u32>().ok();
    let date = chrono::NaiveDate::from_ymd_opt(num(0..4)? as i32, num(5..7)?, num(8..10)?)?;
    let at = date.and_hms_opt(num(11..13)?, num(14..16)?, num(17..19)?)?;
    Some((at.and_utc().timestamp_millis(), kind))
}

/// v2 JSON lines.
#[derive(Debug)]
pub struct V2Checker {
    partial: Vec<u8>,
    /// The seq the next event must carry, once known (after a snapshot or from `FROM`).
    next: Option<u64>,
    /// No frame yet on this connection.
    first: bool,
    /// This connection resumed with `FROM` (so a snapshot is not required first).
    resumed: bool,
    done: bool,
}

/// The parts of a v2 frame a checker looks at; `data` is skipped.
#[derive(Deserialize)]
struct Head<'a> {
    #[serde(borrow)]
    kind: &'a str,
    seq: Option<u64>,
    ts: Option<i64>,
    #[serde(borrow)]
    reason: Option<&'a str>,
}

impl Default for V2Checker {
    fn default() -> Self {
        V2Checker { partial: Vec::new(), next: None, first: true, resumed: false, done: false }
    }
}

impl V2Checker {
    fn new_connection(&mut self, from: Option<u64>) {
        // A new connection is a new stream: the `bye` that ended the last one (`shutdown`, say)
        // does not end this one.
        self.partial.clear();
        self.done = false;
        self.first = true;
        self.resumed = from.is_some();
        if let Some(f) = from {
            self.next = Some(f + 1);
        }
    }

    fn feed(&mut self, data: &[u8], seen: &mut Vec<Seen>) -> Result<State, Violation> {
        let mut partial = std::mem::take(&mut self.partial);
        let result = for_each_line(&mut partial, data, |line| self.line(line, seen));
        self.partial = partial;
        result?;
        Ok(if self.done { State::Ended } else { State::Open })
    }

    fn line(&mut self, line: &[u8], seen: &mut Vec<Seen>) -> Result<(), Violation> {
        let bad = |why: &str| Violation::new(Cause::BadFrame, format!("{why}: {}", quoted(line)));
        if self.done {
            return Err(bad("a frame after bye"));
        }
        let head: Head = serde_json::from_slice(line).map_err(|_| bad("not a JSON frame"))?;
        let first = std::mem::replace(&mut self.first, false);
        match head.kind {
            "status" => {
                if !first {
                    return Err(bad("a status frame in mid-stream"));
                }
                let seq = head.seq.ok_or_else(|| bad("a status frame without seq"))?;
                // A snapshot instead of resuming may only move forward: one from before the
                // resume point would let the events after it pass twice.
                if let Some(next) = self.next.filter(|_| self.resumed) {
                    if seq + 1 < next {
                        return Err(Violation::new(
                            Cause::Duplicate,
                            format!("a snapshot at {seq} after resuming from {}", next - 1),
                        ));
                    }
                }
                self.next = Some(seq + 1);
                seen.push(Seen::Status { seq: Some(seq) });
            }
            "bye" => {
                self.done = true;
                let reason = head.reason.unwrap_or("");
                let cause = match reason.parse::<ByeReason>() {
                    Ok(ByeReason::MatchOver) => return Ok(()),
                    Ok(ByeReason::Cancelled) => Cause::Cancelled,
                    Ok(ByeReason::TooSlow) => Cause::TooSlow,
                    Ok(ByeReason::Full | ByeReason::NotFound | ByeReason::BadRequest) => {
                        Cause::Refused
                    }
                    Ok(ByeReason::Shutdown) | Err(_) => Cause::ClosedEarly,
                };
                return Err(Violation::new(cause, format!("bye {reason}")));
            }
            kind => {
                if first && !self.resumed {
                    return Err(bad("the first frame is not status"));
                }
                let (Some(seq), Some(ts)) = (head.seq, head.ts) else {
                    return Err(bad(&format!("a {kind} frame without seq or ts")));
                };
                let Some(next) = self.next else {
                    return Err(bad("an event before any snapshot"));
                };
                if seq < next {
                    let detail = format!("seq {seq} again (expected {next})");
                    return Err(Violation::new(Cause::Duplicate, detail));
                }
                if seq > next {
                    let detail = format!("seq {seq} where {next} was expected");
                    return Err(Violation::new(Cause::OutOfOrder, detail));
                }
                self.next = Some(seq + 1);
                seen.push(Seen::Event { seq: Some(seq), ts_ms: ts });
            }
        }
        Ok(())
    }

    fn at_eof(&self) -> Result<(), Violation> {
        if self.done {
            return Ok(());
        }
        Err(Violation::new(Cause::ClosedEarly, "closed without bye"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_have_distinct_names_and_io_errors_map_to_them() {
        let mut names: Vec<_> = Cause::ALL.iter().map(|c| c.as_str()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), Cause::ALL.len());
        let e = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(Cause::of_io(&e), Cause::Refused);
        let e = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert_eq!(Cause::of_io(&e), Cause::Reset);
        let e = std::io::Error::from(std::io::ErrorKind::AddrNotAvailable);
        assert_eq!(Cause::of_io(&e), Cause::Io);
        assert_eq!(serde_json::to_string(&Cause::ClosedEarly).unwrap(), "\"closed_early\"");
        assert_eq!("v1".parse::<Protocol>(), Ok(Protocol::V1));
        assert_eq!("tcp".parse::<Protocol>(), Ok(Protocol::V2));
        for p in Protocol::ALL {
            assert_eq!(p.as_str().parse::<Protocol>(), Ok(p));
        }
        assert!("v3".parse::<Protocol>().is_err());
    }

    /// Feeds `data` one byte at a time (the worst split) and returns what was seen.
    fn feed_bytewise(c: &mut Checker, data: &[u8]) -> (Vec<Seen>, Result<State, Violation>) {
        let mut seen = Vec::new();
        let mut state = Ok(State::Open);
        for b in data.chunks(1) {
            state = c.feed(b, &mut seen);
            if state.is_err() {
                break;
            }
        }
        (seen, state)
    }

    const STATUS: &[u8] = b"2011-09-13 13:48:48: status:\n\thome: <<\"elp\">>\n\thome_players:\n\t\t Albil (25) \n\tperiod: first\n\r\n";

    #[test]
    fn v1_blocks_in_pieces_then_stop_then_close_is_complete() {
        let mut c = Checker::for_protocol(Protocol::V1);
        let mut stream = STATUS.to_vec();
        stream.extend_from_slice(
            b"2011-09-13 13:48:51: goal:\n\tplayer: Luna (7) \n\tteam: <<\"tig\">>\n\r\n",
        );
        stream.extend_from_slice(b"2011-09-13 13:48:52: corner:\n\r\n");
        stream.extend_from_slice(b"2011-09-13 13:49:00: stop:\n\r\n");
        let (seen, state) = feed_bytewise(&mut c, &stream);
        assert_eq!(state, Ok(State::Ended));
        assert_eq!(seen.len(), 4);
        assert_eq!(seen[0], Seen::Status { seq: None });
        // 2011-09-13 13:48:51 UTC.
        assert_eq!(seen[1], Seen::Event { seq: None, ts_ms: 1_315_921_731_000 });
        assert!(c.needs_close());
        assert_eq!(c.at_eof(), Ok(()));
        assert_eq!(c.ts_resolution_ms(), 1000);
        // Anything after stop is a bad frame.
        let err = c.feed(b"2011-09-13 13:49:01: goal:\n", &mut Vec::new()).unwrap_err();
        assert_eq!(err.cause, Cause::BadFrame);
    }

    #[test]
    fn v1_framing_errors_are_bad_frames_and_early_closes_are_told_apart() {
        let cases: [(&[u8], Cause); 6] = [
            (b"2011-09-13 13:48:51: goal:\n\r\n", Cause::BadFrame), // not status first
            (b"2011-09-13 13:48:48 status:\n", Cause::BadFrame),    // header shape
            (b"2011-19-13 13:48:48: status:\n", Cause::BadFrame),   // no 19th month
            (b"2011-09-13 13:48:48: status:\nhome: x\n", Cause::BadFrame), // no tab
            (b"2011-09-13 13:48:48: status:\n\tx\r\n\r\n", Cause::BadFrame), // CR in a line
            (b"ERROR: unknown match x\n\r\n", Cause::Refused),
        ];
        for (bytes, cause) in cases {
            let mut c = Checker::for_protocol(Protocol::V1);
            let (_, state) = feed_bytewise(&mut c, bytes);
            assert_eq!(state.unwrap_err().cause, cause, "{:?}", String::from_utf8_lossy(bytes));
        }
        let mut twice = STATUS.to_vec();
        twice.extend_from_slice(STATUS);
        let (_, state) = feed_bytewise(&mut Checker::for_protocol(Protocol::V1), &twice);
        assert_eq!(state.unwrap_err().cause, Cause::BadFrame);

        // Closed after status of a live match, or inside a block: early. An ended match: fine.
        let mut c = Checker::for_protocol(Protocol::V1);
        feed_bytewise(&mut c, STATUS).1.unwrap();
        assert_eq!(c.at_eof().unwrap_err().cause, Cause::ClosedEarly);
        c.feed(b"2011-09-13 13:48:51: goal:\n", &mut Vec::new()).unwrap();
        assert_eq!(c.at_eof().unwrap_err().detail, "closed in the middle of a block");
        let mut c = Checker::for_protocol(Protocol::V1);
        let ended = String::from_utf8_lossy(STATUS).replace("period: first", "period: ended");
        feed_bytewise(&mut c, ended.as_bytes()).1.unwrap();
        assert_eq!(c.at_eof(), Ok(()));
    }

    fn v2_line(seq: u64) -> String {
        format!("{{\"seq\":{seq},\"ts\":1316094531000,\"kind\":\"comment\",\"data\":{{\"text\":\"a\\nb\"}}}}\n")
    }

    #[test]
    fn v2_accepts_a_gapless_stream_ending_in_bye_and_resumes_across_a_reconnect() {
        let mut c = Checker::for_protocol(Protocol::V2);
        c.new_connection(None);
        let mut s = "{\"seq\":3,\"kind\":\"status\",\"data\":{\"period\":\"first\"}}\n".to_owned();
        s += &v2_line(4);
        s += &v2_line(5);
        let (seen, state) = feed_bytewise(&mut c, s.as_bytes());
        assert_eq!(state, Ok(State::Open));
        assert_eq!(seen[0], Seen::Status { seq: Some(3) });
        assert_eq!(seen[2], Seen::Event { seq: Some(5), ts_ms: 1_316_094_531_000 });
        assert_eq!(c.resume_from(), Some(5));

        // The viewer drops and comes back with FROM:5: the next event must be 6.
        c.new_connection(Some(5));
        let s = v2_line(6) + "{\"kind\":\"bye\",\"reason\":\"match_over\"}\n";
        let (seen, state) = feed_bytewise(&mut c, s.as_bytes());
        assert_eq!(state, Ok(State::Ended));
        assert_eq!(seen, vec![Seen::Event { seq: Some(6), ts_ms: 1_316_094_531_000 }]);
        assert!(!c.needs_close());
        assert_eq!(c.at_eof(), Ok(()));

        // A resumed connection may get a snapshot instead (the server could not fill the gap).
        let mut c = Checker::for_protocol(Protocol::V2);
        c.new_connection(Some(2));
        let s = "{\"seq\":900,\"kind\":\"status\",\"data\":{}}\n".to_owned() + &v2_line(901);
        assert_eq!(feed_bytewise(&mut c, s.as_bytes()).1, Ok(State::Open));
    }

    #[test]
    fn v2_a_stream_ended_by_bye_shutdown_continues_on_the_next_connection() {
        let mut c = Checker::for_protocol(Protocol::V2);
        c.new_connection(None);
        let s = "{\"seq\":0,\"kind\":\"status\",\"data\":{}}\n".to_owned()
            + &v2_line(1)
            + "{\"kind\":\"bye\",\"reason\":\"shutdown\"}\n";
        let (_, state) = feed_bytewise(&mut c, s.as_bytes());
        assert_eq!(state.unwrap_err().cause, Cause::ClosedEarly);
        c.new_connection(c.resume_from());
        // Still open: the events it missed must come, in order.
        let (seen, state) = feed_bytewise(&mut c, v2_line(2).as_bytes());
        assert_eq!(state, Ok(State::Open));
        assert_eq!(seen, vec![Seen::Event { seq: Some(2), ts_ms: 1_316_094_531_000 }]);
        let (_, state) = feed_bytewise(&mut c, v2_line(4).as_bytes());
        assert_eq!(state.unwrap_err().cause, Cause::OutOfOrder);
    }

    #[test]
    fn v2_gaps_duplicates_and_bad_frames_are_caught() {
        let status = "{\"seq\":0,\"kind\":\"status\",\"data\":{}}\n";
        let run = |from: Option<u64>, text: String| {
            let mut c = Checker::for_protocol(Protocol::V2);
            c.new_connection(from);
            feed_bytewise(&mut c, text.as_bytes()).1
        };
        let gap = run(None, format!("{status}{}{}", v2_line(1), v2_line(3)));
        assert_eq!(gap.unwrap_err().cause, Cause::OutOfOrder);
        let dup = run(None, format!("{status}{}{}", v2_line(1), v2_line(1)));
        assert_eq!(dup.unwrap_err().cause, Cause::Duplicate);
        // Across a reconnect: FROM:4 then seq 4 again is a duplicate, 6 is a gap.
        assert_eq!(run(Some(4), v2_line(4)).unwrap_err().cause, Cause::Duplicate);
        assert_eq!(run(Some(4), v2_line(6)).unwrap_err().cause, Cause::OutOfOrder);
        assert_eq!(run(None, v2_line(1)).unwrap_err().cause, Cause::BadFrame);
        assert_eq!(run(None, "not json\n".into()).unwrap_err().cause, Cause::BadFrame);
        let mid = format!("{status}{status}");
        assert_eq!(run(None, mid).unwrap_err().cause, Cause::BadFrame);
        let after =
            format!("{status}{{\"kind\":\"bye\",\"reason\":\"match_over\"}}\n{}", v2_line(1));
        assert_eq!(run(None, after).unwrap_err().cause, Cause::BadFrame);
        let no_ts = format!("{status}{{\"seq\":1,\"kind\":\"goal\"}}\n");
        assert_eq!(run(None, no_ts).unwrap_err().cause, Cause::BadFrame);
        for (reason, cause) in [
            ("cancelled", Cause::Cancelled),
            ("too_slow", Cause::TooSlow),
            ("full", Cause::Refused),
            ("shutdown", Cause::ClosedEarly),
        ] {
            let text = format!("{{\"kind\":\"bye\",\"reason\":\"{reason}\"}}\n");
            assert_eq!(run(None, text).unwrap_err().cause, cause, "{reason}");
        }
        // Closed without bye.
        let mut c = Checker::for_protocol(Protocol::V2);
        c.new_connection(None);
        c.feed(status.as_bytes(), &mut Vec::new()).unwrap();
        assert_eq!(c.at_eof().unwrap_err().cause, Cause::ClosedEarly);
        // A line that never ends is bounded.
        let mut c = Checker::for_protocol(Protocol::V2);
        let err = c.feed(&vec![b'x'; MAX_LINE + 1], &mut Vec::new()).unwrap_err();
        assert_eq!(err.cause, Cause::BadFrame);
    }
}
