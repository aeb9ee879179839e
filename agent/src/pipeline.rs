//! What flows between sources and sinks.
//!
//! Sources build whole batches (grouped by stream) and hand them to a sink over a bounded
//! channel; when the sink is slow the channel fills and the source's `send` waits, so a slow or
//! absent receiver pauses reading (files are the buffer) instead of growing memory.
//!
//! A log batch carries a [`Receipt`]: the sink finishes it once the receiver has answered for
//! good (delivered, or refused as bad data), and the source learns which of its positions are now
//! safe to checkpoint. Sinks finish receipts in the order the batches arrived (even when several
//! requests are out at once), so positions only ever move forward past stored lines.

use osprey_protocol::prompb::TimeSeries;
use std::sync::Arc;

/// Lines of one stream (one label set), already in their wire form.
///
/// Each line is encoded as it is read, straight into the stream's buffer, behind room left for
/// the stream's header: the Loki sink compresses these bytes as they are, stream after stream
/// (`sink::loki::compress_pieces`). No `String` per line, no second pass over the lines.
#[derive(Debug, Clone)]
pub struct StreamLines {
    /// Canonical Loki label text, e.g. `{filename="/var/log/syslog", host="a", job="varlogs"}`.
    pub labels: Arc<str>,
    /// `room` bytes for the header ([`StreamLines::encoded`] writes it), then the stream's
    /// `entries` (field 2 of `logproto.StreamAdapter`, each with its key and length).
    buf: Vec<u8>,
    room: usize,
}

impl StreamLines {
    /// An empty stream whose entries go into `buf` (cleared; its capacity is reused).
    pub fn with_buffer(labels: Arc<str>, mut buf: Vec<u8>) -> Self {
        let room = crate::sink::loki::stream_header_room(&labels);
        buf.clear();
        buf.resize(room, 0);
        StreamLines { labels, buf, room }
    }

    /// Appends one line (or joined multiline event): nanoseconds since the epoch, the text, and
    /// its Loki structured metadata.
    #[inline]
    pub fn push(&mut self, ts: i64, line: &str, metadata: &[(String, String)]) {
        crate::sink::loki::put_entry(&mut self.buf, ts, line, metadata);
    }

    /// Bytes of encoded entries.
    pub fn entries_len(&self) -> usize {
        self.buf.len() - self.room
    }

    /// The stream as field 1 of `logproto.PushRequest` (key, length, labels, entries): the
    /// header is written into the room left in front of the entries.
    pub fn encoded(&mut self) -> &[u8] {
        let entries = self.buf.len() - self.room;
        let start = crate::sink::loki::put_stream_header(&mut self.buf[..self.room], &self.labels, entries);
        &self.buf[start..]
    }

    /// The buffer, for reuse.
    pub fn into_buffer(self) -> Vec<u8> {
        self.buf
    }
}

/// Byte buffers handed back by the sink once a batch is encoded, for the next batches' streams:
/// at full speed each 1 MiB batch would otherwise allocate, grow (copying) and fault in fresh
/// pages. Bounded by the bytes it keeps; beyond that a buffer is simply freed.
#[derive(Clone)]
pub struct BufferPool {
    inner: Arc<std::sync::Mutex<(Vec<Vec<u8>>, usize)>>,
    max_bytes: usize,
}

impl BufferPool {
    pub fn new(max_bytes: usize) -> Self {
        BufferPool { inner: Arc::default(), max_bytes }
    }

    /// A buffer from the pool (the largest one), or a new one.
    pub fn take(&self) -> Vec<u8> {
        let Ok(mut g) = self.inner.lock() else { return Vec::new() };
        let (bufs, bytes) = &mut *g;
        match bufs.pop() {
            Some(b) => {
                *bytes -= b.capacity();
                b
            }
            None => Vec::new(),
        }
    }

    /// Keeps `buf` for reuse if it fits in the bound.
    pub fn give(&self, mut buf: Vec<u8>) {
        if buf.capacity() == 0 {
            return;
        }
        let Ok(mut g) = self.inner.lock() else { return };
        let (bufs, bytes) = &mut *g;
        if *bytes + buf.capacity() > self.max_bytes {
            return;
        }
        buf.clear();
        *bytes += buf.capacity();
        bufs.push(buf);
        // Largest last: the next stream most likely needs a big one (one file being read fast).
        bufs.sort_unstable_by_key(Vec::capacity);
    }

    /// Bytes of capacity held.
    pub fn bytes(&self) -> usize {
        self.inner.lock().map_or(0, |g| g.1)
    }
}

/// How the receiver answered for a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Stored by the receiver (2xx).
    Delivered,
    /// Refused for good (4xx other than 429): the lines are dropped and counted, and the source
    /// moves past them, since sending them again cannot succeed.
    Refused,
}

/// Called once when a batch's fate is known. Dropped without being finished (shutdown, crash),
/// it reports nothing: the source's checkpoint stays before the batch and the lines are read
/// again after a restart.
#[derive(Default)]
pub struct Receipt(Option<Box<dyn FnOnce(Outcome) + Send>>);

impl Receipt {
    pub fn new(on_finish: impl FnOnce(Outcome) + Send + 'static) -> Self {
        Receipt(Some(Box::new(on_finish)))
    }

    pub fn finish(mut self, outcome: Outcome) {
        if let Some(f) = self.0.take() {
            f(outcome);
        }
    }
}

impl std::fmt::Debug for Receipt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "Receipt(pending)" } else { "Receipt(none)" })
    }
}

/// A batch of log lines, grouped by stream.
#[derive(Debug, Default)]
pub struct LogBatch {
    pub streams: Vec<StreamLines>,
    /// Bytes of line text in the batch.
    pub bytes: usize,
    pub lines: usize,
    pub receipt: Receipt,
}

impl LogBatch {
    pub fn is_empty(&self) -> bool {
        self.lines == 0
    }
}

/// A batch of metric series for remote_write.
#[derive(Debug, Default)]
pub struct MetricBatch {
    pub series: Vec<TimeSeries>,
}
