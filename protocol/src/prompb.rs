//! Prometheus remote_write 1.0 messages (`prometheus/prompb/remote.proto` and `types.proto`).
//!
//! Field numbers and types match upstream exactly. Native histograms (field 4 of `TimeSeries`)
//! are not modelled yet: prost skips unknown fields, so a request that carries them still
//! decodes, and its float samples are kept.

use prost::Message;

/// `prometheus.WriteRequest`. Field 2 is reserved upstream.
#[derive(Clone, PartialEq, Message)]
pub struct WriteRequest {
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
    #[prost(message, repeated, tag = "3")]
    pub metadata: Vec<MetricMetadata>,
}

/// `prometheus.TimeSeries`: one label set and its samples, oldest first.
#[derive(Clone, PartialEq, Message)]
pub struct TimeSeries {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
    #[prost(message, repeated, tag = "3")]
    pub exemplars: Vec<Exemplar>,
}

/// `prometheus.Label`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Message)]
pub struct Label {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

impl Label {
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Self {
        Label { name: name.into(), value: value.into() }
    }
}

/// `prometheus.Sample`: a value at a timestamp in milliseconds since the Unix epoch.
#[derive(Clone, PartialEq, Message)]
pub struct Sample {
    #[prost(double, tag = "1")]
    pub value: f64,
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// `prometheus.Exemplar`.
#[derive(Clone, PartialEq, Message)]
pub struct Exemplar {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    #[prost(double, tag = "2")]
    pub value: f64,
    #[prost(int64, tag = "3")]
    pub timestamp: i64,
}

/// `prometheus.MetricMetadata`.
#[derive(Clone, PartialEq, Message)]
pub struct MetricMetadata {
    #[prost(enumeration = "MetricType", tag = "1")]
    pub r#type: i32,
    #[prost(string, tag = "2")]
    pub metric_family_name: String,
    #[prost(string, tag = "4")]
    pub help: String,
    #[prost(string, tag = "5")]
    pub unit: String,
}

/// `prometheus.MetricMetadata.MetricType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum MetricType {
    Unknown = 0,
    Counter = 1,
    Gauge = 2,
    Histogram = 3,
    Gaugehistogram = 4,
    Summary = 5,
    Info = 6,
    Stateset = 7,
}

/// Why a decoded request cannot be stored as it is.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("remote_write body is not a valid prometheus.WriteRequest protobuf: {0}")]
    Protobuf(#[from] prost::DecodeError),
    #[error(transparent)]
    Snappy(#[from] crate::snappy::SnappyError),
}

/// Decodes a snappy-compressed remote_write body, refusing to inflate past `max_decoded` bytes.
pub fn decode_write_request(body: &[u8], max_decoded: usize) -> Result<WriteRequest, DecodeError> {
    let raw = crate::snappy::decompress(body, max_decoded)?;
    Ok(WriteRequest::decode(raw.as_slice())?)
}

/// Encodes and snappy-compresses a remote_write body, ready to POST.
pub fn encode_write_request(req: &WriteRequest) -> Vec<u8> {
    crate::snappy::compress(&req.encode_to_vec())
}

/// The headers every remote_write 1.0 request carries, as the spec requires.
pub const REMOTE_WRITE_HEADERS: [(&str, &str); 3] = [
    ("content-encoding", "snappy"),
    ("content-type", "application/x-protobuf"),
    ("x-prometheus-remote-write-version", "0.1.0"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_stale_marker_bits() {
        let req = WriteRequest {
            timeseries: vec![TimeSeries {
                labels: vec![Label::new("__name__", "up"), Label::new("job", "node")],
                samples: vec![
                    Sample { value: 1.0, timestamp: 1_700_000_000_000 },
                    Sample { value: f64::from_bits(crate::STALE_NAN_BITS), timestamp: 1_700_000_015_000 },
                ],
                exemplars: vec![],
            }],
            metadata: vec![],
        };
        let body = encode_write_request(&req);
        let back = decode_write_request(&body, 1 << 20).expect("decodes");
        assert_eq!(back.timeseries[0].labels, req.timeseries[0].labels);
        assert!(crate::is_stale_nan(back.timeseries[0].samples[1].value));
    }

    #[test]
    fn field_numbers_match_upstream() {
        // Hand-assembled bytes: WriteRequest{timeseries(1){labels(1){name(1)="a" value(2)="b"}
        // samples(2){value(1)=1.0 timestamp(2)=5}}}.
        let label = [0x0a, 0x01, b'a', 0x12, 0x01, b'b'];
        let mut sample = vec![0x09];
        sample.extend_from_slice(&1.0f64.to_le_bytes());
        sample.extend_from_slice(&[0x10, 0x05]);
        let mut ts = vec![0x0a, label.len() as u8];
        ts.extend_from_slice(&label);
        ts.push(0x12);
        ts.push(sample.len() as u8);
        ts.extend_from_slice(&sample);
        let mut req = vec![0x0a, ts.len() as u8];
        req.extend_from_slice(&ts);
        let decoded = WriteRequest::decode(req.as_slice()).expect("decodes");
        assert_eq!(decoded.timeseries[0].labels[0], Label::new("a", "b"));
        assert_eq!(decoded.timeseries[0].samples[0].value, 1.0);
        assert_eq!(decoded.timeseries[0].samples[0].timestamp, 5);
    }
}
