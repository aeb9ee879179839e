//! Runs a log query's stages over one entry: filters the line, builds its labels.
//!
//! Labels come in three categories, with Loki's precedence: stream labels, structured metadata,
//! parsed labels (parsed > metadata > stream when names collide). A parser never overwrites a
//! stream label: a name the stream already has gets the `_extracted` suffix. `__error__` and
//! `__error_details__` are kept apart and appended last, as Loki does.

use super::ast::{LabelFilter, LogQuery, Stage};
use super::{json, logfmt};
use crate::logs::SharedLabels;
use std::borrow::Cow;
use std::sync::Arc;

type LabelPairs = Vec<(String, String)>;

pub const ERROR_LABEL: &str = "__error__";
pub const ERROR_DETAILS_LABEL: &str = "__error_details__";

/// The labels of one entry while its pipeline runs. Reused across entries.
#[derive(Default)]
pub struct LabelState {
    stream: Option<SharedLabels>,
    metadata: Vec<(String, String)>,
    parsed: Vec<(String, String)>,
    deleted: Vec<String>,
    pub err: Option<&'static str>,
    pub err_details: Option<String>,
}

fn find<'a>(v: &'a [(String, String)], name: &str) -> Option<&'a str> {
    v.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

impl LabelState {
    fn reset(&mut self, stream: &SharedLabels) {
        self.stream = Some(stream.clone());
        self.metadata.clear();
        self.parsed.clear();
        self.deleted.clear();
        self.err = None;
        self.err_details = None;
    }

    fn stream_labels(&self) -> &[(String, String)] {
        self.stream.as_deref().map_or(&[], |v| v.as_slice())
    }

    fn stream_has(&self, name: &str) -> bool {
        self.stream_labels().iter().any(|(k, _)| k == name)
    }

    /// A parsed label's final name: `_extracted` when a stream label has it.
    fn parsed_name<'n>(&self, name: &'n str) -> Cow<'n, str> {
        if self.stream_has(name) { Cow::Owned(format!("{name}_extracted")) } else { Cow::Borrowed(name) }
    }

    /// The current value of a label, as stages see it.
    pub fn get(&self, name: &str) -> Option<&str> {
        if let Some(v) = find(&self.parsed, name) {
            return Some(v);
        }
        if let Some(v) = find(&self.metadata, name) {
            return Some(v);
        }
        if self.deleted.iter().any(|d| d == name) {
            return None;
        }
        find(self.stream_labels(), name)
    }

    /// Like [`Self::get`], but also sees the error labels (what templates see).
    fn get_with_errors(&self, name: &str) -> Option<&str> {
        match name {
            ERROR_LABEL if self.err.is_some() => self.err,
            ERROR_DETAILS_LABEL if self.err_details.is_some() => self.err_details.as_deref(),
            _ => self.get(name),
        }
    }

    fn add_metadata(&mut self, name: &str, value: &str) {
        let name = self.parsed_name(name).into_owned();
        match name.as_str() {
            ERROR_LABEL => self.err = Some("StructuredMetadataErr"),
            ERROR_DETAILS_LABEL => self.err_details = Some(value.to_string()),
            _ => match self.metadata.iter_mut().find(|(k, _)| *k == name) {
                Some(slot) => slot.1 = value.to_string(),
                None => self.metadata.push((name, value.to_string())),
            },
        }
    }

    pub fn set_parsed(&mut self, name: &str, value: &str) {
        self.metadata.retain(|(k, _)| k != name);
        match self.parsed.iter_mut().find(|(k, _)| k == name) {
            Some(slot) => {
                slot.1.clear();
                slot.1.push_str(value);
            }
            None => self.parsed.push((name.to_string(), value.to_string())),
        }
    }

    fn set_err(&mut self, err: &'static str, details: Option<String>) {
        self.err = Some(err);
        if details.is_some() {
            self.err_details = details;
        }
    }

    fn delete(&mut self, name: &str) {
        match name {
            ERROR_LABEL => self.err = None,
            ERROR_DETAILS_LABEL => self.err_details = None,
            _ => {
                self.parsed.retain(|(k, _)| k != name);
                self.metadata.retain(|(k, _)| k != name);
                if !self.deleted.iter().any(|d| d == name) {
                    self.deleted.push(name.to_string());
                }
            }
        }
    }

    /// True when the labels are exactly the stream's (nothing added, removed or errored).
    pub fn is_stream_only(&self) -> bool {
        self.metadata.is_empty() && self.parsed.is_empty() && self.deleted.is_empty() && self.err.is_none()
    }

    /// The entry's labels by category, each sorted: (stream, structured metadata, parsed). The
    /// error labels are part of `parsed`.
    pub fn categories(&self) -> (LabelPairs, LabelPairs, LabelPairs) {
        let shadowed = |k: &str| find(&self.metadata, k).is_some() || find(&self.parsed, k).is_some();
        let mut stream: Vec<(String, String)> = self
            .stream_labels()
            .iter()
            .filter(|(k, _)| !self.deleted.iter().any(|d| d == k) && !shadowed(k))
            .cloned()
            .collect();
        let mut metadata: Vec<(String, String)> =
            self.metadata.iter().filter(|(k, _)| find(&self.parsed, k).is_none()).cloned().collect();
        let mut parsed = self.parsed.clone();
        if let Some(e) = self.err {
            parsed.push((ERROR_LABEL.to_string(), e.to_string()));
        }
        if let Some(d) = &self.err_details {
            parsed.push((ERROR_DETAILS_LABEL.to_string(), d.clone()));
        }
        stream.sort();
        metadata.sort();
        parsed.sort();
        (stream, metadata, parsed)
    }

    /// All labels, sorted (what Loki returns as a stream's labels without categorize-labels).
    pub fn all(&self) -> Vec<(String, String)> {
        let (mut a, b, c) = self.categories();
        a.extend(b);
        a.extend(c);
        a.sort();
        a
    }

    /// The labels named (`by`) or not named (`without`) in a grouping, sorted.
    pub fn project(&self, names: &[String], without: bool) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> =
            self.all().into_iter().filter(|(k, _)| names.iter().any(|n| n == k) != without).collect();
        out.sort();
        out
    }
}

/// Runs pipelines; holds the buffers reused from one entry to the next.
#[derive(Default)]
pub struct Evaluator {
    pub labels: LabelState,
    line: String,
    scratch: String,
    rewritten: bool,
}

/// Sanitizes a parsed key into a label name as Loki does: trimmed, a leading digit prefixed
/// with `_`, every other character outside `[A-Za-z0-9_]` replaced by `_`.
pub fn sanitize_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 1);
    if key.trim_start().as_bytes().first().is_some_and(u8::is_ascii_digit) {
        out.push('_');
    }
    json::push_sanitized(&mut out, key);
    out
}

impl Evaluator {
    /// The line after the pipeline (rewritten by `line_format`, or the original).
    pub fn line<'a>(&'a self, original: &'a str) -> &'a str {
        if self.rewritten { &self.line } else { original }
    }

    /// Runs `q`'s stages over one entry; false when a stage drops it. Labels are then in
    /// `self.labels` and the line in [`Self::line`].
    pub fn process(
        &mut self,
        q: &LogQuery,
        ts: i64,
        line: &str,
        stream: &SharedLabels,
        metadata: &[(&str, &str)],
    ) -> bool {
        let Evaluator { labels, line: buf, scratch, rewritten } = self;
        labels.reset(stream);
        *rewritten = false;
        for (k, v) in metadata {
            labels.add_metadata(k, v);
        }
        for stage in &q.stages {
            let cur: &str = if *rewritten { buf } else { line };
            match stage {
                Stage::LineFilter(f) => {
                    if !f.keep(cur) {
                        return false;
                    }
                }
                Stage::Json(params) if params.is_empty() => {
                    let r = json::flatten(cur, &mut |name, value| {
                        let name = labels.parsed_name(name);
                        labels.set_parsed(&name, &value);
                    });
                    if let Err(e) = r {
                        labels.set_err("JSONParserErr", Some(e));
                    }
                }
                Stage::Json(params) => {
                    if cur.is_empty() {
                        continue;
                    }
                    if !matches!(cur.as_bytes()[0], b'"' | b'{' | b'[') {
                        labels.set_err("JSONParserErr", None);
                        continue;
                    }
                    for (id, path) in params {
                        match json::extract(cur, path) {
                            Ok(v) => {
                                let name = labels.parsed_name(id);
                                labels.set_parsed(&name, &v);
                            }
                            Err(e) => labels.set_err("JSONParserErr", Some(e)),
                        }
                    }
                }
                Stage::Logfmt { strict, keep_empty, params } => {
                    run_logfmt(labels, cur, *strict, *keep_empty, params);
                }
                Stage::Regexp { re, names } => {
                    if let Some(caps) = re.captures(cur) {
                        for (i, name) in names {
                            let value = caps.get(*i).map_or("", |m| m.as_str());
                            let name = labels.parsed_name(name);
                            labels.set_parsed(&name, value);
                        }
                    }
                }
                Stage::Pattern(p) => {
                    p.captures(cur, |name, value| {
                        let name = labels.parsed_name(name);
                        labels.set_parsed(&name, value);
                    });
                }
                Stage::LabelFilter(f) => {
                    if !label_filter(labels, f) {
                        return false;
                    }
                }
                Stage::LineFormat(t) => {
                    let r = t.render(|k| labels.get_with_errors(k), cur, ts, scratch);
                    match r {
                        Ok(()) => {
                            std::mem::swap(buf, scratch);
                            *rewritten = true;
                        }
                        Err(e) => labels.set_err("TemplateFormatErr", Some(e)),
                    }
                }
                Stage::Drop(refs) => {
                    for r in refs {
                        let matches = match &r.matcher {
                            None => true,
                            Some(m) => m.matches(labels.get_with_errors(&r.name).unwrap_or("")),
                        };
                        if matches {
                            labels.delete(&r.name);
                        }
                    }
                }
                Stage::Keep(refs) => {
                    let (s, m, p) = labels.categories();
                    for (name, value) in s.iter().chain(m.iter()).chain(p.iter()) {
                        if name == ERROR_LABEL || name == ERROR_DETAILS_LABEL {
                            continue;
                        }
                        let keep = refs.iter().any(|r| match &r.matcher {
                            Some(m) => r.name == *name && m.matches(value),
                            None => r.name == *name,
                        });
                        if !keep {
                            labels.delete(name);
                        }
                    }
                }
            }
        }
        true
    }
}

fn run_logfmt(labels: &mut LabelState, line: &str, strict: bool, keep_empty: bool, params: &[(String, String)]) {
    let mut dec = logfmt::Decoder::new(line);
    if !params.is_empty() {
        for (id, _) in params {
            if !labels.stream_has(id) {
                labels.set_parsed(id, "");
            }
        }
    }
    while !dec.at_end() {
        let (key, value) = match dec.scan() {
            logfmt::Scan::Pair(k, v) => (k, v),
            logfmt::Scan::Error if strict => break,
            logfmt::Scan::Error | logfmt::Scan::End => continue,
        };
        let key = sanitize_key(key);
        if key.is_empty() {
            continue;
        }
        let mut value = value.unwrap_or(Cow::Borrowed(""));
        if value.contains('\u{FFFD}') {
            value = Cow::Borrowed("");
        }
        if params.is_empty() {
            if !keep_empty && value.is_empty() {
                continue;
            }
            let name = labels.parsed_name(&key);
            labels.set_parsed(&name, &value);
        } else {
            for (id, field) in params {
                if *field == key {
                    let name = labels.parsed_name(id);
                    labels.set_parsed(&name, &value);
                }
            }
        }
    }
    if strict && let Some(e) = dec.error() {
        labels.set_err("LogfmtParserErr", Some(e.to_string()));
    }
}

/// Evaluates a label filter; numeric filters on unparsable values set `__error__` and pass.
fn label_filter(labels: &mut LabelState, f: &LabelFilter) -> bool {
    match f {
        LabelFilter::And(a, b) => {
            let l = label_filter(labels, a);
            let r = label_filter(labels, b);
            l && r
        }
        LabelFilter::Or(a, b) => label_filter(labels, a) || label_filter(labels, b),
        LabelFilter::String(m) => {
            let v = if m.name == ERROR_LABEL { labels.err.unwrap_or("") } else { labels.get(&m.name).unwrap_or("") };
            m.matches(v)
        }
        LabelFilter::Number { name, op, value } => {
            let Some(v) = labels.get(name) else { return false };
            match super::parse_go_float(v) {
                Some(x) => op.test(x, *value),
                None => {
                    if labels.err.is_none() {
                        let details = format!("strconv.ParseFloat: parsing {v:?}: invalid syntax");
                        labels.set_err("LabelFilterErr", Some(details));
                    }
                    true
                }
            }
        }
        LabelFilter::Duration { name, op, nanos } => {
            let Some(v) = labels.get(name) else { return false };
            match super::parse_go_duration(v) {
                Some(x) => op.test(x, *nanos),
                None => {
                    if labels.err.is_none() {
                        let details = format!("time: invalid duration {v:?}");
                        labels.set_err("LabelFilterErr", Some(details));
                    }
                    true
                }
            }
        }
        LabelFilter::Bytes { name, op, bytes } => {
            let Some(v) = labels.get(name) else { return false };
            match super::parse_bytes(v) {
                Some(x) => op.test(x, *bytes),
                None => {
                    if labels.err.is_none() {
                        let details = format!("invalid size {v:?}");
                        labels.set_err("LabelFilterErr", Some(details));
                    }
                    true
                }
            }
        }
    }
}

/// A result label set, by category, shared by every entry that has it.
#[derive(Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResultLabels {
    /// Everything, sorted: the stream of a default (non-categorized) Loki answer.
    pub all: Vec<(String, String)>,
    pub stream: Vec<(String, String)>,
    pub metadata: Vec<(String, String)>,
    pub parsed: Vec<(String, String)>,
}

impl ResultLabels {
    pub fn from_state(state: &LabelState) -> ResultLabels {
        let (stream, metadata, parsed) = state.categories();
        let mut all: Vec<(String, String)> =
            stream.iter().chain(metadata.iter()).chain(parsed.iter()).cloned().collect();
        all.sort();
        ResultLabels { all, stream, metadata, parsed }
    }

    pub fn from_stream(stream: &[(String, String)]) -> ResultLabels {
        let mut s = stream.to_vec();
        s.sort();
        ResultLabels { all: s.clone(), stream: s, metadata: Vec::new(), parsed: Vec::new() }
    }

    /// Approximate heap bytes, for the query memory budget.
    pub fn heap_bytes(&self) -> usize {
        let f = |v: &[(String, String)]| v.iter().map(|(k, v)| super::engine::pair_bytes(k, v)).sum::<usize>();
        f(&self.all) * 2 + 64
    }
}

/// Interns result label sets so entries share them; keeps a clone of each stream `Arc` it keys
/// by pointer so the address cannot be reused by another stream while the table lives.
#[derive(Default)]
pub struct Interner {
    by_stream: std::collections::HashMap<usize, (SharedLabels, Arc<ResultLabels>)>,
    by_value: std::collections::HashMap<Arc<ResultLabels>, ()>,
}

impl Interner {
    /// The label set of the entry `state` describes; `new_bytes` is charged for a new one.
    pub fn intern(&mut self, state: &LabelState, new_bytes: &mut usize) -> Arc<ResultLabels> {
        if state.is_stream_only()
            && let Some(stream) = &state.stream
        {
            let key = Arc::as_ptr(stream) as usize;
            if let Some((_, r)) = self.by_stream.get(&key) {
                return r.clone();
            }
            let r = self.value(ResultLabels::from_stream(stream), new_bytes);
            self.by_stream.insert(key, (stream.clone(), r.clone()));
            return r;
        }
        self.value(ResultLabels::from_state(state), new_bytes)
    }

    fn value(&mut self, r: ResultLabels, new_bytes: &mut usize) -> Arc<ResultLabels> {
        if let Some((existing, _)) = self.by_value.get_key_value(&r) {
            return existing.clone();
        }
        *new_bytes += r.heap_bytes();
        let r = Arc::new(r);
        self.by_value.insert(r.clone(), ());
        r
    }
}
