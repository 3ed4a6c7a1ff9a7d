//! The node's metrics (SPEC 9), served as Prometheus text at `GET /metrics`. Names are constants
//! here, and only here. Each node has its own recorder (not the process-wide one: a test runs
//! several nodes in one process) and the parts that count hold plain handles (an atomic add):
//! per-delivery counts are added once per burst, never per viewer write. The delivery lag is a
//! histogram of our own ([`LagHistogram`]): the exporter's histograms keep every sample until
//! the next scrape, which would be one per delivery. The figures `/ops` samples every second are
//! also kept as plain atomics and read as a typed [`Figures`], not parsed back from the text.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use metrics::{Counter, Gauge, Histogram, Key, Label, Metadata, Recorder, Unit};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

use crate::hub::Format;
use crate::wire::ByeReason;

/// Metric names (SPEC 9).
pub(crate) mod names {
    pub(crate) const VIEWERS: &str = "matchstream_viewers";
    pub(crate) const MATCHES_LIVE: &str = "matchstream_matches_live";
    pub(crate) const MATCHES_IN_MEMORY: &str = "matchstream_matches_in_memory";
    pub(crate) const EVENTS_PUBLISHED: &str = "matchstream_events_published_total";
    pub(crate) const DELIVERIES: &str = "matchstream_deliveries_total";
    pub(crate) const VIEWER_WRITES: &str = "matchstream_viewer_writes_total";
    pub(crate) const VIEWER_CONNECTS: &str = "matchstream_viewer_connects_total";
    pub(crate) const VIEWER_DISCONNECTS: &str = "matchstream_viewer_disconnects_total";
    pub(crate) const ACCEPT_ERRORS: &str = "matchstream_accept_errors_total";
    pub(crate) const PUBLISH_SECONDS: &str = "matchstream_publish_seconds";
    pub(crate) const DELIVERY_LAG_SECONDS: &str = "matchstream_delivery_lag_seconds";
    pub(crate) const VIEWERS_PARKED: &str = "matchstream_viewers_parked";
    pub(crate) const VIEWER_HANDSHAKES: &str = "matchstream_viewer_handshakes";
    pub(crate) const LIMIT_REFUSALS: &str = "matchstream_limit_refusals_total";
    pub(crate) const LOG_REWINDS: &str = "matchstream_log_rewinds_total";
    /// Always 1; its labels say what runs: `version` and the `commit` it was built from.
    pub(crate) const BUILD_INFO: &str = "matchstream_build_info";
    // And the standard process_* metrics of metrics-process (resident memory, open files and
    // their limit, CPU seconds, threads...), without a prefix.
}

/// The `transport` label of each wire format, indexed by `Format as usize`.
pub(crate) const TRANSPORTS: [&str; 4] = ["tcp_v1", "tcp_v2", "ws", "sse"];

/// How many reasons a viewer leaves for: the `bye` reasons and hangup.
const REASONS: usize = ByeReason::ALL.len() + 1;

/// Why a viewer left: the `bye` reasons, plus `hangup` (it went away, or closed its side).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Left {
    Bye(ByeReason),
    Hangup,
}

impl Left {
    pub(crate) const fn index(self) -> usize {
        match self {
            Left::Bye(r) => r as usize,
            Left::Hangup => ByeReason::ALL.len(),
        }
    }
}

/// A limit of SPEC 10 that ended a connection, for `matchstream_limit_refusals_total{limit}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// Too many connections from one address still sending their connect line.
    HandshakesPerAddress,
    /// A connect line not sent within `--connect-timeout`.
    ConnectTimeout,
    /// A WebSocket client frame not whole within `--ws-frame-timeout`.
    WsFrameTimeout,
    /// Too many HTTP connections from one address (`--http-max-per-address`).
    HttpPerAddress,
    /// An HTTP connection's head, idle or write deadline passed (`--http-head-timeout`,
    /// `--http-idle-timeout`).
    HttpDeadline,
    /// A request body over `--http-max-body`.
    HttpBodySize,
    /// A request body not in within `--http-body-timeout`.
    HttpBodyTimeout,
}

impl Limit {
    pub const ALL: [Limit; 7] = [
        Limit::HandshakesPerAddress,
        Limit::ConnectTimeout,
        Limit::WsFrameTimeout,
        Limit::HttpPerAddress,
        Limit::HttpDeadline,
        Limit::HttpBodySize,
        Limit::HttpBodyTimeout,
    ];

    /// The `limit` label.
    pub const fn as_str(self) -> &'static str {
        match self {
            Limit::HandshakesPerAddress => "handshakes_per_address",
            Limit::ConnectTimeout => "connect_timeout",
            Limit::WsFrameTimeout => "ws_frame_timeout",
            Limit::HttpPerAddress => "http_per_address",
            Limit::HttpDeadline => "http_deadline",
            Limit::HttpBodySize => "http_body_size",
            Limit::HttpBodyTimeout => "http_body_timeout",
        }
    }
}

static META: Metadata<'static> =
    Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

/// Latency buckets, in seconds: from a fast fsync to a viewer many seconds behind.
const BUCKETS: [f64; 14] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Every metric of one node.
pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    process: metrics_process::Collector,
    viewers: [Gauge; 4],
    pub matches_live: Gauge,
    /// Matches held in memory: not ended, or ended less than `--keep-ended` ago (SPEC 10).
    pub matches_in_memory: Gauge,
    events_published: Counter,
    deliveries: [Counter; 4],
    writes: [Counter; 4],
    connects: [Counter; 4],
    /// By [`Left::index`]: the bye reasons, then hangup.
    disconnects: [Counter; REASONS],
    accept_errors: Counter,
    /// What `/ops` samples, as atomics beside the exporter's handles (which cannot be read).
    tally: Tally,
    /// Viewers parked at the live edge (in a shard, without a task of their own).
    pub parked: Gauge,
    /// Viewer connections accepted that have not sent their connect line yet.
    pub handshakes: Gauge,
    /// By `Limit as usize`.
    limit_refusals: [Counter; Limit::ALL.len()],
    pub publish_seconds: Histogram,
    pub delivery_lag: LagHistogram,
    /// Matches read again because the store held less than this node applied (SPEC 7).
    pub log_rewinds: Counter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let mut builder = PrometheusBuilder::new();
        builder = builder
            .set_buckets_for_metric(Matcher::Full(names::PUBLISH_SECONDS.to_owned()), &BUCKETS)
            .expect("BUCKETS is not empty");
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        let describe = |name: &'static str, unit: Unit, help: &'static str| {
            recorder.describe_counter(name.into(), Some(unit), help.into());
        };
        describe(names::VIEWERS, Unit::Count, "Viewers connected now, by transport.");
        describe(names::MATCHES_LIVE, Unit::Count, "Matches under way (started, not ended).");
        describe(
            names::MATCHES_IN_MEMORY,
            Unit::Count,
            "Matches held in memory (ended ones leave it --keep-ended after their end).",
        );
        describe(names::EVENTS_PUBLISHED, Unit::Count, "Events accepted and durable.");
        describe(names::DELIVERIES, Unit::Count, "Frames written to viewers, by transport.");
        describe(
            names::VIEWER_WRITES,
            Unit::Count,
            "Socket writes to viewers, by transport (one write may carry several frames).",
        );
        describe(names::VIEWER_CONNECTS, Unit::Count, "Viewers that joined a match, by transport.");
        describe(
            names::VIEWER_DISCONNECTS,
            Unit::Count,
            "Viewers that left or were refused, by bye reason (or hangup).",
        );
        describe(names::ACCEPT_ERRORS, Unit::Count, "Failed accepts on viewer and HTTP ports.");
        describe(
            names::VIEWERS_PARKED,
            Unit::Count,
            "Viewers at the live edge parked in a shard (no task of their own).",
        );
        describe(
            names::VIEWER_HANDSHAKES,
            Unit::Count,
            "Viewer connections accepted that have not sent their connect line yet.",
        );
        describe(
            names::LIMIT_REFUSALS,
            Unit::Count,
            "Connections and requests ended by a limit (HARDENING.md), by limit.",
        );
        describe(names::PUBLISH_SECONDS, Unit::Seconds, "Publish request received to durable.");
        describe(
            names::LOG_REWINDS,
            Unit::Count,
            "Matches read again because the store came back holding less than this node applied.",
        );
        recorder.describe_gauge(
            names::BUILD_INFO.into(),
            None,
            "Always 1: the version of the node and the commit it was built from.".into(),
        );
        let process = metrics_process::Collector::default();
        metrics::with_local_recorder(&recorder, || process.describe());
        let by_transport = |name: &'static str, f: &dyn Fn(&Key) -> Counter| -> [Counter; 4] {
            TRANSPORTS.map(|t| f(&Key::from_parts(name, vec![Label::new("transport", t)])))
        };
        let counter = |key: &Key| recorder.register_counter(key, &META);
        let viewers = TRANSPORTS.map(|t| {
            recorder.register_gauge(
                &Key::from_parts(names::VIEWERS, vec![Label::new("transport", t)]),
                &META,
            )
        });
        let mut reasons: Vec<&'static str> = ByeReason::ALL.iter().map(|r| r.as_str()).collect();
        reasons.push("hangup");
        let disconnects: [Counter; REASONS] = std::array::from_fn(|i| {
            counter(&Key::from_parts(
                names::VIEWER_DISCONNECTS,
                vec![Label::new("reason", reasons[i])],
            ))
        });
        let limit_refusals = Limit::ALL.map(|l| {
            counter(&Key::from_parts(names::LIMIT_REFUSALS, vec![Label::new("limit", l.as_str())]))
        });
        let gauge = |name: &'static str| recorder.register_gauge(&Key::from_name(name), &META);
        let metrics = Metrics {
            viewers,
            parked: gauge(names::VIEWERS_PARKED),
            handshakes: gauge(names::VIEWER_HANDSHAKES),
            limit_refusals,
            matches_live: recorder.register_gauge(&Key::from_name(names::MATCHES_LIVE), &META),
            matches_in_memory: recorder
                .register_gauge(&Key::from_name(names::MATCHES_IN_MEMORY), &META),
            events_published: counter(&Key::from_name(names::EVENTS_PUBLISHED)),
            deliveries: by_transport(names::DELIVERIES, &counter),
            writes: by_transport(names::VIEWER_WRITES, &counter),
            connects: by_transport(names::VIEWER_CONNECTS, &counter),
            disconnects,
            accept_errors: counter(&Key::from_name(names::ACCEPT_ERRORS)),
            tally: Tally::default(),
            publish_seconds: recorder
                .register_histogram(&Key::from_name(names::PUBLISH_SECONDS), &META),
            delivery_lag: LagHistogram::default(),
            log_rewinds: counter(&Key::from_name(names::LOG_REWINDS)),
            recorder,
            handle,
            process,
        };
        // Every series exists from the start, at zero.
        let counters = metrics.disconnects.iter().chain(&metrics.deliveries).chain(&metrics.writes);
        for c in counters.chain(&metrics.connects).chain(&metrics.limit_refusals) {
            c.increment(0);
        }
        metrics.events_published.increment(0);
        metrics.accept_errors.increment(0);
        metrics.log_rewinds.increment(0);
        for g in &metrics.viewers {
            g.set(0.0);
        }
        metrics.matches_live.set(0.0);
        metrics.matches_in_memory.set(0.0);
        metrics.parked.set(0.0);
        metrics.handshakes.set(0.0);
        Arc::new(metrics)
    }

    /// The Prometheus text exposition, with the process figures read now.
    pub fn render(&self) -> String {
        metrics::with_local_recorder(&self.recorder, || self.process.collect());
        let mut text = self.handle.render();
        self.delivery_lag.render(&mut text);
        text
    }

    /// The figures `/ops` samples, read now (the process's from `/proc`).
    pub fn figures(&self) -> Figures {
        let t = &self.tally;
        let process = metrics_process::collector::collect();
        Figures {
            viewers: std::array::from_fn(|i| t.viewers[i].load(Ordering::Relaxed).max(0) as u64),
            events_published: t.events_published.load(Ordering::Relaxed),
            deliveries: t.deliveries.load(Ordering::Relaxed),
            too_slow: t.too_slow.load(Ordering::Relaxed),
            accept_errors: t.accept_errors.load(Ordering::Relaxed),
            lag_counts: std::array::from_fn(|i| {
                self.delivery_lag.counts[i].load(Ordering::Relaxed)
            }),
            rss_bytes: process.resident_memory_bytes.unwrap_or(0),
            open_fds: process.open_fds.unwrap_or(0),
            max_fds: process.max_fds.unwrap_or(0),
        }
    }

    /// Says what runs: `matchstream_build_info{version,commit} 1`.
    pub fn set_build_info(&self, version: &str, commit: &str) {
        let labels = vec![
            Label::new("version", version.to_owned()),
            Label::new("commit", commit.to_owned()),
        ];
        let key = Key::from_parts(names::BUILD_INFO, labels);
        self.recorder.register_gauge(&key, &META).set(1.0);
    }

    /// A viewer joined a match over `format`.
    pub fn joined(&self, format: Format) {
        self.connects[format as usize].increment(1);
        self.viewers[format as usize].increment(1.0);
        self.tally.viewers[format as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// A viewer that had joined over `format` left, for `why`.
    pub(crate) fn left(&self, format: Format, why: Left) {
        self.viewers[format as usize].decrement(1.0);
        self.tally.viewers[format as usize].fetch_sub(1, Ordering::Relaxed);
        self.disconnects[why.index()].increment(1);
        if why == Left::Bye(ByeReason::TooSlow) {
            self.tally.too_slow.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// `n` events were accepted and are durable.
    pub fn published(&self, n: u64) {
        self.events_published.increment(n);
        self.tally.events_published.fetch_add(n, Ordering::Relaxed);
    }

    /// An accept failed on a viewer or HTTP port.
    pub fn accept_failed(&self) {
        self.accept_errors.increment(1);
        self.tally.accept_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// A viewer was refused before it joined (`bad_request`, `not_found`, `full`).
    pub fn refused(&self, reason: ByeReason) {
        self.disconnects[Left::Bye(reason).index()].increment(1);
    }

    /// The counter of one limit, for a holder that counts without the node's metrics at hand.
    pub fn limit_counter(&self, limit: Limit) -> metrics::Counter {
        self.limit_refusals[limit as usize].clone()
    }

    /// A connection was ended by `limit`.
    pub fn limit_refused(&self, limit: Limit) {
        self.limit_refusals[limit as usize].increment(1);
    }

    /// `frames` frames were written to viewers of `format` in `writes` socket writes.
    pub fn delivered(&self, format: Format, frames: u64, writes: u64) {
        self.deliveries[format as usize].increment(frames);
        self.writes[format as usize].increment(writes);
        self.tally.deliveries.fetch_add(frames, Ordering::Relaxed);
    }
}

/// The atomics behind [`Figures`].
#[derive(Default)]
struct Tally {
    viewers: [AtomicI64; 4],
    events_published: AtomicU64,
    deliveries: AtomicU64,
    too_slow: AtomicU64,
    accept_errors: AtomicU64,
}

/// What `/ops` samples of a node, at one moment: totals since the node started (rates come from
/// two of them), viewers now, and the process's memory and descriptors.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Figures {
    /// Viewers connected now, by `Format as usize` (the order of [`TRANSPORTS`]).
    pub viewers: [u64; 4],
    pub events_published: u64,
    /// Frames written to viewers, every transport.
    pub deliveries: u64,
    /// Viewers cut off as `too_slow`.
    pub too_slow: u64,
    pub accept_errors: u64,
    /// Deliveries at the live edge per lag bucket ([`LAG_BUCKETS`], then above the last).
    pub lag_counts: [u64; LAG_BUCKETS.len() + 1],
    pub rss_bytes: u64,
    pub open_fds: u64,
    pub max_fds: u64,
}

/// The upper bounds of the delivery lag's buckets, in seconds.
pub(crate) const LAG_BUCKETS: [f64; BUCKETS.len()] = BUCKETS;

/// `matchstream_delivery_lag_seconds` over [`BUCKETS`]: a count per bucket, the sum and the
/// count, each an atomic. Recording a lag for all the viewers a burst reached is three adds.
pub struct LagHistogram {
    /// Per bucket of [`BUCKETS`], then above the last (not cumulative).
    counts: [AtomicU64; BUCKETS.len() + 1],
    /// The sum of the lags, in microseconds.
    sum_us: AtomicU64,
}

impl Default for LagHistogram {
    fn default() -> Self {
        LagHistogram {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_us: AtomicU64::new(0),
        }
    }
}

impl LagHistogram {
    /// `count` deliveries of an event `seconds` after its `ts`.
    pub fn record_many(&self, seconds: f64, count: usize) {
        let bucket = BUCKETS.iter().position(|b| seconds <= *b).unwrap_or(BUCKETS.len());
        let count = count as u64;
        self.counts[bucket].fetch_add(count, Ordering::Relaxed);
        let us = (seconds.max(0.0) * 1e6) as u64;
        self.sum_us.fetch_add(us.saturating_mul(count), Ordering::Relaxed);
    }

    /// Appends the histogram in the Prometheus text format.
    fn render(&self, out: &mut String) {
        let name = names::DELIVERY_LAG_SECONDS;
        let _ = writeln!(
            out,
            "# HELP {name} Event ts to written to a viewer's socket, for viewers at the live edge.\n\
             # TYPE {name} histogram"
        );
        let mut total = 0;
        for (i, count) in self.counts.iter().enumerate() {
            total += count.load(Ordering::Relaxed);
            match BUCKETS.get(i) {
                Some(le) => writeln!(out, "{name}_bucket{{le=\"{le}\"}} {total}"),
                None => writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {total}"),
            }
            .unwrap_or_default();
        }
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {total}\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str, series: &str) -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
            .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
    }

    #[test]
    fn every_documented_metric_is_exposed_from_the_start() {
        let text = Metrics::new().render();
        for name in [
            names::VIEWERS,
            names::MATCHES_LIVE,
            names::MATCHES_IN_MEMORY,
            names::EVENTS_PUBLISHED,
            names::DELIVERIES,
            names::VIEWER_WRITES,
            names::VIEWER_CONNECTS,
            names::VIEWER_DISCONNECTS,
            names::ACCEPT_ERRORS,
            names::VIEWERS_PARKED,
            names::VIEWER_HANDSHAKES,
            names::LIMIT_REFUSALS,
        ]
        .into_iter()
        .chain([
            "process_resident_memory_bytes",
            "process_open_fds",
            "process_cpu_seconds_total",
        ]) {
            assert!(text.lines().any(|l| l.starts_with(name)), "{name} missing:\n{text}");
        }
        for t in TRANSPORTS {
            assert_eq!(value(&text, &format!("{}{{transport=\"{t}\"}}", names::VIEWERS)), 0.0);
        }
        assert!(text.contains("reason=\"hangup\""));
        for l in Limit::ALL {
            let series = format!("{}{{limit=\"{}\"}}", names::LIMIT_REFUSALS, l.as_str());
            assert_eq!(value(&text, &series), 0.0);
        }
    }

    #[test]
    fn build_info_names_the_version_and_commit() {
        let m = Metrics::new();
        m.set_build_info("1.2.3", "0123456789ab");
        let text = m.render();
        let series = "matchstream_build_info{version=\"1.2.3\",commit=\"0123456789ab\"}";
        assert_eq!(value(&text, series), 1.0, "{text}");
        assert!(text.contains("# TYPE matchstream_build_info gauge"), "{text}");
    }

    #[test]
    fn viewers_and_reasons_move() {
        let m = Metrics::new();
        m.joined(Format::Ws);
        m.joined(Format::Ws);
        m.left(Format::Ws, Left::Bye(ByeReason::TooSlow));
        m.refused(ByeReason::Full);
        m.limit_refused(Limit::WsFrameTimeout);
        m.delivered(Format::Sse, 7, 2);
        m.publish_seconds.record(0.002);
        m.delivery_lag.record_many(0.02, 3);
        let text = m.render();
        assert_eq!(value(&text, "matchstream_viewers{transport=\"ws\"}"), 1.0);
        assert_eq!(value(&text, "matchstream_viewer_connects_total{transport=\"ws\"}"), 2.0);
        assert_eq!(value(&text, "matchstream_viewer_disconnects_total{reason=\"too_slow\"}"), 1.0);
        assert_eq!(value(&text, "matchstream_viewer_disconnects_total{reason=\"full\"}"), 1.0);
        let frame_timeouts = "matchstream_limit_refusals_total{limit=\"ws_frame_timeout\"}";
        assert_eq!(value(&text, frame_timeouts), 1.0);
        assert_eq!(value(&text, "matchstream_deliveries_total{transport=\"sse\"}"), 7.0);
        assert_eq!(value(&text, "matchstream_viewer_writes_total{transport=\"sse\"}"), 2.0);
        assert_eq!(value(&text, "matchstream_publish_seconds_count"), 1.0);
        assert_eq!(value(&text, "matchstream_delivery_lag_seconds_count"), 3.0);
        assert_eq!(value(&text, "matchstream_delivery_lag_seconds_bucket{le=\"0.025\"}"), 3.0);
        // Its own histogram: cumulative buckets, the sum and the count, in the text format.
        m.delivery_lag.record_many(20.0, 1);
        let text = m.render();
        assert_eq!(value(&text, "matchstream_delivery_lag_seconds_bucket{le=\"0.01\"}"), 0.0);
        assert_eq!(value(&text, "matchstream_delivery_lag_seconds_bucket{le=\"10\"}"), 3.0);
        assert_eq!(value(&text, "matchstream_delivery_lag_seconds_bucket{le=\"+Inf\"}"), 4.0);
        assert_eq!(value(&text, "matchstream_delivery_lag_seconds_count"), 4.0);
        assert!((value(&text, "matchstream_delivery_lag_seconds_sum") - 20.06).abs() < 1e-9);
        assert!(text.contains("# TYPE matchstream_delivery_lag_seconds histogram"), "{text}");
    }
}
