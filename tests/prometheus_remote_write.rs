//! A real Prometheus (Debian's) remote_writes to us: its bytes decode with our message structs,
//! carry the spec's headers, and land on the collector's `/federate`.

mod harness;

use harness::*;
use osprey_protocol::prompb;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Starts Debian's Prometheus scraping itself every second and remote_writing to `write_url`.
fn start_prometheus(dir: &Path, write_url: &str) -> Proc {
    let port = free_port();
    let config = format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: prometheus\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\nremote_write:\n  - url: {write_url}\n    queue_config:\n      batch_send_deadline: 1s\n      max_samples_per_send: 200\n"
    );
    std::fs::write(dir.join("prometheus.yml"), config).unwrap();
    let mut cmd = Command::new(peer_bin("prometheus"));
    cmd.arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("tsdb").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--log.level=warn");
    let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
    cmd.stdout(log.try_clone().unwrap()).stderr(log);
    Proc { child: cmd.spawn().expect("start prometheus"), name: "prometheus".into(), stdout: None }
}

#[test]
fn real_prometheus_remote_write_decodes() {
    let tmp = tempfile::tempdir().unwrap();
    let capture = CaptureServer::start(vec![]);
    let (port, seen) = (capture.port, capture.requests.clone());
    let _prom = start_prometheus(tmp.path(), &format!("http://127.0.0.1:{port}/api/v1/write"));
    let (headers, req) = eventually(Duration::from_secs(60), || {
        let seen = seen.lock().unwrap();
        seen.iter().find_map(|(h, body)| {
            let req = prompb::decode_write_request(body, 64 << 20).expect("Prometheus' body decodes");
            let has_up =
                req.timeseries.iter().any(|ts| ts.labels.iter().any(|l| l.name == "__name__" && l.value == "up"));
            has_up.then(|| (h.clone(), req))
        })
    })
    .expect("Prometheus sent a remote_write request with `up` within 60 s");
    assert_eq!(headers.get("content-encoding").map(String::as_str), Some("snappy"));
    assert_eq!(headers.get("content-type").map(String::as_str), Some("application/x-protobuf"));
    assert_eq!(headers.get("x-prometheus-remote-write-version").map(String::as_str), Some("0.1.0"));
    let up =
        req.timeseries.iter().find(|ts| ts.labels.iter().any(|l| l.name == "__name__" && l.value == "up")).unwrap();
    let names: Vec<&str> = up.labels.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, vec!["__name__", "instance", "job"], "labels arrive sorted");
    assert_eq!(up.samples[0].value, 1.0);
    assert!(up.samples[0].timestamp > 1_600_000_000_000, "millisecond timestamps");
}

#[test]
fn real_prometheus_writes_into_the_collector() {
    let tmp = tempfile::tempdir().unwrap();
    let (_collector, url) = start_collector(tmp.path(), &collector_config(tmp.path(), ""));
    let _prom = start_prometheus(tmp.path(), &format!("{url}/api/v1/write"));
    let body = eventually(Duration::from_secs(60), || {
        let (code, body) = get(&format!("{url}/federate?match[]=up%7Bjob%3D%22prometheus%22%7D"));
        (code == 200 && body.contains("up{")).then_some(body)
    })
    .expect("up{job=\"prometheus\"} on /federate within 60 s");
    let line = body.lines().find(|l| l.starts_with("up{")).unwrap();
    assert!(line.contains(r#"job="prometheus""#) && line.contains(" 1 "), "{line}");
    let (_, metrics) = get(&format!("{url}/metrics"));
    assert!(!metrics.contains("osprey_ingested_samples_total 0\n"), "samples counted");
}
