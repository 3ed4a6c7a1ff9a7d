//! Wiring and lifecycle of a node: bind every listener, restore the store, start the tasks, and
//! stop them cleanly. No protocol or rule lives here.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cluster::report_load;
use crate::config::{Config, ConfigError};
use crate::hub::Hub;
use crate::ingest::Ingest;
use crate::ops::Ops;
use crate::store::redis::nodes::NodesConn;
use crate::store::redis::{RedisOptions, RedisStore};
use crate::store::sqlite::SqliteStore;
use crate::store::{Store, StoreError};
use crate::transport::context::ViewerContext;
use crate::transport::session::Viewers;
use crate::transport::tcp;
use crate::transport::tls::Tls;
use crate::transport::ViewerPorts;

pub use crate::transport::tls::TlsError;
use crate::{api, http};

/// Why a node could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind { what: &'static str, addr: SocketAddr, source: io::Error },
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The certificate or its key cannot be served (`--tls-cert`, `--tls-key`).
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
}

/// A running node.
pub struct Node {
    /// The HTTP API's real address (useful when configured with port 0).
    pub http_addr: SocketAddr,
    /// The admin listener's real address, when it has one (`--admin`).
    pub admin_addr: Option<SocketAddr>,
    /// Each viewer listener's real address, in the configured order.
    pub viewer_addrs: Vec<SocketAddr>,
    pub ports: Arc<ViewerPorts>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    store: Arc<dyn Store>,
    grace: Duration,
    http: JoinHandle<()>,
    /// The admin listener's task, when it has one; it stops with HTTP.
    admin: Option<JoinHandle<()>>,
    /// Ends the HTTP server, after the viewers (see `stopped`).
    stop_http: CancellationToken,
    /// The public port's routes and limits, for [`Node::serve_io`].
    app: axum::Router,
    limits: http::Limits,
    ingest: Arc<Ingest>,
    /// The certificate served, when the node speaks TLS.
    tls: Option<Arc<Tls>>,
}

/// Starts a node: on a shared Redis with `config.redis`, else on its embedded SQLite store in
/// `config.data_dir`.
pub async fn start(config: Config) -> Result<Node, ServerError> {
    config.validate()?;
    match &config.redis {
        Some(url) => {
            let opts = RedisOptions {
                url: url.clone(),
                ca_cert: config.redis_ca_cert.clone(),
                wait_replicas: config.redis_wait_replicas,
                volatile: config.redis_volatile,
            };
            let store = RedisStore::open(&opts).await?;
            let nodes = store.conn_for_nodes();
            start_with_store(config, Arc::new(store), Some(nodes)).await
        }
        None => {
            let store = SqliteStore::open(&config.data_dir)?;
            start_with_store(config, Arc::new(store), None).await
        }
    }
}

/// Starts a node on the given store (`nodes`: the cluster's directory, with a shared store).
/// Every listener is bound before anything is spawned, so a node that returns is ready to serve.
async fn start_with_store(
    config: Config,
    store: Arc<dyn Store>,
    nodes: Option<NodesConn>,
) -> Result<Node, ServerError> {
    config.validate()?;
    // Read before anything is bound: a node with a bad certificate does not start.
    let tls = config.tls.as_ref().map(Tls::load).transpose()?.map(Arc::new);
    let bind_err = |what, addr| move |source| ServerError::Bind { what, addr, source };
    let http_listener =
        tcp::bind(config.http, config.listen_backlog).map_err(bind_err("http", config.http))?;
    let http_addr = http_listener.local_addr().map_err(bind_err("http", config.http))?;
    let admin_listener = match config.admin {
        Some(addr) => {
            let listener = tcp::bind(addr, 1024).map_err(bind_err("admin", addr))?;
            let bound = listener.local_addr().map_err(bind_err("admin", addr))?;
            Some((listener, bound))
        }
        None => None,
    };
    let admin_addr = admin_listener.as_ref().map(|(_, addr)| *addr);
    let mut viewer_listeners = Vec::with_capacity(config.viewers.len());
    let mut viewer_addrs = Vec::with_capacity(config.viewers.len());
    for addr in &config.viewers {
        let l = tcp::bind(*addr, config.listen_backlog).map_err(bind_err("viewers", *addr))?;
        viewer_addrs.push(l.local_addr().map_err(bind_err("viewers", *addr))?);
        viewer_listeners.push(l);
    }

    let hub = Arc::new(
        Hub::new(store.clone(), config.ring_events, config.max_lag_events).shared(nodes.is_some()),
    );
    // Subscribed before the restore, so nothing written meanwhile by another node is missed
    // (what the restore already holds is skipped).
    let log = store.follow();
    let metrics = crate::telemetry::Metrics::new();
    metrics.set_build_info(env!("CARGO_PKG_VERSION"), &config.commit);
    let started = std::time::Instant::now();
    let ingest = Ingest::restore(store.clone(), hub.clone()).await?;
    let ingest = Arc::new(
        ingest.keep_ended(config.keep_ended).counting_rewinds(metrics.log_rewinds.clone()),
    );
    tracing::info!(
        matches = ingest.len(),
        ended = hub.ids().len().saturating_sub(ingest.len()),
        ms = started.elapsed().as_millis() as u64,
        "store restored (ended matches are read back when asked for)"
    );
    let shutdown = CancellationToken::new();
    // Following other nodes' writes ends with HTTP, after the viewers' goodbyes (while they
    // drain, viewers not yet told goodbye still get events published elsewhere).
    let stop_http = CancellationToken::new();
    if let Some(entries) = log {
        // Until the node stops: dropping `entries` then tells the store to stop following.
        let (ingest, stopping) = (ingest.clone(), stop_http.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = stopping.cancelled() => {}
                _ = ingest.follow(entries) => {}
            }
        });
    }
    let ports = Arc::new(
        ViewerPorts::new(&viewer_addrs, config.public_host.as_deref(), config.max_viewers, metrics)
            .with_web_port(http_addr.port()),
    );
    let tracker = TaskTracker::new();
    // The operator's figures, sampled every second until HTTP stops (they are read over HTTP).
    let ops = Ops::new(format!("{:016x}", rand::random::<u64>()), http_addr.to_string());
    tokio::spawn(ops.clone().run(ports.metrics.clone(), hub.clone(), stop_http.clone()));

    tokio::spawn(evict_ended(ingest.clone(), config.keep_ended, stop_http.clone()));

    let ctx = Arc::new(
        ViewerContext::new(&config, hub.clone(), ports.clone(), shutdown.clone(), tracker.clone())
            .with_ingest(ingest.clone())
            .with_tls(tls.as_ref().map(|t| t.viewers().clone())),
    );
    if let Some(tls) = &tls {
        tracing::info!(
            cert = %tls.files().cert.display(),
            key = %tls.files().key.display(),
            "TLS on the HTTP port (https, wss) and the viewer ports"
        );
        if config.public_host.is_none() {
            tracing::warn!(
                "with TLS, /1/checkin and `try` name the listeners' IP addresses, which a                  certificate rarely covers: --public-host should name the certificate's host"
            );
        }
    }
    let viewers = Viewers::new(ctx.clone());
    if let Some(nodes) = nodes {
        let here = ports.clone();
        tokio::spawn(report_load(
            nodes,
            ports.cluster.clone(),
            move || here.snapshot(),
            ops.clone(),
            shutdown.clone(),
            stop_http.clone(),
        ));
    }
    for (index, listener) in viewer_listeners.into_iter().enumerate() {
        tracing::info!(addr = %viewer_addrs[index], "viewer listener ready");
        tracker.spawn(tcp::accept_loop(listener, index, viewers.clone()));
    }

    let state = api::AppState::new(
        ingest.clone(),
        hub.clone(),
        store.clone(),
        ports.clone(),
        ctx.clone(),
        ops,
        &config,
    );
    let limits = http::Limits::of(&config);
    let app = api::router(state.clone());
    let public = http::Front {
        app: app.clone(),
        limits,
        viewers: Some(viewers),
        metrics: ports.metrics.clone(),
        name: "http",
        tls: tls.as_ref().map(|t| t.http().clone()),
    };
    let mut admin_task = None;
    if let Some((listener, addr)) = admin_listener {
        let admin = http::Front {
            app: api::admin_router(state),
            limits,
            viewers: None,
            metrics: ports.metrics.clone(),
            name: "admin",
            tls: tls.as_ref().filter(|_| config.admin_tls).map(|t| t.http().clone()),
        };
        admin_task = Some(tokio::spawn(http::serve(listener, admin, stop_http.clone())));
        tracing::info!(%addr, "admin listener ready (/metrics, /ops, /ops.json)");
    }
    // HTTP outlives the viewers' goodbyes: while they drain, /readyz says so (503) and
    // requests in flight finish. `stopped` ends it after the viewers.
    let http = tokio::spawn(http::serve(http_listener, public, stop_http.clone()));
    tracing::info!(addr = %http_addr, "http listener ready");

    Ok(Node {
        http_addr,
        admin_addr,
        viewer_addrs,
        ports,
        shutdown,
        tracker,
        store,
        grace: config.shutdown_grace + config.drain_window,
        http,
        admin: admin_task,
        stop_http,
        app,
        limits,
        ingest,
        tls,
    })
}

/// Reloads a node's certificate pair (see [`Node::reload_tls`]).
#[derive(Clone)]
pub struct TlsReloader(Option<Arc<Tls>>);

impl TlsReloader {
    /// Reads the pair again and serves it from now on; the error names the file and why, and
    /// the pair served so far stays. [`TlsError::NotConfigured`] when the node has no TLS.
    pub fn reload(&self) -> Result<(), TlsError> {
        self.0.as_ref().ok_or(TlsError::NotConfigured)?.reload()
    }
}

/// Takes ended matches out of memory once `--keep-ended` has passed (SPEC 10), until HTTP
/// stops. Looks a few times per period, so a match leaves at most a quarter period late.
async fn evict_ended(ingest: Arc<Ingest>, keep_ended: Duration, stop: CancellationToken) {
    let every = (keep_ended / 4).clamp(Duration::from_millis(100), Duration::from_secs(5));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut trimmed = tokio::time::Instant::now();
    let mut freed = false;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        freed |= ingest.evict_ended() > 0;
        if freed && trimmed.elapsed() >= Duration::from_secs(1) {
            give_back_memory();
            (trimmed, freed) = (tokio::time::Instant::now(), false);
        }
    }
}

/// Hands the memory of evicted matches back to the system. glibc's malloc keeps what is freed
/// in its arenas (one per thread that allocated), so a node that evicted a season of matches
/// would otherwise keep the RSS of its busiest moment; `malloc_trim` releases the free pages of
/// every arena. At most once a second, and only after an eviction.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn give_back_memory() {
    // SAFETY: `malloc_trim` takes no pointer; it only walks the allocator's own free lists,
    // under the allocator's locks, and is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Other allocators return memory by themselves (or cannot be asked): nothing to do.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn give_back_memory() {}

impl Node {
    /// How many matches the node holds in memory now: those not ended, and ended ones until
    /// `--keep-ended` after their end (or after they were last read back).
    pub fn matches_in_memory(&self) -> usize {
        self.ingest.len()
    }

    /// Serves one HTTP connection on any byte stream through the public port's router and
    /// stack (no hand-over to a viewer, no socket deadlines): the fuzz target's way in.
    #[doc(hidden)]
    pub async fn serve_io<IO>(&self, io: IO)
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        http::serve_io(self.app.clone(), self.limits, io).await;
    }

    /// Reads the certificate and key again from their files and serves them to every TLS
    /// handshake from now on (SIGHUP in the binary); connections already up are not touched.
    /// On an error (naming the file) the pair served so far stays.
    pub fn reload_tls(&self) -> Result<(), TlsError> {
        self.tls_reloader().reload()
    }

    /// What [`Node::reload_tls`] does, for a task that outlives this handle's borrow (the
    /// binary's SIGHUP loop runs while [`Node::stopped`] holds the node).
    pub fn tls_reloader(&self) -> TlsReloader {
        TlsReloader(self.tls.clone())
    }

    /// Does the node speak TLS (HTTPS, and on its viewer ports)?
    pub fn tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Asks the node to stop: listeners close, viewers get `bye shutdown`.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// A token that stops the node when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Waits until the node has been asked to stop, then lets viewers and requests finish
    /// (within the grace period) and flushes the store.
    pub async fn stopped(self) -> Result<(), ServerError> {
        self.shutdown.cancelled().await;
        tracing::info!(viewers = self.ports.total(), "stopping");
        self.tracker.close();
        if tokio::time::timeout(self.grace, self.tracker.wait()).await.is_err() {
            tracing::warn!(
                left = self.tracker.len(),
                "viewers still connected after the grace period"
            );
        }
        self.stop_http.cancel();
        let admin = async {
            if let Some(admin) = self.admin {
                let _ = admin.await;
            }
        };
        let both = async { tokio::join!(self.http, admin) };
        if tokio::time::timeout(self.grace, both).await.is_err() {
            tracing::warn!("HTTP requests still running after the grace period");
        }
        self.store.flush().await?;
        tracing::info!("stopped");
        Ok(())
    }
}
