//! One simulated viewer's life, as a user who knows only the protocol: find a port (checkin.rs;
//! a WebSocket or SSE viewer goes to a node's HTTP port instead), connect while holding a
//! connect slot, send the line (or the request: conn.rs), then read and check its own stream
//! until the end, acting out its path (late, leave, reconnect with `FROM` / `from`, slow) and,
//! with `--resume`, coming back the same way when its node is lost (when and how long to wait:
//! resume.rs); told `full`, it goes where the refusal says (full.rs), in every phase. The same loop drives Redis and Pusher (Sockudo) subscribers, so every system is
//! measured by one engine.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use matchstream_proto::ConnectLine;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::check::{Checker, Seen, State};
use super::checkin;
use super::conn::{self, Conn};
use super::full::{self, Refused};
use super::job::Target;
use super::pusher::{self, PusherChecker};
use super::redis::{self, RedisChecker};
use super::resume::{self, Away, LineTail, Lost};
use super::worker::Shared;

use super::{unix_ms, Cause, PathKind, Protocol, Violation};

/// Read buffer of a viewer; a slow viewer reads at most this much at a time.
const READ_BUF: usize = 16 * 1024;
const SLOW_READ: usize = 256;
/// After v1's `stop`, how long the server has to close.
const CLOSE_AFTER_STOP: Duration = Duration::from_secs(10);

/// Who a viewer is and what it will do.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Spec {
    /// Global viewer number: the user id is `sim<id>`.
    pub id: u64,
    pub path: PathKind,
    /// What it speaks (for Redis subscribers: unused).
    pub protocol: Protocol,
    /// `late`: wait this long before connecting.
    pub delay_ms: u64,
    /// `leave` / `reconnect`: act after this many events.
    pub act_after: u64,
}

/// How a viewer ended.
#[derive(Debug)]
pub(crate) enum Outcome {
    Complete,
    Failed(Violation),
    /// The run stopped it (duration limit, end of hold, interrupted); `connected`: it was
    /// connected then (a holding viewer that was is a success, one still connecting is not).
    Stopped {
        connected: bool,
    },
}

/// Runs one viewer until it ends or the run stops.
pub(crate) async fn run(sh: &Shared, spec: Spec) -> Outcome {
    let connected = AtomicBool::new(false);
    // Read the flag before `live` is dropped, which disconnects the viewer.
    let stopped = async {
        sh.stop.cancelled().await;
        connected.load(Ordering::Relaxed)
    };
    tokio::select! {
        connected = stopped => Outcome::Stopped { connected },
        outcome = live(sh, spec, &connected) => outcome,
    }
}

/// Counts a viewer as connected while it lives.
struct Connected<'a> {
    sh: &'a Shared,
    flag: &'a AtomicBool,
}

impl<'a> Connected<'a> {
    fn enter(sh: &'a Shared, flag: &'a AtomicBool, first_time: bool) -> Connected<'a> {
        if first_time {
            sh.ever_connected.fetch_add(1, Ordering::Relaxed);
        }
        flag.store(true, Ordering::Relaxed);
        let now = sh.connected.fetch_add(1, Ordering::Relaxed) + 1;
        if now == sh.viewers {
            sh.all_connected.notify_one();
        }
        Connected { sh, flag }
    }
}

impl Drop for Connected<'_> {
    fn drop(&mut self) {
        self.flag.store(false, Ordering::Relaxed);
        self.sh.connected.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn live(sh: &Shared, spec: Spec, connected: &AtomicBool) -> Outcome {
    if spec.path == PathKind::Late {
        tokio::time::sleep(Duration::from_millis(spec.delay_ms)).await;
    }
    sh.started.fetch_add(1, Ordering::Relaxed);
    let mut checker = match &sh.job.target {
        Target::Matchstream { .. } => Checker::for_protocol(spec.protocol),
        Target::Redis { .. } => Checker::Redis(RedisChecker::default()),
        Target::Pusher { .. } => Checker::Pusher(PusherChecker::default()),
    };
    let slow = spec.path == PathKind::Slow;
    let read_size = if slow { SLOW_READ } else { READ_BUF };
    let mut act_at =
        matches!(spec.path, PathKind::Leave | PathKind::Reconnect).then_some(spec.act_after.max(1));
    let (mut from, mut events, mut first_time) = (None, 0u64, true);
    let mut seen = Vec::new();
    let mut buf = vec![0u8; READ_BUF];
    // `--resume`: a connection lost without `bye match_over` is resumed, not a failure.
    let resuming = sh.job.behaviour.resume;
    let mut tail = LineTail::default();
    let mut away: Option<Away> = None;
    let mut resumed_before = false;
    // Told `full`: where to go next, and how many times in a row so far.
    let (mut refused, mut hops) = (None::<Refused>, 0u32);
    'connection: loop {
        let got = match (refused.take(), away.as_mut()) {
            (Some(r), Some(a)) => {
                a.try_addr = r.try_addr;
                reconnect(sh, &spec, from, a, &mut buf).await
            }
            (Some(r), None) => {
                tokio::time::sleep(r.wait).await;
                connect(sh, &spec, from, r.try_addr, &mut buf).await
            }
            (None, None) => connect(sh, &spec, from, None, &mut buf).await,
            (None, Some(a)) => reconnect(sh, &spec, from, a, &mut buf).await,
        };
        let (mut stream, mut n, addr) = match got {
            Ok(got) => got,
            Err(v) => return Outcome::Failed(v),
        };
        let _connected = Connected::enter(sh, connected, std::mem::replace(&mut first_time, false));
        checker.new_connection(from);
        tail.clear();
        let since = Instant::now();
        // Events replayed on a resumed connection are old: they count as deliveries, but their
        // age is the time the viewer was away, not a delivery latency. After a lost node, the
        // events accepted once the viewer is back are live again and measured.
        let mut measure = from.is_none().then_some(i64::MIN);
        let mut catching_up = None;
        if away.is_some() {
            let at = unix_ms();
            sh.resume.resumed(at, !std::mem::replace(&mut resumed_before, true), &addr);
            measure = Some(at);
            catching_up = Some(at);
        }
        let mut got_frame = false;
        let mut closing = false;
        let lost = loop {
            seen.clear();
            let state = checker.feed(&buf[..n], &mut seen);
            events += record(sh, spec.protocol, &seen, measure);
            got_frame |= !seen.is_empty();
            if let Some(at) = catching_up.filter(|_| !seen.is_empty() || state == Ok(State::Ended))
            {
                sh.resume.first_frames(&seen, at);
                catching_up = None;
            }
            match state {
                // A node that is full names another (SPEC 7): go there, in every phase.
                Err(v)
                    if hops < full::HOPS && Refused::of(&v, tail.bye_in(&buf[..n])).is_some() =>
                {
                    hops += 1;
                    refused = Refused::of(&v, tail.bye_in(&buf[..n]));
                    checker.restart();
                    continue 'connection;
                }
                Err(v) => match resuming.then(|| Lost::of_bye(&v, tail.bye_in(&buf[..n]))) {
                    Some(Some(lost)) => break lost,
                    _ => return Outcome::Failed(v),
                },
                Ok(State::Ended) if !checker.needs_close() => return Outcome::Complete,
                Ok(State::Ended) => closing = true,
                Ok(State::Open) => {}
            }
            if resuming {
                tail.push(&buf[..n]);
            }
            if got_frame {
                // Back for good: a later drop starts afresh, and so does a later `full`.
                away = None;
                hops = 0;
            }
            if act_at.is_some_and(|at| events >= at) && !closing {
                if spec.path == PathKind::Leave {
                    return Outcome::Complete;
                }
                // Reconnect: drop this connection and resume after the last seq seen.
                act_at = None;
                away = None;
                from = checker.resume_from();
                continue 'connection;
            }
            if slow {
                tokio::time::sleep(Duration::from_millis(sh.job.behaviour.slow_read_ms)).await;
            }
            let read = stream.read(&mut buf[..read_size]);
            let read = if closing {
                match tokio::time::timeout(CLOSE_AFTER_STOP, read).await {
                    Ok(r) => r,
                    Err(_) => {
                        let detail = "the server did not close after the stop block";
                        return Outcome::Failed(Violation::new(Cause::Timeout, detail));
                    }
                }
            } else {
                read.await
            };
            n = match read {
                Ok(0) => match checker.at_eof() {
                    Ok(()) => return Outcome::Complete,
                    Err(v) if resuming => break Lost::connection(v),
                    Err(v) => return Outcome::Failed(v),
                },
                Ok(n) => n,
                Err(e) => {
                    let v = Violation::new(Cause::of_io(&e), e.to_string());
                    if resuming {
                        break Lost::connection(v);
                    }
                    return Outcome::Failed(v);
                }
            };
        };
        // The node is gone (or going away): come back after the last seq seen. A connection
        // that was not back for good continues the attempt it came from.
        sh.resume.dropped();
        let before = away.take().filter(|_| !resume::stable(since, got_frame));
        away = Some(Away::after(lost, before));
        from = checker.resume_from();
        // A checker that read `bye shutdown` holds the stream as ended; the next connection
        // starts from `from` alone, which still lets no seq through twice.
        checker.restart();
    }
}

/// Comes back after a lost connection: waits, then connects again with `FROM` (to the address
/// the `bye` named first, then wherever checkin says), waiting longer after each failed attempt
/// until the time to resume is up.
async fn reconnect(
    sh: &Shared,
    spec: &Spec,
    from: Option<u64>,
    away: &mut Away,
    buf: &mut [u8],
) -> Result<(Conn, usize, String), Violation> {
    loop {
        let wait = away.next_wait().ok_or_else(|| away.give_up())?;
        tokio::time::sleep(wait).await;
        match connect(sh, spec, from, away.try_addr.take(), buf).await {
            Ok(got) => return Ok(got),
            Err(v) => away.failed(v),
        }
    }
}

/// Counts what a chunk delivered and records the latencies of the events accepted at or after
/// `measure` (Unix ms; `None`: of none); returns the number of events.
fn record(sh: &Shared, protocol: Protocol, seen: &[Seen], measure: Option<i64>) -> u64 {
    let events = seen.iter().filter(|s| matches!(s, Seen::Event { .. })).count() as u64;
    if events == 0 {
        return 0;
    }
    let now = unix_ms();
    sh.deliveries.fetch_add(events, Ordering::Relaxed);
    sh.by_protocol[protocol as usize].deliveries.fetch_add(events, Ordering::Relaxed);
    sh.first_delivery_ms.fetch_min(now, Ordering::Relaxed);
    sh.last_delivery_ms.fetch_max(now, Ordering::Relaxed);
    if let Some(since) = measure {
        // One lock per chunk, not per event: a burst arrives in few chunks.
        let latency = &sh.by_protocol[protocol as usize].latency;
        let mut hist = latency.lock().unwrap_or_else(|p| p.into_inner());
        for s in seen {
            match s {
                Seen::Event { ts_ms, .. } if *ts_ms >= since => {
                    hist.record((now - ts_ms).max(0) as u64)
                }
                _ => {}
            }
        }
    }
    events
}

/// Source addresses a crowd on loopback is spread over: real viewers come from many addresses,
/// and from one address the kernel's search for a free local port grows with every connection
/// to the same server port (measured: 18,900 connects cost the simulator 8 s of kernel time from
/// 127.0.0.1 alone, so the simulator, not the server, set the pace).
const LOOPBACK_SOURCES: u64 = 64;

/// Opens a TCP connection; to a loopback IPv4 server, from one of `LOOPBACK_SOURCES` addresses
/// of 127.0.0.0/8 chosen by `id`, with the port picked at connect time.
async fn dial(addr: &str, id: u64) -> std::io::Result<TcpStream> {
    let target = match tokio::net::lookup_host(addr).await?.next() {
        Some(a) => a,
        None => return Err(std::io::Error::other(format!("{addr} resolves to nothing"))),
    };
    let std::net::SocketAddr::V4(v4) = target else { return TcpStream::connect(target).await };
    if !v4.ip().is_loopback() {
        return TcpStream::connect(target).await;
    }
    let socket = tokio::net::TcpSocket::new_v4()?;
    // IP_BIND_ADDRESS_NO_PORT: bind the address now, choose the port at connect, per 4-tuple.
    set_bind_address_no_port(&socket)?;
    let source = std::net::Ipv4Addr::new(127, 0, 0, 1 + (id % LOOPBACK_SOURCES) as u8);
    socket.bind(std::net::SocketAddr::from((source, 0)))?;
    socket.connect(target).await
}

/// Sets `IP_BIND_ADDRESS_NO_PORT` (Linux 4.2+; elsewhere a no-op that leaves the port search
/// to `bind`).
fn set_bind_address_no_port(socket: &tokio::net::TcpSocket) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let one: libc::c_int = 1;
        // SAFETY: a valid socket descriptor and a pointer to an int of the size passed.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = socket;
    Ok(())
}

/// Connects (holding a connect slot), sends the connect line (a WebSocket or SSE viewer: its
/// request) and waits for the first bytes, which land in `buf`. `from`: resume after this seq;
/// `via`: the address to use instead of finding one (a `bye`'s `try`: a viewer port for TCP,
/// an HTTP port for WebSocket and SSE). Also
/// returns the address it connected to.
async fn connect(
    sh: &Shared,
    spec: &Spec,
    from: Option<u64>,
    via: Option<String>,
    buf: &mut [u8],
) -> Result<(Conn, usize, String), Violation> {
    let id = spec.id;
    let _slot = sh
        .slots
        .acquire()
        .await
        .map_err(|_| Violation::new(Cause::Io, "the connect slots were closed"))?;
    sh.first_connect_start_ms.fetch_min(unix_ms(), Ordering::Relaxed);
    let timeout = Duration::from_millis(sh.job.behaviour.connect_timeout_ms);
    let web = !spec.protocol.is_tcp() && matches!(sh.job.target, Target::Matchstream { .. });
    // A WebSocket or SSE viewer given an address goes to that HTTP port (a `full`'s `try`).
    let via_web = via.clone().filter(|_| web);
    let (addr, line) = match &sh.job.target {
        // The nodes' HTTP ports: the request is written once one answers (`dial_web`).
        Target::Matchstream { .. } if web => match &via_web {
            Some(addr) => (addr.clone(), Vec::new()),
            None => (sh.web[(id % sh.web.len().max(1) as u64) as usize].clone(), Vec::new()),
        },
        Target::Matchstream { match_id, viewers, .. } => {
            let addr = match via {
                Some(addr) => addr,
                None => checkin::viewer_addr(sh, id, viewers, timeout).await?,
            };
            let user = format!("sim{id}").into_bytes();
            let match_id = match_id.clone();
            let line = match spec.protocol {
                Protocol::V1 => ConnectLine::V1 { user, match_id },
                _ => ConnectLine::V2 { user, match_id, from },
            };
            (addr, line.encode())
        }
        Target::Redis { addr, channel } => (addr.clone(), redis::subscribe_command(channel)),
        // The subscription is sent once the server says the connection is established.
        Target::Pusher { addr, .. } => (addr.clone(), Vec::new()),
    };
    let started = Instant::now();
    let attempt = async {
        let io = |e: std::io::Error| Violation::new(Cause::of_io(&e), format!("{addr}: {e}"));
        let (mut conn, at) = match &sh.job.target {
            Target::Matchstream { match_id, .. } if web => {
                let (stream, at) = match &via_web {
                    Some(addr) => {
                        let stream = dial(addr, id).await.map_err(io)?;
                        stream.set_nodelay(true).map_err(io)?;
                        (stream, addr.clone())
                    }
                    None => dial_web(sh, id).await?,
                };
                let stream = conn::secure(sh.tls.as_ref(), &at, stream)
                    .await
                    .map_err(|e| Violation::new(Cause::of_io(&e), format!("{at}: {e}")))?;
                (conn::open_web(stream, &at, spec.protocol, match_id, from).await?, at)
            }
            // Connected once subscribed: the confirmation is the first bytes.
            Target::Pusher { key, channel, .. } => {
                let stream = dial(&addr, id).await.map_err(io)?;
                stream.set_nodelay(true).map_err(io)?;
                let (conn, n) = pusher::open(stream, &addr, key, channel, buf).await?;
                return Ok((conn, n, addr.clone()));
            }
            _ => {
                let stream = dial(&addr, id).await.map_err(io)?;
                stream.set_nodelay(true).map_err(io)?;
                let mut stream = conn::secure(sh.tls.as_ref(), &addr, stream).await.map_err(io)?;
                stream.write_all(&line).await.map_err(io)?;
                (Conn::Tcp(stream), addr.clone())
            }
        };
        // A viewer resuming at the live edge may rightly hear nothing until the next event:
        // only a first connection waits for its first byte here.
        let n = if from.is_some() { 0 } else { conn.read(buf).await.map_err(io)? };
        if n == 0 && from.is_none() {
            return Err(Violation::new(Cause::ClosedEarly, format!("{addr} closed at once")));
        }
        Ok((conn, n, at))
    };
    let (conn, n, at) = match tokio::time::timeout(timeout, attempt).await {
        Err(_) => {
            let detail = format!("no first byte from {addr} within {} ms", timeout.as_millis());
            return Err(Violation::new(Cause::Timeout, detail));
        }
        Ok(got) => got?,
    };
    let took = started.elapsed();
    sh.connects.fetch_add(1, Ordering::Relaxed);
    sh.last_connect_done_ms.fetch_max(unix_ms(), Ordering::Relaxed);
    sh.connect_time.lock().unwrap_or_else(|p| p.into_inner()).record(took.as_micros() as u64);
    Ok((conn, n, at))
}

/// Dials the nodes' HTTP ports for a WebSocket or SSE viewer: viewer `id` starts at node
/// `id % nodes`, so that a crowd spreads, and moves on from one that refuses.
async fn dial_web(sh: &Shared, id: u64) -> Result<(TcpStream, String), Violation> {
    let mut last = None;
    for i in 0..sh.web.len() as u64 {
        let addr = &sh.web[((id + i) % sh.web.len() as u64) as usize];
        match dial(addr, id).await.and_then(|s| s.set_nodelay(true).map(|()| s)) {
            Ok(stream) => return Ok((stream, addr.clone())),
            Err(e) => last = Some(Violation::new(Cause::of_io(&e), format!("{addr}: {e}"))),
        }
    }
    Err(last.unwrap_or_else(|| Violation::new(Cause::Io, "no --server to connect to")))
}
