//! Loki's JSON push body:
//! `{"streams":[{"stream":{"job":"x"},"values":[["<unix ns>","line",{"trace_id":"a"}]]}]}`.
//!
//! Decoded into the same [`PushRequest`] as the protobuf form, so the collector has one ingest
//! path. Timestamps are decimal nanosecond strings, as Loki requires; the optional third element
//! of a value is the entry's structured metadata.

use crate::logproto::{EntryAdapter, LabelPairAdapter, PushRequest, StreamAdapter, Timestamp};
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonPush {
    streams: Vec<JsonStream>,
}

#[derive(Deserialize)]
struct JsonStream {
    stream: BTreeMap<String, String>,
    values: Vec<JsonEntry>,
}

struct JsonEntry(EntryAdapter);

impl<'de> Deserialize<'de> for JsonEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = JsonEntry;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(r#"an entry ["<unix epoch in nanoseconds>", "<log line>"] with optional {metadata}"#)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<JsonEntry, A::Error> {
                let ts: String = seq.next_element()?.ok_or_else(|| de::Error::invalid_length(0, &self))?;
                let ns: i64 = ts.parse().map_err(|_| {
                    de::Error::custom(format!("timestamp {ts:?} is not an integer count of nanoseconds"))
                })?;
                let line: String = seq.next_element()?.ok_or_else(|| de::Error::invalid_length(1, &self))?;
                let metadata: Option<BTreeMap<String, String>> = seq.next_element()?;
                if seq.next_element::<de::IgnoredAny>()?.is_some() {
                    return Err(de::Error::invalid_length(4, &self));
                }
                Ok(JsonEntry(EntryAdapter {
                    timestamp: Some(Timestamp::from_unix_nanos(ns)),
                    line,
                    structured_metadata: metadata
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(name, value)| LabelPairAdapter { name, value })
                        .collect(),
                }))
            }
        }
        d.deserialize_seq(V)
    }
}

/// Decodes a JSON push body into a [`PushRequest`]. Labels are rendered in canonical text form.
pub fn decode(body: &[u8]) -> Result<PushRequest, serde_json::Error> {
    let push: JsonPush = serde_json::from_slice(body)?;
    Ok(PushRequest {
        streams: push
            .streams
            .into_iter()
            .map(|s| {
                let labels: Vec<(String, String)> = s.stream.into_iter().collect();
                StreamAdapter {
                    labels: crate::loki_labels::format(&labels),
                    entries: s.values.into_iter().map(|e| e.0).collect(),
                    hash: 0,
                }
            })
            .collect(),
    })
}

/// One stream in the JSON push shape, for clients that send JSON (tests, `osprey` tools).
#[derive(Serialize)]
pub struct EncodeStream<'a> {
    pub stream: &'a BTreeMap<String, String>,
    pub values: Vec<[String; 2]>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_loki_doc_example_with_metadata() {
        let body = br#"{"streams":[{"stream":{"job":"test","host":"a"},"values":[["1700000000000000001","fizzbuzz"],["1700000000000000002","with meta",{"trace_id":"0242ac120002"}]]}]}"#;
        let req = decode(body).unwrap();
        assert_eq!(req.streams[0].labels, r#"{host="a", job="test"}"#);
        assert_eq!(req.streams[0].entries[0].line, "fizzbuzz");
        assert_eq!(req.streams[0].entries[1].timestamp.unwrap().to_unix_nanos(), 1_700_000_000_000_000_002);
        assert_eq!(req.streams[0].entries[1].structured_metadata[0].name, "trace_id");
    }

    #[test]
    fn errors_name_the_problem() {
        let e = decode(br#"{"streams":[{"stream":{},"values":[["x","l"]]}]}"#).err().unwrap();
        assert!(e.to_string().contains("not an integer count of nanoseconds"), "{e}");
        assert!(decode(b"").is_err());
        assert!(decode(br#"{"streams":[{"stream":{},"values":[["1"]]}]}"#).is_err());
    }
}
