#![no_main]
//! Scraped exposition bodies (text 0.0.4 and OpenMetrics 1.0), as the agent's scraper reads
//! them: any bytes must give entries or a positioned error, never a panic or a hang.
use libfuzzer_sys::fuzz_target;
use osprey_protocol::exposition::{Entry, Format, Parser};

fuzz_target!(|data: &[u8]| {
    for format in [Format::Text, Format::OpenMetrics] {
        for entry in Parser::new(data, format) {
            match entry {
                Ok(Entry::Sample(s)) => {
                    for (name, value) in s.labels() {
                        assert!(!name.is_empty());
                        let _ = value.len();
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    assert!(e.line >= 1 && e.column >= 1);
                }
            }
        }
    }
});
