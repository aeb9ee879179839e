//! The series store: the latest sample of every series, per tenant, with an inverted label
//! index, for `/federate`, the Prometheus query API and fleet liveness.
//!
//! Layout: tenant (`X-Scope-OrgID`) → 16 [`shard::Shard`]s chosen by label-set hash → series.
//! Each shard interns its strings ([`symbols`]), keeps one 48-byte slot and one allocation of
//! label ids per series, a hash table from label-set hash to series, and postings per label
//! pair ([`postings`]). The design target is at most 1 KiB per active series including the
//! index; `benches/src/bin/series_memory.rs` measures it.
//!
//! What it keeps: the newest sample by timestamp (older samples arriving late are accepted and
//! not stored), until a stale marker ends the series or it goes `metrics.series_ttl` without a
//! sample. It is not a TSDB: history belongs to the long-term stores the collector forwards to.

pub mod federate;
pub mod fleet;
pub mod forward;
pub mod metadata;
pub mod postings;
pub mod shard;
pub mod symbols;
pub mod telemetry;
pub mod validate;

use crate::selector::Selector;
use fleet::Fleet;
use hashbrown::HashMap;
use metadata::{MetadataStore, Put};
use osprey_config::collector::Metrics as MetricsConfig;
use osprey_protocol::remote_write::{Latest, SeriesProblem, WriteView};
use roaring::RoaringBitmap;
use shard::{Shard, Upsert};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Instant;
use validate::{LabelLimits, Reason};

/// Shards per tenant: enough that two or three writers and a long read rarely meet on one lock.
pub const SHARDS: usize = 16;

/// At most this many per-series messages go into one error answer.
const MAX_MESSAGES: usize = 10;

pub(crate) fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn lock<T>(l: &Mutex<T>) -> MutexGuard<'_, T> {
    l.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One tenant's series.
pub struct Tenant {
    pub shards: Box<[RwLock<Shard>]>,
    series: AtomicUsize,
    pub metadata: Mutex<MetadataStore>,
    hasher: hashbrown::DefaultHashBuilder,
}

impl Tenant {
    fn new(max_metadata: usize) -> Self {
        Tenant {
            shards: (0..SHARDS).map(|_| RwLock::new(Shard::default())).collect(),
            series: AtomicUsize::new(0),
            metadata: Mutex::new(MetadataStore::new(max_metadata)),
            hasher: hashbrown::DefaultHashBuilder::default(),
        }
    }

    #[inline]
    fn shard_of(hash: u64) -> usize {
        // Bits the hash tables inside a shard do not use for their own buckets or tags.
        ((hash >> 40) as usize) % SHARDS
    }

    pub fn len(&self) -> usize {
        self.series.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What one write did, for the answer and the counters.
#[derive(Debug, Default)]
pub struct IngestOutcome {
    /// Samples of series that were stored (all samples of such a series count, including
    /// older ones superseded by the newest).
    pub samples_written: u64,
    pub series_written: u64,
    /// Messages for series refused as invalid (answer 400, the valid ones are kept).
    pub invalid: Vec<String>,
    pub invalid_series: u64,
    /// Messages for series refused by a capacity limit (answer 429 when nothing is invalid).
    pub over_limit: Vec<String>,
    pub over_limit_series: u64,
    /// Indexes (in the request) of the series refused as invalid, ascending: nothing of them
    /// was stored, and nothing of them is forwarded.
    pub invalid_index: Vec<usize>,
}

impl IngestOutcome {
    fn refuse(&mut self, reason: Reason, message: String) {
        let (list, count) = if reason.is_capacity() {
            (&mut self.over_limit, &mut self.over_limit_series)
        } else {
            (&mut self.invalid, &mut self.invalid_series)
        };
        *count += 1;
        if list.len() < MAX_MESSAGES {
            list.push(message);
        }
    }

    /// The answer's text: the first messages and how many more there were.
    pub fn message(messages: &[String], total: u64) -> String {
        let mut out = messages.join("\n");
        let more = total.saturating_sub(messages.len() as u64);
        if more > 0 {
            out.push_str(&format!("\n(and {more} more series refused for the same kinds of reasons)"));
        }
        out
    }
}

/// A series picked by a query, with owned labels (sorted by name).
#[derive(Clone, Debug, PartialEq)]
pub struct Selected {
    pub labels: Vec<(String, String)>,
    pub value: f64,
    pub timestamp_ms: i64,
}

/// Which samples a query may see: the latest sample's timestamp must be within `[min, max]`.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    pub min_ms: i64,
    pub max_ms: i64,
}

impl Window {
    pub const ALL: Window = Window { min_ms: i64::MIN, max_ms: i64::MAX };

    fn contains(&self, ts: i64) -> bool {
        self.min_ms <= ts && ts <= self.max_ms
    }
}

/// A query selected more series than `metrics.max_query_series`.
#[derive(Debug, thiserror::Error)]
#[error("the query selects more than {limit} series (metrics.max_query_series); narrow the selector")]
pub struct TooManySeries {
    pub limit: usize,
}

pub struct MetricsStore {
    /// `[metrics]`; limits, TTL and query bounds are replaced by a reload
    /// ([`MetricsStore::apply_config`]); fleet settings and forwarding are fixed at start.
    cfg: crate::live::Live<MetricsConfig>,
    tenants: RwLock<HashMap<String, Arc<Tenant>>>,
    /// `[limits.tenants.<name>] max_series` overrides of `max_series_per_tenant`.
    series_limits: RwLock<HashMap<String, usize>>,
    total: AtomicUsize,
    epoch: Instant,
    pub fleet: Arc<Fleet>,
    telemetry: crate::telemetry::Telemetry,
    pub stats: telemetry::MetricsTelemetry,
}

impl MetricsStore {
    pub fn new(
        cfg: &MetricsConfig,
        default_tenant: &str,
        telemetry: crate::telemetry::Telemetry,
        registry: &mut prometheus_client::registry::Registry,
    ) -> Self {
        let fleet = Arc::new(Fleet::new(
            cfg.agent_label.clone(),
            cfg.agent_down_after.get(),
            cfg.agent_forget_after.get(),
            cfg.max_agents,
        ));
        let stats = telemetry::MetricsTelemetry::new(registry, fleet.clone(), default_tenant.to_string());
        MetricsStore {
            cfg: crate::live::Live::new(cfg.clone()),
            tenants: RwLock::new(HashMap::new()),
            series_limits: RwLock::new(HashMap::new()),
            total: AtomicUsize::new(0),
            epoch: Instant::now(),
            fleet,
            telemetry,
            stats,
        }
    }

    /// The `[metrics]` settings in force.
    pub fn config(&self) -> Arc<MetricsConfig> {
        self.cfg.load()
    }

    /// Applies reloaded limits (series, labels, tenants, metadata), `series_ttl` and the query
    /// bounds from the next request on. Series already stored stay, even above a lowered limit:
    /// a limit refuses new series, it does not evict (they leave by `series_ttl`).
    pub fn apply_config(&self, cfg: &MetricsConfig) {
        let running = self.cfg.load();
        let mut next = cfg.clone();
        next.agent_label = running.agent_label.clone();
        next.agent_down_after = running.agent_down_after;
        next.agent_forget_after = running.agent_forget_after;
        next.max_agents = running.max_agents;
        next.forward = running.forward.clone();
        self.cfg.store(next);
    }

    fn label_limits(cfg: &MetricsConfig) -> LabelLimits {
        LabelLimits {
            max_labels: cfg.max_labels_per_series,
            max_name_bytes: cfg.max_label_name_bytes,
            max_value_bytes: cfg.max_label_value_bytes,
        }
    }

    /// Replaces the per-tenant overrides of `max_series_per_tenant` (at start and on reload).
    /// A lowered limit refuses new series only; series already held stay until they expire.
    pub fn set_series_limits(&self, overrides: impl IntoIterator<Item = (String, usize)>) {
        *write(&self.series_limits) = overrides.into_iter().collect();
    }

    fn series_limit(&self, cfg: &MetricsConfig, tenant: &str) -> usize {
        read(&self.series_limits).get(tenant).copied().unwrap_or(cfg.max_series_per_tenant)
    }

    /// Store clock: whole seconds since the store started (for touch times).
    fn clock(&self) -> u32 {
        self.epoch.elapsed().as_secs().min(u64::from(u32::MAX)) as u32
    }

    pub fn tenant(&self, name: &str) -> Option<Arc<Tenant>> {
        read(&self.tenants).get(name).cloned()
    }

    fn tenant_for_write(&self, cfg: &MetricsConfig, name: &str) -> Option<Arc<Tenant>> {
        if let Some(t) = self.tenant(name) {
            return Some(t);
        }
        let mut tenants = write(&self.tenants);
        if let Some(t) = tenants.get(name) {
            return Some(t.clone());
        }
        if tenants.len() >= cfg.max_tenants {
            return None;
        }
        let t = Arc::new(Tenant::new(cfg.max_metadata_families));
        tenants.insert(name.to_string(), t.clone());
        self.stats.tenants.set(tenants.len() as i64);
        Some(t)
    }

    /// Counts a new series against the tenant's and the global limit; `false` (and the
    /// reason) when either is full.
    fn reserve(&self, cfg: &MetricsConfig, t: &Tenant, max_per_tenant: usize, why: &mut Option<Reason>) -> bool {
        if t.series.fetch_add(1, Ordering::Relaxed) >= max_per_tenant {
            t.series.fetch_sub(1, Ordering::Relaxed);
            *why = Some(Reason::MaxSeriesPerTenant);
            return false;
        }
        if self.total.fetch_add(1, Ordering::Relaxed) >= cfg.max_series {
            self.total.fetch_sub(1, Ordering::Relaxed);
            t.series.fetch_sub(1, Ordering::Relaxed);
            *why = Some(Reason::MaxSeries);
            return false;
        }
        true
    }

    fn released(&self, t: &Tenant, n: usize) {
        t.series.fetch_sub(n, Ordering::Relaxed);
        self.total.fetch_sub(n, Ordering::Relaxed);
    }

    /// Stores a decoded remote_write request for `tenant`: validates each series, keeps the
    /// valid ones, and reports the rest.
    pub fn ingest(&self, tenant: &str, view: &WriteView<'_>) -> IngestOutcome {
        let mut out = IngestOutcome::default();
        let now = self.clock();
        let cfg = self.cfg.load();
        let limits = Self::label_limits(&cfg);
        let Some(t) = self.tenant_for_write(&cfg, tenant) else {
            for s in &view.series {
                self.stats.reject("max_tenants", u64::from(s.samples));
            }
            out.over_limit_series = view.series.len() as u64;
            out.over_limit.push(format!(
                "tenant {tenant:?} refused: the collector holds series of its maximum of {} tenants (metrics.max_tenants)",
                cfg.max_tenants
            ));
            return out;
        };
        let max_per_tenant = self.series_limit(&cfg, tenant);
        let agent_label = self.fleet.label.as_str();
        let mut hosts: Vec<&str> = Vec::new();
        let (mut created, mut stale, mut exemplars) = (0u64, 0u64, 0u64);
        for (i, s) in view.series.iter().enumerate() {
            let labels = view.labels_of(s);
            exemplars += u64::from(s.exemplars);
            if let Some(problem) = &s.problem {
                let reason = match problem {
                    SeriesProblem::InvalidUtf8 { .. } => Reason::InvalidUtf8,
                    _ => Reason::BadSymbolRef,
                };
                self.stats.reject(reason.as_str(), u64::from(s.samples + s.histograms));
                out.refuse(reason, format!("series {} (as far as decoded): {problem}", validate::describe(labels)));
                out.invalid_index.push(i);
                continue;
            }
            if s.histograms > 0 {
                if let Err((reason, message)) = validate::check(labels, &limits) {
                    self.stats.reject(reason.as_str(), u64::from(s.samples + s.histograms));
                    out.refuse(reason, message);
                    out.invalid_index.push(i);
                    continue;
                }
                self.stats.reject(Reason::NativeHistogram.as_str(), u64::from(s.histograms));
                out.refuse(
                    Reason::NativeHistogram,
                    format!(
                        "series {}: {} native histogram samples refused: the collector stores float samples only",
                        validate::describe(labels),
                        s.histograms
                    ),
                );
            }
            let Some(latest) = s.latest else { continue };
            let hash = t.hasher.hash_one(labels);
            // A series already stored passed these checks with these very labels, so only a
            // new series is validated (and counted against the limits).
            let mut why: Option<(Reason, Option<String>)> = None;
            let result = write(&t.shards[Tenant::shard_of(hash)]).upsert(hash, labels, latest, now, || {
                if let Err((reason, message)) = validate::check(labels, &limits) {
                    why = Some((reason, Some(message)));
                    return false;
                }
                let mut capacity = None;
                let ok = self.reserve(&cfg, &t, max_per_tenant, &mut capacity);
                why = capacity.map(|r| (r, None));
                ok
            });
            match result {
                Upsert::Refused if why.as_ref().is_some_and(|(_, m)| m.is_some()) => {
                    if let Some((reason, Some(message))) = why {
                        self.stats.reject(reason.as_str(), u64::from(s.samples + s.histograms));
                        out.refuse(reason, message);
                        out.invalid_index.push(i);
                    }
                    continue;
                }
                Upsert::Refused => {
                    let reason = why.map_or(Reason::MaxSeries, |(r, _)| r);
                    self.stats.reject(reason.as_str(), u64::from(s.samples));
                    let limit = match reason {
                        Reason::MaxSeriesPerTenant => format!(
                            "tenant {tenant:?} holds its maximum of {max_per_tenant} series (metrics.max_series_per_tenant or limits.tenants.{tenant}.max_series)"
                        ),
                        _ => {
                            format!("the collector holds its maximum of {} series (metrics.max_series)", cfg.max_series)
                        }
                    };
                    out.refuse(reason, format!("new series {} refused: {limit}", validate::describe(labels)));
                    continue;
                }
                Upsert::Created => created += 1,
                Upsert::Stale(true) => {
                    stale += 1;
                    self.released(&t, 1);
                }
                Upsert::Stale(false) | Upsert::Updated => {}
            }
            out.samples_written += u64::from(s.samples);
            out.series_written += 1;
            if !agent_label.is_empty()
                && let Some((_, host)) = labels.iter().find(|(k, _)| *k == agent_label)
                && !hosts.contains(host)
            {
                hosts.push(host);
            }
        }
        self.store_metadata(&t, view, now);
        if !hosts.is_empty() {
            let untracked = self.fleet.seen(tenant, hosts, fleet::now_ms());
            self.stats.agents_untracked.inc_by(untracked);
        }
        self.telemetry.samples_ingested.inc_by(out.samples_written);
        self.telemetry.series_active.set(self.total.load(Ordering::Relaxed) as i64);
        self.stats.series_created.inc_by(created);
        self.stats.series_stale.inc_by(stale);
        self.stats.exemplars_ignored.inc_by(exemplars);
        out
    }

    fn store_metadata(&self, t: &Tenant, view: &WriteView<'_>, now: u32) {
        let v2 = view.series.iter().any(|s| s.metadata.is_some());
        if view.metadata.is_empty() && !v2 {
            return;
        }
        let mut md = lock(&t.metadata);
        let mut dropped = 0;
        for m in &view.metadata {
            if md.put(m.family, m.kind, m.help, m.unit, now) == Put::Full {
                dropped += 1;
            }
        }
        for s in view.series.iter().filter(|s| s.problem.is_none()) {
            let Some(m) = s.metadata else { continue };
            let Some((_, name)) = view.labels_of(s).iter().find(|(k, _)| *k == "__name__") else { continue };
            if md.put(name, m.kind, view.symbol(m.help), view.symbol(m.unit), now) == Put::Full {
                dropped += 1;
            }
        }
        self.stats.metadata_dropped.inc_by(dropped);
    }

    /// Writes `osprey_agent_up` and `osprey_agent_last_seen_timestamp_seconds` for every
    /// tracked agent into its tenant's series, so Grafana and `/federate` see them too.
    pub fn record_fleet(&self) {
        if !self.fleet.enabled() {
            return;
        }
        let now_ms = fleet::now_ms();
        let clock = self.clock();
        let cfg = self.cfg.load();
        for agent in self.fleet.states(now_ms) {
            let Some(t) = self.tenant_for_write(&cfg, &agent.tenant) else { continue };
            let max_per_tenant = self.series_limit(&cfg, &agent.tenant);
            let series = [
                ("osprey_agent_up", if agent.up { 1.0 } else { 0.0 }),
                ("osprey_agent_last_seen_timestamp_seconds", agent.last_seen),
            ];
            for (name, value) in series {
                let mut labels = [("__name__", name), (self.fleet.label.as_str(), agent.host.as_str())];
                labels.sort_by(|a, b| a.0.cmp(b.0));
                let hash = t.hasher.hash_one(&labels[..]);
                let mut why = None;
                let latest = Latest { value, timestamp_ms: now_ms };
                let r = write(&t.shards[Tenant::shard_of(hash)])
                    .upsert(hash, &labels, latest, clock, || self.reserve(&cfg, &t, max_per_tenant, &mut why));
                if let Some(reason) = why {
                    self.stats.reject(reason.as_str(), 1);
                }
                if r == Upsert::Created {
                    self.stats.series_created.inc();
                }
            }
        }
        self.telemetry.series_active.set(self.total.load(Ordering::Relaxed) as i64);
    }

    /// Drops series and metadata idle for `metrics.series_ttl`, and tenants left empty;
    /// refreshes the size gauges.
    pub fn expire(&self) {
        let ttl = self.cfg.load().series_ttl.get().as_secs().min(u64::from(u32::MAX)) as u32;
        let cutoff = self.clock().saturating_sub(ttl);
        let tenants: Vec<(String, Arc<Tenant>)> =
            read(&self.tenants).iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let (mut expired, mut symbols, mut bytes) = (0usize, 0usize, 0usize);
        for (_, t) in &tenants {
            for shard in t.shards.iter() {
                let mut s = write(shard);
                let n = s.expire(cutoff);
                self.released(t, n);
                expired += n;
                symbols += s.symbols.len();
                bytes += s.heap_bytes();
            }
            lock(&t.metadata).expire(cutoff);
        }
        drop(tenants);
        {
            let mut map = write(&self.tenants);
            // A tenant someone holds (an ingest between lookup and upsert) stays: removing it
            // would orphan what that ingest is about to store.
            map.retain(|_, t| Arc::strong_count(t) > 1 || !t.is_empty() || !lock(&t.metadata).is_empty());
            self.stats.tenants.set(map.len() as i64);
        }
        self.telemetry.series_expired.inc_by(expired as u64);
        self.telemetry.series_active.set(self.total.load(Ordering::Relaxed) as i64);
        self.stats.symbols.set(symbols as i64);
        self.stats.index_bytes.set(bytes as u64);
    }

    /// Active series over all tenants.
    pub fn len(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Estimated heap bytes of every shard (walks them all; for benches and `/metrics`).
    pub fn heap_bytes(&self) -> usize {
        let tenants: Vec<Arc<Tenant>> = read(&self.tenants).values().cloned().collect();
        tenants.iter().flat_map(|t| t.shards.iter()).map(|s| read(s).heap_bytes()).sum()
    }

    /// The series of one shard matching any selector (every series when there are none).
    fn selected(shard: &Shard, selectors: &[Selector]) -> RoaringBitmap {
        match selectors {
            [] => shard.index.all().clone(),
            [one] => shard.select(&one.matchers),
            many => {
                let mut acc = RoaringBitmap::new();
                for s in many {
                    acc |= shard.select(&s.matchers);
                }
                acc
            }
        }
    }

    /// Calls `f` for every series of `tenant` matching any selector whose latest sample is in
    /// `window`, one shard at a time (its read lock held during the calls).
    pub fn for_each(
        &self,
        tenant: &str,
        selectors: &[Selector],
        window: Window,
        mut f: impl FnMut(&Shard, &shard::Series),
    ) {
        let Some(t) = self.tenant(tenant) else { return };
        for shard in t.shards.iter() {
            let s = read(shard);
            for id in Self::selected(&s, selectors).iter() {
                if let Some(series) = s.get(id)
                    && window.contains(series.timestamp_ms)
                {
                    f(&s, series);
                }
            }
        }
    }

    /// The series matching any selector, with owned labels, at most `metrics.max_query_series`.
    pub fn select(&self, tenant: &str, selectors: &[Selector], window: Window) -> Result<Vec<Selected>, TooManySeries> {
        let limit = self.cfg.load().max_query_series;
        let mut out = Vec::new();
        let mut over = false;
        self.for_each(tenant, selectors, window, |shard, s| {
            if out.len() >= limit {
                over = true;
                return;
            }
            out.push(Selected {
                labels: shard.labels(s).map(|(k, v)| (k.to_string(), v.to_string())).collect(),
                value: s.value,
                timestamp_ms: s.timestamp_ms,
            });
        });
        if over {
            return Err(TooManySeries { limit });
        }
        Ok(out)
    }

    /// Label names of the series matching any selector (all series when none), sorted.
    pub fn label_names(&self, tenant: &str, selectors: &[Selector], window: Window) -> Vec<String> {
        let mut names = std::collections::BTreeSet::new();
        let Some(t) = self.tenant(tenant) else { return vec![] };
        for shard in t.shards.iter() {
            let s = read(shard);
            if selectors.is_empty() && window.min_ms == i64::MIN {
                for n in s.index.names() {
                    if !names.contains(s.symbols.get(n)) {
                        names.insert(s.symbols.get(n).to_string());
                    }
                }
                continue;
            }
            for id in Self::selected(&s, selectors).iter() {
                if let Some(series) = s.get(id).filter(|x| window.contains(x.timestamp_ms)) {
                    for (k, _) in s.labels(series) {
                        if !names.contains(k) {
                            names.insert(k.to_string());
                        }
                    }
                }
            }
        }
        names.into_iter().collect()
    }

    /// Values of label `name` on the series matching any selector (all when none), sorted.
    pub fn label_values(&self, tenant: &str, name: &str, selectors: &[Selector], window: Window) -> Vec<String> {
        let mut values = std::collections::BTreeSet::new();
        let Some(t) = self.tenant(tenant) else { return vec![] };
        for shard in t.shards.iter() {
            let s = read(shard);
            let Some(name_sym) = s.symbols.lookup(name) else { continue };
            if selectors.is_empty() && window.min_ms == i64::MIN {
                for (v, _) in s.index.values(name_sym) {
                    if !values.contains(s.symbols.get(v)) {
                        values.insert(s.symbols.get(v).to_string());
                    }
                }
                continue;
            }
            for id in Self::selected(&s, selectors).iter() {
                if let Some(series) = s.get(id).filter(|x| window.contains(x.timestamp_ms))
                    && let Some(v) = s.label_value(series, name_sym)
                    && !values.contains(s.symbols.get(v))
                {
                    values.insert(s.symbols.get(v).to_string());
                }
            }
        }
        values.into_iter().collect()
    }

    /// Metadata of `tenant`'s metric families: (family, type, help, unit), sorted by family.
    pub fn metadata(&self, tenant: &str) -> Vec<(String, &'static str, String, String)> {
        let Some(t) = self.tenant(tenant) else { return vec![] };
        let md = lock(&t.metadata);
        let mut out: Vec<_> =
            md.iter().map(|(k, m)| (k.to_string(), m.type_name(), m.help.to_string(), m.unit.to_string())).collect();
        out.sort();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selector::parse_series_selector;
    use osprey_protocol::prompb::{Label, MetricMetadata, Sample, TimeSeries, WriteRequest};
    use prost::Message;

    fn store(cfg: MetricsConfig) -> MetricsStore {
        let mut registry = prometheus_client::registry::Registry::default();
        let telemetry = crate::telemetry::Telemetry::new(&mut registry);
        MetricsStore::new(&cfg, "fake", telemetry, &mut registry)
    }

    /// (labels, value, timestamp) of one single-sample series.
    type Point<'a> = (&'a [(&'a str, &'a str)], f64, i64);

    fn request(series: &[Point<'_>]) -> Vec<u8> {
        WriteRequest {
            timeseries: series
                .iter()
                .map(|(labels, value, ts)| TimeSeries {
                    labels: labels.iter().map(|(k, v)| Label::new(*k, *v)).collect(),
                    samples: vec![Sample { value: *value, timestamp: *ts }],
                    exemplars: vec![],
                })
                .collect(),
            metadata: vec![MetricMetadata {
                r#type: 2,
                metric_family_name: "up".into(),
                help: "Up.".into(),
                unit: "".into(),
            }],
        }
        .encode_to_vec()
    }

    fn ingest(store: &MetricsStore, tenant: &str, series: &[Point<'_>]) -> IngestOutcome {
        let bytes = request(series);
        let view = osprey_protocol::remote_write::decode_v1(&bytes).unwrap();
        store.ingest(tenant, &view)
    }

    fn select(store: &MetricsStore, tenant: &str, sel: &str) -> Vec<Selected> {
        let s = parse_series_selector(sel).unwrap();
        let mut v = store.select(tenant, &[s], Window::ALL).unwrap();
        v.sort_by(|a, b| a.labels.cmp(&b.labels));
        v
    }

    #[test]
    fn keeps_valid_series_and_reports_the_rest() {
        let st = store(MetricsConfig::default());
        let out = ingest(
            &st,
            "fake",
            &[
                (&[("__name__", "up"), ("host", "a"), ("job", "node")], 1.0, 100),
                (&[("job", "node"), ("__name__", "up")], 1.0, 100),
                (&[("__name__", "up"), ("host", "b"), ("job", "node")], f64::NAN, 100),
            ],
        );
        assert_eq!((out.series_written, out.invalid_series), (2, 1));
        assert!(out.invalid[0].contains("not sorted"), "{:?}", out.invalid);
        let got = select(&st, "fake", r#"up{job="node"}"#);
        assert_eq!(got.len(), 2);
        assert!(got[1].value.is_nan(), "NaN is a value like any other");
        assert_eq!(st.metadata("fake"), vec![("up".into(), "gauge", "Up.".into(), "".into())]);
        assert_eq!(st.fleet.states(fleet::now_ms()).len(), 2, "hosts a and b seen");
        assert!(select(&st, "other", "up").is_empty(), "tenants are separate");
    }

    #[test]
    fn limits_per_tenant_and_overall() {
        let cfg = MetricsConfig { max_series: 3, max_series_per_tenant: 2, ..MetricsConfig::default() };
        let st = store(cfg);
        let out = ingest(
            &st,
            "a",
            &[
                (&[("__name__", "x"), ("i", "1")], 1.0, 1),
                (&[("__name__", "x"), ("i", "2")], 1.0, 1),
                (&[("__name__", "x"), ("i", "3")], 1.0, 1),
            ],
        );
        assert_eq!((out.series_written, out.over_limit_series), (2, 1));
        assert!(out.over_limit[0].contains("metrics.max_series_per_tenant"), "{:?}", out.over_limit);
        let out =
            ingest(&st, "b", &[(&[("__name__", "x"), ("i", "1")], 1.0, 1), (&[("__name__", "x"), ("i", "2")], 1.0, 1)]);
        assert_eq!((out.series_written, out.over_limit_series), (1, 1));
        assert!(out.over_limit[0].contains("metrics.max_series)"), "{:?}", out.over_limit);
        // A stale marker frees room.
        let stale = f64::from_bits(osprey_protocol::STALE_NAN_BITS);
        ingest(&st, "a", &[(&[("__name__", "x"), ("i", "1")], stale, 2)]);
        assert_eq!(st.len(), 2);
        let out = ingest(&st, "b", &[(&[("__name__", "x"), ("i", "2")], 1.0, 1)]);
        assert_eq!(out.series_written, 1);
    }

    #[test]
    fn expiry_drops_idle_series_and_empty_tenants() {
        let cfg = MetricsConfig { series_ttl: osprey_config::Duration::from_secs(1), ..MetricsConfig::default() };
        let st = store(cfg);
        ingest(&st, "a", &[(&[("__name__", "x")], 1.0, 1)]);
        assert_eq!((st.len(), read(&st.tenants).len()), (1, 1));
        st.expire();
        assert_eq!(st.len(), 1, "not idle yet");
        std::thread::sleep(std::time::Duration::from_millis(2100));
        st.expire();
        assert_eq!(st.len(), 0);
        assert_eq!(read(&st.tenants).len(), 0, "the empty tenant is gone");
    }

    #[test]
    fn label_names_and_values_sorted() {
        let st = store(MetricsConfig::default());
        ingest(
            &st,
            "fake",
            &[
                (&[("__name__", "up"), ("job", "b")], 1.0, 1),
                (&[("__name__", "up"), ("job", "a")], 1.0, 1),
                (&[("__name__", "load"), ("zone", "z")], 1.0, 1),
            ],
        );
        assert_eq!(st.label_names("fake", &[], Window::ALL), vec!["__name__", "job", "zone"]);
        assert_eq!(st.label_values("fake", "job", &[], Window::ALL), vec!["a", "b"]);
        let up = parse_series_selector("up").unwrap();
        assert_eq!(st.label_names("fake", std::slice::from_ref(&up), Window::ALL), vec!["__name__", "job"]);
        assert_eq!(st.label_values("fake", "__name__", &[], Window::ALL), vec!["load", "up"]);
        assert!(st.label_values("fake", "zone", &[up], Window::ALL).is_empty());
    }

    #[test]
    fn fleet_series_are_written_into_the_store() {
        let st = store(MetricsConfig::default());
        ingest(&st, "fake", &[(&[("__name__", "node_load1"), ("host", "web-1")], 0.5, 1)]);
        st.record_fleet();
        let up = select(&st, "fake", "osprey_agent_up");
        assert_eq!(up.len(), 1);
        assert_eq!(up[0].labels, vec![("__name__".into(), "osprey_agent_up".into()), ("host".into(), "web-1".into())]);
        assert_eq!(up[0].value, 1.0);
        assert_eq!(select(&st, "fake", "osprey_agent_last_seen_timestamp_seconds").len(), 1);
    }
}
