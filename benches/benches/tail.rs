//! The tailer's per-byte and per-line work, without the file system and the network: a 16 MiB
//! chunked read of Loghub lines split into lines (LF/CRLF, cap), checked as UTF-8 once per
//! chunk, and encoded into a batch's stream buffer as Loki entries, batches taken at 1 MiB as
//! the tailer does; and the snappy compression of those 1 MiB streams, which the sink does.
//! Together they are the agent's CPU per GiB in `tail_bench throughput --to receiver`, minus the
//! `pread` copy, the HTTP send and the checkpoint writes (`benches/RESULTS.md`).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use osprey_agent::pipeline::BufferPool;
use osprey_agent::tail::batch::BatchBuilder;
use osprey_agent::tail::lines::{LineSplitter, valid_prefix};
use std::hint::black_box;
use std::sync::Arc;

const CHUNK: usize = 256 << 10;
const BATCH: usize = 1 << 20;

fn input(bytes: usize) -> Vec<u8> {
    let lines = osprey_benches::loghub_lines();
    assert!(!lines.is_empty(), "no loghub lines in {}", osprey_benches::loghub_dir().display());
    let mut out = Vec::with_capacity(bytes + 4096);
    for l in lines.iter().cycle() {
        if out.len() >= bytes {
            break;
        }
        out.extend_from_slice(l.as_bytes());
        out.extend_from_slice(b"\n");
    }
    out
}

/// Splits and encodes `data` the way the tailer's read loop does; returns the lines seen.
fn split_and_encode(data: &[u8], batch: &mut BatchBuilder, pool: &BufferPool, labels: &Arc<str>) -> usize {
    let mut splitter = LineSplitter::new(256 << 10);
    let mut lines = 0;
    let mut ts = 1_764_165_600_000_000_000i64;
    for (i, chunk) in data.chunks(CHUNK).enumerate() {
        let valid = valid_prefix(chunk);
        splitter.feed(chunk, (i * CHUNK) as u64, |line| {
            lines += 1;
            ts += 1;
            let text = line.at.and_then(|at| valid.get(at..at + line.bytes.len())).unwrap_or("");
            batch.push(labels, ts, text, &[]);
        });
        if batch.bytes >= BATCH {
            let (b, _) = batch.take();
            for s in b.streams {
                pool.give(s.into_buffer());
            }
        }
    }
    lines
}

fn tail_path(c: &mut Criterion) {
    let data = input(16 << 20);
    let labels: Arc<str> = Arc::from("{filename=\"/var/log/app.log\", host=\"bench\", job=\"bench\"}");
    let pool = BufferPool::new(8 << 20);
    let mut batch = BatchBuilder::with_pool(pool.clone());
    let mut g = c.benchmark_group("tail_16MiB");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("split_check_encode", |b| {
        b.iter(|| split_and_encode(black_box(&data), &mut batch, &pool, &labels))
    });
    g.finish();

    // The same lines as the sink gets them: 1 MiB streams, each compressed on its own.
    let mut encoded = Vec::new();
    let mut lines = 0;
    for part in data.chunks(BATCH) {
        let mut one = BatchBuilder::default();
        split_and_encode(part, &mut one, &pool, &labels);
        let (mut b, _) = one.take();
        lines += b.bytes;
        encoded.push(b.streams[0].encoded().to_vec());
    }
    let mut encoder = snap::raw::Encoder::new();
    let mut out = vec![0u8; snap::raw::max_compress_len(BATCH * 2)];
    let mut g = c.benchmark_group("tail_16MiB");
    g.throughput(Throughput::Bytes(lines as u64));
    g.bench_function("snappy_compress_1MiB_batches", |bn| {
        bn.iter(|| {
            let mut n = 0;
            for e in &encoded {
                n += encoder.compress(black_box(e), &mut out).expect("compresses");
            }
            n
        })
    });
    g.finish();
}

criterion_group!(benches, tail_path);
criterion_main!(benches);
