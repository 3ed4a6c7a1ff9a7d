//! The test harness: a real node on free ports and a temporary store, and the client crate's
//! watcher (HTTP) and viewers (TCP) used exactly as a user would, with a time limit on every
//! read and a panic on anything a test did not expect.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use matchstream::config::Config;
use matchstream::server::{self, Node};
use matchstream_client::Watcher;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tempfile::TempDir;

mod nginx;
mod tls;

pub use nginx::{site, stream_site, Nginx, NginxConf};
pub use tls::{TestCa, TLS_HOST};

pub const TOKEN: &str = "test-token";
/// Longest any single read in a test waits before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// A node running in this process on `127.0.0.1:0` ports and a temporary store.
pub struct TestServer {
    pub base: String,
    /// The admin listener's base URL (`/metrics`, `/ops`, `/ops.json`).
    pub admin: String,
    pub viewers: Vec<SocketAddr>,
    pub http: Watcher,
    pub node: Option<Node>,
    pub dir: TempDir,
}

impl TestServer {
    pub async fn start() -> TestServer {
        TestServer::start_with(|_| {}).await
    }

    /// Starts with the test defaults changed by `tune`.
    pub async fn start_with(tune: impl FnOnce(&mut Config)) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        TestServer::start_in(dir, tune).await
    }

    /// Starts on an existing store directory (to test restarts). A node restarted on the fixed
    /// HTTP port of the one before may find that port taken for a moment by an outgoing
    /// connection (the local port range may reach down to 1024; a client dialling the port
    /// while nobody listens can even connect to itself): it tries again for a few seconds.
    pub async fn start_in(dir: TempDir, tune: impl FnOnce(&mut Config)) -> TestServer {
        let mut config = test_config(dir.path());
        tune(&mut config);
        let fixed = config.http.port() != 0;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let node = loop {
            match server::start(config.clone()).await {
                Ok(node) => break node,
                Err(e @ server::ServerError::Bind { .. })
                    if fixed && tokio::time::Instant::now() < deadline =>
                {
                    eprintln!("the node did not start on its fixed port yet ({e}); again");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("node starts: {e}"),
            }
        };
        let base = format!("http://{}", node.http_addr);
        let admin = node.admin_addr.map(|a| format!("http://{a}")).unwrap_or_default();
        TestServer {
            admin,
            http: Watcher::new(&base, TOKEN).expect("watcher client"),
            base,
            viewers: node.viewer_addrs.clone(),
            node: Some(node),
            dir,
        }
    }

    /// Stops the node gracefully and hands back its store directory.
    pub async fn stop(mut self) -> TempDir {
        if let Some(node) = self.node.take() {
            node.shutdown();
            node.stopped().await.expect("node stops cleanly");
        }
        self.dir
    }

    pub fn viewer(&self) -> SocketAddr {
        self.viewers[0]
    }

    /// `host:port` of the node's HTTP listener (where WebSocket and SSE viewers connect).
    pub fn http_host(&self) -> String {
        self.base.trim_start_matches("http://").to_owned()
    }

    /// A GET of the admin listener, as JSON.
    pub async fn admin_get(&self, path: &str) -> (StatusCode, Value) {
        let answer = reqwest::get(format!("{}{path}", self.admin)).await.expect("GET (admin)");
        let status = answer.status();
        (status, answer.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        let answer = self.http.get(path).await.expect("GET");
        (answer.status, answer.json())
    }

    /// Sends a watcher request with the test token.
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let answer = self.http.send(method, path, body.as_ref()).await.expect("request");
        (answer.status, answer.json())
    }

    pub async fn create_match(&self, home: &str, visit: &str, date: &str) -> String {
        let (status, body) = self
            .send(
                reqwest::Method::POST,
                "/1/matches",
                Some(json!({"home": home, "visit": visit, "start_date": date})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["id"].as_str().expect("id").to_owned()
    }

    /// Posts one event or a list, returning the status and body.
    pub async fn post_events(&self, id: &str, body: Value) -> (StatusCode, Value) {
        self.send(reqwest::Method::POST, &format!("/1/match/{id}/events"), Some(body)).await
    }

    /// Publishes one event that must be accepted; returns its seq.
    pub async fn publish(&self, id: &str, kind: &str, data: Value) -> u64 {
        let (status, body) = self.post_events(id, json!({"kind": kind, "data": data})).await;
        assert_eq!(status, StatusCode::CREATED, "{kind}: {body}");
        body["seq"].as_u64().expect("seq")
    }

    /// Creates `elp-tig-2011-09-10` and starts it with two short line-ups.
    pub async fn started_match(&self) -> String {
        let id = self.create_match("elp", "tig", "2011-09-10").await;
        self.publish(&id, "start", start_data()).await;
        id
    }
}

pub fn start_data() -> Value {
    json!({
        "home_players": [{"number": 25, "name": "Albil"}, {"number": 18, "name": "Fernandez"}],
        "visit_players": [{"number": 7, "name": "Luna"}, {"number": 10, "name": "Morales"}]
    })
}

pub fn test_config(dir: &Path) -> Config {
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    Config {
        http: any,
        viewers: vec![any, any],
        data_dir: dir.to_path_buf(),
        watcher_tokens: vec![TOKEN.to_owned()],
        admin: Some(any),
        shutdown_grace: Duration::from_secs(5),
        // Goodbyes at once, or nearly: tests/it/drain.rs measures the spread.
        drain_window: Duration::from_millis(100),
        ..Config::default()
    }
}

/// A viewer connection (the client crate's), with a time limit on every read.
pub struct Viewer(pub matchstream_client::Viewer);

impl Viewer {
    /// Connects and sends `line` followed by CRLF. A v2 line is sent through the client's own
    /// connect line, so its frames are checked as they are read (no gap, no duplicate).
    pub async fn connect(addr: SocketAddr, line: &str) -> Viewer {
        let parsed = matchstream_proto::parse_connect(line.as_bytes());
        match parsed {
            Ok(connect @ matchstream_proto::ConnectLine::V2 { .. })
                if connect.encode() == format!("{line}\r\n").as_bytes() =>
            {
                let v = matchstream_client::Viewer::watch(addr, &connect).await;
                Viewer(v.expect("connect"))
            }
            _ => {
                let mut v = Viewer::connect_raw(addr).await;
                v.send(format!("{line}\r\n").as_bytes()).await;
                v
            }
        }
    }

    pub async fn connect_raw(addr: SocketAddr) -> Viewer {
        Viewer(matchstream_client::Viewer::connect(addr).await.expect("connect"))
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.0.send(bytes).await.expect("send");
    }

    /// The next v2 frame, or `None` once the server closed.
    pub async fn frame(&mut self) -> Option<Value> {
        let frame = tokio::time::timeout(PATIENCE, self.0.frame()).await.expect("a frame in time");
        frame.unwrap_or_else(|e| panic!("reading a frame: {e}"))
    }

    /// Everything until the server closes.
    pub async fn read_to_end(&mut self) -> Vec<u8> {
        let read = tokio::time::timeout(PATIENCE, self.0.read_to_end()).await;
        read.expect("the server closes in time").expect("read")
    }

    /// Everything until the server closes, which must be a clean close (end of stream after its
    /// FIN), never a reset: a reset can make the kernel discard what was not read yet.
    pub async fn read_to_clean_eof(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            let read = tokio::time::timeout(PATIENCE, self.0.read(&mut buf)).await;
            match read.expect("the server closes in time") {
                Ok(0) => return out,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) => panic!(
                    "the server closed with {e} ({:?}) instead of a clean end of stream, after {:?}",
                    e.kind(),
                    String::from_utf8_lossy(&out)
                ),
            }
        }
    }

    /// Reads until `marker` has been seen (inclusive).
    pub async fn read_until_contains(&mut self, marker: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while !out.windows(marker.len()).any(|w| w == marker) {
            let n = tokio::time::timeout(PATIENCE, self.0.read(&mut buf))
                .await
                .expect("data in time")
                .expect("read");
            assert!(
                n > 0,
                "closed before {:?}; got {:?}",
                String::from_utf8_lossy(marker),
                String::from_utf8_lossy(&out)
            );
            out.extend_from_slice(&buf[..n]);
        }
        out
    }
}

/// Reads v2 frames until `bye`; returns the event seqs seen (status frames excluded) and the bye.
pub async fn collect_v2(v: &mut Viewer) -> (Vec<u64>, Value) {
    let got = tokio::time::timeout(PATIENCE, v.0.collect_v2()).await.expect("a bye in time");
    got.unwrap_or_else(|e| panic!("reading to the bye: {e}"))
}

/// Replaces every v1 header time (`YYYY-MM-DD HH:MM:SS: ` at a line start) by a fixed mask.
pub fn mask_v1_times(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let b = line.as_bytes();
        let is_time = b.len() >= 21
            && b[..19].iter().enumerate().all(|(i, c)| match i {
                4 | 7 => *c == b'-',
                10 => *c == b' ',
                13 | 16 => *c == b':',
                _ => c.is_ascii_digit(),
            })
            && &b[19..21] == b": ";
        if is_time {
            out.push_str("YYYY-MM-DD HH:MM:SS");
            out.push_str(&line[19..]);
        } else {
            out.push_str(line);
        }
    }
    out
}

/// A node running as its own process (`matchstream serve`), for crash and signal tests.
pub struct NodeProcess {
    pub child: std::process::Child,
    pub base: String,
    /// The admin listener's base URL (`/metrics`, `/ops`, `/ops.json`).
    pub admin: String,
    pub viewers: Vec<SocketAddr>,
    /// Its log lines up to "http listener ready".
    pub log: Vec<String>,
    /// Its log lines after those, as they come.
    pub later: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl NodeProcess {
    /// Starts `matchstream serve` on free ports over `dir` and waits for its "ready" log lines.
    pub fn start(dir: &Path) -> NodeProcess {
        NodeProcess::start_with(dir, &[])
    }

    /// Like [`NodeProcess::start`], with more arguments for `serve` (`--redis <url>`).
    pub fn start_with(dir: &Path, extra: &[&str]) -> NodeProcess {
        NodeProcess::start_limited(dir, extra, None)
    }

    /// Like [`NodeProcess::start_with`]; with `open_files`, the node's open-file limit (soft
    /// and hard) is set to it.
    pub fn start_limited(dir: &Path, extra: &[&str], open_files: Option<u64>) -> NodeProcess {
        NodeProcess::spawn(NodeProcess::command(dir, extra, open_files))
    }

    /// Like [`NodeProcess::start_with`], logging at `level` (`RUST_LOG`).
    pub fn start_logging(dir: &Path, extra: &[&str], level: &str) -> NodeProcess {
        let mut command = NodeProcess::command(dir, extra, None);
        command.env("RUST_LOG", level);
        NodeProcess::spawn(command)
    }

    /// `matchstream serve` on free ports over `dir`, with `extra` arguments.
    fn command(dir: &Path, extra: &[&str], open_files: Option<u64>) -> std::process::Command {
        use std::os::unix::process::CommandExt;
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_matchstream"));
        if let Some(n) = open_files {
            let limit = libc::rlimit { rlim_cur: n, rlim_max: n };
            // SAFETY: between fork and exec, only setrlimit (async-signal-safe) runs, on a
            // value copied into the closure.
            unsafe {
                command.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        command
            .args([
                "serve",
                "--http",
                "127.0.0.1:0",
                "--viewers",
                "127.0.0.1:0",
                "--watcher-token",
                TOKEN,
                "--drain-window-ms",
                "100",
                "--admin",
                "127.0.0.1:0",
            ])
            .arg("--data")
            .arg(dir)
            .args(extra);
        command
    }

    /// Runs `command` (a `matchstream serve` with all its arguments) and waits for its "ready"
    /// log lines; it logs at `info` unless the command sets `RUST_LOG`.
    pub fn spawn(mut command: std::process::Command) -> NodeProcess {
        use std::io::BufRead;
        if !command.get_envs().any(|(k, _)| k == "RUST_LOG") {
            command.env("RUST_LOG", "info");
        }
        let mut child = command
            .stderr(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("spawn matchstream serve");
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = std::io::BufReader::new(stderr).lines();
        let (mut base, mut viewers, mut log) = (None, Vec::new(), Vec::new());
        let mut admin = String::new();
        let addr_of = |line: &str| -> SocketAddr {
            let at = line.find("addr=").expect("addr field") + 5;
            line[at..].split_whitespace().next().unwrap().parse().expect("address")
        };
        for line in lines.by_ref() {
            let line = line.expect("log line");
            log.push(line.clone());
            if line.contains("viewer listener ready") {
                viewers.push(addr_of(&line));
            } else if line.contains("admin listener ready") {
                admin = format!("http://{}", addr_of(&line));
            } else if line.contains("http listener ready") {
                base = Some(format!("http://{}", addr_of(&line)));
                break;
            } else if line.contains("ERROR") {
                panic!("node failed: {line}");
            }
        }
        // Keep draining the log so the node never blocks on a full pipe.
        let later = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = later.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                kept.lock().unwrap_or_else(|p| p.into_inner()).push(line);
            }
        });
        let base = base.unwrap_or_else(|| panic!("the node did not start:\n{}", log.join("\n")));
        NodeProcess { child, base, admin, viewers, log, later }
    }

    /// Has the node logged a line containing `needle` since it was ready?
    pub fn logged(&self, needle: &str) -> bool {
        self.later.lock().unwrap_or_else(|p| p.into_inner()).iter().any(|l| l.contains(needle))
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Polls `check` until it gives `Some`, for at most `within`.
pub async fn eventually<T>(
    what: &str,
    within: Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A TCP connection to `to` from the local address `from` (127.0.0.2 and up are this machine
/// too): how a test plays several clients, each its own address.
pub async fn connect_from(from: [u8; 4], to: SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
    socket.bind(SocketAddr::from((from, 0))).expect("bind the client's address");
    socket.connect(to).await.expect("connect")
}
