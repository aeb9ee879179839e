//! The collector's configuration (`collector.toml`).

use crate::tls::ServerTls;
use crate::{Duration, Validate, check_http_url};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Top level of `collector.toml`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CollectorConfig {
    /// Where the WAL, log parts and queues live. Override: `OSPREY_DATA_DIR`.
    pub data_dir: PathBuf,
    /// How long a graceful stop (SIGTERM, SIGINT) may take: the listener closes, requests in
    /// flight are answered, the WAL commits what is queued; then the process exits (a second
    /// signal exits at once). Acknowledged data is on disk either way.
    pub shutdown_timeout: Duration,
    pub server: CollectorServer,
    pub logs: Logs,
    pub metrics: Metrics,
    pub auth: Auth,
    pub limits: Limits,
    pub log: crate::ops::Log,
}

impl Default for CollectorConfig {
    fn default() -> Self {
        CollectorConfig {
            data_dir: PathBuf::from("/var/lib/osprey/collector"),
            shutdown_timeout: Duration::from_secs(30),
            server: CollectorServer::default(),
            logs: Logs::default(),
            metrics: Metrics::default(),
            auth: Auth::default(),
            limits: Limits::default(),
            log: crate::ops::Log::default(),
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
    /// Whole-request time limit, from the end of the headers to the end of the answer: reading
    /// the body (408 when it is not in by then) and running the handler (504).
    pub request_timeout: Duration,
    /// Longest wait for a request's headers, counted from the connection's start (TLS handshake
    /// included) or from the end of the previous answer: it cuts slow-header senders and is also
    /// the keep-alive idle timeout.
    pub header_read_timeout: Duration,
    /// Largest request head (request line and headers); larger is answered 431.
    pub max_header_bytes: usize,
    /// Most connections open at once; further connections are closed at once and counted
    /// (`osprey_http_connections_refused_total{reason="limit"}`).
    pub max_connections: usize,
    pub tls: ServerTls,
}

impl Default for CollectorServer {
    fn default() -> Self {
        CollectorServer {
            listen: SocketAddr::from(([127, 0, 0, 1], 3100)),
            max_body_bytes: 16 << 20,
            max_decompressed_bytes: 64 << 20,
            request_timeout: Duration::from_secs(60),
            header_read_timeout: Duration::from_secs(30),
            max_header_bytes: 64 << 10,
            max_connections: 8192,
            tls: ServerTls::default(),
        }
    }
}

/// `[auth]`: bearer tokens, each with scopes and tenants. The secrets live in files, one token
/// per file, never in this config.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Auth {
    /// Every request except `/ready` and `/health` (and `/metrics` when `public_metrics`) needs
    /// `Authorization: Bearer <token>` with the scope its endpoint needs.
    pub enabled: bool,
    /// With auth off the collector refuses to listen anywhere but loopback; `true` allows it
    /// (a trusted network, or a proxy in front that authenticates).
    pub allow_unauthenticated: bool,
    /// Serve `/metrics` without a token even when auth is on (it names tenants in labels).
    pub public_metrics: bool,
    /// The tokens (`[[auth.tokens]]`).
    pub tokens: Vec<Token>,
}

/// What a token allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Write: Loki push and remote_write.
    Push,
    /// Read: the Loki query API (tail included), the Prometheus API and `/federate`.
    Query,
    /// Operations: everything under `/-/` (reload).
    Admin,
    /// The collector's own `/metrics` (all tenants' names appear in its labels).
    Metrics,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Push => "push",
            Scope::Query => "query",
            Scope::Admin => "admin",
            Scope::Metrics => "metrics",
        }
    }
}

/// One `[[auth.tokens]]`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Token {
    /// Names the token in logs and errors (the secret itself is never logged).
    pub name: String,
    /// File whose content (surrounding whitespace trimmed) is the secret: at least 16
    /// characters, no whitespace. Read at start and on reload.
    pub file: String,
    /// What the token allows: any of "push", "query", "admin", "metrics".
    pub scopes: Vec<Scope>,
    /// Tenants the token acts for. One: always that tenant, whatever `X-Scope-OrgID` says.
    /// Several: `X-Scope-OrgID` picks one of them (the first when absent; another is 403).
    /// `["*"]`: any tenant, by `X-Scope-OrgID` (else `logs.default_tenant`).
    pub tenants: Vec<String>,
}

/// `[limits]`: per-tenant limits (each tenant gets its own allowance), with overrides per
/// tenant in `[limits.tenants.<name>]`. 0 turns a limit off.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Log ingest rate in line bytes per second (Loki's `ingestion_rate_mb`); above it pushes
    /// are answered 429. 0: none.
    pub log_bytes_per_second: u64,
    /// Line bytes a tenant may push at once above the rate (Loki's `ingestion_burst_size_mb`);
    /// at least `log_bytes_per_second`. 0: equal to the rate.
    pub log_burst_bytes: u64,
    /// Metric ingest rate in samples per second; above it remote_writes are answered 429.
    /// 0: none.
    pub samples_per_second: u64,
    /// Samples a tenant may write at once above the rate. 0: equal to the rate.
    pub sample_burst: u64,
    /// Query requests (Loki, Prometheus, `/federate`) of one tenant running at once; more are
    /// answered 429. 0: only `logs.max_concurrent_queries` over all tenants.
    pub max_concurrent_queries: usize,
    /// Overrides by tenant (`[limits.tenants.team-a] log_bytes_per_second = 1048576`).
    pub tenants: BTreeMap<String, TenantLimits>,
}

/// One tenant's limits; unset keys fall back to `[limits]`, `logs.max_streams_per_tenant` and
/// `metrics.max_series_per_tenant`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TenantLimits {
    pub log_bytes_per_second: Option<u64>,
    pub log_burst_bytes: Option<u64>,
    pub samples_per_second: Option<u64>,
    pub sample_burst: Option<u64>,
    pub max_concurrent_queries: Option<usize>,
    /// Active log streams (overrides `logs.max_streams_per_tenant`).
    pub max_streams: Option<usize>,
    /// Active metric series (overrides `metrics.max_series_per_tenant`).
    pub max_series: Option<usize>,
}

/// The limits in force for one tenant, overrides applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EffectiveLimits {
    pub log_bytes_per_second: u64,
    pub log_burst_bytes: u64,
    pub samples_per_second: u64,
    pub sample_burst: u64,
    pub max_concurrent_queries: usize,
    pub max_streams: usize,
    pub max_series: usize,
}

impl CollectorConfig {
    /// The limits of `tenant`: its `[limits.tenants.<name>]` over `[limits]` and the stores'
    /// per-tenant bounds. A burst of 0 means one second's worth of the rate.
    pub fn limits_for(&self, tenant: &str) -> EffectiveLimits {
        let l = &self.limits;
        let t = l.tenants.get(tenant);
        let pick = |o: Option<Option<u64>>, d: u64| o.flatten().unwrap_or(d);
        let log_rate = pick(t.map(|t| t.log_bytes_per_second), l.log_bytes_per_second);
        let sample_rate = pick(t.map(|t| t.samples_per_second), l.samples_per_second);
        let log_burst = pick(t.map(|t| t.log_burst_bytes), l.log_burst_bytes);
        let sample_burst = pick(t.map(|t| t.sample_burst), l.sample_burst);
        EffectiveLimits {
            log_bytes_per_second: log_rate,
            log_burst_bytes: if log_burst == 0 { log_rate } else { log_burst },
            samples_per_second: sample_rate,
            sample_burst: if sample_burst == 0 { sample_rate } else { sample_burst },
            max_concurrent_queries: t.and_then(|t| t.max_concurrent_queries).unwrap_or(l.max_concurrent_queries),
            max_streams: t.and_then(|t| t.max_streams).unwrap_or(self.logs.max_streams_per_tenant),
            max_series: t.and_then(|t| t.max_series).unwrap_or(self.metrics.max_series_per_tenant),
        }
    }
}

/// Whether `id` is a tenant name Loki accepts in `X-Scope-OrgID`: 1 to 150 bytes of
/// `[a-zA-Z0-9!-_.*'()]`, not `.` or `..`. `Err` says what is wrong.
pub fn check_tenant_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("a tenant name must not be empty".into());
    }
    if id.len() > 150 {
        return Err(format!("tenant name of {} bytes is longer than 150", id.len()));
    }
    if id == "." || id == ".." {
        return Err(format!("tenant name {id:?} is not allowed"));
    }
    if let Some(c) = id.chars().find(|c| !(c.is_ascii_alphanumeric() || "!-_.*'()".contains(*c))) {
        return Err(format!(
            "tenant name {id:?} holds {c:?}; allowed are letters, digits and !-_.*'() (one tenant per request)"
        ));
    }
    Ok(())
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
    /// Most labels one stream may have (Loki's `max_label_names_per_series`); 400 above it.
    pub max_labels_per_stream: usize,
    /// Longest label name (Loki's `max_label_name_length`); 400 above it.
    pub max_label_name_bytes: usize,
    /// Longest label value (Loki's `max_label_value_length`); 400 above it.
    pub max_label_value_bytes: usize,
    /// Most active streams per tenant (Loki's `max_global_streams_per_user`): a push that
    /// would create one more is answered 429. A stream is active while it received lines within
    /// `stream_idle_timeout`.
    pub max_streams_per_tenant: usize,
    /// How long a stream stays active (counts against `max_streams_per_tenant`) after its last line.
    pub stream_idle_timeout: Duration,
    /// Out-of-order window per stream: a line older than the stream's newest line minus this is
    /// refused (Loki's "entry too far behind", half of `max_chunk_age`).
    pub out_of_order_window: Duration,
    /// WAL segment size before rolling to a new file.
    pub wal_segment_bytes: u64,
    /// Recent lines are kept in memory (the head, queryable) and written to a part when the head
    /// holds this many bytes of lines...
    pub head_max_bytes: usize,
    /// ...or when its oldest line arrived this long ago. The WAL is truncated after each flush,
    /// so this also bounds replay time after a crash.
    pub flush_interval: Duration,
    /// Uncompressed line bytes per block written by a flush (the unit of compression, filtering
    /// and reading).
    pub block_bytes: usize,
    /// Uncompressed line bytes per block written by a merge: bigger blocks compress ~4 % better
    /// (zstd sees more of the stream) at the cost of reading more per false-positive block.
    pub merge_block_bytes: usize,
    /// zstd level of parts written by a flush (fast: it runs alongside ingest).
    pub flush_zstd_level: i32,
    /// zstd level of parts written by a merge (background; smaller files).
    pub merge_zstd_level: i32,
    /// Parts of one tenant and day are merged once there are this many.
    pub merge_min_parts: usize,
    /// Most parts merged at once; merge memory is bounded by this many blocks being read.
    pub merge_max_parts: usize,
    /// A merge never produces a part larger than this (compressed bytes, estimated).
    pub merge_max_part_bytes: u64,
    /// How often retention and merges are considered.
    pub maintenance_interval: Duration,
    /// Retention by age and by size, with per-tenant overrides.
    pub retention: Retention,
    /// Loki-compatible receivers that get a copy of everything ingested (`[[logs.forward]]`),
    /// each through its own durable on-disk queue.
    pub forward: Vec<Forward>,
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
            max_labels_per_stream: 15,
            max_label_name_bytes: 1024,
            max_label_value_bytes: 2048,
            max_streams_per_tenant: 5000,
            stream_idle_timeout: Duration::from_secs(30 * 60),
            out_of_order_window: Duration::from_secs(3600),
            wal_segment_bytes: 128 << 20,
            head_max_bytes: 64 << 20,
            flush_interval: Duration::from_secs(60),
            block_bytes: 1 << 20,
            merge_block_bytes: 4 << 20,
            flush_zstd_level: 3,
            merge_zstd_level: 9,
            merge_min_parts: 4,
            merge_max_parts: 8,
            merge_max_part_bytes: 1 << 30,
            maintenance_interval: Duration::from_secs(10),
            retention: Retention::default(),
            forward: Vec::new(),
            max_query_lines: 5000,
            default_tenant: "fake".into(),
            max_query_memory_bytes: 256 << 20,
            max_concurrent_queries: 4,
        }
    }
}

/// Retention of log parts. Expired data goes as whole part files; lines still in the head are
/// not counted until they are flushed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Retention {
    /// Parts whose newest line is older than this are deleted. `"0s"`: keep forever.
    pub period: Duration,
    /// Per tenant: when its parts take more bytes than this, the oldest go first. 0: no bound.
    pub max_bytes: u64,
    /// Overrides by tenant (`[logs.retention.tenants.team-a] period = "7d"`).
    pub tenants: BTreeMap<String, TenantRetention>,
}

/// A tenant's own retention; unset keys fall back to `[logs.retention]`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TenantRetention {
    pub period: Option<Duration>,
    pub max_bytes: Option<u64>,
}

impl Retention {
    /// The age bound (None: keep forever) and size bound (0: none) for `tenant`.
    pub fn for_tenant(&self, tenant: &str) -> (Option<std::time::Duration>, u64) {
        let t = self.tenants.get(tenant);
        let period = t.and_then(|t| t.period).unwrap_or(self.period).get();
        let max_bytes = t.and_then(|t| t.max_bytes).unwrap_or(self.max_bytes);
        ((!period.is_zero()).then_some(period), max_bytes)
    }
}

/// The metrics side: remote_write ingest, the series store, its query APIs, fleet liveness.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Metrics {
    /// A series with no sample for this long disappears from `/federate` and the query API.
    pub series_ttl: Duration,
    /// Most active series kept over all tenants; new series above it are refused with 429
    /// and counted.
    pub max_series: usize,
    /// Most active series kept for one tenant (`X-Scope-OrgID`); new series above it are
    /// refused with 429 and counted.
    pub max_series_per_tenant: usize,
    /// Most tenants holding series at once; writes for a further tenant are refused with 429.
    pub max_tenants: usize,
    /// Most labels on one series, `__name__` included; more is refused with 400.
    pub max_labels_per_series: usize,
    /// Longest label name in bytes; longer is refused with 400.
    pub max_label_name_bytes: usize,
    /// Longest label value in bytes; longer is refused with 400.
    pub max_label_value_bytes: usize,
    /// Most metric families whose metadata (type, help, unit) is kept per tenant; metadata
    /// for more is dropped and counted (samples are still stored).
    pub max_metadata_families: usize,
    /// Most series one query (`/api/v1/query`, `/api/v1/series`) may select; more is refused
    /// with 422, as Prometheus refuses queries over its limits.
    pub max_query_series: usize,
    /// How far back an instant query looks for a series' latest sample (Prometheus'
    /// `--query.lookback-delta`).
    pub query_lookback: Duration,
    /// The label whose values name agents (hosts) for `osprey_agent_up` and
    /// `osprey_agent_last_seen_timestamp_seconds`; empty turns fleet liveness off.
    pub agent_label: String,
    /// An agent with no sample for this long is reported down (`osprey_agent_up` 0).
    pub agent_down_after: Duration,
    /// An agent silent for this long is forgotten (its liveness series disappear).
    pub agent_forget_after: Duration,
    /// Most agents tracked; agents above it are not tracked, and counted.
    pub max_agents: usize,
    /// Long-term stores every accepted sample is also sent to (remote_write 1.0), each through
    /// its own on-disk queue. Empty: no forwarding.
    pub forward: Vec<Forward>,
}

/// One forwarding target: `[[logs.forward]]` (a Loki push URL: Loki, VictoriaLogs, another
/// collector) or `[[metrics.forward]]` (a remote_write URL: Mimir, Thanos Receive,
/// VictoriaMetrics, Prometheus). Everything accepted is written to the target's on-disk queue
/// (`data_dir/forward/{logs,metrics}/<name>`) before it is acknowledged, then sent in order with
/// retries (429, 5xx and network errors forever with backoff; other 4xx dropped and counted).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Forward {
    /// Names the target in metrics (`target` label) and its queue directory; letters, digits,
    /// `_` and `-`, unique within its section.
    pub name: String,
    /// The receiver's push URL, e.g. `http://loki:3100/loki/api/v1/push` or
    /// `http://mimir:8080/api/v1/push`.
    pub url: String,
    /// Extra request headers.
    pub headers: BTreeMap<String, String>,
    /// File holding a bearer token sent as `Authorization: Bearer <token>`; empty: none.
    pub bearer_token_file: String,
    /// `X-Scope-OrgID` sent with every request. Empty: each push or sample keeps the tenant it
    /// arrived with (none for the default tenant).
    pub tenant: String,
    /// Time limit of one request.
    pub timeout: Duration,
    pub retry_initial_backoff: Duration,
    pub retry_max_backoff: Duration,
    /// Bound of the on-disk queue; at the bound the oldest data is dropped and counted.
    pub queue_max_bytes: u64,
}

impl Default for Forward {
    fn default() -> Self {
        Forward {
            name: String::new(),
            url: String::new(),
            headers: BTreeMap::new(),
            bearer_token_file: String::new(),
            tenant: String::new(),
            timeout: Duration::from_secs(30),
            retry_initial_backoff: Duration::from_millis(500),
            retry_max_backoff: Duration::from_secs(30),
            queue_max_bytes: 1 << 30,
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            series_ttl: Duration::from_secs(300),
            max_series: 1_000_000,
            max_series_per_tenant: 1_000_000,
            max_tenants: 1000,
            max_labels_per_series: 30,
            max_label_name_bytes: 1024,
            max_label_value_bytes: 2048,
            max_metadata_families: 100_000,
            max_query_series: 1_000_000,
            query_lookback: Duration::from_secs(300),
            agent_label: "host".into(),
            agent_down_after: Duration::from_secs(60),
            agent_forget_after: Duration::from_secs(24 * 3600),
            max_agents: 10_000,
            forward: Vec::new(),
        }
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
        if self.shutdown_timeout.get() < std::time::Duration::from_millis(100) {
            p.push(("shutdown_timeout".into(), "must be at least 100ms".into()));
        }
        self.log.validate(p);
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
        for (key, v) in [
            ("logs.max_labels_per_stream", self.logs.max_labels_per_stream),
            ("logs.max_label_name_bytes", self.logs.max_label_name_bytes),
            ("logs.max_label_value_bytes", self.logs.max_label_value_bytes),
            ("logs.max_streams_per_tenant", self.logs.max_streams_per_tenant),
        ] {
            if v == 0 {
                p.push((key.into(), "must be greater than 0".into()));
            }
        }
        if self.logs.head_max_bytes < 1 << 20 {
            p.push(("logs.head_max_bytes".into(), "must be at least 1 MiB (1048576)".into()));
        }
        for (key, v) in
            [("logs.block_bytes", self.logs.block_bytes), ("logs.merge_block_bytes", self.logs.merge_block_bytes)]
        {
            if !(4096..=64 << 20).contains(&v) {
                p.push((key.into(), "must be between 4096 and 67108864".into()));
            }
        }
        for (key, level) in [
            ("logs.flush_zstd_level", self.logs.flush_zstd_level),
            ("logs.merge_zstd_level", self.logs.merge_zstd_level),
        ] {
            if !(1..=19).contains(&level) {
                p.push((key.into(), "must be a zstd level from 1 to 19".into()));
            }
        }
        if self.logs.merge_min_parts < 2 {
            p.push(("logs.merge_min_parts".into(), "must be at least 2".into()));
        }
        if self.logs.merge_max_parts < self.logs.merge_min_parts {
            p.push(("logs.merge_max_parts".into(), "must be at least logs.merge_min_parts".into()));
        }
        if self.logs.flush_interval.get().is_zero() {
            p.push(("logs.flush_interval".into(), "must be greater than 0".into()));
        }
        if self.logs.maintenance_interval.get().is_zero() {
            p.push(("logs.maintenance_interval".into(), "must be greater than 0".into()));
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, f) in self.logs.forward.iter().enumerate() {
            let key = |k: &str| format!("logs.forward[{i}].{k}");
            if f.name.is_empty() || !f.name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
                p.push((key("name"), "must be a non-empty name of letters, digits, '_' and '-'".into()));
            } else if !names.insert(f.name.as_str()) {
                p.push((key("name"), format!("{:?} is used by another [[logs.forward]]", f.name)));
            }
            if !(f.url.starts_with("http://") || f.url.starts_with("https://")) {
                p.push((key("url"), format!("invalid URL {:?}: must start with http:// or https://", f.url)));
            }
            if f.queue_max_bytes < 1 << 20 {
                p.push((key("queue_max_bytes"), "must be at least 1 MiB (1048576)".into()));
            }
        }
        for name in self.logs.retention.tenants.keys() {
            if name.is_empty() {
                p.push(("logs.retention.tenants".into(), "a tenant name must not be empty".into()));
            }
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
        if let Err(e) = check_tenant_id(&self.logs.default_tenant) {
            p.push(("logs.default_tenant".into(), e));
        }
        self.metrics.validate(p);
        self.validate_server(p);
        self.validate_auth(p);
        self.validate_limits(p);
    }
}

impl CollectorConfig {
    fn validate_server(&self, p: &mut Vec<(String, String)>) {
        let s = &self.server;
        if s.request_timeout.get() < std::time::Duration::from_millis(100) {
            p.push(("server.request_timeout".into(), "must be at least 100ms".into()));
        }
        if s.header_read_timeout.get() < std::time::Duration::from_millis(100) {
            p.push(("server.header_read_timeout".into(), "must be at least 100ms".into()));
        }
        if !(8192..=16 << 20).contains(&s.max_header_bytes) {
            p.push(("server.max_header_bytes".into(), "must be between 8192 and 16777216".into()));
        }
        if s.max_connections == 0 {
            p.push(("server.max_connections".into(), "must be greater than 0".into()));
        }
        s.tls.validate("server.tls", p);
    }

    fn validate_auth(&self, p: &mut Vec<(String, String)>) {
        let a = &self.auth;
        if !a.enabled && !a.allow_unauthenticated && !self.server.listen.ip().is_loopback() {
            p.push((
                "server.listen".into(),
                format!(
                    "{} is reachable from other hosts but auth is off: set auth.enabled = true with [[auth.tokens]], \
                     or auth.allow_unauthenticated = true to accept anyone who can connect",
                    self.server.listen
                ),
            ));
        }
        if a.enabled && a.tokens.is_empty() {
            p.push(("auth.tokens".into(), "auth.enabled needs at least one [[auth.tokens]]".into()));
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, t) in a.tokens.iter().enumerate() {
            let key = |k: &str| format!("auth.tokens[{i}].{k}");
            if t.name.is_empty() || !t.name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
                p.push((key("name"), "must be a non-empty name of letters, digits, '_' and '-'".into()));
            } else if !names.insert(t.name.as_str()) {
                p.push((key("name"), format!("{:?} is used by another token", t.name)));
            }
            if t.file.is_empty() {
                p.push((key("file"), "must name the file holding the secret".into()));
            }
            if t.scopes.is_empty() {
                p.push((key("scopes"), "needs at least one of \"push\", \"query\", \"admin\", \"metrics\"".into()));
            }
            let tenant_scoped = t.scopes.iter().any(|s| matches!(s, Scope::Push | Scope::Query));
            if tenant_scoped && t.tenants.is_empty() {
                p.push((key("tenants"), "a push or query token needs its tenants (or [\"*\"] for any)".into()));
            }
            if t.tenants.iter().any(|x| x == "*") && t.tenants.len() > 1 {
                p.push((key("tenants"), "\"*\" (any tenant) must be the only entry".into()));
            }
            for (j, tenant) in t.tenants.iter().enumerate() {
                if tenant != "*"
                    && let Err(e) = check_tenant_id(tenant)
                {
                    p.push((format!("auth.tokens[{i}].tenants[{j}]"), e));
                }
            }
        }
    }

    fn validate_limits(&self, p: &mut Vec<(String, String)>) {
        let l = &self.limits;
        let burst = |p: &mut Vec<(String, String)>, key: &str, rate: u64, burst: u64| {
            if burst != 0 && burst < rate {
                p.push((key.into(), format!("must be 0 (one second's worth) or at least the rate ({rate})")));
            }
        };
        burst(p, "limits.log_burst_bytes", l.log_bytes_per_second, l.log_burst_bytes);
        burst(p, "limits.sample_burst", l.samples_per_second, l.sample_burst);
        for (name, t) in &l.tenants {
            if let Err(e) = check_tenant_id(name) {
                p.push((format!("limits.tenants.{name}"), e));
                continue;
            }
            let eff = self.limits_for(name);
            if t.log_burst_bytes.is_some() || t.log_bytes_per_second.is_some() {
                burst(
                    p,
                    &format!("limits.tenants.{name}.log_burst_bytes"),
                    eff.log_bytes_per_second,
                    eff.log_burst_bytes,
                );
            }
            if t.sample_burst.is_some() || t.samples_per_second.is_some() {
                burst(p, &format!("limits.tenants.{name}.sample_burst"), eff.samples_per_second, eff.sample_burst);
            }
            if t.max_streams == Some(0) {
                p.push((format!("limits.tenants.{name}.max_streams"), "must be greater than 0".into()));
            }
            if t.max_series == Some(0) {
                p.push((format!("limits.tenants.{name}.max_series"), "must be greater than 0".into()));
            }
            if t.max_series.is_some_and(|m| m > self.metrics.max_series) {
                p.push((format!("limits.tenants.{name}.max_series"), "must be at most metrics.max_series".into()));
            }
        }
    }
}

impl Validate for Metrics {
    fn validate(&self, p: &mut Vec<(String, String)>) {
        let positive = [
            ("max_series", self.max_series),
            ("max_series_per_tenant", self.max_series_per_tenant),
            ("max_tenants", self.max_tenants),
            ("max_labels_per_series", self.max_labels_per_series),
            ("max_label_name_bytes", self.max_label_name_bytes),
            ("max_label_value_bytes", self.max_label_value_bytes),
            ("max_query_series", self.max_query_series),
            ("max_agents", self.max_agents),
        ];
        for (key, value) in positive {
            if value == 0 {
                p.push((format!("metrics.{key}"), "must be greater than 0".into()));
            }
        }
        if self.max_series_per_tenant > self.max_series {
            p.push(("metrics.max_series_per_tenant".into(), "must be at most metrics.max_series".into()));
        }
        if self.series_ttl.get() < std::time::Duration::from_secs(1) {
            p.push(("metrics.series_ttl".into(), "must be at least 1s".into()));
        }
        if self.query_lookback.get() < std::time::Duration::from_secs(1) {
            p.push(("metrics.query_lookback".into(), "must be at least 1s".into()));
        }
        if !self.agent_label.is_empty() && !is_label_name(&self.agent_label) {
            p.push((
                "metrics.agent_label".into(),
                format!("{:?} is not a valid Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*)", self.agent_label),
            ));
        }
        if self.agent_down_after.get() < std::time::Duration::from_secs(1) {
            p.push(("metrics.agent_down_after".into(), "must be at least 1s".into()));
        }
        if self.agent_forget_after.get() < self.agent_down_after.get() {
            p.push(("metrics.agent_forget_after".into(), "must be at least metrics.agent_down_after".into()));
        }
        for (i, f) in self.forward.iter().enumerate() {
            let key = |k: &str| format!("metrics.forward[{i}].{k}");
            if f.name.is_empty() || !f.name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
                p.push((key("name"), format!("{:?} is not a valid target name: use letters, digits, _ and -", f.name)));
            } else if self.forward[..i].iter().any(|o| o.name == f.name) {
                p.push((key("name"), format!("{:?} is used by another forwarding target", f.name)));
            }
            if let Some(msg) = check_http_url(&f.url) {
                p.push((key("url"), msg));
            }
            if f.queue_max_bytes < 4 << 20 {
                p.push((key("queue_max_bytes"), "must be at least 4 MiB (4194304)".into()));
            }
            if f.retry_max_backoff.get() < f.retry_initial_backoff.get() {
                p.push((key("retry_max_backoff"), "must be at least retry_initial_backoff".into()));
            }
            if f.timeout.get() < std::time::Duration::from_millis(100) {
                p.push((key("timeout"), "must be at least 100ms".into()));
            }
        }
    }
}

fn is_label_name(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}
