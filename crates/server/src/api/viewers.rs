//! `GET /1/match/<id>/ws` and `GET /1/match/<id>/stream` (SPEC 5): the HTTP face of the
//! WebSocket and SSE transports. `transport::web` checks the request, joins the match and leaves
//! the viewer for the connection to be handed over once this answer is out.

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::{ApiError, AppState};
use crate::model::Seq;
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

pub(super) async fn websocket(
    State(state): State<AppState>,
    Path(id): Path<String>,
    query: QueryResult,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (from, takeover) = (from(query)?, takeover()?);
    Ok(web::websocket(&state.viewers, &id, from, &headers, &takeover)
        .await
        .map_or_else(refused, IntoResponse::into_response))
}

pub(super) async fn events(
    State(state): State<AppState>,
    method: Method,
    Path(id): Path<String>,
    query: QueryResult,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (from, takeover) = (from(query)?, takeover()?);
    let head = method == Method::HEAD;
    Ok(web::events(&state.viewers, &id, from, &headers, head, &takeover)
        .await
        .map_or_else(refused, IntoResponse::into_response))
}
