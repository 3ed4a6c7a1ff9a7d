//! A Pusher-protocol server (Sockudo, Soketi, Pusher itself) for the side-by-side comparison:
//! `matchstream sim pusher` subscribes N WebSockets to one public channel, measured by the
//! same engine as MatchStream viewers and Redis subscribers; `matchstream sim pusher-publish`
//! publishes through the server's signed HTTP API (`POST /apps/<id>/events`, a burst as one
//! `POST /apps/<id>/batch_events`), paced like `sim redis-publish`.
//!
//! A subscriber opens `ws://host:port/app/<key>?protocol=7&client=matchstream-sim&version=1`,
//! waits for `pusher:connection_established`, sends `pusher:subscribe` and counts as connected
//! once `pusher_internal:subscription_succeeded` came (as a Redis subscriber does once its
//! `SUBSCRIBE` is confirmed). Each event's `data` is the Redis benchmark's payload, `<seq> <ts_ms> `
//! padded with `x`, so that latency is measured from `ts_ms` alike; the publisher ends with
//! `end <count> <ts_ms> `.
//!
//! Order: the HTTP API gives none between requests in flight at once (each is its own request,
//! fanned out by whichever server thread takes it), so an open-loop publisher may rightly be
//! delivered out of order. A subscriber therefore demands every message from 1 to `count`
//! exactly once, in any order (a bit per seq), rather than in order like a Redis subscriber.
//!
//! Memory per subscriber is the simulator's WebSocket (`ws::lean_config`: a 4 KiB read buffer)
//! and this checker (a few words and a bit per message). Application-level `pusher:ping`s are
//! not answered: the server sends one only after its activity timeout (120 s by default), longer
//! than a benchmark phase; WebSocket pings are answered by tungstenite.

use std::borrow::Cow;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use matchstream_client::ws::{lean_config, Message};
use matchstream_client::{WebError, WsViewer};
use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::Sha256;
use tokio::net::TcpStream;

use super::check::{Seen, State};
use super::conn::Conn;
use super::pace::{self, Request};
use super::redis::{end_message, loop_text, message, Payload};
use super::report::{Hist, Percentiles};
use super::{unix_ms, Cause, PublishMode, SimError, Violation};

/// The highest message number a subscriber keeps a bit for: a bound on what a broken server
/// can make it allocate (128 KiB of bits).
const MAX_SEQ: u64 = 1 << 20;
/// The publisher's time for each HTTP answer.
const PUBLISHER_TIMEOUT: Duration = Duration::from_secs(30);

/// The WebSocket path of app `key`, as Pusher's own JavaScript client asks for it.
pub fn socket_path(key: &str) -> String {
    format!("/app/{key}?protocol=7&client=matchstream-sim&version=1")
}

/// The message that subscribes to a public `channel`.
pub fn subscribe_message(channel: &str) -> String {
    json!({"event": "pusher:subscribe", "data": {"channel": channel}}).to_string()
}

/// A Pusher message as it comes: its event and, when it is a string, its data.
#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(borrow, default)]
    data: Option<Cow<'a, str>>,
}

/// The same when `data` is not a string (an object): the event is all that is read.
#[derive(Deserialize)]
struct Named<'a> {
    #[serde(borrow)]
    event: Cow<'a, str>,
}

fn parse(line: &[u8]) -> Result<Frame<'_>, Violation> {
    serde_json::from_slice::<Frame>(line)
        .or_else(|_| {
            serde_json::from_slice::<Named>(line).map(|n| Frame { event: n.event, data: None })
        })
        .map_err(|_| {
            let text = String::from_utf8_lossy(&line[..line.len().min(80)]);
            Violation::new(Cause::BadFrame, format!("not a Pusher message: {text:?}"))
        })
}

/// Whether an event is the protocol's own (`pusher:ping`, `pusher_internal:...`).
fn is_protocol_event(event: &str) -> bool {
    event.starts_with("pusher:") || event.starts_with("pusher_internal:")
}

/// Opens a subscriber on `stream`, connected to `addr`: the upgrade, the server's
/// `connection_established`, the subscription and its confirmation, whose line is left in
/// `buf` (the length is returned) for the checker to see first.
pub(crate) async fn open(
    stream: TcpStream,
    addr: &str,
    key: &str,
    channel: &str,
    buf: &mut [u8],
) -> Result<(Conn, usize), Violation> {
    let io = |e: std::io::Error| Violation::new(Cause::of_io(&e), format!("{addr}: {e}"));
    let mut ws = WsViewer::handshake(stream, addr, &socket_path(key), Some(lean_config()))
        .await
        .map_err(|e| match e {
            WebError::Io(e) => io(e),
            WebError::Refused { status, body, .. } => {
                Violation::new(Cause::Refused, format!("{addr}: status {status}: {}", body.trim()))
            }
            WebError::Protocol(why) => Violation::new(Cause::BadFrame, format!("{addr}: {why}")),
        })?;
    let mut asked = false;
    loop {
        let n = ws.read_lines(buf).await.map_err(io)?;
        if n == 0 {
            return Err(Violation::new(Cause::ClosedEarly, format!("{addr} closed at once")));
        }
        let Some(line) = buf[..n].strip_suffix(b"\n") else {
            let detail = format!("a handshake message longer than {} bytes", buf.len());
            return Err(Violation::new(Cause::BadFrame, detail));
        };
        let frame = parse(line)?;
        match frame.event.as_ref() {
            "pusher:connection_established" if !asked => {
                asked = true;
                ws.send(Message::text(subscribe_message(channel))).await.map_err(io)?;
            }
            "pusher_internal:subscription_succeeded" if asked => {
                return Ok((Conn::Ws(Box::new(ws)), n));
            }
            "pusher:error" => {
                let why = frame.data.unwrap_or_default();
                return Err(Violation::new(Cause::Refused, format!("{addr}: pusher:error {why}")));
            }
            event if is_protocol_event(event) => {}
            event => {
                let detail = format!("event {event:?} before the subscription");
                return Err(Violation::new(Cause::BadFrame, detail));
            }
        }
    }
}

/// A subscriber's view of its stream (the lines of `WsViewer::read_lines`, one per message):
/// the subscription's confirmation, then every message from 1 to `count` once in any order,
/// and the end message naming `count`.
#[derive(Debug, Default)]
pub struct PusherChecker {
    /// Received bytes of a line not whole yet.
    partial: Vec<u8>,
    subscribed: bool,
    /// A bit per message number received.
    got: Vec<u64>,
    received: u64,
    /// The count the end message named.
    end: Option<u64>,
}

impl PusherChecker {
    pub(crate) fn new_connection(&mut self) {
        self.partial.clear();
        self.subscribed = false;
    }

    pub(crate) fn feed(&mut self, data: &[u8], seen: &mut Vec<Seen>) -> Result<State, Violation> {
        let mut rest = data;
        while let Some(at) = rest.iter().position(|&b| b == b'\n') {
            if self.partial.is_empty() {
                self.line(&rest[..at], seen)?;
            } else {
                let mut line = std::mem::take(&mut self.partial);
                line.extend_from_slice(&rest[..at]);
                self.line(&line, seen)?;
            }
            rest = &rest[at + 1..];
        }
        if self.partial.len() + rest.len() > matchstream_client::check::MAX_LINE {
            let detail = "a message longer than the line limit";
            return Err(Violation::new(Cause::BadFrame, detail));
        }
        self.partial.extend_from_slice(rest);
        Ok(if self.ended() { State::Ended } else { State::Open })
    }

    fn ended(&self) -> bool {
        self.end.is_some_and(|count| self.received == count)
    }

    fn line(&mut self, line: &[u8], seen: &mut Vec<Seen>) -> Result<(), Violation> {
        let frame = parse(line)?;
        match frame.event.as_ref() {
            "pusher_internal:subscription_succeeded" => {
                self.subscribed = true;
                seen.push(Seen::Status { seq: None });
                Ok(())
            }
            "pusher:error" => {
                let why = frame.data.unwrap_or_default();
                Err(Violation::new(Cause::Refused, format!("pusher:error {why}")))
            }
            event if is_protocol_event(event) => Ok(()),
            _ if !self.subscribed => {
                Err(Violation::new(Cause::BadFrame, "a message before the subscription"))
            }
            _ => self.message(frame.data.as_deref().unwrap_or_default().as_bytes(), seen),
        }
    }

    fn message(&mut self, payload: &[u8], seen: &mut Vec<Seen>) -> Result<(), Violation> {
        let payload = Payload::parse(payload)?;
        if self.ended() {
            return Err(Violation::new(Cause::BadFrame, "a message after the end"));
        }
        let (seq, ts) = match payload {
            Payload::Message { seq, ts_ms } => (seq, ts_ms),
            Payload::End { count } => {
                if self.end.is_some() || self.received > count {
                    let detail =
                        format!("received {} messages, the end says {count}", self.received);
                    return Err(Violation::new(Cause::Incomplete, detail));
                }
                self.end = Some(count);
                return Ok(());
            }
        };
        if seq == 0 || seq > MAX_SEQ || self.end.is_some_and(|count| seq > count) {
            return Err(Violation::new(Cause::BadFrame, format!("message number {seq}")));
        }
        let (word, bit) = ((seq / 64) as usize, 1u64 << (seq % 64));
        if self.got.len() <= word {
            self.got.resize(word + 1, 0);
        }
        if self.got[word] & bit != 0 {
            return Err(Violation::new(Cause::Duplicate, format!("message {seq} again")));
        }
        self.got[word] |= bit;
        self.received += 1;
        seen.push(Seen::Event { seq: Some(seq), ts_ms: ts });
        Ok(())
    }

    pub(crate) fn at_eof(&self) -> Result<(), Violation> {
        match self.end {
            _ if self.ended() => Ok(()),
            Some(count) => {
                let detail = format!("received {} of {count} messages", self.received);
                Err(Violation::new(Cause::Incomplete, detail))
            }
            None => Err(Violation::new(Cause::ClosedEarly, "closed before the end message")),
        }
    }
}

/// `matchstream sim pusher-publish`: what to publish where.
#[derive(Clone, Debug)]
pub struct PusherPublish {
    /// `host:port` of the server's HTTP API (the port of its WebSockets).
    pub addr: String,
    pub app_id: String,
    pub key: String,
    pub secret: String,
    pub channel: String,
    /// The event name of each message.
    pub event: String,
    pub mode: PublishMode,
    /// Bytes of each message's data (at least what the seq and time take).
    pub payload: usize,
    /// Send the final `end` message (subscribers that get it are complete and hang up).
    pub end: bool,
}

/// What a Pusher publisher did: `sim redis-publish`'s report without the receiver counts
/// (the HTTP API answers `{}`).
#[derive(Clone, Debug, Serialize)]
pub struct PusherPublishReport {
    pub channel: String,
    pub published: u64,
    /// From the first request to the last answer.
    pub elapsed_ms: u64,
    /// Messages answered per second over `elapsed_ms`.
    pub rate_per_s: f64,
    /// Requests in flight at most (1: closed loop); 0 for a burst (one `batch_events`).
    pub in_flight: usize,
    /// Request round trips, ms (a burst's is one).
    pub reply_ms: Percentiles,
    /// How late the latest request left against its schedule, ms.
    pub behind_ms: u64,
}

impl PusherPublishReport {
    /// The report for a person.
    pub fn text(&self) -> String {
        format!(
            "published {} messages to {} in {} ms ({:.1}/s); round trip p50 {} ms, p99 {} ms; {}\n",
            self.published,
            self.channel,
            self.elapsed_ms,
            self.rate_per_s,
            self.reply_ms.p50,
            self.reply_ms.p99,
            loop_text(self.in_flight, self.behind_ms),
        )
    }
}

/// Lowercase hex of bytes.
fn hex(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

/// The query string of a signed API request (Pusher's "authenticating requests"): `auth_key`,
/// `auth_timestamp`, `auth_version` and `body_md5` sorted by name, then `auth_signature`, the
/// hex HMAC-SHA256 under `secret` of `METHOD\n<path>\n<those parameters>`.
pub fn signed_query(
    method: &str,
    path: &str,
    key: &str,
    secret: &str,
    timestamp: u64,
    body: &[u8],
) -> String {
    let body_md5 = hex(&Md5::digest(body));
    let params =
        format!("auth_key={key}&auth_timestamp={timestamp}&auth_version=1.0&body_md5={body_md5}");
    let signature = sign(secret, &format!("{method}\n{path}\n{params}"));
    format!("{params}&auth_signature={signature}")
}

/// Hex HMAC-SHA256 of `text` under `secret`.
pub fn sign(secret: &str, text: &str) -> String {
    // HMAC takes a key of any length: this cannot fail.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(text.as_bytes());
    hex(&mac.finalize().into_bytes())
}

/// The data of message `seq`: the Redis benchmark's payload (ASCII) as a string.
fn data(seq: u64, ts_ms: i64, size: usize) -> String {
    String::from_utf8_lossy(&message(seq, ts_ms, size)).into_owned()
}

/// The signing client of one app.
#[derive(Clone)]
struct Api {
    http: reqwest::Client,
    base: String,
    app_id: String,
    key: String,
    secret: String,
}

impl Api {
    /// POSTs `body` to `/apps/<id>/<what>`, signed.
    async fn post(&self, what: &str, body: String) -> Result<(), SimError> {
        let path = format!("/apps/{}/{what}", self.app_id);
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let query = signed_query("POST", &path, &self.key, &self.secret, now, body.as_bytes());
        let url = format!("{}{path}?{query}", self.base);
        let failed = |e: reqwest::Error| SimError::Server(format!("POST {path}: {e}"));
        let answer = self
            .http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(failed)?;
        let status = answer.status();
        if !status.is_success() {
            let text = answer.text().await.unwrap_or_default();
            return Err(SimError::Server(format!("POST {path}: status {status}: {}", text.trim())));
        }
        // Read the answer out, so that the connection goes back to the pool.
        answer.bytes().await.map_err(failed)?;
        Ok(())
    }
}

/// Publishes the messages and the end message; returns what it did.
pub async fn publish(p: &PusherPublish) -> Result<PusherPublishReport, SimError> {
    p.mode.validate()?;
    let http = reqwest::Client::builder()
        .timeout(PUBLISHER_TIMEOUT)
        .build()
        .map_err(|e| SimError::Server(format!("an HTTP client: {e}")))?;
    let api = Api {
        http,
        base: format!("http://{}", p.addr.trim_start_matches("http://").trim_end_matches('/')),
        app_id: p.app_id.clone(),
        key: p.key.clone(),
        secret: p.secret.clone(),
    };
    let event = |seq: u64, ts: i64| json!({"name": p.event, "channels": [p.channel], "data": data(seq, ts, p.payload)});
    let (count, paced, in_flight) = match p.mode {
        PublishMode::Burst { n } => {
            // One request with the list, as a burst of events comes to MatchStream.
            let ts = unix_ms();
            let batch: Vec<_> = (1..=u64::from(n))
                .map(|seq| {
                    json!({"name": p.event, "channel": p.channel, "data": data(seq, ts, p.payload)})
                })
                .collect();
            let body = json!({ "batch": batch }).to_string();
            let started = tokio::time::Instant::now();
            api.post("batch_events", body).await?;
            let elapsed = started.elapsed();
            let mut round_trips = Hist::default();
            round_trips.record(elapsed.as_micros() as u64);
            (u64::from(n), pace::Paced { elapsed, round_trips, behind: Duration::ZERO }, 0)
        }
        PublishMode::Rate { per_s, secs, in_flight } => {
            let count = (per_s * secs).round() as u64;
            let make = |i: u64| -> Request<'static, ()> {
                let api = api.clone();
                // Stamped when it is due to leave, like an event a watcher sends.
                let body = event(i + 1, unix_ms()).to_string();
                Box::pin(async move { api.post("events", body).await })
            };
            let paced = pace::at_rate(count, per_s, in_flight, make, |_, ()| Ok(())).await?;
            (count, paced, in_flight)
        }
    };
    if p.end {
        let end = String::from_utf8_lossy(&end_message(count, p.payload)).into_owned();
        let body = json!({"name": p.event, "channels": [p.channel], "data": end}).to_string();
        api.post("events", body).await?;
    }
    Ok(PusherPublishReport {
        channel: p.channel.clone(),
        published: count,
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

    /// Computed apart from this code, with Python's hmac and hashlib:
    /// ```text
    /// body = b'{"name":"sim","channels":["bench"],"data":"1 1700000000000 xxxx"}'
    /// md5 = hashlib.md5(body).hexdigest()
    /// q = f"auth_key=app-key&auth_timestamp=1700000000&auth_version=1.0&body_md5={md5}"
    /// hmac.new(b"app-secret", f"POST\n/apps/app-id/events\n{q}".encode(), hashlib.sha256).hexdigest()
    /// ```
    #[test]
    fn api_requests_are_signed_as_pusher_says() {
        let body = br#"{"name":"sim","channels":["bench"],"data":"1 1700000000000 xxxx"}"#;
        let query = signed_query(
            "POST",
            "/apps/app-id/events",
            "app-key",
            "app-secret",
            1_700_000_000,
            body,
        );
        assert_eq!(
            query,
            "auth_key=app-key&auth_timestamp=1700000000&auth_version=1.0\
             &body_md5=8915eed198c875a145db2d929bd45fc8\
             &auth_signature=f3cd0a466b07b0d4ccf9bee6ee1d8998d26dbb3824e6bc4ef9b494a1422eeae8"
        );
    }

    /// Python: `hmac.new(b"secret", b"text", hashlib.sha256).hexdigest()`.
    #[test]
    fn the_signature_is_hmac_sha256_in_hex() {
        let want = "2f443685592900e619f2f3b2350c3c8a5738e2e7a26bc9a244d3393c3cd6abd6";
        assert_eq!(sign("secret", "text"), want);
    }

    fn line(event: &str, data: &str) -> Vec<u8> {
        let mut out =
            json!({"event": event, "channel": "ch", "data": data}).to_string().into_bytes();
        out.push(b'\n');
        out
    }

    fn subscribed() -> Vec<u8> {
        line("pusher_internal:subscription_succeeded", "{}")
    }

    fn msg(seq: u64) -> Vec<u8> {
        line("sim", &data(seq, 1_000 + seq as i64, 200))
    }

    #[test]
    fn a_subscriber_that_gets_every_message_in_any_order_and_the_end_is_complete() {
        let mut bytes = subscribed();
        for seq in [1, 3, 2] {
            bytes.extend(msg(seq));
        }
        bytes.extend(line("pusher:ping", "{}"));
        bytes.extend(line("sim", "end 3 2000 xxxx"));
        for size in [bytes.len(), 1, 7, 100] {
            let mut c = PusherChecker::default();
            let mut seen = Vec::new();
            let mut state = State::Open;
            for piece in bytes.chunks(size) {
                state = c.feed(piece, &mut seen).unwrap();
            }
            assert_eq!(state, State::Ended, "pieces of {size}");
            assert_eq!(seen.len(), 4, "pieces of {size}");
            assert_eq!(seen[0], Seen::Status { seq: None });
            assert_eq!(seen[3], Seen::Event { seq: Some(2), ts_ms: 1_002 });
            assert_eq!(c.at_eof(), Ok(()));
        }
        // The end before the last message: complete once it comes.
        let mut c = PusherChecker::default();
        let mut seen = Vec::new();
        c.feed(&subscribed(), &mut seen).unwrap();
        c.feed(&msg(2), &mut seen).unwrap();
        assert_eq!(c.feed(&line("sim", "end 2 9"), &mut seen), Ok(State::Open));
        assert_eq!(c.at_eof().unwrap_err().cause, Cause::Incomplete);
        assert_eq!(c.feed(&msg(1), &mut seen), Ok(State::Ended));
    }

    #[test]
    fn missing_repeated_or_unexpected_messages_fail() {
        let run = |msgs: &[Vec<u8>]| {
            let mut c = PusherChecker::default();
            let mut bytes = subscribed();
            msgs.iter().for_each(|m| bytes.extend(m));
            c.feed(&bytes, &mut Vec::new()).map_err(|v| v.cause)
        };
        assert_eq!(run(&[msg(1), msg(1)]), Err(Cause::Duplicate));
        assert_eq!(run(&[msg(1), line("sim", "end 0 9")]), Err(Cause::Incomplete));
        assert_eq!(run(&[line("sim", "end 1 9"), msg(2)]), Err(Cause::BadFrame));
        assert_eq!(run(&[line("sim", "hello")]), Err(Cause::BadFrame));
        assert_eq!(run(&[b"not json\n".to_vec()]), Err(Cause::BadFrame));
        assert_eq!(run(&[line("pusher:error", "over quota")]), Err(Cause::Refused));
        let mut c = PusherChecker::default();
        assert_eq!(c.feed(&msg(1), &mut Vec::new()).unwrap_err().cause, Cause::BadFrame);
        assert_eq!(c.at_eof().unwrap_err().cause, Cause::ClosedEarly);
        // Data that is an object (a protocol event's) is read for its event only.
        let mut c = PusherChecker::default();
        let object = b"{\"event\":\"pusher:pong\",\"data\":{}}\n";
        assert_eq!(c.feed(object, &mut Vec::new()), Ok(State::Open));
    }

    #[test]
    fn the_subscriber_speaks_the_pusher_protocol() {
        assert_eq!(socket_path("k"), "/app/k?protocol=7&client=matchstream-sim&version=1");
        assert_eq!(
            subscribe_message("bench"),
            r#"{"event":"pusher:subscribe","data":{"channel":"bench"}}"#
        );
        assert_eq!(data(7, 5, 200).len(), 200);
        assert!(end_message(3, 200).starts_with(b"end 3 "));
    }
}
