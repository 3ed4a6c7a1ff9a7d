//! Read-API answers encoded once and served to everyone who asks, with HTTP caching: an `ETag`
//! that names the content, `304` for an `If-None-Match` that matches it, `Cache-Control` (a
//! year and `immutable` for an ended match's history, a couple of seconds for a live one), and
//! gzip or brotli for large pages, each compressed once per page and encoding.
//!
//! History pages are kept in a [`PageCache`] (bounded: [`PAGE_BUDGET`] bytes of pages, oldest
//! built first out). A match's events never change once stored, so a page is identified by the
//! match's incarnation, its `after` and the last seq it holds: a page of an ended match, or a
//! full one, stays valid; a page of a live match is built again once the match has moved, by one
//! request while the others wait for it (one store read, on SQLite or Redis alike). Store reads
//! run at most `--max-store-reads` at once; more wait their turn.
//!
//! A page that ends before its match's last event points at the next one (SPEC 10) with `Link`
//! and `X-Next-After`, part of the page as encoded: whether there is a next page is part of its
//! `ETag`, so a page built at the match's head is built again (and tagged anew) once it moves.

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use axum::body::{Body, Bytes};
use axum::http::header::{
    ACCEPT_ENCODING, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_TYPE, ETAG, IF_NONE_MATCH, LINK, VARY,
};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use serde::Serialize;
use tokio::sync::{OnceCell, Semaphore};

use crate::locks::lock;
use crate::model::{Event, EventData, EventKind, MatchId, Seq};
use crate::store::{Incarnation, Page, Store, StoreError};

/// Bytes of history pages kept (their identity encoding; compressed copies come on top and are
/// smaller). 64 MiB holds the whole history of ~14,000 matches of 31 events, or ~150 of 3,000.
pub(crate) const PAGE_BUDGET: usize = 64 * 1024 * 1024;
/// Pages smaller than this are not worth compressing.
const COMPRESS_FROM: usize = 1024;
/// How long a browser or a CDN may keep what can still change (a live match).
pub(crate) const LIVE: &str = "public, max-age=2";
/// ... and what cannot (the history of an ended match).
pub(crate) const FOREVER: &str = "public, max-age=31536000, immutable";

/// FNV-1a: a stable hash of a body, for its `ETag` (the same on every node and every start).
pub(super) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3))
}

/// One answer, encoded once: its bytes, their `ETag` and `Cache-Control`, and compressed
/// copies made the first time someone asks for them.
pub(crate) struct Encoded {
    body: Bytes,
    /// The `ETag` of each representation (identity, gzip, br), quoted: each encoding has its
    /// own (`-gzip`, `-br` appended), as strong tags must differ between representations
    /// (RFC 9110, 8.8.3). Made once, not per request.
    etags: [Option<HeaderValue>; 3],
    cache_control: HeaderValue,
    compressible: bool,
    gzip: OnceLock<Bytes>,
    br: OnceLock<Bytes>,
    /// A history page that ends before its match does: `Link` and `X-Next-After`.
    next: Option<[HeaderValue; 2]>,
}

/// The seq after which a history's next page starts, for a client that would rather not parse
/// `Link`.
pub(crate) const X_NEXT_AFTER: HeaderName = HeaderName::from_static("x-next-after");

/// Which answer of an [`Encoded`] a request gets: the coding of its bytes (identity, gzip or
/// br) and whether the client has them already (`304`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Choice {
    coding: Coding,
    not_modified: bool,
}

/// The coding of an answer's bytes; also the index of its `ETag`.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Coding {
    Identity = 0,
    Gzip = 1,
    Br = 2,
}

impl Coding {
    /// Its `Content-Encoding` (identity has none).
    fn name(self) -> Option<&'static str> {
        match self {
            Coding::Identity => None,
            Coding::Gzip => Some("gzip"),
            Coding::Br => Some("br"),
        }
    }
}

impl Encoded {
    /// `etag` without quotes; `compressible`: offer gzip/br (for pages kept, not per request).
    pub(crate) fn new(
        body: Bytes,
        etag: &str,
        cache_control: &'static str,
        compressible: bool,
    ) -> Self {
        // A tag that is not a valid header value (never, for ours) is left out, and then no
        // `If-None-Match` matches.
        let tag = |suffix: &str| HeaderValue::from_str(&format!("\"{etag}{suffix}\"")).ok();
        Encoded {
            body,
            etags: if compressible {
                [tag(""), tag("-gzip"), tag("-br")]
            } else {
                let identity = tag("");
                [identity.clone(), identity.clone(), identity]
            },
            cache_control: HeaderValue::from_static(cache_control),
            compressible,
            gzip: OnceLock::new(),
            br: OnceLock::new(),
            next: None,
        }
    }

    /// The same page, pointing at the next page of `id`'s history: the one after `last`, of
    /// `limit` events.
    fn with_next(mut self, id: &MatchId, last: Seq, limit: usize) -> Self {
        let link = format!("</1/match/{id}/history?after={last}&limit={limit}>; rel=\"next\"");
        // Ids and numbers are always valid header text.
        if let Ok(link) = HeaderValue::from_str(&link) {
            self.next = Some([link, HeaderValue::from(last)]);
        }
        self
    }

    /// The answer to a request with these headers: `304` when its `If-None-Match` names this
    /// content, else the bytes, compressed if the client accepts it and the page is large.
    pub(crate) fn respond(&self, request: &HeaderMap) -> Response {
        self.response(self.choose(request))
    }

    /// What a request with these headers gets (see [`Encoded::respond`]).
    pub(crate) fn choose(&self, request: &HeaderMap) -> Choice {
        let compress = self.compressible && self.body.len() >= COMPRESS_FROM;
        let coding = if compress && accepts(request, "br") {
            Coding::Br
        } else if compress && accepts(request, "gzip") {
            Coding::Gzip
        } else {
            Coding::Identity
        };
        let etag = self.etags[coding as usize].as_ref().and_then(|t| t.to_str().ok());
        Choice { coding, not_modified: etag.is_some_and(|t| none_match(request, t)) }
    }

    /// The answer chosen.
    pub(crate) fn response(&self, choice: Choice) -> Response {
        let mut response = Response::new(Body::empty());
        let headers = response.headers_mut();
        headers.reserve(8);
        if let Some(etag) = &self.etags[choice.coding as usize] {
            headers.insert(ETAG, etag.clone());
        }
        headers.insert(CACHE_CONTROL, self.cache_control.clone());
        if self.compressible {
            headers.insert(VARY, HeaderValue::from_static("accept-encoding"));
        }
        // In a 304 as well: a cache refreshes the headers it keeps from it.
        if let Some([link, after]) = &self.next {
            headers.insert(LINK, link.clone());
            headers.insert(X_NEXT_AFTER, after.clone());
        }
        if choice.not_modified {
            *response.status_mut() = StatusCode::NOT_MODIFIED;
            return response;
        }
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(c) = choice.coding.name() {
            set_encoding(&mut response, c);
        }
        *response.body_mut() = Body::from(self.body(choice));
        response
    }

    /// The bytes of the answer chosen (none for a `304`).
    pub(crate) fn body(&self, choice: Choice) -> Bytes {
        match (choice.not_modified, choice.coding) {
            (true, _) => Bytes::new(),
            (false, Coding::Br) => self.br.get_or_init(|| brotli(&self.body)).clone(),
            (false, Coding::Gzip) => self.gzip.get_or_init(|| gzip(&self.body)).clone(),
            (false, Coding::Identity) => self.body.clone(),
        }
    }

    /// Bytes held (identity encoding).
    fn len(&self) -> usize {
        self.body.len()
    }
}

fn set_encoding(response: &mut Response, coding: &'static str) {
    response.headers_mut().insert(CONTENT_ENCODING, HeaderValue::from_static(coding));
}

/// Does `If-None-Match` name the selected representation (`etag`, quoted; weakly compared, as
/// RFC 9110 says for this header), or `*`?
fn none_match(request: &HeaderMap, etag: &str) -> bool {
    request.get_all(IF_NONE_MATCH).iter().filter_map(|v| v.to_str().ok()).any(|v| {
        v.split(',').map(str::trim).any(|tag| tag == "*" || tag.trim_start_matches("W/") == etag)
    })
}

/// Does `Accept-Encoding` accept `coding`: named with a weight above 0, or, when not named at
/// all, `*` with a weight above 0?
fn accepts(request: &HeaderMap, coding: &str) -> bool {
    let (mut named, mut star) = (None, None);
    for value in request.get_all(ACCEPT_ENCODING).iter().filter_map(|v| v.to_str().ok()) {
        for item in value.split(',') {
            let mut parts = item.split(';').map(str::trim);
            let name = parts.next().unwrap_or_default();
            let weight = parts
                .find_map(|p| {
                    let (k, q) = p.split_once('=')?;
                    k.trim().eq_ignore_ascii_case("q").then(|| q.trim().parse::<f32>().ok())?
                })
                .unwrap_or(1.0);
            if name.eq_ignore_ascii_case(coding) {
                named = Some(weight > 0.0);
            } else if name == "*" {
                star = Some(weight > 0.0);
            }
        }
    }
    named.or(star).unwrap_or(false)
}

fn gzip(body: &[u8]) -> Bytes {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing to a Vec cannot fail.
    let _ = enc.write_all(body);
    enc.finish().unwrap_or_default().into()
}

fn brotli(body: &[u8]) -> Bytes {
    let mut out = Vec::new();
    {
        // Quality 6 of 11: most of the gain at a fraction of the time, and it is paid once.
        let mut w = brotli::CompressorWriter::new(&mut out, 4096, 6, 22);
        let _ = w.write_all(body);
    }
    out.into()
}

/// One event as the history shows it (the original's `timestamp` key).
#[derive(Serialize)]
struct HistoryEntry<'a> {
    seq: Seq,
    timestamp: i64,
    kind: EventKind,
    data: &'a EventData,
}

/// The JSON array of a history page.
pub(crate) fn history_json(events: &[Event]) -> Bytes {
    let entries: Vec<HistoryEntry<'_>> = events
        .iter()
        .map(|e| HistoryEntry { seq: e.seq, timestamp: e.ts, kind: e.kind, data: &e.data })
        .collect();
    serde_json::to_vec(&entries).unwrap_or_default().into()
}

/// Which page: the match's incarnation, `after` and `limit`.
type PageKey = (MatchId, Incarnation, Seq, usize);

/// What one kept page is counted as besides its body (and half the body more for its compressed
/// copies: far less, for JSON): its key (twice), slot and headers.
const PAGE_OVERHEAD: usize = 512;
/// Pages kept at most, whatever their size.
const MAX_PAGES: usize = 100_000;

/// A page being built or built, for a given head of its match.
struct Slot {
    /// The match's last seq when the page was asked for.
    head: Seq,
    page: OnceCell<Arc<Built>>,
    /// What the page is counted as in the budget; 0 until built, and once no longer counted.
    counted: std::sync::atomic::AtomicUsize,
}

struct Built {
    encoded: Arc<Encoded>,
    /// The page cannot change any more, nor can whether a next page follows: its match is over,
    /// or the page is full and its match has gone past it.
    complete: bool,
}

/// History pages, encoded once, bounded by a budget of bytes ([`PAGE_BUDGET`] by default) and
/// [`MAX_PAGES`].
pub(crate) struct PageCache {
    inner: Mutex<Pages>,
    budget: usize,
    /// Store reads running at once (`--max-store-reads`): a crowd asking for old pages, or for
    /// matches nobody has, waits here rather than queueing unbounded work on the store.
    reads: Semaphore,
}

#[derive(Default)]
struct Pages {
    slots: HashMap<PageKey, Arc<Slot>>,
    /// Pages in the order they were built: the oldest leave first.
    built: VecDeque<(PageKey, Arc<Slot>)>,
    bytes: usize,
}

/// Where a match stands when its history is asked for.
pub(crate) struct At {
    pub inc: Incarnation,
    pub head: Seq,
    pub over: bool,
}

impl PageCache {
    /// A cache that keeps at most `budget` bytes of pages and reads the store at most
    /// `max_reads` times at once.
    pub(crate) fn new(budget: usize, max_reads: usize) -> PageCache {
        PageCache { inner: Mutex::default(), budget, reads: Semaphore::new(max_reads.max(1)) }
    }

    /// Reads the store once a read permit is free.
    async fn read(
        &self,
        store: &dyn Store,
        id: &MatchId,
        after: Seq,
        limit: usize,
    ) -> Result<Page, StoreError> {
        // Never closed: the error cannot happen.
        let _permit = self
            .reads
            .acquire()
            .await
            .map_err(|_| StoreError::Backend("store reads are closed".into()))?;
        store.history(id, after, limit).await
    }

    /// A page of a match this node does not know (yet: another node created it a moment ago),
    /// straight from the store and not kept.
    pub(crate) async fn unkept(
        &self,
        store: &dyn Store,
        id: &MatchId,
        after: Seq,
        limit: usize,
    ) -> Result<Arc<Encoded>, StoreError> {
        // One event more, to know whether a next page follows.
        let mut page = self.read(store, id, after, limit.saturating_add(1)).await?;
        let more = page.events.len() > limit;
        page.events.truncate(limit);
        let last = page.events.last().map_or(after, |e| e.seq);
        let etag = format!("h{}-{after}-{last}{}", page.inc, if more { "n" } else { "" });
        let encoded = Encoded::new(history_json(&page.events), &etag, LIVE, false);
        Ok(Arc::new(if more { encoded.with_next(id, last, limit) } else { encoded }))
    }

    /// The page of `id`'s history after `after` (at most `limit` events), from memory when it is
    /// still what the store holds, else read once from `store` and kept. An empty page (after
    /// the last event, or `limit` 0) is answered without being kept.
    pub(crate) async fn page(
        &self,
        store: &dyn Store,
        id: &MatchId,
        at: At,
        after: Seq,
        limit: usize,
    ) -> Result<Arc<Encoded>, StoreError> {
        if limit == 0 || after >= at.head {
            let etag = format!("h{}-{after}-{after}", at.inc);
            let cache_control = if at.over { FOREVER } else { LIVE };
            return Ok(Arc::new(Encoded::new(
                Bytes::from_static(b"[]"),
                &etag,
                cache_control,
                true,
            )));
        }
        let key = (id.clone(), at.inc, after, limit);
        let slot = {
            let mut pages = lock(&self.inner);
            let usable = pages
                .slots
                .get(&key)
                .filter(|s| s.head == at.head || s.page.get().is_some_and(|b| b.complete));
            match usable {
                Some(slot) => slot.clone(),
                None => {
                    let slot = Arc::new(Slot {
                        head: at.head,
                        page: OnceCell::new(),
                        counted: Default::default(),
                    });
                    if let Some(old) = pages.slots.insert(key.clone(), slot.clone()) {
                        // Replaced (its match moved): it no longer counts.
                        let size = old.counted.swap(0, std::sync::atomic::Ordering::AcqRel);
                        pages.bytes -= size;
                    }
                    slot
                }
            }
        };
        let mut fresh = false;
        let built = slot
            .page
            .get_or_try_init(|| async {
                fresh = true;
                let page = self.read(store, id, after, limit).await?;
                let last = page.events.last().map_or(after, |e| e.seq);
                // The store may already hold a newer incarnation than the hub served (the id
                // re-created meanwhile): such a page is shown, but as live and not kept for good.
                let same = page.inc == at.inc;
                let full = page.events.len() == limit;
                // Of another incarnation, the head is unknown: a full page may have a next one.
                let next = !page.events.is_empty() && if same { last < at.head } else { full };
                let complete = same && (at.over || (full && next));
                let etag = format!("h{}-{after}-{last}{}", page.inc, if next { "n" } else { "" });
                let cache_control = if same && at.over { FOREVER } else { LIVE };
                let body = history_json(&page.events);
                let encoded = Encoded::new(body, &etag, cache_control, true);
                let encoded =
                    Arc::new(if next { encoded.with_next(id, last, limit) } else { encoded });
                Ok::<_, StoreError>(Arc::new(Built { encoded, complete }))
            })
            .await;
        let built = match built {
            Ok(b) => b.clone(),
            Err(e) => {
                // Not kept: the next request tries the store again.
                let mut pages = lock(&self.inner);
                if pages.slots.get(&key).is_some_and(|s| Arc::ptr_eq(s, &slot)) {
                    pages.slots.remove(&key);
                }
                return Err(e);
            }
        };
        if fresh {
            self.account(key, &slot, built.encoded.len() + built.encoded.len() / 2 + PAGE_OVERHEAD);
        }
        Ok(built.encoded.clone())
    }

    /// Counts a page just built, and lets the oldest go while over budget.
    fn account(&self, key: PageKey, slot: &Arc<Slot>, size: usize) {
        use std::sync::atomic::Ordering;
        let mut pages = lock(&self.inner);
        // Replaced before it was built: nothing to count.
        if !pages.slots.get(&key).is_some_and(|s| Arc::ptr_eq(s, slot)) {
            return;
        }
        slot.counted.store(size, Ordering::Release);
        pages.bytes += size;
        pages.built.push_back((key, slot.clone()));
        while pages.bytes > self.budget || pages.built.len() > MAX_PAGES {
            let Some((old, old_slot)) = pages.built.pop_front() else { break };
            pages.bytes -= old_slot.counted.swap(0, Ordering::AcqRel);
            if pages.slots.get(&old).is_some_and(|s| Arc::ptr_eq(s, &old_slot)) {
                pages.slots.remove(&old);
            }
        }
    }

    /// Pages kept and the bytes they count as (for tests).
    #[cfg(test)]
    fn usage(&self) -> (usize, usize) {
        let pages = lock(&self.inner);
        (pages.slots.len(), pages.bytes)
    }
}

#[cfg(test)]
mod tests;
