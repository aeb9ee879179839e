//! Self metrics of the metrics side, registered next to the collector's shared ones
//! ([`crate::telemetry`]), plus the fleet liveness families, which are computed at scrape time.

use super::fleet::{Fleet, now_ms};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    pub version: &'static str,
    pub status: u16,
}

#[derive(Clone)]
pub struct MetricsTelemetry {
    pub rejected_samples: Family<RejectLabels, Counter>,
    pub write_requests: Family<WriteLabels, Counter>,
    pub series_created: Counter,
    pub series_stale: Counter,
    pub exemplars_ignored: Counter,
    pub metadata_dropped: Counter,
    pub agents_untracked: Counter,
    pub tenants: Gauge,
    pub symbols: Gauge,
    pub index_bytes: Gauge<u64, AtomicU64>,
}

impl MetricsTelemetry {
    pub fn new(registry: &mut Registry, fleet: Arc<Fleet>, default_tenant: String) -> Self {
        let t = MetricsTelemetry {
            rejected_samples: Family::default(),
            write_requests: Family::default(),
            series_created: Counter::default(),
            series_stale: Counter::default(),
            exemplars_ignored: Counter::default(),
            metadata_dropped: Counter::default(),
            agents_untracked: Counter::default(),
            tenants: Gauge::default(),
            symbols: Gauge::default(),
            index_bytes: Gauge::default(),
        };
        let r = registry.sub_registry_with_prefix("osprey");
        r.register(
            "metrics_rejected_samples",
            "Samples refused at remote_write ingest, by reason",
            t.rejected_samples.clone(),
        );
        r.register(
            "remote_write_requests",
            "remote_write requests answered, by protocol version and HTTP status",
            t.write_requests.clone(),
        );
        r.register("metrics_series_created", "Metric series created", t.series_created.clone());
        r.register(
            "metrics_series_stale",
            "Metric series ended by a stale marker (NaN 0x7ff0000000000002)",
            t.series_stale.clone(),
        );
        r.register(
            "metrics_exemplars_ignored",
            "Exemplars received and not stored (the series store keeps float samples only)",
            t.exemplars_ignored.clone(),
        );
        r.register(
            "metrics_metadata_dropped",
            "Metric family metadata not kept because a tenant holds metrics.max_metadata_families",
            t.metadata_dropped.clone(),
        );
        r.register(
            "agents_untracked",
            "Writes from agents not tracked for liveness because metrics.max_agents are tracked",
            t.agents_untracked.clone(),
        );
        r.register("metrics_tenants", "Tenants holding metric series", t.tenants.clone());
        r.register(
            "metrics_symbols",
            "Distinct label names and values interned by the series store",
            t.symbols.clone(),
        );
        r.register(
            "metrics_index_bytes",
            "Estimated heap bytes of the series store: series, symbols, hash tables and postings",
            t.index_bytes.clone(),
        );
        registry.register_collector(Box::new(FleetCollector { fleet, default_tenant }));
        t
    }

    pub fn reject(&self, reason: &'static str, samples: u64) {
        self.rejected_samples.get_or_create(&RejectLabels { reason }).inc_by(samples);
    }
}

/// `osprey_agent_up` and `osprey_agent_last_seen_timestamp_seconds`, from the fleet at scrape
/// time (so a host turns 0 even when nothing else happens).
#[derive(Debug)]
struct FleetCollector {
    fleet: Arc<Fleet>,
    /// Agents of the default tenant carry no `tenant` label; others do.
    default_tenant: String,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet").field("label", &self.label).finish_non_exhaustive()
    }
}

impl Collector for FleetCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        if !self.fleet.enabled() {
            return Ok(());
        }
        let states = self.fleet.states(now_ms());
        let label_sets: Vec<Vec<(&str, &str)>> = states
            .iter()
            .map(|s| {
                let mut l = vec![(self.fleet.label.as_str(), s.host.as_str())];
                if s.tenant != self.default_tenant {
                    l.push(("tenant", s.tenant.as_str()));
                }
                l
            })
            .collect();
        {
            let mut family = encoder.encode_descriptor(
                "osprey_agent_up",
                "1 when the agent has written metrics within metrics.agent_down_after, else 0",
                None,
                MetricType::Gauge,
            )?;
            for (s, labels) in states.iter().zip(&label_sets) {
                ConstGauge::new(i64::from(s.up)).encode(family.encode_family(labels)?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "osprey_agent_last_seen_timestamp_seconds",
            "Unix time of the agent's last metrics write",
            None,
            MetricType::Gauge,
        )?;
        for (s, labels) in states.iter().zip(&label_sets) {
            ConstGauge::new(s.last_seen).encode(family.encode_family(labels)?)?;
        }
        Ok(())
    }
}
