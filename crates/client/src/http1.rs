//! Just enough HTTP/1.1 for a client of the browser transports (SPEC 5) on a raw socket: a GET
//! written by hand, a response head read and parsed, and the framing of a body (a length,
//! chunked, or until the server closes) decoded in place as its bytes arrive, so that a stream
//! that never ends costs no buffer of its own. The HTTP API's requests go through reqwest
//! (`watcher.rs`); this file is for the requests reqwest cannot show: a stream read as it comes,
//! an upgrade, a kept-alive connection handed over to WebSocket.

use tokio::io::{AsyncRead, AsyncReadExt};

/// Longest response head accepted: far above any head this server sends.
pub const MAX_HEAD: usize = 16 * 1024;
/// Longest whole body [`read_response`] reads: refusals and API answers are small.
pub const MAX_BODY: usize = 1 << 20;

/// Why a browser-transport connection did not open.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The server answered, but not with the stream (or the upgrade) asked for.
    #[error("refused with status {status}: {body}")]
    Refused { status: u16, content_type: Option<String>, body: String },
    /// What the server sent is not HTTP (or not the WebSocket handshake).
    #[error("{0}")]
    Protocol(String),
}

/// A response's status line and headers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Head {
    /// `HTTP/1.<minor>`.
    pub minor_version: u8,
    pub status: u16,
    pub reason: String,
    /// Names as sent; compare them with [`Head::header`], which ignores case.
    pub headers: Vec<(String, String)>,
}

/// How a body ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// `Content-Length` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`: a chunk of size 0 ends it.
    Chunked,
    /// No length: the server's close ends it (HTTP/1.0, or a stream written until it ends).
    Close,
}

impl Head {
    /// Parses a head from the start of `bytes`: `Ok(None)` while it is incomplete, otherwise
    /// the head and the number of bytes it took (the body starts there).
    pub fn parse(bytes: &[u8]) -> Result<Option<(Head, usize)>, String> {
        let Some(end) = find(bytes, b"\r\n\r\n") else {
            if bytes.len() > MAX_HEAD {
                return Err(format!("a response head over {MAX_HEAD} bytes"));
            }
            return Ok(None);
        };
        let text = std::str::from_utf8(&bytes[..end])
            .map_err(|_| "a response head that is not UTF-8".to_owned())?;
        let mut lines = text.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let bad = || format!("not an HTTP status line: {:?}", quote(status_line));
        let rest = status_line.strip_prefix("HTTP/1.").ok_or_else(bad)?;
        let (minor, rest) = rest.split_once(' ').ok_or_else(bad)?;
        let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
        let minor_version = minor.parse().map_err(|_| bad())?;
        let status = code.parse().ok().filter(|s| (100..1000).contains(s)).ok_or_else(bad)?;
        let mut headers = Vec::new();
        for line in lines {
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| format!("not a header line: {:?}", quote(line)))?;
            headers.push((name.trim().to_owned(), value.trim().to_owned()));
        }
        Ok(Some((Head { minor_version, status, reason: reason.to_owned(), headers }, end + 4)))
    }

    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The media type of `Content-Type`, without its parameters, in lower case.
    pub fn media_type(&self) -> Option<String> {
        let value = self.header("content-type")?;
        Some(value.split(';').next().unwrap_or_default().trim().to_ascii_lowercase())
    }

    /// How the body that follows this head ends (RFC 9112 section 6.3, for a GET).
    pub fn framing(&self) -> Result<Framing, String> {
        if matches!(self.status, 100..=199 | 204 | 304) {
            return Ok(Framing::Length(0));
        }
        if let Some(te) = self.header("transfer-encoding") {
            let last = te.rsplit(',').next().unwrap_or_default().trim();
            return Ok(if last.eq_ignore_ascii_case("chunked") {
                Framing::Chunked
            } else {
                Framing::Close
            });
        }
        match self.header("content-length") {
            Some(n) => n
                .parse()
                .map(Framing::Length)
                .map_err(|_| format!("a Content-Length that is not a number: {n:?}")),
            None => Ok(Framing::Close),
        }
    }
}

/// A GET request for `path` on `host` (`host:port`), with `headers` added.
pub fn get_request(host: &str, path: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let mut out = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n");
    for (name, value) in headers {
        out += &format!("{name}: {value}\r\n");
    }
    out += "\r\n";
    out.into_bytes()
}

/// Reads a response head from `stream`; returns it with the body bytes read after it.
pub async fn read_head<S: AsyncRead + Unpin>(stream: &mut S) -> Result<(Head, Vec<u8>), WebError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            let got = String::from_utf8_lossy(&buf).into_owned();
            return Err(WebError::Protocol(format!(
                "closed before a whole head: {:?}",
                quote(&got)
            )));
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some((head, used)) = Head::parse(&buf).map_err(WebError::Protocol)? {
            buf.drain(..used);
            return Ok((head, buf));
        }
    }
}

/// Reads a whole response (head and body, at most [`MAX_BODY`]) from `stream`, leaving the
/// connection right after it (for keep-alive).
pub async fn read_response<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> Result<(Head, Vec<u8>), WebError> {
    let (head, early) = read_head(stream).await?;
    let framing = head.framing().map_err(WebError::Protocol)?;
    let body = read_body(stream, framing, early).await?;
    Ok((head, body))
}

/// Reads a whole body of at most [`MAX_BODY`] bytes, `early` being its bytes read with the head.
pub async fn read_body<S: AsyncRead + Unpin>(
    stream: &mut S,
    framing: Framing,
    mut got: Vec<u8>,
) -> Result<Vec<u8>, WebError> {
    let mut body = Body::new(framing);
    let mut out = Vec::new();
    loop {
        let n = body.decode(&mut got).map_err(WebError::Protocol)?;
        out.extend_from_slice(&got[..n]);
        if out.len() > MAX_BODY {
            return Err(WebError::Protocol(format!("a body over {MAX_BODY} bytes")));
        }
        if body.done() {
            return Ok(out);
        }
        got.resize(8 * 1024, 0);
        let n = stream.read(&mut got).await?;
        if n == 0 {
            if framing == Framing::Close {
                return Ok(out);
            }
            return Err(WebError::Protocol("closed in the middle of a body".into()));
        }
        got.truncate(n);
    }
}

/// A body's decoder: fed the bytes that follow the head in any pieces, it turns each piece into
/// the body's own bytes in place.
#[derive(Debug)]
pub struct Body {
    framing: Framing,
    state: State,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// `Length`: bytes still to come.
    Left(u64),
    /// `Close`: everything until the close.
    Open,
    /// Chunked: in a size line (its value so far, digits seen, in an extension).
    Size {
        value: u64,
        digits: u8,
        ext: bool,
    },
    /// Chunked: after the size line's CR, with the size read.
    SizeLf {
        value: u64,
        digits: u8,
    },
    /// Chunked: bytes of this chunk still to come.
    Data(u64),
    /// Chunked: the CRLF after a chunk's data.
    DataCr,
    DataLf,
    /// Chunked, after the last chunk: trailer lines until an empty one (`start`: at a line's
    /// start).
    Trailer {
        start: bool,
    },
    TrailerLf,
    /// The body is complete.
    Done,
}

impl Body {
    pub fn new(framing: Framing) -> Body {
        let state = match framing {
            Framing::Length(0) => State::Done,
            Framing::Length(n) => State::Left(n),
            Framing::Chunked => State::Size { value: 0, digits: 0, ext: false },
            Framing::Close => State::Open,
        };
        Body { framing, state }
    }

    pub fn framing(&self) -> Framing {
        self.framing
    }

    /// The body ended (its length reached, or its last chunk and trailer read). A `Close` body
    /// ends only with the connection.
    pub fn done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes `buf` (the next bytes after the head) in place: returns `n`, the body's bytes
    /// now in `buf[..n]`. Bytes after the body's end are not body and are dropped.
    pub fn decode(&mut self, buf: &mut [u8]) -> Result<usize, String> {
        let (mut i, mut w) = (0, 0);
        while i < buf.len() {
            let b = buf[i];
            match self.state {
                State::Done => break,
                State::Open => {
                    buf.copy_within(i.., w);
                    w += buf.len() - i;
                    break;
                }
                State::Left(left) | State::Data(left) => {
                    let n = (buf.len() - i).min(usize::try_from(left).unwrap_or(usize::MAX));
                    buf.copy_within(i..i + n, w);
                    (i, w) = (i + n, w + n);
                    let left = left - n as u64;
                    self.state = match (self.state, left) {
                        (State::Left(_), 0) => State::Done,
                        (State::Left(_), _) => State::Left(left),
                        (_, 0) => State::DataCr,
                        _ => State::Data(left),
                    };
                    continue;
                }
                State::Size { value, digits, ext } => {
                    self.state = match b {
                        b'\r' => State::SizeLf { value, digits },
                        b'\n' => size_line_end(value, digits)?,
                        _ if ext => State::Size { value, digits, ext },
                        b';' | b' ' | b'\t' if digits > 0 => {
                            State::Size { value, digits, ext: true }
                        }
                        _ => {
                            let d = (b as char)
                                .to_digit(16)
                                .ok_or_else(|| format!("a bad chunk size byte {:?}", b as char))?;
                            if digits >= 15 {
                                return Err("a chunk size too large".into());
                            }
                            State::Size {
                                value: value * 16 + u64::from(d),
                                digits: digits + 1,
                                ext,
                            }
                        }
                    };
                }
                State::SizeLf { value, digits } => {
                    if b != b'\n' {
                        return Err("a chunk size line without its LF".into());
                    }
                    self.state = size_line_end(value, digits)?;
                }
                State::DataCr => {
                    self.state = match b {
                        b'\r' => State::DataLf,
                        b'\n' => State::Size { value: 0, digits: 0, ext: false },
                        _ => return Err("a chunk longer than its size".into()),
                    };
                }
                State::DataLf => {
                    if b != b'\n' {
                        return Err("a chunk without its CRLF".into());
                    }
                    self.state = State::Size { value: 0, digits: 0, ext: false };
                }
                State::Trailer { start } => {
                    self.state = match (b, start) {
                        (b'\r', true) => State::TrailerLf,
                        (b'\n', true) => State::Done,
                        (b'\n', false) => State::Trailer { start: true },
                        _ => State::Trailer { start: false },
                    };
                }
                State::TrailerLf => {
                    if b != b'\n' {
                        return Err("a trailer line without its LF".into());
                    }
                    self.state = State::Done;
                }
            }
            i += 1;
        }
        Ok(w)
    }
}

/// What follows a chunk size line: the chunk's data, or the trailer after the last chunk.
fn size_line_end(value: u64, digits: u8) -> Result<State, String> {
    if digits == 0 {
        return Err("a chunk size line without a size".into());
    }
    Ok(if value == 0 { State::Trailer { start: true } } else { State::Data(value) })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn quote(text: &str) -> &str {
    match text.char_indices().nth(80) {
        Some((cut, _)) => &text[..cut],
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_parse_with_their_framing() {
        let text = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n\
            transfer-encoding: chunked\r\n\r\nbody";
        assert_eq!(Head::parse(&text[..20]), Ok(None));
        let (head, used) = Head::parse(text).unwrap().unwrap();
        assert_eq!(&text[used..], b"body");
        assert_eq!((head.minor_version, head.status, head.reason.as_str()), (1, 200, "OK"));
        assert_eq!(head.media_type().as_deref(), Some("text/event-stream"));
        assert_eq!(head.header("Transfer-Encoding"), Some("chunked"));
        assert_eq!(head.framing(), Ok(Framing::Chunked));

        let (head, _) = Head::parse(b"HTTP/1.0 200 OK\r\n\r\n").unwrap().unwrap();
        assert_eq!((head.minor_version, head.framing()), (0, Ok(Framing::Close)));
        let (head, _) =
            Head::parse(b"HTTP/1.1 404 Not Found\r\ncontent-length: 25\r\n\r\n").unwrap().unwrap();
        assert_eq!(head.framing(), Ok(Framing::Length(25)));
        let (head, _) = Head::parse(b"HTTP/1.1 101 Switching Protocols\r\n\r\n").unwrap().unwrap();
        assert_eq!(head.framing(), Ok(Framing::Length(0)));
        assert!(Head::parse(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
        assert!(Head::parse(b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n").is_err());
        assert!(Head::parse(&vec![b'x'; MAX_HEAD + 1]).is_err());
        assert_eq!(
            get_request("127.0.0.1:80", "/1/matches", &[("Last-Event-ID", "4")]),
            b"GET /1/matches HTTP/1.1\r\nHost: 127.0.0.1:80\r\nLast-Event-ID: 4\r\n\r\n"
        );
    }

    /// Decodes `input` fed in pieces of `step` bytes.
    fn decode(framing: Framing, input: &[u8], step: usize) -> (Result<Vec<u8>, String>, bool) {
        let mut body = Body::new(framing);
        let mut out = Vec::new();
        for piece in input.chunks(step) {
            let mut buf = piece.to_vec();
            match body.decode(&mut buf) {
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) => return (Err(e), body.done()),
            }
        }
        (Ok(out), body.done())
    }

    #[test]
    fn chunked_bodies_decode_in_place_in_any_pieces() {
        let input = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n1\nx\n0\r\nTrailer: t\r\n\r\nNEXT";
        for step in 1..=input.len() {
            let (out, done) = decode(Framing::Chunked, input, step);
            assert_eq!(out.as_deref(), Ok(&b"hello, worldx"[..]), "pieces of {step}");
            assert!(done);
        }
        for bad in [&b"zz\r\n"[..], b"\r\n", b"3\r\nabcd", b"3\rX", b"fffffffffffffffff\r\n"] {
            assert!(
                decode(Framing::Chunked, bad, 1).0.is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        // Unfinished: not done.
        assert_eq!(decode(Framing::Chunked, b"5\r\nhel", 2), (Ok(b"hel".to_vec()), false));
    }

    #[test]
    fn length_and_close_bodies() {
        assert_eq!(decode(Framing::Length(5), b"hello, world", 3), (Ok(b"hello".to_vec()), true));
        assert_eq!(decode(Framing::Length(0), b"x", 1), (Ok(vec![]), true));
        assert_eq!(decode(Framing::Close, b"all of it", 4), (Ok(b"all of it".to_vec()), false));
    }

    #[tokio::test]
    async fn a_whole_response_is_read_and_the_connection_left_after_it() {
        let mut input: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n[\"a\"]HTTP/1.1";
        let (head, body) = read_response(&mut input).await.unwrap();
        assert_eq!((head.status, body.as_slice()), (200, &b"[\"a\"]"[..]));
        let mut input: &[u8] =
            b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{}\n\r\n0\r\n\r\n";
        let (head, body) = read_response(&mut input).await.unwrap();
        assert_eq!((head.status, body.as_slice()), (404, &b"{}\n"[..]));
        let mut input: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort";
        assert!(read_response(&mut input).await.is_err());
    }
}
