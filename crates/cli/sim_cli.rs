//! The `matchstream sim` command line: its arguments and how they become simulator runs
//! (`matchstream_sim`). Part of the binary; the library never sees argv. Durations take units
//! as everywhere (`10s`, `250ms`, `2m`; a bare number, `0.5` too, is seconds).

use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};

use matchstream_ops::limits::raise_open_files;
use matchstream_sim::{self as sim, Display};

use crate::{duration, stop_on_signal};

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub(crate) struct SimArgs {
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
    /// N WebSocket subscribers of one public channel of a Pusher-protocol server (Sockudo),
    /// measured like viewers.
    Pusher(SimPusherArgs),
    /// Publishes sized, timestamped messages to a Pusher channel through the server's signed
    /// HTTP API, then an end message.
    PusherPublish(SimPusherPublishArgs),
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
    /// Worker processes (default: one per 9,500 viewers).
    #[arg(long, env = "MATCHSTREAM_SIM_WORKERS")]
    workers: Option<usize>,
    /// Stay connected until stdin closes, a signal, or the duration limit; prints
    /// `connected N` on stderr once all are connected.
    #[arg(long, env = "MATCHSTREAM_SIM_HOLD")]
    hold: bool,
    /// How long before viewers still running stop (and count as incomplete): 90s, 2m.
    #[arg(long, env = "MATCHSTREAM_SIM_DURATION_LIMIT", value_parser = duration)]
    duration_limit: Option<Duration>,
    /// Time for TCP connect + connect line to first byte (and for /1/checkin).
    #[arg(long, env = "MATCHSTREAM_SIM_CONNECT_TIMEOUT", default_value = "10s", value_parser = duration)]
    connect_timeout: Duration,
    /// Seed of the random choices (delays, when to leave).
    #[arg(long, env = "MATCHSTREAM_SIM_SEED", default_value_t = 1)]
    seed: u64,
    /// One JSON summary on stdout; progress as JSON lines on stderr.
    #[arg(long, env = "MATCHSTREAM_SIM_JSON")]
    json: bool,
}

#[derive(Args)]
struct SimViewerArgs {
    /// Base URL of the node's HTTP API (for /1/checkin, and where WebSocket and SSE viewers
    /// connect); with several nodes, their URLs separated by commas: each viewer starts at a
    /// different one and moves on from one that does not answer.
    #[arg(long, env = "MATCHSTREAM_SERVER", default_value = "http://127.0.0.1:8888")]
    server: String,
    /// The match to watch.
    #[arg(long = "match", env = "MATCHSTREAM_MATCH", required = true)]
    match_id: Option<String>,
    /// Viewer protocol: v1 or v2 (alias tcp) on a viewer port, or ws (WebSocket,
    /// /1/match/<id>/ws) or sse (Server-Sent Events, /1/match/<id>/stream) on the node's HTTP
    /// port of --server. Every protocol's stream is checked alike: gapless seq, the bye.
    #[arg(long, env = "MATCHSTREAM_SIM_PROTOCOL", default_value = "v2")]
    protocol: sim::Protocol,
    /// TCP viewer addresses to take in turn instead of asking /1/checkin: host:port,host:port.
    #[arg(long, env = "MATCHSTREAM_SIM_VIEWERS", value_delimiter = ',')]
    viewers: Vec<String>,
    /// With https:// servers (a node with --tls-cert), every viewer speaks TLS, on the viewer
    /// ports too; their certificate is checked against this CA certificate (PEM), else
    /// against the system's roots.
    #[arg(long, env = "MATCHSTREAM_CA_CERT")]
    ca_cert: Option<std::path::PathBuf>,
    /// Interaction paths in percent (watch=70,late=10,leave=10,reconnect=5,slow=5; default all
    /// watch) and/or protocols in percent (tcp:50,ws:30,sse:20 with v1, v2 or tcp, ws, sse;
    /// default all --protocol), in one list: watch=90,slow=10,tcp:50,ws:50. With several
    /// protocols the summary has a line (JSON: `protocols`) per protocol.
    #[arg(long, env = "MATCHSTREAM_SIM_MIX", default_value = "watch=100")]
    mix: sim::Mix,
    /// Time within which `late` viewers connect.
    #[arg(long, env = "MATCHSTREAM_SIM_LATE_WITHIN", default_value = "2s", value_parser = duration)]
    late_within: Duration,
    /// `leave` and `reconnect` viewers act after 1 to this many events.
    #[arg(long, env = "MATCHSTREAM_SIM_ACT_AFTER", default_value_t = 20)]
    act_after: u64,
    /// How long `slow` viewers sleep between small reads. The older --slow-read-ms N
    /// (MATCHSTREAM_SIM_SLOW_READ_MS) is still read, in milliseconds.
    #[arg(long, env = "MATCHSTREAM_SIM_SLOW_READ", default_value = "20ms", value_parser = duration)]
    slow_read: Duration,
    /// --slow-read in milliseconds (the older spelling).
    #[arg(long, env = "MATCHSTREAM_SIM_SLOW_READ_MS", conflicts_with = "slow_read", hide = true)]
    slow_read_ms: Option<u64>,
    /// v2, ws and sse viewers that lose their node (closed or reset without `bye match_over`,
    /// or `bye shutdown`) come back with FROM (ws, sse: from=) at the bye's `try`, else through
    /// /1/checkin (ws, sse: the next --server), retrying for up to 30 s, instead of failing; the
    /// summary tells how many resumed and how fast. Told `full`, every viewer goes to its `try`
    /// (or checks in again after `retry_after_ms`), with or without --resume.
    #[arg(long, env = "MATCHSTREAM_SIM_RESUME")]
    resume: bool,
    #[command(flatten)]
    engine: EngineArgs,
}

#[derive(Args)]
struct RedisArgs {
    /// redis-server address: host:port or redis://host:port.
    #[arg(
        long,
        env = "MATCHSTREAM_REDIS",
        default_value = "127.0.0.1:6379",
        hide_env_values = true
    )]
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
struct PusherArgs {
    /// host:port of the Pusher-protocol server (its WebSockets and its HTTP API).
    #[arg(long, env = "MATCHSTREAM_SIM_PUSHER", default_value = "127.0.0.1:6001")]
    pusher: String,
    /// The app's key.
    #[arg(long, env = "MATCHSTREAM_SIM_PUSHER_KEY", default_value = "app-key")]
    key: String,
    /// The public channel.
    #[arg(long, env = "MATCHSTREAM_SIM_CHANNEL", default_value = "sim")]
    channel: String,
}

#[derive(Args)]
struct SimPusherArgs {
    #[command(flatten)]
    pusher: PusherArgs,
    #[command(flatten)]
    engine: EngineArgs,
}

#[derive(Args)]
struct SimPusherPublishArgs {
    #[command(flatten)]
    pusher: PusherArgs,
    /// The app's id (in the API's path).
    #[arg(long, env = "MATCHSTREAM_SIM_PUSHER_APP_ID", default_value = "app-id")]
    app_id: String,
    /// The app's secret, which signs each request.
    #[arg(long, env = "MATCHSTREAM_SIM_PUSHER_SECRET", default_value = "app-secret")]
    secret: String,
    /// The event name of each message.
    #[arg(long, env = "MATCHSTREAM_SIM_EVENT", default_value = "sim")]
    event: String,
    #[command(flatten)]
    mode: PublishModeArgs,
    /// Do not send the final `end` message (subscribers then wait to be released, as with
    /// `redis-publish --no-end`).
    #[arg(long, env = "MATCHSTREAM_SIM_NO_END")]
    no_end: bool,
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
    /// How long a request may take.
    #[arg(long, env = "MATCHSTREAM_SIM_TIMEOUT", default_value = "30s", value_parser = duration)]
    timeout: Duration,
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
    /// How long to publish at --rate.
    #[arg(long, env = "MATCHSTREAM_SIM_DURATION", default_value = "10s", value_parser = duration)]
    duration: Duration,
    /// Publish this many at once instead (one request with a list, one Redis pipeline).
    #[arg(long, env = "MATCHSTREAM_SIM_BURST")]
    burst: Option<u32>,
    /// With --rate: requests (PUBLISH commands) unanswered at most. Each message leaves at its
    /// time while fewer are in flight (open loop, as a match's events come); 1 waits for each
    /// answer before sending the next (closed loop: measures round trips, not fan-out).
    #[arg(long, env = "MATCHSTREAM_SIM_IN_FLIGHT", default_value_t = 64, conflicts_with = "burst")]
    in_flight: usize,
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
            None => sim::PublishMode::Rate {
                per_s: self.rate,
                secs: self.duration.as_secs_f64(),
                in_flight: self.in_flight,
            },
        }
    }
}

#[derive(Args)]
struct SimPublishArgs {
    /// Base URL of the node's HTTP API.
    #[arg(long, env = "MATCHSTREAM_SERVER", default_value = "http://127.0.0.1:8888")]
    server: String,
    /// Watcher token of the node (the older variable MATCHSTREAM_TOKEN is read too).
    #[arg(long, env = "MATCHSTREAM_WATCHER_TOKEN", hide_env_values = true)]
    token: Option<String>,
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
    /// CA certificate (PEM) an https:// server's certificate is checked against; without it,
    /// the system's roots.
    #[arg(long, env = "MATCHSTREAM_CA_CERT")]
    ca_cert: Option<std::path::PathBuf>,
    #[command(flatten)]
    mode: PublishModeArgs,
}

#[derive(Args)]
struct SimRedisPublishArgs {
    #[command(flatten)]
    redis: RedisArgs,
    #[command(flatten)]
    mode: PublishModeArgs,
    /// Do not send the final `end` message (subscribers then wait to be released, like held
    /// MatchStream viewers: the benchmark compares the two without the extra fan-out).
    #[arg(long, env = "MATCHSTREAM_SIM_NO_END")]
    no_end: bool,
}

/// A duration in whole milliseconds, as the simulator's behaviour counts them.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
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

pub(crate) async fn run_sim(args: SimArgs) -> Result<()> {
    match args.command {
        Some(SimCommand::Http(a)) => sim_http(a).await,
        Some(SimCommand::Publish(a)) => {
            let token = crate::watcher_token(a.token, "sim publish")?;
            let p = sim::publish::Publish {
                server: a.server,
                token,
                match_id: a.match_id,
                create: a.create,
                start: a.start,
                mode: a.mode.mode(),
                payload: a.mode.payload,
                stop: a.stop,
                ca_cert: a.ca_cert,
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
                end: !a.no_end,
            };
            let report = sim::redis::publish(&p).await?;
            print_summary(a.mode.json, &report, || report.text());
            Ok(())
        }
        Some(SimCommand::Pusher(a)) => {
            let target = sim::Target::Pusher {
                addr: a.pusher.pusher,
                key: a.pusher.key,
                channel: a.pusher.channel,
            };
            sim_engine(target, a.engine, sim::Mix::default(), sim::Behaviour::default()).await
        }
        Some(SimCommand::PusherPublish(a)) => {
            let p = sim::pusher::PusherPublish {
                addr: a.pusher.pusher,
                app_id: a.app_id,
                key: a.pusher.key,
                secret: a.secret,
                channel: a.pusher.channel,
                event: a.event,
                mode: a.mode.mode(),
                payload: a.mode.payload,
                end: !a.no_end,
            };
            let report = sim::pusher::publish(&p).await?;
            print_summary(a.mode.json, &report, || report.text());
            Ok(())
        }
        None => {
            let a = args.viewers;
            let target = sim::Target::Matchstream {
                server: sim::servers(&a.server)?.join(","),
                match_id: a.match_id.context("--match is required")?,
                protocol: a.protocol,
                viewers: a.viewers,
                ca_cert: a.ca_cert,
            };
            let behaviour = sim::Behaviour {
                late_within_ms: millis(a.late_within),
                act_after_max_events: a.act_after,
                slow_read_ms: a.slow_read_ms.unwrap_or(millis(a.slow_read)),
                resume: a.resume,
                ..sim::Behaviour::default()
            };
            sim_engine(target, a.engine, a.mix, behaviour).await
        }
    }
}

/// Viewers, Redis or Pusher subscribers: the one engine, the one summary.
async fn sim_engine(
    target: sim::Target,
    e: EngineArgs,
    mix: sim::Mix,
    mut behaviour: sim::Behaviour,
) -> Result<()> {
    raise_open_files();
    let n = e.count.context("-n is required")?;
    behaviour.connect_timeout_ms = millis(e.connect_timeout);
    let run = sim::ViewerSim {
        target,
        viewers: n,
        concurrency: e.concurrency,
        workers: e.workers,
        mix,
        behaviour,
        hold: e.hold,
        duration_limit: e.duration_limit,
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
        timeout: a.timeout,
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

pub(crate) async fn run_sim_worker() -> Result<()> {
    raise_open_files();
    // Ctrl-C reaches the whole process group: the parent handles it by closing our stdin, and
    // we must live to send our report.
    tokio::spawn(async { while tokio::signal::ctrl_c().await.is_ok() {} });
    sim::worker::serve(std::io::stdin(), tokio::io::stdout()).await?;
    Ok(())
}
