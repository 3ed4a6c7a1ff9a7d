//! Redis for the tests, started by each test that needs it: a `redis-server` on a free port
//! (durable by default: an append-only file fsync'd on every write, in a temp dir of its own) and
//! a three-master Redis Cluster, each also over TLS only with a password ([`Tls`]). Every
//! process is stopped by its PID when its helper is dropped. A missing `redis-server` or
//! `redis-cli` fails the test loudly.

use std::process::Stdio;
use std::time::Duration;

use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::support::{TestCa, PATIENCE};

/// Ports tried before a test gives up on starting redis-server.
const ATTEMPTS: usize = 10;
/// How long a stopping redis-server gets to exit after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// How a TLS server is reached: its CA's certificate (a client's `--cacert`), its own
/// certificate and key, and the password it requires.
#[derive(Clone)]
pub struct Tls {
    pub ca: std::path::PathBuf,
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
    pub password: String,
}

impl Tls {
    pub fn new(ca: &TestCa, password: &str) -> Tls {
        let (cert, key) = (ca.cert.clone(), ca.key.clone());
        Tls { ca: ca.ca.clone(), cert, key, password: password.to_owned() }
    }

    /// The server's TLS settings after its port.
    fn server_args(&self, port: u16) -> Vec<String> {
        let mut args = vec!["--port".into(), "0".into(), "--tls-port".into(), port.to_string()];
        for (flag, path) in [
            ("--tls-cert-file", &self.cert),
            ("--tls-key-file", &self.key),
            ("--tls-ca-cert-file", &self.ca),
        ] {
            args.extend([flag.to_owned(), path.display().to_string()]);
        }
        // Clients show no certificate: they check the server's and give the password.
        args.extend(
            ["--tls-auth-clients", "no", "--requirepass", &self.password].map(String::from),
        );
        args
    }

    /// What `redis-cli` needs to reach such a server.
    fn cli_args(&self) -> Vec<String> {
        let ca = self.ca.display().to_string();
        let args = ["--tls", "--cacert", &ca, "-a", &self.password, "--no-auth-warning"];
        args.map(String::from).to_vec()
    }
}

/// A redis-server of this test, stopped when dropped.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    /// `127.0.0.1:<port>`.
    pub addr: String,
    /// Everything after `--port N` on its command line.
    args: Vec<String>,
    /// Over TLS only (its port is the TLS port), with a password.
    tls: Option<Tls>,
    /// Its working directory: the append-only file (and a cluster node's `nodes.conf`).
    dir: TempDir,
}

impl RedisServer {
    /// A durable server: `appendonly yes`, `appendfsync always` (what a node requires).
    pub async fn start() -> RedisServer {
        RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]).await
    }

    /// A durable server that wants `password` from every client (`redis://:<password>@...`).
    pub async fn start_with_password(password: &str) -> RedisServer {
        let durable = ["--appendonly", "yes", "--appendfsync", "always"];
        RedisServer::start_with(&[&durable[..], &["--requirepass", password]].concat()).await
    }

    /// A durable server replicating `master` (a replica: it refuses writes until promoted).
    pub async fn replica_of(master: &RedisServer) -> RedisServer {
        let port = master.port.to_string();
        let args = ["--appendonly", "yes", "--appendfsync", "always", "--replicaof", "127.0.0.1"];
        let replica = RedisServer::start_with(&[&args[..], &[port.as_str()]].concat()).await;
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while !replica.cli(&["info", "replication"]).await.contains("master_link_status:up") {
            assert!(tokio::time::Instant::now() < deadline, "the replica never reached its master");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        replica
    }

    /// A durable server reached over TLS only, with a password.
    pub async fn start_tls(tls: &Tls) -> RedisServer {
        let durable = ["--appendonly", "yes", "--appendfsync", "always"];
        RedisServer::start_on(&durable, Some(tls.clone())).await
    }

    /// A server that may lose acknowledged writes (no append-only file), which a node refuses.
    pub async fn start_volatile() -> RedisServer {
        RedisServer::start_with(&["--appendonly", "no"]).await
    }

    /// `redis://127.0.0.1:<port>`, as `--redis` takes it; over TLS `rediss://` with the
    /// password.
    pub fn url(&self) -> String {
        match &self.tls {
            None => format!("redis://{}", self.addr),
            Some(tls) => format!("rediss://:{}@{}", tls.password, self.addr),
        }
    }

    async fn start_with(args: &[&str]) -> RedisServer {
        RedisServer::start_on(args, None).await
    }

    /// Starts with `args` (after the port, bind address and directory) on a random free port;
    /// when another process holds that port (the server logs the bind error and exits) it tries
    /// another.
    async fn start_on(args: &[&str], tls: Option<Tls>) -> RedisServer {
        require("redis-server");
        let mut log = Vec::new();
        for _ in 0..ATTEMPTS {
            let port = free_port();
            let args = args.iter().map(|a| a.to_string()).collect();
            let dir = tempfile::tempdir().expect("temp dir for redis");
            let addr = format!("127.0.0.1:{port}");
            let tls = tls.clone();
            let mut server = RedisServer { child: None, port, addr, args, tls, dir };
            if server.spawn(&mut log).await {
                return server;
            }
        }
        panic!("redis-server did not start on {ATTEMPTS} ports:\n{}", log.join("\n"));
    }

    /// Stops the server gracefully (SIGTERM, by PID) and waits until it exited. Its append-only
    /// file stays for [`RedisServer::start_again`].
    pub async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        if let Some(pid) = child.id() {
            // SAFETY: a signal to a process this helper started and has not reaped.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
        }
        if tokio::time::timeout(STOP_GRACE, child.wait()).await.is_err() {
            let _ = child.start_kill();
            let _ = child.wait().await;
            panic!("redis-server on port {} did not stop within {STOP_GRACE:?}", self.port);
        }
    }

    /// Starts the server again on the same port and directory (so with the same data).
    pub async fn start_again(&mut self) {
        assert!(self.child.is_none(), "redis-server on port {} is running", self.port);
        let mut log = Vec::new();
        // The port was free a moment ago; a few tries ride out a client's connection attempt.
        for _ in 0..ATTEMPTS {
            if self.spawn(&mut log).await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("redis-server did not start again on port {}:\n{}", self.port, log.join("\n"));
    }

    /// A copy of its directory as it is now (its append-only file): what an operator's backup
    /// holds.
    pub fn copy_data(&self) -> TempDir {
        let copy = tempfile::tempdir().expect("temp dir for the copy");
        copy_dir(self.dir.path(), copy.path());
        copy
    }

    /// Puts a copy made by [`RedisServer::copy_data`] back in place of its data; the server must
    /// be stopped.
    pub fn restore_data(&mut self, copy: &TempDir) {
        assert!(self.child.is_none(), "redis-server on port {} is running", self.port);
        std::fs::remove_dir_all(self.dir.path()).expect("remove the data");
        std::fs::create_dir(self.dir.path()).expect("an empty data directory");
        copy_dir(copy.path(), self.dir.path());
    }

    /// Runs a `redis-cli` command against this server; its output.
    pub async fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(self.tls.iter().flat_map(Tls::cli_args))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .await
            .expect("run redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Kills the server (SIGKILL, by PID) and waits until it is gone.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }

    /// Stops the server and starts it again on the same port, keeping its data.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.start_again().await;
    }

    /// Spawns redis-server and waits for its own "Ready to accept connections" line (a
    /// connection could reach whoever else holds the port). False if it exited first (its log
    /// lines are added to `log`).
    async fn spawn(&mut self, log: &mut Vec<String>) -> bool {
        let port = self.port;
        let port_args = match &self.tls {
            None => vec!["--port".to_owned(), port.to_string()],
            Some(tls) => tls.server_args(port),
        };
        let mut child = Command::new("redis-server")
            .args(port_args)
            .args(["--bind", "127.0.0.1", "--save", ""])
            // The simulator connects from many 127.x addresses, which protected mode refuses.
            .args(["--protected-mode", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start redis-server");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let ready = tokio::time::timeout(PATIENCE, async {
            while let Ok(Some(line)) = lines.next_line().await {
                let ready = line.contains("Ready to accept connections");
                log.push(format!("port {port}: {line}"));
                if ready {
                    return true;
                }
            }
            false
        })
        .await;
        match ready {
            Ok(true) => {
                // Keep reading its log so that it never blocks on a full pipe.
                tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
                self.child = Some(child);
                true
            }
            Ok(false) => {
                let _ = child.wait().await;
                false
            }
            Err(_) => panic!("redis-server on port {port} not ready:\n{}", log.join("\n")),
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            // SIGKILL by PID; tokio reaps it.
            let _ = child.start_kill();
        }
    }
}

/// A Redis Cluster of three masters (no replicas), each durable like [`RedisServer::start`].
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub async fn start() -> RedisCluster {
        RedisCluster::start_on(None).await
    }

    /// A cluster whose nodes speak TLS only, to clients and to each other (`tls-cluster`), and
    /// require a password.
    pub async fn start_tls(tls: &Tls) -> RedisCluster {
        RedisCluster::start_on(Some(tls)).await
    }

    async fn start_on(tls: Option<&Tls>) -> RedisCluster {
        require("redis-cli");
        let mut nodes = Vec::new();
        let mut args = vec![
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
        ];
        if tls.is_some() {
            // The bus between the nodes over TLS too.
            args.extend(["--tls-cluster", "yes", "--tls-replication", "yes"]);
        }
        while nodes.len() < 3 {
            // Each node also listens on port + 10000 for the cluster bus; `free_port` keeps
            // that below 65536 and checks it is free too.
            nodes.push(RedisServer::start_on(&args, tls.cloned()).await);
        }
        let cluster = RedisCluster { nodes };
        let mut create = Command::new("redis-cli");
        create.args(tls.iter().flat_map(|t| t.cli_args()));
        create.arg("--cluster").arg("create");
        for node in &cluster.nodes {
            create.arg(&node.addr);
        }
        create.args(["--cluster-replicas", "0", "--cluster-yes"]).stdin(Stdio::null());
        let out = tokio::time::timeout(PATIENCE, create.output())
            .await
            .expect("redis-cli --cluster create ends in time")
            .expect("run redis-cli");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // Every node must see the whole cluster before a client may use any of them.
        for node in &cluster.nodes {
            wait_cluster_ok(node).await;
        }
        cluster
    }

    /// `redis+cluster://127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3`, as `--redis` takes it; over
    /// TLS `rediss+cluster://` with the password written once, before the first host.
    pub fn url(&self) -> String {
        let addrs: Vec<&str> = self.nodes.iter().map(|n| n.addr.as_str()).collect();
        match self.nodes.first().and_then(|n| n.tls.as_ref()) {
            None => format!("redis+cluster://{}", addrs.join(",")),
            Some(tls) => format!("rediss+cluster://:{}@{}", tls.password, addrs.join(",")),
        }
    }
}

/// Polls `CLUSTER INFO` on `node` until it says `cluster_state:ok`.
async fn wait_cluster_ok(node: &RedisServer) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut last = String::new();
    while tokio::time::Instant::now() < deadline {
        last = node.cli(&["cluster", "info"]).await;
        if last.contains("cluster_state:ok") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the cluster node on port {} never said cluster_state:ok:\n{last}", node.port);
}

/// A random port whose cluster-bus twin (port + 10000) exists too, both free right now.
fn free_port() -> u16 {
    loop {
        let port: u16 = rand::random_range(20_000..55_000);
        let free = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
        if free(port) && free(port + 10_000) {
            return port;
        }
    }
}

/// Copies the files of `from` (recursively) into `to`.
fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", from.display()))
        .arg(to)
        .status()
        .expect("run cp");
    assert!(status.success(), "cp -a {} {}", from.display(), to.display());
}

fn require(program: &str) {
    let found = std::process::Command::new(program).arg("--version").output();
    if !found.is_ok_and(|o| o.status.success()) {
        panic!(
            "{program} is not installed: the Redis tests need it. Run scripts/test (it installs \
             it) or `apt-get install -y redis-server`."
        );
    }
}
