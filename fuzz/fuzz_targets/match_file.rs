//! Match files (SPEC 6), Erlang terms or JSON: any text reads to a match or to an error, never
//! a panic, a stack overflow or a hang. Input that is not UTF-8 is read lossily, as a file with
//! a stray byte would be.
#![no_main]

use libfuzzer_sys::fuzz_target;
use matchstream_client::matchfile;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(m) = matchfile::parse(&text) {
        // What replay sends: the create body and the events, as JSON.
        let _ = m.create_body().to_string();
        for event in m.events() {
            let _ = event.to_string();
        }
    }
});
