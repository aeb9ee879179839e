#![no_main]
//! LogQL queries, as `query` parameters arrive.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = osprey_collector::logql::parse(s);
    }
});
