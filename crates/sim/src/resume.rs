//! How a simulated v2 viewer comes back after losing its node (`--resume`, SPEC 7), like a real
//! client: which ends of a connection are drops (EOF without `bye`, a reset, `bye shutdown`), the
//! hints a `bye shutdown` carries (`retry_after_ms`, `try`), how long to wait before and between
//! reconnect attempts and when to give up, and the run's resume counters. The viewer loop
//! (viewer.rs) notices the drops and reconnects; this file decides how long and keeps the score.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use matchstream_proto::ByeReason;
use rand::Rng;
use serde::Deserialize;

use super::check::Seen;
use super::report::WorkerReport;
use super::{unix_ms, Cause, Violation};

/// Longest wait before the first reconnect after a plain drop (EOF, reset): the viewers of a
/// dead node come back spread over this much time, not all in the same millisecond.
const JITTER: Duration = Duration::from_millis(500);
/// A `retry_after_ms` above this is cut to it: a benchmark waits seconds for a node's viewers,
/// not minutes. Above a draining node's default hints (1 s plus its 10 s window), so that the
/// reconnects spread as the node asked.
const RETRY_AFTER_CAP: Duration = Duration::from_secs(15);
/// First and longest waits between failed reconnect attempts (doubling in between).
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A viewer that has not got back within this long after its drop fails.
pub(crate) const RESUME_WITHIN: Duration = Duration::from_secs(30);
/// A resumed connection that lived this long, or got a frame, is back for good: its next drop
/// starts afresh. One that drops sooner (a node that accepts and dies) continues the same
/// attempt, with its deadline and growing waits.
const STABLE: Duration = Duration::from_secs(2);
/// Longest unfinished line kept to read a `bye` from: far above any `bye` frame.
const TAIL_MAX: usize = 512;

/// The width of the time slots in which drops and reconnects are counted.
pub(crate) const SLOT_MS: i64 = 100;

/// Counts by [`SLOT_MS`] time slot (the slot's start, Unix ms).
#[derive(Debug, Default)]
struct Slots(Mutex<BTreeMap<i64, u64>>);

impl Slots {
    fn add(&self, at_ms: i64) {
        let slot = at_ms - at_ms.rem_euclid(SLOT_MS);
        *self.0.lock().unwrap_or_else(|p| p.into_inner()).entry(slot).or_default() += 1;
    }

    fn pairs(&self) -> Vec<(i64, u64)> {
        let slots = self.0.lock().unwrap_or_else(|p| p.into_inner());
        slots.iter().map(|(&k, &v)| (k, v)).collect()
    }
}

/// A viewer on its way back after a drop.
#[derive(Debug)]
pub(crate) struct Away {
    /// What ended the connection it lost.
    why: Violation,
    /// After this, no new attempt: the viewer fails.
    deadline: Instant,
    /// Reconnect attempts that failed since the drop.
    failures: u32,
    /// How long to wait before the next attempt.
    wait: Duration,
    /// Where the `bye` said to go: the first attempt goes there.
    pub try_addr: Option<String>,
    /// Why the last attempt failed.
    last: Option<Violation>,
}

impl Away {
    /// A drop. `before`: the attempt the lost connection came from, if it was not back for good
    /// (see [`STABLE`]); the new wait continues from it.
    pub fn after(lost: Lost, before: Option<Away>) -> Away {
        let first = match lost.retry_after_ms {
            Some(ms) => Duration::from_millis(ms).min(RETRY_AFTER_CAP),
            None => JITTER.mul_f64(rand::rng().random::<f64>()),
        };
        match before {
            None => Away {
                why: lost.why,
                deadline: Instant::now() + RESUME_WITHIN,
                failures: 0,
                wait: first,
                try_addr: lost.try_addr,
                last: None,
            },
            Some(b) => {
                let failures = b.failures + 1;
                Away {
                    why: lost.why,
                    deadline: b.deadline,
                    failures,
                    wait: backoff(failures).max(first),
                    try_addr: lost.try_addr,
                    last: b.last,
                }
            }
        }
    }

    /// The wait before the next attempt, or `None` when the time to resume is up.
    pub fn next_wait(&self) -> Option<Duration> {
        let left = self.deadline.checked_duration_since(Instant::now())?;
        (!left.is_zero()).then(|| self.wait.min(left))
    }

    /// An attempt failed: the next waits longer.
    pub fn failed(&mut self, v: Violation) {
        self.failures += 1;
        self.wait = backoff(self.failures);
        self.last = Some(v);
    }

    /// The viewer's failure once the time is up.
    pub fn give_up(&self) -> Violation {
        let within = RESUME_WITHIN.as_secs();
        match &self.last {
            Some(last) => Violation::new(
                last.cause,
                format!(
                    "not back within {within} s after {} ({} attempts; the last: {last})",
                    self.why, self.failures
                ),
            ),
            None => Violation::new(
                self.why.cause,
                format!("not back within {within} s after {}", self.why),
            ),
        }
    }
}

/// The wait after `failures` failed attempts: doubling from [`BACKOFF_FIRST`] up to
/// [`BACKOFF_MAX`], each between half and all of it so that retries spread out.
fn backoff(failures: u32) -> Duration {
    let full =
        BACKOFF_FIRST.saturating_mul(1 << failures.saturating_sub(1).min(16)).min(BACKOFF_MAX);
    full.mul_f64(rand::rng().random_range(0.5..=1.0))
}

/// Whether a connection that ended now was back for good (see [`STABLE`]).
pub(crate) fn stable(since: Instant, got_frame: bool) -> bool {
    got_frame || since.elapsed() >= STABLE
}

/// A connection lost in a way a client resumes after.
#[derive(Debug)]
pub(crate) struct Lost {
    why: Violation,
    retry_after_ms: Option<u64>,
    try_addr: Option<String>,
}

impl Lost {
    /// EOF without `bye`, or a read error.
    pub fn connection(why: Violation) -> Lost {
        Lost { why, retry_after_ms: None, try_addr: None }
    }

    /// Whether the violation that ended a stream is a `bye shutdown`; `bye` is the first `bye`
    /// line of the read that ended it (see [`LineTail`]). Every other `bye` stays a failure.
    pub fn of_bye(v: &Violation, bye: Option<Bye>) -> Option<Lost> {
        // The checker reports a shutdown (or unknown) bye as closed_early, and nothing else it
        // reads: a gap found before a bye on the same read stays a gap. The line says which bye
        // it was and carries the hints.
        let bye = bye.filter(|_| v.cause == Cause::ClosedEarly)?;
        let shutdown = bye.reason.as_deref().map(str::parse) == Some(Ok(ByeReason::Shutdown));
        shutdown.then(|| Lost {
            why: v.clone(),
            retry_after_ms: bye.retry_after_ms,
            try_addr: bye.try_addr.filter(|a| !a.is_empty()),
        })
    }
}

/// The fields of a v2 `bye` frame a resuming client reads.
#[derive(Debug, Deserialize, PartialEq, Eq)]
pub(crate) struct Bye {
    kind: String,
    pub reason: Option<String>,
    pub retry_after_ms: Option<u64>,
    #[serde(rename = "try")]
    pub try_addr: Option<String>,
}

/// The unfinished line at the end of what a viewer read so far, kept while it is short enough to
/// be a `bye`: the checker says that a `bye` ended the stream, but a resuming viewer needs its
/// `try` and `retry_after_ms`, and the line may have come in two reads.
#[derive(Debug, Default)]
pub(crate) struct LineTail {
    bytes: Vec<u8>,
    /// The unfinished line is longer than [`TAIL_MAX`] (and so not a `bye`).
    long: bool,
}

impl LineTail {
    /// A new connection: nothing unfinished.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.long = false;
    }

    /// The first `bye` frame among the lines that `chunk` completes.
    pub fn bye_in(&self, chunk: &[u8]) -> Option<Bye> {
        let mut lines = chunk.split_inclusive(|&b| b == b'\n').filter(|l| l.ends_with(b"\n"));
        let first = lines.next()?;
        let first = if self.long {
            None
        } else if self.bytes.is_empty() {
            Some(first.to_vec())
        } else {
            Some([&self.bytes[..], first].concat())
        };
        first
            .iter()
            .map(Vec::as_slice)
            .chain(lines)
            .filter_map(|l| serde_json::from_slice::<Bye>(l).ok())
            .find(|b| b.kind == "bye")
    }

    /// Keeps the unfinished end of `chunk` (after the chunk was checked).
    pub fn push(&mut self, chunk: &[u8]) {
        let rest = match chunk.iter().rposition(|&b| b == b'\n') {
            Some(i) => {
                self.clear();
                &chunk[i + 1..]
            }
            None => chunk,
        };
        if self.long || self.bytes.len() + rest.len() > TAIL_MAX {
            self.bytes.clear();
            self.long = true;
        } else {
            self.bytes.extend_from_slice(rest);
        }
    }
}

/// The resume counters of one worker.
#[derive(Debug)]
pub(crate) struct Stats {
    /// Reconnects after a drop.
    resumes: AtomicU64,
    /// Viewers that resumed at least once.
    viewers: AtomicU64,
    /// Unix ms of the first drop seen.
    drop_first_ms: AtomicI64,
    /// Unix ms at which the last resumed viewer had caught up.
    resume_last_ms: AtomicI64,
    /// Drops by the time slot they happened in: when a draining node's goodbyes went out.
    drops_at: Slots,
    /// Reconnects by time slot.
    resumes_at: Slots,
    /// Reconnects by the address they landed on: where a lost node's viewers went.
    landed: Mutex<BTreeMap<String, u64>>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            resumes: AtomicU64::new(0),
            viewers: AtomicU64::new(0),
            drop_first_ms: AtomicI64::new(i64::MAX),
            resume_last_ms: AtomicI64::new(i64::MIN),
            drops_at: Slots::default(),
            resumes_at: Slots::default(),
            landed: Mutex::default(),
        }
    }
}

impl Stats {
    /// A viewer lost its connection and will resume.
    pub fn dropped(&self) {
        let now = unix_ms();
        self.drop_first_ms.fetch_min(now, Ordering::Relaxed);
        self.drops_at.add(now);
    }

    /// A viewer reconnected at `at_ms` (Unix ms) to `addr`; `first`: its first resume. Until
    /// its first frame says otherwise, it caught up then: at the live edge the server sends
    /// nothing until the next event.
    pub fn resumed(&self, at_ms: i64, first: bool, addr: &str) {
        self.resumes.fetch_add(1, Ordering::Relaxed);
        self.resumes_at.add(at_ms);
        let mut landed = self.landed.lock().unwrap_or_else(|p| p.into_inner());
        match landed.get_mut(addr) {
            Some(n) => *n += 1,
            None => {
                landed.insert(addr.to_owned(), 1);
            }
        }
        drop(landed);
        if first {
            self.viewers.fetch_add(1, Ordering::Relaxed);
        }
        self.resume_last_ms.fetch_max(at_ms, Ordering::Relaxed);
    }

    /// The first frames after a reconnect at `connected_at_ms` arrived (`seen`, empty if only
    /// the final `bye` came): if they are a catch-up (a snapshot, or an event accepted before the
    /// reconnect, or the end of a match that ended meanwhile) rather than the next live event,
    /// the viewer caught up now.
    pub fn first_frames(&self, seen: &[Seen], connected_at_ms: i64) {
        let catch_up = match seen.first() {
            Some(Seen::Event { ts_ms, .. }) => *ts_ms < connected_at_ms,
            Some(Seen::Status { .. }) | None => true,
        };
        if catch_up {
            self.resume_last_ms.fetch_max(unix_ms(), Ordering::Relaxed);
        }
    }

    pub fn report(&self, r: &mut WorkerReport) {
        let some = |v: i64| (v != i64::MAX && v != i64::MIN).then_some(v);
        r.resumes = self.resumes.load(Ordering::Relaxed);
        r.resumed_viewers = self.viewers.load(Ordering::Relaxed);
        r.drop_first_ms = some(self.drop_first_ms.load(Ordering::Relaxed));
        r.resume_last_ms = some(self.resume_last_ms.load(Ordering::Relaxed));
        r.drops_at = self.drops_at.pairs();
        r.resumes_at = self.resumes_at.pairs();
        let landed = self.landed.lock().unwrap_or_else(|p| p.into_inner());
        r.resumed_to = landed.iter().map(|(k, &v)| (k.clone(), v)).collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shutdown() -> Violation {
        Violation::new(Cause::ClosedEarly, "bye shutdown")
    }

    #[test]
    fn a_bye_split_over_reads_is_found_after_the_events_before_it() {
        let stream = b"{\"seq\":7,\"ts\":1,\"kind\":\"corner\",\"data\":{}}\n\
            {\"kind\":\"bye\",\"reason\":\"shutdown\",\"retry_after_ms\":1200,\"try\":\"10.0.0.2:9000\"}\n";
        for cut in 0..stream.len() {
            let (a, b) = stream.split_at(cut);
            let mut tail = LineTail::default();
            let bye = match tail.bye_in(a) {
                Some(bye) => bye,
                None => {
                    tail.push(a);
                    tail.bye_in(b).unwrap_or_else(|| panic!("cut at {cut}"))
                }
            };
            let lost = Lost::of_bye(&shutdown(), Some(bye)).expect("a shutdown is a drop");
            assert_eq!(lost.retry_after_ms, Some(1200));
            assert_eq!(lost.try_addr.as_deref(), Some("10.0.0.2:9000"));
        }
    }

    #[test]
    fn only_a_shutdown_bye_is_a_drop_and_long_lines_are_not_kept() {
        let bye = |text: &str| LineTail::default().bye_in(text.as_bytes());
        let over = bye("{\"kind\":\"bye\",\"reason\":\"match_over\"}\n");
        assert!(Lost::of_bye(&shutdown(), over).is_none());
        let plain = bye("{\"kind\":\"bye\",\"reason\":\"shutdown\"}\n");
        let lost = Lost::of_bye(&shutdown(), plain).unwrap();
        assert_eq!((lost.retry_after_ms, lost.try_addr), (None, None));
        // A gap found on the same read as a later shutdown bye stays a gap.
        let gap = Violation::new(Cause::OutOfOrder, "seq 9 where 8 was expected");
        assert!(Lost::of_bye(&gap, bye("{\"kind\":\"bye\",\"reason\":\"shutdown\"}\n")).is_none());
        // The end of a line too long to be kept is never read as a whole line.
        let mut tail = LineTail::default();
        tail.push(&[b'x'; TAIL_MAX + 1]);
        assert!(tail.bytes.is_empty() && tail.long);
        assert!(tail.bye_in(b"{\"kind\":\"bye\",\"reason\":\"shutdown\"}\n").is_none());
        tail.push(b"\n");
        assert!(!tail.long);
    }

    #[test]
    fn waits_grow_from_the_hint_and_stop_at_the_deadline() {
        let hinted = Lost { why: shutdown(), retry_after_ms: Some(60_000), try_addr: None };
        let away = Away::after(hinted, None);
        assert_eq!(away.next_wait(), Some(RETRY_AFTER_CAP), "the hint is capped");
        let mut away = Away::after(Lost::connection(shutdown()), None);
        assert!(away.next_wait().unwrap() <= JITTER);
        for failures in 1..=12 {
            away.failed(Violation::new(Cause::Refused, "connection refused"));
            let w = away.wait;
            let full = BACKOFF_FIRST * (1 << (failures - 1).min(10));
            assert!(w <= full.min(BACKOFF_MAX) && w >= full.min(BACKOFF_MAX) / 2, "{w:?}");
        }
        // A connection that dropped again at once keeps the deadline and the growing waits.
        let again = Away::after(Lost::connection(shutdown()), Some(away));
        assert_eq!(again.failures, 13);
        assert!(again.wait >= BACKOFF_MAX / 2);
        let mut over = again;
        over.deadline = Instant::now();
        assert_eq!(over.next_wait(), None);
        let v = over.give_up();
        assert_eq!(v.cause, Cause::Refused);
        assert!(
            v.detail.starts_with("not back within 30 s after closed_early: bye shutdown"),
            "{v}"
        );
    }
}
