//! A node's typed configuration: addresses, limits and durations, with defaults and validation.
//! The binary builds it from flags and `MATCHSTREAM_*` variables; the library never reads either.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Why a configuration cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Everything a node needs to know to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// The HTTP API (watcher and read API). Port 0 picks a free port.
    pub http: SocketAddr,
    /// One viewer listener per address. Several ports spread the accept load and let
    /// `/1/checkin` send viewers to the least-loaded one.
    pub viewers: Vec<SocketAddr>,
    /// Where the embedded store keeps its files (unused with `redis`).
    pub data_dir: PathBuf,
    /// The shared log of many nodes: `redis://host:port` or `redis+cluster://host:port,...`,
    /// `rediss://` and `rediss+cluster://` over TLS. `None`: this node runs alone on its
    /// embedded store.
    pub redis: Option<String>,
    /// A private CA's certificate (PEM) that `rediss://` trusts instead of the system's roots,
    /// for a Redis whose certificate no public authority signed.
    pub redis_ca_cert: Option<PathBuf>,
    /// Replicas that must confirm each write to Redis (`WAIT`) before it is acknowledged.
    pub redis_wait_replicas: u32,
    /// Run on a Redis that may lose acknowledged writes (no `appendfsync always`, no replicas).
    pub redis_volatile: bool,
    /// Bearer tokens that may publish. Empty: nobody can publish.
    pub watcher_tokens: Vec<String>,
    /// Host named by `/1/checkin` and in `try` hints; defaults to each listener's bound IP.
    pub public_host: Option<String>,
    /// Most viewers this node holds at once; past it a connect gets `full`. Set it below the
    /// process's open-file limit so that the node keeps descriptors for HTTP and its store.
    pub max_viewers: usize,
    /// A viewer has this long to send its connect line (SPEC 4: 30 s), so that idle sockets
    /// that never speak do not hold a slot.
    pub connect_timeout: Duration,
    /// Longest connect line in bytes (SPEC 4: 1 KiB), so that a peer cannot make us buffer
    /// without bound.
    pub max_connect_line: usize,
    /// A viewer whose socket accepts no byte for this long is closed as `too_slow`: it holds
    /// no match back, but its memory and descriptor are better spent on someone watching.
    pub write_timeout: Duration,
    /// Events each match keeps ready in memory for viewers that are briefly behind (the ring of
    /// the hub). Memory per match is bounded by it, not by the number of viewers.
    pub ring_events: usize,
    /// A viewer further behind the live edge than this many events is closed as `too_slow`
    /// instead of being caught up from history.
    pub max_lag_events: u64,
    /// How long an SSE viewer may go without a byte before it gets a `: ping` comment (SPEC 5: at
    /// least every 15 s), so that proxies and NATs do not drop a quiet stream; a WebSocket
    /// viewer gets a ping frame after twice this (SPEC 5: at most every 30 s).
    pub keepalive: Duration,
    /// While events come fast, a viewer gets at most one write per this long: an event that
    /// comes sooner after the last write waits for the next one, which carries everything
    /// pending (a burst that fills a write, `transport::write::MAX_BATCH` frames, goes at once).
    /// After a quiet spell an event goes out at once, so a real match (an event every few
    /// seconds) gains no latency; under load, fewer writes mean fewer segments and wake-ups,
    /// most of a delivery's cost. Zero writes every burst as it comes. Frames are never merged:
    /// a write carries whole frames, a WebSocket message exactly one.
    pub min_write_interval: Duration,
    /// On shutdown, how long viewers and requests get to finish, after the drain window.
    pub shutdown_grace: Duration,
    /// On shutdown, the goodbyes are spread over this window (SPEC 9), and so are the
    /// `retry_after_ms` they carry: a crowd of viewers does not reconnect all at once elsewhere.
    pub drain_window: Duration,
    /// How long an ended match stays in memory after its end (SPEC 10, "Memory over time"):
    /// then its state, topic and encodings are dropped and read again from the store when
    /// someone asks (its page, its history, a viewer). A season's past matches cost a node an
    /// id each, not a match each.
    pub keep_ended: Duration,
    /// Base of the `retry_after_ms` sent with `bye shutdown`; each viewer gets a random value
    /// between it and it plus the drain window (twice it with no window), so that reconnects do
    /// not arrive all at once.
    pub retry_after_ms: u64,
    /// Accept backlog of each viewer listener: large, so that a crowd connecting at kick-off
    /// is queued by the kernel rather than refused (the original was stuck at 5).
    pub listen_backlog: i32,
    /// The operator's listener (`/metrics`, `/ops`, `/ops.json`, `/healthz`, `/readyz`; SPEC 11).
    /// Off unless given, like NATS's monitoring port, so that nodes on one machine never
    /// collide and the figures are not on the public port.
    pub admin: Option<SocketAddr>,
    /// A request's head must arrive within this long (SPEC 10: 10 s), so that a client that
    /// sends half a head (slowloris) holds its descriptor no longer.
    pub http_head_timeout: Duration,
    /// Largest request head in bytes (SPEC 10: 16 KiB): no honest request needs more.
    pub http_max_head: usize,
    /// Largest request body in bytes (SPEC 10: 256 KiB): 256 events with their text fit in
    /// a tenth of it, and a node never buffers more for one request.
    pub http_max_body: usize,
    /// A request's body must arrive within this long of its head (SPEC 10: 10 s).
    pub http_body_timeout: Duration,
    /// A kept-alive connection with no request for this long is closed (SPEC 10: 60 s).
    pub http_idle_timeout: Duration,
    /// Most HTTP connections at once (WebSocket and SSE viewers leave this budget once their
    /// handshake is done): past it, new connections wait in the kernel's backlog.
    pub http_max_connections: usize,
    /// Most HTTP connections from one client address: past it, a new one is closed at once, so
    /// that one address cannot take the whole budget. Generous: a carrier's NAT or a load test
    /// puts many honest clients behind one address.
    pub http_max_per_address: usize,
    /// Most viewer connections at once that have not yet sent their connect line (SPEC 10:
    /// their own budget, never the viewers'): past it, new ones wait in the kernel's backlog.
    pub max_handshakes: usize,
    /// Most of those from one client address: past it, a new one is told why and closed, so
    /// that silent sockets from one address never keep others from connecting.
    pub max_handshakes_per_address: usize,
    /// A WebSocket client frame must arrive whole within this long (SPEC 10: 10 s), so that a
    /// client that sends half a frame does not hold its input buffer for ever.
    pub ws_frame_timeout: Duration,
    /// Most events one publish request may carry (SPEC 10: 256).
    pub max_events_per_request: usize,
    /// History page size when the request names no `limit` (SPEC 10: 500).
    pub history_limit: usize,
    /// Largest history page (SPEC 10: 2,000); a larger `limit` is capped and the answer points
    /// at the next page.
    pub max_history_limit: usize,
    /// Store reads (history pages not kept in memory) running at once; more wait their turn,
    /// so that a crowd asking for old pages cannot queue unbounded work on the store.
    pub max_store_reads: usize,
    /// The commit the binary was built from, for `matchstream_build_info{version,commit}`
    /// (SPEC 11): the binary's build script knows it, the library is told.
    pub commit: String,
    /// The certificate and key that make the HTTP port HTTPS (so WebSocket is `wss://`) and the
    /// viewer ports TLS (SPEC 11). `None`: plain TCP everywhere, as behind a proxy that holds
    /// the certificate.
    pub tls: Option<TlsFiles>,
    /// The admin listener speaks TLS too, with the same certificate (for an admin port reached
    /// over a network). Off by default: the operator's tools and Prometheus usually reach it on
    /// a private address, which the public certificate does not name.
    pub admin_tls: bool,
}

/// The PEM files of the certificate a node serves: read at start, and again on
/// `Node::reload_tls` (SIGHUP), so that a renewed certificate is taken without a restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, the node's own certificate first (as certbot's `fullchain.pem`).
    pub cert: PathBuf,
    /// Its private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            http: SocketAddr::from(([127, 0, 0, 1], 8888)),
            viewers: vec![SocketAddr::from(([127, 0, 0, 1], 9100))],
            data_dir: PathBuf::from("./data"),
            redis: None,
            redis_ca_cert: None,
            redis_wait_replicas: 0,
            redis_volatile: false,
            watcher_tokens: Vec::new(),
            public_host: None,
            max_viewers: 1_000_000,
            connect_timeout: Duration::from_secs(30),
            max_connect_line: 1024,
            write_timeout: Duration::from_secs(30),
            ring_events: 1024,
            max_lag_events: 10_000,
            keepalive: Duration::from_secs(15),
            // The largest interval of the measured curve whose p99 is no worse than none
            // (BENCHMARKS.md, "Write interval").
            min_write_interval: Duration::from_millis(150),
            shutdown_grace: Duration::from_secs(5),
            drain_window: Duration::from_secs(10),
            keep_ended: Duration::from_secs(600),
            retry_after_ms: 1000,
            listen_backlog: 65_535,
            admin: None,
            http_head_timeout: Duration::from_secs(10),
            http_max_head: 16 * 1024,
            http_max_body: 256 * 1024,
            http_body_timeout: Duration::from_secs(10),
            http_idle_timeout: Duration::from_secs(60),
            http_max_connections: 8192,
            http_max_per_address: 1024,
            max_handshakes: 4096,
            max_handshakes_per_address: 1024,
            ws_frame_timeout: Duration::from_secs(10),
            max_events_per_request: 256,
            history_limit: 500,
            max_history_limit: 2000,
            max_store_reads: 64,
            commit: "unknown".to_owned(),
            tls: None,
            admin_tls: false,
        }
    }
}

impl Config {
    /// Checks every value against its range, naming the flag that sets it, and the values that
    /// would make a node misbehave rather than fail to start. A node never starts with a value
    /// that could overflow a deadline or a buffer size.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |s: &str| Err(ConfigError(s.to_owned()));
        if self.viewers.is_empty() {
            return fail("at least one viewer address is needed (--viewers)");
        }
        let day = Duration::from_secs(24 * 3600);
        let ms = Duration::from_millis(1);
        let durations = [
            ("--connect-timeout", self.connect_timeout, ms, Duration::from_secs(3600)),
            ("--write-timeout", self.write_timeout, ms, Duration::from_secs(3600)),
            ("--keepalive", self.keepalive, Duration::from_millis(10), Duration::from_secs(15)),
            (
                "--min-write-interval",
                self.min_write_interval,
                Duration::ZERO,
                Duration::from_secs(1),
            ),
            ("--shutdown-grace", self.shutdown_grace, Duration::ZERO, day),
            ("--drain-window", self.drain_window, Duration::ZERO, day),
            ("--keep-ended", self.keep_ended, Duration::from_secs(1), 7 * day),
            ("--http-head-timeout", self.http_head_timeout, ms, Duration::from_secs(3600)),
            ("--http-body-timeout", self.http_body_timeout, ms, Duration::from_secs(3600)),
            ("--http-idle-timeout", self.http_idle_timeout, ms, day),
            ("--ws-frame-timeout", self.ws_frame_timeout, ms, Duration::from_secs(3600)),
        ];
        for (flag, value, min, max) in durations {
            if value < min || value > max {
                return Err(ConfigError(format!(
                    "{flag} must be between {} and {} (got {})",
                    show(min),
                    show(max),
                    show(value)
                )));
            }
        }
        const MILLION: usize = 1_000_000;
        let counts = [
            ("--max-viewers", self.max_viewers, 1, 100 * MILLION),
            ("max_connect_line", self.max_connect_line, 64, 64 * 1024),
            ("--ring-events", self.ring_events, 1, MILLION),
            ("--max-lag-events", self.max_lag_events.min(u64::MAX >> 1) as usize, 1, 100 * MILLION),
            ("listen_backlog", self.listen_backlog.max(0) as usize, 1, 1 << 20),
            // Hyper's read buffer is at least 8 KiB: a smaller limit could not hold.
            ("--http-max-head", self.http_max_head, 8192, 1024 * 1024),
            ("--http-max-body", self.http_max_body, 1024, 64 * 1024 * 1024),
            ("--http-max-connections", self.http_max_connections, 1, 10 * MILLION),
            ("--http-max-per-address", self.http_max_per_address, 1, 10 * MILLION),
            ("--max-handshakes", self.max_handshakes, 1, 10 * MILLION),
            ("--max-handshakes-per-address", self.max_handshakes_per_address, 1, 10 * MILLION),
            ("--max-events-per-request", self.max_events_per_request, 1, 10_000),
            ("--history-limit", self.history_limit, 1, 100_000),
            ("--max-history-limit", self.max_history_limit, 1, 100_000),
            ("--max-store-reads", self.max_store_reads, 1, 100_000),
        ];
        for (flag, value, min, max) in counts {
            if value < min || value > max {
                return Err(ConfigError(format!(
                    "{flag} must be between {min} and {max} (got {value})"
                )));
            }
        }
        if self.history_limit > self.max_history_limit {
            return fail("--history-limit must not be above --max-history-limit");
        }
        if self.redis.is_some()
            && self.public_host.is_none()
            && self.viewers.iter().any(|a| a.ip().is_unspecified())
        {
            return fail(
                "with --redis, other nodes send viewers to this node's ports: a listener on \
                 0.0.0.0 or [::] needs --public-host naming the address they should dial",
            );
        }
        if self.admin_tls && (self.tls.is_none() || self.admin.is_none()) {
            return fail("--admin-tls needs --admin, --tls-cert and --tls-key");
        }
        if self.watcher_tokens.iter().any(|t| t.is_empty() || t.chars().any(char::is_whitespace)) {
            return fail("a watcher token must be non-empty and contain no whitespace");
        }
        Ok(())
    }
}

/// A duration as a person writes it: `250ms`, `10s`, `2m`.
fn show(d: Duration) -> String {
    let ms = d.as_millis();
    match ms {
        0 => "0s".to_owned(),
        ms if ms % 3_600_000 == 0 => format!("{}h", ms / 3_600_000),
        ms if ms % 60_000 == 0 => format!("{}m", ms / 60_000),
        ms if ms % 1000 == 0 => format!("{}s", ms / 1000),
        ms => format!("{ms}ms"),
    }
}

/// What stands for a secret wherever one would show (SPEC 11): in a Redis URL's password, and in
/// `serve --print-config` for a token.
pub const MASK: &str = "***";

/// A URL as it may be shown in a log line, an error or `serve --print-config`: any password in
/// it (`redis://user:secret@host`, or `:secret@` before a cluster node) replaced by [`MASK`].
pub fn redacted_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let nodes: Vec<String> = rest
        .split(',')
        .map(|node| match node.rsplit_once('@') {
            Some((user, host)) => match user.split_once(':') {
                Some((name, _)) => format!("{name}:{MASK}@{host}"),
                None => format!("{MASK}@{host}"),
            },
            None => node.to_owned(),
        })
        .collect();
    match scheme {
        "" => nodes.join(","),
        scheme => format!("{scheme}://{}", nodes.join(",")),
    }
}

/// Parses a duration as SPEC 8 writes them: a number with a unit (`10s`, `250ms`, `2m`, `1h`,
/// or humantime's longer forms such as `1m 30s`), a bare number being seconds (`30`, `0.5`).
pub fn parse_duration(s: &str) -> Result<Duration, ConfigError> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    // A bare decimal (`0.5`) is seconds too: the simulator's flags were seconds as decimals.
    if s.starts_with(|c: char| c.is_ascii_digit())
        && s.chars().all(|c| c.is_ascii_digit() || c == '.')
    {
        if let Some(d) = s.parse::<f64>().ok().and_then(|f| Duration::try_from_secs_f64(f).ok()) {
            return Ok(d);
        }
    }
    humantime::parse_duration(s).map_err(|e| {
        ConfigError(format!("{s:?} is not a duration ({e}): write e.g. 10s, 250ms or 2m"))
    })
}

/// Parses a listening address: `127.0.0.1:8888`, `[::1]:8888`, or a host name
/// (`localhost:8888`), resolved now; of the addresses a name has, the first IPv4 one is taken
/// (else the first), since a node listens on one address per port.
pub fn parse_addr(s: &str) -> Result<SocketAddr, ConfigError> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let bad = |why: &str| ConfigError(format!("address {s:?}: {why} (e.g. 127.0.0.1:8888)"));
    let (host, port) = s.rsplit_once(':').ok_or_else(|| bad("no port"))?;
    let port = port.parse::<u16>().map_err(|_| bad("bad port"))?;
    Ok(SocketAddr::new(resolve_host(host)?, port))
}

/// The IP of a host as [`parse_addr`] picks it: itself if it is an IP, else the first IPv4
/// address the name resolves to (else the first).
fn resolve_host(host: &str) -> Result<std::net::IpAddr, ConfigError> {
    use std::net::ToSocketAddrs;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse() {
        return Ok(ip);
    }
    if host.is_empty() {
        return Err(ConfigError("no host before the port (e.g. 127.0.0.1)".to_owned()));
    }
    let cannot = |why: String| ConfigError(format!("cannot resolve host {host:?}: {why}"));
    let addrs: Vec<SocketAddr> =
        (host, 0).to_socket_addrs().map_err(|e| cannot(e.to_string()))?.collect();
    let pick = addrs.iter().find(|a| a.is_ipv4()).or(addrs.first());
    pick.map(SocketAddr::ip).ok_or_else(|| cannot("the name has no address".to_owned()))
}

/// Parses `--viewers`: `host:port` or `host:first-last` (one listener per port); the host is an
/// IP or a name resolved as [`parse_addr`] does.
pub fn parse_viewers(s: &str) -> Result<Vec<SocketAddr>, ConfigError> {
    let bad =
        |why: &str| ConfigError(format!("viewer address {s:?}: {why} (e.g. 127.0.0.1:9100-9103)"));
    let (host, ports) = s.rsplit_once(':').ok_or_else(|| bad("no port"))?;
    let port = |p: &str| p.parse::<u16>().map_err(|_| bad("bad port"));
    let (first, last) = match ports.split_once('-') {
        Some((a, b)) => (port(a)?, port(b)?),
        None => (port(ports)?, port(ports)?),
    };
    if first > last {
        return Err(bad("range runs backwards"));
    }
    if first == 0 && last != 0 {
        return Err(bad("port 0 cannot start a range"));
    }
    let ip = resolve_host(host).map_err(|e| bad(&e.0))?;
    Ok((first..=last).map(|p| SocketAddr::new(ip, p)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show() {
        assert_eq!(redacted_url("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert_eq!(redacted_url("redis://me:s3cr3t@host:6379/0"), "redis://me:***@host:6379/0");
        assert_eq!(redacted_url("redis://:s3cr3t@host"), "redis://:***@host");
        assert_eq!(redacted_url("rediss://s3cr3t@host"), "rediss://***@host");
        assert_eq!(
            redacted_url("redis+cluster://:pw@a:1,b:2,u:pw@c:3"),
            "redis+cluster://:***@a:1,b:2,u:***@c:3"
        );
    }

    #[test]
    fn viewer_ranges_expand_to_one_address_per_port() {
        let v = parse_viewers("127.0.0.1:9100-9103").unwrap();
        assert_eq!(v.len(), 4);
        assert_eq!(v[3], "127.0.0.1:9103".parse().unwrap());
        assert_eq!(parse_viewers("127.0.0.1:0").unwrap().len(), 1);
        assert_eq!(parse_viewers("[::1]:9100").unwrap()[0], "[::1]:9100".parse().unwrap());
        for bad in ["127.0.0.1", "127.0.0.1:x", "127.0.0.1:9103-9100", ":9100"] {
            assert!(parse_viewers(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn host_names_resolve_and_an_ip_is_taken_as_it_is() {
        // `localhost` is in every /etc/hosts; its IPv4 address is preferred.
        let v = parse_viewers("localhost:9100-9101").unwrap();
        assert_eq!(v, ["127.0.0.1:9100".parse().unwrap(), "127.0.0.1:9101".parse().unwrap()]);
        assert_eq!(parse_addr("localhost:8888").unwrap(), "127.0.0.1:8888".parse().unwrap());
        assert_eq!(parse_addr("[::1]:0").unwrap(), "[::1]:0".parse().unwrap());
        assert_eq!(parse_addr("0.0.0.0:80").unwrap(), "0.0.0.0:80".parse().unwrap());
        let e = parse_addr("localhost").unwrap_err().0;
        assert!(e.contains("no port"), "{e}");
        let e = parse_addr(":80").unwrap_err().0;
        assert!(e.contains("no host"), "{e}");
    }

    #[test]
    fn durations_take_units_and_a_bare_number_is_seconds() {
        assert_eq!(parse_duration("10").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1m 30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("0.25").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        for bad in ["-1", "1.2.3", ".", "1e3", "NaN", "inf"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        let e = parse_duration("soon").unwrap_err().0;
        assert!(e.contains("\"soon\" is not a duration") && e.contains("10s"), "{e}");
        assert!(parse_duration("18446744073709551615").is_ok(), "parsed; refused by validate");
    }

    #[test]
    fn every_value_out_of_range_names_its_flag_and_range() {
        let huge = Duration::from_secs(u64::MAX);
        let c = Config { shutdown_grace: huge, ..Config::default() };
        let e = c.validate().unwrap_err().0;
        assert!(e.starts_with("--shutdown-grace must be between 0s and 24h"), "{e}");
        let c = Config { connect_timeout: huge, ..Config::default() };
        assert!(c.validate().unwrap_err().0.starts_with("--connect-timeout must be between"));
        let c = Config { http_max_body: 0, ..Config::default() };
        let e = c.validate().unwrap_err().0;
        assert_eq!(e, "--http-max-body must be between 1024 and 67108864 (got 0)");
        let c = Config { history_limit: 3000, ..Config::default() };
        assert!(c.validate().is_err());
        let c = Config { keepalive: Duration::from_millis(16_000), ..Config::default() };
        assert!(c
            .validate()
            .unwrap_err()
            .0
            .starts_with("--keepalive must be between 10ms and 15s"));
        let c = Config { keep_ended: Duration::from_millis(500), ..Config::default() };
        let e = c.validate().unwrap_err().0;
        assert_eq!(e, "--keep-ended must be between 1s and 168h (got 500ms)");
        let c = Config { keep_ended: Duration::from_secs(1), ..Config::default() };
        assert!(c.validate().is_ok(), "down to 1 s");
    }

    #[test]
    fn default_config_is_valid_and_limits_are_checked() {
        assert!(Config::default().validate().is_ok());
        let c = Config { viewers: vec![], ..Config::default() };
        assert!(c.validate().is_err());
        let c = Config { watcher_tokens: vec!["a b".into()], ..Config::default() };
        assert!(c.validate().is_err());
    }
}
