//! Per-tenant limits that the stores do not already enforce: ingest rates and query
//! concurrency (`[limits]`, with `[limits.tenants.<name>]` overrides).
//!
//! Rates are token buckets (Loki's and Mimir's local rate limiters): a tenant may send `rate`
//! units per second on average and `burst` at once. A request that does not fit is refused
//! whole with 429 and the reason, nothing of it stored, and counted in
//! `osprey_tenant_limit_refusals_total{tenant, limit}` and
//! `osprey_rejected_requests_total{endpoint, reason="rate_limited"}`. Query concurrency is a semaphore per tenant held for the whole
//! request; a request finding none free gets 429 at once (queueing is what
//! `logs.max_concurrent_queries` does over all tenants).
//!
//! Stream and series limits live in the stores (`LogStore::set_stream_limits`,
//! `MetricsStore::set_series_limits`); [`TenantLimiter::store_overrides`] derives them from the
//! same config.
//!
//! Memory: one bucket per tenant that sent something recently and one semaphore per tenant with
//! a query running; idle entries are dropped when the maps pass [`PRUNE_AT`] (a full bucket is
//! the same as a new one). The refusal counter keeps at most [`MAX_LABELLED_TENANTS`] tenant
//! label values; later tenants are counted as `tenant="other"`.

use osprey_config::CollectorConfig;
use osprey_config::collector::EffectiveLimits;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Instant;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Entries kept before idle ones are pruned.
pub const PRUNE_AT: usize = 10_000;
/// Distinct `tenant` label values of the refusal counter.
pub const MAX_LABELLED_TENANTS: usize = 1000;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabels {
    pub tenant: String,
    pub limit: &'static str,
}

struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    /// Takes `n` if they fit, refilling at `rate` up to `burst` first.
    fn take(&mut self, n: u64, rate: u64, burst: u64, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate as f64).min(burst as f64);
        self.last = now;
        if n as f64 <= self.tokens {
            self.tokens -= n as f64;
            true
        } else {
            false
        }
    }

    fn full(&self, rate: u64, burst: u64, now: Instant) -> bool {
        self.tokens + now.saturating_duration_since(self.last).as_secs_f64() * rate as f64 >= burst as f64
    }
}

/// The limiter of one collector. Config swapped by [`TenantLimiter::reload`].
pub struct TenantLimiter {
    cfg: RwLock<Arc<CollectorConfig>>,
    log_buckets: Mutex<HashMap<String, Bucket>>,
    sample_buckets: Mutex<HashMap<String, Bucket>>,
    queries: Mutex<HashMap<String, Arc<Semaphore>>>,
    refused: Family<LimitLabels, Counter>,
    labelled: Mutex<HashSet<String>>,
}

impl TenantLimiter {
    pub fn new(cfg: &CollectorConfig, registry: &mut prometheus_client::registry::Registry) -> TenantLimiter {
        let refused = Family::<LimitLabels, Counter>::default();
        registry.sub_registry_with_prefix("osprey").register(
            "tenant_limit_refusals",
            "Requests refused by a per-tenant limit ([limits]): log_bytes_rate, samples_rate, query_concurrency",
            refused.clone(),
        );
        TenantLimiter {
            cfg: RwLock::new(Arc::new(cfg.clone())),
            log_buckets: Mutex::default(),
            sample_buckets: Mutex::default(),
            queries: Mutex::default(),
            refused,
            labelled: Mutex::default(),
        }
    }

    /// Applies new limits. Buckets keep their level (capped by the new burst at the next
    /// request); queries already running keep the slot they hold, new ones see the new bound.
    pub fn reload(&self, cfg: &CollectorConfig) {
        *self.cfg.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(cfg.clone());
        self.queries.lock().unwrap_or_else(PoisonError::into_inner).clear();
    }

    fn config(&self) -> Arc<CollectorConfig> {
        self.cfg.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn count(&self, tenant: &str, limit: &'static str) {
        let mut seen = self.labelled.lock().unwrap_or_else(PoisonError::into_inner);
        let tenant = if seen.contains(tenant) || seen.len() < MAX_LABELLED_TENANTS {
            seen.insert(tenant.to_string());
            tenant.to_string()
        } else {
            "other".to_string()
        };
        self.refused.get_or_create(&LimitLabels { tenant, limit }).inc();
    }

    /// Takes `n` from `tenant`'s bucket; `rate_of` picks (rate, burst) from a tenant's limits.
    fn take(
        &self,
        cfg: &CollectorConfig,
        buckets: &Mutex<HashMap<String, Bucket>>,
        tenant: &str,
        n: u64,
        rate_of: fn(&EffectiveLimits) -> (u64, u64),
    ) -> bool {
        let now = Instant::now();
        let (rate, burst) = rate_of(&cfg.limits_for(tenant));
        let mut map = buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= PRUNE_AT && !map.contains_key(tenant) {
            map.retain(|name, b| {
                let (rate, burst) = rate_of(&cfg.limits_for(name));
                !b.full(rate, burst, now)
            });
        }
        map.entry(tenant.to_string()).or_insert(Bucket { tokens: burst as f64, last: now }).take(n, rate, burst, now)
    }

    /// Charges a push of `bytes` line bytes in `lines` lines; `Err` is the 429 message
    /// (Loki's wording, plus the key to change).
    pub fn check_log_bytes(&self, tenant: &str, bytes: u64, lines: u64) -> Result<(), String> {
        let cfg = self.config();
        let l = cfg.limits_for(tenant);
        if l.log_bytes_per_second == 0 {
            return Ok(());
        }
        if self.take(&cfg, &self.log_buckets, tenant, bytes, |l| (l.log_bytes_per_second, l.log_burst_bytes)) {
            return Ok(());
        }
        self.count(tenant, "log_bytes_rate");
        let never = if bytes > l.log_burst_bytes {
            format!(" This request is larger than the whole burst ({} bytes): send smaller batches.", l.log_burst_bytes)
        } else {
            String::new()
        };
        Err(format!(
            "Ingestion rate limit exceeded for user {tenant} (limit: {} bytes/sec) while attempting to ingest '{lines}' lines totaling '{bytes}' bytes, reduce log volume or ask the operator to raise limits.log_bytes_per_second / limits.log_burst_bytes.{never}",
            l.log_bytes_per_second
        ))
    }

    /// Charges a write of `samples` samples; `Err` is the 429 message.
    pub fn check_samples(&self, tenant: &str, samples: u64) -> Result<(), String> {
        let cfg = self.config();
        let l = cfg.limits_for(tenant);
        if l.samples_per_second == 0 || samples == 0 {
            return Ok(());
        }
        if self.take(&cfg, &self.sample_buckets, tenant, samples, |l| (l.samples_per_second, l.sample_burst)) {
            return Ok(());
        }
        self.count(tenant, "samples_rate");
        Err(format!(
            "the request has been rejected because the tenant {tenant:?} exceeded the ingestion rate limit, set to {} samples/s with a maximum allowed burst of {} (limits.samples_per_second, limits.sample_burst), while adding {samples} samples",
            l.samples_per_second, l.sample_burst
        ))
    }

    /// A query slot of `tenant`, held by the caller for the whole request; `None` when the
    /// tenant has no bound. `Err` is the 429 message.
    pub fn query_permit(&self, tenant: &str) -> Result<Option<OwnedSemaphorePermit>, String> {
        let max = self.config().limits_for(tenant).max_concurrent_queries;
        if max == 0 {
            return Ok(None);
        }
        let sem = {
            let mut map = self.queries.lock().unwrap_or_else(PoisonError::into_inner);
            if map.len() >= PRUNE_AT && !map.contains_key(tenant) {
                map.retain(|_, s| Arc::strong_count(s) > 1 || s.available_permits() < max);
            }
            map.entry(tenant.to_string()).or_insert_with(|| Arc::new(Semaphore::new(max))).clone()
        };
        match sem.try_acquire_owned() {
            Ok(p) => Ok(Some(p)),
            Err(_) => {
                self.count(tenant, "query_concurrency");
                Err(format!(
                    "too many concurrent queries for tenant {tenant:?}: {max} are running (limits.max_concurrent_queries); retry when one finished"
                ))
            }
        }
    }

    /// Per-tenant stream and series limits that differ from the stores' defaults.
    pub fn store_overrides(cfg: &CollectorConfig) -> (HashMap<String, usize>, HashMap<String, usize>) {
        let mut streams = HashMap::new();
        let mut series = HashMap::new();
        for (name, t) in &cfg.limits.tenants {
            if let Some(s) = t.max_streams {
                streams.insert(name.clone(), s);
            }
            if let Some(s) = t.max_series {
                series.insert(name.clone(), s);
            }
        }
        (streams, series)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use osprey_config::collector::TenantLimits;

    fn limiter(f: impl FnOnce(&mut CollectorConfig)) -> TenantLimiter {
        let mut cfg = CollectorConfig::default();
        f(&mut cfg);
        TenantLimiter::new(&cfg, &mut prometheus_client::registry::Registry::default())
    }

    #[test]
    fn log_rate_refuses_beyond_the_burst_per_tenant() {
        let l = limiter(|c| {
            c.limits.log_bytes_per_second = 1000;
            c.limits.log_burst_bytes = 5000;
            c.limits.tenants.insert("big".into(), TenantLimits { log_bytes_per_second: Some(0), ..Default::default() });
        });
        assert!(l.check_log_bytes("a", 3000, 1).is_ok());
        assert!(l.check_log_bytes("a", 1900, 1).is_ok());
        let e = l.check_log_bytes("a", 1000, 1).unwrap_err();
        assert!(e.contains("limit: 1000 bytes/sec") && e.contains("limits.log_bytes_per_second"), "{e}");
        // Another tenant has its own bucket; an override of 0 turns the limit off.
        assert!(l.check_log_bytes("b", 5000, 1).is_ok());
        assert!(l.check_log_bytes("big", 1 << 30, 1).is_ok());
        let e = l.check_log_bytes("c", 6000, 1).unwrap_err();
        assert!(e.contains("larger than the whole burst"), "{e}");
    }

    #[test]
    fn query_slots_per_tenant() {
        let l = limiter(|c| c.limits.max_concurrent_queries = 2);
        let a1 = l.query_permit("a").unwrap();
        let _a2 = l.query_permit("a").unwrap();
        assert!(l.query_permit("a").unwrap_err().contains("limits.max_concurrent_queries"));
        assert!(l.query_permit("b").unwrap().is_some());
        drop(a1);
        assert!(l.query_permit("a").is_ok());
        let off = limiter(|_| {});
        assert!(off.query_permit("a").unwrap().is_none());
    }
}
