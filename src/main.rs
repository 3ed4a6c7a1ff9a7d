//! The `matchstream` binary: parses arguments, installs logging and signal handling, and calls
//! the library. Every flag also reads a `MATCHSTREAM_<FLAG>` environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use matchstream::config::{self, Config};
use matchstream::sim::{self, Display};
use matchstream::{demo, matchfile, replay, server};

/// Streams live football matches to very many viewers.
#[derive(Parser)]
#[command(name = "matchstream", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node: watcher and read API over HTTP, viewers over TCP (v1 and v2).
    Serve(ServeArgs),
    /// Publish a match file (Erlang terms or JSON) to a node, keeping its pauses.
    Replay(ReplayArgs),
    /// Everything at once: a node on a temporary store, the bundled match replayed, a viewer.
    Demo(DemoArgs),
    /// Load simulator: N viewers of a match (default), or `http`, `publish`, `redis`,
    /// `redis-publish`.
    Sim(SimArgs),
    /// A worker process of `sim` (its job as JSON on stdin, reports as JSON lines on stdout).
    #[command(hide = true)]
    SimWorker,
}

#[derive(Args)]
struct ServeArgs {
    /// HTTP API address (watcher and read API).
    #[arg(long, env = "MATCHSTREAM_HTTP", default_value = "127.0.0.1:8888")]
    http: SocketAddr,
    /// Viewer port or port range, one listener per port: 127.0.0.1:9100 or 127.0.0.1:9100-9103.
    #[arg(long, env = "MATCHSTREAM_VIEWERS", default_value = "127.0.0.1:9100")]
    viewers: String,
    /// Directory of the embedded store (created if missing).
    #[arg(long, env = "MATCHSTREAM_DATA", default_value = "./data")]
    data: PathBuf,
    /// A bearer token that may publish; repeat for several (comma-separated in the variable).
    #[arg(long = "watcher-token", env = "MATCHSTREAM_WATCHER_TOKEN", value_delimiter = ',')]
    watcher_token: Vec<String>,
    /// Host that /1/checkin names to viewers (default: the listener's IP).
    #[arg(long, env = "MATCHSTREAM_PUBLIC_HOST")]
    public_host: Option<String>,
    /// Most viewers at once (default: the open-file limit less a reserve for the node itself).
    #[arg(long, env = "MATCHSTREAM_MAX_VIEWERS")]
    max_viewers: Option<usize>,
    /// Seconds a viewer has to send its connect line.
    #[arg(long, env = "MATCHSTREAM_CONNECT_TIMEOUT", default_value_t = 30)]
    connect_timeout: u64,
    /// Seconds a viewer's socket may accept nothing before it is closed as too slow.
    #[arg(long, env = "MATCHSTREAM_WRITE_TIMEOUT", default_value_t = 30)]
    write_timeout: u64,
    /// Events kept in memory per match for viewers briefly behind.
    #[arg(long, env = "MATCHSTREAM_RING_EVENTS", default_value_t = 1024)]
    ring_events: usize,
    /// A viewer more than this many events behind is closed as too slow.
    #[arg(long, env = "MATCHSTREAM_MAX_LAG_EVENTS", default_value_t = 10_000)]
    max_lag_events: u64,
    /// Seconds between checks of parked (idle) viewers for having hung up.
    #[arg(long, env = "MATCHSTREAM_IDLE_PROBE", default_value_t = 10)]
    idle_probe: u64,
    /// Seconds viewers and requests get to finish on shutdown.
    #[arg(long, env = "MATCHSTREAM_SHUTDOWN_GRACE", default_value_t = 5)]
    shutdown_grace: u64,
}

#[derive(Args)]
struct ReplayArgs {
    /// The match file (the original's Erlang terms, or JSON).
    file: PathBuf,
    /// Base URL of the node's HTTP API.
    #[arg(long, env = "MATCHSTREAM_SERVER", default_value = "http://127.0.0.1:8888")]
    server: String,
    /// Watcher token of the node.
    #[arg(long, env = "MATCHSTREAM_TOKEN")]
    token: String,
    /// Play this many times faster than the file's pauses.
    #[arg(long, env = "MATCHSTREAM_SPEED", default_value_t = 1.0)]
    speed: f64,
    /// If the match exists, cancel it and replay it anew.
    #[arg(long, env = "MATCHSTREAM_REPLACE")]
    replace: bool,
}

#[derive(Args)]
struct DemoArgs {
    /// Replay speed of the bundled match (its pauses divided by this).
    #[arg(long, env = "MATCHSTREAM_SPEED", default_value_t = 5.0)]
    speed: f64,
    /// Stop when the match is over instead of serving until Ctrl-C.
    #[arg(long, env = "MATCHSTREAM_EXIT_WHEN_DONE")]
    exit_when_done: bool,
    /// HTTP API address (port 0: any free port).
    #[arg(long, env = "MATCHSTREAM_HTTP", default_value = "127.0.0.1:0")]
    http: SocketAddr,
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
struct SimArgs {
    #[command(subcommand)]
    command: Option<SimCommand>,
    #[command(flatten)]
    viewers: SimViewerArgs,
}

#[derive(Subcommand)]
enum SimCommand {
    /// N requests, C at a time, over the read API's paths.
    Http(SimHttpArgs),
    /// The benchmark's watcher: publishes comments at a rate or in one burst.
    Publish(SimPublishArgs),
    /// N Redis pub/sub subscribers of a channel, measured like viewers (on loopback they connect
    /// from many 127.x addresses: run redis-server with `--protected-mode no`).
    Redis(SimRedisArgs),
    /// Publishes sized, timestamped messages to a Redis channel, then an end message.
    RedisPublish(SimRedisPublishArgs),
}

/// What viewer runs and Redis subscriber runs share.
#[derive(Args)]
struct EngineArgs {
    /// N: viewers in all.
    #[arg(short = 'n', long = "count", env = "MATCHSTREAM_SIM_COUNT", required = true)]
    count: Option<u64>,
    /// C: viewers connecting at once (a viewer holds a slot only while connecting).
    #[arg(short = 'c', long, env = "MATCHSTREAM_SIM_CONCURRENCY", default_value_t = 100)]
    concurrency: usize,
    /// Worker processes (default: one per 15,000 viewers).
    #[arg(long, env = "MATCHSTREAM_SIM_WORKERS")]
    workers: Option<usize>,
    /// Stay connected until stdin closes, a signal, or the duration limit; prints
    /// `connected N` on stderr once all are connected.
    #[arg(long, env = "MATCHSTREAM_SIM_HOLD")]
    hold: bool,
    /// Seconds after which viewers still running stop (and count as incomplete).
    #[arg(long, env = "MATCHSTREAM_SIM_DURATION_LIMIT")]
    duration_limit: Option<f64>,
    /// Seconds for TCP connect + connect line to first byte (and for /1/checkin).
    #[arg(long, env = "MATCHSTREAM_SIM_CONNECT_TIMEOUT", default_value_t = 10.0)]
    connect_timeout: f64,
    /// Seed of the random choices (delays, when to leave).
    #[arg(long, env = "MATCHSTREAM_SIM_SEED", default_value_t = 1)]
    seed: u64,
    /// One JSON summary on stdout; progress as JSON lines on stderr.
    #[arg(long, env = "MATCHSTREAM_SIM_JSON")]
    json: bool,
}

#[derive(Args)]
struct SimViewerArgs {
    /// Base URL of the node's HTTP API (for /1/checkin).
    #[arg(long, env = "MATCHSTREAM_SERVER", default_value = "http://127.0.0.1:8888")]
    server: String,
    /// The match to watch.
    #[arg(long = "match", env = "MATCHSTREAM_MATCH", required = true)]
    match_id: Option<String>,
    /// Viewer protocol.
    #[arg(long, env = "MATCHSTREAM_SIM_PROTOCOL", default_value = "v2")]
    protocol: sim::Protocol,
    /// Viewer addresses to take in turn instead of asking /1/checkin: host:port,host:port.
    #[arg(long, env = "MATCHSTREAM_SIM_VIEWERS", value_delimiter = ',')]
    viewers: Vec<String>,
    /// Interaction paths in percent: watch=70,late=10,leave=10,reconnect=5,slow=5.
    #[arg(long, env = "MATCHSTREAM_SIM_MIX", default_value = "watch=100")]
    mix: sim::Mix,
    /// Seconds within which `late` viewers connect.
    #[arg(long, env = "MATCHSTREAM_SIM_LATE_WITHIN", default_value_t = 2.0)]
    late_within: f64,
    /// `leave` and `reconnect` viewers act after 1 to this many events.
    #[arg(long, env = "MATCHSTREAM_SIM_ACT_AFTER", default_value_t = 20)]
    act_after: u64,
    /// Milliseconds `slow` viewers sleep between small reads.
    #[arg(long, env = "MATCHSTREAM_SIM_SLOW_READ_MS", default_value_t = 20)]
    slow_read_ms: u64,
    #[command(flatten)]
    engine: EngineArgs,
}

#[derive(Args)]
struct RedisArgs {
    /// redis-server address: host:port or redis://host:port.
    #[arg(long, env = "MATCHSTREAM_REDIS", default_value = "127.0.0.1:6379")]
    redis: String,
    /// The pub/sub channel.
    #[arg(long, env = "MATCHSTREAM_SIM_CHANNEL", default_value = "sim")]
    channel: String,
}

#[derive(Args)]
struct SimRedisArgs {
    #[command(flatten)]
    redis: RedisArgs,
    #[command(flatten)]
    engine: EngineArgs,
}

#[derive(Args)]
struct SimHttpArgs {
    /// Base URL of the node's HTTP API.
    #[arg(long, env = "MATCHSTREAM_SERVER", default_value = "http://127.0.0.1:8888")]
    server: String,
    /// N: requests in all.
    #[arg(short = 'n', long = "count", env = "MATCHSTREAM_SIM_COUNT")]
    count: u64,
    /// C: requests at once.
    #[arg(short = 'c', long, env = "MATCHSTREAM_SIM_CONCURRENCY", default_value_t = 16)]
    concurrency: usize,
    /// Read API paths, taken in turn: checkin, matches, match, history.
    #[arg(
        long,
        env = "MATCHSTREAM_SIM_PATHS",
        value_delimiter = ',',
        default_value = "checkin,matches,match,history"
    )]
    paths: Vec<sim::http::ApiPath>,
    /// The match for `match` and `history` (default: the first of /1/matches).
    #[arg(long = "match", env = "MATCHSTREAM_MATCH")]
    match_id: Option<String>,
    /// A new TCP connection per request instead of keep-alive.
    #[arg(long, env = "MATCHSTREAM_SIM_NEW_CONNECTION")]
    new_connection: bool,
    /// Seconds a request may take.
    #[arg(long, env = "MATCHSTREAM_SIM_TIMEOUT", default_value_t = 30.0)]
    timeout: f64,
    /// One JSON summary on stdout.
    #[arg(long, env = "MATCHSTREAM_SIM_JSON")]
    json: bool,
}

/// How much to publish: `--rate R --duration S` or `--burst B`.
#[derive(Args)]
struct PublishModeArgs {
    /// Messages a second (with --duration).
    #[arg(long, env = "MATCHSTREAM_SIM_RATE", default_value_t = 20.0, conflicts_with = "burst")]
    rate: f64,
    /// Seconds to publish at --rate.
    #[arg(long, env = "MATCHSTREAM_SIM_DURATION", default_value_t = 10.0)]
    duration: f64,
    /// Publish this many at once instead (one request with a list).
    #[arg(long, env = "MATCHSTREAM_SIM_BURST")]
    burst: Option<u32>,
    /// Bytes per message (for MatchStream: of each comment's v2 frame).
    #[arg(long, env = "MATCHSTREAM_SIM_PAYLOAD", default_value_t = 200)]
    payload: usize,
    /// One JSON object on stdout.
    #[arg(long, env = "MATCHSTREAM_SIM_JSON")]
    json: bool,
}

impl PublishModeArgs {
    fn mode(&self) -> sim::PublishMode {
        match self.burst {
            Some(n) => sim::PublishMode::Burst { n },
            None => sim::PublishMode::Rate { per_s: self.rate, secs: self.duration },
        }
    }
}

#[derive(Args)]
struct SimPublishArgs {
    /// Base URL of the node's HTTP API.
    #[arg(long, env = "MATCHSTREAM_SERVER", default_value = "http://127.0.0.1:8888")]
    server: String,
    /// Watcher token of the node.
    #[arg(long, env = "MATCHSTREAM_TOKEN")]
    token: String,
    /// The match (home-visit-YYYY-MM-DD).
    #[arg(long = "match", env = "MATCHSTREAM_MATCH")]
    match_id: String,
    /// Create the match first (an existing one is reused).
    #[arg(long, env = "MATCHSTREAM_SIM_CREATE")]
    create: bool,
    /// Start the match if it has not started.
    #[arg(long, env = "MATCHSTREAM_SIM_START")]
    start: bool,
    /// Publish `stop` at the end.
    #[arg(long, env = "MATCHSTREAM_SIM_STOP")]
    stop: bool,
    #[command(flatten)]
    mode: PublishModeArgs,
}

#[derive(Args)]
struct SimRedisPublishArgs {
    #[command(flatten)]
    redis: RedisArgs,
    #[command(flatten)]
    mode: PublishModeArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo's terminal belongs to the match; its node logs only what goes wrong.
    init_logging(if matches!(cli.command, Command::Demo(_)) { "warn" } else { "info" });
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("matchstream: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve(args).await,
            Command::Replay(args) => run_replay(args).await,
            Command::Demo(args) => run_demo(args).await,
            Command::Sim(args) => run_sim(args).await,
            Command::SimWorker => run_sim_worker().await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("matchstream: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

/// Cancelled on the first SIGTERM or Ctrl-C.
fn stop_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot watch SIGTERM; Ctrl-C still stops");
                        let _ = tokio::signal::ctrl_c().await;
                        t.cancel();
                        return;
                    }
                };
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        t.cancel();
        // A second Ctrl-C means now.
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("matchstream: interrupted again; exiting at once");
            std::process::exit(130);
        }
    });
    token
}

/// Raises the soft open-file limit to the hard one and returns it: every viewer is a descriptor.
fn raise_open_files() -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed by pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
    }
    lim.rlim_cur
}

async fn serve(args: ServeArgs) -> Result<()> {
    let open_files = raise_open_files();
    // Descriptors the node needs besides viewers: listeners, HTTP clients, the store.
    let reserve = 512u64;
    let fd_room = open_files.saturating_sub(reserve).max(1) as usize;
    let max_viewers = match args.max_viewers {
        Some(n) if n > fd_room => {
            tracing::warn!(
                requested = n,
                open_files,
                "--max-viewers exceeds the open-file limit; lowering it"
            );
            fd_room
        }
        Some(n) => n,
        None => fd_room,
    };
    let config = Config {
        http: args.http,
        viewers: config::parse_viewers(&args.viewers)?,
        data_dir: args.data,
        watcher_tokens: args.watcher_token,
        public_host: args.public_host,
        max_viewers,
        connect_timeout: Duration::from_secs(args.connect_timeout),
        write_timeout: Duration::from_secs(args.write_timeout),
        ring_events: args.ring_events,
        max_lag_events: args.max_lag_events,
        idle_probe: Duration::from_secs(args.idle_probe),
        shutdown_grace: Duration::from_secs(args.shutdown_grace),
        ..Config::default()
    };
    if config.watcher_tokens.is_empty() {
        tracing::warn!("no --watcher-token: nobody can publish to this node");
    }
    let stop = stop_on_signal();
    let node = server::start(config).await.context("cannot start the node")?;
    tracing::info!(max_viewers, "node ready");
    let token = node.shutdown_token();
    tokio::spawn(async move {
        stop.cancelled().await;
        token.cancel();
    });
    node.stopped().await.context("stopping the node")?;
    Ok(())
}

async fn run_replay(args: ReplayArgs) -> Result<()> {
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let file = matchfile::parse(&text).with_context(|| format!("{}", args.file.display()))?;
    if !(args.speed.is_finite() && args.speed > 0.0) {
        bail!("--speed must be a number above 0");
    }
    let opts = replay::ReplayOptions {
        server: args.server.trim_end_matches('/').to_owned(),
        token: args.token,
        speed: args.speed,
        replace: args.replace,
    };
    let stop = stop_on_signal();
    let run = replay::replay(&file, &opts, |p| match p {
        replay::Progress::Replacing { id } => {
            println!("replacing {id}: cancelling the existing match")
        }
        replay::Progress::Created { id } => println!("created {id}"),
        replay::Progress::Waiting { ms } => println!("waiting {:.1} s", ms as f64 / 1000.0),
        replay::Progress::Published { index, total, kind, seq } => {
            println!("[{index}/{total}] {kind} -> seq {seq}")
        }
    });
    tokio::select! {
        summary = run => {
            let s = summary?;
            println!("done: {} events published to {}, last seq {}", s.events, s.id, s.last_seq);
            Ok(())
        }
        _ = stop.cancelled() => bail!("interrupted; the match stays as far as it was published"),
    }
}

async fn run_demo(args: DemoArgs) -> Result<()> {
    if !(args.speed.is_finite() && args.speed > 0.0) {
        bail!("--speed must be a number above 0");
    }
    raise_open_files();
    let opts = demo::DemoOptions {
        speed: args.speed,
        exit_when_done: args.exit_when_done,
        http: args.http,
        ..demo::DemoOptions::default()
    };
    demo::run(opts, Box::new(std::io::stdout()), stop_on_signal()).await?;
    Ok(())
}

/// Seconds from a flag, checked.
fn secs(flag: &str, s: f64) -> Result<Duration> {
    Duration::try_from_secs_f64(s).map_err(|_| anyhow::anyhow!("{flag} must be 0 or more seconds"))
}

/// Prints a summary (JSON on one line, or text) on stdout.
fn print_summary<T: serde::Serialize>(json: bool, value: &T, text: impl FnOnce() -> String) {
    if json {
        match serde_json::to_string(value) {
            Ok(line) => println!("{line}"),
            Err(e) => eprintln!("matchstream: cannot write the summary: {e}"),
        }
    } else {
        print!("{}", text());
    }
}

async fn run_sim(args: SimArgs) -> Result<()> {
    match args.command {
        Some(SimCommand::Http(a)) => sim_http(a).await,
        Some(SimCommand::Publish(a)) => {
            let p = sim::publish::Publish {
                server: a.server,
                token: a.token,
                match_id: a.match_id,
                create: a.create,
                start: a.start,
                mode: a.mode.mode(),
                payload: a.mode.payload,
                stop: a.stop,
            };
            let report = sim::publish::publish(&p).await?;
            print_summary(a.mode.json, &report, || report.text());
            Ok(())
        }
        Some(SimCommand::Redis(a)) => {
            let target = sim::Target::Redis {
                addr: sim::redis::host_port(&a.redis.redis),
                channel: a.redis.channel,
            };
            sim_engine(target, a.engine, sim::Mix::default(), sim::Behaviour::default()).await
        }
        Some(SimCommand::RedisPublish(a)) => {
            let p = sim::redis::RedisPublish {
                addr: sim::redis::host_port(&a.redis.redis),
                channel: a.redis.channel,
                mode: a.mode.mode(),
                payload: a.mode.payload,
            };
            let report = sim::redis::publish(&p).await?;
            print_summary(a.mode.json, &report, || report.text());
            Ok(())
        }
        None => {
            let a = args.viewers;
            let target = sim::Target::Matchstream {
                server: a.server.trim_end_matches('/').to_owned(),
                match_id: a.match_id.context("--match is required")?,
                protocol: a.protocol,
                viewers: a.viewers,
            };
            let behaviour = sim::Behaviour {
                late_within_ms: secs("--late-within", a.late_within)?.as_millis() as u64,
                act_after_max_events: a.act_after,
                slow_read_ms: a.slow_read_ms,
                ..sim::Behaviour::default()
            };
            sim_engine(target, a.engine, a.mix, behaviour).await
        }
    }
}

/// Viewers or Redis subscribers: the one engine, the one summary.
async fn sim_engine(
    target: sim::Target,
    e: EngineArgs,
    mix: sim::Mix,
    mut behaviour: sim::Behaviour,
) -> Result<()> {
    raise_open_files();
    let n = e.count.context("-n is required")?;
    behaviour.connect_timeout_ms = secs("--connect-timeout", e.connect_timeout)?.as_millis() as u64;
    let run = sim::ViewerSim {
        target,
        viewers: n,
        concurrency: e.concurrency,
        workers: e.workers,
        mix,
        behaviour,
        hold: e.hold,
        duration_limit: e.duration_limit.map(|s| secs("--duration-limit", s)).transpose()?,
        worker_exe: None,
        seed: e.seed,
    };
    let stop = stop_on_signal();
    if e.hold {
        // A harness releases the held viewers by closing our stdin.
        sim::cancel_at_eof(std::io::stdin(), stop.clone());
    }
    let mut ui = Display::stderr(e.json, n, "viewers");
    let summary = sim::run_viewers(run, &mut ui, stop).await?;
    drop(ui);
    print_summary(e.json, &summary, || summary.text());
    if summary.failed > 0 {
        bail!("{} of {} viewers failed", summary.failed, summary.viewers);
    }
    Ok(())
}

async fn sim_http(a: SimHttpArgs) -> Result<()> {
    raise_open_files();
    let run = sim::http::HttpSim {
        server: a.server,
        requests: a.count,
        concurrency: a.concurrency,
        paths: a.paths,
        match_id: a.match_id,
        new_connection: a.new_connection,
        timeout: secs("--timeout", a.timeout)?,
    };
    let mut ui = Display::stderr(a.json, a.count, "requests");
    let summary = sim::http::run_http(run, &mut ui, stop_on_signal()).await?;
    drop(ui);
    print_summary(a.json, &summary, || summary.text());
    if summary.failed > 0 {
        bail!("{} of {} requests failed", summary.failed, summary.requests);
    }
    Ok(())
}

async fn run_sim_worker() -> Result<()> {
    raise_open_files();
    // Ctrl-C reaches the whole process group: the parent handles it by closing our stdin, and
    // we must live to send our report.
    tokio::spawn(async { while tokio::signal::ctrl_c().await.is_ok() {} });
    sim::worker::serve(std::io::stdin(), tokio::io::stdout()).await?;
    Ok(())
}
