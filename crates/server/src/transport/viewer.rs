//! A viewer following its match, whatever its transport: the task that writes what the hub hands
//! out (joining, catching up, a full socket), the hand-over to a parking shard at the live edge,
//! what the viewer sends (ignored for TCP and SSE; pings and closes for WebSocket, each frame
//! whole within `--ws-frame-timeout`) and its goodbye in its format. Each transport's handshake
//! (`tcp.rs`, `web.rs`) ends in [`follow`].

use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rand::Rng;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::budget::Budget;
use crate::config::Config;
use crate::hub::{Format, Hub, JoinError, Next, Snapshot, Subscription};
use crate::ingest::now_ms;
use crate::ingest::Ingest;
use crate::model::{MatchId, Seq};
use crate::telemetry::Limit;
use crate::transport::close::close;
use crate::transport::park::{NotParked, Parking};
use crate::transport::write::{cut_mid_frame, write_all, MAX_BATCH};
use crate::transport::{PortGuard, ViewerPorts};
use crate::wire::ws::{self, ClientFrame};
use crate::wire::{sse, v2, Bye, ByeReason};

/// What every viewer connection of a node shares.
pub struct ViewerContext {
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
    pub retry_after_ms: u64,
    /// How often an idle SSE viewer gets a `: ping` comment (SPEC 5: at least every 15 s); a
    /// WebSocket viewer gets a ping every other period (SPEC 5: at most every 30 s).
    pub keepalive: Duration,
    /// On shutdown, goodbyes are spread over this long.
    pub drain_window: Duration,
    /// When the drain began (set by the first to see the shutdown).
    drain_start: std::sync::OnceLock<tokio::time::Instant>,
    pub(crate) parking: Parking,
    /// Reads an ended match that left memory back from the store when a viewer asks for it.
    ingest: Option<Arc<Ingest>>,
}

impl ViewerContext {
    pub fn new(
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
            retry_after_ms: config.retry_after_ms,
            keepalive: config.keepalive,
            drain_window: config.drain_window,
            drain_start: std::sync::OnceLock::new(),
            parking: Parking::default(),
            ingest: None,
        }
    }

    /// Viewers of an ended match that left memory get it read back (SPEC 10).
    pub fn with_ingest(mut self, ingest: Arc<Ingest>) -> ViewerContext {
        self.ingest = Some(ingest);
        self
    }

    /// Joins match `id` for a viewer: brings it into memory first if it is in the store (an
    /// ended match that left memory, or, with other nodes, one created elsewhere that this node
    /// has not heard of yet: SPEC 7, created everywhere), waits (with other nodes) for what the
    /// viewer may have seen elsewhere, and joins. A match that left memory again in between is
    /// read back once more. A store that cannot be read is logged; the viewer is then told
    /// what the hub knows.
    pub async fn join(
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
    pub fn bye(&self, reason: ByeReason, format: Format) -> Bye {
        let mut bye = Bye::new(reason);
        if reason == ByeReason::Shutdown {
            let base = self.retry_after_ms;
            let spread = match self.drain_window.as_millis() as u64 {
                0 => base,
                window => window,
            };
            bye.retry_after_ms = Some(rand::rng().random_range(base..=base.saturating_add(spread)));
            bye.try_addr = self.ports.other_node().and_then(|o| match format {
                Format::Ws | Format::Sse => o.web_addr_string(),
                Format::V1 | Format::V2 => Some(o.addr_string()),
            });
        }
        bye
    }

    /// When the drain began: the first caller after the shutdown fixes it.
    pub fn drain_start(&self) -> tokio::time::Instant {
        *self.drain_start.get_or_init(tokio::time::Instant::now)
    }

    /// Once the node stops: waits until a moment drawn at random within the drain window (a
    /// viewer in a task says goodbye then; parked ones are spread by their shard).
    async fn goodbye_time(&self) {
        self.shutdown.cancelled().await;
        let at = self.drain_start() + self.drain_window.mul_f64(rand::rng().random::<f64>());
        tokio::time::sleep_until(at).await;
    }
}

/// The goodbye in `format` (v1 has none: the original just closes).
pub fn goodbye(format: Format, bye: &Bye) -> Option<Bytes> {
    match format {
        Format::V1 => None,
        Format::V2 => Some(v2::bye_frame(bye)),
        Format::Ws => Some(ws::bye(bye)),
        Format::Sse => Some(sse::bye(bye)),
    }
}

/// The keepalive in `format` after `quiet` keepalive periods without traffic, if one is due:
/// SSE every period, WebSocket every other one, TCP never.
pub fn keepalive(format: Format, quiet: u32) -> Option<Bytes> {
    match format {
        Format::V1 | Format::V2 => None,
        Format::Ws => quiet.is_multiple_of(2).then(ws::ping),
        Format::Sse => Some(sse::ping()),
    }
}

/// How a stretch of following a match in a task ended.
enum Outcome {
    /// Say goodbye for this reason and close.
    Bye(ByeReason),
    /// The viewer went away: nobody to tell.
    Gone,
    /// Caught up with the live edge: the viewer can be parked.
    AtHead,
    /// A WebSocket client closed, or broke the protocol: answer with a close frame of this
    /// code, and close.
    Close(u16),
    /// Too slow, and its stream was cut in the middle of a frame: nothing can follow (a goodbye
    /// would read as the rest of that frame), so close.
    Cut,
    /// A WebSocket client sent part of a frame and not the rest within `ws_frame_timeout`.
    FrameTimeout,
}

/// What a viewer sent that is not answered yet: for a WebSocket client, the start of a frame
/// and when the rest must have come (SPEC 10); empty, and without a deadline, for the others.
/// Only a viewer holding part of a frame has a deadline, and only then is a timer armed for it.
struct Input {
    bytes: BytesMut,
    whole_by: Option<Instant>,
}

/// Follows a match in this task: first writes `rest` (what a shard could not), then whatever the
/// subscription hands out, parking the viewer whenever it reaches the live edge. `input`: what
/// the viewer has sent and is still to be read (a WebSocket client's first frames).
pub async fn follow(
    ctx: &Arc<ViewerContext>,
    mut stream: TcpStream,
    mut sub: Subscription,
    mut guard: PortGuard,
    format: Format,
    rest: Vec<Bytes>,
    input: BytesMut,
) {
    let mut input = Input { bytes: input, whole_by: None };
    let mut outcome = match write_all(&stream, &rest, ctx.write_timeout).await {
        Ok(()) => None,
        // `rest` begins with the end of a frame: stopping anywhere in it is mid-frame.
        Err(e) if e.kind() == io::ErrorKind::TimedOut => Some(Outcome::Cut),
        Err(_) => Some(Outcome::Gone),
    };
    drop(rest);
    if outcome.is_none() && !input.bytes.is_empty() {
        outcome = answer_input(ctx, &stream, format, &mut input).await.err();
    }
    let mut may_park = true;
    loop {
        let reason = match outcome.take() {
            Some(o) => o,
            None => stream_to_viewer(ctx, &stream, &mut sub, may_park, format, &mut input).await,
        };
        match reason {
            Outcome::AtHead => match ctx.parking.park(ctx, sub, stream, guard, format) {
                Ok(()) => return,
                // Not parked (an event slipped in, the match ended, the node is stopping):
                // wait for what comes next in this task before trying again.
                Err(NotParked(s, st, g)) => {
                    (sub, stream, guard) = (s, st, g);
                    may_park = false;
                }
            },
            Outcome::Gone => return,
            Outcome::Cut => {
                guard.leaving(ByeReason::TooSlow);
                close(stream, guard).await;
                return;
            }
            Outcome::Close(code) => {
                let _ = write_all(&stream, &[ws::close(code)], Duration::from_secs(1)).await;
                close(stream, guard).await;
                return;
            }
            Outcome::FrameTimeout => {
                // A cut at the protocol's level, like a frame too big (1009) or malformed
                // (1002): a close frame and no `bye` (its reasons are the match's and the
                // node's, SPEC 4), with 1008 (policy violation) and a reason that names the
                // limit, as SPEC 10 asks of every limit hit.
                ctx.ports.metrics.limit_refused(Limit::WsFrameTimeout);
                guard.leaving(ByeReason::BadRequest);
                let reason = format!(
                    "a frame must arrive whole within {} (--ws-frame-timeout)",
                    humantime::format_duration(ctx.ws_frame_timeout)
                );
                let bye = ws::close_because(1008, &reason);
                let _ = write_all(&stream, &[bye], Duration::from_secs(1)).await;
                close(stream, guard).await;
                return;
            }
            Outcome::Bye(reason) => {
                guard.leaving(reason);
                let frame = (format != Format::V1).then(|| ctx.bye(reason, format));
                if let Some(frame) = frame.and_then(|bye| goodbye(format, &bye)) {
                    // A viewer that was too slow gets a moment for its goodbye, not another
                    // full timeout.
                    let timeout = if reason == ByeReason::TooSlow {
                        Duration::from_secs(1)
                    } else {
                        ctx.write_timeout
                    };
                    let _ = write_all(&stream, &[frame], timeout).await;
                }
                close(stream, guard).await;
                return;
            }
        }
    }
}

/// Writes what the subscription hands out until the viewer reaches the live edge (it can then
/// be parked), its stream ends or the node stops (a reason for goodbye), or it goes away.
/// With `may_park` false it hands out at least one item before reporting the live edge.
async fn stream_to_viewer(
    ctx: &ViewerContext,
    stream: &TcpStream,
    sub: &mut Subscription,
    mut may_park: bool,
    format: Format,
    input: &mut Input,
) -> Outcome {
    let mut batch: Vec<Bytes> = Vec::new();
    let ping = keepalive(format, 0);
    let quiet = if format == Format::Ws { ctx.keepalive * 2 } else { ctx.keepalive };
    // While the node drains, this viewer keeps getting events until its moment comes.
    // Boxed: the timer exists only in this stretch, not in every viewer task's state.
    let mut goodbye = Box::pin(ctx.goodbye_time());
    loop {
        // Half a WebSocket frame read cannot be parked (a shard keeps no buffer): it waits here
        // for the rest, until its deadline.
        if may_park && input.bytes.is_empty() && sub.at_head() {
            return Outcome::AtHead;
        }
        may_park = true;
        let next = tokio::select! {
            biased;
            _ = &mut goodbye => return Outcome::Bye(ByeReason::Shutdown),
            _ = until(input.whole_by), if input.whole_by.is_some() => return Outcome::FrameTimeout,
            n = sub.next() => n,
            r = std::future::poll_fn(|cx| stream.poll_read_ready(cx)) => {
                if r.is_err() {
                    return Outcome::Gone;
                }
                if let Err(outcome) = answer_input(ctx, stream, format, input).await {
                    return outcome;
                }
                continue;
            }
            // Only a viewer waiting in a task between events gets here; parked ones get their
            // pings from their shard.
            _ = tokio::time::sleep(quiet), if ping.is_some() => {
                if let Some(p) = &ping {
                    if let Err(e) = write_all(stream, std::slice::from_ref(p), ctx.write_timeout).await {
                        return written_outcome(e);
                    }
                }
                continue;
            }
        };
        let mut end = None;
        match next {
            Next::Data(b) => batch.push(b),
            Next::End(reason) => return Outcome::Bye(reason),
        }
        while batch.len() < MAX_BATCH {
            match sub.try_next() {
                Some(Next::Data(b)) => batch.push(b),
                Some(Next::End(reason)) => {
                    end = Some(reason);
                    break;
                }
                None => break,
            }
        }
        let written = write_all(stream, &batch, ctx.write_timeout).await;
        if written.is_ok() {
            ctx.ports.metrics.delivered(format, batch.len() as u64);
        }
        batch.clear();
        if batch.capacity() > MAX_BATCH {
            batch = Vec::new();
        }
        if let Err(e) = written {
            return written_outcome(e);
        }
        if let Some(reason) = end {
            return Outcome::Bye(reason);
        }
    }
}

/// Waits until `at`, if it is set (the timer exists only once this is polled).
async fn until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn written_outcome(e: io::Error) -> Outcome {
    if cut_mid_frame(&e) {
        Outcome::Cut
    } else if e.kind() == io::ErrorKind::TimedOut {
        Outcome::Bye(ByeReason::TooSlow)
    } else {
        Outcome::Gone
    }
}

/// Reads what the viewer sent, without waiting. TCP and SSE viewers have nothing to say: their
/// bytes are dropped, and the end of their input ends the session (as in the original). A
/// WebSocket client's frames are read whole: pings are answered, a close or a protocol error
/// ends the viewer, messages are ignored; what is left, the start of a frame, gets a deadline.
async fn answer_input(
    ctx: &ViewerContext,
    stream: &TcpStream,
    format: Format,
    input: &mut Input,
) -> Result<(), Outcome> {
    let Input { bytes: input, whole_by } = input;
    let mut sink = [0u8; 1024];
    let mut ended = false;
    loop {
        match stream.try_read(&mut sink) {
            // A WebSocket client may send its close frame and its FIN together: the close
            // is answered first.
            Ok(0) if format == Format::Ws && !input.is_empty() => {
                ended = true;
                break;
            }
            Ok(0) => return Err(Outcome::Gone),
            Ok(n) if format == Format::Ws => input.extend_from_slice(&sink[..n]),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Err(Outcome::Gone),
        }
        if input.len() > 2 * ws::MAX_CLIENT_FRAME as usize {
            break;
        }
    }
    if format != Format::Ws || input.is_empty() {
        return Ok(());
    }
    let frames = ws::read_client(input).map_err(|e| Outcome::Close(e.code()))?;
    if input.is_empty() && input.capacity() > 0 {
        *input = BytesMut::new();
    }
    // A frame's deadline runs from its first byte: what is left began in this read when a
    // whole frame was taken before it; otherwise it is the frame that was already waiting.
    let fresh = || Some(Instant::now() + ctx.ws_frame_timeout);
    *whole_by = match (input.is_empty(), frames.is_empty()) {
        (true, _) => None,
        (false, false) => fresh(),
        (false, true) => whole_by.or_else(fresh),
    };
    for frame in frames {
        match frame {
            ClientFrame::Ping(payload) => {
                let pong = ws::pong(&payload);
                write_all(stream, &[pong], ctx.write_timeout).await.map_err(written_outcome)?;
            }
            ClientFrame::Close(code) => {
                // Echo a code the client may send back; anything else is answered with 1000.
                let code = code.filter(|c| matches!(c, 1000..=1003 | 1007..=1011 | 3000..=4999));
                return Err(Outcome::Close(code.unwrap_or(1000)));
            }
            ClientFrame::Ignored => {}
        }
    }
    if ended {
        return Err(Outcome::Gone);
    }
    Ok(())
}
