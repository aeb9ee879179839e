//! Loki's text form of a stream's label set: `{job="varlogs", filename="/var/log/syslog"}`.
//!
//! Promtail, Alloy, Vector and Fluent Bit put this string in `StreamAdapter.labels`; Loki parses
//! it with the PromQL label-set grammar. We accept the same: names `[a-zA-Z_][a-zA-Z0-9_]*`,
//! values in double quotes with Go escapes, optional spaces and a trailing comma. The canonical
//! form we write is sorted by name, `", "`-separated, and escapes `\\`, `\"` and `\n` exactly
//! like Prometheus' `labels.String()`.

use std::fmt::Write as _;

/// A label set, sorted by name, names unique.
pub type LabelSet = Vec<(String, String)>;

/// Why a label-set string could not be parsed. `offset` is a byte offset into the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid label set at byte {offset}: {problem}")]
pub struct LabelsError {
    pub offset: usize,
    pub problem: String,
}

fn err<T>(offset: usize, problem: impl Into<String>) -> Result<T, LabelsError> {
    Err(LabelsError { offset, problem: problem.into() })
}

/// True for a valid Prometheus/Loki label name.
pub fn is_valid_label_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    match bytes.next() {
        Some(b) if b.is_ascii_alphabetic() || b == b'_' => {}
        _ => return false,
    }
    bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Parses `{name="value", ...}` into a sorted label set. Duplicate names are an error.
pub fn parse(input: &str) -> Result<LabelSet, LabelsError> {
    let b = input.as_bytes();
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return err(i, "expected '{'");
    }
    i += 1;
    let mut out: LabelSet = Vec::new();
    loop {
        i = skip_ws(b, i);
        match b.get(i) {
            Some(b'}') => {
                i += 1;
                break;
            }
            None => return err(i, "unexpected end, expected a label name or '}'"),
            _ => {}
        }
        let start = i;
        while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
            i += 1;
        }
        let name = &input[start..i];
        if !is_valid_label_name(name) {
            return err(start, "expected a label name ([a-zA-Z_][a-zA-Z0-9_]*)");
        }
        i = skip_ws(b, i);
        if b.get(i) != Some(&b'=') {
            return err(i, format!("expected '=' after label name {name:?}"));
        }
        i = skip_ws(b, i + 1);
        let (value, next) = parse_quoted(input, i)?;
        out.push((name.to_string(), value));
        i = skip_ws(b, next);
        match b.get(i) {
            Some(b',') => i += 1,
            Some(b'}') => {}
            _ => return err(i, "expected ',' or '}' after a label value"),
        }
    }
    if skip_ws(b, i) != b.len() {
        return err(i, "unexpected text after '}'");
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    if let Some(w) = out.windows(2).find(|w| w[0].0 == w[1].0) {
        return err(0, format!("duplicate label name {:?}", w[0].0));
    }
    Ok(out)
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && b[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

/// Parses a double-quoted Go string literal starting at `start`; returns the value and the
/// offset just past the closing quote.
pub fn parse_quoted(input: &str, start: usize) -> Result<(String, usize), LabelsError> {
    let b = input.as_bytes();
    if b.get(start) != Some(&b'"') {
        return err(start, "expected '\"' to open a label value");
    }
    let mut out = String::new();
    let mut i = start + 1;
    let mut run = i;
    loop {
        match b.get(i) {
            None => return err(start, "unterminated label value: missing closing '\"'"),
            Some(b'"') => {
                out.push_str(&input[run..i]);
                return Ok((out, i + 1));
            }
            Some(b'\\') => {
                out.push_str(&input[run..i]);
                let (c, len) = unescape(input, i)?;
                out.push(c);
                i += len;
                run = i;
            }
            Some(b'\n') => return err(i, "newline inside a label value"),
            Some(_) => i += 1,
        }
    }
}

/// Decodes the Go escape sequence at `i` (which holds the backslash).
fn unescape(input: &str, i: usize) -> Result<(char, usize), LabelsError> {
    let b = input.as_bytes();
    let c = match b.get(i + 1) {
        Some(b'n') => '\n',
        Some(b't') => '\t',
        Some(b'r') => '\r',
        Some(b'\\') => '\\',
        Some(b'"') => '"',
        Some(b'\'') => '\'',
        Some(b'a') => '\x07',
        Some(b'b') => '\x08',
        Some(b'f') => '\x0c',
        Some(b'v') => '\x0b',
        Some(&k @ (b'x' | b'u' | b'U')) => {
            let digits = match k {
                b'x' => 2,
                b'u' => 4,
                _ => 8,
            };
            let hex = input
                .get(i + 2..i + 2 + digits)
                .ok_or(LabelsError { offset: i, problem: "truncated escape sequence".into() })?;
            let n = u32::from_str_radix(hex, 16)
                .map_err(|_| LabelsError { offset: i, problem: format!("invalid hex escape \\{}{hex}", k as char) })?;
            let c = char::from_u32(n)
                .ok_or(LabelsError { offset: i, problem: format!("escape \\{}{hex} is not a character", k as char) })?;
            return Ok((c, 2 + digits));
        }
        _ => return err(i, "unknown escape sequence"),
    };
    Ok((c, 2))
}

/// Writes a label set in canonical form. `labels` should be sorted by name.
pub fn format(labels: &[(String, String)]) -> String {
    let mut s = String::with_capacity(2 + labels.iter().map(|(n, v)| n.len() + v.len() + 5).sum::<usize>());
    s.push('{');
    for (k, (name, value)) in labels.iter().enumerate() {
        if k > 0 {
            s.push_str(", ");
        }
        s.push_str(name);
        s.push_str("=\"");
        escape_into(&mut s, value);
        s.push('"');
    }
    s.push('}');
    s
}

/// Appends `value` with `\\`, `\"` and `\n` escaped.
pub fn escape_into(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => {
                let _ = out.write_char(c);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_promtail_style() {
        let l = parse(r#"{job="varlogs", filename="/var/log/syslog",host="a\"b"}"#).unwrap();
        assert_eq!(
            l,
            vec![
                ("filename".into(), "/var/log/syslog".into()),
                ("host".into(), "a\"b".into()),
                ("job".into(), "varlogs".into())
            ]
        );
    }

    #[test]
    fn errors_point_at_the_problem() {
        assert_eq!(parse("{a=\"b\"").unwrap_err().problem, "expected ',' or '}' after a label value");
        assert_eq!(parse("{a=\"b\",").unwrap_err().problem, "unexpected end, expected a label name or '}'");
        assert_eq!(parse("{1a=\"b\"}").unwrap_err().offset, 1);
        assert!(parse("{a=\"b\", a=\"c\"}").unwrap_err().problem.contains("duplicate"));
        assert!(parse("{a=b}").is_err());
        assert_eq!(parse("{}").unwrap(), vec![]);
        assert_eq!(parse(" { a = \"b\" , } ").unwrap(), vec![("a".into(), "b".into())]);
    }

    proptest! {
        #[test]
        fn format_then_parse_round_trips(
            mut labels in proptest::collection::btree_map("[a-zA-Z_][a-zA-Z0-9_]{0,8}", ".{0,12}", 0..6)
                .prop_map(|m| m.into_iter().collect::<Vec<_>>())
        ) {
            labels.sort();
            prop_assert_eq!(parse(&format(&labels)).unwrap(), labels);
        }

        #[test]
        fn arbitrary_input_never_panics(s in ".{0,64}") {
            let _ = parse(&s);
        }
    }
}
