//! Redis pub/sub for the side-by-side comparison, spoken through the `redis` crate: the
//! subscriber's stream checker (the crate's RESP decoder over the socket the viewer engine dialled
//! itself, fed by the same engine as MatchStream viewers), and the publisher of
//! `matchstream sim redis-publish` (a multiplexed connection, PUBLISH on schedule).
//!
//! A message's payload is `<seq> <ts_ms> ` padded with `x` to the requested size, so that the
//! bytes on the wire match a MatchStream comment frame and the receiver can measure delivery
//! latency from `ts_ms` like from a v2 `ts`. The publisher ends with `end <count> <ts_ms> `: a
//! subscriber is complete when it saw every message from 1 to `count`, in order, once.
//!
//! Why not `redis::aio::PubSub` for subscribers: it takes a stream we dial ourselves, but gives
//! each subscriber a driver task, an unbounded queue of messages and two setup commands
//! (`CLIENT SETINFO`); the simulator shares the box with the server, so a subscriber must cost it
//! no more than a MatchStream viewer does: one task, one socket, one checker.

use std::time::Duration;

use bytes::BytesMut;
use redis::{AsyncConnectionConfig, Value};
use serde::Serialize;
use tokio_util::codec::Decoder;

use super::pace::{self, Request};
use super::report::{Hist, Percentiles};
use super::{unix_ms, Cause, PublishMode, SimError, Violation};
use matchstream_client::check::{Seen, State};

/// Longest RESP value a subscriber waits for: well above any message of a benchmark, and a
/// bound on what a broken server can make it buffer.
const MAX_VALUE: usize = 1 << 20;
/// The publisher's time to connect, and for each answer (the crate's default, 500 ms, is less
/// than a busy redis-server at 18,900 subscribers takes).
const PUBLISHER_TIMEOUT: Duration = Duration::from_secs(30);

/// The command a subscriber sends, as RESP.
pub fn subscribe_command(channel: &str) -> Vec<u8> {
    redis::cmd("SUBSCRIBE").arg(channel).get_packed_command()
}

/// The subscriber's view of its stream: the subscribe confirmation first, then messages with
/// gapless sequence numbers, then the end message.
///
/// It decodes with `redis::ValueCodec`, the decoder redis-rs runs on each of its own async
/// connections, which it exports `#[doc(hidden)]` ("harness-only"), and not with the public
/// `redis::Parser`, because the simulator shares the 2 cores with the server it measures: a
/// delivery must not cost the simulator more for Redis than for MatchStream. `Parser` zero-fills
/// up to 8 KiB of its own buffer before every read it makes (two per chunk), per subscriber;
/// with 2,000 subscribers at 20 messages/s the simulator spent 11.3 to 11.9 µs per delivery with
/// it, 9.7 to 10.9 with `ValueCodec`, and 8.0 to 8.8 per MatchStream v2 delivery. Should a
/// redis release drop `ValueCodec`, `Parser` with a reader that says "would block" at the end of
/// each chunk is the replacement (it keeps a partial value across reads).
#[derive(Default)]
pub struct RedisChecker {
    codec: redis::ValueCodec,
    /// Received bytes not decoded yet: at most a value that is not whole.
    buf: BytesMut,
    subscribed: bool,
    next: Option<u64>,
    received: u64,
    done: bool,
}

impl std::fmt::Debug for RedisChecker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisChecker")
            .field("subscribed", &self.subscribed)
            .field("next", &self.next)
            .field("received", &self.received)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl RedisChecker {
    pub(crate) fn new_connection(&mut self) {
        self.codec = redis::ValueCodec::default();
        self.buf.clear();
        self.subscribed = false;
    }

    pub(crate) fn feed(&mut self, data: &[u8], seen: &mut Vec<Seen>) -> Result<State, Violation> {
        self.buf.extend_from_slice(data);
        loop {
            match self.codec.decode(&mut self.buf) {
                Ok(Some(value)) => self.value(value, seen)?,
                // The rest of a value comes with the next read.
                Ok(None) => break,
                Err(e) => return Err(Violation::new(Cause::BadFrame, format!("not RESP: {e}"))),
            }
        }
        if self.buf.len() > MAX_VALUE {
            let detail = format!("a RESP value longer than {MAX_VALUE} bytes");
            return Err(Violation::new(Cause::BadFrame, detail));
        }
        Ok(if self.done { State::Ended } else { State::Open })
    }

    fn value(&mut self, value: Value, seen: &mut Vec<Seen>) -> Result<(), Violation> {
        let bad = |why: String| Violation::new(Cause::BadFrame, why);
        if self.done {
            return Err(bad("a message after the end".into()));
        }
        let items = match value {
            Value::ServerError(e) => return Err(Violation::new(Cause::Refused, e.to_string())),
            Value::Array(items) if items.len() == 3 => items,
            other => return Err(bad(format!("unexpected {other:?}"))),
        };
        let kind = match &items[0] {
            Value::BulkString(k) => k.as_slice(),
            _ => return Err(bad("a push without its kind".into())),
        };
        match (kind, &items[2]) {
            (b"subscribe", _) => {
                self.subscribed = true;
                seen.push(Seen::Status { seq: None });
                Ok(())
            }
            (b"message", Value::BulkString(payload)) if self.subscribed => {
                self.message(payload, seen)
            }
            _ => Err(bad(format!("unexpected push {:?}", String::from_utf8_lossy(kind)))),
        }
    }

    fn message(&mut self, payload: &[u8], seen: &mut Vec<Seen>) -> Result<(), Violation> {
        let (seq, ts) = match Payload::parse(payload)? {
            Payload::Message { seq, ts_ms } => (seq, ts_ms),
            Payload::End { count } => return self.end(count),
        };
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

    /// The end message: every message before it, from the first.
    fn end(&mut self, count: u64) -> Result<(), Violation> {
        self.done = true;
        let first_seq = self.next.map_or(1, |n| n - self.received);
        if self.received != count || first_seq != 1 {
            let detail = format!("received {} of {count} messages", self.received);
            return Err(Violation::new(Cause::Incomplete, detail));
        }
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
    /// From the first PUBLISH to the last answer.
    pub elapsed_ms: u64,
    /// Messages answered per second over `elapsed_ms`.
    pub rate_per_s: f64,
    /// PUBLISH commands in flight at most (1: closed loop); 0 for a burst (one pipeline).
    pub in_flight: usize,
    /// PUBLISH round trips, ms (a burst's pipeline is one).
    pub reply_ms: Percentiles,
    /// How late the latest PUBLISH left against its schedule, ms.
    pub behind_ms: u64,
}

impl RedisPublishReport {
    /// The report for a person.
    pub fn text(&self) -> String {
        format!(
            "published {} messages to {} in {} ms ({:.1}/s), {}..{} subscribers each; \
             round trip p50 {} ms, p99 {} ms; {}\n",
            self.published,
            self.channel,
            self.elapsed_ms,
            self.rate_per_s,
            self.receivers_min,
            self.receivers_max,
            self.reply_ms.p50,
            self.reply_ms.p99,
            loop_text(self.in_flight, self.behind_ms),
        )
    }
}

/// How a publisher sent, for a person.
pub(crate) fn loop_text(in_flight: usize, behind_ms: u64) -> String {
    match in_flight {
        0 => "one burst".to_owned(),
        1 => format!("closed loop, at most {behind_ms} ms behind schedule"),
        n => format!("open loop (up to {n} in flight), at most {behind_ms} ms behind schedule"),
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

/// The end message's payload, `end <count> <ts_ms> `, padded like a message.
pub(crate) fn end_message(count: u64, size: usize) -> Vec<u8> {
    pad(format!("end {count} {} ", unix_ms()), size)
}

/// What a benchmark message says (the same for Redis and Pusher subscribers).
pub(crate) enum Payload {
    Message {
        seq: u64,
        ts_ms: i64,
    },
    /// The end, after `count` messages.
    End {
        count: u64,
    },
}

impl Payload {
    /// Reads `<seq> <ts_ms> <padding>` or `end <count> ...`: the words up to the padding,
    /// nothing copied (this runs once per delivery).
    pub(crate) fn parse(payload: &[u8]) -> Result<Payload, Violation> {
        let bad = || {
            let text = String::from_utf8_lossy(&payload[..payload.len().min(64)]);
            Violation::new(Cause::BadFrame, format!("not a sim message: {text:?}"))
        };
        let mut words = payload.split(|&b| b == b' ').map(|w| std::str::from_utf8(w).ok());
        let first = words.next().flatten().ok_or_else(bad)?;
        let second = words.next().flatten().ok_or_else(bad)?;
        if first == "end" {
            return Ok(Payload::End { count: second.parse().map_err(|_| bad())? });
        }
        Ok(Payload::Message {
            seq: first.parse().map_err(|_| bad())?,
            ts_ms: second.parse().map_err(|_| bad())?,
        })
    }
}

fn pad(head: String, size: usize) -> Vec<u8> {
    let mut out = head.into_bytes();
    if out.len() < size {
        out.resize(size, b'x');
    }
    out
}

fn failed(what: &str, e: redis::RedisError) -> SimError {
    SimError::Server(format!("{what}: {e}"))
}

/// Publishes the messages and the end message; returns what it did.
pub async fn publish(p: &RedisPublish) -> Result<RedisPublishReport, SimError> {
    p.mode.validate()?;
    let reach = |e| failed(&format!("cannot reach redis-server at {}", p.addr), e);
    let client = redis::Client::open(format!("redis://{}/", p.addr)).map_err(reach)?;
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(PUBLISHER_TIMEOUT))
        .set_response_timeout(Some(PUBLISHER_TIMEOUT));
    let mut conn =
        client.get_multiplexed_async_connection_with_config(&config).await.map_err(reach)?;
    let ch = p.channel.as_str();
    let (mut min, mut max) = (i64::MAX, i64::MIN);
    let mut note = |n: i64| {
        min = min.min(n);
        max = max.max(n);
    };
    let (count, paced, in_flight) = match p.mode {
        PublishMode::Burst { n } => {
            // One pipeline: every PUBLISH in one write, as a burst of events would come.
            let ts = unix_ms();
            let mut pipe = redis::pipe();
            for seq in 1..=u64::from(n) {
                pipe.cmd("PUBLISH").arg(ch).arg(message(seq, ts, p.payload));
            }
            let started = tokio::time::Instant::now();
            let receivers: Vec<i64> =
                pipe.query_async(&mut conn).await.map_err(|e| failed("PUBLISH", e))?;
            let elapsed = started.elapsed();
            receivers.into_iter().for_each(&mut note);
            let mut round_trips = Hist::default();
            round_trips.record(elapsed.as_micros() as u64);
            let paced = pace::Paced { elapsed, round_trips, behind: Duration::ZERO };
            (u64::from(n), paced, 0)
        }
        PublishMode::Rate { per_s, secs, in_flight } => {
            let count = (per_s * secs).round() as u64;
            let make = |i: u64| -> Request<'static, i64> {
                let mut conn = conn.clone();
                // Stamped when it is due to leave, like an event a watcher sends.
                let msg = message(i + 1, unix_ms(), p.payload);
                let ch = ch.to_owned();
                Box::pin(async move {
                    redis::cmd("PUBLISH")
                        .arg(ch)
                        .arg(msg)
                        .query_async(&mut conn)
                        .await
                        .map_err(|e| failed("PUBLISH", e))
                })
            };
            let paced = pace::at_rate(count, per_s, in_flight, make, |_, n| {
                note(n);
                Ok(())
            })
            .await?;
            (count, paced, in_flight)
        }
    };
    if p.end {
        let end = end_message(count, p.payload);
        let _: i64 = redis::cmd("PUBLISH")
            .arg(ch)
            .arg(end)
            .query_async(&mut conn)
            .await
            .map_err(|e| failed("PUBLISH", e))?;
    }
    Ok(RedisPublishReport {
        channel: p.channel.clone(),
        published: count,
        receivers_min: if count == 0 { 0 } else { min },
        receivers_max: if count == 0 { 0 } else { max },
        elapsed_ms: paced.elapsed.as_millis() as u64,
        rate_per_s: count as f64 / paced.elapsed.as_secs_f64().max(1e-3),
        in_flight,
        reply_ms: paced.round_trip_ms(),
        behind_ms: paced.behind.as_millis() as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pub/sub push as redis-server writes it.
    fn push(kind: &str, payload: &[u8]) -> Vec<u8> {
        let mut out = format!("*3\r\n${}\r\n{kind}\r\n$2\r\nch\r\n", kind.len()).into_bytes();
        out.extend_from_slice(format!("${}\r\n", payload.len()).as_bytes());
        out.extend_from_slice(payload);
        out.extend_from_slice(b"\r\n");
        out
    }

    const SUBSCRIBED: &[u8] = b"*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n";

    #[test]
    fn the_subscribe_command_is_resp() {
        assert_eq!(subscribe_command("ch"), b"*2\r\n$9\r\nSUBSCRIBE\r\n$2\r\nch\r\n");
    }

    #[test]
    fn a_subscriber_that_gets_every_message_and_the_end_is_complete() {
        let mut bytes = SUBSCRIBED.to_vec();
        for seq in 1..=3 {
            bytes.extend(push("message", &message(seq, 1_000 + seq as i64, 200)));
        }
        bytes.extend(push("message", b"end 3 2000 xxxx"));
        // Whole, in pieces that cut values anywhere (one byte at a time included), and in
        // pieces of many values.
        for size in [bytes.len(), 1, 2, 7, 100] {
            let mut c = RedisChecker::default();
            let mut seen = Vec::new();
            let mut state = State::Open;
            for piece in bytes.chunks(size) {
                state = c.feed(piece, &mut seen).unwrap();
            }
            assert_eq!(state, State::Ended, "pieces of {size}");
            assert_eq!(seen.len(), 4, "pieces of {size}");
            assert_eq!(seen[0], Seen::Status { seq: None });
            assert_eq!(seen[3], Seen::Event { seq: Some(3), ts_ms: 1_003 });
            assert_eq!(c.at_eof(), Ok(()));
        }
        assert_eq!(message(7, 5, 200).len(), 200);
        assert_eq!(host_port("redis://127.0.0.1:6379/"), "127.0.0.1:6379");
        assert_eq!(host_port("127.0.0.1:6379"), "127.0.0.1:6379");
    }

    #[test]
    fn many_messages_in_one_read_are_all_checked() {
        let mut bytes = SUBSCRIBED.to_vec();
        for seq in 1..=500 {
            bytes.extend(push("message", &message(seq, 7, 200)));
        }
        let mut c = RedisChecker::default();
        let mut seen = Vec::new();
        assert_eq!(c.feed(&bytes, &mut seen), Ok(State::Open));
        assert_eq!(seen.len(), 501);
        assert_eq!(seen[500], Seen::Event { seq: Some(500), ts_ms: 7 });
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
        assert_eq!(run(&[b"1 5 x", b"end 1 9", b"2 5 x"]), Err(Cause::BadFrame));
        let mut c = RedisChecker::default();
        assert_eq!(
            c.feed(&push("message", b"1 5 x"), &mut Vec::new()).unwrap_err().cause,
            Cause::BadFrame,
            "a message before the subscribe confirmation"
        );
        assert_eq!(c.at_eof().unwrap_err().cause, Cause::ClosedEarly);
        let mut c = RedisChecker::default();
        assert_eq!(c.feed(b"-ERR wrong\r\n", &mut Vec::new()).unwrap_err().cause, Cause::Refused);
        let mut c = RedisChecker::default();
        assert_eq!(c.feed(b"?what\r\n", &mut Vec::new()).unwrap_err().cause, Cause::BadFrame);
    }

    #[test]
    fn a_value_that_never_ends_is_cut_off() {
        let mut c = RedisChecker::default();
        c.feed(SUBSCRIBED, &mut Vec::new()).unwrap();
        c.feed(
            format!("*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n${}\r\n", 4 * MAX_VALUE).as_bytes(),
            &mut Vec::new(),
        )
        .unwrap();
        let chunk = vec![b'x'; 64 * 1024];
        let mut result = Ok(State::Open);
        for _ in 0..(MAX_VALUE / chunk.len() + 1) {
            result = c.feed(&chunk, &mut Vec::new());
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result.unwrap_err().cause, Cause::BadFrame);
        // A new connection starts a new stream.
        c.new_connection();
        assert_eq!(c.feed(SUBSCRIBED, &mut Vec::new()), Ok(State::Open));
    }
}
