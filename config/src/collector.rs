//! The collector's configuration (`collector.toml`).

use crate::{Duration, Validate};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Top level of `collector.toml`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CollectorConfig {
    /// Where the WAL, log parts and queues live. Override: `OSPREY_DATA_DIR`.
    pub data_dir: PathBuf,
    pub server: CollectorServer,
    pub logs: Logs,
    pub metrics: Metrics,
}

impl Default for CollectorConfig {
    fn default() -> Self {
        CollectorConfig {
            data_dir: PathBuf::from("/var/lib/osprey/collector"),
            server: CollectorServer::default(),
            logs: Logs::default(),
            metrics: Metrics::default(),
        }
    }
}

/// The HTTP listener: push, remote_write, query APIs, `/federate`, `/metrics`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CollectorServer {
    /// Loki's port by default, so Loki clients find us where they look.
    pub listen: SocketAddr,
    /// Largest request body accepted, compressed (413 above it).
    pub max_body_bytes: usize,
    /// Largest body after snappy or gzip decompression (400 above it).
    pub max_decompressed_bytes: usize,
    /// Whole-request time limit.
    pub request_timeout: Duration,
}

impl Default for CollectorServer {
    fn default() -> Self {
        CollectorServer {
            listen: SocketAddr::from(([127, 0, 0, 1], 3100)),
            max_body_bytes: 16 << 20,
            max_decompressed_bytes: 64 << 20,
            request_timeout: Duration::from_secs(60),
        }
    }
}

/// When the WAL is fsynced relative to acknowledging a push.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsyncMode {
    /// fsync each request before answering it.
    Always,
    /// Group commit: requests arriving within `fsync_batch_wait` share one fsync; each is
    /// answered only after that fsync.
    Batch,
    /// Never fsync (tests and benchmarks only): acknowledged lines can be lost on power loss.
    Never,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Logs {
    pub fsync: FsyncMode,
    /// Longest a push waits for others to share its fsync (group commit).
    pub fsync_batch_wait: Duration,
    /// Longest line accepted; longer lines are refused with 400, as Loki does.
    pub max_line_bytes: usize,
    /// WAL segment size before rolling to a new file.
    pub wal_segment_bytes: u64,
    /// Most lines one query may return (`limit` above it is refused).
    pub max_query_lines: usize,
    /// Tenant used when a request has no `X-Scope-OrgID`.
    pub default_tenant: String,
    /// Hard memory budget of one query (kept lines, label sets, series): a query that needs
    /// more stops with a 400 naming this key, instead of growing the process.
    pub max_query_memory_bytes: usize,
    /// Queries (and tails) running at once; more wait for a slot until the request timeout.
    /// With `max_query_memory_bytes`, bounds the memory all queries can hold together.
    pub max_concurrent_queries: usize,
}

impl Default for Logs {
    fn default() -> Self {
        Logs {
            fsync: FsyncMode::Batch,
            fsync_batch_wait: Duration::from_millis(10),
            max_line_bytes: 256 << 10,
            wal_segment_bytes: 128 << 20,
            max_query_lines: 5000,
            default_tenant: "fake".into(),
            max_query_memory_bytes: 256 << 20,
            max_concurrent_queries: 4,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Metrics {
    /// A series with no sample for this long disappears from `/federate`.
    pub series_ttl: Duration,
    /// Most active series kept; new series above it are refused with 429 and counted.
    pub max_series: usize,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics { series_ttl: Duration::from_secs(300), max_series: 1_000_000 }
    }
}

impl CollectorConfig {
    /// Applies the per-host environment overrides through `get` (normally `std::env::var`).
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) {
        if let Some(v) = get(crate::env::DATA_DIR).filter(|v| !v.is_empty()) {
            self.data_dir = PathBuf::from(v);
        }
    }
}

impl Validate for CollectorConfig {
    fn validate(&self, p: &mut Vec<(String, String)>) {
        if self.data_dir.as_os_str().is_empty() {
            p.push(("data_dir".into(), "must not be empty".into()));
        }
        if self.server.max_body_bytes == 0 {
            p.push(("server.max_body_bytes".into(), "must be greater than 0".into()));
        }
        if self.server.max_decompressed_bytes < self.server.max_body_bytes {
            p.push(("server.max_decompressed_bytes".into(), "must be at least server.max_body_bytes".into()));
        }
        if self.logs.max_line_bytes == 0 {
            p.push(("logs.max_line_bytes".into(), "must be greater than 0".into()));
        }
        if self.logs.wal_segment_bytes < 1 << 20 {
            p.push(("logs.wal_segment_bytes".into(), "must be at least 1 MiB (1048576)".into()));
        }
        if self.logs.fsync_batch_wait.get() > std::time::Duration::from_secs(1) {
            p.push(("logs.fsync_batch_wait".into(), "must be at most 1s: pushes wait this long for their ack".into()));
        }
        if self.logs.max_query_lines == 0 {
            p.push(("logs.max_query_lines".into(), "must be greater than 0".into()));
        }
        if self.logs.max_query_memory_bytes < 1 << 20 {
            p.push(("logs.max_query_memory_bytes".into(), "must be at least 1 MiB (1048576)".into()));
        }
        if self.logs.max_concurrent_queries == 0 {
            p.push(("logs.max_concurrent_queries".into(), "must be greater than 0".into()));
        }
        if self.logs.default_tenant.is_empty() {
            p.push(("logs.default_tenant".into(), "must not be empty".into()));
        }
        if self.metrics.max_series == 0 {
            p.push(("metrics.max_series".into(), "must be greater than 0".into()));
        }
    }
}
