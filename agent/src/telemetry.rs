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
