//! Loki push sink: protobuf + snappy to `/loki/api/v1/push` of the collector or any Loki.

use super::http::{Delivery, HttpSender};
use crate::pipeline::LogBatch;
use bytes::Bytes;
use osprey_protocol::logproto::{EntryAdapter, PushRequest, StreamAdapter, Timestamp};
use prost::Message;
use tokio::sync::{mpsc, watch};

/// Sends batches from `rx` in order until the channel closes or shutdown is signalled.
pub async fn run(sender: HttpSender, mut rx: mpsc::Receiver<LogBatch>, mut shutdown: watch::Receiver<bool>) {
    let mut raw = Vec::new();
    let mut compressed = Vec::new();
    let mut encoder = snap::raw::Encoder::new();
    while let Some(batch) = rx.recv().await {
        if batch.is_empty() {
            continue;
        }
        let req = to_push_request(batch);
        raw.clear();
        if req.encode(&mut raw).is_err() {
            tracing::error!("cannot encode a push request; dropping the batch");
            continue;
        }
        osprey_protocol::snappy::compress_into(&mut encoder, &raw, &mut compressed);
        if sender.send(Bytes::copy_from_slice(&compressed), &mut shutdown).await == Delivery::Interrupted {
            break;
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
                    .map(|(ts, line)| EntryAdapter {
                        timestamp: Some(Timestamp::from_unix_nanos(ts)),
                        line,
                        structured_metadata: vec![],
                    })
                    .collect(),
                hash: 0,
            })
            .collect(),
    }
}
