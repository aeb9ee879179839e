//! The collector's own metrics, served on `/metrics` (prometheus-client).
//!
//! Names are `osprey_*`. Counters are registered without `_total`; the encoder appends it.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub endpoint: &'static str,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    pub endpoint: &'static str,
}

/// Handles to every self metric. Cloning is cheap (each metric is an `Arc` inside).
#[derive(Clone)]
pub struct Telemetry {
    pub lines_ingested: Counter,
    pub bytes_ingested: Counter,
    pub samples_ingested: Counter,
    pub rejected: Family<ReasonLabels, Counter>,
    pub wal_fsyncs: Counter,
    pub wal_bytes: Counter,
    pub wal_corruptions: Counter,
    pub wal_truncated_bytes: Counter,
    pub series_active: Gauge,
    pub series_expired: Counter,
    pub queries: Family<EndpointLabels, Counter>,
    pub request_seconds: Family<EndpointLabels, Histogram>,
    pub wal_fsync_seconds: Histogram,
    pub resident_memory_bytes: Gauge<u64, AtomicU64>,
}

impl Telemetry {
    pub fn new(registry: &mut Registry) -> Self {
        let t = Telemetry {
            lines_ingested: Counter::default(),
            bytes_ingested: Counter::default(),
            samples_ingested: Counter::default(),
            rejected: Family::default(),
            wal_fsyncs: Counter::default(),
            wal_bytes: Counter::default(),
            wal_corruptions: Counter::default(),
            wal_truncated_bytes: Counter::default(),
            series_active: Gauge::default(),
            series_expired: Counter::default(),
            queries: Family::default(),
            request_seconds: Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.0005, 4.0, 10))),
            wal_fsync_seconds: Histogram::new(exponential_buckets(0.0001, 4.0, 10)),
            resident_memory_bytes: Gauge::default(),
        };
        let r = registry.sub_registry_with_prefix("osprey");
        r.register("ingested_lines", "Log lines durably stored", t.lines_ingested.clone());
        r.register("ingested_line_bytes", "Bytes of log lines durably stored", t.bytes_ingested.clone());
        r.register("ingested_samples", "Metric samples stored", t.samples_ingested.clone());
        r.register("rejected_requests", "Requests or items refused, by endpoint and reason", t.rejected.clone());
        r.register("wal_fsyncs", "fsync calls on the write-ahead log", t.wal_fsyncs.clone());
        r.register("wal_written_bytes", "Bytes appended to the write-ahead log", t.wal_bytes.clone());
        r.register(
            "wal_corruptions",
            "Corrupt or torn WAL records found and cut at startup",
            t.wal_corruptions.clone(),
        );
        r.register(
            "wal_truncated_bytes",
            "Bytes cut from WAL segments at startup because they were torn or corrupt",
            t.wal_truncated_bytes.clone(),
        );
        r.register("series_active", "Metric series currently held", t.series_active.clone());
        r.register(
            "series_expired",
            "Metric series dropped after series_ttl without samples",
            t.series_expired.clone(),
        );
        r.register("queries", "Queries served, by endpoint", t.queries.clone());
        r.register("http_request_duration_seconds", "HTTP request latency by endpoint", t.request_seconds.clone());
        r.register(
            "wal_fsync_duration_seconds",
            "Latency of one WAL group commit (write + fsync)",
            t.wal_fsync_seconds.clone(),
        );
        r.register(
            "process_resident_memory_bytes",
            "Resident set size of this process",
            t.resident_memory_bytes.clone(),
        );
        t
    }

    pub fn reject(&self, endpoint: &'static str, reason: &'static str) {
        self.rejected.get_or_create(&ReasonLabels { endpoint, reason }).inc();
    }
}

/// Resident set size from `/proc/self/statm`, 0 where unavailable.
pub fn resident_memory_bytes() -> u64 {
    let Ok(statm) = std::fs::read_to_string("/proc/self/statm") else { return 0 };
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0);
    pages * 4096
}
