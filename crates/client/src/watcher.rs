//! The HTTP side of a client (SPEC sections 2 and 3): one server's base URL and a watcher token,
//! requests sent and their whole answers read. It knows paths and status codes, nothing of the
//! server's insides; what a status means for a caller (replay, a test, the simulator) is the
//! caller's to decide. It never retries by itself: a retry is only safe with `?after=` (see
//! `replay`), which is the caller's to add.

use std::time::Duration;

use reqwest::{Client, Method, StatusCode, Url};
use serde::Deserialize;
use serde_json::Value;

use crate::tls::TlsClient;

/// How long to wait for a TCP connection to the server: a server that is up answers at once.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one request may take in all: the server acknowledges an event once it is durable,
/// which takes milliseconds; anything this slow is a server in trouble.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How much of a non-JSON error body to quote: enough to recognise a proxy's error page.
const MAX_QUOTED_BODY: usize = 200;

/// Why a request got no answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WatcherError {
    #[error("{server:?} is not a server URL such as http://127.0.0.1:8888 ({reason})")]
    BadServer { server: String, reason: String },
    /// No answer at all: the server is down, unreachable or too slow (or its certificate is
    /// not trusted: the reason says so).
    #[error("cannot reach the server at {server}: {reason}")]
    Unreachable { server: String, reason: String },
    /// An `https://` server, and no certificates to trust it with (see [`TlsClient::new`]).
    #[error("{0}")]
    Tls(String),
}

/// A whole answer: its status and body.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: StatusCode,
    pub text: String,
}

impl Answer {
    /// The body as JSON, `Null` when it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }

    /// The server's `{"error": "..."}` text, or whatever else it sent, or the status's reason.
    pub fn error_message(&self) -> String {
        #[derive(Deserialize)]
        struct ErrorBody {
            error: String,
        }
        match serde_json::from_str::<ErrorBody>(&self.text) {
            Ok(body) => body.error,
            Err(_) if self.text.trim().is_empty() => {
                self.status.canonical_reason().unwrap_or("no reason given").to_owned()
            }
            Err(_) => quote(&self.text),
        }
    }
}

/// One server's HTTP API, with the token its watcher requests carry. Cheap to clone: clones
/// share one connection pool.
#[derive(Clone, Debug)]
pub struct Watcher {
    client: Client,
    /// The server as the user gave it, for messages.
    server: String,
    /// The server without a trailing `/`, for building URLs.
    base: String,
    token: String,
}

impl Watcher {
    /// A client of `server` (`http://host:port`, or `https://` trusting the system's roots),
    /// publishing with `token`.
    pub fn new(server: &str, token: &str) -> Result<Watcher, WatcherError> {
        Watcher::with_tls(server, token, None)
    }

    /// Like [`Watcher::new`]; an `https://` server's certificate is checked against `tls`'s
    /// certificates (a private CA), or the system's roots when `None`.
    pub fn with_tls(
        server: &str,
        token: &str,
        tls: Option<&TlsClient>,
    ) -> Result<Watcher, WatcherError> {
        let bad = |reason: String| WatcherError::BadServer { server: server.to_owned(), reason };
        let url = Url::parse(server).map_err(|e| bad(e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(bad(format!("the scheme must be http or https, not {}", url.scheme())));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(bad("a base URL has no query or fragment".into()));
        }
        let mut builder =
            Client::builder().connect_timeout(CONNECT_TIMEOUT).timeout(REQUEST_TIMEOUT);
        if url.scheme() == "https" {
            let tls = match tls {
                Some(tls) => tls.clone(),
                None => TlsClient::new(None).map_err(|e| WatcherError::Tls(e.to_string()))?,
            };
            builder = builder.use_preconfigured_tls(tls.config().clone());
        }
        let client = builder.build().map_err(|e| bad(root_cause(&e)))?;
        Ok(Watcher {
            client,
            server: server.to_owned(),
            base: server.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
        })
    }

    /// Sends one request with the watcher token (and `body` as JSON) and reads the whole answer
    /// (answers are small JSON documents).
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Answer, WatcherError> {
        let mut request =
            self.client.request(method, format!("{}{path}", self.base)).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(body);
        }
        self.answer(request).await
    }

    /// `GET path` without a token, as any reader would.
    pub async fn get(&self, path: &str) -> Result<Answer, WatcherError> {
        self.answer(self.client.get(format!("{}{path}", self.base))).await
    }

    async fn answer(&self, request: reqwest::RequestBuilder) -> Result<Answer, WatcherError> {
        let unreachable = |e: reqwest::Error| WatcherError::Unreachable {
            server: self.server.clone(),
            reason: root_cause(&e),
        };
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status();
        let text = response.text().await.map_err(unreachable)?;
        Ok(Answer { status, text })
    }
}

/// The start of a body, for a message.
pub(crate) fn quote(text: &str) -> String {
    let text = text.trim();
    match text.char_indices().nth(MAX_QUOTED_BODY) {
        Some((cut, _)) => format!("{:?}...", &text[..cut]),
        None => format!("{text:?}"),
    }
}

/// reqwest's own message is "error sending request for url (...)"; the useful part ("Connection
/// refused", "operation timed out") is at the bottom of its source chain. A certificate the
/// client does not trust is said in words, with what to do about it.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause: &(dyn std::error::Error + 'static) = e;
    loop {
        if let Some(why) = untrusted(cause) {
            return format!(
                "the server's certificate is not trusted ({why:?}): name the CA that signed it \
                 with --ca-cert, or use the host name the certificate is for"
            );
        }
        match cause.source() {
            Some(next) => cause = next,
            None => return cause.to_string(),
        }
    }
}

/// Why a certificate was not trusted, if that is what `e` says: rustls' error, or I/O errors
/// around it (whose `source` skips it: an `io::Error` hands out its inner error's source).
pub(crate) fn untrusted<'a>(
    mut e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a rustls::CertificateError> {
    while let Some(io) = e.downcast_ref::<std::io::Error>() {
        e = io.get_ref()?;
    }
    match e.downcast_ref::<rustls::Error>()? {
        rustls::Error::InvalidCertificate(why) => Some(why),
        _ => None,
    }
}
