//! The TCP viewer protocols v1 and v2 (SPEC 4), over plain TCP or TLS (SPEC 11): accept loops,
//! the TLS handshake, the connect line and the refusals; a viewer that joins lives on in
//! `session.rs` like any other. Until its connect line has joined it to a match, a connection
//! is in the handshake budget (`crate::budget`), not among the port's viewers, and its TLS
//! handshake and connect line share one deadline, `--connect-timeout` from the accept.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::budget::Place;
use crate::hub::{Format, JoinError, Next, Subscription};
use crate::model::Period;
use crate::telemetry::{Limit, Metrics};
use crate::transport::close::{close, close_now};
use crate::transport::conn::Conn;
use crate::transport::context::ViewerContext;
use crate::transport::session::{Following, Viewers};
use crate::transport::write::write_all;
use crate::transport::PortGuard;
use crate::wire::{self, v1, v2, Bye, ByeReason, ConnectLine};

/// Binds a viewer listener with a large accept backlog.
pub(crate) fn bind(addr: SocketAddr, backlog: i32) -> io::Result<TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    TcpListener::from_std(socket.into())
}

/// Accepts viewers on one port until shutdown. A connection takes its place in the handshake
/// budget before it is accepted (past the budget, connections wait in the kernel's backlog:
/// that also bounds those accepted past `--max-viewers` only to be told `full`) and keeps it
/// until its handshake ends. Errors such as running out of descriptors (EMFILE) pause the loop
/// with a growing backoff instead of ending it.
pub(crate) async fn accept_loop(listener: TcpListener, index: usize, viewers: Arc<Viewers>) {
    let ctx = &viewers.ctx;
    loop {
        let slot = tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            slot = ctx.handshakes.slot() => slot,
        };
        let metrics = &ctx.ports.metrics;
        let Some((stream, peer)) = accept_next(&listener, metrics, &ctx.shutdown, "viewer").await
        else {
            return;
        };
        let Some(place) = ctx.handshakes.enter(slot, peer) else {
            too_many_from(ctx, stream, peer);
            continue;
        };
        ctx.tracker.spawn(serve(viewers.clone(), index, stream, peer, place));
    }
}

/// Tells a connection past its address's share of the handshake budget why, and closes it at
/// once: without waiting (a socket just accepted has room for one error block; a flood of them
/// must cost no task), in v1 since it has said nothing yet (SPEC 4: errors are v1 blocks). A
/// TLS port only closes it: a reason needs a handshake, which is what a flood must not cost.
fn too_many_from(ctx: &ViewerContext, stream: TcpStream, peer: SocketAddr) {
    tracing::debug!(%peer, "viewer refused: too many connections from its address");
    ctx.ports.metrics.limit_refused(Limit::HandshakesPerAddress);
    let reason = format!(
        "too many connections from {} waiting to send their connect line (at most {}, \
         --max-handshakes-per-address)",
        peer.ip().to_canonical(),
        ctx.handshakes.max_per_address()
    );
    if ctx.tls.is_none() {
        let _ = stream.try_write(&v1::error_block(&reason));
    }
    close_now(stream);
}

/// The next connection on `listener` (viewer or HTTP port, as `port` says in the log), or
/// `None` once `stop` is cancelled. Every failed accept is counted; one that concerns a single
/// connection is skipped, any other (out of descriptors, most likely) waits, from 5 ms doubling
/// up to 1 s, rather than spin.
pub(crate) async fn accept_next(
    listener: &TcpListener,
    metrics: &Metrics,
    stop: &CancellationToken,
    port: &'static str,
) -> Option<(TcpStream, SocketAddr)> {
    let mut backoff = Duration::from_millis(5);
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return None,
            a = listener.accept() => a,
        };
        let e = match accepted {
            Ok(accepted) => return Some(accepted),
            Err(e) => e,
        };
        metrics.accept_failed();
        if is_transient(&e) {
            continue;
        }
        tracing::warn!(port, error = %e, backoff_ms = backoff.as_millis() as u64, "accept failed; backing off");
        tokio::select! {
            _ = stop.cancelled() => return None,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

/// Accept errors that concern one connection only.
pub(crate) fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

/// Why a connect line did not arrive whole.
enum LineError {
    TooLong(Vec<u8>),
    TooSlow(Vec<u8>),
    Closed,
}

/// A connection whose connect line joined it to a match.
struct Joined {
    sub: Subscription,
    format: Format,
    /// A v1 viewer of a match that is not live: the original shows it one status block, then
    /// closes.
    v1_not_live: bool,
    /// It counts among the port's viewers from now on.
    guard: PortGuard,
}

/// Serves one connection: its handshake, within `place` in the handshake budget, then, once it
/// joined, the match.
async fn serve(
    viewers: Arc<Viewers>,
    index: usize,
    stream: TcpStream,
    peer: SocketAddr,
    place: Place,
) {
    let ctx = &viewers.ctx;
    let _ = stream.set_nodelay(true);
    // A parked viewer is out of the reactor; keepalive lets the kernel find peers that vanished
    // without a word, and the shard's epoll set then reports them.
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(60))
        .with_interval(Duration::from_secs(10));
    let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
    let deadline = Instant::now() + ctx.connect_timeout;
    let mut stream = match &ctx.tls {
        None => Conn::Plain(stream),
        // Boxed, like the connect line: the handshake's state lives only while it runs.
        Some(tls) => match Box::pin(accept_tls(ctx, tls, stream, peer, deadline)).await {
            Some(conn) => conn,
            None => return,
        },
    };
    // Boxed: its buffers live only while the connect line is read, not in every viewer's task.
    let Some(joined) = Box::pin(handshake(ctx, index, &mut stream, deadline)).await else {
        // Refused: its place is given back once it is closed (it holds a descriptor till then).
        close(stream.finish(), place).await;
        return;
    };
    drop(place);
    let Joined { mut sub, format, v1_not_live, mut guard } = joined;
    tracing::debug!(%peer, match_id = %sub.match_id(), ?format, "viewer joined");
    guard.joined(format);
    if v1_not_live {
        // The original's way of saying the match is not on: its status, then a close.
        guard.leaving(ByeReason::MatchOver);
        if let Next::Data(status) = sub.next().await {
            let _ = write_all(&mut stream, &[status], ctx.write_timeout).await;
        }
        close(stream.finish(), guard).await;
        return;
    }
    viewers.run(Following::joined(stream, sub, guard, format, BytesMut::new())).await;
}

/// A TLS viewer's handshake, by `deadline`; `None` (the socket closed) when it fails or is too
/// slow. Counted as a connect timeout when too slow: the connect line could not come in time.
async fn accept_tls(
    ctx: &ViewerContext,
    tls: &tokio_rustls::TlsAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
    deadline: Instant,
) -> Option<Conn> {
    match tokio::time::timeout_at(deadline, tls.accept(stream).into_fallible()).await {
        Ok(Ok(tls)) => {
            let (tcp, conn) = tls.into_inner();
            Some(Conn::tls(tcp, conn))
        }
        Ok(Err((e, tcp))) => {
            tracing::debug!(%peer, error = %e, "viewer's TLS handshake failed");
            close_now(tcp);
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "viewer's TLS handshake too slow");
            ctx.ports.metrics.limit_refused(Limit::ConnectTimeout);
            None
        }
    }
}

/// Reads and checks the connect line (by `deadline`) and joins the match; answers and returns
/// `None` when the viewer cannot be served (the caller then closes the connection).
async fn handshake(
    ctx: &ViewerContext,
    index: usize,
    stream: &mut Conn,
    deadline: Instant,
) -> Option<Joined> {
    let line = match read_connect_line(ctx, stream, deadline).await {
        Ok(line) => line,
        Err(LineError::Closed) => return None,
        Err(LineError::TooLong(partial)) => {
            let reason =
                format!("line too long (a connect line is at most {} bytes)", ctx.max_connect_line);
            let version = wire::sniff_version(&partial);
            refuse(ctx, stream, version, &reason, ByeReason::BadRequest).await;
            return None;
        }
        Err(LineError::TooSlow(partial)) => {
            ctx.ports.metrics.limit_refused(Limit::ConnectTimeout);
            // Named as the flag is written (`1500ms` would read `1 s` in whole seconds).
            let reason = format!(
                "too slow to send the connect line (it must arrive within {}, --connect-timeout)",
                humantime::format_duration(ctx.connect_timeout)
            );
            let version = wire::sniff_version(&partial);
            refuse(ctx, stream, version, &reason, ByeReason::BadRequest).await;
            return None;
        }
    };
    let (format, match_id, from) = match wire::parse_connect(&line) {
        Ok(ConnectLine::V1 { match_id, .. }) => (Format::V1, match_id, None),
        Ok(ConnectLine::V2 { match_id, from, .. }) => (Format::V2, match_id, from),
        Err(e) => {
            refuse(ctx, stream, e.version, &e.reason, ByeReason::BadRequest).await;
            return None;
        }
    };
    let version = Some(if format == Format::V1 { 1 } else { 2 });
    // A draining node takes no new viewer: like a full one, it names another. Counted among
    // the port's viewers from here, before the join, so that it has its place when it joins.
    let guard = match ctx.ports.try_enter(index) {
        Some(guard) if !ctx.shutdown.is_cancelled() => guard,
        _ => {
            refuse_full(ctx, stream, index, version).await;
            return None;
        }
    };
    match ctx.join(&match_id, format, from).await {
        Ok((sub, snapshot)) => {
            let not_live = matches!(snapshot.state.period, Period::NotStarted | Period::Ended);
            Some(Joined { sub, format, v1_not_live: format == Format::V1 && not_live, guard })
        }
        Err(JoinError::NotFound(_)) => {
            drop(guard);
            let reason = format!("unknown match {match_id}");
            refuse(ctx, stream, version, &reason, ByeReason::NotFound).await;
            None
        }
    }
}

/// Reads one line (CRLF or LF, possibly in pieces) by `deadline`.
async fn read_connect_line(
    ctx: &ViewerContext,
    stream: &mut Conn,
    deadline: Instant,
) -> Result<Vec<u8>, LineError> {
    let mut buf = Vec::with_capacity(128);
    let mut chunk = [0u8; 256];
    loop {
        let read = tokio::select! {
            _ = ctx.shutdown.cancelled() => return Err(LineError::Closed),
            r = tokio::time::timeout_at(deadline, stream.read(&mut chunk)) => r,
        };
        let n = match read {
            Err(_) => return Err(LineError::TooSlow(buf)),
            Ok(Err(_)) | Ok(Ok(0)) => return Err(LineError::Closed),
            Ok(Ok(n)) => n,
        };
        let got = &chunk[..n];
        if let Some(pos) = got.iter().position(|&b| b == b'\n') {
            buf.extend_from_slice(&got[..pos]);
            if buf.last() == Some(&b'\r') {
                buf.pop();
            }
            if buf.len() > ctx.max_connect_line {
                return Err(LineError::TooLong(buf));
            }
            return Ok(buf);
        }
        buf.extend_from_slice(got);
        if buf.len() > ctx.max_connect_line {
            return Err(LineError::TooLong(buf));
        }
    }
}

/// Answers a connect that cannot be served, in the protocol it announced (v1 when unknown).
async fn refuse(
    ctx: &ViewerContext,
    stream: &mut Conn,
    version: Option<u8>,
    reason: &str,
    bye: ByeReason,
) {
    tracing::debug!(reason, "viewer refused");
    ctx.ports.metrics.refused(bye);
    let frame = match version {
        Some(2) => v2::bye_frame(&Bye::new(bye)),
        _ => v1::error_block(reason),
    };
    let _ = write_all(stream, &[frame], ctx.write_timeout).await;
}

async fn refuse_full(ctx: &ViewerContext, stream: &mut Conn, index: usize, version: Option<u8>) {
    ctx.ports.metrics.refused(ByeReason::Full);
    // Another port of this node first, else another node's.
    let other = ctx
        .ports
        .other_with_room(index)
        .map(|p| p.addr_string())
        .or_else(|| ctx.ports.cluster.other_node().map(|o| o.addr_string()));
    let frame = match version {
        Some(2) => v2::bye_frame(&Bye {
            reason: ByeReason::Full,
            retry_after_ms: other.is_none().then_some(ctx.retry_after_ms),
            try_addr: other,
        }),
        _ => v1::error_block(&match other {
            Some(addr) => format!("server full, try {addr}"),
            None => "server full, try another server or again later".to_owned(),
        }),
    };
    let _ = write_all(stream, &[frame], ctx.write_timeout).await;
}
