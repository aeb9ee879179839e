//! The agent delivers through receiver trouble: 5xx and 429 are retried with backoff until
//! accepted, a refused batch (400) is dropped and counted, and a receiver that is not up yet is
//! waited for.

mod harness;

use harness::*;
use osprey_protocol::logproto::decode_push_request;
use std::io::Write;
use std::time::Duration;

fn agent_config(dir: &std::path::Path, logs_url: &str, include: &str) -> String {
    format!(
        r#"data_dir = "{data}"
hostname = "delivery-test"

[server]
listen = "127.0.0.1:0"

[collector]
url = "http://127.0.0.1:9"
logs_url = "{logs_url}"
batch_max_wait = "100ms"
retry_initial_backoff = "50ms"
retry_max_backoff = "200ms"

[[sources.files]]
include = ["{include}"]
read_from = "beginning"

[host_metrics]
enabled = false
"#,
        data = dir.join("agent-data").display()
    )
}

fn delivered_lines(capture: &CaptureServer, statuses_before: usize) -> Vec<String> {
    let reqs = capture.requests.lock().unwrap();
    reqs.iter()
        .skip(statuses_before)
        .flat_map(|(_, body)| decode_push_request(body, 64 << 20).expect("agent sends valid pushes").streams)
        .flat_map(|s| s.entries.into_iter().map(|e| e.line))
        .collect()
}

#[test]
fn retries_5xx_and_429_until_delivered() {
    let tmp = tempfile::tempdir().unwrap();
    let capture = CaptureServer::start(vec![503, 500, 429]);
    let log = tmp.path().join("app.log");
    let mut f = std::fs::File::create(&log).unwrap();
    for i in 0..20 {
        writeln!(f, "retry line {i}").unwrap();
    }
    drop(f);
    let (_agent, agent_url) = start_agent(
        tmp.path(),
        &agent_config(tmp.path(), &capture.url("/loki/api/v1/push"), &log.display().to_string()),
    );
    // The first three answers are errors for the same batch; the fourth request delivers it.
    let lines = eventually(Duration::from_secs(20), || {
        let l = delivered_lines(&capture, 3);
        (l.len() >= 20).then_some(l)
    })
    .expect("delivered after retries");
    assert_eq!(lines, (0..20).map(|i| format!("retry line {i}")).collect::<Vec<_>>());
    let reqs = capture.requests.lock().unwrap();
    let first = decode_push_request(&reqs[0].1, 64 << 20).unwrap();
    let fourth = decode_push_request(&reqs[3].1, 64 << 20).unwrap();
    assert_eq!(first, fourth, "the refused batch is sent again unchanged");
    assert_eq!(reqs[0].0.get("content-type").map(String::as_str), Some("application/x-protobuf"));
    assert_eq!(reqs[0].0.get("content-encoding").map(String::as_str), Some("snappy"));
    drop(reqs);
    let (_, metrics) = get(&format!("{agent_url}/metrics"));
    assert!(metrics.contains(r#"osprey_agent_batches_retried_total{sink="loki"} 3"#), "{metrics}");
    assert!(metrics.contains(r#"osprey_agent_batches_sent_total{sink="loki"} 1"#), "{metrics}");
}

/// Wrong credentials are the operator's to fix, not the data's fault: the batch is kept and
/// retried, so nothing written meanwhile is lost.
#[test]
fn a_401_or_403_is_retried_not_dropped() {
    let tmp = tempfile::tempdir().unwrap();
    let capture = CaptureServer::start(vec![401, 403]);
    let log = tmp.path().join("app.log");
    std::fs::write(&log, "kept through a bad token\n").unwrap();
    let (_agent, agent_url) = start_agent(
        tmp.path(),
        &agent_config(tmp.path(), &capture.url("/loki/api/v1/push"), &log.display().to_string()),
    );
    let lines = eventually(Duration::from_secs(20), || {
        let l = delivered_lines(&capture, 2);
        (!l.is_empty()).then_some(l)
    })
    .expect("delivered once the receiver accepts the credentials");
    assert_eq!(lines, vec!["kept through a bad token"]);
    let (_, metrics) = get(&format!("{agent_url}/metrics"));
    assert!(metrics.contains(r#"osprey_agent_batches_retried_total{sink="loki"} 2"#), "{metrics}");
    assert!(!metrics.contains(r#"osprey_agent_batches_dropped_total{sink="loki"} 1"#), "{metrics}");
    let log = std::fs::read_to_string(tmp.path().join("agent.log")).unwrap_or_default();
    assert!(log.contains("credentials refused") && log.contains("collector.token_file"), "{log}");
}

#[test]
fn a_400_is_dropped_and_counted_not_retried() {
    let tmp = tempfile::tempdir().unwrap();
    let capture = CaptureServer::start(vec![400]);
    let log = tmp.path().join("app.log");
    std::fs::write(&log, "refused line\n").unwrap();
    let (_agent, agent_url) = start_agent(
        tmp.path(),
        &agent_config(tmp.path(), &capture.url("/loki/api/v1/push"), &log.display().to_string()),
    );
    let metrics = eventually(Duration::from_secs(20), || {
        let (_, m) = get(&format!("{agent_url}/metrics"));
        m.contains(r#"osprey_agent_batches_dropped_total{sink="loki"} 1"#).then_some(m)
    })
    .expect("the refused batch is counted as dropped");
    assert!(!metrics.contains(r#"osprey_agent_batches_retried_total{sink="loki"}"#), "{metrics}");
    // New lines still flow after the drop.
    let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    writeln!(f, "accepted line").unwrap();
    let lines = eventually(Duration::from_secs(20), || {
        let l = delivered_lines(&capture, 1);
        (!l.is_empty()).then_some(l)
    })
    .expect("later batch delivered");
    assert_eq!(lines, vec!["accepted line"]);
    assert_eq!(capture.requests.lock().unwrap().len(), 2, "the 400 batch was not sent again");
}

#[test]
fn waits_for_a_collector_that_is_not_up_yet() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let log = tmp.path().join("app.log");
    std::fs::write(&log, "sent before the collector existed\n").unwrap();
    let url = format!("http://127.0.0.1:{port}/loki/api/v1/push");
    let (_agent, agent_url) = start_agent(tmp.path(), &agent_config(tmp.path(), &url, &log.display().to_string()));
    eventually(Duration::from_secs(20), || {
        let (_, m) = get(&format!("{agent_url}/metrics"));
        m.contains(r#"osprey_agent_batches_retried_total{sink="loki"}"#).then_some(())
    })
    .expect("connection errors are retried");
    let collector_dir = tmp.path().join("c");
    std::fs::create_dir_all(&collector_dir).unwrap();
    let config = collector_config(&collector_dir, "").replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
    let (_collector, curl) = start_collector(&collector_dir, &config);
    let found = eventually(Duration::from_secs(20), || {
        let (_, out, _) = osprey(&["query", "--addr", &curl, r#"{host="delivery-test"}"#]);
        out.contains("sent before the collector existed").then_some(())
    });
    assert!(found.is_some(), "line delivered once the collector came up");
}
