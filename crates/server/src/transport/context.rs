//! What every viewer of a node shares, whatever its transport and state: the hub, the ports,
//! the limits and timeouts, the shutdown; joining a match (bringing it in from the store first),
//! and the goodbye and keepalive frames in each format. A viewer's life itself (following,
//! parked, closing) is `session.rs`'s.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rand::Rng;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::budget::Budget;
use crate::config::Config;
use crate::hub::{Format, Hub, JoinError, Snapshot, Subscription};
use crate::ingest::Ingest;
use crate::model::{now_ms, MatchId, Seq};
use crate::transport::ViewerPorts;
use crate::wire::ws;
use crate::wire::{sse, v2, Bye, ByeReason};

/// What every viewer connection of a node shares.
pub(crate) struct ViewerContext {
    pub hub: Arc<Hub>,
    pub ports: Arc<ViewerPorts>,
    pub shutdown: CancellationToken,
    pub tracker: TaskTracker,
    pub max_viewers: usize,
    pub connect_timeout: Duration,
    pub max_connect_line: usize,
    /// TCP connections still sending their connect line: their own budget (SPEC 10).
    pub(crate) handshakes: Budget,
    /// A WebSocket client frame must arrive whole within this long (SPEC 10).
    pub ws_frame_timeout: Duration,
    pub write_timeout: Duration,
    /// At most one write per viewer per this long while events come fast (`Config`).
    pub min_write_interval: Duration,
    pub retry_after_ms: u64,
    /// How often an idle SSE viewer gets a `: ping` comment (SPEC 5: at least every 15 s); a
    /// WebSocket viewer gets a ping every other period (SPEC 5: at most every 30 s).
    pub keepalive: Duration,
    /// On shutdown, goodbyes are spread over this long.
    pub drain_window: Duration,
    /// When the drain began (set by the first to see the shutdown).
    drain_start: std::sync::OnceLock<tokio::time::Instant>,
    /// Reads an ended match that left memory back from the store when a viewer asks for it.
    ingest: Option<Arc<Ingest>>,
    /// The viewer ports speak TLS with this (SPEC 11); `None`: plain TCP.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
}

impl ViewerContext {
    pub(crate) fn new(
        config: &Config,
        hub: Arc<Hub>,
        ports: Arc<ViewerPorts>,
        shutdown: CancellationToken,
        tracker: TaskTracker,
    ) -> ViewerContext {
        let handshakes = Budget::new(
            config.max_handshakes,
            config.max_handshakes_per_address,
            ports.metrics.handshakes.clone(),
        );
        ViewerContext {
            hub,
            ports,
            shutdown,
            tracker,
            max_viewers: config.max_viewers,
            connect_timeout: config.connect_timeout,
            max_connect_line: config.max_connect_line,
            handshakes,
            ws_frame_timeout: config.ws_frame_timeout,
            write_timeout: config.write_timeout,
            min_write_interval: config.min_write_interval,
            retry_after_ms: config.retry_after_ms,
            keepalive: config.keepalive,
            drain_window: config.drain_window,
            drain_start: std::sync::OnceLock::new(),
            ingest: None,
            tls: None,
        }
    }

    /// The viewer ports speak TLS, through `acceptor`.
    pub(crate) fn with_tls(mut self, acceptor: Option<tokio_rustls::TlsAcceptor>) -> ViewerContext {
        self.tls = acceptor;
        self
    }

    /// Viewers of an ended match that left memory get it read back (SPEC 10).
    pub(crate) fn with_ingest(mut self, ingest: Arc<Ingest>) -> ViewerContext {
        self.ingest = Some(ingest);
        self
    }

    /// Joins match `id` for a viewer: brings it into memory first if it is in the store (an
    /// ended match that left memory, or, with other nodes, one created elsewhere that this node
    /// has not heard of yet: SPEC 7, created everywhere), waits (with other nodes) for what the
    /// viewer may have seen elsewhere, and joins. A match that left memory again in between is
    /// read back once more. A store that cannot be read is logged; the viewer is then told
    /// what the hub knows.
    pub(crate) async fn join(
        &self,
        id: &str,
        format: Format,
        from: Option<Seq>,
    ) -> Result<(Subscription, Arc<Snapshot>), JoinError> {
        self.bring_in(id).await;
        self.hub.wait_ready(id, from).await;
        match self.hub.join(id, format, from, now_ms()) {
            Err(JoinError::NotFound(_))
                if MatchId::parse(id).is_ok_and(|m| self.hub.is_evicted(&m)) =>
            {
                self.bring_in(id).await;
                self.hub.join(id, format, from, now_ms())
            }
            joined => joined,
        }
    }

    async fn bring_in(&self, id: &str) {
        let (Some(ingest), Ok(id)) = (&self.ingest, MatchId::parse(id)) else { return };
        if let Err(e) = ingest.ensure(&id).await {
            tracing::warn!(match_id = %id, error = %e, "a match cannot be read from the store");
        }
    }

    /// A `bye` for `reason`; a `shutdown` one carries a `retry_after_ms` jittered over the
    /// drain window (from `retry_after_ms` to that plus the window; with no window, up to twice
    /// `retry_after_ms`) and, with other nodes, one of theirs to `try` (chosen like
    /// `/1/checkin` chooses, so a crowd spreads): a viewer port for a TCP viewer, the node's
    /// HTTP port for a WebSocket or SSE one (`format`).
    pub(crate) fn bye(&self, reason: ByeReason, format: Format) -> Bye {
        let mut bye = Bye::new(reason);
        if reason == ByeReason::Shutdown {
            let base = self.retry_after_ms;
            let spread = match self.drain_window.as_millis() as u64 {
                0 => base,
                window => window,
            };
            bye.retry_after_ms = Some(rand::rng().random_range(base..=base.saturating_add(spread)));
            bye.try_addr = self.ports.cluster.other_node().and_then(|o| match format {
                Format::Ws | Format::Sse => o.web_addr_string(),
                Format::V1 | Format::V2 => Some(o.addr_string()),
            });
        }
        bye
    }

    /// When the drain began: the first caller after the shutdown fixes it.
    pub(crate) fn drain_start(&self) -> tokio::time::Instant {
        *self.drain_start.get_or_init(tokio::time::Instant::now)
    }

    /// Once the node stops: waits until a moment drawn at random within the drain window (a
    /// viewer in a task says goodbye then; parked ones are spread by their shard).
    pub(crate) async fn goodbye_time(&self) {
        self.shutdown.cancelled().await;
        let at = self.drain_start() + self.drain_window.mul_f64(rand::rng().random::<f64>());
        tokio::time::sleep_until(at).await;
    }
}

/// The goodbye in `format` (v1 has none: the original just closes).
pub(crate) fn goodbye(format: Format, bye: &Bye) -> Option<Bytes> {
    match format {
        Format::V1 => None,
        Format::V2 => Some(v2::bye_frame(bye)),
        Format::Ws => Some(ws::bye(bye)),
        Format::Sse => Some(sse::bye(bye)),
    }
}

/// The keepalive in `format` after `quiet` keepalive periods without traffic, if one is due:
/// SSE every period, WebSocket every other one, TCP never.
pub(crate) fn keepalive(format: Format, quiet: u32) -> Option<Bytes> {
    match format {
        Format::V1 | Format::V2 => None,
        Format::Ws => quiet.is_multiple_of(2).then(ws::ping),
        Format::Sse => Some(sse::ping()),
    }
}
