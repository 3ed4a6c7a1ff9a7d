//! `serve --config FILE` and `serve --print-config` (SPEC 11): the TOML file is read onto clap's
//! own definition of `serve`, so every flag is a key (dashes as underscores) with no list to
//! keep: a flag added to `ServeArgs` is a key of the file, parsed by the flag's own value parser,
//! and printed by `--print-config`. Precedence: flag > environment variable > file > default.
//! What the keys mean, and their checks, belong to `ServeArgs` and `Config`, not here.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use clap::error::{ContextKind, ContextValue};
use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command};

use matchstream::config::{redacted_url, MASK};

/// The subcommand the file configures.
const SUBCOMMAND: &str = "serve";
/// Flags of `serve` that are not settings: they say where the settings are, or what to do.
const NOT_KEYS: [&str; 4] = ["config", "print_config", "help", "version"];

/// The keys a config file set (and that no flag or variable overrode), and where it is.
pub(crate) struct FromFile {
    pub path: PathBuf,
    pub keys: Vec<String>,
}

impl FromFile {
    /// A message of `Config::validate`, which names flags, with the file's keys among them
    /// named too, so that the operator knows which line to fix.
    pub fn blame(&self, message: &str) -> String {
        let named: Vec<&str> = self
            .keys
            .iter()
            .filter(|k| names_flag(message, &format!("--{}", k.replace('_', "-"))))
            .map(String::as_str)
            .collect();
        match named.as_slice() {
            [] => message.to_owned(),
            keys => format!("{message} (`{}` in {})", keys.join("`, `"), self.path.display()),
        }
    }
}

/// True if `message` names `flag` as a whole word (`--history-limit` is not in
/// `--max-history-limit`).
fn names_flag(message: &str, flag: &str) -> bool {
    message.match_indices(flag).any(|(at, _)| {
        let before = message[..at].chars().next_back();
        let after = message[at + flag.len()..].chars().next();
        !before.is_some_and(|c| c.is_alphanumeric() || c == '-')
            && !after.is_some_and(|c| c.is_alphanumeric() || c == '-')
    })
}

/// Parses `argv` against `cmd` (exiting as clap does on `--help` or a bad flag); for
/// `serve --config FILE` (or `MATCHSTREAM_CONFIG`), the file's keys not given as a flag or a
/// variable are parsed again as if given on the command line, by the same value parsers.
pub(crate) fn parse(
    mut cmd: Command,
    mut argv: Vec<OsString>,
) -> Result<(ArgMatches, Option<FromFile>)> {
    // Built, so that the global flags (`--log-format`) are `serve`'s flags, and keys, too.
    cmd.build();
    let first = cmd.clone().get_matches_from(argv.clone());
    let Some((SUBCOMMAND, given)) = first.subcommand() else { return Ok((first, None)) };
    let Some(path) = given.get_one::<PathBuf>("config").cloned() else {
        return Ok((first, None));
    };
    let serve = cmd.find_subcommand(SUBCOMMAND).context("no serve subcommand")?;
    let table = read(&path)?;
    let mut extra = Vec::new();
    let mut keys = Vec::new();
    for (key, value) in &table {
        let Some(arg) = file_arg(serve, key) else {
            let known: Vec<String> = serve.get_arguments().filter_map(key_of).collect();
            let hint = match closest(key, known.iter().map(String::as_str)) {
                Some(k) => format!("; did you mean `{k}`?"),
                None => " (the keys are `serve --help`'s flags, dashes as underscores)".to_owned(),
            };
            return Err(anyhow!("unknown key `{key}` in {}{hint}", path.display()));
        };
        if overridden(serve, given, arg) {
            continue;
        }
        let args =
            arguments(arg, value).map_err(|why| anyhow!("`{key}` in {}: {why}", path.display()))?;
        extra.extend(args);
        keys.push(key.clone());
    }
    // Right after the subcommand's name, so that a `--` further on cannot swallow them.
    let at = argv.iter().skip(1).position(|a| a == SUBCOMMAND).map_or(argv.len(), |i| i + 2);
    argv.splice(at..at, extra);
    let from_file = FromFile { path, keys };
    match cmd.try_get_matches_from(argv) {
        Ok(matches) => Ok((matches, Some(from_file))),
        Err(e) => Err(clap_error(e, &from_file)),
    }
}

/// The file as a TOML table.
fn read(path: &Path) -> Result<toml::Table> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the config file {}", path.display()))?;
    text.parse::<toml::Table>().map_err(|e| anyhow!("config file {}: {e}", path.display()))
}

/// The file's key for a flag: its long name with underscores; none for a hidden flag (an older
/// spelling) or one that is not a setting.
fn key_of(arg: &Arg) -> Option<String> {
    let id = arg.get_id().as_str();
    if arg.is_hide_set() || NOT_KEYS.contains(&id) {
        return None;
    }
    arg.get_long().map(|long| long.replace('-', "_"))
}

/// Every key of `serve`, with its flag, in the order of `--help`.
pub(crate) fn keys(serve: &Command) -> impl Iterator<Item = (String, &Arg)> {
    serve.get_arguments().filter_map(|a| key_of(a).map(|k| (k, a)))
}

fn file_arg<'a>(serve: &'a Command, key: &str) -> Option<&'a Arg> {
    keys(serve).find(|(k, _)| k == key).map(|(_, a)| a)
}

/// True if a flag or variable sets `arg`, or a flag it conflicts with (its older spelling):
/// both beat the file.
fn overridden(serve: &Command, given: &ArgMatches, arg: &Arg) -> bool {
    let explicit = |a: &Arg| {
        matches!(
            given.value_source(a.get_id().as_str()),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        )
    };
    let conflicting =
        |a: &Arg, b: &Arg| serve.get_arg_conflicts_with(a).iter().any(|c| c.get_id() == b.get_id());
    explicit(arg)
        || serve
            .get_arguments()
            .any(|b| (conflicting(arg, b) || conflicting(b, arg)) && explicit(b))
}

/// A value of the file as the arguments that say the same on the command line.
fn arguments(arg: &Arg, value: &toml::Value) -> Result<Vec<OsString>, String> {
    let long = arg.get_long().ok_or("not a flag")?;
    let flag = |v: String| OsString::from(format!("--{long}={v}"));
    let switch = |on: bool| if on { vec![OsString::from(format!("--{long}"))] } else { vec![] };
    match (arg.get_action(), value) {
        (ArgAction::SetTrue, toml::Value::Boolean(b)) => Ok(switch(*b)),
        (ArgAction::SetFalse, toml::Value::Boolean(b)) => Ok(switch(!*b)),
        (ArgAction::SetTrue | ArgAction::SetFalse, _) => Err("expected true or false".to_owned()),
        (ArgAction::Append, toml::Value::Array(items)) => {
            items.iter().map(|v| scalar(v).map(flag)).collect()
        }
        (ArgAction::Set, toml::Value::Array(_)) => Err("takes one value, not a list".to_owned()),
        (ArgAction::Set | ArgAction::Append, v) => Ok(vec![flag(scalar(v)?)]),
        _ => Err("cannot be set from a file".to_owned()),
    }
}

/// A single value of the file as the command line would spell it.
fn scalar(value: &toml::Value) -> Result<String, String> {
    match value {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Float(f) => Ok(f.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        _ => Err("expected a string, a number or a boolean".to_owned()),
    }
}

/// A clap error of the second parse: about a key of the file, it names the key and the file.
fn clap_error(e: clap::Error, from_file: &FromFile) -> anyhow::Error {
    let flag = match e.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(s)) => s.clone(),
        _ => String::new(),
    };
    let key = flag.trim_start_matches('-').split([' ', '=']).next().unwrap_or("").replace('-', "_");
    if !from_file.keys.contains(&key) {
        e.exit();
    }
    let why = match std::error::Error::source(&e) {
        Some(source) => match e.get(ContextKind::InvalidValue) {
            // The value parser's own words, with the value when they do not quote it.
            Some(ContextValue::String(v)) if !source.to_string().contains(v.as_str()) => {
                format!("{v:?}: {source}")
            }
            _ => source.to_string(),
        },
        None => {
            let text = e.render().to_string();
            let line = text.lines().next().unwrap_or("").trim_start_matches("error: ");
            line.to_owned()
        }
    };
    anyhow!("`{key}` in {}: {why}", from_file.path.display())
}

/// The known key closest to an unknown one, if one is close enough to be what was meant
/// (Jaro similarity above 0.7, as clap's own suggestions).
fn closest<'a>(key: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    known
        .into_iter()
        .map(|k| (strsim::jaro(key, k), k))
        .filter(|(score, _)| *score > 0.7)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k)
}

/// `serve --print-config`: every key of `serve` with the value that holds after flags,
/// variables, the file and defaults (TOML, so that it is a config file itself); a key with no
/// value is a comment. Secrets (the flags whose variables `--help` hides) are masked.
pub(crate) fn print(serve: &Command, matches: &ArgMatches) -> String {
    let mut out = String::from(
        "# matchstream serve: the configuration in effect (flag > environment variable > file >\n\
         # default). Secrets show as \"***\": put them back (or use watcher_token_file).\n",
    );
    for (key, arg) in keys(serve) {
        let id = arg.get_id().as_str();
        let raw: Vec<String> = older_spelling(serve, matches, arg).unwrap_or_else(|| {
            matches.get_raw(id).into_iter().flatten().map(|v| v.to_string_lossy().into()).collect()
        });
        let secret = arg.is_hide_env_values_set();
        let shown: Vec<String> =
            raw.iter().map(|v| if secret { mask(v) } else { v.clone() }).collect();
        let line = match (arg.get_action(), shown.as_slice()) {
            (_, []) => format!("# {key}: not set"),
            (ArgAction::SetTrue | ArgAction::SetFalse, [v, ..]) => format!("{key} = {v}"),
            (ArgAction::Append, values) => {
                let items: Vec<String> = values.iter().map(|v| literal(v)).collect();
                format!("{key} = [{}]", items.join(", "))
            }
            (_, [v, ..]) => format!("{key} = {}", literal(v)),
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// The value of a duration given by its older spelling in milliseconds (`--drain-window-ms`,
/// hidden, conflicting with `--drain-window`), as the newer key takes it: `100ms`.
fn older_spelling(serve: &Command, matches: &ArgMatches, arg: &Arg) -> Option<Vec<String>> {
    let long = format!("{}-ms", arg.get_long()?);
    let older = serve.get_arguments().find(|a| a.is_hide_set() && a.get_long() == Some(&long))?;
    let id = older.get_id().as_str();
    if !matches!(
        matches.value_source(id),
        Some(ValueSource::CommandLine | ValueSource::EnvVariable)
    ) {
        return None;
    }
    let ms = matches.get_raw(id)?.next()?.to_string_lossy().into_owned();
    Some(vec![format!("{ms}ms")])
}

/// A secret as `--print-config` shows it: a URL with its password masked, anything else masked.
fn mask(value: &str) -> String {
    if value.contains("://") {
        redacted_url(value)
    } else {
        MASK.to_owned()
    }
}

/// The key of a secret whose value is what `--print-config` prints in its place: its output
/// started as it is, with which a node would run with a token anyone can guess.
pub(crate) fn masked_secret(serve: &Command, matches: &ArgMatches) -> Option<String> {
    keys(serve).filter(|(_, a)| a.is_hide_env_values_set()).find_map(|(key, arg)| {
        let mut values = matches.get_raw(arg.get_id().as_str()).into_iter().flatten();
        values.any(|v| is_masked(&v.to_string_lossy())).then_some(key)
    })
}

/// True if a secret's value is what `mask` prints in its place.
fn is_masked(value: &str) -> bool {
    value.contains(MASK) && mask(value) == value
}

/// A value as a TOML literal: a number stays a number (written back the same), the rest is a
/// string.
fn literal(value: &str) -> String {
    match value.parse::<i64>() {
        Ok(n) if n.to_string() == value => value.to_owned(),
        _ => toml::Value::String(value.to_owned()).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_key_is_matched_to_the_closest_known_one() {
        let known = ["max_viewers", "max_handshakes", "watcher_token", "watcher_token_file"];
        assert_eq!(closest("max_viewer", known), Some("max_viewers"));
        assert_eq!(closest("watcher_tokens", known), Some("watcher_token"));
        assert_eq!(closest("watcher-token-file", known), Some("watcher_token_file"));
        assert_eq!(closest("colour", known), None);
    }

    #[test]
    fn a_flag_is_named_only_as_a_whole_word() {
        let m = "--history-limit must not be above --max-history-limit";
        assert!(names_flag(m, "--history-limit"));
        assert!(names_flag(m, "--max-history-limit"));
        assert!(!names_flag("--max-history-limit must be between", "--history-limit"));
        assert!(names_flag("--keep-ended must be between 1s and 168h", "--keep-ended"));
        let f = FromFile { path: "/etc/m.toml".into(), keys: vec!["keep_ended".into()] };
        assert_eq!(
            f.blame("--keep-ended must be between 1s and 168h (got 500ms)"),
            "--keep-ended must be between 1s and 168h (got 500ms) (`keep_ended` in /etc/m.toml)"
        );
        assert_eq!(f.blame("--write-timeout must be"), "--write-timeout must be");
    }

    #[test]
    fn file_values_become_the_arguments_that_say_the_same() {
        let v = |s: &str| s.parse::<toml::Value>().unwrap();
        let set = Arg::new("min_write_interval").long("min-write-interval");
        assert_eq!(arguments(&set, &v("\"150ms\"")).unwrap(), ["--min-write-interval=150ms"]);
        assert_eq!(arguments(&set, &v("0.5")).unwrap(), ["--min-write-interval=0.5"]);
        assert_eq!(arguments(&set, &v("2")).unwrap(), ["--min-write-interval=2"]);
        assert!(arguments(&set, &v("[1, 2]")).unwrap_err().contains("one value"));
        assert!(arguments(&set, &v("{a = 1}")).unwrap_err().contains("a string, a number"));
        let list = Arg::new("watcher_token").long("watcher-token").action(ArgAction::Append);
        // `=` keeps a value that starts with a dash a value.
        assert_eq!(
            arguments(&list, &v("[\"a\", \"-b\"]")).unwrap(),
            ["--watcher-token=a", "--watcher-token=-b"]
        );
        assert_eq!(arguments(&list, &v("\"a\"")).unwrap(), ["--watcher-token=a"]);
        let switch = Arg::new("redis_volatile").long("redis-volatile").action(ArgAction::SetTrue);
        assert_eq!(arguments(&switch, &v("true")).unwrap(), ["--redis-volatile"]);
        assert!(arguments(&switch, &v("false")).unwrap().is_empty());
        assert_eq!(arguments(&switch, &v("\"yes\"")).unwrap_err(), "expected true or false");
    }

    #[test]
    fn printed_values_read_back_as_they_were() {
        assert_eq!(literal("1024"), "1024");
        assert_eq!(literal("0123"), "\"0123\"");
        assert_eq!(literal("150ms"), "\"150ms\"");
        for tricky in ["say \"hi\"", "back\\slash", "it's", "two\nlines", "0x10", "1e3"] {
            let read: toml::Table = format!("k = {}", literal(tricky)).parse().unwrap();
            assert_eq!(read["k"].as_str(), Some(tricky), "{}", literal(tricky));
        }
        assert_eq!(mask("a-token"), "***");
        assert_eq!(mask("redis://:pw@h:6379"), "redis://:***@h:6379");
        assert!(is_masked("***") && is_masked("redis://:***@h:6379"));
        assert!(!is_masked("a***b") && !is_masked("redis://h:6379") && !is_masked("token"));
    }
}
