//! The parent of a viewer run: splits N viewers and C connect slots over W worker processes
//! (its own binary, re-executed as `sim-worker`), hands each its [`Job`] on stdin, adds up
//! their JSON lines into the live display and the final [`Summary`], and ends the run: when the
//! workers are done, when told to stop (closing their stdin), or at the duration limit.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::check::Checker;
use super::display::Display;
use super::job::ProtocolCounts;
use super::job::{Behaviour, Counters, Job, Mix, Target, WorkerMsg};
use super::report::{RunInfo, Summary, WorkerReport};
use super::{Protocol, SimError};

/// Viewers per worker process by default: under the 20,000 open files a process may have here,
/// and about what the independent Redis client the benchmarks were checked against read per
/// process (~9,500). The viewers of a worker share its counters and its latency histogram (one
/// lock per chunk read), so 10,000 viewers get two workers, not one process for all.
pub const VIEWERS_PER_WORKER: u64 = 9_500;

/// How long workers get to send their final report after being told to stop, before they are
/// killed: they only have to tally and write one line.
const FINAL_GRACE: Duration = Duration::from_secs(15);

/// A viewer (or Redis subscriber) run.
#[derive(Clone, Debug)]
pub struct ViewerSim {
    pub target: Target,
    /// N: viewers in all.
    pub viewers: u64,
    /// C: viewers connecting at once, in all (split between workers).
    pub concurrency: usize,
    /// W: worker processes; `None`: one per [`VIEWERS_PER_WORKER`] viewers.
    pub workers: Option<usize>,
    pub mix: Mix,
    pub behaviour: Behaviour,
    /// Viewers stay connected until `stop` (or the duration limit), then count as complete.
    pub hold: bool,
    pub duration_limit: Option<Duration>,
    /// The binary to run workers with; `None`: this process's own executable.
    pub worker_exe: Option<PathBuf>,
    pub seed: u64,
}

/// One worker process as the parent sees it.
struct Worker {
    child: Child,
    stdin: Option<ChildStdin>,
    viewers: u64,
    latest: Counters,
    report: Option<WorkerReport>,
    ended: bool,
}

/// What a worker's output reader passes on.
enum Heard {
    Msg(WorkerMsg),
    Garbage(String),
    End,
}

/// Runs the viewers; `stop` ends the run early (on a signal, or the end of a hold).
pub async fn run_viewers(
    sim: ViewerSim,
    display: &mut Display,
    stop: CancellationToken,
) -> Result<Summary, SimError> {
    let jobs = jobs(&sim)?;
    let exe = match &sim.worker_exe {
        Some(p) => p.clone(),
        None => std::env::current_exe()?,
    };
    let started = Instant::now();
    let (tx, mut rx) = mpsc::channel::<(usize, Heard)>(1024);
    let mut workers = Vec::with_capacity(jobs.len());
    for job in &jobs {
        workers.push(spawn(&exe, job, tx.clone()).await?);
    }
    drop(tx);

    let limit = sim.duration_limit.map(|d| tokio::time::Instant::now() + d);
    let far = tokio::time::Instant::now() + Duration::from_secs(86_400 * 365);
    let mut kill_at: Option<tokio::time::Instant> = None;
    let mut all_connected_after_ms = None;
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    while workers.iter().any(|w| !w.ended) {
        tokio::select! {
            heard = rx.recv() => {
                let Some((i, heard)) = heard else { break };
                let w = &mut workers[i];
                match heard {
                    Heard::Msg(WorkerMsg::Progress(c)) => w.latest = c,
                    Heard::Msg(WorkerMsg::Final(r)) => {
                        w.latest = r.counters;
                        w.report = Some(*r);
                    }
                    Heard::Garbage(line) => {
                        display.note(&format!("worker {i} said something unexpected: {line}"));
                    }
                    Heard::End => w.ended = true,
                }
            }
            _ = tick.tick() => {}
            // Asked to stop, or the duration limit: workers report what they have.
            _ = async {
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = tokio::time::sleep_until(limit.unwrap_or(far)), if limit.is_some() => {}
                }
            }, if kill_at.is_none() => {
                close_inputs(&mut workers);
                kill_at = Some(tokio::time::Instant::now() + FINAL_GRACE);
            }
            _ = tokio::time::sleep_until(kill_at.unwrap_or(far)), if kill_at.is_some() => {
                for w in workers.iter_mut().filter(|w| !w.ended) {
                    let _ = w.child.start_kill();
                    w.ended = true;
                }
            }
        }
        let mut total = Counters::default();
        for w in &workers {
            total.add(&w.latest);
        }
        if all_connected_after_ms.is_none() && total.connected == sim.viewers {
            all_connected_after_ms = Some(started.elapsed().as_millis() as u64);
            display.note(&format!("connected {}", sim.viewers));
        }
        display.viewers(&total, all_connected_after_ms.is_some());
    }
    close_inputs(&mut workers);
    let mut reports = Vec::new();
    let mut lost = Vec::new();
    for (i, w) in workers.iter_mut().enumerate() {
        // The worker wrote its last line; its exit follows at once (or it was killed).
        let _ = tokio::time::timeout(Duration::from_secs(5), w.child.wait()).await;
        match w.report.take() {
            Some(r) => reports.push(r),
            None => lost.push((i, w.viewers)),
        }
    }
    display.finish();
    let (protocol, resolution) = match &sim.target {
        Target::Matchstream { protocol, .. } => {
            let counts = sim.mix.protocol_counts(sim.viewers, *protocol);
            let present: Vec<Protocol> = counts.present().collect();
            let name = match present.as_slice() {
                [one] => one.as_str().to_owned(),
                _ => present
                    .iter()
                    .map(|p| format!("{}:{}", p.as_str(), sim.mix.protocols[*p as usize]))
                    .collect::<Vec<_>>()
                    .join(","),
            };
            // v1's header times have a resolution of one second.
            let resolution = present.iter().map(|p| Checker::for_protocol(*p).ts_resolution_ms());
            (name, resolution.max().unwrap_or(1))
        }
        Target::Redis { .. } | Target::Pusher { .. } => (sim.target.protocol().to_owned(), 1),
    };
    let info = RunInfo {
        system: sim.target.system(),
        protocol,
        viewers: sim.viewers,
        workers: jobs.len(),
        concurrency: sim.concurrency,
        hold: sim.hold,
        latency_resolution_ms: resolution,
        elapsed_ms: started.elapsed().as_millis() as u64,
        all_connected_after_ms,
    };
    Ok(Summary::build(info, &reports, &lost))
}

/// Splits the run into one job per worker.
pub fn jobs(sim: &ViewerSim) -> Result<Vec<Job>, SimError> {
    if sim.viewers == 0 {
        return Err(SimError::Usage("-n must be at least 1".into()));
    }
    if sim.concurrency == 0 {
        return Err(SimError::Usage("-c must be at least 1".into()));
    }
    let w = match sim.workers {
        Some(0) => return Err(SimError::Usage("--workers must be at least 1".into())),
        Some(w) => w,
        None => sim.viewers.div_ceil(VIEWERS_PER_WORKER) as usize,
    }
    .min(sim.viewers as usize)
    .max(1);
    let shares = sim.mix.counts(sim.viewers).split(w);
    let sizes: Vec<u64> = shares.iter().map(|s| s.total()).collect();
    let protocols = match &sim.target {
        Target::Matchstream { protocol, .. } => {
            sim.mix.protocol_counts(sim.viewers, *protocol).split_like(&sizes)
        }
        _ if sim.mix.protocols.iter().any(|&p| p > 0) => {
            return Err(SimError::Usage(
                "Redis and Pusher subscribers have no protocol mix".into(),
            ));
        }
        Target::Redis { .. } | Target::Pusher { .. } => vec![ProtocolCounts::default(); w],
    };
    let mut first = 0;
    let mut jobs = Vec::with_capacity(w);
    for (i, (paths, protocols)) in shares.into_iter().zip(protocols).enumerate() {
        let concurrency = (sim.concurrency / w + usize::from(i < sim.concurrency % w)).max(1);
        let job = Job {
            worker: i,
            target: sim.target.clone(),
            first_viewer: first,
            paths,
            protocols,
            concurrency,
            behaviour: sim.behaviour.clone(),
            hold: sim.hold,
            duration_limit_ms: sim.duration_limit.map(|d| d.as_millis() as u64),
            seed: sim.seed,
        };
        job.validate()?;
        first += paths.total();
        jobs.push(job);
    }
    Ok(jobs)
}

async fn spawn(
    exe: &PathBuf,
    job: &Job,
    tx: mpsc::Sender<(usize, Heard)>,
) -> Result<Worker, SimError> {
    let worker = job.worker;
    let fail = |reason: String| SimError::Worker { worker, reason };
    let mut child = Command::new(exe)
        .arg("sim-worker")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| fail(format!("cannot start {}: {e}", exe.display())))?;
    let (Some(mut stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        return Err(fail("no pipes to the worker".into()));
    };
    let mut line = serde_json::to_vec(job).map_err(|e| fail(e.to_string()))?;
    line.push(b'\n');
    stdin.write_all(&line).await.map_err(|e| fail(format!("cannot send the job: {e}")))?;
    stdin.flush().await.map_err(|e| fail(e.to_string()))?;
    tokio::spawn(async move {
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let heard = match serde_json::from_str::<WorkerMsg>(&line) {
                Ok(msg) => Heard::Msg(msg),
                Err(_) => Heard::Garbage(line.chars().take(200).collect()),
            };
            if tx.send((worker, heard)).await.is_err() {
                return;
            }
        }
        let _ = tx.send((worker, Heard::End)).await;
    });
    Ok(Worker {
        child,
        stdin: Some(stdin),
        viewers: job.paths.total(),
        latest: Counters::default(),
        report: None,
        ended: false,
    })
}

/// Closing a worker's stdin tells it to stop its viewers and report.
fn close_inputs(workers: &mut [Worker]) {
    for w in workers {
        w.stdin = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sim(n: u64, c: usize, workers: Option<usize>) -> ViewerSim {
        ViewerSim {
            target: Target::Redis { addr: "127.0.0.1:1".into(), channel: "c".into() },
            viewers: n,
            concurrency: c,
            workers,
            mix: Mix::default(),
            behaviour: Behaviour::default(),
            hold: false,
            duration_limit: None,
            worker_exe: None,
            seed: 1,
        }
    }

    #[test]
    fn viewers_and_slots_are_split_between_workers() {
        let jobs = jobs(&sim(100_001, 1000, None)).unwrap();
        assert_eq!(jobs.len(), 11, "ceil(100001 / 9500)");
        assert!(jobs.iter().all(|j| j.paths.total() <= VIEWERS_PER_WORKER));
        assert_eq!(jobs.iter().map(|j| j.paths.total()).sum::<u64>(), 100_001);
        assert_eq!(jobs.iter().map(|j| j.concurrency).sum::<usize>(), 1000);
        assert_eq!(jobs[1].first_viewer, jobs[0].paths.total());
        // Never more workers than viewers; every worker gets a slot.
        let jobs = super::jobs(&sim(3, 1, Some(8))).unwrap();
        assert_eq!(jobs.len(), 3);
        assert!(jobs.iter().all(|j| j.concurrency == 1));
        assert!(super::jobs(&sim(0, 1, None)).is_err());
        assert!(super::jobs(&sim(5, 1, Some(0))).is_err());
        let mut s = sim(10, 1, None);
        s.mix = "watch=50,leave=50".parse().unwrap();
        assert!(super::jobs(&s).is_err(), "Redis subscribers only watch");
    }
}
