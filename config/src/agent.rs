//! The agent's configuration (`agent.toml`).

use crate::tls::{ClientTls, ServerTls};
use crate::{Duration, Validate, check_http_url};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Top level of `agent.toml`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// Where checkpoints and queues live. Override: `OSPREY_DATA_DIR`.
    pub data_dir: PathBuf,
    /// The `host` label on everything this agent ships. Empty: the system hostname.
    pub hostname: String,
    /// How long a graceful stop (SIGTERM, SIGINT) may take: sinks deliver what is queued, the
    /// checkpoints are saved, then the process exits; a second signal exits at once.
    pub shutdown_timeout: Duration,
    pub server: AgentServer,
    pub collector: Output,
    pub sources: Sources,
    pub host_metrics: HostMetrics,
    pub scrape: crate::scrape::Scrape,
    pub remote_write: crate::scrape::RemoteWrite,
    pub pipeline: Pipeline,
    pub health: AgentHealth,
    pub log: crate::ops::Log,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            data_dir: PathBuf::from("/var/lib/osprey/agent"),
            hostname: String::new(),
            shutdown_timeout: Duration::from_secs(10),
            server: AgentServer::default(),
            collector: Output::default(),
            sources: Sources::default(),
            host_metrics: HostMetrics::default(),
            scrape: crate::scrape::Scrape::default(),
            remote_write: crate::scrape::RemoteWrite::default(),
            pipeline: Pipeline::default(),
            health: AgentHealth::default(),
            log: crate::ops::Log::default(),
        }
    }
}

/// `[health]`: when `/health` reports the agent degraded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentHealth {
    /// A sink whose sends have failed (and been retried) for this long without one delivery
    /// makes `/health` say `degraded`, naming the sink and its last error.
    pub sink_failing_after: Duration,
}

impl Default for AgentHealth {
    fn default() -> Self {
        AgentHealth { sink_failing_after: Duration::from_secs(300) }
    }
}

/// The agent's own HTTP listener (`/metrics`, `/ready`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentServer {
    pub listen: SocketAddr,
    /// File holding a token (at least 16 characters) that every path but `/ready` and
    /// `/health` requires as `Authorization: Bearer <token>` (`/metrics`, `/-/reload`,
    /// `/-/log-level`). Empty: all open. Probes never need it.
    pub bearer_token_file: String,
    pub tls: ServerTls,
}

impl Default for AgentServer {
    fn default() -> Self {
        AgentServer {
            listen: SocketAddr::from(([127, 0, 0, 1], 9101)),
            bearer_token_file: String::new(),
            tls: ServerTls::default(),
        }
    }
}

/// Where the agent ships: the collector, or any Loki / remote_write receiver.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Output {
    /// Base URL of the collector. Override: `OSPREY_COLLECTOR_URL`.
    pub url: String,
    /// Full Loki push URL. Empty: `{url}/loki/api/v1/push`.
    pub logs_url: String,
    /// Full remote_write URL. Empty: `{url}/api/v1/write`.
    pub metrics_url: String,
    /// `X-Scope-OrgID` sent with every request. Empty: none.
    pub tenant: String,
    /// File holding a bearer token. Empty: no `Authorization` header. `OSPREY_AUTH_TOKEN`
    /// overrides it.
    pub token_file: String,
    /// Per-request timeout.
    pub timeout: Duration,
    /// A batch is sent when it holds this many bytes of lines...
    pub batch_max_bytes: usize,
    /// ...or when its oldest line has waited this long.
    pub batch_max_wait: Duration,
    /// First retry delay; doubles on each failure up to `retry_max_backoff`, with jitter.
    pub retry_initial_backoff: Duration,
    pub retry_max_backoff: Duration,
    /// How https receivers are verified, and the client certificate for mutual TLS.
    pub tls: ClientTls,
    /// Token read from `OSPREY_AUTH_TOKEN`; never written to or read from the file.
    #[serde(skip)]
    pub token_from_env: Option<String>,
}

impl Default for Output {
    fn default() -> Self {
        Output {
            url: "http://127.0.0.1:3100".into(),
            logs_url: String::new(),
            metrics_url: String::new(),
            tenant: String::new(),
            token_file: String::new(),
            timeout: Duration::from_secs(10),
            batch_max_bytes: 1 << 20,
            batch_max_wait: Duration::from_secs(1),
            retry_initial_backoff: Duration::from_millis(250),
            retry_max_backoff: Duration::from_secs(30),
            tls: ClientTls::default(),
            token_from_env: None,
        }
    }
}

impl Output {
    fn join(&self, explicit: &str, path: &str) -> String {
        if explicit.is_empty() { format!("{}{}", self.url.trim_end_matches('/'), path) } else { explicit.to_string() }
    }
    /// The Loki push URL the agent posts logs to.
    pub fn logs_push_url(&self) -> String {
        self.join(&self.logs_url, "/loki/api/v1/push")
    }
    /// The remote_write URL the agent posts metrics to.
    pub fn remote_write_url(&self) -> String {
        self.join(&self.metrics_url, "/api/v1/write")
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Sources {
    /// How often watched directories, active files, files inotify named and files in
    /// directories inotify cannot watch are stat'ed. inotify wakes the tailer sooner.
    pub poll_interval: Duration,
    /// How often every followed file is stat'ed, quiet ones in inotify-watched directories
    /// included: the safety net for lost inotify events and for writes inotify never reports
    /// (other NFS clients'). Lower it for files on NFS that are written rarely.
    pub rescan_interval: Duration,
    /// Most log files held open at once. At the limit, idle files are closed (and reopened, with
    /// their identity checked, when they grow); files that cannot get a descriptor wait, and
    /// `osprey_agent_files_open_limit_reached_total` counts it.
    pub max_open_files: usize,
    pub files: Vec<FileSource>,
}

impl Default for Sources {
    fn default() -> Self {
        Sources {
            poll_interval: Duration::from_secs(1),
            rescan_interval: Duration::from_secs(30),
            max_open_files: 1024,
            files: vec![FileSource::default()],
        }
    }
}

/// Where to start in files that already exist at the agent's first start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReadFrom {
    Beginning,
    End,
}

/// One set of files to tail.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileSource {
    /// The `job` label of these lines.
    pub job: String,
    /// Globs of files to follow (`**` allowed).
    pub include: Vec<String>,
    /// Globs of files to skip even when included.
    pub exclude: Vec<String>,
    /// For files present at first start; files that appear later are read from their start.
    pub read_from: ReadFrom,
    /// Static labels added to every line.
    pub labels: BTreeMap<String, String>,
    /// After a file was renamed away or deleted, keep reading it this long, then close it and
    /// count what was never read (`osprey_agent_file_bytes_unread_total`).
    pub rotate_wait: Duration,
    /// Longer lines (or multiline events) are cut to this many bytes and counted.
    pub max_line_bytes: usize,
    /// Only lines matching this regex are shipped (empty: all). Applied after multiline joining.
    pub keep_lines: String,
    /// Lines matching this regex are dropped and counted (empty: none).
    pub drop_lines: String,
    pub multiline: Multiline,
    pub parse: Parse,
}

impl Default for FileSource {
    fn default() -> Self {
        FileSource {
            job: "varlogs".into(),
            include: vec!["/var/log/**/*.log".into()],
            exclude: vec![],
            read_from: ReadFrom::End,
            labels: BTreeMap::new(),
            rotate_wait: Duration::from_secs(30),
            max_line_bytes: 256 << 10,
            keep_lines: String::new(),
            drop_lines: String::new(),
            multiline: Multiline::default(),
            parse: Parse::default(),
        }
    }
}

/// Built-in multiline rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MultilinePreset {
    /// No joining unless a pattern is given.
    None,
    /// Java stack traces: `\tat ...`, `Caused by: ...`, `... 5 more`.
    Java,
    /// Python tracebacks: `Traceback (most recent call last):`, indented frames, the final
    /// `SomeError: message`.
    Python,
    /// Go panics: `goroutine N [running]:`, function lines, indented file lines.
    Go,
}

/// Joining lines into one event (stack traces). At most one of `preset`, `start_pattern` and
/// `continuation_pattern` is set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Multiline {
    pub preset: MultilinePreset,
    /// A line matching this regex starts a new event; any other line continues the current one.
    pub start_pattern: String,
    /// A line matching this regex continues the current event; any other line starts one.
    pub continuation_pattern: String,
    /// An event with no new line for this long is shipped as it is.
    pub flush_timeout: Duration,
    /// An event is shipped when it reaches this many lines.
    pub max_lines: usize,
}

impl Default for Multiline {
    fn default() -> Self {
        Multiline {
            preset: MultilinePreset::None,
            start_pattern: String::new(),
            continuation_pattern: String::new(),
            flush_timeout: Duration::from_secs(1),
            max_lines: 1000,
        }
    }
}

impl Multiline {
    /// Whether any joining is configured.
    pub fn enabled(&self) -> bool {
        self.preset != MultilinePreset::None || !self.start_pattern.is_empty() || !self.continuation_pattern.is_empty()
    }
}

/// How lines are parsed into fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParseFormat {
    None,
    Json,
    Logfmt,
    Regex,
}

/// How a timestamp field is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimestampFormat {
    /// `2026-11-26T08:00:00.123Z`, `2026-11-26 08:00:00+01:00`.
    Rfc3339,
    /// Common log format: `26/Nov/2026:08:00:00 +0000`.
    Clf,
    /// Seconds since the epoch, fractions allowed: `1764144000.123`.
    Unix,
    UnixMs,
    UnixUs,
    UnixNs,
}

/// Parsing lines into fields: an allow-list of fields becomes labels (so cardinality stays
/// under the operator's control); other fields go to structured metadata or stay in the line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Parse {
    pub format: ParseFormat,
    /// For `format = "regex"`: named captures are the fields, e.g. `^(?P<level>\w+) `.
    pub regex: String,
    /// Fields that become stream labels (names must be valid label names).
    pub labels: Vec<String>,
    /// Other top-level scalar fields are sent as Loki structured metadata.
    pub structured_metadata: bool,
    /// The field holding the line's time. Empty: the time the line was read.
    pub timestamp_field: String,
    pub timestamp_format: TimestampFormat,
}

impl Default for Parse {
    fn default() -> Self {
        Parse {
            format: ParseFormat::None,
            regex: String::new(),
            labels: vec![],
            structured_metadata: true,
            timestamp_field: String::new(),
            timestamp_format: TimestampFormat::Rfc3339,
        }
    }
}

/// Names of the host collectors, as `host_metrics.disable` takes them.
pub const HOST_COLLECTORS: &[&str] = &[
    "cpu",
    "diskstats",
    "filefd",
    "filesystem",
    "hwmon",
    "loadavg",
    "meminfo",
    "netdev",
    "netstat",
    "os",
    "pressure",
    "sockstat",
    "stat",
    "textfile",
    "thermal_zone",
    "time",
    "uname",
    "vmstat",
];

/// node_exporter-compatible host metrics.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HostMetrics {
    pub enabled: bool,
    /// How often host metrics are collected and shipped.
    pub interval: Duration,
    /// Collectors not to run (names as in node_exporter: `cpu`, `diskstats`, `filesystem`, ...).
    pub disable: Vec<String>,
    /// Where procfs, sysfs and the root file system are (a container mounts the host's
    /// elsewhere, e.g. `/host/proc`).
    pub proc_path: PathBuf,
    pub sys_path: PathBuf,
    pub rootfs_path: PathBuf,
    /// Directory of `*.prom` files to expose (node_exporter's textfile collector). Empty: none.
    pub textfile_directory: String,
    /// Mount points to skip (regex). The exclusion defaults are those of Debian's
    /// `prometheus-node-exporter` 1.5, which is what hosts run today.
    pub filesystem_mount_points_exclude: String,
    /// File system types to skip (regex).
    pub filesystem_fs_types_exclude: String,
    /// Block devices to skip in diskstats (regex).
    pub diskstats_device_exclude: String,
    /// Network devices to skip in netdev (regex). Empty: none.
    pub netdev_device_exclude: String,
}

impl Default for HostMetrics {
    fn default() -> Self {
        HostMetrics {
            enabled: true,
            interval: Duration::from_secs(15),
            disable: vec![],
            proc_path: PathBuf::from("/proc"),
            sys_path: PathBuf::from("/sys"),
            rootfs_path: PathBuf::from("/"),
            textfile_directory: String::new(),
            filesystem_mount_points_exclude: "^/(dev|proc|run|sys|mnt|media|var/lib/docker/.+|var/lib/containers/storage/.+)($|/)".into(),
            filesystem_fs_types_exclude: "^(autofs|binfmt_misc|bpf|cgroup2?|configfs|debugfs|devpts|devtmpfs|fusectl|hugetlbfs|iso9660|mqueue|nsfs|overlay|proc|procfs|pstore|rpc_pipefs|securityfs|selinuxfs|squashfs|sysfs|tracefs)$".into(),
            diskstats_device_exclude: "^(ram|loop|fd|(h|s|v|xv)d[a-z]|nvme\\d+n\\d+p)\\d+$".into(),
            netdev_device_exclude: "^lo$".into(),
        }
    }
}

/// Bounds of the in-memory pipeline between sources and sinks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Pipeline {
    /// Batches that may wait between a source and its sink; readers block when it is full.
    pub channel_batches: usize,
    /// Log batches (each up to `collector.batch_max_bytes`) that may wait for the Loki sink.
    /// Files are the buffer: a few batches keep the sink busy, more only cost memory.
    pub log_channel_batches: usize,
    /// Log batches being sent to the receiver at once (their acknowledgements are still applied
    /// in order). More hides the receiver's per-request latency (an fsync) and spreads
    /// compression over the cores; each costs about three times `collector.batch_max_bytes`.
    pub log_requests_in_flight: usize,
    /// Shortest time between two writes of the file checkpoints: acknowledgements that arrive
    /// within it are saved by one write (a group commit). A `kill -9` re-sends the batches in
    /// flight plus those acknowledged in the last `checkpoint_interval`. `0s`: written as soon
    /// as a batch is acknowledged (writes still coalesce while one is in progress). The default
    /// (25 ms) changes nothing below ~40 batches a second; at full speed it turns ~700 fsynced
    /// writes a second into 40, which is ~6 % of the agent's CPU (`benches/RESULTS.md`).
    pub checkpoint_interval: Duration,
}

impl Default for Pipeline {
    fn default() -> Self {
        Pipeline {
            channel_batches: 16,
            log_channel_batches: 4,
            log_requests_in_flight: 4,
            checkpoint_interval: Duration::from_millis(25),
        }
    }
}

impl AgentConfig {
    /// Applies the per-host environment overrides through `get` (normally `std::env::var`).
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) {
        if let Some(v) = get(crate::env::COLLECTOR_URL).filter(|v| !v.is_empty()) {
            self.collector.url = v;
        }
        if let Some(v) = get(crate::env::AUTH_TOKEN).filter(|v| !v.is_empty()) {
            self.collector.token_from_env = Some(v);
        }
        if let Some(v) = get(crate::env::DATA_DIR).filter(|v| !v.is_empty()) {
            self.data_dir = PathBuf::from(v);
        }
    }
}

pub(crate) fn check_label_name(problems: &mut Vec<(String, String)>, key: String, name: &str) {
    let mut b = name.bytes();
    let ok = matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_');
    if !ok {
        problems.push((key, format!("invalid label name {name:?}: use [a-zA-Z_][a-zA-Z0-9_]*")));
    }
}

impl Validate for AgentConfig {
    fn validate(&self, p: &mut Vec<(String, String)>) {
        if self.data_dir.as_os_str().is_empty() {
            p.push(("data_dir".into(), "must not be empty".into()));
        }
        if self.shutdown_timeout.get() < std::time::Duration::from_millis(100) {
            p.push(("shutdown_timeout".into(), "must be at least 100ms".into()));
        }
        if self.health.sink_failing_after.get() < std::time::Duration::from_secs(1) {
            p.push(("health.sink_failing_after".into(), "must be at least 1s".into()));
        }
        self.log.validate(p);
        for (key, value) in [
            ("collector.url", &self.collector.url),
            ("collector.logs_url", &self.collector.logs_url),
            ("collector.metrics_url", &self.collector.metrics_url),
        ] {
            if (key == "collector.url" || !value.is_empty())
                && let Some(msg) = check_http_url(value)
            {
                p.push((key.into(), msg));
            }
        }
        self.server.tls.validate("server.tls", p);
        self.collector.tls.validate("collector.tls", p);
        if self.collector.batch_max_bytes == 0 {
            p.push(("collector.batch_max_bytes".into(), "must be greater than 0".into()));
        }
        if self.collector.retry_initial_backoff > self.collector.retry_max_backoff {
            p.push(("collector.retry_initial_backoff".into(), "must not exceed collector.retry_max_backoff".into()));
        }
        if self.host_metrics.interval.get() < std::time::Duration::from_millis(100) {
            p.push(("host_metrics.interval".into(), "must be at least 100ms".into()));
        }
        for (i, name) in self.host_metrics.disable.iter().enumerate() {
            if !HOST_COLLECTORS.contains(&name.as_str()) {
                p.push((
                    format!("host_metrics.disable[{i}]"),
                    format!("unknown collector {name:?}; known: {}", HOST_COLLECTORS.join(", ")),
                ));
            }
        }
        for (key, re) in [
            ("host_metrics.filesystem_mount_points_exclude", &self.host_metrics.filesystem_mount_points_exclude),
            ("host_metrics.filesystem_fs_types_exclude", &self.host_metrics.filesystem_fs_types_exclude),
            ("host_metrics.diskstats_device_exclude", &self.host_metrics.diskstats_device_exclude),
            ("host_metrics.netdev_device_exclude", &self.host_metrics.netdev_device_exclude),
        ] {
            if let Err(e) = regex::Regex::new(re) {
                p.push((key.into(), format!("invalid regex {re:?}: {e}")));
            }
        }
        self.scrape.validate(p);
        self.remote_write.validate(p);
        if self.pipeline.channel_batches == 0 {
            p.push(("pipeline.channel_batches".into(), "must be greater than 0".into()));
        }
        if self.pipeline.log_channel_batches == 0 {
            p.push(("pipeline.log_channel_batches".into(), "must be greater than 0".into()));
        }
        if self.pipeline.log_requests_in_flight == 0 {
            p.push(("pipeline.log_requests_in_flight".into(), "must be greater than 0".into()));
        }
        if self.sources.poll_interval.get() < std::time::Duration::from_millis(10) {
            p.push(("sources.poll_interval".into(), "must be at least 10ms".into()));
        }
        if self.sources.rescan_interval.get() < std::time::Duration::from_millis(10) {
            p.push(("sources.rescan_interval".into(), "must be at least 10ms".into()));
        }
        if self.sources.max_open_files == 0 {
            p.push(("sources.max_open_files".into(), "must be greater than 0".into()));
        }
        for (i, src) in self.sources.files.iter().enumerate() {
            validate_file_source(p, i, src);
            if src.include.is_empty() {
                p.push((format!("sources.files[{i}].include"), "needs at least one glob".into()));
            }
            for (field, globs) in [("include", &src.include), ("exclude", &src.exclude)] {
                for (j, g) in globs.iter().enumerate() {
                    if let Err(e) = globset::GlobBuilder::new(g).literal_separator(true).build() {
                        p.push((
                            format!("sources.files[{i}].{field}[{j}]"),
                            format!("invalid glob {g:?}: {}", e.kind()),
                        ));
                    } else if field == "include" && !g.starts_with('/') {
                        p.push((
                            format!("sources.files[{i}].{field}[{j}]"),
                            format!("glob {g:?} must be an absolute path"),
                        ));
                    }
                }
            }
            for name in src.labels.keys() {
                check_label_name(p, format!("sources.files[{i}].labels.{name}"), name);
            }
        }
    }
}

fn check_regex(p: &mut Vec<(String, String)>, key: String, re: &str) {
    if !re.is_empty()
        && let Err(e) = regex::Regex::new(re)
    {
        let msg = e.to_string().lines().last().unwrap_or("invalid").trim().to_string();
        p.push((key, format!("invalid regex {re:?}: {msg}")));
    }
}

fn validate_file_source(p: &mut Vec<(String, String)>, i: usize, src: &FileSource) {
    let key = |k: &str| format!("sources.files[{i}].{k}");
    if src.max_line_bytes < 16 {
        p.push((key("max_line_bytes"), "must be at least 16".into()));
    }
    check_regex(p, key("keep_lines"), &src.keep_lines);
    check_regex(p, key("drop_lines"), &src.drop_lines);
    let m = &src.multiline;
    check_regex(p, key("multiline.start_pattern"), &m.start_pattern);
    check_regex(p, key("multiline.continuation_pattern"), &m.continuation_pattern);
    let set = [m.preset != MultilinePreset::None, !m.start_pattern.is_empty(), !m.continuation_pattern.is_empty()];
    if set.iter().filter(|s| **s).count() > 1 {
        p.push((key("multiline"), "set only one of preset, start_pattern and continuation_pattern".into()));
    }
    if m.max_lines == 0 {
        p.push((key("multiline.max_lines"), "must be greater than 0".into()));
    }
    let parse = &src.parse;
    match parse.format {
        ParseFormat::Regex if parse.regex.is_empty() => {
            p.push((key("parse.regex"), "format = \"regex\" needs a regex with named captures".into()));
        }
        ParseFormat::Regex => {
            check_regex(p, key("parse.regex"), &parse.regex);
            if let Ok(re) = regex::Regex::new(&parse.regex)
                && re.capture_names().flatten().next().is_none()
            {
                p.push((key("parse.regex"), "has no named capture such as (?P<level>\\w+)".into()));
            }
        }
        ParseFormat::None if !parse.regex.is_empty() => {
            p.push((key("parse.regex"), "is only used with format = \"regex\"".into()));
        }
        _ => {}
    }
    if parse.format == ParseFormat::None && (!parse.labels.is_empty() || !parse.timestamp_field.is_empty()) {
        p.push((key("parse.format"), "labels and timestamp_field need a format (json, logfmt or regex)".into()));
    }
    for (j, name) in parse.labels.iter().enumerate() {
        check_label_name(p, format!("sources.files[{i}].parse.labels[{j}]"), name);
        if name == "job" || name == "host" || name == "filename" {
            p.push((format!("sources.files[{i}].parse.labels[{j}]"), format!("{name:?} is set by the agent")));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_derived_from_the_base() {
        let mut o = Output { url: "http://c:3100/".into(), ..Output::default() };
        assert_eq!(o.logs_push_url(), "http://c:3100/loki/api/v1/push");
        assert_eq!(o.remote_write_url(), "http://c:3100/api/v1/write");
        o.metrics_url = "http://vm:8428/api/v1/write".into();
        assert_eq!(o.remote_write_url(), "http://vm:8428/api/v1/write");
    }

    #[test]
    fn env_overrides_apply() {
        let mut c = AgentConfig::default();
        c.apply_env(|k| match k {
            "OSPREY_COLLECTOR_URL" => Some("http://x:1".into()),
            "OSPREY_DATA_DIR" => Some("/tmp/d".into()),
            "OSPREY_AUTH_TOKEN" => Some("t".into()),
            _ => None,
        });
        assert_eq!(c.collector.url, "http://x:1");
        assert_eq!(c.data_dir, PathBuf::from("/tmp/d"));
        assert_eq!(c.collector.token_from_env.as_deref(), Some("t"));
    }

    fn problems(src: FileSource) -> Vec<(String, String)> {
        let mut c = AgentConfig::default();
        c.sources.files = vec![src];
        let mut p = Vec::new();
        c.validate(&mut p);
        p
    }

    #[test]
    fn file_source_checks_name_the_key() {
        let mut s = FileSource::default();
        s.multiline.preset = MultilinePreset::Java;
        s.multiline.start_pattern = "^x".into();
        s.keep_lines = "(".into();
        s.parse.format = ParseFormat::Regex;
        s.parse.regex = "^\\w+".into();
        s.parse.labels = vec!["bad-name".into(), "job".into()];
        let p = problems(s);
        let keys: Vec<&str> = p.iter().map(|(k, _)| k.as_str()).collect();
        assert!(keys.contains(&"sources.files[0].multiline"), "{p:?}");
        assert!(keys.contains(&"sources.files[0].keep_lines"), "{p:?}");
        assert!(keys.contains(&"sources.files[0].parse.regex"), "{p:?}");
        assert!(keys.contains(&"sources.files[0].parse.labels[0]"), "{p:?}");
        assert!(keys.contains(&"sources.files[0].parse.labels[1]"), "{p:?}");
        assert!(problems(FileSource::default()).is_empty());
    }
}
