//! The HTTP routes (SPEC 2 and 3): the watcher API (bearer token, `write.rs`), the public read
//! API (`read.rs`), the viewers' handshakes (`viewers.rs`), the page (`page.rs`), the operator's
//! figures (`ops.rs`) and the health checks and checkin (here), and the state each handler is
//! given a part of ([`AppState`]). Handlers translate between HTTP and `ingest`/`hub`/`store`;
//! every error is one [`ApiError`] (`error.rs`) that answers `{"error": "..."}`. The API's
//! routes are one list ([`documented`]) that makes both the router and the OpenAPI document
//! (`openapi.rs`, SPEC 12), so neither can drift.

use std::sync::Arc;

use axum::extract::{FromRef, State};
use axum::http::StatusCode;
use axum::routing::{get, MethodRouter};
use axum::{Json, Router};
use tokio_util::sync::CancellationToken;
use tower_http::cors::CorsLayer;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::cluster::Cluster;
use crate::config::Config;
use crate::hub::Hub;
use crate::ingest::Ingest;
use crate::store::Store;
use crate::transport::context::ViewerContext;
use crate::transport::ViewerPorts;

mod auth;
mod error;
mod input;
pub(crate) mod openapi;
mod ops;
mod page;
pub(crate) mod pages;
#[cfg(test)]
mod protocol_doc;
pub(crate) mod read;
mod viewers;
mod write;

use auth::{BodyLimits, Tokens};
use error::ApiError;
use openapi::{Checkin, ErrorBody, Health};
use ops::Figures;
use read::Reads;
use write::Writes;

/// What the routers hold: one `Arc`, cloned for each request. No handler takes it whole: each
/// names the parts it uses, as `State<part>` (axum's [`FromRef`], below), so that what a handler
/// can touch is in its signature: the read API [`Reads`], the watcher's handlers [`Writes`],
/// its token and body extractors [`Tokens`] and [`BodyLimits`], the viewers' handshakes the
/// [`ViewerContext`], the operator's figures [`Figures`], the page the [`Cluster`] (the other
/// nodes it may connect to) and [`ServesTls`], the health checks and checkin the shutdown, the store and the
/// viewer ports. Each part is one `Arc` (or a few plain values), so a handler clones a pointer
/// per part it names.
#[derive(Clone)]
pub(crate) struct AppState(Arc<Shared>);

/// The parts behind [`AppState`].
struct Shared {
    reads: Arc<Reads>,
    writes: Arc<Writes>,
    tokens: Arc<Tokens>,
    body: BodyLimits,
    viewers: Arc<ViewerContext>,
    figures: Arc<Figures>,
    /// Cancelled when the node begins to stop.
    shutdown: CancellationToken,
    store: Arc<dyn Store>,
    ports: Arc<ViewerPorts>,
    tls: ServesTls,
}

/// Whether this node speaks TLS itself (`--tls-cert`): the page's policy then names the other
/// nodes as `https:` and `wss:`.
#[derive(Clone, Copy)]
pub(crate) struct ServesTls(pub(crate) bool);

impl AppState {
    /// The handlers' state over these parts of a node.
    pub(crate) fn new(
        ingest: Arc<Ingest>,
        hub: Arc<Hub>,
        store: Arc<dyn Store>,
        ports: Arc<ViewerPorts>,
        viewers: Arc<ViewerContext>,
        ops: Arc<crate::ops::Ops>,
        config: &Config,
    ) -> AppState {
        let metrics = ports.metrics.clone();
        AppState(Arc::new(Shared {
            reads: Arc::new(Reads::new(hub.clone(), ingest.clone(), store.clone(), config)),
            writes: Arc::new(Writes {
                ingest,
                metrics: metrics.clone(),
                max_events_per_request: config.max_events_per_request,
            }),
            tokens: Arc::new(Tokens::new(&config.watcher_tokens)),
            body: BodyLimits {
                max: config.http_max_body,
                timeout: config.http_body_timeout,
                metrics: metrics.clone(),
            },
            shutdown: viewers.shutdown.clone(),
            viewers,
            figures: Arc::new(Figures { ops, hub, metrics }),
            store,
            ports,
            tls: ServesTls(config.tls.is_some()),
        }))
    }
}

// `State<part>` for a handler of either router: a clone of that part of the state.

impl FromRef<AppState> for Arc<Reads> {
    fn from_ref(state: &AppState) -> Arc<Reads> {
        state.0.reads.clone()
    }
}

impl FromRef<AppState> for Arc<Writes> {
    fn from_ref(state: &AppState) -> Arc<Writes> {
        state.0.writes.clone()
    }
}

impl FromRef<AppState> for Arc<Tokens> {
    fn from_ref(state: &AppState) -> Arc<Tokens> {
        state.0.tokens.clone()
    }
}

impl FromRef<AppState> for BodyLimits {
    fn from_ref(state: &AppState) -> BodyLimits {
        state.0.body.clone()
    }
}

impl FromRef<AppState> for Arc<ViewerContext> {
    fn from_ref(state: &AppState) -> Arc<ViewerContext> {
        state.0.viewers.clone()
    }
}

impl FromRef<AppState> for Arc<Figures> {
    fn from_ref(state: &AppState) -> Arc<Figures> {
        state.0.figures.clone()
    }
}

impl FromRef<AppState> for CancellationToken {
    fn from_ref(state: &AppState) -> CancellationToken {
        state.0.shutdown.clone()
    }
}

impl FromRef<AppState> for Arc<dyn Store> {
    fn from_ref(state: &AppState) -> Arc<dyn Store> {
        state.0.store.clone()
    }
}

impl FromRef<AppState> for Arc<ViewerPorts> {
    fn from_ref(state: &AppState) -> Arc<ViewerPorts> {
        state.0.ports.clone()
    }
}

impl FromRef<AppState> for ServesTls {
    fn from_ref(state: &AppState) -> ServesTls {
        state.0.tls
    }
}

impl FromRef<AppState> for Arc<Cluster> {
    fn from_ref(state: &AppState) -> Arc<Cluster> {
        state.0.ports.cluster.clone()
    }
}

/// The routes of the public port (SPEC 2, 3, 5, 12): the API ([`documented`]: the watcher and
/// read APIs, the viewers' WebSocket and SSE, `/healthz` and `/readyz` for load balancers, the
/// OpenAPI document) and the live page's files ([`page_routes`]). Any origin may read them
/// (CORS); every request body goes through [`auth::Body`] (no other extractor reads one: axum's
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
        .routes(routes!(write::create_match, read::list_matches))
        .routes(routes!(write::publish_events))
        .routes(routes!(write::cancel_match, read::get_match))
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
        ("/metrics", get(ops::metrics)),
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
async fn readyz(
    State(shutdown): State<CancellationToken>,
    State(store): State<Arc<dyn Store>>,
) -> Result<Json<Health>, ApiError> {
    let unavailable = |why: String| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, why);
    if shutdown.is_cancelled() {
        return Err(unavailable("draining: this node is shutting down".into()));
    }
    store.health().map_err(|e| unavailable(format!("store unavailable: {e}")))?;
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
async fn checkin(
    State(shutdown): State<CancellationToken>,
    State(ports): State<Arc<ViewerPorts>>,
) -> Result<Json<Checkin>, ApiError> {
    // A node that is stopping names only the others.
    let pick = if shutdown.is_cancelled() {
        ports.cluster.other_node().map(|o| (o.host, o.port))
    } else {
        ports.pick_for_checkin()
    };
    let (host, port) = pick.ok_or_else(|| {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "no viewer port has room: try again later")
    })?;
    Ok(Json(Checkin { host, port }))
}
