//! Encode and decode of the two wire formats the agent sends and the collector receives:
//! a 1 MiB Loki push batch and a 10k-series remote_write request (protobuf + snappy).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use osprey_benches::{push_request, write_request};
use osprey_protocol::{logproto, prompb};
use std::hint::black_box;

fn loki_push(c: &mut Criterion) {
    let req = push_request(1 << 20);
    let body = logproto::encode_push_request(&req);
    let line_bytes: usize = req.streams.iter().flat_map(|s| &s.entries).map(|e| e.line.len()).sum();
    let mut g = c.benchmark_group("loki_push_1MiB");
    g.throughput(Throughput::Bytes(line_bytes as u64));
    g.bench_function("encode_protobuf_snappy", |b| b.iter(|| logproto::encode_push_request(black_box(&req))));
    g.bench_function("decode_snappy_protobuf", |b| {
        b.iter(|| logproto::decode_push_request(black_box(&body), 64 << 20).expect("decodes"))
    });
    g.finish();
}

fn remote_write(c: &mut Criterion) {
    let req = write_request(10_000);
    let body = prompb::encode_write_request(&req);
    let mut g = c.benchmark_group("remote_write_10k_series");
    g.throughput(Throughput::Elements(10_000));
    g.bench_function("encode_protobuf_snappy", |b| b.iter(|| prompb::encode_write_request(black_box(&req))));
    g.bench_function("decode_snappy_protobuf", |b| {
        b.iter(|| prompb::decode_write_request(black_box(&body), 64 << 20).expect("decodes"))
    });
    g.finish();
}

criterion_group!(benches, loki_push, remote_write);
criterion_main!(benches);
