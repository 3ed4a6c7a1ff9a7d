//! HTTP caching of the read API: `ETag` on the match list, a match and its history pages,
//! `304` for a matching `If-None-Match`, `Cache-Control` for live and ended matches, and gzip /
//! brotli for large pages (the same bytes, decompressed).

use std::io::Read;

use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::StatusCode;
use serde_json::json;

use crate::support::*;

/// A GET with these request headers: status, response headers, body bytes.
async fn get(
    s: &TestServer,
    path: &str,
    headers: &[(&'static str, &str)],
) -> (StatusCode, HeaderMap, Vec<u8>) {
    let mut req = reqwest::Client::new().get(format!("{}{path}", s.base));
    for (k, v) in headers {
        req = req.header(*k, HeaderValue::from_str(v).unwrap());
    }
    let r = req.send().await.expect("GET");
    let (status, h) = (r.status(), r.headers().clone());
    (status, h, r.bytes().await.expect("body").to_vec())
}

fn etag(h: &HeaderMap) -> String {
    h.get("etag").expect("an ETag").to_str().unwrap().to_owned()
}

/// For each path: an ETag; `If-None-Match` with it gives 304 and no body; a change gives 200
/// and another ETag.
#[tokio::test]
async fn list_match_and_history_answer_304_until_they_change() {
    let s = TestServer::start().await;
    let id = s.started_match().await;
    let paths =
        ["/1/matches".to_owned(), format!("/1/match/{id}"), format!("/1/match/{id}/history")];
    let mut tags = Vec::new();
    for path in &paths {
        let (status, h, body) = get(&s, path, &[]).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert!(!body.is_empty());
        let tag = etag(&h);
        assert!(tag.starts_with('"') && tag.ends_with('"'), "{tag}");
        assert_eq!(h["cache-control"], "public, max-age=2", "{path}");
        let (status, h2, body) = get(&s, path, &[("if-none-match", &tag)]).await;
        assert_eq!(status, StatusCode::NOT_MODIFIED, "{path}");
        assert!(body.is_empty());
        assert_eq!(etag(&h2), tag);
        // A weak or listed match counts too; another tag does not.
        let listed = format!("\"other\", W/{tag}");
        assert_eq!(get(&s, path, &[("if-none-match", &listed)]).await.0, StatusCode::NOT_MODIFIED);
        assert_eq!(get(&s, path, &[("if-none-match", "\"other\"")]).await.0, StatusCode::OK);
        tags.push(tag);
    }
    // A goal changes the match and its history; a new match changes the list.
    s.publish(&id, "goal", json!({"team": "tig", "player": 7})).await;
    s.create_match("rma", "fcb", "2011-09-10").await;
    for (path, old) in paths.iter().zip(&tags) {
        let (status, h, body) = get(&s, path, &[("if-none-match", old)]).await;
        assert_eq!(status, StatusCode::OK, "{path} changed");
        assert_ne!(&etag(&h), old, "{path}");
        assert!(!body.is_empty());
    }
    // The page with the goal has it; its tag holds until the next event.
    let (_, h, body) = get(&s, &format!("/1/match/{id}/history"), &[]).await;
    let history: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(history.as_array().unwrap().len(), 2);
    assert_eq!(history[1]["kind"], "goal");
    let tag = etag(&h);
    let again = get(&s, &format!("/1/match/{id}/history"), &[("if-none-match", &tag)]).await;
    assert_eq!(again.0, StatusCode::NOT_MODIFIED);
}

#[tokio::test]
async fn an_ended_match_is_cacheable_for_good_and_keeps_its_tags_across_a_restart() {
    let s = TestServer::start().await;
    let id = s.started_match().await;
    s.publish(&id, "goal", json!({"team": "elp", "player": 25})).await;
    let history = format!("/1/match/{id}/history");
    let (_, live, _) = get(&s, &history, &[]).await;
    assert_eq!(live["cache-control"], "public, max-age=2");
    s.publish(&id, "stop", json!({})).await;
    let (_, ended, body) = get(&s, &history, &[]).await;
    assert_eq!(ended["cache-control"], "public, max-age=31536000, immutable");
    let (_, m, _) = get(&s, &format!("/1/match/{id}"), &[]).await;
    assert_eq!(m["cache-control"], "public, max-age=3600");
    // A page of it (after=1, limit=1) is another page with its own tag.
    let (_, page, page_body) = get(&s, &format!("{history}?after=1&limit=1"), &[]).await;
    assert_ne!(etag(&page), etag(&ended));
    let page: serde_json::Value = serde_json::from_slice(&page_body).unwrap();
    assert_eq!(page.as_array().unwrap().len(), 1);
    assert_eq!(page[0]["seq"], 2);
    // The same store, restarted: the same content under the same tags.
    let tags = (etag(&ended), etag(&m));
    let dir = s.stop().await;
    let s = TestServer::start_in(dir, |_| {}).await;
    let (status, h, again) = get(&s, &history, &[("if-none-match", &tags.0)]).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    assert_eq!(etag(&h), tags.0);
    assert!(again.is_empty());
    let (_, h, again) = get(&s, &history, &[]).await;
    assert_eq!(again, body);
    assert_eq!(etag(&h), tags.0);
    assert_eq!(
        get(&s, &format!("/1/match/{id}"), &[("if-none-match", &tags.1)]).await.0,
        StatusCode::NOT_MODIFIED
    );
}

#[tokio::test]
async fn large_pages_come_gzip_or_brotli_when_asked_and_decompress_to_the_same_bytes() {
    let s = TestServer::start().await;
    let id = s.started_match().await;
    for i in 0..40 {
        s.publish(
            &id,
            "comment",
            json!({"text": format!("comment number {i}, long enough to count")}),
        )
        .await;
    }
    let history = format!("/1/match/{id}/history");
    let (_, plain_h, plain) = get(&s, &history, &[]).await;
    assert!(plain.len() > 2048, "{} bytes", plain.len());
    assert!(plain_h.get("content-encoding").is_none());
    assert_eq!(plain_h["vary"], "accept-encoding");

    let (_, h, gz) = get(&s, &history, &[("accept-encoding", "gzip")]).await;
    assert_eq!(h["content-encoding"], "gzip");
    // Each representation has its own strong tag, and revalidates only itself.
    let plain_tag = etag(&plain_h);
    let gzip_tag = etag(&h);
    assert_eq!(gzip_tag, format!("{}-gzip\"", plain_tag.trim_end_matches('"')));
    let revalidate =
        get(&s, &history, &[("if-none-match", &gzip_tag), ("accept-encoding", "gzip")]).await;
    assert_eq!(revalidate.0, StatusCode::NOT_MODIFIED);
    assert_eq!(etag(&revalidate.1), gzip_tag);
    assert_eq!(get(&s, &history, &[("if-none-match", &gzip_tag)]).await.0, StatusCode::OK);
    let mut back = Vec::new();
    flate2::read::GzDecoder::new(&gz[..]).read_to_end(&mut back).unwrap();
    assert_eq!(back, plain);
    assert!(gz.len() < plain.len() / 3, "{} of {}", gz.len(), plain.len());

    let (_, h, br) = get(&s, &history, &[("accept-encoding", "gzip, deflate, br")]).await;
    assert_eq!(h["content-encoding"], "br");
    let mut back = Vec::new();
    brotli::Decompressor::new(&br[..], 4096).read_to_end(&mut back).unwrap();
    assert_eq!(back, plain);

    // Refused with q=0, and small answers stay as they are.
    let (_, h, _) = get(&s, &history, &[("accept-encoding", "gzip;q=0")]).await;
    assert!(h.get("content-encoding").is_none());
    let (_, h, _) = get(&s, "/1/matches", &[("accept-encoding", "gzip, br")]).await;
    assert!(h.get("content-encoding").is_none());
}

/// An id written with `%` escapes is decoded by the router: the same status, headers (but
/// `date`) and bytes as the plain id, for pages, 304s, bad queries and unknown matches.
#[tokio::test]
async fn an_escaped_id_gets_the_same_answers() {
    let s = TestServer::start().await;
    let id = s.started_match().await;
    s.publish(&id, "goal", json!({"team": "elp"})).await;
    let escaped = id.replacen('-', "%2D", 1);
    let pages = [
        ("", vec![]),
        ("/history", vec![]),
        ("/history?after=1&limit=1", vec![]),
        ("/history?after=x", vec![]),
        ("/history", vec![("if-none-match", "\"h1-0-2\"")]),
        ("/history", vec![("accept-encoding", "gzip")]),
    ];
    for (tail, headers) in pages {
        let fast = get(&s, &format!("/1/match/{id}{tail}"), &headers).await;
        let routed = get(&s, &format!("/1/match/{escaped}{tail}"), &headers).await;
        let seen = |(status, h, body): &(StatusCode, HeaderMap, Vec<u8>)| {
            let mut h: Vec<String> = h
                .iter()
                .filter(|(k, _)| k.as_str() != "date")
                .map(|(k, v)| format!("{k}: {}", v.to_str().unwrap()))
                .collect();
            h.sort();
            (*status, h, body.clone())
        };
        assert_eq!(seen(&fast), seen(&routed), "{tail} {headers:?}");
        assert!(fast.1.get("access-control-allow-origin").is_some(), "{tail}: CORS");
    }
    let unknown = get(&s, "/1/match/abc-def-2011-09-10/history", &[]).await;
    let unknown_routed = get(&s, "/1/match/abc%2Ddef-2011-09-10/history", &[]).await;
    assert_eq!(unknown.0, StatusCode::NOT_FOUND);
    assert_eq!((unknown.0, unknown.2), (unknown_routed.0, unknown_routed.2));
}
