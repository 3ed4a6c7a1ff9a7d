//! Event JSON (the watcher API's body: one event or a list) applied to a started match by the
//! server's state rules, with the invariants of `matchstream::fuzzing::apply_events_json`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = matchstream::fuzzing::apply_events_json(data);
});
