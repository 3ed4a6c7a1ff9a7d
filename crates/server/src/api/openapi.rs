//! `GET /openapi.json` (SPEC 12): the OpenAPI 3.1 document of the HTTP API. Its paths and
//! operations come from the handlers' `#[utoipa::path]` annotations, collected by the very
//! list the router is built from (`api::documented`), and its schemas from the types the
//! handlers read and write; this file holds the answers' types that only the API has, what
//! every operation shares (the answers the HTTP layer gives before a handler runs), and the
//! document itself, encoded once. `docs/PROTOCOL.md` is the prose beside it.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use axum::body::Bytes;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, ResponseBuilder};
use utoipa::ToSchema;

use super::pages::Encoded;
use crate::model::{EventData, EventKind, Period};

// The doc comments of these types are the document's descriptions: they cite
// docs/PROTOCOL.md, never the SPEC, which the document's readers cannot see.

/// Every error's body: a sentence for a person, and for a failed `?after=` the match's current
/// seq.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ErrorBody {
    /// What is wrong and what a valid request looks like.
    pub error: String,
    /// The match's current seq: only on a `409` for `?after=<seq>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<u64>)]
    pub seq: Option<crate::model::Seq>,
}

/// `201` of `POST /1/matches`.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Created {
    /// The new match's id, `<home>-<visit>-<start_date>`.
    #[schema(example = "elp-tig-2011-09-10")]
    pub id: String,
}

/// One accepted event: its seq and the time the node accepted it.
#[derive(Clone, Copy, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Ack {
    #[schema(value_type = u64)]
    pub seq: crate::model::Seq,
    /// Unix milliseconds, the node's clock.
    #[schema(value_type = i64)]
    pub ts: crate::model::Millis,
}

/// `201` of `POST /1/match/<id>/events`: one ack for one event, a list for a list.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub(crate) enum Acks {
    One(Ack),
    Many(Vec<Ack>),
}

/// The body of `POST /1/match/<id>/events`: one event or a list of at most 256.
#[derive(ToSchema)]
#[serde(untagged)]
#[allow(dead_code)] // A schema only: `input.rs` reads the body by hand, for better errors.
pub(crate) enum Events {
    One(Box<crate::model::EventInput>),
    Many(Vec<crate::model::EventInput>),
}

/// `GET /1/checkin`: the viewer port to connect to.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Checkin {
    #[schema(example = "127.0.0.1")]
    pub host: String,
    #[schema(example = 9100)]
    pub port: u16,
}

/// `GET /healthz` and `GET /readyz` when all is well.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Health {
    /// `ok` (`/healthz`) or `ready` (`/readyz`).
    pub status: &'static str,
}

/// The match object of `GET /1/match/<id>` and of the v2 `status` frame: the original's keys,
/// hyphens included, plus ours (docs/PROTOCOL.md#the-match-object).
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // A schema only: `model::Match` writes itself (its own `Serialize`).
pub(crate) struct MatchObject {
    #[schema(example = "elp-tig-2011-09-10")]
    id: String,
    /// The home team's id.
    home: String,
    /// Only when given at creation.
    #[serde(rename = "home-name", skip_serializing_if = "Option::is_none")]
    home_name: Option<String>,
    /// The players on the pitch: shirt number to name.
    #[serde(rename = "home-players")]
    home_players: BTreeMap<String, String>,
    #[serde(rename = "home-score")]
    home_score: u32,
    visit: String,
    #[serde(rename = "visit-name", skip_serializing_if = "Option::is_none")]
    visit_name: Option<String>,
    #[serde(rename = "visit-players")]
    visit_players: BTreeMap<String, String>,
    #[serde(rename = "visit-score")]
    visit_score: u32,
    period: Period,
    /// When the current period began (Unix ms); null before `start`.
    #[schema(required = true)]
    period_start: Option<i64>,
    /// The match's date, `YYYY-MM-DD`.
    #[schema(format = Date)]
    start_time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    division: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stadium: Option<String>,
    /// How many events have been applied.
    seq: u64,
}

/// One event of `GET /1/match/<id>/history` (the original's `timestamp` key for `ts`).
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // A schema only: `pages::history_json` writes the page.
pub(crate) struct HistoryEvent {
    seq: u64,
    /// Unix milliseconds, the node's clock.
    timestamp: i64,
    kind: EventKind,
    data: EventData,
}

/// The document, served as it was encoded on the first request.
static DOCUMENT: LazyLock<Encoded> = LazyLock::new(|| {
    let body = document().to_json().unwrap_or_else(|e| {
        tracing::error!(error = %e, "the OpenAPI document did not serialize");
        "{}".to_owned()
    });
    // Named by its content: a node of another version serves another tag.
    let etag = format!("o{:016x}", super::pages::fnv1a(body.as_bytes()));
    Encoded::new(Bytes::from(body), &etag, "public, max-age=300", true)
});

/// `GET /openapi.json`.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "meta",
    summary = "This document",
    description = "The OpenAPI 3.1 document of the HTTP API, generated from the node's handlers.",
    responses(
        (status = 200, description = "The document", body = Object, content_type = "application/json"),
        (status = 304, description = "Unchanged since the `ETag` in `If-None-Match`"),
    )
)]
pub(super) async fn serve(headers: HeaderMap) -> Response {
    DOCUMENT.respond(&headers).into_response()
}

/// The whole document: the operations of the public router, with what every answer shares.
pub(crate) fn document() -> OpenApi {
    let mut doc = super::documented().into_openapi();
    doc.info.title = "MatchStream".into();
    doc.info.version = env!("CARGO_PKG_VERSION").into();
    doc.info.description = Some(
        "Live football matches: the watcher API (publishing, with a bearer token), the public \
         read API, and the viewers' WebSocket and Server-Sent Events. The wire formats are \
         described in docs/PROTOCOL.md of the repository."
            .into(),
    );
    doc.info.license = None;
    doc.info.contact = None;
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some("A watcher token of the node (--watcher-token)"))
                .build(),
        ),
    );
    for item in doc.paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.post,
            &mut item.delete,
            &mut item.put,
            &mut item.patch,
            &mut item.head,
        ];
        for operation in operations.into_iter().flatten() {
            every_answer(operation);
        }
    }
    doc
}

/// The answers the HTTP layer may give on any path, before its handler runs (SPEC 10).
fn every_answer(operation: &mut Operation) {
    let error = |description: &str| {
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build(),
            )
            .build()
    };
    let responses = &mut operation.responses.responses;
    responses.entry("429".into()).or_insert_with(|| {
        error("Too many connections at once from this address (--http-max-per-address): the node answers this and closes, without reading the request").into()
    });
    responses.entry("431".into()).or_insert_with(|| {
        ResponseBuilder::new()
            .description("The request head is over --http-max-head (16 KiB); no body")
            .build()
            .into()
    });
    responses
        .entry("500".into())
        .or_insert_with(|| error("`internal error`: the node logged why").into());
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::api::input::{DATA_KEYS, MATCH_KEYS};

    fn doc() -> Value {
        serde_json::to_value(document()).expect("the document is JSON")
    }

    fn schema<'a>(doc: &'a Value, name: &str) -> &'a Value {
        &doc["components"]["schemas"][name]
    }

    fn keys(v: &Value) -> Vec<&str> {
        v.as_object().map(|o| o.keys().map(String::as_str).collect()).unwrap_or_default()
    }

    #[test]
    fn the_document_is_openapi_3_1_with_every_route_of_the_api() {
        let doc = doc();
        assert_eq!(doc["openapi"], "3.1.0");
        assert_eq!(doc["info"]["title"], "MatchStream");
        let mut paths = keys(&doc["paths"]);
        paths.sort_unstable();
        assert_eq!(
            paths,
            [
                "/1/checkin",
                "/1/match/{id}",
                "/1/match/{id}/events",
                "/1/match/{id}/history",
                "/1/match/{id}/stream",
                "/1/match/{id}/ws",
                "/1/matches",
                "/healthz",
                "/openapi.json",
                "/readyz",
            ]
        );
        let methods = |path: &str| keys(&doc["paths"][path]);
        assert_eq!(methods("/1/matches"), ["get", "post"]);
        assert_eq!(methods("/1/match/{id}"), ["get", "delete"]);
        // Every operation has the answers the HTTP layer gives before any handler runs.
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                for status in ["429", "431", "500"] {
                    assert!(op["responses"].get(status).is_some(), "{method} {path}: {status}");
                }
            }
        }
        // The watcher's operations need the bearer token, the others nothing.
        let secured =
            |path: &str, method: &str| doc["paths"][path][method].get("security").is_some();
        assert!(secured("/1/matches", "post") && secured("/1/match/{id}/events", "post"));
        assert!(secured("/1/match/{id}", "delete"));
        assert!(!secured("/1/matches", "get") && !secured("/1/match/{id}", "get"));
        assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
        // Its readers have the repository's docs, not the SPEC the code's comments cite.
        let text = doc.to_string();
        assert!(!text.contains("SPEC"), "the document cites the SPEC: {text}");
        assert!(text.contains("docs/PROTOCOL.md"));
    }

    #[test]
    fn the_input_schemas_have_the_keys_the_parser_takes() {
        // `input.rs` reads bodies by hand: its key lists and the schemas must agree.
        let doc = doc();
        assert_eq!(keys(&schema(&doc, "NewMatch")["properties"]), MATCH_KEYS);
        assert_eq!(keys(&schema(&doc, "EventDataInput")["properties"]), DATA_KEYS);
        assert_eq!(keys(&schema(&doc, "EventData")["properties"]), DATA_KEYS);
        assert_eq!(schema(&doc, "NewMatch")["required"], serde_json::json!(MATCH_KEYS[..3]));
        let kinds: Vec<&str> = schema(&doc, "EventKind")["enum"]
            .as_array()
            .expect("an enum")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(kinds, EventKind::ALL.map(EventKind::as_str));
        for closed in ["NewMatch", "EventDataInput", "ErrorBody", "MatchObject", "HistoryEvent"] {
            assert_eq!(schema(&doc, closed)["additionalProperties"], false, "{closed}");
        }
    }
}
