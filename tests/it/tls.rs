//! TLS (SPEC 11), with a private CA made per test: a node with `--tls-cert` serves its API over
//! HTTPS, WebSocket over wss:// and SSE over https://, and its viewer ports over TLS, each
//! viewer getting every event once and in order; a bad certificate pair stops a node from
//! starting and names the file; SIGHUP reloads the pair without dropping a connection; `replay`
//! and `top` reach a TLS node with `--ca-cert`, and say so when a certificate is not trusted.
//! (`sim` against a TLS node: sim.rs.)

use std::path::{Path, PathBuf};
use std::process::Command;

use matchstream::config::TlsFiles;
use matchstream_client::ws::match_path;
use matchstream_client::ws::Message;
use matchstream_client::{Incoming, SseViewer, Stream, TlsClient, Watcher, WsViewer};
use matchstream_proto::ConnectLine;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use serde_json::json;
use tempfile::TempDir;

use crate::metrics::metric_is;
use crate::support::*;

const BIN: &str = env!("CARGO_BIN_EXE_matchstream");

/// A private CA and the files of what it issued, in a temporary directory.
pub(crate) struct Pki {
    pub dir: TempDir,
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    pub(crate) fn new() -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, "MatchStream test CA");
        let key = KeyPair::generate().expect("CA key");
        let ca = CertifiedIssuer::self_signed(params, key).expect("CA certificate");
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).expect("write ca.pem");
        Pki { dir, ca }
    }

    /// The CA's certificate (PEM), for `--ca-cert`.
    pub(crate) fn ca_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A client that trusts this CA only.
    pub(crate) fn client(&self) -> TlsClient {
        TlsClient::new(Some(&self.ca_path())).expect("a client of the CA")
    }

    /// Issues a certificate for 127.0.0.1 and localhost into `cert.pem` and `key.pem` (written
    /// over the last ones, as a renewal does); returns the files and the certificate (DER).
    pub(crate) fn issue(&self) -> (TlsFiles, Vec<u8>) {
        let params = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .expect("params");
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.ca).expect("a certificate");
        let files = TlsFiles {
            cert: self.dir.path().join("cert.pem"),
            key: self.dir.path().join("key.pem"),
        };
        std::fs::write(&files.cert, cert.pem()).expect("write cert.pem");
        std::fs::write(&files.key, key.serialize_pem()).expect("write key.pem");
        (files, cert.der().to_vec())
    }
}

/// A node in this process speaking TLS with a certificate of `pki`, its `base` and watcher on
/// https://.
pub(crate) async fn tls_node(
    pki: &Pki,
    tune: impl FnOnce(&mut matchstream::config::Config),
) -> TestServer {
    let (files, _) = pki.issue();
    let mut s = TestServer::start_with(|c| {
        c.tls = Some(files);
        tune(c);
    })
    .await;
    s.base = s.base.replace("http://", "https://");
    s.http = Watcher::with_tls(&s.base, TOKEN, Some(&pki.client())).expect("an https watcher");
    s
}

/// The certificate a TLS connection was shown (DER).
fn peer_cert(stream: &Stream) -> Vec<u8> {
    let Stream::Tls(tls) = stream else { panic!("not a TLS connection") };
    let certs = tls.get_ref().1.peer_certificates().expect("the server's certificates");
    certs[0].as_ref().to_vec()
}

fn v2_line(id: &str) -> ConnectLine {
    ConnectLine::V2 { user: b"tls".to_vec(), match_id: id.to_owned(), from: None }
}

#[tokio::test]
async fn a_tls_node_serves_its_api_wss_sse_and_tls_viewers_every_event_once_in_order() {
    let pki = Pki::new();
    let s = tls_node(&pki, |_| {}).await;
    let client = pki.client();
    let id = s.started_match().await;
    let (status, list) = s.get("/1/matches").await;
    assert_eq!((status.as_u16(), list), (200, json!([id])), "the API over https");

    let viewer_port = s.viewer().to_string();
    let tcp = client.open(&viewer_port).await.expect("a TLS viewer connects");
    let mut tcp = Viewer(matchstream_client::Viewer::watch_on(tcp, &v2_line(&id)).await.unwrap());
    let host = s.base.trim_start_matches("https://").to_owned();
    let ws = client.open(&host).await.expect("TLS to the HTTP port");
    let ws = WsViewer::handshake(ws, &host, &match_path(&id, "ws", None), None).await;
    let mut ws = ws.expect("a wss:// upgrade").checked(None);
    let sse = client.open(&host).await.expect("TLS to the HTTP port");
    let sse = SseViewer::request(sse, &host, &match_path(&id, "stream", None), &[]).await;
    let mut sse = sse.expect("an event stream over https").checked(None);
    assert_eq!(tcp.frame().await.unwrap()["kind"], "status");
    assert_eq!(ws.frame().await.unwrap().unwrap()["kind"], "status");
    assert_eq!(sse.frame().await.unwrap().unwrap()["kind"], "status");
    for t in ["tcp_v2", "ws", "sse"] {
        metric_is(&s, &format!("matchstream_viewers{{transport=\"{t}\"}}"), 1.0).await;
    }
    // What a viewer sends is read through TLS too: a WebSocket ping is answered, and a viewer
    // that hangs up is gone.
    ws.send(Message::Ping(b"there?".to_vec().into())).await.expect("ping");
    loop {
        match ws.message().await.expect("a message") {
            Some(Incoming::Pong(p)) => break assert_eq!(p, b"there?"),
            Some(Incoming::Ping(_)) => {}
            other => panic!("expected the pong, got {other:?}"),
        }
    }
    let gone = client.open(&viewer_port).await.expect("a TLS viewer connects");
    let mut gone = matchstream_client::Viewer::watch_on(gone, &v2_line(&id)).await.unwrap();
    assert_eq!(gone.frame().await.unwrap().unwrap()["kind"], "status");
    metric_is(&s, "matchstream_viewers{transport=\"tcp_v2\"}", 2.0).await;
    drop(gone);
    metric_is(&s, "matchstream_viewers{transport=\"tcp_v2\"}", 1.0).await;

    let mut seqs = vec![1];
    for _ in 0..20 {
        seqs.push(s.publish(&id, "goal", json!({"team": "elp", "player": 25})).await);
    }
    seqs.push(s.publish(&id, "stop", json!({})).await);
    let bye = json!({"kind": "bye", "reason": "match_over"});
    // Each checks its stream as it reads (no gap, no duplicate), and gets all of it.
    assert_eq!(collect_v2(&mut tcp).await, (seqs[1..].to_vec(), bye.clone()));
    assert_eq!(ws.collect_v2().await.unwrap(), (seqs[1..].to_vec(), bye.clone()));
    assert_eq!(sse.collect_v2().await.unwrap(), (seqs[1..].to_vec(), bye));
    // A TLS viewer follows in its task: no shard took one.
    let text = crate::metrics::scrape(&s).await;
    assert_eq!(crate::metrics::value(&text, "matchstream_viewers_parked"), 0.0);

    // Plain HTTP and a plain connect line are not spoken on these ports.
    assert!(reqwest::get(format!("http://{host}/1/matches")).await.is_err());
    let mut plain = Viewer::connect_raw(s.viewer()).await;
    plain.send(b"VERSION:2:CONNECT:u:MATCH:elp-tig-2011-09-10\r\n").await;
    let got = plain.read_to_end().await;
    assert!(!got.starts_with(b"{"), "no frame in the clear: {:?}", String::from_utf8_lossy(&got));
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_certificate_is_told_so() {
    let pki = Pki::new();
    let s = tls_node(&pki, |_| {}).await;
    let stranger = Pki::new().client();
    let e = stranger.open(&s.viewer().to_string()).await.err().expect("refused");
    assert!(e.to_string().contains("is not trusted"), "{e}");
    let watcher = Watcher::with_tls(&s.base, TOKEN, Some(&stranger)).unwrap();
    let e = watcher.get("/1/matches").await.expect_err("refused").to_string();
    assert!(e.contains("certificate is not trusted") && e.contains("--ca-cert"), "{e}");
}

#[tokio::test]
async fn a_node_with_a_bad_pair_does_not_start_and_names_the_file() {
    let pki = Pki::new();
    let (files, _) = pki.issue();
    let dir = tempfile::tempdir().unwrap();
    let start = |tls: TlsFiles| {
        let mut config = test_config(dir.path());
        config.tls = Some(tls);
        matchstream::server::start(config)
    };
    let missing = TlsFiles { cert: files.cert.clone(), key: pki.dir.path().join("nope.pem") };
    let e = start(missing).await.err().expect("refused").to_string();
    assert!(e.contains("nope.pem") && e.contains("cannot read"), "{e}");
    let other = Pki::new();
    let (theirs, _) = other.issue();
    let e = start(TlsFiles { cert: files.cert.clone(), key: theirs.key.clone() })
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(e.contains("does not match the certificate in"), "{e}");

    // The binary: both files or neither, and the reason on stderr.
    let out = Command::new(BIN)
        .args(["serve", "--http", "127.0.0.1:0", "--viewers", "127.0.0.1:0", "--tls-cert"])
        .arg(&files.cert)
        .arg("--data")
        .arg(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--tls-key"), "{stderr}");
    let out = Command::new(BIN)
        .args(["serve", "--http", "127.0.0.1:0", "--viewers", "127.0.0.1:0"])
        .arg("--tls-cert")
        .arg(&files.cert)
        .arg("--tls-key")
        .arg(&files.cert)
        .arg("--data")
        .arg(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("cert.pem: no private key in it"), "{stderr}");
}

/// A new full TLS handshake with `addr` (a new client: no session to resume, which would
/// show the certificate of the session it resumes), and the certificate it was shown.
async fn shown(pki: &Pki, addr: &str) -> Vec<u8> {
    peer_cert(&pki.client().open(addr).await.expect("a TLS handshake"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_certificate_and_every_viewer_keeps_its_stream() {
    let pki = Pki::new();
    let (files, first) = pki.issue();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (files.cert.to_str().unwrap(), files.key.to_str().unwrap());
    let node = NodeProcess::start_with(dir.path(), &["--tls-cert", cert, "--tls-key", key]);
    let base = node.base.replace("http://", "https://");
    let host = base.trim_start_matches("https://").to_owned();
    let client = pki.client();
    let watcher = Watcher::with_tls(&base, TOKEN, Some(&client)).unwrap();
    let answer = watcher
        .send(
            reqwest::Method::POST,
            "/1/matches",
            Some(&json!({"home": "elp", "visit": "tig", "start_date": "2011-09-10"})),
        )
        .await
        .unwrap();
    assert_eq!(answer.status.as_u16(), 201, "{}", answer.text);
    let id = answer.json()["id"].as_str().unwrap().to_owned();
    let publish = async |kind: &str, data: serde_json::Value| {
        let path = format!("/1/match/{id}/events");
        let body = json!({"kind": kind, "data": data});
        let answer = watcher.send(reqwest::Method::POST, &path, Some(&body)).await.unwrap();
        assert_eq!(answer.status.as_u16(), 201, "{}", answer.text);
        answer.json()["seq"].as_u64().unwrap()
    };
    publish("start", start_data()).await;

    let viewer_port = node.viewers[0].to_string();
    let stream = client.open(&viewer_port).await.unwrap();
    assert_eq!(peer_cert(&stream), first);
    let mut tcp =
        Viewer(matchstream_client::Viewer::watch_on(stream, &v2_line(&id)).await.unwrap());
    let stream = client.open(&host).await.unwrap();
    let ws = WsViewer::handshake(stream, &host, &match_path(&id, "ws", None), None).await;
    let mut ws = ws.unwrap().checked(None);
    assert_eq!(tcp.frame().await.unwrap()["kind"], "status");
    assert_eq!(ws.frame().await.unwrap().unwrap()["kind"], "status");

    let (_, second) = pki.issue();
    assert_ne!(first, second);
    let hangup = || {
        // SAFETY: kill(2) with the pid of the node this test started, still running.
        let rc = unsafe { libc::kill(node.child.id() as libc::pid_t, libc::SIGHUP) };
        assert_eq!(rc, 0, "SIGHUP sent");
    };
    hangup();
    eventually("the log says the certificate was reloaded", PATIENCE, async || {
        node.logged("TLS certificate reloaded").then_some(())
    })
    .await;
    assert_eq!(shown(&pki, &host).await, second, "a new handshake on the HTTP port");
    assert_eq!(shown(&pki, &viewer_port).await, second, "and on a viewer port");

    // A bad pair: the node says why, and keeps serving the pair it had.
    std::fs::write(&files.key, "not a key").unwrap();
    hangup();
    eventually("the log says the certificate was not reloaded", PATIENCE, async || {
        node.logged("TLS certificate not reloaded").then_some(())
    })
    .await;
    assert_eq!(shown(&pki, &host).await, second);

    // Both viewers connected before the reloads get every event after them.
    let mut seqs = Vec::new();
    for _ in 0..5 {
        seqs.push(publish("goal", json!({"team": "tig", "player": 7})).await);
    }
    seqs.push(publish("stop", json!({})).await);
    let bye = json!({"kind": "bye", "reason": "match_over"});
    assert_eq!(collect_v2(&mut tcp).await, (seqs.clone(), bye.clone()));
    assert_eq!(ws.collect_v2().await.unwrap(), (seqs, bye));
}

/// `matchstream <args>` (blocking, in a thread of its own).
async fn run(args: Vec<String>) -> std::process::Output {
    tokio::task::spawn_blocking(move || Command::new(BIN).args(&args).output().expect("run"))
        .await
        .unwrap()
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_publishes_to_a_tls_node_with_ca_cert_and_refuses_an_unknown_certificate() {
    let pki = Pki::new();
    let s = tls_node(&pki, |_| {}).await;
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/matches/elp-tig-2011-09-10.config");
    let args = |extra: &[String]| {
        let mut a: Vec<String> = ["replay", file, "--server", &s.base, "--token", TOKEN]
            .iter()
            .map(|s| s.to_string())
            .collect();
        a.extend(["--speed".into(), "1000".into()]);
        a.extend_from_slice(extra);
        a
    };
    let out = run(args(&[])).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("certificate is not trusted") && stderr.contains("--ca-cert"),
        "{stderr}"
    );

    let out = run(args(&["--ca-cert".into(), path(&pki.ca_path())])).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (_, m) = s.get("/1/match/elp-tig-2011-09-10").await;
    assert_eq!((m["period"].as_str(), m["visit-score"].as_u64()), (Some("ended"), Some(3)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_once_reads_an_admin_listener_over_https() {
    let pki = Pki::new();
    let s = tls_node(&pki, |c| c.admin_tls = true).await;
    let admin = s.admin.replace("http://", "https://");
    let out = run(vec!["top".into(), "--once".into(), "--server".into(), admin.clone()]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("certificate is not trusted"), "{stderr}");
    let out = run(vec![
        "top".into(),
        "--once".into(),
        "--server".into(),
        admin,
        "--ca-cert".into(),
        path(&pki.ca_path()),
    ])
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.starts_with("node  viewers") && stdout.contains("RSS/viewer"), "{stdout}");
}

#[tokio::test]
async fn the_page_of_a_tls_node_connects_to_https_and_wss_only() {
    let pki = Pki::new();
    let s = tls_node(&pki, |_| {}).await;
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(pki.client().config().clone())
        .build()
        .unwrap();
    let page = client.get(format!("{}/", s.base)).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let policy = page.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(policy.contains("connect-src 'self'"), "{policy}");
    assert!(!policy.contains("http://") && !policy.contains("ws://"), "{policy}");
}
