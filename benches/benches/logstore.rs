//! Hot paths of the log store on 1 MiB of Loghub lines (one block): column encoding + zstd at
//! the flush and merge levels, decoding, building the token and n-gram filters, and probing them.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use osprey_benches::loghub_lines;
use osprey_collector::logs::block::{BlockEncoder, DecodedBlock};
use osprey_collector::logs::filter::{FilterBuilder, Probe};
use std::hint::black_box;

fn block_lines() -> Vec<String> {
    let mut out = Vec::new();
    let mut bytes = 0;
    for l in loghub_lines().into_iter().cycle() {
        if bytes >= 1 << 20 {
            break;
        }
        bytes += l.len();
        out.push(l);
    }
    out
}

fn blocks(c: &mut Criterion) {
    let lines = block_lines();
    let bytes: usize = lines.iter().map(String::len).sum();
    let mut g = c.benchmark_group("block_1MiB");
    g.throughput(Throughput::Bytes(bytes as u64));
    let (mut raw, mut out) = (Vec::new(), Vec::new());
    for level in [3, 9] {
        g.bench_function(format!("encode_zstd{level}"), |b| {
            b.iter(|| {
                let mut enc = BlockEncoder::default();
                for (i, l) in lines.iter().enumerate() {
                    enc.push(i as i64, l, &[]);
                }
                enc.finish(level, &mut raw, &mut out).expect("encode");
                out.len()
            })
        });
    }
    let mut enc = BlockEncoder::default();
    for (i, l) in lines.iter().enumerate() {
        enc.push(i as i64, l, &[]);
    }
    let raw_len = enc.finish(3, &mut raw, &mut out).expect("encode");
    g.bench_function("decode", |b| b.iter(|| DecodedBlock::decode(black_box(&out), raw_len).expect("decode").len()));
    g.bench_function("filters_build", |b| {
        b.iter(|| {
            let mut f = FilterBuilder::default();
            for l in &lines {
                f.add_line(l.as_bytes());
            }
            f.finish().size_bytes()
        })
    });
    g.finish();
    let mut f = FilterBuilder::default();
    for l in &lines {
        f.add_line(l.as_bytes());
    }
    let filter = f.finish();
    let probes = [Probe::new(b"blk_-1608999687919862906"), Probe::new(b"ession clo")];
    c.bench_function("filter_probe_2_hints", |b| b.iter(|| filter.may_contain_all(black_box(&probes))));
}

criterion_group!(benches, blocks);
criterion_main!(benches);
