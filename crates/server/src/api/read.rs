//! The read API's answers that pages and caching serve (SPEC 3): `/1/matches`, `/1/match/<id>`
//! and `/1/match/<id>/history`, each a page encoded once (`pages.rs`) and answered with its
//! ETag, 304 and Cache-Control. What these handlers use is [`Reads`], and nothing else.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::error::{match_id, ApiError};
use super::input;
use super::openapi::{ErrorBody, HistoryEvent, MatchObject};
use super::pages::{self, At, Choice, Encoded, PageCache};
use crate::config::Config;
use crate::hub::{Hub, Snapshot};
use crate::ingest::{Ingest, IngestError};
use crate::locks::lock;
use crate::model::MatchId;
use crate::store::{Incarnation, Store};

/// `/1/matches` as encoded for the hub's generation of the list.
type MatchList = (u64, Arc<Encoded>);

/// What the read API reads: the matches as the hub holds them (an ended match that left memory
/// is revived through the ingest), the store for history pages not kept, and the pages and list
/// encoded once.
pub(crate) struct Reads {
    hub: Arc<Hub>,
    ingest: Arc<Ingest>,
    store: Arc<dyn Store>,
    /// History pages, encoded once.
    pages: PageCache,
    /// `/1/matches`, encoded once per change of the list (the hub's generation).
    matches: Mutex<Option<MatchList>>,
    /// `--history-limit` and `--max-history-limit` (SPEC 10).
    history_limit: usize,
    max_history_limit: usize,
}

impl Reads {
    pub(crate) fn new(
        hub: Arc<Hub>,
        ingest: Arc<Ingest>,
        store: Arc<dyn Store>,
        config: &Config,
    ) -> Reads {
        Reads {
            hub,
            ingest,
            store,
            pages: PageCache::new(pages::PAGE_BUDGET, config.max_store_reads),
            matches: Mutex::default(),
            history_limit: config.history_limit,
            max_history_limit: config.max_history_limit,
        }
    }
}

/// An answer of the read API: a page encoded once, and which of its answers a request gets.
pub(crate) enum Answer {
    Page(Arc<Encoded>, Choice),
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        match self {
            Answer::Page(encoded, choice) => encoded.response(choice),
        }
    }
}

// The handlers take the request itself (its headers) rather than a `HeaderMap`, which axum
// would copy for each request.

/// `GET /1/matches`.
#[utoipa::path(
    get,
    path = "/1/matches",
    tag = "read",
    summary = "Every match",
    description = "The ids of every match, ended ones too.",
    responses(
        (status = 200, description = "The match ids", body = Vec<String>,
            headers(("etag" = String, description = "Names the content"), ("cache-control" = String, description = "`public, max-age=2`"))),
        (status = 304, description = "Unchanged since the `ETag` in `If-None-Match`"),
    )
)]
pub(crate) async fn list_matches(State(reads): State<Arc<Reads>>, request: Request) -> Answer {
    matches(&reads, request.headers())
}

/// `GET /1/match/<id>`.
#[utoipa::path(
    get,
    path = "/1/match/{id}",
    tag = "read",
    summary = "One match as it stands",
    params(("id" = String, Path, description = "The match id", example = "elp-tig-2011-09-10")),
    responses(
        (status = 200, description = "The match object (also the `data` of a v2 `status` frame)", body = MatchObject,
            headers(("etag" = String, description = "Names the content"), ("cache-control" = String, description = "`public, max-age=3600` once ended, else `public, max-age=2`"))),
        (status = 304, description = "Unchanged since the `ETag` in `If-None-Match`"),
        (status = 404, description = "No such match", body = ErrorBody),
        (status = 503, description = "An ended match could not be read back from the store now", body = ErrorBody),
    )
)]
pub(crate) async fn get_match(
    State(reads): State<Arc<Reads>>,
    Path(raw): Path<String>,
    request: Request,
) -> Result<Answer, ApiError> {
    one_match(&reads, &raw, request.headers()).await
}

/// `GET /1/match/<id>/history[?after=&limit=]`.
#[utoipa::path(
    get,
    path = "/1/match/{id}/history",
    tag = "read",
    summary = "A page of a match's events",
    description = "The events after `after`, at most `limit`, in seq order. When more follow, \
        `Link` and `X-Next-After` point at the next page.",
    params(
        ("id" = String, Path, description = "The match id", example = "elp-tig-2011-09-10"),
        ("after" = Option<u64>, Query, description = "List the events after this seq (default 0: from the first)"),
        ("limit" = Option<u64>, Query, minimum = 1, description = "The most events of the page: default --history-limit (500); a larger one than --max-history-limit (2,000) is capped"),
    ),
    responses(
        (status = 200, description = "The events", body = Vec<HistoryEvent>,
            headers(
                ("etag" = String, description = "Names the content"),
                ("cache-control" = String, description = "`public, max-age=31536000, immutable` for an ended match, else `public, max-age=2`"),
                ("link" = String, description = "Only when more events follow: `</1/match/<id>/history?after=<last>&limit=<limit>>; rel=\"next\"`"),
                ("x-next-after" = u64, description = "Only when more events follow: the `after` of the next page"),
            )),
        (status = 304, description = "Unchanged since the `ETag` in `If-None-Match`"),
        (status = 400, description = "A bad `after` or `limit`: the body says what a valid one looks like", body = ErrorBody),
        (status = 404, description = "No such match", body = ErrorBody),
        (status = 503, description = "The store cannot be read now", body = ErrorBody),
    )
)]
pub(crate) async fn history(
    State(reads): State<Arc<Reads>>,
    Path(raw): Path<String>,
    RawQuery(query): RawQuery,
    request: Request,
) -> Result<Answer, ApiError> {
    history_page(&reads, &raw, query.as_deref(), request.headers()).await
}

fn matches(reads: &Reads, headers: &HeaderMap) -> Answer {
    let generation = reads.hub.generation();
    let cached = lock(&reads.matches).as_ref().filter(|(g, _)| *g == generation).cloned();
    let encoded = match cached {
        Some((_, encoded)) => encoded,
        None => {
            let body: Bytes = serde_json::to_vec(&reads.hub.ids()).unwrap_or_default().into();
            // Named by its content, so that every node gives the same list the same tag.
            let etag = format!("l{:016x}", pages::fnv1a(&body));
            let encoded = Arc::new(Encoded::new(body, &etag, pages::LIVE, false));
            *lock(&reads.matches) = Some((generation, encoded.clone()));
            encoded
        }
    };
    chosen(encoded, headers)
}

fn chosen(encoded: Arc<Encoded>, headers: &HeaderMap) -> Answer {
    let choice = encoded.choose(headers);
    Answer::Page(encoded, choice)
}

/// The match `id` as the hub holds it, reading an ended match that left memory back from the
/// store first (SPEC 10). `None`: no such match.
async fn current(
    reads: &Reads,
    id: &MatchId,
) -> Result<Option<(Incarnation, Arc<Snapshot>)>, ApiError> {
    if let Some(found) = reads.hub.current(id) {
        return Ok(Some(found));
    }
    if reads.hub.is_evicted(id) {
        reads.ingest.revive(id).await.map_err(IngestError::from)?;
    }
    Ok(reads.hub.current(id))
}

async fn one_match(reads: &Reads, raw: &str, headers: &HeaderMap) -> Result<Answer, ApiError> {
    let id = match_id(raw)?;
    let (inc, snapshot) = current(reads, &id)
        .await?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no match {id}")))?;
    let over = snapshot.state.is_over();
    let etag = format!("m{inc}-{}", snapshot.state.seq);
    // An ended match does not change (unless cancelled): an hour; a live one: a moment.
    let cache_control = if over { "public, max-age=3600" } else { pages::LIVE };
    Ok(chosen(Arc::new(Encoded::new(snapshot.json(), &etag, cache_control, false)), headers))
}

/// A page of a match's history: `limit` defaults to `--history-limit` and is capped at
/// `--max-history-limit`; a page that ends before the match does points at the next one.
async fn history_page(
    reads: &Reads,
    raw: &str,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Result<Answer, ApiError> {
    let (after, limit) = input::history_query(query, reads.history_limit, reads.max_history_limit)?;
    let id = match_id(raw)?;
    let Some((inc, snapshot)) = current(reads, &id).await? else {
        if reads.hub.knows_every_match() {
            return Err(ApiError::new(StatusCode::NOT_FOUND, format!("no match {id}")));
        }
        // Not (yet) known here: with other nodes, a match created elsewhere a moment ago is
        // in the store before this node hears of it. Read there, keep nothing.
        let page = reads.pages.unkept(&*reads.store, &id, after, limit).await?;
        return Ok(chosen(page, headers));
    };
    let at = At { inc, head: snapshot.state.seq, over: snapshot.state.is_over() };
    let kept = reads.pages.page(&*reads.store, &id, at, after, limit).await?;
    Ok(chosen(kept, headers))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::store::memory::tests::Counting;

    /// The read API's state over a store that counts history reads; `shared`: as with Redis.
    async fn state(store: Arc<Counting>, shared: bool) -> Reads {
        let dyn_store: Arc<dyn Store> = store;
        let hub = Arc::new(Hub::new(dyn_store.clone(), 16, 100).shared(shared));
        let ingest = Arc::new(Ingest::restore(dyn_store.clone(), hub.clone()).await.unwrap());
        Reads::new(hub, ingest, dyn_store, &Config::default())
    }

    #[tokio::test]
    async fn an_unknown_match_is_404_without_a_store_read_unless_other_nodes_may_know_it() {
        let id = "abc-def-2020-01-01";
        let alone = Arc::new(Counting::default());
        let state_alone = state(alone.clone(), false).await;
        let answer = history_page(&state_alone, id, None, &HeaderMap::new()).await;
        let e = answer.err().expect("unknown");
        assert_eq!(
            (e.status, e.message.as_str()),
            (StatusCode::NOT_FOUND, "no match abc-def-2020-01-01")
        );
        assert_eq!(alone.reads.load(Ordering::SeqCst), 0);
        // With other nodes, the store is asked (and knows nothing either).
        let shared = Arc::new(Counting::default());
        let state_shared = state(shared.clone(), true).await;
        let answer = history_page(&state_shared, id, None, &HeaderMap::new()).await;
        assert_eq!(answer.err().expect("unknown").status, StatusCode::NOT_FOUND);
        assert_eq!(shared.reads.load(Ordering::SeqCst), 1);
    }
}
