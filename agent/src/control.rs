//! The running agent's control surface: reload (SIGHUP, `POST /-/reload`), `/ready`,
//! `/health` and the log level.
//!
//! A reload re-reads the config file through the [`ConfigSource`] the binary installed, then
//! works in two steps so a refused config changes nothing: first everything that can fail is
//! built (file source rules and globs, scrape jobs, host collectors), then it is applied. What is
//! hot: `sources.*` and the tailer's batch settings (the tailer thread swaps its sources between
//! two reads; followed files keep their position), `scrape.*` (the scrape manager restarts only
//! the targets of changed jobs), `host_metrics.*` (the collection task restarts), `health.*`,
//! `log.level` and `shutdown_timeout`. Keys that would need new queues, listeners or
//! connections (`osprey_config::ops::AGENT_RESTART_KEYS`) are reported as needing a restart and
//! keep their running values: the config in force is always "the new file's hot keys over the
//! started process's restart keys", so every later reload reports them again until a restart.

use crate::ops::{Check, HealthReport, ReloadHooks, ReloadMetrics, ReloadOutcome, Status};
use crate::{host, scrape, sink, tail, telemetry};
use osprey_config::AgentConfig;
use osprey_config::ops::{AGENT_RESTART_KEYS, ReloadPlan};
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, watch};

/// How long a reload waits for the tailer thread to confirm it applied new sources.
const TAIL_ANSWER_WAIT: Duration = Duration::from_secs(30);

/// The host metrics task, restarted when `[host_metrics]` changes.
pub struct HostTask {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// Everything the control needs from `start`.
pub struct Parts {
    pub cfg: AgentConfig,
    pub hostname: String,
    pub tail: tail::TailControl,
    pub jobs: watch::Sender<Vec<Arc<scrape::Job>>>,
    pub host_task: Option<HostTask>,
    pub metric_tx: mpsc::Sender<sink::remote_write::Batch>,
    pub snapshot: Arc<Mutex<Vec<host::Family>>>,
    pub telemetry: telemetry::Telemetry,
    pub registry: Arc<Registry>,
    pub metrics: ReloadMetrics,
    pub shutdown: watch::Receiver<bool>,
}

pub struct Control {
    /// The config in force (see the module doc).
    cfg: Mutex<AgentConfig>,
    hostname: String,
    tail: tail::TailControl,
    jobs: watch::Sender<Vec<Arc<scrape::Job>>>,
    host_task: tokio::sync::Mutex<Option<HostTask>>,
    /// For host metrics tasks started by a reload; dropped at shutdown so the remote_write
    /// encoder sees its producers end.
    metric_tx: Mutex<Option<mpsc::Sender<sink::remote_write::Batch>>>,
    snapshot: Arc<Mutex<Vec<host::Family>>>,
    telemetry: telemetry::Telemetry,
    registry: Arc<Registry>,
    metrics: ReloadMetrics,
    shutdown: watch::Receiver<bool>,
    /// The config file, the log filter and the listener's TLS files and token.
    pub hooks: ReloadHooks<AgentConfig>,
    /// One reload at a time (SIGHUP and `/-/reload` may race).
    reloading: tokio::sync::Mutex<()>,
    stopping: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Control {
    pub fn new(p: Parts) -> Control {
        Control {
            cfg: Mutex::new(p.cfg),
            hostname: p.hostname,
            tail: p.tail,
            jobs: p.jobs,
            host_task: tokio::sync::Mutex::new(p.host_task),
            metric_tx: Mutex::new(Some(p.metric_tx)),
            snapshot: p.snapshot,
            telemetry: p.telemetry,
            registry: p.registry,
            metrics: p.metrics,
            shutdown: p.shutdown,
            hooks: ReloadHooks::default(),
            reloading: tokio::sync::Mutex::new(()),
            stopping: AtomicBool::new(false),
        }
    }

    /// The config in force.
    pub fn config(&self) -> AgentConfig {
        lock(&self.cfg).clone()
    }

    /// Shutdown began: `/ready` says so, and reload-started producers stop.
    pub fn stopping(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        lock(&self.metric_tx).take();
    }

    /// Why the agent is not ready, if it is not.
    pub fn not_ready(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.stopping.load(Ordering::SeqCst) {
            out.push("shutting down".to_string());
        } else if !self.tail.alive() {
            out.push("the file tailer thread has stopped (see the log)".to_string());
        }
        out
    }

    /// The `/health` report: the tailer, checkpoint writes, failing sinks, full queues.
    pub fn health(&self) -> HealthReport {
        let mut checks = Vec::new();
        if self.tail.alive() || self.stopping.load(Ordering::SeqCst) {
            checks.push(Check::new("tailer", Status::Ok, "running"));
        } else {
            checks.push(Check::new(
                "tailer",
                Status::Unhealthy,
                "the file tailer thread has stopped: no file is read; restart the agent (the log says why)",
            ));
        }
        match lock(&self.telemetry.tail.checkpoint_failing).clone() {
            None => checks.push(Check::new("checkpoints", Status::Ok, "saved")),
            Some(e) => checks.push(Check::new(
                "checkpoints",
                Status::Degraded,
                format!(
                    "{e}; lines are still shipped, but a restart would send again what was shipped since the last write"
                ),
            )),
        }
        let after = lock(&self.cfg).health.sink_failing_after.get();
        checks.extend(self.telemetry.sink_health.checks(after));
        checks.extend(crate::ops::queue_checks(&self.registry));
        HealthReport::new(checks)
    }

    /// Reads the config file again and applies it; logs and counts the outcome.
    pub async fn reload(&self, trigger: &str) -> ReloadOutcome {
        let _one = self.reloading.lock().await;
        let source = self.hooks.config_source();
        let outcome = match source {
            None => ReloadOutcome::rejected(
                "there is no config file to reload: this agent runs with built-in settings and flags (osprey up); restart it to change them"
                    .into(),
            ),
            Some(read) => match tokio::task::spawn_blocking(move || read()).await {
                Ok(Ok(cfg)) => self.apply(cfg).await,
                Ok(Err(e)) => ReloadOutcome::rejected(e),
                Err(e) => ReloadOutcome::rejected(format!("reading the config failed: {e}")),
            },
        };
        outcome.count(&self.metrics);
        log_outcome(trigger, &outcome);
        outcome
    }

    /// Applies `new` (already validated) as far as a running agent can.
    pub async fn apply(&self, new: AgentConfig) -> ReloadOutcome {
        if self.stopping.load(Ordering::SeqCst) || *self.shutdown.borrow() {
            return ReloadOutcome::rejected("the agent is shutting down".into());
        }
        let old = self.config();
        let plan = ReloadPlan::new(&old, &new, AGENT_RESTART_KEYS);
        let effective = in_force(&old, new);

        // 1. Build everything that can fail; nothing changes if any of it does.
        let tail_changed = old.sources != effective.sources
            || old.collector.batch_max_bytes != effective.collector.batch_max_bytes
            || old.collector.batch_max_wait != effective.collector.batch_max_wait;
        let prepared = if tail_changed {
            match self.tail.prepare(tail::TailOptions::from_config(&effective, &self.hostname)) {
                Ok(p) => Some(p),
                Err(e) => return ReloadOutcome::rejected(format!("{e:#}")),
            }
        } else {
            None
        };
        let jobs = if old.scrape != effective.scrape {
            match scrape::jobs(&effective.scrape) {
                Ok(j) => Some(j),
                Err(e) => return ReloadOutcome::rejected(format!("{e:#}")),
            }
        } else {
            None
        };
        let host_changed = old.host_metrics != effective.host_metrics;
        let collectors = if host_changed && effective.host_metrics.enabled {
            match host::HostCollectors::new(&effective.host_metrics) {
                Ok(c) => Some(c),
                Err(e) => return ReloadOutcome::rejected(format!("host_metrics: {e:#}")),
            }
        } else {
            None
        };
        // (`log.level` was checked when the file was loaded.)
        let log_control = self.hooks.log_control();
        // Parts with their own files (TLS, tokens) check and swap them; a refusal stops here.
        let mut details = match self.hooks.reload_parts(&effective) {
            Ok(lines) => lines,
            Err(e) => return ReloadOutcome::rejected(e),
        };

        // 2. Apply.

        if let Some(p) = prepared {
            match self.tail.apply(p) {
                Ok(answer) => match tokio::time::timeout(TAIL_ANSWER_WAIT, answer).await {
                    Ok(Ok(summary)) => details.push(summary.to_string()),
                    _ => details.push("file sources: handed to the tailer, not confirmed yet".into()),
                },
                Err(e) => details.push(format!("file sources not applied: {e}")),
            }
        }
        if let Some(jobs) = jobs {
            details.push(format!("scrape: {} jobs (targets of changed jobs restarted)", jobs.len()));
            let _ = self.jobs.send(jobs);
        }
        if host_changed {
            let mut task = self.host_task.lock().await;
            if let Some(old_task) = task.take() {
                let _ = old_task.stop.send(true);
                let _ = old_task.task.await;
            }
            if let Some(collectors) = collectors
                && let Some(tx) = lock(&self.metric_tx).clone()
            {
                *task = Some(spawn_host_metrics(
                    collectors,
                    effective.host_metrics.interval.get(),
                    &self.hostname,
                    self.snapshot.clone(),
                    self.telemetry.clone(),
                    tx,
                    self.shutdown.clone(),
                ));
                details.push("host metrics: collection restarted".into());
            } else {
                lock(&self.snapshot).clear();
                details.push("host metrics: off".into());
            }
        }
        if old.log.level != effective.log.level
            && let Some(control) = &log_control
        {
            match control(Some(&effective.log.level)) {
                Ok(now) => details.push(format!("log level: {now}")),
                Err(e) => details.push(format!("log level not changed: {e}")),
            }
        }
        *lock(&self.cfg) = effective;
        ReloadOutcome::ok(plan, details)
    }
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

/// The config in force after a reload to `new`: its hot keys, and the running values of the keys
/// that need a restart.
fn in_force(old: &AgentConfig, mut new: AgentConfig) -> AgentConfig {
    new.data_dir = old.data_dir.clone();
    new.hostname = old.hostname.clone();
    new.server = old.server.clone();
    let (batch_max_bytes, batch_max_wait) = (new.collector.batch_max_bytes, new.collector.batch_max_wait);
    new.collector = old.collector.clone();
    new.collector.batch_max_bytes = batch_max_bytes;
    new.collector.batch_max_wait = batch_max_wait;
    new.remote_write = old.remote_write.clone();
    new.pipeline = old.pipeline.clone();
    new.log.format = old.log.format;
    new
}

/// Starts collecting host metrics every `interval` until `shutdown` or its own stop.
pub fn spawn_host_metrics(
    collectors: host::HostCollectors,
    interval: Duration,
    host: &str,
    snapshot: Arc<Mutex<Vec<host::Family>>>,
    telemetry: telemetry::Telemetry,
    tx: mpsc::Sender<sink::remote_write::Batch>,
    mut shutdown: watch::Receiver<bool>,
) -> HostTask {
    let (stop, mut stopped) = watch::channel(false);
    let collectors = Arc::new(Mutex::new(collectors));
    let extra = vec![("host".to_string(), host.to_string()), ("job".to_string(), "node".to_string())];
    let task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.wait_for(|s| *s) => break,
                _ = stopped.wait_for(|s| *s) => break,
            }
            // /proc and statfs reads block; keep them off the async workers.
            let c = collectors.clone();
            let Ok(families) =
                tokio::task::spawn_blocking(move || c.lock().map(|mut c| c.collect()).unwrap_or_default()).await
            else {
                continue;
            };
            telemetry.host_metrics_collections.inc();
            let ts_ms = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
            let series = host::to_series(&families, &extra, ts_ms);
            if let Ok(mut s) = snapshot.lock() {
                *s = families;
            }
            // A full channel means the encoder is behind; this sample waits its turn.
            if tx.send(sink::remote_write::Batch { source: 0, series }).await.is_err() {
                break;
            }
        }
    });
    HostTask { stop, task }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_keys_keep_their_running_values() {
        let old = AgentConfig::default();
        let mut new = old.clone();
        new.server.listen = "127.0.0.1:1".parse().unwrap();
        new.collector.url = "http://elsewhere:3100".into();
        new.collector.batch_max_bytes = 77;
        new.pipeline.log_channel_batches = 9;
        new.host_metrics.interval = osprey_config::Duration::from_secs(3);
        let e = in_force(&old, new);
        assert_eq!(e.server, old.server);
        assert_eq!(e.collector.url, old.collector.url);
        assert_eq!(e.pipeline, old.pipeline);
        assert_eq!(e.collector.batch_max_bytes, 77);
        assert_eq!(e.host_metrics.interval, osprey_config::Duration::from_secs(3));
        // Whatever in_force keeps from the old config must be exactly the restart keys: a key
        // kept old but not listed would be reported as applied and silently ignored.
        let mut all = AgentConfig { data_dir: "/x".into(), hostname: "h".into(), ..AgentConfig::default() };
        all.server.listen = "127.0.0.1:2".parse().unwrap();
        all.collector.url = "http://x:1".into();
        all.collector.logs_url = "http://x:1/l".into();
        all.collector.metrics_url = "http://x:1/m".into();
        all.collector.tenant = "t".into();
        all.collector.token_file = "/t".into();
        all.collector.timeout = osprey_config::Duration::from_secs(1);
        all.collector.retry_initial_backoff = osprey_config::Duration::from_secs(1);
        all.collector.retry_max_backoff = osprey_config::Duration::from_secs(2);
        all.remote_write.batch_max_samples = 1;
        all.pipeline.channel_batches = 1;
        all.log.format = osprey_config::LogFormat::Json;
        let plan = ReloadPlan::new(&old, &all, AGENT_RESTART_KEYS);
        assert!(plan.applied.is_empty(), "{plan:?}");
        assert_eq!(in_force(&old, all), old, "every restart key keeps its running value");
    }
}
