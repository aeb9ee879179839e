//! A durable, bounded FIFO of opaque records on disk: what a sink keeps while its receiver is
//! away, so nothing is lost across an outage or a restart of the process.
//!
//! # How to use it
//!
//! ```no_run
//! # async fn f(send: impl Fn(&[u8]) -> bool) -> std::io::Result<()> {
//! use osprey_agent::queue::{DiskQueue, QueueMetrics, QueueOptions};
//! let metrics = QueueMetrics::default(); // register it: metrics.register(registry)
//! let (queue, report) = DiskQueue::open(
//!     QueueOptions { dir: "/var/lib/osprey/agent/queue/remote_write".into(), ..QueueOptions::default() },
//!     metrics,
//! )?;
//! queue.push(b"an already-encoded request body")?; // durable (fsynced) when it returns
//! let record = queue.next_wait().await?;         // oldest record not yet handed out
//! if send(&record.bytes) {
//!     queue.ack(record.id)?; // now, and only now, it is gone for good
//! }
//! # Ok(()) }
//! ```
//!
//! - Records are bytes in, bytes out: the queue never looks inside (the agent stores encoded
//!   remote_write bodies; the collector stores remote_write and Loki push bodies).
//! - [`DiskQueue::next`] hands records out in push order and moves an in-memory cursor, so
//!   several requests can be in flight. [`DiskQueue::ack`]`(id)` acknowledges `id` *and every
//!   record before it*: a sender with several requests in flight must ack only the contiguous
//!   prefix that was delivered (see `sink::remote_write` for an ordered finalizer).
//! - The acknowledged position is persisted atomically (write, fsync, rename, fsync the
//!   directory) at most every `ack_persist_interval` (default 1 s; zero: on every ack), always
//!   before a segment is deleted, and on [`DiskQueue::flush`] and drop. After a crash,
//!   everything after the last persisted ack is handed out again: delivery is at least once,
//!   never less, and the duplicates are bounded by that interval.
//! - The methods do blocking file I/O (a push is an `fsync`); call them from a blocking thread
//!   (`tokio::task::spawn_blocking`) when pushes are frequent. Every method takes `&self`; the
//!   queue is shared behind an `Arc`.
//!
//! # On disk
//!
//! `DIR/LOCK` (flock, so two processes never share a queue), `DIR/position` (the acknowledged
//! position: `segment u64 LE | offset u64 LE | crc32 u32 LE`), and segments
//! `DIR/00000000000000000001.seg`, each starting with [`MAGIC`] and holding records framed as
//! `len u32 LE | crc32(payload) u32 LE | payload`. A segment is sealed once it holds
//! `segment_bytes`; segments wholly before the acknowledged position are deleted.
//!
//! # At the bound
//!
//! The segments together never exceed `max_bytes`. A push that would go over deletes the oldest
//! segment first, acknowledged or not: the newest data is the most useful after an outage.
//! Records deleted unacknowledged are counted (`queue_records_dropped`, `queue_bytes_dropped`)
//! and logged. A record larger than the whole bound is refused ([`QueueError::TooLarge`]) and
//! counted the same way.
//!
//! # After a crash
//!
//! Opening scans every segment. The first frame that is short or fails its CRC ends the
//! segment: the file is cut there, the cut is logged and counted (`queue_corruptions`,
//! `queue_truncated_bytes`), and the queue opens anyway. A missing or damaged position file
//! means "start from the oldest segment" (duplicates, not loss). Opening never refuses because
//! of what a crash left behind; it refuses only when the directory cannot be used at all.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

/// First bytes of every segment: format name and version.
pub const MAGIC: &[u8; 8] = b"OSPQUE01";
const HEADER: u64 = MAGIC.len() as u64;
const FRAME: u64 = 8;
const POSITION_FILE: &str = "position";
const POSITION_TMP: &str = "position.tmp";
/// Largest record the framing accepts.
pub const MAX_RECORD: u64 = u32::MAX as u64;

/// Where and how big.
#[derive(Clone, Debug)]
pub struct QueueOptions {
    /// The queue's own directory (created if missing).
    pub dir: PathBuf,
    /// Upper bound of all segment files together, headers and frames included.
    pub max_bytes: u64,
    /// A segment is sealed and a new one started past this size. Dropping at the bound frees
    /// whole segments, so this is also the granularity of a drop; it is capped at a quarter
    /// of `max_bytes`.
    pub segment_bytes: u64,
    /// Acknowledgements are persisted at most this often (three fsyncs each); a crash resends
    /// at most this much. Zero: persist every ack.
    pub ack_persist_interval: std::time::Duration,
}

impl Default for QueueOptions {
    fn default() -> Self {
        QueueOptions {
            dir: PathBuf::from("queue"),
            max_bytes: 256 << 20,
            segment_bytes: 8 << 20,
            ack_persist_interval: std::time::Duration::from_secs(1),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("disk queue I/O error: {0}")]
    Io(#[from] io::Error),
    #[error("a record of {size} bytes does not fit the disk queue's bound of {max} bytes; dropped")]
    TooLarge { size: u64, max: u64 },
}

impl From<QueueError> for io::Error {
    fn from(e: QueueError) -> io::Error {
        match e {
            QueueError::Io(e) => e,
            e => io::Error::other(e.to_string()),
        }
    }
}

/// The queue's metrics. Register them under the owner's prefix and a label naming the queue,
/// e.g. `osprey_agent_queue_records_dropped_total{queue="remote_write"}`.
#[derive(Clone, Debug, Default)]
pub struct QueueMetrics {
    pub records_pushed: Counter,
    pub records_acked: Counter,
    pub records_dropped: Counter,
    pub bytes_dropped: Counter,
    pub corruptions: Counter,
    pub truncated_bytes: Counter,
    pub pending_records: Gauge,
    pub disk_bytes: Gauge,
    pub max_bytes: Gauge,
}

impl QueueMetrics {
    pub fn register(&self, r: &mut Registry) {
        r.register("queue_records_pushed", "Records written to the disk queue", self.records_pushed.clone());
        r.register("queue_records_acked", "Records delivered and acknowledged", self.records_acked.clone());
        r.register(
            "queue_records_dropped",
            "Records deleted unacknowledged because the queue reached its size bound",
            self.records_dropped.clone(),
        );
        r.register("queue_bytes_dropped", "Bytes of records dropped at the size bound", self.bytes_dropped.clone());
        r.register(
            "queue_corruptions",
            "Torn or corrupt segment tails (or position files) found and repaired",
            self.corruptions.clone(),
        );
        r.register(
            "queue_truncated_bytes",
            "Bytes cut from torn or corrupt segment tails",
            self.truncated_bytes.clone(),
        );
        r.register("queue_pending_records", "Records in the queue not yet acknowledged", self.pending_records.clone());
        r.register("queue_bytes", "Bytes of segment files on disk", self.disk_bytes.clone());
        r.register(
            "queue_max_bytes",
            "The queue's size bound (bytes); at the bound the oldest records are dropped",
            self.max_bytes.clone(),
        );
    }
}

/// Identifies a handed-out record; ordered like the queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RecordId {
    segment: u64,
    offset: u64,
    /// Ordinal of the record within its segment.
    index: u64,
    /// Offset just past the record.
    end: u64,
}

/// A record handed out by [`DiskQueue::next`].
#[derive(Clone, Debug)]
pub struct Record {
    pub id: RecordId,
    pub bytes: Vec<u8>,
}

/// What opening found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OpenReport {
    pub segments: usize,
    /// Records not yet acknowledged, to be handed out again.
    pub pending_records: u64,
    pub corruptions: u64,
    pub truncated_bytes: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Position {
    segment: u64,
    offset: u64,
    index: u64,
}

#[derive(Debug)]
struct SegmentInfo {
    id: u64,
    len: u64,
    records: u64,
}

struct Inner {
    opts: QueueOptions,
    segments: VecDeque<SegmentInfo>,
    active: File,
    /// First unacknowledged record.
    head: Position,
    /// What the position file says (may lag `head` by up to `ack_persist_interval`).
    persisted: Position,
    last_persist: std::time::Instant,
    /// Next record to hand out (memory only).
    cursor: Position,
    reader: Option<(u64, File)>,
    pending: u64,
    total_bytes: u64,
    metrics: QueueMetrics,
    _lock: File,
}

/// See the [module documentation](self).
pub struct DiskQueue {
    inner: Mutex<Inner>,
    notify: tokio::sync::Notify,
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.seg"))
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// Result of scanning one segment: where valid data ends and why.
struct Scan {
    valid_len: u64,
    file_len: u64,
    offsets: Vec<u64>,
    problem: Option<String>,
}

fn scan_segment(path: &Path) -> io::Result<Scan> {
    let mut file = File::open(path)?;
    let file_len = file.metadata()?.len();
    let mut data = Vec::with_capacity(file_len.min(64 << 20) as usize);
    file.read_to_end(&mut data)?;
    let mut offsets = Vec::new();
    let mut pos = HEADER as usize;
    let mut problem = None;
    while pos < data.len() {
        let Some(frame) = data.get(pos..pos + FRAME as usize) else {
            problem = Some(format!("short frame header at offset {pos}"));
            break;
        };
        let len = u32::from_le_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
        let crc = u32::from_le_bytes([frame[4], frame[5], frame[6], frame[7]]);
        let start = pos + FRAME as usize;
        let Some(payload) = data.get(start..start + len) else {
            problem = Some(format!("record at offset {pos} claims {len} bytes, only {} left", data.len() - start));
            break;
        };
        if crc32fast::hash(payload) != crc {
            problem = Some(format!("CRC mismatch in the record at offset {pos}"));
            break;
        }
        offsets.push(pos as u64);
        pos = start + len;
    }
    Ok(Scan { valid_len: pos.min(data.len()) as u64, file_len, offsets, problem })
}

fn read_position(dir: &Path) -> Result<Option<(u64, u64)>, String> {
    let bytes = match std::fs::read(dir.join(POSITION_FILE)) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    if bytes.len() != 20 {
        return Err(format!("{} bytes, expected 20", bytes.len()));
    }
    let crc = u32::from_le_bytes([bytes[16], bytes[17], bytes[18], bytes[19]]);
    if crc32fast::hash(&bytes[..16]) != crc {
        return Err("CRC mismatch".into());
    }
    let segment = u64::from_le_bytes(bytes[0..8].try_into().map_err(|_| "short")?);
    let offset = u64::from_le_bytes(bytes[8..16].try_into().map_err(|_| "short")?);
    Ok(Some((segment, offset)))
}

fn write_position(dir: &Path, p: Position) -> io::Result<()> {
    let mut buf = [0u8; 20];
    buf[0..8].copy_from_slice(&p.segment.to_le_bytes());
    buf[8..16].copy_from_slice(&p.offset.to_le_bytes());
    let crc = crc32fast::hash(&buf[..16]);
    buf[16..20].copy_from_slice(&crc.to_le_bytes());
    let tmp = dir.join(POSITION_TMP);
    let mut f = File::create(&tmp)?;
    f.write_all(&buf)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, dir.join(POSITION_FILE))?;
    sync_dir(dir)
}

fn create_segment(dir: &Path, id: u64) -> io::Result<File> {
    let path = segment_path(dir, id);
    let mut f = OpenOptions::new().create_new(true).append(true).read(true).open(&path)?;
    f.write_all(MAGIC)?;
    f.sync_all()?;
    sync_dir(dir)?;
    Ok(f)
}

impl DiskQueue {
    /// Opens (creating if needed) the queue in `opts.dir`, repairing what a crash left behind.
    pub fn open(mut opts: QueueOptions, metrics: QueueMetrics) -> io::Result<(DiskQueue, OpenReport)> {
        let dir = opts.dir.clone();
        std::fs::create_dir_all(&dir)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot create queue directory {}: {e}", dir.display())))?;
        let lock = OpenOptions::new().create(true).truncate(false).write(true).open(dir.join("LOCK"))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!("queue directory {} is in use by another process or queue", dir.display()),
                ));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(e),
        }
        opts.max_bytes = opts.max_bytes.max(4 * (HEADER + FRAME + 1));
        opts.segment_bytes = opts.segment_bytes.clamp(HEADER + FRAME + 1, opts.max_bytes / 4);

        let mut ids: Vec<u64> = Vec::new();
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(id) = name.strip_suffix(".seg").and_then(|s| s.parse::<u64>().ok()) {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        let mut report = OpenReport::default();

        let stored = match read_position(&dir) {
            Ok(p) => p,
            Err(problem) => {
                tracing::warn!(dir = %dir.display(), %problem, "disk queue position file is damaged; resending from the oldest segment (duplicates possible)");
                metrics.corruptions.inc();
                report.corruptions += 1;
                None
            }
        };
        let (stored_segment, stored_offset) = stored.unwrap_or((0, 0));

        let mut segments = VecDeque::new();
        let mut head: Option<Position> = None;
        let mut removed = false;
        for id in ids {
            let path = segment_path(&dir, id);
            if id < stored_segment {
                // Wholly acknowledged; the deletion was interrupted.
                std::fs::remove_file(&path)?;
                removed = true;
                continue;
            }
            let scan = scan_segment(&path)?;
            if scan.file_len < HEADER {
                // Torn at creation: it never held a record.
                std::fs::remove_file(&path)?;
                removed = true;
                continue;
            }
            let mut magic = [0u8; HEADER as usize];
            File::open(&path)?.read_exact(&mut magic)?;
            if &magic != MAGIC {
                let aside = path.with_extension("corrupt");
                tracing::error!(segment = %path.display(), moved_to = %aside.display(), "disk queue segment has no valid header; moving it aside");
                std::fs::rename(&path, &aside)?;
                metrics.corruptions.inc();
                report.corruptions += 1;
                removed = true;
                continue;
            }
            if scan.valid_len < scan.file_len {
                let cut = scan.file_len - scan.valid_len;
                tracing::warn!(
                    segment = %path.display(),
                    offset = scan.valid_len,
                    cut_bytes = cut,
                    reason = scan.problem.as_deref().unwrap_or("trailing bytes"),
                    "disk queue segment has a torn or corrupt tail; cutting it and continuing"
                );
                let f = OpenOptions::new().write(true).open(&path)?;
                f.set_len(scan.valid_len)?;
                f.sync_all()?;
                metrics.corruptions.inc();
                metrics.truncated_bytes.inc_by(cut);
                report.corruptions += 1;
                report.truncated_bytes += cut;
            }
            if head.is_none() {
                let (offset, index) = if id == stored_segment {
                    let index = scan.offsets.partition_point(|o| *o < stored_offset);
                    (scan.offsets.get(index).copied().unwrap_or(scan.valid_len), index as u64)
                } else {
                    (HEADER, 0)
                };
                head = Some(Position { segment: id, offset, index });
            }
            segments.push_back(SegmentInfo { id, len: scan.valid_len, records: scan.offsets.len() as u64 });
        }
        if removed {
            sync_dir(&dir)?;
        }
        let next_id = segments.back().map_or(stored_segment, |s| s.id).max(stored_segment) + 1;
        let active = create_segment(&dir, next_id)?;
        segments.push_back(SegmentInfo { id: next_id, len: HEADER, records: 0 });
        let head = head.unwrap_or(Position { segment: next_id, offset: HEADER, index: 0 });
        let pending = segments.iter().map(|s| s.records).sum::<u64>()
            - if segments[0].id == head.segment { head.index } else { 0 };
        let total_bytes = segments.iter().map(|s| s.len).sum();
        report.segments = segments.len();
        report.pending_records = pending;
        metrics.pending_records.set(pending as i64);
        metrics.disk_bytes.set(total_bytes as i64);
        metrics.max_bytes.set(opts.max_bytes as i64);
        if pending > 0 {
            tracing::info!(dir = %dir.display(), pending, "disk queue holds records from before the restart; sending them first");
        }
        let inner = Inner {
            opts,
            segments,
            active,
            head,
            persisted: head,
            last_persist: std::time::Instant::now(),
            cursor: head,
            reader: None,
            pending,
            total_bytes,
            metrics,
            _lock: lock,
        };
        Ok((DiskQueue { inner: Mutex::new(inner), notify: tokio::sync::Notify::new() }, report))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the files inconsistent (every change is
        // ordered write-then-publish), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends a record; it is on disk (fsynced) when this returns `Ok`. At the size bound the
    /// oldest segment is dropped first (counted).
    pub fn push(&self, record: &[u8]) -> Result<(), QueueError> {
        let mut q = self.lock();
        q.push(record)?;
        drop(q);
        self.notify.notify_waiters();
        Ok(())
    }

    /// The oldest record not yet handed out, or `None` when every record has been.
    pub fn next(&self) -> io::Result<Option<Record>> {
        self.lock().next()
    }

    /// Waits until a record is available and hands it out.
    pub async fn next_wait(&self) -> io::Result<Record> {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(r) = self.next()? {
                return Ok(r);
            }
            notified.await;
        }
    }

    /// Acknowledges `id` and every record before it: they will never be handed out again.
    /// Persisted before it returns. Acking a record already acked or dropped does nothing.
    pub fn ack(&self, id: RecordId) -> io::Result<()> {
        self.lock().ack(id)
    }

    /// Hands out again every record not yet acknowledged (for a sender that starts over).
    pub fn rewind(&self) {
        let mut q = self.lock();
        q.cursor = q.head;
    }

    /// Persists the acknowledged position now (graceful shutdown).
    pub fn flush(&self) -> io::Result<()> {
        self.lock().persist()
    }

    /// Records pushed and not yet acknowledged.
    pub fn pending(&self) -> u64 {
        self.lock().pending
    }

    /// Bytes of segment files on disk.
    pub fn disk_bytes(&self) -> u64 {
        self.lock().total_bytes
    }
}

impl Drop for DiskQueue {
    fn drop(&mut self) {
        if let Err(e) = self.lock().persist() {
            tracing::warn!(error = %e, "cannot persist the disk queue position at close; records may be resent");
        }
    }
}

impl Inner {
    fn dir(&self) -> PathBuf {
        self.opts.dir.clone()
    }

    fn persist(&mut self) -> io::Result<()> {
        if self.persisted != self.head {
            write_position(&self.opts.dir, self.head)?;
            self.persisted = self.head;
        }
        self.last_persist = std::time::Instant::now();
        Ok(())
    }

    fn push(&mut self, record: &[u8]) -> Result<(), QueueError> {
        let frame_len = FRAME + record.len() as u64;
        let max_payload = (self.opts.max_bytes - HEADER - FRAME).min(MAX_RECORD);
        if record.len() as u64 > max_payload {
            self.metrics.records_dropped.inc();
            self.metrics.bytes_dropped.inc_by(record.len() as u64);
            tracing::error!(
                size = record.len(),
                max = max_payload,
                "record larger than the disk queue's bound; dropped (raise the queue's max_bytes)"
            );
            return Err(QueueError::TooLarge { size: record.len() as u64, max: max_payload });
        }
        let active_len = self.segments.back().map_or(HEADER, |s| s.len);
        if active_len > HEADER && active_len + frame_len > self.opts.segment_bytes {
            self.roll()?;
        }
        while self.total_bytes + frame_len > self.opts.max_bytes {
            if self.segments.len() == 1 {
                self.roll()?;
            }
            self.drop_oldest()?;
        }
        let mut buf = Vec::with_capacity(frame_len as usize);
        buf.extend_from_slice(&(record.len() as u32).to_le_bytes());
        buf.extend_from_slice(&crc32fast::hash(record).to_le_bytes());
        buf.extend_from_slice(record);
        let before = self.segments.back().map_or(HEADER, |s| s.len);
        if let Err(e) = self.active.write_all(&buf).and_then(|_| self.active.sync_data()) {
            // Do not leave a partial frame for the next push to append after.
            let _ = self.active.set_len(before);
            return Err(e.into());
        }
        if let Some(s) = self.segments.back_mut() {
            s.len += frame_len;
            s.records += 1;
        }
        self.total_bytes += frame_len;
        self.pending += 1;
        self.metrics.records_pushed.inc();
        self.metrics.pending_records.set(self.pending as i64);
        self.metrics.disk_bytes.set(self.total_bytes as i64);
        Ok(())
    }

    /// Seals the active segment and starts a new one.
    fn roll(&mut self) -> io::Result<()> {
        let id = self.segments.back().map_or(1, |s| s.id + 1);
        self.active = create_segment(&self.opts.dir, id)?;
        self.segments.push_back(SegmentInfo { id, len: HEADER, records: 0 });
        self.total_bytes += HEADER;
        Ok(())
    }

    /// Deletes the oldest segment, acknowledged or not, counting what was unacknowledged.
    fn drop_oldest(&mut self) -> io::Result<()> {
        let Some(oldest) = self.segments.pop_front() else { return Ok(()) };
        let (records, bytes) = if oldest.id == self.head.segment {
            (oldest.records - self.head.index, oldest.len - self.head.offset)
        } else if oldest.id > self.head.segment {
            (oldest.records, oldest.len - HEADER)
        } else {
            (0, 0)
        };
        let next = self.segments.front().map_or(oldest.id + 1, |s| s.id);
        if self.head.segment <= oldest.id {
            self.head = Position { segment: next, offset: HEADER, index: 0 };
            // The position moves past the segment before the segment disappears.
            self.persist()?;
        }
        if self.cursor.segment <= oldest.id {
            self.cursor = self.head;
        }
        if self.reader.as_ref().is_some_and(|(id, _)| *id == oldest.id) {
            self.reader = None;
        }
        std::fs::remove_file(segment_path(&self.opts.dir, oldest.id))?;
        sync_dir(&self.opts.dir)?;
        self.total_bytes -= oldest.len;
        self.pending -= records;
        if records > 0 {
            self.metrics.records_dropped.inc_by(records);
            self.metrics.bytes_dropped.inc_by(bytes);
            tracing::warn!(
                dir = %self.opts.dir.display(),
                records,
                bytes,
                max_bytes = self.opts.max_bytes,
                "disk queue is full; dropped its oldest undelivered records"
            );
        }
        self.metrics.pending_records.set(self.pending as i64);
        self.metrics.disk_bytes.set(self.total_bytes as i64);
        Ok(())
    }

    fn next(&mut self) -> io::Result<Option<Record>> {
        loop {
            let Some(pos) = self.segments.iter().position(|s| s.id >= self.cursor.segment) else { return Ok(None) };
            let seg = &self.segments[pos];
            if seg.id != self.cursor.segment {
                self.cursor = Position { segment: seg.id, offset: HEADER, index: 0 };
            }
            if self.cursor.offset >= seg.len {
                if pos + 1 == self.segments.len() {
                    return Ok(None);
                }
                self.cursor = Position { segment: self.segments[pos + 1].id, offset: HEADER, index: 0 };
                continue;
            }
            let seg_len = seg.len;
            let seg_id = seg.id;
            if self.reader.as_ref().is_none_or(|(id, _)| *id != seg_id) {
                self.reader = Some((seg_id, File::open(segment_path(&self.opts.dir, seg_id))?));
            }
            let Some((_, file)) = &self.reader else { return Ok(None) };
            match read_frame(file, self.cursor.offset, seg_len) {
                Ok(bytes) => {
                    let end = self.cursor.offset + FRAME + bytes.len() as u64;
                    let id = RecordId { segment: seg_id, offset: self.cursor.offset, index: self.cursor.index, end };
                    self.cursor = Position { segment: seg_id, offset: end, index: self.cursor.index + 1 };
                    return Ok(Some(Record { id, bytes }));
                }
                Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                    // Damaged after it was written and scanned (disk error): skip the rest of
                    // this segment rather than resend garbage or stop forever.
                    tracing::error!(segment = %segment_path(&self.opts.dir, seg_id).display(), offset = self.cursor.offset, error = %e, "disk queue record unreadable; skipping the rest of its segment");
                    self.metrics.corruptions.inc();
                    if pos + 1 == self.segments.len() {
                        self.cursor.offset = seg_len;
                        return Ok(None);
                    }
                    self.cursor = Position { segment: self.segments[pos + 1].id, offset: HEADER, index: 0 };
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn ack(&mut self, id: RecordId) -> io::Result<()> {
        let head = self.head;
        if (id.segment, id.offset) < (head.segment, head.offset) {
            return Ok(());
        }
        // Records acknowledged by this call: from head through id.
        let mut acked = 0u64;
        for s in &self.segments {
            if s.id < head.segment || s.id > id.segment {
                continue;
            }
            let from = if s.id == head.segment { head.index } else { 0 };
            let to = if s.id == id.segment { id.index + 1 } else { s.records };
            acked += to.saturating_sub(from);
        }
        let mut new_head = Position { segment: id.segment, offset: id.end, index: id.index + 1 };
        let active = self.segments.back().map_or(0, |s| s.id);
        if let Some(s) = self.segments.iter().find(|s| s.id == id.segment)
            && new_head.offset >= s.len
            && s.id != active
        {
            let next = self.segments.iter().find(|n| n.id > s.id).map_or(s.id + 1, |n| n.id);
            new_head = Position { segment: next, offset: HEADER, index: 0 };
        }
        self.head = new_head;
        let deletes = self.segments.front().is_some_and(|s| s.id < new_head.segment);
        if deletes || self.last_persist.elapsed() >= self.opts.ack_persist_interval {
            // Before any segment is deleted, the position must already be past it.
            self.persist()?;
        }
        if (self.cursor.segment, self.cursor.offset) < (new_head.segment, new_head.offset) {
            self.cursor = new_head;
        }
        let mut removed = false;
        while self.segments.front().is_some_and(|s| s.id < new_head.segment) {
            if let Some(s) = self.segments.pop_front() {
                if self.reader.as_ref().is_some_and(|(id, _)| *id == s.id) {
                    self.reader = None;
                }
                std::fs::remove_file(segment_path(&self.dir(), s.id))?;
                self.total_bytes -= s.len;
                removed = true;
            }
        }
        if removed {
            sync_dir(&self.opts.dir)?;
        }
        self.pending = self.pending.saturating_sub(acked);
        self.metrics.records_acked.inc_by(acked);
        self.metrics.pending_records.set(self.pending as i64);
        self.metrics.disk_bytes.set(self.total_bytes as i64);
        Ok(())
    }
}

fn read_frame(file: &File, offset: u64, seg_len: u64) -> io::Result<Vec<u8>> {
    let mut frame = [0u8; FRAME as usize];
    file.read_exact_at(&mut frame, offset)?;
    let len = u32::from_le_bytes([frame[0], frame[1], frame[2], frame[3]]) as u64;
    let crc = u32::from_le_bytes([frame[4], frame[5], frame[6], frame[7]]);
    if offset + FRAME + len > seg_len {
        return Err(invalid(format!("record at offset {offset} claims {len} bytes past the segment's end")));
    }
    let mut bytes = vec![0u8; len as usize];
    file.read_exact_at(&mut bytes, offset + FRAME)?;
    if crc32fast::hash(&bytes) != crc {
        return Err(invalid(format!("CRC mismatch in the record at offset {offset}")));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path, max: u64, seg: u64) -> (DiskQueue, OpenReport, QueueMetrics) {
        let m = QueueMetrics::default();
        let (q, r) = DiskQueue::open(
            QueueOptions {
                dir: dir.to_path_buf(),
                max_bytes: max,
                segment_bytes: seg,
                ack_persist_interval: std::time::Duration::ZERO,
            },
            m.clone(),
        )
        .unwrap();
        (q, r, m)
    }

    fn drain(q: &DiskQueue) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(r) = q.next().unwrap() {
            out.push(r.bytes);
        }
        out
    }

    #[test]
    fn delivers_in_order_and_forgets_only_acked_records() {
        let d = tempfile::tempdir().unwrap();
        {
            let (q, _, _) = open(d.path(), 1 << 20, 64 << 10);
            for i in 0..10u32 {
                q.push(format!("record {i}").as_bytes()).unwrap();
            }
            let first = q.next().unwrap().unwrap();
            let second = q.next().unwrap().unwrap();
            assert_eq!(first.bytes, b"record 0");
            assert_eq!(second.bytes, b"record 1");
            q.ack(first.id).unwrap();
            assert_eq!(q.pending(), 9);
            // Record 1 was handed out but not acked: after a restart it comes again.
        }
        let (q, report, _) = open(d.path(), 1 << 20, 64 << 10);
        assert_eq!(report.pending_records, 9);
        let got = drain(&q);
        assert_eq!(got.len(), 9);
        assert_eq!(got[0], b"record 1");
        assert_eq!(got[8], b"record 9");
    }

    #[test]
    fn acking_a_later_record_acks_everything_before_it_across_segments() {
        let d = tempfile::tempdir().unwrap();
        let (q, _, m) = open(d.path(), 1 << 20, 100);
        for i in 0..20u32 {
            q.push(&[i as u8; 40]).unwrap();
        }
        let segments_before = std::fs::read_dir(d.path()).unwrap().count();
        let mut last = None;
        for _ in 0..15 {
            last = Some(q.next().unwrap().unwrap());
        }
        q.ack(last.unwrap().id).unwrap();
        assert_eq!(q.pending(), 5);
        assert_eq!(m.records_acked.get(), 15);
        assert!(std::fs::read_dir(d.path()).unwrap().count() < segments_before, "acked segments are deleted");
        drop(q);
        let (q, _, _) = open(d.path(), 1 << 20, 100);
        let got = drain(&q);
        assert_eq!(got, (15..20u8).map(|i| vec![i; 40]).collect::<Vec<_>>());
    }

    #[test]
    fn torn_tail_is_cut_and_counted_and_the_queue_opens() {
        let d = tempfile::tempdir().unwrap();
        {
            let (q, _, _) = open(d.path(), 1 << 20, 64 << 10);
            q.push(b"one").unwrap();
            q.push(b"two").unwrap();
        }
        // A half-written third record, as a kill -9 mid-write leaves it.
        let seg = std::fs::read_dir(d.path())
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "seg"))
            .min()
            .unwrap();
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(&[200, 0, 0, 0, 1, 2, 3, 4, b'x', b'y']).unwrap();
        drop(f);
        let (q, report, m) = open(d.path(), 1 << 20, 64 << 10);
        assert_eq!(report.corruptions, 1);
        assert_eq!(report.truncated_bytes, 10);
        assert_eq!(m.truncated_bytes.get(), 10);
        assert_eq!(drain(&q), vec![b"one".to_vec(), b"two".to_vec()]);
        // And it keeps working after the repair.
        q.push(b"three").unwrap();
        assert_eq!(drain(&q), vec![b"three".to_vec()]);
    }

    #[test]
    fn a_corrupt_record_ends_its_segment() {
        let d = tempfile::tempdir().unwrap();
        {
            let (q, _, _) = open(d.path(), 1 << 20, 64 << 10);
            q.push(b"good").unwrap();
            q.push(b"flipped").unwrap();
        }
        let seg = segment_path(d.path(), 1);
        let mut bytes = std::fs::read(&seg).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&seg, bytes).unwrap();
        let (q, report, _) = open(d.path(), 1 << 20, 64 << 10);
        assert_eq!(report.corruptions, 1);
        assert_eq!(drain(&q), vec![b"good".to_vec()]);
    }

    #[test]
    fn damaged_position_file_resends_rather_than_loses() {
        let d = tempfile::tempdir().unwrap();
        {
            let (q, _, _) = open(d.path(), 1 << 20, 64 << 10);
            q.push(b"a").unwrap();
            q.push(b"b").unwrap();
            let r = q.next().unwrap().unwrap();
            q.ack(r.id).unwrap();
        }
        std::fs::write(d.path().join(POSITION_FILE), b"garbage").unwrap();
        let (q, report, _) = open(d.path(), 1 << 20, 64 << 10);
        assert_eq!(report.corruptions, 1);
        assert_eq!(drain(&q), vec![b"a".to_vec(), b"b".to_vec()]);
    }

    #[test]
    fn the_bound_drops_the_oldest_records_and_counts_them() {
        let d = tempfile::tempdir().unwrap();
        let max = 4096;
        let (q, _, m) = open(d.path(), max, 1024);
        for i in 0..100u32 {
            let mut rec = i.to_le_bytes().to_vec();
            rec.resize(100, 0);
            q.push(&rec).unwrap();
            assert!(q.disk_bytes() <= max, "disk use {} over the bound {max}", q.disk_bytes());
        }
        let dropped = m.records_dropped.get();
        assert!(dropped > 0);
        let got = drain(&q);
        assert_eq!(got.len() as u64 + dropped, 100, "every record is either kept or counted as dropped");
        // What is kept is the newest, still in order.
        let ids: Vec<u32> = got.iter().map(|r| u32::from_le_bytes(r[..4].try_into().unwrap())).collect();
        assert_eq!(ids, (dropped as u32..100).collect::<Vec<_>>());
        let on_disk: u64 = std::fs::read_dir(d.path())
            .unwrap()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "seg"))
            .map(|e| e.metadata().unwrap().len())
            .sum();
        assert!(on_disk <= max);
    }

    #[test]
    fn a_record_larger_than_the_bound_is_refused_and_counted() {
        let d = tempfile::tempdir().unwrap();
        let (q, _, m) = open(d.path(), 1024, 256);
        assert!(matches!(q.push(&[0; 2000]), Err(QueueError::TooLarge { .. })));
        assert_eq!(m.records_dropped.get(), 1);
        q.push(b"small").unwrap();
        assert_eq!(drain(&q), vec![b"small".to_vec()]);
    }

    #[test]
    fn handed_out_records_dropped_at_the_bound_can_still_be_acked() {
        let d = tempfile::tempdir().unwrap();
        let (q, _, _) = open(d.path(), 1024, 256);
        q.push(&[1; 100]).unwrap();
        let r = q.next().unwrap().unwrap();
        for _ in 0..20 {
            q.push(&[2; 100]).unwrap();
        }
        q.ack(r.id).unwrap();
        let got = drain(&q);
        assert!(got.iter().all(|r| r == &vec![2u8; 100]));
        assert!(!got.is_empty());
    }

    #[test]
    fn a_second_open_of_the_same_directory_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let (_q, _, _) = open(d.path(), 1 << 20, 1 << 16);
        let err = DiskQueue::open(
            QueueOptions { dir: d.path().to_path_buf(), ..QueueOptions::default() },
            QueueMetrics::default(),
        )
        .err()
        .unwrap();
        assert!(err.to_string().contains("in use"), "{err}");
    }

    #[test]
    fn lazy_ack_persistence_resends_after_a_crash_and_persists_on_close() {
        let d = tempfile::tempdir().unwrap();
        let opts = || QueueOptions {
            dir: d.path().to_path_buf(),
            ack_persist_interval: std::time::Duration::from_secs(3600),
            ..QueueOptions::default()
        };
        {
            let (q, _) = DiskQueue::open(opts(), QueueMetrics::default()).unwrap();
            q.push(b"a").unwrap();
            q.push(b"b").unwrap();
            let r = q.next().unwrap().unwrap();
            q.ack(r.id).unwrap();
            assert_eq!(q.pending(), 1);
            // A crash: no drop, so the ack was never persisted.
            std::mem::forget(q);
        }
        // The forgotten queue still holds the lock file open; a new process would not. Remove
        // the lock so this process can reopen.
        let (q, report) = DiskQueue::open(opts(), QueueMetrics::default())
            .or_else(|_| {
                std::fs::remove_file(d.path().join("LOCK")).unwrap();
                DiskQueue::open(opts(), QueueMetrics::default())
            })
            .unwrap();
        assert_eq!(report.pending_records, 2, "the unpersisted ack is redone: a duplicate, not a loss");
        let r = q.next().unwrap().unwrap();
        q.ack(r.id).unwrap();
        drop(q);
        let (q, report) = DiskQueue::open(opts(), QueueMetrics::default()).unwrap();
        assert_eq!(report.pending_records, 1, "closing persisted the ack");
        assert_eq!(drain(&q), vec![b"b".to_vec()]);
    }

    #[tokio::test]
    async fn next_wait_wakes_on_push() {
        let d = tempfile::tempdir().unwrap();
        let (q, _, _) = open(d.path(), 1 << 20, 1 << 16);
        let q = std::sync::Arc::new(q);
        let waiter = {
            let q = q.clone();
            tokio::spawn(async move { q.next_wait().await.unwrap().bytes })
        };
        tokio::task::yield_now().await;
        q.push(b"wake").unwrap();
        assert_eq!(waiter.await.unwrap(), b"wake");
    }
}
