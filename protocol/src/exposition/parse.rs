//! Parsing the Prometheus text exposition format 0.0.4 and OpenMetrics 1.0, zero-copy.
//!
//! [`Parser`] walks a response body line by line and yields [`Entry`] values that borrow from
//! it: metric and label names are slices of the input, label values are slices unless they hold
//! an escape (then [`Cow::Owned`]), and a sample's labels are kept as the raw text between the
//! braces (validated once) and decoded only when [`Sample::labels`] is iterated. Nothing is
//! allocated per sample on the common path; that is what makes scraping cheap.
//!
//! Written by hand because no crate parses both formats correctly and fast (see
//! ARCHITECTURE.md). Semantics follow Prometheus' own scrape parsers where the formats leave
//! room:
//!
//! - Tokens are separated by spaces or tabs; a trailing `\r` before `\n` is ignored.
//! - Label values unescape `\\`, `\"` and `\n`; any other `\x` is kept as written (as
//!   Prometheus does). HELP text unescapes `\\` and `\n` (and `\"` in OpenMetrics).
//! - Values are Go-style floats (`NaN`, `+Inf`, `-Inf`, exponents). Timestamps are integer
//!   milliseconds in 0.0.4 and float seconds in OpenMetrics (converted to milliseconds).
//! - OpenMetrics exemplars (`... # {trace_id="x"} 1 [ts]`) are checked and skipped.
//! - OpenMetrics must end with `# EOF`; nothing may follow it. Blank lines are allowed in 0.0.4
//!   only. Other `#` comment lines are skipped.
//! - A label name repeated in one sample is an error.
//!
//! Every error carries the 1-based line and column (in bytes) of the problem and says what was
//! expected and what was found.

use std::borrow::Cow;
use std::fmt;

/// Which exposition format a body is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `text/plain; version=0.0.4`
    Text,
    /// `application/openmetrics-text; version=1.0.0`
    OpenMetrics,
}

/// `Accept` header a scraper sends: OpenMetrics 1.0 preferred, then 0.0.4 text.
pub const SCRAPE_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

impl Format {
    /// The format a response's `Content-Type` announces; anything but OpenMetrics is text.
    pub fn from_content_type(content_type: &str) -> Format {
        let media = content_type.split(';').next().unwrap_or("").trim();
        if media.eq_ignore_ascii_case("application/openmetrics-text") { Format::OpenMetrics } else { Format::Text }
    }
}

/// A metric family's type as declared by `# TYPE`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
    GaugeHistogram,
    Summary,
    Info,
    StateSet,
    Untyped,
}

impl MetricKind {
    fn parse(s: &str, format: Format) -> Option<MetricKind> {
        Some(match (s, format) {
            ("counter", _) => MetricKind::Counter,
            ("gauge", _) => MetricKind::Gauge,
            ("histogram", _) => MetricKind::Histogram,
            ("summary", _) => MetricKind::Summary,
            ("untyped", Format::Text) | ("unknown", Format::OpenMetrics) => MetricKind::Untyped,
            ("gaugehistogram", Format::OpenMetrics) => MetricKind::GaugeHistogram,
            ("info", Format::OpenMetrics) => MetricKind::Info,
            ("stateset", Format::OpenMetrics) => MetricKind::StateSet,
            _ => return None,
        })
    }

    /// The name used in 0.0.4 `# TYPE` lines (OpenMetrics-only kinds map to `untyped`).
    pub fn as_text_str(self) -> &'static str {
        match self {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Histogram => "histogram",
            MetricKind::Summary => "summary",
            _ => "untyped",
        }
    }
}

/// The first problem found in a body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// 1-based byte column within the line.
    pub column: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "line {}, column {}: {}", self.line, self.column, self.message)
    }
}

impl std::error::Error for ParseError {}

/// One meaningful line of a body.
#[derive(Clone, Debug, PartialEq)]
pub enum Entry<'a> {
    Help { name: &'a str, help: Cow<'a, str> },
    Type { name: &'a str, kind: MetricKind },
    Unit { name: &'a str, unit: &'a str },
    Sample(Sample<'a>),
}

/// One sample, borrowing from the body.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample<'a> {
    pub name: &'a str,
    /// The validated text between `{` and `}` (empty without labels).
    raw_labels: &'a str,
    pub value: f64,
    pub timestamp_ms: Option<i64>,
}

impl<'a> Sample<'a> {
    /// The sample's labels in written order, values unescaped.
    pub fn labels(&self) -> Labels<'a> {
        Labels { rest: self.raw_labels }
    }

    /// True when the sample has no labels.
    pub fn has_labels(&self) -> bool {
        !self.raw_labels.trim_matches(|c| c == ' ' || c == '\t' || c == ',').is_empty()
    }

    /// The raw label text as written, for cheap hashing and comparison (two samples with the
    /// same raw text have the same labels).
    pub fn raw_labels(&self) -> &'a str {
        self.raw_labels
    }
}

/// Iterator over a validated label block.
#[derive(Clone, Debug)]
pub struct Labels<'a> {
    rest: &'a str,
}

impl<'a> Iterator for Labels<'a> {
    type Item = (&'a str, Cow<'a, str>);

    fn next(&mut self) -> Option<Self::Item> {
        let rb = self.rest.as_bytes();
        let mut skip = 0;
        while skip < rb.len() && matches!(rb[skip], b' ' | b'\t' | b',') {
            skip += 1;
        }
        let s = &self.rest[skip..];
        if s.is_empty() {
            self.rest = s;
            return None;
        }
        let b = s.as_bytes();
        let mut i = 0;
        while i < b.len() && is_label_byte(b[i]) {
            i += 1;
        }
        let name = &s[..i];
        // Validated already: blanks, '=', blanks, '"'.
        while i < b.len() && b[i] != b'"' {
            i += 1;
        }
        let (value, used) = scan_quoted(&s[i + 1..]).ok()?;
        self.rest = &s[i + 1 + used..];
        Some((name, value))
    }
}

/// Byte classes, one table lookup per byte on the hot path.
const NAME_START: u8 = 1;
const NAME: u8 = 2;
const LABEL: u8 = 4;
static CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let c = i as u8;
        let alpha = c.is_ascii_alphabetic() || c == b'_';
        let digit = c.is_ascii_digit();
        if alpha || c == b':' {
            t[i] |= NAME_START | NAME;
        }
        if digit {
            t[i] |= NAME;
        }
        if alpha || digit {
            t[i] |= LABEL;
        }
        i += 1;
    }
    t
};

#[inline]
fn is_name_start(b: u8) -> bool {
    CLASS[b as usize] & NAME_START != 0
}

#[inline]
fn is_name_byte(b: u8) -> bool {
    CLASS[b as usize] & NAME != 0
}

#[inline]
fn is_label_byte(b: u8) -> bool {
    CLASS[b as usize] & LABEL != 0
}

fn is_label_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_'
}

fn is_blank(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Scans a quoted value whose opening quote is already consumed. Returns the unescaped value
/// and the bytes used including the closing quote, or the byte offset of the problem.
fn scan_quoted(s: &str) -> Result<(Cow<'_, str>, usize), (usize, &'static str)> {
    let b = s.as_bytes();
    // Label values are short: a plain loop beats memchr3's setup for the first bytes.
    let mut end = 0;
    while end < b.len() && end < 32 && !matches!(b[end], b'"' | b'\\' | b'\n') {
        end += 1;
    }
    let end = if end < 32 || end == b.len() {
        if end == b.len() {
            return Err((b.len(), "expected a closing '\"' before the end of the line"));
        }
        end
    } else {
        match memchr::memchr3(b'"', b'\\', b'\n', &b[end..]) {
            Some(n) => end + n,
            None => return Err((b.len(), "expected a closing '\"' before the end of the line")),
        }
    };
    match b[end] {
        b'"' => return Ok((Cow::Borrowed(&s[..end]), end + 1)),
        b'\n' => return Err((end, "expected a closing '\"' before the end of the line")),
        _ => {}
    }
    let mut out = String::with_capacity(b.len().min(256));
    out.push_str(&s[..end]);
    let mut i = end;
    loop {
        match b.get(i) {
            None | Some(b'\n') => return Err((i, "expected a closing '\"' before the end of the line")),
            Some(b'"') => return Ok((Cow::Owned(out), i + 1)),
            Some(b'\\') => {
                match b.get(i + 1) {
                    Some(b'\\') => out.push('\\'),
                    Some(b'"') => out.push('"'),
                    Some(b'n') => out.push('\n'),
                    None | Some(b'\n') => {
                        return Err((i + 1, "expected an escaped character after '\\'"));
                    }
                    Some(_) => {
                        // Kept as written, like Prometheus. The next char may be multi-byte.
                        out.push('\\');
                        i += 1;
                        continue;
                    }
                }
                i += 2;
            }
            Some(_) => {
                let next = memchr::memchr3(b'"', b'\\', b'\n', &b[i..]).map_or(b.len(), |n| i + n);
                out.push_str(&s[i..next]);
                i = next;
            }
        }
    }
}

/// Parses a Go-style float (`NaN`, `+Inf`, `-Inf`, `1e3`, `.5`).
pub fn parse_float(s: &str) -> Option<f64> {
    let b = s.as_bytes();
    if b.is_empty() || b.len() > 64 {
        return None;
    }
    // Fast path (Clinger): up to 15 significant digits with an optional fraction is an exact
    // integer divided by an exact power of ten, and IEEE division rounds correctly.
    let (neg, digits) = match b[0] {
        b'-' => (true, &b[1..]),
        b'+' => (false, &b[1..]),
        _ => (false, b),
    };
    if !digits.is_empty() && digits.len() <= 16 {
        let mut mantissa: u64 = 0;
        let mut frac_digits: i32 = -1;
        let mut n = 0;
        let mut ok = true;
        for &c in digits {
            match c {
                b'0'..=b'9' => {
                    mantissa = mantissa * 10 + (c - b'0') as u64;
                    n += 1;
                    if frac_digits >= 0 {
                        frac_digits += 1;
                    }
                }
                b'.' if frac_digits < 0 => frac_digits = 0,
                _ => {
                    ok = false;
                    break;
                }
            }
        }
        if ok && n > 0 && n <= 15 {
            const POW10: [f64; 16] =
                [1.0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15];
            let v = mantissa as f64 / POW10[frac_digits.max(0) as usize];
            return Some(if neg { -v } else { v });
        }
    }
    // Rust's parser takes "NaN", "+Inf", "-Inf", "infinity" in any case, like Go's. It does
    // not take Go's hex floats (`0x1p-2`), which no exporter writes.
    s.parse::<f64>().ok()
}

/// A streaming parser over one body. Iterate it; the first `Err` ends the iteration.
pub struct Parser<'a> {
    text: &'a str,
    pos: usize,
    line: usize,
    format: Format,
    done: bool,
    saw_eof: bool,
    /// Where the first invalid UTF-8 byte is, if any: `text` stops at the start of its line.
    bad_utf8: Option<(usize, usize)>,
}

impl<'a> Parser<'a> {
    pub fn new(body: &'a [u8], format: Format) -> Parser<'a> {
        let (text, bad_utf8) = match std::str::from_utf8(body) {
            Ok(t) => (t, None),
            Err(e) => {
                let valid = e.valid_up_to();
                let line_start = memchr::memrchr(b'\n', &body[..valid]).map_or(0, |i| i + 1);
                let line = 1 + memchr::memchr_iter(b'\n', &body[..line_start]).count();
                // SAFETY-free: the prefix up to `valid` is valid UTF-8, so is any prefix ending
                // at a line break inside it.
                let text = std::str::from_utf8(&body[..line_start]).unwrap_or("");
                (text, Some((line, valid - line_start + 1)))
            }
        };
        Parser { text, pos: 0, line: 1, format, done: false, saw_eof: false, bad_utf8 }
    }

    /// The number of the line the next entry starts on.
    pub fn line(&self) -> usize {
        self.line
    }

    fn err(&self, line_start: usize, at: usize, message: String) -> ParseError {
        ParseError { line: self.line, column: at - line_start + 1, message }
    }

    fn finish(&mut self) -> Option<Result<Entry<'a>, ParseError>> {
        self.done = true;
        if let Some((line, column)) = self.bad_utf8 {
            return Some(Err(ParseError { line, column, message: "invalid UTF-8".into() }));
        }
        if self.format == Format::OpenMetrics && !self.saw_eof {
            return Some(Err(ParseError {
                line: self.line,
                column: 1,
                message: "expected \"# EOF\" at the end of an OpenMetrics body".into(),
            }));
        }
        None
    }

    fn parse_line(&mut self, start: usize, end: usize) -> Result<Option<Entry<'a>>, ParseError> {
        let text = self.text;
        let line = &text[start..end];
        let b = line.as_bytes();
        let mut i = 0;
        while i < b.len() && is_blank(b[i]) {
            i += 1;
        }
        if i == b.len() {
            if self.format == Format::OpenMetrics {
                return Err(self.err(start, start, "expected a sample or a comment, found an empty line".into()));
            }
            return Ok(None);
        }
        if b[i] == b'#' {
            return self.parse_comment(start, line, i + 1);
        }
        self.parse_sample(start, line, i).map(|s| Some(Entry::Sample(s)))
    }

    fn parse_comment(&mut self, start: usize, line: &'a str, mut i: usize) -> Result<Option<Entry<'a>>, ParseError> {
        let b = line.as_bytes();
        let blank_from = i;
        while i < b.len() && is_blank(b[i]) {
            i += 1;
        }
        let kw_start = i;
        while i < b.len() && !is_blank(b[i]) {
            i += 1;
        }
        let keyword = &line[kw_start..i];
        if self.format == Format::OpenMetrics && keyword == "EOF" && i == b.len() {
            self.saw_eof = true;
            return Ok(None);
        }
        if (keyword != "HELP" && keyword != "TYPE" && keyword != "UNIT") || i == kw_start || blank_from == kw_start {
            // A free comment (0.0.4 allows any; so does OpenMetrics in practice).
            return Ok(None);
        }
        if keyword == "UNIT" && self.format == Format::Text {
            return Ok(None);
        }
        while i < b.len() && is_blank(b[i]) {
            i += 1;
        }
        let name_start = i;
        if i >= b.len() || !is_name_start(b[i]) {
            return Err(self.err(start, start + i, format!("expected a metric name after # {keyword}")));
        }
        while i < b.len() && is_name_byte(b[i]) {
            i += 1;
        }
        let name = &line[name_start..i];
        if i < b.len() && !is_blank(b[i]) {
            return Err(self.err(
                start,
                start + i,
                format!("expected a space after the metric name, found {:?}", char_at(line, i)),
            ));
        }
        while i < b.len() && is_blank(b[i]) {
            i += 1;
        }
        let rest = &line[i..];
        match keyword {
            "HELP" => Ok(Some(Entry::Help { name, help: unescape_help(rest, self.format) })),
            "TYPE" => {
                let word = rest.trim_end_matches([' ', '\t']);
                match MetricKind::parse(word, self.format) {
                    Some(kind) => Ok(Some(Entry::Type { name, kind })),
                    None => Err(self.err(
                        start,
                        start + i,
                        format!(
                            "expected a metric type ({}), found {word:?}",
                            if self.format == Format::Text {
                                "counter, gauge, histogram, summary or untyped"
                            } else {
                                "counter, gauge, histogram, gaugehistogram, summary, info, stateset or unknown"
                            }
                        ),
                    )),
                }
            }
            _ => Ok(Some(Entry::Unit { name, unit: rest.trim_end_matches([' ', '\t']) })),
        }
    }

    fn parse_sample(&mut self, start: usize, line: &'a str, mut i: usize) -> Result<Sample<'a>, ParseError> {
        let b = line.as_bytes();
        let name_start = i;
        if !is_name_start(b[i]) {
            return Err(self.err(start, start + i, format!("expected a metric name, found {:?}", char_at(line, i))));
        }
        while i < b.len() && is_name_byte(b[i]) {
            i += 1;
        }
        let name = &line[name_start..i];
        let mut raw_labels = "";
        if i < b.len() && b[i] == b'{' {
            let labels_start = i + 1;
            i = self.check_labels(start, line, labels_start)?;
            raw_labels = &line[labels_start..i - 1];
        }
        let before_value = i;
        while i < b.len() && is_blank(b[i]) {
            i += 1;
        }
        if i == before_value && i < b.len() && b[before_value - 1] != b'}' {
            return Err(self.err(
                start,
                start + i,
                format!("expected a space, '{{' or a value after the metric name, found {:?}", char_at(line, i)),
            ));
        }
        let value_start = i;
        while i < b.len() && !is_blank(b[i]) {
            i += 1;
        }
        if value_start == i {
            return Err(self.err(start, start + i, format!("expected a value after {name}")));
        }
        let value_text = &line[value_start..i];
        let value = parse_float(value_text).ok_or_else(|| {
            self.err(start, start + value_start, format!("expected a number as the value, found {value_text:?}"))
        })?;
        while i < b.len() && is_blank(b[i]) {
            i += 1;
        }
        let mut timestamp_ms = None;
        if i < b.len() && b[i] != b'#' {
            let ts_start = i;
            while i < b.len() && !is_blank(b[i]) {
                i += 1;
            }
            let ts = &line[ts_start..i];
            timestamp_ms = Some(self.parse_timestamp(start, ts_start, ts)?);
            while i < b.len() && is_blank(b[i]) {
                i += 1;
            }
        }
        if i < b.len() {
            if b[i] == b'#' && self.format == Format::OpenMetrics {
                self.check_exemplar(start, line, i + 1)?;
            } else {
                return Err(self.err(
                    start,
                    start + i,
                    format!("expected the end of the line after the sample, found {:?}", char_at(line, i)),
                ));
            }
        }
        Ok(Sample { name, raw_labels, value, timestamp_ms })
    }

    fn parse_timestamp(&self, start: usize, at: usize, ts: &str) -> Result<i64, ParseError> {
        match self.format {
            Format::Text => ts.parse::<i64>().map_err(|_| {
                self.err(start, start + at, format!("expected an integer timestamp in milliseconds, found {ts:?}"))
            }),
            Format::OpenMetrics => match parse_float(ts) {
                Some(v) if v.is_finite() && v.abs() < 9.2e15 => Ok((v * 1000.0).round() as i64),
                _ => Err(self.err(start, start + at, format!("expected a timestamp in seconds, found {ts:?}"))),
            },
        }
    }

    /// Validates `{...}` starting after `{`; returns the index just past `}`.
    fn check_labels(&self, start: usize, line: &'a str, mut i: usize) -> Result<usize, ParseError> {
        let b = line.as_bytes();
        // Names seen so far in this block, to refuse duplicates without allocating for the
        // common case of a handful of labels.
        let mut seen: [&str; 16] = [""; 16];
        let mut seen_n = 0usize;
        let mut extra: Vec<&str> = Vec::new();
        loop {
            while i < b.len() && is_blank(b[i]) {
                i += 1;
            }
            match b.get(i) {
                Some(b'}') => return Ok(i + 1),
                None => return Err(self.err(start, start + i, "expected '}' before the end of the line".into())),
                Some(&c) if !is_label_start(c) => {
                    return Err(self.err(
                        start,
                        start + i,
                        format!("expected a label name or '}}', found {:?}", char_at(line, i)),
                    ));
                }
                _ => {}
            }
            let name_start = i;
            while i < b.len() && is_label_byte(b[i]) {
                i += 1;
            }
            let name = &line[name_start..i];
            if seen[..seen_n].contains(&name) || extra.contains(&name) {
                return Err(self.err(start, start + name_start, format!("label {name:?} appears twice in one sample")));
            }
            if seen_n < seen.len() {
                seen[seen_n] = name;
                seen_n += 1;
            } else {
                extra.push(name);
            }
            while i < b.len() && is_blank(b[i]) {
                i += 1;
            }
            if b.get(i) != Some(&b'=') {
                return Err(self.err(
                    start,
                    start + i,
                    format!("expected '=' after label name {name:?}, found {}", found(line, i)),
                ));
            }
            i += 1;
            while i < b.len() && is_blank(b[i]) {
                i += 1;
            }
            if b.get(i) != Some(&b'"') {
                return Err(self.err(
                    start,
                    start + i,
                    format!("expected '\"' to open the value of label {name:?}, found {}", found(line, i)),
                ));
            }
            i += 1;
            match scan_quoted(&line[i..]) {
                Ok((_, used)) => i += used,
                Err((at, msg)) => return Err(self.err(start, start + i + at, msg.into())),
            }
            while i < b.len() && is_blank(b[i]) {
                i += 1;
            }
            match b.get(i) {
                Some(b',') => i += 1,
                Some(b'}') => return Ok(i + 1),
                _ => {
                    return Err(self.err(
                        start,
                        start + i,
                        format!("expected ',' or '}}' after the value of label {name:?}, found {}", found(line, i)),
                    ));
                }
            }
        }
    }

    fn check_exemplar(&self, start: usize, line: &'a str, mut i: usize) -> Result<(), ParseError> {
        let b = line.as_bytes();
        while i < b.len() && is_blank(b[i]) {
            i += 1;
        }
        if b.get(i) != Some(&b'{') {
            return Err(self.err(
                start,
                start + i,
                format!("expected '{{' to start an exemplar, found {}", found(line, i)),
            ));
        }
        i = self.check_labels(start, line, i + 1)?;
        while i < b.len() && is_blank(b[i]) {
            i += 1;
        }
        let v_start = i;
        while i < b.len() && !is_blank(b[i]) {
            i += 1;
        }
        if parse_float(&line[v_start..i]).is_none() {
            return Err(self.err(
                start,
                start + v_start,
                format!("expected the exemplar's value, found {}", found(line, v_start)),
            ));
        }
        while i < b.len() && is_blank(b[i]) {
            i += 1;
        }
        if i < b.len() {
            let ts_start = i;
            while i < b.len() && !is_blank(b[i]) {
                i += 1;
            }
            self.parse_timestamp(start, ts_start, &line[ts_start..i])?;
            while i < b.len() && is_blank(b[i]) {
                i += 1;
            }
            if i < b.len() {
                return Err(self.err(
                    start,
                    start + i,
                    format!("expected the end of the line after the exemplar, found {}", found(line, i)),
                ));
            }
        }
        Ok(())
    }
}

fn char_at(line: &str, i: usize) -> char {
    line[i..].chars().next().unwrap_or(' ')
}

fn found(line: &str, i: usize) -> String {
    match line.get(i..).and_then(|s| s.chars().next()) {
        Some(c) => format!("{c:?}"),
        None => "the end of the line".into(),
    }
}

fn unescape_help(s: &str, format: Format) -> Cow<'_, str> {
    if !s.contains('\\') {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('n') => out.push('\n'),
            Some('"') if format == Format::OpenMetrics => out.push('"'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    Cow::Owned(out)
}

impl<'a> Iterator for Parser<'a> {
    type Item = Result<Entry<'a>, ParseError>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            if self.pos >= self.text.len() {
                return self.finish();
            }
            let start = self.pos;
            let rest = &self.text.as_bytes()[start..];
            let (end, next) = match memchr::memchr(b'\n', rest) {
                Some(n) => (start + n, start + n + 1),
                None => (self.text.len(), self.text.len()),
            };
            let end = if end > start && self.text.as_bytes()[end - 1] == b'\r' { end - 1 } else { end };
            if self.saw_eof {
                self.done = true;
                return Some(Err(self.err(start, start, "expected nothing after \"# EOF\"".into())));
            }
            let result = self.parse_line(start, end);
            match result {
                Ok(Some(entry)) => {
                    self.pos = next;
                    self.line += 1;
                    return Some(Ok(entry));
                }
                Ok(None) => {
                    self.pos = next;
                    self.line += 1;
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Owned = (String, Vec<(String, String)>, f64, Option<i64>);

    fn samples(body: &str, format: Format) -> Result<Vec<Owned>, ParseError> {
        let mut out = Vec::new();
        for e in Parser::new(body.as_bytes(), format) {
            if let Entry::Sample(s) = e? {
                out.push((
                    s.name.to_string(),
                    s.labels().map(|(k, v)| (k.to_string(), v.into_owned())).collect(),
                    s.value,
                    s.timestamp_ms,
                ));
            }
        }
        Ok(out)
    }

    fn err(body: &str, format: Format) -> ParseError {
        samples(body, format).unwrap_err()
    }

    #[test]
    fn parses_node_exporter_style_text() {
        let body = "# HELP node_cpu_seconds_total Seconds the CPUs spent in each mode.\n# TYPE node_cpu_seconds_total counter\nnode_cpu_seconds_total{cpu=\"0\",mode=\"idle\"} 1234.5\nnode_load1 0.42\n\n# just a comment\nup{job=\"a\",} 1 1700000000000\n";
        let got = samples(body, Format::Text).unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].1, vec![("cpu".into(), "0".into()), ("mode".into(), "idle".into())]);
        assert_eq!(got[0].2, 1234.5);
        assert_eq!(got[1], ("node_load1".into(), vec![], 0.42, None));
        assert_eq!(got[2].3, Some(1_700_000_000_000));
        let entries: Vec<_> = Parser::new(body.as_bytes(), Format::Text).collect::<Result<_, _>>().unwrap();
        assert_eq!(
            entries[0],
            Entry::Help { name: "node_cpu_seconds_total", help: Cow::Borrowed("Seconds the CPUs spent in each mode.") }
        );
        assert_eq!(entries[1], Entry::Type { name: "node_cpu_seconds_total", kind: MetricKind::Counter });
    }

    #[test]
    fn unescapes_label_values_and_help() {
        let body = "# HELP m a\\\\b\\nc\nm{path=\"a,b=c\",q=\"x\\\"y}\",n=\"l1\\nl2\",w=\"\\\\d\\q\"} 1\n";
        let got = samples(body, Format::Text).unwrap();
        assert_eq!(
            got[0].1,
            vec![
                ("path".into(), "a,b=c".into()),
                ("q".into(), "x\"y}".into()),
                ("n".into(), "l1\nl2".into()),
                ("w".into(), "\\d\\q".into())
            ]
        );
        let help = Parser::new(body.as_bytes(), Format::Text).next().unwrap().unwrap();
        assert_eq!(help, Entry::Help { name: "m", help: Cow::Owned("a\\b\nc".into()) });
    }

    #[test]
    fn special_values_and_tabs() {
        let got = samples("a NaN\nb +Inf\nc\t-Inf\nd 1e-3\ne -0.5  17\n", Format::Text).unwrap();
        assert!(got[0].2.is_nan());
        assert_eq!(got[1].2, f64::INFINITY);
        assert_eq!(got[2].2, f64::NEG_INFINITY);
        assert_eq!(got[3].2, 0.001);
        assert_eq!(got[4].3, Some(17));
    }

    #[test]
    fn openmetrics_with_exemplars_units_and_eof() {
        let body = "# TYPE foo_seconds histogram\n# UNIT foo_seconds seconds\n# HELP foo_seconds A \\\"quoted\\\" help.\nfoo_seconds_bucket{le=\"0.1\"} 3 # {trace_id=\"abc\"} 0.05 1700000000.123\nfoo_seconds_bucket{le=\"+Inf\"} 5\nfoo_seconds_count 5 1700000000.5\nfoo_seconds_sum 1.5\n# EOF\n";
        let got = samples(body, Format::OpenMetrics).unwrap();
        assert_eq!(got.len(), 4);
        assert_eq!(got[0].2, 3.0);
        assert_eq!(got[2].3, Some(1_700_000_000_500));
        let entries: Vec<_> = Parser::new(body.as_bytes(), Format::OpenMetrics).collect::<Result<_, _>>().unwrap();
        assert!(entries.contains(&Entry::Unit { name: "foo_seconds", unit: "seconds" }));
        assert!(entries.contains(&Entry::Help { name: "foo_seconds", help: Cow::Owned("A \"quoted\" help.".into()) }));
    }

    #[test]
    fn openmetrics_requires_eof_and_nothing_after() {
        let e = err("a 1\n", Format::OpenMetrics);
        assert!(e.message.contains("# EOF"), "{e}");
        let e = err("a 1\n# EOF\nb 2\n", Format::OpenMetrics);
        assert_eq!((e.line, e.column), (3, 1));
        let e = err("a 1\n\n# EOF\n", Format::OpenMetrics);
        assert_eq!(e.line, 2);
        samples("a 1\n# EOF", Format::OpenMetrics).unwrap();
    }

    #[test]
    fn errors_name_line_column_and_expectation() {
        let e = err("ok 1\nok 2\nbad{a=\"b\" c=\"d\"} 1\n", Format::Text);
        assert_eq!((e.line, e.column), (3, 11));
        assert!(e.message.contains("expected ',' or '}'"), "{e}");
        let e = err("m{a=\"b} 1\n", Format::Text);
        assert!(e.message.contains("closing"), "{e}");
        let e = err("m 1x\n", Format::Text);
        assert_eq!((e.line, e.column), (1, 3));
        assert!(e.message.contains("\"1x\""), "{e}");
        let e = err("m{a=\"1\",a=\"2\"} 1\n", Format::Text);
        assert!(e.message.contains("twice"), "{e}");
        let e = err("# TYPE m flavour\n", Format::Text);
        assert!(e.message.contains("flavour"), "{e}");
        let e = err("m 1 1.5\n", Format::Text);
        assert!(e.message.contains("integer timestamp"), "{e}");
        let e = err("9m 1\n", Format::Text);
        assert!(e.message.contains("metric name"), "{e}");
        let e = err("m 1 2 3\n", Format::Text);
        assert_eq!(e.column, 7);
    }

    #[test]
    fn invalid_utf8_is_reported_where_it_is() {
        let mut body = b"a 1\nb{x=\"".to_vec();
        body.push(0xff);
        body.extend_from_slice(b"\"} 1\n");
        let e = Parser::new(&body, Format::Text).find_map(Result::err).unwrap();
        assert_eq!((e.line, e.column, e.message.as_str()), (2, 6, "invalid UTF-8"));
    }

    #[test]
    fn content_type_picks_the_format() {
        assert_eq!(
            Format::from_content_type("application/openmetrics-text; version=1.0.0; charset=utf-8"),
            Format::OpenMetrics
        );
        assert_eq!(Format::from_content_type("text/plain; version=0.0.4"), Format::Text);
        assert_eq!(Format::from_content_type(""), Format::Text);
    }
}

#[cfg(test)]
mod float_tests {
    use super::parse_float;
    use proptest::prelude::*;

    proptest! {
        /// The fast path agrees with Rust's correctly rounded parser on every decimal it takes.
        #[test]
        fn fast_path_is_exact(int in 0u64..1_000_000_000_000_000, frac in 0usize..15, neg in any::<bool>()) {
            let digits = int.to_string();
            let frac = frac.min(digits.len());
            let (a, b) = digits.split_at(digits.len() - frac);
            let text = format!("{}{}{}{}", if neg { "-" } else { "" }, if a.is_empty() { "0" } else { a }, if frac > 0 { "." } else { "" }, b);
            prop_assert_eq!(parse_float(&text).map(f64::to_bits), text.parse::<f64>().ok().map(f64::to_bits), "{}", text);
        }
    }

    #[test]
    fn odd_forms() {
        for s in ["1.", ".5", "-.5", "+3", "1e3", "NaN", "+Inf", "-Inf", "0.000001", "123456789012345678"] {
            assert_eq!(parse_float(s).map(f64::to_bits), s.parse::<f64>().ok().map(f64::to_bits), "{s}");
        }
        for s in ["", ".", "-", "1..2", "1.2.3", "abc", "0x10"] {
            assert_eq!(parse_float(s), None, "{s:?}");
        }
    }
}
