//! Search is exact: the query engine, running over the real log store, answers every random
//! query from the supported language exactly like a naive evaluator over the same data.
//!
//! The data: every line of the shared loghub files (one stream per file) plus generated JSON and
//! logfmt streams with structured metadata, pushed in interleaved batches so the store visits
//! streams in mixed order. Timestamps repeat within and across streams, so ordering ties are
//! exercised.
//!
//! The naive evaluator below is independent code: it keeps every entry in a vector, runs each
//! stage with the simplest means (serde_json, `str::contains`, a fresh `Regex`, hand-split
//! logfmt of well-formed lines), sorts everything, and evaluates metric queries step by step
//! over all entries. It shares nothing with the engine but the `regex` crate. Queries are
//! generated as specs, rendered to LogQL text (so the parser is under test too), and compared:
//! identical streams, lines, order and counts; metric values equal up to float rounding.
//!
//! `__error_details__` is free text that only the engine's parsers can word, so generated
//! queries drop it right after `| json` (a real LogQL stage); `__error__` itself is compared.

use osprey_collector::logql::engine::{self, Limits, LogParams, Steps, Value};
use osprey_collector::logql::{self, Expr};
use osprey_collector::logs::LogStore;
use osprey_protocol::logproto::{EntryAdapter, LabelPairAdapter, PushRequest, StreamAdapter, Timestamp};
use proptest::prelude::*;
use regex::Regex;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;
use std::time::Duration;

const BASE: i64 = 1_700_000_000_000_000_000;
const SEC: i64 = 1_000_000_000;
const TENANT: &str = "exact";

type Labels = Vec<(String, String)>;

#[derive(Clone, Debug)]
struct NEntry {
    ts: i64,
    line: String,
    meta: Vec<(String, String)>,
}

#[derive(Clone, Debug)]
struct NStream {
    labels: Labels,
    entries: Vec<NEntry>,
}

struct Dataset {
    store: LogStore,
    streams: Vec<NStream>,
    _rt: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
}

/// A tiny deterministic generator, so the data is the same on every run.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn pick<'a>(&mut self, v: &[&'a str]) -> &'a str {
        v[(self.next() as usize) % v.len()]
    }
}

fn sorted(mut l: Labels) -> Labels {
    l.sort();
    l
}

fn lbl(pairs: &[(&str, &str)]) -> Labels {
    sorted(pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect())
}

fn build_streams() -> Vec<NStream> {
    let mut streams = Vec::new();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/loghub");
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.retain(|p| p.extension().is_some_and(|e| e == "log"));
    files.sort();
    for path in files {
        let stem = path.file_stem().unwrap().to_string_lossy().to_string();
        let app = stem.split('_').next().unwrap().to_lowercase();
        let text = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned();
        let entries = text
            .lines()
            .enumerate()
            .map(|(i, l)| NEntry { ts: BASE + (i as i64 / 2) * SEC / 2, line: l.trim_end().to_string(), meta: vec![] })
            .collect();
        streams.push(NStream { labels: lbl(&[("job", "loghub"), ("app", &app)]), entries });
    }
    let mut r = Lcg(7);
    for env in ["prod", "dev"] {
        let mut entries = Vec::new();
        for i in 0..800i64 {
            let level = r.pick(&["info", "warn", "error", "debug"]);
            let status = if i % 29 == 0 {
                "\"n/a\"".to_string()
            } else {
                r.pick(&["200", "201", "404", "500", "503"]).to_string()
            };
            let dur = r.pick(&["15ms", "1.5s", "250us", "2m", "900ms"]);
            let line = if i % 37 == 0 {
                format!("{{broken json line {i}")
            } else {
                format!(
                    r#"{{"level":"{level}","status":{status},"dur":"{dur}","msg":"request {} done","user":{{"id":"u{}","tags":["a"]}},"job":"api","ok":{}}}"#,
                    r.next() % 97,
                    r.next() % 13,
                    i % 2 == 0
                )
            };
            let meta = if i % 3 == 0 { vec![("trace_id".to_string(), format!("t{}", r.next() % 50))] } else { vec![] };
            entries.push(NEntry { ts: BASE + i * 600_000_000, line, meta });
        }
        streams.push(NStream { labels: lbl(&[("job", "gen"), ("format", "json"), ("env", env)]), entries });
    }
    let mut entries = Vec::new();
    for i in 0..800i64 {
        let level = r.pick(&["info", "warn", "error"]);
        let status = if i % 31 == 0 { "n/a" } else { r.pick(&["200", "404", "503"]) };
        let dur = r.pick(&["15ms", "1.5s", "250us"]);
        let line = format!(
            r#"level={level} status={status} dur={dur} msg="hello \"q\" {}" bare empty= user=u{}"#,
            r.next() % 11,
            r.next() % 7
        );
        let meta = if i % 4 == 1 { vec![("trace_id".to_string(), format!("t{}", r.next() % 50))] } else { vec![] };
        entries.push(NEntry { ts: BASE + (i / 3) * 1_500_000_000, line, meta });
    }
    streams.push(NStream { labels: lbl(&[("job", "gen"), ("format", "logfmt")]), entries });
    streams
}

fn dataset() -> &'static Dataset {
    static DATA: OnceLock<Dataset> = OnceLock::new();
    DATA.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = osprey_config::CollectorConfig { data_dir: dir.path().to_path_buf(), ..Default::default() };
        cfg.logs.fsync = osprey_config::collector::FsyncMode::Never;
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let mut registry = prometheus_client::registry::Registry::default();
        let telemetry = osprey_collector::telemetry::Telemetry::new(&mut registry);
        let store = LogStore::open(&cfg, telemetry).unwrap();
        let streams = build_streams();
        // Batches of 100 entries per stream, interleaved in a shuffled order.
        let mut batches: Vec<(usize, usize)> = Vec::new();
        for (si, s) in streams.iter().enumerate() {
            for start in (0..s.entries.len()).step_by(100) {
                batches.push((si, start));
            }
        }
        let mut r = Lcg(11);
        let mut order: Vec<(usize, usize)> = Vec::new();
        let mut next: Vec<usize> = vec![0; streams.len()];
        while order.len() < batches.len() {
            let si = (r.next() as usize) % streams.len();
            if next[si] < streams[si].entries.len() {
                order.push((si, next[si]));
                next[si] += 100;
            }
        }
        for (si, start) in order {
            let s = &streams[si];
            let entries = s.entries[start..(start + 100).min(s.entries.len())]
                .iter()
                .map(|e| EntryAdapter {
                    timestamp: Some(Timestamp::from_unix_nanos(e.ts)),
                    line: e.line.clone(),
                    structured_metadata: e
                        .meta
                        .iter()
                        .map(|(k, v)| LabelPairAdapter { name: k.clone(), value: v.clone() })
                        .collect(),
                })
                .collect();
            let labels = osprey_protocol::loki_labels::format(&s.labels);
            let req = PushRequest { streams: vec![StreamAdapter { labels, entries, hash: 0 }] };
            let out = rt.block_on(store.push(TENANT, req)).unwrap();
            assert!(out.refused.is_empty(), "{:?}", out.refused);
        }
        Dataset { store, streams, _rt: rt, _dir: dir }
    })
}

// ------------------------------------------------------------------------------------------
// Query specs
// ------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq)]
enum Scope {
    Any,
    Json,
    Logfmt,
}

#[derive(Clone, Debug)]
struct Sel(Vec<(&'static str, &'static str, &'static str)>);

#[derive(Clone, Debug)]
enum LabelF {
    Str(&'static str, &'static str, &'static str),
    Num(&'static str, &'static str, f64),
    Dur(&'static str, &'static str, &'static str),
    And(Box<LabelF>, Box<LabelF>),
    Or(Box<LabelF>, Box<LabelF>),
}

#[derive(Clone, Debug)]
enum SStage {
    Line { op: &'static str, pats: Vec<&'static str> },
    Json,
    Logfmt,
    Pattern(&'static str),
    Regexp(&'static str),
    Label(LabelF),
    Format(&'static str),
    Drop(Vec<&'static str>),
}

#[derive(Clone, Debug)]
struct LogSpec {
    sel: Sel,
    stages: Vec<SStage>,
}

type Matchers = &'static [(&'static str, &'static str, &'static str)];
const SELECTORS: &[(Scope, Matchers)] = &[
    (Scope::Any, &[("job", "=", "loghub")]),
    (Scope::Any, &[("job", "=", "gen")]),
    (Scope::Any, &[("job", "=~", "loghub|gen")]),
    (Scope::Any, &[("app", "=", "openssh")]),
    (Scope::Any, &[("app", "=~", "hdfs|spark|linux")]),
    (Scope::Any, &[("job", "=", "loghub"), ("app", "!=", "apache")]),
    (Scope::Any, &[("job", "=~", ".+"), ("app", "!~", "bgl.*")]),
    (Scope::Json, &[("job", "=", "gen"), ("format", "=", "json")]),
    (Scope::Json, &[("env", "=~", "prod|dev")]),
    (Scope::Json, &[("env", "=", "dev")]),
    (Scope::Logfmt, &[("format", "=", "logfmt")]),
];

const LITERALS: &[&str] =
    &["error", "Error", "failed", "user", "info", "status", "INFO", "sshd", "ms", "1", "request 1", "block", ""];
const REGEXES: &[&str] =
    &["err(or)?", "(?i)fail", "[0-9]{3}", "^Dec", "u1[0-2]", "level=(warn|error)", "\"level\":\"(warn|error)\""];
const LABEL_NAMES: &[&str] = &[
    "level",
    "app",
    "env",
    "status",
    "trace_id",
    "job_extracted",
    "user_id",
    "format",
    "missing",
    "method",
    "__error__",
];
const LABEL_VALUES: &[&str] =
    &["info", "warn", "error", "", "openssh", "prod", "200", "u3", "t1", "JSONParserErr", "LabelFilterErr"];
const LABEL_REGEXES: &[&str] = &["warn|error", "u1.*", ".+", "t[0-9]", "5.."];
const TEMPLATES: &[&str] =
    &["{{.level}} {{.status}}", "{{ .msg | ToUpper }}", "{{ __line__ }} x", "[{{.app}}] {{.missing}}"];
const PATTERNS: &[&str] = &["<month> <day> <_> <host> <process>: <rest>", "<_> <level> <_>", "<first> <_>"];
const REGEXPS: &[&str] =
    &[r"(?P<method>[A-Z]+) (?P<path>\S+)", r"user[= ](?P<user_id>\w+)", r"(?P<level>INFO|WARN|ERROR)"];

fn label_filter_strategy() -> impl Strategy<Value = LabelF> {
    let leaf = prop_oneof![
        (0..LABEL_NAMES.len(), 0..4usize, 0..LABEL_VALUES.len(), 0..LABEL_REGEXES.len()).prop_map(|(n, o, v, re)| {
            let op = ["=", "!=", "=~", "!~"][o];
            let value = if o >= 2 { LABEL_REGEXES[re] } else { LABEL_VALUES[v] };
            LabelF::Str(LABEL_NAMES[n], op, value)
        }),
        (0..6usize, prop::sample::select(vec![200.0, 404.0, 500.0, 250.5]))
            .prop_map(|(o, v)| { LabelF::Num("status", [">", ">=", "<", "<=", "==", "!="][o], v) }),
        (0..4usize, prop::sample::select(vec!["1s", "100ms", "1m30s"]))
            .prop_map(|(o, v)| { LabelF::Dur("dur", [">", ">=", "<", "!="][o], v) }),
    ];
    leaf.prop_recursive(2, 4, 2, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| LabelF::And(Box::new(a), Box::new(b))),
            (inner.clone(), inner).prop_map(|(a, b)| LabelF::Or(Box::new(a), Box::new(b))),
        ]
    })
}

fn stage_strategy(scope: Scope) -> BoxedStrategy<SStage> {
    let line = (0..4usize, prop::collection::vec(0..LITERALS.len().max(REGEXES.len()), 1..3)).prop_map(|(o, idx)| {
        let op = ["|=", "!=", "|~", "!~"][o];
        let pats = idx
            .iter()
            .map(|i| if o >= 2 { REGEXES[i % REGEXES.len()] } else { LITERALS[i % LITERALS.len()] })
            .collect();
        SStage::Line { op, pats }
    });
    let parser = match scope {
        Scope::Logfmt => {
            prop_oneof![Just(SStage::Logfmt), (0..REGEXPS.len()).prop_map(|i| SStage::Regexp(REGEXPS[i]))].boxed()
        }
        _ => prop_oneof![
            Just(SStage::Json),
            (0..PATTERNS.len()).prop_map(|i| SStage::Pattern(PATTERNS[i])),
            (0..REGEXPS.len()).prop_map(|i| SStage::Regexp(REGEXPS[i])),
        ]
        .boxed(),
    };
    prop_oneof![
        4 => line,
        3 => parser,
        3 => label_filter_strategy().prop_map(SStage::Label),
        1 => (0..TEMPLATES.len()).prop_map(|i| SStage::Format(TEMPLATES[i])),
        1 => prop::collection::vec(prop::sample::select(vec!["level", "trace_id", "app", "__error__", "status"]), 1..3)
            .prop_map(SStage::Drop),
    ]
    .boxed()
}

fn log_spec_strategy() -> impl Strategy<Value = LogSpec> {
    (0..SELECTORS.len()).prop_flat_map(|si| {
        let (scope, sel) = SELECTORS[si];
        prop::collection::vec(stage_strategy(scope), 0..5)
            .prop_map(move |stages| LogSpec { sel: Sel(sel.to_vec()), stages })
    })
}

fn quote(s: &str) -> String {
    format!("`{s}`")
}

fn render_label(f: &LabelF) -> String {
    match f {
        LabelF::Str(n, op, v) => format!("{n}{op}{}", quote(v)),
        LabelF::Num(n, op, v) => format!("{n} {op} {v}"),
        LabelF::Dur(n, op, v) => format!("{n} {op} {v}"),
        LabelF::And(a, b) => format!("({} and {})", render_label(a), render_label(b)),
        LabelF::Or(a, b) => format!("({} or {})", render_label(a), render_label(b)),
    }
}

fn render_log(s: &LogSpec) -> String {
    let sel: Vec<String> = s.sel.0.iter().map(|(n, op, v)| format!("{n}{op}{}", quote(v))).collect();
    let mut out = format!("{{{}}}", sel.join(", "));
    for (i, st) in s.stages.iter().enumerate() {
        // `| drop a != "x"` reads as a matcher on `a`, in Loki too: before a `!=`/`!~` line
        // filter, the last dropped name is written as a matcher that always matches.
        let before_negative = matches!(s.stages.get(i + 1), Some(SStage::Line { op, .. }) if op.starts_with('!'));
        let drop_list = |names: &[&str]| {
            let mut list = names.join(", ");
            if before_negative {
                list.push_str("=~`.*`");
            }
            list
        };
        out.push(' ');
        match st {
            SStage::Line { op, pats } => {
                let alts: Vec<String> = pats.iter().map(|p| quote(p)).collect();
                out.push_str(&format!("{op} {}", alts.join(" or ")));
            }
            SStage::Json => out.push_str(&format!("| json | drop {}", drop_list(&["__error_details__"]))),
            SStage::Logfmt => out.push_str("| logfmt"),
            SStage::Pattern(p) => out.push_str(&format!("| pattern {}", quote(p))),
            SStage::Regexp(r) => out.push_str(&format!("| regexp {}", quote(r))),
            SStage::Label(f) => out.push_str(&format!("| {}", render_label(f))),
            SStage::Format(t) => out.push_str(&format!("| line_format {}", quote(t))),
            SStage::Drop(names) => out.push_str(&format!("| drop {}", drop_list(names))),
        }
    }
    out
}

// ------------------------------------------------------------------------------------------
// The naive evaluator
// ------------------------------------------------------------------------------------------

#[derive(Default, Clone)]
struct NLabels {
    stream: BTreeMap<String, String>,
    meta: BTreeMap<String, String>,
    parsed: BTreeMap<String, String>,
    deleted: BTreeSet<String>,
    err: Option<String>,
    details: Option<String>,
}

impl NLabels {
    fn get(&self, n: &str) -> Option<String> {
        if let Some(v) = self.parsed.get(n).or_else(|| self.meta.get(n)) {
            return Some(v.clone());
        }
        if self.deleted.contains(n) {
            return None;
        }
        self.stream.get(n).cloned()
    }
    fn name(&self, n: &str) -> String {
        if self.stream.contains_key(n) { format!("{n}_extracted") } else { n.to_string() }
    }
    fn set(&mut self, n: &str, v: &str) {
        let n = self.name(n);
        self.meta.remove(&n);
        self.parsed.insert(n, v.to_string());
    }
    fn all(&self) -> Labels {
        let mut m: BTreeMap<String, String> = BTreeMap::new();
        for (k, v) in &self.stream {
            if !self.deleted.contains(k) {
                m.insert(k.clone(), v.clone());
            }
        }
        m.extend(self.meta.clone());
        m.extend(self.parsed.clone());
        if let Some(e) = &self.err {
            m.insert("__error__".into(), e.clone());
        }
        if let Some(d) = &self.details {
            m.insert("__error_details__".into(), d.clone());
        }
        m.into_iter().collect()
    }
}

fn naive_json(line: &str, l: &mut NLabels) {
    match serde_json::from_str::<serde_json::Value>(line) {
        Ok(serde_json::Value::Object(map)) => {
            fn walk(prefix: &str, map: &serde_json::Map<String, serde_json::Value>, l: &mut NLabels) {
                for (k, v) in map {
                    let name = if prefix.is_empty() { k.clone() } else { format!("{prefix}_{k}") };
                    match v {
                        serde_json::Value::String(s) => l.set(&name, s),
                        serde_json::Value::Number(n) => l.set(&name, &n.to_string()),
                        serde_json::Value::Bool(b) => l.set(&name, &b.to_string()),
                        serde_json::Value::Object(inner) => walk(&name, inner, l),
                        _ => {}
                    }
                }
            }
            walk("", &map, l);
        }
        _ => l.err = Some("JSONParserErr".into()),
    }
}

/// logfmt of the generated (well-formed) lines: space-separated `k=v`, `k="quoted \"x\""`,
/// bare keys; empty values are skipped.
fn naive_logfmt(line: &str, l: &mut NLabels) {
    let mut rest = line.trim_start();
    while !rest.is_empty() {
        let key_end = rest.find(['=', ' ']).unwrap_or(rest.len());
        let key = &rest[..key_end];
        rest = &rest[key_end..];
        let mut value = String::new();
        if let Some(after) = rest.strip_prefix('=') {
            if let Some(q) = after.strip_prefix('"') {
                let mut chars = q.char_indices();
                let mut end = q.len();
                while let Some((i, c)) = chars.next() {
                    if c == '\\' {
                        if let Some((_, e)) = chars.next() {
                            value.push(e);
                        }
                    } else if c == '"' {
                        end = i + 1;
                        break;
                    } else {
                        value.push(c);
                    }
                }
                rest = &q[end..];
            } else {
                let end = after.find(' ').unwrap_or(after.len());
                value = after[..end].to_string();
                rest = &after[end..];
            }
        }
        if !value.is_empty() {
            l.set(key, &value);
        }
        rest = rest.trim_start();
    }
}

fn naive_pattern(p: &str, line: &str, l: &mut NLabels) {
    // Split the pattern into literals and captures.
    let re = re(r"<([A-Za-z_][A-Za-z0-9_]*)>");
    let mut parts: Vec<(bool, String)> = Vec::new();
    let mut last = 0;
    for m in re.captures_iter(p) {
        let whole = m.get(0).unwrap();
        if whole.start() > last {
            parts.push((false, p[last..whole.start()].to_string()));
        }
        parts.push((true, m[1].to_string()));
        last = whole.end();
    }
    if last < p.len() {
        parts.push((false, p[last..].to_string()));
    }
    if line.is_empty() {
        return;
    }
    let mut input = line;
    let mut i = 0;
    if !parts[0].0 {
        if !input.starts_with(parts[0].1.as_str()) {
            return;
        }
        input = &input[parts[0].1.len()..];
        i = 1;
    }
    while i < parts.len() {
        let name = &parts[i].1;
        match parts.get(i + 1) {
            None => {
                if name != "_" {
                    l.set(name, input);
                }
                return;
            }
            Some((_, lit)) => match input.find(lit.as_str()) {
                None => {
                    if name != "_" {
                        l.set(name, input);
                    }
                    return;
                }
                Some(at) => {
                    if name != "_" {
                        l.set(name, &input[..at]);
                    }
                    input = &input[at + lit.len()..];
                    i += 2;
                }
            },
        }
    }
}

/// A Go duration made of `<number><unit>` parts covering the whole string.
fn naive_dur(s: &str) -> Option<f64> {
    if !re(r"^([0-9]*\.?[0-9]+(ns|us|ms|s|m|h))+$").is_match(s) {
        return None;
    }
    let mut total = 0.0;
    for c in re(r"([0-9]*\.?[0-9]+)(ns|us|ms|s|m|h)").captures_iter(s) {
        let n: f64 = c[1].parse().ok()?;
        total += n * match &c[2] {
            "ns" => 1.0,
            "us" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            _ => 3600e9,
        };
    }
    Some(total)
}

/// Compiled regexes, cached so the naive scan stays fast enough.
fn re(pattern: &str) -> Regex {
    thread_local! {
        static CACHE: std::cell::RefCell<std::collections::HashMap<String, Regex>> = Default::default();
    }
    CACHE.with(|c| c.borrow_mut().entry(pattern.to_string()).or_insert_with(|| Regex::new(pattern).unwrap()).clone())
}

fn cmp(op: &str, a: f64, b: f64) -> bool {
    match op {
        ">" => a > b,
        ">=" => a >= b,
        "<" => a < b,
        "<=" => a <= b,
        "==" => a == b,
        _ => a != b,
    }
}

fn naive_label(f: &LabelF, l: &mut NLabels) -> bool {
    match f {
        LabelF::And(a, b) => {
            let x = naive_label(a, l);
            let y = naive_label(b, l);
            x && y
        }
        LabelF::Or(a, b) => naive_label(a, l) || naive_label(b, l),
        LabelF::Str(n, op, v) => {
            let value =
                if *n == "__error__" { l.err.clone().unwrap_or_default() } else { l.get(n).unwrap_or_default() };
            match *op {
                "=" => value == *v,
                "!=" => value != *v,
                "=~" => re(&format!("^(?:{v})$")).is_match(&value),
                _ => !re(&format!("^(?:{v})$")).is_match(&value),
            }
        }
        LabelF::Num(n, op, v) => {
            let Some(value) = l.get(n) else { return false };
            match value.parse::<f64>() {
                Ok(x) => cmp(op, x, *v),
                Err(_) => {
                    if l.err.is_none() {
                        l.err = Some("LabelFilterErr".into());
                        l.details = Some(format!("strconv.ParseFloat: parsing {value:?}: invalid syntax"));
                    }
                    true
                }
            }
        }
        LabelF::Dur(n, op, v) => {
            let Some(value) = l.get(n) else { return false };
            match naive_dur(&value) {
                Some(x) => cmp(op, x, naive_dur(v).unwrap()),
                None => {
                    if l.err.is_none() {
                        l.err = Some("LabelFilterErr".into());
                        l.details = Some(format!("time: invalid duration {value:?}"));
                    }
                    true
                }
            }
        }
    }
}

fn naive_template(t: &str, l: &NLabels, line: &str) -> String {
    let lookup =
        |n: &str| if n == "__error__" { l.err.clone().unwrap_or_default() } else { l.get(n).unwrap_or_default() };
    match t {
        "{{.level}} {{.status}}" => format!("{} {}", lookup("level"), lookup("status")),
        "{{ .msg | ToUpper }}" => lookup("msg").to_uppercase(),
        "{{ __line__ }} x" => format!("{line} x"),
        "[{{.app}}] {{.missing}}" => format!("[{}] {}", lookup("app"), lookup("missing")),
        other => panic!("no naive rendering for {other}"),
    }
}

fn naive_selector(sel: &Sel, labels: &Labels) -> bool {
    sel.0.iter().all(|(n, op, v)| {
        let value = labels.iter().find(|(k, _)| k == n).map_or("", |(_, v)| v.as_str());
        match *op {
            "=" => value == *v,
            "!=" => value != *v,
            "=~" => re(&format!("^(?:{v})$")).is_match(value),
            _ => !re(&format!("^(?:{v})$")).is_match(value),
        }
    })
}

/// Runs the pipeline over one entry: `(labels, line)` when kept, plus whether `__error__` is set.
fn naive_pipeline(spec: &LogSpec, stream: &Labels, e: &NEntry) -> Option<(Labels, String, bool)> {
    let mut l = NLabels { stream: stream.iter().cloned().collect(), ..NLabels::default() };
    for (k, v) in &e.meta {
        let k = l.name(k);
        l.meta.insert(k, v.clone());
    }
    let mut line = e.line.clone();
    for st in &spec.stages {
        match st {
            SStage::Line { op, pats } => {
                let any = pats.iter().any(|p| match *op {
                    "|=" | "!=" => line.contains(p),
                    _ => re(p).is_match(&line),
                });
                let keep = if op.starts_with('|') { any } else { !any };
                if !keep {
                    return None;
                }
            }
            SStage::Json => {
                naive_json(&line, &mut l);
                l.details = None;
            }
            SStage::Logfmt => naive_logfmt(&line, &mut l),
            SStage::Pattern(p) => naive_pattern(p, &line, &mut l),
            SStage::Regexp(r) => {
                let rx = re(r);
                if let Some(c) = rx.captures(&line) {
                    for name in rx.capture_names().flatten() {
                        l.set(name, c.name(name).map_or("", |m| m.as_str()));
                    }
                }
            }
            SStage::Label(f) => {
                if !naive_label(f, &mut l) {
                    return None;
                }
            }
            SStage::Format(t) => line = naive_template(t, &l, &line),
            SStage::Drop(names) => {
                for n in names {
                    if *n == "__error__" {
                        l.err = None;
                    } else {
                        l.parsed.remove(*n);
                        l.meta.remove(*n);
                        l.deleted.insert(n.to_string());
                    }
                }
            }
        }
    }
    let has_err = l.err.is_some();
    Some((l.all(), line, has_err))
}

type StreamsOut = Vec<(Labels, Vec<(i64, String)>)>;

fn naive_logs(spec: &LogSpec, start: i64, end: i64, limit: usize, backward: bool) -> StreamsOut {
    let data = dataset();
    // (ts, stream labels, index in stream) -> (labels, line)
    let mut hits: Vec<(i64, &Labels, usize, Labels, String)> = Vec::new();
    for s in &data.streams {
        if !naive_selector(&spec.sel, &s.labels) {
            continue;
        }
        for (i, e) in s.entries.iter().enumerate() {
            if e.ts < start || e.ts >= end {
                continue;
            }
            if let Some((labels, line, _)) = naive_pipeline(spec, &s.labels, e) {
                hits.push((e.ts, &s.labels, i, labels, line));
            }
        }
    }
    hits.sort_by(|a, b| (a.0, a.1, a.2).cmp(&(b.0, b.1, b.2)));
    if backward {
        hits.reverse();
    }
    hits.truncate(limit);
    let mut groups: BTreeMap<Labels, Vec<(i64, String)>> = BTreeMap::new();
    for (ts, _, _, labels, line) in hits {
        groups.entry(labels).or_default().push((ts, line));
    }
    groups.into_iter().collect()
}

fn limits() -> Limits {
    Limits { max_memory_bytes: 256 << 20, timeout: Duration::from_secs(120) }
}

fn engine_logs(query: &str, start: i64, end: i64, limit: usize, backward: bool) -> StreamsOut {
    let q = match logql::parse(query) {
        Ok(Expr::Log(q)) => q,
        other => panic!("{query}: {other:?}"),
    };
    let p = LogParams { tenant: TENANT.into(), start_ns: start, end_ns: end, limit, backward };
    let a = engine::select_logs(&dataset().store, &q, &p, limits()).unwrap_or_else(|e| panic!("{query}: {e}"));
    engine::group_streams(a.entries, false)
        .into_iter()
        .map(|s| (s.labels, s.entries.into_iter().map(|(ts, line, _)| (ts, line)).collect()))
        .collect()
}

// ---- metric specs ----

#[derive(Clone, Debug)]
struct MetricSpec {
    log: LogSpec,
    func: &'static str,
    range: (&'static str, i64),
    agg: Option<(&'static str, bool, Vec<&'static str>, usize)>,
    times_two: bool,
}

fn render_metric(m: &MetricSpec) -> String {
    let inner = format!("{}({} [{}])", m.func, render_log(&m.log), m.range.0);
    let mut out = match &m.agg {
        None => inner,
        Some((op, without, labels, k)) => {
            let g = format!("{} ({})", if *without { "without" } else { "by" }, labels.join(", "));
            if *op == "topk" || *op == "bottomk" {
                format!("{op} {g} ({k}, {inner})")
            } else {
                format!("{op} {g} ({inner})")
            }
        }
    };
    if m.times_two {
        out = format!("{out} * 2");
    }
    out
}

fn metric_spec_strategy() -> impl Strategy<Value = MetricSpec> {
    (
        log_spec_strategy(),
        prop::sample::select(vec!["count_over_time", "rate", "bytes_over_time", "bytes_rate"]),
        prop::sample::select(vec![("30s", 30 * SEC), ("1m", 60 * SEC), ("5m", 300 * SEC), ("97s", 97 * SEC)]),
        prop::option::of((
            prop::sample::select(vec!["sum", "avg", "min", "max", "count", "topk", "bottomk"]),
            any::<bool>(),
            prop::collection::vec(prop::sample::select(vec!["app", "level", "job", "env", "format"]), 0..3),
            1..4usize,
        )),
        prop::bool::weighted(0.2),
    )
        .prop_map(|(log, func, range, agg, times_two)| {
            let agg = agg.map(|(op, without, mut labels, k)| {
                labels.sort();
                labels.dedup();
                (op, without, labels, k)
            });
            MetricSpec { log, func, range, agg, times_two }
        })
}

type Matrix = Vec<(Labels, Vec<(i64, f64)>)>;

fn naive_metric(m: &MetricSpec, steps: Steps) -> Result<Matrix, String> {
    let data = dataset();
    let range = m.range.1;
    // Every kept entry that can fall in some window.
    let lo = steps.start_ns - range;
    let mut kept: Vec<(i64, Labels, usize, bool)> = Vec::new();
    for s in &data.streams {
        if !naive_selector(&m.log.sel, &s.labels) {
            continue;
        }
        for e in &s.entries {
            if e.ts <= lo || e.ts > steps.end_ns {
                continue;
            }
            if let Some((labels, line, err)) = naive_pipeline(&m.log, &s.labels, e) {
                kept.push((e.ts, labels, line.len(), err));
            }
        }
    }
    let n = ((steps.end_ns - steps.start_ns) / steps.step_ns + 1) as usize;
    let mut out: BTreeMap<Labels, Vec<(i64, f64)>> = BTreeMap::new();
    for k in 0..n {
        let t = steps.start_ns + k as i64 * steps.step_ns;
        let mut per: BTreeMap<Labels, (f64, f64)> = BTreeMap::new();
        for (ts, labels, len, err) in &kept {
            if *ts > t - range && *ts <= t {
                if *err {
                    return Err("pipeline error".into());
                }
                let e = per.entry(labels.clone()).or_insert((0.0, 0.0));
                e.0 += 1.0;
                e.1 += *len as f64;
            }
        }
        let secs = range as f64 / 1e9;
        let mut vec: Vec<(Labels, f64)> = per
            .into_iter()
            .map(|(l, (c, b))| {
                let v = match m.func {
                    "count_over_time" => c,
                    "rate" => c / secs,
                    "bytes_over_time" => b,
                    _ => b / secs,
                };
                (l, v)
            })
            .collect();
        if let Some((op, without, names, kk)) = &m.agg {
            let project = |l: &Labels| -> Labels {
                l.iter().filter(|(n, _)| names.contains(&n.as_str()) != *without).cloned().collect()
            };
            if *op == "topk" || *op == "bottomk" {
                let mut groups: BTreeMap<Labels, Vec<(Labels, f64)>> = BTreeMap::new();
                for (l, v) in vec {
                    groups.entry(project(&l)).or_default().push((l, v));
                }
                vec = Vec::new();
                for (_, mut members) in groups {
                    members.sort_by(|a, b| {
                        let o = if *op == "topk" { b.1.partial_cmp(&a.1) } else { a.1.partial_cmp(&b.1) };
                        o.unwrap().then(a.0.cmp(&b.0))
                    });
                    vec.extend(members.into_iter().take(*kk));
                }
            } else {
                let mut groups: BTreeMap<Labels, Vec<f64>> = BTreeMap::new();
                for (l, v) in vec {
                    groups.entry(project(&l)).or_default().push(v);
                }
                vec = groups
                    .into_iter()
                    .map(|(l, vs)| {
                        let v = match *op {
                            "sum" => vs.iter().sum(),
                            "avg" => vs.iter().sum::<f64>() / vs.len() as f64,
                            "min" => vs.iter().cloned().fold(f64::INFINITY, f64::min),
                            "max" => vs.iter().cloned().fold(f64::NEG_INFINITY, f64::max),
                            _ => vs.len() as f64,
                        };
                        (l, v)
                    })
                    .collect();
            }
        }
        for (l, v) in vec {
            let v = if m.times_two { v * 2.0 } else { v };
            out.entry(l).or_default().push((t, v));
        }
    }
    Ok(out.into_iter().collect())
}

fn engine_metric(query: &str, steps: Steps) -> Result<Matrix, String> {
    let m = match logql::parse(query) {
        Ok(Expr::Metric(m)) => m,
        other => panic!("{query}: {other:?}"),
    };
    match engine::eval_metric(&dataset().store, TENANT, &m, steps, limits()) {
        Ok(a) => match a.value {
            Value::Vector(series) => Ok(series
                .into_iter()
                .map(|s| {
                    let points = s.values.iter().enumerate().filter_map(|(k, v)| v.map(|v| (steps.at(k), v))).collect();
                    (s.labels, points)
                })
                .collect()),
            Value::Scalar(_) => panic!("{query}: scalar"),
        },
        Err(engine::QueryError::Pipeline { .. }) => Err("pipeline error".into()),
        Err(e) => panic!("{query}: {e}"),
    }
}

fn same_matrix(a: &Matrix, b: &Matrix) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|((la, pa), (lb, pb))| {
            la == lb
                && pa.len() == pb.len()
                && pa.iter().zip(pb).all(|((ta, va), (tb, vb))| ta == tb && (va - vb).abs() <= 1e-9 * va.abs().max(1.0))
        })
}

fn time_window() -> impl Strategy<Value = (i64, i64)> {
    // The data spans about 1000 s from BASE; windows start a little before it.
    (-60i64..450, 1i64..1200).prop_map(|(s, len)| (BASE + s * SEC, BASE + (s + len) * SEC))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, max_shrink_iters: 200, ..ProptestConfig::default() })]

    #[test]
    fn log_queries_match_a_naive_scan(
        spec in log_spec_strategy(),
        (start, end) in time_window(),
        limit in prop::sample::select(vec![1usize, 7, 100, 1000, 5000]),
        backward in any::<bool>(),
    ) {
        let query = render_log(&spec);
        let want = naive_logs(&spec, start, end, limit, backward);
        let got = engine_logs(&query, start, end, limit, backward);
        let count = |s: &StreamsOut| s.iter().map(|(_, e)| e.len()).sum::<usize>();
        prop_assert_eq!(count(&got), count(&want), "{} [{}, {}) limit {} backward {}", query, start, end, limit, backward);
        prop_assert!(got == want, "{} differs", query);
    }

}

proptest! {
    // The naive metric evaluation is O(steps x entries): fewer cases keep it to seconds.
    #![proptest_config(ProptestConfig { cases: 40, max_shrink_iters: 200, ..ProptestConfig::default() })]

    #[test]
    fn metric_queries_match_a_naive_scan(
        spec in metric_spec_strategy(),
        (start, len) in (-60i64..450, 0i64..900),
        step in prop::sample::select(vec![10i64, 30, 60, 97]),
    ) {
        let query = render_metric(&spec);
        let steps = Steps { start_ns: BASE + start * SEC, end_ns: BASE + (start + len) * SEC, step_ns: step * SEC };
        let want = naive_metric(&spec, steps);
        let got = engine_metric(&query, steps);
        match (&got, &want) {
            (Ok(g), Ok(w)) => prop_assert!(same_matrix(g, w), "{}\n got {:?}\nwant {:?}", query, g, w),
            (Err(_), Err(_)) => {}
            _ => prop_assert!(false, "{}: engine {:?} naive {:?}", query, got.as_ref().map(|_| ()), want.as_ref().map(|_| ())),
        }
    }
}

/// A few queries whose answers are known by hand, so the naive evaluator itself is checked.
#[test]
fn hand_checked_answers() {
    let data = dataset();
    let total: usize = data.streams.iter().map(|s| s.entries.len()).sum();
    assert!(total > 20_000, "loghub and generated data loaded: {total}");
    // Every OpenSSH line is in one stream; the newest 3 lines come back newest first.
    let got = engine_logs(r#"{app="openssh"}"#, BASE, BASE + 10_000 * SEC, 3, true);
    assert_eq!(got.len(), 1);
    let ssh = data.streams.iter().find(|s| s.labels.iter().any(|(_, v)| v == "openssh")).unwrap();
    let last: Vec<&str> = ssh.entries.iter().rev().take(3).map(|e| e.line.as_str()).collect();
    assert_eq!(got[0].1.iter().map(|(_, l)| l.as_str()).collect::<Vec<_>>(), last);
    // count_over_time over everything counts every line once.
    let m = engine_metric(r#"sum(count_over_time({job=~".+"}[1h]))"#, Steps::instant(BASE + 2000 * SEC)).unwrap();
    assert_eq!(m[0].1[0].1 as usize, total);
    // json errors are labelled, and a metric over them fails unless they are dropped.
    let errs = engine_logs(
        r#"{format="json"} | json | __error__="JSONParserErr" | drop __error_details__"#,
        BASE,
        BASE + 10_000 * SEC,
        5000,
        false,
    );
    assert_eq!(errs.iter().map(|(_, e)| e.len()).sum::<usize>(), 2 * 22);
    assert!(
        engine_metric(r#"count_over_time({format="json"} | json [1h])"#, Steps::instant(BASE + 2000 * SEC)).is_err()
    );
    assert!(
        engine_metric(
            r#"count_over_time({format="json"} | json | __error__="" [1h])"#,
            Steps::instant(BASE + 2000 * SEC)
        )
        .is_ok()
    );
}
