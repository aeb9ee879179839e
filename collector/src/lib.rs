//! The Osprey collector: many agents ship here; Prometheus, Grafana and `osprey query` read
//! from here.
//!
//! Ingest (`/loki/api/v1/push`, `/api/v1/write`) goes through [`http`] into the [`logs`] store
//! (durable: WAL, acknowledged after fsync) and the [`series`] store (latest sample per
//! series). Queries come back out through the same [`http`] router in Loki's and Prometheus'
//! shapes.

pub mod http;
pub mod logql;
pub mod logs;
pub mod selector;
pub mod series;
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
    pub cfg: CollectorConfig,
    pub logs: logs::LogStore,
    pub series: series::SeriesStore,
    pub registry: Registry,
    pub telemetry: telemetry::Telemetry,
    /// Queries running at once (`logs.max_concurrent_queries`); each holds a permit.
    pub query_slots: Arc<tokio::sync::Semaphore>,
}

/// A collector that is listening. Dropping it does not stop it; call [`Running::shutdown`].
pub struct Running {
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Stops accepting, lets in-flight requests finish, and closes the WAL.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        self.server.await.context("collector server task panicked")?
    }

    /// Waits until the server stops on its own (it only does on error).
    pub async fn wait(self) -> anyhow::Result<()> {
        self.server.await.context("collector server task panicked")?
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

/// Opens the stores (replaying the WAL) and starts serving on `cfg.server.listen`.
pub async fn start(cfg: CollectorConfig) -> anyhow::Result<Running> {
    let lock = lock_data_dir(&cfg.data_dir)?;
    let mut registry = Registry::default();
    let telemetry = telemetry::Telemetry::new(&mut registry);
    let store_cfg = cfg.clone();
    let store_telemetry = telemetry.clone();
    let logs = tokio::task::spawn_blocking(move || logs::LogStore::open(&store_cfg, store_telemetry))
        .await
        .context("WAL replay panicked")?
        .with_context(|| format!("cannot open the log store in {}", cfg.data_dir.display()))?;
    let series = series::SeriesStore::new(cfg.metrics.max_series, cfg.metrics.series_ttl.get(), telemetry.clone());
    let listener = tokio::net::TcpListener::bind(cfg.server.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cfg.server.listen))?;
    let addr = listener.local_addr()?;
    let query_slots = Arc::new(tokio::sync::Semaphore::new(cfg.logs.max_concurrent_queries));
    let state = Arc::new(State { cfg, logs, series, registry, telemetry, query_slots });
    let (stop, mut stopped) = watch::channel(false);

    let expiry_state = Arc::downgrade(&state);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(15));
        loop {
            tick.tick().await;
            let Some(state) = expiry_state.upgrade() else { break };
            state.series.expire();
        }
    });

    let app = http::router(state.clone());
    let server = tokio::spawn(async move {
        let result = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.wait_for(|s| *s).await;
            })
            .await;
        // Last reference to the stores: dropping it closes the WAL after queued appends.
        drop(state);
        drop(lock);
        result.context("collector HTTP server failed")
    });
    tracing::info!(%addr, "collector listening");
    Ok(Running { addr, stop, server })
}
