//! The browser transports (SPEC 5) over real sockets, one test per rule: WebSocket and
//! Server-Sent Events carry exactly the v2 frames (compared byte for byte with a TCP v2
//! viewer's), resume with `from` / `Last-Event-ID`, end with the `bye` (WebSocket: and the close
//! code that goes with it), refuse an unknown match before any upgrade, keep quiet streams
//! alive, answer pings and ignore input; many of them get a burst whole; a node's restart loses
//! them nothing. Every viewer here is the client crate's, checking its own stream as it reads
//! (gapless `seq`, snapshot first, nothing after `bye`; SSE: `id` == `seq`, `event` == `kind`).

use std::future::Future;
use std::time::Duration;

use matchstream_client::http1::{self, Head};
use matchstream_client::ws::Message;
use matchstream_client::{Closed, Incoming, SseEvent, SseItem, SseViewer, WebError, WsViewer};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::metrics::metric_is;
use crate::support::*;

mod crowd;

/// `f`, or a panic naming `what` after [`PATIENCE`].
async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    match tokio::time::timeout(PATIENCE, f).await {
        Ok(t) => t,
        Err(_) => panic!("no {what} within {PATIENCE:?}"),
    }
}

/// A WebSocket viewer with a time limit on every read and a panic on anything unexpected.
struct Ws(WsViewer);

impl Ws {
    /// Upgrades `/1/match/<id>/ws[?from=]`, checking the frames from here on.
    async fn watch(s: &TestServer, id: &str, from: Option<u64>) -> Ws {
        let v = within("upgrade", WsViewer::watch(&s.http_host(), id, from)).await;
        Ws(v.unwrap_or_else(|e| panic!("upgrade: {e}")))
    }

    /// Upgrades `path`, checking nothing.
    async fn open(s: &TestServer, path: &str) -> Ws {
        let v = within("upgrade", WsViewer::open(&s.http_host(), path, None)).await;
        Ws(v.unwrap_or_else(|e| panic!("upgrade {path}: {e}")))
    }

    async fn message(&mut self) -> Option<Incoming> {
        let m = within("message", self.0.message()).await;
        m.unwrap_or_else(|e| panic!("reading a message: {e}"))
    }

    /// The next text message (the server's pings skipped).
    async fn text(&mut self) -> String {
        loop {
            match self.message().await {
                Some(Incoming::Text(t)) => return t,
                Some(Incoming::Ping(_)) => {}
                other => panic!("expected a text message, got {other:?}"),
            }
        }
    }

    async fn frame(&mut self) -> Value {
        let f = within("frame", self.0.frame()).await;
        f.unwrap_or_else(|e| panic!("reading a frame: {e}")).expect("a frame, not the end")
    }

    async fn collect(&mut self) -> (Vec<u64>, Value) {
        let got = within("bye", self.0.collect_v2()).await;
        got.unwrap_or_else(|e| panic!("reading to the bye: {e}"))
    }

    /// After the `bye`: the server's close frame, its answer sent, and the end of the
    /// connection, with nothing else in between but pings.
    async fn closed(&mut self) -> Closed {
        let rest = within("the end of the connection", self.0.until_end()).await;
        let rest = rest.unwrap_or_else(|e| panic!("reading to the end: {e}"));
        let rest: Vec<_> = rest.into_iter().filter(|m| !matches!(m, Incoming::Ping(_))).collect();
        match rest.as_slice() {
            [Incoming::Close(Some(c))] => c.clone(),
            other => panic!("expected one close frame with a code, got {other:?}"),
        }
    }
}

/// An SSE viewer with a time limit on every read and a panic on anything unexpected.
struct Sse(SseViewer);

impl Sse {
    /// Opens `path` with `headers`; checks frames from here on, resuming after `from`.
    async fn open(s: &TestServer, path: &str, headers: &[(&str, &str)], from: Option<u64>) -> Sse {
        let v = within("stream", SseViewer::open(&s.http_host(), path, headers)).await;
        let v = v.unwrap_or_else(|e| panic!("GET {path}: {e}"));
        assert_eq!(v.head().status, 200);
        assert_eq!(v.head().media_type().as_deref(), Some("text/event-stream"));
        Sse(v.checked(from))
    }

    async fn item(&mut self) -> Option<SseItem> {
        let i = within("event", self.0.item()).await;
        i.unwrap_or_else(|e| panic!("reading the stream: {e}"))
    }

    async fn event(&mut self) -> SseEvent {
        let e = within("event", self.0.event()).await;
        e.unwrap_or_else(|e| panic!("reading an event: {e}")).expect("an event, not the end")
    }

    async fn collect(&mut self) -> (Vec<u64>, Value) {
        let got = within("bye", self.0.collect_v2()).await;
        got.unwrap_or_else(|e| panic!("reading to the bye: {e}"))
    }

    /// After the `bye`: the end of the stream, with nothing but pings before it.
    async fn ends(&mut self) {
        while let Some(item) = self.item().await {
            assert!(matches!(item, SseItem::Comment(_)), "after the bye: {item:?}");
        }
        assert!(self.0.ended());
    }
}

/// The v2 frame of an SSE event.
fn json_of(e: &SseEvent) -> Value {
    serde_json::from_str(&e.data).unwrap_or_else(|_| panic!("not JSON: {:?}", e.data))
}

/// A TCP v2 viewer's whole stream of a match, as its lines without their `\n`.
async fn tcp_lines(v: &mut Viewer) -> Vec<String> {
    let bytes = v.read_to_end().await;
    let text = String::from_utf8(bytes).expect("UTF-8");
    assert!(text.ends_with('\n'), "{text:?}");
    text.lines().map(str::to_owned).collect()
}

/// Events whose frames have all there is to escape: quotes, a backslash, a line break,
/// non-ASCII.
async fn publish_varied(s: &TestServer, id: &str) {
    s.publish(id, "goal", json!({"team": "tig", "player": 7})).await;
    s.publish(id, "card", json!({"team": "elp", "player": 25, "card": "yellow"})).await;
    let text = "«Qué golazo» de \"Luna\" \\o/\nsegunda línea";
    s.publish(id, "comment", json!({"text": text})).await;
    let sub =
        json!({"team": "tig", "player_out": 10, "player_in": {"number": 11, "name": "Ñandú"}});
    s.publish(id, "substitution", sub).await;
}

#[tokio::test]
async fn ws_sends_the_tcp_v2_frames_byte_for_byte_one_text_message_each() {
    let s = TestServer::start().await;
    let id = s.started_match().await;
    s.publish(&id, "corner", json!({"team": "elp"})).await;
    let mut tcp = Viewer::connect_raw(s.viewer()).await;
    tcp.send(format!("VERSION:2:CONNECT:me:MATCH:{id}\r\n").as_bytes()).await;
    tcp.read_until_contains(b"\n").await;
    let mut ws = Ws::watch(&s, &id, None).await;
    publish_varied(&s, &id).await;
    s.publish(&id, "stop", json!({})).await;

    let mut texts = Vec::new();
    loop {
        let text = ws.text().await;
        assert!(!text.contains('\n'), "one frame per message, no line break: {text:?}");
        let bye = text.contains("\"kind\":\"bye\"");
        texts.push(text);
        if bye {
            break;
        }
    }
    assert_eq!(ws.closed().await.code, 1000);
    let lines = tcp_lines(&mut tcp).await;
    // The TCP viewer's snapshot was read already; both snapshots stand at seq 2.
    let status: Value = serde_json::from_str(&texts[0]).unwrap();
    assert_eq!((&status["kind"], &status["seq"]), (&json!("status"), &json!(2)));
    assert_eq!(texts[1..], lines[..], "the same frames, byte for byte");
    assert_eq!(texts.len(), 1 + 5 + 1, "status, 4 events and stop, bye");
    assert_eq!(texts.last().unwrap(), "{\"kind\":\"bye\",\"reason\":\"match_over\"}");
}

#[tokio::test]
async fn ws_from_gives_every_event_after_it_once_then_live_ones_and_beyond_the_end_a_snapshot() {
    let s = TestServer::start().await;
    let id = s.started_match().await;
    for _ in 0..5 {
        s.publish(&id, "corner", json!({"team": "elp"})).await;
    }
    let mut ws = Ws::watch(&s, &id, Some(3)).await;
    for want in 4..=6 {
        assert_eq!(ws.frame().await["seq"], want, "no snapshot, the events after 3");
    }
    s.publish(&id, "corner", json!({"team": "tig"})).await;
    assert_eq!(ws.frame().await["seq"], 7, "then live");

    // From beyond the last event: a snapshot (unchecked: the resume point is made up).
    let mut ahead = Ws::open(&s, &format!("/1/match/{id}/ws?from=99")).await;
    let snapshot: Value = serde_json::from_str(&ahead.text().await).unwrap();
    assert_eq!((&snapshot["kind"], &snapshot["seq"]), (&json!("status"), &json!(7)));
    assert_eq!(snapshot["data"]["period"], "first");
    // From 0: everything, start included.
    let mut all = Ws::watch(&s, &id, Some(0)).await;

    s.publish(&id, "stop", json!({})).await;
    assert_eq!(ws.collect().await, (vec![8], json!({"kind": "bye", "reason": "match_over"})));
    assert_eq!(ws.closed().await.code, 1000);
    let (seqs, _) = all.collect().await;
    assert_eq!(seqs, (1..=8).collect::<Vec<_>>());
    let stop: Value = serde_json::from_str(&ahead.text().await).unwrap();
    assert_eq!(stop["seq"], 8);

    // An ended match: from its end, just the goodbye; without from, its snapshot and goodbye.
    let mut end = Ws::watch(&s, &id, Some(8)).await;
    assert_eq!(end.frame().await, json!({"kind": "bye", "reason": "match_over"}));
    assert_eq!(end.closed().await.code, 1000);
    let mut late = Ws::watch(&s, &id, None).await;
    let status = late.frame().await;
    assert_eq!((&status["seq"], &status["data"]["period"]), (&json!(8), &json!("ended")));
    assert_eq!(late.frame().await["reason"], "match_over");
    assert_eq!(late.closed().await.code, 1000);
}

#[tokio::test]
async fn ws_closes_with_1000_after_match_over_and_after_a_cancel() {
    let s = TestServer::start().await;
    let over = s.started_match().await;
    let cancelled = s.create_match("abc", "xyz", "2024-05-01").await;
    let mut a = Ws::watch(&s, &over, None).await;
    let mut b = Ws::watch(&s, &cancelled, None).await;
    assert_eq!(a.frame().await["kind"], "status");
    assert_eq!(b.frame().await["data"]["period"], "not_started");
    s.publish(&over, "stop", json!({})).await;
    let (st, _) = s.send(reqwest::Method::DELETE, &format!("/1/match/{cancelled}"), None).await;
    assert_eq!(st, reqwest::StatusCode::NO_CONTENT);
    assert_eq!(a.collect().await, (vec![2], json!({"kind": "bye", "reason": "match_over"})));
    assert_eq!(a.closed().await.code, 1000);
    assert_eq!(b.collect().await, (vec![], json!({"kind": "bye", "reason": "cancelled"})));
    assert_eq!(b.closed().await.code, 1000);
}

#[tokio::test]
async fn ws_answers_pings_at_the_live_edge_ignores_text_and_binary_and_pings_when_quiet() {
    let s = TestServer::start_with(|c| c.keepalive = Duration::from_millis(200)).await;
    let id = s.started_match().await;
    let mut ws = Ws::watch(&s, &id, None).await;
    assert_eq!(ws.frame().await["kind"], "status");
    // Parked at the live edge, where nothing reads its socket until it has something to say.
    metric_is(&s, "matchstream_viewers_parked", 1.0).await;
    ws.0.send(Message::Ping(b"still there?".to_vec().into())).await.expect("ping");
    loop {
        match ws.message().await {
            Some(Incoming::Pong(p)) => {
                assert_eq!(p, b"still there?");
                break;
            }
            // The server's own keep-alive pings may come first.
            Some(Incoming::Ping(_)) => {}
            other => panic!("expected the pong, got {other:?}"),
        }
    }
    ws.0.send(Message::text("hello?")).await.expect("text");
    ws.0.send(Message::binary(vec![0u8, 1, 2, 255])).await.expect("binary");
    s.publish(&id, "goal", json!({"team": "elp", "player": 25})).await;
    assert_eq!(ws.frame().await["seq"], 2, "the stream goes on");
    // Quiet for twice the keep-alive: the server pings (and the client's pong answers it).
    let ping = ws.message().await;
    assert!(matches!(ping, Some(Incoming::Ping(_))), "expected the server's ping, got {ping:?}");
    s.publish(&id, "stop", json!({})).await;
    assert_eq!(ws.collect().await.0, vec![3]);
    assert_eq!(ws.closed().await.code, 1000);
}

#[tokio::test]
async fn ws_a_client_close_is_answered_and_ends_the_viewer() {
    let s = TestServer::start().await;
    let id = s.started_match().await;
    let mut ws = Ws::watch(&s, &id, None).await;
    assert_eq!(ws.frame().await["kind"], "status");
    ws.0.close(1000, "leaving").await.expect("close");
    let closed = ws.closed().await;
    assert_eq!(closed.code, 1000, "the close is answered: {closed:?}");
    // Its match goes on without it.
    s.publish(&id, "goal", json!({"team": "tig"})).await;
    let mut other = Ws::watch(&s, &id, Some(1)).await;
    assert_eq!(other.frame().await["kind"], "goal");
}

/// A client that sends its close frame and its FIN at once (some clients and proxies do) still
/// gets its close answered, from a viewer parked at the live edge.
#[tokio::test]
async fn ws_a_close_sent_with_the_fin_is_answered() {
    use tokio::io::AsyncReadExt;
    let s = TestServer::start().await;
    let id = s.started_match().await;
    let http = s.http_host();
    let mut tcp = TcpStream::connect(&http).await.expect("connect");
    let request = format!(
        "GET /1/match/{id}/ws HTTP/1.1\r\nHost: {http}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    // The 101 and the snapshot, then the viewer is parked.
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !seen.windows(8).any(|w| w == b"\"status\"") {
        let n = within("the snapshot", tcp.read(&mut buf)).await.unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    metric_is(&s, "matchstream_viewers_parked", 1.0).await;
    // A masked close frame (1000), then the FIN.
    let mask = [1u8, 2, 3, 4];
    let payload: Vec<u8> = [0x03u8, 0xE8].iter().enumerate().map(|(i, b)| b ^ mask[i]).collect();
    let mut frame = vec![0x88, 0x82];
    frame.extend_from_slice(&mask);
    frame.extend_from_slice(&payload);
    tcp.write_all(&frame).await.unwrap();
    tcp.shutdown().await.unwrap();
    let mut rest = Vec::new();
    within("the answer and the close", tcp.read_to_end(&mut rest)).await.unwrap();
    assert_eq!(rest, [0x88, 0x02, 0x03, 0xE8], "the close answered with 1000, then EOF");
}

#[tokio::test]
async fn a_full_node_says_bye_full_after_the_upgrade_with_1013_and_on_the_event_stream() {
    let s = TestServer::start_with(|c| c.max_viewers = 1).await;
    let id = s.started_match().await;
    let mut first = Ws::watch(&s, &id, None).await;
    assert_eq!(first.frame().await["kind"], "status");
    let mut ws = Ws::watch(&s, &id, None).await;
    let bye = ws.frame().await;
    assert_eq!((&bye["kind"], &bye["reason"]), (&json!("bye"), &json!("full")), "{bye}");
    assert!(bye["retry_after_ms"].is_u64() || bye["try"].is_string(), "{bye}");
    assert_eq!(ws.closed().await.code, 1013);
    let mut sse = Sse::open(&s, &format!("/1/match/{id}/stream"), &[], None).await;
    let bye = sse.event().await;
    assert_eq!((bye.id.as_deref(), json_of(&bye)["reason"].as_str()), (None, Some("full")));
    sse.ends().await;
    // The one let in still gets the match.
    s.publish(&id, "goal", json!({"team": "tig"})).await;
    assert_eq!(first.frame().await["seq"], 2);
}

/// Writes `request` on a new connection and reads the whole answer.
async fn raw_request(s: &TestServer, request: &str) -> (Head, String) {
    let mut stream = TcpStream::connect(s.http_host()).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let (head, body) = within("answer", http1::read_response(&mut stream)).await.expect("answer");
    (head, String::from_utf8(body).expect("UTF-8"))
}

#[tokio::test]
async fn an_unknown_match_is_a_404_json_error_before_any_upgrade_or_stream() {
    let s = TestServer::start().await;
    let host = s.http_host();
    let missing = "abc-def-2020-01-01";
    let upgrade = format!(
        "GET /1/match/{missing}/ws HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\n\
         Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    let stream = format!(
        "GET /1/match/{missing}/stream HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n"
    );
    for request in [upgrade, stream] {
        let (head, body) = raw_request(&s, &request).await;
        assert_eq!(head.status, 404, "{request}");
        assert_eq!(head.header("upgrade"), None, "no upgrade");
        assert_eq!(head.media_type().as_deref(), Some("application/json"));
        let error: Value = serde_json::from_str(&body).expect("JSON");
        assert!(error["error"].as_str().is_some_and(|e| !e.is_empty()), "{body}");
    }
    // As the clients see it.
    let ws = WsViewer::open(&host, &format!("/1/match/{missing}/ws"), None).await;
    assert!(matches!(ws, Err(WebError::Refused { status: 404, .. })), "{:?}", ws.err());
    let sse = SseViewer::open(&host, &format!("/1/match/{missing}/stream"), &[]).await;
    assert!(matches!(sse, Err(WebError::Refused { status: 404, .. })), "{:?}", sse.err());
}

#[tokio::test]
async fn ws_upgrades_a_connection_kept_alive_after_plain_requests() {
    let s = TestServer::start().await;
    let id = s.started_match().await;
    let host = s.http_host();
    let mut stream = TcpStream::connect(&host).await.expect("connect");
    for path in ["/1/matches", &format!("/1/match/{id}")] {
        stream.write_all(&http1::get_request(&host, path, &[])).await.expect("write");
        let (head, body) = within("answer", http1::read_response(&mut stream)).await.expect("read");
        assert_eq!(head.status, 200, "{path}");
        assert!(String::from_utf8_lossy(&body).contains(&id), "{path}");
    }
    let path = format!("/1/match/{id}/ws");
    let ws = within("upgrade", WsViewer::handshake(stream, &host, &path, None)).await;
    let mut ws = Ws(ws.expect("upgrade on the same connection").checked(None));
    assert_eq!(ws.frame().await["seq"], 1);
    s.publish(&id, "stop", json!({})).await;
    assert_eq!(ws.collect().await.0, vec![2]);
}

#[tokio::test]
async fn sse_frames_are_id_event_and_data_of_the_tcp_v2_json_and_the_stream_ends_after_bye() {
    let s = TestServer::start().await;
    let id = s.started_match().await;
    s.publish(&id, "corner", json!({"team": "elp"})).await;
    let mut tcp = Viewer::connect_raw(s.viewer()).await;
    tcp.send(format!("VERSION:2:CONNECT:me:MATCH:{id}\r\n").as_bytes()).await;
    let mut sse = TcpStream::connect(s.http_host()).await.expect("connect");
    let path = format!("/1/match/{id}/stream");
    sse.write_all(&http1::get_request(&s.http_host(), &path, &[])).await.expect("write");
    let (head, early) = within("head", http1::read_head(&mut sse)).await.expect("head");
    assert_eq!(head.status, 200);
    assert_eq!(head.media_type().as_deref(), Some("text/event-stream"));
    publish_varied(&s, &id).await;
    s.publish(&id, "stop", json!({})).await;

    // The whole body, until the stream ends (after the bye), byte for byte.
    let framing = head.framing().expect("framing");
    let body = within("the end of the stream", http1::read_body(&mut sse, framing, early)).await;
    let body = String::from_utf8(body.expect("body")).expect("UTF-8");
    let mut want = String::new();
    for line in tcp_lines(&mut tcp).await {
        let frame: Value = serde_json::from_str(&line).unwrap();
        let kind = frame["kind"].as_str().unwrap();
        if kind != "bye" {
            want += &format!("id: {}\n", frame["seq"]);
        }
        want += &format!("event: {kind}\ndata: {line}\n\n");
    }
    assert!(want.starts_with("id: 2\nevent: status\ndata: {\"seq\":2,\"kind\":\"status\""));
    assert!(want.ends_with("event: bye\ndata: {\"kind\":\"bye\",\"reason\":\"match_over\"}\n\n"));
    assert_eq!(body, want);
}

#[tokio::test]
async fn sse_resumes_after_from_or_last_event_id_which_wins() {
    let s = TestServer::start().await;
    let id = s.started_match().await;
    for _ in 0..5 {
        s.publish(&id, "corner", json!({"team": "elp"})).await;
    }
    let path = |from: u64| format!("/1/match/{id}/stream?from={from}");
    let mut from = Sse::open(&s, &path(3), &[], Some(3)).await;
    let mut header =
        Sse::open(&s, &format!("/1/match/{id}/stream"), &[("Last-Event-ID", "5")], Some(5)).await;
    let mut both = Sse::open(&s, &path(1), &[("Last-Event-ID", "4")], Some(4)).await;
    let first = both.event().await;
    assert_eq!((first.id.as_deref(), first.event.as_deref()), (Some("5"), Some("corner")));
    // Beyond the end: a snapshot, its id the snapshot's seq.
    let mut ahead = Sse(SseViewer::open(&s.http_host(), &path(99), &[]).await.expect("stream"));
    let snapshot = ahead.event().await;
    assert_eq!((snapshot.id.as_deref(), snapshot.event.as_deref()), (Some("6"), Some("status")));
    assert_eq!(json_of(&snapshot)["seq"], 6);

    s.publish(&id, "corner", json!({"team": "tig"})).await;
    s.publish(&id, "stop", json!({})).await;
    let bye = json!({"kind": "bye", "reason": "match_over"});
    assert_eq!(from.collect().await, ((4..=8).collect(), bye.clone()));
    assert_eq!(header.collect().await, ((6..=8).collect(), bye.clone()));
    assert_eq!(both.collect().await, ((6..=8).collect(), bye.clone()));
    for v in [&mut from, &mut header, &mut both] {
        v.ends().await;
    }
}

#[tokio::test]
async fn sse_pings_a_quiet_stream_with_a_comment() {
    let s = TestServer::start_with(|c| c.keepalive = Duration::from_millis(100)).await;
    let id = s.started_match().await;
    let mut sse = Sse::open(&s, &format!("/1/match/{id}/stream"), &[], None).await;
    assert_eq!(sse.event().await.event.as_deref(), Some("status"));
    assert_eq!(sse.item().await, Some(SseItem::Comment("ping".into())));
    // Pings do not disturb the events.
    s.publish(&id, "stop", json!({})).await;
    assert_eq!(sse.collect().await.0, vec![2]);
    sse.ends().await;
}
