//! `GET /1/match/<id>/ws` and `GET /1/match/<id>/stream` (SPEC 5): the HTTP face of the
//! WebSocket and SSE transports. `transport::web` checks the request, joins the match and leaves
//! the viewer for the connection to be handed over once this answer is out; what the handlers
//! hand it is the [`ViewerContext`] every viewer shares.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::error::ApiError;
use super::openapi::ErrorBody;
use crate::model::Seq;
use crate::transport::context::ViewerContext;
use crate::transport::web::{self, Refusal, Takeover};

#[derive(Deserialize)]
pub(super) struct FromQuery {
    /// Resume after this seq (SPEC 5).
    from: Option<String>,
}

type QueryResult = Result<Query<FromQuery>, axum::extract::rejection::QueryRejection>;

fn from(query: QueryResult) -> Result<Option<Seq>, ApiError> {
    let Query(q) = query.map_err(|_| {
        ApiError::bad_request(
            "bad query: a viewer's query is from=<seq>, the seq of the last event seen, once",
        )
    })?;
    q.from
        .map(|f| {
            f.parse::<Seq>().map_err(|_| {
                ApiError::bad_request(format!("bad from {f:?}: the seq of the last event seen"))
            })
        })
        .transpose()
}

/// Only a connection served by `http.rs` can be handed over to a viewer.
fn takeover() -> Result<Takeover, ApiError> {
    Takeover::current().ok_or_else(|| {
        tracing::error!("viewer request on a connection that cannot be taken over");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
    })
}

fn refused(refusal: Refusal) -> Response {
    match refusal {
        Refusal::NotFound(m) => ApiError::new(StatusCode::NOT_FOUND, m).into_response(),
        Refusal::BadRequest(m) => ApiError::bad_request(m).into_response(),
        Refusal::UpgradeRequired(m) => (
            [(header::UPGRADE, "websocket"), (header::SEC_WEBSOCKET_VERSION, "13")],
            ApiError::new(StatusCode::UPGRADE_REQUIRED, m),
        )
            .into_response(),
    }
}

/// `GET /1/match/<id>/ws[?from=<seq>]`.
#[utoipa::path(
    get,
    path = "/1/match/{id}/ws",
    tag = "viewers",
    summary = "Follow a match over WebSocket",
    description = "An RFC 6455 handshake (version 13). After the `101`, each v2 frame (an event, \
        the `status` snapshot, the final `bye`) is one text message; after the `bye`, a close \
        frame (1000 `match_over`/`cancelled`, 1001 `shutdown`, 1008 `too_slow`, 1013 `full`). \
        See docs/PROTOCOL.md#websocket.",
    params(
        ("id" = String, Path, description = "The match id", example = "elp-tig-2011-09-10"),
        ("from" = Option<u64>, Query, description = "Resume: every event after this seq, then live (without it, the `status` snapshot first)"),
    ),
    responses(
        (status = 101, description = "Switching Protocols: the WebSocket carries the v2 frames"),
        (status = 400, description = "A bad `from`, or no `Sec-WebSocket-Key`", body = ErrorBody),
        (status = 404, description = "No such match (before any upgrade)", body = ErrorBody),
        (status = 426, description = "Not a WebSocket handshake (version 13); the answer has `Upgrade: websocket`", body = ErrorBody),
    )
)]
pub(super) async fn websocket(
    State(viewers): State<Arc<ViewerContext>>,
    Path(id): Path<String>,
    query: QueryResult,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (from, takeover) = (from(query)?, takeover()?);
    Ok(web::websocket(&viewers, &id, from, &headers, &takeover)
        .await
        .map_or_else(refused, IntoResponse::into_response))
}

/// `GET /1/match/<id>/stream[?from=<seq>]`.
#[utoipa::path(
    get,
    path = "/1/match/{id}/stream",
    tag = "viewers",
    summary = "Follow a match over Server-Sent Events",
    description = "An `HTTP/1.0` answer whose body runs until the node closes it: each v2 frame \
        as `id: <seq>\\nevent: <kind>\\ndata: <v2 JSON>\\n\\n` (the `bye` without `id`), and \
        `: ping` comments on a quiet stream. See docs/PROTOCOL.md#server-sent-events.",
    params(
        ("id" = String, Path, description = "The match id", example = "elp-tig-2011-09-10"),
        ("from" = Option<u64>, Query, description = "Resume: every event after this seq, then live (without it, the `status` snapshot first)"),
        ("Last-Event-ID" = Option<u64>, Header, description = "Resume, as `EventSource` does on reconnecting; wins over `from`"),
    ),
    responses(
        (status = 200, description = "The event stream", content_type = "text/event-stream", body = String,
            headers(("cache-control" = String, description = "`no-cache`"), ("x-accel-buffering" = String, description = "`no`"))),
        (status = 400, description = "A bad `from` or `Last-Event-ID`", body = ErrorBody),
        (status = 404, description = "No such match (before the stream)", body = ErrorBody),
    )
)]
pub(super) async fn events(
    State(viewers): State<Arc<ViewerContext>>,
    method: Method,
    Path(id): Path<String>,
    query: QueryResult,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (from, takeover) = (from(query)?, takeover()?);
    let head = method == Method::HEAD;
    Ok(web::events(&viewers, &id, from, &headers, head, &takeover)
        .await
        .map_or_else(refused, IntoResponse::into_response))
}
