//! `matchstream sim http`: N requests, C at a time, over the read API's paths in turn
//! (`/1/checkin`, `/1/matches`, a match, its history), on kept-alive connections or a new
//! connection per request; status counts, failures by cause, latency percentiles, requests/s.
//! One process is enough: a request is far cheaper for the client than for the server.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::display::Display;
use super::report::{Hist, Percentiles, MAX_SAMPLES};
use super::{Cause, SimError};

/// A path of the read API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApiPath {
    Checkin,
    Matches,
    Match,
    History,
}

impl std::str::FromStr for ApiPath {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "checkin" => Ok(ApiPath::Checkin),
            "matches" => Ok(ApiPath::Matches),
            "match" => Ok(ApiPath::Match),
            "history" => Ok(ApiPath::History),
            _ => Err(format!("unknown path {s:?} (checkin, matches, match, history)")),
        }
    }
}

impl ApiPath {
    fn url(self, server: &str, match_id: &str) -> String {
        match self {
            ApiPath::Checkin => format!("{server}/1/checkin"),
            ApiPath::Matches => format!("{server}/1/matches"),
            ApiPath::Match => format!("{server}/1/match/{match_id}"),
            ApiPath::History => format!("{server}/1/match/{match_id}/history"),
        }
    }
}

/// An HTTP load run.
#[derive(Clone, Debug)]
pub struct HttpSim {
    /// Base URL, like `http://127.0.0.1:8888`.
    pub server: String,
    pub requests: u64,
    pub concurrency: usize,
    /// Taken in turn, request i getting `paths[i % len]`.
    pub paths: Vec<ApiPath>,
    /// The match for `match` and `history`; `None`: the first of `/1/matches`.
    pub match_id: Option<String>,
    /// A new TCP connection per request instead of kept-alive ones.
    pub new_connection: bool,
    /// Longest a request may take, body included.
    pub timeout: Duration,
}

/// The result of an HTTP run: the JSON object of `sim http --json`.
#[derive(Clone, Debug, Serialize)]
pub struct HttpSummary {
    pub server: String,
    pub requests: u64,
    pub concurrency: usize,
    pub new_connection: bool,
    pub paths: Vec<String>,
    /// Answers with a 2xx status.
    pub ok: u64,
    /// Requests without a 2xx answer (transport failures and other statuses).
    pub failed: u64,
    /// Answers by status code (`"200": 500`).
    pub status: BTreeMap<String, u64>,
    /// Requests that got no answer, by cause (`refused`, `timeout`, `reset`, `io`).
    pub failures: BTreeMap<String, u64>,
    pub latency_ms: Percentiles,
    pub requests_per_s: f64,
    pub elapsed_ms: u64,
    pub failure_samples: Vec<String>,
}

impl HttpSummary {
    /// The summary for a person.
    pub fn text(&self) -> String {
        let mut out = format!(
            "http {}: {} requests, {} at once, {}: {} ok, {} failed, {:.0} requests/s\n",
            self.server,
            self.requests,
            self.concurrency,
            if self.new_connection { "a new connection each" } else { "kept-alive connections" },
            self.ok,
            self.failed,
            self.requests_per_s
        );
        let counts = |m: &BTreeMap<String, u64>| {
            m.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ")
        };
        out += &format!("  status: {}\n", counts(&self.status));
        if !self.failures.is_empty() {
            out += &format!("  no answer: {}\n", counts(&self.failures));
        }
        let p = &self.latency_ms;
        out += &format!(
            "  latency ms: p50 {} p90 {} p99 {} p99.9 {} max {}\n",
            p.p50, p.p90, p.p99, p.p999, p.max
        );
        for s in &self.failure_samples {
            out += &format!("  e.g. {s}\n");
        }
        out
    }
}

/// What the request tasks share.
#[derive(Default)]
struct Tally {
    status: BTreeMap<String, u64>,
    failures: BTreeMap<String, u64>,
    latency_us: Hist,
    samples: Vec<String>,
}

/// Runs the requests; `stop` ends the run early (requests not sent are not counted).
pub async fn run_http(
    sim: HttpSim,
    display: &mut Display,
    stop: CancellationToken,
) -> Result<HttpSummary, SimError> {
    if sim.requests == 0 || sim.concurrency == 0 || sim.paths.is_empty() {
        return Err(SimError::Usage("-n, -c and --paths must not be empty or 0".into()));
    }
    let server = sim.server.trim_end_matches('/').to_owned();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(if sim.new_connection { 0 } else { sim.concurrency })
        .timeout(sim.timeout)
        .build()
        .map_err(|e| SimError::Usage(format!("cannot build the HTTP client: {e}")))?;
    let needs_match = sim.paths.iter().any(|p| matches!(p, ApiPath::Match | ApiPath::History));
    let match_id = match (&sim.match_id, needs_match) {
        (Some(id), _) => id.clone(),
        (None, true) => first_match(&client, &server).await?,
        (None, false) => String::new(),
    };
    let urls: Arc<Vec<String>> =
        Arc::new(sim.paths.iter().map(|p| p.url(&server, &match_id)).collect());
    let next = Arc::new(AtomicU64::new(0));
    let (done, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..sim.concurrency.min(sim.requests as usize) {
        let (client, urls, next, done, failed, tally, stop) = (
            client.clone(),
            urls.clone(),
            next.clone(),
            done.clone(),
            failed.clone(),
            tally.clone(),
            stop.clone(),
        );
        let total = sim.requests;
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total || stop.is_cancelled() {
                    return;
                }
                let url = &urls[(i % urls.len() as u64) as usize];
                let t0 = Instant::now();
                let result = match client.get(url).send().await {
                    Ok(r) => {
                        let status = r.status();
                        r.bytes().await.map(|_| status)
                    }
                    Err(e) => Err(e),
                };
                let took = t0.elapsed().as_micros() as u64;
                let mut t = tally.lock().unwrap_or_else(|p| p.into_inner());
                match result {
                    Ok(status) => {
                        t.latency_us.record(took);
                        *t.status.entry(status.as_u16().to_string()).or_default() += 1;
                        if !status.is_success() {
                            failed.fetch_add(1, Ordering::Relaxed);
                            if t.samples.len() < MAX_SAMPLES {
                                t.samples.push(format!("{url}: status {status}"));
                            }
                        }
                    }
                    Err(e) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        *t.failures.entry(cause_of(&e).as_str().to_owned()).or_default() += 1;
                        if t.samples.len() < MAX_SAMPLES {
                            t.samples.push(format!("{url}: {e}"));
                        }
                    }
                }
                drop(t);
                done.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            joined = tasks.join_next() => if joined.is_none() { break },
            _ = tick.tick() => {}
        }
        display.requests(done.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    }
    display.finish();
    let elapsed = started.elapsed();
    let t = std::mem::take(&mut *tally.lock().unwrap_or_else(|p| p.into_inner()));
    let requests = done.load(Ordering::Relaxed);
    let failed = failed.load(Ordering::Relaxed);
    Ok(HttpSummary {
        server,
        requests,
        concurrency: sim.concurrency,
        new_connection: sim.new_connection,
        paths: sim.paths.iter().map(|p| format!("{p:?}").to_lowercase()).collect(),
        ok: requests - failed,
        failed,
        status: t.status,
        failures: t.failures,
        latency_ms: t.latency_us.percentiles(1000.0),
        requests_per_s: (requests as f64 / elapsed.as_secs_f64().max(1e-3) * 10.0).round() / 10.0,
        elapsed_ms: elapsed.as_millis() as u64,
        failure_samples: t.samples,
    })
}

/// The cause of a request that got no answer, from the socket error underneath.
fn cause_of(e: &reqwest::Error) -> Cause {
    if e.is_timeout() {
        return Cause::Timeout;
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return Cause::of_io(io);
        }
        source = s.source();
    }
    Cause::Io
}

/// The first match the server lists, for `match` and `history` without `--match`.
async fn first_match(client: &reqwest::Client, server: &str) -> Result<String, SimError> {
    let fail = |why: String| SimError::Server(format!("{server}/1/matches: {why}"));
    let resp =
        client.get(format!("{server}/1/matches")).send().await.map_err(|e| fail(e.to_string()))?;
    let ids: Vec<String> = resp.json().await.map_err(|e| fail(e.to_string()))?;
    ids.into_iter().next().ok_or_else(|| {
        SimError::Usage("the server has no match: pass --match or create one first".into())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_parse_and_name_the_read_api() {
        let p: ApiPath = "history".parse().unwrap();
        assert_eq!(
            p.url("http://h:1", "a-b-2020-01-01"),
            "http://h:1/1/match/a-b-2020-01-01/history"
        );
        assert_eq!(
            "checkin".parse::<ApiPath>().unwrap().url("http://h:1", ""),
            "http://h:1/1/checkin"
        );
        assert!("events".parse::<ApiPath>().is_err());
    }
}
