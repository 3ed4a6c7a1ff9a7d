//! `matchstream top` (SPEC 9): a node's figures and its cluster's, one row per node and per live
//! match, refreshed every second in the terminal (ratatui), or once as plain text (`--once`).
//! It reads only the node's `/ops.json`, like the operator's page; over `https://` (an admin
//! listener with `--admin-tls`) it checks the node's certificate with the rustls configuration
//! it is given (the binary's `--ca-cert`, or the system's roots).

use std::time::Duration;

use ratatui::crossterm::event::{self, Event, KeyCode, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style};
use ratatui::widgets::{Block, Paragraph, Row, Table};
use serde_json::Value;

/// Why `top` cannot show anything.
#[derive(Debug, thiserror::Error)]
pub enum TopError {
    #[error("cannot read {url}: {why}")]
    Fetch { url: String, why: String },
    #[error("the terminal: {0}")]
    Terminal(#[from] std::io::Error),
}

/// The node table's columns.
pub const NODE_COLUMNS: [&str; 12] = [
    "node",
    "viewers",
    "tcp",
    "ws",
    "sse",
    "events/s",
    "deliv/s",
    "lag p50",
    "lag p99",
    "too_slow",
    "RSS/viewer",
    "files",
];
/// The match table's columns.
pub const MATCH_COLUMNS: [&str; 4] = ["match", "score", "period", "seq"];

/// Reads `/ops.json` from a node's base URL.
pub async fn fetch(client: &reqwest::Client, server: &str) -> Result<Value, TopError> {
    let url = format!("{}/ops.json", server.trim_end_matches('/'));
    let fail = |why: String| TopError::Fetch { url: url.clone(), why };
    let answer = client.get(&url).send().await.map_err(|e| fail(why(&e, server)))?;
    if !answer.status().is_success() {
        // The public --http port answers 404 here (SPEC 11): the figures are on --admin.
        let hint = " (is this the node's admin listener, its --admin address?)";
        let hint = if answer.status() == reqwest::StatusCode::NOT_FOUND { hint } else { "" };
        return Err(fail(format!("{}{hint}", answer.status())));
    }
    answer.json().await.map_err(|e| fail(why(&e, server)))
}

/// Why a request failed, in the words of its deepest cause (`connection refused`, not
/// reqwest's "error sending request"), with what to check when nothing listens there; a
/// certificate that is not trusted says so, and what to do.
fn why(e: &reqwest::Error, server: &str) -> String {
    if e.is_timeout() {
        return format!("no answer within {} s", TIMEOUT.as_secs());
    }
    let mut cause: &(dyn std::error::Error + 'static) = e;
    let mut refused = false;
    while let Some(deeper) = cause.source() {
        cause = deeper;
        // An I/O error's `source` skips its inner error: rustls' is looked for inside them.
        let mut inner: Option<&(dyn std::error::Error + 'static)> = Some(cause);
        while let Some(io) = inner.and_then(|i| i.downcast_ref::<std::io::Error>()) {
            inner = io.get_ref().map(|i| i as &(dyn std::error::Error + 'static));
        }
        let tls = inner.and_then(|i| i.downcast_ref::<rustls::Error>());
        if let Some(rustls::Error::InvalidCertificate(bad)) = tls {
            return format!(
                "the node's certificate is not trusted ({bad:?}): name the CA that signed it \
                 with --ca-cert"
            );
        }
        let kind = cause.downcast_ref::<std::io::Error>().map(std::io::Error::kind);
        refused |= kind == Some(std::io::ErrorKind::ConnectionRefused);
    }
    // "Connection refused (os error 111)" as "connection refused".
    let text = cause.to_string();
    let text = match text.find(" (os error") {
        Some(at) => text[..at].to_lowercase(),
        None => text,
    };
    if !refused {
        return text;
    }
    match reqwest::Url::parse(server) {
        Ok(url) => match (url.host_str(), url.port_or_known_default()) {
            (Some(host), Some(port)) => {
                format!("{text} (is the node running with --admin {host}:{port}?)")
            }
            _ => text,
        },
        Err(_) => text,
    }
}

/// One row per node (this one first), as text cells.
pub fn node_rows(ops: &Value) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    if !ops["latest"].is_null() {
        rows.push(node_row(&format!("{} (here)", short(&ops["node"])), &ops["latest"]));
    }
    for n in ops["nodes"].as_array().into_iter().flatten() {
        let name = format!("{} {}", short(&n["node"]), n["http"].as_str().unwrap_or(""));
        rows.push(node_row(&name, &n["sample"]));
    }
    rows
}

/// One row per live match.
pub fn match_rows(ops: &Value) -> Vec<Vec<String>> {
    ops["matches"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            vec![
                m["id"].as_str().unwrap_or("?").to_owned(),
                format!("{}–{}", m["home_score"], m["visit_score"]),
                m["period"].as_str().unwrap_or("?").to_owned(),
                m["seq"].to_string(),
            ]
        })
        .collect()
}

fn short(node: &Value) -> String {
    node.as_str().unwrap_or("?").chars().take(8).collect()
}

fn node_row(name: &str, s: &Value) -> Vec<String> {
    let v = |t: &str| s["viewers"][t].as_u64().unwrap_or(0);
    let total: u64 = ["tcp_v1", "tcp_v2", "ws", "sse"].iter().map(|t| v(t)).sum();
    let num = |x: &Value| x.as_f64().map_or("–".to_owned(), |f| format!("{f:.0}"));
    let lag = |x: &Value| x.as_f64().map_or("–".to_owned(), |f| format!("{f:.1} ms"));
    vec![
        name.to_owned(),
        total.to_string(),
        (v("tcp_v1") + v("tcp_v2")).to_string(),
        v("ws").to_string(),
        v("sse").to_string(),
        s["events_per_s"].as_f64().map_or("–".to_owned(), |f| format!("{f:.1}")),
        num(&s["deliveries_per_s"]),
        lag(&s["lag_p50_ms"]),
        lag(&s["lag_p99_ms"]),
        num(&s["too_slow_total"]),
        s["rss_per_viewer"].as_f64().map_or("–".to_owned(), |f| format!("{f:.0} B")),
        format!("{}/{}", num(&s["open_fds"]), num(&s["max_fds"])),
    ]
}

/// The whole screen as plain text (`--once`): aligned columns.
pub fn text(ops: &Value) -> String {
    let mut out = String::new();
    table_text(&mut out, &NODE_COLUMNS, &node_rows(ops));
    out.push('\n');
    let matches = match_rows(ops);
    if matches.is_empty() {
        out.push_str("no live match\n");
    } else {
        table_text(&mut out, &MATCH_COLUMNS, &matches);
    }
    out
}

fn table_text(out: &mut String, header: &[&str], rows: &[Vec<String>]) {
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter().map(|r| r[i].chars().count()).chain([header[i].len()]).max().unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> =
            cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}", w = *w)).collect();
        padded.join("  ").trim_end().to_owned() + "\n"
    };
    out.push_str(&line(header.to_vec()));
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
}

/// How long `top` waits for one answer.
const TIMEOUT: Duration = Duration::from_secs(2);

/// An HTTP client; `tls` checks an `https://` node's certificate (reqwest has no roots of
/// its own here).
fn client(server: &str, tls: Option<rustls::ClientConfig>) -> Result<reqwest::Client, TopError> {
    let mut builder = reqwest::Client::builder().timeout(TIMEOUT);
    if let Some(tls) = tls {
        builder = builder.use_preconfigured_tls(tls);
    }
    builder.build().map_err(|e| TopError::Fetch { url: server.to_owned(), why: e.to_string() })
}

/// One screen of `server` as plain text (`top --once`); `tls` for an `https://` server.
pub async fn once(server: &str, tls: Option<rustls::ClientConfig>) -> Result<String, TopError> {
    Ok(text(&fetch(&client(server, tls)?, server).await?))
}

/// Runs `top` against `server` until `q`, Esc or Ctrl-C: one screen a second; `tls` for an
/// `https://` server. A node that does not answer at first is an error (which URL, and why)
/// rather than an empty screen; one that stops answering later is said on the screen's first
/// line until it answers again.
pub async fn run(server: &str, tls: Option<rustls::ClientConfig>) -> Result<(), TopError> {
    let client = client(server, tls)?;
    fetch(&client, server).await?;
    let mut terminal = ratatui::init();
    let result = async {
        loop {
            let (ops, problem) = match fetch(&client, server).await {
                Ok(ops) => (ops, None),
                Err(e) => (Value::Null, Some(e.to_string())),
            };
            terminal.draw(|frame| draw(frame, server, &ops, problem.as_deref()))?;
            if quit_within(Duration::from_secs(1))? {
                return Ok(());
            }
        }
    }
    .await;
    ratatui::restore();
    result
}

/// Waits up to `wait` for a key; true for q, Esc or Ctrl-C.
fn quit_within(wait: Duration) -> std::io::Result<bool> {
    if !event::poll(wait)? {
        return Ok(false);
    }
    Ok(match event::read()? {
        Event::Key(k) => {
            matches!(k.code, KeyCode::Char('q') | KeyCode::Esc)
                || (k.code == KeyCode::Char('c') && k.modifiers.contains(KeyModifiers::CONTROL))
        }
        _ => false,
    })
}

fn draw(frame: &mut ratatui::Frame, server: &str, ops: &Value, problem: Option<&str>) {
    let [title, nodes, matches] =
        Layout::vertical([Constraint::Length(1), Constraint::Percentage(50), Constraint::Fill(1)])
            .areas(frame.area());
    let heading = match problem {
        Some(p) => format!("matchstream top · {server} · {p}"),
        None => format!("matchstream top · {server} · q to quit"),
    };
    frame.render_widget(Paragraph::new(heading), title);
    let bold = Style::default().add_modifier(Modifier::BOLD);
    let table = |header: &[&str], rows: Vec<Vec<String>>, name: &'static str| {
        let widths: Vec<Constraint> = (0..header.len())
            .map(|i| {
                let w = rows.iter().map(|r| r[i].chars().count()).chain([header[i].len()]).max();
                Constraint::Length(w.unwrap_or(4) as u16)
            })
            .collect();
        Table::new(rows.into_iter().map(Row::new), widths)
            .header(Row::new(header.iter().map(|h| h.to_string())).style(bold))
            .block(Block::bordered().title(name))
    };
    frame.render_widget(table(&NODE_COLUMNS, node_rows(ops), " nodes "), nodes);
    frame.render_widget(table(&MATCH_COLUMNS, match_rows(ops), " live matches "), matches);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn once_prints_a_row_per_node_and_per_live_match() {
        let ops = serde_json::json!({
            "node": "0123456789abcdef",
            "latest": {"viewers": {"tcp_v1": 1, "tcp_v2": 2, "ws": 3, "sse": 4},
                       "events_per_s": 2.0, "deliveries_per_s": 20.0, "lag_p50_ms": 1.0,
                       "lag_p99_ms": 5.0, "too_slow_total": 0, "rss_per_viewer": 900.0,
                       "open_fds": 30, "max_fds": 20000},
            "nodes": [{"node": "fedcba9876543210", "http": "10.0.0.2:8888",
                       "sample": {"viewers": {"ws": 7}}}],
            "matches": [{"id": "elp-tig-2011-09-10", "home_score": 0, "visit_score": 3,
                         "period": "last", "seq": 12}],
        });
        let text = text(&ops);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("node"), "{text}");
        let here: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(here[..6], ["01234567", "(here)", "10", "3", "3", "4"], "{text}");
        assert!(lines[1].contains("900 B") && lines[1].contains("30/20000"), "{text}");
        assert!(lines[2].starts_with("fedcba98 10.0.0.2:8888"), "{text}");
        assert!(text.contains("elp-tig-2011-09-10  0–3    last    12"), "{text}");
    }
}
