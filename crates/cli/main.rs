//! The `matchstream` binary: parses arguments, installs logging and signal handling, and calls
//! the library. Every flag also reads a `MATCHSTREAM_<FLAG>` environment variable, and `serve`'s
//! a config file too (`config_file`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use matchstream::config::{self, Config};
use matchstream::server;
use matchstream_client::{matchfile, replay, TlsClient};
use matchstream_ops::limits::raise_open_files;

mod config_file;
mod demo;
mod local_redis;
mod logging;
mod sim_cli;

use logging::{fatal, init_logging, LogFormat};
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

#[derive(Args)]
struct ServeArgs {
    /// A TOML file of settings: every flag below is a key, dashes as underscores
    /// (min_write_interval = "150ms", watcher_token = ["a", "b"]). A flag or its variable beats
    /// the file, which beats the default.
    #[arg(long, env = "MATCHSTREAM_CONFIG")]
    config: Option<PathBuf>,
    /// Print the configuration in effect as TOML (a config file; secrets masked) and exit.
    #[arg(long, env = "MATCHSTREAM_PRINT_CONFIG")]
    print_config: bool,
    /// HTTP API address (watcher and read API, WebSocket and SSE viewers, the live page); a
    /// host name (localhost:8888) is resolved at start.
    #[arg(long, env = "MATCHSTREAM_HTTP", default_value = "127.0.0.1:8888", value_parser = addr)]
    http: SocketAddr,
    /// Viewer port or port range, one listener per port: 127.0.0.1:9100 or 127.0.0.1:9100-9103
    /// (or a host name: localhost:9100-9103).
    #[arg(long, env = "MATCHSTREAM_VIEWERS", default_value = "127.0.0.1:9100", value_parser = viewer_addrs)]
    viewers: ViewerAddrs,
    /// The operator's listener: /metrics, /ops, /ops.json, /healthz and /readyz (e.g.
    /// 127.0.0.1:9091). Off unless given; the public --http port never serves the figures.
    #[arg(long, env = "MATCHSTREAM_ADMIN", value_parser = addr)]
    admin: Option<SocketAddr>,
    /// Directory of the embedded store (created if missing; unused with --redis).
    #[arg(long, env = "MATCHSTREAM_DATA", default_value = "./data")]
    data: PathBuf,
    /// Join other nodes through a shared Redis: redis://host:port, or a Redis Cluster as
    /// redis+cluster://host:port,host:port,... (without it the node runs alone); rediss:// and
    /// rediss+cluster:// over TLS. A password (redis://user:password@host) given before a
    /// cluster's first host is used for every host, and never logged.
    #[arg(long, env = "MATCHSTREAM_REDIS", hide_env_values = true)]
    redis: Option<String>,
    /// With rediss://: a private CA's certificate (PEM) to trust instead of the system's roots.
    #[arg(long, env = "MATCHSTREAM_REDIS_CA_CERT")]
    redis_ca_cert: Option<PathBuf>,
    /// Acknowledge a write only once this many Redis replicas confirm it (WAIT), instead of
    /// requiring `appendfsync always` on Redis.
    #[arg(long, env = "MATCHSTREAM_REDIS_WAIT_REPLICAS", default_value_t = 0)]
    redis_wait_replicas: u32,
    /// Accept a Redis that may lose acknowledged events (no fsync of every write, no replicas).
    #[arg(long, env = "MATCHSTREAM_REDIS_VOLATILE")]
    redis_volatile: bool,
    /// A bearer token that may publish; repeat for several (comma-separated in the variable).
    #[arg(
        long = "watcher-token",
        env = "MATCHSTREAM_WATCHER_TOKEN",
        value_delimiter = ',',
        hide_env_values = true
    )]
    watcher_token: Vec<String>,
    /// A file of bearer tokens that may publish, one per line (blank lines and lines starting
    /// with # are skipped); with --watcher-token, both are accepted.
    #[arg(long, env = "MATCHSTREAM_WATCHER_TOKEN_FILE")]
    watcher_token_file: Option<PathBuf>,
    /// Host that /1/checkin names to viewers (default: the listener's IP).
    #[arg(long, env = "MATCHSTREAM_PUBLIC_HOST")]
    public_host: Option<String>,
    /// Most viewers at once (default: the open-file limit less a reserve for the node itself).
    #[arg(long, env = "MATCHSTREAM_MAX_VIEWERS")]
    max_viewers: Option<usize>,
    /// How long a viewer has to send its connect line (10s, 250ms, 2m; a bare number is seconds).
    #[arg(long, env = "MATCHSTREAM_CONNECT_TIMEOUT", default_value = "30s", value_parser = duration)]
    connect_timeout: Duration,
    /// How long a viewer's socket may accept nothing before it is closed as too slow.
    #[arg(long, env = "MATCHSTREAM_WRITE_TIMEOUT", default_value = "30s", value_parser = duration)]
    write_timeout: Duration,
    /// Events kept in memory per match for viewers briefly behind.
    #[arg(long, env = "MATCHSTREAM_RING_EVENTS", default_value_t = 1024)]
    ring_events: usize,
    /// A viewer more than this many events behind is closed as too slow.
    #[arg(long, env = "MATCHSTREAM_MAX_LAG_EVENTS", default_value_t = 10_000)]
    max_lag_events: u64,
    /// Silence after which an SSE viewer gets a `: ping` comment (at most 15s: SPEC 5 wants one
    /// at least every 15 s); a WebSocket viewer gets a ping after twice this. The older
    /// --keepalive-ms N (MATCHSTREAM_KEEPALIVE_MS) is still read, in milliseconds.
    #[arg(long, env = "MATCHSTREAM_KEEPALIVE", default_value = "15s", value_parser = duration)]
    keepalive: Duration,
    /// --keepalive in milliseconds (the older spelling).
    #[arg(long, env = "MATCHSTREAM_KEEPALIVE_MS", conflicts_with = "keepalive", hide = true)]
    keepalive_ms: Option<u64>,
    /// While events come fast, at most one write per viewer per this long (an event sooner
    /// after the last write waits for the next, which carries all pending); after a quiet
    /// spell an event goes out at once. 0s writes every burst as it comes.
    #[arg(long, env = "MATCHSTREAM_MIN_WRITE_INTERVAL", default_value = "150ms", value_parser = duration)]
    min_write_interval: Duration,
    /// How long viewers and requests get to finish on shutdown, after the drain window.
    #[arg(long, env = "MATCHSTREAM_SHUTDOWN_GRACE", default_value = "5s", value_parser = duration)]
    shutdown_grace: Duration,
    /// How long a stopping node spreads its viewers' goodbyes over (and the `retry_after_ms`
    /// they carry), so that they do not all reconnect elsewhere at once. The older
    /// --drain-window-ms N (MATCHSTREAM_DRAIN_WINDOW_MS) is still read, in milliseconds.
    #[arg(long, env = "MATCHSTREAM_DRAIN_WINDOW", default_value = "10s", value_parser = duration)]
    drain_window: Duration,
    /// How long an ended match stays in memory after its end (1s to 7 days); after that it is
    /// read again from the store when asked for, so memory does not grow with past matches.
    #[arg(long, env = "MATCHSTREAM_KEEP_ENDED", default_value = "10m", value_parser = duration)]
    keep_ended: Duration,
    /// --drain-window in milliseconds (the older spelling).
    #[arg(long, env = "MATCHSTREAM_DRAIN_WINDOW_MS", conflicts_with = "drain_window", hide = true)]
    drain_window_ms: Option<u64>,
    /// An HTTP request's head must arrive within this long.
    #[arg(long, env = "MATCHSTREAM_HTTP_HEAD_TIMEOUT", default_value = "10s", value_parser = duration)]
    http_head_timeout: Duration,
    /// Largest HTTP request head, in bytes.
    #[arg(long, env = "MATCHSTREAM_HTTP_MAX_HEAD", default_value_t = 16 * 1024)]
    http_max_head: usize,
    /// Largest HTTP request body, in bytes.
    #[arg(long, env = "MATCHSTREAM_HTTP_MAX_BODY", default_value_t = 256 * 1024)]
    http_max_body: usize,
    /// An HTTP request's body must arrive within this long of its head.
    #[arg(long, env = "MATCHSTREAM_HTTP_BODY_TIMEOUT", default_value = "10s", value_parser = duration)]
    http_body_timeout: Duration,
    /// A kept-alive HTTP connection with no request for this long is closed.
    #[arg(long, env = "MATCHSTREAM_HTTP_IDLE_TIMEOUT", default_value = "60s", value_parser = duration)]
    http_idle_timeout: Duration,
    /// Most HTTP connections at once (past it they wait in the kernel's backlog); WebSocket and
    /// SSE viewers leave this budget once their handshake is done.
    #[arg(long, env = "MATCHSTREAM_HTTP_MAX_CONNECTIONS", default_value_t = 8192)]
    http_max_connections: usize,
    /// Most HTTP connections from one client address (past it a new one is closed at once).
    #[arg(long, env = "MATCHSTREAM_HTTP_MAX_PER_ADDRESS", default_value_t = 1024)]
    http_max_per_address: usize,
    /// Most viewer connections at once that have not sent their connect line yet (past it they
    /// wait in the kernel's backlog); they never count as viewers.
    #[arg(long, env = "MATCHSTREAM_MAX_HANDSHAKES", default_value_t = 4096)]
    max_handshakes: usize,
    /// Most of those from one client address (past it a new one is told why and closed).
    #[arg(long, env = "MATCHSTREAM_MAX_HANDSHAKES_PER_ADDRESS", default_value_t = 1024)]
    max_handshakes_per_address: usize,
    /// A WebSocket client frame must arrive whole within this long.
    #[arg(long, env = "MATCHSTREAM_WS_FRAME_TIMEOUT", default_value = "10s", value_parser = duration)]
    ws_frame_timeout: Duration,
    /// Most events one publish request may carry.
    #[arg(long, env = "MATCHSTREAM_MAX_EVENTS_PER_REQUEST", default_value_t = 256)]
    max_events_per_request: usize,
    /// History page size when a request names no limit.
    #[arg(long, env = "MATCHSTREAM_HISTORY_LIMIT", default_value_t = 500)]
    history_limit: usize,
    /// Largest history page; a larger limit is capped and the answer points at the next page.
    #[arg(long, env = "MATCHSTREAM_MAX_HISTORY_LIMIT", default_value_t = 2000)]
    max_history_limit: usize,
    /// History reads from the store running at once (more wait their turn).
    #[arg(long, env = "MATCHSTREAM_MAX_STORE_READS", default_value_t = 64)]
    max_store_reads: usize,
    /// PEM certificate chain (the node's certificate first, as certbot's fullchain.pem): the
    /// HTTP port becomes HTTPS (WebSocket wss://) and the viewer ports TLS. Needs --tls-key;
    /// SIGHUP reads both files again without dropping a connection.
    #[arg(long, env = "MATCHSTREAM_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "MATCHSTREAM_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Serve the admin listener (--admin) over TLS too, with the same certificate.
    #[arg(long, env = "MATCHSTREAM_ADMIN_TLS", requires = "tls_cert")]
    admin_tls: bool,
}

/// A duration flag (SPEC 8): `10s`, `250ms`, `2m`; a bare number is seconds.
pub(crate) fn duration(s: &str) -> Result<Duration, config::ConfigError> {
    config::parse_duration(s)
}

/// An address to listen on: an IP or a host name, and a port.
fn addr(s: &str) -> Result<SocketAddr, config::ConfigError> {
    config::parse_addr(s)
}

/// The viewer listeners of `--viewers`, one per port of its range.
#[derive(Clone)]
struct ViewerAddrs(Vec<SocketAddr>);

fn viewer_addrs(s: &str) -> Result<ViewerAddrs, config::ConfigError> {
    config::parse_viewers(s).map(ViewerAddrs)
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

async fn serve(
    args: ServeArgs,
    matches: &ArgMatches,
    from_file: Option<&config_file::FromFile>,
) -> Result<()> {
    let print_config = args.print_config;
    let (config, max_viewers) = serve_config(args)?;
    if let Err(e) = config.validate() {
        usage_error(&from_file.map_or_else(|| e.0.clone(), |f| f.blame(&e.0)));
    }
    let mut cli = Cli::command();
    // Built, so that the global flags (`--log-format`) are among `serve`'s keys.
    cli.build();
    let serve_command = cli.find_subcommand("serve").context("no serve subcommand")?;
    if print_config {
        print!("{}", config_file::print(serve_command, matches));
        return Ok(());
    }
    if let Some(key) = config_file::masked_secret(serve_command, matches) {
        usage_error(&format!(
            "`{key}` holds \"{}\", what --print-config shows in place of a secret: give the real value",
            matchstream::config::MASK
        ));
    }
    if config.watcher_tokens.is_empty() {
        tracing::warn!("no --watcher-token: nobody can publish to this node");
    }
    let stop = stop_on_signal();
    // SIGHUP is caught from here on, before the listeners open: a `systemctl reload` as the
    // node starts waits for it instead of killing it (SIGHUP's default).
    #[cfg(unix)]
    let hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
    let node = server::start(config).await.context("cannot start the node")?;
    tracing::info!(max_viewers, "node ready");
    #[cfg(unix)]
    reload_on_hangup(node.tls_reloader(), hangups);
    let token = node.shutdown_token();
    tokio::spawn(async move {
        stop.cancelled().await;
        token.cancel();
    });
    node.stopped().await.context("stopping the node")?;
    Ok(())
}

/// The node's configuration from `serve`'s flags, and `--max-viewers` as it holds on this
/// machine (the open-file limit, raised as far as allowed, caps it).
fn serve_config(args: ServeArgs) -> Result<(Config, usize)> {
    let open_files = raise_open_files();
    // Descriptors the node needs besides viewers (listeners, HTTP clients, the store): the same
    // reserve `doctor` counts.
    let reserve = matchstream_ops::doctor::RESERVE_FDS;
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
    let mut watcher_tokens = args.watcher_token;
    if let Some(path) = &args.watcher_token_file {
        watcher_tokens.extend(read_token_file(path)?);
    }
    let config = Config {
        http: args.http,
        viewers: args.viewers.0,
        admin: args.admin,
        data_dir: args.data,
        redis: args.redis,
        redis_ca_cert: args.redis_ca_cert,
        redis_wait_replicas: args.redis_wait_replicas,
        redis_volatile: args.redis_volatile,
        watcher_tokens,
        public_host: args.public_host,
        max_viewers,
        connect_timeout: args.connect_timeout,
        write_timeout: args.write_timeout,
        ring_events: args.ring_events,
        max_lag_events: args.max_lag_events,
        keepalive: args.keepalive_ms.map_or(args.keepalive, Duration::from_millis),
        min_write_interval: args.min_write_interval,
        shutdown_grace: args.shutdown_grace,
        drain_window: args.drain_window_ms.map_or(args.drain_window, Duration::from_millis),
        keep_ended: args.keep_ended,
        http_head_timeout: args.http_head_timeout,
        http_max_head: args.http_max_head,
        http_max_body: args.http_max_body,
        http_body_timeout: args.http_body_timeout,
        http_idle_timeout: args.http_idle_timeout,
        http_max_connections: args.http_max_connections,
        http_max_per_address: args.http_max_per_address,
        max_handshakes: args.max_handshakes,
        max_handshakes_per_address: args.max_handshakes_per_address,
        ws_frame_timeout: args.ws_frame_timeout,
        max_events_per_request: args.max_events_per_request,
        history_limit: args.history_limit,
        max_history_limit: args.max_history_limit,
        max_store_reads: args.max_store_reads,
        commit: COMMIT.to_owned(),
        tls: match (args.tls_cert, args.tls_key) {
            (Some(cert), Some(key)) => Some(config::TlsFiles { cert, key }),
            // clap requires both or neither.
            _ => None,
        },
        admin_tls: args.admin_tls,
        ..Config::default()
    };
    Ok((config, max_viewers))
}

/// A configuration that cannot run: said as clap says a flag it cannot take, with status 2.
fn usage_error(message: &str) -> ! {
    fatal(message);
    std::process::exit(2);
}

/// On SIGHUP (systemd's `ExecReload`), reads the certificate pair again: logs that it did, or
/// why not (the pair served so far stays). Caught with or without TLS, so that a reload never
/// kills a node (SIGHUP's default).
#[cfg(unix)]
fn reload_on_hangup(
    tls: server::TlsReloader,
    hangups: std::io::Result<tokio::signal::unix::Signal>,
) {
    tokio::spawn(async move {
        let mut hangups = match hangups {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGHUP: the certificate cannot be reloaded");
                return;
            }
        };
        while hangups.recv().await.is_some() {
            match tls.reload() {
                Ok(()) => tracing::info!("SIGHUP: TLS certificate reloaded"),
                Err(e @ server::TlsError::NotConfigured) => tracing::info!("SIGHUP: {e}"),
                Err(e) => tracing::error!(
                    error = %e,
                    "SIGHUP: TLS certificate not reloaded; the one loaded before is still served"
                ),
            }
        }
    });
}

/// The tokens of a `--watcher-token-file`: one a line; blank lines and `#` comments skipped.
fn read_token_file(path: &std::path::Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--watcher-token-file {}", path.display()))?;
    let tokens: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect();
    if tokens.is_empty() {
        bail!("--watcher-token-file {}: holds no token (one a line)", path.display());
    }
    Ok(tokens)
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
