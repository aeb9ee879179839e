//! Settings shared by both roles for running them day to day (`[log]`, `shutdown_timeout`), and
//! what a reload may change: [`changed_keys`] lists the keys two configs differ in, and
//! [`needs_restart`] says which of them a running process cannot apply.
//!
//! The split lives here, next to the keys, so `osprey validate`, the reload code of each role and
//! the documentation agree on one list. A key is *hot* unless it is listed as needing a restart.

use crate::Validate;
use serde::{Deserialize, Serialize};

/// How log lines are written (to stderr).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// `2026-11-26T08:00:00.123Z  INFO osprey_agent: message key=value` (colours on a terminal).
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `message` and the event's fields.
    Json,
}

impl LogFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

/// `[log]`: the process's own log lines.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    /// `text` or `json`. The `--log-format` flag overrides it. Needs a restart to change.
    pub format: LogFormat,
    /// Level per module, in `RUST_LOG` syntax: `info`, `warn,osprey_agent::tail=debug`.
    /// `OSPREY_LOG` overrides it at start; a reload applies a changed value; `POST /-/log-level`
    /// changes it until the next reload or restart.
    pub level: String,
}

impl Default for Log {
    fn default() -> Self {
        Log { format: LogFormat::Text, level: "info".into() }
    }
}

impl Validate for Log {
    fn validate(&self, p: &mut Vec<(String, String)>) {
        if let Err(e) = check_log_level(&self.level) {
            p.push(("log.level".into(), e));
        }
    }
}

/// Checks a log level directive string (`RUST_LOG` syntax) without installing it.
pub fn check_log_level(directives: &str) -> Result<(), String> {
    if directives.trim().is_empty() {
        return Err("must not be empty; write e.g. \"info\" or \"warn,osprey_agent::tail=debug\"".into());
    }
    tracing_subscriber::EnvFilter::builder().parse(directives).map(|_| ()).map_err(|e| {
        format!(
            "invalid level directives {directives:?}: {e}; write e.g. \"info\" or \"warn,osprey_agent::tail=debug\""
        )
    })
}

/// Dotted paths of the keys whose values differ between `old` and `new` (tables are walked,
/// arrays compare whole: `sources.files`, `scrape.jobs`). Only key names, never values, so the
/// result can be logged even when a value is a secret.
pub fn changed_keys<T: Serialize>(old: &T, new: &T) -> Vec<String> {
    let (Ok(a), Ok(b)) = (toml::Value::try_from(old), toml::Value::try_from(new)) else {
        return vec!["(config could not be compared)".into()];
    };
    let mut out = Vec::new();
    diff(&a, &b, "", &mut out);
    out
}

fn diff(a: &toml::Value, b: &toml::Value, path: &str, out: &mut Vec<String>) {
    match (a, b) {
        (toml::Value::Table(x), toml::Value::Table(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                match (x.get(k), y.get(k)) {
                    (Some(va), Some(vb)) => diff(va, vb, &p, out),
                    _ => out.push(p),
                }
            }
        }
        _ if a != b => out.push(path.to_string()),
        _ => {}
    }
}

/// Keys (or key prefixes ending in `.`) of the agent that a running agent cannot change.
pub const AGENT_RESTART_KEYS: &[&str] = &[
    "data_dir",
    "hostname",
    "server.",
    "collector.url",
    "collector.logs_url",
    "collector.metrics_url",
    "collector.tenant",
    "collector.token_file",
    "collector.timeout",
    "collector.retry_initial_backoff",
    "collector.retry_max_backoff",
    "collector.tls",
    "remote_write.",
    "pipeline.",
    "log.format",
];

/// Keys (or key prefixes ending in `.`) of the collector that a running collector cannot change.
pub const COLLECTOR_RESTART_KEYS: &[&str] = &[
    "data_dir",
    "server.listen",
    "server.max_connections",
    "server.header_read_timeout",
    "server.max_header_bytes",
    "server.tls.reload_interval",
    "server.max_body_bytes",
    "server.max_decompressed_bytes",
    "logs.fsync",
    "logs.fsync_batch_wait",
    "logs.wal_segment_bytes",
    "logs.forward",
    "logs.default_tenant",
    "metrics.forward",
    "metrics.agent_label",
    "metrics.agent_down_after",
    "metrics.agent_forget_after",
    "metrics.max_agents",
    "log.format",
];

/// Whether `key` (a path from [`changed_keys`]) is in `restart_keys`.
pub fn needs_restart(restart_keys: &[&str], key: &str) -> bool {
    restart_keys.iter().any(|r| match r.strip_suffix('.') {
        Some(prefix) => key == prefix || key.starts_with(r),
        None => key == *r || key.starts_with(&format!("{r}.")),
    })
}

/// What a reload found: the changed keys it applied and those that wait for a restart.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ReloadPlan {
    pub applied: Vec<String>,
    pub needs_restart: Vec<String>,
}

impl ReloadPlan {
    pub fn new<T: Serialize>(old: &T, new: &T, restart_keys: &[&str]) -> ReloadPlan {
        let (needs_restart, applied) = changed_keys(old, new).into_iter().partition(|k| needs_restart(restart_keys, k));
        ReloadPlan { applied, needs_restart }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AgentConfig, CollectorConfig};

    #[test]
    fn changed_keys_walk_tables_and_compare_arrays_whole() {
        let old = AgentConfig::default();
        assert!(changed_keys(&old, &old).is_empty());
        let mut new = old.clone();
        new.sources.files[0].include.push("/srv/*.log".into());
        new.host_metrics.interval = crate::Duration::from_secs(5);
        new.server.listen = "127.0.0.1:1".parse().unwrap();
        assert_eq!(changed_keys(&old, &new), ["host_metrics.interval", "server.listen", "sources.files"]);
        let plan = ReloadPlan::new(&old, &new, AGENT_RESTART_KEYS);
        assert_eq!(plan.applied, ["host_metrics.interval", "sources.files"]);
        assert_eq!(plan.needs_restart, ["server.listen"]);
    }

    #[test]
    fn collector_retention_overrides_are_hot_and_the_listener_is_not() {
        let old = CollectorConfig::default();
        let mut new = old.clone();
        new.logs.retention.tenants.insert("a".into(), Default::default());
        new.logs.max_line_bytes = 10;
        new.logs.fsync_batch_wait = crate::Duration::from_millis(1);
        new.data_dir = "/x".into();
        let plan = ReloadPlan::new(&old, &new, COLLECTOR_RESTART_KEYS);
        assert_eq!(plan.applied, ["logs.max_line_bytes", "logs.retention.tenants.a"]);
        assert_eq!(plan.needs_restart, ["data_dir", "logs.fsync_batch_wait"]);
        // A prefix matches whole path components only.
        assert!(!needs_restart(&["logs.fsync"], "logs.fsync_batch_wait_x"));
        assert!(needs_restart(&["server."], "server"));
    }

    #[test]
    fn log_levels_are_checked() {
        assert!(check_log_level("info").is_ok());
        assert!(check_log_level("warn,osprey_agent::tail=debug").is_ok());
        assert!(check_log_level("").is_err());
        let e = check_log_level("osprey=loud").unwrap_err();
        assert!(e.contains("osprey=loud"), "{e}");
    }
}
