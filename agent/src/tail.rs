//! File tailing, first cut: globs polled once a second, lines read to the end of each file,
//! batched by stream and handed to the Loki sink.
//!
//! Handled here: files that appear later (read from their start), `read_from` for files present
//! at start, rename-and-create (the old descriptor is drained before the new file is opened),
//! truncation (size below the offset restarts at 0), deletion, CRLF, invalid UTF-8 (replaced),
//! and a bound on a line without a newline. The tailing issue adds persisted checkpoints,
//! content identity, acknowledgements and inotify wake-ups.

use crate::pipeline::{LogBatch, StreamLines};
use crate::telemetry::Telemetry;
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use osprey_config::agent::{FileSource, ReadFrom};
use osprey_protocol::loki_labels;
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{mpsc, watch};

/// A line longer than this without a newline is cut and emitted as is.
pub const MAX_LINE_BYTES: usize = 256 << 10;
const READ_CHUNK: usize = 64 << 10;

pub struct TailOptions {
    pub sources: Vec<FileSource>,
    pub hostname: String,
    pub batch_max_bytes: usize,
    pub batch_max_wait: Duration,
    pub discovery_interval: Duration,
}

struct Source {
    include: GlobSet,
    exclude: GlobSet,
    roots: Vec<PathBuf>,
    read_from: ReadFrom,
    labels: Vec<(String, String)>,
}

struct Tracked {
    file: File,
    dev: u64,
    ino: u64,
    offset: u64,
    partial: Vec<u8>,
    labels: Arc<str>,
    /// The path now names another file (or none): drain this one, then let it go.
    replaced: bool,
}

fn glob_set(globs: &[String]) -> anyhow::Result<GlobSet> {
    let mut b = GlobSetBuilder::new();
    for g in globs {
        let glob = GlobBuilder::new(g).literal_separator(true).build();
        b.add(glob.map_err(|e| anyhow::anyhow!("invalid glob {g:?}: {e}"))?);
    }
    Ok(b.build()?)
}

/// The directory to walk for a glob: its components before the first wildcard.
fn glob_root(glob: &str) -> PathBuf {
    let mut root = PathBuf::from("/");
    for comp in Path::new(glob).components().skip(1) {
        let s = comp.as_os_str().to_string_lossy();
        if s.contains(['*', '?', '[', '{']) {
            break;
        }
        root.push(comp);
    }
    root
}

pub struct Tailer {
    sources: Vec<Source>,
    files: HashMap<PathBuf, Tracked>,
    warned: HashSet<PathBuf>,
    first_scan: bool,
    telemetry: Telemetry,
    opts: TailOptions,
}

impl Tailer {
    pub fn new(opts: TailOptions, telemetry: Telemetry) -> anyhow::Result<Self> {
        let mut sources = Vec::new();
        for s in &opts.sources {
            let mut labels: Vec<(String, String)> = s.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            labels.push(("job".into(), s.job.clone()));
            labels.push(("host".into(), opts.hostname.clone()));
            sources.push(Source {
                include: glob_set(&s.include)?,
                exclude: glob_set(&s.exclude)?,
                roots: s.include.iter().map(|g| glob_root(g)).collect(),
                read_from: s.read_from,
                labels,
            });
        }
        Ok(Tailer { sources, files: HashMap::new(), warned: HashSet::new(), first_scan: true, telemetry, opts })
    }

    /// Runs until `shutdown` is true or the sink is gone. Blocking: run it on its own thread.
    pub fn run(mut self, tx: mpsc::Sender<LogBatch>, shutdown: watch::Receiver<bool>) {
        let mut batch = BatchBuilder::default();
        let mut last_discovery: Option<Instant> = None;
        let mut batch_started = Instant::now();
        while !*shutdown.borrow() {
            if last_discovery.is_none_or(|t| t.elapsed() >= self.opts.discovery_interval) {
                self.discover();
                last_discovery = Some(Instant::now());
            }
            let read = self.read_all(&mut batch);
            let full = batch.batch.bytes >= self.opts.batch_max_bytes;
            let due = !batch.batch.is_empty() && batch_started.elapsed() >= self.opts.batch_max_wait;
            if full || due {
                // Blocks while the sink is busy: backpressure pauses reading.
                if tx.blocking_send(batch.take()).is_err() {
                    return;
                }
                batch_started = Instant::now();
            }
            if batch.batch.is_empty() {
                batch_started = Instant::now();
            }
            if read == 0 {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        if !batch.batch.is_empty() {
            let _ = tx.blocking_send(batch.take());
        }
    }

    fn discover(&mut self) {
        let mut seen: HashSet<PathBuf> = HashSet::new();
        for si in 0..self.sources.len() {
            let roots = self.sources[si].roots.clone();
            for root in roots {
                walk(&root, &mut |path: &Path| {
                    let s = &self.sources[si];
                    if s.include.is_match(path) && !s.exclude.is_match(path) && seen.insert(path.to_path_buf()) {
                        self.track(si, path);
                    }
                });
            }
        }
        // A tracked path that now names another file or nothing: keep the old descriptor to
        // drain it, and pick the new file up from its start on the next pass.
        for (path, t) in self.files.iter_mut() {
            match std::fs::metadata(path) {
                Ok(m) if m.dev() == t.dev && m.ino() == t.ino => {}
                _ => t.replaced = true,
            }
        }
        self.first_scan = false;
        self.telemetry.files_open.set(self.files.len() as i64);
    }

    fn track(&mut self, source: usize, path: &Path) {
        // A replaced path keeps its old descriptor until drained (read_all); the new file is
        // picked up on the next pass.
        if self.files.contains_key(path) {
            return;
        }
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) => {
                self.telemetry.files_unreadable.inc();
                if self.warned.insert(path.to_path_buf()) {
                    tracing::warn!(path = %path.display(), error = %e, "cannot open a matched log file; skipping it");
                }
                return;
            }
        };
        let Ok(meta) = file.metadata() else { return };
        if !meta.is_file() {
            return;
        }
        let s = &self.sources[source];
        let offset = if self.first_scan && s.read_from == ReadFrom::End { meta.len() } else { 0 };
        let mut labels = s.labels.clone();
        labels.push(("filename".into(), path.display().to_string()));
        labels.sort();
        labels.dedup_by(|a, b| a.0 == b.0);
        let mut file = file;
        if file.seek(SeekFrom::Start(offset)).is_err() {
            return;
        }
        self.files.insert(
            path.to_path_buf(),
            Tracked {
                file,
                dev: meta.dev(),
                ino: meta.ino(),
                offset,
                partial: Vec::new(),
                labels: Arc::from(loki_labels::format(&labels)),
                replaced: false,
            },
        );
    }

    /// Reads every file to its end (up to a budget per file); returns the bytes read.
    fn read_all(&mut self, batch: &mut BatchBuilder) -> usize {
        let mut total = 0;
        let mut done: Vec<PathBuf> = Vec::new();
        let mut buf = vec![0u8; READ_CHUNK];
        for (path, t) in self.files.iter_mut() {
            if let Ok(m) = t.file.metadata()
                && m.len() < t.offset
            {
                tracing::info!(path = %path.display(), "file shrank below the read offset (truncated); reading it from the start");
                self.telemetry.truncations.inc();
                t.offset = 0;
                t.partial.clear();
                let _ = t.file.seek(SeekFrom::Start(0));
            }
            let mut budget = 4 << 20;
            loop {
                let n = match t.file.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "read failed");
                        break;
                    }
                };
                t.offset += n as u64;
                total += n;
                self.telemetry.bytes_read.inc_by(n as u64);
                let lines = split_lines(&mut t.partial, &buf[..n], |line| batch.push(path, &t.labels, line));
                self.telemetry.lines_read.inc_by(lines);
                budget -= n.min(budget);
                if budget == 0 {
                    break;
                }
            }
            if t.replaced && budget > 0 {
                // Drained: a final line without newline in a rotated-away file is complete.
                if !t.partial.is_empty() {
                    let rest = std::mem::take(&mut t.partial);
                    batch.push(path, &t.labels, &rest);
                    self.telemetry.lines_read.inc();
                }
                self.telemetry.rotations.inc();
                done.push(path.clone());
            }
        }
        for p in done {
            self.files.remove(&p);
        }
        total
    }
}

/// Splits `data` into lines, carrying an unfinished line in `partial`. Returns lines emitted.
fn split_lines(partial: &mut Vec<u8>, data: &[u8], mut emit: impl FnMut(&[u8])) -> u64 {
    let mut n = 0;
    let mut start = 0;
    for nl in memchr::memchr_iter(b'\n', data) {
        let piece = &data[start..nl];
        if partial.is_empty() {
            emit(piece);
        } else {
            partial.extend_from_slice(piece);
            emit(partial);
            partial.clear();
        }
        n += 1;
        start = nl + 1;
    }
    partial.extend_from_slice(&data[start..]);
    if partial.len() >= MAX_LINE_BYTES {
        emit(&partial[..MAX_LINE_BYTES]);
        partial.clear();
        n += 1;
    }
    n
}

/// Visits the files under `dir` (or `dir` itself when it is a file). Symlinked directories are
/// not followed, so a link loop cannot trap the walk.
fn walk(dir: &Path, visit: &mut impl FnMut(&Path)) {
    if std::fs::metadata(dir).is_ok_and(|m| m.is_file()) {
        visit(dir);
        return;
    }
    walk_dir(dir, visit);
}

fn walk_dir(dir: &Path, visit: &mut impl FnMut(&Path)) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let Ok(ft) = entry.file_type() else { continue };
        let path = entry.path();
        if ft.is_dir() {
            walk_dir(&path, visit);
        } else {
            visit(&path);
        }
    }
}

#[derive(Default)]
struct BatchBuilder {
    batch: LogBatch,
    index: HashMap<PathBuf, usize>,
}

impl BatchBuilder {
    fn push(&mut self, path: &Path, labels: &Arc<str>, line: &[u8]) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let text = String::from_utf8_lossy(line).into_owned();
        let idx = match self.index.get(path) {
            Some(i) => *i,
            None => {
                self.batch.streams.push(StreamLines { labels: labels.clone(), entries: Vec::new() });
                self.index.insert(path.to_path_buf(), self.batch.streams.len() - 1);
                self.batch.streams.len() - 1
            }
        };
        self.batch.bytes += text.len();
        self.batch.lines += 1;
        self.batch.streams[idx].entries.push((now_ns(), text));
    }

    fn take(&mut self) -> LogBatch {
        self.index.clear();
        std::mem::take(&mut self.batch)
    }
}

fn now_ns() -> i64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_lf_crlf_and_carries_partials() {
        let mut partial = Vec::new();
        let mut lines: Vec<Vec<u8>> = Vec::new();
        split_lines(&mut partial, b"a\r\nb\nc", |l| lines.push(l.to_vec()));
        split_lines(&mut partial, b"d\n", |l| lines.push(l.to_vec()));
        assert_eq!(lines, vec![b"a\r".to_vec(), b"b".to_vec(), b"cd".to_vec()]);
        assert!(partial.is_empty());
    }

    #[test]
    fn glob_roots() {
        assert_eq!(glob_root("/var/log/**/*.log"), PathBuf::from("/var/log"));
        assert_eq!(glob_root("/a/b/c.log"), PathBuf::from("/a/b/c.log"));
        assert_eq!(glob_root("/*.log"), PathBuf::from("/"));
    }
}
