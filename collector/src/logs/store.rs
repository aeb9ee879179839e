//! [`LogStore`]: validated, durable pushes and exact scans.

use super::record;
use crate::logql::LogQuery;
use crate::selector::Selector;
use crate::telemetry::Telemetry;
use crate::wal::{self, Wal, WalError, WalOptions};
use osprey_config::CollectorConfig;
use osprey_protocol::logproto::PushRequest;
use osprey_protocol::loki_labels;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A stream's parsed labels, shared by every hit of that stream.
pub type SharedLabels = Arc<Vec<(String, String)>>;

pub struct LogStore {
    wal: Wal,
    max_line_bytes: usize,
    telemetry: Telemetry,
}

/// What happened to a push that was (at least partly) stored.
#[derive(Debug, Default)]
pub struct PushOutcome {
    pub accepted_lines: u64,
    pub accepted_bytes: u64,
    /// Loki-style messages for entries or streams that were refused; the push answers 400
    /// with them after storing everything valid.
    pub refused: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Wal(#[from] WalError),
    #[error("log store I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// A log query over a time range, `[start_ns, end_ns)`.
pub struct QueryRequest {
    pub tenant: String,
    pub query: LogQuery,
    pub start_ns: i64,
    pub end_ns: i64,
    pub limit: usize,
    pub backward: bool,
}

pub struct StreamResult {
    pub labels: Arc<Vec<(String, String)>>,
    /// `(ts_ns, line)`, in the query's direction.
    pub entries: Vec<(i64, String)>,
}

#[derive(Default)]
pub struct QueryResult {
    pub streams: Vec<StreamResult>,
    pub lines_scanned: u64,
    pub bytes_scanned: u64,
    pub exec_time: Duration,
}

impl LogStore {
    /// Opens the store under `data_dir/wal`, replaying and repairing the WAL.
    pub fn open(cfg: &CollectorConfig, telemetry: Telemetry) -> std::io::Result<LogStore> {
        let opts = WalOptions {
            dir: cfg.data_dir.join("wal"),
            segment_bytes: cfg.logs.wal_segment_bytes,
            fsync: cfg.logs.fsync,
            batch_wait: cfg.logs.fsync_batch_wait.get(),
            queue_capacity: 1024,
        };
        let started = Instant::now();
        let (wal, report) = Wal::open(opts, telemetry.clone(), |_, _| {})?;
        tracing::info!(
            segments = report.segments,
            records = report.records,
            corruptions = report.corruptions,
            truncated_bytes = report.truncated_bytes,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "log WAL opened"
        );
        Ok(LogStore { wal, max_line_bytes: cfg.logs.max_line_bytes, telemetry })
    }

    /// Validates `req` like Loki, stores every valid entry durably, and reports the rest.
    pub async fn push(&self, tenant: &str, req: PushRequest) -> Result<PushOutcome, StoreError> {
        let mut out = PushOutcome::default();
        let mut enc = record::Encoder::new(tenant);
        let mut any = false;
        for stream in &req.streams {
            let labels = match loki_labels::parse(&stream.labels) {
                Ok(l) if l.is_empty() => {
                    out.refused.push("error at least one label pair is required per stream".into());
                    self.telemetry.reject("push", "empty_labels");
                    continue;
                }
                Ok(l) => l,
                Err(e) => {
                    out.refused.push(format!("error parsing labels '{}' with error: {}", stream.labels, e));
                    self.telemetry.reject("push", "invalid_labels");
                    continue;
                }
            };
            let canonical = loki_labels::format(&labels);
            let mut kept = Vec::with_capacity(stream.entries.len());
            for e in &stream.entries {
                if e.line.len() > self.max_line_bytes {
                    out.refused.push(format!(
                        "Max entry size '{}' bytes exceeded for stream '{}' while adding an entry with length '{}' bytes",
                        self.max_line_bytes,
                        canonical,
                        e.line.len()
                    ));
                    self.telemetry.reject("push", "line_too_long");
                    continue;
                }
                let ts = e.timestamp.map_or(0, |t| t.to_unix_nanos());
                let meta: Vec<(String, String)> =
                    e.structured_metadata.iter().map(|m| (m.name.clone(), m.value.clone())).collect();
                out.accepted_bytes += e.line.len() as u64;
                kept.push((ts, e.line.as_str(), meta));
            }
            if kept.is_empty() {
                continue;
            }
            out.accepted_lines += kept.len() as u64;
            enc.stream(&canonical, kept.iter().map(|(t, l, m)| (*t, *l, m.as_slice())));
            any = true;
        }
        if any {
            self.wal.append(enc.finish()).await?;
            self.telemetry.lines_ingested.inc_by(out.accepted_lines);
            self.telemetry.bytes_ingested.inc_by(out.accepted_bytes);
        }
        Ok(out)
    }

    /// Visits every entry of `req.tenant` whose stream matches `req.selector` and whose
    /// timestamp is in `[start_ns, end_ns)`. Blocking: call it from `spawn_blocking`.
    ///
    /// This is the contract between the store and the query engine:
    /// - Entries come in **no particular order** across streams (within one stream, in ingest
    ///   order). The engine orders (top-k for log queries) or aggregates (metric queries).
    /// - `line_hints` are byte strings every wanted line contains (from `|=` filters). The store
    ///   may use them to skip data and may still deliver lines without them; the engine always
    ///   re-checks its filters.
    /// - `backward` says which end the engine wants first; the store may use it to visit newer
    ///   data first so that a `Break` from the visitor saves work.
    /// - The visitor returns `ControlFlow::Break(())` to stop the scan early.
    pub fn scan(
        &self,
        req: &ScanRequest,
        visit: &mut dyn FnMut(&SharedLabels, &record::Entry<'_>) -> ControlFlow<()>,
    ) -> Result<ScanStats, StoreError> {
        let mut stats = ScanStats::default();
        // Canonical labels -> parsed labels if the selector matches, None if it does not.
        let mut streams: HashMap<String, Option<SharedLabels>> = HashMap::new();
        let mut problem = None;
        let mut stopped = false;
        wal::read_committed(&self.wal.segments(), |_, payload| {
            if stopped {
                return;
            }
            let push = match record::decode(payload) {
                Ok(p) => p,
                Err(e) => {
                    problem.get_or_insert(e);
                    return;
                }
            };
            if push.tenant != req.tenant {
                return;
            }
            for s in &push.streams {
                let matched = streams.entry(s.labels.to_string()).or_insert_with(|| {
                    let labels = loki_labels::parse(s.labels).ok()?;
                    req.selector.matches_pairs(&labels).then(|| Arc::new(labels))
                });
                let Some(labels) = matched else { continue };
                for e in &s.entries {
                    if e.ts_ns < req.start_ns || e.ts_ns >= req.end_ns {
                        continue;
                    }
                    stats.lines_scanned += 1;
                    stats.bytes_scanned += e.line.len() as u64;
                    if visit(labels, e).is_break() {
                        stopped = true;
                        return;
                    }
                }
            }
        })?;
        if let Some(e) = problem {
            tracing::error!(error = %e, "undecodable record in the WAL; skipped");
        }
        Ok(stats)
    }

    /// The streams of `tenant` with entries in `[start_ns, end_ns)` that match `selector`
    /// (all streams when `None`), sorted by labels. Blocking.
    pub fn series(
        &self,
        tenant: &str,
        selector: Option<&Selector>,
        start_ns: i64,
        end_ns: i64,
    ) -> Result<Vec<SharedLabels>, StoreError> {
        let everything = Selector::default();
        let req = ScanRequest {
            tenant: tenant.to_string(),
            selector: selector.cloned().unwrap_or(everything),
            start_ns,
            end_ns,
            backward: false,
            line_hints: vec![],
        };
        let mut seen: HashMap<*const Vec<(String, String)>, SharedLabels> = HashMap::new();
        self.scan(&req, &mut |labels, _| {
            seen.entry(Arc::as_ptr(labels)).or_insert_with(|| labels.clone());
            ControlFlow::Continue(())
        })?;
        let mut out: Vec<SharedLabels> = seen.into_values().collect();
        out.sort();
        Ok(out)
    }

    /// Runs a log query (selector + line filters, top `limit` by time). Blocking.
    pub fn query(&self, req: &QueryRequest) -> Result<QueryResult, StoreError> {
        let started = Instant::now();
        let mut top = TopK::new(req.limit, req.backward);
        let scan = ScanRequest {
            tenant: req.tenant.clone(),
            selector: req.query.selector.clone(),
            start_ns: req.start_ns,
            end_ns: req.end_ns,
            backward: req.backward,
            line_hints: req.query.required_literals(),
        };
        let stats = self.scan(&scan, &mut |labels, e| {
            if req.query.keep_line(e.line) && top.admits(e.ts_ns) {
                top.push(e.ts_ns, labels, e.line);
            }
            ControlFlow::Continue(())
        })?;
        Ok(QueryResult {
            streams: top.into_streams(),
            lines_scanned: stats.lines_scanned,
            bytes_scanned: stats.bytes_scanned,
            exec_time: started.elapsed(),
        })
    }
}

/// What [`LogStore::scan`] visits.
#[derive(Clone, Debug)]
pub struct ScanRequest {
    pub tenant: String,
    pub selector: Selector,
    pub start_ns: i64,
    pub end_ns: i64,
    pub backward: bool,
    pub line_hints: Vec<Vec<u8>>,
}

/// Work done by a scan (for Loki's `stats`).
#[derive(Clone, Copy, Debug, Default)]
pub struct ScanStats {
    pub lines_scanned: u64,
    pub bytes_scanned: u64,
}

struct Hit {
    ts: i64,
    seq: u64,
    labels: Arc<Vec<(String, String)>>,
    line: String,
}

/// Keeps the `limit` newest (backward) or oldest (forward) hits; memory is bounded by `limit`.
struct TopK {
    limit: usize,
    backward: bool,
    seq: u64,
    // Ordered so the heap's top is the hit to evict next.
    heap: BinaryHeap<(Reverse<i64>, Reverse<u64>, usize)>,
    forward_heap: BinaryHeap<(i64, u64, usize)>,
    slots: Vec<Option<Hit>>,
    free: Vec<usize>,
}

impl TopK {
    fn new(limit: usize, backward: bool) -> Self {
        TopK {
            limit,
            backward,
            seq: 0,
            heap: BinaryHeap::new(),
            forward_heap: BinaryHeap::new(),
            slots: Vec::new(),
            free: Vec::new(),
        }
    }

    fn len(&self) -> usize {
        if self.backward { self.heap.len() } else { self.forward_heap.len() }
    }

    /// Cheap check before copying a line: would a hit at `ts` enter the top-k?
    fn admits(&self, ts: i64) -> bool {
        if self.limit == 0 {
            return false;
        }
        if self.len() < self.limit {
            return true;
        }
        if self.backward {
            self.heap.peek().is_some_and(|(Reverse(min), _, _)| ts > *min)
        } else {
            self.forward_heap.peek().is_some_and(|(max, _, _)| ts < *max)
        }
    }

    fn push(&mut self, ts: i64, labels: &Arc<Vec<(String, String)>>, line: &str) {
        self.seq += 1;
        let hit = Hit { ts, seq: self.seq, labels: labels.clone(), line: line.to_string() };
        let slot = match self.free.pop() {
            Some(i) => {
                self.slots[i] = Some(hit);
                i
            }
            None => {
                self.slots.push(Some(hit));
                self.slots.len() - 1
            }
        };
        let evicted = if self.backward {
            self.heap.push((Reverse(ts), Reverse(self.seq), slot));
            (self.heap.len() > self.limit).then(|| self.heap.pop()).flatten().map(|(_, _, s)| s)
        } else {
            self.forward_heap.push((ts, self.seq, slot));
            (self.forward_heap.len() > self.limit).then(|| self.forward_heap.pop()).flatten().map(|(_, _, s)| s)
        };
        if let Some(s) = evicted {
            self.slots[s] = None;
            self.free.push(s);
        }
    }

    fn into_streams(self) -> Vec<StreamResult> {
        let mut hits: Vec<Hit> = self.slots.into_iter().flatten().collect();
        if self.backward {
            hits.sort_by(|a, b| b.ts.cmp(&a.ts).then(b.seq.cmp(&a.seq)));
        } else {
            hits.sort_by(|a, b| a.ts.cmp(&b.ts).then(a.seq.cmp(&b.seq)));
        }
        let mut by_stream: HashMap<*const Vec<(String, String)>, usize> = HashMap::new();
        let mut out: Vec<StreamResult> = Vec::new();
        for h in hits {
            let idx = *by_stream.entry(Arc::as_ptr(&h.labels)).or_insert_with(|| {
                out.push(StreamResult { labels: h.labels.clone(), entries: Vec::new() });
                out.len() - 1
            });
            out[idx].entries.push((h.ts, h.line));
        }
        out.sort_by(|a, b| a.labels.cmp(&b.labels));
        out
    }
}
