//! The viewer protocols over TCP (SPEC 4): v1 and v2 behaviour and every connect error.

use std::time::Duration;

use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn v1_streams_status_then_events_and_closes_after_stop() {
    let s = TestServer::start().await;
    let id = s.started_match().await;
    let mut v = Viewer::connect(s.viewer(), &format!("VERSION:1:CONNECT:me:MATCH:{id}")).await;
    let status = v.read_until_contains(b"period: first\n\r\n").await;
    let status = mask_v1_times(&status);
    assert!(status.starts_with("YYYY-MM-DD HH:MM:SS: status:\n\thome: <<\"elp\">>\n\thome_players:\n\t\t Albil (25) \n"), "{status}");
    s.publish(&id, "goal", json!({"team": "tig", "player": 7})).await;
    s.publish(&id, "stop", json!({})).await;
    let rest = mask_v1_times(&v.read_to_end().await);
    assert_eq!(
        rest,
        "YYYY-MM-DD HH:MM:SS: goal:\n\tplayer: Luna (7) \n\tteam: <<\"tig\">>\n\r\nYYYY-MM-DD HH:MM:SS: stop:\n\r\n"
    );
}

#[tokio::test]
async fn v1_gets_status_and_close_for_a_match_not_live() {
    let s = TestServer::start().await;
    let id = s.create_match("elp", "tig", "2011-09-10").await;
    let mut v = Viewer::connect(s.viewer(), &format!("VERSION:1:CONNECT:me:MATCH:{id}")).await;
    let got = mask_v1_times(&v.read_to_end().await);
    assert!(got.ends_with("\tperiod: not_started\n\r\n"), "{got}");
    s.publish(&id, "start", start_data()).await;
    s.publish(&id, "stop", json!({})).await;
    let mut v = Viewer::connect(s.viewer(), &format!("VERSION:1:CONNECT:me:MATCH:{id}")).await;
    let got = mask_v1_times(&v.read_to_end().await);
    assert!(got.ends_with("\tperiod: ended\n\r\n"), "{got}");
}

#[tokio::test]
async fn v2_before_start_stays_and_sees_everything() {
    let s = TestServer::start().await;
    let id = s.create_match("elp", "tig", "2011-09-10").await;
    let mut v = Viewer::connect(s.viewer(), &format!("VERSION:2:CONNECT:me:MATCH:{id}")).await;
    let status = v.frame().await.unwrap();
    assert_eq!(status["kind"], "status");
    assert_eq!(status["seq"], 0);
    assert_eq!(status["data"]["period"], "not_started");
    s.publish(&id, "start", start_data()).await;
    s.publish(&id, "goal", json!({"team": "elp", "player": 25})).await;
    s.publish(&id, "stop", json!({})).await;
    let start = v.frame().await.unwrap();
    assert_eq!(start["seq"], 1);
    assert_eq!(start["kind"], "start");
    let goal = v.frame().await.unwrap();
    assert_eq!(goal["data"], json!({"player": {"number": 25, "name": "Albil"}, "team": "elp"}));
    assert!(goal["ts"].as_i64().is_some());
    assert_eq!(v.frame().await.unwrap()["kind"], "stop");
    assert_eq!(v.frame().await.unwrap(), json!({"kind": "bye", "reason": "match_over"}));
    assert!(v.frame().await.is_none());
}

#[tokio::test]
async fn v2_from_resumes_without_gap_or_duplicate() {
    let s = TestServer::start().await;
    let id = s.started_match().await;
    for _ in 0..5 {
        s.publish(&id, "corner", json!({"team": "elp"})).await;
    }
    let mut v =
        Viewer::connect(s.viewer(), &format!("VERSION:2:CONNECT:me:MATCH:{id}:FROM:3")).await;
    assert_eq!(v.frame().await.unwrap()["seq"], 4);
    assert_eq!(v.frame().await.unwrap()["seq"], 5);
    assert_eq!(v.frame().await.unwrap()["seq"], 6);
    s.publish(&id, "stop", json!({})).await;
    let (seqs, bye) = collect_v2(&mut v).await;
    assert_eq!(seqs, vec![7]);
    assert_eq!(bye["reason"], "match_over");

    // FROM beyond the last event: a snapshot instead. (Raw: a checked viewer would rightly call
    // a snapshot behind its own resume point a duplicate; here the resume point is made up.)
    let mut v = Viewer::connect_raw(s.viewer()).await;
    v.send(format!("VERSION:2:CONNECT:me:MATCH:{id}:FROM:99\r\n").as_bytes()).await;
    let f = v.frame().await.unwrap();
    assert_eq!(f["kind"], "status");
    assert_eq!(f["seq"], 7);
    assert_eq!(v.frame().await.unwrap()["reason"], "match_over");
    // FROM at the end of an ended match: just the goodbye.
    let mut v =
        Viewer::connect(s.viewer(), &format!("VERSION:2:CONNECT:me:MATCH:{id}:FROM:7")).await;
    assert_eq!(v.frame().await.unwrap(), json!({"kind": "bye", "reason": "match_over"}));
}

#[tokio::test]
async fn connect_line_may_arrive_in_pieces() {
    let s = TestServer::start().await;
    let id = s.started_match().await;
    let line = format!("VERSION:2:CONNECT:me:MATCH:{id}\n");
    let mut v = Viewer::connect_raw(s.viewer()).await;
    for piece in line.as_bytes().chunks(3) {
        v.send(piece).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(v.frame().await.unwrap()["kind"], "status");
}

#[tokio::test]
async fn connect_errors_get_documented_answers_and_others_keep_watching() {
    let s = TestServer::start_with(|c| c.connect_timeout = Duration::from_millis(500)).await;
    let id = s.started_match().await;
    let mut watcher =
        Viewer::connect(s.viewer(), &format!("VERSION:2:CONNECT:ok:MATCH:{id}")).await;
    assert_eq!(watcher.frame().await.unwrap()["kind"], "status");

    let error_of = |bytes: Vec<u8>| String::from_utf8(bytes).unwrap();
    // Malformed line.
    let mut v = Viewer::connect(s.viewer(), "HELLO THERE").await;
    let got = error_of(v.read_to_end().await);
    assert!(got.starts_with("ERROR: malformed connect line") && got.ends_with("\n\r\n"), "{got:?}");
    // Unknown match, v1 and v2.
    let mut v = Viewer::connect(s.viewer(), "VERSION:1:CONNECT:me:MATCH:abc-def-2020-01-01").await;
    assert_eq!(error_of(v.read_to_end().await), "ERROR: unknown match abc-def-2020-01-01\n\r\n");
    let mut v = Viewer::connect(s.viewer(), "VERSION:2:CONNECT:me:MATCH:abc-def-2020-01-01").await;
    assert_eq!(v.frame().await.unwrap(), json!({"kind": "bye", "reason": "not_found"}));
    // Malformed v2 line: bye bad_request.
    let mut v =
        Viewer::connect(s.viewer(), &format!("VERSION:2:CONNECT:me:MATCH:{id}:FROM:x")).await;
    assert_eq!(v.frame().await.unwrap(), json!({"kind": "bye", "reason": "bad_request"}));
    // Line over 1 KiB (no newline needed to be refused). 64 KiB, far more than the server reads
    // before refusing: the answer must still arrive whole, then a clean close (close.rs has
    // every case of it).
    let mut v = Viewer::connect_raw(s.viewer()).await;
    v.send(&vec![b'A'; 64 * 1024]).await;
    let got = error_of(v.read_to_clean_eof().await);
    assert!(got.starts_with("ERROR: line too long") && got.ends_with("\n\r\n"), "{got:?}");
    // Too slow to send the line.
    let mut v = Viewer::connect_raw(s.viewer()).await;
    v.send(b"VERSION:1:CONN").await;
    let got = error_of(v.read_to_end().await);
    assert!(got.starts_with("ERROR: too slow"), "{got:?}");

    // The good viewer still gets the match.
    s.publish(&id, "goal", json!({"team": "tig"})).await;
    assert_eq!(watcher.frame().await.unwrap()["kind"], "goal");
}

#[tokio::test]
async fn a_full_node_names_another_port() {
    let s = TestServer::start_with(|c| c.max_viewers = 2).await;
    let id = s.started_match().await;
    let line = format!("VERSION:2:CONNECT:me:MATCH:{id}");
    // One viewer per port fills each port's share (max 2 over 2 ports).
    let mut a = Viewer::connect(s.viewers[0], &line).await;
    assert_eq!(a.frame().await.unwrap()["kind"], "status");
    let mut b = Viewer::connect(s.viewers[0], &line).await;
    let bye = b.frame().await.unwrap();
    assert_eq!(bye["reason"], "full");
    assert_eq!(bye["try"], format!("127.0.0.1:{}", s.viewers[1].port()));
    let mut c = Viewer::connect(s.viewers[0], &format!("VERSION:1:CONNECT:me:MATCH:{id}")).await;
    let got = String::from_utf8(c.read_to_end().await).unwrap();
    assert_eq!(got, format!("ERROR: server full, try 127.0.0.1:{}\n\r\n", s.viewers[1].port()));
}

#[tokio::test]
async fn a_viewer_that_never_reads_does_not_hold_up_others() {
    let s = TestServer::start_with(|c| {
        c.ring_events = 16;
        c.max_lag_events = 50;
        c.write_timeout = Duration::from_millis(500);
    })
    .await;
    let id = s.started_match().await;
    let line = format!("VERSION:2:CONNECT:me:MATCH:{id}");
    // The slow viewer connects and then never reads.
    let slow = Viewer::connect(s.viewer(), &line).await;
    let mut fast = Viewer::connect(s.viewer(), &line).await;
    assert_eq!(fast.frame().await.unwrap()["kind"], "status");
    let text = "x".repeat(280);
    let mut last = 0;
    for _ in 0..40 {
        let batch: Vec<_> =
            (0..25).map(|_| json!({"kind": "comment", "data": {"text": text}})).collect();
        let (st, b) = s.post_events(&id, serde_json::Value::Array(batch)).await;
        assert_eq!(st, reqwest::StatusCode::CREATED, "{b}");
        last = b[24]["seq"].as_u64().unwrap();
        for want in (last - 24)..=last {
            assert_eq!(fast.frame().await.unwrap()["seq"], want);
        }
    }
    assert_eq!(last, 1001);
    // The ring (16) is smaller than a batch (25): viewers were caught up from history. The one
    // that did not read either has everything in order or was told it is too slow; never a gap.
    s.publish(&id, "stop", json!({})).await;
    let mut slow = slow;
    let (seqs, bye) = collect_v2(&mut slow).await;
    assert_eq!(seqs, (2..=seqs.len() as u64 + 1).collect::<Vec<_>>(), "in order, no gap");
    match bye["reason"].as_str() {
        Some("match_over") => assert_eq!(seqs.len(), 1001),
        Some("too_slow") => {}
        other => panic!("unexpected bye {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_gets_everything_in_order_through_catch_up() {
    let s = TestServer::start_with(|c| {
        c.ring_events = 8;
        c.max_lag_events = 1_000_000;
    })
    .await;
    let id = s.started_match().await;
    // A reader with a tiny receive window fills its socket at once, so the shard hands it back
    // to a task of its own, which catches up from history and parks it again.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&s.viewer().into()).unwrap();
    sock.set_nonblocking(true).unwrap();
    let stream = tokio::net::TcpStream::from_std(sock.into()).unwrap();
    let mut slow = Viewer(matchstream_client::Viewer::from_stream(stream));
    slow.send(format!("VERSION:2:CONNECT:slow:MATCH:{id}\n").as_bytes()).await;
    assert_eq!(slow.frame().await.unwrap()["kind"], "status");
    let text = "y".repeat(280);
    let reader = tokio::spawn(async move {
        let mut seqs = Vec::new();
        while let Some(f) = slow.frame().await {
            if f["kind"] == "bye" {
                return (seqs, f);
            }
            seqs.push(f["seq"].as_u64().unwrap());
            if seqs.len() % 50 == 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        panic!("closed without bye");
    });
    for _ in 0..20 {
        let batch: Vec<_> =
            (0..50).map(|_| json!({"kind": "comment", "data": {"text": text}})).collect();
        let (st, b) = s.post_events(&id, serde_json::Value::Array(batch)).await;
        assert_eq!(st, reqwest::StatusCode::CREATED, "{b}");
    }
    s.publish(&id, "stop", json!({})).await;
    let (seqs, bye) = reader.await.unwrap();
    assert_eq!(seqs, (2..=1002).collect::<Vec<_>>());
    assert_eq!(bye["reason"], "match_over");
}

#[tokio::test]
async fn parked_viewers_that_hang_up_are_let_go() {
    // A shard watches its members' sockets: a hang-up is seen at once, not at the next event.
    let s = TestServer::start().await;
    let id = s.started_match().await;
    let line = format!("VERSION:2:CONNECT:me:MATCH:{id}");
    let mut viewers = Vec::new();
    for _ in 0..4 {
        let mut v = Viewer::connect(s.viewer(), &line).await;
        assert_eq!(v.frame().await.unwrap()["kind"], "status");
        viewers.push(v);
    }
    let ports = s.node.as_ref().unwrap().ports.clone();
    assert_eq!(ports.total(), 4);
    // Two of those leaving said something first: their bytes must not hide the hang-up.
    for v in &mut viewers[2..] {
        v.send(&[b'x'; 1000]).await;
    }
    viewers.truncate(1);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while ports.total() != 1 {
        assert!(tokio::time::Instant::now() < deadline, "still {} viewers counted", ports.total());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The one left still gets the match.
    s.publish(&id, "goal", json!({"team": "elp"})).await;
    assert_eq!(viewers[0].frame().await.unwrap()["kind"], "goal");
}
