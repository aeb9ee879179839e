//! The JSON walker behind `| json`: flattens a line's object into label name/value pairs, or
//! picks values at paths (`| json a="x.y[0]"`).
//!
//! Written by hand rather than through serde_json because it must be zero-copy over the line,
//! keep members in line order (later duplicates overwrite earlier ones, as in Loki), skip arrays
//! and nulls, report the first syntax error with its offset, and bound nesting depth so a hostile
//! line cannot overflow the stack.

use super::ast::{JsonPath, JsonStep};
use std::borrow::Cow;

/// Deeper nesting is refused: the walker recurses once per level.
const MAX_DEPTH: usize = 64;

struct Cursor<'a> {
    b: &'a [u8],
    s: &'a str,
    i: usize,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Object,
    Array,
    String,
    Number,
    Bool,
    Null,
}

impl<'a> Cursor<'a> {
    fn new(s: &'a str) -> Self {
        Cursor { b: s.as_bytes(), s, i: 0 }
    }

    fn err<T>(&self, what: &str) -> Result<T, String> {
        Err(format!("{what} at offset {}", self.i))
    }

    fn ws(&mut self) {
        while self.i < self.b.len() && matches!(self.b[self.i], b' ' | b'\t' | b'\n' | b'\r') {
            self.i += 1;
        }
    }

    fn kind(&mut self) -> Result<Kind, String> {
        self.ws();
        match self.b.get(self.i) {
            Some(b'{') => Ok(Kind::Object),
            Some(b'[') => Ok(Kind::Array),
            Some(b'"') => Ok(Kind::String),
            Some(b't' | b'f') => Ok(Kind::Bool),
            Some(b'n') => Ok(Kind::Null),
            Some(b'-' | b'0'..=b'9') => Ok(Kind::Number),
            Some(_) => self.err("unexpected character"),
            None => self.err("unexpected end of JSON"),
        }
    }

    /// Parses a string at the cursor (which is on `"`), unescaping only when needed.
    fn string(&mut self) -> Result<Cow<'a, str>, String> {
        let start = self.i + 1;
        let mut i = start;
        let mut escaped = false;
        while i < self.b.len() {
            match self.b[i] {
                b'"' => {
                    let raw = &self.s[start..i];
                    self.i = i + 1;
                    return if escaped { unescape(raw).map(Cow::Owned) } else { Ok(Cow::Borrowed(raw)) };
                }
                b'\\' => {
                    escaped = true;
                    i += 2;
                }
                _ => i += 1,
            }
        }
        self.i = self.b.len();
        self.err("unterminated string")
    }

    fn literal(&mut self, word: &str) -> Result<&'a str, String> {
        if self.s[self.i..].starts_with(word) {
            let out = &self.s[self.i..self.i + word.len()];
            self.i += word.len();
            Ok(out)
        } else {
            self.err("invalid literal")
        }
    }

    fn number(&mut self) -> Result<&'a str, String> {
        let start = self.i;
        if self.b.get(self.i) == Some(&b'-') {
            self.i += 1;
        }
        let digits = self.i;
        while self.i < self.b.len() && matches!(self.b[self.i], b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-') {
            self.i += 1;
        }
        if self.i == digits {
            return self.err("invalid number");
        }
        Ok(&self.s[start..self.i])
    }

    /// Skips one value of any kind, checking its syntax.
    fn skip(&mut self, depth: usize) -> Result<(), String> {
        match self.kind()? {
            Kind::String => self.string().map(drop),
            Kind::Number => self.number().map(drop),
            Kind::Bool => {
                if self.b[self.i] == b't' {
                    self.literal("true").map(drop)
                } else {
                    self.literal("false").map(drop)
                }
            }
            Kind::Null => self.literal("null").map(drop),
            Kind::Object => self.members(depth + 1, |c, _key, depth| c.skip(depth)),
            Kind::Array => self.elements(depth + 1, |c, _idx, depth| c.skip(depth)),
        }
    }

    /// Walks an object's members (cursor on `{`), calling `member` with the cursor on each value.
    fn members(
        &mut self,
        depth: usize,
        mut member: impl FnMut(&mut Self, Cow<'a, str>, usize) -> Result<(), String>,
    ) -> Result<(), String> {
        if depth > MAX_DEPTH {
            return self.err("JSON nested too deeply");
        }
        self.i += 1;
        self.ws();
        if self.b.get(self.i) == Some(&b'}') {
            self.i += 1;
            return Ok(());
        }
        loop {
            self.ws();
            if self.b.get(self.i) != Some(&b'"') {
                return self.err("expected a string key");
            }
            let key = self.string()?;
            self.ws();
            if self.b.get(self.i) != Some(&b':') {
                return self.err("expected ':' after a key");
            }
            self.i += 1;
            member(self, key, depth)?;
            self.ws();
            match self.b.get(self.i) {
                Some(b',') => self.i += 1,
                Some(b'}') => {
                    self.i += 1;
                    return Ok(());
                }
                _ => return self.err("expected ',' or '}' in an object"),
            }
        }
    }

    fn elements(
        &mut self,
        depth: usize,
        mut element: impl FnMut(&mut Self, usize, usize) -> Result<(), String>,
    ) -> Result<(), String> {
        if depth > MAX_DEPTH {
            return self.err("JSON nested too deeply");
        }
        self.i += 1;
        self.ws();
        if self.b.get(self.i) == Some(&b']') {
            self.i += 1;
            return Ok(());
        }
        let mut idx = 0;
        loop {
            element(self, idx, depth)?;
            idx += 1;
            self.ws();
            match self.b.get(self.i) {
                Some(b',') => self.i += 1,
                Some(b']') => {
                    self.i += 1;
                    return Ok(());
                }
                _ => return self.err("expected ',' or ']' in an array"),
            }
        }
    }
}

fn unescape(raw: &str) -> Result<String, String> {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('"') => out.push('"'),
            Some('\\') => out.push('\\'),
            Some('/') => out.push('/'),
            Some('b') => out.push('\u{8}'),
            Some('f') => out.push('\u{c}'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some('u') => {
                let hex: String = chars.by_ref().take(4).collect();
                let cp = u32::from_str_radix(&hex, 16).map_err(|_| format!("invalid \\u escape {hex:?}"))?;
                if (0xD800..0xDC00).contains(&cp) {
                    // A high surrogate: pair it with the following \uDC00..\uDFFF.
                    let rest = chars.as_str();
                    let low = rest
                        .strip_prefix("\\u")
                        .and_then(|r| r.get(..4))
                        .and_then(|h| u32::from_str_radix(h, 16).ok())
                        .filter(|l| (0xDC00..0xE000).contains(l));
                    match low {
                        Some(low) => {
                            chars = rest[6..].chars();
                            let combined = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
                            out.push(char::from_u32(combined).unwrap_or('\u{FFFD}'));
                        }
                        None => out.push('\u{FFFD}'),
                    }
                } else {
                    out.push(char::from_u32(cp).unwrap_or('\u{FFFD}'));
                }
            }
            Some(other) => return Err(format!("invalid escape '\\{other}'")),
            None => return Err("string ends in a backslash".into()),
        }
    }
    Ok(out)
}

/// Appends a sanitized key part: every character outside `[A-Za-z0-9_]` becomes `_`.
pub fn push_sanitized(to: &mut String, key: &str) {
    for c in key.trim().chars() {
        to.push(if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' });
    }
}

/// Flattens the object in `line`: nested keys join with `_`, names are sanitized (a leading
/// digit gets a `_` prefix), strings are unescaped, numbers and booleans kept as written; arrays
/// and nulls are skipped. Calls `found(name, value)` in line order. On a syntax error, the pairs
/// found so far have been reported and the error says where it is.
pub fn flatten(line: &str, found: &mut dyn FnMut(&str, Cow<'_, str>)) -> Result<(), String> {
    let mut c = Cursor::new(line);
    if c.kind()? != Kind::Object {
        return c.err("expected a JSON object");
    }
    let mut name = String::new();
    flatten_object(&mut c, &mut name, 0, found)
}

fn flatten_object<'a>(
    c: &mut Cursor<'a>,
    prefix: &mut String,
    depth: usize,
    found: &mut dyn FnMut(&str, Cow<'_, str>),
) -> Result<(), String> {
    c.members(depth, |c, key, depth| {
        let at = prefix.len();
        if at > 0 {
            prefix.push('_');
        }
        push_sanitized(prefix, &key);
        let result = match c.kind()? {
            Kind::Object => flatten_object(c, prefix, depth + 1, found),
            Kind::Array => c.skip(depth),
            Kind::Null => c.literal("null").map(drop),
            Kind::String => {
                let v = c.string()?;
                emit(prefix, v, found);
                Ok(())
            }
            Kind::Number => {
                let v = c.number()?;
                emit(prefix, Cow::Borrowed(v), found);
                Ok(())
            }
            Kind::Bool => {
                let v = if c.b[c.i] == b't' { c.literal("true")? } else { c.literal("false")? };
                emit(prefix, Cow::Borrowed(v), found);
                Ok(())
            }
        };
        prefix.truncate(at);
        result
    })
}

fn emit(name: &str, value: Cow<'_, str>, found: &mut dyn FnMut(&str, Cow<'_, str>)) {
    if name.is_empty() {
        return;
    }
    if name.as_bytes()[0].is_ascii_digit() {
        found(&format!("_{name}"), value);
    } else {
        found(name, value);
    }
}

/// The value at `path` in `line`: strings unescaped, objects and arrays as their JSON text,
/// numbers and booleans as written, null and missing as the empty string.
pub fn extract(line: &str, path: &JsonPath) -> Result<String, String> {
    let mut c = Cursor::new(line);
    let mut result: Option<String> = None;
    descend(&mut c, path, 0, &mut result)?;
    Ok(result.unwrap_or_default())
}

fn descend(c: &mut Cursor<'_>, path: &[JsonStep], depth: usize, out: &mut Option<String>) -> Result<(), String> {
    let kind = c.kind()?;
    let Some(step) = path.first() else {
        let start = c.i;
        *out = Some(match kind {
            Kind::String => c.string()?.into_owned(),
            Kind::Null => {
                c.literal("null")?;
                String::new()
            }
            _ => {
                c.skip(depth)?;
                c.s[start..c.i].to_string()
            }
        });
        return Ok(());
    };
    match (step, kind) {
        (JsonStep::Key(want), Kind::Object) => c.members(depth + 1, |c, key, depth| {
            if out.is_none() && key == want.as_str() { descend(c, &path[1..], depth, out) } else { c.skip(depth) }
        }),
        (JsonStep::Index(want), Kind::Array) => c.elements(depth + 1, |c, idx, depth| {
            if out.is_none() && idx == *want { descend(c, &path[1..], depth, out) } else { c.skip(depth) }
        }),
        _ => c.skip(depth),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flat(line: &str) -> (Vec<(String, String)>, Option<String>) {
        let mut out = Vec::new();
        let r = flatten(line, &mut |k, v| out.push((k.to_string(), v.into_owned())));
        (out, r.err())
    }

    #[test]
    fn flattens_like_loki() {
        let (got, err) = flat(r#"{"a":"x\ty","n":1.5,"b":{"c d":true,"e":null},"arr":[1,2],"1st":"z"}"#);
        assert_eq!(err, None);
        let want = [("a", "x\ty"), ("n", "1.5"), ("b_c_d", "true"), ("_1st", "z")];
        assert_eq!(got, want.map(|(a, b)| (a.to_string(), b.to_string())));
    }

    #[test]
    fn reports_errors_with_offsets() {
        assert!(flat("not json").1.unwrap().contains("offset 0"));
        let (got, err) = flat(r#"{"a":"b","c":}"#);
        assert_eq!(got, vec![("a".to_string(), "b".to_string())]);
        assert!(err.unwrap().contains("offset 13"));
        let deep = format!("{}{}", r#"{"a":"#.repeat(100), "}".repeat(100));
        assert!(flat(&deep).1.unwrap().contains("too deeply"));
        assert!(flat(r#"{"a":"\q"}"#).1.unwrap().contains("invalid escape"));
    }

    #[test]
    fn extracts_paths() {
        let line = r#"{"a":{"b":[10,{"c":"d"}]},"s":"x\"y","n":null}"#;
        let p = |steps: &[JsonStep]| extract(line, &steps.to_vec()).unwrap();
        use JsonStep::{Index, Key};
        assert_eq!(p(&[Key("a".into()), Key("b".into()), Index(0)]), "10");
        assert_eq!(p(&[Key("a".into()), Key("b".into()), Index(1), Key("c".into())]), "d");
        assert_eq!(p(&[Key("a".into()), Key("b".into())]), r#"[10,{"c":"d"}]"#);
        assert_eq!(p(&[Key("s".into())]), "x\"y");
        assert_eq!(p(&[Key("n".into())]), "");
        assert_eq!(p(&[Key("missing".into())]), "");
    }
}
