//! A borrowing decoder for remote_write bodies, 1.0 (`prometheus.WriteRequest`) and 2.0
//! (`io.prometheus.write.v2.Request`).
//!
//! Why not prost: decoding into [`crate::prompb::WriteRequest`] allocates a `String` for every
//! label name and value, which caps a core at about a million series per second before anything
//! is stored. Here every label is a `&str` into the decompressed body, every series is a range
//! into one shared label vector, and only the newest sample of a series is kept, because that is
//! all the collector stores. A request costs a handful of allocations however many series it has.
//!
//! The decoder follows protobuf's wire rules the way prost does (unknown fields skipped, the
//! last value of a repeated scalar wins, packed and unpacked repeated scalars both accepted) and
//! is checked against prost by a proptest on random requests. Problems that concern one series
//! (a label that is not UTF-8, a symbol reference out of range) are reported on that series, so
//! the receiver can keep the valid ones; problems with the framing fail the whole request.

use std::ops::Range;

/// Which message a body holds, from its `Content-Type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// `prometheus.WriteRequest` (remote_write 1.0).
    V1,
    /// `io.prometheus.write.v2.Request` (remote_write 2.0).
    V2,
}

impl Version {
    /// Picks the message from a `Content-Type` as the 2.0 spec defines it: no `proto`
    /// parameter (or `prometheus.WriteRequest`) is 1.0, `io.prometheus.write.v2.Request` is 2.0.
    /// An empty header is taken as 1.0, as Prometheus' own receiver does. Anything else is
    /// refused (the spec's answer is 415).
    pub fn from_content_type(content_type: &str) -> Result<Version, String> {
        let ct = content_type.trim();
        if ct.is_empty() {
            return Ok(Version::V1);
        }
        let mut parts = ct.split(';');
        let media = parts.next().unwrap_or("").trim();
        if !media.eq_ignore_ascii_case("application/x-protobuf") {
            return Err(format!(
                "unsupported Content-Type {content_type:?}: remote_write bodies are application/x-protobuf"
            ));
        }
        let mut version = Version::V1;
        for p in parts {
            let Some((k, v)) = p.split_once('=') else { continue };
            if !k.trim().eq_ignore_ascii_case("proto") {
                continue;
            }
            version = match v.trim().trim_matches('"') {
                "prometheus.WriteRequest" => Version::V1,
                "io.prometheus.write.v2.Request" => Version::V2,
                other => {
                    return Err(format!(
                        "unsupported remote_write message {other:?} in Content-Type: this receiver accepts prometheus.WriteRequest and io.prometheus.write.v2.Request"
                    ));
                }
            };
        }
        Ok(version)
    }

    pub fn message_name(self) -> &'static str {
        match self {
            Version::V1 => "prometheus.WriteRequest",
            Version::V2 => "io.prometheus.write.v2.Request",
        }
    }
}

/// The framing of a body is broken: nothing in it can be trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("remote_write body is not a valid {message} protobuf: {problem} (at byte {offset})")]
pub struct WireError {
    pub message: &'static str,
    pub problem: String,
    pub offset: usize,
}

/// The newest float sample of a series in a request.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Latest {
    pub value: f64,
    pub timestamp_ms: i64,
}

/// What is wrong with one series, found while decoding it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SeriesProblem {
    /// A label name or value is not UTF-8 (`name` says which of the two).
    InvalidUtf8 { label_index: usize, name: bool },
    /// A 2.0 label reference points past the symbol table.
    SymbolOutOfRange { reference: u64, symbols: usize },
    /// A 2.0 `labels_refs` list of odd length: a name without a value.
    OddLabelRefs { len: usize },
}

impl std::fmt::Display for SeriesProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SeriesProblem::InvalidUtf8 { label_index, name: true } => {
                write!(f, "the name of label {label_index} is not valid UTF-8")
            }
            SeriesProblem::InvalidUtf8 { label_index, name: false } => {
                write!(f, "the value of label {label_index} is not valid UTF-8")
            }
            SeriesProblem::SymbolOutOfRange { reference, symbols } => {
                write!(f, "label reference {reference} is out of range: the request has {symbols} symbols")
            }
            SeriesProblem::OddLabelRefs { len } => {
                write!(f, "labels_refs has {len} elements; it must hold name/value pairs")
            }
        }
    }
}

/// One series of a request: where its labels are, its newest sample, and what else it carried.
#[derive(Clone, Debug, PartialEq)]
pub struct SeriesView {
    /// Range into [`WriteView::labels`], in the order received.
    pub labels: Range<usize>,
    /// Where the series' `TimeSeries` message (its body, without key and length) is in the
    /// decoded buffer, so it can be re-sent as it came (see [`to_v1`]).
    pub raw: Range<usize>,
    /// The float sample with the highest timestamp (the later one on ties).
    pub latest: Option<Latest>,
    pub samples: u32,
    pub histograms: u32,
    pub exemplars: u32,
    pub problem: Option<SeriesProblem>,
    /// 2.0 only: the metadata sent with the series.
    pub metadata: Option<SeriesMetadata>,
}

/// 2.0 per-series metadata, with its strings resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeriesMetadata {
    /// `MetricType` value (the 1.0 and 2.0 enums share their numbers).
    pub kind: i32,
    /// Index of the help text in [`WriteView::symbols`].
    pub help: usize,
    /// Index of the unit in [`WriteView::symbols`].
    pub unit: usize,
}

/// 1.0 `MetricMetadata`: one metric family's type, help and unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetadataView<'a> {
    pub kind: i32,
    pub family: &'a str,
    pub help: &'a str,
    pub unit: &'a str,
}

/// A decoded request, borrowing from the body.
#[derive(Debug, Default)]
pub struct WriteView<'a> {
    pub labels: Vec<(&'a str, &'a str)>,
    pub series: Vec<SeriesView>,
    pub metadata: Vec<MetadataView<'a>>,
    /// 2.0: the symbol table (`None` where a symbol is not UTF-8), for metadata strings.
    pub symbols: Vec<Option<&'a str>>,
}

impl<'a> WriteView<'a> {
    pub fn labels_of(&self, s: &SeriesView) -> &[(&'a str, &'a str)] {
        &self.labels[s.labels.clone()]
    }

    /// A 2.0 symbol by index (metadata help and unit); "" when absent or not UTF-8.
    pub fn symbol(&self, index: usize) -> &'a str {
        self.symbols.get(index).copied().flatten().unwrap_or("")
    }

    pub fn sample_count(&self) -> u64 {
        self.series.iter().map(|s| u64::from(s.samples)).sum()
    }
}

const VARINT: u8 = 0;
const I64: u8 = 1;
const LEN: u8 = 2;
const START_GROUP: u8 = 3;
const END_GROUP: u8 = 4;
const I32: u8 = 5;
/// Nesting limit for (deprecated, skipped) groups, as prost's recursion limit.
const MAX_GROUP_DEPTH: u32 = 100;

/// A cursor over protobuf bytes.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Offset of `buf` in the whole body, for error positions.
    base: usize,
    message: &'static str,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], base: usize, message: &'static str) -> Self {
        Reader { buf, pos: 0, base, message }
    }

    #[cold]
    #[inline(never)]
    fn err(&self, problem: impl Into<String>) -> WireError {
        WireError { message: self.message, problem: problem.into(), offset: self.base + self.pos }
    }

    #[inline(always)]
    fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }

    /// One-byte varints (field keys, short lengths) are the common case and stay inline.
    #[inline(always)]
    fn varint(&mut self) -> Result<u64, WireError> {
        if let Some(&b) = self.buf.get(self.pos)
            && b < 0x80
        {
            self.pos += 1;
            return Ok(u64::from(b));
        }
        self.varint_slow()
    }

    #[inline(never)]
    fn varint_slow(&mut self) -> Result<u64, WireError> {
        let mut value: u64 = 0;
        for i in 0..10 {
            let Some(&b) = self.buf.get(self.pos) else {
                return Err(self.err("truncated varint"));
            };
            self.pos += 1;
            if i == 9 && b > 1 {
                return Err(self.err("varint overflows 64 bits"));
            }
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(self.err("varint overflows 64 bits"))
    }

    /// Reads a field key; returns (field number, wire type).
    #[inline(always)]
    fn key(&mut self) -> Result<(u64, u8), WireError> {
        let start = self.pos;
        let key = self.varint()?;
        let field = key >> 3;
        let wire = (key & 7) as u8;
        if field == 0 || field > u64::from(u32::MAX >> 3) || wire > I32 {
            return Err(self.bad_key(start, field, wire));
        }
        Ok((field, wire))
    }

    #[cold]
    #[inline(never)]
    fn bad_key(&mut self, start: usize, field: u64, wire: u8) -> WireError {
        self.pos = start;
        if field == 0 || field > u64::from(u32::MAX >> 3) {
            self.err(format!("invalid field number {field}"))
        } else {
            self.err(format!("unsupported wire type {wire} for field {field}"))
        }
    }

    #[inline(always)]
    fn bytes(&mut self) -> Result<(&'a [u8], usize), WireError> {
        let len = self.varint()?;
        let left = self.buf.len() - self.pos;
        if len > left as u64 {
            return Err(self.short(len, left));
        }
        let start = self.pos;
        self.pos += len as usize;
        Ok((&self.buf[start..self.pos], self.base + start))
    }

    #[cold]
    #[inline(never)]
    fn short(&self, len: u64, left: usize) -> WireError {
        self.err(format!("length-delimited field of {len} bytes, but only {left} bytes remain"))
    }

    #[inline(always)]
    fn fixed64(&mut self) -> Result<u64, WireError> {
        let Some(b) = self.buf.get(self.pos..self.pos + 8) else {
            return Err(self.err("truncated 64-bit field"));
        };
        self.pos += 8;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    /// Skips an unknown field. Groups (wire types 3 and 4, deprecated) are skipped to their
    /// matching end as prost does, so the same bytes decode here exactly when they do there.
    fn skip(&mut self, field: u64, wire: u8) -> Result<(), WireError> {
        self.skip_nested(field, wire, 0)
    }

    fn skip_nested(&mut self, field: u64, wire: u8, depth: u32) -> Result<(), WireError> {
        match wire {
            VARINT => self.varint().map(drop),
            I64 => self.fixed64().map(drop),
            LEN => self.bytes().map(drop),
            START_GROUP => {
                if depth >= MAX_GROUP_DEPTH {
                    return Err(self.err("groups nested too deeply"));
                }
                loop {
                    if self.done() {
                        return Err(self.err(format!("group {field} has no end")));
                    }
                    let (inner, inner_wire) = self.key()?;
                    if inner_wire == END_GROUP {
                        if inner != field {
                            return Err(self.err(format!("group {field} ended by the end of group {inner}")));
                        }
                        return Ok(());
                    }
                    self.skip_nested(inner, inner_wire, depth + 1)?;
                }
            }
            END_GROUP => Err(self.err(format!("end of group {field} without its start"))),
            _ => {
                if self.buf.len() - self.pos < 4 {
                    return Err(self.err("truncated 32-bit field"));
                }
                self.pos += 4;
                Ok(())
            }
        }
    }

    #[inline(always)]
    fn expect(&self, field: u64, wire: u8, want: u8) -> Result<(), WireError> {
        if wire == want { Ok(()) } else { Err(self.wrong_wire(field, wire, want)) }
    }

    #[cold]
    #[inline(never)]
    fn wrong_wire(&self, field: u64, wire: u8, want: u8) -> WireError {
        self.err(format!("field {field} has wire type {wire}, expected {want}"))
    }
}

/// Decodes a 1.0 `prometheus.WriteRequest` (already decompressed).
pub fn decode_v1(buf: &[u8]) -> Result<WriteView<'_>, WireError> {
    let mut view = WriteView::default();
    let mut r = Reader::new(buf, 0, Version::V1.message_name());
    while !r.done() {
        let (field, wire) = r.key()?;
        match field {
            1 => {
                r.expect(field, wire, LEN)?;
                let (ts, base) = r.bytes()?;
                decode_v1_series(ts, base, &mut view)?;
            }
            3 => {
                r.expect(field, wire, LEN)?;
                let (md, base) = r.bytes()?;
                if let Some(m) = decode_v1_metadata(md, base)? {
                    view.metadata.push(m);
                }
            }
            _ => r.skip(field, wire)?,
        }
    }
    Ok(view)
}

fn decode_v1_series<'a>(buf: &'a [u8], base: usize, view: &mut WriteView<'a>) -> Result<(), WireError> {
    let mut r = Reader::new(buf, base, Version::V1.message_name());
    let start = view.labels.len();
    let mut series = SeriesView {
        labels: start..start,
        raw: base..base + buf.len(),
        latest: None,
        samples: 0,
        histograms: 0,
        exemplars: 0,
        problem: None,
        metadata: None,
    };
    let mut label_index = 0;
    while !r.done() {
        let (field, wire) = r.key()?;
        match field {
            1 => {
                r.expect(field, wire, LEN)?;
                let (label, lbase) = r.bytes()?;
                let (name, value) = decode_label(label, lbase)?;
                match (std::str::from_utf8(name), std::str::from_utf8(value)) {
                    (Ok(n), Ok(v)) => view.labels.push((n, v)),
                    (Err(_), _) => {
                        series.problem.get_or_insert(SeriesProblem::InvalidUtf8 { label_index, name: true });
                    }
                    (_, Err(_)) => {
                        series.problem.get_or_insert(SeriesProblem::InvalidUtf8 { label_index, name: false });
                    }
                }
                label_index += 1;
            }
            2 => {
                r.expect(field, wire, LEN)?;
                let (sample, sbase) = r.bytes()?;
                let s = decode_sample(sample, sbase, Version::V1)?;
                series.samples += 1;
                keep_latest(&mut series.latest, s);
            }
            3 => {
                r.expect(field, wire, LEN)?;
                r.bytes()?;
                series.exemplars += 1;
            }
            4 => {
                r.expect(field, wire, LEN)?;
                r.bytes()?;
                series.histograms += 1;
            }
            _ => r.skip(field, wire)?,
        }
    }
    series.labels = start..view.labels.len();
    view.series.push(series);
    Ok(())
}

#[inline]
fn keep_latest(latest: &mut Option<Latest>, s: Latest) {
    match latest {
        Some(l) if l.timestamp_ms > s.timestamp_ms => {}
        _ => *latest = Some(s),
    }
}

#[inline]
fn decode_label(buf: &[u8], base: usize) -> Result<(&[u8], &[u8]), WireError> {
    let mut r = Reader::new(buf, base, Version::V1.message_name());
    let (mut name, mut value): (&[u8], &[u8]) = (b"", b"");
    while !r.done() {
        let (field, wire) = r.key()?;
        match field {
            1 => {
                r.expect(field, wire, LEN)?;
                name = r.bytes()?.0;
            }
            2 => {
                r.expect(field, wire, LEN)?;
                value = r.bytes()?.0;
            }
            _ => r.skip(field, wire)?,
        }
    }
    Ok((name, value))
}

#[inline]
fn decode_sample(buf: &[u8], base: usize, version: Version) -> Result<Latest, WireError> {
    let mut r = Reader::new(buf, base, version.message_name());
    let mut s = Latest { value: 0.0, timestamp_ms: 0 };
    while !r.done() {
        let (field, wire) = r.key()?;
        match field {
            1 => {
                r.expect(field, wire, I64)?;
                s.value = f64::from_bits(r.fixed64()?);
            }
            2 => {
                r.expect(field, wire, VARINT)?;
                s.timestamp_ms = r.varint()? as i64;
            }
            _ => r.skip(field, wire)?,
        }
    }
    Ok(s)
}

fn decode_v1_metadata(buf: &[u8], base: usize) -> Result<Option<MetadataView<'_>>, WireError> {
    let mut r = Reader::new(buf, base, Version::V1.message_name());
    let mut m = MetadataView { kind: 0, family: "", help: "", unit: "" };
    let mut utf8 = true;
    while !r.done() {
        let (field, wire) = r.key()?;
        let target = match field {
            1 => {
                r.expect(field, wire, VARINT)?;
                m.kind = r.varint()? as i32;
                continue;
            }
            2 => &mut m.family,
            4 => &mut m.help,
            5 => &mut m.unit,
            _ => {
                r.skip(field, wire)?;
                continue;
            }
        };
        r.expect(field, wire, LEN)?;
        match std::str::from_utf8(r.bytes()?.0) {
            Ok(s) => *target = s,
            Err(_) => utf8 = false,
        }
    }
    // Metadata is advisory: an entry with broken text is left out rather than failing samples.
    Ok((utf8 && !m.family.is_empty()).then_some(m))
}

/// Decodes a 2.0 `io.prometheus.write.v2.Request` (already decompressed).
pub fn decode_v2(buf: &[u8]) -> Result<WriteView<'_>, WireError> {
    let message = Version::V2.message_name();
    let mut view = WriteView::default();
    // Pass 1: the symbol table (it may come after the series on the wire).
    let mut r = Reader::new(buf, 0, message);
    while !r.done() {
        let (field, wire) = r.key()?;
        match field {
            1..=3 => {
                return Err(r.err(format!(
                    "field {field} is reserved in {message}; is this a prometheus.WriteRequest (remote_write 1.0) sent with the 2.0 Content-Type?"
                )));
            }
            4 => {
                r.expect(field, wire, LEN)?;
                view.symbols.push(std::str::from_utf8(r.bytes()?.0).ok());
            }
            _ => r.skip(field, wire)?,
        }
    }
    if let Some(first) = view.symbols.first()
        && *first != Some("")
    {
        return Err(WireError { message, problem: "the first symbol must be the empty string".into(), offset: 0 });
    }
    // Pass 2: the series.
    let mut r = Reader::new(buf, 0, message);
    while !r.done() {
        let (field, wire) = r.key()?;
        if field == 5 {
            r.expect(field, wire, LEN)?;
            let (ts, base) = r.bytes()?;
            decode_v2_series(ts, base, &mut view)?;
        } else {
            r.skip(field, wire)?;
        }
    }
    Ok(view)
}

fn decode_v2_series<'a>(buf: &'a [u8], base: usize, view: &mut WriteView<'a>) -> Result<(), WireError> {
    let message = Version::V2.message_name();
    let mut r = Reader::new(buf, base, message);
    let start = view.labels.len();
    let mut series = SeriesView {
        labels: start..start,
        raw: base..base + buf.len(),
        latest: None,
        samples: 0,
        histograms: 0,
        exemplars: 0,
        problem: None,
        metadata: None,
    };
    let mut refs_seen = 0usize;
    // A name reference waiting for its value (refs may be split over several packed runs).
    let mut pending: Option<u64> = None;
    let mut push_ref = |reference: u64, series: &mut SeriesView, view: &mut WriteView<'a>| {
        refs_seen += 1;
        match pending.take() {
            None => pending = Some(reference),
            Some(name_ref) => {
                let label_index = refs_seen / 2 - 1;
                let lookup = |r: u64| view.symbols.get(usize::try_from(r).unwrap_or(usize::MAX)).copied();
                match (lookup(name_ref), lookup(reference)) {
                    (Some(Some(n)), Some(Some(v))) => view.labels.push((n, v)),
                    (None, _) => {
                        series.problem.get_or_insert(SeriesProblem::SymbolOutOfRange {
                            reference: name_ref,
                            symbols: view.symbols.len(),
                        });
                    }
                    (_, None) => {
                        series
                            .problem
                            .get_or_insert(SeriesProblem::SymbolOutOfRange { reference, symbols: view.symbols.len() });
                    }
                    (Some(None), _) => {
                        series.problem.get_or_insert(SeriesProblem::InvalidUtf8 { label_index, name: true });
                    }
                    (_, Some(None)) => {
                        series.problem.get_or_insert(SeriesProblem::InvalidUtf8 { label_index, name: false });
                    }
                }
            }
        }
    };
    while !r.done() {
        let (field, wire) = r.key()?;
        match field {
            1 => match wire {
                VARINT => {
                    let v = r.varint()?;
                    push_ref(v, &mut series, view);
                }
                LEN => {
                    let (packed, pbase) = r.bytes()?;
                    let mut p = Reader::new(packed, pbase, message);
                    while !p.done() {
                        let v = p.varint()?;
                        push_ref(v, &mut series, view);
                    }
                }
                _ => return Err(r.err(format!("field 1 has wire type {wire}, expected 0 or 2"))),
            },
            2 => {
                r.expect(field, wire, LEN)?;
                let (sample, sbase) = r.bytes()?;
                let s = decode_sample(sample, sbase, Version::V2)?;
                series.samples += 1;
                keep_latest(&mut series.latest, s);
            }
            3 => {
                r.expect(field, wire, LEN)?;
                r.bytes()?;
                series.histograms += 1;
            }
            4 => {
                r.expect(field, wire, LEN)?;
                r.bytes()?;
                series.exemplars += 1;
            }
            5 => {
                r.expect(field, wire, LEN)?;
                let (md, mbase) = r.bytes()?;
                series.metadata = decode_v2_metadata(md, mbase, view.symbols.len())?;
            }
            _ => r.skip(field, wire)?,
        }
    }
    if pending.is_some() {
        series.problem.get_or_insert(SeriesProblem::OddLabelRefs { len: refs_seen });
    }
    series.labels = start..view.labels.len();
    view.series.push(series);
    Ok(())
}

fn decode_v2_metadata(buf: &[u8], base: usize, symbols: usize) -> Result<Option<SeriesMetadata>, WireError> {
    let mut r = Reader::new(buf, base, Version::V2.message_name());
    let (mut kind, mut help, mut unit) = (0i32, 0u64, 0u64);
    while !r.done() {
        let (field, wire) = r.key()?;
        match field {
            1 | 3 | 4 => {
                r.expect(field, wire, VARINT)?;
                let v = r.varint()?;
                match field {
                    1 => kind = v as i32,
                    3 => help = v,
                    _ => unit = v,
                }
            }
            _ => r.skip(field, wire)?,
        }
    }
    let index = |r: u64| usize::try_from(r).ok().filter(|&i| i < symbols);
    match (index(help), index(unit)) {
        // Out-of-range metadata references lose the metadata, not the samples.
        (Some(help), Some(unit)) => Ok(Some(SeriesMetadata { kind, help, unit })),
        _ => Ok(None),
    }
}

/// Re-encodes the series `keep` selects as a 1.0 `prometheus.WriteRequest` (uncompressed),
/// with every sample they carried, for forwarding to a long-term store (all of them speak 1.0).
///
/// `raw` is the buffer `view` was decoded from. 1.0 series are copied field by field from
/// their original bytes (labels, samples, exemplars; native histograms are left out, as the
/// collector refuses them); 2.0 series get their labels resolved and their samples copied (the
/// two `Sample` messages are the same on the wire). Metadata goes along: 1.0 entries as they
/// came, 2.0 per-series metadata as one entry per metric family.
pub fn to_v1(raw: &[u8], view: &WriteView<'_>, version: Version, keep: impl Fn(usize) -> bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut series = Vec::new();
    for (i, s) in view.series.iter().enumerate() {
        if !keep(i) || s.problem.is_some() {
            continue;
        }
        series.clear();
        if version == Version::V2 {
            for (name, value) in view.labels_of(s) {
                let mut label = Vec::with_capacity(name.len() + value.len() + 4);
                put_bytes(&mut label, 1, name.as_bytes());
                put_bytes(&mut label, 2, value.as_bytes());
                put_bytes(&mut series, 1, &label);
            }
        }
        // Copy the fields worth forwarding from the series' own bytes. They decoded once
        // already, so walking them again cannot fail; a failure would only end the copy early.
        let body = &raw[s.raw.clone()];
        let mut r = Reader::new(body, s.raw.start, version.message_name());
        while !r.done() {
            let start = r.pos;
            let Ok((field, wire)) = r.key() else { break };
            if r.skip(field, wire).is_err() {
                break;
            }
            let copy = match version {
                Version::V1 => matches!(field, 1..=3),
                Version::V2 => field == 2,
            };
            if copy {
                series.extend_from_slice(&body[start..r.pos]);
            }
        }
        put_bytes(&mut out, 1, &series);
    }
    let mut families: Vec<(&str, i32, &str, &str)> =
        view.metadata.iter().map(|m| (m.family, m.kind, m.help, m.unit)).collect();
    for s in view.series.iter().enumerate().filter(|(i, s)| keep(*i) && s.problem.is_none()).map(|(_, s)| s) {
        if let Some(m) = s.metadata
            && let Some((_, name)) = view.labels_of(s).iter().find(|(k, _)| *k == "__name__")
            && !families.iter().any(|f| f.0 == *name)
        {
            families.push((name, m.kind, view.symbol(m.help), view.symbol(m.unit)));
        }
    }
    for (family, kind, help, unit) in families {
        let mut m = Vec::new();
        if kind != 0 {
            m.push(0x08);
            put_varint(&mut m, kind as u64);
        }
        put_bytes(&mut m, 2, family.as_bytes());
        if !help.is_empty() {
            put_bytes(&mut m, 4, help.as_bytes());
        }
        if !unit.is_empty() {
            put_bytes(&mut m, 5, unit.as_bytes());
        }
        put_bytes(&mut out, 3, &m);
    }
    out
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A length-delimited field.
fn put_bytes(out: &mut Vec<u8>, field: u64, bytes: &[u8]) {
    put_varint(out, field << 3 | u64::from(LEN));
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prompb::{self, Label, MetricMetadata, Sample, TimeSeries, WriteRequest};
    use crate::writev2;
    use proptest::prelude::*;
    use prost::Message;

    /// Label pairs and (value, timestamp) samples of one series.
    type TestSeries = (Vec<(String, String)>, Vec<(f64, i64)>);

    fn v1_request(series: Vec<TestSeries>) -> WriteRequest {
        WriteRequest {
            timeseries: series
                .into_iter()
                .map(|(labels, samples)| TimeSeries {
                    labels: labels.into_iter().map(|(n, v)| Label::new(n, v)).collect(),
                    samples: samples.into_iter().map(|(value, timestamp)| Sample { value, timestamp }).collect(),
                    exemplars: vec![],
                })
                .collect(),
            metadata: vec![],
        }
    }

    /// The newest sample as prost's decoded form says it is.
    fn latest_of(samples: &[(f64, i64)]) -> Option<(u64, i64)> {
        let mut best: Option<(f64, i64)> = None;
        for &(v, t) in samples {
            if best.is_none_or(|(_, bt)| t >= bt) {
                best = Some((v, t));
            }
        }
        best.map(|(v, t)| (v.to_bits(), t))
    }

    #[test]
    fn decodes_what_prost_encodes_v1() {
        let mut req = v1_request(vec![
            (vec![("__name__".into(), "up".into()), ("job".into(), "a".into())], vec![(1.0, 10), (0.0, 20)]),
            (vec![("__name__".into(), "x".into())], vec![]),
        ]);
        req.metadata.push(MetricMetadata {
            r#type: prompb::MetricType::Counter as i32,
            metric_family_name: "x_total".into(),
            help: "help".into(),
            unit: "".into(),
        });
        let bytes = req.encode_to_vec();
        let view = decode_v1(&bytes).unwrap();
        assert_eq!(view.series.len(), 2);
        assert_eq!(view.labels_of(&view.series[0]), &[("__name__", "up"), ("job", "a")]);
        assert_eq!(view.series[0].latest, Some(Latest { value: 0.0, timestamp_ms: 20 }));
        assert_eq!(view.series[0].samples, 2);
        assert_eq!(view.series[1].latest, None);
        assert_eq!(view.metadata[0], MetadataView { kind: 1, family: "x_total", help: "help", unit: "" });
    }

    #[test]
    fn decodes_the_prometheus_fixture() {
        let body = include_bytes!("../tests/fixtures/prometheus-2.42.0-remote-write.bin");
        let raw = crate::snappy::decompress(body, 64 << 20).unwrap();
        let view = decode_v1(&raw).unwrap();
        let reference = WriteRequest::decode(raw.as_slice()).unwrap();
        assert_eq!(view.series.len(), reference.timeseries.len());
        for (s, r) in view.series.iter().zip(&reference.timeseries) {
            let labels: Vec<(&str, &str)> = r.labels.iter().map(|l| (l.name.as_str(), l.value.as_str())).collect();
            assert_eq!(view.labels_of(s), labels.as_slice());
            let samples: Vec<(f64, i64)> = r.samples.iter().map(|s| (s.value, s.timestamp)).collect();
            assert_eq!(s.latest.map(|l| (l.value.to_bits(), l.timestamp_ms)), latest_of(&samples));
        }
    }

    #[test]
    fn v2_resolves_symbols_and_metadata() {
        let mut b = writev2::RequestBuilder::new();
        b.series(
            &[("__name__", "up"), ("job", "a")],
            &[(1.0, 5), (2.0, 6)],
            Some((writev2::MetricType::Gauge, "Up.", "")),
        );
        b.raw(writev2::TimeSeries {
            labels_refs: vec![1, 2, 3],
            samples: vec![writev2::Sample { value: 1.0, timestamp: 1 }],
            histograms: vec![],
            exemplars: vec![],
            metadata: None,
            created_timestamp: 0,
        });
        b.raw(writev2::TimeSeries {
            labels_refs: vec![1, 99],
            samples: vec![writev2::Sample { value: 1.0, timestamp: 1 }],
            histograms: vec![writev2::Histogram::default()],
            exemplars: vec![],
            metadata: None,
            created_timestamp: 0,
        });
        let bytes = b.build().encode_to_vec();
        let view = decode_v2(&bytes).unwrap();
        let s = &view.series[0];
        assert_eq!(view.labels_of(s), &[("__name__", "up"), ("job", "a")]);
        assert_eq!(s.latest, Some(Latest { value: 2.0, timestamp_ms: 6 }));
        let md = s.metadata.unwrap();
        assert_eq!((md.kind, view.symbol(md.help), view.symbol(md.unit)), (2, "Up.", ""));
        assert_eq!(view.series[1].problem, Some(SeriesProblem::OddLabelRefs { len: 3 }));
        assert_eq!(view.series[2].problem, Some(SeriesProblem::SymbolOutOfRange { reference: 99, symbols: 6 }));
        assert_eq!(view.series[2].histograms, 1);
    }

    #[test]
    fn v2_refuses_a_v1_body_and_a_bad_symbol_table() {
        let v1 = v1_request(vec![(vec![("__name__".into(), "up".into())], vec![(1.0, 1)])]).encode_to_vec();
        let e = decode_v2(&v1).unwrap_err();
        assert!(e.to_string().contains("reserved"), "{e}");
        let bad = writev2::Request { symbols: vec!["x".into()], timeseries: vec![] }.encode_to_vec();
        assert!(decode_v2(&bad).unwrap_err().to_string().contains("first symbol"));
    }

    #[test]
    fn framing_errors_name_the_problem_and_the_offset() {
        let good = v1_request(vec![(vec![("__name__".into(), "up".into())], vec![(1.0, 1)])]).encode_to_vec();
        let e = decode_v1(&good[..good.len() - 3]).unwrap_err();
        assert!(e.to_string().starts_with("remote_write body is not a valid prometheus.WriteRequest protobuf"), "{e}");
        assert!(e.problem.contains("only"), "{e}");
        assert!(decode_v1(&[0x0a]).is_err());
        assert!(decode_v1(&[0x00]).unwrap_err().problem.contains("field number 0"));
        assert!(decode_v1(&[0x0f]).unwrap_err().problem.contains("wire type 7"));
        // An unknown group is skipped, as prost skips it; an unterminated one is an error.
        assert!(decode_v1(&[0x13, 0x08, 0x01, 0x14]).is_ok());
        assert!(WriteRequest::decode(&[0x13u8, 0x08, 0x01, 0x14][..]).is_ok());
        assert!(decode_v1(&[0x13, 0x08, 0x01]).is_err());
        assert!(decode_v1(&[0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]).is_err());
        assert!(decode_v1(&[0x11, 1, 2, 3]).unwrap_err().problem.contains("truncated"));
        // Field 1 with the wrong wire type: prost refuses it too.
        assert!(decode_v1(&[0x08, 0x01]).is_err());
        assert!(WriteRequest::decode(&[0x08u8, 0x01][..]).is_err());
    }

    #[test]
    fn invalid_utf8_is_a_problem_of_its_series_only() {
        // Two series; the first has a value of 0xff.
        let label = |n: &[u8], v: &[u8]| {
            let mut l = vec![0x0a, n.len() as u8];
            l.extend_from_slice(n);
            l.push(0x12);
            l.push(v.len() as u8);
            l.extend_from_slice(v);
            l
        };
        let series = |l: Vec<u8>| {
            let mut s = vec![0x0a, l.len() as u8];
            s.extend_from_slice(&l);
            let mut out = vec![0x0a, s.len() as u8];
            out.extend_from_slice(&s);
            out
        };
        let mut body = series(label(b"__name__", b"\xff"));
        body.extend(series(label(b"__name__", b"ok")));
        let view = decode_v1(&body).unwrap();
        assert_eq!(view.series[0].problem, Some(SeriesProblem::InvalidUtf8 { label_index: 0, name: false }));
        assert_eq!(view.series[1].problem, None);
        assert_eq!(view.labels_of(&view.series[1]), &[("__name__", "ok")]);
    }

    #[test]
    fn to_v1_keeps_every_sample_of_the_chosen_series() {
        let mut req = v1_request(vec![
            (vec![("__name__".into(), "a".into())], vec![(1.0, 1), (2.0, 2)]),
            (vec![("__name__".into(), "b".into())], vec![(3.0, 3)]),
        ]);
        req.metadata.push(MetricMetadata {
            r#type: 2,
            metric_family_name: "a".into(),
            help: "A.".into(),
            unit: "".into(),
        });
        let bytes = req.encode_to_vec();
        let view = decode_v1(&bytes).unwrap();
        let all = WriteRequest::decode(to_v1(&bytes, &view, Version::V1, |_| true).as_slice()).unwrap();
        assert_eq!(all, req, "everything kept: the same request");
        let only_b = WriteRequest::decode(to_v1(&bytes, &view, Version::V1, |i| i == 1).as_slice()).unwrap();
        assert_eq!(only_b.timeseries, vec![req.timeseries[1].clone()]);

        let mut b = writev2::RequestBuilder::new();
        b.series(
            &[("__name__", "x"), ("job", "j")],
            &[(1.5, 10), (2.5, 20)],
            Some((writev2::MetricType::Counter, "X.", "")),
        );
        b.raw(writev2::TimeSeries {
            labels_refs: vec![1, 99],
            samples: vec![writev2::Sample { value: 1.0, timestamp: 1 }],
            histograms: vec![],
            exemplars: vec![],
            metadata: None,
            created_timestamp: 0,
        });
        let v2 = b.build().encode_to_vec();
        let view = decode_v2(&v2).unwrap();
        let v1 = WriteRequest::decode(to_v1(&v2, &view, Version::V2, |_| true).as_slice()).unwrap();
        assert_eq!(v1.timeseries.len(), 1, "the series with a bad reference is left out");
        assert_eq!(v1.timeseries[0].labels, vec![Label::new("__name__", "x"), Label::new("job", "j")]);
        assert_eq!(
            v1.timeseries[0].samples,
            vec![Sample { value: 1.5, timestamp: 10 }, Sample { value: 2.5, timestamp: 20 }]
        );
        assert_eq!(v1.metadata[0].metric_family_name, "x");
        assert_eq!((v1.metadata[0].r#type, v1.metadata[0].help.as_str()), (1, "X."));
    }

    #[test]
    fn content_types() {
        assert_eq!(Version::from_content_type("application/x-protobuf"), Ok(Version::V1));
        assert_eq!(Version::from_content_type(""), Ok(Version::V1));
        assert_eq!(Version::from_content_type("application/x-protobuf;proto=prometheus.WriteRequest"), Ok(Version::V1));
        assert_eq!(Version::from_content_type(writev2::CONTENT_TYPE), Ok(Version::V2));
        assert_eq!(
            Version::from_content_type("Application/X-Protobuf; proto=\"io.prometheus.write.v2.Request\""),
            Ok(Version::V2)
        );
        assert!(Version::from_content_type("application/x-protobuf;proto=io.prometheus.write.v3.Request").is_err());
        assert!(Version::from_content_type("application/json").is_err());
    }

    fn label_text() -> impl Strategy<Value = String> {
        proptest::string::string_regex("[a-zA-Z_é]{0,12}").unwrap()
    }

    proptest! {
        #[test]
        fn v1_agrees_with_prost(
            series in proptest::collection::vec(
                (proptest::collection::vec((label_text(), label_text()), 0..6),
                 proptest::collection::vec((any::<f64>(), any::<i64>()), 0..4)),
                0..8)
        ) {
            let req = v1_request(series);
            let bytes = req.encode_to_vec();
            let view = decode_v1(&bytes).unwrap();
            // Compared with what prost decodes (proto3 drops -0.0 as a default, for one).
            let reference = WriteRequest::decode(bytes.as_slice()).unwrap();
            prop_assert_eq!(view.series.len(), reference.timeseries.len());
            for (s, r) in view.series.iter().zip(&reference.timeseries) {
                let want: Vec<(&str, &str)> = r.labels.iter().map(|l| (l.name.as_str(), l.value.as_str())).collect();
                prop_assert_eq!(view.labels_of(s), want.as_slice());
                prop_assert_eq!(s.samples as usize, r.samples.len());
                let samples: Vec<(f64, i64)> = r.samples.iter().map(|s| (s.value, s.timestamp)).collect();
                prop_assert_eq!(s.latest.map(|l| (l.value.to_bits(), l.timestamp_ms)), latest_of(&samples));
            }
        }

        #[test]
        fn v2_agrees_with_prost(
            series in proptest::collection::vec(
                (proptest::collection::vec((label_text(), label_text()), 0..6),
                 proptest::collection::vec((any::<f64>(), any::<i64>()), 0..4)),
                0..8)
        ) {
            let mut b = writev2::RequestBuilder::new();
            for (labels, samples) in &series {
                let l: Vec<(&str, &str)> = labels.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
                b.series(&l, samples, None);
            }
            let bytes = b.build().encode_to_vec();
            let view = decode_v2(&bytes).unwrap();
            let reference = writev2::Request::decode(bytes.as_slice()).unwrap();
            prop_assert_eq!(view.series.len(), series.len());
            for (s, r) in view.series.iter().zip(&reference.timeseries) {
                let want: Vec<(&str, &str)> = r
                    .labels_refs
                    .chunks(2)
                    .map(|p| (reference.symbols[p[0] as usize].as_str(), reference.symbols[p[1] as usize].as_str()))
                    .collect();
                prop_assert_eq!(view.labels_of(s), want.as_slice());
                let samples: Vec<(f64, i64)> = r.samples.iter().map(|s| (s.value, s.timestamp)).collect();
                prop_assert_eq!(s.latest.map(|l| (l.value.to_bits(), l.timestamp_ms)), latest_of(&samples));
            }
        }

        #[test]
        fn to_v1_round_trips(
            series in proptest::collection::vec(
                (proptest::collection::vec((label_text(), label_text()), 0..4),
                 proptest::collection::vec((any::<f64>(), any::<i64>()), 0..4)),
                0..6)
        ) {
            let mut b = writev2::RequestBuilder::new();
            for (labels, samples) in &series {
                let l: Vec<(&str, &str)> = labels.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
                b.series(&l, samples, None);
            }
            let v2 = b.build().encode_to_vec();
            let view2 = decode_v2(&v2).unwrap();
            let v1 = to_v1(&v2, &view2, Version::V2, |_| true);
            let req = WriteRequest::decode(v1.as_slice()).unwrap();
            let direct = v1_request(series).encode_to_vec();
            // Bytes compared: NaN samples are not equal to themselves.
            prop_assert_eq!(req.encode_to_vec(), WriteRequest::decode(direct.as_slice()).unwrap().encode_to_vec());
            let view1 = decode_v1(&direct).unwrap();
            prop_assert_eq!(to_v1(&direct, &view1, Version::V1, |_| true), direct.clone());
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_v1(&data);
            if let Ok(v) = decode_v2(&data) {
                let _ = to_v1(&data, &v, Version::V2, |_| true);
            }
        }

        #[test]
        fn decodes_exactly_when_prost_does(data in proptest::collection::vec(any::<u8>(), 0..256)) {
            // Where prost accepts the bytes as a WriteRequest, so do we (we may refuse less:
            // bad UTF-8 is a per-series problem here, a whole-request error in prost).
            if WriteRequest::decode(data.as_slice()).is_ok() {
                prop_assert!(decode_v1(&data).is_ok());
            }
        }
    }
}
