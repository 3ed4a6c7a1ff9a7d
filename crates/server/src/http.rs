//! The HTTP listener: the read API's plainest keep-alive `GET`s are answered on the fast lane
//! (`lane.rs`) until a request is anything else; hyper serves the rest of the connection
//! (HTTP/1.1, keep-alive) with the API router, and hands a connection over to the viewer
//! transports once a WebSocket or SSE answer is out (`transport::web`): the connection then
//! leaves hyper, and its socket is a viewer's like any TCP viewer's, parked at the live edge.
//! Everything else about the requests is `api`'s.

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
/// request of a kept-alive one), so that idle sockets do not hold descriptors; on the fast lane,
/// between one and two of it (`lane::serve`), and as long to take an answer.
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
    let _watching = poll_fn(|cx| Poll::Ready(stop.watch(cx.waker()))).await;
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
                // Hyper read its buffer from the lane's bytes first: it holds the earlier ones.
                false => [parts.read_buf, unread].concat().into(),
            };
            viewers.tracker.clone().spawn(web::begin(viewers, stream, read, handover));
        }
        None => {
            let _ = stream.shutdown().await;
        }
    }
}

/// The node's stop as its HTTP connections see it: each connection's task leaves its waker
/// here once, then reads a flag whenever it is polled. Awaiting a `CancellationToken` took two
/// locks shared by every connection per request (`bench/http` saw them); this lock is taken
/// twice per connection, when it opens and when it closes.
#[derive(Default)]
pub struct Stopping {
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
    pub fn stopped(&self) -> bool {
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
