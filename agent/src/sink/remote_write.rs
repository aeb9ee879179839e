//! remote_write 1.0 sink: protobuf + snappy to the collector, Prometheus, VictoriaMetrics or
//! Mimir.

use super::http::{Delivery, HttpSender};
use crate::pipeline::MetricBatch;
use bytes::Bytes;
use osprey_protocol::prompb::WriteRequest;
use prost::Message;
use tokio::sync::{mpsc, watch};

pub async fn run(sender: HttpSender, mut rx: mpsc::Receiver<MetricBatch>, mut shutdown: watch::Receiver<bool>) {
    let mut raw = Vec::new();
    let mut compressed = Vec::new();
    let mut encoder = snap::raw::Encoder::new();
    while let Some(batch) = rx.recv().await {
        if batch.series.is_empty() {
            continue;
        }
        let req = WriteRequest { timeseries: batch.series, metadata: vec![] };
        raw.clear();
        if req.encode(&mut raw).is_err() {
            tracing::error!("cannot encode a remote_write request; dropping the batch");
            continue;
        }
        osprey_protocol::snappy::compress_into(&mut encoder, &raw, &mut compressed);
        if sender.send(Bytes::copy_from_slice(&compressed), &mut shutdown).await == Delivery::Interrupted {
            break;
        }
    }
}
