//! The Osprey agent: tails log files and collects host metrics, and ships both over the real
//! protocols (Loki push, remote_write) to the collector or any compatible receiver.
//!
//! Sources run on their own threads or tasks and hand whole batches to sinks over bounded
//! channels ([`pipeline`]); each sink sends in order and retries until delivery ([`sink`]).

pub mod control;
pub mod host;
pub mod ops;
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
use std::time::Duration;
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
    listener: Listener,
    control: Arc<control::Control>,
}

/// What a reload may change on the agent's own listener.
#[derive(Clone)]
struct Listener {
    tls: Option<Arc<osprey_server::ReloadingTls>>,
    token: Arc<std::sync::RwLock<Option<osprey_server::token::Digest>>>,
}

impl Listener {
    /// The security half of a config reload for the agent's listener: the `[server.tls]` files
    /// and `server.bearer_token_file` are read again. Everything is checked before anything
    /// changes; on error nothing did. Switching TLS on or off needs a restart. (The client side,
    /// `[collector.tls]`, is read when the sinks are built.)
    fn reload(&self, cfg: &AgentConfig) -> anyhow::Result<()> {
        let tls = osprey_server::tls::check_reload(self.tls.as_ref(), "server.tls", &cfg.server.tls)?;
        let token = read_metrics_token(cfg)?;
        if let (Some(running), Some(files)) = (&self.tls, tls) {
            running.reload_with(files)?;
        }
        *self.token.write().unwrap_or_else(std::sync::PoisonError::into_inner) = token;
        Ok(())
    }
}

impl Running {
    /// `https://ADDR` or `http://ADDR`.
    pub fn url(&self) -> String {
        format!("{}://{}", if self.listener.tls.is_some() { "https" } else { "http" }, self.addr)
    }

    /// Stops reading, lets sinks deliver what is queued, saves the file checkpoints, and returns,
    /// all within `grace` (what is not delivered by then is read again after the restart).
    pub async fn shutdown(mut self, grace: Duration) {
        let deadline = tokio::time::Instant::now() + grace;
        self.control.stopping();
        let _ = self.stop.send(true);
        if let Some(logs) = self.logs.take() {
            logs.shutdown(deadline.saturating_duration_since(tokio::time::Instant::now())).await;
        }
        let all = futures_join(std::mem::take(&mut self.tasks));
        if tokio::time::timeout_at(deadline, all).await.is_err() {
            tracing::warn!(?grace, "agent tasks still running at the end of shutdown_timeout; exiting anyway");
        }
    }

    /// Reload and health state, shared with the HTTP handlers (`/-/reload`, `/health`, ...).
    pub fn control(&self) -> Arc<control::Control> {
        self.control.clone()
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

fn read_metrics_token(cfg: &AgentConfig) -> anyhow::Result<Option<osprey_server::token::Digest>> {
    let path = &cfg.server.bearer_token_file;
    if path.is_empty() {
        return Ok(None);
    }
    Ok(Some(osprey_server::token::Digest::read_file("server.bearer_token_file", path)?))
}

/// Limits of the agent's own listener: it serves `/metrics` to one or two scrapers.
const LISTENER: osprey_server::ListenerOptions = osprey_server::ListenerOptions {
    max_connections: 128,
    header_read_timeout: Duration::from_secs(30),
    max_header_bytes: 16 << 10,
    drain_timeout: Duration::from_secs(5),
};
/// Longest a `/metrics` answer may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Starts the agent: tailer, host metrics, sinks and its own HTTP server.
pub async fn start(cfg: AgentConfig) -> anyhow::Result<Running> {
    let host = hostname(&cfg);
    let mut registry = Registry::default();
    let telemetry = telemetry::Telemetry::new(&mut registry);
    let (stop, shutdown) = watch::channel(false);
    let token = read_token(&cfg)?;
    let listener_tls = osprey_server::tls::TlsFiles::from_config("server.tls", &cfg.server.tls)
        .map(osprey_server::ReloadingTls::load)
        .transpose()?;
    let listener_state =
        Listener { tls: listener_tls, token: Arc::new(std::sync::RwLock::new(read_metrics_token(&cfg)?)) };
    let client_tls = Arc::new(osprey_server::tls::client_config("collector.tls", &cfg.collector.tls)?);
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
                tls: Some(client_tls.clone()),
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
    // Scraping: one manager, its job list replaced on reload.
    let (jobs_tx, jobs_rx) = watch::channel(scrape::jobs(&cfg.scrape)?);
    {
        let metrics = scrape::ScrapeMetrics::default();
        metrics.register(registry.sub_registry_with_prefix("osprey_agent"));
        tasks.push(tokio::spawn(scrape::run(jobs_rx, metric_tx.clone(), shutdown.clone(), metrics)));
    }
    let reload_metrics = ops::ReloadMetrics::register(&mut registry);
    let host_task = if cfg.host_metrics.enabled {
        let collectors = host::HostCollectors::new(&cfg.host_metrics)?;
        Some(control::spawn_host_metrics(
            collectors,
            cfg.host_metrics.interval.get(),
            &host,
            snapshot.clone(),
            telemetry.clone(),
            metric_tx.clone(),
            shutdown.clone(),
        ))
    } else {
        None
    };
    let listener_metrics = osprey_server::ListenerMetrics::default();
    listener_metrics.register(registry.sub_registry_with_prefix("osprey_agent"));
    if let Some(tls) = &listener_state.tls {
        tls.register(registry.sub_registry_with_prefix("osprey_agent"));
        tls.spawn_watcher(cfg.server.tls.reload_interval.get(), shutdown.clone());
    }
    let registry = Arc::new(registry);
    let control = Arc::new(control::Control::new(control::Parts {
        cfg: cfg.clone(),
        hostname: host.clone(),
        tail: logs.control(),
        jobs: jobs_tx,
        host_task,
        metric_tx,
        snapshot: snapshot.clone(),
        telemetry: telemetry.clone(),
        registry: registry.clone(),
        metrics: reload_metrics,
        shutdown: shutdown.clone(),
    }));
    {
        let listener = listener_state.clone();
        control.hooks.add_reloadable(
            "listener",
            Arc::new(move |cfg: &AgentConfig| {
                listener
                    .reload(cfg)
                    .map(|()| "server.tls files and server.bearer_token_file read again".to_string())
                    .map_err(|e| format!("{e:#}"))
            }),
        );
    }

    let listener = osprey_server::bind(cfg.server.listen)
        .with_context(|| format!("cannot listen on {} (server.listen)", cfg.server.listen))?;
    let addr = listener.local_addr()?;
    let app = server_router(registry, snapshot, control.clone())
        .layer(axum::middleware::from_fn_with_state(listener_state.token.clone(), require_token))
        .layer(axum::middleware::from_fn_with_state(
            osprey_server::listener::Deadline { timeout: REQUEST_TIMEOUT, key: "the agent's 30s request limit" },
            osprey_server::listener::within,
        ));
    let mut stopped = shutdown.clone();
    let tls = listener_state.tls.clone();
    tasks.push(tokio::spawn(async move {
        let stopping = async move {
            let _ = stopped.wait_for(|s| *s).await.map(|_| ());
        };
        osprey_server::serve(listener, app, tls, LISTENER, listener_metrics, stopping).await;
    }));
    tracing::info!(%addr, host = %host, logs = %out.logs_push_url(), metrics = %out.remote_write_url(), "agent started");
    Ok(Running { addr, stop, tasks, logs: Some(logs), listener: listener_state, control })
}

/// `/metrics` needs `Authorization: Bearer <server.bearer_token_file>` when that is set;
/// `/ready` and `/health` never do (probes carry no token).
async fn require_token(
    axum::extract::State(token): axum::extract::State<Arc<std::sync::RwLock<Option<osprey_server::token::Digest>>>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    use osprey_server::token::{Credentials, credentials, find};
    let expected = *token.read().unwrap_or_else(std::sync::PoisonError::into_inner);
    let Some(expected) = expected.filter(|_| !matches!(req.uri().path(), "/ready" | "/health")) else {
        return next.run(req).await;
    };
    let problem = match credentials(req.headers()) {
        Credentials::Bearer(t) if find(&[expected], t).is_some() => return next.run(req).await,
        Credentials::Bearer(_) => "invalid token: it is not the one in server.bearer_token_file",
        Credentials::None => {
            "missing credentials: /metrics needs Authorization: Bearer <token> (server.bearer_token_file)"
        }
        Credentials::Unsupported => "unsupported Authorization header: send Authorization: Bearer <token>",
    };
    (
        axum::http::StatusCode::UNAUTHORIZED,
        [(axum::http::header::WWW_AUTHENTICATE, "Bearer realm=\"osprey-agent\"")],
        format!("{problem}\n"),
    )
        .into_response()
}

fn server_router(
    registry: Arc<Registry>,
    snapshot: Arc<Mutex<Vec<host::Family>>>,
    control: Arc<control::Control>,
) -> axum::Router {
    use axum::http::header;
    use axum::routing::{get, post};
    use ops::{json, text};
    let (c1, c2, c3, c4, c5) = (control.clone(), control.clone(), control.clone(), control.clone(), control);
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
        .route(
            "/ready",
            get(move || async move {
                let (code, body) = ops::ready_answer(&c1.not_ready());
                text(code, body)
            }),
        )
        .route(
            "/health",
            get(move || async move {
                let report = c2.health();
                json(report.http_status(), report.to_json())
            }),
        )
        .route(
            "/-/reload",
            post(move || async move {
                let outcome = c3.reload("POST /-/reload").await;
                json(outcome.http_status(), outcome.to_json())
            }),
        )
        .route(
            "/-/log-level",
            get(move || async move {
                let (code, body) = ops::log_level_request(c4.hooks.log_control().as_ref(), None);
                text(code, body)
            })
            .post({
                let c = c5.clone();
                move |body: String| async move {
                    let (code, body) = ops::log_level_request(c.hooks.log_control().as_ref(), Some(&body));
                    text(code, body)
                }
            })
            .put(move |body: String| async move {
                let (code, body) = ops::log_level_request(c5.hooks.log_control().as_ref(), Some(&body));
                text(code, body)
            }),
        )
}
