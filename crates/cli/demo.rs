//! `matchstream demo`: a node on a fresh temporary store, the bundled match replayed into it, and
//! a v1 viewer printing what it receives, with directions for watching by hand.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use matchstream::config::Config;
use matchstream::server::{self, ServerError};
use matchstream_client::matchfile::{self, MatchFile};
use matchstream_client::replay::{self, Progress, ReplayOptions};
use matchstream_client::Viewer;
use matchstream_proto::ConnectLine;

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
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            speed: 5.0,
            exit_when_done: false,
            http: SocketAddr::from(([127, 0, 0, 1], 0)),
            viewers: vec![SocketAddr::from(([127, 0, 0, 1], 0)); 2],
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
    let config = Config {
        http: opts.http,
        viewers: opts.viewers.clone(),
        data_dir: dir.path().to_path_buf(),
        watcher_tokens: vec![token.clone()],
        ..Config::default()
    };
    let node = server::start(config).await?;
    let file = matchfile::parse(BUNDLED_MATCH)?;
    let id = file.id();
    let http = format!("http://{}", node.http_addr);
    let viewer = node.viewer_addrs[0];
    say(
        &out,
        &format!(
            "MatchStream demo: a node on a fresh store in {dir}\n\
             \x20 HTTP API      {http}\n\
             \x20 viewer ports  {ports}\n\
             Replaying {id} at {speed}x; a v1 viewer prints the stream below once the match starts.\n\
             Watch it yourself from another terminal:\n\
             \x20 nc {vip} {vport}      then type: VERSION:1:CONNECT:me:MATCH:{id}\n\
             \x20 nc {vip} {vport}      or, resumable JSON: VERSION:2:CONNECT:me:MATCH:{id}:FROM:0\n\
             \x20 curl {http}/1/matches\n\
             \x20 curl {http}/1/match/{id}\n\
             \x20 curl {http}/1/match/{id}/history\n\n",
            dir = dir.path().display(),
            ports = node.viewer_addrs.iter().map(|a| a.port().to_string()).collect::<Vec<_>>().join(", "),
            speed = opts.speed,
            vip = viewer.ip(),
            vport = viewer.port(),
        ),
    );

    let (started_tx, started_rx) = oneshot::channel();
    let replay_out = out.clone();
    let replay_task = replay_match(file, http.clone(), token, opts.speed, replay_out, started_tx);
    let viewer_task = async {
        if started_rx.await.is_err() {
            return Ok(());
        }
        watch_v1(viewer, &id.to_string(), &out).await
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
    node.shutdown();
    node.stopped().await?;
    outcome
}

async fn replay_match(
    file: MatchFile,
    server: String,
    token: String,
    speed: f64,
    out: Out,
    started: oneshot::Sender<()>,
) -> Result<(), DemoError> {
    let opts = ReplayOptions { server, token, speed, replace: false };
    let mut started = Some(started);
    replay::replay(&file, &opts, |p| {
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
