//! WebSocket and SSE viewers (SPEC 5), on the HTTP port. The request is checked and the viewer
//! joins its match while hyper still owns the connection, so an unknown match gets its 404 JSON
//! answer before any upgrade and keep-alive requests before it are plain HTTP. The answer is the
//! `101 Switching Protocols`, or the event-stream headers as an HTTP/1.0 response whose body runs
//! until the connection closes; then `http.rs` hands the socket back here and the viewer is
//! followed like any other (`session.rs`): parked at the live edge, its frames shared bytes.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, Response, StatusCode, Version};
use bytes::{Bytes, BytesMut};

use crate::hub::{Format, JoinError, Subscription};
use crate::locks::lock;
use crate::model::Seq;
use crate::transport::close::close;
use crate::transport::conn::Conn;
use crate::transport::context::{goodbye, ViewerContext};
use crate::transport::session::{Following, Viewers};
use crate::transport::write::write_all;
use crate::transport::PortGuard;
use crate::wire::{Bye, ByeReason};

/// A viewer answered over HTTP, waiting for its connection to be handed over.
pub(crate) struct Handover {
    format: Format,
    start: Start,
    guard: PortGuard,
}

enum Start {
    Follow(Subscription),
    /// Say this goodbye (`full`) and close.
    Refuse(Bye),
}

/// Where a handler leaves its [`Handover`] for the connection it answers (a request extension,
/// one per connection): once the answer is written, the connection leaves hyper for this.
#[derive(Clone, Default)]
pub(crate) struct Takeover(Arc<Mutex<Option<Handover>>>);

tokio::task_local! {
    /// The slot of the connection whose request is being answered, as its handlers see it:
    /// set by `http.rs` around each connection's requests (hyper polls the handlers in the
    /// connection's task). A task-local rather than a request extension: an extension costs
    /// allocations on every request, and only the viewers' routes read it.
    static CONNECTION: Takeover;
}

impl Takeover {
    /// Runs `serving` (a connection's requests) with this as its connection's slot.
    pub(crate) async fn scope<F: std::future::Future>(&self, serving: F) -> F::Output {
        CONNECTION.scope(self.clone(), serving).await
    }

    /// The slot of the connection the current request arrived on; `None` outside a connection
    /// that can be handed over (the admin listener).
    pub(crate) fn current() -> Option<Takeover> {
        CONNECTION.try_with(Takeover::clone).ok()
    }

    /// The viewer waiting for this connection, if a handler left one.
    pub(crate) fn take(&self) -> Option<Handover> {
        lock(&self.0).take()
    }

    fn put(&self, handover: Handover) {
        *lock(&self.0) = Some(handover);
    }
}

/// Why a WebSocket or SSE request is not served (answered as a JSON error).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    NotFound(String),
    BadRequest(String),
    /// Not a WebSocket handshake: 426, with `Upgrade: websocket`.
    UpgradeRequired(String),
}

/// `GET /1/match/<id>/ws[?from=<seq>]`: checks the handshake and joins the match.
pub(crate) async fn websocket(
    ctx: &Arc<ViewerContext>,
    id: &str,
    from: Option<Seq>,
    headers: &HeaderMap,
    takeover: &Takeover,
) -> Result<Response<Body>, Refusal> {
    let sub = join(ctx, id, Format::Ws, from).await?;
    let has = |name: header::HeaderName, token: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    };
    if !has(header::UPGRADE, "websocket") || !has(header::CONNECTION, "upgrade") {
        return Err(Refusal::UpgradeRequired(
            "this is a WebSocket endpoint: connect with a WebSocket client (Upgrade: websocket), \
             or read /1/match/<id>/stream (Server-Sent Events)"
                .into(),
        ));
    }
    if headers.get(header::SEC_WEBSOCKET_VERSION).is_none_or(|v| v.as_bytes() != b"13") {
        return Err(Refusal::UpgradeRequired("only WebSocket version 13 is spoken".into()));
    }
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
        return Err(Refusal::BadRequest("Sec-WebSocket-Key is missing".into()));
    };
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    takeover.put(handover(ctx, Format::Ws, sub));
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::UPGRADE, "websocket")
        .header(header::CONNECTION, "Upgrade")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept)
        .body(Body::empty())
        .map_err(|e| Refusal::BadRequest(e.to_string()))
}

/// `GET /1/match/<id>/stream[?from=<seq>]`, where `Last-Event-ID` wins over `from`.
/// `head`: a HEAD request gets the headers and no stream.
pub(crate) async fn events(
    ctx: &Arc<ViewerContext>,
    id: &str,
    from: Option<Seq>,
    headers: &HeaderMap,
    head: bool,
    takeover: &Takeover,
) -> Result<Response<Body>, Refusal> {
    let last_event_id = match headers.get("last-event-id") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .map(str::trim)
                .and_then(|v| v.parse::<Seq>().ok())
                .ok_or_else(|| Refusal::BadRequest("Last-Event-ID must be a seq".into()))?,
        ),
    };
    let sub = join(ctx, id, Format::Sse, last_event_id.or(from)).await?;
    if !head {
        takeover.put(handover(ctx, Format::Sse, sub));
    }
    // HTTP/1.0: hyper then writes no chunked framing, the body is delimited by the close, and
    // the connection leaves hyper once these headers are out.
    let body = Body::from_stream(futures_util::stream::empty::<Result<Bytes, Infallible>>());
    Response::builder()
        .version(Version::HTTP_10)
        .header(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"))
        .header(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"))
        // nginx would otherwise buffer the stream.
        .header("x-accel-buffering", HeaderValue::from_static("no"))
        .body(body)
        .map_err(|e| Refusal::BadRequest(e.to_string()))
}

async fn join(
    ctx: &ViewerContext,
    id: &str,
    format: Format,
    from: Option<Seq>,
) -> Result<Subscription, Refusal> {
    match ctx.join(id, format, from).await {
        Ok((sub, _)) => Ok(sub),
        Err(JoinError::NotFound(_)) => {
            ctx.ports.metrics.refused(ByeReason::NotFound);
            Err(Refusal::NotFound(format!("unknown match {id}")))
        }
    }
}

/// The viewer to hand the connection to, counted from now; past the node's limit, or while the
/// node drains, it is told `full` (SPEC 5: after the upgrade, with the close code 1013), naming
/// another node's HTTP port to `try` while one has room.
fn handover(ctx: &ViewerContext, format: Format, sub: Subscription) -> Handover {
    let mut guard = ctx.ports.enter_web();
    let start = if ctx.ports.total() > ctx.max_viewers || ctx.shutdown.is_cancelled() {
        ctx.ports.metrics.refused(ByeReason::Full);
        // Another node's HTTP port: a browser follows `try` with the same request there.
        let other = ctx.ports.cluster.other_node().and_then(|o| o.web_addr_string());
        Start::Refuse(Bye {
            reason: ByeReason::Full,
            retry_after_ms: other.is_none().then_some(ctx.retry_after_ms),
            try_addr: other,
        })
    } else {
        guard.joined(format);
        Start::Follow(sub)
    };
    Handover { format, start, guard }
}

/// Serves a viewer on the connection its answer went out on. `read`: what hyper had read past
/// the request (a WebSocket client may send its first frames at once; over TLS, what rustls
/// decrypted past it is still in the connection, and read first).
pub(crate) async fn begin(
    viewers: Arc<Viewers>,
    mut stream: Conn,
    read: Bytes,
    handover: Handover,
) {
    let ctx = &viewers.ctx;
    let Handover { format, start, guard } = handover;
    // As for TCP viewers: a parked socket is out of tokio's reactor, and keepalive lets the
    // kernel find a peer that vanished without a word.
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(60))
        .with_interval(Duration::from_secs(10));
    let _ = socket2::SockRef::from(stream.tcp()).set_tcp_keepalive(&keepalive);
    // Over TLS, the answer's end may still be in rustls' buffer: it goes before anything else,
    // even if no event comes for a while.
    let _ = write_all(&mut stream, &[], ctx.write_timeout).await;
    match start {
        Start::Follow(sub) => {
            tracing::debug!(match_id = %sub.match_id(), ?format, "viewer joined");
            let input =
                if format == Format::Ws { BytesMut::from(&read[..]) } else { BytesMut::new() };
            viewers.run(Following::joined(stream, sub, guard, format, input)).await;
        }
        Start::Refuse(bye) => {
            if let Some(frame) = goodbye(format, &bye) {
                let _ = write_all(&mut stream, &[frame], ctx.write_timeout).await;
            }
            close(stream.finish(), guard).await;
        }
    }
}
