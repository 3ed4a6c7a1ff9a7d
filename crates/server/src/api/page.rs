//! The live page (SPEC 5): `GET /` and its scripts and style sheet, the client library the page
//! is built on (SPEC 12: `GET /client.js`, from `clients/js/`), and the operator's page (SPEC
//! 9): `GET /ops` and its own; compiled into the binary and served from memory with an `ETag` computed once, `304` for a matching `If-None-Match`, and
//! gzip or brotli made once (through the read API's [`Encoded`]). What the page shows and how it
//! follows a match live is in `crates/server/assets/`; the API it reads lives elsewhere.

use std::sync::{Arc, LazyLock};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::header::{CONTENT_SECURITY_POLICY, CONTENT_TYPE, X_CONTENT_TYPE_OPTIONS};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;

use super::pages::Encoded;
use super::ServesTls;
use crate::cluster::Cluster;

const INDEX_HTML: &str = include_str!("../../assets/index.html");
const APP_JS: &str = include_str!("../../assets/app.js");
/// The JavaScript client library (`clients/js/client.js`): for any page, and the live page's
/// connection.
const CLIENT_JS: &str = include_str!("../../../../clients/js/client.js");
const MODEL_JS: &str = include_str!("../../assets/model.js");
const APP_CSS: &str = include_str!("../../assets/app.css");
const OPS_HTML: &str = include_str!("../../assets/ops.html");
const OPS_JS: &str = include_str!("../../assets/ops.js");
const OPS_CSS: &str = include_str!("../../assets/ops.css");

/// The page is revalidated on every load (a `304` costs a round trip and no body), so that a new
/// binary shows at once.
const PAGE_CACHE: &str = "no-cache";
/// The script and style sheet: a few minutes. The page names them with `?v=<their hash>`, so a
/// new page never runs with an older script kept by the browser.
const ASSET_CACHE: &str = "public, max-age=300";
/// Nothing from another host, and nothing inline: the page's own script, style sheet and API
/// (`'self'` covers `ws:`/`wss:` to the same host), and its inline icon.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

/// [`POLICY`], letting the page also connect to the other live nodes (`host:port` of their HTTP
/// ports), where a `full` or a `bye shutdown` may send it with `try`. A node that joins later is
/// reachable from pages loaded after it reported. `tls`: the nodes speak HTTPS (a cluster's
/// nodes share their TLS configuration), so the page reaches them over `https:` and `wss:`.
fn policy_with(others: &[String], tls: bool) -> String {
    let (http, ws) = if tls { ("https", "wss") } else { ("http", "ws") };
    let extra: String = others.iter().map(|a| format!(" {http}://{a} {ws}://{a}")).collect();
    POLICY.replacen("connect-src 'self'", &format!("connect-src 'self'{extra}"), 1)
}

/// One file of the page, encoded once.
struct Asset {
    encoded: Encoded,
    content_type: HeaderValue,
    /// Its content hash, as in its `ETag`.
    hash: String,
}

impl Asset {
    fn new(body: String, prefix: &str, content_type: &'static str, cache: &'static str) -> Asset {
        let hash = format!("{:016x}", super::pages::fnv1a(body.as_bytes()));
        let encoded = Encoded::new(Bytes::from(body), &format!("{prefix}{hash}"), cache, true);
        Asset { encoded, content_type: HeaderValue::from_static(content_type), hash }
    }

    fn respond(&self, request: &HeaderMap) -> Response {
        let mut response = self.encoded.respond(request);
        if response.status() != StatusCode::NOT_MODIFIED {
            // `Encoded` speaks JSON; these bytes are not.
            response.headers_mut().insert(CONTENT_TYPE, self.content_type.clone());
            response
                .headers_mut()
                .insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        }
        response
    }
}

/// The library. Kept as long as the page's own scripts: a page of another site that loads it
/// without `?v=` gets a new version within minutes.
static CLIENT: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new(CLIENT_JS.to_owned(), "client", "text/javascript; charset=utf-8", ASSET_CACHE)
});

/// The page's script, importing the library by its hash (so its own hash changes with it).
static SCRIPT: LazyLock<Asset> =
    LazyLock::new(|| Asset::new(app_js(), "js", "text/javascript; charset=utf-8", ASSET_CACHE));

fn app_js() -> String {
    APP_JS.replace("from '/client.js';", &format!("from '/client.js?v={}';", CLIENT.hash))
}

static MODEL: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new(MODEL_JS.to_owned(), "js", "text/javascript; charset=utf-8", ASSET_CACHE)
});

static STYLE: LazyLock<Asset> =
    LazyLock::new(|| Asset::new(APP_CSS.to_owned(), "css", "text/css; charset=utf-8", ASSET_CACHE));

static INDEX: LazyLock<Asset> =
    LazyLock::new(|| Asset::new(page_html(), "page", "text/html; charset=utf-8", PAGE_CACHE));

/// The page, naming its script and style sheet by their hash.
fn page_html() -> String {
    INDEX_HTML
        .replace("/assets/app.js\"", &format!("/assets/app.js?v={}\"", SCRIPT.hash))
        .replace("/assets/model.js\"", &format!("/assets/model.js?v={}\"", MODEL.hash))
        .replace("/client.js\"", &format!("/client.js?v={}\"", CLIENT.hash))
        .replace("/assets/app.css\"", &format!("/assets/app.css?v={}\"", STYLE.hash))
}

/// `GET /` (with any query: `/?mid=<id>` opens a match): the page, whose policy lets it connect
/// to the other live nodes the `cluster` knows.
pub(super) async fn index(
    State(cluster): State<Arc<Cluster>>,
    State(tls): State<ServesTls>,
    headers: HeaderMap,
) -> Response {
    let mut response = INDEX.respond(&headers);
    let policy = policy_with(&cluster.web_addrs(), tls.0);
    let policy = HeaderValue::from_str(&policy).unwrap_or(HeaderValue::from_static(POLICY));
    response.headers_mut().insert(CONTENT_SECURITY_POLICY, policy);
    response
}

static OPS: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new(OPS_HTML.to_owned(), "ops", "text/html; charset=utf-8", PAGE_CACHE)
});
static OPS_SCRIPT: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new(OPS_JS.to_owned(), "opsjs", "text/javascript; charset=utf-8", PAGE_CACHE)
});
static OPS_STYLE: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new(OPS_CSS.to_owned(), "opscss", "text/css; charset=utf-8", PAGE_CACHE)
});

/// `GET /ops`: the operator's page (SPEC 9), with its script and style sheet.
pub(super) async fn ops(headers: HeaderMap) -> Response {
    let mut response = OPS.respond(&headers);
    response.headers_mut().insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(POLICY));
    response
}

/// `GET /assets/ops.js`.
pub(super) async fn ops_script(headers: HeaderMap) -> Response {
    OPS_SCRIPT.respond(&headers)
}

/// `GET /assets/ops.css`.
pub(super) async fn ops_style(headers: HeaderMap) -> Response {
    OPS_STYLE.respond(&headers)
}

/// `GET /assets/app.js`: the page's views, following a match through the library.
pub(super) async fn script(headers: HeaderMap) -> Response {
    SCRIPT.respond(&headers)
}

/// `GET /client.js`: the client library (SPEC 12), an ES module.
pub(super) async fn client(headers: HeaderMap) -> Response {
    CLIENT.respond(&headers)
}

/// `GET /assets/model.js`: the page's model of a match.
pub(super) async fn model(headers: HeaderMap) -> Response {
    MODEL.respond(&headers)
}

/// `GET /assets/app.css`.
pub(super) async fn style(headers: HeaderMap) -> Response {
    STYLE.respond(&headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_may_connect_to_the_other_live_nodes_and_nowhere_else() {
        assert_eq!(policy_with(&[], false), POLICY);
        assert_eq!(policy_with(&[], true), POLICY);
        let others = ["10.0.0.2:8080".to_owned(), "node3:8888".to_owned()];
        let policy = policy_with(&others, false);
        assert!(
            policy.contains(
                "connect-src 'self' http://10.0.0.2:8080 ws://10.0.0.2:8080 http://node3:8888 \
                 ws://node3:8888;"
            ),
            "{policy}"
        );
        let policy = policy_with(&others, true);
        assert!(
            policy.contains(
                "connect-src 'self' https://10.0.0.2:8080 wss://10.0.0.2:8080 https://node3:8888 \
                 wss://node3:8888;"
            ),
            "{policy}"
        );
        assert!(policy.contains("script-src 'self';"), "{policy}");
    }

    #[test]
    fn the_page_names_its_assets_by_their_hash_and_fetches_nothing_elsewhere() {
        let html = page_html();
        assert!(html.contains(&format!("/assets/app.js?v={}\"", SCRIPT.hash)), "{html}");
        assert!(html.contains(&format!("/assets/app.css?v={}\"", STYLE.hash)), "{html}");
        assert!(html.contains(&format!("/assets/model.js?v={}\"", MODEL.hash)), "{html}");
        assert!(html.contains(&format!("/client.js?v={}\"", CLIENT.hash)), "{html}");
        // The page's script imports the library by the same name, so the browser loads it once.
        let import = format!("import {{ watch }} from '/client.js?v={}';", CLIENT.hash);
        assert!(app_js().contains(&import), "the page's script imports the library by its hash");
        for text in [html.as_str(), APP_JS, MODEL_JS, APP_CSS, CLIENT_JS] {
            // The inline icon's SVG namespace is a name, not a request.
            let text = text.replace("http://www.w3.org/2000/svg", "");
            assert!(!text.contains("http://") && !text.contains("https://"), "no other host");
            assert!(!text.contains("@import") && !text.contains("url("), "no remote resources");
        }
    }
}
