//! `matchstream sim publish`: the benchmark's watcher. Creates the match if asked (reusing it
//! when it exists), starts it if asked and not yet started, publishes `comment` events whose v2
//! frame is about `payload` bytes — at a steady rate, one request per event, open or closed loop
//! (`pace.rs`), or one request with a list — and stops the match if asked. Reports what it
//! published, how fast the `201`s came back, so that a harness knows what viewers must get.

use std::time::Duration;

use matchstream_client::Watcher;
use matchstream_proto::MatchId;
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::pace::{self, Request};
use super::report::{Hist, Percentiles};
use super::{unix_ms, PublishMode, SimError};

/// Longest comment text (SPEC 1).
const MAX_TEXT: usize = 280;

/// What to publish where.
#[derive(Clone, Debug)]
pub struct Publish {
    /// Base URL, like `http://127.0.0.1:8888`.
    pub server: String,
    pub token: String,
    pub match_id: String,
    /// Create the match first (an existing one is reused).
    pub create: bool,
    /// Publish `start` (two players a side) if the match has not started.
    pub start: bool,
    pub mode: PublishMode,
    /// About this many bytes per v2 frame of each comment.
    pub payload: usize,
    /// Publish `stop` at the end.
    pub stop: bool,
    /// The CA certificate (PEM) an `https://` server's certificate is checked against; `None`:
    /// the system's roots.
    pub ca_cert: Option<std::path::PathBuf>,
}

/// What was published: the JSON object of `sim publish --json`.
#[derive(Clone, Debug, Serialize)]
pub struct PublishReport {
    #[serde(rename = "match")]
    pub match_id: String,
    /// The match was created by this run (not reused).
    pub created: bool,
    /// `start` was published by this run.
    pub started: bool,
    /// Comments published.
    pub published: u64,
    /// The lowest and highest seq of the comments (with several in flight the node numbers
    /// them in the order they arrive).
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    /// The seq of `stop`, when published.
    pub stop_seq: Option<u64>,
    /// Bytes of one comment's v2 frame.
    pub frame_bytes: usize,
    /// From the first comment sent to the last `201`.
    pub elapsed_ms: u64,
    /// Comments accepted per second over `elapsed_ms`.
    pub rate_per_s: f64,
    /// Requests in flight at most (1: closed loop); 0 for a burst (one request).
    pub in_flight: usize,
    /// Round trips of the comment requests (sent to `201`), ms.
    pub reply_ms: Percentiles,
    /// How late the latest comment left against its schedule, ms.
    pub behind_ms: u64,
}

impl PublishReport {
    /// The report for a person.
    pub fn text(&self) -> String {
        let seqs = match (self.first_seq, self.last_seq) {
            (Some(a), Some(b)) => format!("seq {a}..{b}"),
            _ => "nothing".to_owned(),
        };
        format!(
            "published {} comments ({} bytes a frame) to {}: {seqs} in {} ms ({:.1}/s){}{}{}\n\
             201 round trip p50 {} ms, p99 {} ms; {}\n",
            self.published,
            self.frame_bytes,
            self.match_id,
            self.elapsed_ms,
            self.rate_per_s,
            if self.created { ", created the match" } else { "" },
            if self.started { ", started it" } else { "" },
            self.stop_seq.map_or(String::new(), |s| format!(", stop at seq {s}")),
            self.reply_ms.p50,
            self.reply_ms.p99,
            super::redis::loop_text(self.in_flight, self.behind_ms),
        )
    }
}

/// A comment text whose v2 frame (`{"seq":..,"ts":..,"kind":"comment","data":{"text":".."}}\n`)
/// is `payload` bytes for a seq of `seq_digits` digits.
pub fn comment_text(payload: usize, seq_digits: usize) -> Result<String, SimError> {
    let ts_digits = unix_ms().to_string().len();
    let overhead = r#"{"seq":,"ts":,"kind":"comment","data":{"text":""}}"#.len() + 1;
    let fixed = overhead + seq_digits + ts_digits;
    let len = payload.saturating_sub(fixed).max(1);
    if len > MAX_TEXT {
        return Err(SimError::Usage(format!(
            "--payload is at most {} bytes (a comment is at most {MAX_TEXT} characters)",
            fixed + MAX_TEXT
        )));
    }
    let mut text = String::from("sim ");
    text.extend(std::iter::repeat_n('x', len.saturating_sub(4)));
    text.truncate(len);
    Ok(text)
}

#[derive(Deserialize)]
struct Accepted {
    seq: u64,
}

/// Publishes as asked.
pub async fn publish(p: &Publish) -> Result<PublishReport, SimError> {
    p.mode.validate()?;
    let server = p.server.trim_end_matches('/');
    let tls = p.ca_cert.as_deref().map(|ca| matchstream_client::TlsClient::new(Some(ca)));
    let tls = tls.transpose().map_err(|e| SimError::Usage(format!("--ca-cert: {e}")))?;
    let watcher = Watcher::with_tls(&p.server, &p.token, tls.as_ref())
        .map_err(|e| SimError::Usage(e.to_string()))?;
    let call = |method: Method, path: String, body: Option<Value>| {
        let watcher = watcher.clone();
        async move {
            let answer = watcher
                .send(method, &path, body.as_ref())
                .await
                .map_err(|e| SimError::Server(format!("{path}: {e}")))?;
            Ok::<_, SimError>((answer.status, answer.json()))
        }
    };
    let refused = |what: &str, status: StatusCode, body: &Value| {
        let why = body["error"].as_str().map_or_else(|| body.to_string(), str::to_owned);
        SimError::Server(format!("{server} refused {what}: {status}: {why}"))
    };
    let id = &p.match_id;
    let events = format!("/1/match/{id}/events");

    let mut created = false;
    if p.create {
        let bad = || SimError::Usage(format!("{id:?} is not a match id like elp-tig-2011-09-10"));
        MatchId::parse(id).map_err(|_| bad())?;
        // A valid id: team ids hold no '-', so the first two split off the teams.
        let mut parts = id.splitn(3, '-');
        let (Some(home), Some(visit), Some(date)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let body = json!({"home": home, "visit": visit, "start_date": date});
        let (status, body) = call(Method::POST, "/1/matches".into(), Some(body)).await?;
        match status {
            StatusCode::CREATED => created = true,
            StatusCode::CONFLICT => {}
            _ => return Err(refused("creating the match", status, &body)),
        }
    }
    let mut started = false;
    if p.start {
        let (status, m) = call(Method::GET, format!("/1/match/{id}"), None).await?;
        if status != StatusCode::OK {
            return Err(refused("reading the match", status, &m));
        }
        if m["period"] == "not_started" {
            let start = json!({"kind": "start", "data": {
                "home_players": [{"number": 1, "name": "Home One"}, {"number": 2, "name": "Home Two"}],
                "visit_players": [{"number": 1, "name": "Visit One"}, {"number": 2, "name": "Visit Two"}]
            }});
            let (status, body) = call(Method::POST, events.clone(), Some(start)).await?;
            if status != StatusCode::CREATED {
                return Err(refused("start", status, &body));
            }
            started = true;
        }
    }

    let count = match p.mode {
        PublishMode::Burst { n } => u64::from(n),
        PublishMode::Rate { per_s, secs, .. } => (per_s * secs).round() as u64,
    };
    // Frames are sized for the seqs they will most likely carry.
    let digits = (count + 10).to_string().len();
    let text = comment_text(p.payload, digits)?;
    let comment = json!({"kind": "comment", "data": {"text": text}});
    let frame_bytes = comment_text_frame_len(&text, digits);
    let (mut first_seq, mut last_seq) = (None::<u64>, None::<u64>);
    let (paced, in_flight) = match p.mode {
        PublishMode::Burst { n } => {
            let batch = Value::Array(vec![comment.clone(); n as usize]);
            let began = tokio::time::Instant::now();
            let (status, body) = call(Method::POST, events.clone(), Some(batch)).await?;
            let elapsed = began.elapsed();
            let accepted: Vec<Accepted> = match status {
                StatusCode::CREATED => serde_json::from_value(body)
                    .map_err(|e| SimError::Server(format!("the burst's answer: {e}")))?,
                _ => return Err(refused("the burst", status, &body)),
            };
            first_seq = accepted.first().map(|a| a.seq);
            last_seq = accepted.last().map(|a| a.seq);
            let mut round_trips = Hist::default();
            round_trips.record(elapsed.as_micros() as u64);
            (pace::Paced { elapsed, round_trips, behind: Duration::ZERO }, 0)
        }
        PublishMode::Rate { per_s, in_flight, .. } => {
            // One request per comment; with several in flight they take several connections,
            // and the node numbers them in the order they arrive.
            let make = |_| -> Request<'static, (StatusCode, Value)> {
                let (watcher, path, comment) = (watcher.clone(), events.clone(), comment.clone());
                Box::pin(async move {
                    let answer = watcher
                        .send(Method::POST, &path, Some(&comment))
                        .await
                        .map_err(|e| SimError::Server(format!("comment: {e}")))?;
                    Ok((answer.status, answer.json()))
                })
            };
            let answered = |i: u64, (status, body): (StatusCode, Value)| {
                if status != StatusCode::CREATED {
                    return Err(refused(&format!("comment {}", i + 1), status, &body));
                }
                if let Some(seq) = body["seq"].as_u64() {
                    first_seq = Some(first_seq.map_or(seq, |s| s.min(seq)));
                    last_seq = Some(last_seq.map_or(seq, |s| s.max(seq)));
                }
                Ok(())
            };
            (pace::at_rate(count, per_s, in_flight, make, answered).await?, in_flight)
        }
    };
    let mut stop_seq = None;
    if p.stop {
        let (status, body) =
            call(Method::POST, events.clone(), Some(json!({"kind": "stop"}))).await?;
        if status != StatusCode::CREATED {
            return Err(refused("stop", status, &body));
        }
        stop_seq = body["seq"].as_u64();
    }
    Ok(PublishReport {
        match_id: id.clone(),
        created,
        started,
        published: count,
        first_seq,
        last_seq,
        stop_seq,
        frame_bytes,
        elapsed_ms: paced.elapsed.as_millis() as u64,
        rate_per_s: (count as f64 / paced.elapsed.as_secs_f64().max(1e-3) * 10.0).round() / 10.0,
        in_flight,
        reply_ms: paced.round_trip_ms(),
        behind_ms: paced.behind.as_millis() as u64,
    })
}

/// The v2 frame length of a comment with `text` (plain ASCII) and a seq of `seq_digits` digits.
fn comment_text_frame_len(text: &str, seq_digits: usize) -> usize {
    let ts_digits = unix_ms().to_string().len();
    r#"{"seq":,"ts":,"kind":"comment","data":{"text":""}}"#.len()
        + 1
        + seq_digits
        + ts_digits
        + text.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A v2 comment frame as SPEC 4 writes it, built here from the SPEC, not the server's code.
    fn frame(seq: u64, text: &str) -> String {
        let frame = json!({"seq": seq, "ts": unix_ms(), "kind": "comment", "data": {"text": text}});
        format!("{frame}\n")
    }

    #[test]
    fn comment_frames_have_the_asked_size() {
        for payload in [120, 200, 300] {
            let text = comment_text(payload, 4).unwrap();
            assert_eq!(frame(1234, &text).len(), payload, "{text}");
            assert_eq!(comment_text_frame_len(&text, 4), payload);
        }
        assert!(comment_text(1000, 4).is_err());
        assert_eq!(comment_text(10, 4).unwrap().len(), 1, "never empty");
    }
}
