//! One block: the time-sorted entries of one stream, columnar, zstd-compressed.
//!
//! Uncompressed header (varints are LEB128): `entries | first_ts: zigzag | ts deltas (>= 0) |
//! layout: u8 | [line lengths, when layout = 1] | metadata: per entry a count, then name/value
//! strings`, followed by the lines in one of three layouts:
//!
//! - `0`, *terminated*: the lines, each followed by `\n` (no line contains `\n`).
//! - `1`, *lengths*: the lines concatenated, their lengths in the header (some line has `\n`).
//! - `2`, *skeleton* (part format 3): every maximal run of ASCII digits of every line is cut
//!   out and replaced by one placeholder byte ([`PH_SHORT`] for runs shorter than [`LONG_RUN`]
//!   digits, [`PH_LONG`] for longer ones); the lines so reduced (the *skeleton*) follow the
//!   header, `\n`-terminated, and the runs go to two separate **number columns**, one line per
//!   line, runs separated by a space. Used when no line contains `\n` or a placeholder byte.
//!
//! On disk, a block of layout 0 or 1 is a single zstd frame (part format 2 wrote only these).
//! A skeleton block is `kind = 1 | raw lengths of header+skeleton, short column and long column
//! | compressed lengths of the first two | three zstd frames`.
//!
//! Why the skeleton: log lines are a few templates whose variable parts are mostly numbers.
//! Without the numbers the skeletons repeat exactly, so zstd encodes a whole line as one match,
//! and the numbers, next to each other, compress better than scattered between words (10M-line
//! benchmark, benches/RESULTS.md: raw ÷ disk 14.4 after merges instead of 11.7 with format 2).
//! It also lets a substring search decompress only what it needs: a literal without
//! digits is looked for in the skeleton, a number of [`LONG_RUN`] digits or more in the long
//! column alone (~5 % of the raw bytes), and only lines that may match are rebuilt (see
//! [`SearchPlan`]).

use super::record::Entry;
use super::varint::{Reader, put_str, put_varint};
use memchr::memmem::Finder;
use std::cell::RefCell;

/// Digit runs of at least this many digits go to the long column. Shorter ones are the
/// times, dates, ports, counters and octets that fill every line; longer ones are ids.
pub const LONG_RUN: usize = 7;
/// Placeholder of a digit run in a skeleton.
pub const PH_SHORT: u8 = 0x01;
pub const PH_LONG: u8 = 0x02;
const KIND_SPLIT: u8 = 0x01;
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];
const LAYOUT_TERMINATED: u8 = 0;
const LAYOUT_LENGTHS: u8 = 1;
const LAYOUT_SKELETON: u8 = 2;
/// No block decompresses to more than this (a corrupt size cannot make us allocate more).
const MAX_RAW: usize = 256 << 20;

/// Builds one block from entries (the head's flush and merges produce these).
pub struct BlockEncoder {
    ts: Vec<i64>,
    lens: Vec<u32>,
    lines: Vec<u8>,
    /// Some line contains `\n`: store a lengths column instead of terminators.
    has_newline: bool,
    /// Some line contains a placeholder byte: no skeleton layout for this block.
    has_placeholder: bool,
    meta: Vec<u8>,
    has_meta: bool,
    meta_counts: Vec<u32>,
    compressor: Option<(i32, zstd::bulk::Compressor<'static>)>,
    short: Vec<u8>,
    long: Vec<u8>,
    frames: [Vec<u8>; 3],
}

impl Default for BlockEncoder {
    fn default() -> Self {
        BlockEncoder {
            ts: Vec::new(),
            lens: Vec::new(),
            lines: Vec::with_capacity(1 << 20),
            has_newline: false,
            has_placeholder: false,
            meta: Vec::new(),
            has_meta: false,
            meta_counts: Vec::new(),
            compressor: None,
            short: Vec::new(),
            long: Vec::new(),
            frames: Default::default(),
        }
    }
}

impl BlockEncoder {
    /// Adds an entry; entries must come in non-decreasing timestamp order.
    pub fn push(&mut self, ts: i64, line: &str, metadata: &[(&str, &str)]) {
        debug_assert!(self.ts.last().is_none_or(|&l| l <= ts));
        self.ts.push(ts);
        self.lens.push(line.len() as u32);
        if memchr::memchr3(b'\n', PH_SHORT, PH_LONG, line.as_bytes()).is_some() {
            for &b in line.as_bytes() {
                self.has_newline |= b == b'\n';
                self.has_placeholder |= b == PH_SHORT || b == PH_LONG;
            }
        }
        self.lines.extend_from_slice(line.as_bytes());
        self.meta_counts.push(metadata.len() as u32);
        for (k, v) in metadata {
            self.has_meta = true;
            put_str(&mut self.meta, k);
            put_str(&mut self.meta, v);
        }
    }

    pub fn len(&self) -> usize {
        self.ts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ts.is_empty()
    }

    pub fn line_bytes(&self) -> usize {
        self.lines.len()
    }

    pub fn min_ts(&self) -> i64 {
        self.ts.first().copied().unwrap_or(0)
    }

    pub fn max_ts(&self) -> i64 {
        self.ts.last().copied().unwrap_or(0)
    }

    /// Serializes and compresses the block into `out` (cleared first), then resets the encoder.
    /// `raw` is scratch space. Returns the uncompressed size of all the block's columns.
    pub fn finish(&mut self, level: i32, raw: &mut Vec<u8>, out: &mut Vec<u8>) -> std::io::Result<usize> {
        raw.clear();
        put_varint(raw, self.ts.len() as u64);
        let mut prev = self.ts.first().copied().unwrap_or(0);
        put_varint(raw, zigzag(prev));
        for &t in self.ts.iter().skip(1) {
            put_varint(raw, t.wrapping_sub(prev) as u64);
            prev = t;
        }
        let layout = if self.has_newline {
            LAYOUT_LENGTHS
        } else if self.has_placeholder {
            LAYOUT_TERMINATED
        } else {
            LAYOUT_SKELETON
        };
        raw.push(layout);
        if layout == LAYOUT_LENGTHS {
            for &l in &self.lens {
                put_varint(raw, u64::from(l));
            }
        }
        raw.push(u8::from(self.has_meta));
        if self.has_meta {
            for &c in &self.meta_counts {
                put_varint(raw, u64::from(c));
            }
            put_varint(raw, self.meta.len() as u64);
            raw.extend_from_slice(&self.meta);
        }
        if self.compressor.as_ref().is_none_or(|(l, _)| *l != level) {
            self.compressor = Some((level, zstd::bulk::Compressor::new(level)?));
        }
        let Some((_, compressor)) = self.compressor.as_mut() else {
            return Err(std::io::Error::other("no zstd compression context"));
        };
        out.clear();
        match layout {
            LAYOUT_LENGTHS => raw.extend_from_slice(&self.lines),
            LAYOUT_TERMINATED => {
                let mut at = 0;
                for &l in &self.lens {
                    raw.extend_from_slice(&self.lines[at..at + l as usize]);
                    raw.push(b'\n');
                    at += l as usize;
                }
            }
            _ => {
                self.short.clear();
                self.long.clear();
                split_numbers(&self.lines, &self.lens, raw, &mut self.short, &mut self.long);
            }
        }
        let raw_total = if layout == LAYOUT_SKELETON {
            for (src, dst) in [&*raw, &self.short, &self.long].into_iter().zip(self.frames.iter_mut()) {
                dst.clear();
                dst.reserve(zstd::zstd_safe::compress_bound(src.len()));
                compressor.compress_to_buffer(src.as_slice(), dst)?;
            }
            out.push(KIND_SPLIT);
            for n in [raw.len(), self.short.len(), self.long.len(), self.frames[0].len(), self.frames[1].len()] {
                put_varint(out, n as u64);
            }
            for f in &self.frames {
                out.extend_from_slice(f);
            }
            raw.len() + self.short.len() + self.long.len()
        } else {
            out.reserve(zstd::zstd_safe::compress_bound(raw.len()));
            compressor.compress_to_buffer(raw.as_slice(), out)?;
            raw.len()
        };
        self.ts.clear();
        self.lens.clear();
        self.lines.clear();
        self.meta.clear();
        self.meta_counts.clear();
        self.has_meta = false;
        self.has_newline = false;
        self.has_placeholder = false;
        Ok(raw_total)
    }
}

/// Appends each line's skeleton (`\n`-terminated) to `skeleton` and its digit runs to the short
/// or long column (space-separated, one `\n`-terminated line per line).
fn split_numbers(lines: &[u8], lens: &[u32], skeleton: &mut Vec<u8>, short: &mut Vec<u8>, long: &mut Vec<u8>) {
    let mut at = 0;
    for &len in lens {
        let line = &lines[at..at + len as usize];
        at += len as usize;
        let (mut short_runs, mut long_runs) = (false, false);
        let n = line.len();
        let mut i = 0;
        while i < n {
            let start = i;
            while i < n && !line[i].is_ascii_digit() {
                i += 1;
            }
            skeleton.extend_from_slice(&line[start..i]);
            if i == n {
                break;
            }
            let start = i;
            while i < n && line[i].is_ascii_digit() {
                i += 1;
            }
            let (ph, column, any) = if i - start >= LONG_RUN {
                (PH_LONG, &mut *long, &mut long_runs)
            } else {
                (PH_SHORT, &mut *short, &mut short_runs)
            };
            skeleton.push(ph);
            if *any {
                column.push(b' ');
            }
            *any = true;
            column.extend_from_slice(&line[start..i]);
        }
        skeleton.push(b'\n');
        short.push(b'\n');
        long.push(b'\n');
    }
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    #[error("block does not decompress: {0}")]
    Zstd(std::io::Error),
    #[error("block is malformed: {0}")]
    Malformed(&'static str),
}

fn malformed<T>(what: &'static str) -> Result<T, BlockError> {
    Err(BlockError::Malformed(what))
}

/// The compressed frames of a block.
enum Frames<'a> {
    /// Layout 0 or 1: header and lines in one frame.
    Single(&'a [u8]),
    /// Layout 2: header + skeleton, short numbers, long numbers (raw sizes, frames).
    Split { raw: [usize; 3], data: [&'a [u8]; 3] },
}

fn frames(compressed: &[u8], raw_len: usize) -> Result<Frames<'_>, BlockError> {
    if compressed.starts_with(&ZSTD_MAGIC) {
        return Ok(Frames::Single(compressed));
    }
    let mut r = Reader::new(compressed);
    let bad = |_| BlockError::Malformed("truncated block header");
    if r.byte().map_err(bad)? != KIND_SPLIT {
        return malformed("unknown block kind");
    }
    let mut v = [0usize; 5];
    for x in &mut v {
        *x = usize::try_from(r.varint().map_err(bad)?).unwrap_or(usize::MAX);
    }
    let [ra, rs, rl, ca, cs] = v;
    if ra.saturating_add(rs).saturating_add(rl) > raw_len.min(MAX_RAW) {
        return malformed("columns larger than the block's recorded size");
    }
    let rest = &compressed[r.pos()..];
    if ca.saturating_add(cs) > rest.len() {
        return malformed("frame lengths past the end of the block");
    }
    let (a, rest) = rest.split_at(ca);
    let (s, l) = rest.split_at(cs);
    Ok(Frames::Split { raw: [ra, rs, rl], data: [a, s, l] })
}

thread_local! {
    /// One decompression context per thread (scan workers, merger): creating one per block
    /// costs more than decompressing a small block.
    static DCTX: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

/// Decompresses one frame into `dst` (replacing its contents); at most `cap` bytes, exactly
/// `cap` when `exact`.
fn decompress(src: &[u8], cap: usize, exact: bool, dst: &mut Vec<u8>) -> Result<(), BlockError> {
    dst.clear();
    dst.reserve(cap);
    let n = DCTX.with(|slot| {
        let mut slot = slot.borrow_mut();
        let d = match &mut *slot {
            Some(d) => d,
            empty => empty.insert(zstd::bulk::Decompressor::new()?),
        };
        d.decompress_to_buffer(src, dst)
    });
    let n = n.map_err(BlockError::Zstd)?;
    if exact && n != cap {
        return malformed("a column is shorter than its recorded size");
    }
    Ok(())
}

fn decompressed(src: &[u8], cap: usize, exact: bool) -> Result<Vec<u8>, BlockError> {
    let mut v = Vec::new();
    decompress(src, cap, exact, &mut v)?;
    Ok(v)
}

/// The header of a decompressed block.
struct Header {
    ts: Vec<i64>,
    layout: u8,
    lens: Vec<usize>,
    meta_index: Vec<(u32, u32)>,
    meta_pairs: Vec<MetaPair>,
    /// Where the lines (or the skeleton) start.
    body: usize,
}

type MetaPair = ((u32, u32), (u32, u32));

fn parse_header(buf: &[u8]) -> Result<Header, BlockError> {
    let mut r = Reader::new(buf);
    let bad = |_| BlockError::Malformed("truncated header");
    let n = r.varint().map_err(bad)? as usize;
    if n > buf.len() {
        return malformed("entry count larger than the block");
    }
    let mut ts = Vec::with_capacity(n);
    if n > 0 {
        let mut t = unzigzag(r.varint().map_err(bad)?);
        ts.push(t);
        for _ in 1..n {
            t = t.wrapping_add(r.varint().map_err(bad)? as i64);
            ts.push(t);
        }
    }
    let layout = r.byte().map_err(bad)?;
    let mut lens = Vec::new();
    match layout {
        LAYOUT_LENGTHS => {
            lens.reserve(n);
            for _ in 0..n {
                lens.push(r.varint().map_err(bad)? as usize);
            }
        }
        LAYOUT_TERMINATED | LAYOUT_SKELETON => {}
        _ => return malformed("unknown line layout"),
    }
    let has_meta = r.byte().map_err(bad)? != 0;
    let mut meta_index = Vec::new();
    let mut meta_pairs = Vec::new();
    if has_meta {
        let mut counts = Vec::with_capacity(n);
        for _ in 0..n {
            counts.push(r.varint().map_err(bad)? as usize);
        }
        let meta_len = r.varint().map_err(bad)? as usize;
        let meta_end = r.pos().saturating_add(meta_len);
        for c in counts {
            let start = meta_pairs.len() as u32;
            for _ in 0..c {
                let k = r.str_range().map_err(bad)?;
                let v = r.str_range().map_err(bad)?;
                meta_pairs.push((k, v));
            }
            meta_index.push((start, meta_pairs.len() as u32));
        }
        if r.pos() != meta_end {
            return malformed("metadata length mismatch");
        }
    }
    Ok(Header { ts, layout, lens, meta_index, meta_pairs, body: r.pos() })
}

/// Start of every line of a `\n`-terminated column, plus its end: `n + 1` offsets.
fn line_starts(col: &[u8], n: usize) -> Result<Vec<u32>, BlockError> {
    let mut v = Vec::with_capacity(n + 1);
    v.push(0);
    v.extend(memchr::memchr_iter(b'\n', col).map(|nl| nl as u32 + 1));
    if v.len() != n + 1 || v.last().is_some_and(|&e| e as usize != col.len()) {
        return malformed("a column's line count does not match the entry count");
    }
    Ok(v)
}

/// The skeleton and number columns of a skeleton block, with their line offsets.
struct Columns<'a> {
    skeleton: &'a [u8],
    short: &'a [u8],
    long: &'a [u8],
    starts: [Vec<u32>; 3],
}

impl<'a> Columns<'a> {
    fn new(skeleton: &'a [u8], short: &'a [u8], long: &'a [u8], n: usize) -> Result<Self, BlockError> {
        let starts = [line_starts(skeleton, n)?, line_starts(short, n)?, line_starts(long, n)?];
        Ok(Columns { skeleton, short, long, starts })
    }

    /// Appends line `i`, its numbers put back in place, to `out`.
    fn rebuild(&self, i: usize, out: &mut Vec<u8>) -> Result<(), BlockError> {
        let span = |col: &'a [u8], starts: &[u32]| &col[starts[i] as usize..starts[i + 1] as usize];
        let mut cursors =
            [span(self.skeleton, &self.starts[0]), span(self.short, &self.starts[1]), span(self.long, &self.starts[2])];
        rebuild_next(&mut cursors, out)
    }
}

/// Appends the verbatim text of `sk` from `at` up to its next placeholder or `\n` to `out` and
/// returns that byte's position (`sk.len()` when there is none). Eight bytes at a time: the runs
/// between placeholders are ~10–20 bytes, too short for `memchr`'s per-call setup, and a
/// fixed-size copy (then truncated) avoids a `memcpy` call per run.
fn copy_to_special(sk: &[u8], mut at: usize, out: &mut Vec<u8>) -> usize {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    while let Some(chunk) = sk.get(at..).and_then(<[u8]>::first_chunk::<8>) {
        let w = u64::from_le_bytes(*chunk);
        // High bit of each byte equal to a placeholder or `\n` (zero after the xor); the lowest
        // flagged byte is exact (a borrow can only flag bytes above a real hit).
        let zero = |v: u64| v.wrapping_sub(LO) & !v & HI;
        let hits = zero(w ^ (LO * u64::from(PH_SHORT)))
            | zero(w ^ (LO * u64::from(PH_LONG)))
            | zero(w ^ (LO * u64::from(b'\n')));
        let keep = out.len();
        out.extend_from_slice(chunk);
        if hits != 0 {
            let k = (hits.trailing_zeros() / 8) as usize;
            out.truncate(keep + k);
            return at + k;
        }
        at += 8;
    }
    let tail = &sk[at.min(sk.len())..];
    let k = tail.iter().position(|&b| b == PH_SHORT || b == PH_LONG || b == b'\n').unwrap_or(tail.len());
    out.extend_from_slice(&tail[..k]);
    at + k
}

/// Rebuilds the next line from `[skeleton, short, long]` cursors (each at the start of that
/// line's `\n`-terminated entry in its column), appends it to `out` without its `\n`, and moves
/// every cursor past the line.
fn rebuild_next(cursors: &mut [&[u8]; 3], out: &mut Vec<u8>) -> Result<(), BlockError> {
    let [skeleton, short, long] = cursors;
    let sk: &[u8] = skeleton;
    let mut at = 0;
    loop {
        at = copy_to_special(sk, at, out);
        let Some(&ph) = sk.get(at) else {
            return malformed("the skeleton has fewer lines than the block has entries");
        };
        at += 1;
        if ph == b'\n' {
            break;
        }
        let col: &mut &[u8] = if ph == PH_SHORT { short } else { long };
        let digits = col.iter().position(|b| !b.is_ascii_digit()).unwrap_or(col.len());
        if digits == 0 {
            return malformed("a number of the skeleton is missing from its column");
        }
        out.extend_from_slice(&col[..digits]);
        // A space separates the numbers of one line; the line's `\n` is checked at its end.
        *col = match col.get(digits) {
            Some(b' ') => &col[digits + 1..],
            _ => &col[digits..],
        };
    }
    *skeleton = &sk[at..];
    for col in [short, long] {
        match col.split_first() {
            Some((b'\n', rest)) => *col = rest,
            _ => return malformed("a number column does not match the skeleton"),
        }
    }
    Ok(())
}

/// Rebuilds every line of a skeleton block into `text`, recording each line's `(start, end)`,
/// with a `\n` after each line when `terminate` (a sequential pass: no per-line offsets needed).
fn rebuild_all(
    skeleton: &[u8],
    short: &[u8],
    long: &[u8],
    n: usize,
    terminate: bool,
    text: &mut Vec<u8>,
    lines: &mut Vec<(u32, u32)>,
) -> Result<(), BlockError> {
    text.reserve(skeleton.len() + short.len() + long.len());
    lines.reserve(n);
    let mut cursors = [skeleton, short, long];
    for _ in 0..n {
        let a = text.len();
        rebuild_next(&mut cursors, text)?;
        lines.push((a as u32, text.len() as u32));
        if terminate {
            text.push(b'\n');
        }
    }
    if cursors.iter().any(|c| !c.is_empty()) {
        return malformed("a column has more lines than the block has entries");
    }
    Ok(())
}

/// Indexes of the lines of a `\n`-terminated column holding `f` (each line once, ascending).
/// A match across a line end is reported for the line it starts in: callers verify.
fn lines_with(col: &[u8], starts: &[u32], f: &Finder<'_>, out: &mut Vec<u32>) {
    let mut pos = 0;
    while pos < col.len() {
        let Some(o) = f.find(&col[pos..]) else { break };
        let at = pos + o;
        let i = starts.partition_point(|&s| s as usize <= at) - 1;
        out.push(i as u32);
        pos = starts[i + 1] as usize;
    }
}

/// How a scan looks for its line hints in a skeleton block: one *driver* literal picks the
/// candidate lines from a single column; candidates are rebuilt and checked against every
/// hint, so the result is exact whatever the driver.
pub struct SearchPlan<'h> {
    /// Every non-empty hint, longest first.
    finders: Vec<Finder<'h>>,
    driver: Driver<'h>,
}

enum Driver<'h> {
    /// No hints: every line in range.
    All,
    /// A digit run of [`LONG_RUN`] or more digits: only in the long column.
    Long(Finder<'h>),
    /// A run of non-digits: in the skeleton, verbatim.
    Skeleton(Finder<'h>),
    /// A shorter digit run: in either number column.
    Digits(Finder<'h>),
}

impl<'h> SearchPlan<'h> {
    pub fn new(hints: &'h [Vec<u8>]) -> Self {
        let mut hints: Vec<&'h [u8]> = hints.iter().map(Vec::as_slice).filter(|h| !h.is_empty()).collect();
        // Longest first: the rarest needle is tried first on each line.
        hints.sort_by_key(|h| std::cmp::Reverse(h.len()));
        let finders = hints.iter().map(|h| Finder::new(*h)).collect();
        // The longest digit run and the longest run of non-digits of any hint. A digit run of a
        // hint is part of one digit run of the line (in full when bounded by non-digits inside
        // the hint, else possibly longer), so one of LONG_RUN digits is in the long column; a
        // run of non-digits is in the skeleton as it is.
        let (mut digits, mut other): (&[u8], &[u8]) = (&[], &[]);
        for h in &hints {
            for run in h.chunk_by(|a, b| a.is_ascii_digit() == b.is_ascii_digit()) {
                let best = if run[0].is_ascii_digit() { &mut digits } else { &mut other };
                if run.len() > best.len() {
                    *best = run;
                }
            }
        }
        let driver = if digits.len() >= LONG_RUN {
            Driver::Long(Finder::new(digits))
        } else if other.len() >= 3 || (!other.is_empty() && other.len() >= digits.len()) {
            Driver::Skeleton(Finder::new(other))
        } else if !digits.is_empty() {
            Driver::Digits(Finder::new(digits))
        } else {
            Driver::All
        };
        SearchPlan { finders, driver }
    }

    /// Whether `line` contains every hint.
    pub fn admits(&self, line: &[u8]) -> bool {
        self.finders.iter().all(|f| f.find(line).is_some())
    }
}

/// A decoded block: timestamps, metadata and line text.
#[derive(Debug)]
pub struct DecodedBlock {
    /// The header (timestamps, lengths and metadata; not UTF-8 as a whole).
    buf: Vec<u8>,
    /// The lines, validated once.
    text: String,
    ts: Vec<i64>,
    /// `(start, end)` of each line in `text`. After [`DecodedBlock::decode_matching`], only the
    /// returned lines are filled in (the others are empty).
    lines: Vec<(u32, u32)>,
    /// Per entry, `(start, end)` into `meta_pairs`.
    meta_index: Vec<(u32, u32)>,
    meta_pairs: Vec<MetaPair>,
}

impl DecodedBlock {
    /// Every line of a skeleton block (header and skeleton in `buf`, the two value columns),
    /// rebuilt in one sequential pass; `terminate` as in [`rebuild_all`].
    fn rebuilt(mut buf: Vec<u8>, h: Header, short: &[u8], long: &[u8], terminate: bool) -> Result<Self, BlockError> {
        let mut text = Vec::new();
        let mut lines = Vec::new();
        rebuild_all(&buf[h.body..], short, long, h.ts.len(), terminate, &mut text, &mut lines)?;
        let text = String::from_utf8(text).or(malformed("lines are not UTF-8"))?;
        buf.truncate(h.body);
        Ok(Self::from_header(buf, h, text, lines))
    }

    fn from_header(buf: Vec<u8>, h: Header, text: String, lines: Vec<(u32, u32)>) -> Self {
        DecodedBlock { buf, text, ts: h.ts, lines, meta_index: h.meta_index, meta_pairs: h.meta_pairs }
    }

    /// Decompresses and indexes a block. `raw_len` is the block's uncompressed length (from the
    /// part meta); a block that would decompress to more is refused.
    pub fn decode(compressed: &[u8], raw_len: usize) -> Result<DecodedBlock, BlockError> {
        match frames(compressed, raw_len)? {
            Frames::Single(c) => Self::decode_single(c, raw_len),
            Frames::Split { raw, data } => {
                let buf = decompressed(data[0], raw[0], true)?;
                let h = parse_header(&buf)?;
                if h.layout != LAYOUT_SKELETON {
                    return malformed("a split block without a skeleton");
                }
                let short = decompressed(data[1], raw[1], true)?;
                let long = decompressed(data[2], raw[2], true)?;
                Self::rebuilt(buf, h, &short, &long, true)
            }
        }
    }

    fn decode_single(compressed: &[u8], raw_len: usize) -> Result<DecodedBlock, BlockError> {
        let mut buf = decompressed(compressed, raw_len.min(MAX_RAW), false)?;
        let h = parse_header(&buf)?;
        let n = h.ts.len();
        // One UTF-8 check for all lines; each line then only needs char-boundary checks.
        let text = String::from_utf8(buf.split_off(h.body)).or(malformed("lines are not UTF-8"))?;
        let mut lines = Vec::with_capacity(n);
        match h.layout {
            LAYOUT_LENGTHS => {
                let mut at = 0usize;
                for &len in &h.lens {
                    let end = at
                        .checked_add(len)
                        .filter(|&e| e <= text.len())
                        .ok_or(BlockError::Malformed("line past end"))?;
                    lines.push((at as u32, end as u32));
                    at = end;
                }
                if at != text.len() {
                    return malformed("trailing bytes");
                }
            }
            LAYOUT_TERMINATED => {
                let mut at = 0usize;
                for nl in memchr::memchr_iter(b'\n', text.as_bytes()) {
                    lines.push((at as u32, nl as u32));
                    at = nl + 1;
                }
                if at != text.len() || lines.len() != n {
                    return malformed("line count does not match the entry count");
                }
            }
            _ => return malformed("a skeleton layout outside a split block"),
        }
        Ok(Self::from_header(buf, h, text, lines))
    }

    /// The timestamps of a block, decompressing no more than the header needs.
    pub fn decode_timestamps(compressed: &[u8], raw_len: usize) -> Result<Vec<i64>, BlockError> {
        let (c, cap, exact) = match frames(compressed, raw_len)? {
            Frames::Single(c) => (c, raw_len.min(MAX_RAW), false),
            Frames::Split { raw, data } => (data[0], raw[0], true),
        };
        Ok(parse_header(&decompressed(c, cap, exact)?)?.ts)
    }

    /// Decodes what a scan needs of a block: the indexes of the lines with a timestamp in
    /// `[start_ns, end_ns)` that contain every hint of `plan`, ascending, and a block in which
    /// those lines (only those) can be read. A skeleton block is searched column by column
    /// (see [`SearchPlan`]): frames that cannot hold a match are not decompressed, and only
    /// candidate lines are rebuilt.
    pub fn decode_matching(
        compressed: &[u8],
        raw_len: usize,
        start_ns: i64,
        end_ns: i64,
        plan: &SearchPlan<'_>,
    ) -> Result<(DecodedBlock, Vec<u32>), BlockError> {
        let (raw, data) = match frames(compressed, raw_len)? {
            Frames::Single(c) => {
                let d = Self::decode_single(c, raw_len)?;
                let (lo, hi) = d.range(start_ns, end_ns);
                let lines = d.lines_containing(lo, hi, &plan.finders);
                return Ok((d, lines));
            }
            Frames::Split { raw, data } => (raw, data),
        };
        let mut cols: [Option<Vec<u8>>; 3] = [None, None, None];
        let load = |k: usize, cols: &mut [Option<Vec<u8>>; 3]| -> Result<(), BlockError> {
            if cols[k].is_none() {
                cols[k] = Some(decompressed(data[k], raw[k], true)?);
            }
            Ok(())
        };
        // Candidates from the driver's column, before anything else is decompressed.
        let mut candidates: Option<Vec<u32>> = None;
        let probe = |col: &[u8], f: &Finder<'_>, out: &mut Vec<u32>| -> Result<(), BlockError> {
            if f.find(col).is_some() {
                let n = memchr::memchr_iter(b'\n', col).count();
                lines_with(col, &line_starts(col, n)?, f, out);
            }
            Ok(())
        };
        match &plan.driver {
            Driver::All => {}
            Driver::Long(f) => {
                load(2, &mut cols)?;
                let mut c = Vec::new();
                probe(cols[2].as_deref().unwrap_or_default(), f, &mut c)?;
                candidates = Some(c);
            }
            Driver::Digits(f) => {
                load(1, &mut cols)?;
                load(2, &mut cols)?;
                let mut c = Vec::new();
                probe(cols[1].as_deref().unwrap_or_default(), f, &mut c)?;
                probe(cols[2].as_deref().unwrap_or_default(), f, &mut c)?;
                c.sort_unstable();
                c.dedup();
                candidates = Some(c);
            }
            Driver::Skeleton(f) => {
                load(0, &mut cols)?;
                let buf = cols[0].as_deref().unwrap_or_default();
                let body = parse_header(buf)?.body;
                let mut c = Vec::new();
                probe(&buf[body..], f, &mut c)?;
                candidates = Some(c);
            }
        }
        if candidates.as_ref().is_some_and(Vec::is_empty) {
            return Ok((DecodedBlock::empty(), Vec::new()));
        }
        for k in 0..3 {
            load(k, &mut cols)?;
        }
        let [Some(buf), Some(short), Some(long)] = cols else {
            return malformed("a column did not decompress");
        };
        let h = parse_header(&buf)?;
        if h.layout != LAYOUT_SKELETON {
            return malformed("a split block without a skeleton");
        }
        let n = h.ts.len();
        let lo = h.ts.partition_point(|&t| t < start_ns);
        let hi = h.ts.partition_point(|&t| t < end_ns);
        let Some(candidates) = candidates else {
            // No hint: every line in range, rebuilt in one sequential pass.
            return Ok((Self::rebuilt(buf, h, &short, &long, false)?, (lo as u32..hi as u32).collect()));
        };
        let cols = Columns::new(&buf[h.body..], &short, &long, n)?;
        let mut text = Vec::new();
        let mut lines = vec![(0u32, 0u32); n];
        let mut selected = Vec::new();
        let mut each = |i: usize| -> Result<(), BlockError> {
            let a = text.len();
            cols.rebuild(i, &mut text)?;
            if plan.admits(&text[a..]) {
                lines[i] = (a as u32, text.len() as u32);
                selected.push(i as u32);
            } else {
                text.truncate(a);
            }
            Ok(())
        };
        candidates.iter().map(|&i| i as usize).filter(|i| (lo..hi).contains(i)).try_for_each(&mut each)?;
        let text = String::from_utf8(text).or(malformed("lines are not UTF-8"))?;
        let mut buf = buf;
        buf.truncate(h.body);
        Ok((Self::from_header(buf, h, text, lines), selected))
    }

    fn empty() -> DecodedBlock {
        DecodedBlock {
            buf: Vec::new(),
            text: String::new(),
            ts: Vec::new(),
            lines: Vec::new(),
            meta_index: Vec::new(),
            meta_pairs: Vec::new(),
        }
    }

    /// Indexes `lo..hi` of the entries with a timestamp in `[start_ns, end_ns)` (time-sorted).
    fn range(&self, start_ns: i64, end_ns: i64) -> (usize, usize) {
        (self.ts.partition_point(|&t| t < start_ns), self.ts.partition_point(|&t| t < end_ns))
    }

    pub fn len(&self) -> usize {
        self.ts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ts.is_empty()
    }

    pub fn ts(&self, i: usize) -> i64 {
        self.ts[i]
    }

    pub fn timestamps(&self) -> &[i64] {
        &self.ts
    }

    fn slice(&self, (a, b): (u32, u32)) -> &str {
        self.buf.get(a as usize..b as usize).and_then(|s| std::str::from_utf8(s).ok()).unwrap_or("")
    }

    /// Indexes in `lo..hi` of the lines containing every needle, found by searching the block's
    /// text once per needle rather than line by line. A match that straddles two lines does not
    /// count, and the search resumes at the next line so an overlapping real match is not lost.
    pub fn lines_containing(&self, lo: usize, hi: usize, needles: &[Finder<'_>]) -> Vec<u32> {
        let Some((first, rest)) = needles.split_first() else {
            return (lo as u32..hi as u32).collect();
        };
        let text = self.text.as_bytes();
        let n = first.needle().len();
        let mut out = Vec::new();
        if lo >= hi {
            return out;
        }
        let mut pos = self.lines[lo].0 as usize;
        let end = self.lines[hi - 1].1 as usize;
        while pos < end {
            let Some(o) = first.find(&text[pos..end]) else { break };
            let at = pos + o;
            // The line holding `at`: the last line starting at or before it.
            let i = self.lines[lo..hi].partition_point(|&(a, _)| a as usize <= at) + lo - 1;
            let (a, b) = self.lines[i];
            if at + n <= b as usize {
                let line = &text[a as usize..b as usize];
                if rest.iter().all(|f| f.find(line).is_some()) {
                    out.push(i as u32);
                }
            }
            // Next line (an empty line cannot hold a match; skip past it too).
            pos = (b as usize).max(at + 1);
        }
        out
    }

    pub fn line(&self, i: usize) -> &str {
        let (a, b) = self.lines[i];
        self.text.get(a as usize..b as usize).unwrap_or("")
    }

    /// The entry at `i`, borrowing from the block.
    pub fn entry(&self, i: usize) -> Entry<'_> {
        let metadata = match self.meta_index.get(i) {
            Some(&(a, b)) if a < b => {
                self.meta_pairs[a as usize..b as usize].iter().map(|&(k, v)| (self.slice(k), self.slice(v))).collect()
            }
            _ => Vec::new(),
        };
        Entry { ts_ns: self.ts[i], line: self.line(i), metadata }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(timestamp, line, metadata)`.
    type TestEntry<'a> = (i64, &'a str, &'a [(&'a str, &'a str)]);
    /// `(entries, skeleton, short column, long column)`.
    type BadBlock<'a> = (u8, &'a [u8], &'a [u8], &'a [u8]);

    fn encode(entries: &[TestEntry<'_>]) -> (Vec<u8>, usize) {
        let mut enc = BlockEncoder::default();
        for (ts, line, meta) in entries {
            enc.push(*ts, line, meta);
        }
        let (mut raw, mut out) = (Vec::new(), Vec::new());
        let n = enc.finish(3, &mut raw, &mut out).unwrap();
        assert!(enc.is_empty());
        (out, n)
    }

    #[test]
    fn round_trip_with_metadata() {
        let (out, n) = encode(&[
            (-5, "first", &[]),
            (10, "second é 42", &[("trace_id", "abc"), ("user", "")]),
            (10, "", &[]),
            (11, "12345678 then 1 and 007", &[]),
        ]);
        assert_eq!(out[0], KIND_SPLIT, "no newline or placeholder: skeleton layout");
        let b = DecodedBlock::decode(&out, n).unwrap();
        assert_eq!(b.len(), 4);
        assert_eq!(b.entry(0), Entry { ts_ns: -5, line: "first", metadata: vec![] });
        assert_eq!(
            b.entry(1),
            Entry { ts_ns: 10, line: "second é 42", metadata: vec![("trace_id", "abc"), ("user", "")] }
        );
        assert_eq!(b.entry(2).line, "");
        assert_eq!(b.entry(3).line, "12345678 then 1 and 007");
        assert_eq!(DecodedBlock::decode_timestamps(&out, n).unwrap(), vec![-5, 10, 10, 11]);
        // With a multi-line entry the block keeps a lengths column in one frame.
        let (out, n) = encode(&[(1, "multi\nline 7", &[]), (2, "next", &[])]);
        assert!(out.starts_with(&ZSTD_MAGIC));
        let b = DecodedBlock::decode(&out, n).unwrap();
        assert_eq!((b.line(0), b.line(1)), ("multi\nline 7", "next"));
        // A placeholder byte in a line: newline-terminated lines in one frame.
        let (out, n) = encode(&[(1, "odd \u{1} byte 12", &[]), (2, "next 3", &[])]);
        assert!(out.starts_with(&ZSTD_MAGIC));
        let b = DecodedBlock::decode(&out, n).unwrap();
        assert_eq!((b.line(0), b.line(1)), ("odd \u{1} byte 12", "next 3"));
    }

    #[test]
    fn lines_containing_ignores_matches_across_lines() {
        let mut enc = BlockEncoder::default();
        for (i, l) in ["xxab", "cdab", "", "abcd", "zz", "ab"].iter().enumerate() {
            enc.push(i as i64, l, &[]);
        }
        let (mut raw, mut out) = (Vec::new(), Vec::new());
        let n = enc.finish(1, &mut raw, &mut out).unwrap();
        let b = DecodedBlock::decode(&out, n).unwrap();
        let f = |s: &'static str| Finder::new(s.as_bytes());
        // "abcd" also occurs across "xxab|cdab": only line 3 holds it.
        assert_eq!(b.lines_containing(0, 6, &[f("abcd")]), vec![3]);
        assert_eq!(b.lines_containing(0, 6, &[f("ab")]), vec![0, 1, 3, 5]);
        assert_eq!(b.lines_containing(1, 5, &[f("ab"), f("cd")]), vec![1, 3]);
        assert_eq!(b.lines_containing(0, 6, &[f("bz")]), Vec::<u32>::new());
        assert_eq!(b.lines_containing(2, 4, &[]), vec![2, 3]);
    }

    /// `decode_matching` against the obvious answer, for hints driving each column.
    #[test]
    fn matching_lines_of_a_skeleton_block() {
        let lines = [
            "081109 203518 143 INFO Receiving block blk_-1608999687919862906 src: /10.250.19.102:54106",
            "081109 203519 145 INFO PacketResponder 1 for block blk_-1608999687919862906 terminating",
            "user 12 logged in from 10.0.0.1 port 22",
            "session closed for user 1234567",
            "",
            "12345678901234567890",
            "a1b2c3 x",
        ];
        let entries: Vec<TestEntry<'_>> = lines.iter().enumerate().map(|(i, l)| (i as i64 * 10, *l, &[][..])).collect();
        let (out, n) = encode(&entries);
        assert_eq!(out[0], KIND_SPLIT);
        let hints_cases: &[&[&str]] = &[
            &[],
            &["blk_-1608999687919862906"],
            &["6089996879"],
            &["99968"],
            &["0.0."],
            &["INFO", "terminating"],
            &["ession clo"],
            &["1234567"],
            &["4567890123"],
            &["1b2"],
            &["2"],
            &["absent"],
            &["\u{1}"],
            &["in from 10.0", "22"],
        ];
        for hints in hints_cases {
            let owned: Vec<Vec<u8>> = hints.iter().map(|h| h.as_bytes().to_vec()).collect();
            let plan = SearchPlan::new(&owned);
            for (start, end) in [(i64::MIN, i64::MAX), (10, 55), (25, 26)] {
                let (d, got) = DecodedBlock::decode_matching(&out, n, start, end, &plan).unwrap();
                let want: Vec<u32> = lines
                    .iter()
                    .enumerate()
                    .filter(|(i, l)| (start..end).contains(&(*i as i64 * 10)) && hints.iter().all(|h| l.contains(h)))
                    .map(|(i, _)| i as u32)
                    .collect();
                assert_eq!(got, want, "{hints:?} in [{start}, {end})");
                for &i in &got {
                    assert_eq!(d.entry(i as usize).line, lines[i as usize]);
                    assert_eq!(d.entry(i as usize).ts_ns, i as i64 * 10);
                }
            }
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(DecodedBlock::decode(b"not zstd", 10).is_err());
        let bogus = zstd::bulk::compress(&[0xff, 0xff, 0xff, 0xff, 0x0f][..], 1).unwrap();
        assert!(DecodedBlock::decode(&bogus, 10).is_err());
        assert!(DecodedBlock::decode(&[KIND_SPLIT, 1, 1, 1, 200, 0], 10).is_err());
        // A valid block cut short or with a column of another block.
        let (out, n) = encode(&[(1, "a 1 b 22 c 12345678", &[]), (2, "d 3", &[])]);
        for cut in 0..out.len() {
            let _ = DecodedBlock::decode(&out[..cut], n);
            let _ = DecodedBlock::decode_timestamps(&out[..cut], n);
        }
    }

    /// The word-at-a-time search finds exactly the first placeholder or `\n`, whatever the
    /// surrounding bytes (bytes just above and below the specials, at every offset).
    #[test]
    fn copy_to_special_stops_at_the_first_special_byte() {
        for fill in [0u8, 3, 9, 11, 0x80, 0x81, 0xff, b'a'] {
            for special in [PH_SHORT, PH_LONG, b'\n', 0xAA] {
                for len in 0..20 {
                    for pos in 0..=len {
                        let mut sk: Vec<u8> = (0..len).map(|i| if i % 3 == 0 { fill } else { b'x' }).collect();
                        if pos < len {
                            sk[pos] = special;
                        }
                        let want = sk.iter().position(|&b| b == PH_SHORT || b == PH_LONG || b == b'\n').unwrap_or(len);
                        for from in 0..=want {
                            let mut out = vec![b'#'];
                            assert_eq!(copy_to_special(&sk, from, &mut out), want, "{sk:?} from {from}");
                            assert_eq!(&out[1..], &sk[from..want]);
                        }
                    }
                }
            }
        }
    }

    /// A skeleton block from hand-made columns (header: `n` entries at ts 0, no metadata).
    fn split_block(n: u8, skeleton: &[u8], short: &[u8], long: &[u8]) -> (Vec<u8>, usize) {
        let mut head = vec![n, 0];
        head.extend(std::iter::repeat_n(0, usize::from(n.saturating_sub(1))));
        head.extend_from_slice(&[LAYOUT_SKELETON, 0]);
        head.extend_from_slice(skeleton);
        let frames: Vec<Vec<u8>> =
            [&head[..], short, long].iter().map(|c| zstd::bulk::compress(c, 1).unwrap()).collect();
        let mut out = vec![KIND_SPLIT];
        for v in [head.len(), short.len(), long.len(), frames[0].len(), frames[1].len()] {
            put_varint(&mut out, v as u64);
        }
        frames.iter().for_each(|f| out.extend_from_slice(f));
        (out, head.len() + short.len() + long.len())
    }

    /// Columns that disagree with the skeleton are errors on every read path, never panics or
    /// made-up lines.
    #[test]
    fn inconsistent_columns_are_errors() {
        let (ok, n) = split_block(2, b"a \x01 b \x02\nc\n", b"12\n\n", b"1234567\n\n");
        let d = DecodedBlock::decode(&ok, n).unwrap();
        assert_eq!((d.line(0), d.line(1)), ("a 12 b 1234567", "c"));
        let plans: Vec<Vec<Vec<u8>>> =
            vec![vec![], vec![b"b 1".to_vec()], vec![b"12".to_vec()], vec![b"1234567".to_vec()]];
        let bad: &[BadBlock<'_>] = &[
            (2, b"a \x01 b \x02\nc\n", b"\n\n", b"1234567\n\n"), // number missing
            (2, b"a \x01 b \x02\nc\n", b"12 13\n\n", b"1234567\n\n"), // one number too many
            (2, b"a \x01 b \x02\nc\n", b"12\n", b"1234567\n\n"), // a line short
            (2, b"a \x01 b \x02\nc\n", b"12\n\n\n", b"1234567\n\n"), // a line too many
            (2, b"a \x01 b \x02\nc\n", b"1x\n\n", b"1234567\n\n"), // not a number
            (2, b"a \x01 b \x02\nc\n", b"12  \n\n", b"1234567\n\n"), // empty number
            (3, b"a \x01 b \x02\nc\n", b"12\n\n", b"1234567\n\n"), // fewer lines than entries
            (1, b"a \x01 b \x02\nc\n", b"12\n\n", b"1234567\n\n"), // more lines than entries
            (2, b"a \x01 b \x02\nc", b"12\n\n", b"1234567\n\n"), // unterminated skeleton
        ];
        for (k, (entries, sk, short, long)) in bad.iter().enumerate() {
            let (block, n) = split_block(*entries, sk, short, long);
            assert!(DecodedBlock::decode(&block, n).is_err(), "case {k}: decode");
            for hints in &plans {
                let plan = SearchPlan::new(hints);
                assert!(
                    DecodedBlock::decode_matching(&block, n, i64::MIN, i64::MAX, &plan).is_err(),
                    "case {k}: {hints:?}"
                );
            }
        }
    }

    use proptest::strategy::Strategy;

    proptest::proptest! {
        /// Whatever the lines (digits, placeholder bytes, newlines) and hints (substrings of the
        /// lines, across digit boundaries, or not there), a block decodes back to its lines and
        /// `decode_matching` returns exactly the lines in range holding every hint.
        #[test]
        fn decode_matching_is_exact(
            mut lines in proptest::collection::vec(
                proptest::collection::vec(proptest::prop_oneof!["[a-c]{1,4}", "[0-9]{1,12}", "[ ._-]"], 0..10)
                    .prop_map(|parts: Vec<String>| parts.concat()),
                1..40,
            ),
            odd in proptest::option::of((proptest::prelude::any::<usize>(), proptest::sample::select(vec!["\n", "\u{1}", "\u{2}"]))),
            picks in proptest::collection::vec((proptest::prelude::any::<usize>(), proptest::prelude::any::<usize>(), 0usize..12), 0..3),
            start in 0i64..45,
            span in 0i64..60,
        ) {
            // Sometimes a line with a byte that rules out the skeleton layout.
            if let Some((at, byte)) = odd {
                let k = at % lines.len();
                lines[k].push_str(byte);
            }
            let entries: Vec<TestEntry<'_>> =
                lines.iter().enumerate().map(|(i, l)| (i as i64, l.as_str(), &[][..])).collect();
            let (out, n) = encode(&entries);
            proptest::prop_assert_eq!(out[0] == KIND_SPLIT, odd.is_none());
            let d = DecodedBlock::decode(&out, n).unwrap();
            for (i, l) in lines.iter().enumerate() {
                proptest::prop_assert_eq!(d.line(i), l.as_str());
            }
            let hints: Vec<Vec<u8>> = picks
                .iter()
                .map(|&(l, a, len): &(usize, usize, usize)| {
                    let line = lines[l % lines.len()].as_bytes();
                    let a = if line.is_empty() { 0 } else { a % line.len() };
                    line[a..(a + len).min(line.len())].to_vec()
                })
                .collect();
            let plan = SearchPlan::new(&hints);
            let end = start + span;
            let (m, got) = DecodedBlock::decode_matching(&out, n, start, end, &plan).unwrap();
            let want: Vec<u32> = lines
                .iter()
                .enumerate()
                .filter(|(i, l)| {
                    (start..end).contains(&(*i as i64))
                        && hints.iter().all(|h| memchr::memmem::find(l.as_bytes(), h).is_some())
                })
                .map(|(i, _)| i as u32)
                .collect();
            proptest::prop_assert_eq!(&got, &want);
            for &i in &got {
                proptest::prop_assert_eq!(m.line(i as usize), lines[i as usize].as_str());
            }
        }
    }
}
