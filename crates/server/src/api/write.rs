//! The watcher API (SPEC 2): creating a match, publishing its events, cancelling it. Each
//! request passes [`Watcher`] (the token, before anything is read) and [`Body`] (its size and
//! time) first; the change itself runs to its end even if the watcher hangs up.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;

use super::auth::{Body, Watcher};
use super::error::{match_id, ApiError};
use super::input;
use super::openapi::{self, Ack, Acks, Created, ErrorBody};
use crate::ingest::Ingest;
use crate::telemetry::Metrics;

/// What the watcher's handlers use: the ingest that validates and stores, the publish figures,
/// and the limit on events per request.
pub(crate) struct Writes {
    pub(crate) ingest: Arc<Ingest>,
    pub(crate) metrics: Arc<Metrics>,
    /// `--max-events-per-request` (SPEC 10).
    pub(crate) max_events_per_request: usize,
}

/// `POST /1/matches`.
#[utoipa::path(
    post,
    path = "/1/matches",
    tag = "watcher",
    summary = "Create a match",
    description = "Creates a match with no events (`seq` 0, period `not_started`). Its id is \
        `<home>-<visit>-<start_date>`. A `201` is durable.",
    security(("bearer" = [])),
    request_body(content = crate::model::NewMatch, content_type = "application/json"),
    responses(
        (status = 201, description = "Created", body = Created),
        (status = 400, description = "Not a match: the body names the field and shows a valid value", body = ErrorBody),
        (status = 401, description = "No valid `Authorization: Bearer <token>` (checked before the body is read)", body = ErrorBody),
        (status = 408, description = "The body did not arrive within --http-body-timeout (10 s) of the head", body = ErrorBody),
        (status = 409, description = "A match with this id exists", body = ErrorBody),
        (status = 413, description = "The body is over --http-max-body (256 KiB)", body = ErrorBody),
        (status = 422, description = "A content limit: a name over 64 characters, a division or stadium over 200, a control character", body = ErrorBody),
        (status = 503, description = "The store cannot take it now: nothing was created; try again", body = ErrorBody),
    )
)]
pub(super) async fn create_match(
    State(writes): State<Arc<Writes>>,
    _: Watcher,
    Body(body): Body,
) -> Result<impl IntoResponse, ApiError> {
    let info = input::new_match(&body)?;
    let ingest = writes.ingest.clone();
    let id = finish_even_if_client_leaves(async move { ingest.create(info).await }).await??;
    Ok((StatusCode::CREATED, Json(Created { id: id.to_string() })))
}

/// `POST /1/match/<id>/events[?after=<seq>]`: with `after`, apply only if the match stands at
/// that seq (else 409 with the current `seq`).
#[utoipa::path(
    post,
    path = "/1/match/{id}/events",
    tag = "watcher",
    summary = "Publish events",
    description = "Publishes one event, or a list applied whole or not at all. Each is \
        validated against the match as the events before it leave it. A `201` is durable. \
        With `after`, the events apply only if the match stands at that seq: the safe way to \
        retry a request whose answer was lost.",
    security(("bearer" = [])),
    params(
        ("id" = String, Path, description = "The match id", example = "elp-tig-2011-09-10"),
        ("after" = Option<u64>, Query, description = "Apply only if the match's seq is this; else 409 with the current `seq`"),
    ),
    request_body(content = openapi::Events, content_type = "application/json"),
    responses(
        (status = 201, description = "Applied: one ack for one event, a list for a list", body = openapi::Acks),
        (status = 400, description = "Not an event or a list of them, or a bad `after`: the body names the field", body = ErrorBody),
        (status = 401, description = "No valid `Authorization: Bearer <token>` (checked before the body is read)", body = ErrorBody),
        (status = 404, description = "No such match", body = ErrorBody),
        (status = 408, description = "The body did not arrive within --http-body-timeout (10 s) of the head", body = ErrorBody),
        (status = 409, description = "The match is in the wrong period for an event (not started, over), or is not at `after` (then `seq` is its current seq); nothing was applied", body = ErrorBody),
        (status = 413, description = "More than --max-events-per-request (256) events, or a body over --http-max-body (256 KiB)", body = ErrorBody),
        (status = 422, description = "An event names something that is not there (an unknown team, a player not on the pitch) or passes a content limit; nothing was applied", body = ErrorBody),
        (status = 503, description = "The store cannot take it now; retry with `after` so nothing is applied twice", body = ErrorBody),
    )
)]
pub(super) async fn publish_events(
    State(writes): State<Arc<Writes>>,
    _: Watcher,
    Path(raw): Path<String>,
    RawQuery(query): RawQuery,
    Body(body): Body,
) -> Result<impl IntoResponse, ApiError> {
    let after = input::publish_after(query.as_deref())?;
    let id = match_id(&raw)?;
    let (inputs, is_batch) = input::events(&body, writes.max_events_per_request)?;
    let ingest = writes.ingest.clone();
    let received = std::time::Instant::now();
    let accepted =
        finish_even_if_client_leaves(async move { ingest.publish(&id, &inputs, after).await })
            .await??;
    let metrics = &writes.metrics;
    metrics.publish_seconds.record(received.elapsed().as_secs_f64());
    metrics.published(accepted.len() as u64);
    let mut acks: Vec<Ack> = accepted.iter().map(|a| Ack { seq: a.seq, ts: a.ts }).collect();
    let body = match acks.pop() {
        Some(one) if !is_batch && acks.is_empty() => Acks::One(one),
        last => Acks::Many(acks.into_iter().chain(last).collect()),
    };
    Ok((StatusCode::CREATED, Json(body)))
}

/// `DELETE /1/match/<id>`.
#[utoipa::path(
    delete,
    path = "/1/match/{id}",
    tag = "watcher",
    summary = "Cancel a match",
    description = "Removes the match; its viewers get `bye cancelled` and its id may be created again.",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The match id", example = "elp-tig-2011-09-10")),
    responses(
        (status = 204, description = "Cancelled"),
        (status = 401, description = "No valid `Authorization: Bearer <token>`", body = ErrorBody),
        (status = 404, description = "No such match", body = ErrorBody),
        (status = 503, description = "The store cannot take it now; try again", body = ErrorBody),
    )
)]
pub(super) async fn cancel_match(
    State(writes): State<Arc<Writes>>,
    _: Watcher,
    Path(raw): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = match_id(&raw)?;
    let ingest = writes.ingest.clone();
    finish_even_if_client_leaves(async move { ingest.cancel(&id).await }).await??;
    Ok(StatusCode::NO_CONTENT)
}

/// Runs a change to the matches to its end even if the HTTP client hangs up meanwhile (axum
/// drops a handler whose client is gone): half a publish would leave durable events unpublished.
async fn finish_even_if_client_leaves<T: Send + 'static>(
    work: impl std::future::Future<Output = T> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::spawn(work).await.map_err(|e| {
        tracing::error!(error = %e, "watcher request task failed");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
    })
}
