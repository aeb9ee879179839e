#![no_main]
//! Stream label sets in Loki's text form (`StreamAdapter.labels`); parse then re-parse the
//! canonical form, which must give the same labels.
use libfuzzer_sys::fuzz_target;
use osprey_protocol::loki_labels;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data)
        && let Ok(labels) = loki_labels::parse(s)
    {
        let again = loki_labels::parse(&loki_labels::format(&labels)).expect("canonical form parses");
        assert_eq!(again, labels);
    }
});
