//! The clever parts of a viewer's life, on a real hub and real sockets: the hand-over to a shard
//! under the match's lock while events race it, a shard that closed after it was chosen, a
//! member handed back mid-burst, a shard a ring behind, and the drain under tokio's paused
//! clock. Each waits on the parking's own counts, so it proves the path it names was taken.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Following, Viewers};
use crate::config::Config;
use crate::hub::{Format, Hub};
use crate::ingest::Ingest;
use crate::model::{now_ms, EventInput, EventKind, MatchId, Seq};
use crate::store::memory::tests::info;
use crate::store::memory::MemoryStore;
use crate::store::Store;
use crate::telemetry::Metrics;
use crate::transport::context::ViewerContext;
use crate::transport::ViewerPorts;

/// One node's viewers on a memory store, with match elp-tig created and started.
struct Node {
    viewers: Arc<Viewers>,
    ingest: Arc<Ingest>,
    hub: Arc<Hub>,
    id: MatchId,
    listener: TcpListener,
    shutdown: CancellationToken,
}

fn input(kind: &str) -> EventInput {
    EventInput { kind: EventKind::parse(kind).unwrap(), data: Default::default() }
}

/// `n` comments of `len` characters.
fn comments_of(n: usize, len: usize) -> Vec<EventInput> {
    let data = serde_json::json!({"text": "x".repeat(len)});
    let comment =
        EventInput { kind: EventKind::Comment, data: serde_json::from_value(data).unwrap() };
    vec![comment; n]
}

fn comments(n: usize) -> Vec<EventInput> {
    comments_of(n, 10)
}

impl Node {
    /// `ring`: the events a match keeps encoded (a shard more than that behind has lagged).
    async fn start(ring: usize, config: impl FnOnce(&mut Config)) -> Node {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let hub = Arc::new(Hub::new(store.clone(), ring, 100_000));
        let ingest = Arc::new(Ingest::restore(store, hub.clone()).await.unwrap());
        let id = ingest.create(info("elp", "tig")).await.unwrap();
        ingest.publish(&id, &[input("start")], None).await.unwrap();
        let mut c = Config::default();
        config(&mut c);
        let addr = SocketAddr::from(([127, 0, 0, 1], 9));
        let ports = Arc::new(ViewerPorts::new(&[addr], None, 100_000, Metrics::new()));
        let shutdown = CancellationToken::new();
        let ctx = ViewerContext::new(&c, hub.clone(), ports, shutdown.clone(), TaskTracker::new());
        let viewers = Viewers::new(Arc::new(ctx));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Node { viewers, ingest, hub, id, listener, shutdown }
    }

    /// A v2 viewer of the match that joined on a real socket, after `from` (at the live edge
    /// without): the client's end, and the session on the node's end.
    async fn joined(&self, from: Option<Seq>) -> (Client, Following) {
        let client = TcpStream::connect(self.listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = self.listener.accept().await.unwrap();
        let mut guard = self.viewers.ctx.ports.try_enter(0).unwrap();
        guard.joined(Format::V2);
        let (sub, _) = self.hub.join(self.id.as_str(), Format::V2, from, now_ms()).unwrap();
        let viewer = Following::joined(server.into(), sub, guard, Format::V2, BytesMut::new());
        (Client { lines: BufReader::new(client), seqs: Vec::new() }, viewer)
    }

    /// A viewer whose life runs in a task of its own, as after a handshake.
    async fn viewer(&self, from: Option<Seq>) -> Client {
        let (client, viewer) = self.joined(from).await;
        self.viewers.spawn(viewer);
        client
    }

    async fn publish(&self, inputs: &[EventInput]) {
        self.ingest.publish(&self.id, inputs, None).await.unwrap();
    }

    fn parked(&self) -> usize {
        self.viewers.parking.parked()
    }

    fn handed_back(&self) -> u64 {
        self.viewers.parking.handed_back()
    }

    /// Waits (a few seconds at most, in the clock the test runs on) until `check` holds.
    async fn until(&self, what: &str, check: impl Fn(&Node) -> bool) {
        for _ in 0..500 {
            if check(self) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "{what}: not within 5 s (parked {}, handed back {})",
            self.parked(),
            self.handed_back()
        );
    }
}

/// A viewer's end of the connection: the v2 frames it read.
struct Client {
    lines: BufReader<TcpStream>,
    seqs: Vec<Seq>,
}

impl Client {
    /// The next frame.
    async fn frame(&mut self) -> Value {
        let mut line = String::new();
        let read = tokio::time::timeout(Duration::from_secs(10), self.lines.read_line(&mut line));
        let n = read.await.expect("a frame within 10 s").expect("read");
        assert!(n > 0, "closed without a bye after seqs {:?}", self.seqs);
        serde_json::from_str(&line).unwrap()
    }

    /// Frames until the bye: its reason. Every event's seq is kept.
    async fn until_bye(&mut self) -> String {
        loop {
            let frame = self.frame().await;
            match frame["kind"].as_str() {
                Some("bye") => return frame["reason"].as_str().unwrap().to_owned(),
                Some("status") => {}
                _ => self.seqs.push(frame["seq"].as_u64().unwrap()),
            }
        }
    }

    /// Events until (and including) `seq`.
    async fn until_seq(&mut self, seq: Seq) {
        while self.seqs.last() != Some(&seq) {
            let frame = self.frame().await;
            assert_ne!(frame["kind"], "bye", "a bye before seq {seq}: {frame}");
            if frame["kind"] != "status" {
                self.seqs.push(frame["seq"].as_u64().unwrap());
            }
        }
    }

    /// Every event once, in order, from `first` to `last`.
    fn saw_exactly(&self, first: Seq, last: Seq) {
        let want: Vec<Seq> = (first..=last).collect();
        assert_eq!(self.seqs, want, "every event once, in order");
    }
}

// Two threads: the publisher and the viewers' tasks run at once, so hand-overs race events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_parking_while_events_race_them_get_every_event_once_in_order() {
    let node = Node::start(1024, |_| {}).await;
    // From seq 0: each catches up in its task, then is handed to a shard under the match's
    // lock, while a publisher keeps the live edge moving.
    let mut clients = Vec::new();
    for _ in 0..40 {
        clients.push(node.viewer(Some(0)).await);
    }
    let publisher = {
        let (ingest, id) = (node.ingest.clone(), node.id.clone());
        tokio::spawn(async move {
            for _ in 0..100 {
                ingest.publish(&id, &comments(2), None).await.unwrap();
                tokio::task::yield_now().await;
            }
        })
    };
    publisher.await.unwrap();
    node.until("every viewer parked", |n| n.parked() == 40).await;
    node.publish(&[input("stop")]).await;
    for c in &mut clients {
        assert_eq!(c.until_bye().await, "match_over");
        c.saw_exactly(1, 202);
    }
    node.until("the shards let go of everyone", |n| n.parked() == 0).await;
}

#[tokio::test]
async fn a_shard_that_closed_after_it_was_chosen_gives_the_viewer_back_whole() {
    let node = Node::start(1024, |_| {}).await;
    let (mut client, viewer) = node.joined(None).await;
    let ctx = &node.viewers.ctx;
    let parking = &node.viewers.parking;
    let key = viewer.sub.key();
    let shard = parking.shard_for(ctx, &node.id, &key).expect("a shard");
    // As its task does when it ends (the match over, the node stopped).
    assert!(shard.close().is_empty());
    let back = parking.park_in(ctx, &shard, viewer).expect_err("given back, not lost");
    assert_eq!(node.parked(), 0, "counted nowhere");
    // It follows on in a task: the match goes on for it.
    node.viewers.spawn(back);
    node.publish(&comments(3)).await;
    client.until_seq(4).await;
    client.saw_exactly(2, 4);
}

#[tokio::test]
async fn a_member_whose_socket_fills_mid_burst_gets_the_rest_from_a_task_then_parks_again() {
    let node = Node::start(1024, |_| {}).await;
    let (mut client, viewer) = node.joined(None).await;
    // Small buffers on both ends, and a client that does not read yet: a burst cannot go out
    // in one write.
    socket2::SockRef::from(viewer.stream.tcp()).set_send_buffer_size(4096).unwrap();
    socket2::SockRef::from(client.lines.get_ref()).set_recv_buffer_size(4096).unwrap();
    node.viewers.spawn(viewer);
    node.until("parked", |n| n.parked() == 1).await;
    // 50 bursts of 20 comments of 280 characters: far more than both buffers hold.
    for _ in 0..50 {
        node.publish(&comments_of(20, 280)).await;
    }
    node.until("handed back to a task", |n| n.handed_back() >= 1).await;
    client.until_seq(1001).await;
    client.saw_exactly(2, 1001);
    node.until("parked again", |n| n.parked() == 1).await;
    node.publish(&comments(1)).await;
    client.until_seq(1002).await;
}

#[tokio::test]
async fn a_shard_a_ring_behind_hands_every_member_back_to_catch_up_from_history() {
    // A ring of 16 events: one request of 100 leaves the shard's feed behind at once (the shard
    // task cannot run while this task publishes without waiting).
    let node = Node::start(16, |_| {}).await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(node.viewer(None).await);
    }
    node.until("parked", |n| n.parked() == 3).await;
    node.publish(&comments(100)).await;
    node.until("the shard lagged", |n| n.viewers.parking.lags() >= 1).await;
    node.until("all handed back", |n| n.handed_back() >= 3).await;
    for c in &mut clients {
        c.until_seq(101).await;
        c.saw_exactly(2, 101);
    }
    node.until("parked again", |n| n.parked() == 3).await;
}

#[tokio::test(start_paused = true)]
async fn a_stopping_shard_says_goodbye_to_a_share_at_every_tick_of_the_drain_window() {
    let node = Node::start(1024, |c| c.drain_window = Duration::from_secs(10)).await;
    let mut clients = Vec::new();
    for _ in 0..100 {
        clients.push(node.viewer(None).await);
    }
    node.until("parked", |n| n.parked() == 100).await;
    node.shutdown.cancel();
    let start = tokio::time::Instant::now();
    // A tick is 200 ms: 2 of the 100 at each, the first at once.
    tokio::time::sleep_until(start + Duration::from_millis(4_900)).await;
    let left = node.parked();
    assert!((48..=52).contains(&left), "half way through the window, {left} left of 100");
    tokio::time::sleep_until(start + Duration::from_millis(10_100)).await;
    assert_eq!(node.parked(), 0, "everyone told by the end of the window");
    for c in &mut clients {
        assert_eq!(c.until_bye().await, "shutdown");
        assert!(c.seqs.is_empty());
    }
}

/// Under the paused clock, time moves only when every task waits on a timer: an event that
/// arrives with no time passed was written at once, one that took the interval was held.
#[tokio::test(start_paused = true)]
async fn a_shard_spaces_its_writes_while_events_come_fast_and_writes_at_once_after_a_quiet_spell() {
    let interval = Duration::from_millis(100);
    let node = Node::start(1024, |c| c.min_write_interval = interval).await;
    let mut client = node.viewer(None).await;
    node.until("parked", |n| n.parked() == 1).await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let t0 = tokio::time::Instant::now();
    node.publish(&comments(1)).await;
    client.until_seq(2).await;
    assert_eq!(t0.elapsed(), Duration::ZERO, "after a quiet spell an event goes out at once");

    // Two more right after that write: they wait for the interval, and go out together.
    node.publish(&comments(1)).await;
    node.publish(&comments(1)).await;
    client.until_seq(4).await;
    let waited = t0.elapsed();
    assert!(waited >= interval, "held for the interval since the last write, got {waited:?}");
    assert!(waited < interval * 2, "{waited:?}");

    // A burst that fills a write goes at once, interval or not.
    let t1 = tokio::time::Instant::now();
    node.publish(&comments(64)).await;
    client.until_seq(68).await;
    assert_eq!(t1.elapsed(), Duration::ZERO, "a full write is never held");

    tokio::time::sleep(Duration::from_secs(1)).await;
    let t2 = tokio::time::Instant::now();
    node.publish(&[input("stop")]).await;
    assert_eq!(client.until_bye().await, "match_over");
    assert_eq!(t2.elapsed(), Duration::ZERO);
    client.saw_exactly(2, 69);
}

#[tokio::test(start_paused = true)]
async fn with_no_interval_every_burst_is_written_as_it_comes() {
    let node = Node::start(1024, |c| c.min_write_interval = Duration::ZERO).await;
    let mut client = node.viewer(None).await;
    node.until("parked", |n| n.parked() == 1).await;
    let t0 = tokio::time::Instant::now();
    for seq in 2..=6 {
        node.publish(&comments(1)).await;
        client.until_seq(seq).await;
    }
    assert_eq!(t0.elapsed(), Duration::ZERO);
}

/// Reads a raw connection's bytes until they hold `want`.
async fn read_until(raw: &mut TcpStream, seen: &mut Vec<u8>, want: &str) {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(seen).contains(want) {
        let read = tokio::time::timeout(Duration::from_secs(10), raw.read(&mut buf));
        let n = read.await.expect("more bytes within 10 s").expect("read");
        assert!(n > 0, "closed before {want}: {}", String::from_utf8_lossy(seen));
        seen.extend_from_slice(&buf[..n]);
    }
}

/// A WebSocket viewer holding half a frame of its own in a task.
async fn ws_viewer_in_a_task(node: &Node) -> TcpStream {
    let (client, viewer) = node.joined(None).await;
    let Following { stream, sub, guard, .. } = viewer;
    // The first byte of a masked text frame: the rest never comes within these tests.
    let half = BytesMut::from(&[0x81u8][..]);
    node.viewers.spawn(Following::joined(stream, sub, guard, Format::Ws, half));
    client.lines.into_inner()
}

/// A viewer in a task that holds events for the interval writes them at once when the node
/// begins to stop, then says goodbye.
#[tokio::test(start_paused = true)]
async fn a_task_holding_events_writes_them_at_once_when_the_node_stops() {
    let node = Node::start(1024, |c| {
        c.min_write_interval = Duration::from_secs(1);
        c.ws_frame_timeout = Duration::from_secs(3600);
        c.drain_window = Duration::ZERO;
    })
    .await;
    let mut raw = ws_viewer_in_a_task(&node).await;
    let mut seen = Vec::new();
    node.publish(&comments(1)).await;
    read_until(&mut raw, &mut seen, "\"seq\":2,").await;
    let t0 = tokio::time::Instant::now();
    node.publish(&comments(1)).await;
    // Long enough for the task to take it and hold it (the interval is a second).
    tokio::time::sleep(Duration::from_millis(10)).await;
    node.shutdown.cancel();
    read_until(&mut raw, &mut seen, "\"seq\":3,").await;
    read_until(&mut raw, &mut seen, "shutdown").await;
    let took = t0.elapsed();
    assert!(
        took < Duration::from_millis(100),
        "held for the interval though the node stops: {took:?}"
    );
}

/// A WebSocket viewer holding half a frame of its own cannot be parked: its task spaces its
/// writes the same way.
#[tokio::test(start_paused = true)]
async fn a_viewer_in_a_task_spaces_its_writes_too() {
    let interval = Duration::from_millis(100);
    let node = Node::start(1024, |c| {
        c.min_write_interval = interval;
        c.ws_frame_timeout = Duration::from_secs(3600);
    })
    .await;
    let mut raw = ws_viewer_in_a_task(&node).await;
    let mut seen = Vec::new();
    let t0 = tokio::time::Instant::now();
    node.publish(&comments(1)).await;
    read_until(&mut raw, &mut seen, "\"seq\":2,").await;
    assert_eq!(t0.elapsed(), Duration::ZERO, "the first event goes out at once");
    node.publish(&comments(1)).await;
    node.publish(&comments(1)).await;
    read_until(&mut raw, &mut seen, "\"seq\":4,").await;
    let waited = t0.elapsed();
    assert!(waited >= interval && waited < interval * 2, "{waited:?}");
    assert_eq!(node.parked(), 0, "it stayed in its task");
}

/// A stopping node writes what its shards held for the interval before any goodbye: a viewer
/// told `bye shutdown` has every event published before it.
#[tokio::test(start_paused = true)]
async fn held_events_go_out_before_the_goodbye_of_a_stopping_node() {
    let node = Node::start(1024, |c| {
        c.min_write_interval = Duration::from_secs(1);
        c.drain_window = Duration::from_millis(100);
    })
    .await;
    let mut client = node.viewer(None).await;
    node.until("parked", |n| n.parked() == 1).await;
    node.publish(&comments(1)).await;
    client.until_seq(2).await;
    // Held: the last write was a moment ago.
    node.publish(&comments(2)).await;
    node.shutdown.cancel();
    assert_eq!(client.until_bye().await, "shutdown");
    client.saw_exactly(2, 4);
}

/// The match's last event is never held: the final whistle, the bye and the close go at once.
#[tokio::test(start_paused = true)]
async fn the_stop_is_written_at_once_even_right_after_a_write() {
    let node = Node::start(1024, |c| c.min_write_interval = Duration::from_secs(1)).await;
    let mut client = node.viewer(None).await;
    node.until("parked", |n| n.parked() == 1).await;
    let t0 = tokio::time::Instant::now();
    node.publish(&comments(1)).await;
    client.until_seq(2).await;
    node.publish(&[input("stop")]).await;
    assert_eq!(client.until_bye().await, "match_over");
    assert_eq!(t0.elapsed(), Duration::ZERO, "the stop waited for the interval");
    client.saw_exactly(2, 3);
}
