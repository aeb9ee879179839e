//! [`LogStore`]: validated, durable pushes; a queryable head; immutable parts; exact scans.
//!
//! Write path: a push is validated like Loki ([`super::limits`]), encoded as one WAL record,
//! appended (group commit, fsync), inserted into the in-memory head, and only then acknowledged.
//! A background flusher turns the head into parts (one per tenant and UTC day) and truncates the
//! WAL; a background merger combines small parts and applies retention ([`super::maintain`]).
//!
//! Read path: [`LogStore::scan`] resolves the selector through the tenant's postings, then visits
//! the head, the heads being flushed, and the blocks of every part whose time range, stream and
//! filters (tokens and n-grams of `line_hints`) say it may hold a wanted line.
//!
//! Consistency: every structure a scan needs (the active head, heads being flushed, live parts)
//! sits in one immutable [`State`] snapshot that is replaced atomically, so a scan sees each
//! line exactly once however flushes and merges interleave with it.

use super::block::{DecodedBlock, SearchPlan};
use super::filter::Probe;
use super::head::{Head, StreamSnapshot};
use super::index::TenantIndex;
use super::limits::{self, Validated};
use super::maintain;
use super::manifest::Manifest;
use super::metrics::LogMetrics;
use super::part::Part;
use super::record;
use crate::logql::LogQuery;
use crate::selector::Selector;
use crate::telemetry::Telemetry;
use crate::wal::{Wal, WalError, WalOptions};
use osprey_config::CollectorConfig;
use osprey_config::collector::Logs;
use osprey_protocol::logproto::PushRequest;
use osprey_protocol::loki_labels;
use prometheus_client::registry::Registry;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

/// A stream's parsed labels, shared by every hit of that stream.
pub type SharedLabels = Arc<Vec<(String, String)>>;

/// A part and the tenant-index ids of its streams.
pub struct LivePart {
    pub part: Part,
    pub stream_ids: Vec<u32>,
}

/// What a scan reads, replaced atomically as a whole.
pub struct State {
    pub active: Arc<RwLock<Head>>,
    /// Heads being written to parts, oldest first, each with the WAL segment id that was
    /// opened when it was frozen (its lines are all in older segments); readable until their
    /// parts are live.
    pub frozen: Vec<(Arc<RwLock<Head>>, u64)>,
    pub parts: Vec<Arc<LivePart>>,
}

pub(crate) struct Inner {
    /// `[logs]`; replaced by a reload (see [`LogStore::apply_config`]).
    pub cfg: crate::live::Live<Logs>,
    pub parts_dir: PathBuf,
    pub logs_dir: PathBuf,
    pub wal: Wal,
    /// Pushes hold it (shared) from WAL append to head insert; a flush takes it exclusively to
    /// roll the WAL and swap the head, so no acknowledged line is ever in neither.
    pub gate: tokio::sync::RwLock<()>,
    pub index: RwLock<HashMap<String, TenantIndex>>,
    pub state: RwLock<Arc<State>>,
    pub manifest: Mutex<Manifest>,
    /// Serializes flushes (the flusher thread and `flush_now`).
    pub flush_lock: Mutex<()>,
    pub next_part_id: AtomicU64,
    pub telemetry: Telemetry,
    pub metrics: LogMetrics,
    pub started: Instant,
    pub stop: AtomicBool,
    pub wake: (Mutex<bool>, Condvar),
    /// Fan-out to `[[logs.forward]]` receivers, when configured.
    pub forward: Option<super::forward::Forwarder>,
    /// Lines and line bytes in frozen heads (for the head gauges, which count both).
    pub frozen_lines: AtomicU64,
    pub frozen_bytes: AtomicU64,
    /// `[limits.tenants.<name>] max_streams` overrides of `max_streams_per_tenant`.
    pub stream_limits: RwLock<std::collections::HashMap<String, usize>>,
}

impl Inner {
    pub fn snapshot(&self) -> Arc<State> {
        match self.state.read() {
            Ok(s) => s.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    pub fn set_state(&self, f: impl FnOnce(&State) -> State) {
        let mut guard = match self.state.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let next = f(&guard);
        *guard = Arc::new(next);
    }

    pub fn now_secs(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    pub fn wake_flusher(&self) {
        let (lock, cv) = &self.wake;
        if let Ok(mut w) = lock.lock() {
            *w = true;
            cv.notify_all();
        }
    }
}

pub struct LogStore {
    inner: Arc<Inner>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Drop for LogStore {
    fn drop(&mut self) {
        self.inner.stop.store(true, Ordering::SeqCst);
        self.inner.wake_flusher();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// What happened to a push that was (at least partly) stored.
#[derive(Debug, Default)]
pub struct PushOutcome {
    pub accepted_lines: u64,
    pub accepted_bytes: u64,
    /// Loki-style messages for entries or streams that were refused; the push answers 400
    /// (429 when `rate_limited`) with them after storing everything valid.
    pub refused: Vec<String>,
    /// Some stream was refused by the per-tenant stream limit (Loki answers 429).
    pub rate_limited: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Wal(#[from] WalError),
    #[error("log store I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Part(#[from] super::part::PartError),
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
    /// Entries handed to the visitor.
    pub lines_scanned: u64,
    /// Line bytes handed to the visitor.
    pub bytes_scanned: u64,
    /// Blocks of parts decompressed.
    pub blocks_read: u64,
    /// Blocks skipped because their filters rule out a line hint.
    pub blocks_pruned: u64,
    /// Compressed bytes read from part files.
    pub compressed_bytes_read: u64,
    /// Head entries looked at (lines not yet flushed into parts).
    pub head_lines: u64,
}

/// Sizes for Loki's `/index/stats` (and, per stream, `/index/volume`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IndexStats {
    pub streams: u64,
    /// Blocks of parts overlapping the range, plus one per stream with head lines in it.
    pub chunks: u64,
    pub entries: u64,
    /// Uncompressed line bytes.
    pub bytes: u64,
}

/// One block or head stream a scan will visit.
enum Source {
    Block { part: Arc<LivePart>, block: usize },
    Head { head: Arc<RwLock<Head>> },
}

impl LogStore {
    /// Opens the store under `data_dir/logs` and `data_dir/wal` with a private metrics registry.
    pub fn open(cfg: &CollectorConfig, telemetry: Telemetry) -> std::io::Result<LogStore> {
        Self::open_with_registry(cfg, telemetry, &mut Registry::default())
    }

    /// Opens the store: loads the manifest and parts, deletes leftovers of interrupted flushes
    /// and merges, replays the WAL past the last flush into the head (logging progress), and
    /// starts the flusher and merger threads. Metrics go to `registry`.
    pub fn open_with_registry(
        cfg: &CollectorConfig,
        telemetry: Telemetry,
        registry: &mut Registry,
    ) -> std::io::Result<LogStore> {
        Self::open_with_progress(cfg, telemetry, registry, &crate::progress::Progress::default())
    }

    /// [`LogStore::open_with_registry`], publishing how far the WAL replay is in `progress`
    /// (bytes of segments replayed out of all of them), for `/ready` during the start.
    pub fn open_with_progress(
        cfg: &CollectorConfig,
        telemetry: Telemetry,
        registry: &mut Registry,
        progress: &crate::progress::Progress,
    ) -> std::io::Result<LogStore> {
        let mut metrics = LogMetrics::register(registry);
        metrics.rejected = Some(telemetry.clone());
        let logs_dir = cfg.data_dir.join("logs");
        let parts_dir = logs_dir.join("parts");
        std::fs::create_dir_all(&parts_dir)?;
        let wal_dir = cfg.data_dir.join("wal");
        std::fs::create_dir_all(&wal_dir)?;
        let started = Instant::now();
        let mut manifest = Manifest::load(&logs_dir)?;
        let (parts, mut index) = maintain::load_parts(&parts_dir, &mut manifest, &metrics)?;
        // WAL segments below the checkpoint are in parts already.
        let removed = maintain::remove_wal_before(&wal_dir, manifest.wal_through)?;
        if removed > 0 {
            tracing::info!(segments = removed, "removed WAL segments already flushed into parts");
        }
        let mut head = Head::default();
        let opts = WalOptions {
            dir: wal_dir,
            segment_bytes: cfg.logs.wal_segment_bytes,
            fsync: cfg.logs.fsync,
            batch_wait: cfg.logs.fsync_batch_wait.get(),
            queue_capacity: 1024,
        };
        // Where each segment starts in the bytes to replay, for the progress line.
        let mut starts: HashMap<u64, u64> = HashMap::new();
        let mut total = 0u64;
        for (id, len) in maintain::wal_segment_sizes(&opts.dir)? {
            starts.insert(id, total);
            total += len;
        }
        progress.begin(total);
        let mut progress_log = crate::progress::ProgressLog::new("replaying the WAL into the head");
        let mut replayed = 0u64;
        let mut undecodable = 0u64;
        let (wal, report) = Wal::open(opts, telemetry.clone(), |pos, payload| {
            match record::decode(payload) {
                Ok(push) => {
                    replay_push(&mut index, &mut head, &push, 0);
                    replayed += 1;
                }
                Err(e) => {
                    undecodable += 1;
                    tracing::error!(segment = pos.segment, offset = pos.offset, error = %e, "undecodable WAL record skipped");
                }
            }
            let done = starts.get(&pos.segment).copied().unwrap_or(0) + pos.offset;
            progress.set(done);
            progress_log.update(done, total);
        })?;
        progress.finish();
        metrics.replayed_records.inc_by(replayed);
        tracing::info!(
            segments = report.segments,
            replayed_bytes = total,
            records = report.records,
            head_lines = head.entries,
            undecodable,
            corruptions = report.corruptions,
            truncated_bytes = report.truncated_bytes,
            parts = parts.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "log store opened"
        );
        metrics.head_bytes.set(head.bytes as u64);
        metrics.head_lines.set(head.entries as u64);
        let next_part_id = manifest.next_part_id;
        let forward = if cfg.logs.forward.is_empty() {
            None
        } else {
            let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
                std::io::Error::other("log forwarding needs a tokio runtime: open the store from one (spawn_blocking)")
            })?;
            Some(super::forward::Forwarder::start(&cfg.data_dir, &cfg.logs.forward, registry, &runtime)?)
        };
        let inner = Arc::new(Inner {
            cfg: crate::live::Live::new(cfg.logs.clone()),
            parts_dir,
            logs_dir,
            wal,
            gate: tokio::sync::RwLock::new(()),
            index: RwLock::new(index),
            state: RwLock::new(Arc::new(State { active: Arc::new(RwLock::new(head)), frozen: Vec::new(), parts })),
            manifest: Mutex::new(manifest),
            flush_lock: Mutex::new(()),
            next_part_id: AtomicU64::new(next_part_id),
            telemetry,
            metrics,
            started,
            stop: AtomicBool::new(false),
            wake: (Mutex::new(false), Condvar::new()),
            forward,
            frozen_lines: AtomicU64::new(0),
            frozen_bytes: AtomicU64::new(0),
            stream_limits: RwLock::new(
                cfg.limits.tenants.iter().filter_map(|(t, l)| Some((t.clone(), l.max_streams?))).collect(),
            ),
        });
        maintain::publish_part_metrics(&inner);
        let threads = vec![
            std::thread::Builder::new().name("osprey-log-flush".into()).spawn({
                let inner = inner.clone();
                move || maintain::flusher(inner)
            })?,
            std::thread::Builder::new().name("osprey-log-merge".into()).spawn({
                let inner = inner.clone();
                move || maintain::merger(inner)
            })?,
        ];
        Ok(LogStore { inner, threads })
    }

    /// Replaces the per-tenant overrides of `max_streams_per_tenant` (a config reload).
    pub fn set_stream_limits(&self, overrides: std::collections::HashMap<String, usize>) {
        *self.inner.stream_limits.write().unwrap_or_else(std::sync::PoisonError::into_inner) = overrides;
    }

    /// Applies a reloaded `[logs]`: limits, retention, flush and merge settings take effect
    /// from the next push and the next maintenance pass. The WAL settings and forwarding
    /// targets are fixed at open (a reload reports them as needing a restart).
    pub fn apply_config(&self, logs: &Logs) {
        let mut next = logs.clone();
        let running = self.inner.cfg.load();
        next.fsync = running.fsync;
        next.fsync_batch_wait = running.fsync_batch_wait;
        next.wal_segment_bytes = running.wal_segment_bytes;
        next.forward = running.forward.clone();
        next.default_tenant = running.default_tenant.clone();
        self.inner.cfg.store(next);
        // A smaller head bound or flush interval applies now, not at the next push.
        self.inner.wake_flusher();
    }

    /// Why the WAL refuses writes, if it does (a failed fsync): pushes fail until a restart.
    pub fn wal_poisoned(&self) -> Option<String> {
        self.inner.wal.poisoned()
    }

    /// Validates `req` like Loki, stores every valid entry durably, and reports the rest.
    pub async fn push(&self, tenant: &str, req: PushRequest) -> Result<PushOutcome, StoreError> {
        let inner = &self.inner;
        let cfg = inner.cfg.load();
        let mut out = PushOutcome::default();
        let max_streams = match inner.stream_limits.read() {
            Ok(m) => m.get(tenant).copied(),
            Err(p) => p.into_inner().get(tenant).copied(),
        }
        .unwrap_or(cfg.max_streams_per_tenant);
        let valid = {
            let mut index = match inner.index.write() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            let tenant_index = match index.get_mut(tenant) {
                Some(t) => t,
                None => index.entry(tenant.to_string()).or_default(),
            };
            let limits = limits::Limits { cfg: &cfg, max_streams };
            limits::validate(&limits, tenant, tenant_index, &req, inner.now_secs(), &inner.metrics, &mut out)
        };
        if valid.is_empty() {
            return Ok(out);
        }
        // Backpressure: the head may hold up to 1.5 times its flush threshold while a flush runs.
        let mut waited = false;
        let bound = cfg.head_max_bytes + cfg.head_max_bytes / 2;
        while inner.snapshot().active.read().map(|h| h.bytes).unwrap_or(0) > bound {
            if !waited {
                inner.metrics.ingest_waits.inc();
                waited = true;
            }
            inner.wake_flusher();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let mut enc = record::Encoder::new(tenant);
        for v in &valid {
            let s = &req.streams[v.stream_index];
            let metas: Vec<Vec<(String, String)>> = v
                .entries
                .iter()
                .map(|&i| s.entries[i].structured_metadata.iter().map(|m| (m.name.clone(), m.value.clone())).collect())
                .collect();
            enc.stream(
                &v.canonical,
                v.entries.iter().zip(&metas).map(|(&i, m)| {
                    let e = &s.entries[i];
                    (e.timestamp.map_or(0, |t| t.to_unix_nanos()), e.line.as_str(), m.as_slice())
                }),
            );
        }
        let payload = enc.finish();
        {
            let _gate = inner.gate.read().await;
            inner.wal.append(payload).await?;
            let state = inner.snapshot();
            let mut head = match state.active.write() {
                Ok(h) => h,
                Err(p) => p.into_inner(),
            };
            let mut bytes = 0usize;
            let mut lines = 0usize;
            for v in &valid {
                let s = &req.streams[v.stream_index];
                let sh = head.stream_mut(tenant, v.stream_id);
                for &i in &v.entries {
                    let e = &s.entries[i];
                    let meta: Vec<(&str, &str)> =
                        e.structured_metadata.iter().map(|m| (m.name.as_str(), m.value.as_str())).collect();
                    sh.push(e.timestamp.map_or(0, |t| t.to_unix_nanos()), &e.line, &meta);
                    bytes += e.line.len();
                    lines += 1;
                }
            }
            head.bytes += bytes;
            head.entries += lines;
            inner.metrics.head_bytes.set(head.bytes as u64 + inner.frozen_bytes.load(Ordering::Relaxed));
            inner.metrics.head_lines.set(head.entries as u64 + inner.frozen_lines.load(Ordering::Relaxed));
            if head.bytes >= cfg.head_max_bytes {
                inner.wake_flusher();
            }
        }
        if let Some(forward) = &inner.forward {
            forward.enqueue(tenant, accepted_proto(&req, &valid)).await;
        }
        for v in &valid {
            out.accepted_lines += v.entries.len() as u64;
            out.accepted_bytes +=
                v.entries.iter().map(|&i| req.streams[v.stream_index].entries[i].line.len() as u64).sum::<u64>();
        }
        inner.telemetry.lines_ingested.inc_by(out.accepted_lines);
        inner.telemetry.bytes_ingested.inc_by(out.accepted_bytes);
        Ok(out)
    }

    /// Stream ids of `tenant` matching `selector`, with their labels (indexed by id).
    fn resolve(&self, tenant: &str, selector: &Selector) -> (Vec<u32>, Vec<Option<SharedLabels>>) {
        let index = match self.inner.index.read() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let Some(t) = index.get(tenant) else { return (Vec::new(), Vec::new()) };
        let ids = t.select(selector);
        let mut labels = vec![None; t.streams.len()];
        for &id in &ids {
            labels[id as usize] = Some(t.streams[id as usize].labels.clone());
        }
        (ids, labels)
    }

    /// Visits every entry of `req.tenant` whose stream matches `req.selector`, whose timestamp
    /// is in `[start_ns, end_ns)` and whose line contains every `req.line_hints` (all entries when
    /// there are none). Blocking: call it from `spawn_blocking`.
    ///
    /// This is the contract between the store and the query engine:
    /// - Every such entry is visited **exactly once** (even while flushes and merges run:
    ///   the scan reads one consistent snapshot of head, flushing heads and parts).
    /// - Entries come in **no particular order** across streams. Within one block (up to
    ///   `logs.block_bytes` of one stream) they are in time order, ascending, or descending when
    ///   `backward`; head entries of a stream come in arrival order. Blocks are visited oldest
    ///   first (by their oldest entry) or, when `backward`, newest first (by their newest entry),
    ///   the head last (forward) or first (backward). The engine orders (top-k for log queries)
    ///   or aggregates (metric queries).
    /// - `line_hints` are byte strings every wanted line contains (from `|=` filters). The store
    ///   uses them to skip blocks (token filter and n-gram signature per block) and, within the
    ///   blocks it reads, to skip lines: **only lines containing every hint are visited** (found by
    ///   one substring search over each block's text, on the worker threads; an empty hint is
    ///   ignored). The engine still applies its own filters. `lines_scanned`/`bytes_scanned` count
    ///   visited lines.
    /// - The visitor returns `ControlFlow::Break(())` to stop the scan early.
    /// - Blocks are decompressed on up to 4 threads ahead of the visitor (bounded: a few blocks
    ///   in flight); the visitor itself runs on the calling thread.
    pub fn scan(
        &self,
        req: &ScanRequest,
        visit: &mut dyn FnMut(&SharedLabels, &record::Entry<'_>) -> ControlFlow<()>,
    ) -> Result<ScanStats, StoreError> {
        let mut stats = ScanStats::default();
        if req.start_ns >= req.end_ns {
            return Ok(stats);
        }
        let (ids, labels) = self.resolve(&req.tenant, &req.selector);
        if ids.is_empty() {
            return Ok(stats);
        }
        let state = self.inner.snapshot();
        let probes: Vec<Probe> = req.line_hints.iter().map(|h| Probe::new(h)).collect();
        let mut blocks: Vec<(i64, Source)> = Vec::new();
        for lp in &state.parts {
            let m = &lp.part.meta;
            if m.tenant != req.tenant || m.max_ts < req.start_ns || m.min_ts >= req.end_ns {
                continue;
            }
            for (i, b) in m.blocks.iter().enumerate() {
                if b.max_ts < req.start_ns || b.min_ts >= req.end_ns {
                    continue;
                }
                let id = lp.stream_ids[b.stream as usize] as usize;
                if labels.get(id).is_none_or(Option::is_none) {
                    continue;
                }
                if !b.filter.may_contain_all(&probes) {
                    stats.blocks_pruned += 1;
                    continue;
                }
                let key = if req.backward { -b.max_ts.saturating_add(1) } else { b.min_ts };
                blocks.push((key, Source::Block { part: lp.clone(), block: i }));
            }
        }
        self.inner.metrics.blocks_pruned.inc_by(stats.blocks_pruned);
        blocks.sort_by_key(|(k, _)| *k);
        let mut heads: Vec<Source> = state.frozen.iter().map(|(h, _)| Source::Head { head: h.clone() }).collect();
        heads.push(Source::Head { head: state.active.clone() });
        let mut sources: Vec<Source> = Vec::with_capacity(blocks.len() + heads.len());
        if req.backward {
            sources.extend(heads.into_iter().rev());
            sources.extend(blocks.into_iter().map(|(_, s)| s));
        } else {
            sources.extend(blocks.into_iter().map(|(_, s)| s));
            sources.extend(heads);
        }
        let ids_set: HashSet<u32> = ids.iter().copied().collect();
        let plan = SearchPlan::new(&req.line_hints);
        let ctx = Ctx { req, ids: &ids_set, labels: &labels, plan: &plan };
        let result = scan_sources(&ctx, &sources, &mut stats, visit);
        self.inner.metrics.blocks_read.inc_by(stats.blocks_read);
        result.map(|()| stats)
    }

    /// The streams of `tenant` with entries in `[start_ns, end_ns)` that match `selector`
    /// (all streams when `None`), sorted by labels. Blocking. Exact: a stream is listed only if
    /// it has at least one entry in the range.
    pub fn series(
        &self,
        tenant: &str,
        selector: Option<&Selector>,
        start_ns: i64,
        end_ns: i64,
    ) -> Result<Vec<SharedLabels>, StoreError> {
        let per_stream = self.stream_stats(tenant, selector, start_ns, end_ns, true)?;
        let mut out: Vec<SharedLabels> = per_stream.into_iter().map(|(l, _)| l).collect();
        out.sort();
        Ok(out)
    }

    /// Label names of the streams of `tenant` with entries in `[start_ns, end_ns)`, sorted.
    pub fn label_names(&self, tenant: &str, start_ns: i64, end_ns: i64) -> Result<Vec<String>, StoreError> {
        let mut names: Vec<String> = self
            .series(tenant, None, start_ns, end_ns)?
            .iter()
            .flat_map(|l| l.iter().map(|(k, _)| k.clone()))
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// Values of label `name` among the streams of `tenant` matching `selector` (all when
    /// `None`) with entries in `[start_ns, end_ns)`, sorted.
    pub fn label_values(
        &self,
        tenant: &str,
        name: &str,
        selector: Option<&Selector>,
        start_ns: i64,
        end_ns: i64,
    ) -> Result<Vec<String>, StoreError> {
        let mut values: Vec<String> = self
            .series(tenant, selector, start_ns, end_ns)?
            .iter()
            .filter_map(|l| l.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
            .collect();
        values.sort();
        values.dedup();
        Ok(values)
    }

    /// Totals for Loki's `/index/stats`: matching streams with data in the range, and the
    /// blocks, entries and uncompressed line bytes of the blocks overlapping it (like Loki, whole
    /// blocks are counted: a block partly in the range counts fully). Head lines are counted
    /// exactly. Blocking.
    pub fn index_stats(
        &self,
        tenant: &str,
        selector: Option<&Selector>,
        start_ns: i64,
        end_ns: i64,
    ) -> Result<IndexStats, StoreError> {
        let per_stream = self.stream_stats(tenant, selector, start_ns, end_ns, false)?;
        let mut total = IndexStats::default();
        for (_, s) in per_stream {
            total.streams += 1;
            total.chunks += s.chunks;
            total.entries += s.entries;
            total.bytes += s.bytes;
        }
        Ok(total)
    }

    /// Per matching stream, the same figures as [`LogStore::index_stats`] (`streams` is 1):
    /// what Loki's `/index/volume` aggregates. Blocking.
    pub fn index_volume(
        &self,
        tenant: &str,
        selector: Option<&Selector>,
        start_ns: i64,
        end_ns: i64,
    ) -> Result<Vec<(SharedLabels, IndexStats)>, StoreError> {
        let mut v = self.stream_stats(tenant, selector, start_ns, end_ns, false)?;
        v.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(v)
    }

    /// Per stream with data in range: block-level stats, or (`exact`) a confirmed presence.
    fn stream_stats(
        &self,
        tenant: &str,
        selector: Option<&Selector>,
        start_ns: i64,
        end_ns: i64,
        exact: bool,
    ) -> Result<Vec<(SharedLabels, IndexStats)>, StoreError> {
        if start_ns >= end_ns {
            return Ok(Vec::new());
        }
        let everything = Selector::default();
        let (ids, labels) = self.resolve(tenant, selector.unwrap_or(&everything));
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let state = self.inner.snapshot();
        let mut acc: HashMap<u32, IndexStats> = HashMap::new();
        for h in std::iter::once(&state.active).chain(state.frozen.iter().map(|(h, _)| h)) {
            let head = match h.read() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            let Some(t) = head.tenants.get(tenant) else { continue };
            for &id in &ids {
                let Some(sh) = t.get(&id) else { continue };
                if sh.max_ts < start_ns || sh.min_ts >= end_ns {
                    continue;
                }
                let (mut n, mut bytes) = (0u64, 0u64);
                for i in 0..sh.len() {
                    if (start_ns..end_ns).contains(&sh.ts[i]) {
                        n += 1;
                        bytes += sh.line(i).len() as u64;
                    }
                }
                if n > 0 {
                    let s = acc.entry(id).or_default();
                    s.chunks += 1;
                    s.entries += n;
                    s.bytes += bytes;
                }
            }
        }
        let mut buf = Vec::new();
        for lp in &state.parts {
            let m = &lp.part.meta;
            if m.tenant != tenant || m.max_ts < start_ns || m.min_ts >= end_ns {
                continue;
            }
            for (i, b) in m.blocks.iter().enumerate() {
                if b.max_ts < start_ns || b.min_ts >= end_ns {
                    continue;
                }
                let id = lp.stream_ids[b.stream as usize];
                if labels.get(id as usize).is_none_or(Option::is_none) {
                    continue;
                }
                if exact && acc.contains_key(&id) {
                    continue;
                }
                let inside = b.min_ts >= start_ns && b.max_ts < end_ns;
                if exact && !inside {
                    let ts = lp.part.read_timestamps(i, &mut buf)?;
                    if !ts.iter().any(|t| (start_ns..end_ns).contains(t)) {
                        continue;
                    }
                }
                let s = acc.entry(id).or_default();
                s.chunks += 1;
                s.entries += u64::from(b.entries);
                s.bytes += u64::from(b.line_bytes);
            }
        }
        Ok(acc
            .into_iter()
            .filter_map(|(id, mut s)| {
                s.streams = 1;
                labels.get(id as usize).cloned().flatten().map(|l| (l, s))
            })
            .collect())
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

    /// Flushes the head into parts now (tests, benchmarks and shutdown). Blocking.
    pub fn flush_now(&self) -> Result<(), StoreError> {
        maintain::flush(&self.inner)
    }

    /// Runs one merge and retention pass now (tests and benchmarks). Blocking.
    pub fn maintain_now(&self) -> Result<(), StoreError> {
        maintain::retention(&self.inner)?;
        while maintain::merge_once(&self.inner)? {}
        Ok(())
    }

    /// Live parts: `(tenant, day, file bytes, entries, line bytes, filter bytes)`.
    pub fn parts_summary(&self) -> Vec<(String, i64, u64, u64, u64, u64)> {
        self.inner
            .snapshot()
            .parts
            .iter()
            .map(|p| {
                let m = &p.part.meta;
                (m.tenant.clone(), m.day, p.part.file_bytes, m.entries(), m.line_bytes(), m.filter_bytes())
            })
            .collect()
    }
}

/// The accepted part of a push as an encoded `logproto.PushRequest` (for forwarding).
fn accepted_proto(req: &PushRequest, valid: &[Validated]) -> Vec<u8> {
    use osprey_protocol::logproto::StreamAdapter;
    use prost::Message;
    let streams = valid
        .iter()
        .map(|v| {
            let s = &req.streams[v.stream_index];
            StreamAdapter {
                labels: v.canonical.clone(),
                entries: v.entries.iter().map(|&i| s.entries[i].clone()).collect(),
                hash: 0,
            }
        })
        .collect();
    PushRequest { streams }.encode_to_vec()
}

/// Inserts a replayed (or already validated) push into the index and head.
pub(crate) fn replay_push(
    index: &mut HashMap<String, TenantIndex>,
    head: &mut Head,
    push: &record::Push<'_>,
    now: u64,
) {
    let t = match index.get_mut(push.tenant) {
        Some(t) => t,
        None => index.entry(push.tenant.to_string()).or_default(),
    };
    for s in &push.streams {
        let id = match t.get(s.labels) {
            Some(id) => id,
            None => {
                let Ok(parsed) = loki_labels::parse(s.labels) else { continue };
                t.intern(s.labels, &parsed)
            }
        };
        if !t.streams[id as usize].active {
            t.streams[id as usize].active = true;
            t.active += 1;
        }
        let info = &mut t.streams[id as usize];
        info.last_push = now;
        let sh = head.stream_mut(push.tenant, id);
        let mut bytes = 0;
        for e in &s.entries {
            info.max_ts = info.max_ts.max(e.ts_ns);
            sh.push(e.ts_ns, e.line, &e.metadata);
            bytes += e.line.len();
        }
        head.bytes += bytes;
        head.entries += s.entries.len();
    }
}

/// What every step of one scan needs.
struct Ctx<'a> {
    req: &'a ScanRequest,
    ids: &'a HashSet<u32>,
    labels: &'a [Option<SharedLabels>],
    /// How blocks are searched for the line hints.
    plan: &'a SearchPlan<'a>,
}

/// A decoded block and the indexes of its lines to visit (in range, containing every hint).
type Prepared = (DecodedBlock, Vec<u32>);

fn prepare(ctx: &Ctx<'_>, part: &LivePart, block: usize, buf: &mut Vec<u8>) -> Result<Prepared, StoreError> {
    Ok(part.part.read_matching(block, buf, ctx.req.start_ns, ctx.req.end_ns, ctx.plan)?)
}

/// Visits `sources` in order; blocks are decompressed and searched for the line hints by
/// worker threads ahead of the visitor, which only sees the lines that contain them.
fn scan_sources(
    ctx: &Ctx<'_>,
    sources: &[Source],
    stats: &mut ScanStats,
    visit: &mut dyn FnMut(&SharedLabels, &record::Entry<'_>) -> ControlFlow<()>,
) -> Result<(), StoreError> {
    let block_count = sources.iter().filter(|s| matches!(s, Source::Block { .. })).count();
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 4);
    if block_count < 2 || workers < 2 {
        let mut buf = Vec::new();
        for s in sources {
            let flow = match s {
                Source::Block { part, block } => {
                    let p = prepare(ctx, part, *block, &mut buf)?;
                    stats.blocks_read += 1;
                    stats.compressed_bytes_read += u64::from(part.part.meta.blocks[*block].len);
                    visit_block(ctx, part, *block, &p, stats, visit)
                }
                Source::Head { head } => visit_head(ctx, head, stats, visit),
            };
            if flow.is_break() {
                break;
            }
        }
        return Ok(());
    }
    // Parallel decompression, in-order visiting: workers claim source indexes in order, so the
    // reorder buffer holds at most `workers + channel capacity` blocks.
    let next = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<(usize, Result<Prepared, StoreError>)>(workers * 2);
        for _ in 0..workers {
            let tx = tx.clone();
            let (next, stop) = (&next, &stop);
            scope.spawn(move || {
                let mut buf = Vec::new();
                loop {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                    let Some(src) = sources.get(i) else { break };
                    let Source::Block { part, block } = src else { continue };
                    if tx.send((i, prepare(ctx, part, *block, &mut buf))).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        let mut pending: std::collections::BTreeMap<usize, Result<Prepared, StoreError>> = Default::default();
        let mut result = Ok(());
        'outer: for (i, s) in sources.iter().enumerate() {
            let flow = match s {
                Source::Head { head } => visit_head(ctx, head, stats, visit),
                Source::Block { part, block } => {
                    let prepared = loop {
                        if let Some(d) = pending.remove(&i) {
                            break d;
                        }
                        match rx.recv() {
                            Ok((j, d)) => {
                                pending.insert(j, d);
                            }
                            Err(_) => {
                                result = Err(StoreError::Io(std::io::Error::other("scan worker stopped")));
                                break 'outer;
                            }
                        }
                    };
                    match prepared {
                        Ok(p) => {
                            stats.blocks_read += 1;
                            stats.compressed_bytes_read += u64::from(part.part.meta.blocks[*block].len);
                            visit_block(ctx, part, *block, &p, stats, visit)
                        }
                        Err(e) => {
                            result = Err(e);
                            break 'outer;
                        }
                    }
                }
            };
            if flow.is_break() {
                break;
            }
        }
        stop.store(true, Ordering::Relaxed);
        // Unblock workers waiting to send.
        drop(rx);
        result
    })
}

fn visit_block(
    ctx: &Ctx<'_>,
    part: &LivePart,
    block: usize,
    (d, lines): &Prepared,
    stats: &mut ScanStats,
    visit: &mut dyn FnMut(&SharedLabels, &record::Entry<'_>) -> ControlFlow<()>,
) -> ControlFlow<()> {
    let b = &part.part.meta.blocks[block];
    let Some(Some(l)) = ctx.labels.get(part.stream_ids[b.stream as usize] as usize) else {
        return ControlFlow::Continue(());
    };
    let mut each = |i: u32| {
        let e = d.entry(i as usize);
        stats.lines_scanned += 1;
        stats.bytes_scanned += e.line.len() as u64;
        visit(l, &e)
    };
    if ctx.req.backward {
        for &i in lines.iter().rev() {
            each(i)?;
        }
    } else {
        for &i in lines {
            each(i)?;
        }
    }
    ControlFlow::Continue(())
}

fn visit_head(
    ctx: &Ctx<'_>,
    head: &RwLock<Head>,
    stats: &mut ScanStats,
    visit: &mut dyn FnMut(&SharedLabels, &record::Entry<'_>) -> ControlFlow<()>,
) -> ControlFlow<()> {
    let req = ctx.req;
    // Copy positions under the lock (20 bytes per line; text is shared), visit without it, so a
    // slow visitor never holds up pushes.
    let streams: Vec<(u32, StreamSnapshot)> = {
        let head = match head.read() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let Some(t) = head.tenants.get(&req.tenant) else { return ControlFlow::Continue(()) };
        t.iter()
            .filter(|(id, sh)| ctx.ids.contains(id) && sh.max_ts >= req.start_ns && sh.min_ts < req.end_ns)
            .map(|(id, sh)| (*id, sh.snapshot()))
            .collect()
    };
    for (id, sh) in &streams {
        let Some(Some(l)) = ctx.labels.get(*id as usize) else { continue };
        for i in 0..sh.ts.len() {
            stats.head_lines += 1;
            let ts = sh.ts[i];
            if ts < req.start_ns || ts >= req.end_ns {
                continue;
            }
            let line = sh.line(i);
            if !ctx.plan.admits(line.as_bytes()) {
                continue;
            }
            let e = record::Entry { ts_ns: ts, line, metadata: sh.metadata(i) };
            stats.lines_scanned += 1;
            stats.bytes_scanned += e.line.len() as u64;
            visit(l, &e)?;
        }
    }
    ControlFlow::Continue(())
}

/// The validated part of a push, by stream (used by [`limits::validate`]).
pub type ValidStreams = Vec<Validated>;

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
