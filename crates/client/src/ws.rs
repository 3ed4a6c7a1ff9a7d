//! A WebSocket viewer (SPEC 5) through tokio-tungstenite: the upgrade (a refusal comes back as
//! its status and body), then one text message per v2 frame, fed to the same v2 checker as a
//! TCP viewer's lines (gapless `seq`, snapshot first, nothing after `bye`). It shows what a test
//! asserts beyond the frames: the close frame the server sent (code and reason), pongs, and it
//! sends what a browser may send (pings, text, binary, a close).
//!
//! Two ways to read: [`WsViewer::message`] / [`WsViewer::frame`] (for tests), and
//! [`WsViewer::read_lines`], which gives the frames as the lines a TCP v2 viewer reads (for the
//! load simulator, with [`lean_config`] to keep each connection's buffers small). No time
//! limits here: a caller that needs one wraps the call in a timeout.

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;

pub use tokio_tungstenite::tungstenite::Message;

use crate::check::{Cause, Checker, Protocol, Violation, MAX_LINE};
use crate::http1::WebError;
use crate::tls::Stream;
use crate::viewer::{check_frame, ViewerError};

/// Bytes a connection reads at a time with [`lean_config`]: a few frames of a burst; a bigger
/// message grows the buffer for as long as it takes.
const LEAN_READ_BUFFER: usize = 4 * 1024;

/// A configuration for many connections that only read: a small read buffer, writes (pongs and
/// closes) sent at once rather than gathered, and no message above [`MAX_LINE`], the v2
/// checker's own limit.
pub fn lean_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(LEAN_READ_BUFFER)
        .write_buffer_size(0)
        .max_message_size(Some(MAX_LINE))
        .max_frame_size(Some(MAX_LINE))
}

/// The path of a match's browser stream: `kind` is `ws` or `stream`.
pub fn match_path(match_id: &str, kind: &str, from: Option<u64>) -> String {
    match from {
        Some(from) => format!("/1/match/{match_id}/{kind}?from={from}"),
        None => format!("/1/match/{match_id}/{kind}"),
    }
}

/// The close frame a peer sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Closed {
    pub code: u16,
    pub reason: String,
}

/// A message as it came.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Incoming {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    /// The server's close frame (`None`: a close without a code).
    Close(Option<Closed>),
}

/// One WebSocket connection.
pub struct WsViewer {
    ws: WebSocketStream<Stream>,
    /// Checks text messages as v2 frames; `None` for an unchecked viewer.
    checker: Option<Checker>,
    /// The close frame the server sent, once it did.
    closed: Option<Closed>,
    /// `read_lines`: the message being given out and how much of it (its line break included)
    /// was.
    pending: Option<(Utf8Bytes, usize)>,
    /// The connection is over (closed, or broken).
    ended: bool,
}

impl WsViewer {
    /// Connects to `addr` (`host:port`) and upgrades `path`. A refusal is a
    /// [`WebError::Refused`]. Nothing is checked yet.
    pub async fn open(
        addr: &str,
        path: &str,
        config: Option<WebSocketConfig>,
    ) -> Result<WsViewer, WebError> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        WsViewer::handshake(stream, addr, path, config).await
    }

    /// Upgrades `path` on a connection the caller opened (and may have used for plain HTTP
    /// requests first; over TLS, `wss://`); `host` for the Host header.
    pub async fn handshake(
        stream: impl Into<Stream>,
        host: &str,
        path: &str,
        config: Option<WebSocketConfig>,
    ) -> Result<WsViewer, WebError> {
        let stream = stream.into();
        let scheme = if stream.is_tls() { "wss" } else { "ws" };
        let url = format!("{scheme}://{host}{path}");
        match tokio_tungstenite::client_async_with_config(url.as_str(), stream, config).await {
            Ok((ws, _)) => {
                Ok(WsViewer { ws, checker: None, closed: None, pending: None, ended: false })
            }
            Err(WsError::Http(response)) => Err(WebError::Refused {
                status: response.status().as_u16(),
                content_type: response
                    .headers()
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned),
                body: String::from_utf8_lossy(response.body().as_deref().unwrap_or_default())
                    .into_owned(),
            }),
            Err(WsError::Io(e)) => Err(WebError::Io(e)),
            Err(e) => Err(WebError::Protocol(e.to_string())),
        }
    }

    /// Upgrades `/1/match/<id>/ws[?from=<from>]` and checks it from here on.
    pub async fn watch(addr: &str, match_id: &str, from: Option<u64>) -> Result<Self, WebError> {
        let path = match_path(match_id, "ws", from);
        Ok(WsViewer::open(addr, &path, None).await?.checked(from))
    }

    /// Checks text messages as v2 frames from here on; `from` is the seq the stream resumes
    /// after.
    pub fn checked(mut self, from: Option<u64>) -> WsViewer {
        let mut checker = Checker::for_protocol(Protocol::Ws);
        checker.new_connection(from);
        self.checker = Some(checker);
        self
    }

    /// The close frame the server sent, once it did.
    pub fn closed(&self) -> Option<&Closed> {
        self.closed.as_ref()
    }

    /// The next message as it came (text checked by a checked viewer), or `None` once the
    /// connection is over. Pongs to the server's pings and the answer to its close are sent by
    /// themselves as reading goes on.
    pub async fn message(&mut self) -> Result<Option<Incoming>, ViewerError> {
        let Some(msg) = self.next_message().await.map_err(ViewerError::Io)? else {
            return Ok(None);
        };
        Ok(Some(match msg {
            Message::Text(text) => {
                if let Some(checker) = &mut self.checker {
                    check_frame(checker, text.as_bytes())?;
                }
                Incoming::Text(text.as_str().to_owned())
            }
            Message::Binary(b) => Incoming::Binary(b.to_vec()),
            Message::Ping(p) => Incoming::Ping(p.to_vec()),
            Message::Pong(p) => Incoming::Pong(p.to_vec()),
            Message::Close(_) => Incoming::Close(self.closed.clone()),
            // Never read: tungstenite gives raw frames only to writers.
            Message::Frame(_) => Incoming::Binary(Vec::new()),
        }))
    }

    /// The next message from tungstenite, remembering a close; `None` once the connection is
    /// over.
    async fn next_message(&mut self) -> std::io::Result<Option<Message>> {
        if self.ended {
            return Ok(None);
        }
        match self.ws.next().await {
            None => {
                self.ended = true;
                Ok(None)
            }
            Some(Err(e)) => {
                self.ended = true;
                Err(io_error(e))
            }
            Some(Ok(Message::Close(frame))) => {
                self.closed = frame.as_ref().map(|f| Closed {
                    code: u16::from(f.code),
                    reason: f.reason.as_str().to_owned(),
                });
                Ok(Some(Message::Close(frame)))
            }
            Some(Ok(msg)) => Ok(Some(msg)),
        }
    }

    /// The next text message as a v2 frame (pings and pongs skipped), or `None` once the
    /// server closed (see [`WsViewer::closed`]). A binary message is a bad frame.
    pub async fn frame(&mut self) -> Result<Option<Value>, ViewerError> {
        loop {
            match self.message().await? {
                None => return Ok(None),
                Some(Incoming::Text(text)) => {
                    return serde_json::from_str(&text).map(Some).map_err(|_| {
                        let detail = format!("a text message that is not a JSON frame: {text:?}");
                        ViewerError::Violation(Violation::new(Cause::BadFrame, detail))
                    })
                }
                Some(Incoming::Binary(b)) => {
                    let detail = format!("a binary message of {} bytes", b.len());
                    return Err(ViewerError::Violation(Violation::new(Cause::BadFrame, detail)));
                }
                // After the server's close, the next read sends the answer and ends.
                Some(Incoming::Ping(_) | Incoming::Pong(_) | Incoming::Close(_)) => {}
            }
        }
    }

    /// Reads frames until the `bye`: the event seqs seen (snapshots left out) and the bye.
    pub async fn collect_v2(&mut self) -> Result<(Vec<u64>, Value), ViewerError> {
        let mut seqs = Vec::new();
        while let Some(frame) = self.frame().await? {
            if let Some(bye) = crate::viewer::collect_frame(&mut seqs, frame) {
                return Ok((seqs, bye));
            }
        }
        Err(crate::viewer::closed_without_bye(seqs.len()))
    }

    /// Reads until the connection is over; returns what came meanwhile (the close frame
    /// included).
    pub async fn until_end(&mut self) -> Result<Vec<Incoming>, ViewerError> {
        let mut rest = Vec::new();
        while let Some(m) = self.message().await? {
            rest.push(m);
        }
        Ok(rest)
    }

    /// Sends a message (a ping, text, binary, a close).
    pub async fn send(&mut self, msg: Message) -> std::io::Result<()> {
        self.ws.send(msg).await.map_err(io_error)
    }

    /// Sends a close frame with `code` and `reason`.
    pub async fn close(&mut self, code: u16, reason: &str) -> std::io::Result<()> {
        let frame = CloseFrame { code: CloseCode::from(code), reason: reason.into() };
        self.send(Message::Close(Some(frame))).await
    }

    /// The next frames as the lines a TCP v2 viewer reads (each text message and a line
    /// break), written into `buf`; 0 once the connection is over. Unchecked: the caller checks.
    /// A binary message is an `InvalidData` error.
    pub async fn read_lines(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if let Some((text, at)) = &mut self.pending {
                let bytes = text.as_bytes();
                let mut n = 0;
                if *at < bytes.len() {
                    n = (bytes.len() - *at).min(buf.len());
                    buf[..n].copy_from_slice(&bytes[*at..*at + n]);
                    *at += n;
                }
                if *at == bytes.len() && n < buf.len() {
                    buf[n] = b'\n';
                    n += 1;
                    self.pending = None;
                }
                return Ok(n);
            }
            match self.next_message().await? {
                None => return Ok(0),
                Some(Message::Text(text)) => self.pending = Some((text, 0)),
                Some(Message::Binary(b)) => {
                    let why = format!("a binary message of {} bytes", b.len());
                    return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, why));
                }
                Some(_) => {}
            }
        }
    }
}

/// tungstenite's errors as a socket's: a reset is a reset, a protocol error is bad data.
fn io_error(e: WsError) -> std::io::Error {
    use std::io::{Error, ErrorKind};
    match e {
        WsError::Io(e) => e,
        WsError::ConnectionClosed | WsError::AlreadyClosed => {
            Error::new(ErrorKind::NotConnected, e.to_string())
        }
        WsError::Protocol(
            tokio_tungstenite::tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
        ) => Error::new(ErrorKind::ConnectionReset, e.to_string()),
        e => Error::new(ErrorKind::InvalidData, e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A one-connection WebSocket server that sends `messages` and ends.
    async fn server(messages: Vec<Message>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let mut ws = tokio_tungstenite::accept_async(stream).await.unwrap();
            for m in messages {
                ws.send(m).await.unwrap();
            }
            // Reading answers the client's close, if it sends one.
            while let Some(Ok(_)) = ws.next().await {}
        });
        addr
    }

    fn frames() -> Vec<Message> {
        vec![
            Message::text("{\"seq\":2,\"kind\":\"status\",\"data\":{}}"),
            Message::Ping(b"hi".to_vec().into()),
            Message::text(format!(
                "{{\"seq\":3,\"ts\":1,\"kind\":\"comment\",\"data\":{{\"text\":\"{}\"}}}}",
                "x".repeat(9000)
            )),
            Message::text("{\"kind\":\"bye\",\"reason\":\"match_over\"}"),
            Message::Close(Some(CloseFrame {
                code: CloseCode::Normal,
                reason: "match_over".into(),
            })),
        ]
    }

    #[tokio::test]
    async fn frames_read_as_lines_through_a_small_buffer_then_the_close() {
        let addr = server(frames()).await;
        let mut v = WsViewer::open(&addr, "/1/match/x/ws", Some(lean_config())).await.unwrap();
        let (mut out, mut buf) = (Vec::new(), [0u8; 7]);
        loop {
            let n = v.read_lines(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.split_inclusive('\n').collect();
        assert_eq!(lines.len(), 3, "{:?}", &text[..100]);
        assert!(lines.iter().all(|l| l.ends_with("}\n")));
        assert_eq!(v.closed(), Some(&Closed { code: 1000, reason: "match_over".into() }));
    }

    #[tokio::test]
    async fn a_checked_viewer_reads_frames_and_sees_the_close_code() {
        let addr = server(frames()).await;
        let mut v = WsViewer::watch(&addr, "x", None).await.unwrap();
        let (seqs, bye) = v.collect_v2().await.unwrap();
        assert_eq!((seqs, bye["reason"].as_str()), (vec![3], Some("match_over")));
        assert_eq!(v.until_end().await.unwrap(), vec![Incoming::Close(v.closed().cloned())]);
        assert_eq!(v.closed().map(|c| c.code), Some(1000));

        // A gap, and a frame with its line break, are violations.
        let gap = vec![
            Message::text("{\"seq\":2,\"kind\":\"status\",\"data\":{}}"),
            Message::text("{\"seq\":4,\"ts\":1,\"kind\":\"corner\",\"data\":{}}"),
        ];
        let mut v = WsViewer::watch(&server(gap).await, "x", None).await.unwrap();
        assert_eq!(v.frame().await.unwrap().unwrap()["kind"], "status");
        assert!(
            matches!(v.frame().await, Err(ViewerError::Violation(v)) if v.cause == Cause::OutOfOrder)
        );
        let newline = vec![Message::text("{\"seq\":2,\"kind\":\"status\",\"data\":{}}\n")];
        let mut v = WsViewer::watch(&server(newline).await, "x", None).await.unwrap();
        assert!(
            matches!(v.frame().await, Err(ViewerError::Violation(v)) if v.cause == Cause::BadFrame)
        );
    }

    #[tokio::test]
    async fn a_refusal_before_the_upgrade_is_its_status_and_body() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf).await;
            let body = "{\"error\":\"unknown match x\"}";
            let answer = format!(
                "HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\n\
                 content-length: {}\r\n\r\n{body}",
                body.len()
            );
            stream.write_all(answer.as_bytes()).await.unwrap();
        });
        match WsViewer::open(&addr, "/1/match/x/ws", None).await {
            Err(WebError::Refused { status, content_type, body }) => {
                assert_eq!(status, 404);
                assert_eq!(content_type.as_deref(), Some("application/json"));
                assert_eq!(body, "{\"error\":\"unknown match x\"}");
            }
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("upgraded"),
        }
    }

    #[test]
    fn lean_config_is_small_and_valid() {
        let c = lean_config();
        assert_eq!(c.read_buffer_size, LEAN_READ_BUFFER);
        assert_eq!(c.write_buffer_size, 0);
        assert!(c.max_write_buffer_size > c.write_buffer_size);
        assert_eq!(
            match_path("a-b-2020-01-01", "ws", Some(4)),
            "/1/match/a-b-2020-01-01/ws?from=4"
        );
        assert_eq!(match_path("a-b-2020-01-01", "stream", None), "/1/match/a-b-2020-01-01/stream");
    }
}
