//! A worker process (`matchstream sim-worker`): reads its [`Job`] as one JSON line, runs its
//! share of the viewers, writes progress counters every ~200 ms and a final report as JSON lines,
//! and stops its viewers early when its input closes (the parent is done with it, or died) or
//! its duration limit expires. It never prints anything else on its output.

use std::io::BufRead;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::checkin;
use super::conn;
use super::job::{Counters, Job, Target, WorkerMsg};
use super::report::{Hist, WorkerReport, MAX_SAMPLES};
use super::resume;
use super::viewer::{self, Outcome, Spec};
use super::{Cause, PathKind, Protocol, SimError, Violation};

/// How often a worker reports its counters.
pub const PROGRESS_EVERY: Duration = Duration::from_millis(200);
/// Longest job line accepted.
const MAX_JOB_LINE: u64 = 1 << 20;

/// What every viewer of a worker shares: the job, the connect slots, the counters and the
/// histograms.
pub(crate) struct Shared {
    pub job: Job,
    /// Viewers of this worker.
    pub viewers: u64,
    /// Connect slots: a viewer holds one only while it connects.
    pub slots: Semaphore,
    pub stop: CancellationToken,
    /// For `/1/checkin`.
    pub http: reqwest::Client,
    /// The nodes speak TLS (`https://` servers): every viewer's connection is checked with it.
    pub tls: Option<matchstream_client::TlsClient>,
    /// The nodes' HTTP base URLs to ask `/1/checkin` (none with `--viewers`).
    pub servers: Vec<String>,
    /// The nodes' HTTP addresses (`host:port`), for WebSocket and SSE viewers.
    pub web: Vec<String>,
    /// Round-robin over `--viewers`.
    pub next_addr: AtomicUsize,
    pub started: AtomicU64,
    pub connected: AtomicU64,
    pub ever_connected: AtomicU64,
    pub deliveries: AtomicU64,
    pub connects: AtomicU64,
    pub first_connect_start_ms: AtomicI64,
    pub last_connect_done_ms: AtomicI64,
    pub first_delivery_ms: AtomicI64,
    pub last_delivery_ms: AtomicI64,
    /// Connect times (µs).
    pub connect_time: Mutex<Hist>,
    /// Deliveries and their latencies, per protocol (indexed like [`Protocol::ALL`]).
    pub by_protocol: [ProtocolStats; 4],
    /// Woken when every viewer of this worker is connected at once.
    pub all_connected: Notify,
    /// Drops and resumes (`--resume`).
    pub resume: resume::Stats,
}

/// What the viewers of one protocol received.
#[derive(Default)]
pub(crate) struct ProtocolStats {
    pub deliveries: AtomicU64,
    /// Delivery latencies (ms).
    pub latency: Mutex<Hist>,
}

/// Reads the job from `input` (one line), then watches `input` for its end, which stops the
/// viewers; writes the worker's JSON lines to `output`.
pub async fn serve<R, W>(input: R, mut output: W) -> Result<(), SimError>
where
    R: std::io::Read + Send + 'static,
    W: AsyncWrite + Unpin,
{
    let stop = CancellationToken::new();
    let (line, reader) = tokio::task::spawn_blocking(move || {
        let mut reader = std::io::BufReader::new(input);
        let mut line = String::new();
        let read = std::io::Read::take(&mut reader, MAX_JOB_LINE).read_line(&mut line);
        read.map(|_| (line, reader))
    })
    .await
    .map_err(|e| SimError::BadJob(e.to_string()))?
    .map_err(|e| SimError::BadJob(e.to_string()))?;
    // Whatever follows the job is ignored; its end means "stop now".
    super::cancel_at_eof(reader, stop.clone());
    let job: Job = serde_json::from_str(&line).map_err(|e| SimError::BadJob(e.to_string()))?;
    run(job, stop, &mut output).await
}

/// Runs a job's viewers until they are all done or `stop` is cancelled, writing progress and
/// the final report to `out`.
pub async fn run<W: AsyncWrite + Unpin>(
    job: Job,
    stop: CancellationToken,
    out: &mut W,
) -> Result<(), SimError> {
    job.validate()?;
    let tls = match &job.target {
        Target::Matchstream { server, ca_cert, .. } => {
            conn::tls_for(&checkin::servers(server)?, ca_cert.as_deref())?
        }
        _ => None,
    };
    let mut http = reqwest::Client::builder().pool_max_idle_per_host(job.concurrency);
    if let Some(tls) = &tls {
        http = http.use_preconfigured_tls(tls.config().clone());
    }
    let http =
        http.build().map_err(|e| SimError::Usage(format!("cannot build the HTTP client: {e}")))?;
    if let Some(ms) = job.duration_limit_ms {
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(ms)) => stop.cancel(),
                _ = stop.cancelled() => {}
            }
        });
    }
    let specs = plan(&job);
    let servers = match &job.target {
        Target::Matchstream { server, viewers, .. } if viewers.is_empty() => {
            checkin::servers(server)?
        }
        _ => Vec::new(),
    };
    let web = match &job.target {
        Target::Matchstream { server, .. } if job.protocols().present().any(|p| !p.is_tcp()) => {
            let urls = checkin::servers(server)?;
            let addrs: Result<Vec<String>, String> =
                urls.iter().map(|u| conn::http_addr(u)).collect();
            addrs.map_err(|e| SimError::Usage(format!("--server {e}")))?
        }
        _ => Vec::new(),
    };
    let sh = Arc::new(Shared {
        viewers: job.paths.total(),
        slots: Semaphore::new(job.concurrency),
        stop,
        http,
        tls,
        servers,
        web,
        next_addr: AtomicUsize::new(job.worker),
        started: AtomicU64::new(0),
        connected: AtomicU64::new(0),
        ever_connected: AtomicU64::new(0),
        deliveries: AtomicU64::new(0),
        connects: AtomicU64::new(0),
        first_connect_start_ms: AtomicI64::new(i64::MAX),
        last_connect_done_ms: AtomicI64::new(i64::MIN),
        first_delivery_ms: AtomicI64::new(i64::MAX),
        last_delivery_ms: AtomicI64::new(i64::MIN),
        connect_time: Mutex::new(Hist::default()),
        by_protocol: Default::default(),
        all_connected: Notify::new(),
        resume: resume::Stats::default(),
        job,
    });
    let mut report = WorkerReport { worker: sh.job.worker, ..Default::default() };
    let mut set = JoinSet::new();
    for spec in specs {
        let sh = sh.clone();
        set.spawn(async move { (spec, viewer::run(&sh, spec).await) });
    }
    let mut tick = tokio::time::interval(PROGRESS_EVERY);
    let mut told_all_connected = false;
    loop {
        tokio::select! {
            _ = tick.tick() => write(out, &WorkerMsg::Progress(counters(&sh, &report))).await?,
            _ = sh.all_connected.notified(), if !told_all_connected => {
                told_all_connected = true;
                write(out, &WorkerMsg::Progress(counters(&sh, &report))).await?;
            }
            joined = set.join_next() => match joined {
                None => break,
                Some(Ok((spec, outcome))) => tally(&mut report, &sh, spec, outcome),
                Some(Err(e)) => {
                    // A viewer task that panicked: a bug of the simulator, counted, not hidden.
                    report.failures.add(Cause::Io, 1);
                    report.counters.failed += 1;
                    report.samples.push(format!("a viewer task failed: {e}"));
                }
            },
        }
    }
    finish(&mut report, &sh);
    write(out, &WorkerMsg::Final(Box::new(report))).await?;
    Ok(())
}

/// Every viewer of the job, its path, its protocol and its random choices, in a shuffled order
/// so that the paths and the protocols are spread over the run and over each other.
fn plan(job: &Job) -> Vec<Spec> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(job.seed ^ ((job.worker as u64) << 32));
    let mut paths: Vec<PathKind> = PathKind::ALL
        .iter()
        .flat_map(|p| std::iter::repeat_n(*p, job.paths.0[*p as usize] as usize))
        .collect();
    paths.shuffle(&mut rng);
    let counts = job.protocols();
    let mut protocols: Vec<Protocol> = Protocol::ALL
        .iter()
        .flat_map(|p| std::iter::repeat_n(*p, counts.0[*p as usize] as usize))
        .collect();
    protocols.shuffle(&mut rng);
    // Redis subscribers have no protocol of ours; the field is unused for them.
    protocols.resize(paths.len(), Protocol::V2);
    let b = &job.behaviour;
    paths
        .into_iter()
        .zip(protocols)
        .enumerate()
        .map(|(i, (path, protocol))| Spec {
            id: job.first_viewer + i as u64,
            path,
            protocol,
            delay_ms: if path == PathKind::Late {
                rng.random_range(0..=b.late_within_ms)
            } else {
                0
            },
            act_after: rng.random_range(1..=b.act_after_max_events.max(1)),
        })
        .collect()
}

fn tally(report: &mut WorkerReport, sh: &Shared, spec: Spec, outcome: Outcome) {
    let path = &mut report.paths.0[spec.path as usize];
    path.viewers += 1;
    let by_protocol = matches!(sh.job.target, Target::Matchstream { .. });
    let protocol = &mut report.protocols.0[spec.protocol as usize];
    if by_protocol {
        protocol.viewers += 1;
    }
    let failure = match outcome {
        Outcome::Complete => None,
        // Holding viewers are meant to be stopped while connected: that is their success.
        Outcome::Stopped { connected: true } if sh.job.hold => {
            report.stopped = true;
            None
        }
        Outcome::Stopped { connected } => {
            report.stopped = true;
            let doing = if connected { "watching" } else { "connecting" };
            Some(Violation::new(Cause::Incomplete, format!("still {doing} when the run stopped")))
        }
        Outcome::Failed(v) => Some(v),
    };
    match failure {
        None => {
            path.complete += 1;
            if by_protocol {
                protocol.complete += 1;
            }
            report.counters.complete += 1;
        }
        Some(v) => {
            path.failed += 1;
            if by_protocol {
                protocol.failed += 1;
            }
            report.counters.failed += 1;
            report.failures.add(v.cause, 1);
            if report.samples.len() < MAX_SAMPLES {
                let what = match by_protocol {
                    true => format!("{}, {}", spec.protocol.as_str(), spec.path.as_str()),
                    false => spec.path.as_str().to_owned(),
                };
                report.samples.push(format!("viewer {} ({what}): {v}", spec.id));
            }
        }
    }
}

/// The live counters, with the outcomes tallied so far.
fn counters(sh: &Shared, report: &WorkerReport) -> Counters {
    Counters {
        started: sh.started.load(Ordering::Relaxed),
        connected: sh.connected.load(Ordering::Relaxed),
        ever_connected: sh.ever_connected.load(Ordering::Relaxed),
        complete: report.counters.complete,
        failed: report.counters.failed,
        deliveries: sh.deliveries.load(Ordering::Relaxed),
    }
}

fn finish(report: &mut WorkerReport, sh: &Shared) {
    report.counters = counters(sh, report);
    report.connects = sh.connects.load(Ordering::Relaxed);
    let some = |v: i64| (v != i64::MAX && v != i64::MIN).then_some(v);
    report.first_connect_start_ms = some(sh.first_connect_start_ms.load(Ordering::Relaxed));
    report.last_connect_done_ms = some(sh.last_connect_done_ms.load(Ordering::Relaxed));
    report.first_delivery_ms = some(sh.first_delivery_ms.load(Ordering::Relaxed));
    report.last_delivery_ms = some(sh.last_delivery_ms.load(Ordering::Relaxed));
    report.connect_us = sh.connect_time.lock().unwrap_or_else(|p| p.into_inner()).pairs();
    let mut all = Hist::default();
    for (p, stats) in sh.by_protocol.iter().enumerate() {
        let pairs = stats.latency.lock().unwrap_or_else(|p| p.into_inner()).pairs();
        all.add_pairs(&pairs);
        let tally = &mut report.protocols.0[p];
        tally.deliveries = stats.deliveries.load(Ordering::Relaxed);
        tally.latency_ms = pairs;
    }
    report.latency_ms = all.pairs();
    sh.resume.report(report);
}

async fn write<W: AsyncWrite + Unpin>(out: &mut W, msg: &WorkerMsg) -> Result<(), SimError> {
    let mut line = serde_json::to_vec(msg).map_err(|e| SimError::Io(e.into()))?;
    line.push(b'\n');
    out.write_all(&line).await?;
    out.flush().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::job::{Behaviour, Mix};
    use super::*;

    #[test]
    fn a_plan_has_every_path_its_count_and_random_choices_in_range() {
        let job = Job {
            worker: 0,
            target: Target::Redis { addr: "127.0.0.1:1".into(), channel: "c".into() },
            first_viewer: 100,
            paths: "watch=40,late=20,leave=20,reconnect=10,slow=10"
                .parse::<Mix>()
                .unwrap()
                .counts(50),
            protocols: Default::default(),
            concurrency: 1,
            behaviour: Behaviour {
                late_within_ms: 300,
                act_after_max_events: 5,
                ..Behaviour::default()
            },
            hold: false,
            duration_limit_ms: None,
            seed: 3,
        };
        let plan = plan(&job);
        assert_eq!(plan.len(), 50);
        let ids: std::collections::BTreeSet<u64> = plan.iter().map(|s| s.id).collect();
        assert_eq!(ids, (100..150).collect());
        assert_eq!(plan.iter().filter(|s| s.path == PathKind::Late).count(), 10);
        assert!(plan.iter().all(|s| (1..=5).contains(&s.act_after)));
        assert!(plan.iter().filter(|s| s.path == PathKind::Late).all(|s| s.delay_ms <= 300));
        assert!(plan.iter().filter(|s| s.path != PathKind::Late).all(|s| s.delay_ms == 0));
        // Same seed, same plan.
        assert_eq!(format!("{:?}", plan), format!("{:?}", super::plan(&job)));
    }

    #[test]
    fn a_plan_gives_each_protocol_its_count_spread_over_the_paths() {
        let job = Job {
            worker: 1,
            target: Target::Matchstream {
                server: "http://127.0.0.1:1".into(),
                match_id: "elp-tig-2011-09-10".into(),
                protocol: Protocol::V1,
                viewers: vec![],
                ca_cert: None,
            },
            first_viewer: 0,
            paths: "watch=50,slow=50".parse::<Mix>().unwrap().counts(100),
            protocols: crate::ProtocolCounts([0, 50, 30, 20]),
            concurrency: 1,
            behaviour: Behaviour::default(),
            hold: false,
            duration_limit_ms: None,
            seed: 3,
        };
        job.validate().unwrap();
        let plan = plan(&job);
        let count = |p: Protocol| plan.iter().filter(|s| s.protocol == p).count();
        assert_eq!(
            [Protocol::V1, Protocol::V2, Protocol::Ws, Protocol::Sse].map(count),
            [0, 50, 30, 20]
        );
        let slow_ws =
            plan.iter().filter(|s| s.protocol == Protocol::Ws && s.path == PathKind::Slow).count();
        assert!(slow_ws > 0 && slow_ws < 30, "protocols spread over paths: {slow_ws}");
        // Without a share-out, every viewer speaks the target's protocol.
        let plain = Job { protocols: Default::default(), ..job.clone() };
        assert!(super::plan(&plain).iter().all(|s| s.protocol == Protocol::V1));
        // Shares that do not add up are refused, and so is v1 among reconnecting viewers.
        let short = Job { protocols: crate::ProtocolCounts([0, 50, 30, 0]), ..job.clone() };
        assert!(short.validate().is_err());
        let reconnecting = Job {
            paths: "watch=50,reconnect=50".parse::<Mix>().unwrap().counts(100),
            protocols: crate::ProtocolCounts([1, 49, 30, 20]),
            ..job
        };
        assert!(matches!(reconnecting.validate(), Err(SimError::Usage(w)) if w.contains("v1")));
    }
}
