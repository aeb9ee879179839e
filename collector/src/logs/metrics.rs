//! The log store's own metrics (`osprey_logs_*`), registered next to the collector's.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Default)]
pub struct LogMetrics {
    /// Lines refused at ingest, by Loki's reason names (`line_too_long`, `stream_limit`, ...).
    pub discarded_lines: Family<ReasonLabels, Counter>,
    pub discarded_bytes: Family<ReasonLabels, Counter>,
    pub head_bytes: Gauge<u64, AtomicU64>,
    pub head_lines: Gauge<u64, AtomicU64>,
    pub parts: Gauge<u64, AtomicU64>,
    pub part_bytes: Gauge<u64, AtomicU64>,
    pub flushes: Counter,
    pub flushed_lines: Counter,
    pub merges: Counter,
    pub merged_bytes: Counter,
    pub retention_deleted_parts: Family<ReasonLabels, Counter>,
    pub retention_deleted_bytes: Family<ReasonLabels, Counter>,
    pub wal_removed_segments: Counter,
    pub replayed_records: Counter,
    pub ingest_waits: Counter,
    pub blocks_read: Counter,
    pub blocks_pruned: Counter,
    pub maintenance_errors: Counter,
    /// The collector's `osprey_rejected_requests_total{endpoint="loki_push",reason}`, which alerts and
    /// dashboards use: every discard is counted there too.
    pub rejected: Option<crate::telemetry::Telemetry>,
}

impl LogMetrics {
    pub fn register(registry: &mut Registry) -> LogMetrics {
        let m = LogMetrics::default();
        let r = registry.sub_registry_with_prefix("osprey_logs");
        r.register(
            "discarded_lines",
            "Log lines refused at ingest, by reason (Loki's names)",
            m.discarded_lines.clone(),
        );
        r.register("discarded_bytes", "Bytes of log lines refused at ingest, by reason", m.discarded_bytes.clone());
        r.register("head_bytes", "Line bytes held in memory since the last flush", m.head_bytes.clone());
        r.register("head_lines", "Lines held in memory since the last flush", m.head_lines.clone());
        r.register("parts", "Live part files", m.parts.clone());
        r.register("part_bytes", "Bytes of live part files (data and index)", m.part_bytes.clone());
        r.register("flushes", "Head flushes into parts", m.flushes.clone());
        r.register("flushed_lines", "Lines written into parts by flushes", m.flushed_lines.clone());
        r.register("merges", "Part merges", m.merges.clone());
        r.register("merged_bytes", "Bytes of parts consumed by merges", m.merged_bytes.clone());
        r.register(
            "retention_deleted_parts",
            "Part files deleted by retention, by reason (age, size)",
            m.retention_deleted_parts.clone(),
        );
        r.register(
            "retention_deleted_bytes",
            "Bytes of part files deleted by retention, by reason",
            m.retention_deleted_bytes.clone(),
        );
        r.register(
            "wal_removed_segments",
            "WAL segments deleted after their lines were flushed",
            m.wal_removed_segments.clone(),
        );
        r.register("replayed_records", "WAL records replayed into the head at startup", m.replayed_records.clone());
        r.register(
            "ingest_waits",
            "Pushes that waited because the head was at 1.5 times logs.head_max_bytes (flush behind)",
            m.ingest_waits.clone(),
        );
        r.register("blocks_read", "Blocks decompressed by scans", m.blocks_read.clone());
        r.register(
            "blocks_pruned",
            "Blocks skipped by scans thanks to their token and n-gram filters",
            m.blocks_pruned.clone(),
        );
        r.register(
            "maintenance_errors",
            "Flushes, merges or retention passes that failed (logged)",
            m.maintenance_errors.clone(),
        );
        m
    }

    pub fn discard(&self, reason: &'static str, lines: u64, bytes: u64) {
        if let Some(t) = &self.rejected {
            t.reject("loki_push", reason);
        }
        self.discarded_lines.get_or_create(&ReasonLabels { reason }).inc_by(lines);
        self.discarded_bytes.get_or_create(&ReasonLabels { reason }).inc_by(bytes);
    }
}
