//! The collector acknowledges a push only when it is on disk: kill -9 right after the 2xx and
//! every acknowledged line is there after restart.

mod harness;

use harness::*;
use osprey_protocol::logproto::{EntryAdapter, PushRequest, StreamAdapter, Timestamp, encode_push_request};
use std::time::Duration;

fn push_body(batch: usize, lines: usize, base_ns: i64) -> Vec<u8> {
    let entries = (0..lines)
        .map(|i| EntryAdapter {
            timestamp: Some(Timestamp::from_unix_nanos(base_ns + (batch * lines + i) as i64)),
            line: format!("batch {batch} line {i}"),
            structured_metadata: vec![],
        })
        .collect();
    encode_push_request(&PushRequest {
        streams: vec![StreamAdapter { labels: r#"{job="durability"}"#.into(), entries, hash: 0 }],
    })
}

#[test]
fn acknowledged_lines_survive_kill_9() {
    let tmp = tempfile::tempdir().unwrap();
    let config = collector_config(tmp.path(), "");
    let base_ns = 1_700_000_000_000_000_000i64;
    let mut acked = 0;
    for round in 0..3 {
        let (mut proc, url) = start_collector(tmp.path(), &config);
        for b in 0..20 {
            let batch = round * 20 + b;
            let (code, body) = post(
                &format!("{url}/loki/api/v1/push"),
                &[("content-type", "application/x-protobuf"), ("content-encoding", "snappy")],
                &push_body(batch, 25, base_ns),
            );
            assert_eq!(code, 204, "{body}");
            acked += 25;
        }
        // Killed right after the last 2xx: no graceful shutdown, no flush.
        proc.kill9();
    }
    let (_proc, url) = start_collector(tmp.path(), &config);
    let (code, body) = get(&format!(
        "{url}/loki/api/v1/query_range?query=%7Bjob%3D%22durability%22%7D&start={}&end={}&limit=5000&direction=forward",
        base_ns,
        base_ns + 1_000_000
    ));
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let values = v["data"]["result"][0]["values"].as_array().unwrap();
    assert_eq!(values.len(), acked);
    for (i, value) in values.iter().enumerate() {
        assert_eq!(value[1], format!("batch {} line {}", i / 25, i % 25));
    }
}

#[test]
fn torn_wal_tail_is_cut_and_the_collector_starts() {
    let tmp = tempfile::tempdir().unwrap();
    let config = collector_config(tmp.path(), "");
    let (mut proc, url) = start_collector(tmp.path(), &config);
    let (code, _) = post(
        &format!("{url}/loki/api/v1/push"),
        &[("content-type", "application/x-protobuf")],
        &push_body(0, 10, 1_700_000_000_000_000_000),
    );
    assert_eq!(code, 204);
    proc.kill9();
    // Simulate a write torn by a crash: half a frame at the end of the newest segment.
    let wal = tmp.path().join("data/wal");
    let mut segs: Vec<_> = std::fs::read_dir(&wal).unwrap().map(|e| e.unwrap().path()).collect();
    segs.sort();
    let with_data = segs.iter().rev().find(|p| std::fs::metadata(p).unwrap().len() > 8).unwrap().clone();
    let mut bytes = std::fs::read(&with_data).unwrap();
    bytes.extend_from_slice(&[200, 0, 0, 0, 9, 9, 9]);
    std::fs::write(&with_data, bytes).unwrap();

    let (_proc, url) = start_collector(tmp.path(), &config);
    let log = std::fs::read_to_string(tmp.path().join("collector.log")).unwrap();
    assert!(log.contains("torn or corrupt tail"), "{log}");
    let (_, metrics) = get(&format!("{url}/metrics"));
    assert!(metrics.contains("osprey_wal_corruptions_total 1"), "{metrics}");
    assert!(metrics.contains("osprey_wal_truncated_bytes_total 7"), "{metrics}");
    let found = eventually(Duration::from_secs(5), || {
        let (_, body) = get(&format!(
            "{url}/loki/api/v1/query_range?query=%7Bjob%3D%22durability%22%7D&start=1700000000000000000&end=1700000000001000000&limit=100"
        ));
        body.contains("batch 0 line 9").then_some(())
    });
    assert!(found.is_some(), "lines before the torn tail are kept");
}
