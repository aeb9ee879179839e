//! The collector's metrics hot paths: remote_write decode (the borrowing decoder, 1.0 and 2.0)
//! and decode + store into the series store, in samples per second on one core; and rendering
//! `/federate`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use osprey_benches::{metrics_store, write_request, write_request_v2};
use osprey_collector::metrics::federate::{Format, render};
use osprey_protocol::remote_write::{decode_v1, decode_v2};
use osprey_protocol::{prompb, snappy, writev2};
use std::hint::black_box;

const SERIES: usize = 10_000;

fn decode(c: &mut Criterion) {
    let v1 = prompb::encode_write_request(&write_request(SERIES));
    let v2 = writev2::encode_request(&write_request_v2(SERIES));
    let mut g = c.benchmark_group("remote_write_decode_10k");
    g.throughput(Throughput::Elements(SERIES as u64));
    g.bench_function("v1_snappy_borrowing", |b| {
        b.iter(|| {
            let raw = snappy::decompress(black_box(&v1), 64 << 20).unwrap();
            decode_v1(&raw).unwrap().series.len()
        })
    });
    g.bench_function("v2_snappy_borrowing", |b| {
        b.iter(|| {
            let raw = snappy::decompress(black_box(&v2), 64 << 20).unwrap();
            decode_v2(&raw).unwrap().series.len()
        })
    });
    g.finish();
}

fn decode_and_store(c: &mut Criterion) {
    let v1 = prompb::encode_write_request(&write_request(SERIES));
    let v2 = writev2::encode_request(&write_request_v2(SERIES));
    let store = metrics_store();
    let mut g = c.benchmark_group("remote_write_decode_store_10k");
    g.throughput(Throughput::Elements(SERIES as u64));
    // Steady state: the series exist (every scrape after the first), each sample updates one.
    g.bench_function("v1", |b| {
        b.iter(|| {
            let raw = snappy::decompress(black_box(&v1), 64 << 20).unwrap();
            let view = decode_v1(&raw).unwrap();
            store.ingest("fake", &view).samples_written
        })
    });
    g.bench_function("v2", |b| {
        b.iter(|| {
            let raw = snappy::decompress(black_box(&v2), 64 << 20).unwrap();
            let view = decode_v2(&raw).unwrap();
            store.ingest("fake", &view).samples_written
        })
    });
    g.finish();
}

fn federate(c: &mut Criterion) {
    let store = metrics_store();
    let raw = snappy::decompress(&prompb::encode_write_request(&write_request(100_000)), 1 << 30).unwrap();
    store.ingest("fake", &decode_v1(&raw).unwrap());
    let mut g = c.benchmark_group("federate_100k");
    g.throughput(Throughput::Elements(100_000));
    g.sample_size(10);
    g.bench_function("text", |b| b.iter(|| render(&store, "fake", &[], Format::Text).len()));
    g.bench_function("openmetrics", |b| b.iter(|| render(&store, "fake", &[], Format::OpenMetrics).len()));
    g.finish();
}

criterion_group!(benches, decode, decode_and_store, federate);
criterion_main!(benches);
