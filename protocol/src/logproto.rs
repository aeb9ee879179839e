//! Loki push messages (`pkg/push/push.proto`): `logproto.PushRequest` and friends.
//!
//! Field numbers match upstream. `StreamAdapter.labels` is the label set in Loki's text form
//! (`{job="varlogs", host="a"}`, see [`crate::loki_labels`]); `hash` is filled by some clients
//! and ignored by Loki, and so by us.

use prost::Message;

/// `logproto.PushRequest`.
#[derive(Clone, PartialEq, Message)]
pub struct PushRequest {
    #[prost(message, repeated, tag = "1")]
    pub streams: Vec<StreamAdapter>,
}

/// `logproto.PushResponse` (empty).
#[derive(Clone, PartialEq, Message)]
pub struct PushResponse {}

/// `logproto.StreamAdapter`: one stream (label set) and its entries.
#[derive(Clone, PartialEq, Message)]
pub struct StreamAdapter {
    #[prost(string, tag = "1")]
    pub labels: String,
    #[prost(message, repeated, tag = "2")]
    pub entries: Vec<EntryAdapter>,
    #[prost(uint64, tag = "3")]
    pub hash: u64,
}

/// `logproto.EntryAdapter`: a timestamped line with optional structured metadata.
#[derive(Clone, PartialEq, Message)]
pub struct EntryAdapter {
    #[prost(message, optional, tag = "1")]
    pub timestamp: Option<Timestamp>,
    #[prost(string, tag = "2")]
    pub line: String,
    #[prost(message, repeated, tag = "3")]
    pub structured_metadata: Vec<LabelPairAdapter>,
}

/// `logproto.LabelPairAdapter`.
#[derive(Clone, PartialEq, Eq, Hash, Message)]
pub struct LabelPairAdapter {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `google.protobuf.Timestamp`.
#[derive(Clone, Copy, PartialEq, Eq, Message)]
pub struct Timestamp {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

impl Timestamp {
    /// Nanoseconds since the Unix epoch, saturating outside the i64 range.
    pub fn to_unix_nanos(self) -> i64 {
        self.seconds.saturating_mul(1_000_000_000).saturating_add(i64::from(self.nanos))
    }

    pub fn from_unix_nanos(ns: i64) -> Self {
        Timestamp { seconds: ns.div_euclid(1_000_000_000), nanos: ns.rem_euclid(1_000_000_000) as i32 }
    }
}

/// Why a push body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("push body is not a valid logproto.PushRequest protobuf: {0}")]
    Protobuf(#[from] prost::DecodeError),
    #[error(transparent)]
    Snappy(#[from] crate::snappy::SnappyError),
}

/// Decodes a snappy-compressed protobuf push body, refusing to inflate past `max_decoded` bytes.
pub fn decode_push_request(body: &[u8], max_decoded: usize) -> Result<PushRequest, DecodeError> {
    let raw = crate::snappy::decompress(body, max_decoded)?;
    Ok(PushRequest::decode(raw.as_slice())?)
}

/// Encodes and snappy-compresses a push body, ready to POST with [`PUSH_HEADERS`].
pub fn encode_push_request(req: &PushRequest) -> Vec<u8> {
    crate::snappy::compress(&req.encode_to_vec())
}

/// Headers of a protobuf Loki push, as Promtail sends them.
pub const PUSH_HEADERS: [(&str, &str); 2] =
    [("content-type", "application/x-protobuf"), ("content-encoding", "snappy")];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_round_trips_including_negative() {
        for ns in [0i64, 1, 1_700_000_000_123_456_789, -1, -1_500_000_000] {
            assert_eq!(Timestamp::from_unix_nanos(ns).to_unix_nanos(), ns);
        }
    }

    #[test]
    fn push_round_trip_with_structured_metadata() {
        let req = PushRequest {
            streams: vec![StreamAdapter {
                labels: r#"{job="varlogs"}"#.into(),
                entries: vec![EntryAdapter {
                    timestamp: Some(Timestamp::from_unix_nanos(1_700_000_000_000_000_001)),
                    line: "hello".into(),
                    structured_metadata: vec![LabelPairAdapter { name: "trace_id".into(), value: "abc".into() }],
                }],
                hash: 0,
            }],
        };
        let back = decode_push_request(&encode_push_request(&req), 1 << 20).expect("decodes");
        assert_eq!(back, req);
    }
}
