//! Loki push sink: protobuf + snappy to `/loki/api/v1/push` of the collector or any Loki.
//!
//! Up to `max_in_flight` batches are encoded, compressed and sent at once (each on its own task,
//! so compression uses every core and a receiver that fsyncs per request is not waited for one
//! request at a time), but their receipts are finished strictly in the order the batches
//! arrived: that is what lets a file's checkpoint move only past lines the receiver has stored,
//! whatever order the answers come back in.

use super::http::{Delivery, HttpSender};
use crate::pipeline::{LogBatch, Outcome, Receipt};
use bytes::Bytes;
use osprey_protocol::logproto::{EntryAdapter, LabelPairAdapter, PushRequest, StreamAdapter, Timestamp};
use std::collections::VecDeque;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinError, JoinHandle};

/// Encoding buffers, reused from batch to batch.
#[derive(Default)]
struct Buffers {
    raw: Vec<u8>,
    compressed: Vec<u8>,
    scratch: Vec<usize>,
}

type InFlight = VecDeque<(JoinHandle<(Delivery, Buffers)>, Receipt)>;

/// The oldest request's outcome (pending forever when none is in flight).
async fn oldest(q: &mut InFlight) -> Result<(Delivery, Buffers), JoinError> {
    match q.front_mut() {
        Some((h, _)) => h.await,
        None => std::future::pending().await,
    }
}

/// Sends batches from `rx` until the channel closes (the source stopped and everything queued
/// was sent) or `abort` turns true (retries in progress are then abandoned, unacknowledged).
pub async fn run(
    sender: HttpSender,
    mut rx: mpsc::Receiver<LogBatch>,
    abort: watch::Receiver<bool>,
    max_in_flight: usize,
) {
    let sender = Arc::new(sender);
    let max_in_flight = max_in_flight.max(1);
    let mut pool: Vec<Buffers> = Vec::new();
    let mut in_flight: InFlight = VecDeque::new();
    let mut open = true;
    while open || !in_flight.is_empty() {
        tokio::select! {
            biased;
            done = oldest(&mut in_flight) => {
                let Some((_, receipt)) = in_flight.pop_front() else { continue };
                let Ok((delivery, mut buffers)) = done else {
                    tracing::error!("a log send task failed; stopping the sink (the lines are read again after a restart)");
                    break;
                };
                // Keep the buffers' capacity, but not a one-off giant's.
                if buffers.raw.capacity() > 64 << 20 {
                    buffers = Buffers::default();
                }
                pool.push(buffers);
                match delivery {
                    Delivery::Delivered => receipt.finish(Outcome::Delivered),
                    Delivery::Refused(_) => receipt.finish(Outcome::Refused),
                    Delivery::Interrupted => break,
                }
            }
            batch = rx.recv(), if open && in_flight.len() < max_in_flight => {
                let Some(mut batch) = batch else {
                    open = false;
                    continue;
                };
                let receipt = std::mem::take(&mut batch.receipt);
                if batch.is_empty() && in_flight.is_empty() {
                    // Only positions (every line was filtered out): nothing to send.
                    receipt.finish(Outcome::Delivered);
                    continue;
                }
                let mut buffers = pool.pop().unwrap_or_default();
                let sender = sender.clone();
                let mut abort = abort.clone();
                let task = tokio::spawn(async move {
                    if batch.is_empty() {
                        // Finishes after the batches before it, like any other.
                        return (Delivery::Delivered, buffers);
                    }
                    encode_push_request(&batch, &mut buffers.raw, &mut buffers.scratch);
                    drop(batch);
                    let mut encoder = snap::raw::Encoder::new();
                    osprey_protocol::snappy::compress_into(&mut encoder, &buffers.raw, &mut buffers.compressed);
                    let body = Bytes::copy_from_slice(&buffers.compressed);
                    (sender.send(body, &mut abort).await, buffers)
                });
                in_flight.push_back((task, receipt));
            }
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

    /// Reads one HTTP/1.1 request with a Content-Length body from `conn`; returns the body.
    async fn read_request(conn: &mut tokio::net::TcpStream) -> Option<Vec<u8>> {
        use tokio::io::AsyncReadExt;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = conn.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                while buf.len() < end + 4 + len {
                    let n = conn.read(&mut chunk).await.ok()?;
                    if n == 0 {
                        return None;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                return Some(buf[end + 4..end + 4 + len].to_vec());
            }
        }
    }

    /// Answers come back out of order (the second request first); receipts still finish in
    /// the order the batches were handed to the sink.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn receipts_finish_in_order_when_answers_do_not() {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let second_answered = Arc::new(tokio::sync::Notify::new());
        let answered = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (n2, a2) = (second_answered.clone(), answered.clone());
        tokio::spawn(async move {
            loop {
                let (mut conn, _) = listener.accept().await.unwrap();
                let (n, a) = (n2.clone(), a2.clone());
                tokio::spawn(async move {
                    while let Some(body) = read_request(&mut conn).await {
                        // Which batch is it? (whatever connection the client chose)
                        let raw = snap::raw::Decoder::new().decompress_vec(&body).unwrap();
                        let me = if raw.windows(6).any(|w| w == b"line 1") { 1 } else { 2 };
                        if me == 1 {
                            // Hold the first batch until the second was answered.
                            n.notified().await;
                        }
                        a.lock().unwrap().push(me);
                        let _ = conn.write_all(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n").await;
                        if me == 2 {
                            n.notify_one();
                        }
                    }
                });
            }
        });
        let telemetry = crate::telemetry::Telemetry::new(&mut prometheus_client::registry::Registry::default());
        let sender = HttpSender::new(
            "loki",
            super::super::http::SenderOptions {
                url: format!("http://{addr}/loki/api/v1/push"),
                headers: vec![],
                tenant: String::new(),
                bearer_token: None,
                timeout: std::time::Duration::from_secs(10),
                initial_backoff: std::time::Duration::from_millis(10),
                max_backoff: std::time::Duration::from_millis(100),
                tls: None,
            },
            telemetry,
        )
        .unwrap();
        let (tx, rx) = mpsc::channel(4);
        let (_abort_tx, abort) = watch::channel(false);
        let finished = Arc::new(std::sync::Mutex::new(Vec::new()));
        for i in 1..=2u32 {
            let f = finished.clone();
            let batch = LogBatch {
                streams: vec![StreamLines {
                    labels: "{job=\"t\"}".into(),
                    entries: vec![Entry { ts: 1, line: format!("line {i}"), metadata: vec![] }],
                }],
                bytes: 6,
                lines: 1,
                receipt: Receipt::new(move |o| f.lock().unwrap().push((i, o))),
            };
            tx.send(batch).await.unwrap();
        }
        drop(tx);
        tokio::time::timeout(std::time::Duration::from_secs(60), run(sender, rx, abort, 4))
            .await
            .expect("both batches were sent concurrently");
        assert_eq!(*answered.lock().unwrap(), vec![2, 1], "the receiver answered out of order");
        assert_eq!(*finished.lock().unwrap(), vec![(1, Outcome::Delivered), (2, Outcome::Delivered)]);
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
