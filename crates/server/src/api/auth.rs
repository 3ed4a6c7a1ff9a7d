//! The watcher API's door (SPEC 2, 10, 11): the bearer token, checked before the body is read,
//! and the body itself, read within its size and time limits. Both are extractors, so that a
//! handler cannot read a body without them: [`Watcher`] (from the request's head alone) comes
//! first in a watcher handler's arguments, [`Body`] last. Each takes from the router's state
//! only what it needs: [`Tokens`], and [`BodyLimits`].

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{FromRef, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::error::ApiError;
use crate::telemetry::{Limit, Metrics};

/// The watcher tokens a node accepts, kept as SHA-256 digests: every comparison is of two
/// 32-byte digests in constant time, so neither a token's bytes nor its length show in the
/// time an answer takes.
pub(crate) struct Tokens(Vec<[u8; 32]>);

impl Tokens {
    pub(crate) fn new(tokens: &[String]) -> Tokens {
        Tokens(tokens.iter().map(|t| digest(t.as_bytes())).collect())
    }

    /// Is `token` one of them? Every digest is compared, whatever matched.
    fn accepts(&self, token: &str) -> bool {
        let presented = digest(token.as_bytes());
        self.0.iter().fold(0u8, |any, known| any | known.ct_eq(&presented).unwrap_u8()) == 1
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// A request that carries a valid watcher token (`Authorization: Bearer <token>`, the scheme
/// in any case).
pub(super) struct Watcher;

impl<S: Send + Sync> FromRequestParts<S> for Watcher
where
    Arc<Tokens>: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        authorize(&Arc::<Tokens>::from_ref(state), &parts.headers).map(|()| Watcher)
    }
}

/// Checks `Authorization: Bearer <token>`; the errors never repeat what was sent.
fn authorize(tokens: &Tokens, headers: &HeaderMap) -> Result<(), ApiError> {
    let unauthorized = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, m);
    if tokens.0.is_empty() {
        return Err(unauthorized(
            "this server has no watcher token configured, so nobody can publish",
        ));
    }
    let header = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| unauthorized("missing Authorization: Bearer <token>"))?;
    let bearer = header.to_str().ok().and_then(|h| {
        let (scheme, token) = h.trim().split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
    });
    let token = bearer.ok_or_else(|| unauthorized("Authorization must be Bearer <token>"))?;
    if tokens.accepts(token) {
        Ok(())
    } else {
        Err(unauthorized("wrong watcher token"))
    }
}

/// What a body is held to (SPEC 10), and where a refusal is counted.
#[derive(Clone)]
pub(crate) struct BodyLimits {
    /// `--http-max-body`.
    pub(crate) max: usize,
    /// `--http-body-timeout`: from the head.
    pub(crate) timeout: Duration,
    pub(crate) metrics: Arc<Metrics>,
}

/// A request's body, read whole within `--http-max-body` bytes and `--http-body-timeout` of
/// its head (SPEC 10): `413` past the size (at once when `Content-Length` says so), `408` past
/// the time.
pub(super) struct Body(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for Body
where
    BodyLimits: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let limits = BodyLimits::from_ref(state);
        let max = limits.max;
        let too_large = || {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the body is larger than {max} bytes (--http-max-body): send fewer \
                     events per request"
                ),
            )
        };
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let refused = |limit| limits.metrics.limit_refused(limit);
        if declared.is_some_and(|len| len > max as u64) {
            refused(Limit::HttpBodySize);
            return Err(too_large());
        }
        let read = Limited::new(request.into_body(), max).collect();
        let timeout = limits.timeout;
        match tokio::time::timeout(timeout, read).await {
            Ok(Ok(collected)) => Ok(Body(collected.to_bytes())),
            Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
                refused(Limit::HttpBodySize);
                Err(too_large())
            }
            Ok(Err(e)) => Err(ApiError::bad_request(format!("the body could not be read: {e}"))),
            Err(_) => {
                refused(Limit::HttpBodyTimeout);
                let why = format!(
                    "the body did not arrive within {} of its head (--http-body-timeout)",
                    seconds(timeout)
                );
                Err(ApiError::new(StatusCode::REQUEST_TIMEOUT, why))
            }
        }
    }
}

fn seconds(d: Duration) -> String {
    match d.subsec_millis() {
        0 => format!("{} s", d.as_secs()),
        _ => format!("{} ms", d.as_millis()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn the_scheme_is_matched_in_any_case_and_the_token_exactly() {
        let tokens = Tokens::new(&["s3cr3t".into(), "other".into()]);
        for ok in ["Bearer s3cr3t", "bearer s3cr3t", "BEARER other", "Bearer  s3cr3t "] {
            assert!(authorize(&tokens, &with(ok)).is_ok(), "{ok}");
        }
        for bad in ["Bearer s3cr3", "Bearer s3cr3tt", "Basic s3cr3t", "s3cr3t", "Bearer"] {
            let e = authorize(&tokens, &with(bad)).unwrap_err();
            assert_eq!(e.status, StatusCode::UNAUTHORIZED, "{bad}");
            assert!(!e.message.contains("s3cr3"), "an error never repeats a token: {bad}");
        }
        let e = authorize(&tokens, &HeaderMap::new()).unwrap_err();
        assert_eq!(e.message, "missing Authorization: Bearer <token>");
        let e = authorize(&Tokens::new(&[]), &with("Bearer s3cr3t")).unwrap_err();
        assert!(e.message.contains("no watcher token configured"));
    }
}
