//! File tailing: discovery, identity, reading, lines, multiline, parsing, batching, and
//! checkpoints that move only when the receiver acknowledged.
//!
//! One thread (`osprey-tail`) runs [`Tailer::run`]: it waits for an inotify hint or the poll
//! tick, finds new files ([`discovery`]), checks every followed file for growth, truncation,
//! rotation and rewrites ([`identity`]), reads what is new with `pread` ([`lines`],
//! [`multiline`], [`parse`]) and builds batches ([`batch`]). A full batch is handed to the Loki
//! sink over a bounded channel; while the channel is full the thread waits, so nothing is read
//! and memory stays flat when the receiver is slow or down (files are the buffer). Each batch's
//! receipt goes back to the checkpoint thread ([`checkpoint`]) once the receiver acknowledged
//! it, and only then does the file's saved offset move.

pub mod batch;
pub mod checkpoint;
pub mod discovery;
pub mod identity;
pub mod lines;
pub mod multiline;
pub mod parse;

use crate::pipeline::{BufferPool, LogBatch, Outcome, Receipt};
use crate::sink::http::HttpSender;
use crate::telemetry::{FileLabels, ReasonLabels, Telemetry};
use anyhow::Context;
use batch::BatchBuilder;
use checkpoint::{Msg, Record};
use identity::{Digest, Found, HEAD_BYTES, MARK_BYTES, Verdict};
use lines::{Line, LineSplitter};
use osprey_config::AgentConfig;
use osprey_config::agent::{FileSource, ReadFrom};
use osprey_protocol::loki_labels;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{mpsc, watch};

/// Bytes read per `pread`.
const READ_CHUNK: usize = 256 << 10;
/// Bytes read from one file before the others get a turn.
const READ_BUDGET: usize = 4 << 20;
/// Longest the thread sleeps without looking at the stop flag.
const MAX_WAIT: Duration = Duration::from_millis(250);
/// Polls without change after which a file is quiet: looked at only when inotify names it or
/// its directory and at the full rescan (`rescan_interval`); or, in a directory inotify does not
/// watch, every `QUIET_EVERY` polls.
const QUIET_POLLS: u32 = 10;
const QUIET_EVERY: u64 = 8;
/// Distinct extracted label sets remembered per file before the cache is cleared.
const LABEL_CACHE: usize = 256;

/// Everything the tailer needs from the agent's config.
#[derive(Clone)]
pub struct TailOptions {
    pub sources: Vec<FileSource>,
    pub hostname: String,
    pub batch_max_bytes: usize,
    pub batch_max_wait: Duration,
    pub poll_interval: Duration,
    /// Every followed file is stat'ed at least this often (see [`Tailer::poll`]).
    pub rescan_interval: Duration,
    pub max_open_files: usize,
    /// Checkpoints live here (`<data_dir>/tail`).
    pub state_dir: PathBuf,
    pub checkpoint_interval: Duration,
}

impl TailOptions {
    pub fn from_config(cfg: &AgentConfig, hostname: &str) -> Self {
        TailOptions {
            sources: cfg.sources.files.clone(),
            hostname: hostname.to_string(),
            batch_max_bytes: cfg.collector.batch_max_bytes,
            batch_max_wait: cfg.collector.batch_max_wait.get(),
            poll_interval: cfg.sources.poll_interval.get(),
            rescan_interval: cfg.sources.rescan_interval.get(),
            max_open_files: cfg.sources.max_open_files,
            state_dir: cfg.data_dir.join("tail"),
            checkpoint_interval: cfg.pipeline.checkpoint_interval.get(),
        }
    }
}

/// The running log path: tailer thread, Loki sink task, checkpoint thread.
pub struct LogPipeline {
    abort: watch::Sender<bool>,
    control: TailControl,
    tailer: Option<std::thread::JoinHandle<()>>,
    sink: Option<tokio::task::JoinHandle<()>>,
    checkpointer: Option<std::thread::JoinHandle<()>>,
    _lock: File,
}

/// Starts tailing and shipping. `shutdown` turning true stops reading; see
/// [`LogPipeline::shutdown`] for the drain. Must be called inside a tokio runtime.
pub fn start(
    opts: TailOptions,
    channel_batches: usize,
    max_in_flight: usize,
    sender: HttpSender,
    shutdown: watch::Receiver<bool>,
    telemetry: Telemetry,
) -> anyhow::Result<LogPipeline> {
    std::fs::create_dir_all(&opts.state_dir)
        .with_context(|| format!("cannot create the tail state directory {} (data_dir)", opts.state_dir.display()))?;
    let lock_path = opts.state_dir.join("LOCK");
    let lock = File::create(&lock_path).with_context(|| format!("cannot create {}", lock_path.display()))?;
    lock.try_lock().map_err(|_| {
        anyhow::anyhow!("{} is locked: another agent uses this data_dir; give each agent its own", lock_path.display())
    })?;
    let loaded = checkpoint::load(&opts.state_dir, &telemetry.tail);
    let (ack_tx, ack_rx) = std_mpsc::channel();
    let cp = checkpoint::Checkpointer::new(
        opts.state_dir.clone(),
        loaded.next_id,
        opts.checkpoint_interval,
        telemetry.tail.clone(),
    );
    let checkpointer = std::thread::Builder::new()
        .name("osprey-checkpoint".into())
        .spawn(move || cp.run(ack_rx))
        .context("cannot start the checkpoint thread")?;
    let (abort, abort_rx) = watch::channel(false);
    let (tx, rx) = mpsc::channel(channel_batches.max(1));
    // Enough for the stream buffers of the batches being encoded at once.
    let pool = BufferPool::new(opts.batch_max_bytes.saturating_mul(2).saturating_mul(max_in_flight.max(1)));
    let sink = tokio::spawn(crate::sink::loki::run(sender, rx, abort_rx.clone(), max_in_flight, pool.clone()));
    let (reconfigure, reconfigure_rx) = std_mpsc::channel();
    let mut tailer = Tailer::new(opts, telemetry, loaded, ack_tx)?;
    tailer.batch = BatchBuilder::with_pool(pool);
    tailer.reconfigure = Some(reconfigure_rx);
    let handle = tokio::runtime::Handle::current();
    let alive = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let flag = alive.clone();
    let tailer = std::thread::Builder::new()
        .name("osprey-tail".into())
        .spawn(move || {
            // Cleared however the thread ends, a panic included.
            let _alive = Alive(flag);
            tailer.run(tx, shutdown, abort_rx, handle)
        })
        .context("cannot start the tailer thread")?;
    Ok(LogPipeline {
        abort,
        control: TailControl { reconfigure, alive },
        tailer: Some(tailer),
        sink: Some(sink),
        checkpointer: Some(checkpointer),
        _lock: lock,
    })
}

struct Alive(Arc<std::sync::atomic::AtomicBool>);

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

/// New tailer settings from a reload, compiled and checked before they reach the thread, so a
/// refused config changes nothing.
pub struct Reconfigure {
    opts: TailOptions,
    sources: Vec<Arc<Source>>,
    discovery: discovery::Discovery,
    done: tokio::sync::oneshot::Sender<ReconfigureSummary>,
}

/// What a reconfiguration did to the followed files.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReconfigureSummary {
    pub sources: usize,
    /// Followed files still matched: they keep their position.
    pub kept: usize,
    /// Followed files no longer matched: closed, their checkpoints kept (a file matched again
    /// later resumes there).
    pub released: usize,
    /// Renamed or deleted files still being read to their end under their old source's rules.
    pub draining: usize,
}

impl std::fmt::Display for ReconfigureSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} file sources; {} followed files kept their position, {} no longer matched were released with their checkpoints kept, {} rotated files still draining",
            self.sources, self.kept, self.released, self.draining
        )
    }
}

/// What reloads and health checks need of the running log path (cheap to clone).
#[derive(Clone)]
pub struct TailControl {
    /// New sources and settings for the tailer thread.
    reconfigure: std_mpsc::Sender<Reconfigure>,
    /// False once the tailer thread has ended (stopped, or died).
    alive: Arc<std::sync::atomic::AtomicBool>,
}

impl TailControl {
    /// Whether the tailer thread is running.
    pub fn alive(&self) -> bool {
        self.alive.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Compiles and checks new sources and settings (regexes, globs, inotify) without changing
    /// anything: a reload that fails here leaves the tailer as it was.
    pub fn prepare(&self, opts: TailOptions) -> anyhow::Result<Prepared> {
        let sources = compile_sources(&opts)?;
        let discovery = discovery::Discovery::new(&globs_of(&opts))?;
        Ok(Prepared { opts, sources, discovery })
    }

    /// Hands prepared settings to the tailer thread; the receiver answers once it applied them
    /// (between two reads, within a poll interval even while the sink is behind).
    pub fn apply(&self, p: Prepared) -> anyhow::Result<tokio::sync::oneshot::Receiver<ReconfigureSummary>> {
        let (done, answer) = tokio::sync::oneshot::channel();
        self.reconfigure
            .send(Reconfigure { opts: p.opts, sources: p.sources, discovery: p.discovery, done })
            .map_err(|_| anyhow::anyhow!("the tailer thread is not running"))?;
        Ok(answer)
    }
}

/// Tailer settings compiled by [`TailControl::prepare`], ready to apply.
pub struct Prepared {
    opts: TailOptions,
    sources: Vec<Arc<Source>>,
    discovery: discovery::Discovery,
}

impl LogPipeline {
    pub fn control(&self) -> TailControl {
        self.control.clone()
    }

    /// After the shutdown signal: waits for the tailer to hand over its last batch, lets the
    /// sink deliver what is queued for up to `grace`, then abandons what is left (it is read
    /// again after a restart) and waits for the final checkpoint write.
    pub async fn shutdown(mut self, grace: Duration) {
        let deadline = tokio::time::Instant::now() + grace;
        if let Some(t) = self.tailer.take() {
            let joined = tokio::task::spawn_blocking(move || t.join());
            if tokio::time::timeout_at(deadline, joined).await.is_err() {
                let _ = self.abort.send(true);
            }
        }
        if let Some(s) = self.sink.take() {
            let mut s = s;
            if tokio::time::timeout_at(deadline, &mut s).await.is_err() {
                tracing::warn!(grace = ?grace, "log batches still undelivered at shutdown; they will be read again after a restart");
                let _ = self.abort.send(true);
                let _ = s.await;
            }
        }
        let _ = self.abort.send(true);
        if let Some(c) = self.checkpointer.take() {
            let _ = tokio::task::spawn_blocking(move || c.join()).await;
        }
    }
}

/// A source's settings, compiled.
pub struct Source {
    rules: parse::Rules,
    multiline: Option<multiline::Rule>,
    cfg: FileSource,
    /// Static labels, `job` and `host`, sorted.
    labels: Vec<(String, String)>,
}

/// Compiles every source's rules; errors name the source (`sources.files[i]`).
fn compile_sources(opts: &TailOptions) -> anyhow::Result<Vec<Arc<Source>>> {
    let mut sources = Vec::new();
    for (i, s) in opts.sources.iter().enumerate() {
        let mut labels: Vec<(String, String)> = s.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        labels.push(("job".into(), s.job.clone()));
        labels.push(("host".into(), opts.hostname.clone()));
        sources.push(Arc::new(Source {
            rules: parse::Rules::new(s).with_context(|| format!("sources.files[{i}]"))?,
            multiline: multiline::Rule::from_config(&s.multiline)
                .with_context(|| format!("sources.files[{i}].multiline"))?,
            cfg: s.clone(),
            labels,
        }));
    }
    Ok(sources)
}

fn globs_of(opts: &TailOptions) -> Vec<(Vec<String>, Vec<String>)> {
    opts.sources.iter().map(|s| (s.include.clone(), s.exclude.clone())).collect()
}

/// The labels of a file's lines: the source's static labels, `job`, `host` and `filename`.
fn file_labels(source: &Source, path: &Path) -> Arc<str> {
    let mut labels = source.labels.clone();
    labels.push(("filename".into(), path.display().to_string()));
    labels.sort();
    labels.dedup_by(|a, b| a.0 == b.0);
    Arc::from(loki_labels::format(&labels))
}

/// One followed file.
struct Tracked {
    id: u64,
    source: usize,
    /// The path it was found at: its `filename` label.
    path: PathBuf,
    labels: Arc<str>,
    label_cache: HashMap<Vec<Option<String>>, Arc<str>>,
    dev: u64,
    ino: u64,
    /// `None` while closed to stay under `max_open_files` (never for a rotated file).
    file: Option<File>,
    head: Digest,
    /// Bytes consumed.
    read_offset: u64,
    /// End of the last event handed to a batch.
    emitted: u64,
    /// Size at the last look.
    size: u64,
    /// The up to `MARK_BYTES` bytes before `read_offset`, to notice rewrites.
    last_bytes: Vec<u8>,
    splitter: LineSplitter,
    joiner: Option<multiline::Joiner>,
    /// When its path stopped naming it (renamed away or deleted).
    rotated_at: Option<Instant>,
    /// Its directory has an inotify watch (writes to it wake the tailer), as of the last full
    /// rescan: a quiet file is then not polled between rescans.
    watched: bool,
    last_active: Instant,
    last_ts: i64,
    /// Polls in a row that found its size unchanged.
    quiet_polls: u32,
    /// Its size when it is deleted but still open (disk space it holds), else 0.
    deleted_size: u64,
    /// Bytes read not yet added to its `file_bytes_read` series: per-file series are updated
    /// by the poll (a label lookup per read was a tenth of the CPU with 100 active files).
    unreported: u64,
}

impl Tracked {
    fn holds_data(&self) -> bool {
        self.splitter.pending() > 0 || self.joiner.as_ref().is_some_and(|j| !j.is_empty())
    }

    fn remember_tail(&mut self, chunk: &[u8]) {
        if chunk.len() >= MARK_BYTES {
            self.last_bytes.clear();
            self.last_bytes.extend_from_slice(&chunk[chunk.len() - MARK_BYTES..]);
        } else {
            self.last_bytes.extend_from_slice(chunk);
            let extra = self.last_bytes.len().saturating_sub(MARK_BYTES);
            self.last_bytes.drain(..extra);
        }
    }
}

/// Per-run state that is not per file.
pub struct Tailer {
    opts: TailOptions,
    sources: Vec<Arc<Source>>,
    discovery: discovery::Discovery,
    /// Reloads waiting to be applied.
    reconfigure: Option<std_mpsc::Receiver<Reconfigure>>,
    /// Sources added by the last reload: until its first discovery pass ends, their files
    /// without a checkpoint start where `read_from` says, as at a first start.
    fresh_sources: HashSet<usize>,
    files: HashMap<u64, Tracked>,
    /// Files that may have unread bytes (inotify said so, the poll saw them grow, or a read
    /// stopped at its budget): the only ones a wake-up looks at, so with thousands of idle
    /// files a wake-up costs what the active ones cost. May name files no longer followed.
    hot: BTreeSet<u64>,
    by_inode: HashMap<(u64, u64), u64>,
    by_path: HashMap<PathBuf, u64>,
    /// Matched paths not followed, and the (dev, ino, size) they had then: looked at again when
    /// that changes (unreadable, gzip, duplicate content, waiting for a descriptor).
    skipped: HashMap<PathBuf, (u64, u64, u64)>,
    warned: HashSet<PathBuf>,
    /// Records from the last run not matched to a file yet, by id, and the newest id per
    /// dev+inode.
    restored: HashMap<u64, Record>,
    restored_by_inode: HashMap<(u64, u64), u64>,
    /// Heads of followed files (during a discovery pass).
    heads: HashSet<Digest>,
    /// Matched files wait for a descriptor: discover again as soon as files were read.
    waiting_for_fd: bool,
    /// A path stopped naming a followed file since the last look for matched paths not
    /// followed (a new file may be there now).
    unfollowed_paths: bool,
    /// Discovery's [`discovery::Discovery::generation`] at that look, and when it was.
    matched_generation: u64,
    last_unfollowed_scan: Instant,
    polls: u64,
    /// inotify events were lost (or the sources changed): look at every file on the next poll.
    full_poll: bool,
    /// When every followed file was last looked at.
    last_rescan: Instant,
    /// Directories inotify reported entries created, removed or renamed in since the last
    /// poll: their followed files are looked at on the next one.
    dirty_dirs: HashSet<PathBuf>,
    first_start: bool,
    first_pass: bool,
    next_id: u64,
    open: usize,
    batch: BatchBuilder,
    acks: std_mpsc::Sender<Msg>,
    telemetry: Telemetry,
    buf: Vec<u8>,
}

fn now_ns() -> i64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i64)
}

impl Tailer {
    pub fn new(
        opts: TailOptions,
        telemetry: Telemetry,
        loaded: checkpoint::Loaded,
        acks: std_mpsc::Sender<Msg>,
    ) -> anyhow::Result<Self> {
        let sources = compile_sources(&opts)?;
        let globs = globs_of(&opts);
        let mut records = loaded.records;
        records.sort_by_key(|r| r.id);
        let mut restored_by_inode = HashMap::new();
        for r in &records {
            restored_by_inode.insert((r.dev, r.ino), r.id);
        }
        let restored: HashMap<u64, Record> = records.into_iter().map(|r| (r.id, r)).collect();
        Ok(Tailer {
            discovery: discovery::Discovery::new(&globs)?,
            sources,
            reconfigure: None,
            fresh_sources: HashSet::new(),
            files: HashMap::new(),
            hot: BTreeSet::new(),
            by_inode: HashMap::new(),
            by_path: HashMap::new(),
            skipped: HashMap::new(),
            warned: HashSet::new(),
            restored,
            restored_by_inode,
            heads: HashSet::new(),
            waiting_for_fd: false,
            unfollowed_paths: true,
            matched_generation: 0,
            last_unfollowed_scan: Instant::now(),
            polls: 0,
            full_poll: true,
            last_rescan: Instant::now(),
            dirty_dirs: HashSet::new(),
            first_start: !loaded.existed,
            first_pass: true,
            next_id: loaded.next_id,
            open: 0,
            batch: BatchBuilder::default(),
            acks,
            telemetry,
            buf: vec![0u8; READ_CHUNK + MARK_BYTES],
            opts,
        })
    }

    /// Runs until `shutdown` is true or the sink is gone. Blocking: run it on its own thread.
    pub fn run(
        mut self,
        tx: mpsc::Sender<LogBatch>,
        shutdown: watch::Receiver<bool>,
        abort: watch::Receiver<bool>,
        rt: tokio::runtime::Handle,
    ) {
        let mut last_poll: Option<Instant> = None;
        let mut hints = discovery::Hints { rescan: true, ..Default::default() };
        loop {
            if *shutdown.borrow() {
                break;
            }
            let poll_due = last_poll.is_none_or(|t| t.elapsed() >= self.opts.poll_interval);
            if poll_due || hints.rescan || !hints.dirs.is_empty() || self.waiting_for_fd {
                self.discover();
            }
            self.full_poll |= hints.rescan;
            self.dirty_dirs.extend(hints.dirs.drain(..));
            if poll_due {
                self.poll();
                last_poll = Some(Instant::now());
            }
            if self.apply_reconfigure() {
                last_poll = None;
                hints.rescan = true;
                continue;
            }
            for p in hints.written.drain(..) {
                if let Some(id) = self.by_path.get(&p)
                    && self.files.contains_key(id)
                {
                    self.hot.insert(*id);
                }
            }
            let read = self.read_hot();
            self.flush_multiline(Instant::now());
            let full = self.batch.bytes >= self.opts.batch_max_bytes;
            let due = self.batch.started.is_some_and(|t| t.elapsed() >= self.opts.batch_max_wait);
            if (full || due) && !self.send(&tx, &abort, &rt) {
                return;
            }
            if read {
                // More may be waiting: look at hints without sleeping.
                hints = self.discovery.wait(Duration::ZERO);
                continue;
            }
            let mut wait = MAX_WAIT;
            if let Some(t) = last_poll {
                wait = wait.min(self.opts.poll_interval.saturating_sub(t.elapsed()));
            }
            if let Some(t) = self.batch.started {
                wait = wait.min(self.opts.batch_max_wait.saturating_sub(t.elapsed()));
            }
            if self.joins_lines()
                && let Some(due) = self.files.values().filter_map(|t| t.joiner.as_ref().and_then(|j| j.due_at())).min()
            {
                wait = wait.min(due.saturating_duration_since(Instant::now()));
            }
            hints = self.discovery.wait(wait);
        }
        // Stopping: hand over what is built (positions included) and let the sink drain it.
        if !self.batch.is_empty() {
            self.send(&tx, &abort, &rt);
        }
    }

    /// Hands the current batch to the sink, waiting while the channel is full. Returns false
    /// when the sink is gone or the drain was aborted.
    fn send(
        &mut self,
        tx: &mpsc::Sender<LogBatch>,
        abort: &watch::Receiver<bool>,
        rt: &tokio::runtime::Handle,
    ) -> bool {
        for (id, end) in self.batch.unmarked() {
            let mark = self.files.get(&id).and_then(|t| t.file.as_ref()).and_then(|f| identity::mark(f, end).ok());
            self.batch.set_mark(id, mark.unwrap_or_default());
        }
        let (mut batch, positions) = self.batch.take();
        self.telemetry.tail.batches_built.inc();
        let acks = self.acks.clone();
        let lines = batch.lines as u64;
        let refused = self.telemetry.tail.lines_refused.clone();
        let created = Instant::now();
        batch.receipt = Receipt::new(move |outcome| {
            if outcome == Outcome::Refused {
                refused.inc_by(lines);
            }
            let _ = acks.send(Msg::Acked { positions, created });
        });
        // While the sink is behind, nothing is read, but discovery and the stat poll go on:
        // new files are opened (so a later rename is followed), rotations and truncations are
        // noticed when they happen (a copytruncate's copy is found while it is the newest).
        let mut batch = Some(batch);
        loop {
            if *abort.borrow() {
                return false;
            }
            let wait = self.opts.poll_interval;
            let mut abort = abort.clone();
            let reserved = rt.block_on(async {
                tokio::select! {
                    r = tokio::time::timeout(wait, tx.reserve()) => match r {
                        Ok(Ok(permit)) => Some(Some(permit)),
                        Ok(Err(_)) => None,
                        Err(_) => Some(None),
                    },
                    _ = abort.wait_for(|a| *a) => None,
                }
            });
            match reserved {
                None => return false,
                Some(Some(permit)) => {
                    if let Some(b) = batch.take() {
                        permit.send(b);
                    }
                    return true;
                }
                Some(None) => {
                    self.apply_reconfigure();
                    self.discover();
                    self.poll();
                }
            }
        }
    }

    fn new_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    // ---- discovery and identity -------------------------------------------------------------

    fn discover(&mut self) {
        let added = self.discovery.refresh();
        self.telemetry.tail.files_watched_dirs.set(self.discovery.dirs() as i64);
        // New paths first, then matched paths not followed (a new file at a rotated path, a
        // skipped file that changed, a file that waited for a descriptor).
        let mut seen: HashSet<PathBuf> = HashSet::new();
        let mut candidates: Vec<(PathBuf, usize)> = Vec::new();
        for p in added {
            if let Some(src) = self.discovery.matched().get(&p)
                && seen.insert(p.clone())
            {
                candidates.push((p, *src));
            }
        }
        // Matched paths not followed can only be new if the matched set changed or a path
        // stopped naming its file; skipped files are looked at again in case they changed. With
        // thousands of files this scan was most of an idle second, so it is skipped otherwise
        // (but done once per `rescan_interval` whatever happened).
        let generation = self.discovery.generation();
        let scan = std::mem::take(&mut self.unfollowed_paths)
            || generation != self.matched_generation
            || self.waiting_for_fd
            || !self.skipped.is_empty()
            || self.last_unfollowed_scan.elapsed() >= self.opts.rescan_interval;
        let mut rest: Vec<(PathBuf, usize)> = Vec::new();
        if scan {
            self.matched_generation = generation;
            self.last_unfollowed_scan = Instant::now();
            rest = self
                .discovery
                .matched()
                .iter()
                .filter(|(p, _)| !self.by_path.contains_key(*p) && !seen.contains(*p))
                .map(|(p, s)| (p.clone(), *s))
                .collect();
        }
        rest.sort();
        candidates.sort();
        candidates.extend(rest);
        self.waiting_for_fd = false;
        if !candidates.is_empty() {
            // One pass over the followed files: their heads (copies are not followed twice) and
            // descriptors freed for the newcomers.
            self.heads = self.files.values().filter(|t| t.head.len > 0).map(|t| t.head).collect();
            self.free_descriptors(candidates.len());
        }
        for (path, src) in candidates {
            if self.waiting_for_fd {
                break;
            }
            self.consider(&path, src);
        }
        if self.first_pass {
            self.first_pass = false;
            self.recover_restored();
        }
        if !self.waiting_for_fd {
            self.fresh_sources.clear();
        }
        self.telemetry.files_open.set(self.open as i64);
    }

    /// Closes idle files (least recently active first) so that `wanted` more fit under
    /// `max_open_files`, in one pass.
    fn free_descriptors(&mut self, wanted: usize) {
        let over = (self.open + wanted).saturating_sub(self.opts.max_open_files);
        if over == 0 {
            return;
        }
        let mut idle: Vec<(Instant, u64)> =
            self.files.values().filter(|t| self.evictable(t)).map(|t| (t.last_active, t.id)).collect();
        idle.sort();
        for (_, id) in idle.into_iter().take(over) {
            if let Some(t) = self.files.get_mut(&id) {
                t.file = None;
                self.open -= 1;
            }
        }
    }

    fn evictable(&self, t: &Tracked) -> bool {
        t.file.is_some()
            && t.rotated_at.is_none()
            && !self.hot.contains(&t.id)
            && !t.holds_data()
            && t.read_offset >= t.size
            && self.batch.pending_mark(t.id).is_none()
    }

    /// Looks at one matched path that is not followed yet.
    fn consider(&mut self, path: &Path, source: usize) {
        let Ok(meta) = std::fs::metadata(path) else { return };
        if !meta.is_file() {
            return;
        }
        let key = (meta.dev(), meta.ino());
        if let Some(id) = self.by_inode.get(&key) {
            // Already followed under another name (a symlink, or a renamed file still matched).
            self.by_path.insert(path.to_path_buf(), *id);
            return;
        }
        if self.skipped.get(path) == Some(&(key.0, key.1, meta.len())) {
            return;
        }
        self.skipped.remove(path);
        if self.open >= self.opts.max_open_files && !self.evict_one() {
            // Not remembered as skipped: tried again as soon as files were read (and so became
            // idle and closable), until a descriptor frees up.
            self.telemetry.tail.files_open_limit_reached.inc();
            self.waiting_for_fd = true;
            return;
        }
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) => {
                self.telemetry.files_unreadable.inc();
                if self.warned.insert(path.to_path_buf()) {
                    tracing::warn!(path = %path.display(), error = %e, "cannot open a matched log file; skipping it until it changes");
                }
                self.skip(path, &meta, "unreadable");
                return;
            }
        };
        self.warned.remove(path);
        let Ok(meta) = file.metadata() else { return };
        if identity::is_gzip(&file) {
            self.skip(path, &meta, "gzip");
            return;
        }
        let head = identity::head(&file).unwrap_or_default();
        let size = meta.len();
        // Where to start, and with which id (decision table in ARCHITECTURE.md).
        let mut start = None;
        let mut id = None;
        if let Some(r) = self.take_restored(meta.dev(), meta.ino()) {
            match identity::classify(&file, size, r.head, r.offset, r.mark) {
                Verdict::Resume => {
                    start = Some(r.offset);
                    id = Some(r.id);
                }
                v => {
                    tracing::info!(path = %path.display(), verdict = ?v, "file changed while the agent was stopped; reading it from the start");
                    if v == Verdict::Truncated {
                        self.telemetry.truncations.inc();
                    } else {
                        self.telemetry.tail.rewrites.inc();
                    }
                    if self.first_pass {
                        // Its unread tail may be in a rotated copy next to it.
                        self.restored.insert(r.id, r);
                    } else {
                        // A parked file that changed while unmatched: its old position means
                        // nothing now.
                        let _ = self.acks.send(Msg::Release { id: r.id, end: 0 });
                    }
                    start = Some(0);
                }
            }
        } else if let Some(rid) = self.restored.values().find_map(|r| {
            (r.head == head
                && r.head.len > 0
                && identity::classify(&file, size, r.head, r.offset, r.mark) == Verdict::Resume)
                .then_some(r.id)
        }) && let Some(r) = self.restored.remove(&rid)
        {
            // A copy of a file from the last run (copytruncate's rotated file): resume there.
            self.restored_by_inode.remove(&(r.dev, r.ino));
            start = Some(r.offset);
            id = Some(r.id);
        } else if head.len > 0 && self.heads.contains(&head) {
            self.skip(path, &meta, "duplicate_content");
            return;
        }
        self.heads.insert(head);
        let start = start.unwrap_or_else(|| {
            let first_look = (self.first_pass && self.first_start) || self.fresh_sources.contains(&source);
            if first_look && self.sources[source].cfg.read_from == ReadFrom::End { size } else { 0 }
        });
        let id = id.unwrap_or_else(|| self.new_id());
        self.follow(id, source, path, file, &meta, head, start, None);
    }

    fn skip(&mut self, path: &Path, meta: &std::fs::Metadata, reason: &'static str) {
        if !self.skipped.contains_key(path) {
            self.telemetry.tail.files_skipped.get_or_create(&ReasonLabels { reason }).inc();
            tracing::debug!(path = %path.display(), reason, "matched file not followed");
        }
        self.skipped.insert(path.to_path_buf(), (meta.dev(), meta.ino(), meta.len()));
    }

    #[allow(clippy::too_many_arguments)]
    fn follow(
        &mut self,
        id: u64,
        source: usize,
        path: &Path,
        file: File,
        meta: &std::fs::Metadata,
        head: Digest,
        start: u64,
        rotated_at: Option<Instant>,
    ) {
        let s = self.sources[source].clone();
        let labels = file_labels(&s, path);
        let mark = identity::mark(&file, start).unwrap_or_default();
        let mut last_bytes = Vec::new();
        let n = (start as usize).min(MARK_BYTES);
        if n > 0 {
            let mut b = vec![0u8; n];
            if file.read_exact_at(&mut b, start - n as u64).is_ok() {
                last_bytes = b;
            }
        }
        let _ = self.acks.send(Msg::Track(Record {
            id,
            path: path.to_path_buf(),
            dev: meta.dev(),
            ino: meta.ino(),
            head,
            offset: start,
            mark,
        }));
        let mut t = Tracked {
            id,
            source,
            path: path.to_path_buf(),
            labels,
            label_cache: HashMap::new(),
            dev: meta.dev(),
            ino: meta.ino(),
            file: Some(file),
            head,
            read_offset: start,
            emitted: start,
            size: meta.len(),
            last_bytes,
            splitter: LineSplitter::new(s.cfg.max_line_bytes),
            joiner: s.multiline.as_ref().map(|_| multiline::Joiner::new(&s.cfg.multiline, s.cfg.max_line_bytes)),
            rotated_at,
            watched: path.parent().is_some_and(|d| self.discovery.watched(d)),
            last_active: Instant::now(),
            last_ts: 0,
            quiet_polls: 0,
            deleted_size: 0,
            unreported: 0,
        };
        // Its series exist from the start (the poll keeps them current).
        Self::report(&self.telemetry, &mut t, meta.len().saturating_sub(start));
        self.open += 1;
        if meta.len() > start {
            self.hot.insert(id);
        }
        self.by_inode.insert((t.dev, t.ino), id);
        if rotated_at.is_none() {
            self.by_path.insert(path.to_path_buf(), id);
        }
        tracing::debug!(path = %path.display(), id, start, "following file");
        self.files.insert(id, t);
    }

    /// The newest record of the last run for this dev+inode, if any.
    fn take_restored(&mut self, dev: u64, ino: u64) -> Option<Record> {
        let id = self.restored_by_inode.remove(&(dev, ino))?;
        self.restored.remove(&id)
    }

    /// After the first discovery pass: files of the last run not found at their path. Their
    /// unread tail is looked for next to the path (renamed or copied by a rotation).
    fn recover_restored(&mut self) {
        self.restored_by_inode.clear();
        let mut restored: Vec<Record> = std::mem::take(&mut self.restored).into_values().collect();
        restored.sort_by_key(|r| std::cmp::Reverse(r.id));
        for r in restored {
            if self.files.contains_key(&r.id) {
                continue;
            }
            let Some(source) = self.discovery.source_of(&r.path) else {
                // No source matches its path any more (the config changed): released with its
                // checkpoint kept while the file is still there, so matching it again resumes.
                self.keep_parked(r);
                continue;
            };
            if let Some((found_at, file, how)) = identity::find_rotated(&r.path, r.dev, r.ino, r.head, r.offset, r.mark)
                && let Ok(meta) = file.metadata()
                && !self.by_inode.contains_key(&(meta.dev(), meta.ino()))
            {
                tracing::info!(path = %r.path.display(), found_at = %found_at.display(), how = ?how, offset = r.offset, "reading the rest of a file rotated while the agent was stopped");
                self.telemetry.tail.rotated_tails.inc();
                self.follow(r.id, source, &r.path, file, &meta, r.head, r.offset, Some(Instant::now()));
                continue;
            }
            tracing::warn!(path = %r.path.display(), offset = r.offset, "a file followed before the restart is gone; whatever it held past its checkpoint could not be read");
            let _ = self.acks.send(Msg::Release { id: r.id, end: 0 });
        }
    }

    /// Keeps the checkpoint of a file no source matches, as long as the file is still at its
    /// path: the record stays in the store (tracked again, since the checkpoint thread starts
    /// empty) and in `restored`, where [`Tailer::consider`] finds it if a reload matches the
    /// file again. A file that is gone is forgotten, so parked records stay bounded by the files
    /// that exist.
    fn keep_parked(&mut self, r: Record) {
        let here = std::fs::metadata(&r.path).is_ok_and(|m| (m.dev(), m.ino()) == (r.dev, r.ino));
        if !here {
            tracing::debug!(path = %r.path.display(), "forgetting the checkpoint of an unmatched file that is gone");
            let _ = self.acks.send(Msg::Release { id: r.id, end: 0 });
            return;
        }
        let _ = self.acks.send(Msg::Track(r.clone()));
        self.restored_by_inode.insert((r.dev, r.ino), r.id);
        self.restored.insert(r.id, r);
    }

    // ---- reload -----------------------------------------------------------------------------

    /// Applies a waiting reload, if any: new sources and settings. Followed files still matched
    /// keep their position (and take their new source's labels and rules from the next line
    /// on); files no longer matched are released with their checkpoint kept; renamed or deleted
    /// files being drained finish under their old rules. Returns whether it applied one.
    fn apply_reconfigure(&mut self) -> bool {
        if self.first_pass {
            return false;
        }
        let Some(r) = self.reconfigure.as_ref().and_then(|rx| rx.try_recv().ok()) else { return false };
        let old_sources = std::mem::replace(&mut self.sources, r.sources);
        let old_includes: HashSet<Vec<String>> = old_sources.iter().map(|s| s.cfg.include.clone()).collect();
        self.fresh_sources =
            (0..self.sources.len()).filter(|&i| !old_includes.contains(&self.sources[i].cfg.include)).collect();
        self.opts = r.opts;
        self.discovery = r.discovery;
        self.discovery.refresh();
        self.telemetry.tail.files_watched_dirs.set(self.discovery.dirs() as i64);
        let mut summary = ReconfigureSummary { sources: self.sources.len(), ..Default::default() };
        // Old sources still needed by rotated files that no new source matches.
        let mut retired: HashMap<usize, usize> = HashMap::new();
        let mut ids: Vec<u64> = self.files.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            let Some(t) = self.files.get(&id) else { continue };
            let matched = self.discovery.source_of(&t.path).or_else(|| {
                // Followed through a symlink or another name that is still matched.
                self.by_path.iter().filter(|(_, v)| **v == id).find_map(|(p, _)| self.discovery.source_of(p))
            });
            match matched {
                Some(source) => {
                    let old = old_sources[t.source].clone();
                    self.rebind(id, source, &old);
                    summary.kept += 1;
                }
                None if t.rotated_at.is_some() => {
                    let old = t.source;
                    let idx = *retired.entry(old).or_insert_with(|| {
                        self.sources.push(old_sources[old].clone());
                        self.sources.len() - 1
                    });
                    if let Some(t) = self.files.get_mut(&id) {
                        t.source = idx;
                    }
                    summary.draining += 1;
                }
                None => {
                    self.park(id);
                    summary.released += 1;
                }
            }
        }
        // Matched paths not followed are looked at again under the new rules.
        let discovery = &self.discovery;
        self.skipped.retain(|p, _| discovery.source_of(p).is_some());
        self.warned.retain(|p| discovery.source_of(p).is_some());
        self.by_path.retain(|p, id| discovery.source_of(p).is_some() || Some(p) == self.files.get(id).map(|t| &t.path));
        self.unfollowed_paths = true;
        // Parked checkpoints of files that are gone are forgotten (the bound on parked records).
        let parked: Vec<u64> = self.restored.keys().copied().collect();
        for id in parked {
            if let Some(r) = self.restored.remove(&id) {
                self.restored_by_inode.remove(&(r.dev, r.ino));
                self.keep_parked_quietly(r);
            }
        }
        self.full_poll = true;
        self.telemetry.files_open.set(self.open as i64);
        tracing::info!(%summary, "file sources reconfigured");
        let _ = r.done.send(summary);
        true
    }

    /// [`Tailer::keep_parked`] for a record the checkpoint thread already holds.
    fn keep_parked_quietly(&mut self, r: Record) {
        let here = std::fs::metadata(&r.path).is_ok_and(|m| (m.dev(), m.ino()) == (r.dev, r.ino));
        if !here {
            let _ = self.acks.send(Msg::Release { id: r.id, end: 0 });
            return;
        }
        self.restored_by_inode.insert((r.dev, r.ino), r.id);
        self.restored.insert(r.id, r);
    }

    /// A followed file now belongs to `source` (maybe changed): new labels and rules apply from
    /// the next event; a held multiline event is shipped first when the joining rule changed.
    fn rebind(&mut self, id: u64, source: usize, old: &Source) {
        let new = self.sources[source].clone();
        let Some(t) = self.files.get_mut(&id) else { return };
        t.source = source;
        if new.cfg == old.cfg {
            return;
        }
        t.labels = file_labels(&new, &t.path);
        t.label_cache.clear();
        if new.cfg.max_line_bytes != old.cfg.max_line_bytes && t.splitter.pending() == 0 {
            t.splitter = LineSplitter::new(new.cfg.max_line_bytes);
        }
        if new.cfg.multiline != old.cfg.multiline || new.cfg.max_line_bytes != old.cfg.max_line_bytes {
            // Complete lines already joined: ship them as one event, then join by the new rule.
            if let Some(ev) = t.joiner.as_mut().and_then(|j| j.take()) {
                self.emit(id, ev);
            }
            if let Some(t) = self.files.get_mut(&id) {
                t.joiner =
                    new.multiline.as_ref().map(|_| multiline::Joiner::new(&new.cfg.multiline, new.cfg.max_line_bytes));
            }
        }
    }

    /// Stops following a file no source matches any more, keeping its checkpoint: the record
    /// stays in the store (no `Release`), acknowledgements still in flight move it, and the file
    /// resumes at its offset if a later reload matches it again. What was read past the last
    /// whole event (a partial line, a held multiline event) is not shipped: it is read again
    /// then.
    fn park(&mut self, id: u64) {
        let Some(t) = self.files.get(&id) else { return };
        if let (Some(end), Some(f)) = (self.batch.pending_mark(id), t.file.as_ref()) {
            let m = identity::mark(f, end).unwrap_or_default();
            self.batch.set_mark(id, m);
        }
        let Some(t) = self.files.remove(&id) else { return };
        let mark = match &t.file {
            Some(f) => identity::mark(f, t.emitted).unwrap_or_default(),
            // Closed only when idle and fully read: the bytes before the offset are known.
            None => Digest::of(&t.last_bytes),
        };
        if t.file.is_some() {
            self.open -= 1;
        }
        if self.by_inode.get(&(t.dev, t.ino)) == Some(&id) {
            self.by_inode.remove(&(t.dev, t.ino));
        }
        self.by_path.retain(|_, v| *v != id);
        self.unfollowed_paths = true;
        let labels = FileLabels { path: t.path.display().to_string() };
        self.telemetry.tail.file_bytes_read.remove(&labels);
        self.telemetry.tail.file_lag_bytes.remove(&labels);
        tracing::info!(path = %t.path.display(), offset = t.emitted, "file no longer matched by any source; released with its checkpoint kept");
        let record = Record { id, path: t.path.clone(), dev: t.dev, ino: t.ino, head: t.head, offset: t.emitted, mark };
        self.restored_by_inode.insert((t.dev, t.ino), id);
        self.restored.insert(id, record);
    }

    /// Closes the least recently active idle file to free a descriptor.
    fn evict_one(&mut self) -> bool {
        let victim = self.files.values().filter(|t| self.evictable(t)).min_by_key(|t| t.last_active).map(|t| t.id);
        match victim.and_then(|id| self.files.get_mut(&id)) {
            Some(t) => {
                t.file = None;
                self.open -= 1;
                true
            }
            None => false,
        }
    }

    /// Reopens a closed file by path, checking it is still the same file at the same offset.
    fn reopen(&mut self, id: u64) -> bool {
        if self.open >= self.opts.max_open_files && !self.evict_one() {
            self.telemetry.tail.files_open_limit_reached.inc();
            return false;
        }
        let Some(t) = self.files.get_mut(&id) else { return false };
        let Ok(file) = File::open(&t.path) else { return false };
        let Ok(meta) = file.metadata() else { return false };
        if meta.dev() != t.dev || meta.ino() != t.ino {
            return false;
        }
        t.file = Some(file);
        self.open += 1;
        true
    }

    // ---- polling ----------------------------------------------------------------------------

    /// The once-per-`poll_interval` look at followed files: has the path stopped naming the
    /// file (renamed, deleted), was it truncated or rewritten, has it grown?
    ///
    /// Looked at: files active in the last `QUIET_POLLS` polls, files with unread bytes or
    /// rotated away, files in directories inotify reported creates, deletes or renames in, and
    /// quiet files in directories inotify does not watch every `QUIET_EVERY`th poll. Every file
    /// is looked at once per `rescan_interval` and after inotify lost events. Quiet files in
    /// watched directories cost nothing in between: inotify names them when they are written.
    /// With thousands of idle files this is most of the agent's idle cost.
    fn poll(&mut self) {
        let now = Instant::now();
        self.polls += 1;
        let full = std::mem::take(&mut self.full_poll) || self.last_rescan.elapsed() >= self.opts.rescan_interval;
        if full {
            self.last_rescan = now;
        }
        let unwatched_turn = self.polls.is_multiple_of(QUIET_EVERY);
        let dirty = std::mem::take(&mut self.dirty_dirs);
        let in_dirty = |t: &Tracked| !dirty.is_empty() && t.path.parent().is_some_and(|d| dirty.contains(d));
        let ids: Vec<u64> = self
            .files
            .values()
            .filter(|t| {
                full || t.quiet_polls < QUIET_POLLS
                    || self.hot.contains(&t.id)
                    || t.rotated_at.is_some()
                    || (unwatched_turn && !t.watched)
                    || in_dirty(t)
            })
            .map(|t| t.id)
            .collect();
        if full {
            let discovery = &self.discovery;
            for t in self.files.values_mut() {
                t.watched = t.path.parent().is_some_and(|d| discovery.watched(d));
            }
        }
        for id in ids {
            let Some(t) = self.files.get_mut(&id) else { continue };
            let mut path_meta = None;
            // Has its path stopped naming it?
            if t.rotated_at.is_none() {
                let m = std::fs::metadata(&t.path);
                let moved = match &m {
                    Ok(m) => m.dev() != t.dev || m.ino() != t.ino,
                    Err(_) => true,
                };
                path_meta = m.ok();
                if moved {
                    if t.file.is_none() {
                        // Closed when it moved: find it again next to its path.
                        self.lost_while_closed(id);
                        continue;
                    }
                    tracing::info!(path = %t.path.display(), "file renamed away or deleted; reading it to its end for up to rotate_wait");
                    t.rotated_at = Some(now);
                    self.hot.insert(id);
                    self.telemetry.rotations.inc();
                    let path = t.path.clone();
                    if self.by_path.get(&path) == Some(&id) {
                        self.by_path.remove(&path);
                        self.unfollowed_paths = true;
                    }
                }
            }
            let Some(t) = self.files.get_mut(&id) else { continue };
            // The path's `stat` already describes the file when it still names it: no `fstat`.
            let meta = match path_meta.filter(|m| (m.dev(), m.ino()) == (t.dev, t.ino)) {
                Some(m) => Some(m),
                None => t.file.as_ref().and_then(|f| f.metadata().ok()),
            };
            let Some(meta) = meta else { continue };
            let size = meta.len();
            if size == t.size {
                t.quiet_polls = t.quiet_polls.saturating_add(1);
            } else {
                t.quiet_polls = 0;
            }
            t.deleted_size = if t.rotated_at.is_some() && meta.nlink() == 0 { size } else { 0 };
            if size < t.read_offset {
                self.rebase(id, Verdict::Truncated);
                continue;
            }
            let Some(t) = self.files.get_mut(&id) else { continue };
            if size != t.size && size >= t.read_offset {
                // Same inode, at least as long: still the same content? The head and the bytes
                // before the read offset tell (a file not read yet has only its head).
                let rewritten = match &t.file {
                    Some(f) => {
                        !identity::head_matches(f, t.head)
                            || (t.read_offset > 0
                                && identity::mark(f, t.read_offset).is_ok_and(|m| m != Digest::of(&t.last_bytes)))
                    }
                    None => false,
                };
                if rewritten {
                    self.rebase(id, Verdict::Rewritten);
                    continue;
                }
            }
            let Some(t) = self.files.get_mut(&id) else { continue };
            if size > t.read_offset {
                self.hot.insert(id);
            }
            let lag = size.saturating_sub(t.read_offset);
            if size != t.size || lag != 0 || t.unreported > 0 {
                Self::report(&self.telemetry, t, lag);
            }
            t.size = size;
            // Grow a short head digest as the file grows, so identity gets stronger.
            if (t.head.len as usize) < HEAD_BYTES
                && size > u64::from(t.head.len)
                && let Some(f) = &t.file
                && let Ok(h) = identity::head(f)
                && identity::head_matches(f, t.head)
            {
                t.head = h;
                let _ = self.acks.send(Msg::Head { id, head: h });
            }
            if let Some(at) = t.rotated_at
                && now.duration_since(at) >= self.sources[t.source].cfg.rotate_wait.get()
            {
                self.release(id);
            }
        }
        let held: u64 = self.files.values().map(|t| t.deleted_size).sum();
        self.telemetry.tail.deleted_bytes_held.set(held as i64);
    }

    /// Updates a file's `file_lag_bytes` and `file_bytes_read` series.
    fn report(telemetry: &Telemetry, t: &mut Tracked, lag: u64) {
        let labels = FileLabels { path: t.path.display().to_string() };
        telemetry.tail.file_lag_bytes.get_or_create(&labels).set(lag as i64);
        let read = std::mem::take(&mut t.unreported);
        telemetry.tail.file_bytes_read.get_or_create(&labels).inc_by(read);
    }

    /// A closed file whose path now names another file (or none): look for it next to the path.
    fn lost_while_closed(&mut self, id: u64) {
        let Some(t) = self.files.get(&id) else { return };
        let mark = Digest::of(&t.last_bytes);
        let found = identity::find_rotated(&t.path, t.dev, t.ino, t.head, t.read_offset, mark);
        match found {
            Some((_, file, Found::Renamed)) => {
                if let Some(t) = self.files.get_mut(&id) {
                    t.file = Some(file);
                    t.rotated_at = Some(Instant::now());
                    self.hot.insert(id);
                    self.open += 1;
                    let path = t.path.clone();
                    self.by_path.remove(&path);
                    self.unfollowed_paths = true;
                    self.telemetry.rotations.inc();
                }
            }
            _ => {
                tracing::warn!(path = %t.path.display(), "a closed idle file was rotated away and not found next to its path; releasing it");
                let path = t.path.clone();
                self.by_path.remove(&path);
                self.unfollowed_paths = true;
                self.release(id);
            }
        }
    }

    /// The file at the same inode no longer continues what was read: truncated, or rewritten.
    /// If a rotated copy holding the old content is next to it (copytruncate), the old entry
    /// goes on reading the copy from where it was, as a rotated file; otherwise what it holds
    /// is shipped and it is released. Either way the file itself is followed from its start
    /// under a new id. Nothing is read here, so this is safe while the sink is behind.
    fn rebase(&mut self, id: u64, why: Verdict) {
        let Some(t) = self.files.get_mut(&id) else { return };
        tracing::info!(path = %t.path.display(), reason = ?why, offset = t.read_offset, "file truncated or rewritten; reading it from the start");
        if why == Verdict::Truncated {
            self.telemetry.truncations.inc();
        } else {
            self.telemetry.tail.rewrites.inc();
        }
        let mark = Digest::of(&t.last_bytes);
        let copy = identity::find_rotated(&t.path, t.dev, t.ino, t.head, t.read_offset, mark)
            .filter(|(_, _, how)| *how == Found::Copy)
            .and_then(|(p, f, _)| f.metadata().ok().map(|m| (p, f, m)));
        let Some(live) = t.file.take() else { return };
        let path = t.path.clone();
        let (source, labels, live_key) = (t.source, t.labels.clone(), (t.dev, t.ino));
        self.by_path.retain(|_, v| *v != id);
        self.unfollowed_paths = true;
        match copy {
            Some((copy_path, copy_file, meta)) if !self.by_inode.contains_key(&(meta.dev(), meta.ino())) => {
                tracing::info!(path = %path.display(), copy = %copy_path.display(), offset = t.read_offset, "the unread tail is in the rotated copy; reading it there");
                self.telemetry.tail.rotated_tails.inc();
                t.file = Some(copy_file);
                t.dev = meta.dev();
                t.ino = meta.ino();
                t.size = meta.len();
                t.rotated_at = Some(Instant::now());
                self.hot.insert(id);
                self.by_inode.insert((meta.dev(), meta.ino()), id);
                // The live descriptor moves to the new entry; the copy's is a new one.
                self.open += 1;
            }
            _ => {
                t.file = Some(live);
                // The rest of the old content is gone: ship what is held as complete.
                self.finish_file(id);
                if self.batch.pending_mark(id).is_some() {
                    self.batch.set_mark(id, Digest::default());
                }
                let Some(mut t) = self.files.remove(&id) else { return };
                let _ = self.acks.send(Msg::Release { id, end: t.emitted });
                self.by_inode.remove(&live_key);
                let Some(live) = t.file.take() else { return };
                self.open -= 1;
                self.follow_fresh(source, &path, labels, live);
                return;
            }
        }
        self.follow_fresh(source, &path, labels, live);
    }

    /// Follows `file` (the file at `path`, truncated or rewritten) from its start, new id.
    fn follow_fresh(&mut self, source: usize, path: &Path, labels: Arc<str>, file: File) {
        let Ok(meta) = file.metadata() else { return };
        let head = identity::head(&file).unwrap_or_default();
        let id = self.new_id();
        self.follow(id, source, path, file, &meta, head, 0, None);
        if let Some(t) = self.files.get_mut(&id) {
            t.labels = labels;
        }
    }

    /// Ships what a file holds (unfinished line, held multiline event) as complete.
    fn finish_file(&mut self, id: u64) {
        let Some(t) = self.files.get_mut(&id) else { return };
        let src = &self.sources[t.source];
        let end = t.read_offset;
        let mut events = Vec::new();
        let telemetry = &self.telemetry;
        let push_line = |t: &mut Tracked, line: Line<'_>, events: &mut Vec<multiline::Event>| {
            let (text, bad) = lines::to_text(line.bytes, src.cfg.max_line_bytes);
            if bad {
                telemetry.tail.lines_invalid_utf8.inc();
            }
            match (&src.multiline, t.joiner.as_mut()) {
                (Some(rule), Some(j)) => {
                    j.push(rule, text.into_owned(), line.end, line.truncated, Instant::now(), |e| events.push(e))
                }
                _ => {
                    events.push(multiline::Event { text: text.into_owned(), end: line.end, truncated: line.truncated })
                }
            }
        };
        let mut splitter = std::mem::replace(&mut t.splitter, LineSplitter::new(1));
        splitter.flush(end, |l| push_line(t, l, &mut events));
        t.splitter = splitter;
        if let Some(ev) = t.joiner.as_mut().and_then(|j| j.take()) {
            events.push(ev);
        }
        for ev in events {
            self.emit(id, ev);
        }
        if let Some(t) = self.files.get_mut(&id) {
            t.emitted = t.emitted.max(t.read_offset);
            self.batch.position(id, t.emitted);
        }
    }

    /// Stops following a rotated file: ships what it holds, counts what was never read. Reads
    /// nothing more: `rotate_wait` is the bound on how long a rotated file is held.
    fn release(&mut self, id: u64) {
        self.finish_file(id);
        let Some(t) = self.files.get(&id) else { return };
        if let (Some(end), Some(f)) = (self.batch.pending_mark(id), t.file.as_ref()) {
            let m = identity::mark(f, end).unwrap_or_default();
            self.batch.set_mark(id, m);
        }
        let Some(mut t) = self.files.remove(&id) else { return };
        let size = t.file.as_ref().and_then(|f| f.metadata().ok()).map_or(t.size, |m| m.len());
        if t.unreported > 0 {
            let lag = size.saturating_sub(t.read_offset);
            Self::report(&self.telemetry, &mut t, lag);
        }
        let unread = size.saturating_sub(t.read_offset);
        if unread > 0 {
            self.telemetry.tail.bytes_unread.inc_by(unread);
            tracing::warn!(path = %t.path.display(), unread, "released a rotated file before reading all of it (rotate_wait)");
        }
        if t.file.is_some() {
            self.open -= 1;
        }
        if self.by_inode.get(&(t.dev, t.ino)) == Some(&id) {
            self.by_inode.remove(&(t.dev, t.ino));
        }
        self.by_path.retain(|_, v| *v != id);
        self.unfollowed_paths = true;
        let labels = FileLabels { path: t.path.display().to_string() };
        if !self.files.values().any(|o| o.path == t.path) {
            self.telemetry.tail.file_bytes_read.remove(&labels);
            self.telemetry.tail.file_lag_bytes.remove(&labels);
        }
        let _ = self.acks.send(Msg::Release { id, end: t.emitted });
        tracing::debug!(path = %t.path.display(), id, "released file");
    }

    // ---- reading ----------------------------------------------------------------------------

    /// Reads every file that may have new bytes; returns whether any file hit its budget (so
    /// more is waiting).
    fn read_hot(&mut self) -> bool {
        let hot: Vec<u64> = self.hot.iter().copied().collect();
        let mut more = false;
        for id in hot {
            let Some(t) = self.files.get(&id) else {
                self.hot.remove(&id);
                continue;
            };
            if t.file.is_none() && !self.reopen(id) {
                // Gone or no descriptor: the poll will sort it out.
                self.hot.remove(&id);
                continue;
            }
            more |= self.read_file(id, READ_BUDGET);
            if self.batch.bytes >= self.opts.batch_max_bytes {
                // Let the caller send before reading more.
                return true;
            }
        }
        more
    }

    /// Reads file `id` from its read offset, up to `budget` bytes and no further than its size
    /// when the read started (what is appended meanwhile is read on the next wake-up). Returns
    /// true when the budget ran out before the end (or the file was re-based).
    ///
    /// A wake-up costs one `fstat` and one `pread` per file: the first `pread` also fetches the
    /// `MARK_BYTES` before the offset, which must still be the bytes read last time; if not, the
    /// file was truncated and rewritten past the offset since the last read (inotify can wake
    /// this read before the poll looks) and it is re-based instead.
    fn read_file(&mut self, id: u64, budget: usize) -> bool {
        let Some(file) = self.files.get_mut(&id).and_then(|t| t.file.take()) else { return false };
        let outcome = self.read_from(id, &file, budget);
        if let Some(t) = self.files.get_mut(&id) {
            t.file = Some(file);
        }
        match outcome {
            Ok(hit_budget) => {
                if hit_budget {
                    self.hot.insert(id);
                } else {
                    self.hot.remove(&id);
                }
                hit_budget
            }
            Err(verdict) => {
                self.hot.remove(&id);
                self.rebase(id, verdict);
                true
            }
        }
    }

    /// [`Tailer::read_file`] with the descriptor taken out of the entry; `Err` when the file
    /// must be re-based.
    fn read_from(&mut self, id: u64, file: &File, budget: usize) -> Result<bool, Verdict> {
        let Some(t) = self.files.get_mut(&id) else { return Ok(false) };
        let size = match file.metadata() {
            Ok(m) => m.len(),
            Err(e) => {
                tracing::warn!(path = %t.path.display(), error = %e, "cannot stat a followed file; will retry");
                return Ok(false);
            }
        };
        if size < t.read_offset {
            return Err(Verdict::Truncated);
        }
        if size == t.read_offset {
            // Nothing new (a wake-up for a write that was already read, or a rewrite to the
            // same length): only the mark can tell.
            if t.read_offset > 0 && identity::mark(file, t.read_offset).is_ok_and(|m| m != Digest::of(&t.last_bytes)) {
                return Err(Verdict::Rewritten);
            }
            t.size = size;
            return Ok(false);
        }
        let mut left = budget;
        let mut total = 0u64;
        let mut hit_budget = false;
        let mut buf = std::mem::take(&mut self.buf);
        // Reads no more than a batch's worth at a time, so a batch overshoots its size by at
        // most one read and a full batch is handed over before more is read.
        let chunk = (buf.len() - MARK_BYTES).min(self.opts.batch_max_bytes.max(4096));
        // Bytes before the offset fetched with the first read, to check against `last_bytes`.
        let mut mark_len = (t.read_offset as usize).min(MARK_BYTES);
        let mut verdict = None;
        while let Some(t) = self.files.get_mut(&id) {
            let want = chunk.min(left).min((size - t.read_offset) as usize);
            if want == 0 {
                hit_budget = t.read_offset < size;
                break;
            }
            if self.batch.bytes >= self.opts.batch_max_bytes {
                hit_budget = true;
                break;
            }
            let from = t.read_offset - mark_len as u64;
            let n = match file.read_at(&mut buf[..mark_len + want], from) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!(path = %t.path.display(), error = %e, "read failed; will retry");
                    break;
                }
            };
            if mark_len > 0 {
                if n < mark_len {
                    // Shorter than the offset now: truncated since the `fstat`.
                    verdict = Some(Verdict::Truncated);
                    break;
                }
                if buf[..mark_len] != t.last_bytes[..] {
                    verdict = Some(Verdict::Rewritten);
                    break;
                }
            }
            let data = mark_len..n;
            mark_len = 0;
            if data.is_empty() {
                break;
            }
            left -= data.len();
            total += data.len() as u64;
            self.consume(id, &buf[data]);
        }
        self.buf = buf;
        if let Some(t) = self.files.get_mut(&id)
            && total > 0
        {
            t.last_active = Instant::now();
            t.quiet_polls = 0;
            t.size = size.max(t.read_offset);
            t.unreported += total;
            self.telemetry.bytes_read.inc_by(total);
        }
        match verdict {
            Some(v) => Err(v),
            None => Ok(hit_budget),
        }
    }

    /// Splits a chunk read at the file's read offset into lines and events, straight into the
    /// batch (the hot path: one map lookup per chunk, one clock read per chunk).
    fn consume(&mut self, id: u64, chunk: &[u8]) {
        let Some(t) = self.files.get_mut(&id) else { return };
        let start = t.read_offset;
        t.read_offset += chunk.len() as u64;
        t.remember_tail(chunk);
        let src = &self.sources[t.source];
        let max = src.cfg.max_line_bytes;
        let now = Instant::now();
        let read_ns = now_ns();
        let batch = &mut self.batch;
        let tel = &self.telemetry.tail;
        let mut lines_read = 0u64;
        let mut invalid = 0u64;
        let mut joiner = t.joiner.take();
        let mut splitter = std::mem::replace(&mut t.splitter, LineSplitter::new(1));
        let emitted_before = t.emitted;
        let valid = lines::valid_prefix(chunk);
        splitter.feed(chunk, start, |line| {
            lines_read += 1;
            // Inside the chunk's valid prefix, on character boundaries (a cut at the cap may
            // not be): valid as it is. Otherwise checked, and repaired, on its own.
            let checked = line.at.and_then(|at| valid.get(at..at + line.bytes.len()));
            let (text, bad) = match checked {
                Some(s) => (std::borrow::Cow::Borrowed(s), false),
                None => lines::to_text(line.bytes, max),
            };
            invalid += u64::from(bad);
            match (&src.multiline, joiner.as_mut()) {
                (Some(rule), Some(j)) => j.push(rule, text.into_owned(), line.end, line.truncated, now, |e| {
                    emit_event(t, src, batch, tel, &e.text, e.end, e.truncated, read_ns)
                }),
                _ => emit_event(t, src, batch, tel, &text, line.end, line.truncated, read_ns),
            }
        });
        t.splitter = splitter;
        t.joiner = joiner;
        if t.emitted != emitted_before {
            batch.position(id, t.emitted);
        }
        self.telemetry.lines_read.inc_by(lines_read);
        if invalid > 0 {
            self.telemetry.tail.lines_invalid_utf8.inc_by(invalid);
        }
    }

    /// Multiline events whose flush timeout passed.
    fn flush_multiline(&mut self, now: Instant) {
        if !self.joins_lines() {
            return;
        }
        let due: Vec<u64> = self
            .files
            .values()
            .filter(|t| t.joiner.as_ref().and_then(|j| j.due_at()).is_some_and(|d| d <= now))
            .map(|t| t.id)
            .collect();
        for id in due {
            if let Some(ev) = self.files.get_mut(&id).and_then(|t| t.joiner.as_mut()).and_then(|j| j.flush_due(now)) {
                self.emit(id, ev);
            }
        }
    }

    /// Whether any source joins multiline events (otherwise no file holds one, and the
    /// per-wake-up looks for due events are skipped).
    fn joins_lines(&self) -> bool {
        self.sources.iter().any(|s| s.multiline.is_some())
    }

    /// One finished event outside the read path (flush timeout, end of a file).
    fn emit(&mut self, id: u64, ev: multiline::Event) {
        let Some(t) = self.files.get_mut(&id) else { return };
        let src = &self.sources[t.source];
        emit_event(t, src, &mut self.batch, &self.telemetry.tail, &ev.text, ev.end, ev.truncated, now_ns());
        self.batch.position(id, t.emitted);
    }
}

/// One finished event (a line, or joined lines ending at file offset `end`): filter, parse,
/// label, and into the batch, encoded. The caller records the file's position in the batch
/// (`t.emitted`).
///
/// Inlined into the read loop, with parsing out of line: for a source without parsing (the
/// common case) a line costs a few branches and its encoding, not a chain of calls. Splitting,
/// checking and encoding are ~0.33 CPU-s per GiB of lines (`benches/benches/tail.rs`).
#[inline]
#[allow(clippy::too_many_arguments)]
fn emit_event(
    t: &mut Tracked,
    src: &Source,
    batch: &mut BatchBuilder,
    tel: &crate::telemetry::TailTelemetry,
    text: &str,
    end: u64,
    truncated: bool,
    read_ns: i64,
) {
    t.emitted = end;
    batch.started.get_or_insert_with(Instant::now);
    if truncated {
        tel.lines_truncated.inc();
    }
    if !src.rules.keeps(text) {
        tel.lines_filtered.inc();
        return;
    }
    if src.rules.parses() {
        emit_parsed(t, src, batch, tel, text, read_ns);
        return;
    }
    let ts = read_time(t, read_ns);
    batch.push(&t.labels, ts, text, &[]);
}

/// Read time, strictly increasing per file so equal lines are never deduplicated.
#[inline]
fn read_time(t: &mut Tracked, read_ns: i64) -> i64 {
    let ts = read_ns.max(t.last_ts + 1);
    t.last_ts = ts;
    ts
}

/// The rest of [`emit_event`] for a source that parses its lines: fields, labels from the
/// allow-list, structured metadata, the timestamp.
#[inline(never)]
fn emit_parsed(
    t: &mut Tracked,
    src: &Source,
    batch: &mut BatchBuilder,
    tel: &crate::telemetry::TailTelemetry,
    text: &str,
    read_ns: i64,
) {
    let p = src.rules.parse(text);
    let ts = match p.ts {
        Some(ts) => ts,
        None => read_time(t, read_ns),
    };
    let mut labels = &t.labels;
    if p.parse_failed {
        tel.parse_failures.inc();
    }
    if p.ts_failed {
        tel.timestamp_failures.inc();
    }
    if p.label_values.iter().any(Option::is_some) {
        if !t.label_cache.contains_key(&p.label_values) {
            let mut set = src.labels.clone();
            set.push(("filename".into(), t.path.display().to_string()));
            for (name, v) in src.rules.labels.iter().zip(&p.label_values) {
                if let Some(v) = v {
                    set.retain(|(k, _)| k != name);
                    set.push((name.clone(), v.clone()));
                }
            }
            set.sort();
            if t.label_cache.len() >= LABEL_CACHE {
                t.label_cache.clear();
            }
            t.label_cache.insert(p.label_values.clone(), Arc::from(loki_labels::format(&set)));
        }
        if let Some(l) = t.label_cache.get(&p.label_values) {
            labels = l;
        }
    }
    batch.push(labels, ts, text, &p.metadata);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn tailer(dir: &Path) -> Tailer {
        let logs = dir.join("logs");
        std::fs::create_dir_all(&logs).unwrap();
        let opts = TailOptions {
            sources: vec![FileSource {
                include: vec![format!("{}/*.log", logs.display())],
                read_from: ReadFrom::Beginning,
                ..FileSource::default()
            }],
            hostname: "test".into(),
            batch_max_bytes: 1 << 20,
            batch_max_wait: Duration::from_secs(1),
            poll_interval: Duration::from_millis(10),
            // Never due by itself: the test says when the rescan happens.
            rescan_interval: Duration::from_secs(3600),
            max_open_files: 16,
            state_dir: dir.join("state"),
            checkpoint_interval: Duration::ZERO,
        };
        let telemetry = Telemetry::new(&mut prometheus_client::registry::Registry::default());
        let (acks, _) = std_mpsc::channel();
        let loaded = checkpoint::Loaded { records: vec![], next_id: 1, existed: false };
        Tailer::new(opts, telemetry, loaded, acks).unwrap()
    }

    /// A tailer that found `logs/a.log` and read its one line.
    fn tailer_with_one_line(dir: &Path) -> (Tailer, PathBuf) {
        let mut t = tailer(dir);
        let file = dir.join("logs/a.log");
        std::fs::write(&file, "one\n").unwrap();
        t.discover();
        t.poll();
        t.read_hot();
        (t, file)
    }

    fn append(path: &Path, text: &str) {
        std::fs::OpenOptions::new().append(true).open(path).unwrap().write_all(text.as_bytes()).unwrap();
    }

    /// Reads what inotify reported about `path` (waiting up to a deadline for it).
    fn wait_for_hint(t: &mut Tailer, path: &Path) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let hints = t.discovery.wait(Duration::from_millis(100));
            if hints.written.iter().any(|p| p == path) {
                t.hot.extend(hints.written.iter().filter_map(|p| t.by_path.get(p)));
                return;
            }
            assert!(Instant::now() < deadline, "inotify never reported the write to {}", path.display());
        }
    }

    /// A quiet file in a watched directory is not stat-polled: inotify's event is what gets it
    /// read. If that event is lost, the full rescan (`rescan_interval`) still finds the new
    /// lines.
    #[test]
    fn quiet_files_are_read_on_inotify_hints_and_at_the_rescan_when_events_are_lost() {
        let dir = tempfile::tempdir().unwrap();
        let (mut t, file) = tailer_with_one_line(dir.path());
        assert_eq!(t.batch.lines, 1);
        assert!(t.files.values().all(|f| f.watched), "inotify watches the directory");
        for _ in 0..=QUIET_POLLS {
            t.poll();
        }
        // Events from the first write and listing are not wanted here.
        let _ = t.discovery.wait(Duration::ZERO);

        // Written, and inotify says so: read at once.
        append(&file, "two\n");
        wait_for_hint(&mut t, &file);
        t.read_hot();
        assert_eq!(t.batch.lines, 2);
        for _ in 0..=QUIET_POLLS {
            t.poll();
        }

        // Written, and the event is lost (never read): the polls between rescans do not look
        // at the quiet file...
        append(&file, "three\n");
        for _ in 0..QUIET_EVERY * 2 {
            t.poll();
            t.read_hot();
        }
        assert_eq!(t.batch.lines, 2, "a quiet file in a watched directory is not polled between rescans");
        // ...the rescan does.
        t.opts.rescan_interval = Duration::ZERO;
        t.poll();
        t.read_hot();
        assert_eq!(t.batch.lines, 3, "the safety-net rescan read the line whose event was lost");
        let (batch, positions) = t.batch.take();
        assert_eq!(batch.lines, 3);
        assert_eq!(positions.last().map(|p| p.offset), Some(14));
    }

    /// Quiet files in a directory inotify does not watch are polled every `QUIET_EVERY` polls,
    /// as before inotify.
    #[test]
    fn quiet_files_in_unwatched_directories_are_still_polled() {
        let dir = tempfile::tempdir().unwrap();
        let (mut t, file) = tailer_with_one_line(dir.path());
        for f in t.files.values_mut() {
            // As if the watch could not be added (fs.inotify.max_user_watches reached).
            f.watched = false;
        }
        for _ in 0..=QUIET_POLLS {
            t.poll();
        }
        append(&file, "two\n");
        for _ in 0..QUIET_EVERY {
            t.poll();
            t.read_hot();
        }
        assert_eq!(t.batch.lines, 2);
    }
}
