//! Where a viewer connects, found the way a client finds it: `GET /1/checkin` on a node's HTTP
//! API (`--server`: one base URL, or the nodes of a cluster separated by commas, tried in turn
//! from a start that differs per viewer, moving on from a node that does not answer, as a dead
//! node's API refuses connections), or the given `--viewers` addresses in turn. It does not
//! connect; viewer.rs does.

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::Deserialize;

use super::worker::Shared;
use super::{Cause, SimError, Violation};

/// The HTTP base URLs of `--server`: one, or several separated by commas (spaces around them
/// and a trailing `/` are dropped).
pub fn servers(list: &str) -> Result<Vec<String>, SimError> {
    let urls: Vec<String> =
        list.split(',').map(|s| s.trim().trim_end_matches('/').to_owned()).collect();
    if urls.iter().any(String::is_empty) {
        return Err(SimError::Usage(format!("--server {list:?}: a URL is empty")));
    }
    Ok(urls)
}

/// The viewer address for viewer `id`'s next connection: one of `viewers` in turn, or, with
/// none given, the one `/1/checkin` names.
pub(crate) async fn viewer_addr(
    sh: &Shared,
    id: u64,
    viewers: &[String],
    timeout: Duration,
) -> Result<String, Violation> {
    if viewers.is_empty() {
        checkin(sh, id, timeout).await
    } else {
        Ok(viewers[sh.next_addr.fetch_add(1, Ordering::Relaxed) % viewers.len()].clone())
    }
}

/// `GET /1/checkin` answer.
#[derive(Deserialize)]
struct Checkin {
    host: String,
    port: u16,
}

/// Asks the nodes for the least-loaded viewer port, like a real client before each connect:
/// viewer `id` starts at node `id % nodes`, so that the crowd spreads, and moves on to the next
/// node when one fails to answer.
async fn checkin(sh: &Shared, id: u64, timeout: Duration) -> Result<String, Violation> {
    let servers = &sh.servers;
    let fail = |e: String| Violation::new(Cause::Checkin, format!("/1/checkin: {e}"));
    if servers.is_empty() {
        return Err(fail("no --server to ask".into()));
    }
    let start = (id % servers.len() as u64) as usize;
    let mut failures = Vec::new();
    for i in 0..servers.len() {
        let server = &servers[(start + i) % servers.len()];
        match checkin_at(&sh.http, server, timeout).await {
            Ok(addr) => return Ok(addr),
            Err(e) => failures.push((server, e)),
        }
    }
    Err(match failures.as_slice() {
        // One node: the error as it always was.
        [(_, e)] => fail(e.clone()),
        _ => {
            let each: Vec<String> = failures.iter().map(|(s, e)| format!("{s}: {e}")).collect();
            fail(format!("no node answered ({})", each.join("; ")))
        }
    })
}

/// One node's answer to `/1/checkin`, as `host:port`.
async fn checkin_at(
    http: &reqwest::Client,
    server: &str,
    timeout: Duration,
) -> Result<String, String> {
    let resp = http
        .get(format!("{server}/1/checkin"))
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("status {}", resp.status()));
    }
    let c: Checkin = resp.json().await.map_err(|e| e.to_string())?;
    Ok(if c.host.contains(':') {
        format!("[{}]:{}", c.host, c.port)
    } else {
        format!("{}:{}", c.host, c.port)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_list_is_split_and_trimmed_and_one_url_stays_one() {
        assert_eq!(servers("http://127.0.0.1:8888/").unwrap(), ["http://127.0.0.1:8888"]);
        assert_eq!(
            servers("http://a:1, http://b:2/,http://c:3").unwrap(),
            ["http://a:1", "http://b:2", "http://c:3"]
        );
        assert!(servers("http://a:1,,http://b:2").is_err());
        assert!(servers("").is_err());
        assert!(servers("http://a:1,").is_err());
    }
}
