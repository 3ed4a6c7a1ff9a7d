//! The HTTP listener: hyper serves each connection (HTTP/1.1, keep-alive) with the API router,
//! and hands a connection over to the viewer transports once a WebSocket or SSE answer is out
//! (`transport::web`): the connection then leaves hyper, and its socket is a viewer's like any
//! TCP viewer's, parked at the live edge. Everything else about the requests is `api`'s.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_service::Service;

use crate::api::{self, AppState};
use crate::transport::tcp::accept_next;
use crate::transport::web::{self, Takeover};

/// A client has this long to send a request's headers (on a new connection, or the next
/// request of a kept-alive one), so that idle sockets do not hold descriptors.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves HTTP until `stop`, then lets requests in flight finish and returns once every
/// connection is done (viewers taken over are the viewer transports' by then).
pub async fn serve(listener: TcpListener, app: Router, state: AppState, stop: CancellationToken) {
    let conns = TaskTracker::new();
    let metrics = state.viewers.ports.metrics.clone();
    while let Some((stream, _peer)) = accept_next(&listener, &metrics, &stop, "http").await {
        let _ = stream.set_nodelay(true);
        conns.spawn(connection(stream, app.clone(), state.clone(), stop.clone()));
    }
    drop(listener);
    conns.close();
    conns.wait().await;
}

/// One connection: requests until the client or hyper ends it, or a handler takes it over.
async fn connection(stream: TcpStream, app: Router, state: AppState, stop: CancellationToken) {
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
            let (mut app, state) = (app.clone(), state.clone());
            Box::pin(async move {
                // The read API's plainest requests skip the router (see `api::read`).
                if let Some(answer) = api::read::answer(&state, &req).await {
                    return Ok(answer);
                }
                app.call(req).await
            })
        })
    };
    let mut conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service);
    // Not shut down by hyper when done: the socket may be a viewer's from now on. Once the node
    // stops, the request in flight finishes and a kept-alive connection ends.
    let mut stopping = std::pin::pin!(stop.cancelled());
    let mut graceful = false;
    let done = poll_fn(|cx| {
        if !graceful && stopping.as_mut().poll(cx).is_ready() {
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
    let mut stream = parts.io.into_inner();
    match takeover.take() {
        Some(handover) => {
            viewers.tracker.clone().spawn(web::begin(viewers, stream, parts.read_buf, handover));
        }
        None => {
            let _ = stream.shutdown().await;
        }
    }
}
