//! remote_write into a real collector process: 1.0 and 2.0, the spec's answers to bad input
//! (with the valid series of a request kept and nothing else disturbed), limits, stale markers,
//! tenants and fleet liveness.

mod harness;

use harness::*;
use osprey_protocol::prompb::{self, Label, Sample, TimeSeries, WriteRequest};
use osprey_protocol::writev2::{self, MetricType, RequestBuilder};
use prost::Message;
use std::io::{BufRead, Read, Write};
use std::time::Duration;

const V1: [(&str, &str); 3] = prompb::REMOTE_WRITE_HEADERS;
const V2: [(&str, &str); 3] = writev2::REMOTE_WRITE_HEADERS;

fn series(labels: &[(&str, &str)], value: f64, ts: i64) -> TimeSeries {
    TimeSeries {
        labels: labels.iter().map(|(k, v)| Label::new(*k, *v)).collect(),
        samples: vec![Sample { value, timestamp: ts }],
        exemplars: vec![],
    }
}

fn v1(timeseries: Vec<TimeSeries>) -> Vec<u8> {
    prompb::encode_write_request(&WriteRequest { timeseries, metadata: vec![] })
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

fn query(url: &str, q: &str) -> serde_json::Value {
    get_json(&format!("{url}/api/v1/query?query={}", enc(q)))
}

/// The result vector of an instant query as (labels, value) pairs, sorted.
fn vector(url: &str, q: &str) -> Vec<(String, String)> {
    let v = query(url, q);
    assert_eq!(v["status"], "success", "{q}: {v}");
    let mut out: Vec<(String, String)> = v["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["metric"].to_string(), r["value"][1].as_str().unwrap().to_string()))
        .collect();
    out.sort();
    out
}

fn metrics(url: &str) -> String {
    get(&format!("{url}/metrics")).1
}

#[test]
fn bad_input_gets_the_right_answer_and_disturbs_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (_proc, url) = start_collector(
        tmp.path(),
        &collector_config(tmp.path(), "max_body_bytes = 4194304\nmax_decompressed_bytes = 8388608\n"),
    );
    let write = format!("{url}/api/v1/write");
    let t = now_ms();
    let good = series(&[("__name__", "ok_total"), ("job", "t")], 1.0, t);

    // One request mixing valid and invalid series: 400 naming each problem, valid ones kept.
    let body = v1(vec![
        good.clone(),
        series(&[("job", "t"), ("__name__", "unsorted")], 1.0, t),
        series(&[("__name__", "dup"), ("job", "a"), ("job", "b")], 1.0, t),
        series(&[("__name__", "empty_name"), ("", "x")], 1.0, t),
        series(&[("__name__", "empty_value"), ("job", "")], 1.0, t),
        series(&[("job", "no_name")], 1.0, t),
        series(&[("__name__", "nan_value"), ("job", "t")], f64::NAN, t),
        series(&[("__name__", "inf_value"), ("job", "t")], f64::INFINITY, t),
        series(&[("__name__", "neg_inf_value"), ("job", "t")], f64::NEG_INFINITY, t),
    ]);
    let (code, text) = post(&write, &V1, &body);
    assert_eq!(code, 400, "{text}");
    for expect in [
        r#"series {job="t", __name__="unsorted"}: labels are not sorted by name: "__name__" comes after "job""#,
        r#"series {__name__="dup", job="a", job="b"}: duplicate label name "job""#,
        r#"series {__name__="empty_name", ="x"}: label 1 has an empty name"#,
        r#"series {__name__="empty_value", job=""}: label "job" has an empty value"#,
        r#"series {job="no_name"}: no metric name (label __name__)"#,
    ] {
        assert!(text.contains(expect), "{text:?} should contain {expect:?}");
    }
    // NaN and ±Inf are legal sample values: stored and served as Prometheus spells them.
    assert_eq!(vector(&url, "ok_total"), vec![(r#"{"__name__":"ok_total","job":"t"}"#.into(), "1".into())]);
    assert_eq!(vector(&url, "nan_value")[0].1, "NaN");
    assert_eq!(vector(&url, "inf_value")[0].1, "+Inf");
    assert_eq!(vector(&url, "neg_inf_value")[0].1, "-Inf");
    assert!(vector(&url, "unsorted").is_empty() && vector(&url, "dup").is_empty());

    // Broken bodies: 400 with the reason, nothing stored.
    let raw = good_raw(&good);
    let truncated = osprey_protocol::snappy::compress(&raw[..raw.len() - 3]);
    let claim_4gib = vec![0x80u8, 0x80, 0x80, 0x80, 0x10, 0x00, 0x00];
    // A real bomb: 16 MiB of zeros (a few hundred KiB compressed), over the 8 MiB cap.
    let bomb = osprey_protocol::snappy::compress(&vec![0u8; 16 << 20]);
    assert!(bomb.len() < 4 << 20);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("truncated protobuf", truncated, "not a valid prometheus.WriteRequest protobuf"),
        ("bad snappy", b"\x05this is not snappy".to_vec(), "snappy body is corrupt"),
        ("4 GiB claim", claim_4gib, "would decompress to 4294967296 bytes, over the limit of 8388608 bytes"),
        ("zero bomb", bomb, "would decompress to 16777216 bytes, over the limit of 8388608 bytes"),
        ("empty body", vec![], "empty remote_write body"),
    ];
    for (what, body, expect) in cases {
        let (code, text) = post(&write, &V1, &body);
        assert_eq!(code, 400, "{what}: {text}");
        assert!(text.contains(expect), "{what}: {text:?} should contain {expect:?}");
    }
    // Content negotiation: the spec's 415.
    let (code, text) = post(&write, &[("content-type", "application/json")], &v1(vec![good.clone()]));
    assert_eq!(code, 415, "{text}");
    let (code, text) = post(
        &write,
        &[("content-type", "application/x-protobuf;proto=io.prometheus.write.v3.Request")],
        &v1(vec![good.clone()]),
    );
    assert_eq!(code, 415, "{text}");
    assert!(text.contains("io.prometheus.write.v3.Request"), "{text}");
    let (code, text) = post(
        &write,
        &[("content-type", "application/x-protobuf"), ("content-encoding", "zstd")],
        &v1(vec![good.clone()]),
    );
    assert_eq!(code, 415, "{text}");

    // A 100 MB body: refused from its Content-Length with 413, before it is read.
    let addr = url.trim_start_matches("http://").to_string();
    let status = oversized_post(&addr, 100_000_000);
    assert!(status.starts_with("HTTP/1.1 413"), "{status:?}");
    // Same without a Content-Length (chunked): cut at the limit, 413.
    let (code, text) = post_chunked(&addr, 6 << 20);
    assert_eq!(code, 413, "{text}");

    // Nothing else was disturbed: the first series is intact, new writes work, and every
    // refusal was counted by reason.
    let (code, text) = post(&write, &V1, &v1(vec![series(&[("__name__", "after"), ("job", "t")], 2.0, t)]));
    assert_eq!(code, 204, "{text}");
    assert_eq!(vector(&url, "ok_total").len(), 1);
    assert_eq!(vector(&url, "after")[0].1, "2");
    let m = metrics(&url);
    for line in [
        r#"osprey_metrics_rejected_samples_total{reason="unsorted_labels"} 1"#,
        r#"osprey_metrics_rejected_samples_total{reason="duplicate_label_name"} 1"#,
        r#"osprey_metrics_rejected_samples_total{reason="empty_label_name"} 1"#,
        r#"osprey_metrics_rejected_samples_total{reason="empty_label_value"} 1"#,
        r#"osprey_metrics_rejected_samples_total{reason="missing_metric_name"} 1"#,
        r#"osprey_rejected_requests_total{endpoint="remote_write",reason="bad_body"} 1"#,
        r#"osprey_rejected_requests_total{endpoint="remote_write",reason="bad_snappy"} 1"#,
        r#"osprey_rejected_requests_total{endpoint="remote_write",reason="decompressed_too_large"} 2"#,
        r#"osprey_rejected_requests_total{endpoint="remote_write",reason="empty_body"} 1"#,
        r#"osprey_rejected_requests_total{endpoint="remote_write",reason="unsupported_media_type"} 2"#,
        r#"osprey_rejected_requests_total{endpoint="remote_write",reason="unsupported_encoding"} 1"#,
        r#"osprey_rejected_requests_total{endpoint="remote_write",reason="body_too_large"} 2"#,
        r#"osprey_remote_write_requests_total{version="1.0",status="204"} 1"#,
    ] {
        assert!(m.contains(line), "/metrics lacks {line:?}:\n{m}");
    }
}

/// The uncompressed protobuf of a request holding `s`.
fn good_raw(s: &TimeSeries) -> Vec<u8> {
    WriteRequest { timeseries: vec![s.clone()], metadata: vec![] }.encode_to_vec()
}

/// Declares `len` bytes, sends what the server lets us send, returns the status line.
fn oversized_post(addr: &str, len: usize) -> String {
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        conn,
        "POST /api/v1/write HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-protobuf\r\nContent-Encoding: snappy\r\nContent-Length: {len}\r\n\r\n"
    )
    .unwrap();
    // The server answers and closes without reading; stop at the first write error.
    let chunk = vec![0u8; 1 << 20];
    let mut sent = 0;
    while sent < len {
        if conn.write_all(&chunk).is_err() {
            break;
        }
        sent += chunk.len();
    }
    let mut status = String::new();
    let _ = std::io::BufReader::new(conn).read_line(&mut status);
    status
}

/// POSTs `len` bytes with chunked encoding (no Content-Length); returns status and body.
fn post_chunked(addr: &str, len: usize) -> (u16, String) {
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        conn,
        "POST /api/v1/write HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-protobuf\r\nContent-Encoding: snappy\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let chunk = vec![b'x'; 64 << 10];
    let mut sent = 0;
    while sent < len {
        if write!(conn, "{:x}\r\n", chunk.len()).is_err()
            || conn.write_all(&chunk).is_err()
            || conn.write_all(b"\r\n").is_err()
        {
            break;
        }
        sent += chunk.len();
    }
    let _ = conn.write_all(b"0\r\n\r\n");
    let mut answer = Vec::new();
    let _ = conn.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let code = answer.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, answer)
}

#[test]
fn remote_write_2_0_is_chosen_by_content_type() {
    let tmp = tempfile::tempdir().unwrap();
    let (_proc, url) = start_collector(tmp.path(), &collector_config(tmp.path(), ""));
    let write = format!("{url}/api/v1/write");
    let t = now_ms();
    let mut b = RequestBuilder::new();
    b.series(
        &[("__name__", "v2_gauge"), ("job", "x")],
        &[(1.0, t - 1000), (7.5, t)],
        Some((MetricType::Gauge, "A gauge.", "")),
    );
    b.series(
        &[("__name__", "v2_requests_total"), ("job", "x")],
        &[(42.0, t)],
        Some((MetricType::Counter, "Requests.", "")),
    );
    let body = writev2::encode_request(&b.build());
    let (code, headers, text) = post_raw(&write, &V2, &body);
    assert_eq!(code, 204, "{text}");
    let header = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    assert_eq!(header("x-prometheus-remote-write-samples-written").as_deref(), Some("3"));
    assert_eq!(header("x-prometheus-remote-write-histograms-written").as_deref(), Some("0"));
    assert_eq!(header("x-prometheus-remote-write-exemplars-written").as_deref(), Some("0"));
    assert_eq!(vector(&url, "v2_gauge")[0].1, "7.5", "the newest sample of the series");
    let md = get_json(&format!("{url}/api/v1/metadata?metric=v2_requests_total"));
    assert_eq!(md["data"]["v2_requests_total"][0]["type"], "counter");
    assert_eq!(md["data"]["v2_requests_total"][0]["help"], "Requests.");

    // Bad references and native histograms: 400 naming them; the float series is kept and
    // the headers say how much was written.
    let mut b = RequestBuilder::new();
    b.series(&[("__name__", "v2_kept"), ("job", "x")], &[(1.0, t)], None);
    b.raw(writev2::TimeSeries {
        labels_refs: vec![1, 999],
        samples: vec![writev2::Sample { value: 1.0, timestamp: t }],
        histograms: vec![],
        exemplars: vec![],
        metadata: None,
        created_timestamp: 0,
    });
    let name = b.symbol("__name__");
    let hist = b.symbol("v2_native");
    b.raw(writev2::TimeSeries {
        labels_refs: vec![name, hist],
        samples: vec![],
        histograms: vec![writev2::Histogram { count_int: 3, sum: 1.5, timestamp: t, ..Default::default() }],
        exemplars: vec![],
        metadata: None,
        created_timestamp: 0,
    });
    let (code, headers, text) = post_raw(&write, &V2, &writev2::encode_request(&b.build()));
    assert_eq!(code, 400, "{text}");
    assert!(text.contains("label reference 999 is out of range: the request has 6 symbols"), "{text}");
    assert!(text.contains(r#"series {__name__="v2_native"}: 1 native histogram samples refused"#), "{text}");
    assert!(headers.iter().any(|(k, v)| k == "x-prometheus-remote-write-samples-written" && v == "1"), "{headers:?}");
    assert_eq!(vector(&url, "v2_kept").len(), 1);

    // A 1.0 body sent as 2.0 is refused by name, not silently read as nothing.
    let v1_body = v1(vec![series(&[("__name__", "confused")], 1.0, t)]);
    let (code, text) = post(&write, &V2, &v1_body);
    assert_eq!(code, 400, "{text}");
    assert!(text.contains("sent with the 2.0 Content-Type"), "{text}");
    // And /api/v1/push (Mimir's path) speaks both.
    let (code, text) = post(&format!("{url}/api/v1/push"), &V1, &v1_body);
    assert_eq!(code, 204, "{text}");
    let m = metrics(&url);
    assert!(m.contains(r#"osprey_remote_write_requests_total{version="2.0",status="204"} 1"#), "{m}");
    assert!(m.contains(r#"osprey_metrics_rejected_samples_total{reason="native_histogram"} 1"#), "{m}");
    assert!(m.contains(r#"osprey_metrics_rejected_samples_total{reason="bad_symbol_reference"} 1"#), "{m}");
}

#[test]
fn limits_tenants_and_stale_markers() {
    let tmp = tempfile::tempdir().unwrap();
    let extra = "\n[metrics]\nmax_series = 5\nmax_series_per_tenant = 3\nmax_labels_per_series = 4\nmax_label_value_bytes = 16\n";
    let (_proc, url) = start_collector(tmp.path(), &collector_config(tmp.path(), extra));
    let write = format!("{url}/api/v1/write");
    let t = now_ms();
    let with_tenant = |tenant: &'static str| {
        let mut h = V1.to_vec();
        h.push(("x-scope-orgid", tenant));
        h
    };
    let n = |i: &str| series(&[("__name__", "s"), ("i", i)], 1.0, t);
    let (code, text) = post(&write, &with_tenant("a"), &v1(vec![n("1"), n("2"), n("3"), n("4")]));
    assert_eq!(code, 429, "{text}");
    assert!(text.contains(r#"new series {__name__="s", i="4"} refused: tenant "a" holds its maximum of 3 series (metrics.max_series_per_tenant or limits.tenants.a.max_series)"#), "{text}");
    let (code, text) = post(&write, &with_tenant("b"), &v1(vec![n("1"), n("2"), n("3")]));
    assert_eq!(code, 429, "{text}");
    assert!(text.contains("the collector holds its maximum of 5 series (metrics.max_series)"), "{text}");
    // Tenants see only their own series.
    let q = |tenant: &str| {
        let (_, body) = get_with(&format!("{url}/api/v1/query?query=s"), tenant);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["data"]["result"].as_array().unwrap().len()
    };
    assert_eq!((q("a"), q("b"), q("fake")), (3, 2, 0));
    // Shape limits are bad data (400), not capacity.
    let (code, text) = post(
        &write,
        &V1,
        &v1(vec![
            series(&[("__name__", "wide"), ("a", "1"), ("b", "1"), ("c", "1"), ("d", "1")], 1.0, t),
            series(&[("__name__", "long"), ("a", "12345678901234567")], 1.0, t),
        ]),
    );
    assert_eq!(code, 400, "{text}");
    assert!(text.contains("5 labels, over the limit of 4 (metrics.max_labels_per_series)"), "{text}");
    assert!(
        text.contains(r#"value of label "a" is 17 bytes, over the limit of 16 (metrics.max_label_value_bytes)"#),
        "{text}"
    );

    // A stale marker ends a series at once, and frees its room.
    let stale = f64::from_bits(osprey_protocol::STALE_NAN_BITS);
    let (code, _) = post(&write, &with_tenant("a"), &v1(vec![series(&[("__name__", "s"), ("i", "1")], stale, t + 1)]));
    assert_eq!(code, 204);
    assert_eq!(q("a"), 2);
    let (_, fed) = get_with(&format!("{url}/federate"), "a");
    assert!(!fed.contains("i=\"1\"") && fed.contains("i=\"2\""), "{fed}");
    let (code, text) = post(&write, &with_tenant("a"), &v1(vec![n("9")]));
    assert_eq!(code, 204, "{text}");
    let m = metrics(&url);
    assert!(m.contains(r#"osprey_metrics_rejected_samples_total{reason="max_series_per_tenant"} 1"#), "{m}");
    assert!(m.contains(r#"osprey_metrics_rejected_samples_total{reason="max_series"} 1"#), "{m}");
    assert!(m.contains("osprey_metrics_series_stale_total 1"), "{m}");
    assert!(m.contains("osprey_series_active 5"), "{m}");
}

/// GET with an `X-Scope-OrgID`.
fn get_with(url: &str, tenant: &str) -> (u16, String) {
    let (code, _, body) = get_raw(url, &[("x-scope-orgid", tenant)]);
    (code, String::from_utf8_lossy(&body).into_owned())
}

#[test]
fn fleet_liveness_turns_a_silent_host_down() {
    let tmp = tempfile::tempdir().unwrap();
    let extra = "\n[metrics]\nagent_down_after = \"2s\"\n";
    let (_proc, url) = start_collector(tmp.path(), &collector_config(tmp.path(), extra));
    let write = format!("{url}/api/v1/write");
    let host = |h: &str| series(&[("__name__", "node_load1"), ("host", h), ("job", "node")], 0.5, now_ms());
    let (code, text) = post(&write, &V1, &v1(vec![host("web-1"), host("web-2")]));
    assert_eq!(code, 204, "{text}");
    let m = metrics(&url);
    assert!(m.contains(r#"osprey_agent_up{host="web-1"} 1"#), "{m}");
    assert!(m.contains(r#"osprey_agent_last_seen_timestamp_seconds{host="web-2"}"#), "{m}");
    // web-2 keeps writing, web-1 goes silent: it turns 0 on /metrics and in the query API.
    let down = eventually(Duration::from_secs(30), || {
        post(&write, &V1, &v1(vec![host("web-2")]));
        let up = vector(&url, "osprey_agent_up");
        (up == vec![
            (r#"{"__name__":"osprey_agent_up","host":"web-1"}"#.to_string(), "0".to_string()),
            (r#"{"__name__":"osprey_agent_up","host":"web-2"}"#.to_string(), "1".to_string()),
        ])
        .then_some(())
    });
    assert!(down.is_some(), "web-1 reported down: {:?}", vector(&url, "osprey_agent_up"));
    let m = metrics(&url);
    assert!(m.contains(r#"osprey_agent_up{host="web-1"} 0"#), "{m}");
    assert!(m.contains(r#"osprey_agent_up{host="web-2"} 1"#), "{m}");
    // The alerting expression works as written, in the collector's own query API too.
    assert_eq!(
        vector(&url, "osprey_agent_up == 0"),
        vec![(r#"{"__name__":"osprey_agent_up","host":"web-1"}"#.to_string(), "0".to_string())]
    );
}
