//! What flows between sources and sinks.
//!
//! Sources build whole batches (grouped by stream) and hand them to a sink over a bounded
//! channel; when the sink is slow the channel fills and the source's `send` waits, so a slow or
//! absent receiver pauses reading (files are the buffer) instead of growing memory.

use osprey_protocol::prompb::TimeSeries;
use std::sync::Arc;

/// Lines of one stream (one label set).
#[derive(Debug, Clone)]
pub struct StreamLines {
    /// Canonical Loki label text, e.g. `{filename="/var/log/syslog", host="a", job="varlogs"}`.
    pub labels: Arc<str>,
    /// `(timestamp in ns since the epoch, line)`, in read order.
    pub entries: Vec<(i64, String)>,
}

/// A batch of log lines, grouped by stream.
#[derive(Debug, Default)]
pub struct LogBatch {
    pub streams: Vec<StreamLines>,
    /// Bytes of line text in the batch.
    pub bytes: usize,
    pub lines: usize,
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
