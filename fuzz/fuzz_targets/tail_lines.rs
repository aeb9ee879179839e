#![no_main]
//! Bytes of a log file through the tailer's line handling: splitting (LF/CRLF, a small line cap,
//! arbitrary chunking), lossy UTF-8, multiline joining, and the json/logfmt/timestamp parsers.
use libfuzzer_sys::fuzz_target;
use osprey_agent::tail::{lines, multiline, parse};
use osprey_config::agent::{Multiline, MultilinePreset, TimestampFormat};
use std::time::Instant;

fuzz_target!(|data: &[u8]| {
    let Some((&cut, data)) = data.split_first() else { return };
    let mut splitter = lines::LineSplitter::new(64);
    let m = Multiline { preset: MultilinePreset::Java, max_lines: 4, ..Multiline::default() };
    let rule = multiline::Rule::from_config(&m).ok().flatten();
    let mut joiner = multiline::Joiner::new(&m, 64);
    let mut last_end = 0;
    let (a, b) = data.split_at((cut as usize).min(data.len()));
    let mut on_line = |l: lines::Line<'_>| {
        assert!(l.bytes.len() <= 64 && l.end > last_end);
        last_end = l.end;
        let (text, _) = lines::to_text(l.bytes, 64);
        assert!(text.len() <= 64);
        let _ = parse::logfmt_fields(&text, &mut Vec::new());
        let _ = parse::json_fields(&text, &mut Vec::new());
        for f in [TimestampFormat::Rfc3339, TimestampFormat::Clf, TimestampFormat::Unix, TimestampFormat::UnixMs] {
            let _ = parse::parse_timestamp(&text, f);
        }
        if let Some(rule) = &rule {
            joiner.push(rule, text.into_owned(), l.end, l.truncated, Instant::now(), |e| assert!(e.text.len() <= 64));
        }
    };
    splitter.feed(a, 0, &mut on_line);
    splitter.feed(b, a.len() as u64, &mut on_line);
});
