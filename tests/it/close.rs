//! Closes the server starts end with a FIN, never a reset, even when the viewer sent input the
//! server did not read: a reset can make the viewer's kernel discard the goodbye it has not read
//! yet (the `ERROR:` block, the `bye` frame, the stop block). Each test leaves input unread in
//! the server's socket at the moment it closes.

use serde_json::json;

use crate::support::*;

/// More than one shard of parked viewers (512), so that closes come in batches.
const MANY: usize = 600;

/// What a viewer types while watching: far more than the server reads at a time, less than the
/// most it drains while closing.
fn junk() -> Vec<u8> {
    vec![b'x'; 10 * 1024]
}

/// A connect line of 64 KiB: `prefix`, filler, and a line break at the end if asked.
fn long_line(prefix: &str, newline: bool) -> Vec<u8> {
    let mut line = prefix.as_bytes().to_vec();
    line.resize(64 * 1024 - usize::from(newline), b'x');
    if newline {
        line.push(b'\n');
    }
    line
}

#[tokio::test]
async fn a_connect_line_too_long_gets_its_whole_error_then_a_clean_close() {
    let s = TestServer::start().await;
    let error = "ERROR: line too long (a connect line is at most 1024 bytes)\n\r\n";
    for (prefix, newline) in [("", false), ("", true), ("VERSION:1:CONNECT:", true)] {
        let mut v = Viewer::connect_raw(s.viewer()).await;
        v.send(&long_line(prefix, newline)).await;
        let got = v.read_to_clean_eof().await;
        assert_eq!(String::from_utf8_lossy(&got), error, "{prefix:?}, newline: {newline}");
    }
    // A line that announced v2 is answered in v2.
    for newline in [false, true] {
        let mut v = Viewer::connect_raw(s.viewer()).await;
        v.send(&long_line("VERSION:2:CONNECT:", newline)).await;
        let got = v.read_to_clean_eof().await;
        let bye = "{\"kind\":\"bye\",\"reason\":\"bad_request\"}\n";
        assert_eq!(String::from_utf8_lossy(&got), bye, "newline: {newline}");
    }
}

#[tokio::test]
async fn refusals_close_cleanly_with_input_pending() {
    let s = TestServer::start().await;
    let id = s.started_match().await;
    // Each line arrives with more behind it, which the server never reads.
    let cases = [
        ("HELLO THERE".to_owned(), "ERROR: malformed connect line"),
        ("VERSION:1:CONNECT:me:MATCH:abc-def-2020-01-01".to_owned(), "ERROR: unknown match"),
        (
            "VERSION:2:CONNECT:me:MATCH:abc-def-2020-01-01".to_owned(),
            "{\"kind\":\"bye\",\"reason\":\"not_found\"}\n",
        ),
        (
            format!("VERSION:2:CONNECT:me:MATCH:{id}:FROM:x"),
            "{\"kind\":\"bye\",\"reason\":\"bad_request\"}\n",
        ),
    ];
    for (line, answer) in cases {
        let mut v = Viewer::connect_raw(s.viewer()).await;
        v.send(&[format!("{line}\r\n").into_bytes(), junk()].concat()).await;
        let got = String::from_utf8(v.read_to_clean_eof().await).unwrap();
        assert!(got.starts_with(answer), "{line}: {got:?}");
    }

    // Served, then closed by the server at once: a v1 viewer of a match that is over (its status
    // block), and a v2 viewer resuming at the end of it (its bye), each with input pending.
    s.publish(&id, "stop", json!({})).await;
    let mut v = Viewer::connect_raw(s.viewer()).await;
    v.send(&[format!("VERSION:1:CONNECT:me:MATCH:{id}\r\n").into_bytes(), junk()].concat()).await;
    let got = mask_v1_times(&v.read_to_clean_eof().await);
    assert!(got.ends_with("\tperiod: ended\n\r\n"), "{got}");
    let mut v = Viewer::connect_raw(s.viewer()).await;
    let line = format!("VERSION:2:CONNECT:me:MATCH:{id}:FROM:2\r\n");
    v.send(&[line.into_bytes(), junk()].concat()).await;
    let got = String::from_utf8(v.read_to_clean_eof().await).unwrap();
    assert_eq!(got, "{\"kind\":\"bye\",\"reason\":\"match_over\"}\n");
}

#[tokio::test]
async fn a_full_node_refuses_cleanly_with_input_pending() {
    let s = TestServer::start_with(|c| c.max_viewers = 2).await;
    let id = s.started_match().await;
    let line = format!("VERSION:1:CONNECT:me:MATCH:{id}");
    let mut watching = Viewer::connect(s.viewers[0], &line).await;
    watching.read_until_contains(b"period: first\n\r\n").await;
    let mut v = Viewer::connect_raw(s.viewers[0]).await;
    v.send(&[format!("{line}\r\n").into_bytes(), junk()].concat()).await;
    let got = String::from_utf8(v.read_to_clean_eof().await).unwrap();
    assert_eq!(got, format!("ERROR: server full, try 127.0.0.1:{}\n\r\n", s.viewers[1].port()));
}

#[tokio::test]
async fn a_v2_viewer_that_typed_while_watching_gets_the_end_of_the_match_and_a_clean_close() {
    let s = TestServer::start().await;
    let id = s.started_match().await;
    let mut v = Viewer::connect(s.viewer(), &format!("VERSION:2:CONNECT:me:MATCH:{id}")).await;
    assert_eq!(v.frame().await.unwrap()["kind"], "status");
    // At the live edge the viewer is parked, and a parked socket's input is never read.
    v.send(&junk()).await;
    s.publish(&id, "goal", json!({"team": "tig", "player": 7})).await;
    assert_eq!(v.frame().await.unwrap()["kind"], "goal");
    v.send(&junk()).await;
    s.publish(&id, "stop", json!({})).await;
    let (seqs, bye) = collect_v2(&mut v).await;
    assert_eq!(seqs, vec![3]);
    assert_eq!(bye, json!({"kind": "bye", "reason": "match_over"}));
    assert_eq!(v.read_to_clean_eof().await, b"");
}

#[tokio::test]
async fn a_v1_viewer_that_typed_while_watching_gets_the_stop_block_and_a_clean_close() {
    let s = TestServer::start().await;
    let id = s.started_match().await;
    let mut v = Viewer::connect(s.viewer(), &format!("VERSION:1:CONNECT:me:MATCH:{id}")).await;
    v.read_until_contains(b"period: first\n\r\n").await;
    v.send(&junk()).await;
    s.publish(&id, "goal", json!({"team": "tig", "player": 7})).await;
    s.publish(&id, "stop", json!({})).await;
    let rest = mask_v1_times(&v.read_to_clean_eof().await);
    assert_eq!(
        rest,
        "YYYY-MM-DD HH:MM:SS: goal:\n\tplayer: Luna (7) \n\tteam: <<\"tig\">>\n\r\nYYYY-MM-DD HH:MM:SS: stop:\n\r\n"
    );
}

#[tokio::test]
async fn a_cancel_closes_viewers_that_typed_cleanly() {
    let s = TestServer::start().await;
    let id = s.started_match().await;
    let mut v = Viewer::connect(s.viewer(), &format!("VERSION:2:CONNECT:me:MATCH:{id}")).await;
    assert_eq!(v.frame().await.unwrap()["kind"], "status");
    v.send(&junk()).await;
    let (st, _) = s.send(reqwest::Method::DELETE, &format!("/1/match/{id}"), None).await;
    assert_eq!(st, reqwest::StatusCode::NO_CONTENT);
    assert_eq!(v.frame().await.unwrap(), json!({"kind": "bye", "reason": "cancelled"}));
    assert_eq!(v.read_to_clean_eof().await, b"");
}

#[tokio::test]
async fn a_shutdown_closes_viewers_that_typed_cleanly() {
    let s = TestServer::start().await;
    let id = s.started_match().await;
    let mut v = Viewer::connect(s.viewer(), &format!("VERSION:2:CONNECT:me:MATCH:{id}")).await;
    assert_eq!(v.frame().await.unwrap()["kind"], "status");
    v.send(&junk()).await;
    // Read while the node stops: it waits (within its grace period) for viewers' closes, and
    // this one closes its side once it has read everything.
    let reader = tokio::spawn(async move {
        let bye = v.frame().await.unwrap();
        (bye, v.read_to_clean_eof().await)
    });
    s.stop().await;
    let (bye, rest) = reader.await.unwrap();
    assert_eq!(bye["reason"], "shutdown");
    assert_eq!(rest, b"");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_full_of_viewers_that_typed_all_close_cleanly_and_are_let_go() {
    let s = TestServer::start().await;
    let id = s.started_match().await;
    let mut viewers = Vec::with_capacity(MANY);
    for i in 0..MANY {
        let v1 = i % 10 == 0;
        let line = format!("VERSION:{}:CONNECT:me:MATCH:{id}", if v1 { 1 } else { 2 });
        let mut v = Viewer::connect(s.viewer(), &line).await;
        if v1 {
            v.read_until_contains(b"period: first\n\r\n").await;
        } else {
            assert_eq!(v.frame().await.unwrap()["kind"], "status");
        }
        v.send(&junk()).await;
        viewers.push((v1, v));
    }
    s.publish(&id, "stop", json!({})).await;
    // Every viewer gets the end of the match and a clean close. Half of them then close their
    // side at once; the other half never do, and the server must let them go all the same.
    let mut silent = Vec::new();
    for (i, (v1, mut v)) in viewers.into_iter().enumerate() {
        if v1 {
            let got = mask_v1_times(&v.read_to_clean_eof().await);
            assert_eq!(got, "YYYY-MM-DD HH:MM:SS: stop:\n\r\n", "viewer {i}");
        } else {
            let (seqs, bye) = collect_v2(&mut v).await;
            assert_eq!((seqs, &bye["reason"]), (vec![2], &json!("match_over")), "viewer {i}");
            assert_eq!(v.read_to_clean_eof().await, b"", "viewer {i}");
        }
        if i % 2 == 0 {
            silent.push(v);
        }
    }
    let ports = s.node.as_ref().unwrap().ports.clone();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while ports.total() != 0 {
        assert!(tokio::time::Instant::now() < deadline, "still {} viewers counted", ports.total());
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    drop(silent);
}
