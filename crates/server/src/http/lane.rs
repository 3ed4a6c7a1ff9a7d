//! The fast lane: a connection's plainest keep-alive `GET`s of the read API (`/1/checkin`,
//! `/1/matches`, `/1/match/<id>`, `/1/match/<id>/history`) answered from the socket, parsed by
//! `httparse`, before hyper is given the connection. The answers are `api::read::answer`'s, the
//! very functions the router calls; this file only reads a request head and writes a response as
//! hyper would. The first request that is anything else (another path or method, a body, an
//! upgrade, `Connection: close`, HTTP/1.0 without keep-alive, a head hyper must refuse) goes to
//! hyper with the bytes read so far, and the connection stays hyper's.
//!
//! Why by hand: issue 10 asks for nginx's rate of `304`s, and with hyper driving every request
//! the node spent 20–22 µs of CPU on one against nginx's 13–16; hyper's dispatcher, its timer
//! per request, boxed bodies and header maps were about a third of the node's userspace time.
//! See BENCHMARKS.md, "HTTP API".

use std::fmt::Write;
use std::io::{self, IoSlice};
use std::pin::{pin, Pin};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use axum::http::{HeaderMap, HeaderValue, StatusCode, Version};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Body as _;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::Stopping;
use crate::api::pages::{header_line, CONSULTED};
use crate::api::read::{Answer, CORS};
use crate::api::{self, AppState};

/// How a connection left the lane.
pub enum Left {
    /// Closed: by the client, an error, the header timeout, or the node stopping.
    Closed,
    /// A request the lane does not answer is at the start of the bytes read: hyper's turn.
    ToHyper,
}

/// Longest request head the lane reads; a longer one goes to hyper, which has its own limit
/// and answers it (`431`).
const MAX_HEAD: usize = 16 * 1024;
/// Most header lines the lane parses; more go to hyper.
const MAX_HEADERS: usize = 32;
/// A body at least this long is written from its own buffer, not copied behind the head.
const COPY_BELOW: usize = 16 * 1024;
/// Bytes read at a time: a request head of the read API is a few hundred.
const READ_SIZE: usize = 2048;
/// Answers queued for one write at most (a client may pipeline many requests): past this, they
/// are written before the next request is read, so that a connection holds no more.
const OUT_MAX: usize = 64 * 1024;

/// Answers requests on `stream` until it closes or a request is not the lane's; `read` holds
/// what was read and not yet answered. `timeout`: how long a client has to send a request's
/// head, and to take an answer; a connection that has sent no request for between one and two
/// `timeout`s is closed (hyper closes one that has sent none within one).
pub async fn serve(
    stream: &mut TcpStream,
    read: &mut Vec<u8>,
    state: &AppState,
    stop: &Stopping,
    timeout: Duration,
) -> Left {
    // One timer per connection, moved on when it fires after answers: a request touches no
    // timer.
    let mut idle = pin!(tokio::time::sleep(timeout));
    let mut answered_since = false;
    // Ready once the node stops. It registers no waker: the connection's task left its own with
    // `stop` (`Stopping::watch`), so this must be polled in that task, as it is here.
    let mut stopping = std::future::poll_fn(|_| match stop.stopped() {
        true => Poll::Ready(()),
        false => Poll::Pending,
    });
    loop {
        let mut out = BytesMut::new();
        // Answer every complete request read (a client may pipeline), then write them at once.
        let mut used = 0;
        loop {
            // A client pipelining without end does not hold the node's stop up.
            if stop.stopped() {
                flush(stream, &mut out, &[], timeout).await;
                return Left::Closed;
            }
            let head = match parse(&read[used..]) {
                Parsed::Partial => break,
                Parsed::NotOurs => return to_hyper(stream, &mut out, read, used, timeout).await,
                Parsed::Ours(head) => head,
            };
            let Some(answer) = api::read::answer(state, head.path, head.query, &head.headers).await
            else {
                return to_hyper(stream, &mut out, read, used, timeout).await;
            };
            used += head.len;
            let body = encode(answer, head.version, &mut out).await;
            if body.len() >= COPY_BELOW || out.len() + body.len() > OUT_MAX {
                if !flush(stream, &mut out, &body, timeout).await {
                    return Left::Closed;
                }
            } else {
                out.put(body);
            }
        }
        if used > 0 {
            read.drain(..used);
            answered_since = true;
            if !flush(stream, &mut out, &[], timeout).await {
                return Left::Closed;
            }
        }
        if read.len() >= MAX_HEAD {
            return Left::ToHyper;
        }
        // A connection waiting for its next request holds no buffer (as nginx's): the one it
        // gets when bytes come is one just freed by another, still in the cache.
        if read.is_empty() {
            *read = Vec::new();
        }
        tokio::select! {
            biased;
            ready = stream.readable() => {
                if ready.is_err() {
                    return Left::Closed;
                }
                read.reserve(READ_SIZE);
                // Read as `AsyncRead` does, which after a short read marks the socket not ready
                // (a `try_read` would not, and the next wait would cost a `recv` that finds
                // nothing). Bytes are there, unless the readiness was stale: then this waits
                // for them, until the idle timer's deadline at most.
                let got = tokio::time::timeout_at(idle.deadline(), stream.read_buf(read)).await;
                if !matches!(got, Ok(Ok(n)) if n > 0) {
                    return Left::Closed;
                }
            },
            () = &mut idle => {
                if !std::mem::take(&mut answered_since) {
                    return Left::Closed;
                }
                idle.as_mut().reset(Instant::now() + timeout);
            }
            () = &mut stopping => return Left::Closed,
        }
    }
}

/// Writes the answers before the request hyper is to have, then leaves it to hyper with the
/// bytes from that request on.
async fn to_hyper(
    stream: &mut TcpStream,
    out: &mut BytesMut,
    read: &mut Vec<u8>,
    used: usize,
    timeout: Duration,
) -> Left {
    read.drain(..used);
    match flush(stream, out, &[], timeout).await {
        true => Left::ToHyper,
        false => Left::Closed,
    }
}

/// Writes `out` then `body`; false if the connection failed or the client took nothing for
/// `timeout`.
async fn flush(stream: &mut TcpStream, out: &mut BytesMut, body: &[u8], timeout: Duration) -> bool {
    let mut pending = Buf::chain(&out[..], body);
    let mut written = true;
    while pending.has_remaining() && written {
        written = matches!(
            tokio::time::timeout(timeout, stream.write_buf(&mut pending)).await,
            Ok(Ok(n)) if n > 0
        );
    }
    out.clear();
    written
}

/// A request head the lane answers.
struct Head<'a> {
    len: usize,
    version: Version,
    path: &'a str,
    query: Option<&'a str>,
    /// The headers the answers read ([`CONSULTED`]), and no other.
    headers: HeaderMap,
}

enum Parsed<'a> {
    /// Not a whole head yet.
    Partial,
    /// A request that is not the lane's, or not a valid one: hyper answers it.
    NotOurs,
    Ours(Head<'a>),
}

fn parse(read: &[u8]) -> Parsed<'_> {
    let mut lines = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut lines);
    match request.parse(read) {
        Ok(httparse::Status::Complete(len)) => {
            head(&request, len).map_or(Parsed::NotOurs, Parsed::Ours)
        }
        Ok(httparse::Status::Partial) => Parsed::Partial,
        Err(_) => Parsed::NotOurs,
    }
}

fn head<'a>(request: &httparse::Request<'_, 'a>, len: usize) -> Option<Head<'a>> {
    if request.method != Some("GET") {
        return None;
    }
    // A target the lane takes as it is: a path (and a query) of the plainest characters. Any
    // other (a fragment, a character `http::Uri` refuses, an absolute form) is hyper's.
    let target = request.path?;
    if !target.starts_with('/') || !target.bytes().all(plain) {
        return None;
    }
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    };
    let mut headers = HeaderMap::new();
    let mut keep_alive = request.version == Some(1);
    for line in request.headers.iter() {
        let name = line.name;
        // A body, an upgrade or an expectation are hyper's to handle.
        if HYPER_ONLY.iter().any(|h| name.eq_ignore_ascii_case(h)) {
            return None;
        }
        // So is `Connection` with any other value than `keep-alive` (`close`, `upgrade`...).
        if name.eq_ignore_ascii_case("connection") {
            if !line.value.eq_ignore_ascii_case(b"keep-alive") {
                return None;
            }
            keep_alive = true;
        }
        // Only what the answers read is kept: a header costs an allocation.
        if let Some(consulted) = CONSULTED.iter().find(|c| name.eq_ignore_ascii_case(c.as_str())) {
            headers.append(consulted.clone(), HeaderValue::from_bytes(line.value).ok()?);
        }
    }
    if !keep_alive {
        return None;
    }
    let version = match request.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    Some(Head { len, version, path, query, headers })
}

/// RFC 3986's unreserved and sub-delimiter characters, `:@/?%`: all a read API target needs.
fn plain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?%".contains(&b)
}

/// Headers that make a `GET` hyper's: a body, an upgrade, an expectation.
const HYPER_ONLY: [&str; 4] = ["content-length", "transfer-encoding", "upgrade", "expect"];

/// Writes `answer`'s head to `out` as hyper writes it, and returns its body. To an HTTP/1.0
/// request (kept alive, or it would not be here) hyper answers in HTTP/1.0 and says
/// `connection: keep-alive`.
async fn encode(answer: Answer, version: Version, out: &mut BytesMut) -> Bytes {
    out.reserve(320);
    let status_line = |out: &mut BytesMut, status: StatusCode| {
        out.put_slice(match version {
            Version::HTTP_10 => b"HTTP/1.0 ",
            _ => b"HTTP/1.1 ",
        });
        out.put_slice(status.as_str().as_bytes());
        out.put_u8(b' ');
        out.put_slice(status.canonical_reason().unwrap_or("<none>").as_bytes());
        out.put_slice(b"\r\n");
    };
    let (status, body) = match answer {
        Answer::Page(encoded, choice) => {
            status_line(out, choice.status());
            out.put_slice(encoded.lines(choice));
            (choice.status(), encoded.body(choice))
        }
        Answer::Other(response) => {
            let (parts, body) = response.into_parts();
            status_line(out, parts.status);
            for (name, value) in &parts.headers {
                header_line(out, name, value);
            }
            // The read API's bodies are whole `Bytes`, ready at once.
            let body = match body.size_hint().exact() {
                Some(0) => Bytes::new(),
                _ => body.collect().await.map(|c| c.to_bytes()).unwrap_or_default(),
            };
            (parts.status, body)
        }
    };
    for (name, value) in &CORS {
        header_line(out, name, value);
    }
    if status != StatusCode::NOT_MODIFIED {
        let _ = write!(out, "content-length: {}\r\n", body.len());
    }
    if version == Version::HTTP_10 {
        out.put_slice(b"connection: keep-alive\r\n");
    }
    out.put_slice(b"date: ");
    out.put_slice(&date());
    out.put_slice(b"\r\n\r\n");
    body
}

/// `Date` in the IMF-fixdate form, made once a second per thread (as hyper does).
fn date() -> [u8; 29] {
    use std::cell::Cell;
    thread_local! {
        static CACHED: Cell<(u64, [u8; 29])> = const { Cell::new((u64::MAX, [0; 29])) };
    }
    let now = SystemTime::now();
    let second = now.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    CACHED.with(|cached| {
        let (at, text) = cached.get();
        if at == second {
            return text;
        }
        // IMF-fixdate is 29 bytes, always.
        let text =
            <[u8; 29]>::try_from(httpdate::fmt_http_date(now).as_bytes()).unwrap_or([b' '; 29]);
        cached.set((second, text));
        text
    })
}

/// The connection as hyper reads it: the bytes the lane read first, then the socket.
pub struct Prefixed {
    read: Bytes,
    stream: TcpStream,
}

impl Prefixed {
    pub fn new(read: Bytes, stream: TcpStream) -> Self {
        Prefixed { read, stream }
    }

    /// The socket, and what was read from it and not yet given to hyper.
    pub fn into_parts(self) -> (TcpStream, Bytes) {
        (self.stream, self.read)
    }
}

impl AsyncRead for Prefixed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.read.is_empty() {
            return Pin::new(&mut self.stream).poll_read(cx, buf);
        }
        let n = self.read.len().min(buf.remaining());
        buf.put_slice(&self.read.split_to(n));
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
