//! One scrape target: how it is built from discovered labels (target relabelling), and the
//! loop that scrapes it every interval, turns the body into series and hands them to the
//! remote_write sink.

use super::relabel::{self, LabelSet};
use super::{Job, ScrapeMetrics};
use crate::sink::remote_write::Batch;
use bytes::Bytes;
use http::{HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use osprey_protocol::exposition::{Entry, Format, Parser, SCRAPE_ACCEPT};
use osprey_protocol::prompb::{Label, Sample, TimeSeries};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{mpsc, watch};

pub type Client = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Full<Bytes>,
>;

/// Hard cap on a scrape body when `body_size_limit` is 0 (unlimited in Prometheus): a runaway
/// target must not take the agent's memory.
pub const DEFAULT_BODY_CAP: u64 = 256 << 20;

/// A target after relabelling.
#[derive(Clone, Debug)]
pub struct Target {
    /// Identifies the target across discovery rounds; also the remote_write source id.
    pub key: u64,
    /// Labels attached to every sample (`job`, `instance`, ...), no `__` labels.
    pub labels: LabelSet,
    pub url: String,
    pub job: Arc<Job>,
}

fn hash_of(x: impl Hash) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    x.hash(&mut h);
    h.finish()
}

/// Percent-encodes a query component.
fn encode_query(s: &str, out: &mut String) {
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

/// Builds the targets of one discovered group, as Prometheus' `populateLabels` does: defaults
/// that discovery did not set, `relabel_configs`, `instance` defaulting to `__address__`, and
/// the URL from `__scheme__`, `__address__`, `__metrics_path__` and `__param_*`.
pub fn build(job: &Arc<Job>, group: &super::discovery::TargetGroup) -> Vec<Target> {
    let cfg = &job.cfg;
    let mut out = Vec::new();
    for address in &group.targets {
        let mut l = LabelSet::from_pairs(group.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
        l.set("__address__", address.clone());
        let defaults = [
            ("job", cfg.job_name.clone()),
            ("__scheme__", cfg.scheme.clone()),
            ("__metrics_path__", cfg.metrics_path.clone()),
            ("__scrape_interval__", humantime::format_duration(job.interval).to_string()),
            ("__scrape_timeout__", humantime::format_duration(job.timeout).to_string()),
        ];
        for (k, v) in defaults {
            if l.get(k).is_none() {
                l.set(k, v);
            }
        }
        for (k, v) in &cfg.params {
            let name = format!("__param_{k}");
            if l.get(&name).is_none()
                && let Some(first) = v.first()
            {
                l.set(&name, first.clone());
            }
        }
        if !relabel::relabel(&job.relabel, &mut l) {
            continue;
        }
        let Some(address) = l.get("__address__").map(str::to_string).filter(|a| !a.is_empty()) else {
            tracing::warn!(job = %cfg.job_name, "target has no __address__ after relabelling; skipped");
            continue;
        };
        if l.get("instance").is_none() {
            l.set("instance", address.clone());
        }
        let scheme = l.get("__scheme__").unwrap_or("http").to_string();
        let path = l.get("__metrics_path__").unwrap_or("/metrics").to_string();
        let mut query = String::new();
        let mut params: Vec<(String, Vec<String>)> = cfg.params.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        for (k, v) in &l.0 {
            if let Some(p) = k.strip_prefix("__param_") {
                match params.iter_mut().find(|(pk, _)| pk == p) {
                    Some((_, vals)) if !vals.is_empty() => vals[0] = v.clone(),
                    Some((_, vals)) => vals.push(v.clone()),
                    None => params.push((p.to_string(), vec![v.clone()])),
                }
            }
        }
        for (k, vals) in &params {
            for v in vals {
                query.push(if query.is_empty() { '?' } else { '&' });
                encode_query(k, &mut query);
                query.push('=');
                encode_query(v, &mut query);
            }
        }
        let url = format!("{scheme}://{address}{path}{query}");
        l.0.retain(|(k, _)| !k.starts_with("__"));
        let key = hash_of((&cfg.job_name, &l, &url)) | 1;
        out.push(Target { key, labels: l, url, job: job.clone() });
    }
    out
}

/// Reads a secret file for a header, per scrape (Prometheus re-reads too, so rotation works).
fn secret(path: &str) -> Result<String, String> {
    std::fs::read_to_string(path).map(|s| s.trim().to_string()).map_err(|e| format!("cannot read {path}: {e}"))
}

fn base64(input: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn authorization(job: &Job) -> Result<Option<String>, String> {
    let cfg = &job.cfg;
    if let Some(b) = &cfg.basic_auth {
        let password = if b.password_file.is_empty() { b.password.clone() } else { secret(&b.password_file)? };
        return Ok(Some(format!("Basic {}", base64(format!("{}:{password}", b.username).as_bytes()))));
    }
    if !cfg.bearer_token_file.is_empty() {
        return Ok(Some(format!("Bearer {}", secret(&cfg.bearer_token_file)?)));
    }
    if !cfg.bearer_token.is_empty() {
        return Ok(Some(format!("Bearer {}", cfg.bearer_token)));
    }
    Ok(None)
}

/// GETs the target's body (decompressed), within the timeout and the body size limit.
async fn fetch(client: &Client, target: &Target) -> Result<(Vec<u8>, Format), String> {
    let job = &target.job;
    let limit = if job.cfg.body_size_limit == 0 { DEFAULT_BODY_CAP } else { job.cfg.body_size_limit };
    let mut req = Request::get(&target.url)
        .header("accept", SCRAPE_ACCEPT)
        .header("accept-encoding", if job.cfg.enable_compression { "gzip" } else { "identity" })
        .header("user-agent", concat!("osprey-agent/", env!("CARGO_PKG_VERSION")))
        .header("x-prometheus-scrape-timeout-seconds", format!("{}", job.timeout.as_secs_f64()));
    if let Some(auth) = authorization(job)? {
        let v = HeaderValue::from_str(&auth)
            .map_err(|_| "credentials contain characters not allowed in a header".to_string())?;
        req = req.header("authorization", v);
    }
    let req = req.body(Full::new(Bytes::new())).map_err(|e| format!("invalid request for {}: {e}", target.url))?;
    let work = async {
        let resp = client.request(req).await.map_err(|e| {
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg = format!("{msg}: {s}");
                src = s.source();
            }
            msg
        })?;
        if resp.status() != StatusCode::OK {
            return Err(format!("server returned HTTP status {}", resp.status()));
        }
        let format = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map_or(Format::Text, Format::from_content_type);
        let gzip = resp.headers().get("content-encoding").is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
        let mut body = resp.into_body();
        let mut buf = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| format!("reading the body failed: {e}"))?;
            if let Some(d) = frame.data_ref() {
                if buf.len() as u64 + d.len() as u64 > limit {
                    return Err(format!("body larger than body_size_limit ({limit} bytes)"));
                }
                buf.extend_from_slice(d);
            }
        }
        if gzip {
            buf = osprey_protocol::gzip::decompress(&buf, limit as usize)
                .map_err(|e| format!("gzip body: {e} (limit: body_size_limit {limit} bytes)"))?;
        }
        Ok((buf, format))
    };
    match tokio::time::timeout(job.timeout, work).await {
        Ok(r) => r,
        Err(_) => {
            Err(format!("no complete answer within scrape_timeout ({})", humantime::format_duration(job.timeout)))
        }
    }
}

/// What one scrape produced (before the synthetic series).
struct Scraped {
    series: Vec<TimeSeries>,
    scraped: u64,
    post_relabel: u64,
    duplicates: u64,
}

fn to_labels(l: &LabelSet) -> Vec<Label> {
    l.0.iter().map(|(k, v)| Label { name: k.clone(), value: v.clone() }).collect()
}

fn into_labels(l: LabelSet) -> Vec<Label> {
    l.0.into_iter().map(|(name, value)| Label { name, value }).collect()
}

/// Parses a body into series with target labels, metric relabelling, the sample limit and
/// duplicate removal applied.
fn process(target: &Target, body: &[u8], format: Format, ts_ms: i64, keys: &mut Vec<u64>) -> Result<Scraped, String> {
    let job = &target.job;
    let cfg = &job.cfg;
    let mut out = Scraped { series: Vec::new(), scraped: 0, post_relabel: 0, duplicates: 0 };
    let mut seen: std::collections::HashSet<u64> = std::collections::HashSet::new();
    for entry in Parser::new(body, format) {
        let s = match entry {
            Ok(Entry::Sample(s)) => s,
            Ok(_) => continue,
            Err(e) => return Err(format!("invalid exposition ({format:?}): {e}")),
        };
        out.scraped += 1;
        let mut pairs: Vec<(String, String)> = Vec::with_capacity(8);
        pairs.push(("__name__".into(), s.name.to_string()));
        for (k, v) in s.labels() {
            if !v.is_empty() {
                pairs.push((k.to_string(), v.into_owned()));
            }
        }
        let mut l = LabelSet::from_pairs(pairs);
        for (k, v) in &target.labels.0 {
            if cfg.honor_labels {
                if l.get(k).is_none() {
                    l.set(k, v.clone());
                }
            } else {
                if let Some(existing) = l.get(k).map(str::to_string) {
                    // The scraped label is kept as exported_<name> (exported_exported_... if
                    // that is taken too).
                    let mut name = format!("exported_{k}");
                    while l.get(&name).is_some() {
                        name = format!("exported_{name}");
                    }
                    l.set(&name, existing);
                }
                l.set(k, v.clone());
            }
        }
        if !job.metric_relabel.is_empty() && !relabel::relabel(&job.metric_relabel, &mut l) {
            continue;
        }
        if l.get("__name__").is_none() {
            continue;
        }
        out.post_relabel += 1;
        if cfg.sample_limit > 0 && out.post_relabel > cfg.sample_limit {
            return Err(format!(
                "sample_limit exceeded: more than {} samples after metric relabelling",
                cfg.sample_limit
            ));
        }
        let key = hash_of(&l);
        if !seen.insert(key) {
            out.duplicates += 1;
            continue;
        }
        keys.push(key);
        let ts = if cfg.honor_timestamps { s.timestamp_ms.unwrap_or(ts_ms) } else { ts_ms };
        out.series.push(TimeSeries {
            labels: into_labels(l),
            samples: vec![Sample { value: s.value, timestamp: ts }],
            exemplars: vec![],
        });
    }
    Ok(out)
}

/// Scrapes `target` every interval until it is removed (then writes stale markers for all its
/// series) or the agent shuts down.
pub async fn run(
    target: Target,
    client: Client,
    tx: mpsc::Sender<Batch>,
    mut removed: watch::Receiver<bool>,
    mut shutdown: watch::Receiver<bool>,
    metrics: ScrapeMetrics,
) {
    let job = target.job.clone();
    let job_label = super::JobLabels { job: job.cfg.job_name.clone() };
    // Spread targets over the interval: a stable offset per target, not all at once.
    let offset = Duration::from_nanos((target.key % job.interval.as_nanos().max(1) as u64).max(1));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + offset, job.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Every series this target produced, with the scrape generation that last saw it: series
    // not seen in the current generation get a staleness marker and are forgotten. Labels are
    // copied only when a series is new, not on every scrape.
    let mut known: HashMap<u64, (u64, Vec<Label>)> = HashMap::new();
    let mut generation: u64 = 0;
    let mut last_problem: Option<String> = None;
    let mut keys = Vec::new();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = async { let _ = removed.wait_for(|r| *r).await; } => {
                let ts = now_ms();
                let stale: Vec<TimeSeries> = known.into_values().map(|(_, labels)| stale_series(labels, ts)).collect();
                if !stale.is_empty() {
                    tracing::info!(job = %job.cfg.job_name, target = %target.url, series = stale.len(), "target gone; marking its series stale");
                    let _ = tx.send(Batch { source: target.key, series: stale }).await;
                }
                return;
            }
            // A dropped sender is no signal: a removed target's `stop` sender goes away with
            // it, and that must not win over the staleness markers above.
            _ = async { if shutdown.wait_for(|s| *s).await.is_err() { std::future::pending::<()>().await } } => return,
        }
        let ts = now_ms();
        let started = Instant::now();
        keys.clear();
        let result =
            fetch(&client, &target).await.and_then(|(body, format)| process(&target, &body, format, ts, &mut keys));
        let duration = started.elapsed().as_secs_f64();
        metrics.scrapes.get_or_create(&job_label).inc();
        let (mut series, up, scraped, post) = match result {
            Ok(s) => {
                if last_problem.take().is_some() {
                    tracing::info!(job = %job.cfg.job_name, target = %target.url, "scrape recovered; up=1");
                }
                if s.duplicates > 0 {
                    metrics.duplicates.get_or_create(&job_label).inc_by(s.duplicates);
                    tracing::warn!(job = %job.cfg.job_name, target = %target.url, duplicates = s.duplicates, "target exposed duplicate series; kept the first of each");
                }
                (s.series, 1.0, s.scraped, s.post_relabel)
            }
            Err(problem) => {
                metrics.failures.get_or_create(&job_label).inc();
                if last_problem.as_deref() != Some(&problem) {
                    tracing::warn!(job = %job.cfg.job_name, target = %target.url, error = %problem, "scrape failed; up=0");
                    last_problem = Some(problem);
                }
                keys.clear();
                (Vec::new(), 0.0, 0, 0)
            }
        };
        generation += 1;
        let mut added = 0u64;
        for (k, s) in keys.iter().zip(&series) {
            match known.get_mut(k) {
                Some(entry) => entry.0 = generation,
                None => {
                    known.insert(*k, (generation, s.labels.clone()));
                    added += 1;
                }
            }
        }
        for (name, value) in [
            ("up", up),
            ("scrape_duration_seconds", duration),
            ("scrape_samples_scraped", scraped as f64),
            ("scrape_samples_post_metric_relabeling", post as f64),
            ("scrape_series_added", added as f64),
        ] {
            let mut l = target.labels.clone();
            l.set("__name__", name.to_string());
            let labels = to_labels(&l);
            known.entry(hash_of(&l)).or_insert_with(|| (generation, labels.clone())).0 = generation;
            series.push(TimeSeries { labels, samples: vec![Sample { value, timestamp: ts }], exemplars: vec![] });
        }
        known.retain(|_, (seen, labels)| {
            if *seen == generation {
                return true;
            }
            series.push(stale_series(std::mem::take(labels), ts));
            false
        });
        metrics.samples.get_or_create(&job_label).inc_by(post);
        if tx.send(Batch { source: target.key, series }).await.is_err() {
            return;
        }
    }
}

fn stale_series(labels: Vec<Label>, ts: i64) -> TimeSeries {
    TimeSeries {
        labels,
        samples: vec![Sample { value: f64::from_bits(osprey_protocol::STALE_NAN_BITS), timestamp: ts }],
        exemplars: vec![],
    }
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"user:pass"), "dXNlcjpwYXNz");
    }
}
