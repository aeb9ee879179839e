//! Loki push sink: protobuf + snappy to `/loki/api/v1/push` of the collector or any Loki.
//!
//! Batches are sent one at a time, in the order they arrive, so their receipts finish in order:
//! that is what lets a file's checkpoint move only past lines the receiver has stored.

use super::http::{Delivery, HttpSender};
use crate::pipeline::{LogBatch, Outcome};
use bytes::Bytes;
use osprey_protocol::logproto::{EntryAdapter, LabelPairAdapter, PushRequest, StreamAdapter, Timestamp};
use tokio::sync::{mpsc, watch};

/// Sends batches from `rx` in order until the channel closes (the source stopped and everything
/// queued was sent) or `abort` turns true (a retry in progress is then abandoned, unacknowledged).
pub async fn run(sender: HttpSender, mut rx: mpsc::Receiver<LogBatch>, mut abort: watch::Receiver<bool>) {
    let mut raw = Vec::new();
    let mut compressed = Vec::new();
    let mut encoder = snap::raw::Encoder::new();
    let mut scratch = Vec::new();
    while let Some(mut batch) = rx.recv().await {
        let receipt = std::mem::take(&mut batch.receipt);
        if batch.is_empty() {
            // Only positions (every line was filtered out): nothing to send, safe to move on.
            receipt.finish(Outcome::Delivered);
            continue;
        }
        encode_push_request(&batch, &mut raw, &mut scratch);
        drop(batch);
        osprey_protocol::snappy::compress_into(&mut encoder, &raw, &mut compressed);
        match sender.send(Bytes::copy_from_slice(&compressed), &mut abort).await {
            Delivery::Delivered => receipt.finish(Outcome::Delivered),
            Delivery::Refused(_) => receipt.finish(Outcome::Refused),
            Delivery::Interrupted => break,
        }
        // Keep the buffers' capacity, but not a one-off giant's.
        if raw.capacity() > 64 << 20 {
            raw = Vec::new();
            compressed = Vec::new();
        }
    }
}

/// Encodes `batch` as a `logproto.PushRequest` into `out`, exactly as prost would (proto3:
/// empty strings, zero numbers and a zero hash are omitted; the timestamp message is always
/// present), without building the intermediate prost structs: the lines are copied once, from
/// the batch into `out`. `scratch` keeps entry lengths between the two passes.
pub fn encode_push_request(batch: &LogBatch, out: &mut Vec<u8>, scratch: &mut Vec<usize>) {
    out.clear();
    out.reserve(batch.bytes + batch.lines * 24 + batch.streams.len() * 128);
    for s in &batch.streams {
        scratch.clear();
        let mut stream_len = string_field_len(&s.labels);
        for e in &s.entries {
            let n = entry_len(e);
            scratch.push(n);
            stream_len += 1 + varint_len(n as u64) + n;
        }
        put_key(out, 1, LEN);
        put_varint(out, stream_len as u64);
        put_string(out, 1, &s.labels);
        for (e, n) in s.entries.iter().zip(scratch.iter()) {
            put_key(out, 2, LEN);
            put_varint(out, *n as u64);
            let ts = Timestamp::from_unix_nanos(e.ts);
            put_key(out, 1, LEN);
            put_varint(out, timestamp_len(ts) as u64);
            if ts.seconds != 0 {
                put_key(out, 1, VARINT);
                put_varint(out, ts.seconds as u64);
            }
            if ts.nanos != 0 {
                put_key(out, 2, VARINT);
                put_varint(out, i64::from(ts.nanos) as u64);
            }
            put_string(out, 2, &e.line);
            for (k, v) in &e.metadata {
                put_key(out, 3, LEN);
                put_varint(out, (string_field_len(k) + string_field_len(v)) as u64);
                put_string(out, 1, k);
                put_string(out, 2, v);
            }
        }
    }
}

const VARINT: u8 = 0;
const LEN: u8 = 2;

fn varint_len(v: u64) -> usize {
    ((64 - (v | 1).leading_zeros()) as usize).div_ceil(7)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_key(out: &mut Vec<u8>, field: u8, wire: u8) {
    out.push((field << 3) | wire);
}

fn string_field_len(s: &str) -> usize {
    if s.is_empty() { 0 } else { 1 + varint_len(s.len() as u64) + s.len() }
}

fn put_string(out: &mut Vec<u8>, field: u8, s: &str) {
    if !s.is_empty() {
        put_key(out, field, LEN);
        put_varint(out, s.len() as u64);
        out.extend_from_slice(s.as_bytes());
    }
}

fn timestamp_len(ts: Timestamp) -> usize {
    let mut n = 0;
    if ts.seconds != 0 {
        n += 1 + varint_len(ts.seconds as u64);
    }
    if ts.nanos != 0 {
        n += 1 + varint_len(i64::from(ts.nanos) as u64);
    }
    n
}

fn entry_len(e: &crate::pipeline::Entry) -> usize {
    let t = timestamp_len(Timestamp::from_unix_nanos(e.ts));
    let mut n = 1 + varint_len(t as u64) + t + string_field_len(&e.line);
    for (k, v) in &e.metadata {
        let m = string_field_len(k) + string_field_len(v);
        n += 1 + varint_len(m as u64) + m;
    }
    n
}

/// The same request as prost structs (what [`encode_push_request`] is checked against).
pub fn to_push_request(batch: LogBatch) -> PushRequest {
    PushRequest {
        streams: batch
            .streams
            .into_iter()
            .map(|s| StreamAdapter {
                labels: s.labels.to_string(),
                entries: s
                    .entries
                    .into_iter()
                    .map(|e| EntryAdapter {
                        timestamp: Some(Timestamp::from_unix_nanos(e.ts)),
                        line: e.line,
                        structured_metadata: e
                            .metadata
                            .into_iter()
                            .map(|(name, value)| LabelPairAdapter { name, value })
                            .collect(),
                    })
                    .collect(),
                hash: 0,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::{Entry, StreamLines};
    use proptest::prelude::*;
    use prost::Message;

    fn batch() -> impl Strategy<Value = LogBatch> {
        let entry = (any::<i64>(), "\\PC{0,40}", proptest::collection::vec(("[a-z]{0,5}", "\\PC{0,8}"), 0..3))
            .prop_map(|(ts, line, metadata)| Entry { ts, line, metadata });
        let stream = ("\\PC{0,30}", proptest::collection::vec(entry, 0..6))
            .prop_map(|(labels, entries)| StreamLines { labels: labels.into(), entries });
        proptest::collection::vec(stream, 0..4).prop_map(|streams| LogBatch { streams, ..LogBatch::default() })
    }

    proptest! {
        /// Byte for byte what prost encodes, so the receiver sees the standard message.
        #[test]
        fn hand_encoding_matches_prost(b in batch()) {
            let mut ours = Vec::new();
            encode_push_request(&b, &mut ours, &mut Vec::new());
            let theirs = to_push_request(b).encode_to_vec();
            prop_assert_eq!(ours, theirs);
        }
    }
}
