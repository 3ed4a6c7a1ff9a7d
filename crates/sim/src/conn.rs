//! A simulated viewer's connection, whatever its transport: a TCP viewer port (v1, v2), or the
//! node's HTTP port upgraded to WebSocket or asked for Server-Sent Events (SPEC 5). Each reads as
//! the bytes a TCP viewer of the same protocol reads (the browser transports' frames as v2 JSON
//! lines, through the client's `ws` and `sse` readers), so that one viewer loop and one checker
//! serve them all. Opening one is here; where to (checkin, `try`) and when are viewer.rs's.
//! Against `https://` nodes every connection is TLS (checked with `--ca-cert` or the system's
//! roots): the HTTP port for WebSocket and SSE, and the viewer ports, as a node with
//! `--tls-cert` serves them.
//!
//! Memory per connection is what a crowd costs: a WebSocket keeps a 4 KiB read buffer
//! (`ws::lean_config`), and an SSE viewer decodes its body in the viewer's own read buffer, in
//! place, keeping no buffer of its own.

use std::path::Path;

use matchstream_client::tls::host_of;
use matchstream_client::ws::{lean_config, match_path};
use matchstream_client::{SseViewer, Stream, TlsClient, WebError, WsViewer};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use super::{Cause, Protocol, SimError, Violation};

/// One viewer's open connection.
pub(crate) enum Conn {
    /// A viewer port (plain or TLS), or a Redis server.
    Tcp(Stream),
    Ws(Box<WsViewer>),
    Sse(Box<SseViewer>),
}

impl Conn {
    /// Reads what comes next into `buf`, as a TCP viewer's bytes; 0 at the end of the stream.
    pub async fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.read(buf).await,
            Conn::Ws(v) => v.read_lines(buf).await,
            Conn::Sse(v) => v.read_lines(buf).await,
        }
    }
}

/// The `host:port` of an HTTP base URL (`http://127.0.0.1:8888`, `https://live.example.org`),
/// where the browser transports are.
pub(crate) fn http_addr(server: &str) -> Result<String, String> {
    let url = reqwest::Url::parse(server).map_err(|e| format!("{server:?}: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("{server:?}: not an http:// or https:// URL"));
    }
    let host = url.host_str().ok_or_else(|| format!("{server:?}: no host"))?;
    let port = url.port_or_known_default().unwrap_or(80);
    Ok(format!("{host}:{port}"))
}

/// The certificates to check TLS nodes with, when the nodes of `servers` speak TLS (all of
/// them `https://`; a mix is refused): `ca_cert`'s, or else the system's roots.
pub(crate) fn tls_for(
    servers: &[String],
    ca_cert: Option<&Path>,
) -> Result<Option<TlsClient>, SimError> {
    let https = servers.iter().filter(|s| s.starts_with("https://")).count();
    if https == 0 {
        return Ok(None);
    }
    if https < servers.len() {
        return Err(SimError::Usage(
            "--server: the nodes are all http:// or all https:// (TLS on every port)".into(),
        ));
    }
    TlsClient::new(ca_cert).map(Some).map_err(|e| SimError::Usage(format!("--ca-cert: {e}")))
}

/// The connection on `tcp` to `addr` (`host:port`): TLS with `tls`, or as it is.
pub(crate) async fn secure(
    tls: Option<&TlsClient>,
    addr: &str,
    tcp: TcpStream,
) -> std::io::Result<Stream> {
    match tls {
        Some(tls) => tls.connect(host_of(addr), tcp).await,
        None => Ok(tcp.into()),
    }
}

/// Asks for the match's WebSocket or event stream (resuming after `from`) on `stream`, connected
/// to `addr`.
pub(crate) async fn open_web(
    stream: Stream,
    addr: &str,
    protocol: Protocol,
    match_id: &str,
    from: Option<u64>,
) -> Result<Conn, Violation> {
    let opened = match protocol {
        Protocol::Ws => {
            let path = match_path(match_id, "ws", from);
            let v = WsViewer::handshake(stream, addr, &path, Some(lean_config())).await;
            v.map(|v| Conn::Ws(Box::new(v)))
        }
        _ => {
            let path = match_path(match_id, "stream", from);
            let v = SseViewer::request(stream, addr, &path, &[]).await;
            v.and_then(|v| match v.head().media_type().as_deref() {
                Some("text/event-stream") => Ok(Conn::Sse(Box::new(v))),
                other => Err(WebError::Protocol(format!("a stream of type {other:?}"))),
            })
        }
    };
    opened.map_err(|e| match e {
        WebError::Io(e) => Violation::new(Cause::of_io(&e), format!("{addr}: {e}")),
        // 404 (unknown match), 503 (draining or full): the server said no.
        WebError::Refused { status, body, .. } => {
            Violation::new(Cause::Refused, format!("{addr}: status {status}: {}", body.trim()))
        }
        WebError::Protocol(why) => Violation::new(Cause::BadFrame, format!("{addr}: {why}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_addresses_of_base_urls() {
        assert_eq!(http_addr("http://127.0.0.1:8888").unwrap(), "127.0.0.1:8888");
        assert_eq!(http_addr("http://example.org/").unwrap(), "example.org:80");
        assert_eq!(http_addr("https://example.org").unwrap(), "example.org:443");
        assert!(http_addr("ftp://example.org").is_err());
        assert!(http_addr("127.0.0.1:8888").is_err());
    }

    #[test]
    fn tls_is_for_https_nodes_all_or_none() {
        let urls = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(tls_for(&urls(&["http://a:1", "http://b:2"]), None).unwrap().is_none());
        assert!(tls_for(&urls(&["http://a:1", "https://b:2"]), None).is_err());
        let e = tls_for(&urls(&["https://a:1"]), Some(Path::new("/nonexistent/ca.pem")));
        assert!(e.is_err_and(|e| e.to_string().contains("/nonexistent/ca.pem")));
    }
}
