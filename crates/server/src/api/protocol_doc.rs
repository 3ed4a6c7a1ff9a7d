//! `docs/PROTOCOL.md` against the node (SPEC 12): every path a router serves and every kind of
//! frame the node writes, taken from the code's own lists, is described there, and every link
//! into it names one of its headings.

use super::{admin_routes, documented, page_routes};
use crate::model::{EventKind, Period};
use crate::wire::ws::{close_code, ClientError};
use crate::wire::ByeReason;

const PROTOCOL: &str = include_str!("../../../../docs/PROTOCOL.md");

/// The document's code: its code blocks, and the `spans` of its prose.
fn code() -> impl Iterator<Item = &'static str> {
    PROTOCOL.split("```").enumerate().flat_map(|(i, piece)| {
        let spans: Vec<&str> = match i % 2 {
            1 => vec![piece],
            _ => piece.split('`').skip(1).step_by(2).collect(),
        };
        spans
    })
}

/// `word` is one whole code span: `goal`, `try`.
fn named(word: &str) -> bool {
    code().any(|c| c == word)
}

/// `pattern` is shown within some code.
fn shown(pattern: &str) -> bool {
    code().any(|c| c.contains(pattern))
}

/// A router's path as the document writes it: `/1/match/{id}` as `/1/match/<id>`.
fn written(path: &str) -> String {
    path.replace('{', "<").replace('}', ">")
}

#[test]
fn every_path_a_router_serves_is_described_with_its_method() {
    let (_, api) = documented().split_for_parts();
    let mut routes: Vec<(String, Vec<&str>)> = api
        .paths
        .paths
        .iter()
        .map(|(path, item)| {
            let methods = [("GET", &item.get), ("POST", &item.post), ("DELETE", &item.delete)];
            let methods = methods.iter().filter(|(_, op)| op.is_some()).map(|(m, _)| *m);
            (written(path), methods.collect())
        })
        .collect();
    let served = page_routes().into_iter().chain(admin_routes());
    routes.extend(served.map(|(path, _)| (written(path), vec!["GET"])));
    assert!(routes.len() >= 20, "the lists of routes are read: {routes:?}");
    let mut missing = Vec::new();
    for (path, methods) in &routes {
        assert!(!methods.is_empty(), "{path}: a method");
        for method in methods {
            let line = format!("{method} {path}");
            let request = |c: &str| {
                c.strip_prefix(&line).is_some_and(|rest| {
                    rest.is_empty() || rest.starts_with('[') || rest.starts_with('?')
                })
            };
            if !code().any(request) {
                missing.push(line);
            }
        }
    }
    assert!(missing.is_empty(), "not in docs/PROTOCOL.md: {missing:?}");
}

#[test]
fn every_frame_kind_and_reason_is_described() {
    // v2 frames (and so SSE event names): every event kind, the snapshot and the goodbye.
    let kinds = EventKind::ALL.map(EventKind::as_str);
    let missing: Vec<&str> = kinds.into_iter().filter(|k| !named(k)).collect();
    assert!(missing.is_empty(), "event kinds not in docs/PROTOCOL.md: {missing:?}");
    for word in ["status", "bye", "retry_after_ms", "try", "from", "Last-Event-ID"] {
        assert!(named(word), "{word}");
    }
    for frame in [r#""kind":"status""#, r#""kind":"bye""#, r#""retry_after_ms":"#, r#""try":"#] {
        assert!(shown(frame), "an example with {frame}");
    }
    // Every bye reason, in a row of the reasons' table that ends in its WebSocket close code.
    for reason in ByeReason::ALL {
        let row = PROTOCOL
            .lines()
            .find(|l| l.starts_with(&format!("| `{}` |", reason.as_str())))
            .unwrap_or_else(|| panic!("no row for bye reason {reason} in docs/PROTOCOL.md"));
        let code = close_code(reason).to_string();
        assert!(row.trim_end().ends_with(&format!("| {code} |")), "{reason}: close {code}: {row}");
    }
    // The close codes of a client that breaks the WebSocket protocol.
    for error in [ClientError::Protocol, ClientError::TooBig] {
        assert!(named(&error.code().to_string()), "close code {}", error.code());
    }
    // The periods a status names.
    let missing: Vec<&str> =
        Period::ALL.map(Period::as_str).into_iter().filter(|p| !named(p)).collect();
    assert!(missing.is_empty(), "periods not in docs/PROTOCOL.md: {missing:?}");
    // The connect lines, the v1 error block, the SSE framing and keepalive.
    for pattern in [
        "VERSION:1:CONNECT:<user-id>:MATCH:<match-id>",
        "VERSION:2:CONNECT:<user-id>:MATCH:<match-id>:FROM:<seq>",
        r"ERROR: <reason>\n\r\n",
        r"id: <seq>\nevent: <kind>\ndata: <v2 JSON>\n\n",
        r": ping\n\n",
    ] {
        assert!(shown(pattern), "{pattern}");
    }
}

#[test]
fn the_links_into_the_document_name_its_headings() {
    // Headings as GitHub makes anchors of them: lower case, punctuation dropped, spaces as `-`.
    let prose = PROTOCOL.split("```").step_by(2).flat_map(str::lines);
    let anchors: Vec<String> = prose
        .filter_map(|l| l.strip_prefix('#'))
        .map(|h| {
            let title = h.trim_start_matches('#').trim().to_lowercase();
            title
                .chars()
                .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
                .map(|c| if c == ' ' { '-' } else { c })
                .collect()
        })
        .collect();
    // Error bodies, the OpenAPI document and the repository's docs point at
    // `docs/PROTOCOL.md#<anchor>`; the document itself at `#<anchor>`.
    let sources = [
        include_str!("../api.rs"),
        include_str!("viewers.rs"),
        include_str!("openapi.rs"),
        include_str!("../../../../README.md"),
        include_str!("../../../../DEVELOPERS.md"),
        include_str!("../../../../HARDENING.md"),
        include_str!("../../../../fuzz/README.md"),
        include_str!("../../../../clients/js/README.md"),
        PROTOCOL,
    ];
    let mut links = Vec::new();
    for source in sources {
        for piece in source.split("PROTOCOL.md#").skip(1) {
            let anchor = piece.split(|c: char| !(c.is_alphanumeric() || c == '-')).next();
            links.extend(anchor);
        }
    }
    for piece in PROTOCOL.split("](#").skip(1) {
        links.extend(piece.split(')').next());
    }
    assert!(links.len() > 20, "{links:?}");
    let broken: Vec<&&str> = links.iter().filter(|l| !anchors.iter().any(|a| a == *l)).collect();
    assert!(broken.is_empty(), "links to no heading of docs/PROTOCOL.md: {broken:?}");
}
