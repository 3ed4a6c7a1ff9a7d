//! A viewer over TCP (SPEC 4) as a client sees it: connect, send the connect line, then read what
//! the server sends, as raw bytes or as v2 frames. A viewer that announced v2 checks its own
//! stream as it reads (the stream checkers of `check.rs`: gapless `seq`, snapshot first, nothing
//! after `bye`), so a caller that reads frames cannot miss a gap or a duplicate. No time limits
//! here: a caller that needs one wraps the call in `tokio::time::timeout`.

use std::net::SocketAddr;

use matchstream_proto::ConnectLine;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::check::{Cause, Checker, Protocol, Seen, Violation, MAX_LINE};
use crate::tls::Stream;

/// Why reading a viewer's stream failed.
#[derive(Debug, thiserror::Error)]
pub enum ViewerError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The stream broke the protocol: a gap, a duplicate, a line that is not a frame.
    #[error("{0}")]
    Violation(Violation),
}

/// One step of every viewer's `collect_v2`: an event's seq goes into `seqs`, a snapshot is
/// skipped, and the `bye` is handed back (the stream is over).
pub(crate) fn collect_frame(seqs: &mut Vec<u64>, frame: Value) -> Option<Value> {
    match frame["kind"].as_str() {
        Some("bye") => return Some(frame),
        Some("status") => {}
        _ => seqs.push(frame["seq"].as_u64().unwrap_or_default()),
    }
    None
}

/// A stream that ended before its `bye`, after `events` events.
pub(crate) fn closed_without_bye(events: usize) -> ViewerError {
    let detail = format!("closed without bye after {events} events");
    ViewerError::Violation(Violation::new(Cause::ClosedEarly, detail))
}

/// Feeds one v2 frame that came without its line break (a WebSocket message, an SSE event's
/// data) to `checker`, as the line a TCP viewer reads. A frame that breaks the stream's order is
/// an error; a `bye` is not: its reason is the caller's to judge.
pub(crate) fn check_frame(checker: &mut Checker, frame: &[u8]) -> Result<(), ViewerError> {
    let mut line = Vec::with_capacity(frame.len() + 1);
    line.extend_from_slice(frame);
    line.push(b'\n');
    match checker.feed(&line, &mut Vec::new()) {
        Err(v) if matches!(v.cause, Cause::Duplicate | Cause::OutOfOrder | Cause::BadFrame) => {
            Err(ViewerError::Violation(v))
        }
        _ => Ok(()),
    }
}

/// One viewer connection.
pub struct Viewer {
    reader: BufReader<Stream>,
    /// Checks v2 frames as they are read; `None` for a raw connection or v1.
    checker: Option<Checker>,
}

impl Viewer {
    /// Opens a raw connection: nothing sent yet, nothing checked.
    pub async fn connect(addr: SocketAddr) -> std::io::Result<Viewer> {
        Ok(Viewer::from_stream(TcpStream::connect(addr).await?))
    }

    /// A raw viewer on a connection the caller opened (with its own socket options, or TLS:
    /// [`crate::TlsClient::connect`]).
    pub fn from_stream(stream: impl Into<Stream>) -> Viewer {
        Viewer { reader: BufReader::new(stream.into()), checker: None }
    }

    /// Connects and sends `line`; a v2 viewer checks its stream from here on.
    pub async fn watch(addr: SocketAddr, line: &ConnectLine) -> std::io::Result<Viewer> {
        Viewer::watch_on(TcpStream::connect(addr).await?, line).await
    }

    /// Sends `line` on a connection the caller opened (a TLS one, say); a v2 viewer checks its
    /// stream from here on.
    pub async fn watch_on(
        stream: impl Into<Stream>,
        line: &ConnectLine,
    ) -> std::io::Result<Viewer> {
        let mut viewer = Viewer::from_stream(stream);
        viewer.send(&line.encode()).await?;
        if let ConnectLine::V2 { from, .. } = line {
            let mut checker = Checker::for_protocol(Protocol::V2);
            checker.new_connection(*from);
            viewer.checker = Some(checker);
        }
        Ok(viewer)
    }

    /// Sends raw bytes.
    pub async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.reader.get_mut().write_all(bytes).await
    }

    /// Reads whatever arrives next into `buf`; 0 once the server closed.
    pub async fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.reader.read(buf).await
    }

    /// Everything until the server closes.
    pub async fn read_to_end(&mut self) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::new();
        self.reader.read_to_end(&mut out).await?;
        Ok(out)
    }

    /// The next v2 frame, or `None` once the server closed. A frame that breaks the stream's
    /// order is an error; a `bye` is returned like any frame, its reason is the caller's to judge.
    pub async fn frame(&mut self) -> Result<Option<Value>, ViewerError> {
        let mut line = Vec::new();
        let n = (&mut self.reader).take(MAX_LINE as u64).read_until(b'\n', &mut line).await?;
        if n == 0 {
            return Ok(None);
        }
        let bad = |why: &str| {
            let shown = String::from_utf8_lossy(&line[..line.len().min(80)]).into_owned();
            ViewerError::Violation(Violation::new(Cause::BadFrame, format!("{why}: {shown:?}")))
        };
        if line.last() != Some(&b'\n') {
            return Err(bad("a frame without its newline"));
        }
        if let Some(checker) = &mut self.checker {
            let mut seen: Vec<Seen> = Vec::new();
            if let Err(v) = checker.feed(&line, &mut seen) {
                // A bye other than match_over is a failed stream for a simulated viewer, but
                // a frame like any other for a caller that asked for it.
                if matches!(v.cause, Cause::Duplicate | Cause::OutOfOrder | Cause::BadFrame) {
                    return Err(ViewerError::Violation(v));
                }
            }
        }
        serde_json::from_slice(&line).map(Some).map_err(|_| bad("not a JSON frame"))
    }

    /// Reads v2 frames until the `bye`: the event seqs seen (snapshots left out) and the bye.
    pub async fn collect_v2(&mut self) -> Result<(Vec<u64>, Value), ViewerError> {
        let mut seqs = Vec::new();
        while let Some(frame) = self.frame().await? {
            if let Some(bye) = crate::viewer::collect_frame(&mut seqs, frame) {
                return Ok((seqs, bye));
            }
        }
        Err(crate::viewer::closed_without_bye(seqs.len()))
    }
}
