//! Scraping Prometheus targets, as Prometheus' scrape manager does: discovery
//! ([`discovery`]), target relabelling, one loop per target ([`target`]) that scrapes every
//! interval at a stable offset (so targets spread over the interval), parses the body with our
//! own parser (`osprey_protocol::exposition`), applies `metric_relabel_configs`, the sample
//! limit and the label rules, adds the synthetic series (`up`, `scrape_duration_seconds`,
//! `scrape_samples_scraped`, `scrape_samples_post_metric_relabeling`, `scrape_series_added`),
//! writes staleness markers for series that disappear (and for all of a target's series when
//! it disappears or a scrape fails), and sends the result to the remote_write sink.
//!
//! Owns nothing of the sink: it only produces [`Batch`]es, one per scrape, with the target's
//! key as the source so each target's samples stay in order.

pub mod discovery;
pub mod relabel;
pub mod target;

use crate::sink::remote_write::Batch;
use osprey_config::scrape::{Scrape, ScrapeJob};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// A job with its settings resolved and its rules compiled.
#[derive(Debug)]
pub struct Job {
    pub cfg: ScrapeJob,
    pub interval: Duration,
    pub timeout: Duration,
    pub relabel: Vec<relabel::Rule>,
    pub metric_relabel: Vec<relabel::Rule>,
}

impl Job {
    pub fn new(cfg: &ScrapeJob, global: &Scrape) -> anyhow::Result<Job> {
        let interval = cfg.scrape_interval.unwrap_or(global.interval).get();
        let timeout = cfg.scrape_timeout.unwrap_or(global.timeout).get().min(interval);
        let name = &cfg.job_name;
        Ok(Job {
            cfg: cfg.clone(),
            interval,
            timeout,
            relabel: relabel::compile(&cfg.relabel_configs)
                .map_err(|e| anyhow::anyhow!("scrape job {name}: relabel_configs: {e}"))?,
            metric_relabel: relabel::compile(&cfg.metric_relabel_configs)
                .map_err(|e| anyhow::anyhow!("scrape job {name}: metric_relabel_configs: {e}"))?,
        })
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobLabels {
    pub job: String,
}

/// `osprey_agent_scrape_*` self metrics, per job.
#[derive(Clone, Default)]
pub struct ScrapeMetrics {
    pub scrapes: Family<JobLabels, Counter>,
    pub failures: Family<JobLabels, Counter>,
    pub duplicates: Family<JobLabels, Counter>,
    pub samples: Family<JobLabels, Counter>,
    pub targets: Family<JobLabels, Gauge>,
}

impl ScrapeMetrics {
    pub fn register(&self, r: &mut Registry) {
        r.register("scrapes", "Scrapes attempted", self.scrapes.clone());
        r.register("scrape_failures", "Scrapes that failed (up = 0)", self.failures.clone());
        r.register(
            "scrape_duplicate_samples",
            "Samples dropped because the target exposed the same series twice in one scrape",
            self.duplicates.clone(),
        );
        r.register("scrape_samples", "Samples scraped and kept after metric relabelling", self.samples.clone());
        r.register("scrape_targets", "Active scrape targets", self.targets.clone());
    }
}

struct Running {
    job: Arc<Job>,
    /// Removed by discovery or by a reload that dropped its job: staleness markers, then stop.
    removed: watch::Sender<bool>,
    /// Stopped without markers: shutdown, or its job's settings changed (it starts again).
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Job {
    /// Whether a target scraped under `self` must restart to follow `other`.
    fn same_settings(&self, other: &Job) -> bool {
        self.cfg == other.cfg && self.interval == other.interval && self.timeout == other.timeout
    }
}

/// Builds the HTTP client scrapes use (HTTP/1.1, rustls with the system roots).
pub fn client() -> target::Client {
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(crate::sink::http::tls_config())
        .https_or_http()
        .enable_http1()
        .build();
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .build(connector)
}

/// Compiles the configured jobs (the config was validated; this catches what only compiling can).
pub fn jobs(cfg: &Scrape) -> anyhow::Result<Vec<Arc<Job>>> {
    cfg.jobs.iter().map(|j| Job::new(j, cfg).map(Arc::new)).collect()
}

/// Discovers targets and keeps one scrape loop per target until shutdown. `jobs` changes on a
/// reload: targets of removed jobs get staleness markers and stop, targets of jobs whose settings
/// changed restart with them (their series continue), unchanged jobs are not touched.
pub async fn run(
    mut jobs: watch::Receiver<Vec<Arc<Job>>>,
    tx: mpsc::Sender<Batch>,
    mut shutdown: watch::Receiver<bool>,
    metrics: ScrapeMetrics,
) {
    let client = client();
    let discover = |jobs: &[Arc<Job>]| -> Vec<(Arc<Job>, discovery::JobDiscovery)> {
        jobs.iter().map(|j| (j.clone(), discovery::JobDiscovery::new(&j.cfg))).collect()
    };
    let mut discoveries = discover(&jobs.borrow_and_update());
    let mut running: HashMap<u64, Running> = HashMap::new();
    let mut first = true;
    loop {
        for (job, disc) in &mut discoveries {
            // A few stat calls, and reads of the files that changed.
            let changed = disc.refresh();
            if !changed && !first {
                continue;
            }
            let mut wanted: HashMap<u64, target::Target> = HashMap::new();
            for group in disc.groups() {
                for t in target::build(job, &group) {
                    wanted.insert(t.key, t);
                }
            }
            let name = &job.cfg.job_name;
            running.retain(|key, r| {
                if &r.job.cfg.job_name != name || wanted.contains_key(key) {
                    return true;
                }
                let _ = r.removed.send(true);
                false
            });
            for (key, t) in wanted {
                if running.contains_key(&key) {
                    continue;
                }
                tracing::info!(job = %name, target = %t.url, "scrape target added");
                let (removed, removed_rx) = watch::channel(false);
                let (stop, stop_rx) = watch::channel(false);
                let task =
                    tokio::spawn(target::run(t, client.clone(), tx.clone(), removed_rx, stop_rx, metrics.clone()));
                running.insert(key, Running { job: job.clone(), removed, stop, task });
            }
            let n = running.values().filter(|r| &r.job.cfg.job_name == name).count();
            metrics.targets.get_or_create(&JobLabels { job: name.clone() }).set(n as i64);
        }
        first = false;
        // Finished loops (removed targets) are reaped here.
        running.retain(|_, r| !r.task.is_finished());
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.wait_for(|s| *s) => break,
            changed = jobs.changed() => {
                if changed.is_err() {
                    break;
                }
                let new = jobs.borrow_and_update().clone();
                let by_name: HashMap<&str, &Arc<Job>> = new.iter().map(|j| (j.cfg.job_name.as_str(), j)).collect();
                running.retain(|_, r| match by_name.get(r.job.cfg.job_name.as_str()) {
                    None => {
                        let _ = r.removed.send(true);
                        false
                    }
                    Some(j) if !j.same_settings(&r.job) => {
                        let _ = r.stop.send(true);
                        false
                    }
                    Some(_) => true,
                });
                for (old, _) in &discoveries {
                    if !by_name.contains_key(old.cfg.job_name.as_str()) {
                        metrics.targets.remove(&JobLabels { job: old.cfg.job_name.clone() });
                    }
                }
                discoveries = discover(&new);
                first = true;
            }
        }
    }
    for (_, r) in running {
        let _ = r.stop.send(true);
        let _ = r.task.await;
    }
}
