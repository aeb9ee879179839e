//! Metric series: the latest sample of each series, for `/federate`.
//!
//! First cut: a map from the canonical label-set text to the latest sample, with a series
//! bound and an idle expiry. The metrics issue replaces it with interned labels and postings.

use crate::selector::Selector;
use crate::telemetry::Telemetry;
use osprey_protocol::prompb::WriteRequest;
use osprey_protocol::{exposition, is_stale_nan, loki_labels};
use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;
use std::time::{Duration, Instant};

struct Series {
    /// Sorted by name; includes `__name__`.
    labels: Vec<(String, String)>,
    value: f64,
    ts_ms: i64,
    updated: Instant,
}

pub struct SeriesStore {
    series: RwLock<HashMap<String, Series>>,
    max_series: usize,
    ttl: Duration,
    telemetry: Telemetry,
}

#[derive(Debug, Default)]
pub struct IngestOutcome {
    pub samples: u64,
    /// Messages for series refused as invalid (answer 400 after keeping the valid ones).
    pub invalid: Vec<String>,
    /// Series refused because the store is full (answer 429).
    pub over_limit: u64,
}

impl SeriesStore {
    pub fn new(max_series: usize, ttl: Duration, telemetry: Telemetry) -> Self {
        SeriesStore { series: RwLock::new(HashMap::new()), max_series, ttl, telemetry }
    }

    pub fn ingest(&self, req: WriteRequest) -> IngestOutcome {
        let mut out = IngestOutcome::default();
        let now = Instant::now();
        let Ok(mut map) = self.series.write() else { return out };
        for ts in req.timeseries {
            let mut labels: Vec<(String, String)> = ts.labels.into_iter().map(|l| (l.name, l.value)).collect();
            labels.sort();
            if let Some(problem) = check_labels(&labels) {
                out.invalid.push(problem);
                self.telemetry.reject("remote_write", "invalid_labels");
                continue;
            }
            let Some(latest) = ts.samples.iter().max_by_key(|s| s.timestamp) else { continue };
            out.samples += ts.samples.len() as u64;
            let key = loki_labels::format(&labels);
            if is_stale_nan(latest.value) {
                map.remove(&key);
                continue;
            }
            let len = map.len();
            match map.get_mut(&key) {
                Some(s) => {
                    if latest.timestamp >= s.ts_ms {
                        s.value = latest.value;
                        s.ts_ms = latest.timestamp;
                    }
                    s.updated = now;
                }
                None if len >= self.max_series => {
                    out.over_limit += 1;
                    self.telemetry.reject("remote_write", "max_series");
                }
                None => {
                    map.insert(key, Series { labels, value: latest.value, ts_ms: latest.timestamp, updated: now });
                }
            }
        }
        self.telemetry.samples_ingested.inc_by(out.samples);
        self.telemetry.series_active.set(map.len() as i64);
        out
    }

    /// Drops series that have not received a sample within the TTL.
    pub fn expire(&self) {
        let Ok(mut map) = self.series.write() else { return };
        let before = map.len();
        let ttl = self.ttl;
        map.retain(|_, s| s.updated.elapsed() < ttl);
        self.telemetry.series_expired.inc_by((before - map.len()) as u64);
        self.telemetry.series_active.set(map.len() as i64);
    }

    /// Renders the latest sample of every series matching any of `selectors` (all series when
    /// empty) in text format 0.0.4, grouped by metric name, with timestamps.
    pub fn federate(&self, selectors: &[Selector]) -> String {
        let Ok(map) = self.series.read() else { return String::new() };
        let mut by_name: BTreeMap<&str, Vec<&Series>> = BTreeMap::new();
        for s in map.values() {
            if !selectors.is_empty() && !selectors.iter().any(|sel| sel.matches_pairs(&s.labels)) {
                continue;
            }
            let name = s.labels.iter().find(|(k, _)| k == "__name__").map_or("", |(_, v)| v.as_str());
            by_name.entry(name).or_default().push(s);
        }
        let mut out = String::new();
        for (name, mut series) in by_name {
            series.sort_by(|a, b| a.labels.cmp(&b.labels));
            exposition::write_family_header(&mut out, name, "", "untyped");
            for s in series {
                let labels = s.labels.iter().filter(|(k, _)| k != "__name__").map(|(k, v)| (k.as_str(), v.as_str()));
                exposition::write_sample(&mut out, name, labels, s.value, Some(s.ts_ms));
            }
        }
        out
    }

    pub fn len(&self) -> usize {
        self.series.read().map(|m| m.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Prometheus' checks on a received label set (sorted by name).
fn check_labels(labels: &[(String, String)]) -> Option<String> {
    let name = labels.iter().find(|(k, _)| k == "__name__").map(|(_, v)| v.as_str());
    match name {
        None | Some("") => {
            return Some(format!("series {} has no metric name (__name__)", loki_labels::format(labels)));
        }
        Some(n) if !is_valid_metric_name(n) => return Some(format!("invalid metric name {n:?}")),
        _ => {}
    }
    for w in labels.windows(2) {
        if w[0].0 == w[1].0 {
            return Some(format!("series {} has duplicate label name {:?}", loki_labels::format(labels), w[0].0));
        }
    }
    for (k, v) in labels {
        if !loki_labels::is_valid_label_name(k) {
            return Some(format!("series {} has invalid label name {k:?}", loki_labels::format(labels)));
        }
        if v.is_empty() {
            return Some(format!("series {} has an empty value for label {k:?}", loki_labels::format(labels)));
        }
    }
    None
}

pub fn is_valid_metric_name(n: &str) -> bool {
    let mut b = n.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_' || c == b':')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b':')
}
