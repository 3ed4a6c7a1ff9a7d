//! The HTTP routes (SPEC 2 and 3): the watcher API (bearer token) and the public read API.
//! Handlers translate between HTTP and `ingest`/`hub`/`store`; every error is one [`ApiError`]
//! that answers `{"error": "..."}`. The API's routes are one list ([`documented`]) that makes
//! both the router and the OpenAPI document (`openapi.rs`, SPEC 12), so neither can drift.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, MethodRouter};
use axum::{Json, Router};
use tokio_util::sync::CancellationToken;
use tower_http::cors::CorsLayer;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::hub::Hub;
use crate::ingest::{Ingest, IngestError};
use crate::model::{MatchId, Seq};
use crate::state::RejectKind;
use crate::store::{Store, StoreError};
use crate::transport::context::ViewerContext;
use crate::transport::ViewerPorts;

mod auth;
mod input;
pub(crate) mod openapi;
mod ops;
mod page;
pub(crate) mod pages;
#[cfg(test)]
mod protocol_doc;
pub(crate) mod read;
mod viewers;

use auth::{Body, Watcher};
use openapi::{Ack, Acks, Checkin, Created, ErrorBody, Health};

use pages::{Encoded, PageCache};

/// `/1/matches` as encoded for the hub's generation of the list.
type MatchList = (u64, Arc<Encoded>);

/// What the handlers share: one `Arc`, so that a request clones one pointer, not eight.
pub(crate) type AppState = Arc<Shared>;

/// The parts behind [`AppState`].
pub(crate) struct Shared {
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
    pub(crate) fn new(
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

/// The routes of the public port (SPEC 2, 3, 5, 12): the API ([`documented`]: the watcher and
/// read APIs, the viewers' WebSocket and SSE, `/healthz` and `/readyz` for load balancers, the
/// OpenAPI document) and the live page's files ([`page_routes`]). Any origin may read them
/// (CORS); every request body goes through [`Body`] (no other extractor reads one: axum's
/// would hold it to their own 2 MB default).
pub(crate) fn router(state: AppState) -> Router {
    let (api, _) = documented().split_for_parts();
    page_routes()
        .into_iter()
        .fold(api, |router, (path, route)| router.route(path, route))
        .fallback(no_such_path)
        .method_not_allowed_fallback(no_such_method)
        // Any origin, method and header: the answers do not depend on the origin, so no
        // `Vary: Origin` (tower-http adds one by default, built anew for every request).
        .layer(CorsLayer::permissive().vary([]))
        .with_state(state)
}

/// The HTTP API: every route here is in `/openapi.json`, described by its handler's
/// `#[utoipa::path]` (a route added to the router anywhere else would be served undocumented).
pub(crate) fn documented() -> OpenApiRouter<AppState> {
    OpenApiRouter::default()
        .routes(routes!(create_match, read::list_matches))
        .routes(routes!(publish_events))
        .routes(routes!(cancel_match, read::get_match))
        .routes(routes!(read::history))
        .routes(routes!(viewers::websocket))
        .routes(routes!(viewers::events))
        .routes(routes!(checkin))
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(openapi::serve))
}

/// The live page and its files (SPEC 5): served on the public port, not part of the API.
pub(crate) fn page_routes() -> Vec<(&'static str, MethodRouter<AppState>)> {
    vec![
        ("/", get(page::index)),
        ("/assets/app.js", get(page::script)),
        ("/client.js", get(page::client)),
        ("/assets/model.js", get(page::model)),
        ("/assets/app.css", get(page::style)),
    ]
}

/// The routes of the admin listener (SPEC 9, 11): the operator's figures and page, and the
/// health checks. No CORS: a page of another origin has no business reading them.
pub(crate) fn admin_router(state: AppState) -> Router {
    admin_routes()
        .into_iter()
        .fold(Router::new(), |router, (path, route)| router.route(path, route))
        .fallback(no_such_path)
        .with_state(state)
}

/// The admin listener's paths.
pub(crate) fn admin_routes() -> Vec<(&'static str, MethodRouter<AppState>)> {
    vec![
        ("/metrics", get(metrics)),
        ("/ops", get(page::ops)),
        ("/assets/ops.js", get(page::ops_script)),
        ("/assets/ops.css", get(page::ops_style)),
        ("/ops.json", get(ops::figures)),
        ("/healthz", get(healthz)),
        ("/readyz", get(readyz)),
    ]
}

async fn no_such_method() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "this path does not take that method: reads are GET, a watcher's changes POST or DELETE \
         (see docs/PROTOCOL.md#watcher-api and docs/PROTOCOL.md#read-api)",
    )
}

async fn no_such_path() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such path (see docs/PROTOCOL.md#read-api)")
}

/// An HTTP error: a status and a sentence for a person.
#[derive(Debug)]
pub(crate) struct ApiError {
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

fn match_id(raw: &str) -> Result<MatchId, ApiError> {
    MatchId::parse(raw).map_err(|_| ApiError::new(StatusCode::NOT_FOUND, format!("no match {raw}")))
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
async fn create_match(
    State(state): State<AppState>,
    _: Watcher,
    Body(body): Body,
) -> Result<impl IntoResponse, ApiError> {
    let info = input::new_match(&body)?;
    let ingest = state.ingest.clone();
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
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "health",
    summary = "Liveness",
    responses((status = 200, description = "The process runs: `{\"status\": \"ok\"}`", body = Health))
)]
async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// `GET /readyz`: 200 while the node accepts viewers and can publish, 503 with the reason while
/// it stops or its store cannot take writes (SPEC 9).
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    summary = "Readiness",
    responses(
        (status = 200, description = "Accepting viewers and publishing: `{\"status\": \"ready\"}`", body = Health),
        (status = 503, description = "Draining, or the store cannot write: the body says which", body = ErrorBody),
    )
)]
async fn readyz(State(state): State<AppState>) -> Result<Json<Health>, ApiError> {
    let unavailable = |why: String| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, why);
    if state.shutdown.is_cancelled() {
        return Err(unavailable("draining: this node is shutting down".into()));
    }
    state.store.health().map_err(|e| unavailable(format!("store unavailable: {e}")))?;
    Ok(Json(Health { status: "ready" }))
}

/// `GET /1/checkin`.
#[utoipa::path(
    get,
    path = "/1/checkin",
    tag = "read",
    summary = "Where a TCP viewer connects",
    description = "The viewer port with the most room of the whole cluster, for the TCP \
        protocols (WebSocket and SSE viewers use the HTTP port).",
    responses(
        (status = 200, description = "The port to connect to", body = Checkin),
        (status = 503, description = "No viewer port has room", body = ErrorBody),
    )
)]
async fn checkin(State(state): State<AppState>) -> Result<Json<Checkin>, ApiError> {
    // A node that is stopping names only the others.
    let pick = if state.shutdown.is_cancelled() {
        state.ports.cluster.other_node().map(|o| (o.host, o.port))
    } else {
        state.ports.pick_for_checkin()
    };
    let (host, port) = pick.ok_or_else(|| {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "no viewer port has room: try again later")
    })?;
    Ok(Json(Checkin { host, port }))
}
