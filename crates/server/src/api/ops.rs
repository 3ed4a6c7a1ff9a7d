//! The admin listener's figures (SPEC 9): `GET /metrics`, the Prometheus text, and
//! `GET /ops.json`, what the operator's page and `matchstream top` show: this node's latest
//! figures and last minutes, the other nodes' latest (with `--redis`), and the live matches. The
//! figures are sampled by `crate::ops`; the page itself is in `api/page.rs`.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::hub::Hub;
use crate::model::Period;
use crate::ops::Ops;
use crate::telemetry::Metrics;

/// What the figures are read from: the operator's samples, the node's metrics, and the hub
/// (the matches, live and in memory).
pub(crate) struct Figures {
    pub(crate) ops: Arc<Ops>,
    pub(crate) hub: Arc<Hub>,
    pub(crate) metrics: Arc<Metrics>,
}

/// `GET /metrics`: the Prometheus text exposition (SPEC 9).
pub(super) async fn metrics(State(figures): State<Arc<Figures>>) -> Response {
    let metrics = &figures.metrics;
    metrics.matches_live.set(figures.hub.live_count() as f64);
    metrics.matches_in_memory.set(figures.hub.in_memory() as f64);
    (
        [(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        metrics.render(),
    )
        .into_response()
}

/// `GET /ops.json`.
pub(super) async fn figures(State(figures): State<Arc<Figures>>) -> Json<Value> {
    let ops = &figures.ops;
    let matches: Vec<Value> = figures
        .hub
        .ids()
        .iter()
        .filter_map(|id| figures.hub.current(id))
        .map(|(_, snapshot)| snapshot.state.clone())
        .filter(|m| m.period != Period::NotStarted && !m.is_over())
        .map(|m| {
            json!({
                "id": m.id().as_str(),
                "home": m.info.home.id.as_str(),
                "visit": m.info.visit.id.as_str(),
                "home_score": m.home.score,
                "visit_score": m.visit.score,
                "period": m.period.as_str(),
                "seq": m.seq,
            })
        })
        .collect();
    Json(json!({
        "node": ops.node,
        "http": ops.http,
        "latest": ops.latest(),
        "history": ops.history(),
        "nodes": ops.others(),
        "matches": matches,
    }))
}
