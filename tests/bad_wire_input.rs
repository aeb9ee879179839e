//! Bad bytes on the wire get a 400 with a message naming the problem, and the collector keeps
//! serving.

mod harness;

use harness::*;
use std::io::{BufRead, Write};

const PROTO: [(&str, &str); 2] = [("content-type", "application/x-protobuf"), ("content-encoding", "snappy")];

#[test]
fn bad_bodies_are_refused_with_a_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let (_proc, url) = start_collector(tmp.path(), &collector_config(tmp.path(), ""));
    let push = format!("{url}/loki/api/v1/push");
    let write = format!("{url}/api/v1/write");

    let good = osprey_protocol::logproto::encode_push_request(&osprey_protocol::logproto::PushRequest {
        streams: vec![osprey_protocol::logproto::StreamAdapter {
            labels: r#"{job="x"}"#.into(),
            entries: vec![osprey_protocol::logproto::EntryAdapter {
                timestamp: Some(osprey_protocol::logproto::Timestamp::from_unix_nanos(1)),
                line: "a line long enough to be worth truncating in the middle".into(),
                structured_metadata: vec![],
            }],
            hash: 0,
        }],
    });
    let raw = snap::raw::Decoder::new().decompress_vec(&good).unwrap();
    let truncated = osprey_protocol::snappy::compress(&raw[..raw.len() - 5]);
    // A snappy header that claims 4 GiB.
    let bomb = [0x80u8, 0x80, 0x80, 0x80, 0x10, 0x00, 0x00];

    let cases: Vec<(&str, &str, Vec<u8>, &str)> = vec![
        ("push", "truncated protobuf", truncated.clone(), "not a valid logproto.PushRequest"),
        ("push", "bad snappy", b"\x05this is not snappy".to_vec(), "snappy body is corrupt"),
        (
            "push",
            "4 GiB claim",
            bomb.to_vec(),
            "would decompress to 4294967296 bytes, over the limit of 67108864 bytes (server.max_decompressed_bytes)",
        ),
        ("push", "empty body", vec![], "empty"),
        ("write", "truncated protobuf", truncated, "not a valid prometheus.WriteRequest"),
        ("write", "bad snappy", b"\x05this is not snappy".to_vec(), "snappy body is corrupt"),
        ("write", "4 GiB claim", bomb.to_vec(), "would decompress to 4294967296 bytes"),
        ("write", "empty body", vec![], "empty"),
    ];
    for (endpoint, what, body, expect) in cases {
        let target = if endpoint == "push" { &push } else { &write };
        let (code, text) = post(target, &PROTO, &body);
        assert_eq!(code, 400, "{endpoint} {what}: {text}");
        assert!(text.contains(expect), "{endpoint} {what}: {text:?} should contain {expect:?}");
    }
    let (code, text) = post(&push, &[("content-type", "application/json")], b"{\"streams\": [");
    assert_eq!(code, 400);
    assert!(text.contains("invalid JSON push body"), "{text}");
    let (code, text) =
        post(&push, &[("content-type", "application/json")], br#"{"streams":[{"stream":{},"values":[["1","x"]]}]}"#);
    assert_eq!(code, 400);
    assert!(text.contains("at least one label pair is required"), "{text}");

    // Still serving: a good push is accepted and counted; rejections were counted by reason.
    let (code, _) = post(&push, &PROTO, &good);
    assert_eq!(code, 204);
    let (_, metrics) = get(&format!("{url}/metrics"));
    assert!(metrics.contains("osprey_ingested_lines_total 1"), "{metrics}");
    assert!(
        metrics.contains(r#"osprey_rejected_requests_total{endpoint="loki_push",reason="bad_body"} 3"#),
        "{metrics}"
    );
    // The 4 GiB snappy claim is named for the limit it hit, as on remote_write.
    assert!(
        metrics.contains(r#"osprey_rejected_requests_total{endpoint="loki_push",reason="decompressed_too_large"} 1"#),
        "{metrics}"
    );
    // remote_write counts each kind of refusal under its own reason.
    for reason in ["bad_body", "bad_snappy", "decompressed_too_large", "empty_body"] {
        let line = format!(r#"osprey_rejected_requests_total{{endpoint="remote_write",reason="{reason}"}} 1"#);
        assert!(metrics.contains(&line), "{line} missing from {metrics}");
    }
}

#[test]
fn oversized_body_gets_413() {
    let tmp = tempfile::tempdir().unwrap();
    let (_proc, url) = start_collector(tmp.path(), &collector_config(tmp.path(), "max_body_bytes = 1048576\n"));
    // Declared 2 MiB with `Expect: 100-continue` (what curl sends for large bodies): the
    // collector refuses from the headers alone, before a byte of the body is sent.
    let addr = url.trim_start_matches("http://");
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    write!(
        conn,
        "POST /loki/api/v1/push HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        2 << 20
    )
    .unwrap();
    let mut status = String::new();
    std::io::BufReader::new(conn).read_line(&mut status).unwrap();
    assert!(status.starts_with("HTTP/1.1 413"), "{status:?}");
    let (code, body) = get(&format!("{url}/ready"));
    assert_eq!((code, body.trim()), (200, "ready"));
}
