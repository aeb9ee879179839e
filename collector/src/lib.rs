//! The Osprey collector: many agents ship here; Prometheus, Grafana and `osprey query` read
//! from here.
//!
//! Ingest (`/loki/api/v1/push`, `/api/v1/write`) goes through [`http`] into the [`logs`] store
//! (durable: WAL, acknowledged after fsync) and the [`metrics`] store (latest sample per
//! series, with a label index). Queries come back out through the same [`http`] router in
//! Loki's and Prometheus' shapes ([`promql`] for `/api/v1/query`).

pub mod auth;
pub mod control;
pub mod http;
pub mod live;
pub mod logql;
pub mod logs;
pub mod metrics;
pub mod progress;
pub mod promql;
pub mod selector;
pub mod telemetry;
pub mod tenant_limits;
pub mod time;
pub mod wal;

use anyhow::Context;
use osprey_config::CollectorConfig;
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Everything the HTTP handlers share.
pub struct State {
    /// The config in force: replaced by a reload (hot keys from the file, restart keys as
    /// started; see [`control`]). Read it through [`State::cfg`] once per request.
    pub cfg: live::Live<CollectorConfig>,
    pub logs: logs::LogStore,
    pub metrics: metrics::MetricsStore,
    /// `[[metrics.forward]]` targets, each with its on-disk queue.
    pub forward: metrics::forward::Forwarders,
    pub registry: Registry,
    pub telemetry: telemetry::Telemetry,
    /// Queries running at once (`logs.max_concurrent_queries`); each holds a permit.
    pub query_slots: Arc<tokio::sync::Semaphore>,
    /// Bearer tokens (`[auth]`), swapped on reload.
    pub auth: auth::Auth,
    /// Per-tenant ingest rates and query concurrency (`[limits]`).
    pub limits: tenant_limits::TenantLimiter,
    /// The listener's certificate, when `[server.tls]` is on; swapped on reload or file change.
    pub tls: Option<Arc<osprey_server::ReloadingTls>>,
    /// Reload, log level and lifecycle state.
    pub ops: control::Ops,
}

impl State {
    /// The config in force.
    pub fn cfg(&self) -> Arc<CollectorConfig> {
        self.cfg.load()
    }

    /// The security half of a config reload: TLS files, tokens, and per-tenant limits. Every
    /// file is read and checked before anything changes, so on error nothing did and the
    /// running settings stay. Switching TLS on or off needs a restart (the listener is already
    /// speaking one or the other).
    pub fn reload_security(&self, cfg: &CollectorConfig) -> anyhow::Result<()> {
        let tls = osprey_server::tls::check_reload(self.tls.as_ref(), "server.tls", &cfg.server.tls)?;
        let table = auth::TokenTable::from_config(cfg)?;
        if let (Some(running), Some(files)) = (&self.tls, tls) {
            running.reload_with(files)?;
        }
        self.auth.swap(table);
        self.limits.reload(cfg);
        let (streams, series) = tenant_limits::TenantLimiter::store_overrides(cfg);
        self.logs.set_stream_limits(streams);
        self.metrics.set_series_limits(series);
        Ok(())
    }
}

/// A collector that is listening. Dropping it does not stop it; call [`Running::shutdown`].
pub struct Running {
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
    /// The handlers' state; the stores close when the last reference goes (after the server).
    state: Arc<State>,
    lock: std::fs::File,
    tls: bool,
}

impl Running {
    /// `https://ADDR` or `http://ADDR`.
    pub fn url(&self) -> String {
        format!("{}://{}", if self.tls { "https" } else { "http" }, self.addr)
    }

    /// Stops accepting, lets in-flight requests finish, and closes the stores (the WAL commits
    /// what is queued). The caller bounds it (`shutdown_timeout`); acknowledged data is on disk
    /// whether or not it completes.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.state.ops.stopping();
        let _ = self.stop.send(true);
        let served = self.server.await.context("collector server task panicked")?;
        // The stores close when the last reference goes (WAL writer and maintenance threads are
        // joined): off the async workers.
        let (state, lock) = (self.state, self.lock);
        let _ = tokio::task::spawn_blocking(move || {
            drop(state);
            drop(lock);
        })
        .await;
        served
    }

    /// Waits until the server stops on its own (it only does on error).
    pub async fn wait(self) -> anyhow::Result<()> {
        self.server.await.context("collector server task panicked")?
    }

    /// The shared state (reload, config in force, health).
    pub fn state(&self) -> Arc<State> {
        self.state.clone()
    }
}

/// Holds an exclusive lock on a data directory so two processes never write the same WAL.
pub fn lock_data_dir(dir: &std::path::Path) -> anyhow::Result<std::fs::File> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create data directory {}", dir.display()))?;
    let path = dir.join("LOCK");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    file.try_lock().map_err(|_| {
        anyhow::anyhow!(
            "data directory {} is in use by another osprey process (lock held on {})",
            dir.display(),
            path.display()
        )
    })?;
    Ok(file)
}

/// Starts serving on `cfg.server.listen` at once (`/ready` answers 503 with the replay's
/// progress, `/health` 200, everything else 503 "starting"), opens the stores (replaying the
/// WAL), then serves the whole API. Returns once the stores are open.
pub async fn start(cfg: CollectorConfig) -> anyhow::Result<Running> {
    // Unusable TLS or token files stop the start before the WAL replay, with the file named.
    let tls = osprey_server::tls::TlsFiles::from_config("server.tls", &cfg.server.tls)
        .map(osprey_server::ReloadingTls::load)
        .transpose()?;
    let auth = auth::Auth::new(&cfg)?;
    let lock = lock_data_dir(&cfg.data_dir)?;
    let listener = osprey_server::bind(cfg.server.listen)
        .with_context(|| format!("cannot listen on {} (server.listen)", cfg.server.listen))?;
    let addr = listener.local_addr()?;
    let listener_metrics = osprey_server::ListenerMetrics::default();
    let listen_opts = osprey_server::ListenerOptions {
        max_connections: cfg.server.max_connections,
        header_read_timeout: cfg.server.header_read_timeout.get(),
        max_header_bytes: cfg.server.max_header_bytes,
        // Nothing in flight outlives a request timeout; waiting longer would be for nothing.
        drain_timeout: cfg.server.request_timeout.get(),
    };
    let (stop, mut stopped) = watch::channel(false);
    if let Some(tls) = &tls {
        tls.spawn_watcher(cfg.server.tls.reload_interval.get(), stop.subscribe());
    }
    let front = http::Front::new();
    let app = http::front_router(front.clone());
    let tls_on = tls.is_some();
    let server = {
        let (tls, metrics) = (tls.clone(), listener_metrics.clone());
        tokio::spawn(async move {
            let stopping = async move {
                let _ = stopped.wait_for(|s| *s).await.map(|_| ());
            };
            osprey_server::serve(listener, app, tls, listen_opts, metrics, stopping).await;
            Ok(())
        })
    };
    let parts = ListenerParts { auth, tls, metrics: listener_metrics };
    match open(cfg, &front, parts).await {
        Ok(state) => {
            front.serve(http::router(state.clone()));
            state.forward.spawn(stop.subscribe());
            spawn_expiry(&state);
            tracing::info!(%addr, tls = tls_on, "collector listening");
            Ok(Running { addr, stop, server, state, lock, tls: tls_on })
        }
        Err(e) => {
            let _ = stop.send(true);
            let _ = server.await;
            Err(e)
        }
    }
}

async fn open(cfg: CollectorConfig, front: &http::Front, listener: ListenerParts) -> anyhow::Result<Arc<State>> {
    let mut registry = Registry::default();
    let telemetry = telemetry::Telemetry::new(&mut registry);
    let store_cfg = cfg.clone();
    let store_telemetry = telemetry.clone();
    let progress = front.progress.clone();
    let (logs, mut registry) = tokio::task::spawn_blocking(move || {
        let mut registry = registry;
        let logs = logs::LogStore::open_with_progress(&store_cfg, store_telemetry, &mut registry, &progress);
        (logs, registry)
    })
    .await
    .context("WAL replay panicked")?;
    let logs = logs.with_context(|| format!("cannot open the log store in {}", cfg.data_dir.display()))?;
    let metrics = metrics::MetricsStore::new(&cfg.metrics, &cfg.logs.default_tenant, telemetry.clone(), &mut registry);
    let forward = metrics::forward::Forwarders::open(
        &cfg.metrics.forward,
        &cfg.data_dir,
        &cfg.logs.default_tenant,
        &mut registry,
    )?;
    let ops = control::Ops::new(osprey_agent::ops::ReloadMetrics::register(&mut registry));
    let query_slots = Arc::new(tokio::sync::Semaphore::new(cfg.logs.max_concurrent_queries));
    let limits = tenant_limits::TenantLimiter::new(&cfg, &mut registry);
    let (streams, series) = tenant_limits::TenantLimiter::store_overrides(&cfg);
    logs.set_stream_limits(streams);
    metrics.set_series_limits(series);
    listener.metrics.register(registry.sub_registry_with_prefix("osprey"));
    if let Some(tls) = &listener.tls {
        tls.register(registry.sub_registry_with_prefix("osprey"));
    }
    let state = Arc::new(State {
        cfg: live::Live::new(cfg),
        logs,
        metrics,
        forward,
        registry,
        telemetry,
        query_slots,
        auth: listener.auth,
        limits,
        tls: listener.tls,
        ops,
    });
    // TLS files and tokens reload with the rest of the config (SIGHUP, POST /-/reload). Weak:
    // the stores must close when the server lets go of them.
    let weak = Arc::downgrade(&state);
    state.ops.hooks.add_reloadable(
        "security",
        Arc::new(move |cfg: &CollectorConfig| {
            let state = weak.upgrade().ok_or_else(|| "the collector has stopped".to_string())?;
            state
                .reload_security(cfg)
                .map(|()| "TLS files, [auth] tokens and [limits] applied".to_string())
                .map_err(|e| format!("{e:#}"))
        }),
    );
    Ok(state)
}

/// What [`open`] takes from the start: the parts built before the WAL replay.
struct ListenerParts {
    auth: auth::Auth,
    tls: Option<Arc<osprey_server::ReloadingTls>>,
    metrics: osprey_server::ListenerMetrics,
}

fn spawn_expiry(state: &Arc<State>) {
    let expiry_state = Arc::downgrade(state);
    tokio::spawn(async move {
        // Fleet liveness every 5 s (so `osprey_agent_up` turns 0 promptly), expiry every 15 s.
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        for round in 0u64.. {
            tick.tick().await;
            let Some(state) = expiry_state.upgrade() else { break };
            let expire = round % 3 == 0;
            let _ = tokio::task::spawn_blocking(move || {
                state.metrics.record_fleet();
                if expire {
                    state.metrics.expire();
                }
            })
            .await;
        }
    });
}
