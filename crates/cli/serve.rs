//! `matchstream serve`: its flags (every one also a key of `--config`, see `config_file.rs`),
//! the node's `Config` made from them, and the node's life: start, SIGHUP reloads the TLS
//! pair, SIGTERM or Ctrl-C drains and stops it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{ArgMatches, Args, CommandFactory};

use matchstream::config::{self, Config};
use matchstream::server;
use matchstream_ops::limits::raise_open_files;

use crate::logging::fatal;
use crate::{addr, config_file, duration, stop_on_signal, Cli, COMMIT};

#[derive(Args)]
pub(crate) struct ServeArgs {
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

/// The viewer listeners of `--viewers`, one per port of its range.
#[derive(Clone)]
struct ViewerAddrs(Vec<SocketAddr>);

fn viewer_addrs(s: &str) -> Result<ViewerAddrs, config::ConfigError> {
    config::parse_viewers(s).map(ViewerAddrs)
}

pub(crate) async fn serve(
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
