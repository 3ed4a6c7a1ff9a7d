//! The HTTP front door (`crates/server/src/http.rs`), seen over raw sockets: every request goes
//! through hyper and the router's one tower stack; pipelined requests are answered in order, a
//! kept-alive connection is closed when the node stops, and every limit of SPEC 10 is hit once.

use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::support::*;

/// One HTTP/1.x answer: status line, header lines in their order (names lower-cased, `date`
/// left out) and body (as long as `content-length` says).
#[derive(Debug, PartialEq)]
struct Answer {
    status: String,
    headers: Vec<String>,
    body: Vec<u8>,
}

/// (Not the client's `http1::read_response`: it may read past its answer, and pipelined
/// answers follow one another here.)
async fn answer(conn: &mut BufReader<TcpStream>) -> Answer {
    let status = read_line(conn).await;
    assert!(!status.is_empty(), "the connection closed before an answer");
    let mut headers = Vec::new();
    let mut length = 0;
    loop {
        let line = read_line(conn).await;
        let l = line.as_str();
        if l.is_empty() {
            break;
        }
        let (name, value) = l.split_once(": ").expect("a header line");
        let name = name.to_ascii_lowercase();
        if name == "content-length" {
            length = value.parse().expect("a length");
        }
        if name != "date" {
            headers.push(format!("{name}: {value}"));
        }
    }
    let mut body = vec![0; length];
    timeout(PATIENCE, conn.read_exact(&mut body)).await.expect("a body in time").expect("body");
    Answer { status, headers, body }
}

async fn read_line(conn: &mut BufReader<TcpStream>) -> String {
    let mut line = String::new();
    timeout(PATIENCE, conn.read_line(&mut line)).await.expect("an answer in time").expect("read");
    line.trim_end().to_owned()
}

async fn connect(s: &TestServer) -> BufReader<TcpStream> {
    BufReader::new(TcpStream::connect(s.http_host()).await.expect("connect"))
}

/// A match whose history is large enough to be compressed (over 1 KiB).
async fn long_match(s: &TestServer) -> String {
    let id = s.started_match().await;
    let goals: Vec<_> = (0..20).map(|_| json!({"kind": "goal", "data": {"team": "elp"}})).collect();
    let (status, body) = s.post_events(&id, json!(goals)).await;
    assert_eq!(status.as_u16(), 201, "{body}");
    id
}

/// The read API's answers through the one door: CORS on every one (errors too), pages in
/// each coding, 304s, HTTP/1.0 kept alive.
#[tokio::test]
async fn every_answer_goes_through_the_one_stack() {
    let s = TestServer::start().await;
    let id = long_match(&s).await;
    let history = format!("/1/match/{id}/history");
    let mut conn = connect(&s).await;
    conn.get_mut()
        .write_all(format!("GET {history} HTTP/1.1\r\nhost: t\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let first = answer(&mut conn).await;
    let etag = first.headers.iter().find_map(|h| h.strip_prefix("etag: ")).unwrap().to_owned();
    let requests = [
        ("GET /1/matches HTTP/1.1\r\nhost: t\r\n\r\n".to_owned(), "200 OK"),
        ("GET /1/checkin HTTP/1.1\r\nhost: t\r\n\r\n".to_owned(), "200 OK"),
        (format!("GET /1/match/{id} HTTP/1.1\r\nhost: t\r\n\r\n"), "200 OK"),
        (format!("GET {history} HTTP/1.0\r\nConnection: Keep-Alive\r\nhost: t\r\n\r\n"), "200 OK"),
        (format!("GET {history} HTTP/1.1\r\nIf-None-Match: {etag}\r\n\r\n"), "304 Not Modified"),
        (format!("GET {history} HTTP/1.1\r\nAccept-Encoding: gzip\r\n\r\n"), "200 OK"),
        (format!("GET {history} HTTP/1.1\r\naccept-encoding: gzip, br\r\n\r\n"), "200 OK"),
        (format!("GET {history}?after=x HTTP/1.1\r\n\r\n"), "400 Bad Request"),
        ("GET /1/match/abc-def-2011-09-10/history HTTP/1.1\r\n\r\n".to_owned(), "404 Not Found"),
        ("GET /metrics HTTP/1.1\r\n\r\n".to_owned(), "404 Not Found"),
        ("GET /ops HTTP/1.1\r\n\r\n".to_owned(), "404 Not Found"),
        ("GET /ops.json HTTP/1.1\r\n\r\n".to_owned(), "404 Not Found"),
        (
            "PUT /1/matches HTTP/1.1\r\ncontent-length: 0\r\n\r\n".to_owned(),
            "405 Method Not Allowed",
        ),
    ];
    let mut codings = Vec::new();
    for (request, status) in &requests {
        conn.get_mut().write_all(request.as_bytes()).await.unwrap();
        let a = answer(&mut conn).await;
        assert!(a.status.ends_with(status), "{request}: {a:?}");
        assert!(a.headers.contains(&"access-control-allow-origin: *".to_owned()), "{request}");
        codings.extend(a.headers.iter().filter(|h| h.starts_with("content-encoding")).cloned());
    }
    assert_eq!(codings, ["content-encoding: gzip", "content-encoding: br"]);

    // The operator's figures are on the admin listener, with no CORS: another origin's page
    // has no business reading them.
    for path in ["/metrics", "/ops", "/ops.json", "/healthz"] {
        let answer = reqwest::Client::new()
            .get(format!("{}{path}", s.admin))
            .header("origin", "https://elsewhere.example")
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200, "{path}");
        assert!(answer.headers().get("access-control-allow-origin").is_none(), "{path}");
    }
}

/// Requests sent at once, reads and a watcher's POST among them, are answered in order.
#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let s = TestServer::start().await;
    let id = s.started_match().await;
    let event = r#"{"kind":"goal","data":{"team":"tig"}}"#;
    let mut all = format!("GET /1/match/{id} HTTP/1.1\r\n\r\nGET /1/checkin HTTP/1.1\r\n\r\n");
    all += &format!(
        "POST /1/match/{id}/events HTTP/1.1\r\nauthorization: Bearer {TOKEN}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{event}",
        event.len()
    );
    all += &format!("GET /1/match/{id}/history?after=1 HTTP/1.1\r\n\r\n");
    let mut conn = connect(&s).await;
    conn.get_mut().write_all(all.as_bytes()).await.unwrap();
    let mut bodies = Vec::new();
    for _ in 0..4 {
        let a = answer(&mut conn).await;
        bodies.push((a.status, serde_json::from_slice::<serde_json::Value>(&a.body).unwrap()));
    }
    assert_eq!(bodies[0].1["seq"], 1, "{:?}", bodies[0]);
    assert!(bodies[1].1["port"].is_u64(), "{:?}", bodies[1]);
    assert_eq!(bodies[2].0, "HTTP/1.1 201 Created", "{:?}", bodies[2]);
    assert_eq!(bodies[3].1[0]["seq"], 2, "the history holds the event posted before it");
    assert_eq!(bodies[3].1[0]["data"]["team"], "tig");
}

/// A client idle between requests is not waited for when the node stops: its connection is
/// closed and the node stops at once.
#[tokio::test]
async fn a_kept_alive_connection_is_closed_when_the_node_stops() {
    let s = TestServer::start().await;
    let mut first = connect(&s).await;
    first.get_mut().write_all(b"GET /1/matches HTTP/1.1\r\n\r\n").await.unwrap();
    assert!(answer(&mut first).await.status.starts_with("HTTP/1.1 200"));
    let mut second = connect(&s).await;
    second.get_mut().write_all(b"GET /healthz HTTP/1.1\r\n\r\n").await.unwrap();
    assert!(answer(&mut second).await.status.starts_with("HTTP/1.1 200"));
    timeout(Duration::from_secs(10), s.stop()).await.expect("the node stops without waiting");
    for conn in [&mut first, &mut second] {
        let mut rest = Vec::new();
        let n = timeout(PATIENCE, conn.read_to_end(&mut rest)).await.expect("closed").unwrap();
        assert_eq!(n, 0, "nothing more is sent: {}", String::from_utf8_lossy(&rest));
    }
}

/// A request that ends its connection (HTTP/1.0 without keep-alive, `Connection: close`) is
/// answered, and then the connection is closed.
#[tokio::test]
async fn a_request_that_closes_its_connection_is_answered_then_closed() {
    let s = TestServer::start().await;
    for request in
        ["GET /1/matches HTTP/1.0\r\n\r\n", "GET /1/matches HTTP/1.1\r\nconnection: close\r\n\r\n"]
    {
        let mut conn = connect(&s).await;
        conn.get_mut().write_all(request.as_bytes()).await.unwrap();
        let a = answer(&mut conn).await;
        assert!(a.status.ends_with("200 OK"), "{request}: {a:?}");
        assert_eq!(a.body, b"[]", "{request}");
        let mut rest = Vec::new();
        let n = timeout(PATIENCE, conn.read_to_end(&mut rest)).await.expect("closed").unwrap();
        assert_eq!(n, 0, "{request}");
    }
}

/// Two thousand requests sent at once, without reading, are all answered in order.
#[tokio::test]
async fn two_thousand_pipelined_requests_are_answered_in_order() {
    let s = TestServer::start().await;
    let id = s.started_match().await;
    let mut all = String::new();
    for i in 0..2_000 {
        match i % 2 {
            0 => all += &format!("GET /1/match/{id}/history?after={} HTTP/1.1\r\n\r\n", i % 3),
            _ => all += "GET /1/checkin HTTP/1.1\r\n\r\n",
        }
    }
    let mut conn = connect(&s).await;
    conn.get_mut().write_all(all.as_bytes()).await.unwrap();
    for i in 0..2_000 {
        let a = answer(&mut conn).await;
        assert!(a.status.ends_with("200 OK"), "{i}: {a:?}");
        let body: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
        match i % 2 {
            0 => assert_eq!(body.as_array().unwrap().len(), usize::from(i % 3 == 0), "{i}"),
            _ => assert!(body["port"].is_u64(), "{i}: {body}"),
        }
    }
}

mod flood;
mod limits;
