//! The viewer's connect line (SPEC 4): any bytes parse to a line or to a one-line reason in the
//! version the line announced, and a parsed line encodes back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use matchstream_proto::{parse_connect, sniff_version, ConnectLine};

fuzz_target!(|data: &[u8]| {
    match parse_connect(data) {
        Ok(line) => {
            let version = match &line {
                ConnectLine::V1 { .. } => 1,
                ConnectLine::V2 { .. } => 2,
            };
            assert_eq!(sniff_version(data), Some(version));
            let encoded = line.encode();
            let text = encoded.strip_suffix(b"\r\n").expect("an encoded line ends with CRLF");
            assert!(!text.contains(&b'\n') && !text.contains(&b'\r'), "one line");
            assert_eq!(parse_connect(text), Ok(line), "the encoded line parses back");
        }
        Err(e) => {
            assert!(!e.reason.contains(['\r', '\n']), "a reason is one line: {:?}", e.reason);
            assert!(e.version.is_none() || e.version == sniff_version(data));
        }
    }
});
