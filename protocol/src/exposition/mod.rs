//! The Prometheus text exposition format 0.0.4 and OpenMetrics 1.0: writing (what `/federate`
//! and `/metrics` serve, below) and parsing (what scraping reads, [`parse`]).
//!
//! Kept here because both the agent (host metrics on its `/metrics`) and the collector
//! (`/federate`) write it. Escaping follows the format's rules: HELP escapes `\\` and `\n`;
//! label values escape `\\`, `\"` and `\n`. Values use Go's float formatting conventions for the
//! special values (`NaN`, `+Inf`, `-Inf`).

pub mod parse;

pub use parse::{Entry, Format, MetricKind, ParseError, Parser, SCRAPE_ACCEPT, Sample};

use std::fmt::Write as _;

pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
pub const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Writes `# HELP` and `# TYPE` lines for a family.
pub fn write_family_header(out: &mut String, name: &str, help: &str, kind: &str) {
    if !help.is_empty() {
        out.push_str("# HELP ");
        out.push_str(name);
        out.push(' ');
        for c in help.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('\n');
    }
    out.push_str("# TYPE ");
    out.push_str(name);
    out.push(' ');
    out.push_str(kind);
    out.push('\n');
}

/// Writes one sample line: `name{labels} value [timestamp_ms]`. `labels` must not contain
/// `__name__`.
pub fn write_sample<'a>(
    out: &mut String,
    name: &str,
    labels: impl IntoIterator<Item = (&'a str, &'a str)>,
    value: f64,
    timestamp_ms: Option<i64>,
) {
    out.push_str(name);
    let mut first = true;
    for (k, v) in labels {
        out.push(if first { '{' } else { ',' });
        first = false;
        out.push_str(k);
        out.push_str("=\"");
        crate::loki_labels::escape_into(out, v);
        out.push('"');
    }
    if !first {
        out.push('}');
    }
    out.push(' ');
    write_value(out, value);
    if let Some(ts) = timestamp_ms {
        let _ = write!(out, " {ts}");
    }
    out.push('\n');
}

/// Formats a float the way Prometheus does in exposition text.
pub fn write_value(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v == f64::INFINITY {
        out.push_str("+Inf");
    } else if v == f64::NEG_INFINITY {
        out.push_str("-Inf");
    } else {
        let _ = write!(out, "{v}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_escaped_family() {
        let mut s = String::new();
        write_family_header(&mut s, "node_load1", "1m load\\average", "gauge");
        write_sample(&mut s, "node_load1", [("host", "a\"b\nc")], 0.5, Some(17));
        write_sample(&mut s, "up", [], f64::NAN, None);
        assert_eq!(
            s,
            "# HELP node_load1 1m load\\\\average\n# TYPE node_load1 gauge\nnode_load1{host=\"a\\\"b\\nc\"} 0.5 17\nup NaN\n"
        );
    }
}
