//! `GET /ops.json` (SPEC 9): what the operator's page and `matchstream top` show: this node's
//! latest figures and last minutes, the other nodes' latest (with `--redis`), and the live
//! matches. The figures are sampled by `crate::ops`; the page itself is in `api/page.rs`.

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use super::AppState;
use crate::model::Period;

pub(super) async fn figures(State(state): State<AppState>) -> Json<Value> {
    let ops = &state.ops;
    let matches: Vec<Value> = state
        .hub
        .ids()
        .iter()
        .filter_map(|id| state.hub.current(id))
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
