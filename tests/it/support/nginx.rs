//! A real nginx in front of nodes (Debian's `nginx`, and `libnginx-mod-stream` for the viewer
//! ports, as `scripts/test` installs them): one unprivileged process (`master_process off`), its
//! prefix, temporary files, pid file and error log in a temp dir of its own, listening on free
//! ports, stopped by its PID when dropped. [`site`] and [`stream_site`] are the repository's own
//! configuration (`ops/nginx/`, docs/deploy.md) with only its addresses and certificate paths
//! changed, so that a test runs exactly what an operator installs.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::PATIENCE;

/// Where Debian's `libnginx-mod-stream` puts the stream module.
const STREAM_MODULE: &str = "/usr/lib/nginx/modules/ngx_stream_module.so";

/// What nginx runs: its top level (modules, a `stream` block) and what goes in its `http` block
/// (a site).
#[derive(Default)]
pub struct NginxConf {
    pub main: String,
    pub http: String,
}

/// A running nginx.
pub struct Nginx {
    child: Child,
    /// The free ports it was given, in the order `conf` was given them.
    pub ports: Vec<u16>,
    _dir: tempfile::TempDir,
}

impl Nginx {
    /// Starts nginx with what `conf` makes of `ports` free ports on 127.0.0.1, and waits until
    /// it listens on them (nginx opens every listener, `stream` ones too, before it serves, and
    /// exits if one cannot be opened). A port taken by another process in between: again, on
    /// other ports.
    pub fn start(ports: usize, conf: impl Fn(&[u16]) -> NginxConf) -> Nginx {
        let mut log = String::new();
        for _ in 0..10 {
            let ports: Vec<u16> = {
                // All held at once, so that no two are the same.
                let probes: Vec<_> = (0..ports)
                    .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("a free port"))
                    .collect();
                probes.iter().map(|p| p.local_addr().expect("its address").port()).collect()
            };
            let dir = tempfile::tempdir().expect("a temp dir for nginx");
            let d = dir.path().display();
            let NginxConf { main, http } = conf(&ports);
            let conf = format!(
                "daemon off; master_process off; pid {d}/nginx.pid; error_log {d}/error.log;
                {main}
                events {{ worker_connections 1024; }}
                http {{
                  access_log off;
                  client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;
                  fastcgi_temp_path {d}/fastcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
                  {http}
                }}"
            );
            std::fs::write(dir.path().join("nginx.conf"), conf).expect("nginx.conf");
            let mut child = Command::new("nginx")
                .arg("-p")
                .arg(dir.path())
                .arg("-e")
                .arg(dir.path().join("error.log"))
                .arg("-c")
                .arg(dir.path().join("nginx.conf"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| {
                    panic!("cannot start nginx ({e}); scripts/test installs it (Debian: nginx)")
                });
            let deadline = std::time::Instant::now() + PATIENCE;
            loop {
                if ports.iter().all(|p| std::net::TcpStream::connect(("127.0.0.1", *p)).is_ok()) {
                    return Nginx { child, ports, _dir: dir };
                }
                if let Ok(Some(_)) = child.try_wait() {
                    // Another process took a port between the probe and nginx, or the
                    // configuration is wrong (then every try fails the same way: the log says).
                    log = std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default();
                    break;
                }
                assert!(std::time::Instant::now() < deadline, "nginx did not listen on {ports:?}");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("nginx did not start:\n{log}");
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The repository's site, `ops/nginx/matchstream.conf`, on 127.0.0.1 (`https` and `http`, its
/// redirect), in front of `upstreams` (nodes' `--http`), with `cert` and `key`.
pub fn site(https: u16, http: u16, upstreams: &[&str], cert: &Path, key: &Path) -> String {
    let servers: Vec<String> = upstreams.iter().map(|u| format!("server {u};")).collect();
    rewrite(
        "ops/nginx/matchstream.conf",
        &[
            ("listen 443 ssl http2;", format!("listen 127.0.0.1:{https} ssl http2;")),
            ("listen 80;", format!("listen 127.0.0.1:{http};")),
            ("server 127.0.0.1:8888;", servers.join("\n    ")),
            (
                "/etc/letsencrypt/live/matchstream.example.org/fullchain.pem;",
                format!("{};", cert.display()),
            ),
            (
                "/etc/letsencrypt/live/matchstream.example.org/privkey.pem;",
                format!("{};", key.display()),
            ),
        ],
    )
}

/// The repository's stream configuration, `ops/nginx/matchstream-stream.conf`, listening on
/// `listen` (an address per viewer port of the node, same port numbers) and passing each on to
/// the same port of 127.0.0.1, with the module loaded as Debian's `modules-enabled/` does.
pub fn stream_site(listen: &[SocketAddr]) -> String {
    let [first, second] = listen else { panic!("the file has two listen lines: {listen:?}") };
    let keepalive = "so_keepalive=60s:10s:6;";
    let conf = rewrite(
        "ops/nginx/matchstream-stream.conf",
        &[
            (
                &format!("listen 203.0.113.10:9100 {keepalive}"),
                format!("listen {first} {keepalive}"),
            ),
            (
                &format!("listen 203.0.113.10:9101 {keepalive}"),
                format!("listen {second} {keepalive}"),
            ),
        ],
    );
    assert!(
        Path::new(STREAM_MODULE).exists(),
        "no {STREAM_MODULE}: scripts/test installs it (Debian: libnginx-mod-stream)"
    );
    format!("load_module {STREAM_MODULE};\n{conf}")
}

/// The repository file `path` with each `(from, to)` done, every `from` found exactly once:
/// a change to the file that a test does not know about fails here, not later.
fn rewrite(path: &str, changes: &[(&str, String)]) -> String {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    let mut text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{path}: {e}"));
    for (from, to) in changes {
        assert_eq!(text.matches(from).count(), 1, "{path} names {from:?} once");
        text = text.replace(from, to);
    }
    text
}
