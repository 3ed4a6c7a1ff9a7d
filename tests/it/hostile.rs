//! Hostile input on the viewer ports and WebSocket (SPEC 10), over real sockets, each limit hit
//! once: connections that have not sent their connect line have a budget of their own (in total
//! and per client address) and a deadline, so silent sockets never make the node answer `full`
//! to real viewers; a WebSocket client frame must arrive whole within its timeout, whether its
//! viewer has a task of its own or is parked at the live edge.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;

use crate::metrics::{metric_is, scrape, value};
use crate::support::*;

/// Where the silent connections come from; real viewers come from [`OTHER`].
const SILENT: [u8; 4] = [127, 0, 0, 1];
const OTHER: [u8; 4] = [127, 0, 0, 2];

const HANDSHAKES: &str = "matchstream_viewer_handshakes";
const PARKED: &str = "matchstream_viewers_parked";
const TCP_V2: &str = "matchstream_viewers{transport=\"tcp_v2\"}";

/// A connection to `to` from the address `from`.
async fn connect_from(from: [u8; 4], to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.bind(SocketAddr::from((from, 0))).expect("bind the source address");
    socket.connect(to).await.expect("connect")
}

/// A connection from `from` that says nothing (yet).
async fn silent_from(from: [u8; 4], to: SocketAddr) -> Viewer {
    Viewer(matchstream_client::Viewer::from_stream(connect_from(from, to).await))
}

/// A v2 viewer of `id` from `from`: its connect line is sent.
async fn viewer_from(from: [u8; 4], to: SocketAddr, id: &str) -> Viewer {
    let mut v = silent_from(from, to).await;
    v.send(format!("VERSION:2:CONNECT:me:MATCH:{id}\r\n").as_bytes()).await;
    v
}

#[tokio::test]
async fn silent_connections_never_make_the_node_answer_full() {
    let s = TestServer::start_with(|c| {
        c.max_viewers = 20;
        c.max_handshakes_per_address = 4096;
    })
    .await;
    let id = s.started_match().await;
    let mut silent = Vec::with_capacity(2000);
    for i in 0..2000 {
        silent.push(connect_from(SILENT, s.viewers[i % 2]).await);
    }
    metric_is(&s, HANDSHAKES, 2000.0).await;
    // A port's share of --max-viewers (10 of 20 over two ports) is for viewers that joined.
    let mut watching = Vec::new();
    for _ in 0..10 {
        let mut v = viewer_from(OTHER, s.viewers[0], &id).await;
        assert_eq!(v.frame().await.expect("a frame")["kind"], "status");
        watching.push(v);
    }
    let text = scrape(&s).await;
    assert_eq!(value(&text, TCP_V2), 10.0, "the silent ones are no viewers");
    assert_eq!(value(&text, HANDSHAKES), 2000.0);
    // The 11th is told the port is full, and where there is room.
    let mut v = viewer_from(OTHER, s.viewers[0], &id).await;
    let bye = v.frame().await.expect("a frame");
    assert_eq!(bye["reason"], "full", "{bye}");
    assert_eq!(bye["try"], format!("127.0.0.1:{}", s.viewers[1].port()));
}

#[tokio::test]
async fn an_address_past_its_share_of_handshakes_is_told_why_and_closed_at_once() {
    let s = TestServer::start_with(|c| c.max_handshakes_per_address = 50).await;
    let id = s.started_match().await;
    let mut silent = Vec::new();
    for i in 0..50 {
        silent.push(connect_from(SILENT, s.viewers[i % 2]).await);
    }
    metric_is(&s, HANDSHAKES, 50.0).await;
    // The 51st from that address, on either port: the share is the node's.
    let started = Instant::now();
    let mut refused = silent_from(SILENT, s.viewers[1]).await;
    let got = String::from_utf8(refused.read_to_clean_eof().await).expect("text");
    assert_eq!(
        got,
        "ERROR: too many connections from 127.0.0.1 waiting to send their connect line \
         (at most 50, --max-handshakes-per-address)\n\r\n"
    );
    assert!(started.elapsed() < Duration::from_secs(10), "closed at once, not at a timeout");
    metric_is(&s, "matchstream_limit_refusals_total{limit=\"handshakes_per_address\"}", 1.0).await;
    // Another address is served meanwhile.
    let mut v = viewer_from(OTHER, s.viewers[1], &id).await;
    assert_eq!(v.frame().await.expect("a frame")["kind"], "status");
    let text = scrape(&s).await;
    assert_eq!((value(&text, TCP_V2), value(&text, HANDSHAKES)), (1.0, 50.0));
}

#[tokio::test]
async fn silent_connections_are_cut_by_the_connect_timeout_and_free_their_budget() {
    let s = TestServer::start_with(|c| {
        c.max_handshakes_per_address = 5;
        c.connect_timeout = Duration::from_secs(1);
    })
    .await;
    let id = s.started_match().await;
    let mut silent = Vec::new();
    for _ in 0..5 {
        silent.push(silent_from(SILENT, s.viewer()).await);
    }
    metric_is(&s, HANDSHAKES, 5.0).await;
    let mut refused = silent_from(SILENT, s.viewer()).await;
    let got = String::from_utf8(refused.read_to_clean_eof().await).expect("text");
    assert!(got.starts_with("ERROR: too many connections from 127.0.0.1"), "{got:?}");
    for v in &mut silent {
        let got = String::from_utf8(v.read_to_clean_eof().await).expect("text");
        let want = "ERROR: too slow to send the connect line \
                    (it must arrive within 1s, --connect-timeout)\n\r\n";
        assert_eq!(got, want);
    }
    drop(silent);
    metric_is(&s, HANDSHAKES, 0.0).await;
    metric_is(&s, "matchstream_limit_refusals_total{limit=\"connect_timeout\"}", 5.0).await;
    // The address's share is free again.
    let mut v = viewer_from(SILENT, s.viewer(), &id).await;
    assert_eq!(v.frame().await.expect("a frame")["kind"], "status");
}

#[tokio::test]
async fn past_the_handshake_budget_a_connection_waits_in_the_backlog_until_a_slot_frees() {
    let s = TestServer::start_with(|c| {
        c.max_handshakes = 100;
        // One viewer port: a second one's accept loop would hold a slot while it waits.
        c.viewers.truncate(1);
    })
    .await;
    let id = s.started_match().await;
    let mut silent = Vec::new();
    for _ in 0..100 {
        silent.push(connect_from(SILENT, s.viewer()).await);
    }
    metric_is(&s, HANDSHAKES, 100.0).await;
    // The kernel completes the next connection into the backlog; the node does not take it.
    let mut waiting = viewer_from(OTHER, s.viewer(), &id).await;
    let early = tokio::time::timeout(Duration::from_millis(500), waiting.0.frame()).await;
    assert!(early.is_err(), "served past the budget: {early:?}");
    let text = scrape(&s).await;
    assert_eq!((value(&text, TCP_V2), value(&text, HANDSHAKES)), (0.0, 100.0));
    // Not refused: one silent connection goes, and the waiting one is served.
    drop(silent.pop());
    assert_eq!(waiting.frame().await.expect("a frame")["kind"], "status");
    metric_is(&s, HANDSHAKES, 99.0).await;
    assert_eq!(value(&scrape(&s).await, TCP_V2), 1.0);
}

/// A masked ping frame carrying `payload`, as a client sends it.
fn ping(payload: &[u8]) -> Vec<u8> {
    let mask = [1u8, 2, 3, 4];
    let mut frame = vec![0x89, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

/// A WebSocket viewer on a raw socket, to send exactly the bytes a test wants.
struct RawWs {
    tcp: TcpStream,
    buf: Vec<u8>,
}

impl RawWs {
    /// Upgrades `/1/match/<id>/ws`, with `extra` in the same write as the request; returns
    /// once the snapshot arrived.
    async fn open(s: &TestServer, id: &str, extra: &[u8]) -> RawWs {
        let http = s.http_host();
        let mut tcp = TcpStream::connect(&http).await.expect("connect");
        let request = format!(
            "GET /1/match/{id}/ws HTTP/1.1\r\nHost: {http}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n\r\n"
        );
        tcp.write_all(&[request.as_bytes(), extra].concat()).await.expect("upgrade request");
        let mut ws = RawWs { tcp, buf: Vec::new() };
        let head = loop {
            if let Some(at) = ws.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break ws.buf.drain(..at + 4).collect::<Vec<u8>>();
            }
            assert!(ws.fill().await, "closed before the 101");
        };
        assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
        let (op, snapshot) = ws.frame().await.expect("the snapshot");
        assert_eq!(op, 0x81);
        let marker = b"\"kind\":\"status\"";
        assert!(snapshot.windows(marker.len()).any(|w| w == marker));
        ws
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.tcp.write_all(bytes).await.expect("send");
    }

    /// Reads more; false once the server closed.
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(PATIENCE, self.tcp.read(&mut chunk))
            .await
            .expect("data in time")
            .expect("read");
        self.buf.extend_from_slice(&chunk[..n]);
        n > 0
    }

    /// The next frame the server sends (its first byte, its payload), or `None` once it closed.
    async fn frame(&mut self) -> Option<(u8, Vec<u8>)> {
        loop {
            let b = &self.buf;
            let header = match b.get(1).map(|l| l & 0x7F) {
                Some(126) if b.len() >= 4 => Some((4, u16::from_be_bytes([b[2], b[3]]) as usize)),
                Some(127) if b.len() >= 10 => {
                    Some((10, u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize))
                }
                Some(n) if n < 126 => Some((2, n as usize)),
                _ => None,
            };
            if let Some((at, len)) = header.filter(|(at, len)| b.len() >= at + len) {
                let frame: Vec<u8> = self.buf.drain(..at + len).collect();
                return Some((frame[0], frame[at..].to_vec()));
            }
            if !self.fill().await {
                assert!(self.buf.is_empty(), "closed in the middle of a frame");
                return None;
            }
        }
    }

    /// The close that ends a viewer holding half a frame, `timeout` or more after `since`, and
    /// then the end of the connection.
    async fn cut_for_its_half_frame(&mut self, timeout: Duration, since: Instant) {
        let (op, payload) = self.frame().await.expect("a close frame");
        assert!(since.elapsed() >= timeout, "cut after {:?}, before {timeout:?}", since.elapsed());
        assert_eq!(op, 0x88, "a close frame");
        assert_eq!(payload[..2], 1008u16.to_be_bytes(), "policy violation");
        let reason = String::from_utf8_lossy(&payload[2..]);
        assert_eq!(reason, "a frame must arrive whole within 1s (--ws-frame-timeout)");
        assert_eq!(self.frame().await, None, "then the end of the connection");
    }
}

#[tokio::test]
async fn ws_half_a_frame_is_closed_with_1008_after_the_frame_timeout_in_a_task_and_parked() {
    let timeout = Duration::from_secs(1);
    let s = TestServer::start_with(|c| c.ws_frame_timeout = timeout).await;
    let id = s.started_match().await;
    let ping = ping(b"hello");
    let half = &ping[..3];

    // Sent with the upgrade request: the viewer holds it from its first moment, in its task.
    let sent = Instant::now();
    let mut in_task = RawWs::open(&s, &id, half).await;
    let text = scrape(&s).await;
    assert_eq!(value(&text, "matchstream_viewers{transport=\"ws\"}"), 1.0);
    assert_eq!(value(&text, PARKED), 0.0, "a viewer holding half a frame is never parked");
    in_task.cut_for_its_half_frame(timeout, sent).await;
    drop(in_task);

    // Sent to a viewer parked at the live edge: its shard hands it to a task, which holds it.
    let mut parked = RawWs::open(&s, &id, &[]).await;
    metric_is(&s, PARKED, 1.0).await;
    let sent = Instant::now();
    parked.send(half).await;
    metric_is(&s, PARKED, 0.0).await;
    parked.cut_for_its_half_frame(timeout, sent).await;
    drop(parked);

    metric_is(&s, "matchstream_limit_refusals_total{limit=\"ws_frame_timeout\"}", 2.0).await;
    metric_is(&s, "matchstream_viewers{transport=\"ws\"}", 0.0).await;
}

#[tokio::test]
async fn ws_a_ping_sent_slowly_in_two_halves_within_the_frame_timeout_is_answered() {
    let timeout = Duration::from_secs(2);
    let s = TestServer::start_with(|c| c.ws_frame_timeout = timeout).await;
    let id = s.started_match().await;
    let mut ws = RawWs::open(&s, &id, &[]).await;
    metric_is(&s, PARKED, 1.0).await;
    let ping = ping(b"hello");
    ws.send(&ping[..3]).await;
    // Out of its shard: a task holds the first half.
    metric_is(&s, PARKED, 0.0).await;
    // The client's own slowness (the node has nothing to do meanwhile): the rest comes well
    // after the first half, within the timeout.
    tokio::time::sleep(timeout / 2).await;
    ws.send(&ping[3..]).await;
    assert_eq!(ws.frame().await, Some((0x8A, b"hello".to_vec())), "the pong");
    // With nothing held, it is parked again and the match goes on.
    metric_is(&s, PARKED, 1.0).await;
    s.publish(&id, "goal", json!({"team": "tig"})).await;
    let (op, goal) = ws.frame().await.expect("the goal");
    assert_eq!(op, 0x81);
    assert!(goal.starts_with(b"{\"seq\":2,"), "{}", String::from_utf8_lossy(&goal));
    let refusals = "matchstream_limit_refusals_total{limit=\"ws_frame_timeout\"}";
    assert_eq!(value(&scrape(&s).await, refusals), 0.0);
}
