//! A Server-Sent Events viewer (SPEC 5) on a raw socket: the GET written by hand, the status
//! and headers read, then the `text/event-stream` body (a length, chunked, or until the close:
//! `http1.rs`) parsed as it comes: `id:`, `event:` and `data:` lines, a blank line ending an
//! event, `:` comment lines (the server's pings) kept apart. Each event's data is a v2 frame and
//! goes through the same v2 checker as a TCP viewer's lines (gapless `seq`, snapshot first,
//! nothing after `bye`); a checked viewer also holds the SSE framing to SPEC 5: `event` is the
//! frame's `kind`, `id` its `seq`, and the `bye` has no `id`.
//!
//! Two ways to read: [`SseViewer::event`] (whole events, for tests), and
//! [`SseViewer::read_lines`], which turns the body into the v2 JSON lines a TCP viewer would
//! read, in the caller's buffer and in place (for the load simulator: no buffer per
//! connection). No time limits here: a caller that needs one wraps the call in a timeout.

use std::collections::VecDeque;
use std::ops::Range;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::check::{Cause, Checker, Protocol, Violation, MAX_LINE};
use crate::http1::{self, Body, Framing, Head, WebError};
use crate::tls::Stream;
use crate::viewer::{check_frame, ViewerError};

/// How much a whole-event reader reads at a time.
const READ_CHUNK: usize = 8 * 1024;

/// The field of an event-stream line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    Id,
    Event,
    Data,
    Retry,
    /// A line starting with `:`.
    Comment,
    /// Any other field name, which a client ignores.
    Other,
}

/// What the parser found next in a piece of the body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Piece {
    /// Part of a field's value, `data[range]` of the bytes given; `end`: the line ended right
    /// after it.
    Value { field: Field, range: Range<usize>, end: bool },
    /// A blank line: the event so far is complete.
    Dispatch,
}

/// The event-stream parser: fed the body in any pieces, it hands out values as ranges of the
/// bytes given (never copying them), so that a reader chooses what to keep.
#[derive(Debug, Default)]
pub struct Parser {
    state: LineState,
    /// The last byte was a CR: a LF right after it ends the same line.
    cr: bool,
    /// The field name being read (the longest one that matters, `event`, has 5 bytes).
    name: [u8; 5],
    name_len: usize,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum LineState {
    #[default]
    LineStart,
    Name,
    /// Just after the `:`: one space is skipped.
    Space(Field),
    Value(Field),
}

impl Parser {
    /// The next piece of `data` from `*pos` on, advancing `pos`; `None` once `data` is used up.
    pub fn next(&mut self, data: &[u8], pos: &mut usize) -> Option<Piece> {
        while *pos < data.len() {
            let b = data[*pos];
            if std::mem::take(&mut self.cr) && b == b'\n' {
                *pos += 1;
                continue;
            }
            match self.state {
                LineState::LineStart => match b {
                    b'\r' | b'\n' => {
                        self.cr = b == b'\r';
                        *pos += 1;
                        return Some(Piece::Dispatch);
                    }
                    b':' => {
                        *pos += 1;
                        self.state = LineState::Space(Field::Comment);
                    }
                    _ => {
                        self.name_len = 0;
                        self.state = LineState::Name;
                    }
                },
                LineState::Name => match b {
                    b':' => {
                        *pos += 1;
                        self.state = LineState::Space(self.field());
                    }
                    b'\r' | b'\n' => {
                        // A field name alone: its value is empty.
                        self.cr = b == b'\r';
                        *pos += 1;
                        self.state = LineState::LineStart;
                        let at = *pos - 1;
                        return Some(Piece::Value {
                            field: self.field(),
                            range: at..at,
                            end: true,
                        });
                    }
                    _ => {
                        if let Some(slot) = self.name.get_mut(self.name_len) {
                            *slot = b;
                        }
                        self.name_len = self.name_len.saturating_add(1);
                        *pos += 1;
                    }
                },
                LineState::Space(field) => {
                    if b == b' ' {
                        *pos += 1;
                    }
                    self.state = LineState::Value(field);
                }
                LineState::Value(field) => {
                    let start = *pos;
                    let eol = data[start..].iter().position(|&c| c == b'\r' || c == b'\n');
                    return Some(match eol {
                        Some(k) => {
                            let end = start + k;
                            self.cr = data[end] == b'\r';
                            *pos = end + 1;
                            self.state = LineState::LineStart;
                            Piece::Value { field, range: start..end, end: true }
                        }
                        None => {
                            *pos = data.len();
                            Piece::Value { field, range: start..data.len(), end: false }
                        }
                    });
                }
            }
        }
        None
    }

    fn field(&self) -> Field {
        match self.name.get(..self.name_len) {
            Some(b"id") => Field::Id,
            Some(b"event") => Field::Event,
            Some(b"data") => Field::Data,
            Some(b"retry") => Field::Retry,
            _ => Field::Other,
        }
    }

    /// Turns `buf` (body bytes) into the values of its `data` lines, each followed by a line
    /// break, in place: returns `n`, the length of that text now in `buf[..n]`. Every other
    /// line (`id`, `event`, comments, blank lines) is dropped. Each byte read yields at most one
    /// byte written, so the text never overtakes what is still to be read.
    pub fn data_lines(&mut self, buf: &mut [u8]) -> usize {
        let (mut pos, mut w) = (0, 0);
        let len = buf.len();
        while let Some(piece) = self.next(&buf[..len], &mut pos) {
            if let Piece::Value { field: Field::Data, range, end } = piece {
                let n = range.len();
                buf.copy_within(range, w);
                w += n;
                if end {
                    buf[w] = b'\n';
                    w += 1;
                }
            }
        }
        w
    }
}

/// One event: its fields as sent (`None`: the field was absent from this event).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: Option<String>,
    /// The `data` lines, joined by `\n`.
    pub data: String,
}

/// What a whole-event reader yields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SseItem {
    Event(SseEvent),
    /// A comment line's text (after the `:` and one space), e.g. `ping`.
    Comment(String),
}

/// Gathers pieces into events and comments.
#[derive(Debug, Default)]
struct Builder {
    id: Option<String>,
    event: Option<String>,
    data: Option<String>,
    /// The value of the line being read.
    value: Vec<u8>,
}

impl Builder {
    fn piece(&mut self, data: &[u8], piece: Piece) -> Result<Option<SseItem>, Violation> {
        match piece {
            Piece::Value { field, range, end } => {
                if !matches!(field, Field::Other | Field::Retry) {
                    self.value.extend_from_slice(&data[range]);
                }
                if self.value.len() > MAX_LINE {
                    let detail = format!("an event-stream line over {MAX_LINE} bytes");
                    return Err(Violation::new(Cause::BadFrame, detail));
                }
                if !end {
                    return Ok(None);
                }
                let value = String::from_utf8(std::mem::take(&mut self.value)).map_err(|_| {
                    Violation::new(Cause::BadFrame, "an event-stream line that is not UTF-8")
                })?;
                match field {
                    Field::Id => self.id = Some(value),
                    Field::Event => self.event = Some(value),
                    Field::Data => match &mut self.data {
                        Some(d) => {
                            d.push('\n');
                            d.push_str(&value);
                        }
                        None => self.data = Some(value),
                    },
                    Field::Comment => return Ok(Some(SseItem::Comment(value))),
                    Field::Retry | Field::Other => {}
                }
                Ok(None)
            }
            Piece::Dispatch => {
                let (id, event, data) = (self.id.take(), self.event.take(), self.data.take());
                // An event without data is not dispatched (the HTML standard's rule).
                Ok(data.map(|data| SseItem::Event(SseEvent { id, event, data })))
            }
        }
    }
}

/// Holds an event to SPEC 5's framing: `event` is the frame's `kind`, `id` is its `seq`
/// (snapshot included), and the `bye` has none.
pub fn check_framing(ev: &SseEvent) -> Result<(), Violation> {
    let bad = |why: String| Violation::new(Cause::BadFrame, why);
    let frame: Value = serde_json::from_str(&ev.data)
        .map_err(|_| bad(format!("data that is not a JSON frame: {:?}", short(&ev.data))))?;
    let kind = frame["kind"].as_str().unwrap_or_default();
    if ev.event.as_deref() != Some(kind) {
        return Err(bad(format!("event {:?} for a {kind:?} frame", ev.event)));
    }
    let want = match kind {
        "bye" => None,
        _ => Some(frame["seq"].as_u64().map(|s| s.to_string()).unwrap_or_default()),
    };
    if ev.id != want {
        return Err(bad(format!("id {:?} for a {kind} frame with seq {}", ev.id, frame["seq"])));
    }
    Ok(())
}

/// One SSE connection.
pub struct SseViewer {
    stream: Stream,
    head: Head,
    body: Body,
    parser: Parser,
    /// Body bytes read with the head, not given out yet.
    early: Vec<u8>,
    /// The server closed the connection.
    eof: bool,
    /// Whole-event reading only: its read buffer, what was parsed, what is ready.
    buf: Vec<u8>,
    builder: Builder,
    items: VecDeque<SseItem>,
    /// Checks the events' frames; `None` for an unchecked viewer.
    checker: Option<Checker>,
}

impl SseViewer {
    /// Connects to `addr` (`host:port`) and asks for `path`, with `headers` added. Anything but
    /// `200` is a [`WebError::Refused`] with its whole body. Nothing is checked yet.
    pub async fn open(
        addr: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<SseViewer, WebError> {
        let stream = TcpStream::connect(addr).await?;
        SseViewer::request(stream, addr, path, headers).await
    }

    /// Like [`SseViewer::open`] on a connection the caller opened (TLS: `https`); `host` for
    /// the Host header.
    pub async fn request(
        stream: impl Into<Stream>,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<SseViewer, WebError> {
        let mut stream = stream.into();
        let mut all = vec![("Accept", "text/event-stream")];
        all.extend_from_slice(headers);
        stream.write_all(&http1::get_request(host, path, &all)).await?;
        let (head, early) = http1::read_head(&mut stream).await?;
        let framing = head.framing().map_err(WebError::Protocol)?;
        if head.status != 200 {
            let body = http1::read_body(&mut stream, framing, early).await?;
            return Err(WebError::Refused {
                status: head.status,
                content_type: head.header("content-type").map(str::to_owned),
                body: String::from_utf8_lossy(&body).into_owned(),
            });
        }
        Ok(SseViewer {
            stream,
            head,
            body: Body::new(framing),
            parser: Parser::default(),
            early,
            eof: false,
            buf: Vec::new(),
            builder: Builder::default(),
            items: VecDeque::new(),
            checker: None,
        })
    }

    /// Opens `/1/match/<id>/stream[?from=<from>]` and checks it from here on.
    pub async fn watch(addr: &str, match_id: &str, from: Option<u64>) -> Result<Self, WebError> {
        let path = crate::ws::match_path(match_id, "stream", from);
        Ok(SseViewer::open(addr, &path, &[]).await?.checked(from))
    }

    /// Checks the frames from here on; `from` is the seq the stream resumes after (`from` or
    /// `Last-Event-ID`, whichever the server goes by).
    pub fn checked(mut self, from: Option<u64>) -> SseViewer {
        let mut checker = Checker::for_protocol(Protocol::Sse);
        checker.new_connection(from);
        self.checker = Some(checker);
        self
    }

    /// The response's status line and headers.
    pub fn head(&self) -> &Head {
        &self.head
    }

    /// The body is over: its end was read, or the server closed.
    pub fn ended(&self) -> bool {
        self.eof || self.body.done()
    }

    /// Reads the next piece of the body into `buf` (bytes read with the head first) and
    /// decodes its framing in place: the body bytes now in `buf[..n]`, 0 at its end.
    async fn read_body(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if self.ended() || buf.is_empty() {
                return Ok(0);
            }
            let n = if self.early.is_empty() {
                self.stream.read(buf).await?
            } else {
                let n = self.early.len().min(buf.len());
                buf[..n].copy_from_slice(&self.early[..n]);
                self.early.drain(..n);
                if self.early.is_empty() {
                    self.early = Vec::new();
                }
                n
            };
            if n == 0 {
                self.eof = true;
                if self.body.framing() != Framing::Close {
                    let e = std::io::ErrorKind::UnexpectedEof;
                    return Err(std::io::Error::new(e, "closed in the middle of the body"));
                }
                return Ok(0);
            }
            let n = self.body.decode(&mut buf[..n]).map_err(std::io::Error::other)?;
            if n > 0 {
                return Ok(n);
            }
        }
    }

    /// The next v2 frames as the lines a TCP v2 viewer reads (each event's data and a line
    /// break), written into `buf`; 0 at the end of the stream. Unchecked: the caller checks.
    pub async fn read_lines(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let n = self.read_body(buf).await?;
            if n == 0 {
                return Ok(0);
            }
            let n = self.parser.data_lines(&mut buf[..n]);
            if n > 0 {
                return Ok(n);
            }
        }
    }

    /// The next event or comment, or `None` at the end of the stream.
    pub async fn item(&mut self) -> Result<Option<SseItem>, ViewerError> {
        loop {
            if let Some(item) = self.items.pop_front() {
                return Ok(Some(item));
            }
            let mut buf = std::mem::take(&mut self.buf);
            buf.resize(READ_CHUNK, 0);
            let read = self.read_body(&mut buf).await;
            let parsed = read.map(|n| self.parse(&buf[..n]).map(|()| n));
            self.buf = buf;
            match parsed? {
                Ok(0) => return Ok(None),
                Ok(_) => {}
                Err(v) => return Err(ViewerError::Violation(v)),
            }
        }
    }

    fn parse(&mut self, data: &[u8]) -> Result<(), Violation> {
        let mut pos = 0;
        while let Some(piece) = self.parser.next(data, &mut pos) {
            if let Some(item) = self.builder.piece(data, piece)? {
                self.items.push_back(item);
            }
        }
        Ok(())
    }

    /// The next event (comments skipped), or `None` at the end of the stream. A checked viewer
    /// fails an event that breaks the stream's order or SPEC 5's framing; a `bye` is returned
    /// like any event, its reason is the caller's to judge.
    pub async fn event(&mut self) -> Result<Option<SseEvent>, ViewerError> {
        loop {
            let ev = match self.item().await? {
                None => return Ok(None),
                Some(SseItem::Comment(_)) => continue,
                Some(SseItem::Event(ev)) => ev,
            };
            if let Some(checker) = &mut self.checker {
                check_framing(&ev).map_err(ViewerError::Violation)?;
                check_frame(checker, ev.data.as_bytes())?;
            }
            return Ok(Some(ev));
        }
    }

    /// The next event's v2 frame, or `None` at the end of the stream.
    pub async fn frame(&mut self) -> Result<Option<Value>, ViewerError> {
        let Some(ev) = self.event().await? else { return Ok(None) };
        serde_json::from_str(&ev.data).map(Some).map_err(|_| {
            let detail = format!("data that is not a JSON frame: {:?}", short(&ev.data));
            ViewerError::Violation(Violation::new(Cause::BadFrame, detail))
        })
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
}

fn short(text: &str) -> &str {
    match text.char_indices().nth(80) {
        Some((cut, _)) => &text[..cut],
        None => text,
    }
}

#[cfg(test)]
mod tests;
