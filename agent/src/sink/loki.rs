//! Loki push sink: protobuf + snappy to `/loki/api/v1/push` of the collector or any Loki.
//!
//! Up to `max_in_flight` batches are encoded, compressed and sent at once (each on its own task,
//! so compression uses every core and a receiver that fsyncs per request is not waited for one
//! request at a time), but their receipts are finished strictly in the order the batches
//! arrived: that is what lets a file's checkpoint move only past lines the receiver has stored,
//! whatever order the answers come back in.

use super::http::{Delivery, HttpSender};
use crate::pipeline::{BufferPool, LogBatch, Outcome, Receipt};
use bytes::Bytes;
use osprey_protocol::logproto::Timestamp;
use std::collections::VecDeque;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinError, JoinHandle};

/// The compressor's output buffer and tables, reused from batch to batch.
struct Buffers {
    /// Kept at its full length (the compressor's worst case), so it is never zeroed again.
    compressed: Vec<u8>,
    encoder: snap::raw::Encoder,
}

impl Default for Buffers {
    fn default() -> Self {
        Buffers { compressed: Vec::new(), encoder: snap::raw::Encoder::new() }
    }
}

/// Room in front of the compressed body for its length preamble (a varint of a `u32`: snappy
/// refuses inputs over 4 GiB, and batches are far below that).
const PREAMBLE: usize = 5;

/// Compresses the `logproto.PushRequest` that `pieces` (each stream's encoded bytes, in order)
/// form together into one snappy block in `out`; returns the block's range in `out`, or `None`
/// if snappy refused a piece (only inputs over 4 GiB, which batches never are).
///
/// The pieces are never concatenated: snappy's format is a length followed by literals and
/// back-references, and a piece compressed on its own refers only inside itself, so the
/// elements of pieces compressed one by one, behind the total length, decode to the pieces
/// in order. That saves copying every line once more, and a batch-sized buffer per request.
/// Each piece's own length preamble is overwritten by the next piece's elements: it is written
/// over the previous piece's last bytes, which are put back afterwards.
///
/// `out` is only grown, never cleared, so the same pages are reused and not zeroed per batch.
fn compress_pieces<'a>(
    encoder: &mut snap::raw::Encoder,
    pieces: impl Iterator<Item = &'a [u8]> + Clone,
    out: &mut Vec<u8>,
) -> Option<std::ops::Range<usize>> {
    let max = PREAMBLE + pieces.clone().map(|p| snap::raw::max_compress_len(p.len())).sum::<usize>();
    if out.len() < max {
        out.resize(max, 0);
    }
    let mut at = PREAMBLE;
    let mut total = 0u64;
    for piece in pieces {
        let preamble = varint_len(piece.len() as u64);
        let start = at - preamble;
        let mut saved = [0u8; PREAMBLE];
        saved[..preamble].copy_from_slice(&out[start..at]);
        let n = encoder.compress(piece, &mut out[start..]).ok()?;
        out[start..at].copy_from_slice(&saved[..preamble]);
        at = start + n;
        total += piece.len() as u64;
    }
    let mut head = Vec::with_capacity(PREAMBLE);
    put_varint(&mut head, total);
    let start = PREAMBLE.checked_sub(head.len())?;
    out[start..PREAMBLE].copy_from_slice(&head);
    Some(start..at)
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
/// The batches' stream buffers go back to `streams` once encoded.
pub async fn run(
    sender: HttpSender,
    mut rx: mpsc::Receiver<LogBatch>,
    abort: watch::Receiver<bool>,
    max_in_flight: usize,
    streams: BufferPool,
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
                if buffers.compressed.len() > 64 << 20 {
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
                let streams = streams.clone();
                let mut abort = abort.clone();
                let task = tokio::spawn(async move {
                    if batch.is_empty() {
                        // Finishes after the batches before it, like any other.
                        return (Delivery::Delivered, buffers);
                    }
                    let Buffers { compressed, encoder } = &mut buffers;
                    let encoded: Vec<&[u8]> = batch.streams.iter_mut().map(|s| s.encoded()).collect();
                    let Some(range) = compress_pieces(encoder, encoded.iter().copied(), compressed) else {
                        // Batches are bounded far below snappy's 4 GiB limit; refused for good
                        // (counted with the refused lines) rather than sent empty.
                        tracing::error!(bytes = batch.bytes, "a log batch is too large for one snappy block; dropped");
                        return (Delivery::Refused(http::StatusCode::PAYLOAD_TOO_LARGE), buffers);
                    };
                    let body = Bytes::copy_from_slice(&compressed[range]);
                    for s in batch.streams {
                        streams.give(s.into_buffer());
                    }
                    (sender.send(body, &mut abort).await, buffers)
                });
                in_flight.push_back((task, receipt));
            }
        }
    }
}

/// Encodes `batch` as a `logproto.PushRequest` into `out`, exactly as prost would (proto3:
/// empty strings, zero numbers and a zero hash are omitted; the timestamp message is always
/// present). The entries were encoded when the lines were read ([`put_entry`]), so this only
/// frames each stream and concatenates them. [`run`] does not even do that: it compresses the
/// streams one after the other ([`compress_pieces`]); this is the reference it is tested against.
pub fn encode_push_request(batch: &mut LogBatch, out: &mut Vec<u8>) {
    out.clear();
    out.reserve(batch.streams.iter().map(|s| s.entries_len() + s.labels.len() + 16).sum());
    for s in &mut batch.streams {
        out.extend_from_slice(s.encoded());
    }
}

/// Bytes to leave in front of a stream's entries for its header: the key, the length (at most
/// 5 bytes: batches are far below 4 GiB) and the labels field.
pub fn stream_header_room(labels: &str) -> usize {
    1 + 5 + string_field_len(labels)
}

/// Writes the header of a stream with `entries_len` bytes of entries at the end of `room` (the
/// room of [`stream_header_room`]); returns where in `room` it starts.
pub fn put_stream_header(room: &mut [u8], labels: &str, entries_len: usize) -> usize {
    let mut head = Vec::with_capacity(room.len());
    put_key(&mut head, 1, LEN);
    put_varint(&mut head, (string_field_len(labels) + entries_len) as u64);
    put_string(&mut head, 1, labels);
    let start = room.len() - head.len();
    room[start..].copy_from_slice(&head);
    start
}

/// Appends one `logproto.EntryAdapter` as field 2 of a `StreamAdapter` (key, length, message)
/// to `out`: the timestamp, the line, and its structured metadata. Called for every line read:
/// the keys, lengths and timestamp go out in one copy, then the line in another.
#[inline]
pub fn put_entry(out: &mut Vec<u8>, ts: i64, line: &str, metadata: &[(String, String)]) {
    let ts = Timestamp::from_unix_nanos(ts);
    let t = timestamp_len(ts);
    let mut n = 1 + varint_len(t as u64) + t + string_field_len(line);
    for (k, v) in metadata {
        let m = string_field_len(k) + string_field_len(v);
        n += 1 + varint_len(m as u64) + m;
    }
    // key + length (≤ 10) + key + length + timestamp (≤ 24) + key + line length (≤ 11).
    let mut head = [0u8; 48];
    let mut w = Cursor { buf: &mut head, at: 0 };
    w.key(2, LEN);
    w.varint(n as u64);
    w.key(1, LEN);
    w.varint(t as u64);
    if ts.seconds != 0 {
        w.key(1, VARINT);
        w.varint(ts.seconds as u64);
    }
    if ts.nanos != 0 {
        w.key(2, VARINT);
        w.varint(i64::from(ts.nanos) as u64);
    }
    if !line.is_empty() {
        w.key(2, LEN);
        w.varint(line.len() as u64);
    }
    let at = w.at;
    out.reserve(at + n);
    out.extend_from_slice(&head[..at]);
    out.extend_from_slice(line.as_bytes());
    for (k, v) in metadata {
        put_key(out, 3, LEN);
        put_varint(out, (string_field_len(k) + string_field_len(v)) as u64);
        put_string(out, 1, k);
        put_string(out, 2, v);
    }
}

/// Writes keys and varints into a fixed buffer (sized by the caller for the worst case).
struct Cursor<'a> {
    buf: &'a mut [u8],
    at: usize,
}

impl Cursor<'_> {
    fn key(&mut self, field: u8, wire: u8) {
        self.buf[self.at] = (field << 3) | wire;
        self.at += 1;
    }

    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.buf[self.at] = (v as u8) | 0x80;
            self.at += 1;
            v >>= 7;
        }
        self.buf[self.at] = v as u8;
        self.at += 1;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::StreamLines;
    use osprey_protocol::logproto::{EntryAdapter, LabelPairAdapter, PushRequest, StreamAdapter};
    use proptest::prelude::*;
    use prost::Message;

    type Entry = (i64, String, Vec<(String, String)>);

    fn streams() -> impl Strategy<Value = Vec<(String, Vec<Entry>)>> {
        let entry =
            (any::<i64>(), "\\PC{0,40}|[a-z ]{100,300}", proptest::collection::vec(("[a-z]{0,5}", "\\PC{0,8}"), 0..3));
        let stream = ("\\PC{0,30}", proptest::collection::vec(entry, 0..6));
        proptest::collection::vec(stream, 0..4)
    }

    /// The batch the tailer would build from these lines.
    fn batch_of(streams: &[(String, Vec<Entry>)]) -> LogBatch {
        let mut batch = LogBatch::default();
        for (labels, entries) in streams {
            // A reused buffer still holds an earlier batch's bytes: none may leak into this one.
            let mut s = StreamLines::with_buffer(labels.as_str().into(), vec![0xab; 300]);
            for (ts, line, metadata) in entries {
                s.push(*ts, line, metadata);
                batch.lines += 1;
                batch.bytes += line.len();
            }
            batch.streams.push(s);
        }
        batch
    }

    /// The same lines as prost structs.
    fn push_request_of(streams: Vec<(String, Vec<Entry>)>) -> PushRequest {
        PushRequest {
            streams: streams
                .into_iter()
                .map(|(labels, entries)| StreamAdapter {
                    labels,
                    entries: entries
                        .into_iter()
                        .map(|(ts, line, metadata)| EntryAdapter {
                            timestamp: Some(Timestamp::from_unix_nanos(ts)),
                            line,
                            structured_metadata: metadata
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
            let mut batch = batch_of(&[("{job=\"t\"}".to_string(), vec![(1, format!("line {i}"), vec![])])]);
            batch.receipt = Receipt::new(move |o| f.lock().unwrap().push((i, o)));
            tx.send(batch).await.unwrap();
        }
        drop(tx);
        tokio::time::timeout(std::time::Duration::from_secs(60), run(sender, rx, abort, 4, BufferPool::new(1 << 20)))
            .await
            .expect("both batches were sent concurrently");
        assert_eq!(*answered.lock().unwrap(), vec![2, 1], "the receiver answered out of order");
        assert_eq!(*finished.lock().unwrap(), vec![(1, Outcome::Delivered), (2, Outcome::Delivered)]);
    }

    proptest! {
        /// Byte for byte what prost encodes, so the receiver sees the standard message.
        #[test]
        fn hand_encoding_matches_prost(streams in streams()) {
            let mut ours = Vec::new();
            encode_push_request(&mut batch_of(&streams), &mut ours);
            let theirs = push_request_of(streams).encode_to_vec();
            prop_assert_eq!(ours, theirs);
        }

        /// Streams compressed one by one into a reused (dirty) buffer decode to the whole
        /// request, for any split: empty streams, streams over snappy's 64 KiB block size, and
        /// lengths whose preambles take one to three bytes.
        #[test]
        fn pieces_compress_to_the_whole_request(
            streams in streams(),
            big in proptest::collection::vec(0usize..200_000, 0..3),
            rounds in 1usize..3,
        ) {
            let mut batch = batch_of(&streams);
            for (i, n) in big.into_iter().enumerate() {
                let mut s = StreamLines::with_buffer(format!("{{big=\"{i}\"}}").into(), Vec::new());
                let line: String = (0..n).map(|j| char::from(b'a' + (j * 7 % 26) as u8)).collect();
                s.push(i as i64, &line, &[]);
                batch.streams.push(s);
            }
            let mut whole = Vec::new();
            encode_push_request(&mut batch, &mut whole);
            let mut encoder = snap::raw::Encoder::new();
            let mut out = vec![0x5a; 17];
            for _ in 0..rounds {
                let pieces: Vec<&[u8]> = batch.streams.iter_mut().map(|s| s.encoded()).collect();
                let range = compress_pieces(&mut encoder, pieces.iter().copied(), &mut out).expect("compresses");
                let back = snap::raw::Decoder::new().decompress_vec(&out[range]).expect("valid snappy");
                prop_assert_eq!(&back, &whole);
            }
        }
    }
}
