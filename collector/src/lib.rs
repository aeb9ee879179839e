//! The Osprey collector: many agents ship here; Prometheus, Grafana and `osprey query` read
//! from here.
//!
//! Ingest (`/loki/api/v1/push`, `/api/v1/write`) goes through [`http`] into the [`logs`] store
//! (durable: WAL, acknowledged after fsync) and the [`metrics`] store (latest sample per
//! series, with a label index). Queries come back out through the same [`http`] router in
//! Loki's and Prometheus' shapes ([`promql`] for `/api/v1/query`).

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
    /// Reload, log level and lifecycle state.
    pub ops: control::Ops,
}

impl State {
    /// The config in force.
    pub fn cfg(&self) -> Arc<CollectorConfig> {
        self.cfg.load()
    }
}

/// A collector that is listening. Dropping it does not stop it; call [`Running::shutdown`].
pub struct Running {
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
    state: Arc<State>,
    lock: std::fs::File,
}

impl Running {
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
    let lock = lock_data_dir(&cfg.data_dir)?;
    let listener = tokio::net::TcpListener::bind(cfg.server.listen)
        .await
        .with_context(|| format!("cannot listen on {} (server.listen)", cfg.server.listen))?;
    let addr = listener.local_addr()?;
    let (stop, mut stopped) = watch::channel(false);
    let front = http::Front::new();
    let app = http::front_router(front.clone());
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.wait_for(|s| *s).await;
            })
            .await
            .context("collector HTTP server failed")
    });
    match open(cfg, &front).await {
        Ok(state) => {
            front.serve(http::router(state.clone()));
            state.forward.spawn(stop.subscribe());
            spawn_expiry(&state);
            tracing::info!(%addr, "collector listening");
            Ok(Running { addr, stop, server, state, lock })
        }
        Err(e) => {
            let _ = stop.send(true);
            let _ = server.await;
            Err(e)
        }
    }
}

async fn open(cfg: CollectorConfig, front: &http::Front) -> anyhow::Result<Arc<State>> {
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
    Ok(Arc::new(State { cfg: live::Live::new(cfg), logs, metrics, forward, registry, telemetry, query_slots, ops }))
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
