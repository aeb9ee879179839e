//! The agent's configuration (`agent.toml`).

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
    pub server: AgentServer,
    pub collector: Output,
    pub sources: Sources,
    pub host_metrics: HostMetrics,
    pub scrape: crate::scrape::Scrape,
    pub remote_write: crate::scrape::RemoteWrite,
    pub pipeline: Pipeline,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            data_dir: PathBuf::from("/var/lib/osprey/agent"),
            hostname: String::new(),
            server: AgentServer::default(),
            collector: Output::default(),
            sources: Sources::default(),
            host_metrics: HostMetrics::default(),
            scrape: crate::scrape::Scrape::default(),
            remote_write: crate::scrape::RemoteWrite::default(),
            pipeline: Pipeline::default(),
        }
    }
}

/// The agent's own HTTP listener (`/metrics`, `/ready`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentServer {
    pub listen: SocketAddr,
}

impl Default for AgentServer {
    fn default() -> Self {
        AgentServer { listen: SocketAddr::from(([127, 0, 0, 1], 9101)) }
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
    pub files: Vec<FileSource>,
}

impl Default for Sources {
    fn default() -> Self {
        Sources { files: vec![FileSource::default()] }
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
}

impl Default for FileSource {
    fn default() -> Self {
        FileSource {
            job: "varlogs".into(),
            include: vec!["/var/log/**/*.log".into()],
            exclude: vec![],
            read_from: ReadFrom::End,
            labels: BTreeMap::new(),
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
}

impl Default for Pipeline {
    fn default() -> Self {
        Pipeline { channel_batches: 16 }
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
        for (i, src) in self.sources.files.iter().enumerate() {
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
}
