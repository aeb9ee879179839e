//! Push limits answer with Loki's status codes and messages and are counted by reason; the
//! out-of-order window; bad bodies (malformed protobuf, JSON, snappy, invalid UTF-8, 1,000
//! labels, a 100 MB body) get a clear error and the collector keeps serving.

mod harness;

use harness::*;
use osprey_protocol::logproto::{EntryAdapter, PushRequest, StreamAdapter, Timestamp, encode_push_request};

const PROTO: [(&str, &str); 2] = [("content-type", "application/x-protobuf"), ("content-encoding", "snappy")];
const BASE: i64 = 1_700_000_000_000_000_000;

fn push(labels: &str, entries: &[(i64, &str)]) -> Vec<u8> {
    encode_push_request(&PushRequest {
        streams: vec![StreamAdapter {
            labels: labels.into(),
            entries: entries
                .iter()
                .map(|(ts, line)| EntryAdapter {
                    timestamp: Some(Timestamp::from_unix_nanos(*ts)),
                    line: line.to_string(),
                    structured_metadata: vec![],
                })
                .collect(),
            hash: 0,
        }],
    })
}

fn metric(metrics: &str, name_and_labels: &str) -> u64 {
    metrics.lines().find_map(|l| l.strip_prefix(name_and_labels).and_then(|v| v.trim().parse().ok())).unwrap_or(0)
}

#[test]
fn limits_answer_like_loki_and_are_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let config = collector_config(
        tmp.path(),
        "\n[logs]\nmax_line_bytes = 100\nmax_labels_per_stream = 3\nmax_label_name_bytes = 20\nmax_label_value_bytes = 30\nmax_streams_per_tenant = 2\nout_of_order_window = \"1m\"\n",
    );
    let (_proc, url) = start_collector(tmp.path(), &config);
    let p = format!("{url}/loki/api/v1/push");

    // Line size: the valid line is kept, the long one refused with Loki's message.
    let long = "x".repeat(101);
    let (code, body) = post(&p, &PROTO, &push(r#"{job="a"}"#, &[(BASE, "short"), (BASE + 1, &long)]));
    assert_eq!(code, 400, "{body}");
    assert_eq!(
        body.trim(),
        r#"Max entry size '100' bytes exceeded for stream '{job="a"}' while adding an entry with length '101' bytes"#
    );

    // Labels per stream, name and value length.
    let (code, body) = post(&p, &PROTO, &push(r#"{a="1", b="2", c="3", d="4"}"#, &[(BASE, "l")]));
    assert_eq!(code, 400);
    assert_eq!(body.trim(), r#"entry for stream '{a="1", b="2", c="3", d="4"}' has 4 label names; limit 3"#);
    let (code, body) = post(&p, &PROTO, &push(r#"{a_very_long_label_name_here="1"}"#, &[(BASE, "l")]));
    assert_eq!(code, 400);
    assert_eq!(
        body.trim(),
        r#"stream '{a_very_long_label_name_here="1"}' has label name too long: 'a_very_long_label_name_here'"#
    );
    let v = "v".repeat(31);
    let (code, body) = post(&p, &PROTO, &push(&format!(r#"{{job="{v}"}}"#), &[(BASE, "l")]));
    assert_eq!(code, 400);
    assert_eq!(body.trim(), format!(r#"stream '{{job="{v}"}}' has label value too long: '{v}'"#));

    // 1,000 labels: refused by the label limit, not a crash.
    let many: Vec<String> = (0..1000).map(|i| format!("l{i}=\"v\"")).collect();
    let (code, body) = post(&p, &PROTO, &push(&format!("{{{}}}", many.join(",")), &[(BASE, "l")]));
    assert_eq!(code, 400);
    assert!(body.contains("has 1000 label names; limit 3"), "{body}");

    // Out-of-order window (1m): 30 s back is fine, 2 min back is "too far behind".
    let (code, body) = post(&p, &PROTO, &push(r#"{job="a"}"#, &[(BASE + 120_000_000_000, "newest")]));
    assert_eq!(code, 204, "{body}");
    let (code, body) = post(&p, &PROTO, &push(r#"{job="a"}"#, &[(BASE + 90_000_000_000, "30s late")]));
    assert_eq!(code, 204, "{body}");
    let (code, body) = post(&p, &PROTO, &push(r#"{job="a"}"#, &[(BASE, "2min late")]));
    assert_eq!(code, 400);
    assert!(
        body.starts_with("entry with timestamp 2023-11-14 22:13:20 +0000 UTC ignored, reason: 'entry too far behind, entry timestamp is: 2023-11-14T22:13:20Z, oldest acceptable timestamp is: 2023-11-14T22:14:20Z',"),
        "{body}"
    );
    assert!(body.contains(r#"user 'fake', total ignored: 1 out of 1 for stream: {job="a"}"#), "{body}");

    // Streams per tenant: {job="a"} exists; one more fits, the third is refused with 429.
    let (code, _) = post(&p, &PROTO, &push(r#"{job="b"}"#, &[(BASE, "l")]));
    assert_eq!(code, 204);
    let (code, body) = post(&p, &PROTO, &push(r#"{job="c"}"#, &[(BASE, "l")]));
    assert_eq!(code, 429, "{body}");
    assert_eq!(
        body.trim(),
        r#"Maximum active stream limit exceeded when trying to create stream {job="c"}, reduce the number of active streams (reduce labels or reduce label values), or contact your Loki administrator to see if the limit can be increased, user: 'fake'"#
    );
    // Another tenant has its own budget.
    let mut headers = PROTO.to_vec();
    headers.push(("x-scope-orgid", "other"));
    let (code, _) = post(&p, &headers, &push(r#"{job="c"}"#, &[(BASE, "l")]));
    assert_eq!(code, 204);

    let (_, m) = get(&format!("{url}/metrics"));
    for (reason, n) in [
        ("line_too_long", 1),
        ("max_label_names_per_series", 2),
        ("label_name_too_long", 1),
        ("label_value_too_long", 1),
        ("too_far_behind", 1),
        ("stream_limit", 1),
    ] {
        assert_eq!(
            metric(&m, &format!("osprey_logs_discarded_lines_total{{reason=\"{reason}\"}} ")),
            n,
            "{reason}\n{m}"
        );
    }
    // What was accepted is there: short, newest, 30s late.
    let (code, body) = get(&format!(
        "{url}/loki/api/v1/query_range?query=%7Bjob%3D%22a%22%7D&start={}&end={}&limit=100",
        BASE,
        BASE + 200_000_000_000
    ));
    assert_eq!(code, 200);
    for want in ["short", "newest", "30s late"] {
        assert!(body.contains(want), "{body}");
    }
    assert!(!body.contains("2min late") && !body.contains("xxxx"), "{body}");
}

#[test]
fn bad_bodies_are_refused_and_the_collector_keeps_serving() {
    let tmp = tempfile::tempdir().unwrap();
    let (_proc, url) = start_collector(tmp.path(), &collector_config(tmp.path(), ""));
    let p = format!("{url}/loki/api/v1/push");

    // A protobuf line that is not UTF-8: hand-encode the string field with bytes 0xff 0xfe.
    let good = push(r#"{job="a"}"#, &[(BASE, "AB")]);
    let mut raw = snap::raw::Decoder::new().decompress_vec(&good).unwrap();
    let at = raw.windows(2).position(|w| w == b"AB").unwrap();
    raw[at] = 0xff;
    raw[at + 1] = 0xfe;
    let (code, body) = post(&p, &PROTO, &osprey_protocol::snappy::compress(&raw));
    assert_eq!(code, 400);
    assert!(body.contains("not a valid logproto.PushRequest") && body.contains("UTF-8"), "{body}");
    // Malformed protobuf, snappy and JSON.
    let (code, body) = post(&p, &PROTO, &osprey_protocol::snappy::compress(&[0x0a, 0xff, 0xff, 0xff]));
    assert_eq!(code, 400, "{body}");
    let (code, body) = post(&p, &PROTO, b"\x10garbage, not snappy");
    assert_eq!(code, 400);
    assert!(body.contains("snappy"), "{body}");
    let (code, body) = post(
        &p,
        &[("content-type", "application/json")],
        br#"{"streams":[{"stream":{"a":"b"},"values":[["x","y"]]}]}"#,
    );
    assert_eq!(code, 400);
    assert!(body.contains("not an integer count of nanoseconds"), "{body}");
    let (code, body) = post(
        &p,
        &[("content-type", "application/json")],
        b"{\"streams\":[{\"stream\":{\"a\":\"b\"},\"values\":[[\"1\",\"\xff\"]]}]}",
    );
    assert_eq!(code, 400);
    assert!(body.contains("invalid JSON push body"), "{body}");
    // A 100 MB body: 413 from the declared length, before it is read.
    let big = vec![b'x'; 100 << 20];
    let (code, body) = post(&p, &PROTO, &big);
    assert!(code == 413 || code == 0, "{code} {body}");
    // Still serving and storing.
    let (code, body) = post(&p, &PROTO, &good);
    assert_eq!(code, 204, "{body}");
    let (_, m) = get(&format!("{url}/metrics"));
    assert!(m.contains("osprey_ingested_lines_total 1"), "{m}");
}
