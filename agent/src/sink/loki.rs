//! Loki push sink: protobuf + snappy to `/loki/api/v1/push` of the collector or any Loki.
//!
//! Batches are sent one at a time, in the order they arrive, so their receipts finish in order:
//! that is what lets a file's checkpoint move only past lines the receiver has stored.

use super::http::{Delivery, HttpSender};
use crate::pipeline::{LogBatch, Outcome};
use bytes::Bytes;
use osprey_protocol::logproto::{EntryAdapter, LabelPairAdapter, PushRequest, StreamAdapter, Timestamp};
use prost::Message;
use tokio::sync::{mpsc, watch};

/// Sends batches from `rx` in order until the channel closes (the source stopped and everything
/// queued was sent) or `abort` turns true (a retry in progress is then abandoned, unacknowledged).
pub async fn run(sender: HttpSender, mut rx: mpsc::Receiver<LogBatch>, mut abort: watch::Receiver<bool>) {
    let mut raw = Vec::new();
    let mut compressed = Vec::new();
    let mut encoder = snap::raw::Encoder::new();
    while let Some(mut batch) = rx.recv().await {
        let receipt = std::mem::take(&mut batch.receipt);
        if batch.is_empty() {
            // Only positions (every line was filtered out): nothing to send, safe to move on.
            receipt.finish(Outcome::Delivered);
            continue;
        }
        let req = to_push_request(batch);
        raw.clear();
        if req.encode(&mut raw).is_err() {
            tracing::error!("cannot encode a push request; dropping the batch");
            receipt.finish(Outcome::Refused);
            continue;
        }
        drop(req);
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
