//! The Osprey agent: tails log files and collects host metrics, and ships both over the real
//! protocols (Loki push, remote_write) to the collector or any compatible receiver.
//!
//! Sources run on their own threads or tasks and hand whole batches to sinks over bounded
//! channels ([`pipeline`]); each sink sends in order and retries until delivery ([`sink`]).

pub mod host;
pub mod pipeline;
pub mod queue;
pub mod scrape;
pub mod sink;
pub mod tail;
pub mod telemetry;

use anyhow::Context;
use osprey_config::AgentConfig;
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, watch};

/// The `host` label: configured, else the kernel's hostname.
pub fn hostname(cfg: &AgentConfig) -> String {
    if !cfg.hostname.is_empty() {
        return cfg.hostname.clone();
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// A running agent. Call [`Running::shutdown`] to stop it.
pub struct Running {
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    logs: Option<tail::LogPipeline>,
}

impl Running {
    /// Stops reading, lets sinks deliver what is queued (bounded by `grace`), saves the file
    /// checkpoints, and returns.
    pub async fn shutdown(mut self, grace: Duration) {
        let _ = self.stop.send(true);
        if let Some(logs) = self.logs.take() {
            logs.shutdown(grace).await;
        }
        let all = futures_join(std::mem::take(&mut self.tasks));
        let _ = tokio::time::timeout(grace, all).await;
    }
}

async fn futures_join(tasks: Vec<tokio::task::JoinHandle<()>>) {
    for t in tasks {
        let _ = t.await;
    }
}

fn read_token(cfg: &AgentConfig) -> anyhow::Result<Option<String>> {
    if let Some(t) = &cfg.collector.token_from_env {
        return Ok(Some(t.clone()));
    }
    if cfg.collector.token_file.is_empty() {
        return Ok(None);
    }
    let t = std::fs::read_to_string(&cfg.collector.token_file)
        .with_context(|| format!("cannot read collector.token_file {}", cfg.collector.token_file))?;
    Ok(Some(t.trim().to_string()))
}

/// Starts the agent: tailer, host metrics, sinks and its own HTTP server.
pub async fn start(cfg: AgentConfig) -> anyhow::Result<Running> {
    let host = hostname(&cfg);
    let mut registry = Registry::default();
    let telemetry = telemetry::Telemetry::new(&mut registry);
    let (stop, shutdown) = watch::channel(false);
    let token = read_token(&cfg)?;
    let out = &cfg.collector;
    let sender = |sink: &'static str, url: String, headers: &[(&str, &str)]| {
        sink::http::HttpSender::new(
            sink,
            sink::http::SenderOptions {
                url,
                headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
                tenant: out.tenant.clone(),
                bearer_token: token.clone(),
                timeout: out.timeout.get(),
                initial_backoff: out.retry_initial_backoff.get(),
                max_backoff: out.retry_max_backoff.get(),
            },
            telemetry.clone(),
        )
    };
    let mut tasks = Vec::new();

    // Logs: tailer thread -> bounded channel -> Loki sink; acknowledgements -> checkpoints.
    let loki = sender("loki", out.logs_push_url(), &osprey_protocol::logproto::PUSH_HEADERS)?;
    let logs = tail::start(
        tail::TailOptions::from_config(&cfg, &host),
        cfg.pipeline.log_channel_batches,
        cfg.pipeline.log_requests_in_flight,
        loki,
        shutdown.clone(),
        telemetry.clone(),
    )?;

    // Metrics: host collector and scrapers -> bounded channel -> encoder -> disk queue ->
    // sender (bounded concurrency, ordered acks). See sink::remote_write.
    let snapshot: Arc<Mutex<Vec<host::Family>>> = Arc::default();
    let (metric_tx, metric_rx) = mpsc::channel::<sink::remote_write::Batch>(cfg.pipeline.channel_batches);
    {
        let queue_metrics = queue::QueueMetrics::default();
        queue_metrics.register(
            registry
                .sub_registry_with_prefix("osprey_agent")
                .sub_registry_with_label(("queue".into(), "remote_write".into())),
        );
        let rw_cfg = &cfg.remote_write;
        let dir = cfg.data_dir.join("queue").join("remote_write");
        let (queue, report) = queue::DiskQueue::open(
            queue::QueueOptions {
                dir: dir.clone(),
                max_bytes: rw_cfg.queue_max_bytes,
                segment_bytes: rw_cfg.queue_segment_bytes,
                ..queue::QueueOptions::default()
            },
            queue_metrics,
        )
        .with_context(|| format!("cannot open the remote_write queue in {} (data_dir)", dir.display()))?;
        if report.corruptions > 0 {
            tracing::warn!(dir = %dir.display(), corruptions = report.corruptions, cut_bytes = report.truncated_bytes, "remote_write queue repaired at startup");
        }
        let queue = Arc::new(queue);
        let rw = sender("remote_write", out.remote_write_url(), &osprey_protocol::prompb::REMOTE_WRITE_HEADERS)?;
        tasks.push(tokio::spawn(sink::remote_write::run_encoder(queue.clone(), metric_rx, rw_cfg.batch_max_samples)));
        tasks.push(tokio::spawn(sink::remote_write::run_sender(
            rw,
            queue,
            rw_cfg.max_concurrent_requests,
            shutdown.clone(),
        )));
    }
    if !cfg.scrape.jobs.is_empty() {
        let jobs = scrape::jobs(&cfg.scrape)?;
        let metrics = scrape::ScrapeMetrics::default();
        metrics.register(registry.sub_registry_with_prefix("osprey_agent"));
        tasks.push(tokio::spawn(scrape::run(jobs, metric_tx.clone(), shutdown.clone(), metrics)));
    }
    if cfg.host_metrics.enabled {
        let collectors = Arc::new(Mutex::new(host::HostCollectors::new(&cfg.host_metrics)?));
        let interval = cfg.host_metrics.interval.get();
        let extra = vec![("host".to_string(), host.clone()), ("job".to_string(), "node".to_string())];
        let snap = snapshot.clone();
        let t = telemetry.clone();
        let tx = metric_tx.clone();
        let mut stopped = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stopped.wait_for(|s| *s) => break,
                }
                // /proc and statfs reads block; keep them off the async workers.
                let c = collectors.clone();
                let Ok(families) =
                    tokio::task::spawn_blocking(move || c.lock().map(|mut c| c.collect()).unwrap_or_default()).await
                else {
                    continue;
                };
                t.host_metrics_collections.inc();
                let ts_ms =
                    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
                let series = host::to_series(&families, &extra, ts_ms);
                if let Ok(mut s) = snap.lock() {
                    *s = families;
                }
                // A full channel means the encoder is behind; this sample waits its turn.
                if tx.send(sink::remote_write::Batch { source: 0, series }).await.is_err() {
                    break;
                }
            }
        }));
    }

    let listener = tokio::net::TcpListener::bind(cfg.server.listen)
        .await
        .with_context(|| format!("cannot listen on {} (server.listen)", cfg.server.listen))?;
    let addr = listener.local_addr()?;
    let app = server_router(Arc::new(registry), snapshot);
    let mut stopped = shutdown.clone();
    tasks.push(tokio::spawn(async move {
        let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
            let _ = stopped.wait_for(|s| *s).await;
        });
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "agent HTTP server failed");
        }
    }));
    tracing::info!(%addr, host = %host, logs = %out.logs_push_url(), metrics = %out.remote_write_url(), "agent started");
    Ok(Running { addr, stop, tasks, logs: Some(logs) })
}

fn server_router(registry: Arc<Registry>, snapshot: Arc<Mutex<Vec<host::Family>>>) -> axum::Router {
    use axum::http::header;
    use axum::routing::get;
    axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let registry = registry.clone();
                let snapshot = snapshot.clone();
                async move {
                    let mut body = String::new();
                    if let Ok(s) = snapshot.lock() {
                        host::to_text(&s, &mut body);
                    }
                    let _ = prometheus_client::encoding::prometheus_text::encode(&mut body, &registry);
                    ([(header::CONTENT_TYPE, osprey_protocol::exposition::TEXT_CONTENT_TYPE)], body)
                }
            }),
        )
        .route("/ready", get(|| async { "ready\n" }))
}
