//! The HTTP routes (SPEC 2 and 3): the watcher API (bearer token) and the public read API.
//! Handlers translate between HTTP and `ingest`/`hub`/`store`; every error is one [`ApiError`]
//! that answers `{"error": "..."}`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use tower_http::cors::CorsLayer;

use crate::hub::Hub;
use crate::ingest::{Ingest, IngestError};
use crate::model::{EventInput, MatchId, NewMatch, Seq};
use crate::state::RejectKind;
use crate::store::{Store, StoreError};
use crate::transport::viewer::ViewerContext;
use crate::transport::ViewerPorts;

mod ops;
mod page;
pub(crate) mod pages;
pub mod read;
mod viewers;

use pages::{Encoded, PageCache};

/// Most events one history request returns; a client pages on with `after`.
pub const MAX_HISTORY_LIMIT: usize = 10_000;

/// `/1/matches` as encoded for the hub's generation of the list.
type MatchList = (u64, Arc<Encoded>);

/// What the handlers share: one `Arc`, so that a request clones one pointer, not eight.
pub type AppState = Arc<Shared>;

/// The parts behind [`AppState`].
pub struct Shared {
    pub ingest: Arc<Ingest>,
    pub hub: Arc<Hub>,
    pub store: Arc<dyn Store>,
    pub ports: Arc<ViewerPorts>,
    pub watcher_tokens: Arc<Vec<String>>,
    /// Cancelled when the node begins to stop.
    pub shutdown: CancellationToken,
    /// History pages, encoded once.
    pub pages: Arc<PageCache>,
    /// `/1/matches`, encoded once per change of the list (the hub's generation).
    pub matches: Arc<std::sync::Mutex<Option<MatchList>>>,
    /// What WebSocket and SSE viewers share with every other viewer.
    pub viewers: Arc<ViewerContext>,
    /// The operator's figures (`/ops`).
    pub ops: Arc<crate::ops::Ops>,
}

impl Shared {
    /// The handlers' state over these parts.
    pub fn new(
        ingest: Arc<Ingest>,
        hub: Arc<Hub>,
        store: Arc<dyn Store>,
        ports: Arc<ViewerPorts>,
        watcher_tokens: Vec<String>,
        viewers: Arc<ViewerContext>,
        ops: Arc<crate::ops::Ops>,
    ) -> AppState {
        let shutdown = viewers.shutdown.clone();
        Arc::new(Shared {
            ingest,
            hub,
            store,
            ports,
            watcher_tokens: Arc::new(watcher_tokens),
            shutdown,
            pages: Arc::new(PageCache::default()),
            matches: Arc::default(),
            viewers,
            ops,
        })
    }
}

/// Every route of the node.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/1/matches", post(create_match).get(read::list_matches))
        .route("/1/match/{id}/events", post(publish_events))
        .route("/1/match/{id}", delete(cancel_match).get(read::get_match))
        .route("/1/match/{id}/history", get(read::history))
        .route("/1/match/{id}/ws", get(viewers::websocket))
        .route("/1/match/{id}/stream", get(viewers::events))
        .route("/1/checkin", get(checkin))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/ops", get(page::ops))
        .route("/assets/ops.js", get(page::ops_script))
        .route("/assets/ops.css", get(page::ops_style))
        .route("/ops.json", get(ops::figures))
        .route("/readyz", get(readyz))
        .route("/", get(page::index))
        .route("/assets/app.js", get(page::script))
        .route("/assets/model.js", get(page::model))
        .route("/assets/app.css", get(page::style))
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, "no such path (see SPEC section 3)")
        })
        // Any origin, method and header: the answers do not depend on the origin, so no
        // `Vary: Origin` (tower-http adds one by default, built anew for every request).
        // The HTTP fast lane (`http/lane.rs`) serves the read API's plainest GETs without this
        // router and adds the two headers this layer gives them (`read::CORS`): a layer added
        // here does not reach those.
        .layer(CorsLayer::permissive().vary([]))
        .with_state(state)
}

/// An HTTP error: a status and a sentence for a person.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    /// The match's current seq, for a failed `?after=` precondition.
    seq: Option<Seq>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError { status, message: message.into(), seq: None }
    }

    fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = match self.seq {
            Some(seq) => json!({ "error": self.message, "seq": seq }),
            None => json!({ "error": self.message }),
        };
        (self.status, Json(body)).into_response()
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

/// Checks `Authorization: Bearer <token>` against the configured watcher tokens.
fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let unauthorized = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, m);
    if state.watcher_tokens.is_empty() {
        return Err(unauthorized(
            "this server has no watcher token configured, so nobody can publish",
        ));
    }
    let header = headers
        .get(axum::http::header::AUTHORIZATION)
        .ok_or_else(|| unauthorized("missing Authorization: Bearer <token>"))?;
    let token = header
        .to_str()
        .ok()
        .and_then(|h| h.strip_prefix("Bearer "))
        .ok_or_else(|| unauthorized("Authorization must be Bearer <token>"))?;
    if state.watcher_tokens.iter().any(|t| constant_time_eq(t.as_bytes(), token.trim().as_bytes()))
    {
        Ok(())
    } else {
        Err(unauthorized("wrong watcher token"))
    }
}

/// Compares without stopping at the first difference, so timing does not reveal a token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8], what: &str) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("bad {what}: {e}")))
}

fn match_id(raw: &str) -> Result<MatchId, ApiError> {
    MatchId::parse(raw).map_err(|_| ApiError::new(StatusCode::NOT_FOUND, format!("no match {raw}")))
}

async fn create_match(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    authorize(&state, &headers)?;
    let new: NewMatch = parse_json(&body, "match (expected {\"home\",\"visit\",\"start_date\"})")?;
    let info = new.into_info().map_err(|e| ApiError::bad_request(e.0))?;
    let ingest = state.ingest.clone();
    let id = finish_even_if_client_leaves(async move { ingest.create(info).await }).await??;
    Ok((StatusCode::CREATED, Json(json!({ "id": id }))))
}

/// `POST /1/match/<id>/events[?after=<seq>]`.
#[derive(Deserialize)]
struct PublishQuery {
    /// Apply only if the match stands at this seq (else 409 with the current `seq`).
    after: Option<Seq>,
}

async fn publish_events(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    query: Result<Query<PublishQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    authorize(&state, &headers)?;
    let Query(q) = query.map_err(|e| {
        ApiError::bad_request(format!("bad query: {e} (after is the seq the match must be at)"))
    })?;
    let id = match_id(&raw)?;
    let value: Value = parse_json(&body, "JSON")?;
    let is_batch = value.is_array();
    let inputs: Vec<EventInput> = if is_batch {
        serde_json::from_value(value)
    } else {
        serde_json::from_value(value).map(|one| vec![one])
    }
    .map_err(|e| {
        ApiError::bad_request(format!("bad event (expected {{\"kind\":..,\"data\":{{..}}}}): {e}"))
    })?;
    if inputs.is_empty() {
        return Err(ApiError::bad_request("an empty list publishes nothing"));
    }
    let ingest = state.ingest.clone();
    let received = std::time::Instant::now();
    let accepted =
        finish_even_if_client_leaves(async move { ingest.publish(&id, &inputs, q.after).await })
            .await??;
    let metrics = &state.ports.metrics;
    metrics.publish_seconds.record(received.elapsed().as_secs_f64());
    metrics.events_published.increment(accepted.len() as u64);
    let acks: Vec<Value> = accepted.iter().map(|a| json!({ "seq": a.seq, "ts": a.ts })).collect();
    let body =
        if is_batch { Value::Array(acks) } else { acks.into_iter().next().unwrap_or_default() };
    Ok((StatusCode::CREATED, Json(body)))
}

async fn cancel_match(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    authorize(&state, &headers)?;
    let id = match_id(&raw)?;
    let ingest = state.ingest.clone();
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

/// `GET /metrics`: the Prometheus text exposition (SPEC 9).
async fn metrics(State(state): State<AppState>) -> Response {
    let metrics = &state.ports.metrics;
    metrics.matches_live.set(state.hub.live_count() as f64);
    (
        [(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        metrics.render(),
    )
        .into_response()
}

/// `GET /healthz`: the process runs (SPEC 9).
async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /readyz`: 200 while the node accepts viewers and can publish, 503 with the reason while
/// it stops or its store cannot take writes (SPEC 9).
async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let unavailable = |why: String| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, why);
    if state.shutdown.is_cancelled() {
        return Err(unavailable("draining: this node is shutting down".into()));
    }
    state.store.health().map_err(|e| unavailable(format!("store unavailable: {e}")))?;
    Ok(Json(json!({ "status": "ready" })))
}

/// `GET /1/checkin` (also answered without the router: `read::answer`).
async fn checkin(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    // A node that is stopping names only the others.
    let pick = if state.shutdown.is_cancelled() {
        state.ports.other_node().map(|o| (o.host, o.port))
    } else {
        state.ports.pick_for_checkin()
    };
    let (host, port) = pick.ok_or_else(|| {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "no viewer port has room: try again later")
    })?;
    Ok(Json(json!({ "host": host, "port": port })))
}
