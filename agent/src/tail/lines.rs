//! Splitting bytes into lines: LF or CRLF, a cap on line length, and the file offset at which
//! each line ends (what a checkpoint records).
//!
//! A line longer than `max_line_bytes` keeps its first `max_line_bytes` and the rest is skipped
//! up to the newline, so the line still ends at its real offset and a restart never resumes in
//! the middle of it. Memory per file is bounded by `max_line_bytes`, whatever the input (a file
//! with no newline at all holds `max_line_bytes` and reads on).

use std::borrow::Cow;

/// One complete line handed out by [`LineSplitter::feed`].
pub struct Line<'a> {
    /// Without the `\n` (and without a `\r` before it).
    pub bytes: &'a [u8],
    /// File offset just past the line's newline.
    pub end: u64,
    /// The line was longer than the cap and was cut.
    pub truncated: bool,
    /// Where `bytes` starts in the data given to [`LineSplitter::feed`], when it is a slice of
    /// it (not a line joined from earlier data): lets the caller reuse a check of the whole
    /// chunk (UTF-8) instead of one per line.
    pub at: Option<usize>,
}

#[derive(Debug)]
pub struct LineSplitter {
    partial: Vec<u8>,
    /// The current line overflowed: bytes are skipped until its newline.
    overflow: bool,
    max: usize,
}

impl LineSplitter {
    pub fn new(max_line_bytes: usize) -> Self {
        LineSplitter { partial: Vec::new(), overflow: false, max: max_line_bytes.max(1) }
    }

    /// Bytes held for a line whose newline has not been read yet.
    pub fn pending(&self) -> usize {
        self.partial.len()
    }

    /// Forgets any unfinished line (after a truncation the bytes belong to a file that is gone).
    pub fn reset(&mut self) {
        self.partial.clear();
        self.partial.shrink_to(4096);
        self.overflow = false;
    }

    /// Splits `data`, which starts at file offset `start`, calling `emit` for each complete line.
    pub fn feed(&mut self, data: &[u8], start: u64, mut emit: impl FnMut(Line<'_>)) {
        let mut from = 0;
        for nl in memchr::memchr_iter(b'\n', data) {
            let end = start + nl as u64 + 1;
            if self.partial.is_empty() && !self.overflow {
                let piece = &data[from..nl];
                let (bytes, truncated) = cap(strip_cr(piece), self.max);
                emit(Line { bytes, end, truncated, at: Some(from) });
            } else {
                self.append(&data[from..nl]);
                let truncated = self.overflow;
                // A CR that was the last byte kept before the newline is the CRLF's.
                let (bytes, cut) = cap(strip_cr(&self.partial), self.max);
                emit(Line { bytes, end, truncated: truncated || cut, at: None });
                self.partial.clear();
                if self.partial.capacity() > self.max.min(1 << 20) {
                    self.partial.shrink_to(4096);
                }
                self.overflow = false;
            }
            from = nl + 1;
        }
        self.append(&data[from..]);
    }

    /// Emits the unfinished line as complete (a rotated-away file that ended without newline).
    pub fn flush(&mut self, end: u64, mut emit: impl FnMut(Line<'_>)) {
        if self.partial.is_empty() && !self.overflow {
            return;
        }
        let truncated = self.overflow;
        let (bytes, cut) = cap(strip_cr(&self.partial), self.max);
        emit(Line { bytes, end, truncated: truncated || cut, at: None });
        self.partial.clear();
        self.overflow = false;
    }

    fn append(&mut self, piece: &[u8]) {
        let room = (self.max + 1).saturating_sub(self.partial.len());
        // One byte beyond the cap is kept so a CR that turns out to end a CRLF line at exactly the
        // cap is not mistaken for an overflow.
        if piece.len() > room {
            self.partial.extend_from_slice(&piece[..room]);
            self.overflow = true;
        } else {
            self.partial.extend_from_slice(piece);
        }
    }
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn cap(line: &[u8], max: usize) -> (&[u8], bool) {
    if line.len() > max { (&line[..max], true) } else { (line, false) }
}

/// The longest valid UTF-8 prefix of `chunk` (all of it, usually), checked at SIMD speed: lines
/// inside it need no check of their own (see [`Line::at`]).
pub fn valid_prefix(chunk: &[u8]) -> &str {
    match simdutf8::compat::from_utf8(chunk) {
        Ok(s) => s,
        // Cannot fail: the prefix was just found valid.
        Err(e) => std::str::from_utf8(&chunk[..e.valid_up_to()]).unwrap_or(""),
    }
}

/// Text of a line: valid UTF-8 is borrowed as is (the common case costs no copy); anything
/// else has each invalid sequence replaced by U+FFFD (returns `true` then). The result is cut
/// back to at most `max` bytes on a character boundary, since replacement characters can make
/// it longer than the raw bytes.
pub fn to_text(bytes: &[u8], max: usize) -> (Cow<'_, str>, bool) {
    match std::str::from_utf8(bytes) {
        Ok(s) => (Cow::Borrowed(s), false),
        Err(_) => {
            let mut s = String::from_utf8_lossy(bytes).into_owned();
            if s.len() > max {
                let mut cut = max;
                while !s.is_char_boundary(cut) {
                    cut -= 1;
                }
                s.truncate(cut);
            }
            (Cow::Owned(s), true)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn split(max: usize, chunks: &[&[u8]]) -> Vec<(Vec<u8>, u64, bool)> {
        let mut s = LineSplitter::new(max);
        let mut out = Vec::new();
        let mut off = 0u64;
        for c in chunks {
            s.feed(c, off, |l| out.push((l.bytes.to_vec(), l.end, l.truncated)));
            off += c.len() as u64;
        }
        out
    }

    #[test]
    fn lf_crlf_partials_and_offsets() {
        let out = split(100, &[b"a\r\nb\nc", b"d\n"]);
        assert_eq!(out, vec![(b"a".to_vec(), 3, false), (b"b".to_vec(), 5, false), (b"cd".to_vec(), 8, false)]);
    }

    #[test]
    fn long_lines_are_cut_and_end_at_their_newline() {
        let out = split(4, &[b"abcdefgh", b"ij\nxy\n"]);
        assert_eq!(out, vec![(b"abcd".to_vec(), 11, true), (b"xy".to_vec(), 14, false)]);
        let out = split(4, &[b"abcdefgh\n"]);
        assert_eq!(out, vec![(b"abcd".to_vec(), 9, true)]);
        // A CRLF line of exactly the cap is not truncated, even when the CR arrives alone.
        let out = split(4, &[b"abcd\r", b"\n"]);
        assert_eq!(out, vec![(b"abcd".to_vec(), 6, false)]);
    }

    #[test]
    fn invalid_utf8_is_replaced_within_the_cap() {
        let (s, bad) = to_text(b"ok \xff\xfe", 100);
        assert!(bad);
        assert_eq!(s, "ok \u{fffd}\u{fffd}");
        let (s, bad) = to_text(b"\xff\xff\xff\xff", 5);
        assert!(bad);
        assert!(s.len() <= 5 && s.starts_with('\u{fffd}'));
    }

    proptest! {
        /// A line inside the chunk's valid UTF-8 prefix gets the same text from the prefix as
        /// from checking it alone; `at` points at its bytes in the chunk.
        #[test]
        fn chunk_check_agrees_with_the_line_check(data in proptest::collection::vec(prop_oneof![Just(b'\n'), Just(b'\r'), Just(0xc3u8), Just(0xa9u8), any::<u8>(), 0x20u8..0x7f], 0..300),
                                                  max in 1usize..40) {
            let valid = valid_prefix(&data);
            prop_assert_eq!(Some(valid), std::str::from_utf8(&data[..valid.len()]).ok());
            let mut s = LineSplitter::new(max);
            s.feed(&data, 0, |l| {
                if let Some(at) = l.at {
                    assert_eq!(&data[at..at + l.bytes.len()], l.bytes);
                    if let Some(fast) = valid.get(at..at + l.bytes.len()) {
                        assert_eq!(to_text(l.bytes, max), (Cow::Borrowed(fast), false));
                    }
                }
            });
        }

        /// However the bytes are chunked, the lines and their end offsets are the same, no line
        /// exceeds the cap, and every newline ends exactly one line.
        #[test]
        fn chunking_does_not_matter(data in proptest::collection::vec(prop_oneof![Just(b'\n'), Just(b'\r'), any::<u8>()], 0..400),
                                    cuts in proptest::collection::vec(0usize..400, 0..6), max in 1usize..40) {
            let whole = split(max, &[&data]);
            let mut points: Vec<usize> = cuts.into_iter().map(|c| c.min(data.len())).collect();
            points.sort();
            let mut chunks: Vec<&[u8]> = Vec::new();
            let mut prev = 0;
            for p in points { chunks.push(&data[prev..p]); prev = p; }
            chunks.push(&data[prev..]);
            let pieces = split(max, &chunks);
            prop_assert_eq!(&whole, &pieces);
            prop_assert_eq!(whole.len(), data.iter().filter(|b| **b == b'\n').count());
            for (line, _, _) in &whole { prop_assert!(line.len() <= max); }
        }
    }
}
