//! `[scrape]` and `[remote_write]` of `agent.toml`: Prometheus scrape jobs and the metrics sink.
//!
//! Keys inside a job keep Prometheus' `scrape_config` names (`job_name`, `scrape_interval`,
//! `metrics_path`, `honor_labels`, `relabel_configs`, ...) so a Prometheus or vmagent config
//! translates line by line; only the syntax is TOML.

use crate::Duration;
use crate::agent::check_label_name;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Scraping of Prometheus targets.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Scrape {
    /// Default `scrape_interval` of jobs that set none.
    pub interval: Duration,
    /// Default `scrape_timeout` of jobs that set none (capped at the job's interval).
    pub timeout: Duration,
    pub jobs: Vec<ScrapeJob>,
}

impl Default for Scrape {
    fn default() -> Self {
        Scrape { interval: Duration::from_secs(60), timeout: Duration::from_secs(10), jobs: vec![] }
    }
}

/// One Prometheus `scrape_config`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScrapeJob {
    pub job_name: String,
    pub scrape_interval: Option<Duration>,
    pub scrape_timeout: Option<Duration>,
    pub metrics_path: String,
    /// `http` or `https`.
    pub scheme: String,
    /// URL query parameters, e.g. `params = { module = ["http_2xx"] }`.
    pub params: BTreeMap<String, Vec<String>>,
    /// Keep the target's labels when they clash with target labels (else they become
    /// `exported_<name>`).
    pub honor_labels: bool,
    /// Use timestamps the target exposes (else the scrape time).
    pub honor_timestamps: bool,
    /// More samples than this after metric relabelling fails the scrape (`up` = 0). 0: no limit.
    pub sample_limit: u64,
    /// A larger (uncompressed) body fails the scrape. 0: no limit.
    pub body_size_limit: u64,
    /// Ask for gzip (`Accept-Encoding: gzip`).
    pub enable_compression: bool,
    pub basic_auth: Option<BasicAuth>,
    pub bearer_token: String,
    pub bearer_token_file: String,
    pub static_configs: Vec<StaticConfig>,
    pub file_sd_configs: Vec<FileSdConfig>,
    pub relabel_configs: Vec<RelabelConfig>,
    pub metric_relabel_configs: Vec<RelabelConfig>,
}

impl Default for ScrapeJob {
    fn default() -> Self {
        ScrapeJob {
            job_name: String::new(),
            scrape_interval: None,
            scrape_timeout: None,
            metrics_path: "/metrics".into(),
            scheme: "http".into(),
            params: BTreeMap::new(),
            honor_labels: false,
            honor_timestamps: true,
            sample_limit: 0,
            body_size_limit: 0,
            enable_compression: true,
            basic_auth: None,
            bearer_token: String::new(),
            bearer_token_file: String::new(),
            static_configs: vec![],
            file_sd_configs: vec![],
            relabel_configs: vec![],
            metric_relabel_configs: vec![],
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BasicAuth {
    pub username: String,
    pub password: String,
    pub password_file: String,
}

/// Targets written in the config.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StaticConfig {
    /// `host:port` of each target.
    pub targets: Vec<String>,
    pub labels: BTreeMap<String, String>,
}

/// Targets read from JSON or YAML files (Prometheus' file_sd format), re-read when they change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileSdConfig {
    /// Paths; the last component may be a glob (`*.json`, `targets/*.yml`).
    pub files: Vec<String>,
    /// Files are also re-read this often even when no change was seen.
    pub refresh_interval: Duration,
}

impl Default for FileSdConfig {
    fn default() -> Self {
        FileSdConfig { files: vec![], refresh_interval: Duration::from_secs(300) }
    }
}

/// A relabelling action, with Prometheus' semantics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RelabelAction {
    #[default]
    Replace,
    Keep,
    Drop,
    KeepEqual,
    DropEqual,
    HashMod,
    LabelMap,
    LabelDrop,
    LabelKeep,
    Lowercase,
    Uppercase,
}

/// One Prometheus `relabel_config`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RelabelConfig {
    pub source_labels: Vec<String>,
    pub separator: String,
    pub target_label: String,
    /// Anchored at both ends, as in Prometheus.
    pub regex: String,
    pub modulus: u64,
    pub replacement: String,
    pub action: RelabelAction,
}

impl Default for RelabelConfig {
    fn default() -> Self {
        RelabelConfig {
            source_labels: vec![],
            separator: ";".into(),
            target_label: String::new(),
            regex: "(.*)".into(),
            modulus: 0,
            replacement: "$1".into(),
            action: RelabelAction::Replace,
        }
    }
}

/// The remote_write sink for host metrics and scraped samples.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RemoteWrite {
    /// Requests in flight at once. Requests of one source (host metrics, one scrape target) are
    /// never in flight together, so each series stays in order.
    pub max_concurrent_requests: usize,
    /// Samples per request at most.
    pub batch_max_samples: usize,
    /// Upper bound of the on-disk queue (bytes). At the bound the oldest requests are dropped
    /// and counted (`osprey_agent_queue_records_dropped_total`).
    pub queue_max_bytes: u64,
    /// Size of one queue segment file (bytes); also what one drop at the bound frees.
    pub queue_segment_bytes: u64,
}

impl Default for RemoteWrite {
    fn default() -> Self {
        RemoteWrite {
            max_concurrent_requests: 4,
            batch_max_samples: 2000,
            queue_max_bytes: 256 << 20,
            queue_segment_bytes: 8 << 20,
        }
    }
}

impl RemoteWrite {
    pub(crate) fn validate(&self, p: &mut Vec<(String, String)>) {
        if self.max_concurrent_requests == 0 {
            p.push(("remote_write.max_concurrent_requests".into(), "must be greater than 0".into()));
        }
        if self.batch_max_samples == 0 {
            p.push(("remote_write.batch_max_samples".into(), "must be greater than 0".into()));
        }
        if self.queue_max_bytes < 1 << 20 {
            p.push(("remote_write.queue_max_bytes".into(), "must be at least 1048576 (1 MiB)".into()));
        }
        if self.queue_segment_bytes < 4096 || self.queue_segment_bytes > self.queue_max_bytes / 4 {
            p.push((
                "remote_write.queue_segment_bytes".into(),
                "must be at least 4096 and at most a quarter of remote_write.queue_max_bytes".into(),
            ));
        }
    }
}

fn check_regex(p: &mut Vec<(String, String)>, key: String, re: &str) {
    if let Err(e) = regex::Regex::new(&format!("^(?:{re})$")) {
        p.push((key, format!("invalid regex {re:?}: {e}")));
    }
}

impl RelabelConfig {
    pub(crate) fn validate(&self, key: &str, p: &mut Vec<(String, String)>) {
        use RelabelAction::*;
        check_regex(p, format!("{key}.regex"), &self.regex);
        for (i, l) in self.source_labels.iter().enumerate() {
            check_label_name(p, format!("{key}.source_labels[{i}]"), l);
        }
        let needs_target = matches!(self.action, Replace | HashMod | KeepEqual | DropEqual | Lowercase | Uppercase);
        if needs_target && self.target_label.is_empty() {
            p.push((format!("{key}.target_label"), format!("action {:?} needs a target_label", self.action)));
        }
        if matches!(self.action, HashMod) && self.modulus == 0 {
            p.push((format!("{key}.modulus"), "action hashmod needs a modulus greater than 0".into()));
        }
        if matches!(self.action, LabelDrop | LabelKeep | LabelMap) && !self.source_labels.is_empty() {
            p.push((
                format!("{key}.source_labels"),
                format!("action {:?} works on label names through regex; source_labels must be empty", self.action),
            ));
        }
        // replace's target may use $1-style references; other actions need a plain name.
        if !self.target_label.is_empty() && !matches!(self.action, Replace) {
            check_label_name(p, format!("{key}.target_label"), &self.target_label);
        }
    }
}

impl Scrape {
    pub(crate) fn validate(&self, p: &mut Vec<(String, String)>) {
        if self.interval.get() < std::time::Duration::from_millis(100) {
            p.push(("scrape.interval".into(), "must be at least 100ms".into()));
        }
        let mut names = std::collections::HashSet::new();
        for (i, job) in self.jobs.iter().enumerate() {
            let key = format!("scrape.jobs[{i}]");
            if job.job_name.is_empty() {
                p.push((format!("{key}.job_name"), "must not be empty".into()));
            } else if !names.insert(job.job_name.as_str()) {
                p.push((format!("{key}.job_name"), format!("job {:?} is defined twice", job.job_name)));
            }
            if let Some(iv) = job.scrape_interval
                && iv.get() < std::time::Duration::from_millis(100)
            {
                p.push((format!("{key}.scrape_interval"), "must be at least 100ms".into()));
            }
            let interval = job.scrape_interval.unwrap_or(self.interval);
            if let Some(t) = job.scrape_timeout
                && t > interval
            {
                p.push((format!("{key}.scrape_timeout"), format!("must not exceed the scrape interval ({interval})")));
            }
            if job.scheme != "http" && job.scheme != "https" {
                p.push((format!("{key}.scheme"), format!("must be \"http\" or \"https\", not {:?}", job.scheme)));
            }
            if !job.metrics_path.starts_with('/') {
                p.push((format!("{key}.metrics_path"), "must start with '/'".into()));
            }
            if let Some(b) = &job.basic_auth {
                if b.username.is_empty() {
                    p.push((format!("{key}.basic_auth.username"), "must not be empty".into()));
                }
                if !b.password.is_empty() && !b.password_file.is_empty() {
                    p.push((format!("{key}.basic_auth"), "set password or password_file, not both".into()));
                }
            }
            if !job.bearer_token.is_empty() && !job.bearer_token_file.is_empty() {
                p.push((format!("{key}.bearer_token"), "set bearer_token or bearer_token_file, not both".into()));
            }
            if job.basic_auth.is_some() && (!job.bearer_token.is_empty() || !job.bearer_token_file.is_empty()) {
                p.push((format!("{key}.basic_auth"), "basic_auth and a bearer token are exclusive".into()));
            }
            for (j, sc) in job.static_configs.iter().enumerate() {
                for (k, t) in sc.targets.iter().enumerate() {
                    if t.is_empty() || t.contains('/') || t.contains(' ') {
                        p.push((
                            format!("{key}.static_configs[{j}].targets[{k}]"),
                            format!("target {t:?} must be host:port (no scheme or path)"),
                        ));
                    }
                }
                for name in sc.labels.keys() {
                    check_label_name(p, format!("{key}.static_configs[{j}].labels.{name}"), name);
                }
            }
            for (j, fsd) in job.file_sd_configs.iter().enumerate() {
                if fsd.files.is_empty() {
                    p.push((format!("{key}.file_sd_configs[{j}].files"), "needs at least one path".into()));
                }
                for (k, f) in fsd.files.iter().enumerate() {
                    let ok = [".json", ".yml", ".yaml"].iter().any(|x| f.ends_with(x));
                    if !ok {
                        p.push((
                            format!("{key}.file_sd_configs[{j}].files[{k}]"),
                            format!("{f:?} must end in .json, .yml or .yaml"),
                        ));
                    } else if let Err(e) = globset::Glob::new(f) {
                        p.push((format!("{key}.file_sd_configs[{j}].files[{k}]"), format!("invalid glob {f:?}: {e}")));
                    }
                }
            }
            for (j, r) in job.relabel_configs.iter().enumerate() {
                r.validate(&format!("{key}.relabel_configs[{j}]"), p);
            }
            for (j, r) in job.metric_relabel_configs.iter().enumerate() {
                r.validate(&format!("{key}.metric_relabel_configs[{j}]"), p);
            }
        }
    }
}
