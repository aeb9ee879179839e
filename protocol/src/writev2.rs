//! Prometheus remote_write 2.0 messages (`io.prometheus.write.v2`, upstream
//! `prompb/io/prometheus/write/v2/types.proto`).
//!
//! Written by hand as prost structs with the upstream field numbers, like [`crate::prompb`].
//! Strings are interned: every label name and value, help text and unit is an index into
//! [`Request::symbols`], whose first element is always `""`. The collector's hot path does not
//! decode into these structs (see [`crate::remote_write`], which borrows from the body); they
//! exist to encode requests (tests, benches, the forwarding sink) and as the reference the
//! borrowing decoder is checked against.

use prost::Message;

/// `Content-Type` of a 2.0 request; the media type parameter is what tells it from 1.0.
pub const CONTENT_TYPE: &str = "application/x-protobuf;proto=io.prometheus.write.v2.Request";

/// The headers a 2.0 sender sends, as the spec requires.
pub const REMOTE_WRITE_HEADERS: [(&str, &str); 3] =
    [("content-encoding", "snappy"), ("content-type", CONTENT_TYPE), ("x-prometheus-remote-write-version", "2.0.0")];

/// Response headers a 2.0 receiver must send: how much of the request it wrote.
pub const SAMPLES_WRITTEN_HEADER: &str = "x-prometheus-remote-write-samples-written";
pub const HISTOGRAMS_WRITTEN_HEADER: &str = "x-prometheus-remote-write-histograms-written";
pub const EXEMPLARS_WRITTEN_HEADER: &str = "x-prometheus-remote-write-exemplars-written";

/// `io.prometheus.write.v2.Request`. Fields 1 to 3 are reserved upstream so that a 1.0
/// `prometheus.WriteRequest` sent under the 2.0 content type decodes to nothing.
#[derive(Clone, PartialEq, Message)]
pub struct Request {
    #[prost(string, repeated, tag = "4")]
    pub symbols: Vec<String>,
    #[prost(message, repeated, tag = "5")]
    pub timeseries: Vec<TimeSeries>,
}

/// `io.prometheus.write.v2.TimeSeries`.
#[derive(Clone, PartialEq, Message)]
pub struct TimeSeries {
    /// Pairs of indexes into `symbols`: name, value, name, value, … sorted by name.
    #[prost(uint32, repeated, tag = "1")]
    pub labels_refs: Vec<u32>,
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
    #[prost(message, repeated, tag = "3")]
    pub histograms: Vec<Histogram>,
    #[prost(message, repeated, tag = "4")]
    pub exemplars: Vec<Exemplar>,
    #[prost(message, optional, tag = "5")]
    pub metadata: Option<Metadata>,
    #[prost(int64, tag = "6")]
    pub created_timestamp: i64,
}

/// `io.prometheus.write.v2.Sample`.
#[derive(Clone, PartialEq, Message)]
pub struct Sample {
    #[prost(double, tag = "1")]
    pub value: f64,
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// `io.prometheus.write.v2.Exemplar`.
#[derive(Clone, PartialEq, Message)]
pub struct Exemplar {
    #[prost(uint32, repeated, tag = "1")]
    pub labels_refs: Vec<u32>,
    #[prost(double, tag = "2")]
    pub value: f64,
    #[prost(int64, tag = "3")]
    pub timestamp: i64,
}

/// `io.prometheus.write.v2.Metadata`. Field 2 is unused upstream.
#[derive(Clone, PartialEq, Message)]
pub struct Metadata {
    #[prost(enumeration = "MetricType", tag = "1")]
    pub r#type: i32,
    #[prost(uint32, tag = "3")]
    pub help_ref: u32,
    #[prost(uint32, tag = "4")]
    pub unit_ref: u32,
}

/// `io.prometheus.write.v2.Metadata.MetricType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum MetricType {
    Unspecified = 0,
    Counter = 1,
    Gauge = 2,
    Histogram = 3,
    Gaugehistogram = 4,
    Summary = 5,
    Info = 6,
    Stateset = 7,
}

/// `io.prometheus.write.v2.Histogram` (a native histogram). The collector keeps float samples
/// only and refuses these with a counted 400; the message is here so that tests can send one.
#[derive(Clone, PartialEq, Message)]
pub struct Histogram {
    #[prost(uint64, tag = "1")]
    pub count_int: u64,
    #[prost(double, tag = "3")]
    pub sum: f64,
    #[prost(sint32, tag = "4")]
    pub schema: i32,
    #[prost(double, tag = "5")]
    pub zero_threshold: f64,
    #[prost(uint64, tag = "6")]
    pub zero_count_int: u64,
    #[prost(message, repeated, tag = "11")]
    pub positive_spans: Vec<BucketSpan>,
    #[prost(sint64, repeated, tag = "12")]
    pub positive_deltas: Vec<i64>,
    #[prost(int64, tag = "15")]
    pub timestamp: i64,
}

/// `io.prometheus.write.v2.BucketSpan`.
#[derive(Clone, PartialEq, Message)]
pub struct BucketSpan {
    #[prost(sint32, tag = "1")]
    pub offset: i32,
    #[prost(uint32, tag = "2")]
    pub length: u32,
}

/// Builds a [`Request`] from plain label sets, interning every string once.
#[derive(Default)]
pub struct RequestBuilder {
    request: Request,
    index: std::collections::HashMap<String, u32>,
}

impl RequestBuilder {
    pub fn new() -> Self {
        let mut b = RequestBuilder::default();
        b.symbol("");
        b
    }

    /// The index of `s` in the symbol table, adding it if new.
    pub fn symbol(&mut self, s: &str) -> u32 {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = self.request.symbols.len() as u32;
        self.request.symbols.push(s.to_string());
        self.index.insert(s.to_string(), i);
        i
    }

    /// Adds a series with float samples and optional metadata (type, help, unit).
    pub fn series(
        &mut self,
        labels: &[(&str, &str)],
        samples: &[(f64, i64)],
        metadata: Option<(MetricType, &str, &str)>,
    ) -> &mut Self {
        let labels_refs = labels.iter().flat_map(|(k, v)| [self.symbol(k), self.symbol(v)]).collect();
        let metadata = metadata.map(|(kind, help, unit)| Metadata {
            r#type: kind as i32,
            help_ref: self.symbol(help),
            unit_ref: self.symbol(unit),
        });
        self.request.timeseries.push(TimeSeries {
            labels_refs,
            samples: samples.iter().map(|&(value, timestamp)| Sample { value, timestamp }).collect(),
            histograms: vec![],
            exemplars: vec![],
            metadata,
            created_timestamp: 0,
        });
        self
    }

    /// Adds a raw series (for tests that need refs the builder would not produce).
    pub fn raw(&mut self, series: TimeSeries) -> &mut Self {
        self.request.timeseries.push(series);
        self
    }

    pub fn build(self) -> Request {
        self.request
    }
}

/// Encodes and snappy-compresses a 2.0 request, ready to POST with [`REMOTE_WRITE_HEADERS`].
pub fn encode_request(req: &Request) -> Vec<u8> {
    crate::snappy::compress(&req.encode_to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_numbers_match_upstream() {
        // Request{symbols(4)=["", "a"], timeseries(5){labels_refs(1) packed=[1,1],
        // samples(2){value(1)=2.0 timestamp(2)=7}, metadata(5){type(1)=2 help_ref(3)=1}}}
        let mut sample = vec![0x09];
        sample.extend_from_slice(&2.0f64.to_le_bytes());
        sample.extend_from_slice(&[0x10, 0x07]);
        let mut ts = vec![0x0a, 0x02, 0x01, 0x01, 0x12, sample.len() as u8];
        ts.extend_from_slice(&sample);
        ts.extend_from_slice(&[0x2a, 0x04, 0x08, 0x02, 0x18, 0x01]);
        let mut req = vec![0x22, 0x00, 0x22, 0x01, b'a', 0x2a, ts.len() as u8];
        req.extend_from_slice(&ts);
        let decoded = Request::decode(req.as_slice()).expect("decodes");
        assert_eq!(decoded.symbols, vec!["".to_string(), "a".to_string()]);
        let series = &decoded.timeseries[0];
        assert_eq!(series.labels_refs, vec![1, 1]);
        assert_eq!(series.samples[0], Sample { value: 2.0, timestamp: 7 });
        assert_eq!(series.metadata, Some(Metadata { r#type: MetricType::Gauge as i32, help_ref: 1, unit_ref: 0 }));
    }

    #[test]
    fn builder_interns_each_string_once() {
        let mut b = RequestBuilder::new();
        b.series(&[("__name__", "up"), ("job", "a")], &[(1.0, 5)], None);
        b.series(&[("__name__", "up"), ("job", "b")], &[(0.0, 5)], Some((MetricType::Gauge, "help", "")));
        let req = b.build();
        assert_eq!(req.symbols, ["", "__name__", "up", "job", "a", "b", "help"]);
        assert_eq!(req.timeseries[1].labels_refs, vec![1, 2, 3, 5]);
    }
}
