//! The running collector's control surface: reload (SIGHUP, `POST /-/reload`), `/ready`,
//! `/health`, the log level, and the state of a graceful stop.
//!
//! A reload re-reads the config file and applies, from the next request or maintenance pass on:
//! `[logs]` limits, retention (with per-tenant overrides), flush and merge settings, query
//! limits (`max_query_lines`, `max_query_memory_bytes`, `max_concurrent_queries`),
//! `server.request_timeout`, `[metrics]` limits, `series_ttl` and query bounds, `log.level` and
//! `shutdown_timeout`. Keys a running collector cannot change
//! (`osprey_config::ops::COLLECTOR_RESTART_KEYS`: the listener, `data_dir`, the WAL's settings,
//! forwarding targets, fleet settings, the log format) are reported as needing a restart and keep
//! their running values, so the config in force is always the new file's hot keys over the
//! started process's restart keys.
//!
//! TLS certificates and bearer tokens are reloaded by their own `reload()` functions (the
//! security side); `Ops::hooks` ([`ReloadHooks::add_reloadable`]) is where they plug in, so one SIGHUP or
//! `/-/reload` reloads everything and a failure of any part rejects the reload.

use crate::State;
use osprey_agent::ops::{Check, HealthReport, ReloadHooks, ReloadMetrics, ReloadOutcome, Status};
use osprey_config::CollectorConfig;
use osprey_config::ops::{COLLECTOR_RESTART_KEYS, ReloadPlan};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Reload and lifecycle state shared by the handlers.
pub struct Ops {
    pub metrics: ReloadMetrics,
    /// The config file, the log filter and the security parts (TLS files, tokens, `[limits]`).
    pub hooks: ReloadHooks<CollectorConfig>,
    reloading: tokio::sync::Mutex<()>,
    stopping: AtomicBool,
    /// Turns true with `stopping`, for long-lived answers (tails) that must end on their own.
    stop_signal: tokio::sync::watch::Sender<bool>,
}

impl Ops {
    pub fn new(metrics: ReloadMetrics) -> Ops {
        Ops {
            metrics,
            hooks: ReloadHooks::default(),
            reloading: tokio::sync::Mutex::new(()),
            stopping: AtomicBool::new(false),
            stop_signal: tokio::sync::watch::channel(false).0,
        }
    }

    /// Shutdown began: `/ready` says so (load balancers stop sending), reloads are refused.
    pub fn stopping(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.stop_signal.send_replace(true);
    }

    /// Turns true when shutdown begins.
    pub fn stop_signal(&self) -> tokio::sync::watch::Receiver<bool> {
        self.stop_signal.subscribe()
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }
}

/// Why the collector is not ready, if it is not.
pub fn not_ready(state: &State) -> Vec<String> {
    let mut out = Vec::new();
    if state.ops.is_stopping() {
        out.push("shutting down".into());
    }
    if let Some(e) = state.logs.wal_poisoned() {
        out.push(format!("the WAL refuses writes until a restart ({e})"));
    }
    out
}

/// The `/health` report: the WAL, forwarding queues near their bound.
pub fn health(state: &State) -> HealthReport {
    let mut checks = Vec::new();
    match state.logs.wal_poisoned() {
        None => checks.push(Check::new("wal", Status::Ok, "writable")),
        Some(e) => checks.push(Check::new(
            "wal",
            Status::Unhealthy,
            format!(
                "the write-ahead log refuses writes after a failure ({e}); pushes fail until the collector is restarted (check the disk)"
            ),
        )),
    }
    if state.ops.is_stopping() {
        checks.push(Check::new("lifecycle", Status::Ok, "shutting down"));
    }
    checks.extend(osprey_agent::ops::queue_checks(&state.registry));
    HealthReport::new(checks)
}

/// Reads the config file again and applies it; logs and counts the outcome.
pub async fn reload(state: &Arc<State>, trigger: &str) -> ReloadOutcome {
    let _one = state.ops.reloading.lock().await;
    let source = state.ops.hooks.config_source();
    let outcome = match source {
        None => ReloadOutcome::rejected(
            "there is no config file to reload: this collector runs with built-in settings and flags (osprey up); restart it to change them"
                .into(),
        ),
        Some(read) => match tokio::task::spawn_blocking(move || read()).await {
            Ok(Ok(cfg)) => apply(state, cfg).await,
            Ok(Err(e)) => ReloadOutcome::rejected(e),
            Err(e) => ReloadOutcome::rejected(format!("reading the config failed: {e}")),
        },
    };
    outcome.count(&state.ops.metrics);
    log_outcome(trigger, &outcome);
    outcome
}

fn log_outcome(trigger: &str, o: &ReloadOutcome) {
    match &o.error {
        None if o.needs_restart.is_empty() => {
            tracing::info!(trigger, applied = ?o.applied, details = ?o.details, "configuration reloaded")
        }
        None => tracing::warn!(
            trigger, applied = ?o.applied, needs_restart = ?o.needs_restart, details = ?o.details,
            "configuration reloaded; some changed keys need a restart and keep their running values until then"
        ),
        Some(e) => tracing::error!(trigger, "configuration reload rejected; the running configuration stays: {e}"),
    }
}

/// Applies `new` (already validated) as far as a running collector can.
pub async fn apply(state: &Arc<State>, new: CollectorConfig) -> ReloadOutcome {
    if state.ops.is_stopping() {
        return ReloadOutcome::rejected("the collector is shutting down".into());
    }
    let old = state.cfg();
    let plan = ReloadPlan::new(&*old, &new, COLLECTOR_RESTART_KEYS);
    let effective = in_force(&old, new);
    // Parts with their own files (TLS, tokens) first: a refusal there leaves everything as it was.
    let mut details = match state.ops.hooks.reload_parts(&effective) {
        Ok(lines) => lines,
        Err(e) => return ReloadOutcome::rejected(e),
    };
    state.logs.apply_config(&effective.logs);
    state.metrics.apply_config(&effective.metrics);
    resize_query_slots(state, old.logs.max_concurrent_queries, effective.logs.max_concurrent_queries);
    if old.logs.retention != effective.logs.retention {
        details.push("log retention: applied at the next maintenance pass".into());
    }
    if old.log.level != effective.log.level
        && let Some(control) = state.ops.hooks.log_control()
    {
        match control(Some(&effective.log.level)) {
            Ok(now) => details.push(format!("log level: {now}")),
            Err(e) => details.push(format!("log level not changed: {e}")),
        }
    }
    state.cfg.store(effective);
    ReloadOutcome::ok(plan, details)
}

/// Grows or shrinks the query semaphore to `new` permits. Shrinking takes permits as running
/// queries finish (never cancels one).
fn resize_query_slots(state: &Arc<State>, old: usize, new: usize) {
    if new > old {
        state.query_slots.add_permits(new - old);
    } else if old > new {
        let slots = state.query_slots.clone();
        let n = (old - new) as u32;
        tokio::spawn(async move {
            if let Ok(p) = slots.acquire_many_owned(n).await {
                p.forget();
            }
        });
    }
}

/// The config in force after a reload to `new`: its hot keys, and the running values of the keys
/// that need a restart.
fn in_force(old: &CollectorConfig, mut new: CollectorConfig) -> CollectorConfig {
    new.data_dir = old.data_dir.clone();
    new.server.listen = old.server.listen;
    new.server.max_body_bytes = old.server.max_body_bytes;
    new.server.max_decompressed_bytes = old.server.max_decompressed_bytes;
    new.server.max_connections = old.server.max_connections;
    new.server.header_read_timeout = old.server.header_read_timeout;
    new.server.max_header_bytes = old.server.max_header_bytes;
    new.server.tls.reload_interval = old.server.tls.reload_interval;
    new.logs.fsync = old.logs.fsync;
    new.logs.fsync_batch_wait = old.logs.fsync_batch_wait;
    new.logs.wal_segment_bytes = old.logs.wal_segment_bytes;
    new.logs.forward = old.logs.forward.clone();
    new.logs.default_tenant = old.logs.default_tenant.clone();
    new.metrics.forward = old.metrics.forward.clone();
    new.metrics.agent_label = old.metrics.agent_label.clone();
    new.metrics.agent_down_after = old.metrics.agent_down_after;
    new.metrics.agent_forget_after = old.metrics.agent_forget_after;
    new.metrics.max_agents = old.metrics.max_agents;
    new.log.format = old.log.format;
    new
}

#[cfg(test)]
mod tests {
    use super::*;
    use osprey_config::Duration;

    #[test]
    fn in_force_keeps_exactly_the_restart_keys() {
        let old = CollectorConfig::default();
        let mut all = old.clone();
        all.data_dir = "/x".into();
        all.server.listen = "127.0.0.1:1".parse().unwrap();
        all.server.max_body_bytes = 1;
        all.server.max_decompressed_bytes = 1;
        all.server.max_connections = 1;
        all.server.header_read_timeout = Duration::from_secs(1);
        all.server.max_header_bytes = 1;
        all.server.tls.reload_interval = Duration::from_secs(1);
        all.logs.fsync = osprey_config::collector::FsyncMode::Always;
        all.logs.fsync_batch_wait = Duration::from_millis(1);
        all.logs.wal_segment_bytes = 1;
        all.logs.forward = vec![Default::default()];
        all.logs.default_tenant = "t".into();
        all.metrics.forward = vec![Default::default()];
        all.metrics.agent_label = "x".into();
        all.metrics.agent_down_after = Duration::from_secs(1);
        all.metrics.agent_forget_after = Duration::from_secs(1);
        all.metrics.max_agents = 1;
        all.log.format = osprey_config::LogFormat::Json;
        let plan = ReloadPlan::new(&old, &all, COLLECTOR_RESTART_KEYS);
        assert!(plan.applied.is_empty(), "{plan:?}");
        assert_eq!(in_force(&old, all), old);

        let mut hot = old.clone();
        hot.logs.max_line_bytes = 5;
        hot.metrics.max_series = 7;
        hot.server.request_timeout = Duration::from_secs(3);
        let plan = ReloadPlan::new(&old, &hot, COLLECTOR_RESTART_KEYS);
        assert!(plan.needs_restart.is_empty(), "{plan:?}");
        assert_eq!(in_force(&old, hot.clone()), hot);
    }
}
