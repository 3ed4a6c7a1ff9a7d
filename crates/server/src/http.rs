//! The HTTP listener: the read API's plainest keep-alive `GET`s are answered on the fast lane
//! (`lane.rs`) until a request is anything else; hyper serves the rest of the connection
//! (HTTP/1.1, keep-alive) with the API router, and hands a connection over to the viewer transports once a WebSocket or SSE answer is out
//! (`transport::web`): the connection then leaves hyper, and its socket is a viewer's like any
//! TCP viewer's, parked at the live edge. Everything else about the requests is `api`'s.

use std::collections::HashMap;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_service::Service;

use crate::api::AppState;
use crate::locks::lock;
use crate::transport::tcp::accept_next;
use crate::transport::web::{self, Takeover};

mod lane;

/// A client has this long to send a request's headers (on a new connection, or the next
/// request of a kept-alive one), so that idle sockets do not hold descriptors.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves HTTP until `stop`, then lets requests in flight finish and returns once every
/// connection is done (viewers taken over are the viewer transports' by then).
pub async fn serve(listener: TcpListener, app: Router, state: AppState, stop: CancellationToken) {
    let conns = TaskTracker::new();
    let metrics = state.viewers.ports.metrics.clone();
    let stopping = Arc::new(Stopping::default());
    while let Some((stream, _peer)) = accept_next(&listener, &metrics, &stop, "http").await {
        let _ = stream.set_nodelay(true);
        conns.spawn(connection(stream, app.clone(), state.clone(), stopping.clone()));
    }
    stopping.stop();
    drop(listener);
    conns.close();
    conns.wait().await;
}

/// One connection: requests until the client or hyper ends it, or a handler takes it over.
async fn connection(mut stream: TcpStream, app: Router, state: AppState, stop: Arc<Stopping>) {
    let _waiting = poll_fn(|cx| Poll::Ready(stop.wait(cx.waker()))).await;
    let mut read = Vec::new();
    if let lane::Left::Closed =
        lane::serve(&mut stream, &mut read, &state, &stop, HEADER_TIMEOUT).await
    {
        let _ = stream.shutdown().await;
        return;
    }
    let takeover = Takeover::default();
    let viewers = state.viewers.clone();
    let service = {
        let takeover = takeover.clone();
        hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            // Only the viewers' paths may take the connection over (an extension costs an
            // allocation, which every other request is spared).
            let path = req.uri().path();
            if path.ends_with("/ws") || path.ends_with("/stream") {
                req.extensions_mut().insert(takeover.clone());
            }
            app.clone().call(req)
        })
    };
    let mut conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(lane::Prefixed::new(read.into(), stream)), service);
    // Not shut down by hyper when done: the socket may be a viewer's from now on. Once the node
    // stops, the request in flight finishes and a kept-alive connection ends.
    let mut graceful = false;
    let done = poll_fn(|cx| {
        if !graceful && stop.stopped() {
            graceful = true;
            Pin::new(&mut conn).graceful_shutdown();
        }
        conn.poll_without_shutdown(cx)
    })
    .await;
    if done.is_err() {
        return;
    }
    let parts = conn.into_parts();
    let (mut stream, unread) = parts.io.into_inner().into_parts();
    match takeover.take() {
        Some(handover) => {
            let read = match unread.is_empty() {
                true => parts.read_buf,
                false => [unread, parts.read_buf].concat().into(),
            };
            viewers.tracker.clone().spawn(web::begin(viewers, stream, read, handover));
        }
        None => {
            let _ = stream.shutdown().await;
        }
    }
}

/// The node's stop as its HTTP connections see it: each connection's task leaves its waker
/// here once, then reads a flag per request. Awaiting a `CancellationToken` per request took two
/// locks shared by every connection (`bench/http` saw them).
#[derive(Default)]
pub struct Stopping {
    stopped: AtomicBool,
    waiting: Mutex<(u64, HashMap<u64, Waker>)>,
}

impl Stopping {
    /// Wakes `waker` (a connection task's, which serves for its whole life) when the node stops,
    /// until the guard is dropped.
    fn wait(&self, waker: &Waker) -> Waiting<'_> {
        let mut waiting = lock(&self.waiting);
        let id = waiting.0;
        waiting.0 += 1;
        waiting.1.insert(id, waker.clone());
        Waiting { stopping: self, id }
    }

    /// Has the node begun to stop? (A task that waits on it has called [`Stopping::wait`].)
    pub fn stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        let wakers = std::mem::take(&mut lock(&self.waiting).1);
        wakers.into_values().for_each(Waker::wake);
    }
}

/// A connection waiting for the node's stop; it stops waiting when dropped.
struct Waiting<'a> {
    stopping: &'a Stopping,
    id: u64,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        lock(&self.stopping.waiting).1.remove(&self.id);
    }
}
