//! Live progress of a run on stderr: an indicatif bar on a terminal, a plain line every few
//! seconds otherwise, JSON lines with `--json` (for scripts, next to the one JSON summary on
//! stdout). Milestones such as `connected N` are always one plain line of their own, so that a
//! harness can wait for them whatever the mode.

use std::io::Write;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;

use super::job::Counters;

/// How progress is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UiMode {
    /// An indicatif bar (stderr is a terminal).
    Bar,
    /// A plain line every few seconds (stderr is a file or a pipe).
    Plain,
    /// A JSON object per line every second (`--json`).
    Json,
}

/// Plain lines come this often: enough to see a run move in a CI log without flooding it.
const PLAIN_EVERY: Duration = Duration::from_secs(3);
const JSON_EVERY: Duration = Duration::from_secs(1);
/// Rates are measured over at least this long, so that they do not jitter with each update.
const RATE_WINDOW: Duration = Duration::from_secs(1);

/// The progress display of one run.
pub struct Display {
    mode: UiMode,
    bar: Option<ProgressBar>,
    out: Box<dyn Write + Send>,
    total: u64,
    /// `viewers` or `requests`, for the lines.
    unit: &'static str,
    started: Instant,
    last_line: Option<Instant>,
    /// Rate measurement: when and how many at the last sample, and the rate then.
    rate_mark: (Instant, u64),
    rate: f64,
}

impl Display {
    /// A display of a run of `total` units (`viewers` or `requests`), writing to `out` (stderr).
    pub fn new(mode: UiMode, total: u64, unit: &'static str, out: Box<dyn Write + Send>) -> Self {
        let bar = (mode == UiMode::Bar).then(|| {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template(
                "{elapsed_precise} [{bar:30.cyan/blue}] {pos}/{len} done  {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style.progress_chars("=> "));
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        let now = Instant::now();
        Display {
            mode,
            bar,
            out,
            total,
            unit,
            started: now,
            last_line: None,
            rate_mark: (now, 0),
            rate: 0.0,
        }
    }

    /// The display a command line wants on stderr: JSON lines with `json`, else a bar on a
    /// terminal and plain lines otherwise.
    pub fn stderr(json: bool, total: u64, unit: &'static str) -> Self {
        use std::io::IsTerminal;
        let mode = match (json, std::io::stderr().is_terminal()) {
            (true, _) => UiMode::Json,
            (false, true) => UiMode::Bar,
            (false, false) => UiMode::Plain,
        };
        Display::new(mode, total, unit, Box::new(std::io::stderr()))
    }

    fn rate_of(&mut self, count: u64) -> f64 {
        let (at, before) = self.rate_mark;
        let dt = at.elapsed();
        if dt >= RATE_WINDOW {
            self.rate = count.saturating_sub(before) as f64 / dt.as_secs_f64();
            self.rate_mark = (Instant::now(), count);
        }
        self.rate
    }

    fn due(&mut self, every: Duration) -> bool {
        let due = self.last_line.is_none_or(|t| t.elapsed() >= every);
        if due {
            self.last_line = Some(Instant::now());
        }
        due
    }

    /// Shows a viewer run's counters.
    pub fn viewers(&mut self, c: &Counters, all_connected: bool) {
        let eps = self.rate_of(c.deliveries);
        let elapsed = self.started.elapsed();
        let mode = self.mode;
        match mode {
            UiMode::Bar => {
                if let Some(bar) = &self.bar {
                    bar.set_position(c.complete + c.failed);
                    bar.set_message(format!(
                        "connected {}  failed {}  finished {}  events/s {:.0}",
                        c.connected, c.failed, c.complete, eps
                    ));
                }
            }
            UiMode::Plain if self.due(PLAIN_EVERY) => {
                let _ = writeln!(
                    self.out,
                    "sim {:.1} s: connected {}/{}  failed {}  finished {}  events/s {:.0}",
                    elapsed.as_secs_f64(),
                    c.connected,
                    self.total,
                    c.failed,
                    c.complete,
                    eps
                );
            }
            UiMode::Json if self.due(JSON_EVERY) => {
                let line = json!({
                    "type": "progress",
                    "elapsed_ms": elapsed.as_millis() as u64,
                    "viewers": self.total,
                    "started": c.started,
                    "connected": c.connected,
                    "ever_connected": c.ever_connected,
                    "all_connected": all_connected,
                    "complete": c.complete,
                    "failed": c.failed,
                    "deliveries": c.deliveries,
                    "events_per_s": (eps * 10.0).round() / 10.0,
                });
                let _ = writeln!(self.out, "{line}");
            }
            _ => {}
        }
    }

    /// Shows a request run's counters.
    pub fn requests(&mut self, done: u64, failed: u64) {
        let rps = self.rate_of(done);
        let elapsed = self.started.elapsed();
        let mode = self.mode;
        match mode {
            UiMode::Bar => {
                if let Some(bar) = &self.bar {
                    bar.set_position(done);
                    bar.set_message(format!("failed {failed}  requests/s {rps:.0}"));
                }
            }
            UiMode::Plain if self.due(PLAIN_EVERY) => {
                let _ = writeln!(
                    self.out,
                    "sim {:.1} s: {done}/{} {}  failed {failed}  requests/s {rps:.0}",
                    elapsed.as_secs_f64(),
                    self.total,
                    self.unit
                );
            }
            UiMode::Json if self.due(JSON_EVERY) => {
                let line = json!({
                    "type": "progress",
                    "elapsed_ms": elapsed.as_millis() as u64,
                    "requests": self.total,
                    "done": done,
                    "failed": failed,
                    "requests_per_s": (rps * 10.0).round() / 10.0,
                });
                let _ = writeln!(self.out, "{line}");
            }
            _ => {}
        }
    }

    /// A milestone, as a plain line of its own in every mode (e.g. `connected 15000`).
    pub fn note(&mut self, line: &str) {
        match &self.bar {
            Some(bar) => bar.suspend(|| {
                let _ = writeln!(self.out, "{line}");
                let _ = self.out.flush();
            }),
            None => {
                let _ = writeln!(self.out, "{line}");
                let _ = self.out.flush();
            }
        }
    }

    /// Removes the bar, leaving the terminal to the summary.
    pub fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        let _ = self.out.flush();
    }
}

impl Drop for Display {
    fn drop(&mut self) {
        self.finish();
    }
}
