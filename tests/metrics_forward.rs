//! Forwarding to a real VictoriaMetrics: what the collector accepted arrives there with the same
//! values and timestamps (1.0 and 2.0 in, 1.0 out), invalid series stay behind, and a `kill -9`
//! of the collector while the target is down loses nothing it acknowledged.

mod harness;

use harness::*;
use osprey_protocol::prompb::{self, Label, Sample, TimeSeries, WriteRequest};
use osprey_protocol::writev2::{self, RequestBuilder};
use std::collections::BTreeMap;
use std::time::Duration;

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

fn series(labels: &[(&str, &str)], samples: &[(f64, i64)]) -> TimeSeries {
    TimeSeries {
        labels: labels.iter().map(|(k, v)| Label::new(*k, *v)).collect(),
        samples: samples.iter().map(|&(value, timestamp)| Sample { value, timestamp }).collect(),
        exemplars: vec![],
    }
}

fn v1(timeseries: Vec<TimeSeries>) -> Vec<u8> {
    prompb::encode_write_request(&WriteRequest { timeseries, metadata: vec![] })
}

fn forward_config(dir: &std::path::Path, vm_port: u16) -> String {
    collector_config(
        dir,
        &format!(
            "\n[[metrics.forward]]\nname = \"vm\"\nurl = \"http://127.0.0.1:{vm_port}/api/v1/write\"\nretry_initial_backoff = \"100ms\"\nretry_max_backoff = \"500ms\"\nqueue_max_bytes = 16777216\n"
        ),
    )
}

/// VictoriaMetrics' raw samples of `matcher`: series (as `name{labels}` text) → (ts, value).
fn exported(vm: &str, matcher: &str) -> BTreeMap<String, Vec<(i64, f64)>> {
    let (code, body) = get(&format!("{vm}/api/v1/export?match[]={}", enc(matcher)));
    assert_eq!(code, 200, "{body}");
    let mut out = BTreeMap::new();
    for line in body.lines().filter(|l| !l.is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let metric = v["metric"].as_object().unwrap();
        let labels: BTreeMap<&str, &str> = metric.iter().map(|(k, v)| (k.as_str(), v.as_str().unwrap())).collect();
        let key = format!("{labels:?}");
        let values = v["values"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap());
        let stamps = v["timestamps"].as_array().unwrap().iter().map(|x| x.as_i64().unwrap());
        let mut points: Vec<(i64, f64)> = stamps.zip(values).collect();
        points.sort_by_key(|p| p.0);
        out.insert(key, points);
    }
    out
}

fn key(labels: &[(&str, &str)]) -> String {
    format!("{:?}", labels.iter().copied().collect::<BTreeMap<&str, &str>>())
}

#[test]
fn forwards_what_it_accepted_to_victoria_metrics() {
    let tmp = tempfile::tempdir().unwrap();
    let vm = victoria_metrics(tmp.path());
    let vm_port: u16 = vm.url.rsplit(':').next().unwrap().parse().unwrap();
    let (_collector, url) = start_collector(tmp.path(), &forward_config(tmp.path(), vm_port));
    let write = format!("{url}/api/v1/write");
    let t = now_ms() - 60_000;

    // 1.0, all valid: forwarded as it came, every sample (not only the newest the store keeps).
    let a = [("__name__", "fwd_a"), ("job", "t")];
    let (code, text) = post(
        &write,
        &prompb::REMOTE_WRITE_HEADERS,
        &v1(vec![series(&a, &[(1.0, t), (2.5, t + 1000), (3.0, t + 2000)])]),
    );
    assert_eq!(code, 204, "{text}");
    // 1.0 with an invalid series: the valid one is forwarded, the invalid one is not.
    let b = [("__name__", "fwd_b"), ("job", "t")];
    let (code, text) = post(
        &write,
        &prompb::REMOTE_WRITE_HEADERS,
        &v1(vec![
            series(&b, &[(-7.25, t), (1234.5, t + 500)]),
            series(&[("job", "t"), ("__name__", "fwd_unsorted")], &[(1.0, t)]),
        ]),
    );
    assert_eq!(code, 400, "{text}");
    // 2.0: converted to 1.0 on the way out.
    let c = [("__name__", "fwd_c"), ("instance", "h:9100"), ("job", "t")];
    let mut req = RequestBuilder::new();
    req.series(&c, &[(42.0, t), (43.0, t + 1000)], Some((writev2::MetricType::Counter, "C.", "")));
    let (code, text) = post(&write, &writev2::REMOTE_WRITE_HEADERS, &writev2::encode_request(&req.build()));
    assert_eq!(code, 204, "{text}");

    let want: BTreeMap<String, Vec<(i64, f64)>> = [
        (key(&a), vec![(t, 1.0), (t + 1000, 2.5), (t + 2000, 3.0)]),
        (key(&b), vec![(t, -7.25), (t + 500, 1234.5)]),
        (key(&c), vec![(t, 42.0), (t + 1000, 43.0)]),
    ]
    .into_iter()
    .collect();
    let got = eventually(Duration::from_secs(30), || {
        let got = exported(&vm.url, r#"{__name__=~"fwd_.*"}"#);
        (got == want).then_some(got)
    });
    assert!(got.is_some(), "VictoriaMetrics has {:?}, want {want:?}", exported(&vm.url, r#"{__name__=~"fwd_.*"}"#));
    let (_, m) = get(&format!("{url}/metrics"));
    assert!(m.contains(r#"osprey_metrics_forward_requests_sent_total{sink="vm"} 3"#), "{m}");
    assert!(m.contains(r#"osprey_metrics_forward_queue_records_acked_total{sink="vm"} 3"#), "{m}");
}

#[test]
fn kill_9_loses_no_acknowledged_sample() {
    let tmp = tempfile::tempdir().unwrap();
    // The target is down for now: everything acknowledged must wait in the queue on disk.
    let vm_port = free_port();
    let config = forward_config(tmp.path(), vm_port);
    let (mut collector, url) = start_collector(tmp.path(), &config);
    let t = now_ms() - 60_000;
    let batch = |first: usize, n: usize| -> Vec<u8> {
        v1((first..first + n)
            .map(|i| series(&[("__name__", "fwd_kill"), ("i", &i.to_string())], &[(i as f64, t + i as i64)]))
            .collect())
    };
    for k in 0..20 {
        let (code, text) = post(&format!("{url}/api/v1/write"), &prompb::REMOTE_WRITE_HEADERS, &batch(k * 50, 50));
        assert_eq!(code, 204, "{text}");
    }
    collector.kill9();

    // Restarted on the same data directory; more writes; then the target comes up.
    let (_collector, url) = start_collector(tmp.path(), &config);
    for k in 20..30 {
        let (code, text) = post(&format!("{url}/api/v1/write"), &prompb::REMOTE_WRITE_HEADERS, &batch(k * 50, 50));
        assert_eq!(code, 204, "{text}");
    }
    let vm = victoria_metrics_on(tmp.path(), vm_port);
    let all = eventually(Duration::from_secs(60), || {
        let got = exported(&vm.url, r#"{__name__="fwd_kill"}"#);
        (got.len() == 1500).then_some(got)
    });
    let got = all.unwrap_or_else(|| exported(&vm.url, r#"{__name__="fwd_kill"}"#));
    assert_eq!(got.len(), 1500, "every acknowledged series arrived");
    for i in 0..1500usize {
        let points = &got[&key(&[("__name__", "fwd_kill"), ("i", &i.to_string())])];
        assert_eq!(points, &vec![(t + i as i64, i as f64)], "series {i}");
    }
}
