use super::*;

/// Parses `body` fed in pieces of `step` bytes, as whole items.
fn items(body: &[u8], step: usize) -> Result<Vec<SseItem>, Violation> {
    let (mut parser, mut builder, mut out) = (Parser::default(), Builder::default(), vec![]);
    for piece in body.chunks(step) {
        let mut pos = 0;
        while let Some(p) = parser.next(piece, &mut pos) {
            out.extend(builder.piece(piece, p)?);
        }
    }
    Ok(out)
}

fn ev(id: Option<&str>, event: &str, data: &str) -> SseItem {
    SseItem::Event(SseEvent {
        id: id.map(str::to_owned),
        event: Some(event.to_owned()),
        data: data.to_owned(),
    })
}

const STREAM: &[u8] =
    b"id: 3\nevent: status\ndata: {\"seq\":3,\"kind\":\"status\",\"data\":{}}\n\n\
    : ping\n\
    id: 4\r\nevent: goal\r\ndata: {\"seq\":4,\"ts\":1,\"kind\":\"goal\",\"data\":{}}\r\n\r\n\
    event: bye\rdata: {\"kind\":\"bye\",\"reason\":\"match_over\"}\r\r";

#[test]
fn events_comments_and_every_line_end_in_any_pieces() {
    let want = vec![
        ev(Some("3"), "status", "{\"seq\":3,\"kind\":\"status\",\"data\":{}}"),
        SseItem::Comment("ping".into()),
        ev(Some("4"), "goal", "{\"seq\":4,\"ts\":1,\"kind\":\"goal\",\"data\":{}}"),
        ev(None, "bye", "{\"kind\":\"bye\",\"reason\":\"match_over\"}"),
    ];
    for step in [1, 2, 3, 7, STREAM.len()] {
        assert_eq!(items(STREAM, step).unwrap(), want, "pieces of {step}");
    }
    for item in &want {
        if let SseItem::Event(e) = item {
            check_framing(e).unwrap();
        }
    }
}

#[test]
fn field_rules_of_the_standard() {
    // No space after the colon, a field without a colon, two data lines, unknown fields,
    // an event without data (not dispatched), a long unknown name.
    let body = b"data:a\ndata\ndata: b\nretry: 10\nfoo: x\nevent_with_a_long_name: y\n\n\
        id: 9\nevent: x\n\n";
    let got = items(body, 1).unwrap();
    assert_eq!(
        got,
        vec![SseItem::Event(SseEvent { id: None, event: None, data: "a\n\nb".into() })]
    );
}

#[test]
fn framing_breaks_are_caught() {
    let e = |id: Option<&str>, event: &str, data: &str| SseEvent {
        id: id.map(str::to_owned),
        event: Some(event.to_owned()),
        data: data.to_owned(),
    };
    let goal = "{\"seq\":4,\"ts\":1,\"kind\":\"goal\",\"data\":{}}";
    assert!(check_framing(&e(Some("4"), "goal", goal)).is_ok());
    assert!(check_framing(&e(Some("5"), "goal", goal)).is_err(), "id is not the seq");
    assert!(check_framing(&e(None, "goal", goal)).is_err(), "no id");
    assert!(check_framing(&e(Some("4"), "corner", goal)).is_err(), "event is not the kind");
    let bye = "{\"kind\":\"bye\",\"reason\":\"shutdown\"}";
    assert!(check_framing(&e(None, "bye", bye)).is_ok());
    assert!(check_framing(&e(Some("4"), "bye", bye)).is_err(), "a bye has no id");
    assert!(check_framing(&e(None, "bye", "not json")).is_err());
}

#[test]
fn data_lines_in_place_in_any_pieces_are_the_v2_lines() {
    let want = "{\"seq\":3,\"kind\":\"status\",\"data\":{}}\n\
        {\"seq\":4,\"ts\":1,\"kind\":\"goal\",\"data\":{}}\n\
        {\"kind\":\"bye\",\"reason\":\"match_over\"}\n";
    for step in [1, 2, 5, 64, STREAM.len()] {
        let mut parser = Parser::default();
        let mut out = Vec::new();
        for piece in STREAM.chunks(step) {
            let mut buf = piece.to_vec();
            let n = parser.data_lines(&mut buf);
            out.extend_from_slice(&buf[..n]);
        }
        assert_eq!(String::from_utf8(out).unwrap(), want, "pieces of {step}");
    }
}

#[test]
fn a_chunked_event_stream_decodes_in_place() {
    // The stream as chunks cut anywhere, then fed to the decoder in pieces of any size.
    let mut chunked = Vec::new();
    for part in STREAM.chunks(11) {
        chunked.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        chunked.extend_from_slice(part);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    for step in [1, 3, 16, chunked.len()] {
        let mut body = Body::new(Framing::Chunked);
        let mut parser = Parser::default();
        let mut out = Vec::new();
        for piece in chunked.chunks(step) {
            let mut buf = piece.to_vec();
            let n = body.decode(&mut buf).unwrap();
            let n = parser.data_lines(&mut buf[..n]);
            out.extend_from_slice(&buf[..n]);
        }
        assert!(body.done(), "pieces of {step}");
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 3);
    }
}

/// A one-connection server that answers any request with `answer` and closes.
async fn server(answer: Vec<u8>) -> String {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 4096];
        let _ = stream.read(&mut buf).await;
        for piece in answer.chunks(13) {
            stream.write_all(piece).await.unwrap();
        }
    });
    addr
}

#[tokio::test]
async fn a_close_delimited_stream_over_http_1_0_is_checked_to_its_end() {
    let mut answer = b"HTTP/1.0 200 OK\r\nContent-Type: text/event-stream\r\n\r\n".to_vec();
    answer.extend_from_slice(STREAM);
    let mut v = SseViewer::watch(&server(answer).await, "x", None).await.unwrap();
    assert_eq!(v.head().media_type().as_deref(), Some("text/event-stream"));
    let (seqs, bye) = v.collect_v2().await.unwrap();
    assert_eq!((seqs, bye["reason"].as_str()), (vec![4], Some("match_over")));
    assert_eq!(v.item().await.unwrap(), None);
    assert!(v.ended());
}

#[tokio::test]
async fn a_chunked_stream_reads_as_lines_and_ends_at_its_last_chunk() {
    let mut answer =
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
            .to_vec();
    for part in STREAM.chunks(40) {
        answer.extend_from_slice(format!("{:X}\r\n", part.len()).as_bytes());
        answer.extend_from_slice(part);
        answer.extend_from_slice(b"\r\n");
    }
    answer.extend_from_slice(b"0\r\n\r\n");
    let mut v = SseViewer::open(&server(answer).await, "/s", &[]).await.unwrap();
    let (mut out, mut buf) = (Vec::new(), [0u8; 64]);
    loop {
        let n = v.read_lines(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 3);
    assert!(out.ends_with(b"\"reason\":\"match_over\"}\n"));
    assert!(v.ended());
}

#[tokio::test]
async fn a_refusal_is_its_status_and_whole_body() {
    let answer = b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\n\
        content-length: 29\r\n\r\n{\"error\":\"unknown match x-y\"}"
        .to_vec();
    match SseViewer::open(&server(answer).await, "/s", &[]).await {
        Err(WebError::Refused { status, body, .. }) => {
            assert_eq!((status, body.as_str()), (404, "{\"error\":\"unknown match x-y\"}"))
        }
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("a stream"),
    }
}
