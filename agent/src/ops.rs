//! Day-2 operations shared by both roles: reload bookkeeping (`osprey_config_*` metrics and the
//! answer of `POST /-/reload`), `/health` reports, `/ready` answers and runtime log levels.
//!
//! The collector uses these too (it already depends on this crate for the disk queue and the
//! HTTP sender), so both roles answer the same way and `osprey status` reads one set of names.

use osprey_config::ReloadPlan;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// Reads the config file again and checks it (file, line, column, key and problem on error).
pub type ConfigSource<C> = Arc<dyn Fn() -> Result<C, String> + Send + Sync>;

/// Gets (`None`) or sets (`Some(directives)`) the process's log level filter; returns the filter
/// now in force, or why the directives were refused. Installed by the binary, which owns the
/// logging setup.
pub type LogControl = Arc<dyn Fn(Option<&str>) -> Result<String, String> + Send + Sync>;

/// A part reloaded with the config that owns files of its own (TLS certificates, token files):
/// it gets the config in force, re-reads and checks what it owns, swaps it in, and returns a
/// line for the answer, or why it refuses (which rejects the reload before anything else of it
/// is applied).
pub type Reloadable<C> = Arc<dyn Fn(&C) -> Result<String, String> + Send + Sync>;

/// What a reload of either role hooks into, installed after start: where the config file is
/// read from (the binary's `--config`), how the log filter changes, and the [`Reloadable`]
/// parts. A reloadable must not hold its role's state strongly (a cycle would keep the stores
/// or the agent alive at shutdown): capture the part itself, or a `Weak`.
pub struct ReloadHooks<C> {
    source: Mutex<Option<ConfigSource<C>>>,
    log: Mutex<Option<LogControl>>,
    parts: Mutex<Vec<(&'static str, Reloadable<C>)>>,
}

impl<C> Default for ReloadHooks<C> {
    fn default() -> Self {
        ReloadHooks { source: Mutex::new(None), log: Mutex::new(None), parts: Mutex::new(Vec::new()) }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl<C> ReloadHooks<C> {
    /// Where reloads read the config from. Without one, a reload is refused with a message.
    pub fn set_config_source(&self, source: ConfigSource<C>) {
        *lock(&self.source) = Some(source);
    }

    pub fn config_source(&self) -> Option<ConfigSource<C>> {
        lock(&self.source).clone()
    }

    /// How `/-/log-level` and `log.level` reloads change the log filter.
    pub fn set_log_control(&self, control: LogControl) {
        *lock(&self.log) = Some(control);
    }

    pub fn log_control(&self) -> Option<LogControl> {
        lock(&self.log).clone()
    }

    pub fn add_reloadable(&self, name: &'static str, reload: Reloadable<C>) {
        lock(&self.parts).push((name, reload));
    }

    /// Runs every reloadable part on `cfg` in the order they were added: their answer lines
    /// (`name: line`), or the first refusal (`name: why`).
    pub fn reload_parts(&self, cfg: &C) -> Result<Vec<String>, String> {
        let parts = lock(&self.parts).clone();
        parts
            .iter()
            .map(|(name, reload)| reload(cfg).map(|line| format!("{name}: {line}")).map_err(|e| format!("{name}: {e}")))
            .collect()
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

/// `osprey_config_reloads_total{result}`, `osprey_config_last_reload_successful` and
/// `osprey_config_last_reload_success_timestamp_seconds` (Prometheus' own
/// `prometheus_config_last_reload_*`, with our prefix). The start counts as a successful load.
#[derive(Clone)]
pub struct ReloadMetrics {
    pub reloads: Family<ResultLabels, Counter>,
    pub last_successful: Gauge,
    pub last_success_seconds: Gauge<f64, AtomicU64>,
}

fn unix_now() -> f64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

impl ReloadMetrics {
    pub fn register(registry: &mut Registry) -> ReloadMetrics {
        let m = ReloadMetrics {
            reloads: Family::default(),
            last_successful: Gauge::default(),
            last_success_seconds: Gauge::default(),
        };
        // Both series exist from the start, so a rate() over them never starts from nothing.
        let _ = m.reloads.get_or_create(&ResultLabels { result: "success" });
        let _ = m.reloads.get_or_create(&ResultLabels { result: "failure" });
        m.last_successful.set(1);
        m.last_success_seconds.set(unix_now());
        let r = registry.sub_registry_with_prefix("osprey_config");
        r.register("reloads", "Configuration reloads (SIGHUP, POST /-/reload), by result", m.reloads.clone());
        r.register(
            "last_reload_successful",
            "Whether the last configuration reload succeeded (1) or was rejected (0)",
            m.last_successful.clone(),
        );
        r.register(
            "last_reload_success_timestamp_seconds",
            "When the configuration was last loaded successfully (start or reload)",
            m.last_success_seconds.clone(),
        );
        m
    }

    pub fn success(&self) {
        self.reloads.get_or_create(&ResultLabels { result: "success" }).inc();
        self.last_successful.set(1);
        self.last_success_seconds.set(unix_now());
    }

    pub fn failure(&self) {
        self.reloads.get_or_create(&ResultLabels { result: "failure" }).inc();
        self.last_successful.set(0);
    }
}

/// The outcome of one reload, as logged and as answered by `POST /-/reload`.
#[derive(Clone, Debug, Serialize)]
pub struct ReloadOutcome {
    /// `success` or `error`.
    pub status: &'static str,
    /// Why the new config was refused (the running config stays).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Changed keys now in force.
    pub applied: Vec<String>,
    /// Changed keys that a running process cannot apply: they wait for a restart.
    pub needs_restart: Vec<String>,
    /// What applying did, in words (files kept and released, jobs restarted, ...).
    pub details: Vec<String>,
}

impl ReloadOutcome {
    pub fn ok(plan: ReloadPlan, details: Vec<String>) -> ReloadOutcome {
        ReloadOutcome {
            status: "success",
            error: None,
            applied: plan.applied,
            needs_restart: plan.needs_restart,
            details,
        }
    }

    pub fn rejected(error: String) -> ReloadOutcome {
        ReloadOutcome { status: "error", error: Some(error), applied: vec![], needs_restart: vec![], details: vec![] }
    }

    pub fn succeeded(&self) -> bool {
        self.error.is_none()
    }

    /// Counts the outcome in the `osprey_config_*` metrics.
    pub fn count(&self, metrics: &ReloadMetrics) {
        if self.succeeded() { metrics.success() } else { metrics.failure() }
    }

    /// HTTP status of the `/-/reload` answer: 200, or 400 when the config was refused.
    pub fn http_status(&self) -> u16 {
        if self.succeeded() { 200 } else { 400 }
    }

    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).unwrap_or_else(|_| "{}".into());
        s.push('\n');
        s
    }
}

/// A plain-text HTTP answer.
pub fn text(code: u16, body: String) -> axum::response::Response {
    respond(code, "text/plain; charset=utf-8", body)
}

/// A JSON HTTP answer.
pub fn json(code: u16, body: String) -> axum::response::Response {
    respond(code, "application/json", body)
}

fn respond(code: u16, content_type: &'static str, body: String) -> axum::response::Response {
    use axum::response::IntoResponse;
    let status = axum::http::StatusCode::from_u16(code).unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR);
    (status, [(axum::http::header::CONTENT_TYPE, content_type)], body).into_response()
}

/// Answers `GET /-/log-level` (`body` = `None`) and `POST`/`PUT /-/log-level` with the new
/// directives as the body: (status, text).
pub fn log_level_request(control: Option<&LogControl>, body: Option<&str>) -> (u16, String) {
    let Some(control) = control else {
        return (503, "log levels cannot be changed in this process (no log control installed)\n".into());
    };
    let body = body.map(str::trim);
    match control(body) {
        Ok(now) => {
            if let Some(b) = body {
                tracing::warn!(filter = %b, "log level changed through /-/log-level (until the next reload or restart)");
            }
            (200, format!("{now}\n"))
        }
        Err(e) => (400, format!("{e}\n")),
    }
}

/// How one health check came out; the report's status is the worst of its checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    /// Working, but needs attention (a receiver failing for minutes, a queue near its bound):
    /// `/health` still answers 200, so a liveness probe does not restart a process that a
    /// restart would not help.
    Degraded,
    /// Broken in a way that only a restart or an operator fixes (WAL refusing writes after a
    /// failed fsync, the tailer thread gone): `/health` answers 503.
    Unhealthy,
}

#[derive(Clone, Debug, Serialize)]
pub struct Check {
    pub name: String,
    pub status: Status,
    pub message: String,
}

impl Check {
    pub fn new(name: impl Into<String>, status: Status, message: impl Into<String>) -> Check {
        Check { name: name.into(), status, message: message.into() }
    }
}

/// The body of `/health`: `{"status": "ok"|"degraded"|"unhealthy", "checks": [...]}`.
#[derive(Clone, Debug, Serialize)]
pub struct HealthReport {
    pub status: Status,
    pub checks: Vec<Check>,
}

impl HealthReport {
    pub fn new(checks: Vec<Check>) -> HealthReport {
        let status = checks.iter().map(|c| c.status).max().unwrap_or(Status::Ok);
        HealthReport { status, checks }
    }

    pub fn http_status(&self) -> u16 {
        if self.status == Status::Unhealthy { 503 } else { 200 }
    }

    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).unwrap_or_else(|_| "{}".into());
        s.push('\n');
        s
    }
}

/// The answer of `/ready`: 200 `ready`, or 503 with every reason it is not.
pub fn ready_answer(not_ready: &[String]) -> (u16, String) {
    if not_ready.is_empty() { (200, "ready\n".into()) } else { (503, format!("not ready: {}\n", not_ready.join("; "))) }
}

/// A queue at this share of its bound or more is reported as degraded.
pub const QUEUE_FULL_RATIO: f64 = 0.9;

/// Every disk queue of `registry` at [`QUEUE_FULL_RATIO`] of its bound or more: a series named
/// `*_queue_bytes` next to a `*_queue_max_bytes` with the same labels. Read from the exposition
/// the process serves, so every queue registered now or later is covered without a list.
pub fn queue_checks(registry: &Registry) -> Vec<Check> {
    let mut text = String::new();
    if prometheus_client::encoding::prometheus_text::encode(&mut text, registry).is_err() {
        return vec![];
    }
    let mut used: BTreeMap<(String, String), f64> = BTreeMap::new();
    let mut max: BTreeMap<(String, String), f64> = BTreeMap::new();
    let parser = osprey_protocol::exposition::parse::Parser::new(
        text.as_bytes(),
        osprey_protocol::exposition::parse::Format::Text,
    );
    for entry in parser {
        let Ok(osprey_protocol::exposition::parse::Entry::Sample(s)) = entry else { continue };
        let labels = s.raw_labels().to_string();
        if let Some(prefix) = s.name.strip_suffix("_queue_max_bytes") {
            max.insert((prefix.to_string(), labels), s.value);
        } else if let Some(prefix) = s.name.strip_suffix("_queue_bytes") {
            used.insert((prefix.to_string(), labels), s.value);
        }
    }
    let mut out = Vec::new();
    for ((prefix, labels), bytes) in used {
        let Some(&bound) = max.get(&(prefix.clone(), labels.clone())) else { continue };
        if bound > 0.0 && bytes >= bound * QUEUE_FULL_RATIO {
            out.push(Check::new(
                format!("{prefix}_queue{{{labels}}}"),
                Status::Degraded,
                format!(
                    "disk queue at {:.0}% of its bound ({bytes:.0} of {bound:.0} bytes): its receiver is not keeping up; at the bound the oldest records are dropped (counted)",
                    100.0 * bytes / bound
                ),
            ));
        }
    }
    out
}

/// Sinks whose sends are failing, and since when: `/health` reports a sink failing for longer
/// than `health.sink_failing_after`. Shared by every clone of the agent's telemetry.
#[derive(Clone, Default)]
pub struct SinkHealth(Arc<Mutex<BTreeMap<&'static str, Failing>>>);

struct Failing {
    since: Instant,
    problem: String,
}

impl SinkHealth {
    /// A send to `sink` failed and will be retried.
    pub fn failed(&self, sink: &'static str, problem: &str) {
        if let Ok(mut m) = self.0.lock() {
            let f = m.entry(sink).or_insert_with(|| Failing { since: Instant::now(), problem: String::new() });
            f.problem.clear();
            f.problem.push_str(problem);
        }
    }

    /// `sink` got an answer that ends the send (delivered, or refused for good).
    pub fn answered(&self, sink: &'static str) {
        if let Ok(mut m) = self.0.lock() {
            m.remove(sink);
        }
    }

    /// One degraded check per sink failing for `after` or longer.
    pub fn checks(&self, after: Duration) -> Vec<Check> {
        let Ok(m) = self.0.lock() else { return vec![] };
        m.iter()
            .filter(|(_, f)| f.since.elapsed() >= after)
            .map(|(sink, f)| {
                Check::new(
                    format!("sink_{sink}"),
                    Status::Degraded,
                    format!(
                        "sends have failed for {} (retrying; nothing is lost while the files and queues hold the data): {}",
                        humantime::format_duration(Duration::from_secs(f.since.elapsed().as_secs())),
                        f.problem
                    ),
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::QueueMetrics;

    #[test]
    fn a_queue_near_its_bound_is_degraded() {
        let mut registry = Registry::default();
        let q = QueueMetrics::default();
        q.register(
            registry.sub_registry_with_prefix("osprey_agent").sub_registry_with_label(("queue".into(), "rw".into())),
        );
        q.max_bytes.set(1000);
        q.disk_bytes.set(899);
        assert!(queue_checks(&registry).is_empty());
        q.disk_bytes.set(950);
        let checks = queue_checks(&registry);
        assert_eq!(checks.len(), 1, "{checks:?}");
        assert_eq!(checks[0].name, "osprey_agent_queue{queue=\"rw\"}");
        assert!(checks[0].message.contains("95%"), "{}", checks[0].message);
        assert_eq!(HealthReport::new(checks).http_status(), 200, "degraded still answers 200");
    }

    #[test]
    fn reports_take_the_worst_check() {
        let r = HealthReport::new(vec![
            Check::new("a", Status::Ok, ""),
            Check::new("b", Status::Unhealthy, "x"),
            Check::new("c", Status::Degraded, "y"),
        ]);
        assert_eq!(r.status, Status::Unhealthy);
        assert_eq!(r.http_status(), 503);
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(v["status"], "unhealthy");
        assert_eq!(v["checks"][1]["message"], "x");
        assert_eq!(ready_answer(&[]), (200, "ready\n".into()));
        assert_eq!(ready_answer(&["a".into(), "b".into()]).1, "not ready: a; b\n");
    }

    #[test]
    fn failing_sinks_are_reported_after_the_threshold() {
        let h = SinkHealth::default();
        h.failed("loki", "connection refused");
        assert_eq!(h.checks(Duration::from_secs(3600)).len(), 0);
        let c = h.checks(Duration::ZERO);
        assert_eq!(c.len(), 1);
        assert!(c[0].message.contains("connection refused"));
        h.answered("loki");
        assert!(h.checks(Duration::ZERO).is_empty());
    }
}
