//! LogQL: the subset of Loki's query language Osprey answers, with Loki's semantics.
//!
//! ```text
//! query      = log_query | metric
//! log_query  = selector stage*
//! selector   = "{" label ("=" | "!=" | "=~" | "!~") string ("," ...)* "}"
//! stage      = ("|=" | "!=" | "|~" | "!~") string ("or" string)*      line filter
//!            | "|" "json" [label ["=" string] ("," ...)*]             flatten, or pick paths
//!            | "|" "logfmt" ["--strict"] ["--keep-empty"] [params]
//!            | "|" "regexp" string | "|" "pattern" string              named captures
//!            | "|" "line_format" string                                Go template subset
//!            | "|" ("drop" | "keep") label[op string] ("," ...)*
//!            | "|" label_filter                                        after parsing
//! label_filter = label_filter ("and" | "," | " " | "or") label_filter | "(" label_filter ")"
//!            | label ("=" | "!=" | "=~" | "!~") string
//!            | label ("==" | "=" | "!=" | ">" | ">=" | "<" | "<=") (number | duration | bytes)
//! metric     = metric ("+" | "-" | "*" | "/" | "%" | "^") metric | "(" metric ")" | number
//!            | "vector(" number ")"
//!            | range_fn "(" selector stage* "[" duration "]" stage* ["offset" duration] ")"
//!            | agg [grouping] "(" [k ","] metric ")" [grouping]
//! range_fn   = count_over_time | rate | bytes_over_time | bytes_rate
//! agg        = sum | avg | min | max | count | topk | bottomk
//! grouping   = ("by" | "without") "(" label ("," label)* ")"
//! ```
//!
//! Semantics follow Loki: line filters test the current line (after any `line_format`);
//! parsers add labels (a name already used by a stream label gets `_extracted`), never drop a
//! line, and mark failures with `__error__` (and `__error_details__`); a missing label compares
//! as the empty string in string filters and fails numeric ones; a value that does not parse as a
//! number sets `__error__="LabelFilterErr"` and keeps the line. Metric queries fail when a series
//! carries `__error__` (filter it with `| __error__=""` or `| drop __error__`). Range windows are
//! `(t - range, t]`.
//!
//! Regexes use Rust's `regex` crate: matching is linear in the input whatever the pattern, and
//! compiled programs are capped ([`REGEX_SIZE_LIMIT`]), so no query can be catastrophic.

pub mod ast;
pub mod engine;
pub mod json;
pub mod logfmt;
mod parser;
pub mod pattern;
pub mod pipeline;
pub mod template;

pub use ast::{Expr, LogQuery, MetricExpr};
pub use parser::{parse_bytes, parse_go_duration, parse_go_float, parse_prom_duration};

/// Largest compiled regex program (and lazy DFA cache) a query may build.
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// A syntax or semantic error in a query, pointing at where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("parse error at line {line}, col {column}: {message}")]
pub struct ParseError {
    /// 1-based line of the problem.
    pub line: usize,
    /// 1-based column, in characters, within that line.
    pub column: usize,
    pub message: String,
}

impl ParseError {
    pub fn at(input: &str, offset: usize, message: impl Into<String>) -> Self {
        let mut offset = offset.min(input.len());
        while !input.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &input[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = input[line_start..offset].chars().count() + 1;
        ParseError { line, column, message: message.into() }
    }

    /// Converts an error from the label-selector parser (which counts columns over the whole
    /// input) into one with a line and column.
    pub fn from_selector(input: &str, e: crate::selector::ParseError) -> Self {
        let offset = input.char_indices().nth(e.column.saturating_sub(1)).map_or(input.len(), |(i, _)| i);
        ParseError::at(input, offset, e.message)
    }
}

/// Parses a query (log or metric).
pub fn parse(input: &str) -> Result<Expr, ParseError> {
    parser::parse(input)
}

/// Parses a log query; a metric query is an error.
pub fn parse_log_query(input: &str) -> Result<LogQuery, ParseError> {
    match parse(input)? {
        Expr::Log(q) => Ok(q),
        Expr::Metric(_) => {
            Err(ParseError::at(input, 0, "expected a log query (a stream selector), not a metric query"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(q: &str) -> LogQuery {
        parse_log_query(q).unwrap_or_else(|e| panic!("{q}: {e}"))
    }

    #[test]
    fn filters_apply_in_order() {
        let q = log(r#"{job="a"} |= "error" != "debug" |~ `time(out)?` !~ "^x""#);
        assert!(q.keep_line("an error: timeout"));
        assert!(!q.keep_line("an error: debug"));
        assert!(!q.keep_line("x error"));
        assert!(!q.keep_line("all good"));
        assert_eq!(q.required_literals(), vec![b"error".to_vec()]);
    }

    #[test]
    fn errors_point_at_the_column() {
        let e = parse(r#"{job="a"} |= error"#).unwrap_err();
        assert_eq!(e.column, 14, "{e}");
        let e = parse(r#"{job="a"} | jsn"#).unwrap_err();
        assert_eq!(e.column, 16, "{e}");
        let e = parse(r#"{job=~".*"}"#).unwrap_err();
        assert!(e.message.contains("empty-compatible"));
        let e = parse(r#"{job="a"} |~ "(""#).unwrap_err();
        assert!(e.message.contains("invalid regex"), "{e}");
        let e = parse("sum(rate({job=\"a\"}\n[5x]))").unwrap_err();
        assert_eq!((e.line, e.column), (2, 2), "{e}");
        let e = parse(r#"{job="a"} + 1"#).unwrap_err();
        assert!(e.message.contains("arithmetic"), "{e}");
        let e = parse(r#"avg_over_time({a="b"}[5m])"#).unwrap_err();
        assert!(e.message.contains("not supported"), "{e}");
        let e = parse(r#"{a="b"} | unwrap x"#).unwrap_err();
        assert!(e.message.contains("not supported"), "{e}");
    }

    #[test]
    fn parses_the_supported_language() {
        for q in [
            r#"{job="a"} | json | level="error" | status >= 400 and duration > 1.5s or size < 20KB"#,
            r#"{job="a"} | logfmt --strict --keep-empty | line_format "{{.level}} {{ .msg | ToUpper }}""#,
            r#"{job="a"} | json first="servers[0]", ua="request.headers[\"User-Agent\"]", plain"#,
            r#"{job="a"} | regexp "(?P<method>\\w+) (?P<path>\\S+)" | pattern "<_> <status>""#,
            r#"{job="a"} |= "x" or "y" | drop __error__, __error_details__ | keep job, level="info""#,
            r#"{job="a"} | level="a", status=200 (x="1" or y="2")"#,
            r#"sum by (level, detected_level) (count_over_time({app="x"} | json | drop __error__[1m]))"#,
            r#"topk(3, sum(rate({job=~".+"}[5m] |= "err")) by (job))"#,
            r#"count_over_time({a="b"}[5m] offset 1h) / 60"#,
            r#"bytes_rate({a="b"} # a comment
               [1h])"#,
            "vector(1)+vector(1)",
            "1 + 2 * 3 ^ 2",
            r#"max without (host) (bytes_over_time({a="b"}[1m]))"#,
        ] {
            parse(q).unwrap_or_else(|e| panic!("{q}: {e}"));
        }
    }

    mod prop {
        use super::super::*;
        use crate::logql::pipeline::Evaluator;
        use proptest::prelude::*;
        use std::sync::Arc;

        /// Pieces of LogQL, so random queries get deep into the parser instead of failing at
        /// the first byte.
        const PIECES: &[&str] = &[
            "{",
            "}",
            "job",
            "=",
            "!=",
            "=~",
            "!~",
            "\"a\"",
            "`b`",
            ",",
            "|",
            "|=",
            "|~",
            " ",
            "json",
            "logfmt",
            "--strict",
            "regexp",
            "pattern",
            "\"<x> <_>\"",
            "line_format",
            "\"{{.x}}\"",
            "drop",
            "keep",
            "and",
            "or",
            "(",
            ")",
            "[",
            "]",
            "5m",
            "1.5s",
            "20KB",
            "200",
            ">",
            ">=",
            "==",
            "sum",
            "by",
            "without",
            "count_over_time",
            "rate",
            "topk",
            "vector",
            "1",
            "+",
            "/",
            "offset",
            "__error__",
            "\n",
            "#c\n",
            "\"(?P<n>.)\"",
            "\u{e9}",
        ];

        proptest! {
            #[test]
            fn parse_never_panics_and_errors_point_inside(pieces in prop::collection::vec(0..PIECES.len(), 0..24)) {
                let q: String = pieces.iter().map(|i| PIECES[*i]).collect();
                match parse(&q) {
                    Ok(Expr::Log(lq)) => {
                        // A parsed query always runs.
                        let stream = Arc::new(vec![("job".to_string(), "a".to_string())]);
                        let mut ev = Evaluator::default();
                        for line in ["", "x=1 y=\"z\"", r#"{"x":{"y":[1]},"z":2}"#, &q] {
                            ev.process(&lq, 0, line, &stream, &[("m", "v")]);
                        }
                    }
                    Ok(Expr::Metric(_)) => {}
                    Err(e) => {
                        prop_assert!(e.line >= 1 && e.line <= q.lines().count().max(1) + 1, "{}: {}", q, e);
                        prop_assert!(e.column >= 1, "{}: {}", q, e);
                        prop_assert!(!e.message.is_empty());
                    }
                }
            }

            #[test]
            fn arbitrary_text_never_panics(q in "\\PC{0,64}") {
                let _ = parse(&q);
            }

            #[test]
            fn line_parsers_never_panic(line in "\\PC{0,200}") {
                let _ = json::flatten(&line, &mut |_, _| {});
                let _ = json::extract(&line, &vec![ast::JsonStep::Key("a".into()), ast::JsonStep::Index(0)]);
                let mut d = logfmt::Decoder::new(&line);
                let mut n = 0;
                while !d.at_end() && n < 1000 {
                    let _ = d.scan();
                    n += 1;
                }
                prop_assert!(d.at_end(), "the logfmt scanner always advances");
            }
        }
    }
}
