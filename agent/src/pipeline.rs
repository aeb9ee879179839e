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

/// One log line (or joined multiline event) ready to ship.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Nanoseconds since the epoch: extracted from the line, or the time it was read.
    pub ts: i64,
    pub line: String,
    /// Loki structured metadata (fields parsed from the line that are not labels).
    pub metadata: Vec<(String, String)>,
}

/// Lines of one stream (one label set).
#[derive(Debug, Clone)]
pub struct StreamLines {
    /// Canonical Loki label text, e.g. `{filename="/var/log/syslog", host="a", job="varlogs"}`.
    pub labels: Arc<str>,
    /// In read order.
    pub entries: Vec<Entry>,
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
