#![no_main]
//! JSON Loki push bodies.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = osprey_protocol::push_json::decode(data);
});
