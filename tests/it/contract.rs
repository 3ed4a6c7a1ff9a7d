//! `GET /openapi.json` (SPEC 12) against the node: the document is valid OpenAPI 3.1 (checked by
//! `openapi-spec-validator`, which `scripts/test` installs, and its schemas by the JSON Schema
//! meta-schema), and a real answer of every path, every error included, is one the document
//! describes: its status is listed for that operation and its body matches that status's schema.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::support::*;

/// One answer as read off the socket.
#[derive(Debug)]
struct Answer {
    status: u16,
    /// Header names lower-cased, with their values.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// Sends `request` (a whole HTTP/1.1 request) on a new connection from `from` and reads the
/// answer: its body as long as `content-length` says, none for a `101` or an event stream (the
/// connection is then dropped).
async fn exchange_from(from: [u8; 4], to: SocketAddr, request: &[u8]) -> Answer {
    let mut conn = BufReader::new(connect_from(from, to).await);
    conn.get_mut().write_all(request).await.expect("request sent");
    timeout(PATIENCE, read_answer(&mut conn)).await.expect("an answer in time")
}

async fn read_answer(conn: &mut BufReader<TcpStream>) -> Answer {
    let mut line = String::new();
    conn.read_line(&mut line).await.expect("status line");
    let status = line.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("a status");
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        conn.read_line(&mut line).await.expect("header line");
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').expect("name: value");
        headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
    }
    let mut answer = Answer { status, headers, body: Vec::new() };
    let length = answer.header("content-length").map(|l| l.parse::<usize>().expect("a length"));
    let streams = status == 101 || answer.header("content-type") == Some("text/event-stream");
    if let (Some(length), false) = (length, streams) {
        answer.body = vec![0; length];
        conn.read_exact(&mut answer.body).await.expect("the body");
    }
    answer
}

/// The document, as the node serves it.
async fn document(s: &TestServer) -> Value {
    let a = exchange_from([127, 0, 0, 1], addr(s), &get("/openapi.json", "")).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.header("content-type"), Some("application/json"));
    serde_json::from_slice(&a.body).expect("the document is JSON")
}

fn addr(s: &TestServer) -> SocketAddr {
    s.http_host().parse().expect("the HTTP address")
}

fn get(path: &str, headers: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nhost: t\r\nconnection: close\r\n{headers}\r\n").into_bytes()
}

fn with_body(method: &str, path: &str, token: bool, body: &str) -> Vec<u8> {
    let auth = if token { format!("authorization: Bearer {TOKEN}\r\n") } else { String::new() };
    format!(
        "{method} {path} HTTP/1.1\r\nhost: t\r\nconnection: close\r\n{auth}\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Where `openapi-spec-validator` is: on the PATH, or in the virtualenv `scripts/test` makes.
fn spec_validator() -> PathBuf {
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/openapi-venv/bin/openapi-spec-validator");
    if venv.exists() {
        return venv;
    }
    let on_path = Command::new("openapi-spec-validator").arg("--help").output();
    assert!(
        on_path.is_ok_and(|o| o.status.success()),
        "openapi-spec-validator is missing: run scripts/test (it installs it into \
         target/openapi-venv), or pip install openapi-spec-validator"
    );
    PathBuf::from("openapi-spec-validator")
}

#[tokio::test]
async fn the_document_is_valid_openapi_3_1() {
    let s = TestServer::start().await;
    let doc = document(&s).await;
    assert_eq!(doc["openapi"], "3.1.0");
    let file = s.dir.path().join("openapi.json");
    std::fs::write(&file, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    let out = Command::new(spec_validator()).arg(&file).output().expect("the validator runs");
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "openapi-spec-validator: {said}");
    assert!(said.contains("OK"), "{said}");
    // And each schema by the JSON Schema 2020-12 meta-schema, which OpenAPI 3.1 uses.
    let schemas = doc["components"]["schemas"].as_object().expect("schemas");
    assert!(schemas.len() >= 10, "{:?}", schemas.keys());
    for (name, schema) in schemas {
        let checked = jsonschema::meta::validate(schema);
        assert!(checked.is_ok(), "{name}: {checked:?}");
    }
    // A client may cache it, and revalidate.
    let etag = exchange_from([127, 0, 0, 1], addr(&s), &get("/openapi.json", "")).await;
    let etag = etag.header("etag").expect("an ETag").to_owned();
    let again = get("/openapi.json", &format!("if-none-match: {etag}\r\n"));
    assert_eq!(exchange_from([127, 0, 0, 1], addr(&s), &again).await.status, 304);
}

/// What the document says of `method template` answering `status`: `Err` with why not.
fn check(doc: &Value, method: &str, template: &str, a: &Answer) -> Result<(), String> {
    let operation = &doc["paths"][template][method.to_ascii_lowercase()];
    if operation.is_null() {
        return Err("no such operation in the document".into());
    }
    let Some(response) = operation["responses"].get(a.status.to_string()) else {
        return Err(format!("status {} is not documented", a.status));
    };
    let Some(content) = response.get("content").and_then(Value::as_object) else {
        return match a.body.is_empty() {
            true => Ok(()),
            false => Err("a body where the document says none".into()),
        };
    };
    let media = a.header("content-type").unwrap_or_default();
    let media = media.split(';').next().unwrap_or_default().trim();
    let Some(declared) = content.get(media) else {
        return Err(format!("content type {media:?}, documented: {:?}", content.keys()));
    };
    if media != "application/json" {
        return Ok(());
    }
    let body: Value = serde_json::from_slice(&a.body).map_err(|e| format!("not JSON: {e}"))?;
    // The response's schema, with the document's components beside it for its `$ref`s.
    let mut schema = declared["schema"].clone();
    let Some(fields) = schema.as_object_mut() else {
        return Err("no schema for a JSON answer".into());
    };
    fields.insert("components".into(), doc["components"].clone());
    let validator = jsonschema::draft202012::new(&schema).map_err(|e| format!("schema: {e}"))?;
    let errors: Vec<String> = validator.iter_errors(&body).map(|e| e.to_string()).collect();
    match errors.is_empty() {
        true => Ok(()),
        false => Err(format!("{body} does not match its schema: {errors:?}")),
    }
}

#[tokio::test]
async fn every_answer_of_every_path_is_described_by_the_document() {
    let s = TestServer::start_with(|c| {
        // Two ports of one viewer each, to fill them for checkin's 503.
        c.max_viewers = 2;
        c.http_body_timeout = Duration::from_millis(300);
        c.http_max_per_address = 16;
    })
    .await;
    let doc = document(&s).await;
    let to = addr(&s);
    let id = s.started_match().await;
    let other = s.create_match("riv", "boc", "2011-10-02").await;
    let unknown = "abc-def-2011-09-10";
    let events = format!("/1/match/{id}/events");
    let ws_head = "upgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-version: 13\r\n\
                   sec-websocket-key: MDEyMzQ1Njc4OWFiY2RlZg==\r\n";
    let long_name = "x".repeat(65);
    let too_many: Vec<Value> = (0..257).map(|_| json!({"kind": "corner"})).collect();
    let too_many = Value::from(too_many).to_string();
    let match_path = format!("/1/match/{id}");
    let history = format!("/1/match/{id}/history");

    // (method, the document's path, request, the status it must get).
    let mut cases: Vec<(&str, &str, Vec<u8>, u16)> = vec![
        ("GET", "/openapi.json", get("/openapi.json", ""), 200),
        ("GET", "/healthz", get("/healthz", ""), 200),
        ("GET", "/readyz", get("/readyz", ""), 200),
        ("GET", "/1/checkin", get("/1/checkin", ""), 200),
        ("GET", "/1/matches", get("/1/matches", ""), 200),
        ("GET", "/1/match/{id}", get(&match_path, ""), 200),
        ("GET", "/1/match/{id}", get(&format!("/1/match/{unknown}"), ""), 404),
        ("GET", "/1/match/{id}/history", get(&format!("{history}?limit=1"), ""), 200),
        ("GET", "/1/match/{id}/history", get(&format!("{history}?after=1"), ""), 200),
        ("GET", "/1/match/{id}/history", get(&format!("{history}?limit=0"), ""), 400),
        ("GET", "/1/match/{id}/history", get(&format!("{history}?after=-1"), ""), 400),
        ("GET", "/1/match/{id}/history", get(&format!("/1/match/{unknown}/history"), ""), 404),
        ("GET", "/1/match/{id}/ws", get(&format!("/1/match/{id}/ws"), ws_head), 101),
        ("GET", "/1/match/{id}/ws", get(&format!("/1/match/{id}/ws?from=x"), ws_head), 400),
        ("GET", "/1/match/{id}/ws", get(&format!("/1/match/{unknown}/ws"), ws_head), 404),
        ("GET", "/1/match/{id}/ws", get(&format!("/1/match/{id}/ws"), ""), 426),
        ("GET", "/1/match/{id}/stream", get(&format!("/1/match/{id}/stream?from=1"), ""), 200),
        ("GET", "/1/match/{id}/stream", get(&format!("/1/match/{id}/stream?from=x"), ""), 400),
        (
            "GET",
            "/1/match/{id}/stream",
            get(&format!("/1/match/{id}/stream"), "last-event-id: one\r\n"),
            400,
        ),
        ("GET", "/1/match/{id}/stream", get(&format!("/1/match/{unknown}/stream"), ""), 404),
        (
            "POST",
            "/1/matches",
            with_body(
                "POST",
                "/1/matches",
                true,
                r#"{"home":"a","visit":"b","start_date":"2011-09-10"}"#,
            ),
            201,
        ),
        ("POST", "/1/matches", with_body("POST", "/1/matches", true, r#"{"home":"a"}"#), 400),
        ("POST", "/1/matches", with_body("POST", "/1/matches", false, "{}"), 401),
        (
            "POST",
            "/1/matches",
            with_body(
                "POST",
                "/1/matches",
                true,
                r#"{"home":"elp","visit":"tig","start_date":"2011-09-10"}"#,
            ),
            409,
        ),
        (
            "POST",
            "/1/matches",
            with_body(
                "POST",
                "/1/matches",
                true,
                &format!(
                    r#"{{"home":"c","visit":"d","start_date":"2011-09-10","home_name":"{long_name}"}}"#
                ),
            ),
            422,
        ),
        (
            "POST",
            "/1/match/{id}/events",
            with_body("POST", &events, true, r#"{"kind":"corner","data":{"team":"tig"}}"#),
            201,
        ),
        (
            "POST",
            "/1/match/{id}/events",
            with_body(
                "POST",
                &format!("{events}?after=2"),
                true,
                r#"[{"kind":"corner","data":{"team":"elp"}},{"kind":"shot"}]"#,
            ),
            201,
        ),
        (
            "POST",
            "/1/match/{id}/events",
            with_body("POST", &events, true, r#"{"kind":"dance"}"#),
            400,
        ),
        (
            "POST",
            "/1/match/{id}/events",
            with_body("POST", &events, false, r#"{"kind":"shot"}"#),
            401,
        ),
        (
            "POST",
            "/1/match/{id}/events",
            with_body("POST", &format!("/1/match/{unknown}/events"), true, r#"{"kind":"shot"}"#),
            404,
        ),
        (
            "POST",
            "/1/match/{id}/events",
            with_body("POST", &format!("{events}?after=1"), true, r#"{"kind":"shot"}"#),
            409,
        ),
        (
            "POST",
            "/1/match/{id}/events",
            with_body("POST", &format!("/1/match/{other}/events"), true, r#"{"kind":"halftime"}"#),
            409,
        ),
        ("POST", "/1/match/{id}/events", with_body("POST", &events, true, &too_many), 413),
        (
            "POST",
            "/1/match/{id}/events",
            with_body("POST", &events, true, r#"{"kind":"goal","data":{"team":"xyz"}}"#),
            422,
        ),
        ("DELETE", "/1/match/{id}", with_body("DELETE", &match_path, false, ""), 401),
        (
            "DELETE",
            "/1/match/{id}",
            with_body("DELETE", &format!("/1/match/{unknown}"), true, ""),
            404,
        ),
        (
            "DELETE",
            "/1/match/{id}",
            with_body("DELETE", &format!("/1/match/{other}"), true, ""),
            204,
        ),
        // A page that points at the next one (`Link`, `X-Next-After`).
        ("GET", "/1/match/{id}/history", get(&format!("{history}?limit=2"), ""), 200),
        // A request head over --http-max-head (16 KiB), on any path.
        (
            "GET",
            "/1/matches",
            get("/1/matches", &format!("x-big: {}\r\n", "y".repeat(17 * 1024))),
            431,
        ),
        // A body over --http-max-body, refused from its length before it is read.
        (
            "POST",
            "/1/match/{id}/events",
            format!(
                "POST {events} HTTP/1.1\r\nhost: t\r\nauthorization: Bearer {TOKEN}\r\n\
                 content-length: 300000\r\n\r\n"
            )
            .into_bytes(),
            413,
        ),
        // A body that does not arrive within --http-body-timeout.
        (
            "POST",
            "/1/matches",
            format!(
                "POST /1/matches HTTP/1.1\r\nhost: t\r\nauthorization: Bearer {TOKEN}\r\n\
                 content-length: 100\r\n\r\n{{\"home\""
            )
            .into_bytes(),
            408,
        ),
    ];
    let mut answered = BTreeSet::new();
    let mut failures = Vec::new();
    for (method, template, request, want) in cases.drain(..) {
        let a = exchange_from([127, 0, 0, 1], to, &request).await;
        let what = format!("{method} {template} → {}", a.status);
        if a.status != want {
            failures.push(format!("{what}: wanted {want}: {}", String::from_utf8_lossy(&a.body)));
        }
        if let Err(e) = check(&doc, method, template, &a) {
            failures.push(format!("{what}: {e}"));
        }
        answered.insert((method, template, a.status));
        // Revalidation: an answer with an ETag is a 304 for it, at once.
        let Some(etag) = a.header("etag").filter(|_| a.status == 200) else { continue };
        let request = String::from_utf8_lossy(&request).replacen(
            "\r\n\r\n",
            &format!("\r\nif-none-match: {etag}\r\n\r\n"),
            1,
        );
        let a = exchange_from([127, 0, 0, 1], to, request.as_bytes()).await;
        if a.status != 304 {
            failures
                .push(format!("{method} {template} (If-None-Match) → {}: wanted 304", a.status));
        }
        if let Err(e) = check(&doc, method, template, &a) {
            failures.push(format!("{method} {template} (If-None-Match) → {}: {e}", a.status));
        }
        answered.insert((method, template, a.status));
    }
    // Checkin with every viewer port full: 503.
    let viewer = |port: SocketAddr| {
        let line = format!("VERSION:2:CONNECT:me:MATCH:{id}");
        async move {
            let mut v = Viewer::connect(port, &line).await;
            assert_eq!(v.frame().await.expect("a frame")["kind"], "status");
            v
        }
    };
    let _held = (viewer(s.viewers[0]).await, viewer(s.viewers[1]).await);
    let a = exchange_from([127, 0, 0, 1], to, &get("/1/checkin", "")).await;
    assert_eq!(a.status, 503, "{a:?}");
    check(&doc, "GET", "/1/checkin", &a).unwrap_or_else(|e| failures.push(format!("checkin: {e}")));
    answered.insert(("GET", "/1/checkin", 503));
    // Past --http-max-per-address, any request of that address: 429, read from one more
    // connection while sixteen others of its address are open.
    let crowd = [127, 0, 0, 9];
    let mut open = Vec::new();
    for _ in 0..16 {
        open.push(connect_from(crowd, to).await);
    }
    let a = exchange_from(crowd, to, &get("/1/matches", "")).await;
    assert_eq!(a.status, 429, "{a:?}");
    check(&doc, "GET", "/1/matches", &a).unwrap_or_else(|e| failures.push(format!("429: {e}")));
    answered.insert(("GET", "/1/matches", 429));
    assert!(
        failures.is_empty(),
        "answers the document does not describe:\n{}",
        failures.join("\n")
    );

    // Every operation of the document was called, and answered its success.
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let method = method.to_ascii_uppercase();
            let ok = answered.iter().any(|(m, t, status)| {
                *m == method && t == path && ((200..300).contains(status) || *status == 101)
            });
            assert!(ok, "{method} {path} was not called with success: {answered:?}");
        }
    }
    // Every error status of the API was provoked at least once.
    let statuses: BTreeSet<u16> = answered.iter().map(|(_, _, s)| *s).collect();
    for status in [304, 400, 401, 404, 408, 409, 413, 422, 426, 429, 431, 503] {
        assert!(statuses.contains(&status), "no answer {status}: {statuses:?}");
    }
}
