//! A WebSocket client's bytes, cut into pieces as reads bring them, through the server's
//! client-frame reader, with the checks of `matchstream::fuzzing::read_ws_client`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use matchstream::fuzzing;

fuzz_target!(|data: &[u8]| {
    fuzzing::read_ws_client(&fuzzing::chunks(data));
});
