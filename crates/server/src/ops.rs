//! The operator's view of a node (SPEC 9, `GET /ops` and `matchstream top`): every second the
//! node reads its own figures (typed, `telemetry::Figures`) into a [`Sample`] (viewers by transport, events and deliveries per
//! second, delivery lag p50/p99, `too_slow` cut-offs, accept errors, memory and open files),
//! keeps the last ten minutes of them for the charts, and, with other nodes, shares its latest
//! sample through the cluster's reports and keeps theirs. Served as JSON at `/ops.json`.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::hub::Hub;
use crate::locks::{lock, read, write};
use crate::telemetry::{Figures, Metrics, LAG_BUCKETS, TRANSPORTS};

/// How often a sample is taken.
pub(crate) const EVERY: Duration = Duration::from_secs(1);
/// Samples kept: ten minutes of charts.
const KEPT: usize = 600;

/// A node's figures over one second.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Sample {
    /// When it was taken (Unix ms).
    pub at_ms: i64,
    /// Viewers connected, by transport (`tcp_v1`, `tcp_v2`, `ws`, `sse`).
    pub viewers: BTreeMap<String, u64>,
    pub matches_live: u64,
    pub events_per_s: f64,
    pub deliveries_per_s: f64,
    /// Delivery lag of the second's live deliveries (bucket upper bounds), when there were any.
    pub lag_p50_ms: Option<f64>,
    pub lag_p99_ms: Option<f64>,
    /// Since the node started.
    pub too_slow_total: u64,
    pub accept_errors_total: u64,
    pub rss_bytes: u64,
    /// Resident memory divided by viewers (everything the process holds, so an upper bound).
    pub rss_per_viewer: Option<f64>,
    pub open_fds: u64,
    pub max_fds: u64,
}

/// Another node's latest sample, as it reported it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct NodeSample {
    pub node: String,
    /// Its HTTP address, where its own `/ops` is.
    pub http: String,
    pub sample: Sample,
}

/// This node's samples and the other nodes' latest.
pub(crate) struct Ops {
    /// Random per process, the same as in the cluster's reports.
    pub node: String,
    pub http: String,
    history: Mutex<VecDeque<Sample>>,
    others: RwLock<Vec<NodeSample>>,
}

impl Ops {
    pub(crate) fn new(node: String, http: String) -> Arc<Ops> {
        Arc::new(Ops {
            node,
            http,
            history: Mutex::new(VecDeque::with_capacity(KEPT)),
            others: RwLock::new(Vec::new()),
        })
    }

    /// The last samples, oldest first.
    pub(crate) fn history(&self) -> Vec<Sample> {
        lock(&self.history).iter().cloned().collect()
    }

    /// The latest sample.
    pub(crate) fn latest(&self) -> Option<Sample> {
        lock(&self.history).back().cloned()
    }

    /// The other live nodes' latest samples.
    pub(crate) fn others(&self) -> Vec<NodeSample> {
        read(&self.others).clone()
    }

    pub(crate) fn set_others(&self, others: Vec<NodeSample>) {
        *write(&self.others) = others;
    }

    /// Samples every [`EVERY`] until `stop`.
    pub(crate) async fn run(
        self: Arc<Self>,
        metrics: Arc<Metrics>,
        hub: Arc<Hub>,
        stop: tokio_util::sync::CancellationToken,
    ) {
        let mut tick = tokio::time::interval(EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut before: Option<(tokio::time::Instant, Figures)> = None;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let live = hub.live_count();
            metrics.matches_live.set(live as f64);
            metrics.matches_in_memory.set(hub.in_memory() as f64);
            let now = metrics.figures();
            let at = tokio::time::Instant::now();
            if let Some((then, prev)) = &before {
                let sample = sample(prev, &now, (at - *then).as_secs_f64(), live as u64);
                let mut history = lock(&self.history);
                if history.len() == KEPT {
                    history.pop_front();
                }
                history.push_back(sample);
            }
            before = Some((at, now));
        }
    }
}

/// One sample from two readings of the node's figures `secs` apart, with `matches_live` now.
fn sample(prev: &Figures, now: &Figures, secs: f64, matches_live: u64) -> Sample {
    let rate = |then: u64, now: u64| now.saturating_sub(then) as f64 / secs.max(0.001);
    let viewers: BTreeMap<String, u64> =
        TRANSPORTS.iter().zip(now.viewers).map(|(t, n)| (t.to_string(), n)).collect();
    let total: u64 = viewers.values().sum();
    let (lag_p50_ms, lag_p99_ms) = lag_quantiles(prev, now);
    Sample {
        at_ms: crate::model::now_ms(),
        matches_live,
        events_per_s: rate(prev.events_published, now.events_published),
        deliveries_per_s: rate(prev.deliveries, now.deliveries),
        lag_p50_ms,
        lag_p99_ms,
        too_slow_total: now.too_slow,
        accept_errors_total: now.accept_errors,
        rss_bytes: now.rss_bytes,
        rss_per_viewer: (total > 0).then(|| now.rss_bytes as f64 / total as f64),
        open_fds: now.open_fds,
        max_fds: now.max_fds,
        viewers,
    }
}

/// p50 and p99 of the delivery lag over the interval, from the histogram's bucket counts (each
/// the bucket's upper bound, in ms; `None` when nothing was delivered).
fn lag_quantiles(prev: &Figures, now: &Figures) -> (Option<f64>, Option<f64>) {
    let counts: Vec<u64> =
        now.lag_counts.iter().zip(prev.lag_counts).map(|(n, p)| n.saturating_sub(p)).collect();
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return (None, None);
    }
    let quantile = |q: f64| {
        let mut seen = 0;
        counts.iter().enumerate().find_map(|(i, c)| {
            seen += c;
            (seen as f64 >= q * total as f64)
                .then(|| LAG_BUCKETS.get(i).map_or(f64::INFINITY, |b| b * 1000.0))
        })
    };
    (quantile(0.5), quantile(0.99))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::Format;

    #[test]
    fn a_sample_has_rates_and_lag_quantiles_between_two_expositions() {
        let m = Metrics::new();
        let before = m.figures();
        m.joined(Format::Ws);
        m.joined(Format::V2);
        m.delivered(Format::Ws, 300, 300);
        m.published(10);
        m.delivery_lag.record_many(0.004, 98);
        m.delivery_lag.record_many(0.2, 2);
        let s = sample(&before, &m.figures(), 2.0, 1);
        assert_eq!(s.viewers["ws"], 1);
        assert_eq!(s.viewers.values().sum::<u64>(), 2);
        assert_eq!((s.events_per_s, s.deliveries_per_s), (5.0, 150.0));
        assert_eq!((s.lag_p50_ms, s.lag_p99_ms), (Some(5.0), Some(250.0)));
        assert!(s.rss_bytes > 0 && s.rss_per_viewer.is_some());
    }

    #[test]
    fn no_deliveries_no_lag() {
        let m = Metrics::new();
        let e = m.figures();
        assert_eq!(sample(&e, &e, 1.0, 0).lag_p99_ms, None);
    }
}
