//! Each HTTP limit of SPEC 10 hit once, over raw sockets: the head's size and time, the idle
//! keep-alive, the token before the body, the body's size and time, and the connection caps
//! (in total: the backlog holds the rest; per address: told why and closed).

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::timeout;

use super::{answer, connect};
use crate::support::*;

/// Reads until the node closes the connection; how long that took from `began`.
async fn closed_within(conn: &mut TcpStream, began: Instant, limit: Duration) -> Duration {
    let mut rest = Vec::new();
    let read = timeout(limit, conn.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "still open after {limit:?}");
    began.elapsed()
}

/// A head must arrive within its timeout (SPEC 10: 10 s): a connection that sends nothing, or
/// half a head, is closed by then, not before.
#[tokio::test]
async fn a_head_must_arrive_within_its_timeout() {
    let s = TestServer::start_with(|c| c.http_head_timeout = Duration::from_secs(1)).await;
    let began = Instant::now();
    let mut silent = TcpStream::connect(s.http_host()).await.unwrap();
    let mut half = TcpStream::connect(s.http_host()).await.unwrap();
    half.write_all(b"GET /1/matches HTTP/1.1\r\nhost: a").await.unwrap();
    for conn in [&mut silent, &mut half] {
        let took = closed_within(conn, began, Duration::from_secs(5)).await;
        assert!(took >= Duration::from_millis(800), "closed too early: {took:?}");
    }
    let text = crate::metrics::scrape(&s).await;
    let series = "matchstream_limit_refusals_total{limit=\"http_deadline\"}";
    assert_eq!(crate::metrics::value(&text, series), 2.0, "counted");
    // The node is unharmed.
    assert_eq!(s.get("/1/matches").await.0, 200);
}

/// A kept-alive connection may wait for its next request the idle timeout (60 s), longer than
/// a head may take; then it is closed.
#[tokio::test]
async fn an_idle_kept_alive_connection_lasts_the_idle_timeout_not_the_head_timeout() {
    let s = TestServer::start_with(|c| {
        c.http_head_timeout = Duration::from_millis(500);
        c.http_idle_timeout = Duration::from_secs(3);
    })
    .await;
    let mut conn = connect(&s).await;
    conn.get_mut().write_all(b"GET /1/matches HTTP/1.1\r\n\r\n").await.unwrap();
    assert!(answer(&mut conn).await.status.ends_with("200 OK"));
    // Idle for three head timeouts: still served.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    conn.get_mut().write_all(b"GET /1/checkin HTTP/1.1\r\n\r\n").await.unwrap();
    assert!(answer(&mut conn).await.status.ends_with("200 OK"));
    let took = closed_within(conn.get_mut(), Instant::now(), Duration::from_secs(8)).await;
    assert!(took >= Duration::from_millis(2500), "closed before the idle timeout: {took:?}");
}

/// A head over 16 KiB is refused (`431`) and the connection closed.
#[tokio::test]
async fn a_head_over_its_size_is_refused() {
    let s = TestServer::start().await;
    let mut conn = connect(&s).await;
    let big = format!("GET /1/matches HTTP/1.1\r\nx-big: {}\r\n\r\n", "a".repeat(20 * 1024));
    conn.get_mut().write_all(big.as_bytes()).await.unwrap();
    let a = answer(&mut conn).await;
    assert!(a.status.contains("431"), "{a:?}");
    // A head just under the limit is served.
    let mut conn = connect(&s).await;
    let fine = format!("GET /1/matches HTTP/1.1\r\nx-big: {}\r\n\r\n", "a".repeat(12 * 1024));
    conn.get_mut().write_all(fine.as_bytes()).await.unwrap();
    assert!(answer(&mut conn).await.status.ends_with("200 OK"));
}

/// The token is checked before the body is read (SPEC 10): a watcher request without a valid
/// one is answered `401` at once, though its body never comes.
#[tokio::test]
async fn the_token_is_checked_before_the_body_is_read() {
    let s = TestServer::start().await;
    for auth in ["", "authorization: Bearer n0t-it\r\n", "authorization: Basic dGVzdA==\r\n"] {
        let mut conn = connect(&s).await;
        let head = format!("POST /1/matches HTTP/1.1\r\n{auth}content-length: 1000\r\n\r\n{{\"ho");
        conn.get_mut().write_all(head.as_bytes()).await.unwrap();
        let a = timeout(Duration::from_secs(3), answer(&mut conn)).await.expect("at once");
        assert!(a.status.contains("401"), "{auth}: {a:?}");
        let body: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
        let error = body["error"].as_str().unwrap();
        assert!(error.contains("token") || error.contains("Bearer"), "{body}");
        assert!(!error.contains("n0t-it") && !error.contains("dGVzdA"), "never repeated: {body}");
    }
    // The scheme in any case (RFC 9110: case-insensitive).
    let mut conn = connect(&s).await;
    let body = r#"{"home":"elp","visit":"tig","start_date":"2011-09-10"}"#;
    let request = format!(
        "POST /1/matches HTTP/1.1\r\nauthorization: bEaReR {TOKEN}\r\ncontent-length: {}\r\n\
         \r\n{body}",
        body.len()
    );
    conn.get_mut().write_all(request.as_bytes()).await.unwrap();
    assert!(answer(&mut conn).await.status.contains("201"));
}

/// A body over 256 KiB is refused `413`: at once when its length says so, and as soon as the
/// limit is passed when it comes in chunks; a body that does not arrive in time gets `408`.
#[tokio::test]
async fn a_body_past_its_size_or_time_is_refused() {
    let s = TestServer::start_with(|c| c.http_body_timeout = Duration::from_secs(1)).await;
    let id = s.started_match().await;
    let auth = format!("authorization: Bearer {TOKEN}\r\n");
    let path = format!("/1/match/{id}/events");
    let mut conn = connect(&s).await;
    let head = format!("POST {path} HTTP/1.1\r\n{auth}content-length: 300000\r\n\r\n");
    conn.get_mut().write_all(head.as_bytes()).await.unwrap();
    let a = timeout(Duration::from_secs(3), answer(&mut conn)).await.expect("at once");
    assert!(a.status.contains("413"), "{a:?}");
    assert!(String::from_utf8_lossy(&a.body).contains("262144 bytes (--http-max-body)"), "{a:?}");

    let mut conn = connect(&s).await;
    let head = format!("POST {path} HTTP/1.1\r\n{auth}transfer-encoding: chunked\r\n\r\n");
    conn.get_mut().write_all(head.as_bytes()).await.unwrap();
    let chunk = format!("10000\r\n{}\r\n", "[".repeat(0x10000));
    let mut refused = None;
    for _ in 0..8 {
        if conn.get_mut().write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
        if let Ok(a) = timeout(Duration::from_millis(200), answer(&mut conn)).await {
            refused = Some(a);
            break;
        }
    }
    let a = match refused {
        Some(a) => a,
        None => timeout(Duration::from_secs(3), answer(&mut conn)).await.expect("an answer"),
    };
    assert!(a.status.contains("413"), "{a:?}");

    let mut conn = connect(&s).await;
    let head = format!("POST {path} HTTP/1.1\r\n{auth}content-length: 100\r\n\r\n[{{\"ki");
    conn.get_mut().write_all(head.as_bytes()).await.unwrap();
    let began = Instant::now();
    let a = timeout(Duration::from_secs(5), answer(&mut conn)).await.expect("an answer");
    assert!(a.status.contains("408"), "{a:?}");
    assert!(began.elapsed() >= Duration::from_millis(800));
    let text = String::from_utf8_lossy(&a.body).into_owned();
    assert!(text.contains("within 1 s of its head (--http-body-timeout)"), "{text}");
    let text = crate::metrics::scrape(&s).await;
    let count = |limit: &str| {
        let series = format!("matchstream_limit_refusals_total{{limit=\"{limit}\"}}");
        crate::metrics::value(&text, &series)
    };
    assert_eq!((count("http_body_size"), count("http_body_timeout")), (2.0, 1.0));
}

/// One address holds at most its share of connections: the next is told why (`429`) and
/// closed, while another address is served; once one closes, the address is served again.
#[tokio::test]
async fn connections_per_address_are_capped() {
    let s = TestServer::start_with(|c| c.http_max_per_address = 5).await;
    let addr = s.http_host().parse().unwrap();
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(connect_from([127, 0, 0, 1], addr).await);
    }
    let mut sixth = BufReader::new(connect_from([127, 0, 0, 1], addr).await);
    let a = answer(&mut sixth).await;
    assert!(a.status.contains("429"), "{a:?}");
    let text = String::from_utf8_lossy(&a.body).into_owned();
    assert!(text.contains("at most 5 at once (--http-max-per-address)"), "{text}");
    closed_within(sixth.get_mut(), Instant::now(), Duration::from_secs(2)).await;

    let mut other = BufReader::new(connect_from([127, 0, 0, 2], addr).await);
    other.get_mut().write_all(b"GET /1/matches HTTP/1.1\r\n\r\n").await.unwrap();
    assert!(answer(&mut other).await.status.ends_with("200 OK"));

    let text = crate::metrics::scrape(&s).await;
    let series = "matchstream_limit_refusals_total{limit=\"http_per_address\"}";
    assert_eq!(crate::metrics::value(&text, series), 1.0, "counted");

    drop(held.pop());
    eventually("the address is served again", PATIENCE, async || {
        let mut conn = BufReader::new(connect_from([127, 0, 0, 1], addr).await);
        conn.get_mut().write_all(b"GET /1/matches HTTP/1.1\r\n\r\n").await.ok()?;
        let a = timeout(Duration::from_secs(2), answer(&mut conn)).await.ok()?;
        a.status.ends_with("200 OK").then_some(())
    })
    .await;
}

/// Past the cap on connections, the next waits in the kernel's backlog (not refused) and is
/// served as soon as one closes.
#[tokio::test]
async fn past_the_connection_cap_a_connection_waits_its_turn() {
    let s = TestServer::start_with(|c| c.http_max_connections = 3).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut conn = connect(&s).await;
        conn.get_mut().write_all(b"GET /1/matches HTTP/1.1\r\n\r\n").await.unwrap();
        assert!(answer(&mut conn).await.status.ends_with("200 OK"));
        held.push(conn);
    }
    let mut waiting = connect(&s).await;
    waiting.get_mut().write_all(b"GET /1/checkin HTTP/1.1\r\n\r\n").await.unwrap();
    let early = timeout(Duration::from_millis(700), answer(&mut waiting)).await;
    assert!(early.is_err(), "answered past the cap: {early:?}");
    drop(held.pop());
    let a = timeout(PATIENCE, answer(&mut waiting)).await.expect("served once a slot frees");
    assert!(a.status.ends_with("200 OK"), "{a:?}");
}
