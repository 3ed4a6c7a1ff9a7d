//! The `matchstream` binary: parses arguments, installs logging and signal handling, and calls
//! the library. Every flag also reads a `MATCHSTREAM_<FLAG>` environment variable, and `serve`'s
//! a config file too (`config_file`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use matchstream::config;
use matchstream_client::{matchfile, replay, TlsClient};
use matchstream_ops::limits::raise_open_files;

mod config_file;
mod demo;
mod local_redis;
mod logging;
mod serve;
mod sim_cli;

use logging::{fatal, init_logging, LogFormat};
use serve::{serve, ServeArgs};
use sim_cli::{run_sim, run_sim_worker, SimArgs};

/// The commit this binary was built from (crates/cli/build.rs): a hash, or `unknown`.
const COMMIT: &str = env!("MATCHSTREAM_BUILD_COMMIT");

/// What `--version` says after the name (SPEC 11): `0.1.0 (commit 0123456789ab)`.
const VERSION: &str =
    concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("MATCHSTREAM_BUILD_COMMIT"), ")");

/// Streams live football matches to very many viewers.
#[derive(Parser)]
#[command(name = "matchstream", version = VERSION, about)]
struct Cli {
    /// Log lines on stderr as `text` (for people) or `json` (one object per line with
    /// timestamp, level, target, message and the event's fields, for log collectors).
    #[arg(
        long,
        global = true,
        env = "MATCHSTREAM_LOG_FORMAT",
        value_enum,
        default_value_t = LogFormat::Text
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node: watcher and read API over HTTP, viewers over TCP (v1 and v2), WebSocket and
    /// SSE, the live page (/) and the operator's page (/ops).
    Serve(ServeArgs),
    /// Publish a match file (Erlang terms or JSON) to a node, keeping its pauses.
    Replay(ReplayArgs),
    /// Everything at once: a node on a temporary store, the bundled match replayed, a viewer.
    Demo(DemoArgs),
    /// Load simulator: N viewers of a match (default), or `http`, `publish`, `redis`,
    /// `redis-publish`.
    Sim(SimArgs),
    /// Reads this machine's limits and says which would stop a node holding N viewers, and the
    /// command that lifts each. Exits 1 if any would.
    Doctor(DoctorArgs),
    /// A node's figures and its cluster's, refreshed every second (q to quit), from its
    /// /ops.json: one row per node and per live match.
    Top(TopArgs),
    /// A worker process of `sim` (its job as JSON on stdin, reports as JSON lines on stdout).
    #[command(hide = true)]
    SimWorker,
}

/// A duration flag (SPEC 8): `10s`, `250ms`, `2m`; a bare number is seconds.
pub(crate) fn duration(s: &str) -> Result<Duration, config::ConfigError> {
    config::parse_duration(s)
}

/// An address to listen on: an IP or a host name, and a port.
fn addr(s: &str) -> Result<SocketAddr, config::ConfigError> {
    config::parse_addr(s)
}

#[derive(Args)]
struct ReplayArgs {
    /// The match file (the original's Erlang terms, or JSON).
    file: PathBuf,
    /// Base URL of the node's HTTP API (https:// for a node with --tls-cert).
    #[arg(long, env = "MATCHSTREAM_SERVER", default_value = "http://127.0.0.1:8888")]
    server: String,
    /// CA certificate (PEM) that an https:// server's certificate is checked against (a private
    /// CA, or a self-signed certificate); without it, the system's roots.
    #[arg(long, env = "MATCHSTREAM_CA_CERT")]
    ca_cert: Option<PathBuf>,
    /// Watcher token of the node (the older variable MATCHSTREAM_TOKEN is read too).
    #[arg(long, env = "MATCHSTREAM_WATCHER_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Play this many times faster than the file's pauses.
    #[arg(long, env = "MATCHSTREAM_SPEED", default_value_t = 1.0)]
    speed: f64,
    /// If the match exists, cancel it and replay it anew.
    #[arg(long, env = "MATCHSTREAM_REPLACE")]
    replace: bool,
    /// If the match exists, continue it after the events it has (its seq): the file's events
    /// up to there and the pauses before the next one are skipped. For a match created ahead
    /// of time, or a replay that was interrupted.
    #[arg(long, env = "MATCHSTREAM_RESUME", conflicts_with = "replace")]
    resume: bool,
}

#[derive(Args)]
struct DoctorArgs {
    /// Concurrent viewers one node should hold.
    // MATCHSTREAM_DOCTOR_*, like the simulator's MATCHSTREAM_SIM_*: MATCHSTREAM_VIEWERS is
    // serve's port range in a shell set up for a node.
    #[arg(long, env = "MATCHSTREAM_DOCTOR_VIEWERS", default_value_t = 1_000_000)]
    viewers: u64,
    /// The report as JSON (for scripts).
    #[arg(long, env = "MATCHSTREAM_DOCTOR_JSON")]
    json: bool,
}

#[derive(Args)]
struct DemoArgs {
    /// Replay speed of the bundled match (its pauses divided by this).
    #[arg(long, env = "MATCHSTREAM_SPEED", default_value_t = 5.0)]
    speed: f64,
    /// Stop when the match is over instead of serving until Ctrl-C.
    #[arg(long, env = "MATCHSTREAM_EXIT_WHEN_DONE")]
    exit_when_done: bool,
    /// HTTP API address (port 0: any free port; a host name is resolved).
    #[arg(long, env = "MATCHSTREAM_HTTP", default_value = "127.0.0.1:0", value_parser = addr)]
    http: SocketAddr,
    /// Nodes to run; more than one are joined through a local redis-server (needs it installed).
    #[arg(long, env = "MATCHSTREAM_DEMO_NODES", default_value_t = 1)]
    nodes: usize,
}

fn main() -> ExitCode {
    let (matches, from_file) =
        match config_file::parse(Cli::command(), std::env::args_os().collect()) {
            Ok(parsed) => parsed,
            Err(e) => {
                // As clap does for a flag it cannot take: the usage was wrong, exit 2.
                eprintln!("matchstream: {e:#}");
                return ExitCode::from(2);
            }
        };
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let serve_matches = matches.subcommand_matches("serve").cloned().unwrap_or_default();
    // The demo's terminal belongs to the match; its node logs only what goes wrong.
    let level = if matches!(cli.command, Command::Demo(_)) { "warn" } else { "info" };
    init_logging(cli.log_format, level);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            fatal(&format!("cannot start the runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve(args, &serve_matches, from_file.as_ref()).await,
            Command::Replay(args) => run_replay(args).await,
            Command::Demo(args) => run_demo(args).await,
            Command::Sim(args) => run_sim(args).await,
            Command::Doctor(args) => doctor(args),
            Command::Top(args) => top(args).await,
            Command::SimWorker => run_sim_worker().await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            fatal(&format!("{e:#}"));
            ExitCode::FAILURE
        }
    }
}

#[derive(Args)]
struct TopArgs {
    /// Base URL of a node's admin listener (`serve --admin`), where /ops.json is served.
    #[arg(long, env = "MATCHSTREAM_ADMIN_URL", default_value = "http://127.0.0.1:9091")]
    server: String,
    /// Print one screen as plain text and exit.
    #[arg(long, env = "MATCHSTREAM_TOP_ONCE")]
    once: bool,
    /// CA certificate (PEM) that an https:// admin listener's certificate (serve --admin-tls)
    /// is checked against; without it, the system's roots.
    #[arg(long, env = "MATCHSTREAM_CA_CERT")]
    ca_cert: Option<PathBuf>,
}

/// `matchstream top`: live in the terminal, or `--once` on stdout.
async fn top(args: TopArgs) -> Result<()> {
    use matchstream_ops::top;
    let tls = tls_for(&args.server, args.ca_cert.as_deref())?;
    let tls = tls.map(|t| t.config().clone());
    if args.once {
        print!("{}", top::once(&args.server, tls).await?);
        return Ok(());
    }
    top::run(&args.server, tls).await?;
    Ok(())
}

/// The certificates an `https://` server is checked against: `--ca-cert`'s, or the system's
/// roots; none for `http://`.
fn tls_for(server: &str, ca_cert: Option<&std::path::Path>) -> Result<Option<TlsClient>> {
    if !server.starts_with("https://") {
        return Ok(None);
    }
    let tls = TlsClient::new(ca_cert);
    Ok(Some(tls.with_context(|| format!("cannot check the certificate of {server}"))?))
}

/// `matchstream doctor`: the report on stdout; exit 1 (with the report still printed) when a
/// limit stops the viewers asked for.
fn doctor(args: DoctorArgs) -> Result<()> {
    use matchstream_ops::doctor::{examine, Machine};
    let machine = Machine::read().context("cannot read this machine's limits")?;
    let report = examine(&machine, args.viewers);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report).context("report as JSON")?);
    } else {
        print!("{}", report.text());
    }
    if report.blocked {
        std::process::exit(1);
    }
    Ok(())
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
            fatal("interrupted again; exiting at once");
            std::process::exit(130);
        }
    });
    token
}

/// The watcher token of a command that publishes: its `--token` (or MATCHSTREAM_WATCHER_TOKEN,
/// the one variable of the token everywhere, SPEC 8), else the older MATCHSTREAM_TOKEN.
pub(crate) fn watcher_token(given: Option<String>, command: &str) -> Result<String> {
    match given.or_else(|| std::env::var("MATCHSTREAM_TOKEN").ok()) {
        Some(token) => Ok(token),
        None => {
            bail!("{command} needs the node's watcher token: --token or MATCHSTREAM_WATCHER_TOKEN")
        }
    }
}

async fn run_replay(args: ReplayArgs) -> Result<()> {
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let file = matchfile::parse(&text).with_context(|| format!("{}", args.file.display()))?;
    if !(args.speed.is_finite() && args.speed > 0.0) {
        bail!("--speed must be a number above 0");
    }
    let if_exists = match (args.replace, args.resume) {
        (true, _) => replay::IfExists::Replace,
        (false, true) => replay::IfExists::Resume,
        (false, false) => replay::IfExists::Fail,
    };
    let token = watcher_token(args.token, "replay")?;
    let opts = replay::ReplayOptions {
        tls: tls_for(&args.server, args.ca_cert.as_deref())?,
        server: args.server.trim_end_matches('/').to_owned(),
        token,
        speed: args.speed,
        if_exists,
    };
    let total = file.events().count();
    let stop = stop_on_signal();
    let run = replay::replay(&file, &opts, |p| match p {
        replay::Progress::Replacing { id } => {
            println!("replacing {id}: cancelling the existing match")
        }
        replay::Progress::Created { id } => println!("created {id}"),
        replay::Progress::Resuming { id, seq } => {
            let skip = usize::try_from(seq).map_or(total, |seq| seq.min(total));
            let done = if skip == total { "; nothing left to publish" } else { "" };
            println!("resuming {id} after seq {seq}: skipping {skip} of {total} events{done}")
        }
        replay::Progress::Waiting { ms } => println!("waiting {:.1} s", ms as f64 / 1000.0),
        replay::Progress::Published { index, total, kind, seq } => {
            println!("[{index}/{total}] {kind} -> seq {seq}")
        }
        replay::Progress::Retrying { index, wait_ms, reason } => {
            println!("event {index}: no answer ({reason}); posting it again in {wait_ms} ms")
        }
    });
    tokio::select! {
        summary = run => {
            let s = summary?;
            println!("done: {} events published to {}, last seq {}", s.events, s.id, s.last_seq);
            Ok(())
        }
        _ = stop.cancelled() => {
            bail!("interrupted; the match stays as far as it was published (--resume continues it)")
        }
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
        nodes: args.nodes,
        ..demo::DemoOptions::default()
    };
    demo::run(opts, Box::new(std::io::stdout()), stop_on_signal()).await?;
    Ok(())
}
