//! Parts: immutable files of blocks, one tenant and one UTC day each.
//!
//! Layout: `OSPPART1 | block... | meta (zstd) | footer`. The footer (last 32 bytes) is
//! `meta_offset: u64 | meta_len: u64 | meta_crc32: u32 | version: u32 | OSPPEND1`. The meta holds
//! the tenant, the day, the streams' canonical labels, and per block its stream, time range,
//! entry count, raw size, file offset, compressed length, CRC32 and filters. Blocks of one stream
//! are contiguous and time-ordered, so a stream's data is one sequential read.
//!
//! A part is written to `<id>.part.tmp`, fsynced, renamed to `<id>.part` and the directory
//! fsynced; it becomes live only when the manifest names it (see `manifest.rs`). Readers keep the
//! meta in memory (filters included: ~0.5 % of the raw bytes) and read blocks with `pread`.

use super::block::{BlockEncoder, BlockError, DecodedBlock, SearchPlan};
use super::filter::{BlockFilter, FilterBuilder};
use super::varint::{Reader, put_bytes, put_str, put_varint};
use crate::wal::sync_dir;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"OSPPART1";
const END_MAGIC: &[u8; 8] = b"OSPPEND1";
const FOOTER: usize = 32;
/// 2: lines `\n`-terminated when none contains a newline. 3: blocks may also be skeleton
/// blocks (numbers in their own columns, see `block.rs`); the meta is unchanged. Version 2
/// parts are still read (their blocks are single zstd frames, which version 3 also writes).
const VERSION: u32 = 3;
const READABLE: [u32; 2] = [2, 3];

pub const NS_PER_DAY: i64 = 86_400 * 1_000_000_000;

/// The UTC day (days since the epoch) of a timestamp.
pub fn day_of(ts_ns: i64) -> i64 {
    ts_ns.div_euclid(NS_PER_DAY)
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockMeta {
    pub stream: u32,
    pub min_ts: i64,
    pub max_ts: i64,
    pub entries: u32,
    /// Uncompressed bytes of the block (all columns).
    pub raw_bytes: u32,
    /// Bytes of line text in the block.
    pub line_bytes: u32,
    pub offset: u64,
    pub len: u32,
    pub crc: u32,
    pub filter: BlockFilter,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PartMeta {
    pub tenant: String,
    pub day: i64,
    pub min_ts: i64,
    pub max_ts: i64,
    /// Canonical label text of each stream, sorted.
    pub streams: Vec<String>,
    /// Sorted by (stream, min_ts).
    pub blocks: Vec<BlockMeta>,
}

impl PartMeta {
    pub fn entries(&self) -> u64 {
        self.blocks.iter().map(|b| u64::from(b.entries)).sum()
    }

    pub fn line_bytes(&self) -> u64 {
        self.blocks.iter().map(|b| u64::from(b.line_bytes)).sum()
    }

    pub fn filter_bytes(&self) -> u64 {
        self.blocks.iter().map(|b| b.filter.size_bytes() as u64).sum()
    }

    fn encode(&self) -> Vec<u8> {
        let mut b = Vec::new();
        put_str(&mut b, &self.tenant);
        b.extend_from_slice(&self.day.to_le_bytes());
        b.extend_from_slice(&self.min_ts.to_le_bytes());
        b.extend_from_slice(&self.max_ts.to_le_bytes());
        put_varint(&mut b, self.streams.len() as u64);
        for s in &self.streams {
            put_str(&mut b, s);
        }
        put_varint(&mut b, self.blocks.len() as u64);
        for m in &self.blocks {
            put_varint(&mut b, u64::from(m.stream));
            b.extend_from_slice(&m.min_ts.to_le_bytes());
            b.extend_from_slice(&m.max_ts.to_le_bytes());
            put_varint(&mut b, u64::from(m.entries));
            put_varint(&mut b, u64::from(m.raw_bytes));
            put_varint(&mut b, u64::from(m.line_bytes));
            put_varint(&mut b, m.offset);
            put_varint(&mut b, u64::from(m.len));
            b.extend_from_slice(&m.crc.to_le_bytes());
            put_words(&mut b, &m.filter.bloom);
            put_words(&mut b, &m.filter.sig);
        }
        b
    }
}

fn put_words(b: &mut Vec<u8>, words: &[u64]) {
    let mut bytes = Vec::with_capacity(words.len() * 8);
    for w in words {
        bytes.extend_from_slice(&w.to_le_bytes());
    }
    put_bytes(b, &bytes);
}

fn read_words(r: &mut Reader<'_>) -> Result<Vec<u64>, &'static str> {
    let bytes = r.bytes().map_err(|_| "truncated filter")?;
    if bytes.len() % 8 != 0 {
        return Err("filter length is not a whole number of words");
    }
    Ok(bytes
        .chunks_exact(8)
        .map(|c| {
            let mut a = [0u8; 8];
            a.copy_from_slice(c);
            u64::from_le_bytes(a)
        })
        .collect())
}

/// Why a part could not be opened or read.
#[derive(Debug, thiserror::Error)]
pub enum PartError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: not a valid part file: {problem}")]
    Corrupt { path: PathBuf, problem: String },
    #[error("{path}: block at offset {offset}: {source}")]
    Block { path: PathBuf, offset: u64, source: BlockError },
}

/// Writes one part: call [`PartWriter::stream`] for each stream in label order, then
/// [`PartWriter::push`] its entries in time order, then [`PartWriter::finish`].
pub struct PartWriter {
    file: BufWriter<File>,
    tmp: PathBuf,
    path: PathBuf,
    offset: u64,
    meta: PartMeta,
    enc: BlockEncoder,
    filter: FilterBuilder,
    raw: Vec<u8>,
    out: Vec<u8>,
    level: i32,
    block_bytes: usize,
    /// Uncompressed size of the pending block, for the meta.
    pending_raw: usize,
}

pub fn part_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:016}.part"))
}

impl PartWriter {
    pub fn create(dir: &Path, id: u64, tenant: &str, day: i64, level: i32, block_bytes: usize) -> io::Result<Self> {
        let path = part_path(dir, id);
        let tmp = path.with_extension("part.tmp");
        let file = OpenOptions::new().create(true).truncate(true).write(true).open(&tmp)?;
        let mut file = BufWriter::with_capacity(1 << 20, file);
        file.write_all(MAGIC)?;
        Ok(PartWriter {
            file,
            tmp,
            path,
            offset: MAGIC.len() as u64,
            meta: PartMeta {
                tenant: tenant.to_string(),
                day,
                min_ts: i64::MAX,
                max_ts: i64::MIN,
                ..Default::default()
            },
            enc: BlockEncoder::default(),
            filter: FilterBuilder::default(),
            raw: Vec::new(),
            out: Vec::new(),
            level,
            block_bytes,
            pending_raw: 0,
        })
    }

    /// Starts the next stream (canonical labels, in sorted order).
    pub fn stream(&mut self, labels: &str) -> io::Result<()> {
        self.cut()?;
        self.meta.streams.push(labels.to_string());
        Ok(())
    }

    /// Adds an entry to the current stream; entries of a stream come in time order.
    pub fn push(&mut self, ts: i64, line: &str, metadata: &[(&str, &str)]) -> io::Result<()> {
        if self.enc.line_bytes() + line.len() > self.block_bytes && !self.enc.is_empty() {
            self.cut()?;
        }
        self.filter.add_line(line.as_bytes());
        for (k, v) in metadata {
            self.filter.add_line(k.as_bytes());
            self.filter.add_line(v.as_bytes());
        }
        self.pending_raw += line.len() + 12;
        self.enc.push(ts, line, metadata);
        Ok(())
    }

    fn cut(&mut self) -> io::Result<()> {
        if self.enc.is_empty() {
            return Ok(());
        }
        let stream = self.meta.streams.len().saturating_sub(1) as u32;
        let (min_ts, max_ts, entries, line_bytes) =
            (self.enc.min_ts(), self.enc.max_ts(), self.enc.len() as u32, self.enc.line_bytes() as u32);
        let raw_bytes = self.enc.finish(self.level, &mut self.raw, &mut self.out)?;
        self.file.write_all(&self.out)?;
        self.meta.min_ts = self.meta.min_ts.min(min_ts);
        self.meta.max_ts = self.meta.max_ts.max(max_ts);
        self.meta.blocks.push(BlockMeta {
            stream,
            min_ts,
            max_ts,
            entries,
            raw_bytes: raw_bytes as u32,
            line_bytes,
            offset: self.offset,
            len: self.out.len() as u32,
            crc: crc32fast::hash(&self.out),
            filter: self.filter.finish(),
        });
        self.offset += self.out.len() as u64;
        self.pending_raw = 0;
        Ok(())
    }

    pub fn entries(&self) -> u64 {
        self.meta.entries() + self.enc.len() as u64
    }

    /// Writes the meta and footer, fsyncs, renames into place and fsyncs the directory.
    /// Returns the part's meta and its size in bytes.
    pub fn finish(mut self) -> io::Result<(PartMeta, u64)> {
        self.cut()?;
        let meta = self.meta.encode();
        let compressed = zstd::encode_all(meta.as_slice(), 3)?;
        self.file.write_all(&compressed)?;
        let mut footer = Vec::with_capacity(FOOTER);
        footer.extend_from_slice(&self.offset.to_le_bytes());
        footer.extend_from_slice(&(compressed.len() as u64).to_le_bytes());
        footer.extend_from_slice(&crc32fast::hash(&compressed).to_le_bytes());
        footer.extend_from_slice(&VERSION.to_le_bytes());
        footer.extend_from_slice(END_MAGIC);
        self.file.write_all(&footer)?;
        let file = self.file.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        let size = self.offset + compressed.len() as u64 + FOOTER as u64;
        std::fs::rename(&self.tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            sync_dir(dir)?;
        }
        Ok((self.meta, size))
    }

    /// Gives up on the part, removing its temporary file.
    pub fn abandon(self) {
        let _ = std::fs::remove_file(&self.tmp);
    }
}

/// An open, immutable part.
pub struct Part {
    pub id: u64,
    pub path: PathBuf,
    pub meta: PartMeta,
    pub file_bytes: u64,
    file: File,
}

impl std::fmt::Debug for Part {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Part").field("id", &self.id).field("path", &self.path).finish()
    }
}

impl Part {
    pub fn open(dir: &Path, id: u64) -> Result<Part, PartError> {
        let path = part_path(dir, id);
        let io_err = |source| PartError::Io { path: path.clone(), source };
        let corrupt = |problem: &str| PartError::Corrupt { path: path.clone(), problem: problem.to_string() };
        let file = File::open(&path).map_err(io_err)?;
        let file_bytes = file.metadata().map_err(io_err)?.len();
        if file_bytes < (MAGIC.len() + FOOTER) as u64 {
            return Err(corrupt("shorter than a header and a footer"));
        }
        let mut footer = [0u8; FOOTER];
        file.read_exact_at(&mut footer, file_bytes - FOOTER as u64).map_err(io_err)?;
        if &footer[24..32] != END_MAGIC {
            return Err(corrupt("footer magic missing (torn write?)"));
        }
        let mut r = Reader::new(&footer);
        let meta_off = r.u64_le().map_err(|_| corrupt("footer"))?;
        let meta_len = r.u64_le().map_err(|_| corrupt("footer"))?;
        let crc = u32::from_le_bytes([footer[16], footer[17], footer[18], footer[19]]);
        let version = u32::from_le_bytes([footer[20], footer[21], footer[22], footer[23]]);
        if !READABLE.contains(&version) {
            return Err(corrupt(&format!("format version {version}, this build reads versions 2 and 3")));
        }
        if meta_off.checked_add(meta_len) != Some(file_bytes - FOOTER as u64) {
            return Err(corrupt("meta offsets do not match the file size"));
        }
        let mut compressed = vec![0u8; meta_len as usize];
        file.read_exact_at(&mut compressed, meta_off).map_err(io_err)?;
        if crc32fast::hash(&compressed) != crc {
            return Err(corrupt("meta CRC mismatch"));
        }
        let raw = zstd::decode_all(compressed.as_slice()).map_err(|e| corrupt(&format!("meta: {e}")))?;
        let meta = decode_meta(&raw).map_err(corrupt)?;
        for b in &meta.blocks {
            if b.offset.saturating_add(u64::from(b.len)) > meta_off {
                return Err(corrupt("a block lies past the data section"));
            }
        }
        Ok(Part { id, path, meta, file_bytes, file })
    }

    /// Reads block `i` into `buf` and checks its CRC.
    fn read_raw(&self, i: usize, buf: &mut Vec<u8>) -> Result<(), PartError> {
        let b = &self.meta.blocks[i];
        buf.resize(b.len as usize, 0);
        self.file.read_exact_at(buf, b.offset).map_err(|source| PartError::Io { path: self.path.clone(), source })?;
        if crc32fast::hash(buf) != b.crc {
            return Err(PartError::Corrupt {
                path: self.path.clone(),
                problem: format!("block at offset {} fails its CRC", b.offset),
            });
        }
        Ok(())
    }

    fn block_error(&self, i: usize) -> impl FnOnce(BlockError) -> PartError + '_ {
        move |source| PartError::Block { path: self.path.clone(), offset: self.meta.blocks[i].offset, source }
    }

    /// Reads, checks and decompresses block `i`.
    pub fn read_block(&self, i: usize, buf: &mut Vec<u8>) -> Result<DecodedBlock, PartError> {
        self.read_raw(i, buf)?;
        DecodedBlock::decode(buf, self.meta.blocks[i].raw_bytes as usize).map_err(self.block_error(i))
    }

    /// The timestamps of block `i` (decompressing only its header where the layout allows).
    pub fn read_timestamps(&self, i: usize, buf: &mut Vec<u8>) -> Result<Vec<i64>, PartError> {
        self.read_raw(i, buf)?;
        DecodedBlock::decode_timestamps(buf, self.meta.blocks[i].raw_bytes as usize).map_err(self.block_error(i))
    }

    /// Reads block `i` for a scan: see [`DecodedBlock::decode_matching`].
    pub fn read_matching(
        &self,
        i: usize,
        buf: &mut Vec<u8>,
        start_ns: i64,
        end_ns: i64,
        plan: &SearchPlan<'_>,
    ) -> Result<(DecodedBlock, Vec<u32>), PartError> {
        self.read_raw(i, buf)?;
        DecodedBlock::decode_matching(buf, self.meta.blocks[i].raw_bytes as usize, start_ns, end_ns, plan)
            .map_err(self.block_error(i))
    }
}

/// Decodes the meta written by `PartMeta::encode`.
fn decode_meta(bytes: &[u8]) -> Result<PartMeta, &'static str> {
    let mut r = Reader::new(bytes);
    let e = |_| "truncated part meta";
    let tenant = r.str().map_err(e)?.to_string();
    let day = r.i64_le().map_err(e)?;
    let min_ts = r.i64_le().map_err(e)?;
    let max_ts = r.i64_le().map_err(e)?;
    let n = r.count(1).map_err(e)?;
    let mut streams = Vec::with_capacity(n);
    for _ in 0..n {
        streams.push(r.str().map_err(e)?.to_string());
    }
    let n = r.count(20).map_err(e)?;
    let mut blocks = Vec::with_capacity(n);
    for _ in 0..n {
        let stream = r.varint().map_err(e)? as u32;
        if stream as usize >= streams.len() {
            return Err("block refers to a stream the part does not have");
        }
        let min_ts = r.i64_le().map_err(e)?;
        let max_ts = r.i64_le().map_err(e)?;
        let entries = r.varint().map_err(e)? as u32;
        let raw_bytes = r.varint().map_err(e)? as u32;
        let line_bytes = r.varint().map_err(e)? as u32;
        let offset = r.varint().map_err(e)?;
        let len = r.varint().map_err(e)? as u32;
        let mut crc = [0u8; 4];
        for c in &mut crc {
            *c = r.byte().map_err(e)?;
        }
        let bloom = read_words(&mut r)?;
        let sig = read_words(&mut r)?;
        if !sig.is_empty() && !(sig.len() * 64).is_power_of_two() {
            return Err("signature size is not a power of two");
        }
        blocks.push(BlockMeta {
            stream,
            min_ts,
            max_ts,
            entries,
            raw_bytes,
            line_bytes,
            offset,
            len,
            crc: u32::from_le_bytes(crc),
            filter: BlockFilter { bloom, sig },
        });
    }
    if r.remaining() != 0 {
        return Err("trailing bytes after the part meta");
    }
    Ok(PartMeta { tenant, day, min_ts, max_ts, streams, blocks })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_open_read() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = PartWriter::create(dir.path(), 7, "t1", 19_000, 3, 4096).unwrap();
        w.stream(r#"{job="a"}"#).unwrap();
        for i in 0..1000 {
            w.push(i, &format!("line number {i} of stream a"), &[]).unwrap();
        }
        w.stream(r#"{job="b"}"#).unwrap();
        w.push(5, "only line", &[("trace_id", "x1")]).unwrap();
        let (meta, size) = w.finish().unwrap();
        assert!(meta.blocks.len() > 2, "cut into blocks of 4 KiB");
        let part = Part::open(dir.path(), 7).unwrap();
        assert_eq!(part.file_bytes, size);
        assert_eq!(part.meta, meta);
        let mut buf = Vec::new();
        let mut n = 0;
        for (i, b) in part.meta.blocks.iter().enumerate() {
            let d = part.read_block(i, &mut buf).unwrap();
            assert_eq!(d.len() as u32, b.entries);
            n += d.len();
        }
        assert_eq!(n, 1001);
        let last = part.read_block(part.meta.blocks.len() - 1, &mut buf).unwrap();
        assert_eq!(last.entry(0).metadata, vec![("trace_id", "x1")]);
    }

    #[test]
    fn corruption_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = PartWriter::create(dir.path(), 1, "t", 0, 3, 4096).unwrap();
        w.stream(r#"{a="b"}"#).unwrap();
        w.push(1, "hello", &[]).unwrap();
        w.finish().unwrap();
        let path = part_path(dir.path(), 1);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[10] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let part = Part::open(dir.path(), 1).unwrap();
        let err = part.read_block(0, &mut Vec::new()).unwrap_err().to_string();
        assert!(err.contains("fails its CRC"), "{err}");
        bytes.truncate(bytes.len() - 3);
        std::fs::write(&path, &bytes).unwrap();
        let err = Part::open(dir.path(), 1).unwrap_err().to_string();
        assert!(err.contains("footer magic"), "{err}");
    }

    /// A part written by format version 2 (before skeleton blocks) reads back unchanged.
    /// `testdata/logstore/v2.part` (1.3 KB) was written by the format-2 `PartWriter` with small
    /// blocks: three blocks of stream a in layout 0 and one of stream b in layout 1 (with
    /// metadata and a multi-line entry), each a single zstd frame; keep it byte for byte.
    #[test]
    fn reads_format_version_2() {
        let dir = tempfile::tempdir().unwrap();
        let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/logstore/v2.part");
        std::fs::copy(fixture, part_path(dir.path(), 1)).unwrap();
        let part = Part::open(dir.path(), 1).unwrap();
        assert_eq!(part.meta.streams, vec![r#"{job="a"}"#.to_string(), r#"{job="b"}"#.to_string()]);
        let mut got = Vec::new();
        let mut buf = Vec::new();
        for i in 0..part.meta.blocks.len() {
            let d = part.read_block(i, &mut buf).unwrap();
            assert_eq!(part.read_timestamps(i, &mut buf).unwrap(), d.timestamps());
            for j in 0..d.len() {
                let e = d.entry(j);
                let meta: Vec<String> = e.metadata.iter().map(|(k, v)| format!("{k}={v}")).collect();
                got.push((part.meta.blocks[i].stream, e.ts_ns, e.line.to_string(), meta));
            }
        }
        let mut want: Vec<(u32, i64, String, Vec<String>)> =
            (0..300).map(|i| (0, 1_000 + i, format!("line {i} of stream a id 1234567890{i} ok"), vec![])).collect();
        want.push((1, 5, "only line".into(), vec!["trace_id=x1".into()]));
        want.push((1, 6, "multi\nline 42".into(), vec![]));
        assert_eq!(got, want);
        // And its blocks answer scans like new ones.
        let hints = vec![b"567890123".to_vec()];
        let plan = SearchPlan::new(&hints);
        let mut found = Vec::new();
        for i in 0..part.meta.blocks.len() {
            let (d, lines) = part.read_matching(i, &mut buf, i64::MIN, i64::MAX, &plan).unwrap();
            found.extend(lines.iter().map(|&j| d.line(j as usize).to_string()));
        }
        let want: Vec<String> = want.into_iter().map(|w| w.2).filter(|l| l.contains("567890123")).collect();
        assert_eq!(found, want);
        assert_eq!(found.len(), 1);
    }
}
