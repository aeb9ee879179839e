//! What happens to a line between the file and the batch: keep/drop filters, field extraction
//! (JSON, logfmt, regex), labels from an allow-list, structured metadata, and the timestamp.
//!
//! Only fields the operator lists become labels, so a field with a million values (a request
//! id) cannot explode the number of streams; the rest travel as structured metadata (bounded
//! per line) or stay only in the line. A line that does not parse is shipped unchanged and
//! counted; a timestamp that does not parse falls back to the read time and is counted.

use osprey_config::agent::{FileSource, ParseFormat, TimestampFormat};
use regex::Regex;

/// At most this many structured-metadata pairs per line; further fields stay in the line only.
pub const MAX_METADATA_FIELDS: usize = 32;

/// A source's compiled rules.
#[derive(Debug)]
pub struct Rules {
    keep: Option<Regex>,
    drop: Option<Regex>,
    format: ParseFormat,
    regex: Option<Regex>,
    /// Label names, in the order their values are looked up.
    pub labels: Vec<String>,
    metadata: bool,
    timestamp_field: String,
    timestamp_format: TimestampFormat,
}

fn optional(re: &str, key: &str) -> anyhow::Result<Option<Regex>> {
    if re.is_empty() {
        return Ok(None);
    }
    Regex::new(re).map(Some).map_err(|e| anyhow::anyhow!("invalid regex in {key} ({re:?}): {e}"))
}

/// What the rules made of one line.
#[derive(Debug, Default, PartialEq)]
pub struct Parsed {
    /// Values of [`Rules::labels`], in order (`None`: the field was absent).
    pub label_values: Vec<Option<String>>,
    pub metadata: Vec<(String, String)>,
    pub ts: Option<i64>,
    /// The line was meant to be parsed and was not.
    pub parse_failed: bool,
    /// A timestamp field was present but did not parse.
    pub ts_failed: bool,
}

impl Rules {
    pub fn new(src: &FileSource) -> anyhow::Result<Self> {
        let p = &src.parse;
        Ok(Rules {
            keep: optional(&src.keep_lines, "keep_lines")?,
            drop: optional(&src.drop_lines, "drop_lines")?,
            format: p.format,
            regex: if p.format == ParseFormat::Regex { optional(&p.regex, "parse.regex")? } else { None },
            labels: p.labels.clone(),
            metadata: p.structured_metadata,
            timestamp_field: p.timestamp_field.clone(),
            timestamp_format: p.timestamp_format,
        })
    }

    /// Whether the line passes the keep/drop filters.
    pub fn keeps(&self, line: &str) -> bool {
        self.keep.as_ref().is_none_or(|re| re.is_match(line)) && !self.drop.as_ref().is_some_and(|re| re.is_match(line))
    }

    pub fn parses(&self) -> bool {
        self.format != ParseFormat::None
    }

    /// Extracts fields from `line`. Call only when [`Rules::parses`].
    pub fn parse(&self, line: &str) -> Parsed {
        let mut fields: Vec<(String, String)> = Vec::new();
        let ok = match self.format {
            ParseFormat::None => return Parsed::default(),
            ParseFormat::Json => json_fields(line, &mut fields),
            ParseFormat::Logfmt => logfmt_fields(line, &mut fields),
            ParseFormat::Regex => match &self.regex {
                Some(re) => match re.captures(line) {
                    Some(caps) => {
                        for name in re.capture_names().flatten() {
                            if let Some(m) = caps.name(name) {
                                fields.push((name.to_string(), m.as_str().to_string()));
                            }
                        }
                        true
                    }
                    None => false,
                },
                None => false,
            },
        };
        let mut out = Parsed { parse_failed: !ok, label_values: vec![None; self.labels.len()], ..Parsed::default() };
        for (k, v) in fields {
            if let Some(i) = self.labels.iter().position(|l| *l == k) {
                out.label_values[i] = Some(v);
                continue;
            }
            if !self.timestamp_field.is_empty() && k == self.timestamp_field {
                match parse_timestamp(&v, self.timestamp_format) {
                    Some(ts) => out.ts = Some(ts),
                    None => out.ts_failed = true,
                }
                continue;
            }
            if self.metadata && out.metadata.len() < MAX_METADATA_FIELDS {
                out.metadata.push((metadata_name(k), v));
            }
        }
        out
    }
}

/// Structured metadata names follow label-name rules; other characters become `_`.
fn metadata_name(mut k: String) -> String {
    let valid = |i: usize, c: char| c.is_ascii_alphabetic() || c == '_' || (i > 0 && c.is_ascii_digit());
    if k.chars().enumerate().all(|(i, c)| valid(i, c)) && !k.is_empty() {
        return k;
    }
    let mut s: String = k.drain(..).enumerate().map(|(i, c)| if valid(i, c) { c } else { '_' }).collect();
    if s.is_empty() {
        s.push('_');
    }
    s
}

/// Top-level scalar fields of a JSON object. Nested objects and arrays stay in the line only.
pub fn json_fields(line: &str, out: &mut Vec<(String, String)>) -> bool {
    let Ok(map) = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(line) else { return false };
    for (k, v) in map {
        let v = match v {
            serde_json::Value::String(s) => s,
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::Bool(b) => b.to_string(),
            _ => continue,
        };
        out.push((k, v));
    }
    true
}

/// logfmt: `key=value key="quoted \"value\"" bare`. A bare key has an empty value. Returns false
/// when the line has no `key=` pair at all or a quote is not closed.
pub fn logfmt_fields(line: &str, out: &mut Vec<(String, String)>) -> bool {
    let b = line.as_bytes();
    let mut i = 0;
    let mut pairs = 0;
    while i < b.len() {
        while i < b.len() && b[i] == b' ' || i < b.len() && b[i] == b'\t' {
            i += 1;
        }
        if i >= b.len() {
            break;
        }
        let ks = i;
        while i < b.len() && b[i] != b'=' && b[i] != b' ' && b[i] != b'\t' && b[i] != b'"' {
            i += 1;
        }
        if i == ks {
            return false; // a stray quote where a key should be
        }
        let key = &line[ks..i];
        if i >= b.len() || b[i] != b'=' {
            out.push((key.to_string(), String::new()));
            continue;
        }
        i += 1; // '='
        pairs += 1;
        if i < b.len() && b[i] == b'"' {
            i += 1;
            let mut v = String::new();
            let mut closed = false;
            let mut seg = i;
            while i < b.len() {
                match b[i] {
                    b'\\' if i + 1 < b.len() => {
                        v.push_str(&line[seg..i]);
                        v.push(match b[i + 1] {
                            b'n' => '\n',
                            b't' => '\t',
                            b'r' => '\r',
                            c @ (b'"' | b'\\') => c as char,
                            _ => {
                                // Unknown escape: keep it as written.
                                v.push('\\');
                                seg = i + 1;
                                i += 1;
                                continue;
                            }
                        });
                        i += 2;
                        seg = i;
                    }
                    b'"' => {
                        v.push_str(&line[seg..i]);
                        i += 1;
                        closed = true;
                        break;
                    }
                    _ => i += 1,
                }
            }
            if !closed {
                return false;
            }
            out.push((key.to_string(), v));
        } else {
            let vs = i;
            while i < b.len() && b[i] != b' ' && b[i] != b'\t' {
                i += 1;
            }
            out.push((key.to_string(), line[vs..i].to_string()));
        }
    }
    pairs > 0
}

/// Nanoseconds since the epoch, or `None` when `s` is not written in `format`.
pub fn parse_timestamp(s: &str, format: TimestampFormat) -> Option<i64> {
    let s = s.trim();
    let ns: i128 = match format {
        TimestampFormat::Rfc3339 => s.parse::<jiff::Timestamp>().ok()?.as_nanosecond(),
        TimestampFormat::Clf => {
            let s = s.trim_start_matches('[').trim_end_matches(']');
            jiff::fmt::strtime::parse("%d/%b/%Y:%H:%M:%S %z", s).ok()?.to_timestamp().ok()?.as_nanosecond()
        }
        TimestampFormat::Unix => epoch(s, 1_000_000_000)?,
        TimestampFormat::UnixMs => epoch(s, 1_000_000)?,
        TimestampFormat::UnixUs => epoch(s, 1_000)?,
        TimestampFormat::UnixNs => epoch(s, 1)?,
    };
    i64::try_from(ns).ok()
}

/// A decimal number of units (fraction allowed) times `unit_ns`, exactly, without floats.
fn epoch(s: &str, unit_ns: i128) -> Option<i128> {
    let (neg, s) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if int.is_empty()
        || int.len() > 20
        || !int.bytes().all(|c| c.is_ascii_digit())
        || !frac.bytes().all(|c| c.is_ascii_digit())
    {
        return None;
    }
    let mut ns = int.parse::<i128>().ok()?.checked_mul(unit_ns)?;
    let mut scale = unit_ns;
    for d in frac.bytes().take(9) {
        scale /= 10;
        if scale == 0 {
            break;
        }
        ns += i128::from(d - b'0') * scale;
    }
    Some(if neg { -ns } else { ns })
}

#[cfg(test)]
mod tests {
    use super::*;
    use osprey_config::agent::Parse;
    use proptest::prelude::*;

    fn rules(parse: Parse) -> Rules {
        Rules::new(&FileSource { parse, ..FileSource::default() }).unwrap()
    }

    #[test]
    fn json_labels_metadata_and_time() {
        let r = rules(Parse {
            format: ParseFormat::Json,
            labels: vec!["level".into()],
            timestamp_field: "ts".into(),
            ..Parse::default()
        });
        let p = r.parse(r#"{"level":"warn","ts":"2026-11-26T08:00:00.5Z","req-id":7,"obj":{"a":1},"ok":true}"#);
        assert_eq!(p.label_values, vec![Some("warn".to_string())]);
        assert_eq!(p.ts, Some(1_795_680_000_500_000_000));
        assert_eq!(p.metadata, vec![("ok".to_string(), "true".to_string()), ("req_id".to_string(), "7".to_string())]);
        assert!(r.parse("not json").parse_failed);
    }

    #[test]
    fn logfmt() {
        let mut f = Vec::new();
        assert!(logfmt_fields(r#"level=info msg="hello \"you\"" took=3ms bare"#, &mut f));
        assert_eq!(
            f,
            vec![
                ("level".into(), "info".into()),
                ("msg".into(), "hello \"you\"".into()),
                ("took".into(), "3ms".into()),
                ("bare".into(), String::new())
            ]
        );
        assert!(!logfmt_fields(r#"msg="unterminated"#, &mut Vec::new()));
        assert!(!logfmt_fields("just words", &mut Vec::new()));
    }

    #[test]
    fn regex_and_filters() {
        let src = FileSource {
            keep_lines: "GET|POST".into(),
            drop_lines: "healthz".into(),
            parse: Parse {
                format: ParseFormat::Regex,
                regex: r#"^(?P<ip>\S+) \S+ \S+ \[(?P<time>[^\]]+)\] "(?P<method>\w+)"#.into(),
                labels: vec!["method".into()],
                timestamp_field: "time".into(),
                timestamp_format: TimestampFormat::Clf,
                ..Parse::default()
            },
            ..FileSource::default()
        };
        let r = Rules::new(&src).unwrap();
        let line = r#"1.2.3.4 - - [26/Nov/2026:08:00:00 +0100] "GET / HTTP/1.1" 200 5"#;
        assert!(r.keeps(line));
        assert!(!r.keeps(r#"1.2.3.4 - - [26/Nov/2026:08:00:00 +0100] "GET /healthz HTTP/1.1" 200 5"#));
        assert!(!r.keeps("PUT"));
        let p = r.parse(line);
        assert_eq!(p.label_values, vec![Some("GET".to_string())]);
        assert_eq!(p.ts, Some(1_795_676_400_000_000_000));
        assert_eq!(p.metadata, vec![("ip".to_string(), "1.2.3.4".to_string())]);
    }

    #[test]
    fn epochs() {
        assert_eq!(parse_timestamp("1764144000.25", TimestampFormat::Unix), Some(1_764_144_000_250_000_000));
        assert_eq!(parse_timestamp("1764144000250", TimestampFormat::UnixMs), Some(1_764_144_000_250_000_000));
        assert_eq!(parse_timestamp("17641440002500001", TimestampFormat::UnixNs), Some(17_641_440_002_500_001));
        assert_eq!(parse_timestamp("x1", TimestampFormat::Unix), None);
        assert_eq!(parse_timestamp("99999999999999999999", TimestampFormat::Unix), None);
        assert_eq!(
            parse_timestamp("2026-11-26 08:00:00+00:00", TimestampFormat::Rfc3339),
            Some(1_795_680_000_000_000_000)
        );
    }

    proptest! {
        #[test]
        fn parsers_never_panic(s in "\\PC{0,80}") {
            let _ = logfmt_fields(&s, &mut Vec::new());
            let _ = json_fields(&s, &mut Vec::new());
            for f in [TimestampFormat::Rfc3339, TimestampFormat::Clf, TimestampFormat::Unix, TimestampFormat::UnixNs] {
                let _ = parse_timestamp(&s, f);
            }
        }

        #[test]
        fn logfmt_round_trips(pairs in proptest::collection::vec(("[a-z_]{1,8}", "[ -~]{0,12}"), 1..6)) {
            let line: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""))).collect();
            let mut f = Vec::new();
            prop_assert!(logfmt_fields(&line.join(" "), &mut f));
            let want: Vec<(String, String)> = pairs.into_iter().collect();
            prop_assert_eq!(f, want);
        }
    }
}
