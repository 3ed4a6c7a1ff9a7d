//! The page cache's tests: HTTP caching of one page, and the cache's reads and budget.

use super::*;

fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(*k, HeaderValue::from_static(v));
    }
    h
}

#[test]
fn if_none_match_compares_weakly_and_knows_star() {
    let tag = "\"h1-0-31\"";
    assert!(none_match(&headers(&[("if-none-match", "\"h1-0-31\"")]), tag));
    assert!(none_match(&headers(&[("if-none-match", "W/\"h1-0-31\"")]), tag));
    assert!(none_match(&headers(&[("if-none-match", "\"x\", \"h1-0-31\"")]), tag));
    assert!(none_match(&headers(&[("if-none-match", "*")]), tag));
    // Another representation (the gzip copy) is another tag.
    assert!(!none_match(&headers(&[("if-none-match", "\"h1-0-31-gzip\"")]), tag));
    assert!(!none_match(&headers(&[("if-none-match", "\"h1-0-30\"")]), tag));
    assert!(!none_match(&headers(&[]), tag));
}

#[test]
fn accept_encoding_is_read_with_its_weights() {
    assert!(accepts(&headers(&[("accept-encoding", "gzip, deflate, br")]), "br"));
    assert!(accepts(&headers(&[("accept-encoding", "GZIP;q=0.5")]), "gzip"));
    assert!(!accepts(&headers(&[("accept-encoding", "gzip;q=0, br")]), "gzip"));
    assert!(!accepts(&headers(&[("accept-encoding", "br;Q=0, *")]), "br"));
    assert!(accepts(&headers(&[("accept-encoding", "br;q=0, *")]), "gzip"));
    assert!(accepts(&headers(&[("accept-encoding", "*")]), "br"));
    assert!(!accepts(&headers(&[("accept-encoding", "identity")]), "gzip"));
    assert!(!accepts(&headers(&[]), "gzip"));
}

#[test]
fn a_large_page_is_compressed_once_per_encoding_and_a_small_one_never() {
    let big = Encoded::new(Bytes::from(vec![b'a'; 5000]), "t", LIVE, true);
    let r = big.respond(&headers(&[("accept-encoding", "gzip")]));
    assert_eq!(r.headers()[CONTENT_ENCODING], "gzip");
    assert_eq!(r.headers()[VARY], "accept-encoding");
    let first = big.gzip.get().unwrap().clone();
    let mut d = flate2::read::GzDecoder::new(&first[..]);
    let mut back = Vec::new();
    std::io::Read::read_to_end(&mut d, &mut back).unwrap();
    assert_eq!(back, vec![b'a'; 5000]);
    assert!(big.br.get().is_none());
    let small = Encoded::new(Bytes::from_static(b"[]"), "t", LIVE, true);
    let r = small.respond(&headers(&[("accept-encoding", "gzip, br")]));
    assert!(r.headers().get(CONTENT_ENCODING).is_none());
    let r = small.respond(&headers(&[("if-none-match", "\"t\""), ("accept-encoding", "br")]));
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(r.headers()[ETAG], "\"t\"");
    assert_eq!(r.headers()[CACHE_CONTROL], LIVE);
}

mod cache {
    use std::sync::atomic::Ordering;

    use super::super::*;
    use crate::store::memory::tests::{after_seq, append, event, info, Counting};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_page_is_read_once_for_everyone_and_again_only_when_its_match_moved() {
        let store = Arc::new(Counting::default());
        let m = info("page", "tig");
        let inc = store.create_match(&m).await.unwrap();
        append(&*store, &m.id, after_seq(inc, (1..=3).map(event).collect())).await.unwrap();
        let cache = Arc::new(PageCache::new(PAGE_BUDGET, 64));
        let ask = |head, over| {
            let (cache, store, id) = (cache.clone(), store.clone(), m.id.clone());
            tokio::spawn(async move {
                let at = At { inc, head, over };
                cache.page(&*store, &id, at, 0, 100).await.unwrap()
            })
        };
        // 50 readers at once: one store read, the same bytes for all.
        let pages: Vec<_> = (0..50).map(|_| ask(3, false)).collect();
        let mut bodies = Vec::new();
        for p in pages {
            bodies.push(p.await.unwrap().body.clone());
        }
        assert_eq!(store.reads.load(Ordering::Relaxed), 1);
        assert!(bodies.iter().all(|b| b.as_ptr() == bodies[0].as_ptr()));
        // The match moves: read again, once.
        append(&*store, &m.id, after_seq(inc, vec![event(4)])).await.unwrap();
        let moved = ask(4, true).await.unwrap();
        assert_eq!(store.reads.load(Ordering::Relaxed), 2);
        let entries: serde_json::Value = serde_json::from_slice(&moved.body).unwrap();
        assert_eq!(entries.as_array().unwrap().len(), 4);
        assert_eq!(moved.cache_control, FOREVER);
        // Ended and complete: kept whatever head a later request names.
        ask(5, true).await.unwrap();
        assert_eq!(store.reads.load(Ordering::Relaxed), 2);
        // Nothing after the last event, or no room: answered without the store, not kept.
        let cache2 = PageCache::new(PAGE_BUDGET, 64);
        let empty = cache2.page(&*store, &m.id, At { inc, head: 4, over: true }, 4, 10).await;
        assert_eq!(&empty.unwrap().body[..], b"[]");
        assert_eq!(store.reads.load(Ordering::Relaxed), 2);
        assert_eq!(cache2.usage(), (0, 0));
    }

    #[tokio::test]
    async fn the_oldest_pages_leave_once_over_budget_and_a_failed_read_keeps_nothing() {
        let store = Arc::new(Counting::default());
        let m = info("budget", "tig");
        let inc = store.create_match(&m).await.unwrap();
        append(&*store, &m.id, after_seq(inc, (1..=20).map(event).collect())).await.unwrap();
        // Room for about two one-event pages.
        let one = history_json(&[event(1)]).len();
        let cache = PageCache::new(2 * (one + one / 2 + PAGE_OVERHEAD) + 10, 64);
        let at = || At { inc, head: 20, over: true };
        for after in 0..5 {
            cache.page(&*store, &m.id, at(), after, 1).await.unwrap();
        }
        let (pages, bytes) = cache.usage();
        assert_eq!(pages, 2);
        assert!(bytes <= 2 * (one + one / 2 + PAGE_OVERHEAD) + 10, "{bytes}");
        // The newest two are still kept; the first left.
        let reads = store.reads.load(Ordering::Relaxed);
        cache.page(&*store, &m.id, at(), 4, 1).await.unwrap();
        assert_eq!(store.reads.load(Ordering::Relaxed), reads);
        cache.page(&*store, &m.id, at(), 0, 1).await.unwrap();
        assert_eq!(store.reads.load(Ordering::Relaxed), reads + 1);
        // A match the store does not have (cancelled meanwhile): an error, nothing kept.
        let gone = info("gone", "tig");
        let before = cache.usage().0;
        let failed =
            cache.page(&*store, &gone.id, At { inc: 9, head: 3, over: false }, 0, 10).await;
        assert!(matches!(failed, Err(StoreError::NotFound(_))));
        assert_eq!(cache.usage().0, before);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn store_reads_wait_their_turn_past_max_reads() {
        let store = Arc::new(Counting::default());
        let m = info("turns", "tig");
        let inc = store.create_match(&m).await.unwrap();
        append(&*store, &m.id, after_seq(inc, (1..=8).map(event).collect())).await.unwrap();
        let cache = Arc::new(PageCache::new(PAGE_BUDGET, 2));
        // Eight different pages at once: eight reads, two at a time.
        let asks: Vec<_> = (0..8)
            .map(|after| {
                let (cache, store, id) = (cache.clone(), store.clone(), m.id.clone());
                tokio::spawn(async move {
                    let at = At { inc, head: 8, over: true };
                    cache.page(&*store, &id, at, after, 1).await.unwrap()
                })
            })
            .collect();
        for ask in asks {
            ask.await.unwrap();
        }
        assert_eq!(store.reads.load(Ordering::SeqCst), 8);
        assert_eq!(store.most_at_once.load(Ordering::SeqCst), 2);
    }

    fn header<'a>(r: &'a Response, name: &str) -> Option<&'a str> {
        r.headers().get(name).map(|v| v.to_str().unwrap())
    }

    #[tokio::test]
    async fn a_page_ending_before_its_match_points_at_the_next_and_is_tagged_anew() {
        let store = Arc::new(Counting::default());
        let m = info("next", "tig");
        let inc = store.create_match(&m).await.unwrap();
        append(&*store, &m.id, after_seq(inc, (1..=3).map(event).collect())).await.unwrap();
        let cache = PageCache::new(PAGE_BUDGET, 64);
        let live = |head| At { inc, head, over: false };
        // Full, and the match's last event: nothing follows yet.
        let page = cache.page(&*store, &m.id, live(3), 0, 3).await.unwrap();
        let r = page.respond(&HeaderMap::new());
        assert_eq!((header(&r, "etag"), header(&r, "link")), (Some("\"h1-0-3\""), None));
        assert_eq!(header(&r, "x-next-after"), None);
        // The match moves past it: built again, pointing at the next page, under another tag.
        append(&*store, &m.id, after_seq(inc, vec![event(4)])).await.unwrap();
        let page = cache.page(&*store, &m.id, live(4), 0, 3).await.unwrap();
        assert_eq!(store.reads.load(Ordering::SeqCst), 2);
        let link = format!("</1/match/{}/history?after=3&limit=3>; rel=\"next\"", m.id);
        let r = page.respond(&HeaderMap::new());
        assert_eq!(header(&r, "etag"), Some("\"h1-0-3n\""));
        assert_eq!((header(&r, "link"), header(&r, "x-next-after")), (Some(&*link), Some("3")));
        // A 304 says it too; the page is kept whatever the match does next.
        let r = page.respond(&super::headers(&[("if-none-match", "\"h1-0-3n\"")]));
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(header(&r, "link"), Some(&*link));
        cache.page(&*store, &m.id, live(9), 0, 3).await.unwrap();
        assert_eq!(store.reads.load(Ordering::SeqCst), 2);
        // The last page has no next.
        let page = cache.page(&*store, &m.id, live(4), 3, 3).await.unwrap();
        assert_eq!(header(&page.respond(&HeaderMap::new()), "link"), None);
        // A match this node does not know: one event more read, to know.
        let unkept = cache.unkept(&*store, &m.id, 0, 2).await.unwrap();
        let r = unkept.respond(&HeaderMap::new());
        assert_eq!(
            (header(&r, "x-next-after"), header(&r, "etag")),
            (Some("2"), Some("\"h1-0-2n\""))
        );
        let unkept = cache.unkept(&*store, &m.id, 2, 2).await.unwrap();
        assert_eq!(header(&unkept.respond(&HeaderMap::new()), "x-next-after"), None);
    }
}
