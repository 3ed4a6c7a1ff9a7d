//! Counting and summing up: histograms (hdrhistogram, shipped between processes as
//! `(value, count)` pairs), failures by cause, tallies per path and per protocol, each worker's
//! final report and the run's [`Summary`] (serialized for `--json`, or [`Summary::text`] for a
//! person).

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize, Serializer};

use super::job::Counters;
use super::{Cause, PathKind, Protocol};

/// Highest value a histogram keeps exactly enough (an hour in microseconds); above it values
/// are clamped, which only a broken run reaches.
const HIST_HIGH: u64 = 3_600_000_000;

/// A histogram with 3 significant digits.
#[derive(Clone, Debug)]
pub struct Hist(Histogram<u64>);

impl Default for Hist {
    fn default() -> Self {
        // Constant bounds that hdrhistogram accepts (low >= 1, high >= 2 * low, sigfig <= 5).
        Hist(Histogram::new_with_bounds(1, HIST_HIGH, 3).expect("constant histogram bounds"))
    }
}

impl Hist {
    pub fn record(&mut self, v: u64) {
        self.0.saturating_record(v);
    }

    #[cfg(test)]
    pub fn len(&self) -> u64 {
        self.0.len()
    }

    /// The recorded values as `(value, count)` pairs: compact, and exact to the histogram's
    /// precision when recorded into another histogram of the same shape.
    pub fn pairs(&self) -> Vec<(u64, u64)> {
        self.0.iter_recorded().map(|v| (v.value_iterated_to(), v.count_at_value())).collect()
    }

    pub fn add_pairs(&mut self, pairs: &[(u64, u64)]) {
        for &(v, n) in pairs {
            let _ = self.0.record_n(v.min(HIST_HIGH), n);
        }
    }

    /// p50/p90/p99/p99.9/max, each divided by `per_ms` (1000 for microseconds).
    pub fn percentiles(&self, per_ms: f64) -> Percentiles {
        if self.0.is_empty() {
            return Percentiles::default();
        }
        let q = |q: f64| round3(self.0.value_at_quantile(q) as f64 / per_ms);
        Percentiles {
            count: self.0.len(),
            mean: round3(self.0.mean() / per_ms),
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
            p999: q(0.999),
            max: round3(self.0.max() as f64 / per_ms),
        }
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Percentiles in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    pub count: u64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

/// Failures per cause; serialized as a map with every cause, in [`Cause::ALL`] order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(from = "BTreeMap<String, u64>")]
pub struct CauseCounts([u64; Cause::ALL.len()]);

impl CauseCounts {
    pub fn add(&mut self, cause: Cause, n: u64) {
        self.0[cause as usize] += n;
    }

    pub fn get(&self, cause: Cause) -> u64 {
        self.0[cause as usize]
    }

    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }
}

impl From<BTreeMap<String, u64>> for CauseCounts {
    fn from(m: BTreeMap<String, u64>) -> Self {
        let mut c = CauseCounts::default();
        for cause in Cause::ALL {
            c.add(cause, m.get(cause.as_str()).copied().unwrap_or(0));
        }
        c
    }
}

impl Serialize for CauseCounts {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(Cause::ALL.iter().map(|c| (c.as_str(), self.get(*c))))
    }
}

/// How the viewers of one path fared.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathTally {
    pub viewers: u64,
    pub complete: u64,
    pub failed: u64,
}

/// Tallies per path; serialized as a map from path name, in [`PathKind::ALL`] order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(from = "BTreeMap<String, PathTally>")]
pub struct PathTallies(pub [PathTally; 5]);

impl From<BTreeMap<String, PathTally>> for PathTallies {
    fn from(m: BTreeMap<String, PathTally>) -> Self {
        let mut t = PathTallies::default();
        for p in PathKind::ALL {
            t.0[p as usize] = m.get(p.as_str()).copied().unwrap_or_default();
        }
        t
    }
}

impl Serialize for PathTallies {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(PathKind::ALL.iter().map(|p| (p.as_str(), self.0[*p as usize])))
    }
}

impl PathTallies {
    fn add(&mut self, o: &PathTallies) {
        for (a, b) in self.0.iter_mut().zip(o.0.iter()) {
            a.viewers += b.viewers;
            a.complete += b.complete;
            a.failed += b.failed;
        }
    }
}

/// How the viewers of one protocol fared, as a worker counts them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProtocolTally {
    pub viewers: u64,
    pub complete: u64,
    pub failed: u64,
    pub deliveries: u64,
    /// Delivery latencies in milliseconds, as `(value, count)` pairs.
    pub latency_ms: Vec<(u64, u64)>,
}

/// Tallies per protocol, indexed like [`Protocol::ALL`]; serialized as a map from protocol
/// name, with only the protocols that had viewers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(from = "BTreeMap<String, ProtocolTally>")]
pub struct ProtocolTallies(pub [ProtocolTally; 4]);

impl From<BTreeMap<String, ProtocolTally>> for ProtocolTallies {
    fn from(mut m: BTreeMap<String, ProtocolTally>) -> Self {
        let mut t = ProtocolTallies::default();
        for p in Protocol::ALL {
            t.0[p as usize] = m.remove(p.as_str()).unwrap_or_default();
        }
        t
    }
}

impl Serialize for ProtocolTallies {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let present = Protocol::ALL.iter().filter(|p| self.0[**p as usize].viewers > 0);
        s.collect_map(present.map(|p| (p.as_str(), &self.0[*p as usize])))
    }
}

/// How the viewers of one protocol fared in a run.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ProtocolSummary {
    pub viewers: u64,
    pub complete: u64,
    pub failed: u64,
    pub deliveries: u64,
    pub latency_ms: Percentiles,
}

/// Results per protocol; serialized as a map from protocol name, with only the protocols that
/// had viewers, in [`Protocol::ALL`] order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProtocolSummaries(pub [ProtocolSummary; 4]);

impl Serialize for ProtocolSummaries {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let present = Protocol::ALL.iter().filter(|p| self.0[**p as usize].viewers > 0);
        s.collect_map(present.map(|p| (p.as_str(), &self.0[*p as usize])))
    }
}

impl ProtocolSummaries {
    fn build(reports: &[WorkerReport]) -> ProtocolSummaries {
        let mut out = ProtocolSummaries::default();
        for p in Protocol::ALL {
            let (sum, mut latency) = (&mut out.0[p as usize], Hist::default());
            for t in reports.iter().map(|r| &r.protocols.0[p as usize]) {
                sum.viewers += t.viewers;
                sum.complete += t.complete;
                sum.failed += t.failed;
                sum.deliveries += t.deliveries;
                latency.add_pairs(&t.latency_ms);
            }
            sum.latency_ms = latency.percentiles(1.0);
        }
        out
    }

    /// The protocols that had viewers.
    fn present(&self) -> impl Iterator<Item = (Protocol, &ProtocolSummary)> {
        Protocol::ALL.into_iter().map(|p| (p, &self.0[p as usize])).filter(|(_, s)| s.viewers > 0)
    }
}

/// Most failure descriptions a worker keeps, to show what went wrong without flooding.
pub const MAX_SAMPLES: usize = 10;

/// Everything one worker measured.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct WorkerReport {
    pub worker: usize,
    pub counters: Counters,
    pub failures: CauseCounts,
    pub paths: PathTallies,
    /// MatchStream viewers per protocol (none for Redis).
    #[serde(default)]
    pub protocols: ProtocolTallies,
    /// Connections made, reconnects included.
    pub connects: u64,
    /// Connect times in microseconds (TCP connect + line sent to first byte).
    pub connect_us: Vec<(u64, u64)>,
    /// Delivery latencies in milliseconds (receive time minus the event's time).
    pub latency_ms: Vec<(u64, u64)>,
    /// Unix ms bounds of the connects and of the deliveries, to compute rates across workers.
    pub first_connect_start_ms: Option<i64>,
    pub last_connect_done_ms: Option<i64>,
    pub first_delivery_ms: Option<i64>,
    pub last_delivery_ms: Option<i64>,
    /// The run was stopped (duration limit or told to) before every viewer was done.
    pub stopped: bool,
    pub samples: Vec<String>,
    /// `--resume`: reconnects after a lost connection, the viewers that made them, the Unix ms
    /// of the first drop and of the moment the last resumed viewer had caught up.
    pub resumes: u64,
    pub resumed_viewers: u64,
    pub drop_first_ms: Option<i64>,
    pub resume_last_ms: Option<i64>,
    /// `--resume`: drops and reconnects by 100 ms slot (Unix ms of the slot's start, count),
    /// and reconnects by the address they landed on.
    pub drops_at: Vec<(i64, u64)>,
    pub resumes_at: Vec<(i64, u64)>,
    pub resumed_to: Vec<(String, u64)>,
}

/// What describes a run besides its measurements.
#[derive(Clone, Debug)]
pub struct RunInfo {
    pub system: &'static str,
    /// The protocol, or the mix of them (`v2:50,ws:30,sse:20`).
    pub protocol: String,
    pub viewers: u64,
    pub workers: usize,
    pub concurrency: usize,
    pub hold: bool,
    pub latency_resolution_ms: u64,
    pub elapsed_ms: u64,
    pub all_connected_after_ms: Option<u64>,
}

/// The result of a viewer (or subscriber) run: the JSON object of `--json`.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    /// `matchstream` or `redis`.
    pub system: &'static str,
    /// `v1`, `v2`, `ws`, `sse` or `resp`; a mix of viewers' protocols as `v2:50,ws:30,sse:20`
    /// (percentages).
    pub protocol: String,
    pub viewers: u64,
    pub workers: usize,
    pub concurrency: usize,
    pub hold: bool,
    pub complete: u64,
    pub failed: u64,
    pub failures: CauseCounts,
    pub paths: PathTallies,
    /// MatchStream viewers per protocol (each protocol that had viewers; none for Redis).
    pub protocols: ProtocolSummaries,
    pub connects: u64,
    pub connect_ms: Percentiles,
    pub latency_ms: Percentiles,
    /// 1000 for v1, whose header time has one-second resolution (use v2 for latency).
    pub latency_resolution_ms: u64,
    pub deliveries: u64,
    /// Deliveries over the time from the first to the last delivery.
    pub deliveries_per_s: f64,
    /// Connects over the time from the first connect start to the last connect done.
    pub connects_per_s: f64,
    /// When every viewer was connected at once, ms after the start (if it happened).
    pub all_connected_after_ms: Option<u64>,
    pub elapsed_ms: u64,
    /// The run was stopped (duration limit, signal, end of hold) before every viewer was done.
    pub stopped: bool,
    /// `--resume`: reconnects after a lost connection (without `bye match_over`).
    pub resumes: u64,
    /// Viewers that resumed at least once.
    pub resumed_viewers: u64,
    /// Unix ms of the first lost connection seen.
    pub drop_first_ms: Option<i64>,
    /// Unix ms at which the last resumed viewer had caught up: its first frame after the
    /// reconnect arrived, or it reconnected, if it was at the live edge then.
    pub resume_last_ms: Option<i64>,
    /// Lost connections by the 100 ms slot they were lost in: `[slot start (Unix ms), count]`
    /// (a draining node's goodbyes spread over its window show here).
    pub drops_at: Vec<(i64, u64)>,
    /// Reconnects by the 100 ms slot they were made in.
    pub resumes_at: Vec<(i64, u64)>,
    /// Reconnects by the address they landed on (`host:port`; for WebSocket and SSE, the HTTP
    /// address): where a lost node's viewers went.
    pub resumed_to: BTreeMap<String, u64>,
    pub failure_samples: Vec<String>,
}

impl Summary {
    /// Adds up the workers' reports. `lost` are the viewer counts of workers that died
    /// without one; they count as failed.
    pub fn build(info: RunInfo, reports: &[WorkerReport], lost: &[(usize, u64)]) -> Summary {
        let (mut connect, mut latency) = (Hist::default(), Hist::default());
        let mut failures = CauseCounts::default();
        let mut paths = PathTallies::default();
        let mut counters = Counters::default();
        let mut samples = Vec::new();
        let (mut connects, mut stopped) = (0, false);
        let (mut resumes, mut resumed_viewers) = (0, 0);
        let (mut drops_at, mut resumes_at) = (BTreeMap::new(), BTreeMap::new());
        let mut resumed_to = BTreeMap::<String, u64>::new();
        let span = |f: fn(&WorkerReport) -> Option<i64>, min: bool| {
            let it = reports.iter().filter_map(f);
            if min {
                it.min()
            } else {
                it.max()
            }
        };
        for r in reports {
            connect.add_pairs(&r.connect_us);
            latency.add_pairs(&r.latency_ms);
            failures.add_all(&r.failures);
            paths.add(&r.paths);
            counters.add(&r.counters);
            connects += r.connects;
            stopped |= r.stopped;
            resumes += r.resumes;
            resumed_viewers += r.resumed_viewers;
            for (slots, add) in [(&mut drops_at, &r.drops_at), (&mut resumes_at, &r.resumes_at)] {
                for &(slot, n) in add {
                    *slots.entry(slot).or_default() += n;
                }
            }
            for (addr, n) in &r.resumed_to {
                *resumed_to.entry(addr.clone()).or_default() += n;
            }
            samples.extend(
                r.samples.iter().take(MAX_SAMPLES - samples.len().min(MAX_SAMPLES)).cloned(),
            );
        }
        for &(worker, n) in lost {
            failures.add(Cause::WorkerLost, n);
            samples.push(format!("worker {worker} died without a report ({n} viewers)"));
        }
        samples.truncate(MAX_SAMPLES);
        let per_s = |n: u64, from: Option<i64>, to: Option<i64>| match (from, to) {
            (Some(a), Some(b)) if n > 0 => n as f64 / ((b - a).max(1) as f64 / 1000.0),
            _ => 0.0,
        };
        let deliveries_per_s = per_s(
            counters.deliveries,
            span(|r| r.first_delivery_ms, true),
            span(|r| r.last_delivery_ms, false),
        );
        let connects_per_s = per_s(
            connects,
            span(|r| r.first_connect_start_ms, true),
            span(|r| r.last_connect_done_ms, false),
        );
        Summary {
            system: info.system,
            protocol: info.protocol,
            viewers: info.viewers,
            workers: info.workers,
            concurrency: info.concurrency,
            hold: info.hold,
            complete: counters.complete,
            failed: failures.total(),
            failures,
            paths,
            protocols: ProtocolSummaries::build(reports),
            connects,
            connect_ms: connect.percentiles(1000.0),
            latency_ms: latency.percentiles(1.0),
            latency_resolution_ms: info.latency_resolution_ms,
            deliveries: counters.deliveries,
            deliveries_per_s: round3(deliveries_per_s),
            connects_per_s: round3(connects_per_s),
            all_connected_after_ms: info.all_connected_after_ms,
            elapsed_ms: info.elapsed_ms,
            stopped,
            resumes,
            resumed_viewers,
            drop_first_ms: span(|r| r.drop_first_ms, true),
            resume_last_ms: span(|r| r.resume_last_ms, false),
            drops_at: drops_at.into_iter().collect(),
            resumes_at: resumes_at.into_iter().collect(),
            resumed_to,
            failure_samples: samples,
        }
    }

    /// The summary for a person, a few lines.
    pub fn text(&self) -> String {
        let mut out = format!(
            "{} {}: {} viewers over {} worker(s), {} connecting at once{}: {} complete, {} failed\n",
            self.system,
            self.protocol,
            self.viewers,
            self.workers,
            self.concurrency,
            if self.hold { ", holding" } else { "" },
            self.complete,
            self.failed
        );
        let causes: Vec<String> = Cause::ALL
            .iter()
            .filter(|c| self.failures.get(**c) > 0)
            .map(|c| format!("{} {}", c.as_str(), self.failures.get(*c)))
            .collect();
        if !causes.is_empty() {
            out += &format!("  failed by cause: {}\n", causes.join(", "));
        }
        let paths: Vec<String> = PathKind::ALL
            .iter()
            .map(|p| (p, self.paths.0[*p as usize]))
            .filter(|(_, t)| t.viewers > 0)
            .map(|(p, t)| format!("{} {}/{}", p.as_str(), t.complete, t.viewers))
            .collect();
        out += &format!("  complete per path: {}\n", paths.join(", "));
        let pct = |p: &Percentiles| {
            format!("p50 {} p90 {} p99 {} p99.9 {} max {}", p.p50, p.p90, p.p99, p.p999, p.max)
        };
        if self.protocols.present().count() > 1 {
            for (p, s) in self.protocols.present() {
                out += &format!(
                    "  {}: {}/{} complete, {} deliveries, latency ms p50 {} p99 {} max {}\n",
                    p.as_str(),
                    s.complete,
                    s.viewers,
                    s.deliveries,
                    s.latency_ms.p50,
                    s.latency_ms.p99,
                    s.latency_ms.max
                );
            }
        }
        out += &format!(
            "  connect ms: {} ({} connects, {:.0}/s)\n",
            pct(&self.connect_ms),
            self.connects,
            self.connects_per_s
        );
        out += &format!(
            "  latency ms: {} ({} deliveries, {:.0}/s){}\n",
            pct(&self.latency_ms),
            self.deliveries,
            self.deliveries_per_s,
            if self.latency_resolution_ms > 1 {
                " [v1 header times have 1 s resolution: use v2 to measure latency]"
            } else {
                ""
            }
        );
        if let Some(first) = self.drop_first_ms {
            out += &match self.resume_last_ms {
                Some(last) => format!(
                    "  resumed {} viewers ({} reconnects); the last caught up {} ms after the \
                     first drop\n",
                    self.resumed_viewers,
                    self.resumes,
                    (last - first).max(0)
                ),
                None => "  connections were lost, and no viewer resumed\n".to_owned(),
            };
            if let (Some(&(first_slot, _)), Some(&(last_slot, _))) =
                (self.drops_at.first(), self.drops_at.last())
            {
                out += &format!(
                    "  {} drops over {} ms\n",
                    self.drops_at.iter().map(|(_, n)| n).sum::<u64>(),
                    last_slot - first_slot + super::resume::SLOT_MS
                );
            }
            if !self.resumed_to.is_empty() {
                let to: Vec<String> =
                    self.resumed_to.iter().map(|(a, n)| format!("{a} {n}")).collect();
                out += &format!("  reconnects landed on: {}\n", to.join(", "));
            }
        }
        if self.stopped {
            out += "  stopped before every viewer was done\n";
        }
        for s in &self.failure_samples {
            out += &format!("  e.g. {s}\n");
        }
        out
    }
}

impl CauseCounts {
    fn add_all(&mut self, o: &CauseCounts) {
        for (a, b) in self.0.iter_mut().zip(o.0.iter()) {
            *a += b;
        }
    }
}

#[cfg(test)]
mod tests;
