//! `matchstream demo`: a node on a fresh temporary store, the bundled match replayed into it, and
//! a v1 viewer printing what it receives, with directions for watching by hand. With `--nodes N`
//! (N > 1): a local redis-server and N nodes joined through it; the match is replayed into the
//! first node, a v1 viewer on the second prints it, and a v2 viewer on the last checks it got
//! every event.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use matchstream::config::Config;
use matchstream::server::{self, ServerError};
use matchstream_client::matchfile::{self, MatchFile};
use matchstream_client::replay::{self, IfExists, Progress, ReplayOptions};
use matchstream_client::Viewer;
use matchstream_proto::ConnectLine;

use crate::local_redis::{LocalRedis, LocalRedisError};

/// The match the demo replays: Estudiantes de La Plata v Tigre, 2011-09-10, from the original.
pub const BUNDLED_MATCH: &str = include_str!("../../matches/elp-tig-2011-09-10.config");

/// Why the demo stopped early.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("cannot create a temporary store: {0}")]
    TempDir(std::io::Error),
    #[error(transparent)]
    Server(#[from] ServerError),
    #[error("the bundled match does not parse: {0}")]
    MatchFile(#[from] matchfile::MatchFileError),
    #[error("replay failed: {0}")]
    Replay(#[from] replay::ReplayError),
    #[error("the demo viewer failed: {0}")]
    Viewer(std::io::Error),
    #[error(transparent)]
    Redis(#[from] LocalRedisError),
}

/// How to run the demo.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Replay speed: the file's pauses are divided by it.
    pub speed: f64,
    /// Stop once the match is over instead of serving until `shutdown`.
    pub exit_when_done: bool,
    /// Address of the HTTP API (port 0: any free port).
    pub http: SocketAddr,
    /// Viewer listener addresses (port 0: any free port).
    pub viewers: Vec<SocketAddr>,
    /// Nodes to run; more than one share a local redis-server.
    pub nodes: usize,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            speed: 5.0,
            exit_when_done: false,
            http: SocketAddr::from(([127, 0, 0, 1], 0)),
            viewers: vec![SocketAddr::from(([127, 0, 0, 1], 0)); 2],
            nodes: 1,
        }
    }
}

/// Shared terminal output of the demo's parts.
type Out = Arc<Mutex<Box<dyn Write + Send>>>;

fn say(out: &Out, text: &str) {
    // A panic while printing leaves nothing half-done worth refusing the terminal for.
    let mut w = out.lock().unwrap_or_else(|p| p.into_inner());
    let _ = w.write_all(text.as_bytes());
    let _ = w.flush();
}

/// Runs the demo, writing everything to `out`, until the match is over (with
/// `exit_when_done`) or `shutdown` is cancelled.
pub async fn run(
    opts: DemoOptions,
    out: Box<dyn Write + Send>,
    shutdown: CancellationToken,
) -> Result<(), DemoError> {
    let out: Out = Arc::new(Mutex::new(out));
    let dir = tempfile::tempdir().map_err(DemoError::TempDir)?;
    let token = format!("demo-{:016x}", rand::random::<u64>());
    let redis = match opts.nodes {
        0 | 1 => None,
        _ => Some(LocalRedis::start(dir.path())?),
    };
    let mut nodes = Vec::new();
    for n in 0..opts.nodes.max(1) {
        let config = Config {
            http: if n == 0 { opts.http } else { SocketAddr::from(([127, 0, 0, 1], 0)) },
            viewers: opts.viewers.clone(),
            data_dir: dir.path().join(format!("node{}", n + 1)),
            redis: redis.as_ref().map(LocalRedis::url),
            watcher_tokens: vec![token.clone()],
            // The operator's page and metrics, on a free port of their own (SPEC 11).
            admin: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            commit: crate::COMMIT.to_owned(),
            ..Config::default()
        };
        nodes.push(server::start(config).await?);
    }
    let file = matchfile::parse(BUNDLED_MATCH)?;
    let id = file.id();
    let node = &nodes[0];
    let http = format!("http://{}", node.http_addr);
    let admin = node.admin_addr.map(|a| format!("http://{a}")).unwrap_or_default();
    // The printing viewer watches the second node when there is one: what the watcher
    // publishes to the first reaches it through Redis.
    let viewer = nodes[1 % nodes.len()].viewer_addrs[0];
    let ports_of = |n: &server::Node| {
        n.viewer_addrs.iter().map(|a| a.port().to_string()).collect::<Vec<_>>().join(", ")
    };
    let where_ = match &redis {
        None => format!(
            "a node on a fresh store in {}\n\x20 HTTP API      {http}\n\x20 viewer ports  {}",
            dir.path().display(),
            ports_of(node)
        ),
        Some(r) => {
            let mut text = format!(
                "{} nodes joined through a local redis-server ({}, files in {})",
                nodes.len(),
                r.url(),
                dir.path().display()
            );
            for (i, n) in nodes.iter().enumerate() {
                text.push_str(&format!(
                    "\n\x20 node {}  HTTP http://{}  viewer ports {}",
                    i + 1,
                    n.http_addr,
                    ports_of(n)
                ));
            }
            text.push_str(&format!(
                "\nThe watcher publishes to node 1; the viewer below watches node {}.",
                1 + 1 % nodes.len()
            ));
            text
        }
    };
    say(
        &out,
        &format!(
            "Open the live page in a browser: {http}/?mid={id}\n\n\
             MatchStream demo: {where_}\n\
             Replaying {id} at {speed}x; a v1 viewer prints the stream below once the match starts.\n\
             Watch it yourself from another terminal:\n\
             \x20 nc {vip} {vport}      then type: VERSION:1:CONNECT:me:MATCH:{id}\n\
             \x20 nc {vip} {vport}      or, resumable JSON: VERSION:2:CONNECT:me:MATCH:{id}:FROM:0\n\
             \x20 curl -N {http}/1/match/{id}/stream      Server-Sent Events (WebSocket: /ws)\n\
             \x20 curl {http}/1/matches\n\
             \x20 curl {http}/1/match/{id}\n\
             \x20 curl {http}/1/match/{id}/history\n\
             The operator's view, on the admin listener: {admin}/ops and {admin}/metrics, or\n\
             \x20 matchstream top --server {admin}\n\n",
            speed = opts.speed,
            vip = viewer.ip(),
            vport = viewer.port(),
        ),
    );

    let (started_tx, started_rx) = oneshot::channel();
    let (created_tx, created_rx) = oneshot::channel();
    let replay_out = out.clone();
    let replay_task =
        replay_match(file, http.clone(), token, opts.speed, replay_out, (created_tx, started_tx));
    // With several nodes, a v2 viewer on the last one checks that it got every event.
    let checker = (nodes.len() > 1).then(|| nodes[nodes.len() - 1].viewer_addrs[0]);
    let viewer_task = async {
        let check = async {
            match checker {
                Some(addr) => {
                    if created_rx.await.is_err() {
                        return Ok(None);
                    }
                    count_v2(addr, &id.to_string()).await.map(Some)
                }
                None => Ok(None),
            }
        };
        let print = async {
            if started_rx.await.is_err() {
                return Ok(());
            }
            watch_v1(viewer, &id.to_string(), &out).await
        };
        let (printed, checked) = tokio::join!(print, check);
        printed?;
        if let Some((seqs, last)) = checked? {
            say(
                &out,
                &format!(
                    "\n# node {} (a v2 viewer): received {seqs} events, seq 1 to {last}, in order, \
                     none missing\n",
                    nodes.len()
                ),
            );
        }
        Ok(())
    };
    let outcome = tokio::select! {
        _ = shutdown.cancelled() => Ok(()),
        (replayed, watched) = async { tokio::join!(replay_task, viewer_task) } => {
            replayed.and(watched.map_err(DemoError::Viewer))
        }
    };
    if outcome.is_ok() && !shutdown.is_cancelled() {
        say(
            &out,
            &format!(
                "\nThe match is over. Its history: curl {http}/1/match/{id}/history\n{}",
                if opts.exit_when_done {
                    "Stopping.\n"
                } else {
                    "The node keeps serving until Ctrl-C.\n"
                }
            ),
        );
        if !opts.exit_when_done {
            shutdown.cancelled().await;
        }
    }
    for node in nodes {
        node.shutdown();
        node.stopped().await?;
    }
    drop(redis);
    outcome
}

async fn replay_match(
    file: MatchFile,
    server: String,
    token: String,
    speed: f64,
    out: Out,
    (created, started): (oneshot::Sender<()>, oneshot::Sender<()>),
) -> Result<(), DemoError> {
    let opts = ReplayOptions { server, token, speed, if_exists: IfExists::Fail, tls: None };
    let (mut created, mut started) = (Some(created), Some(started));
    replay::replay(&file, &opts, |p| {
        if let Progress::Created { .. } = p {
            if let Some(tx) = created.take() {
                let _ = tx.send(());
            }
        }
        if let Progress::Published { index, total, kind, seq } = p {
            say(&out, &format!("# watcher published {index}/{total}: {kind} (seq {seq})\n"));
            if kind == "start" {
                if let Some(tx) = started.take() {
                    let _ = tx.send(());
                }
            }
        }
    })
    .await?;
    Ok(())
}

/// Watches as a v2 viewer from the first event until the match is over; returns how many events it got and the
/// last seq, after checking (the client's checker) that they came in order with none missing.
async fn count_v2(addr: SocketAddr, id: &str) -> std::io::Result<(u64, u64)> {
    // FROM 0: every event since the first, however late it connects.
    let line =
        ConnectLine::V2 { user: b"demo-v2".to_vec(), match_id: id.to_owned(), from: Some(0) };
    // The node learns of a match created on another one a moment later (through Redis).
    for _ in 0..100 {
        let mut viewer = Viewer::watch(addr, &line).await?;
        let (seqs, bye) = tokio::time::timeout(Duration::from_secs(3600), viewer.collect_v2())
            .await?
            .map_err(std::io::Error::other)?;
        match bye["reason"].as_str() {
            Some("match_over") => {
                return Ok((seqs.len() as u64, seqs.last().copied().unwrap_or(0)));
            }
            Some("not_found") if seqs.is_empty() => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            _ => return Err(std::io::Error::other(format!("the v2 viewer got {bye}"))),
        }
    }
    Err(std::io::Error::other("the match never reached the last node"))
}

/// Watches as a v1 viewer (the client crate's) and copies the stream to `out` until the server
/// closes.
async fn watch_v1(addr: SocketAddr, id: &str, out: &Out) -> std::io::Result<()> {
    let line = ConnectLine::V1 { user: b"demo".to_vec(), match_id: id.to_owned() };
    let mut viewer = Viewer::watch(addr, &line).await?;
    let mut buf = vec![0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(600), viewer.read(&mut buf)).await??;
        if n == 0 {
            return Ok(());
        }
        say(out, &String::from_utf8_lossy(&buf[..n]));
    }
}
