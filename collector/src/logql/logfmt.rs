//! The logfmt scanner behind `| logfmt`, with Loki's rules (from go-logfmt): keys run to `=` or
//! whitespace, values are bare (no `=` or `"` inside) or double-quoted with JSON escapes, a key
//! without `=` has no value. A syntax error skips to the next whitespace; in `--strict` mode it
//! stops the scan and the line gets `__error__="LogfmtParserErr"`.

use std::borrow::Cow;

pub enum Scan<'a> {
    /// A key and its value (`None`: a bare key or `key=` with nothing after it).
    Pair(&'a str, Option<Cow<'a, str>>),
    /// A syntax error; the message is kept in [`Decoder::error`].
    Error,
    /// Only whitespace was left.
    End,
}

pub struct Decoder<'a> {
    s: &'a str,
    b: &'a [u8],
    pos: usize,
    error: Option<String>,
}

impl<'a> Decoder<'a> {
    pub fn new(line: &'a str) -> Self {
        Decoder { s: line, b: line.as_bytes(), pos: 0, error: None }
    }

    pub fn at_end(&self) -> bool {
        self.pos >= self.b.len()
    }

    /// The last syntax error, as Loki words it.
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    fn syntax_error(&mut self, msg: &str) {
        self.error = Some(format!("logfmt syntax error at pos {} : {msg}", self.pos + 1));
    }

    fn unexpected(&mut self, c: u8) {
        self.syntax_error(&format!("unexpected {:?}", c as char));
    }

    fn skip_value(&mut self) -> Scan<'a> {
        while self.pos < self.b.len() && self.b[self.pos] > b' ' {
            self.pos += 1;
        }
        Scan::Error
    }

    pub fn scan(&mut self) -> Scan<'a> {
        let b = self.b;
        while self.pos < b.len() && b[self.pos] <= b' ' {
            self.pos += 1;
        }
        if self.pos >= b.len() {
            return Scan::End;
        }
        // Key.
        let start = self.pos;
        let key_end;
        loop {
            if self.pos >= b.len() {
                return self.bare_key(start, b.len());
            }
            let c = b[self.pos];
            if c == b'=' {
                if self.pos == start {
                    self.unexpected(c);
                    return self.skip_value();
                }
                key_end = self.pos;
                if self.s[start..key_end].contains('\u{FFFD}') {
                    self.syntax_error("invalid key");
                    return self.skip_value();
                }
                break;
            } else if c == b'"' {
                self.unexpected(c);
                return self.skip_value();
            } else if c <= b' ' {
                return self.bare_key(start, self.pos);
            }
            self.pos += 1;
        }
        let key = &self.s[start..key_end];
        // '='
        self.pos += 1;
        if self.pos >= b.len() || b[self.pos] <= b' ' {
            return Scan::Pair(key, None);
        }
        if b[self.pos] == b'"' {
            return self.quoted(key);
        }
        let vstart = self.pos;
        while self.pos < b.len() {
            let c = b[self.pos];
            if c == b'=' || c == b'"' {
                self.unexpected(c);
                return self.skip_value();
            }
            if c <= b' ' {
                break;
            }
            self.pos += 1;
        }
        Scan::Pair(key, Some(Cow::Borrowed(&self.s[vstart..self.pos])))
    }

    fn bare_key(&mut self, start: usize, end: usize) -> Scan<'a> {
        self.pos = end;
        let key = &self.s[start..end];
        if key.contains('\u{FFFD}') {
            self.syntax_error("invalid key");
            return Scan::Error;
        }
        Scan::Pair(key, None)
    }

    fn quoted(&mut self, key: &'a str) -> Scan<'a> {
        let start = self.pos;
        let b = self.b;
        let mut i = start + 1;
        let mut has_escape = false;
        while i < b.len() {
            match b[i] {
                b'\\' => {
                    has_escape = true;
                    i += 2;
                }
                b'"' => {
                    self.pos = i + 1;
                    let inner = &self.s[start + 1..i];
                    if !has_escape {
                        return Scan::Pair(key, (!inner.is_empty()).then_some(Cow::Borrowed(inner)));
                    }
                    return match unquote(inner) {
                        Some(v) => Scan::Pair(key, (!v.is_empty()).then_some(Cow::Owned(v))),
                        None => {
                            self.syntax_error("invalid quoted value");
                            Scan::Error
                        }
                    };
                }
                _ => i += 1,
            }
        }
        self.pos = b.len();
        self.syntax_error("unterminated quoted value");
        Scan::Error
    }
}

/// Go's JSON-style unquoting of the inside of a quoted value; `None` when it is invalid.
fn unquote(inner: &str) -> Option<String> {
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next()? {
                c @ ('"' | '\\' | '/' | '\'') => out.push(c),
                'b' => out.push('\u{8}'),
                'f' => out.push('\u{c}'),
                'n' => out.push('\n'),
                'r' => out.push('\r'),
                't' => out.push('\t'),
                'u' => {
                    let hex: String = chars.by_ref().take(4).collect();
                    let cp = u32::from_str_radix(&hex, 16).ok().filter(|_| hex.len() == 4)?;
                    if (0xD800..0xE000).contains(&cp) {
                        let rest: String = chars.clone().take(6).collect();
                        let low = rest
                            .strip_prefix("\\u")
                            .and_then(|h| u32::from_str_radix(h, 16).ok())
                            .filter(|l| (0xD800..0xDC00).contains(&cp) && (0xDC00..0xE000).contains(l));
                        match low {
                            Some(low) => {
                                for _ in 0..6 {
                                    chars.next();
                                }
                                let combined = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
                                out.push(char::from_u32(combined).unwrap_or('\u{FFFD}'));
                            }
                            None => out.push('\u{FFFD}'),
                        }
                    } else {
                        out.push(char::from_u32(cp).unwrap_or('\u{FFFD}'));
                    }
                }
                _ => return None,
            },
            '"' => return None,
            c if (c as u32) < 0x20 => return None,
            c => out.push(c),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(line: &str, strict: bool) -> (Vec<(String, Option<String>)>, Option<String>) {
        let mut d = Decoder::new(line);
        let mut out = Vec::new();
        while !d.at_end() {
            match d.scan() {
                Scan::Pair(k, v) => out.push((k.to_string(), v.map(Cow::into_owned))),
                Scan::Error if strict => break,
                Scan::Error | Scan::End => {}
            }
        }
        (out, d.error().map(str::to_string))
    }

    #[test]
    fn scans_like_go_logfmt() {
        let (got, err) = all(r#"level=info msg="hello \"you\"" bare empty= n=5"#, false);
        assert_eq!(err, None);
        let want = vec![
            ("level".to_string(), Some("info".to_string())),
            ("msg".to_string(), Some("hello \"you\"".to_string())),
            ("bare".to_string(), None),
            ("empty".to_string(), None),
            ("n".to_string(), Some("5".to_string())),
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn skips_errors_unless_strict() {
        let (got, err) = all(r#"a=b =c d="e"f x=1"#, false);
        assert_eq!(got.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), ["a", "d", "f", "x"]);
        assert!(err.unwrap().contains("unexpected '='"));
        let (got, err) = all(r#"a=b =c x=1"#, true);
        assert_eq!(got.len(), 1);
        assert_eq!(err.unwrap(), "logfmt syntax error at pos 5 : unexpected '='");
        let (_, err) = all(r#"a="open"#, true);
        assert!(err.unwrap().contains("unterminated"));
    }
}
