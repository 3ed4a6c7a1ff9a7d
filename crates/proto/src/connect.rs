//! The viewer's connect line (SPEC 4): parsing `VERSION:1:CONNECT:<user>:MATCH:<match>` and
//! `VERSION:2:...[:FROM:<seq>]`, and telling which protocol a partial line announces so an error
//! can be answered in it. Reading the line off the socket (length, time limits) is the
//! transport's job, not this file's.

use crate::Seq;

/// What a viewer asked for in its connect line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConnectLine {
    /// The original's text protocol.
    V1 { user: Vec<u8>, match_id: String },
    /// JSON lines; `from` resumes after that seq.
    V2 { user: Vec<u8>, match_id: String, from: Option<Seq> },
}

impl ConnectLine {
    /// The line as a viewer sends it, with its CRLF.
    pub fn encode(&self) -> Vec<u8> {
        let (version, user, match_id, from) = match self {
            ConnectLine::V1 { user, match_id } => (1, user, match_id, None),
            ConnectLine::V2 { user, match_id, from } => (2, user, match_id, *from),
        };
        let mut line = format!("VERSION:{version}:CONNECT:").into_bytes();
        line.extend_from_slice(user);
        line.extend_from_slice(format!(":MATCH:{match_id}").as_bytes());
        if let Some(seq) = from {
            line.extend_from_slice(format!(":FROM:{seq}").as_bytes());
        }
        line.extend_from_slice(b"\r\n");
        line
    }
}

/// A connect line that cannot be honoured, with a reason for a person.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct ConnectError {
    /// `Some(1)` or `Some(2)` when the line announced that version, so the caller answers in
    /// that protocol (v1 `ERROR:` block or v2 `bye`); `None` otherwise (answer in v1).
    pub version: Option<u8>,
    /// Why, for a person; never contains a line break.
    pub reason: String,
}

const V1_SHAPE: &str = "VERSION:1:CONNECT:<user>:MATCH:<match>";
const V2_SHAPE: &str = "VERSION:2:CONNECT:<user>:MATCH:<match>[:FROM:<seq>]";

/// Parses one connect line. `line` is one line without its terminator (the caller strips CRLF or
/// LF).
pub fn parse_connect(line: &[u8]) -> Result<ConnectLine, ConnectError> {
    let Some(version) = sniff_version(line) else {
        return Err(unversioned(line));
    };
    let fail = |detail: String| {
        let shape = if version == 1 { V1_SHAPE } else { V2_SHAPE };
        ConnectError {
            version: Some(version),
            reason: format!("malformed connect line: {detail}; expected {shape}"),
        }
    };
    if let Some(i) = line.iter().position(|&b| b == b'\r' || b == b'\n') {
        return Err(fail(format!("line break inside the line at byte {i}")));
    }
    // "VERSION:<v>:" is 10 bytes, checked by sniff_version.
    let mut parts = line[10..].split(|&b| b == b':');
    if parts.next() != Some(b"CONNECT".as_slice()) {
        return Err(fail("CONNECT must follow the version".into()));
    }
    let user = parts.next().unwrap_or_default();
    if parts.next() != Some(b"MATCH".as_slice()) {
        return Err(fail("MATCH must follow the user id".into()));
    }
    let match_id = parts.next().unwrap_or_default();
    // An empty split part means nothing stood between two colons (or after the last one).
    if user.is_empty() {
        return Err(fail("the user id is empty".into()));
    }
    if match_id.is_empty() {
        return Err(fail("the match id is empty".into()));
    }
    let user = user.to_vec();
    // A match id that is not UTF-8 cannot name a match; it will simply be unknown.
    let match_id = String::from_utf8_lossy(match_id).into_owned();
    if version == 1 {
        return match parts.next() {
            None => Ok(ConnectLine::V1 { user, match_id }),
            Some(_) => Err(fail("extra fields after the match id".into())),
        };
    }
    let from = match parts.next() {
        None => None,
        Some(b"FROM") => {
            let seq = parts.next().unwrap_or_default();
            Some(parse_seq(seq).ok_or_else(|| {
                fail(format!("FROM must be a decimal sequence number, not {}", shown(seq)))
            })?)
        }
        Some(other) => {
            return Err(fail(format!("expected FROM after the match id, not {}", shown(other))))
        }
    };
    if parts.next().is_some() {
        return Err(fail("extra fields after FROM:<seq>".into()));
    }
    Ok(ConnectLine::V2 { user, match_id, from })
}

/// Which version the bytes received so far announce: `Some(1)` for `VERSION:1:...`, `Some(2)`
/// for `VERSION:2:...`, `None` for anything else (including a prefix too short to tell).
/// For errors before a full line arrived (too long, too slow).
pub fn sniff_version(partial: &[u8]) -> Option<u8> {
    match partial.get(..10)? {
        b"VERSION:1:" => Some(1),
        b"VERSION:2:" => Some(2),
        _ => None,
    }
}

/// The error for a line that announces no version we speak.
fn unversioned(line: &[u8]) -> ConnectError {
    let reason = match line.strip_prefix(b"VERSION:") {
        Some(rest) => {
            let v = rest.split(|&b| b == b':').next().unwrap_or_default();
            format!(
                "unsupported protocol version {}: this server speaks VERSION:1 and VERSION:2",
                shown(v)
            )
        }
        None => format!("malformed connect line: expected {V1_SHAPE} or {V2_SHAPE}"),
    };
    ConnectError { version: None, reason }
}

/// A decimal u64: digits only (no sign, no spaces), no overflow.
fn parse_seq(s: &[u8]) -> Option<Seq> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    // All ASCII digits, so this is UTF-8; parse catches overflow.
    std::str::from_utf8(s).ok()?.parse().ok()
}

/// Viewer-supplied bytes quoted for a reason: at most 32 characters, control characters escaped
/// by `{:?}` so the reason stays on one line.
fn shown(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut short: String = text.chars().take(32).collect();
    if short.len() < text.len() {
        short.push('…');
    }
    format!("{short:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(line: &[u8]) -> ConnectError {
        parse_connect(line).unwrap_err()
    }

    #[test]
    fn v1_line_parses() {
        assert_eq!(
            parse_connect(b"VERSION:1:CONNECT:alice:MATCH:elp-tig-2011-09-10").unwrap(),
            ConnectLine::V1 { user: b"alice".to_vec(), match_id: "elp-tig-2011-09-10".into() }
        );
    }

    #[test]
    fn v2_line_parses_with_and_without_from() {
        assert_eq!(
            parse_connect(b"VERSION:2:CONNECT:bob:MATCH:elp-tig-2011-09-10").unwrap(),
            ConnectLine::V2 {
                user: b"bob".to_vec(),
                match_id: "elp-tig-2011-09-10".into(),
                from: None
            }
        );
        assert_eq!(
            parse_connect(b"VERSION:2:CONNECT:bob:MATCH:m:FROM:0").unwrap(),
            ConnectLine::V2 { user: b"bob".to_vec(), match_id: "m".into(), from: Some(0) }
        );
        assert_eq!(
            parse_connect(b"VERSION:2:CONNECT:bob:MATCH:m:FROM:18446744073709551615").unwrap(),
            ConnectLine::V2 { user: b"bob".to_vec(), match_id: "m".into(), from: Some(u64::MAX) }
        );
    }

    #[test]
    fn ids_may_be_any_bytes_but_the_separators() {
        let line = b"VERSION:1:CONNECT:\xff\x00 \xc3\xa9:MATCH:\xfe-x";
        assert_eq!(
            parse_connect(line).unwrap(),
            ConnectLine::V1 { user: b"\xff\x00 \xc3\xa9".to_vec(), match_id: "\u{fffd}-x".into() }
        );
    }

    #[test]
    fn empty_ids_are_rejected_in_the_announced_version() {
        let e = err(b"VERSION:1:CONNECT::MATCH:m");
        assert_eq!(e.version, Some(1));
        assert!(e.reason.contains("user id is empty"), "{}", e.reason);
        let e = err(b"VERSION:2:CONNECT:u:MATCH:");
        assert_eq!(e.version, Some(2));
        assert!(e.reason.contains("match id is empty"), "{}", e.reason);
        assert!(e.reason.contains(V2_SHAPE), "{}", e.reason);
    }

    #[test]
    fn extra_and_missing_fields_are_rejected() {
        for (line, v) in [
            (&b"VERSION:1:CONNECT:u:MATCH:m:FROM:3"[..], 1),
            (b"VERSION:1:CONNECT:u:MATCH:m:", 1),
            (b"VERSION:2:CONNECT:u:MATCH:m:FROM:3:x", 2),
            (b"VERSION:2:CONNECT:u:MATCH:m:AFTER:3", 2),
            (b"VERSION:1:CONNECT:u", 1),
            (b"VERSION:1:CONNECT:u:m", 1),
            (b"VERSION:2:", 2),
            (b"VERSION:1:connect:u:MATCH:m", 1),
        ] {
            let e = err(line);
            assert_eq!(e.version, Some(v), "{}", String::from_utf8_lossy(line));
            assert!(e.reason.starts_with("malformed connect line: "), "{}", e.reason);
        }
    }

    #[test]
    fn bad_from_is_rejected() {
        for line in [
            &b"VERSION:2:CONNECT:u:MATCH:m:FROM:"[..],
            b"VERSION:2:CONNECT:u:MATCH:m:FROM",
            b"VERSION:2:CONNECT:u:MATCH:m:FROM:-1",
            b"VERSION:2:CONNECT:u:MATCH:m:FROM:+1",
            b"VERSION:2:CONNECT:u:MATCH:m:FROM: 1",
            b"VERSION:2:CONNECT:u:MATCH:m:FROM:abc",
            b"VERSION:2:CONNECT:u:MATCH:m:FROM:18446744073709551616",
        ] {
            let e = err(line);
            assert_eq!(e.version, Some(2));
            assert!(e.reason.contains("FROM must be a decimal"), "{}", e.reason);
        }
    }

    #[test]
    fn junk_and_unknown_versions_have_no_version() {
        let e = err(b"GET / HTTP/1.1");
        assert_eq!(e.version, None);
        assert_eq!(e.reason, format!("malformed connect line: expected {V1_SHAPE} or {V2_SHAPE}"));
        assert_eq!(err(b"").version, None);
        let e = err(b"VERSION:3:CONNECT:u:MATCH:m");
        assert_eq!(e.version, None);
        assert_eq!(
            e.reason,
            "unsupported protocol version \"3\": this server speaks VERSION:1 and VERSION:2"
        );
        assert_eq!(err(b"VERSION:12:CONNECT:u:MATCH:m").version, None);
    }

    #[test]
    fn reasons_stay_on_one_line() {
        let e = err(b"VERSION:2:CONNECT:u:MATCH:m:FROM:1\n2");
        assert!(!e.reason.contains('\n') && !e.reason.contains('\r'), "{}", e.reason);
        let e = err(b"VERSION:2:CONNECT:u:MATCH:m:\r\n:3");
        assert!(!e.reason.contains('\n') && !e.reason.contains('\r'), "{}", e.reason);
        let e = err(b"VERSION:\n:x");
        assert!(!e.reason.contains('\n'), "{}", e.reason);
    }

    #[test]
    fn sniff_version_reads_the_prefix() {
        assert_eq!(sniff_version(b"VERSION:2:CONNECT:u:MA"), Some(2));
        assert_eq!(sniff_version(b"VERSION:1:"), Some(1));
        assert_eq!(sniff_version(b"VERSION:2"), None);
        assert_eq!(sniff_version(b"VERSION:3:CONNECT"), None);
        assert_eq!(sniff_version(b"VERSION:21:"), None);
        assert_eq!(sniff_version(b"junk"), None);
        assert_eq!(sniff_version(b""), None);
    }

    /// What the `connect_line` fuzz target checks, for the inputs kept in
    /// `fuzz/regressions/connect_line/`: a reason on one line, or a line that encodes back.
    fn holds(line: &[u8]) {
        match parse_connect(line) {
            Ok(parsed) => {
                let bytes = parsed.encode();
                let text = bytes.strip_suffix(b"\r\n").expect("ends with CRLF");
                assert_eq!(parse_connect(text), Ok(parsed));
            }
            Err(e) => assert!(!e.reason.contains(['\r', '\n']), "{}", e.reason),
        }
    }

    #[test]
    fn fuzz_regressions_hold() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz/regressions/connect_line");
        for entry in std::fs::read_dir(dir).into_iter().flatten() {
            let path = entry.expect("a directory entry").path();
            holds(&std::fs::read(&path).expect("readable"));
        }
    }

    #[test]
    fn encoded_lines_parse_back() {
        let lines = [
            ConnectLine::V1 { user: b"me".to_vec(), match_id: "elp-tig-2011-09-10".into() },
            ConnectLine::V2 {
                user: b"u 1".to_vec(),
                match_id: "a-b-2020-01-01".into(),
                from: None,
            },
            ConnectLine::V2 {
                user: b"u".to_vec(),
                match_id: "a-b-2020-01-01".into(),
                from: Some(7),
            },
        ];
        for line in lines {
            let bytes = line.encode();
            let text = bytes.strip_suffix(b"\r\n").expect("ends with CRLF");
            assert_eq!(parse_connect(text), Ok(line));
        }
    }
}
