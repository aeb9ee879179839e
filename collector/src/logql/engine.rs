//! Executes parsed queries over a [`LogSource`] (the log store) within a memory budget.
//!
//! The store visits entries in no particular order across streams, so the engine orders and
//! aggregates by itself:
//!
//! - **Log queries** keep the best `limit` entries in a bounded heap. The order is total and
//!   independent of the store's visiting order: by timestamp, then by the stream's labels, then
//!   by arrival within the stream (the store delivers a stream's entries in ingest order).
//!   Backward is the exact reverse of forward. Entries that cannot enter a full heap are skipped
//!   before their pipeline runs.
//! - **Metric queries** evaluate every step of a range query in one scan per range aggregation:
//!   an entry at `ts` falls in the windows `(t - range, t]` of a contiguous run of steps, which
//!   is added to a per-series difference array in O(1), then prefix-summed. Counts and byte sums
//!   are integers, so the sums are exact. `sum by/without` directly over a range aggregation is
//!   pushed down: entries are grouped into the final series while scanning, so intermediate
//!   series (one per distinct parsed label set) are never held.
//!
//! Every byte held on behalf of a query (kept lines, label sets, series arrays) is charged to a
//! [`Budget`]; going over it stops the query with [`QueryError::MemoryBudget`] instead of
//! growing. A deadline stops long scans the same way.

use super::ast::{AggOp, BinOp, Grouping, LogQuery, MetricExpr, RangeAgg};
use super::pipeline::{Evaluator, Interner, ResultLabels};
use crate::logs::record::Entry;
use crate::logs::store::StoreError;
use crate::logs::{LogStore, ScanRequest, ScanStats, SharedLabels};
use crate::selector::Selector;
use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Loki's cap on points per series in a range query.
pub const MAX_POINTS_PER_SERIES: i64 = 11_000;

/// Where entries come from: the log store, or (in tests) a vector.
pub trait LogSource {
    fn scan(
        &self,
        req: &ScanRequest,
        visit: &mut dyn FnMut(&SharedLabels, &Entry<'_>) -> ControlFlow<()>,
    ) -> Result<ScanStats, StoreError>;

    fn series(
        &self,
        tenant: &str,
        selector: Option<&Selector>,
        start_ns: i64,
        end_ns: i64,
    ) -> Result<Vec<SharedLabels>, StoreError>;
}

impl LogSource for LogStore {
    fn scan(
        &self,
        req: &ScanRequest,
        visit: &mut dyn FnMut(&SharedLabels, &Entry<'_>) -> ControlFlow<()>,
    ) -> Result<ScanStats, StoreError> {
        LogStore::scan(self, req, visit)
    }

    fn series(
        &self,
        tenant: &str,
        selector: Option<&Selector>,
        start_ns: i64,
        end_ns: i64,
    ) -> Result<Vec<SharedLabels>, StoreError> {
        LogStore::series(self, tenant, selector, start_ns, end_ns)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error(
        "the query needs more than its memory budget of {limit} bytes (logs.max_query_memory_bytes) to hold {what}; narrow the stream selector or the time range, add line filters, lower the limit, or aggregate with sum by (...)"
    )]
    MemoryBudget { limit: usize, what: &'static str },
    #[error(
        "the query ran longer than {0:?} and was stopped (server.request_timeout); narrow the stream selector or the time range"
    )]
    Timeout(Duration),
    #[error(
        "pipeline error: '{error}' for series: '{series}'. Use a label filter to intentionally skip this error. (e.g | __error__!=\"{error}\"). To skip all potential errors you can match empty errors.(e.g __error__=\"\")"
    )]
    Pipeline { error: String, series: String },
    #[error("{0}")]
    Invalid(String),
    #[error("log store error: {0}")]
    Store(#[from] StoreError),
}

impl QueryError {
    /// Whether the client can fix it (4xx) rather than the server failing (5xx).
    pub fn is_client_error(&self) -> bool {
        !matches!(self, QueryError::Store(_))
    }
}

/// The hard per-query limits.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_memory_bytes: usize,
    pub timeout: Duration,
}

/// Bytes held on behalf of one query.
pub struct Budget {
    limit: usize,
    used: usize,
    peak: usize,
}

impl Budget {
    pub fn new(limit: usize) -> Self {
        Budget { limit, used: 0, peak: 0 }
    }

    pub fn charge(&mut self, bytes: usize, what: &'static str) -> Result<(), QueryError> {
        self.used = self.used.saturating_add(bytes);
        self.peak = self.peak.max(self.used);
        if self.used > self.limit { Err(QueryError::MemoryBudget { limit: self.limit, what }) } else { Ok(()) }
    }

    pub fn release(&mut self, bytes: usize) {
        self.used = self.used.saturating_sub(bytes);
    }

    pub fn peak(&self) -> usize {
        self.peak
    }
}

/// Work done, for Loki's `stats`.
#[derive(Clone, Copy, Debug, Default)]
pub struct ExecStats {
    pub lines_scanned: u64,
    pub bytes_scanned: u64,
    /// Entries that passed the pipeline.
    pub lines_matched: u64,
    pub peak_memory_bytes: usize,
    pub exec_time: Duration,
}

impl ExecStats {
    fn add_scan(&mut self, s: ScanStats) {
        self.lines_scanned += s.lines_scanned;
        self.bytes_scanned += s.bytes_scanned;
    }
}

/// Checks the deadline every few thousand entries (reading the clock per entry costs more
/// than the filters).
struct Deadline {
    at: Instant,
    timeout: Duration,
    tick: u32,
    expired: bool,
}

impl Deadline {
    fn new(timeout: Duration) -> Self {
        Deadline { at: Instant::now() + timeout, timeout, tick: 0, expired: false }
    }

    fn check(&mut self) -> bool {
        self.tick = self.tick.wrapping_add(1);
        if self.tick.is_multiple_of(4096) && Instant::now() > self.at {
            self.expired = true;
        }
        self.expired
    }
}

// ---------------------------------------------------------------------------------------------
// Log queries
// ---------------------------------------------------------------------------------------------

/// One entry of a log query's answer.
#[derive(Clone, Debug)]
pub struct LogEntry {
    pub ts: i64,
    pub line: String,
    pub labels: Arc<ResultLabels>,
    /// The entry's stream (its stored labels), for ordering.
    pub stream: SharedLabels,
    seq: u64,
}

/// Parameters of a log query.
#[derive(Clone, Debug)]
pub struct LogParams {
    pub tenant: String,
    pub start_ns: i64,
    pub end_ns: i64,
    pub limit: usize,
    pub backward: bool,
}

pub struct LogAnswer {
    /// In the query's direction.
    pub entries: Vec<LogEntry>,
    pub stats: ExecStats,
}

/// The total order of entries (forward): timestamp, stream labels, arrival within the stream.
fn forward_cmp(a_ts: i64, a_stream: &SharedLabels, a_seq: u64, b: &LogEntry) -> Ordering {
    a_ts.cmp(&b.ts)
        .then_with(|| if Arc::ptr_eq(a_stream, &b.stream) { Ordering::Equal } else { a_stream.cmp(&b.stream) })
        .then(a_seq.cmp(&b.seq))
}

/// Heap item whose top is the entry to evict next (the worst kept).
struct Kept {
    entry: LogEntry,
    backward: bool,
}

impl Kept {
    fn cmp_key(&self, other: &Self) -> Ordering {
        let o = forward_cmp(self.entry.ts, &self.entry.stream, self.entry.seq, &other.entry);
        if self.backward { o.reverse() } else { o }
    }
}

impl PartialEq for Kept {
    fn eq(&self, other: &Self) -> bool {
        self.cmp_key(other) == Ordering::Equal
    }
}
impl Eq for Kept {}
impl PartialOrd for Kept {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Kept {
    fn cmp(&self, other: &Self) -> Ordering {
        self.cmp_key(other)
    }
}

/// What a kept entry holds: its line, and its label set unless that is a shared stream set.
fn entry_cost(line: &str, labels: &Arc<ResultLabels>) -> usize {
    let own_labels = if labels.metadata.is_empty() && labels.parsed.is_empty() && labels.all == labels.stream {
        0
    } else {
        labels.heap_bytes()
    };
    line.len() + 96 + own_labels
}

/// Runs a log query: the best `limit` entries of `[start, end)` in the query's direction.
pub fn select_logs(src: &dyn LogSource, q: &LogQuery, p: &LogParams, limits: Limits) -> Result<LogAnswer, QueryError> {
    let started = Instant::now();
    let mut budget = Budget::new(limits.max_memory_bytes);
    let mut heap: BinaryHeap<Kept> = BinaryHeap::new();
    let mut eval = Evaluator::default();
    let mut interner = Interner::default();
    let mut deadline = Deadline::new(limits.timeout);
    let mut seq = 0u64;
    let mut matched = 0u64;
    let mut failure: Option<QueryError> = None;
    let req = ScanRequest {
        tenant: p.tenant.clone(),
        selector: q.selector.clone(),
        start_ns: p.start_ns,
        end_ns: p.end_ns,
        backward: p.backward,
        line_hints: q.required_literals(),
    };
    let scan = src.scan(&req, &mut |stream, e| {
        if deadline.check() {
            return ControlFlow::Break(());
        }
        seq += 1;
        if p.limit == 0 {
            return ControlFlow::Break(());
        }
        // Skip entries that cannot enter a full heap before running their pipeline.
        if heap.len() >= p.limit
            && let Some(worst) = heap.peek()
        {
            let o = forward_cmp(e.ts_ns, stream, seq, &worst.entry);
            let better = if p.backward { o == Ordering::Greater } else { o == Ordering::Less };
            if !better {
                return ControlFlow::Continue(());
            }
        }
        if !eval.process(q, e.ts_ns, e.line, stream, &e.metadata) {
            return ControlFlow::Continue(());
        }
        matched += 1;
        // Label sets of streams are shared (their number is bounded by the streams); others
        // belong to their entry and are charged and released with it, so label sets of lines
        // that were evicted long ago never accumulate.
        let (labels, shared_bytes) = if eval.labels.is_stream_only() {
            let mut new_bytes = 0;
            (interner.intern(&eval.labels, &mut new_bytes), new_bytes)
        } else {
            (Arc::new(ResultLabels::from_state(&eval.labels)), 0)
        };
        let line = eval.line(e.line).to_string();
        let cost = entry_cost(&line, &labels) + shared_bytes;
        if let Err(err) = budget.charge(cost, "the lines to return") {
            failure = Some(err);
            return ControlFlow::Break(());
        }
        heap.push(Kept {
            entry: LogEntry { ts: e.ts_ns, line, labels, stream: stream.clone(), seq },
            backward: p.backward,
        });
        if heap.len() > p.limit
            && let Some(evicted) = heap.pop()
        {
            budget.release(entry_cost(&evicted.entry.line, &evicted.entry.labels));
        }
        ControlFlow::Continue(())
    })?;
    if let Some(err) = failure {
        return Err(err);
    }
    if deadline.expired {
        return Err(QueryError::Timeout(deadline.timeout));
    }
    // into_sorted_vec is ascending by Ord, whose greatest is the worst: best first.
    let entries: Vec<LogEntry> = heap.into_sorted_vec().into_iter().map(|k| k.entry).collect();
    let mut stats = ExecStats { lines_matched: matched, peak_memory_bytes: budget.peak(), ..ExecStats::default() };
    stats.add_scan(scan);
    stats.exec_time = started.elapsed();
    Ok(LogAnswer { entries, stats })
}

/// Label pairs, sorted by name.
pub type LabelPairs = Vec<(String, String)>;

/// `(structured metadata, parsed labels)` of an entry in a categorized answer.
pub type Categorized = (LabelPairs, LabelPairs);

/// One stream of a Loki `streams` answer.
#[derive(Clone, Debug, PartialEq)]
pub struct StreamOut {
    pub labels: LabelPairs,
    /// `(ts, line, categorized)`; the third is set in categorized mode.
    pub entries: Vec<(i64, String, Option<Categorized>)>,
}

/// Groups entries (already in direction order) into streams sorted by labels. Categorized:
/// streams by stream labels, each entry carrying its metadata and parsed labels, as Loki does
/// for `X-Loki-Response-Encoding-Flags: categorize-labels`.
pub fn group_streams(entries: Vec<LogEntry>, categorize: bool) -> Vec<StreamOut> {
    let mut index: HashMap<*const ResultLabels, usize> = HashMap::new();
    let mut by_labels: HashMap<Vec<(String, String)>, usize> = HashMap::new();
    let mut out: Vec<StreamOut> = Vec::new();
    for e in entries {
        let key = Arc::as_ptr(&e.labels);
        let idx = match index.get(&key) {
            Some(i) => *i,
            None => {
                let labels = if categorize { e.labels.stream.clone() } else { e.labels.all.clone() };
                let i = *by_labels.entry(labels.clone()).or_insert_with(|| {
                    out.push(StreamOut { labels, entries: Vec::new() });
                    out.len() - 1
                });
                index.insert(key, i);
                i
            }
        };
        let extra = categorize.then(|| (e.labels.metadata.clone(), e.labels.parsed.clone()));
        out[idx].entries.push((e.ts, e.line, extra));
    }
    out.sort_by(|a, b| a.labels.cmp(&b.labels));
    out
}

// ---------------------------------------------------------------------------------------------
// Metric queries
// ---------------------------------------------------------------------------------------------

/// The steps a metric query is evaluated at: `start, start + step, ... <= end`.
#[derive(Clone, Copy, Debug)]
pub struct Steps {
    pub start_ns: i64,
    pub end_ns: i64,
    pub step_ns: i64,
}

impl Steps {
    pub fn instant(t: i64) -> Self {
        Steps { start_ns: t, end_ns: t, step_ns: 1 }
    }

    /// Number of steps, or an error Loki would give for too many.
    pub fn count(&self) -> Result<usize, QueryError> {
        if self.step_ns <= 0 {
            return Err(QueryError::Invalid(
                "zero or negative query resolution step widths are not accepted. Try a positive integer".into(),
            ));
        }
        if self.end_ns < self.start_ns {
            return Err(QueryError::Invalid("end timestamp must not be before start time".into()));
        }
        let n = (self.end_ns as i128 - self.start_ns as i128) / self.step_ns as i128 + 1;
        if n > MAX_POINTS_PER_SERIES as i128 {
            return Err(QueryError::Invalid(format!(
                "exceeded maximum resolution of {MAX_POINTS_PER_SERIES} points per timeseries. Try decreasing the query resolution (?step=XX)"
            )));
        }
        Ok(n as usize)
    }

    pub fn at(&self, k: usize) -> i64 {
        self.start_ns.saturating_add((k as i64).saturating_mul(self.step_ns))
    }
}

/// A series evaluated at every step (`None`: no value at that step).
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub labels: Vec<(String, String)>,
    pub values: Vec<Option<f64>>,
}

impl Series {
    fn heap_bytes(&self) -> usize {
        self.values.len() * 16 + self.labels.iter().map(|(k, v)| pair_bytes(k, v)).sum::<usize>() + 64
    }
}

/// A metric query's value: a number (at every step) or series.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Scalar(f64),
    Vector(Vec<Series>),
}

pub struct MetricAnswer {
    pub value: Value,
    pub stats: ExecStats,
}

/// Evaluates a metric query at `steps`. Series come sorted by labels, with at least one value.
pub fn eval_metric(
    src: &dyn LogSource,
    tenant: &str,
    expr: &MetricExpr,
    steps: Steps,
    limits: Limits,
) -> Result<MetricAnswer, QueryError> {
    let started = Instant::now();
    let n = steps.count()?;
    let mut ctx = Ctx {
        src,
        tenant,
        steps,
        n,
        budget: Budget::new(limits.max_memory_bytes),
        deadline: Deadline::new(limits.timeout),
        stats: ExecStats::default(),
    };
    let mut value = ctx.eval(expr)?;
    if let Value::Vector(series) = &mut value {
        series.retain(|s| s.values.iter().any(Option::is_some));
        series.sort_by(|a, b| a.labels.cmp(&b.labels));
    }
    let mut stats = ctx.stats;
    stats.peak_memory_bytes = ctx.budget.peak();
    stats.exec_time = started.elapsed();
    Ok(MetricAnswer { value, stats })
}

struct Ctx<'a> {
    src: &'a dyn LogSource,
    tenant: &'a str,
    steps: Steps,
    n: usize,
    budget: Budget,
    deadline: Deadline,
    stats: ExecStats,
}

/// Accumulates one series of a range aggregation as difference arrays over the steps (its
/// labels live once, as the key of the series index).
struct Acc {
    counts: Vec<i64>,
    bytes: Vec<i64>,
}

/// Heap bytes of a label pair: both strings' contents, headers and allocator rounding.
pub(crate) fn pair_bytes(k: &str, v: &str) -> usize {
    k.len() + v.len() + 80
}

impl<'a> Ctx<'a> {
    fn eval(&mut self, e: &MetricExpr) -> Result<Value, QueryError> {
        match e {
            MetricExpr::Number(v) => Ok(Value::Scalar(*v)),
            MetricExpr::VectorOf(v) => {
                let s = Series { labels: Vec::new(), values: vec![Some(*v); self.n] };
                self.budget.charge(s.heap_bytes(), "series")?;
                Ok(Value::Vector(vec![s]))
            }
            MetricExpr::Range(r) => self.range(r, None).map(Value::Vector),
            MetricExpr::Vector(agg) => {
                if agg.op == AggOp::Sum
                    && let MetricExpr::Range(r) = agg.inner.as_ref()
                {
                    // Pushdown: group while scanning, then sum what is left (nothing to merge).
                    return self.range(r, Some(&agg.grouping)).map(Value::Vector);
                }
                let inner = match self.eval(&agg.inner)? {
                    Value::Vector(v) => v,
                    Value::Scalar(_) => return Err(QueryError::Invalid(format!("{} needs a vector", agg.op.name()))),
                };
                self.aggregate(agg.op, agg.param, &agg.grouping, inner).map(Value::Vector)
            }
            MetricExpr::Binary { op, lhs, rhs } => {
                let l = self.eval(lhs)?;
                let r = self.eval(rhs)?;
                Ok(binary(*op, l, r))
            }
        }
    }

    /// Evaluates a range aggregation; with `group`, series are grouped while scanning (only
    /// valid for `sum`, which is linear).
    fn range(&mut self, r: &RangeAgg, group: Option<&Grouping>) -> Result<Vec<Series>, QueryError> {
        let n = self.n;
        let steps = self.steps;
        let scan_start = steps.start_ns.saturating_sub(r.offset_ns).saturating_sub(r.range_ns).saturating_add(1);
        let scan_end = steps.end_ns.saturating_sub(r.offset_ns).saturating_add(1);
        let req = ScanRequest {
            tenant: self.tenant.to_string(),
            selector: r.query.selector.clone(),
            start_ns: scan_start,
            end_ns: scan_end,
            backward: false,
            line_hints: r.query.required_literals(),
        };
        let with_bytes = r.func.counts_bytes();
        // Difference arrays, the series' final values, and the index entry.
        let per_series = (n + 1) * 8 * if with_bytes { 2 } else { 1 } + n * 16 + 200;
        let mut accs: Vec<Acc> = Vec::new();
        let mut index: HashMap<Vec<(String, String)>, usize> = HashMap::new();
        // Stream pointer -> series index, for entries whose labels are their stream's.
        let mut by_stream: HashMap<usize, (SharedLabels, usize)> = HashMap::new();
        let mut eval = Evaluator::default();
        let mut failure: Option<QueryError> = None;
        let budget = &mut self.budget;
        let deadline = &mut self.deadline;
        let mut matched = 0u64;
        let stats = self.src.scan(&req, &mut |stream, e| {
            if deadline.check() {
                return ControlFlow::Break(());
            }
            // Steps whose window (t - range, t] holds ts: t >= ts and t < ts + range. In i128:
            // timestamps come from clients and must not overflow.
            let ts = e.ts_ns as i128 + r.offset_ns as i128;
            let (start, step) = (steps.start_ns as i128, steps.step_ns as i128);
            let lo = div_ceil(ts - start, step).max(0);
            let hi = (ts + r.range_ns as i128 - 1 - start).div_euclid(step).min(n as i128 - 1);
            if lo > hi {
                return ControlFlow::Continue(());
            }
            if !eval.process(&r.query, e.ts_ns, e.line, stream, &e.metadata) {
                return ControlFlow::Continue(());
            }
            matched += 1;
            if let Some(err) = eval.labels.err {
                failure = Some(QueryError::Pipeline {
                    error: err.to_string(),
                    series: osprey_protocol::loki_labels::format(&eval.labels.all()),
                });
                return ControlFlow::Break(());
            }
            let stream_only = eval.labels.is_stream_only();
            let key = Arc::as_ptr(stream) as usize;
            let cached = if stream_only { by_stream.get(&key).map(|(_, i)| *i) } else { None };
            let idx = match cached {
                Some(i) => i,
                None => {
                    let labels = match group {
                        Some(g) => eval.labels.project(&g.labels, g.without),
                        None => eval.labels.all(),
                    };
                    let i = match index.get(&labels) {
                        Some(i) => *i,
                        None => {
                            let cost = per_series + labels.iter().map(|(k, v)| pair_bytes(k, v)).sum::<usize>();
                            if let Err(err) = budget.charge(cost, "the series of the aggregation") {
                                failure = Some(err);
                                return ControlFlow::Break(());
                            }
                            accs.push(Acc {
                                counts: vec![0; n + 1],
                                bytes: if with_bytes { vec![0; n + 1] } else { Vec::new() },
                            });
                            index.insert(labels, accs.len() - 1);
                            accs.len() - 1
                        }
                    };
                    if stream_only {
                        by_stream.insert(key, (stream.clone(), i));
                    }
                    i
                }
            };
            let acc = &mut accs[idx];
            let (lo, hi) = (lo as usize, hi as usize);
            acc.counts[lo] += 1;
            acc.counts[hi + 1] -= 1;
            if with_bytes {
                let len = eval.line(e.line).len() as i64;
                acc.bytes[lo] += len;
                acc.bytes[hi + 1] -= len;
            }
            ControlFlow::Continue(())
        })?;
        self.stats.add_scan(stats);
        self.stats.lines_matched += matched;
        if let Some(err) = failure {
            return Err(err);
        }
        if self.deadline.expired {
            return Err(QueryError::Timeout(self.deadline.timeout));
        }
        let range_secs = r.range_ns as f64 / 1e9;
        let mut labels_of: Vec<LabelPairs> = vec![Vec::new(); accs.len()];
        for (labels, i) in index {
            labels_of[i] = labels;
        }
        let mut out = Vec::with_capacity(accs.len());
        for (acc, labels) in accs.into_iter().zip(labels_of) {
            let mut values = Vec::with_capacity(n);
            let (mut count, mut bytes) = (0i64, 0i64);
            for k in 0..n {
                count += acc.counts[k];
                if with_bytes {
                    bytes += acc.bytes[k];
                }
                values.push((count > 0).then(|| {
                    let v = if with_bytes { bytes as f64 } else { count as f64 };
                    if r.func.per_second() { v / range_secs } else { v }
                }));
            }
            out.push(Series { labels, values });
        }
        Ok(out)
    }

    fn aggregate(
        &mut self,
        op: AggOp,
        param: Option<usize>,
        grouping: &Grouping,
        inner: Vec<Series>,
    ) -> Result<Vec<Series>, QueryError> {
        let n = self.n;
        let mut group_of: Vec<usize> = Vec::with_capacity(inner.len());
        let mut groups: Vec<Vec<(String, String)>> = Vec::new();
        let mut index: HashMap<Vec<(String, String)>, usize> = HashMap::new();
        for s in &inner {
            let key = grouping.project(&s.labels);
            let g = match index.get(&key) {
                Some(g) => *g,
                None => {
                    let label_bytes: usize = key.iter().map(|(k, v)| pair_bytes(k, v)).sum();
                    self.budget.charge(n * 40 + 2 * label_bytes + 200, "the groups of the aggregation")?;
                    groups.push(key.clone());
                    index.insert(key, groups.len() - 1);
                    groups.len() - 1
                }
            };
            group_of.push(g);
        }
        if let AggOp::Topk | AggOp::Bottomk = op {
            let k = param.unwrap_or(1);
            self.budget.charge(inner.len() * n * 16, "the series of the aggregation")?;
            let mut keep: Vec<Vec<Option<f64>>> = inner.iter().map(|_| vec![None; n]).collect();
            #[allow(clippy::needless_range_loop)]
            for step in 0..n {
                let mut per_group: HashMap<usize, Vec<(f64, usize)>> = HashMap::new();
                for (i, s) in inner.iter().enumerate() {
                    if let Some(v) = s.values[step] {
                        per_group.entry(group_of[i]).or_default().push((v, i));
                    }
                }
                for (_, mut members) in per_group {
                    members.sort_by(|a, b| {
                        let by_value = if op == AggOp::Topk { desc_nan_last(a.0, b.0) } else { asc_nan_last(a.0, b.0) };
                        by_value.then_with(|| inner[a.1].labels.cmp(&inner[b.1].labels))
                    });
                    for (v, i) in members.into_iter().take(k) {
                        keep[i][step] = Some(v);
                    }
                }
            }
            return Ok(inner.into_iter().zip(keep).map(|(s, values)| Series { labels: s.labels, values }).collect());
        }
        // sum, avg, min, max, count per group and step.
        let mut acc: Vec<Vec<Option<(f64, f64)>>> = groups.iter().map(|_| vec![None; n]).collect();
        for (i, s) in inner.iter().enumerate() {
            let g = group_of[i];
            for (step, v) in s.values.iter().enumerate() {
                let Some(v) = *v else { continue };
                let slot = &mut acc[g][step];
                *slot = Some(match (*slot, op) {
                    (None, AggOp::Count) => (1.0, 1.0),
                    (None, _) => (v, 1.0),
                    (Some((a, c)), AggOp::Sum | AggOp::Avg) => (a + v, c + 1.0),
                    (Some((a, c)), AggOp::Count) => (a + 1.0, c + 1.0),
                    (Some((a, c)), AggOp::Min) => (if v < a || a.is_nan() { v } else { a }, c + 1.0),
                    (Some((a, c)), AggOp::Max) => (if v > a || a.is_nan() { v } else { a }, c + 1.0),
                    (Some(x), _) => x,
                });
            }
        }
        Ok(groups
            .into_iter()
            .zip(acc)
            .map(|(labels, values)| Series {
                labels,
                values: values.into_iter().map(|v| v.map(|(a, c)| if op == AggOp::Avg { a / c } else { a })).collect(),
            })
            .collect())
    }
}

fn desc_nan_last(a: f64, b: f64) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        _ => b.partial_cmp(&a).unwrap_or(Ordering::Equal),
    }
}

fn asc_nan_last(a: f64, b: f64) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        _ => a.partial_cmp(&b).unwrap_or(Ordering::Equal),
    }
}

fn div_ceil(a: i128, b: i128) -> i128 {
    let q = a.div_euclid(b);
    if a.rem_euclid(b) == 0 { q } else { q + 1 }
}

/// Arithmetic between values: scalar with scalar, each series with a scalar, and series with
/// series of identical labels (one-to-one, as PromQL matches by default).
fn binary(op: BinOp, l: Value, r: Value) -> Value {
    match (l, r) {
        (Value::Scalar(a), Value::Scalar(b)) => Value::Scalar(op.apply(a, b)),
        (Value::Vector(v), Value::Scalar(b)) => Value::Vector(
            v.into_iter()
                .map(|s| Series {
                    labels: s.labels,
                    values: s.values.into_iter().map(|x| x.map(|a| op.apply(a, b))).collect(),
                })
                .collect(),
        ),
        (Value::Scalar(a), Value::Vector(v)) => Value::Vector(
            v.into_iter()
                .map(|s| Series {
                    labels: s.labels,
                    values: s.values.into_iter().map(|x| x.map(|b| op.apply(a, b))).collect(),
                })
                .collect(),
        ),
        (Value::Vector(lv), Value::Vector(rv)) => {
            let right: HashMap<&Vec<(String, String)>, &Series> = rv.iter().map(|s| (&s.labels, s)).collect();
            Value::Vector(
                lv.iter()
                    .filter_map(|s| {
                        let o = right.get(&s.labels)?;
                        let values = s
                            .values
                            .iter()
                            .zip(&o.values)
                            .map(|(a, b)| match (a, b) {
                                (Some(a), Some(b)) => Some(op.apply(*a, *b)),
                                _ => None,
                            })
                            .collect();
                        Some(Series { labels: s.labels.clone(), values })
                    })
                    .collect(),
            )
        }
    }
}

/// Formats a sample value as Prometheus and Loki do (`strconv.FormatFloat(v, 'f', -1, 64)`).
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf".into() } else { "-Inf".into() }
    } else {
        format!("{v}")
    }
}

/// A step's timestamp as Loki writes it in matrices: seconds with millisecond precision, as a
/// JSON number.
pub fn format_step_time(ts_ns: i64) -> serde_json::Value {
    let ms = ts_ns.div_euclid(1_000_000);
    if ms % 1000 == 0 {
        serde_json::Value::from(ms / 1000)
    } else {
        serde_json::Number::from_f64(ms as f64 / 1000.0).map_or(serde_json::Value::Null, serde_json::Value::Number)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logql::{self, Expr};
    use proptest::prelude::*;

    /// Streams of `(ts, line)`, visited in a given interleaving (each stream's own entries stay
    /// in order, as the store promises).
    struct VecSource {
        streams: Vec<(SharedLabels, Vec<(i64, String)>)>,
        order: Vec<usize>,
    }

    impl LogSource for VecSource {
        fn scan(
            &self,
            req: &ScanRequest,
            visit: &mut dyn FnMut(&SharedLabels, &Entry<'_>) -> ControlFlow<()>,
        ) -> Result<ScanStats, StoreError> {
            let mut next = vec![0usize; self.streams.len()];
            let mut stats = ScanStats::default();
            for &si in &self.order {
                let (labels, entries) = &self.streams[si];
                let (ts, line) = &entries[next[si]];
                next[si] += 1;
                if !req.selector.matches_pairs(labels) || *ts < req.start_ns || *ts >= req.end_ns {
                    continue;
                }
                stats.lines_scanned += 1;
                let e = Entry { ts_ns: *ts, line, metadata: vec![] };
                if visit(labels, &e).is_break() {
                    break;
                }
            }
            Ok(stats)
        }

        fn series(&self, _: &str, _: Option<&Selector>, _: i64, _: i64) -> Result<Vec<SharedLabels>, StoreError> {
            Ok(self.streams.iter().map(|(l, _)| l.clone()).collect())
        }
    }

    fn source(order_seed: u64) -> VecSource {
        let mut streams = Vec::new();
        for s in 0..4i64 {
            let labels = Arc::new(vec![("job".to_string(), "x".to_string()), ("s".to_string(), s.to_string())]);
            // Few distinct timestamps: many ties within and across streams.
            let entries: Vec<(i64, String)> = (0..50i64)
                .map(|i| {
                    ((i * (s + 1)) % 17 * 1_000_000_000, format!("line {s}-{i} level={}", ["a", "b"][(i % 2) as usize]))
                })
                .collect();
            streams.push((labels, entries));
        }
        // A deterministic shuffle of stream picks.
        let mut order: Vec<usize> =
            streams.iter().enumerate().flat_map(|(i, (_, e))| std::iter::repeat_n(i, e.len())).collect();
        let mut x = order_seed.wrapping_mul(2654435761).wrapping_add(1);
        for i in (1..order.len()).rev() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            order.swap(i, (x % (i as u64 + 1)) as usize);
        }
        VecSource { streams, order }
    }

    fn limits() -> Limits {
        Limits { max_memory_bytes: 1 << 24, timeout: Duration::from_secs(60) }
    }

    proptest! {
        #[test]
        fn answers_do_not_depend_on_visiting_order(seed in any::<u64>(), limit in 1usize..120, backward in any::<bool>()) {
            let Ok(Expr::Log(q)) = logql::parse(r#"{job="x"} | logfmt | level="a" or level="b""#) else { panic!() };
            let p = LogParams { tenant: "t".into(), start_ns: 0, end_ns: 100_000_000_000, limit, backward };
            let run = |src: &VecSource| {
                let a = select_logs(src, &q, &p, limits()).unwrap();
                a.entries.iter().map(|e| (e.ts, e.line.clone())).collect::<Vec<_>>()
            };
            let reference = run(&source(0));
            prop_assert_eq!(run(&source(seed)), reference.clone());
            prop_assert_eq!(reference.len(), limit.min(200));
            // Ordered by time in the query's direction.
            let ordered = reference.windows(2).all(|w| if backward { w[0].0 >= w[1].0 } else { w[0].0 <= w[1].0 });
            prop_assert!(ordered, "{:?}", reference);

            let Ok(Expr::Metric(m)) = logql::parse(r#"sum by (level) (count_over_time({job="x"} | logfmt [5s]))"#) else { panic!() };
            let steps = Steps { start_ns: 0, end_ns: 20_000_000_000, step_ns: 3_000_000_000 };
            let eval = |src: &VecSource| eval_metric(src, "t", &m, steps, limits()).unwrap().value;
            prop_assert_eq!(eval(&source(seed)), eval(&source(0)));
        }
    }

    #[test]
    fn budget_counts_and_releases() {
        let mut b = Budget::new(100);
        b.charge(60, "x").unwrap();
        b.release(50);
        b.charge(80, "x").unwrap();
        assert_eq!(b.peak(), 90);
        let e = b.charge(20, "the lines").unwrap_err();
        assert!(e.to_string().contains("logs.max_query_memory_bytes"), "{e}");
    }
}
