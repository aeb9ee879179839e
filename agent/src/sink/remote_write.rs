//! remote_write 1.0 sink: protobuf + snappy to the collector, Prometheus, VictoriaMetrics or
//! Mimir, through the disk queue.
//!
//! Two tasks:
//!
//! - the **encoder** takes [`Batch`]es from a bounded channel, splits them into requests of at
//!   most `batch_max_samples` samples, encodes each (protobuf, snappy block) and pushes it into
//!   the [`DiskQueue`](crate::queue::DiskQueue). Every batch goes through the queue, so an outage
//!   or a restart changes nothing about the order or completeness of what is sent; the queue's
//!   bound (oldest dropped, counted) is the only place data can be lost, and only by design.
//! - the **sender** reads requests from the queue in order and posts them with at most
//!   `max_concurrent_requests` in flight. Requests from the same source (the host collector,
//!   one scrape target) are never in flight together, so every series reaches the receiver in
//!   timestamp order (Prometheus refuses out-of-order samples); different sources go in
//!   parallel. A record is acknowledged to the queue only when it and every record before it
//!   are delivered (an ordered finalizer), so a crash resends rather than loses.
//!
//! A queue record is `source u64 LE | snappy(protobuf WriteRequest)`.

use super::http::{Delivery, HttpSender};
use crate::queue::{DiskQueue, Record, RecordId};
use bytes::Bytes;
use osprey_protocol::prompb::{TimeSeries, WriteRequest};
use prost::Message;
use std::collections::VecDeque;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

/// Series from one source, all sampled in one collection or scrape.
#[derive(Debug, Default)]
pub struct Batch {
    /// Identifies the source (host collector, scrape target): batches of one source are sent
    /// one at a time, in order.
    pub source: u64,
    pub series: Vec<TimeSeries>,
}

/// Encodes batches from `rx` into the queue until every producer is gone. It does not stop on
/// shutdown by itself: producers stop first and drop their senders, so whatever they already
/// produced still reaches the disk (nothing collected is lost to a graceful restart).
pub async fn run_encoder(queue: Arc<DiskQueue>, mut rx: mpsc::Receiver<Batch>, batch_max_samples: usize) {
    let mut encoder = snap::raw::Encoder::new();
    let mut raw = Vec::new();
    while let Some(batch) = rx.recv().await {
        let mut series = batch.series;
        while !series.is_empty() {
            let rest = take_samples(&mut series, batch_max_samples.max(1));
            let req = WriteRequest { timeseries: std::mem::replace(&mut series, rest), metadata: vec![] };
            raw.clear();
            if let Err(e) = req.encode(&mut raw) {
                tracing::error!(error = %e, "cannot encode a remote_write request; dropping it");
                continue;
            }
            let mut record = Vec::with_capacity(8 + snap::raw::max_compress_len(raw.len()));
            record.extend_from_slice(&batch.source.to_le_bytes());
            let mut compressed = Vec::new();
            osprey_protocol::snappy::compress_into(&mut encoder, &raw, &mut compressed);
            record.extend_from_slice(&compressed);
            let q = queue.clone();
            match tokio::task::spawn_blocking(move || q.push(&record)).await {
                Ok(Ok(())) => {}
                // Too large: counted by the queue. I/O: the disk is the problem; say so.
                Ok(Err(e)) => tracing::error!(error = %e, "cannot queue a remote_write request; dropping it"),
                Err(e) => tracing::error!(error = %e, "queue writer task failed"),
            }
        }
    }
}

/// Splits `series` so the first part holds at most `max` samples; returns the rest.
fn take_samples(series: &mut Vec<TimeSeries>, max: usize) -> Vec<TimeSeries> {
    let mut n = 0;
    let mut cut = series.len();
    for (i, s) in series.iter().enumerate() {
        n += s.samples.len().max(1);
        if n > max && i > 0 {
            cut = i;
            break;
        }
    }
    series.split_off(cut)
}

struct InFlight {
    id: RecordId,
    source: u64,
    done: bool,
}

/// Sends queued requests in order with at most `max_in_flight` concurrent requests, until
/// shutdown.
pub async fn run_sender(
    sender: HttpSender,
    queue: Arc<DiskQueue>,
    max_in_flight: usize,
    mut shutdown: watch::Receiver<bool>,
) {
    let sender = Arc::new(sender);
    let max_in_flight = max_in_flight.max(1);
    let mut window: VecDeque<InFlight> = VecDeque::new();
    let mut tasks: JoinSet<(RecordId, Delivery)> = JoinSet::new();
    let mut waiting: Option<(u64, Record)> = None;
    loop {
        // Start the waiting record unless its source already has a request in flight.
        if let Some((source, _)) = &waiting
            && window.len() < max_in_flight
            && !window.iter().any(|w| !w.done && w.source == *source)
            && let Some((source, record)) = waiting.take()
        {
            window.push_back(InFlight { id: record.id, source, done: false });
            let sender = sender.clone();
            let mut stop = shutdown.clone();
            let id = record.id;
            let body = Bytes::from(record.bytes).slice(8..);
            tasks.spawn(async move { (id, sender.send(body, &mut stop).await) });
        }
        tokio::select! {
            r = queue.next_wait(), if waiting.is_none() && window.len() < max_in_flight => match r {
                Ok(record) => {
                    let Some(source) = record.bytes.get(..8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes) else {
                        tracing::error!("remote_write queue record shorter than its header; skipping it");
                        ack(&queue, record.id).await;
                        continue;
                    };
                    waiting = Some((source, record));
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the remote_write queue; retrying in 1s");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
            },
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                let Ok((id, delivery)) = done else { continue };
                if delivery == Delivery::Interrupted {
                    break;
                }
                if let Some(w) = window.iter_mut().find(|w| w.id == id) {
                    w.done = true;
                }
                // Ordered finalizer: acknowledge the delivered prefix of the window.
                let mut last = None;
                while window.front().is_some_and(|w| w.done) {
                    last = window.pop_front().map(|w| w.id);
                }
                if let Some(id) = last {
                    ack(&queue, id).await;
                }
            },
            // Drop the watch guard inside: it must not live across the arms' awaits.
            _ = async { let _ = shutdown.wait_for(|s| *s).await; } => break,
        }
    }
    // In-flight requests see the shutdown too; whatever they did not finish stays queued.
    tasks.shutdown().await;
}

async fn ack(queue: &Arc<DiskQueue>, id: RecordId) {
    let q = queue.clone();
    match tokio::task::spawn_blocking(move || q.ack(id)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::error!(error = %e, "cannot persist the remote_write queue position; records may be resent")
        }
        Err(e) => tracing::error!(error = %e, "queue ack task failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use osprey_protocol::prompb::Sample;

    fn series(n: usize, samples: usize) -> Vec<TimeSeries> {
        (0..n)
            .map(|i| TimeSeries {
                labels: vec![osprey_protocol::prompb::Label::new("__name__", format!("m{i}"))],
                samples: (0..samples).map(|t| Sample { value: 1.0, timestamp: t as i64 }).collect(),
                exemplars: vec![],
            })
            .collect()
    }

    #[test]
    fn splits_batches_by_sample_count() {
        let mut s = series(10, 1);
        let rest = take_samples(&mut s, 4);
        assert_eq!((s.len(), rest.len()), (4, 6));
        let mut s = series(3, 5);
        let rest = take_samples(&mut s, 4);
        assert_eq!((s.len(), rest.len()), (1, 2), "a series larger than the limit still goes alone");
        let mut s = series(2, 1);
        assert!(take_samples(&mut s, 4).is_empty());
    }
}
