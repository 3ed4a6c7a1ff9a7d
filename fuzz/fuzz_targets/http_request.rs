//! Any bytes as an HTTP/1.1 connection to a node, through its whole public router and tower
//! stack: hyper's `serve_connection` over an in-memory duplex (`Node::serve_io`). One node on
//! a temporary store serves every input; a match on it is live, so reads, publishes (the
//! dictionary carries the token) and viewers' upgrades reach real handlers. Every input must
//! be answered or closed within a few seconds: a hang is a finding, and so is a panic.
#![no_main]

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use matchstream::config::Config;
use matchstream::server::{self, Node};

struct World {
    runtime: tokio::runtime::Runtime,
    node: Node,
    _store: tempfile::TempDir,
}

const TOKEN: &str = "fuzz-token";

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let store = tempfile::tempdir().expect("a temporary store");
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let config = Config {
            http: any,
            viewers: vec![any],
            data_dir: store.path().to_path_buf(),
            watcher_tokens: vec![TOKEN.to_owned()],
            ..Config::default()
        };
        let node = runtime.block_on(server::start(config)).expect("the node starts");
        let world = World { runtime, node, _store: store };
        // A live match for the inputs to read, publish to and watch.
        let create = r#"{"home":"elp","visit":"tig","start_date":"2011-09-10"}"#;
        let start = r#"{"kind":"start","data":{"home_players":[[25,"Albil"]],"visit_players":[[7,"Luna"]]}}"#;
        for (path, body) in [("/1/matches", create), ("/1/match/elp-tig-2011-09-10/events", start)] {
            let request = format!(
                "POST {path} HTTP/1.1\r\nauthorization: Bearer {TOKEN}\r\n\
                 content-length: {}\r\n\r\n{body}",
                body.len()
            );
            let answer = exchange(&world, request.as_bytes());
            assert!(answer.starts_with(b"HTTP/1.1 201"), "{}", String::from_utf8_lossy(&answer));
        }
        world
    })
}

/// Sends `input` as one client would (then closes its side) and reads what the node answers
/// until it closes; a connection that neither answers nor closes in time is a hang.
fn exchange(world: &World, input: &[u8]) -> Vec<u8> {
    world.runtime.block_on(async {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let serving = world.node.serve_io(server);
        let talking = async {
            let _ = client.write_all(input).await;
            let _ = client.shutdown().await;
            let mut answer = Vec::new();
            let _ = client.read_to_end(&mut answer).await;
            answer
        };
        let both = async { tokio::join!(serving, talking).1 };
        tokio::time::timeout(Duration::from_secs(10), both).await.expect("answered or closed")
    })
}

fuzz_target!(|data: &[u8]| {
    exchange(world(), data);
});
