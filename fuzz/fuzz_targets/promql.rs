#![no_main]
//! PromQL-subset queries, as the `query` parameter of `/api/v1/query` arrives: parsed, and
//! when they parse, evaluated against a small series store.
use libfuzzer_sys::fuzz_target;
use osprey_collector::metrics::MetricsStore;
use osprey_collector::promql;
use osprey_protocol::prompb::{Label, Sample, TimeSeries, WriteRequest};
use prost::Message;
use std::sync::OnceLock;

fn store() -> &'static MetricsStore {
    static STORE: OnceLock<MetricsStore> = OnceLock::new();
    STORE.get_or_init(|| {
        let mut registry = prometheus_client::registry::Registry::default();
        let telemetry = osprey_collector::telemetry::Telemetry::new(&mut registry);
        let cfg = osprey_config::collector::Metrics::default();
        let store = MetricsStore::new(&cfg, "fake", telemetry, &mut registry);
        let series = |labels: &[(&str, &str)], value: f64| TimeSeries {
            labels: labels.iter().map(|(k, v)| Label::new(*k, *v)).collect(),
            samples: vec![Sample { value, timestamp: 1_000 }],
            exemplars: vec![],
        };
        let req = WriteRequest {
            timeseries: vec![
                series(&[("__name__", "up"), ("instance", "a"), ("job", "node")], 1.0),
                series(&[("__name__", "up"), ("instance", "b"), ("job", "node")], 0.0),
                series(&[("__name__", "x"), ("job", "api"), ("mode", "idle")], f64::NAN),
                series(&[("__name__", "x"), ("job", "api"), ("mode", "user")], f64::INFINITY),
            ],
            metadata: vec![],
        }
        .encode_to_vec();
        if let Ok(view) = osprey_protocol::remote_write::decode_v1(&req) {
            store.ingest("fake", &view);
        }
        store
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(q) = std::str::from_utf8(data) else { return };
    if let Ok(expr) = promql::parse(q) {
        let cx = promql::Context { store: store(), tenant: "fake", time_ms: 2_000, lookback_ms: 300_000 };
        let _ = promql::eval(&expr, &cx);
    }
});
