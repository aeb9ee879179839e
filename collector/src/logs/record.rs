//! The WAL payload of one accepted push: a tenant and its streams' entries.
//!
//! Layout (varints are LEB128): `kind: u8 = 1 | tenant: str | streams: varint` then per stream
//! `labels: str | entries: varint`, per entry `ts_ns: i64 LE | line: str | metadata: varint`
//! and that many `name: str | value: str`. A `str` is `len: varint | UTF-8 bytes`. Labels are in
//! canonical form (sorted, see `osprey_protocol::loki_labels::format`), so the same stream
//! always has the same bytes and can be compared without parsing.

const KIND_PUSH: u8 = 1;

/// One entry, borrowed from a decoded payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry<'a> {
    pub ts_ns: i64,
    pub line: &'a str,
    pub metadata: Vec<(&'a str, &'a str)>,
}

/// One stream of a push, borrowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stream<'a> {
    pub labels: &'a str,
    pub entries: Vec<Entry<'a>>,
}

/// A decoded push record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Push<'a> {
    pub tenant: &'a str,
    pub streams: Vec<Stream<'a>>,
}

/// Builds a push payload incrementally, reusing one buffer.
pub struct Encoder {
    buf: Vec<u8>,
    streams_at: usize,
    streams: u64,
}

impl Encoder {
    pub fn new(tenant: &str) -> Self {
        let mut buf = Vec::with_capacity(4096);
        buf.push(KIND_PUSH);
        put_str(&mut buf, tenant);
        let streams_at = buf.len();
        // Placeholder for the stream count, fixed to 5 bytes (a padded varint) so it can be
        // patched in place.
        buf.extend_from_slice(&[0x80, 0x80, 0x80, 0x80, 0x00]);
        Encoder { buf, streams_at, streams: 0 }
    }

    /// Appends a stream with its entries `(ts_ns, line, metadata)`.
    pub fn stream<'e>(
        &mut self,
        labels: &str,
        entries: impl ExactSizeIterator<Item = (i64, &'e str, &'e [(String, String)])>,
    ) {
        put_str(&mut self.buf, labels);
        put_varint(&mut self.buf, entries.len() as u64);
        for (ts, line, meta) in entries {
            self.buf.extend_from_slice(&ts.to_le_bytes());
            put_str(&mut self.buf, line);
            put_varint(&mut self.buf, meta.len() as u64);
            for (k, v) in meta {
                put_str(&mut self.buf, k);
                put_str(&mut self.buf, v);
            }
        }
        self.streams += 1;
    }

    pub fn finish(mut self) -> Vec<u8> {
        let n = self.streams;
        let slot = &mut self.buf[self.streams_at..self.streams_at + 5];
        for (i, b) in slot.iter_mut().enumerate() {
            let byte = ((n >> (7 * i)) & 0x7f) as u8;
            *b = if i < 4 { byte | 0x80 } else { byte };
        }
        self.buf
    }
}

fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn put_str(buf: &mut Vec<u8>, s: &str) {
    put_varint(buf, s.len() as u64);
    buf.extend_from_slice(s.as_bytes());
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid push record at byte {offset}: {problem}")]
pub struct RecordError {
    pub offset: usize,
    pub problem: &'static str,
}

struct Reader<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Reader<'a> {
    fn fail<T>(&self, problem: &'static str) -> Result<T, RecordError> {
        Err(RecordError { offset: self.i, problem })
    }
    fn varint(&mut self) -> Result<u64, RecordError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let Some(&b) = self.b.get(self.i) else { return self.fail("truncated varint") };
            self.i += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        self.fail("varint too long")
    }
    fn str(&mut self) -> Result<&'a str, RecordError> {
        let len = self.varint()? as usize;
        let Some(bytes) = self.b.get(self.i..self.i.saturating_add(len)) else { return self.fail("truncated string") };
        let Ok(s) = std::str::from_utf8(bytes) else { return self.fail("string is not UTF-8") };
        self.i += len;
        Ok(s)
    }
    fn i64(&mut self) -> Result<i64, RecordError> {
        let Some(bytes) = self.b.get(self.i..self.i + 8) else { return self.fail("truncated timestamp") };
        self.i += 8;
        let mut a = [0u8; 8];
        a.copy_from_slice(bytes);
        Ok(i64::from_le_bytes(a))
    }
    /// A count that cannot exceed the bytes left (each item takes at least `min_size`).
    fn count(&mut self, min_size: usize) -> Result<usize, RecordError> {
        let n = self.varint()? as usize;
        if n.saturating_mul(min_size) > self.b.len() - self.i {
            return self.fail("count larger than the record");
        }
        Ok(n)
    }
}

/// Decodes a push payload without copying strings.
pub fn decode(payload: &[u8]) -> Result<Push<'_>, RecordError> {
    let mut r = Reader { b: payload, i: 0 };
    match payload.first() {
        Some(&KIND_PUSH) => r.i = 1,
        _ => return r.fail("unknown record kind"),
    }
    let tenant = r.str()?;
    let n = r.count(2)?;
    let mut streams = Vec::with_capacity(n);
    for _ in 0..n {
        let labels = r.str()?;
        let m = r.count(10)?;
        let mut entries = Vec::with_capacity(m);
        for _ in 0..m {
            let ts_ns = r.i64()?;
            let line = r.str()?;
            let k = r.count(2)?;
            let mut metadata = Vec::with_capacity(k);
            for _ in 0..k {
                metadata.push((r.str()?, r.str()?));
            }
            entries.push(Entry { ts_ns, line, metadata });
        }
        streams.push(Stream { labels, entries });
    }
    if r.i != payload.len() {
        return r.fail("trailing bytes after the last stream");
    }
    Ok(Push { tenant, streams })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trip() {
        let meta = [("trace_id".to_string(), "abc".to_string())];
        let mut enc = Encoder::new("fake");
        enc.stream(r#"{job="a"}"#, [(1i64, "one", &[][..]), (2, "two", &meta[..])].into_iter());
        enc.stream(r#"{job="b"}"#, [(-3i64, "", &[][..])].into_iter());
        let bytes = enc.finish();
        let push = decode(&bytes).unwrap();
        assert_eq!(push.tenant, "fake");
        assert_eq!(push.streams.len(), 2);
        assert_eq!(push.streams[0].entries[1], Entry { ts_ns: 2, line: "two", metadata: vec![("trace_id", "abc")] });
        assert_eq!(push.streams[1].entries[0].ts_ns, -3);
    }

    proptest! {
        #[test]
        fn garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode(&data);
        }
    }
}
