//! Parser throughput (MB/s of exposition text): a real node_exporter 1.5 body (captured on the
//! project's machine, `testdata/exposition/`) and a generated 20k-series body, in text 0.0.4
//! and OpenMetrics. Every sample's labels are iterated, as the scraper does.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use osprey_benches::{exposition_20k, node_exporter_body};
use osprey_protocol::exposition::{Entry, Format, Parser};
use std::hint::black_box;

fn parse_all(body: &[u8], format: Format) -> (usize, f64) {
    let mut n = 0;
    let mut sum = 0.0;
    for e in Parser::new(body, format) {
        if let Ok(Entry::Sample(s)) = e {
            n += s.labels().count() + 1;
            sum += s.value;
        }
    }
    (n, sum)
}

fn exposition(c: &mut Criterion) {
    let node = node_exporter_body();
    let big = exposition_20k(false);
    let big_om = exposition_20k(true);
    let mut g = c.benchmark_group("exposition_parse");
    for (name, body, format) in [
        ("node_exporter_1.5_text", &node, Format::Text),
        ("20k_series_text", &big, Format::Text),
        ("20k_series_openmetrics", &big_om, Format::OpenMetrics),
    ] {
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_function(name, |b| b.iter(|| parse_all(black_box(body), format)));
    }
    g.finish();
}

criterion_group!(benches, exposition);
criterion_main!(benches);
