//! Bytes produced by a real Prometheus decode with our hand-written message structs.

use osprey_protocol::prompb::{WriteRequest, decode_write_request, encode_write_request};
use prost::Message;

#[test]
fn decodes_a_body_captured_from_prometheus_2_42() {
    let body = include_bytes!("fixtures/prometheus-2.42.0-remote-write.bin");
    let req = decode_write_request(body, 64 << 20).expect("decodes");
    assert!(req.timeseries.len() > 50, "{} series", req.timeseries.len());
    let up = req
        .timeseries
        .iter()
        .find(|ts| ts.labels.iter().any(|l| l.name == "__name__" && l.value == "up"))
        .expect("the up series");
    let labels: Vec<(&str, &str)> = up.labels.iter().map(|l| (l.name.as_str(), l.value.as_str())).collect();
    assert_eq!(labels[0], ("__name__", "up"));
    assert!(labels.contains(&("job", "prometheus")));
    assert_eq!(up.samples[0].value, 1.0);
    for ts in &req.timeseries {
        assert!(ts.labels.windows(2).all(|w| w[0].name < w[1].name), "labels sorted and unique");
        assert!(!ts.samples.is_empty());
    }
    // Re-encoding what we decoded decodes to the same request.
    // (Compared as bytes: the request holds NaN samples, and NaN != NaN.)
    let again: WriteRequest = decode_write_request(&encode_write_request(&req), 64 << 20).unwrap();
    assert!(again.encode_to_vec() == req.encode_to_vec(), "re-encoding changed the request");
}
