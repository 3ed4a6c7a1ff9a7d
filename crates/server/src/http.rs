//! The HTTP listeners, public and admin: one front door each. Every connection is served by
//! hyper (HTTP/1.1, keep-alive) with its router, whose tower stack holds the request rules
//! (auth before body, body size and time, CORS); this file holds what a request cannot see: the
//! connection budget (a permit taken before `accept`, a cap per client address after it), the
//! head, idle and write deadlines (`timed.rs`), the node's stop, and the hand-over of a
//! connection to the viewer transports once a WebSocket or SSE answer is out
//! (`transport::web`): the connection then leaves hyper and the HTTP budget, and its socket is
//! a viewer's like any TCP viewer's. With a certificate (SPEC 11) every connection first makes
//! its TLS handshake, within the head timeout of its accept, and hyper speaks over TLS (`io.rs`).

use std::collections::HashMap;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::time::Duration;

use axum::Router;
use futures_util::FutureExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use metrics::Gauge;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_service::Service;

use crate::budget::{Budget, Place};
use crate::config::Config;
use crate::locks::lock;
use crate::telemetry::{Limit, Metrics};
use crate::transport::close::close_now;
use crate::transport::session::Viewers;
use crate::transport::tcp::accept_next;
use crate::transport::web::{self, Takeover};

mod io;
mod timed;

use io::Io;
use timed::{Activity, Timed};

/// The limits of one HTTP listener (SPEC 10), from the node's configuration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// A request's head must arrive within this long of its first byte (or of the accept).
    pub head_timeout: Duration,
    /// A kept-alive connection with no request for this long is closed.
    pub idle_timeout: Duration,
    /// A write that takes nothing for this long ends the connection (a client that never
    /// reads its answers).
    pub write_timeout: Duration,
    /// Largest request head (hyper's read buffer; it answers `431` past it).
    pub max_head: usize,
    /// Connections at once; past it, new ones wait in the kernel's backlog.
    pub max_connections: usize,
    /// Connections at once from one client address; past it, new ones are told why and closed.
    pub max_per_address: usize,
}

impl Limits {
    pub(crate) fn of(config: &Config) -> Limits {
        Limits {
            head_timeout: config.http_head_timeout,
            idle_timeout: config.http_idle_timeout,
            write_timeout: config.http_idle_timeout,
            max_head: config.http_max_head,
            max_connections: config.http_max_connections,
            max_per_address: config.http_max_per_address,
        }
    }
}

/// One HTTP listener's service: its router, its limits, and, on the public port, the viewers a
/// connection may be handed over to (the admin port has none).
#[derive(Clone)]
pub(crate) struct Front {
    pub app: Router,
    pub limits: Limits,
    pub viewers: Option<Arc<Viewers>>,
    pub metrics: Arc<Metrics>,
    /// `http` or `admin`, for the log.
    pub name: &'static str,
    /// HTTPS with this; `None`: plain HTTP.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
}

/// Serves HTTP until `stop`, then lets requests in flight finish and returns once every
/// connection is done (viewers taken over are the viewer transports' by then).
pub(crate) async fn serve(listener: TcpListener, front: Front, stop: CancellationToken) {
    let conns = TaskTracker::new();
    let stopping = Arc::new(Stopping::default());
    let limits = front.limits;
    let budget = Budget::new(limits.max_connections, limits.max_per_address, Gauge::noop());
    loop {
        // The permit first: past the cap, connections wait in the kernel's backlog rather than
        // holding a descriptor and a task each.
        let permit = tokio::select! {
            _ = stop.cancelled() => break,
            permit = budget.slot() => permit,
        };
        let Some((stream, peer)) = accept_next(&listener, &front.metrics, &stop, front.name).await
        else {
            break;
        };
        let Some(place) = budget.enter(permit, peer) else {
            front.metrics.limit_refused(Limit::HttpPerAddress);
            refuse(stream, peer, limits.max_per_address, front.name, front.tls.is_none());
            continue;
        };
        let _ = stream.set_nodelay(true);
        conns.spawn(connection(stream, place, front.clone(), stopping.clone()));
    }
    stopping.stop();
    drop(listener);
    conns.close();
    conns.wait().await;
}

/// Tells a client past its address's share why, and closes: without reading its request (it
/// has one in flight, most likely), with nothing held. Over TLS it is only closed: the answer
/// would need a handshake, which is what this refusal must not cost.
fn refuse(stream: TcpStream, peer: SocketAddr, max: usize, port: &'static str, plain: bool) {
    tracing::debug!(%peer, port, "connection refused: too many from its address");
    if !plain {
        close_now(stream);
        return;
    }
    let body = format!(
        "{{\"error\":\"too many connections from {}: at most {max} at once \
         (--http-max-per-address); close one and try again\"}}",
        peer.ip()
    );
    let answer = format!(
        "HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.try_write(answer.as_bytes());
    // Its request, unread, would turn the close into a reset that can discard the answer.
    close_now(stream);
}

/// One connection: requests until the client or hyper ends it, a deadline passes, or a handler
/// takes it over.
async fn connection(stream: TcpStream, place: Place, front: Front, stop: Arc<Stopping>) {
    let _watching = poll_fn(|cx| Poll::Ready(stop.watch(cx.waker()))).await;
    let accepted = Instant::now();
    let deadline = front.metrics.limit_counter(Limit::HttpDeadline);
    let io = match &front.tls {
        None => Io::Plain(stream),
        Some(tls) => {
            let handshake = tls.accept(stream).into_fallible();
            match tokio::time::timeout_at(accepted + front.limits.head_timeout, handshake).await {
                Ok(Ok(tls)) => Io::Tls(Box::new(tls)),
                Ok(Err((e, stream))) => {
                    tracing::debug!(error = %e, port = front.name, "TLS handshake failed");
                    close_now(stream);
                    return;
                }
                Err(_) => {
                    tracing::debug!(port = front.name, "TLS handshake too slow");
                    deadline.increment(1);
                    return;
                }
            }
        }
    };
    let activity = Arc::new(Activity::default());
    let service = {
        let (activity, app) = (activity.clone(), front.app.clone());
        hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            activity.busy();
            let activity = activity.clone();
            app.clone().call(req).map(move |answer| {
                activity.idle();
                answer
            })
        })
    };
    let timed = Timed::new(io, accepted, activity, front.limits, deadline);
    let mut conn = hyper::server::conn::http1::Builder::new()
        // The head's own deadline is `Timed`'s: hyper's would also end an idle kept-alive
        // connection after the head's 10 s, not the idle 60 s.
        .max_buf_size(front.limits.max_head.max(8192))
        .serve_connection(TokioIo::new(timed), service);
    // Not shut down by hyper when done: the socket may be a viewer's from now on. Once the node
    // stops, the request in flight finishes and a kept-alive connection ends.
    let mut graceful = false;
    let serving = poll_fn(|cx| {
        if !graceful && stop.stopped() {
            graceful = true;
            Pin::new(&mut conn).graceful_shutdown();
        }
        conn.poll_without_shutdown(cx)
    });
    // The router decides whether a request becomes a viewer (its WebSocket and SSE handlers
    // take the connection, through `Takeover::current`); every request of the public port can.
    let takeover = front.viewers.is_some().then(Takeover::default);
    let done = match &takeover {
        Some(takeover) => takeover.scope(serving).await,
        None => serving.await,
    };
    if let Err(e) = done {
        tracing::debug!(error = %e, port = front.name, "HTTP connection ended");
        return;
    }
    let parts = conn.into_parts();
    let mut stream = parts.io.into_inner().into_inner();
    match (takeover.and_then(|t| t.take()), front.viewers) {
        (Some(handover), Some(viewers)) => {
            // A viewer now: it counts against --max-viewers, no longer the HTTP budget.
            drop(place);
            let tracker = viewers.ctx.tracker.clone();
            let conn = stream.into_conn();
            tracker.spawn(web::begin(viewers, conn, parts.read_buf, handover));
        }
        _ => {
            let _ = stream.shutdown().await;
        }
    }
}

/// Serves one connection on any byte stream with `app` and no hand-over: the same router and
/// stack as on a socket, without the socket's deadlines. For the fuzz target of the whole
/// router (`fuzz/`), which feeds it an in-memory stream.
pub(crate) async fn serve_io<IO>(app: Router, limits: Limits, io: IO)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service =
        hyper::service::service_fn(move |req: hyper::Request<Incoming>| app.clone().call(req));
    let connection = hyper::server::conn::http1::Builder::new()
        .max_buf_size(limits.max_head.max(8192))
        // A client that sends its requests and then closes its side still gets every answer.
        .half_close(true)
        .serve_connection(TokioIo::new(io), service);
    let served = Takeover::default().scope(connection).await;
    if let Err(e) = served {
        tracing::debug!(error = %e, "in-memory HTTP connection ended");
    }
}

/// The node's stop as its HTTP connections see it: each connection's task leaves its waker
/// here once, then reads a flag whenever it is polled. Awaiting a `CancellationToken` took two
/// locks shared by every connection per request (`bench/http` saw them); this lock is taken
/// twice per connection, when it opens and when it closes.
#[derive(Default)]
pub(crate) struct Stopping {
    stopped: AtomicBool,
    watchers: Mutex<Watchers>,
}

#[derive(Default)]
struct Watchers {
    next: u64,
    wakers: HashMap<u64, Waker>,
}

impl Stopping {
    /// Wakes `waker` when the node stops, until the guard is dropped. It must be the waker of
    /// the task that reads [`Stopping::stopped`] (a task's waker serves for the task's life):
    /// a future polled in another task would not be woken.
    fn watch(&self, waker: &Waker) -> Watching<'_> {
        let mut watchers = lock(&self.watchers);
        let id = watchers.next;
        watchers.next += 1;
        watchers.wakers.insert(id, waker.clone());
        Watching { stopping: self, id }
    }

    /// Has the node begun to stop?
    pub(crate) fn stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        let wakers = std::mem::take(&mut lock(&self.watchers).wakers);
        wakers.into_values().for_each(Waker::wake);
    }
}

/// A connection watching for the node's stop; it stops watching when dropped.
struct Watching<'a> {
    stopping: &'a Stopping,
    id: u64,
}

impl Drop for Watching<'_> {
    fn drop(&mut self) {
        lock(&self.stopping.watchers).wakers.remove(&self.id);
    }
}
