//! Where each file was read up to, on disk, moved only by acknowledgements.
//!
//! One store file, `<data_dir>/tail/checkpoints`, holds a record per followed file: its path,
//! dev and inode, head digest, and the offset and mark of the end of the last line the receiver
//! acknowledged. It is replaced atomically (write `checkpoints.tmp`, fsync, rename, fsync the
//! directory) and framed as `magic, version, length, CRC-32, JSON body`, so a torn or corrupted
//! file is detected: it is then renamed aside (`checkpoints.corrupt-<unix time>`), logged,
//! counted, and the agent starts as on a first start instead of refusing to.
//!
//! A single thread owns the records. The tailer tells it about files (`Track`, `Head`,
//! `Release`); sinks finish batch receipts, which send `Acked` with the positions the batch
//! covered. Receipts finish in batch order, so an offset only ever moves past lines that are
//! stored by the receiver. The store is written at most once per `checkpoint_interval`
//! (`pipeline.checkpoint_interval`, 25 ms by default): at full speed that is one fsynced write
//! for a few dozen acknowledged batches instead of one each, which was ~6 % of the agent's CPU.

use super::identity::Digest;
use crate::telemetry::TailTelemetry;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const MAGIC: &[u8; 8] = b"OSPRYCKP";
const VERSION: u32 = 1;
const FILE: &str = "checkpoints";
const TMP: &str = "checkpoints.tmp";
/// A store larger than this is not read (a corrupt length field must not allocate gigabytes).
const MAX_STORE_BYTES: usize = 256 << 20;

/// What is saved about one file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The tailer's id for this file (increasing; a truncated file gets a new id).
    pub id: u64,
    /// Text, or a list of bytes for a name that is not UTF-8 (globs match those too, and JSON
    /// strings cannot hold them).
    #[serde(with = "path_json")]
    pub path: PathBuf,
    pub dev: u64,
    pub ino: u64,
    pub head: Digest,
    /// End of the last acknowledged line.
    pub offset: u64,
    /// Digest of the bytes before `offset`.
    pub mark: Digest,
}

/// A path in the store's JSON: a string when it is UTF-8 (every store so far), otherwise its
/// bytes. serde's own `PathBuf` support refuses non-UTF-8 paths, which made the whole store
/// unwritable (and then unreadable) because of one file name.
mod path_json {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::ffi::OsString;
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    use std::path::{Path, PathBuf};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Repr {
        Text(String),
        Bytes(Vec<u8>),
    }

    pub fn serialize<S: Serializer>(path: &Path, s: S) -> Result<S::Ok, S::Error> {
        match path.to_str() {
            Some(text) => s.serialize_str(text),
            None => s.collect_seq(path.as_os_str().as_bytes()),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
        Ok(match Repr::deserialize(d)? {
            Repr::Text(text) => PathBuf::from(text),
            Repr::Bytes(bytes) => PathBuf::from(OsString::from_vec(bytes)),
        })
    }
}

#[derive(Serialize, Deserialize)]
struct Body {
    next_id: u64,
    records: Vec<Record>,
}

/// A position a batch covered: the file's lines up to `offset` are in this or earlier batches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    pub id: u64,
    pub offset: u64,
    pub mark: Digest,
}

pub enum Msg {
    /// A file is followed from `record.offset` (new, re-based after a truncation, or resumed).
    Track(Record),
    /// The file's head digest grew (it was shorter than `HEAD_BYTES`).
    Head { id: u64, head: Digest },
    /// The file was renamed or is seen under another path.
    Path { id: u64, path: PathBuf },
    /// A batch holding these positions was delivered (or refused for good).
    Acked { positions: Vec<Position>, created: Instant },
    /// The file is no longer followed; forget it once its lines up to `end` are acknowledged.
    Release { id: u64, end: u64 },
}

/// The store as loaded at start.
pub struct Loaded {
    pub records: Vec<Record>,
    pub next_id: u64,
    /// A valid store existed (this is not a first start).
    pub existed: bool,
}

/// Reads the store in `dir`. A missing store is a first start; a corrupt one is set aside.
pub fn load(dir: &Path, telemetry: &TailTelemetry) -> Loaded {
    let path = dir.join(FILE);
    let _ = std::fs::remove_file(dir.join(TMP));
    let first = Loaded { records: vec![], next_id: 1, existed: false };
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return first,
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "cannot read the tail checkpoints; starting as on a first start");
            telemetry.checkpoint_corruptions.inc();
            return first;
        }
    };
    match decode(&bytes) {
        Ok(body) => Loaded { records: body.records, next_id: body.next_id.max(1), existed: true },
        Err(problem) => {
            let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
            let aside = dir.join(format!("checkpoints.corrupt-{secs}"));
            let moved = std::fs::rename(&path, &aside);
            telemetry.checkpoint_corruptions.inc();
            tracing::error!(
                path = %path.display(),
                problem,
                set_aside = %aside.display(),
                moved = moved.is_ok(),
                "the tail checkpoints are corrupt; they were set aside and files are read as on a first start (read_from)"
            );
            first
        }
    }
}

fn decode(bytes: &[u8]) -> Result<Body, String> {
    if bytes.len() < 20 || &bytes[..8] != MAGIC {
        return Err("not an osprey checkpoint file (bad magic or too short)".into());
    }
    let version = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    if version != VERSION {
        return Err(format!("unsupported version {version} (this agent reads {VERSION})"));
    }
    let len = u32::from_le_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]) as usize;
    let crc = u32::from_le_bytes([bytes[16], bytes[17], bytes[18], bytes[19]]);
    let body = &bytes[20..];
    if len > MAX_STORE_BYTES || body.len() != len {
        return Err(format!("length field says {len} bytes, file holds {}", body.len()));
    }
    if crc32fast::hash(body) != crc {
        return Err("checksum mismatch".into());
    }
    serde_json::from_slice(body).map_err(|e| format!("invalid body: {e}"))
}

#[cfg(test)]
fn encode(body: &Body) -> Vec<u8> {
    frame(&serde_json::to_vec(body).unwrap_or_default())
}

/// The framed store: header (magic, version, length, CRC) and the JSON body.
fn frame(json: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(json.len() + 20);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(json.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(json).to_le_bytes());
    out.extend_from_slice(json);
    out
}

/// Replaces the store atomically: tmp file, fsync, rename, fsync of the directory.
#[cfg(test)]
fn save(dir: &Path, body: &Body) -> std::io::Result<()> {
    save_json(dir, &serde_json::to_vec(body).unwrap_or_default())
}

/// [`save`] of an already serialized body.
fn save_json(dir: &Path, json: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(TMP);
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&frame(json))?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, dir.join(FILE))?;
    std::fs::File::open(dir)?.sync_all()
}

/// The thread that owns the records. Returns when every sender is gone, after a last write.
pub struct Checkpointer {
    dir: PathBuf,
    records: BTreeMap<u64, Record>,
    /// id -> offset after which the record is forgotten.
    releasing: BTreeMap<u64, u64>,
    next_id: u64,
    interval: Duration,
    telemetry: TailTelemetry,
    /// Each record's JSON as of the last write, and the records changed since: a write
    /// serializes only those (with 10,000 followed files and 100 active, re-serializing all of
    /// them for every acknowledgement was a fifth of the agent's CPU).
    json: BTreeMap<u64, Vec<u8>>,
    changed: BTreeSet<u64>,
}

impl Checkpointer {
    pub fn new(dir: PathBuf, next_id: u64, interval: Duration, telemetry: TailTelemetry) -> Self {
        Checkpointer {
            dir,
            records: BTreeMap::new(),
            releasing: BTreeMap::new(),
            next_id,
            interval,
            telemetry,
            json: BTreeMap::new(),
            changed: BTreeSet::new(),
        }
    }

    /// Applies one message; returns whether the records changed.
    fn apply(&mut self, msg: Msg) -> bool {
        match msg {
            Msg::Track(mut r) => {
                self.next_id = self.next_id.max(r.id + 1);
                // Already held (a file released by a reload with its checkpoint kept, now
                // matched again): the tailer resumes where it had read, but what is saved stays
                // the acknowledged offset until the batches in flight are acknowledged.
                if let Some(old) = self.records.get(&r.id)
                    && (old.dev, old.ino) == (r.dev, r.ino)
                    && old.offset <= r.offset
                {
                    r.offset = old.offset;
                    r.mark = old.mark;
                }
                self.releasing.remove(&r.id);
                self.changed.insert(r.id);
                self.records.insert(r.id, r);
            }
            Msg::Head { id, head } => {
                if let Some(r) = self.records.get_mut(&id) {
                    r.head = head;
                    self.changed.insert(id);
                }
            }
            Msg::Path { id, path } => {
                if let Some(r) = self.records.get_mut(&id) {
                    r.path = path;
                    self.changed.insert(id);
                }
            }
            Msg::Acked { positions, created } => {
                self.telemetry.ack_seconds.observe(created.elapsed().as_secs_f64());
                for p in positions {
                    if let Some(r) = self.records.get_mut(&p.id) {
                        r.offset = p.offset;
                        r.mark = p.mark;
                        self.changed.insert(p.id);
                    }
                    if self.releasing.get(&p.id).is_some_and(|end| p.offset >= *end) {
                        self.releasing.remove(&p.id);
                        self.records.remove(&p.id);
                        self.json.remove(&p.id);
                    }
                }
            }
            Msg::Release { id, end } => {
                if self.records.get(&id).is_none_or(|r| r.offset >= end) {
                    self.records.remove(&id);
                    self.json.remove(&id);
                } else {
                    self.releasing.insert(id, end);
                }
            }
        }
        true
    }

    /// The store's body: the same JSON as serializing [`Body`], assembled from each record's
    /// cached JSON (serialized again only if it changed).
    fn body_json(&mut self) -> Vec<u8> {
        for id in std::mem::take(&mut self.changed) {
            if let Some(r) = self.records.get(&id) {
                self.json.insert(id, serde_json::to_vec(r).unwrap_or_default());
            }
        }
        let mut out = Vec::with_capacity(self.json.values().map(|j| j.len() + 1).sum::<usize>() + 40);
        out.extend_from_slice(format!("{{\"next_id\":{},\"records\":[", self.next_id).as_bytes());
        for (i, j) in self.json.values().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(j);
        }
        out.extend_from_slice(b"]}");
        out
    }

    fn write(&mut self) {
        let json = self.body_json();
        match save_json(&self.dir, &json) {
            Ok(()) => {
                self.telemetry.checkpoint_writes.inc();
                if let Ok(mut f) = self.telemetry.checkpoint_failing.lock() {
                    *f = None;
                }
            }
            Err(e) => {
                self.telemetry.checkpoint_write_failures.inc();
                if let Ok(mut f) = self.telemetry.checkpoint_failing.lock() {
                    *f = Some(format!("cannot write {}: {e}", self.dir.join(FILE).display()));
                }
                tracing::error!(dir = %self.dir.display(), error = %e, "cannot write the tail checkpoints; will retry on the next acknowledgement");
            }
        };
    }

    pub fn run(mut self, rx: mpsc::Receiver<Msg>) {
        let mut dirty = false;
        let mut last_write = Instant::now().checked_sub(self.interval).unwrap_or_else(Instant::now);
        loop {
            let msg = if dirty {
                let wait = self.interval.saturating_sub(last_write.elapsed());
                match rx.recv_timeout(wait) {
                    Ok(m) => Some(m),
                    Err(mpsc::RecvTimeoutError::Timeout) => None,
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
            } else {
                match rx.recv() {
                    Ok(m) => Some(m),
                    Err(_) => break,
                }
            };
            if let Some(m) = msg {
                dirty |= self.apply(m);
                // Coalesce whatever else is already waiting into the same write.
                while let Ok(m) = rx.try_recv() {
                    dirty |= self.apply(m);
                }
            }
            if dirty && last_write.elapsed() >= self.interval {
                self.write();
                last_write = Instant::now();
                dirty = false;
            }
        }
        while let Ok(m) = rx.try_recv() {
            dirty |= self.apply(m);
        }
        if dirty {
            self.write();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn telemetry() -> TailTelemetry {
        TailTelemetry::new(&mut prometheus_client::registry::Registry::default())
    }

    fn rec(id: u64) -> Record {
        Record {
            id,
            path: PathBuf::from("/var/log/a.log"),
            dev: 1,
            ino: 2,
            head: Digest { len: 10, crc: 3 },
            offset: 0,
            mark: Digest::default(),
        }
    }

    /// A file whose name is not UTF-8 is stored and loaded like any other (its name as bytes),
    /// and does not make the store unwritable; UTF-8 names stay JSON strings.
    #[test]
    fn non_utf8_paths_round_trip() {
        use std::os::unix::ffi::OsStrExt;
        let odd = rec(7);
        let odd = Record { path: PathBuf::from(std::ffi::OsStr::from_bytes(b"/var/log/caf\xe9.log")), ..odd };
        let plain = rec(8);
        let dir = tempfile::tempdir().unwrap();
        let mut cp = Checkpointer::new(dir.path().to_path_buf(), 1, Duration::ZERO, telemetry());
        cp.apply(Msg::Track(odd.clone()));
        cp.apply(Msg::Track(plain.clone()));
        let json = cp.body_json();
        assert!(String::from_utf8_lossy(&json).contains("\"path\":\"/var/log/a.log\""));
        let body: Body = serde_json::from_slice(&json).expect("the store's JSON parses");
        assert_eq!(body.records, vec![odd, plain]);
    }

    /// The body assembled from cached per-record JSON is byte for byte what serializing the
    /// whole store gives, after any sequence of changes.
    #[test]
    fn cached_body_is_the_serialized_store() {
        let dir = tempfile::tempdir().unwrap();
        let mut cp = Checkpointer::new(dir.path().to_path_buf(), 1, Duration::ZERO, telemetry());
        let whole = |cp: &Checkpointer| {
            serde_json::to_vec(&Body { next_id: cp.next_id, records: cp.records.values().cloned().collect() }).unwrap()
        };
        assert_eq!(cp.body_json(), whole(&cp));
        let pos = |id, offset| Position { id, offset, mark: Digest { len: 64, crc: offset as u32 } };
        let steps = vec![
            Msg::Track(rec(1)),
            Msg::Track(rec(2)),
            Msg::Track(rec(3)),
            Msg::Acked { positions: vec![pos(1, 100), pos(3, 7)], created: Instant::now() },
            Msg::Head { id: 2, head: Digest { len: 1024, crc: 77 } },
            Msg::Path { id: 3, path: PathBuf::from("/var/log/\"quoted\".log") },
            Msg::Release { id: 1, end: 0 },
            Msg::Release { id: 2, end: 500 },
            Msg::Acked { positions: vec![pos(2, 500)], created: Instant::now() },
            Msg::Track(rec(9)),
        ];
        for m in steps {
            cp.apply(m);
            assert_eq!(cp.body_json(), whole(&cp));
        }
        assert_eq!(cp.records.keys().copied().collect::<Vec<_>>(), vec![3, 9]);
        let stored: Body = serde_json::from_slice(&cp.body_json()).unwrap();
        assert_eq!(stored.records, cp.records.values().cloned().collect::<Vec<_>>());
    }

    #[test]
    fn acks_move_offsets_and_releases_wait_for_them() {
        let dir = tempfile::tempdir().unwrap();
        let t = telemetry();
        let (tx, rx) = mpsc::channel();
        let cp = Checkpointer::new(dir.path().to_path_buf(), 1, Duration::ZERO, t.clone());
        let h = std::thread::spawn(move || cp.run(rx));
        tx.send(Msg::Track(rec(1))).unwrap();
        tx.send(Msg::Track(rec(2))).unwrap();
        let pos = |id, offset| Position { id, offset, mark: Digest { len: 4, crc: 9 } };
        tx.send(Msg::Acked { positions: vec![pos(1, 100), pos(2, 5)], created: Instant::now() }).unwrap();
        tx.send(Msg::Release { id: 2, end: 50 }).unwrap();
        tx.send(Msg::Acked { positions: vec![pos(1, 200)], created: Instant::now() }).unwrap();
        drop(tx);
        h.join().unwrap();
        let loaded = load(dir.path(), &t);
        assert!(loaded.existed);
        assert_eq!(loaded.records.len(), 2, "id 2 is kept until acked to 50");
        assert_eq!(loaded.records[0].offset, 200);
        assert_eq!(loaded.next_id, 3);

        let (tx, rx) = mpsc::channel();
        let cp = Checkpointer::new(dir.path().to_path_buf(), 3, Duration::ZERO, t.clone());
        let h = std::thread::spawn(move || cp.run(rx));
        tx.send(Msg::Track(loaded.records[1].clone())).unwrap();
        tx.send(Msg::Release { id: 2, end: 50 }).unwrap();
        tx.send(Msg::Acked { positions: vec![pos(2, 50)], created: Instant::now() }).unwrap();
        drop(tx);
        h.join().unwrap();
        assert!(load(dir.path(), &t).records.is_empty());
    }

    #[test]
    fn corrupt_stores_are_set_aside_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let t = telemetry();
        let body = Body { next_id: 7, records: vec![rec(5)] };
        let good = encode(&body);
        for bad in [
            good[..good.len() - 3].to_vec(),
            {
                let mut b = good.clone();
                b[30] ^= 1;
                b
            },
            b"garbage".to_vec(),
            vec![0u8; 4096],
        ] {
            std::fs::write(dir.path().join(FILE), &bad).unwrap();
            let l = load(dir.path(), &t);
            assert!(!l.existed && l.records.is_empty());
            assert!(!dir.path().join(FILE).exists(), "set aside");
        }
        assert_eq!(t.checkpoint_corruptions.get(), 4);
        save(dir.path(), &body).unwrap();
        let l = load(dir.path(), &t);
        assert_eq!((l.existed, l.next_id, l.records), (true, 7, vec![rec(5)]));
    }
}
