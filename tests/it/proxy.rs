//! A node behind nginx with the repository's configuration (SPEC 11, docs/deploy.md):
//! `ops/nginx/matchstream.conf` and `ops/nginx/matchstream-stream.conf` exactly, only their
//! listen addresses, upstream and certificate paths changed. TLS ends at nginx; through it, over
//! https as a browser would: the page and its policy, the API (a watcher's POST, the match list,
//! history with its `304`), a WebSocket viewer (wss) and an SSE viewer that each get every event
//! in order (the SSE one each event while its stream stays open: nothing held in a buffer), and
//! `/1/checkin` naming `--public-host`, where a TCP viewer is served through nginx's stream
//! module.

use std::future::Future;
use std::net::SocketAddr;

use matchstream_client::http1::{self, Head};
use matchstream_client::{SseViewer, WsViewer};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

use crate::support::*;

/// The address `--public-host` names: nginx's stream listeners, with the node's port numbers.
const PUBLIC_HOST: &str = "127.0.0.2";

/// A node (its `--public-host` [`PUBLIC_HOST`]) and nginx in front of it.
struct Proxied {
    node: TestServer,
    ca: TestCa,
    /// https (the site) and http (its redirect).
    https: u16,
    http: u16,
    _nginx: Nginx,
}

impl Proxied {
    async fn start() -> Proxied {
        let node = TestServer::start_with(|c| c.public_host = Some(PUBLIC_HOST.to_owned())).await;
        let ca = TestCa::new();
        let streams: Vec<SocketAddr> = node
            .viewers
            .iter()
            .map(|v| SocketAddr::new(PUBLIC_HOST.parse().expect("an IP"), v.port()))
            .collect();
        let upstream = node.http_host();
        let nginx = Nginx::start(2, |ports| NginxConf {
            main: stream_site(&streams),
            http: site(ports[0], ports[1], &[&upstream], &ca.cert, &ca.key),
        });
        let (https, http) = (nginx.ports[0], nginx.ports[1]);
        Proxied { node, ca, https, http, _nginx: nginx }
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.https))
    }

    /// The Host a browser sends to the site.
    fn host(&self) -> String {
        format!("{TLS_HOST}:{}", self.https)
    }

    /// A request written as `head` (its first line and headers, no blank line) and `body`,
    /// through nginx over TLS: the answer's head and body.
    async fn exchange(&self, head: &str, body: &str) -> (Head, Vec<u8>) {
        let mut tls = self.ca.connect(self.addr()).await;
        let request = format!("{head}\r\nHost: {}\r\nConnection: close\r\n\r\n{body}", self.host());
        tls.write_all(request.as_bytes()).await.expect("send");
        let answer = tokio::time::timeout(PATIENCE, http1::read_response(&mut tls)).await;
        answer.expect("an answer in time").expect("an answer")
    }

    async fn get(&self, path: &str, headers: &str) -> (Head, Vec<u8>) {
        self.exchange(&format!("GET {path} HTTP/1.1{headers}"), "").await
    }
}

/// `f`, or a panic naming `what` after [`PATIENCE`].
async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: not within {PATIENCE:?}"))
}

fn json_of(body: &[u8]) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(body)))
}

/// Over https through nginx: the page with the node's own Content-Security-Policy; plain http
/// is sent to https; a watcher's POST (token and body passed on); the match list; the history,
/// byte for byte the node's, and a `304` for its ETag; `/1/checkin` names `--public-host` and a
/// port there where nginx's stream module serves a TCP viewer every event.
#[tokio::test]
async fn the_page_the_api_and_checkin_through_nginx_over_https() {
    let p = Proxied::start().await;
    let (head, body) = p.get("/", "\r\nAccept-Encoding: identity").await;
    assert_eq!(head.status, 200, "{head:?}");
    assert_eq!(head.media_type().as_deref(), Some("text/html"));
    assert!(String::from_utf8_lossy(&body).contains("<html"), "the page");
    let direct = reqwest::get(format!("{}/", p.node.base)).await.expect("the page from the node");
    let policy = direct.headers()["content-security-policy"].to_str().expect("a policy");
    assert!(policy.contains("connect-src 'self'"), "{policy}");
    assert_eq!(head.header("content-security-policy"), Some(policy), "the node's policy, kept");

    let plain = tokio::net::TcpStream::connect(("127.0.0.1", p.http)).await.expect("connect");
    let (mut plain, host) = (plain, p.host());
    let request = format!("GET /1/matches HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    plain.write_all(request.as_bytes()).await.expect("send");
    let (head, _) = http1::read_response(&mut plain).await.expect("an answer");
    assert_eq!(head.status, 301, "{head:?}");
    assert_eq!(head.header("location"), Some("https://localhost/1/matches"));

    let id = p.node.started_match().await;
    let event = json!({"kind": "goal", "data": {"team": "tig", "player": 7}}).to_string();
    let (head, body) = p
        .exchange(
            &format!(
                "POST /1/match/{id}/events HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\n\
                 Content-Type: application/json\r\nContent-Length: {}",
                event.len()
            ),
            &event,
        )
        .await;
    assert_eq!(head.status, 201, "{}", String::from_utf8_lossy(&body));
    assert_eq!(json_of(&body)["seq"], 2);

    let (head, body) = p.get("/1/matches", "").await;
    assert_eq!(head.status, 200, "{head:?}");
    assert_eq!(json_of(&body), json!([id]));

    let history = format!("/1/match/{id}/history");
    let (head, body) = p.get(&history, "\r\nAccept-Encoding: identity").await;
    assert_eq!(head.status, 200, "{head:?}");
    let direct = reqwest::get(format!("{}{history}", p.node.base)).await.expect("history");
    assert_eq!(body, direct.bytes().await.expect("its body"), "the node's history, unchanged");
    let etag = head.header("etag").expect("an ETag");
    let (head, _) = p.get(&history, &format!("\r\nIf-None-Match: {etag}")).await;
    assert_eq!(head.status, 304, "{head:?}");

    let (head, body) = p.get("/1/checkin", "").await;
    assert_eq!(head.status, 200, "{head:?}");
    let checkin = json_of(&body);
    assert_eq!(checkin["host"], PUBLIC_HOST, "{checkin}");
    let port = checkin["port"].as_u64().and_then(|p| u16::try_from(p).ok()).expect("a port");
    assert!(p.node.viewers.iter().any(|v| v.port() == port), "{checkin}: a port of the node");
    let at = SocketAddr::new(PUBLIC_HOST.parse().expect("an IP"), port);
    let mut viewer = Viewer::connect(at, &format!("VERSION:2:CONNECT:me:MATCH:{id}")).await;
    let status = viewer.frame().await.expect("the snapshot");
    assert_eq!((status["kind"].as_str(), status["seq"].as_u64()), (Some("status"), Some(2)));
    p.node.publish(&id, "card", json!({"team": "elp", "player": 25, "card": "yellow"})).await;
    p.node.publish(&id, "stop", json!({})).await;
    let (seqs, bye) = collect_v2(&mut viewer).await;
    assert_eq!(seqs, [3, 4], "every event through the stream module, in order");
    assert_eq!(bye["reason"], "match_over");
}

/// A WebSocket viewer over wss through nginx (the upgrade passed on) gets the snapshot, then
/// every event in order as it is published, then the `bye` and the close.
#[tokio::test]
async fn a_websocket_viewer_over_wss_through_nginx_gets_every_event_in_order() {
    let p = Proxied::start().await;
    let id = p.node.started_match().await;
    let tls = p.ca.connect(p.addr()).await;
    let path = format!("/1/match/{id}/ws");
    let ws = within("an upgrade", WsViewer::handshake(tls, &p.host(), &path, None)).await;
    let mut ws = ws.unwrap_or_else(|e| panic!("upgrade through nginx: {e}")).checked(None);
    let frame = within("a frame", ws.frame()).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(frame.expect("the snapshot")["kind"], "status");
    for (n, player) in [7, 10, 7].into_iter().enumerate() {
        let seq = p.node.publish(&id, "goal", json!({"team": "tig", "player": player})).await;
        let frame = within("a frame", ws.frame()).await.unwrap_or_else(|e| panic!("{e}"));
        let frame = frame.expect("the event");
        assert_eq!((frame["kind"].as_str(), frame["seq"].as_u64()), (Some("goal"), Some(seq)));
        assert_eq!(seq, n as u64 + 2);
    }
    p.node.publish(&id, "stop", json!({})).await;
    let (seqs, bye) = within("bye", ws.collect_v2()).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((seqs, bye["reason"].as_str()), (vec![5], Some("match_over")));
    within("the close", ws.until_end()).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ws.closed().map(|c| c.code), Some(1000), "the close frame, passed on");
}

/// An SSE viewer through nginx gets each event while its stream stays open: one event
/// published, that one event read, and the stream not ended, so nothing was held back to fill a
/// buffer or waited for the response's end. Then the rest, in order, and the `bye`.
#[tokio::test]
async fn an_sse_viewer_through_nginx_gets_each_event_as_it_is_published() {
    let p = Proxied::start().await;
    let id = p.node.started_match().await;
    let tls = p.ca.connect(p.addr()).await;
    let path = format!("/1/match/{id}/stream");
    let sse = within("an answer", SseViewer::request(tls, &p.host(), &path, &[])).await;
    let mut sse = sse.unwrap_or_else(|e| panic!("the stream through nginx: {e}")).checked(None);
    assert_eq!(sse.head().status, 200);
    assert_eq!(sse.head().media_type().as_deref(), Some("text/event-stream"));
    let frame = within("an event", sse.frame()).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(frame.expect("the snapshot")["kind"], "status");
    for player in [7, 10] {
        let seq = p.node.publish(&id, "goal", json!({"team": "tig", "player": player})).await;
        let frame = within("an event", sse.frame()).await.unwrap_or_else(|e| panic!("{e}"));
        let frame = frame.expect("the event");
        assert_eq!((frame["kind"].as_str(), frame["seq"].as_u64()), (Some("goal"), Some(seq)));
        assert!(!sse.ended(), "the event came while the stream stays open");
    }
    p.node.publish(&id, "stop", json!({})).await;
    let (seqs, bye) = within("bye", sse.collect_v2()).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((seqs, bye["reason"].as_str()), (vec![4], Some("match_over")));
}

/// docs/deploy.md shows the two files these tests run, as they are.
#[test]
fn the_deploy_guide_shows_the_files_the_tests_run() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let guide = std::fs::read_to_string(root.join("docs/deploy.md")).expect("docs/deploy.md");
    for file in ["ops/nginx/matchstream.conf", "ops/nginx/matchstream-stream.conf"] {
        let text = std::fs::read_to_string(root.join(file)).expect(file);
        let shown = format!("```nginx\n{}\n```", text.trim_end());
        assert!(guide.contains(&shown), "docs/deploy.md shows {file} as it is");
    }
}
