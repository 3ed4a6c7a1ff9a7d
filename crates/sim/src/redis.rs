//! Redis pub/sub for the side-by-side comparison: the few bits of RESP that SUBSCRIBE and
//! PUBLISH need, the subscriber's stream checker (fed by the same viewer engine as MatchStream
//! viewers), and the publisher of `matchstream sim redis-publish`.
//!
//! A message's payload is `<seq> <ts_ms> ` padded with `x` to the requested size, so that the
//! bytes on the wire match a MatchStream comment frame and the receiver can measure delivery
//! latency from `ts_ms` like from a v2 `ts`. The publisher ends with `end <count> <ts_ms> `: a
//! subscriber is complete when it saw every message from 1 to `count`, in order, once.

use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{unix_ms, Cause, PublishMode, SimError, Violation};
use matchstream_client::check::{Seen, State, MAX_LINE};

/// Longest bulk string or array accepted: well above any message of a benchmark.
const MAX_ITEMS: usize = 1 << 20;

/// A RESP2 value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resp {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Resp>>),
}

/// A command as RESP: an array of bulk strings.
pub fn command(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Parses one value at the front of `buf`: `Ok(None)` when more bytes are needed, else the value
/// and how many bytes it took.
pub fn parse(buf: &[u8]) -> Result<Option<(Resp, usize)>, String> {
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        if buf.len() > MAX_LINE {
            return Err("a RESP line without end".into());
        }
        return Ok(None);
    };
    if end == 0 {
        return Err("a RESP line without a type".into());
    }
    let line = &buf[1..end];
    let text = || String::from_utf8_lossy(line).into_owned();
    let number = || -> Result<i64, String> {
        std::str::from_utf8(line)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad RESP number {:?}", text()))
    };
    let after = end + 2;
    match buf.first() {
        Some(b'+') => Ok(Some((Resp::Simple(text()), after))),
        Some(b'-') => Ok(Some((Resp::Error(text()), after))),
        Some(b':') => Ok(Some((Resp::Int(number()?), after))),
        Some(b'$') => {
            let n = number()?;
            if n < 0 {
                return Ok(Some((Resp::Bulk(None), after)));
            }
            let n = n as usize;
            if n > MAX_ITEMS * 16 {
                return Err(format!("a bulk string of {n} bytes"));
            }
            if buf.len() < after + n + 2 {
                return Ok(None);
            }
            if &buf[after + n..after + n + 2] != b"\r\n" {
                return Err("a bulk string without its CRLF".into());
            }
            Ok(Some((Resp::Bulk(Some(buf[after..after + n].to_vec())), after + n + 2)))
        }
        Some(b'*') => {
            let n = number()?;
            if n < 0 {
                return Ok(Some((Resp::Array(None), after)));
            }
            if n as usize > MAX_ITEMS {
                return Err(format!("an array of {n} items"));
            }
            // Bounded: the count is the peer's word, the items may never come.
            let mut items = Vec::with_capacity((n as usize).min(64));
            let mut at = after;
            for _ in 0..n {
                match parse(&buf[at..])? {
                    Some((v, used)) => {
                        items.push(v);
                        at += used;
                    }
                    None => return Ok(None),
                }
            }
            Ok(Some((Resp::Array(Some(items)), at)))
        }
        _ => Err(format!("not RESP: {:?}", String::from_utf8_lossy(&buf[..end.min(40)]))),
    }
}

/// The subscriber's view of its stream: the subscribe confirmation first, then messages with
/// gapless sequence numbers, then the end message.
#[derive(Debug, Default)]
pub struct RedisChecker {
    buf: Vec<u8>,
    subscribed: bool,
    next: Option<u64>,
    received: u64,
    done: bool,
}

impl RedisChecker {
    pub(crate) fn new_connection(&mut self) {
        self.buf.clear();
        self.subscribed = false;
    }

    pub(crate) fn feed(&mut self, data: &[u8], seen: &mut Vec<Seen>) -> Result<State, Violation> {
        self.buf.extend_from_slice(data);
        let mut at = 0;
        let result = loop {
            let parsed = parse(&self.buf[at..]).map_err(|e| Violation::new(Cause::BadFrame, e));
            match parsed {
                Ok(Some((value, used))) => {
                    at += used;
                    if let Err(v) = self.value(value, seen) {
                        break Err(v);
                    }
                }
                Ok(None) => break Ok(()),
                Err(v) => break Err(v),
            }
        };
        self.buf.drain(..at);
        result?;
        Ok(if self.done { State::Ended } else { State::Open })
    }

    fn value(&mut self, value: Resp, seen: &mut Vec<Seen>) -> Result<(), Violation> {
        let bad = |why: String| Violation::new(Cause::BadFrame, why);
        if self.done {
            return Err(bad("a message after the end".into()));
        }
        let items = match value {
            Resp::Error(e) => return Err(Violation::new(Cause::Refused, e)),
            Resp::Array(Some(items)) if items.len() == 3 => items,
            other => return Err(bad(format!("unexpected {other:?}"))),
        };
        let kind = match &items[0] {
            Resp::Bulk(Some(k)) => k.as_slice(),
            _ => return Err(bad("a push without its kind".into())),
        };
        match (kind, &items[2]) {
            (b"subscribe", _) => {
                self.subscribed = true;
                seen.push(Seen::Status { seq: None });
                Ok(())
            }
            (b"message", Resp::Bulk(Some(payload))) if self.subscribed => {
                self.message(payload, seen)
            }
            _ => Err(bad(format!("unexpected push {:?}", String::from_utf8_lossy(kind)))),
        }
    }

    fn message(&mut self, payload: &[u8], seen: &mut Vec<Seen>) -> Result<(), Violation> {
        let text = String::from_utf8_lossy(&payload[..payload.len().min(64)]).into_owned();
        let mut words = text.split(' ');
        let bad = || Violation::new(Cause::BadFrame, format!("not a sim message: {text:?}"));
        let first = words.next().ok_or_else(bad)?;
        if first == "end" {
            let count: u64 = words.next().and_then(|w| w.parse().ok()).ok_or_else(bad)?;
            self.done = true;
            let first_seq = self.next.map_or(1, |n| n - self.received);
            if self.received != count || first_seq != 1 {
                let detail = format!("received {} of {count} messages", self.received);
                return Err(Violation::new(Cause::Incomplete, detail));
            }
            return Ok(());
        }
        let seq: u64 = first.parse().map_err(|_| bad())?;
        let ts: i64 = words.next().and_then(|w| w.parse().ok()).ok_or_else(bad)?;
        if let Some(next) = self.next {
            if seq < next {
                return Err(Violation::new(Cause::Duplicate, format!("message {seq} again")));
            }
            if seq > next {
                let detail = format!("message {seq} where {next} was expected");
                return Err(Violation::new(Cause::OutOfOrder, detail));
            }
        }
        self.next = Some(seq + 1);
        self.received += 1;
        seen.push(Seen::Event { seq: Some(seq), ts_ms: ts });
        Ok(())
    }

    pub(crate) fn at_eof(&self) -> Result<(), Violation> {
        if self.done {
            return Ok(());
        }
        Err(Violation::new(Cause::ClosedEarly, "closed before the end message"))
    }
}

/// `matchstream sim redis-publish`: what to publish where.
#[derive(Clone, Debug)]
pub struct RedisPublish {
    /// `host:port` of redis-server.
    pub addr: String,
    pub channel: String,
    pub mode: PublishMode,
    /// Bytes of each message's payload (at least what the seq and time take).
    pub payload: usize,
    /// Send the final `end` message (subscribers that get it are complete and hang up).
    pub end: bool,
}

/// What a Redis publisher did.
#[derive(Clone, Debug, Serialize)]
pub struct RedisPublishReport {
    pub channel: String,
    pub published: u64,
    /// Subscribers that received each message, as redis-server counted them (least and most).
    pub receivers_min: i64,
    pub receivers_max: i64,
    pub elapsed_ms: u64,
    pub rate_per_s: f64,
}

impl RedisPublishReport {
    /// The report for a person.
    pub fn text(&self) -> String {
        format!(
            "published {} messages to {} in {} ms ({:.1}/s), {}..{} subscribers each\n",
            self.published,
            self.channel,
            self.elapsed_ms,
            self.rate_per_s,
            self.receivers_min,
            self.receivers_max
        )
    }
}

/// `host:port` from `host:port` or `redis://host:port[/]` (the form `serve --redis` takes).
pub fn host_port(addr: &str) -> String {
    addr.trim_start_matches("redis://").trim_end_matches('/').to_owned()
}

/// The payload of message `seq`, padded to `size` bytes.
pub fn message(seq: u64, ts_ms: i64, size: usize) -> Vec<u8> {
    pad(format!("{seq} {ts_ms} "), size)
}

fn pad(head: String, size: usize) -> Vec<u8> {
    let mut out = head.into_bytes();
    if out.len() < size {
        out.resize(size, b'x');
    }
    out
}

/// A connection to redis-server that sends commands and reads their replies.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    async fn reply(&mut self) -> Result<Resp, SimError> {
        loop {
            if let Some((v, used)) = parse(&self.buf).map_err(SimError::Server)? {
                self.buf.drain(..used);
                return Ok(v);
            }
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(SimError::Server("redis-server closed the connection".into()));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Reads one PUBLISH reply: how many subscribers got the message.
    async fn receivers(&mut self) -> Result<i64, SimError> {
        match self.reply().await? {
            Resp::Int(n) => Ok(n),
            other => Err(SimError::Server(format!("PUBLISH answered {other:?}"))),
        }
    }
}

/// Publishes the messages and the end message; returns what it did.
pub async fn publish(p: &RedisPublish) -> Result<RedisPublishReport, SimError> {
    p.mode.validate()?;
    let stream = TcpStream::connect(&p.addr)
        .await
        .map_err(|e| SimError::Server(format!("cannot reach redis-server at {}: {e}", p.addr)))?;
    stream.set_nodelay(true)?;
    let mut conn = Conn { stream, buf: Vec::new() };
    let ch = p.channel.as_bytes();
    let started = Instant::now();
    let (mut min, mut max) = (i64::MAX, i64::MIN);
    let mut note = |n: i64| {
        min = min.min(n);
        max = max.max(n);
    };
    let count = match p.mode {
        PublishMode::Burst { n } => {
            let ts = unix_ms();
            let mut out = Vec::new();
            for seq in 1..=u64::from(n) {
                out.extend(command(&[b"PUBLISH", ch, &message(seq, ts, p.payload)]));
            }
            conn.stream.write_all(&out).await?;
            for _ in 0..n {
                note(conn.receivers().await?);
            }
            u64::from(n)
        }
        PublishMode::Rate { per_s, secs } => {
            let count = (per_s * secs).round() as u64;
            let start = tokio::time::Instant::now();
            for seq in 1..=count {
                let due = start + Duration::from_secs_f64((seq - 1) as f64 / per_s);
                tokio::time::sleep_until(due).await;
                let cmd = command(&[b"PUBLISH", ch, &message(seq, unix_ms(), p.payload)]);
                conn.stream.write_all(&cmd).await?;
                note(conn.receivers().await?);
            }
            count
        }
    };
    let elapsed = started.elapsed();
    if p.end {
        let end = pad(format!("end {count} {} ", unix_ms()), p.payload);
        conn.stream.write_all(&command(&[b"PUBLISH", ch, &end])).await?;
        conn.receivers().await?;
    }
    Ok(RedisPublishReport {
        channel: p.channel.clone(),
        published: count,
        receivers_min: if count == 0 { 0 } else { min },
        receivers_max: if count == 0 { 0 } else { max },
        elapsed_ms: elapsed.as_millis() as u64,
        rate_per_s: count as f64 / elapsed.as_secs_f64().max(1e-3),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(kind: &str, payload: &[u8]) -> Vec<u8> {
        let mut out = format!("*3\r\n${}\r\n{kind}\r\n$2\r\nch\r\n", kind.len()).into_bytes();
        out.extend_from_slice(format!("${}\r\n", payload.len()).as_bytes());
        out.extend_from_slice(payload);
        out.extend_from_slice(b"\r\n");
        out
    }

    const SUBSCRIBED: &[u8] = b"*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n";

    #[test]
    fn resp_round_trips_commands_and_waits_for_whole_values() {
        let cmd = command(&[b"PUBLISH", b"ch", b"hi"]);
        assert_eq!(cmd, b"*3\r\n$7\r\nPUBLISH\r\n$2\r\nch\r\n$2\r\nhi\r\n");
        let (v, used) = parse(&cmd).unwrap().unwrap();
        assert_eq!(used, cmd.len());
        let bulk = |s: &[u8]| Resp::Bulk(Some(s.to_vec()));
        assert_eq!(v, Resp::Array(Some(vec![bulk(b"PUBLISH"), bulk(b"ch"), bulk(b"hi")])));
        for cut in 0..cmd.len() {
            assert_eq!(parse(&cmd[..cut]).unwrap(), None, "cut at {cut}");
        }
        assert_eq!(parse(b":12\r\n").unwrap(), Some((Resp::Int(12), 5)));
        assert_eq!(parse(b"-ERR no\r\n").unwrap().unwrap().0, Resp::Error("ERR no".into()));
        assert!(parse(b"?what\r\n").is_err());
    }

    #[test]
    fn a_subscriber_that_gets_every_message_and_the_end_is_complete() {
        let mut c = RedisChecker::default();
        let mut bytes = SUBSCRIBED.to_vec();
        for seq in 1..=3 {
            bytes.extend(push("message", &message(seq, 1_000 + seq as i64, 200)));
        }
        bytes.extend(push("message", b"end 3 2000 xxxx"));
        let mut seen = Vec::new();
        let mut state = State::Open;
        for piece in bytes.chunks(7) {
            state = c.feed(piece, &mut seen).unwrap();
        }
        assert_eq!(state, State::Ended);
        assert_eq!(seen[0], Seen::Status { seq: None });
        assert_eq!(seen[3], Seen::Event { seq: Some(3), ts_ms: 1_003 });
        assert_eq!(c.at_eof(), Ok(()));
        assert_eq!(message(7, 5, 200).len(), 200);
        assert_eq!(host_port("redis://127.0.0.1:6379/"), "127.0.0.1:6379");
        assert_eq!(host_port("127.0.0.1:6379"), "127.0.0.1:6379");
    }

    #[test]
    fn missing_repeated_or_unexpected_messages_fail() {
        let run = |msgs: &[&[u8]]| {
            let mut c = RedisChecker::default();
            let mut bytes = SUBSCRIBED.to_vec();
            for m in msgs {
                bytes.extend(push("message", m));
            }
            c.feed(&bytes, &mut Vec::new()).map_err(|v| v.cause)
        };
        assert_eq!(run(&[b"1 5 x", b"3 5 x"]), Err(Cause::OutOfOrder));
        assert_eq!(run(&[b"1 5 x", b"1 5 x"]), Err(Cause::Duplicate));
        assert_eq!(run(&[b"1 5 x", b"end 2 9"]), Err(Cause::Incomplete));
        // Joined late: saw 2 and 3 of 3.
        assert_eq!(run(&[b"2 5 x", b"3 5 x", b"end 3 9"]), Err(Cause::Incomplete));
        assert_eq!(run(&[b"hello"]), Err(Cause::BadFrame));
        let mut c = RedisChecker::default();
        assert_eq!(
            c.feed(&push("message", b"1 5 x"), &mut Vec::new()).unwrap_err().cause,
            Cause::BadFrame
        );
        assert_eq!(c.at_eof().unwrap_err().cause, Cause::ClosedEarly);
        let mut c = RedisChecker::default();
        assert_eq!(c.feed(b"-ERR wrong\r\n", &mut Vec::new()).unwrap_err().cause, Cause::Refused);
    }
}
