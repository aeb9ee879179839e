#![no_main]
//! PromQL series selectors, as `match[]` arrives at `/federate`.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = osprey_collector::selector::parse_series_selector(s);
    }
});
