//! Forwarding: a collector forwards every accepted push to another Loki-compatible receiver
//! (here a second collector) through a durable queue. The receiver is down while lines are
//! pushed and the forwarder is killed with SIGKILL in between; when the receiver comes up, every
//! acknowledged line arrives, with the tenant it was pushed with.

mod harness;

use harness::*;
use osprey_protocol::logproto::{EntryAdapter, PushRequest, StreamAdapter, Timestamp, encode_push_request};
use std::time::Duration;

const BASE: i64 = 1_700_000_000_000_000_000;

fn body(batch: usize) -> Vec<u8> {
    encode_push_request(&PushRequest {
        streams: vec![StreamAdapter {
            labels: r#"{job="fwd"}"#.into(),
            entries: (0..20)
                .map(|i| EntryAdapter {
                    timestamp: Some(Timestamp::from_unix_nanos(BASE + (batch * 20 + i) as i64)),
                    line: format!("forwarded batch {batch} line {i}"),
                    structured_metadata: vec![],
                })
                .collect(),
            hash: 0,
        }],
    })
}

#[test]
fn forwarding_survives_a_down_receiver_and_kill_9() {
    let tmp = tempfile::tempdir().unwrap();
    let (a_dir, b_dir) = (tmp.path().join("a"), tmp.path().join("b"));
    std::fs::create_dir_all(&a_dir).unwrap();
    std::fs::create_dir_all(&b_dir).unwrap();
    let b_port = free_port();
    let a_config = collector_config(
        &a_dir,
        &format!(
            "\n[[logs.forward]]\nname = \"b\"\nurl = \"http://127.0.0.1:{b_port}/loki/api/v1/push\"\nretry_initial_backoff = \"50ms\"\nretry_max_backoff = \"200ms\"\n"
        ),
    );
    let headers =
        [("content-type", "application/x-protobuf"), ("content-encoding", "snappy"), ("x-scope-orgid", "team-x")];
    let mut acked = 0;
    for round in 0..2 {
        let (mut a, url) = start_collector(&a_dir, &a_config);
        for b in 0..10 {
            let (code, text) = post(&format!("{url}/loki/api/v1/push"), &headers, &body(round * 10 + b));
            assert_eq!(code, 204, "{text}");
            acked += 20;
        }
        if round == 0 {
            let (_, m) = get(&format!("{url}/metrics"));
            assert!(m.contains("osprey_logs_forward_queue_records_pushed_total{target=\"b\"}"), "{m}");
        }
        a.kill9();
    }
    // The receiver comes up on the port the forwarder has been retrying; the forwarder restarts.
    let b_config = format!(
        "data_dir = {:?}\n\n[server]\nlisten = \"127.0.0.1:{b_port}\"\n",
        b_dir.join("data").display().to_string()
    );
    let (_b, b_url) = start_collector(&b_dir, &b_config);
    let (_a, _) = start_collector(&a_dir, &a_config);
    let query = format!(
        "{b_url}/loki/api/v1/query_range?query=%7Bjob%3D%22fwd%22%7D&start={}&end={}&limit=5000&direction=forward",
        BASE,
        BASE + 1_000_000
    );
    let lines = eventually(Duration::from_secs(30), || {
        let req = ureq_get_with_tenant(&query, "team-x");
        let v: serde_json::Value = serde_json::from_str(&req).ok()?;
        let values: Vec<String> = v["data"]["result"]
            .as_array()?
            .iter()
            .flat_map(|s| s["values"].as_array().cloned().unwrap_or_default())
            .filter_map(|v| v[1].as_str().map(str::to_string))
            .collect();
        let distinct: std::collections::BTreeSet<&String> = values.iter().collect();
        (distinct.len() == acked).then_some(values)
    });
    let lines = lines.expect("every acknowledged line reaches the receiver");
    for b in 0..20 {
        for i in 0..20 {
            assert!(lines.contains(&format!("forwarded batch {b} line {i}")), "batch {b} line {i}");
        }
    }
    // The default tenant of the receiver has none of it: the tenant was forwarded.
    let (_, other) = get(&query);
    assert!(!other.contains("forwarded batch"), "{other}");
}

fn ureq_get_with_tenant(url: &str, tenant: &str) -> String {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    agent
        .get(url)
        .header("x-scope-orgid", tenant)
        .call()
        .ok()
        .and_then(|mut r| r.body_mut().read_to_string().ok())
        .unwrap_or_default()
}
