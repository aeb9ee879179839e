//! remote_write decode + store throughput per core, measured in this thread's CPU time (from
//! `/proc/thread-self/stat`), so other processes on a shared machine do not inflate it the way
//! they inflate wall-clock benches.
//!
//! `cargo run --release -p osprey-benches --bin ingest_cpu -- [SERIES_PER_REQUEST] [CPU_SECONDS]`

use osprey_benches::{metrics_store, write_request, write_request_v2};
use osprey_protocol::remote_write::{decode_v1, decode_v2};
use osprey_protocol::{prompb, snappy, writev2};

/// (user + system) CPU seconds of the calling thread.
fn thread_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (the state), so utime (field 14) is at index 11, stime at 12.
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    (ticks(11) + ticks(12)) as f64 / 100.0
}

fn measure(name: &str, n: usize, cpu_seconds: f64, mut step: impl FnMut() -> u64) {
    // Warm up (and create the series) first.
    for _ in 0..3 {
        step();
    }
    let start = thread_cpu();
    let wall = std::time::Instant::now();
    let mut samples = 0u64;
    while thread_cpu() - start < cpu_seconds {
        samples += step();
    }
    let cpu = thread_cpu() - start;
    println!(
        "{name}: {n} series/request: {:.2} M samples per CPU-second ({samples} samples, {cpu:.2} CPU-s, {:.2} s wall)",
        samples as f64 / cpu / 1e6,
        wall.elapsed().as_secs_f64()
    );
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let secs: f64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(5.0);
    let v1 = prompb::encode_write_request(&write_request(n));
    let v2 = writev2::encode_request(&write_request_v2(n));
    measure("decode v1", n, secs, || {
        let raw = snappy::decompress(&v1, 1 << 30).unwrap();
        decode_v1(&raw).unwrap().series.len() as u64
    });
    measure("decode v2", n, secs, || {
        let raw = snappy::decompress(&v2, 1 << 30).unwrap();
        decode_v2(&raw).unwrap().series.len() as u64
    });
    {
        let store = metrics_store();
        measure("decode + store v1", n, secs, || {
            let raw = snappy::decompress(&v1, 1 << 30).unwrap();
            store.ingest("fake", &decode_v1(&raw).unwrap()).samples_written
        });
    }
    {
        let store = metrics_store();
        measure("decode + store v2", n, secs, || {
            let raw = snappy::decompress(&v2, 1 << 30).unwrap();
            store.ingest("fake", &decode_v2(&raw).unwrap()).samples_written
        });
    }
}
