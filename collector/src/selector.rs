//! Label matchers and selectors: `{job="node", mode=~"idle|user"}` and `metric{...}`.
//!
//! Shared by LogQL stream selectors and the `match[]` of `/federate` and the Prometheus API, so
//! both parse and match labels the same way Prometheus does: a missing label matches as the
//! empty string, and regexes are fully anchored (`=~"a.*"` means `^(?:a.*)$`).

use osprey_protocol::loki_labels::{is_valid_label_name, parse_quoted};
use regex::Regex;

/// A parse error with the byte offset of the problem in the query.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("parse error at column {column}: {message}")]
pub struct ParseError {
    /// 1-based column, in characters.
    pub column: usize,
    pub message: String,
}

impl ParseError {
    pub fn at(input: &str, offset: usize, message: impl Into<String>) -> Self {
        let offset = offset.min(input.len());
        let column = input.get(..offset).map_or(offset, |s| s.chars().count()) + 1;
        ParseError { column, message: message.into() }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatchOp {
    Equal,
    NotEqual,
    Regex,
    NotRegex,
}

impl MatchOp {
    pub fn as_str(self) -> &'static str {
        match self {
            MatchOp::Equal => "=",
            MatchOp::NotEqual => "!=",
            MatchOp::Regex => "=~",
            MatchOp::NotRegex => "!~",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Matcher {
    pub name: String,
    pub op: MatchOp,
    pub value: String,
    re: Option<Regex>,
}

/// Compiled regexes are capped so a hostile pattern cannot eat the memory of the process;
/// the regex crate guarantees linear-time matching, so no pattern can be catastrophic in time.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Compiles a regex anchored at both ends, as PromQL and LogQL label matchers require.
pub fn anchored_regex(pattern: &str) -> Result<Regex, String> {
    regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| format!("invalid regex {pattern:?}: {e}"))
}

impl Matcher {
    pub fn new(name: impl Into<String>, op: MatchOp, value: impl Into<String>) -> Result<Self, String> {
        let value = value.into();
        let re = match op {
            MatchOp::Regex | MatchOp::NotRegex => Some(anchored_regex(&value)?),
            _ => None,
        };
        Ok(Matcher { name: name.into(), op, value, re })
    }

    pub fn matches(&self, value: &str) -> bool {
        match (&self.op, &self.re) {
            (MatchOp::Equal, _) => value == self.value,
            (MatchOp::NotEqual, _) => value != self.value,
            (MatchOp::Regex, Some(re)) => re.is_match(value),
            (MatchOp::NotRegex, Some(re)) => !re.is_match(value),
            _ => false,
        }
    }
}

/// A conjunction of matchers.
#[derive(Clone, Debug, Default)]
pub struct Selector {
    pub matchers: Vec<Matcher>,
}

impl Selector {
    /// Matches a sorted-or-not label set; absent labels are the empty string.
    pub fn matches<'a>(&self, lookup: impl Fn(&str) -> Option<&'a str>) -> bool {
        self.matchers.iter().all(|m| m.matches(lookup(&m.name).unwrap_or("")))
    }

    pub fn matches_pairs(&self, labels: &[(String, String)]) -> bool {
        self.matches(|n| labels.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str()))
    }

    /// Prometheus and Loki refuse selectors that would match everything.
    pub fn has_non_empty_matcher(&self) -> bool {
        self.matchers.iter().any(|m| !m.matches(""))
    }
}

pub(crate) fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && b[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

/// Parses `{name op "value", ...}` starting at `start`; returns the selector and the offset
/// after `}`.
pub fn parse_braces(input: &str, start: usize) -> Result<(Selector, usize), ParseError> {
    let b = input.as_bytes();
    let mut i = skip_ws(b, start);
    if b.get(i) != Some(&b'{') {
        return Err(ParseError::at(input, i, "expected '{' to start a label selector"));
    }
    i += 1;
    let mut sel = Selector::default();
    loop {
        i = skip_ws(b, i);
        match b.get(i) {
            Some(b'}') => return Ok((sel, i + 1)),
            None => return Err(ParseError::at(input, i, "unexpected end of query: missing '}'")),
            _ => {}
        }
        let name_start = i;
        while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
            i += 1;
        }
        let name = &input[name_start..i];
        if !is_valid_label_name(name) {
            return Err(ParseError::at(input, name_start, "expected a label name"));
        }
        i = skip_ws(b, i);
        let op = match (b.get(i), b.get(i + 1)) {
            (Some(b'='), Some(b'~')) => MatchOp::Regex,
            (Some(b'!'), Some(b'~')) => MatchOp::NotRegex,
            (Some(b'!'), Some(b'=')) => MatchOp::NotEqual,
            (Some(b'='), _) => MatchOp::Equal,
            _ => return Err(ParseError::at(input, i, "expected a matcher operator: =, !=, =~ or !~")),
        };
        i = skip_ws(b, i + op.as_str().len());
        let (value, next) = parse_string(input, i)?;
        let m = Matcher::new(name, op, value).map_err(|e| ParseError::at(input, i, e))?;
        sel.matchers.push(m);
        i = skip_ws(b, next);
        match b.get(i) {
            Some(b',') => i += 1,
            Some(b'}') => {}
            _ => return Err(ParseError::at(input, i, "expected ',' or '}' after a matcher")),
        }
    }
}

/// Parses a double-quoted (Go escapes) or backtick (raw) string at `i`.
pub fn parse_string(input: &str, i: usize) -> Result<(String, usize), ParseError> {
    match input.as_bytes().get(i) {
        Some(b'`') => match input[i + 1..].find('`') {
            Some(end) => Ok((input[i + 1..i + 1 + end].to_string(), i + end + 2)),
            None => Err(ParseError::at(input, i, "unterminated raw string: missing closing '`'")),
        },
        Some(b'"') => parse_quoted(input, i).map_err(|e| ParseError::at(input, e.offset, e.problem)),
        _ => Err(ParseError::at(input, i, "expected a quoted string")),
    }
}

/// Parses a PromQL-style series selector: `metric`, `metric{...}` or `{...}`. `__name__`
/// matches the metric name.
pub fn parse_series_selector(input: &str) -> Result<Selector, ParseError> {
    let b = input.as_bytes();
    let mut i = skip_ws(b, 0);
    let start = i;
    while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b':') {
        i += 1;
    }
    let mut sel = Selector::default();
    if i > start {
        let name = &input[start..i];
        if name.as_bytes()[0].is_ascii_digit() {
            return Err(ParseError::at(input, start, "a metric name cannot start with a digit"));
        }
        sel.matchers.push(Matcher::new("__name__", MatchOp::Equal, name).map_err(|e| ParseError::at(input, start, e))?);
    }
    i = skip_ws(b, i);
    if i < b.len() {
        let (braces, end) = parse_braces(input, i)?;
        sel.matchers.extend(braces.matchers);
        i = skip_ws(b, end);
    }
    if i < b.len() {
        return Err(ParseError::at(input, i, "unexpected text after the selector"));
    }
    if sel.matchers.is_empty() {
        return Err(ParseError::at(input, 0, "empty selector: give a metric name or {label matchers}"));
    }
    if !sel.has_non_empty_matcher() {
        return Err(ParseError::at(input, 0, "vector selector must contain at least one non-empty matcher"));
    }
    Ok(sel)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn matches_like_prometheus() {
        let s = parse_series_selector(r#"up{job=~"no.e", instance!="b", missing=""}"#).unwrap();
        assert!(s.matches_pairs(&labels(&[("__name__", "up"), ("job", "node"), ("instance", "a")])));
        assert!(!s.matches_pairs(&labels(&[("__name__", "up"), ("job", "xnode"), ("instance", "a")])));
        assert!(!s.matches_pairs(&labels(&[("__name__", "up"), ("job", "node"), ("instance", "b")])));
    }

    #[test]
    fn errors_point_at_columns() {
        let e = parse_series_selector(r#"{job="a" x}"#).unwrap_err();
        assert_eq!(e.column, 10, "{e}");
        let e = parse_series_selector(r#"{job=~"("}"#).unwrap_err();
        assert!(e.message.contains("invalid regex"), "{e}");
        let e = parse_series_selector(r#"{job=~".*"}"#).unwrap_err();
        assert!(e.message.contains("non-empty"), "{e}");
        assert!(parse_series_selector("").is_err());
        assert!(parse_series_selector("{").is_err());
    }
}
