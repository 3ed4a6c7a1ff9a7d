//! The HTTP API's one error (SPEC 2, 10; STYLE "Errors"): a status and a sentence for a person,
//! answered as `{"error": "..."}`, and what the layers below fail with turned into it: a 4xx
//! says what to fix, a 5xx says "internal error" and logs the cause once.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::openapi::ErrorBody;
use crate::ingest::IngestError;
use crate::model::{MatchId, Seq};
use crate::state::RejectKind;
use crate::store::StoreError;

/// An HTTP error: a status and a sentence for a person.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub(super) status: StatusCode,
    pub(super) message: String,
    /// The match's current seq, for a failed `?after=` precondition.
    pub(super) seq: Option<Seq>,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError { status, message: message.into(), seq: None }
    }

    pub(super) fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(ErrorBody { error: self.message, seq: self.seq })).into_response()
    }
}

impl From<IngestError> for ApiError {
    fn from(e: IngestError) -> ApiError {
        match &e {
            IngestError::NotFound(_) => ApiError::new(StatusCode::NOT_FOUND, e.to_string()),
            IngestError::Exists(_) => ApiError::new(StatusCode::CONFLICT, e.to_string()),
            IngestError::NotAt { current, .. } => ApiError {
                seq: Some(*current),
                ..ApiError::new(StatusCode::CONFLICT, e.to_string())
            },
            IngestError::Rejected { rejection, .. } => {
                let status = match rejection.kind {
                    RejectKind::Conflict => StatusCode::CONFLICT,
                    RejectKind::Invalid => StatusCode::UNPROCESSABLE_ENTITY,
                };
                ApiError::new(status, e.to_string())
            }
            IngestError::Store(s) => s.clone().into(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::NotFound(_) => ApiError::new(StatusCode::NOT_FOUND, e.to_string()),
            StoreError::Exists(_) => ApiError::new(StatusCode::CONFLICT, e.to_string()),
            e @ StoreError::Backend(_) => {
                // The store's own log says why, once; a watcher can only wait and retry.
                tracing::debug!(error = %e, "request refused: store unavailable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the store cannot take this now: try again shortly (a write cut off by the \
                     failure may or may not have landed; retry events with ?after=<seq> so they \
                     are never applied twice)",
                )
            }
            e => {
                tracing::error!(error = %e, "request failed");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
            }
        }
    }
}

/// The match id of a path, or a 404 (a malformed id names no match).
pub(super) fn match_id(raw: &str) -> Result<MatchId, ApiError> {
    MatchId::parse(raw).map_err(|_| ApiError::new(StatusCode::NOT_FOUND, format!("no match {raw}")))
}
