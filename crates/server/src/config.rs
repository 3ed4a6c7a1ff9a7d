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
    /// The shared log of many nodes: `redis://host:port` or `redis+cluster://host:port,...`.
    /// `None`: this node runs alone on its embedded store.
    pub redis: Option<String>,
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
    /// On shutdown, how long viewers and requests get to finish, after the drain window.
    pub shutdown_grace: Duration,
    /// On shutdown, the goodbyes are spread over this window (SPEC 9), and so are the
    /// `retry_after_ms` they carry: a crowd of viewers does not reconnect all at once elsewhere.
    pub drain_window: Duration,
    /// Base of the `retry_after_ms` sent with `bye shutdown`; each viewer gets a random value
    /// between it and it plus the drain window (twice it with no window), so that reconnects do
    /// not arrive all at once.
    pub retry_after_ms: u64,
    /// Accept backlog of each viewer listener: large, so that a crowd connecting at kick-off
    /// is queued by the kernel rather than refused (the original was stuck at 5).
    pub listen_backlog: i32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            http: SocketAddr::from(([127, 0, 0, 1], 8888)),
            viewers: vec![SocketAddr::from(([127, 0, 0, 1], 9100))],
            data_dir: PathBuf::from("./data"),
            redis: None,
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
            shutdown_grace: Duration::from_secs(5),
            drain_window: Duration::from_secs(10),
            retry_after_ms: 1000,
            listen_backlog: 65_535,
        }
    }
}

impl Config {
    /// Checks the values that would make a node misbehave rather than fail to start.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |s: &str| Err(ConfigError(s.to_owned()));
        if self.viewers.is_empty() {
            return fail("at least one viewer address is needed (--viewers)");
        }
        if self.max_viewers == 0 {
            return fail("--max-viewers must be at least 1");
        }
        if self.max_connect_line < 64 {
            return fail("--max-connect-line must be at least 64 bytes");
        }
        if self.keepalive < Duration::from_millis(10) || self.keepalive > Duration::from_secs(15) {
            return fail("--keepalive-ms must be between 10 and 15000");
        }
        if self.ring_events == 0 {
            return fail("--ring-events must be at least 1");
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
        if self.watcher_tokens.iter().any(|t| t.is_empty() || t.chars().any(char::is_whitespace)) {
            return fail("a watcher token must be non-empty and contain no whitespace");
        }
        Ok(())
    }
}

/// Parses `--viewers`: `host:port` or `host:first-last` (one listener per port).
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
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let ip: std::net::IpAddr = host.parse().map_err(|_| bad("host must be an IP address"))?;
    Ok((first..=last).map(|p| SocketAddr::new(ip, p)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn viewer_ranges_expand_to_one_address_per_port() {
        let v = parse_viewers("127.0.0.1:9100-9103").unwrap();
        assert_eq!(v.len(), 4);
        assert_eq!(v[3], "127.0.0.1:9103".parse().unwrap());
        assert_eq!(parse_viewers("127.0.0.1:0").unwrap().len(), 1);
        assert_eq!(parse_viewers("[::1]:9100").unwrap()[0], "[::1]:9100".parse().unwrap());
        for bad in ["127.0.0.1", "127.0.0.1:x", "127.0.0.1:9103-9100", "localhost:9100"] {
            assert!(parse_viewers(bad).is_err(), "{bad}");
        }
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
