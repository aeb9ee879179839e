//! Inputs shared by Osprey's benches: realistic log lines and metric series.
//!
//! Log lines come from the Loghub samples in `testdata/loghub/` (real system logs; see the
//! LICENSE there), so compression and parsing costs are those of real text, not of repeated
//! synthetic strings.

pub mod ack_receiver;

use osprey_protocol::logproto::{EntryAdapter, PushRequest, StreamAdapter, Timestamp};
use osprey_protocol::prompb::{Label, Sample, TimeSeries, WriteRequest};
use osprey_protocol::writev2;
use std::path::PathBuf;

/// The repository's `testdata/loghub` directory.
pub fn loghub_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata/loghub")
}

/// Every line of every Loghub sample, CR stripped, in file order.
pub fn loghub_lines() -> Vec<String> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(loghub_dir())
        .map(|d| d.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "log")).collect())
        .unwrap_or_default();
    names.sort();
    let mut out = Vec::new();
    for p in names {
        let bytes = std::fs::read(&p).unwrap_or_default();
        for line in String::from_utf8_lossy(&bytes).lines() {
            out.push(line.trim_end_matches('\r').to_string());
        }
    }
    out
}

/// A push request of about `target_bytes` of line text, spread over 10 streams as an agent
/// tailing 10 files would send it.
pub fn push_request(target_bytes: usize) -> PushRequest {
    let lines = loghub_lines();
    let mut streams: Vec<StreamAdapter> = (0..10)
        .map(|i| StreamAdapter {
            labels: format!(r#"{{filename="/var/log/app{i}.log", host="bench-host", job="varlogs"}}"#),
            entries: vec![],
            hash: 0,
        })
        .collect();
    let mut bytes = 0;
    let mut i = 0usize;
    while bytes < target_bytes && !lines.is_empty() {
        let line = &lines[i % lines.len()];
        bytes += line.len();
        streams[i % 10].entries.push(EntryAdapter {
            timestamp: Some(Timestamp::from_unix_nanos(1_700_000_000_000_000_000 + i as i64)),
            line: line.clone(),
            structured_metadata: vec![],
        });
        i += 1;
    }
    PushRequest { streams }
}

/// A remote_write request of `n` node_exporter-like series with one sample each.
pub fn write_request(n: usize) -> WriteRequest {
    let timeseries = (0..n)
        .map(|i| TimeSeries {
            labels: vec![
                Label::new("__name__", format!("node_metric_{}", i % 500)),
                Label::new("cpu", (i / 500 % 64).to_string()),
                Label::new("host", format!("host-{}", i / 32_000)),
                Label::new("job", "node"),
                Label::new("mode", ["user", "system", "idle", "iowait"][i % 4]),
            ],
            samples: vec![Sample { value: i as f64 * 1.5, timestamp: 1_700_000_000_000 }],
            exemplars: vec![],
        })
        .collect();
    WriteRequest { timeseries, metadata: vec![] }
}

/// The same series as [`write_request`], as a remote_write 2.0 request.
pub fn write_request_v2(n: usize) -> writev2::Request {
    let mut b = writev2::RequestBuilder::new();
    for ts in write_request(n).timeseries {
        let labels: Vec<(&str, &str)> = ts.labels.iter().map(|l| (l.name.as_str(), l.value.as_str())).collect();
        let samples: Vec<(f64, i64)> = ts.samples.iter().map(|s| (s.value, s.timestamp)).collect();
        b.series(&labels, &samples, None);
    }
    b.build()
}

/// An empty series store with default limits (one million series), as the collector makes it.
pub fn metrics_store() -> osprey_collector::metrics::MetricsStore {
    let mut registry = prometheus_client::registry::Registry::default();
    let telemetry = osprey_collector::telemetry::Telemetry::new(&mut registry);
    let cfg = osprey_config::collector::Metrics {
        max_series: 2_000_000,
        max_series_per_tenant: 2_000_000,
        ..Default::default()
    };
    osprey_collector::metrics::MetricsStore::new(&cfg, "fake", telemetry, &mut registry)
}

/// The labels of series `i` of a fleet: 500 metrics per host, `n / 500` hosts. Unique for
/// every `i`; the cardinality of a real fleet (few names, one `host`/`instance` per 500 series).
pub fn fleet_labels(i: usize) -> Vec<(String, String)> {
    let host = i / 500;
    vec![
        ("__name__".into(), format!("node_metric_{}", i % 500)),
        ("host".into(), format!("host-{host}")),
        ("instance".into(), format!("10.{}.{}.{}:9100", host >> 16 & 255, host >> 8 & 255, host & 255)),
        ("job".into(), "node".into()),
        ("mode".into(), ["user", "system", "idle", "iowait"][i % 4].into()),
    ]
}

/// Series `start..start + n` of [`fleet_labels`], one sample each at `timestamp_ms`.
pub fn fleet_request(start: usize, n: usize, timestamp_ms: i64) -> WriteRequest {
    let timeseries = (start..start + n)
        .map(|i| TimeSeries {
            labels: fleet_labels(i).into_iter().map(|(k, v)| Label::new(k, v)).collect(),
            samples: vec![Sample { value: i as f64, timestamp: timestamp_ms }],
            exemplars: vec![],
        })
        .collect();
    WriteRequest { timeseries, metadata: vec![] }
}

/// A real node_exporter 1.5 `/metrics` body (1071 lines), captured on the project's machine.
pub fn node_exporter_body() -> Vec<u8> {
    std::fs::read(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata/exposition/node_exporter-1.5.prom"))
        .unwrap_or_default()
}

/// A 20,000-series exposition body shaped like a busy application's: 100 families of 200
/// series, 3-4 labels each, HELP and TYPE per family; OpenMetrics adds `_total` and `# EOF`.
pub fn exposition_20k(openmetrics: bool) -> Vec<u8> {
    use std::fmt::Write;
    let mut s = String::with_capacity(2 << 20);
    for f in 0..100 {
        let name = format!("app_http_server_requests_{f}");
        let sample = if openmetrics { format!("{name}_total") } else { name.clone() };
        let _ = writeln!(s, "# HELP {name} Requests handled by the HTTP server, by route and status.");
        let _ = writeln!(s, "# TYPE {name} counter");
        for i in 0..200 {
            let _ = writeln!(
                s,
                "{sample}{{method=\"{}\",route=\"/api/v1/items/{}\",status=\"{}\",instance=\"pod-{}\"}} {}",
                ["GET", "POST", "PUT", "DELETE"][i % 4],
                i / 4,
                [200, 404, 500][i % 3],
                i % 7,
                (f * 1000 + i) as f64 * 1.25
            );
        }
    }
    if openmetrics {
        s.push_str("# EOF\n");
    }
    s.into_bytes()
}
