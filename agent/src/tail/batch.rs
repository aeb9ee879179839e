//! Building a batch: entries grouped by stream, and the file positions the batch covers.

use super::checkpoint::Position;
use super::identity::Digest;
use crate::pipeline::{BufferPool, LogBatch, StreamLines};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

#[derive(Default)]
pub struct BatchBuilder {
    streams: Vec<StreamLines>,
    /// Where stream buffers come from (the sink gives them back after encoding).
    pool: Option<BufferPool>,
    index: HashMap<Arc<str>, usize>,
    /// The stream of the last push: consecutive lines of one file skip the map.
    last: Option<(Arc<str>, usize)>,
    /// file id -> (end of its last event in this batch, mark there if already known).
    positions: BTreeMap<u64, (u64, Option<Digest>)>,
    pub bytes: usize,
    pub lines: usize,
    /// When the first line or position went in.
    pub started: Option<Instant>,
}

impl BatchBuilder {
    pub fn with_pool(pool: BufferPool) -> Self {
        BatchBuilder { pool: Some(pool), ..BatchBuilder::default() }
    }

    /// Appends one line to its stream, encoded (see [`StreamLines::push`]). Inlined into the read
    /// loop; finding another stream's buffer is out of line.
    #[inline]
    pub fn push(&mut self, labels: &Arc<str>, ts: i64, line: &str, metadata: &[(String, String)]) {
        let idx = match &self.last {
            Some((l, i)) if Arc::ptr_eq(l, labels) => *i,
            _ => self.switch_stream(labels),
        };
        self.bytes += line.len();
        self.lines += 1;
        if let Some(stream) = self.streams.get_mut(idx) {
            stream.push(ts, line, metadata);
        }
        self.started.get_or_insert_with(Instant::now);
    }

    /// The index of the stream with `labels` (a new one if the batch has none yet), which
    /// becomes the one consecutive lines of the same file go to without a map look-up.
    #[cold]
    #[inline(never)]
    fn switch_stream(&mut self, labels: &Arc<str>) -> usize {
        let i = match self.index.get(labels) {
            Some(i) => *i,
            None => {
                let buf = self.pool.as_ref().map(BufferPool::take).unwrap_or_default();
                self.streams.push(StreamLines::with_buffer(labels.clone(), buf));
                self.index.insert(labels.clone(), self.streams.len() - 1);
                self.streams.len() - 1
            }
        };
        self.last = Some((labels.clone(), i));
        i
    }

    /// The file `id` has been turned into events up to `end`.
    pub fn position(&mut self, id: u64, end: u64) {
        self.positions.insert(id, (end, None));
        self.started.get_or_insert_with(Instant::now);
    }

    /// The position of `id` in this batch, if any, and whether its mark is still to compute.
    pub fn pending_mark(&self, id: u64) -> Option<u64> {
        self.positions.get(&id).and_then(|(end, m)| m.is_none().then_some(*end))
    }

    pub fn set_mark(&mut self, id: u64, mark: Digest) {
        if let Some(p) = self.positions.get_mut(&id) {
            p.1 = Some(mark);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.lines == 0 && self.positions.is_empty()
    }

    /// Ids whose mark must be computed before [`BatchBuilder::take`].
    pub fn unmarked(&self) -> Vec<(u64, u64)> {
        self.positions.iter().filter(|(_, (_, m))| m.is_none()).map(|(id, (end, _))| (*id, *end)).collect()
    }

    /// Hands out the batch (without receipt) and the positions it covers.
    pub fn take(&mut self) -> (LogBatch, Vec<Position>) {
        self.index.clear();
        self.last = None;
        self.started = None;
        let positions = std::mem::take(&mut self.positions)
            .into_iter()
            .map(|(id, (offset, mark))| Position { id, offset, mark: mark.unwrap_or_default() })
            .collect();
        let batch = LogBatch {
            streams: std::mem::take(&mut self.streams),
            bytes: std::mem::take(&mut self.bytes),
            lines: std::mem::take(&mut self.lines),
            receipt: Default::default(),
        };
        (batch, positions)
    }
}
