//! The binary's logging: tracing's fmt subscriber on stderr, as text for people or as JSON
//! lines for log collectors (`--log-format`, SPEC 11), filtered by `RUST_LOG`; and the one line
//! that says why the program stops, in the same format.

use std::sync::OnceLock;

/// How log lines are written (SPEC 11).
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Whether stderr carries JSON lines, for [`fatal`] (set once, by [`init_logging`]).
static JSON_LOGS: OnceLock<bool> = OnceLock::new();

/// Installs the subscriber: `RUST_LOG` if set, else `default_level`.
pub fn init_logging(format: LogFormat, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let _ = JSON_LOGS.set(format == LogFormat::Json);
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        // The event's fields, message included, at the top level of its object (SPEC 11).
        LogFormat::Json => builder.json().flatten_event(true).with_ansi(false).init(),
    }
}

/// What stops the program, said once on stderr: `matchstream: <what failed>: <why>`, or with
/// JSON logs an `ERROR` object like every other line, so that a collector parses every line.
pub fn fatal(message: &str) {
    if JSON_LOGS.get().copied().unwrap_or(false) {
        tracing::error!("matchstream: {message}");
    } else {
        eprintln!("matchstream: {message}");
    }
}
