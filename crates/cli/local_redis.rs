//! A `redis-server` of this process's own, for `demo --nodes`: on a free loopback port, in a
//! temporary directory, persisting every write (`appendfsync always`, what a node requires), and
//! stopped (by its PID) when dropped.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Ports tried before giving up (another process may take a free port before redis binds it).
const ATTEMPTS: usize = 5;
const READY_WITHIN: Duration = Duration::from_secs(10);

/// Why the local Redis did not start.
#[derive(Debug, thiserror::Error)]
pub enum LocalRedisError {
    #[error(
        "redis-server is not installed; `demo --nodes` needs it: apt-get install -y redis-server"
    )]
    NotInstalled,
    #[error("redis-server did not start: {0}")]
    Failed(String),
}

/// A running redis-server, stopped when dropped.
pub struct LocalRedis {
    child: Child,
    pub port: u16,
}

impl LocalRedis {
    /// Starts redis-server with its files in `dir`.
    pub fn start(dir: &Path) -> Result<LocalRedis, LocalRedisError> {
        if Command::new("redis-server").arg("--version").output().is_err() {
            return Err(LocalRedisError::NotInstalled);
        }
        let mut last = String::new();
        for _ in 0..ATTEMPTS {
            let port = free_port().map_err(|e| LocalRedisError::Failed(e.to_string()))?;
            match LocalRedis::start_on(dir, port) {
                Ok(redis) => return Ok(redis),
                Err(why) => last = why,
            }
        }
        Err(LocalRedisError::Failed(last))
    }

    fn start_on(dir: &Path, port: u16) -> Result<LocalRedis, String> {
        let mut child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--appendonly", "yes", "--appendfsync", "always", "--save", ""])
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| e.to_string())?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let started = Instant::now();
        let mut log = Vec::new();
        while started.elapsed() < READY_WITHIN {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(line) if line.contains("Ready to accept connections") => {
                    return Ok(LocalRedis { child, port });
                }
                Ok(line) => log.push(line),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        Err(format!("on port {port}: {}", log.join(" / ")))
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for LocalRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
