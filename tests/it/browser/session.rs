//! How a browser test runs: a chromedriver on a free port, a headless Chromium session on a
//! desktop or phone screen, and the screenshot of the final page.

use std::future::Future;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use fantoccini::{Client, ClientBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{json, Value};

use crate::support::PATIENCE;

/// The browser (Debian's `chromium`), as `scripts/test` installs it.
pub(super) const CHROMIUM: &str = "/usr/bin/chromium";
/// Its driver (Debian's `chromium-driver`), found on `PATH`.
pub(super) const CHROMEDRIVER: &str = "chromedriver";

/// A chromedriver started by this test in a process group of its own, whose leader it is: the
/// browsers it starts are in the group too, and dropping this kills that group.
pub(super) struct Chromedriver {
    child: Child,
    port: u16,
}

impl Chromedriver {
    /// Starts one on a port the system picks (`--port=0`) and reads the port it announces.
    fn start() -> Chromedriver {
        use std::os::unix::process::CommandExt;
        let mut child = Command::new(CHROMEDRIVER)
            .arg("--port=0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {CHROMEDRIVER} ({e}); scripts/test installs it (Debian: chromium chromium-driver)")
            });
        let stdout = child.stdout.take().expect("chromedriver's stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            for line in lines.by_ref().map_while(Result::ok) {
                // "ChromeDriver was started successfully on port 34613."
                if let Some((_, rest)) = line.split_once("started successfully on port ") {
                    let _ = tx.send(rest.trim_end_matches('.').trim().parse::<u16>());
                    break;
                }
            }
            // Keep reading so that chromedriver never blocks on a full pipe.
            for _ in lines {}
        });
        let mut driver = Chromedriver { child, port: 0 };
        driver.port = match rx.recv_timeout(PATIENCE) {
            Ok(Ok(port)) => port,
            other => panic!("chromedriver did not announce its port: {other:?}"),
        };
        driver
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        // The group's id is the pid of the chromedriver this test started.
        unsafe { libc::kill(-(self.child.id() as libc::pid_t), libc::SIGKILL) };
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The screen the page is shown on.
#[derive(Clone, Copy)]
pub(super) enum Screen {
    /// A laptop window, 1280×800.
    Desktop,
    /// A phone, 360 CSS pixels wide (Chromium's mobile emulation, at 2 device pixels per pixel).
    Phone,
}

/// A headless Chromium session and the chromedriver behind it.
pub(super) struct Browser {
    pub(super) client: Client,
    _driver: Chromedriver,
}

impl Browser {
    pub(super) async fn start(screen: Screen) -> Browser {
        let driver = Chromedriver::start();
        let mut args = vec!["--headless=new", "--no-sandbox", "--disable-gpu"];
        args.extend(["--disable-dev-shm-usage", "--no-first-run", "--disable-extensions"]);
        // The window is made larger than the screen it emulates: the page gets exactly that
        // screen (a window's size would include the browser's own frame).
        let metrics = match screen {
            Screen::Desktop => json!({"width": 1280, "height": 800, "pixelRatio": 1.0}),
            Screen::Phone => {
                json!({"width": 360, "height": 740, "pixelRatio": 2.0, "mobile": true, "touch": true})
            }
        };
        args.push("--window-size=1400,1000");
        let options = json!({
            "binary": CHROMIUM,
            "args": args,
            "mobileEmulation": {"deviceMetrics": metrics},
        });
        // A page behind nginx (browser/library.rs) is served over https with a certificate of
        // the test's own authority.
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": options,
            "acceptInsecureCerts": true,
        });
        let Value::Object(caps) = caps else { unreachable!("an object") };
        let url = format!("http://127.0.0.1:{}", driver.port);
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(caps)
            .connect(&url)
            .await
            .unwrap_or_else(|e| panic!("a Chromium session ({CHROMIUM}) through {url}: {e}"));
        Browser { client, _driver: driver }
    }
}

/// Runs one browser test: `test` gets the browser and returns what must stay alive (the node)
/// until its final page is saved as `target/browser-screenshots/<name>.png` (also when it
/// fails). The session is always ended, then chromedriver stopped.
pub(super) async fn run<T, F, Fut>(name: &str, screen: Screen, test: F)
where
    T: Send + 'static,
    F: FnOnce(Client) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
{
    let began = Instant::now();
    let browser = Browser::start(screen).await;
    let outcome = tokio::spawn(test(browser.client.clone())).await;
    save_screenshot(&browser.client, &screenshots().join(format!("{name}.png"))).await;
    let _ = browser.client.clone().close().await;
    drop(browser);
    eprintln!("browser test {name}: {:.1} s", began.elapsed().as_secs_f64());
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.try_into_panic().unwrap_or_else(|e| Box::new(e.to_string())));
    }
}

/// Where the tests leave their screenshots.
pub(super) fn screenshots() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/browser-screenshots")
}

pub(super) async fn save_screenshot(client: &Client, path: &std::path::Path) {
    match client.screenshot().await {
        Ok(png) => {
            let _ = std::fs::create_dir_all(path.parent().expect("a directory"));
            if let Err(e) = std::fs::write(path, png) {
                eprintln!("cannot save {}: {e}", path.display());
            }
        }
        Err(e) => eprintln!("no screenshot for {}: {e}", path.display()),
    }
}
