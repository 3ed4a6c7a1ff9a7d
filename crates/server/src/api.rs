//! The HTTP routes (SPEC 2 and 3): the watcher API (bearer token) and the public read API.
//! Handlers translate between HTTP and `ingest`/`hub`/`store`; every error is one [`ApiError`]
//! that answers `{"error": "..."}`.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use tower_http::cors::CorsLayer;

use crate::hub::Hub;
use crate::ingest::{Ingest, IngestError};
use crate::model::{MatchId, Seq};
use crate::state::RejectKind;
use crate::store::{Store, StoreError};
use crate::transport::context::ViewerContext;
use crate::transport::ViewerPorts;

mod auth;
mod input;
mod ops;
mod page;
pub(crate) mod pages;
pub mod read;
mod viewers;

use auth::{Body, Watcher};

use pages::{Encoded, PageCache};

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
    /// Who may publish.
    pub tokens: auth::Tokens,
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
    /// The node's configuration: the limits of SPEC 10 that requests are held to.
    pub config: Arc<crate::config::Config>,
}

impl Shared {
    /// The handlers' state over these parts.
    pub fn new(
        ingest: Arc<Ingest>,
        hub: Arc<Hub>,
        store: Arc<dyn Store>,
        ports: Arc<ViewerPorts>,
        viewers: Arc<ViewerContext>,
        ops: Arc<crate::ops::Ops>,
        config: Arc<crate::config::Config>,
    ) -> AppState {
        let shutdown = viewers.shutdown.clone();
        Arc::new(Shared {
            ingest,
            hub,
            store,
            ports,
            tokens: auth::Tokens::new(&config.watcher_tokens),
            shutdown,
            pages: Arc::new(PageCache::new(pages::PAGE_BUDGET, config.max_store_reads)),
            matches: Arc::default(),
            viewers,
            ops,
            config,
        })
    }
}

/// The routes of the public port (SPEC 2, 3, 5): the watcher and read APIs, the viewers'
/// WebSocket and SSE, the live page, and `/healthz` and `/readyz` for load balancers. Any
/// origin may read them (CORS); every request body goes through [`Body`] (no other extractor
/// reads one: axum's would hold it to their own 2 MB default).
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
        .route("/readyz", get(readyz))
        .route("/", get(page::index))
        .route("/assets/app.js", get(page::script))
        .route("/client.js", get(page::client))
        .route("/assets/model.js", get(page::model))
        .route("/assets/app.css", get(page::style))
        .fallback(no_such_path)
        .method_not_allowed_fallback(no_such_method)
        // Any origin, method and header: the answers do not depend on the origin, so no
        // `Vary: Origin` (tower-http adds one by default, built anew for every request).
        .layer(CorsLayer::permissive().vary([]))
        .with_state(state)
}

/// The routes of the admin listener (SPEC 9, 11): the operator's figures and page, and the
/// health checks. No CORS: a page of another origin has no business reading them.
pub fn admin_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/ops", get(page::ops))
        .route("/assets/ops.js", get(page::ops_script))
        .route("/assets/ops.css", get(page::ops_style))
        .route("/ops.json", get(ops::figures))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(no_such_path)
        .with_state(state)
}

async fn no_such_method() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "this path does not take that method: reads are GET, a watcher's changes POST or DELETE \
         (see SPEC sections 2 and 3)",
    )
}

async fn no_such_path() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such path (see SPEC section 3)")
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

fn match_id(raw: &str) -> Result<MatchId, ApiError> {
    MatchId::parse(raw).map_err(|_| ApiError::new(StatusCode::NOT_FOUND, format!("no match {raw}")))
}

async fn create_match(
    State(state): State<AppState>,
    _: Watcher,
    Body(body): Body,
) -> Result<impl IntoResponse, ApiError> {
    let info = input::new_match(&body)?;
    let ingest = state.ingest.clone();
    let id = finish_even_if_client_leaves(async move { ingest.create(info).await }).await??;
    Ok((StatusCode::CREATED, Json(json!({ "id": id }))))
}

/// `POST /1/match/<id>/events[?after=<seq>]`: with `after`, apply only if the match stands at
/// that seq (else 409 with the current `seq`).
async fn publish_events(
    State(state): State<AppState>,
    _: Watcher,
    Path(raw): Path<String>,
    RawQuery(query): RawQuery,
    Body(body): Body,
) -> Result<impl IntoResponse, ApiError> {
    let after = input::publish_after(query.as_deref())?;
    let id = match_id(&raw)?;
    let (inputs, is_batch) = input::events(&body, state.config.max_events_per_request)?;
    let ingest = state.ingest.clone();
    let received = std::time::Instant::now();
    let accepted =
        finish_even_if_client_leaves(async move { ingest.publish(&id, &inputs, after).await })
            .await??;
    let metrics = &state.ports.metrics;
    metrics.publish_seconds.record(received.elapsed().as_secs_f64());
    metrics.published(accepted.len() as u64);
    let acks: Vec<Value> = accepted.iter().map(|a| json!({ "seq": a.seq, "ts": a.ts })).collect();
    let body =
        if is_batch { Value::Array(acks) } else { acks.into_iter().next().unwrap_or_default() };
    Ok((StatusCode::CREATED, Json(body)))
}

async fn cancel_match(
    State(state): State<AppState>,
    _: Watcher,
    Path(raw): Path<String>,
) -> Result<StatusCode, ApiError> {
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
    metrics.matches_in_memory.set(state.hub.in_memory() as f64);
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

/// `GET /1/checkin`.
async fn checkin(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    // A node that is stopping names only the others.
    let pick = if state.shutdown.is_cancelled() {
        state.ports.cluster.other_node().map(|o| (o.host, o.port))
    } else {
        state.ports.pick_for_checkin()
    };
    let (host, port) = pick.ok_or_else(|| {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "no viewer port has room: try again later")
    })?;
    Ok(Json(json!({ "host": host, "port": port })))
}
