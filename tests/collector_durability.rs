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

/// Pushes from a client thread while the collector is killed with SIGKILL at random moments
/// (during group commits, flushes into parts, merges and WAL truncation: the head is tiny and
/// flushes and merges run constantly), restarted each time. Every acknowledged line is found
/// exactly once at the end, and no line is ever duplicated.
#[test]
fn random_kill_9_under_load_loses_and_duplicates_nothing() {
    use rand::{Rng, SeedableRng};
    let tmp = tempfile::tempdir().unwrap();
    let config = collector_config(
        tmp.path(),
        "\n[logs]\nhead_max_bytes = 1048576\nflush_interval = \"150ms\"\nmaintenance_interval = \"200ms\"\nmerge_min_parts = 2\nblock_bytes = 16384\nmax_query_lines = 100000\n",
    );
    let base_ns = 1_700_000_000_000_000_000i64;
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    let mut acked: Vec<usize> = Vec::new();
    let mut sent = 0usize;
    // At most 6 rounds x 400 batches x 20 lines = 48,000 lines: one query (limit 100,000)
    // returns them all however fast the machine acknowledges.
    let lines_per_batch = 20;
    for _round in 0..6 {
        let (mut proc, url) = start_collector(tmp.path(), &config);
        let push_url = format!("{url}/loki/api/v1/push");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let first = sent;
        let client = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut ok = Vec::new();
                let mut batch = first;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) && batch < first + 400 {
                    let body = push_body(batch, lines_per_batch, base_ns);
                    let (code, _) = post(
                        &push_url,
                        &[("content-type", "application/x-protobuf"), ("content-encoding", "snappy")],
                        &body,
                    );
                    if code == 204 {
                        ok.push(batch);
                    }
                    batch += 1;
                }
                (ok, batch)
            })
        };
        std::thread::sleep(Duration::from_millis(rng.random_range(150..900)));
        proc.kill9();
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let (ok, next) = client.join().unwrap();
        acked.extend(ok);
        sent = next;
    }
    assert!(acked.len() > 20, "the client got acknowledgements in between kills ({})", acked.len());
    let (_proc, url) = start_collector(tmp.path(), &config);
    let (code, body) = get(&format!(
        "{url}/loki/api/v1/query_range?query=%7Bjob%3D%22durability%22%7D&start={}&end={}&limit=100000&direction=forward",
        base_ns,
        base_ns + 1_000_000_000
    ));
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let mut seen = std::collections::HashMap::<String, usize>::new();
    for stream in v["data"]["result"].as_array().unwrap() {
        for value in stream["values"].as_array().unwrap() {
            *seen.entry(value[1].as_str().unwrap().to_string()).or_default() += 1;
        }
    }
    let dups: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dups.is_empty(), "duplicated lines: {dups:?}");
    for b in &acked {
        for i in 0..lines_per_batch {
            let line = format!("batch {b} line {i}");
            assert_eq!(seen.get(&line), Some(&1), "acknowledged line {line:?} missing");
        }
    }
    // The kills did land during the life of parts, not only of the head.
    let (_, metrics) = get(&format!("{url}/metrics"));
    let parts: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("osprey_logs_parts "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert!(parts > 0, "{metrics}");
}

#[test]
fn flipped_byte_in_the_wal_is_cut_reported_and_the_rest_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let config = collector_config(tmp.path(), "");
    let (mut proc, url) = start_collector(tmp.path(), &config);
    for batch in 0..2 {
        let (code, _) = post(
            &format!("{url}/loki/api/v1/push"),
            &[("content-type", "application/x-protobuf")],
            &push_body(batch, 10, 1_700_000_000_000_000_000),
        );
        assert_eq!(code, 204);
    }
    proc.kill9();
    // Flip one byte inside the second record's payload (the last bytes of the segment).
    let wal = tmp.path().join("data/wal");
    let mut segs: Vec<_> = std::fs::read_dir(&wal).unwrap().map(|e| e.unwrap().path()).collect();
    segs.sort();
    let with_data = segs.iter().rev().find(|p| std::fs::metadata(p).unwrap().len() > 8).unwrap().clone();
    let mut bytes = std::fs::read(&with_data).unwrap();
    let second_len = {
        // Walk the frames: header 8, then len | crc | payload.
        let mut off = 8;
        let mut lens = Vec::new();
        while off + 8 <= bytes.len() {
            let len = u32::from_le_bytes(bytes[off..off + 4].try_into().unwrap()) as usize;
            lens.push(8 + len);
            off += 8 + len;
        }
        assert_eq!(lens.len(), 2);
        lens[1]
    };
    let n = bytes.len();
    bytes[n - 3] ^= 0x40;
    std::fs::write(&with_data, bytes).unwrap();

    let (_proc, url) = start_collector(tmp.path(), &config);
    let log = std::fs::read_to_string(tmp.path().join("collector.log")).unwrap();
    assert!(log.contains("torn or corrupt tail") && log.contains("CRC mismatch"), "{log}");
    let (_, metrics) = get(&format!("{url}/metrics"));
    assert!(metrics.contains("osprey_wal_corruptions_total 1"), "{metrics}");
    assert!(metrics.contains(&format!("osprey_wal_truncated_bytes_total {second_len}")), "{metrics}");
    let (_, body) = get(&format!(
        "{url}/loki/api/v1/query_range?query=%7Bjob%3D%22durability%22%7D&start=1700000000000000000&end=1700000000001000000&limit=100"
    ));
    assert!(body.contains("batch 0 line 9"), "the first record is kept: {body}");
    assert!(!body.contains("batch 1 line"), "the corrupt record is cut: {body}");
}
