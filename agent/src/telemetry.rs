//! The agent's own metrics (`osprey_agent_*`), served on its `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkLabels {
    pub sink: &'static str,
}

#[derive(Clone)]
pub struct Telemetry {
    pub lines_read: Counter,
    pub bytes_read: Counter,
    pub files_open: Gauge,
    pub files_unreadable: Counter,
    pub truncations: Counter,
    pub rotations: Counter,
    pub batches_sent: Family<SinkLabels, Counter>,
    pub batches_retried: Family<SinkLabels, Counter>,
    pub batches_dropped: Family<SinkLabels, Counter>,
    pub send_seconds: Family<SinkLabels, Histogram>,
    pub host_metrics_collections: Counter,
    /// File tailing (`tail/`).
    pub tail: TailTelemetry,
    /// Sinks failing right now, for `/health` (not a metric).
    pub sink_health: crate::ops::SinkHealth,
}

impl Telemetry {
    pub fn new(registry: &mut Registry) -> Self {
        let t = Telemetry {
            lines_read: Counter::default(),
            bytes_read: Counter::default(),
            files_open: Gauge::default(),
            files_unreadable: Counter::default(),
            truncations: Counter::default(),
            rotations: Counter::default(),
            batches_sent: Family::default(),
            batches_retried: Family::default(),
            batches_dropped: Family::default(),
            send_seconds: Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.001, 4.0, 9))),
            host_metrics_collections: Counter::default(),
            tail: TailTelemetry::new(registry),
            sink_health: crate::ops::SinkHealth::default(),
        };
        let r = registry.sub_registry_with_prefix("osprey_agent");
        r.register("lines_read", "Log lines read from files", t.lines_read.clone());
        r.register("bytes_read", "Bytes read from log files", t.bytes_read.clone());
        r.register("files_open", "Log files currently open", t.files_open.clone());
        r.register("files_unreadable", "Matched files that could not be opened", t.files_unreadable.clone());
        r.register(
            "file_truncations",
            "Files found shorter than the read offset (copytruncate)",
            t.truncations.clone(),
        );
        r.register("file_rotations", "Files replaced at their path (rename and create)", t.rotations.clone());
        r.register("batches_sent", "Batches acknowledged by the receiver", t.batches_sent.clone());
        r.register("batches_retried", "Batch sends that failed and were retried", t.batches_retried.clone());
        r.register(
            "batches_dropped",
            "Batches refused by the receiver with a non-retryable status",
            t.batches_dropped.clone(),
        );
        r.register(
            "send_duration_seconds",
            "Time from first send to acknowledgement of a batch",
            t.send_seconds.clone(),
        );
        r.register("host_metrics_collections", "Host metric collections run", t.host_metrics_collections.clone());
        t
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FileLabels {
    pub path: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

/// Self metrics of file tailing. Per-file series exist while the file is followed and are removed
/// when it is released, so their number is bounded by the files followed.
#[derive(Clone)]
pub struct TailTelemetry {
    pub file_bytes_read: Family<FileLabels, Counter>,
    pub file_lag_bytes: Family<FileLabels, Gauge>,
    pub deleted_bytes_held: Gauge,
    pub bytes_unread: Counter,
    pub lines_truncated: Counter,
    pub lines_invalid_utf8: Counter,
    pub lines_filtered: Counter,
    pub lines_refused: Counter,
    pub parse_failures: Counter,
    pub timestamp_failures: Counter,
    pub rewrites: Counter,
    pub rotated_tails: Counter,
    pub files_skipped: Family<ReasonLabels, Counter>,
    pub files_open_limit_reached: Counter,
    pub files_watched_dirs: Gauge,
    pub checkpoint_writes: Counter,
    pub checkpoint_write_failures: Counter,
    pub checkpoint_corruptions: Counter,
    pub ack_seconds: Histogram,
    pub batches_built: Counter,
    /// The error of the last checkpoint write, while writes fail (for `/health`).
    pub checkpoint_failing: std::sync::Arc<std::sync::Mutex<Option<String>>>,
}

impl TailTelemetry {
    pub fn new(registry: &mut Registry) -> Self {
        let t = TailTelemetry {
            file_bytes_read: Family::default(),
            file_lag_bytes: Family::default(),
            deleted_bytes_held: Gauge::default(),
            bytes_unread: Counter::default(),
            lines_truncated: Counter::default(),
            lines_invalid_utf8: Counter::default(),
            lines_filtered: Counter::default(),
            lines_refused: Counter::default(),
            parse_failures: Counter::default(),
            timestamp_failures: Counter::default(),
            rewrites: Counter::default(),
            rotated_tails: Counter::default(),
            files_skipped: Family::default(),
            files_open_limit_reached: Counter::default(),
            files_watched_dirs: Gauge::default(),
            checkpoint_writes: Counter::default(),
            checkpoint_write_failures: Counter::default(),
            checkpoint_corruptions: Counter::default(),
            ack_seconds: Histogram::new(exponential_buckets(0.001, 4.0, 10)),
            batches_built: Counter::default(),
            checkpoint_failing: Default::default(),
        };
        let r = registry.sub_registry_with_prefix("osprey_agent");
        r.register("file_bytes_read", "Bytes read per followed file", t.file_bytes_read.clone());
        r.register(
            "file_lag_bytes",
            "Bytes of a followed file not read yet (size minus read offset)",
            t.file_lag_bytes.clone(),
        );
        r.register(
            "deleted_bytes_held",
            "Bytes of deleted files still held open (until read or rotate_wait passes)",
            t.deleted_bytes_held.clone(),
        );
        r.register(
            "file_bytes_unread",
            "Bytes of rotated or deleted files released before they were read",
            t.bytes_unread.clone(),
        );
        r.register("lines_truncated", "Lines (or multiline events) cut to max_line_bytes", t.lines_truncated.clone());
        r.register("lines_invalid_utf8", "Lines with invalid UTF-8, replaced by U+FFFD", t.lines_invalid_utf8.clone());
        r.register("lines_filtered", "Lines dropped by keep_lines / drop_lines", t.lines_filtered.clone());
        r.register("lines_refused", "Lines in batches the receiver refused for good (4xx)", t.lines_refused.clone());
        r.register(
            "line_parse_failures",
            "Lines that did not parse as the source's format (shipped unparsed)",
            t.parse_failures.clone(),
        );
        r.register(
            "timestamp_parse_failures",
            "Timestamp fields that did not parse (read time used)",
            t.timestamp_failures.clone(),
        );
        r.register(
            "file_rewrites",
            "Files whose inode was reused or whose content was rewritten (read again from the start)",
            t.rewrites.clone(),
        );
        r.register(
            "rotated_tails_read",
            "Unread tails recovered from a rotated file found next to the original (rename or copytruncate)",
            t.rotated_tails.clone(),
        );
        r.register("files_skipped", "Matched files not followed, by reason", t.files_skipped.clone());
        r.register(
            "files_open_limit_reached",
            "Times a file waited because sources.max_open_files descriptors were in use",
            t.files_open_limit_reached.clone(),
        );
        r.register("watched_directories", "Directories watched for matching files", t.files_watched_dirs.clone());
        r.register("checkpoint_writes", "Tail checkpoint store writes (each fsynced)", t.checkpoint_writes.clone());
        r.register(
            "checkpoint_write_failures",
            "Tail checkpoint store writes that failed",
            t.checkpoint_write_failures.clone(),
        );
        r.register(
            "checkpoint_corruptions",
            "Corrupt tail checkpoint stores found at start (set aside)",
            t.checkpoint_corruptions.clone(),
        );
        r.register("log_batches_built", "Log batches handed to the sink", t.batches_built.clone());
        r.register(
            "ack_latency_seconds",
            "Time from a log batch being built to its acknowledgement by the receiver",
            t.ack_seconds.clone(),
        );
        t
    }
}
