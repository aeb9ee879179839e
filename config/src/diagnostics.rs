//! Turning configuration problems into `FILE:LINE:COL: key.path: what is wrong`.
//!
//! Syntax errors and type errors carry a byte span from the TOML parser; semantic problems from
//! [`crate::Validate`] carry a key path, which we resolve to a span by walking the spanned
//! document. A key that is absent from the file (a default that fails a check, or an
//! environment override) is reported at line 1, column 1.

use crate::Validate;
use serde::de::DeserializeOwned;
use std::fmt;
use std::ops::Range;
use std::path::Path;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// One problem in one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub file: String,
    pub line: usize,
    pub column: usize,
    /// Dotted key path, e.g. `sources.files[0].include`; empty for syntax errors.
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        if self.line == 0 {
            // Not about a position in the file (it could not be read at all).
            return write!(f, "{}: {}", self.file, self.message);
        }
        let key = if self.key.is_empty() { "(syntax)" } else { &self.key };
        write!(f, "{}:{}:{}: {}: {}", self.file, self.line, self.column, key, self.message)
    }
}

/// Every problem found in a config file, one per line when displayed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// Reads a config file, turning I/O errors into a problem that names the file.
pub fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| ConfigError {
        problems: vec![Problem {
            file: path.display().to_string(),
            line: 0,
            column: 0,
            key: String::new(),
            message: format!("cannot read the config file: {e}"),
        }],
    })
}

/// Parses and deserializes `text` (the contents of `path`) into `T`.
pub fn parse<T: DeserializeOwned>(path: &Path, text: &str) -> Result<T, ConfigError> {
    let file = path.display().to_string();
    let table = DeTable::parse(text).map_err(|e| ConfigError {
        problems: vec![problem_at(&file, text, e.span().map_or(0, |s| s.start), String::new(), e.message())],
    })?;
    let de = toml::de::Deserializer::from(table);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let mut key = e.path().to_string();
        if key == "." {
            key.clear();
        }
        let inner = e.inner();
        let message = inner.message().to_string();
        // For an unknown key the path names its table; add the key itself.
        if let Some(rest) = message.strip_prefix("unknown field `")
            && let Some(name) = rest.split('`').next()
            && key.rsplit('.').next() != Some(name)
        {
            key = if key.is_empty() { name.to_string() } else { format!("{key}.{name}") };
        }
        let offset = inner.span().map(|s| s.start).or_else(|| span_of(text, &key).map(|s| s.start)).unwrap_or(0);
        ConfigError { problems: vec![problem_at(&file, text, offset, key, &message)] }
    })
}

/// Runs the semantic checks of `cfg` and reports every problem with its position in `text`.
pub fn check<T: Validate>(path: &Path, text: &str, cfg: &T) -> Result<(), ConfigError> {
    let mut found = Vec::new();
    cfg.validate(&mut found);
    if found.is_empty() {
        return Ok(());
    }
    let file = path.display().to_string();
    let problems = found
        .into_iter()
        .map(|(key, message)| {
            let offset = span_of(text, &key).map_or(usize::MAX, |s| s.start);
            problem_at(&file, text, offset, key, &message)
        })
        .collect();
    Err(ConfigError { problems })
}

fn problem_at(file: &str, text: &str, offset: usize, key: String, message: &str) -> Problem {
    let (line, column) = if offset == usize::MAX { (1, 1) } else { line_col(text, offset) };
    Problem { file: file.to_string(), line, column, key, message: message.to_string() }
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

enum Segment<'a> {
    Key(&'a str),
    Index(usize),
}

fn segments(path: &str) -> Vec<Segment<'_>> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let (name, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !name.is_empty() {
            out.push(Segment::Key(name));
        }
        while let Some(stripped) = rest.strip_prefix('[') {
            let end = stripped.find(']').unwrap_or(stripped.len());
            if let Ok(i) = stripped[..end].parse() {
                out.push(Segment::Index(i));
            }
            rest = stripped.get(end + 1..).unwrap_or("");
        }
    }
    out
}

/// The span of the value at `path` in `text`, or of its nearest ancestor present in the file.
pub fn span_of(text: &str, path: &str) -> Option<Range<usize>> {
    let root = DeTable::parse(text).ok()?;
    let mut best: Option<Range<usize>> = None;
    let mut value: Option<&Spanned<DeValue>> = None;
    let mut table: Option<&DeTable> = Some(root.get_ref());
    for seg in segments(path) {
        let next = match (seg, table, value.map(|v| v.get_ref())) {
            (Segment::Key(k), Some(t), _) => t.iter().find(|(key, _)| key.get_ref() == k).map(|(key, v)| {
                // Point at the key for tables (where a header or dotted key names it), at the
                // value otherwise.
                if matches!(v.get_ref(), DeValue::Table(_)) { (key.span(), v) } else { (v.span(), v) }
            }),
            (Segment::Index(i), _, Some(DeValue::Array(a))) => a.get(i).map(|v| (v.span(), v)),
            _ => None,
        };
        let Some((span, v)) = next else { break };
        best = Some(span);
        value = Some(v);
        table = match v.get_ref() {
            DeValue::Table(t) => Some(t),
            _ => None,
        };
    }
    best
}
