//! The v1 stream of the bundled match, byte for byte against a checked-in transcript
//! (header times masked): the original's protocol must not drift.

use matchstream_client::matchfile::{self, Step};

use crate::support::*;

const GOLDEN: &str = include_str!("../golden/elp-tig-2011-09-10.v1.txt");
/// The match the demo replays.
const BUNDLED_MATCH: &str = include_str!("../../matches/elp-tig-2011-09-10.config");

#[tokio::test]
async fn bundled_match_over_v1_matches_the_golden_transcript() {
    let s = TestServer::start().await;
    let file = matchfile::parse(BUNDLED_MATCH).expect("bundled match parses");
    let (status, _) = s.send(reqwest::Method::POST, "/1/matches", Some(file.create_body())).await;
    assert_eq!(status, reqwest::StatusCode::CREATED);
    let id = file.id().to_string();
    let events: Vec<_> = file
        .steps
        .iter()
        .filter_map(|st| match st {
            Step::Event(e) => Some(e.clone()),
            Step::Sleep(_) => None,
        })
        .collect();
    let line = format!("VERSION:1:CONNECT:golden:MATCH:{id}");

    // Before `start`: the status block, then the server closes.
    let mut early = Viewer::connect(s.viewer(), &line).await;
    let mut transcript = early.read_to_end().await;

    // After `start`: the status, then every event until the close after `stop`.
    let (st, body) = s.post_events(&id, events[0].clone()).await;
    assert_eq!(st, reqwest::StatusCode::CREATED, "{body}");
    let mut live = Viewer::connect(s.viewer(), &line).await;
    transcript.extend(live.read_until_contains(b"\tperiod: first\n\r\n").await);
    for e in &events[1..] {
        let (st, body) = s.post_events(&id, e.clone()).await;
        assert_eq!(st, reqwest::StatusCode::CREATED, "{e}: {body}");
    }
    transcript.extend(live.read_to_end().await);

    let got = mask_v1_times(&transcript);
    if std::env::var_os("MATCHSTREAM_BLESS").is_some() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/elp-tig-2011-09-10.v1.txt");
        std::fs::write(path, &got).expect("write golden");
    }
    assert_eq!(
        got, GOLDEN,
        "the v1 transcript changed (MATCHSTREAM_BLESS=1 rewrites it after review)"
    );
}
