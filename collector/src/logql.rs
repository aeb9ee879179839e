//! LogQL, first cut: a stream selector followed by line filters.
//!
//! `{job="varlogs", filename=~".*syslog"} |= "error" != "debug" |~ "time(out)?"`
//!
//! Semantics follow Loki: `|=` keeps lines containing the string, `!=` drops them, `|~` keeps
//! lines where the (unanchored) regex matches, `!~` drops them; filters apply left to right.
//! The selector must have at least one matcher that does not match the empty string.

use crate::selector::{ParseError, Selector, parse_braces, parse_string, skip_ws};
use memchr::memmem;
use regex::Regex;

#[derive(Clone, Debug)]
pub enum LineFilter {
    Contains(memmem::Finder<'static>),
    NotContains(memmem::Finder<'static>),
    Matches(Regex),
    NotMatches(Regex),
}

impl LineFilter {
    pub fn keep(&self, line: &str) -> bool {
        match self {
            LineFilter::Contains(f) => f.find(line.as_bytes()).is_some(),
            LineFilter::NotContains(f) => f.find(line.as_bytes()).is_none(),
            LineFilter::Matches(re) => re.is_match(line),
            LineFilter::NotMatches(re) => !re.is_match(line),
        }
    }
}

/// A parsed log query.
#[derive(Clone, Debug)]
pub struct LogQuery {
    pub selector: Selector,
    pub filters: Vec<LineFilter>,
}

impl LogQuery {
    pub fn keep_line(&self, line: &str) -> bool {
        self.filters.iter().all(|f| f.keep(line))
    }

    /// Byte strings every kept line must contain (the `|=` filters): hints for the store.
    pub fn required_literals(&self) -> Vec<Vec<u8>> {
        self.filters
            .iter()
            .filter_map(|f| match f {
                LineFilter::Contains(finder) => Some(finder.needle().to_vec()),
                _ => None,
            })
            .collect()
    }
}

fn unanchored_regex(input: &str, at: usize, pattern: &str) -> Result<Regex, ParseError> {
    regex::RegexBuilder::new(pattern)
        .size_limit(1 << 20)
        .build()
        .map_err(|e| ParseError::at(input, at, format!("invalid regex {pattern:?}: {e}")))
}

/// Parses a log query.
pub fn parse(input: &str) -> Result<LogQuery, ParseError> {
    let b = input.as_bytes();
    let (selector, mut i) = parse_braces(input, 0)?;
    if !selector.has_non_empty_matcher() {
        return Err(ParseError::at(
            input,
            0,
            "queries require at least one regexp or equality matcher that does not have an empty-compatible value. For instance, app=~\".*\" does not meet this requirement, but app=~\".+\" will",
        ));
    }
    let mut filters = Vec::new();
    loop {
        i = skip_ws(b, i);
        if i >= b.len() {
            break;
        }
        let op = input.get(i..i + 2).unwrap_or("");
        let kind = match op {
            "|=" | "!=" | "|~" | "!~" => op,
            _ => {
                return Err(ParseError::at(
                    input,
                    i,
                    "expected a line filter (|=, !=, |~ or !~) or the end of the query",
                ));
            }
        };
        let at = skip_ws(b, i + 2);
        let (value, next) = parse_string(input, at)?;
        filters.push(match kind {
            "|=" => LineFilter::Contains(memmem::Finder::new(value.as_bytes()).into_owned()),
            "!=" => LineFilter::NotContains(memmem::Finder::new(value.as_bytes()).into_owned()),
            "|~" => LineFilter::Matches(unanchored_regex(input, at, &value)?),
            _ => LineFilter::NotMatches(unanchored_regex(input, at, &value)?),
        });
        i = next;
    }
    Ok(LogQuery { selector, filters })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_apply_in_order() {
        let q = parse(r#"{job="a"} |= "error" != "debug" |~ `time(out)?` !~ "^x""#).unwrap();
        assert!(q.keep_line("an error: timeout"));
        assert!(!q.keep_line("an error: debug"));
        assert!(!q.keep_line("x error"));
        assert!(!q.keep_line("all good"));
    }

    #[test]
    fn errors_point_at_the_column() {
        let e = parse(r#"{job="a"} |= error"#).unwrap_err();
        assert_eq!(e.column, 14, "{e}");
        let e = parse(r#"{job="a"} | json"#).unwrap_err();
        assert_eq!(e.column, 11, "{e}");
        let e = parse(r#"{job=~".*"}"#).unwrap_err();
        assert!(e.message.contains("empty-compatible"));
        let e = parse(r#"{job="a"} |~ "(""#).unwrap_err();
        assert!(e.message.contains("invalid regex"), "{e}");
    }
}
