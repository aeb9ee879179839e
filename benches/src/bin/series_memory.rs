//! Heap bytes per active series in the collector's series store, counted exactly by a
//! counting allocator (no RSS noise), and the time to render `/federate` of all of them.
//!
//! `cargo run --release -p osprey-benches --bin series_memory -- [SERIES]` (default 1,000,000).

use osprey_benches::{fleet_request, metrics_store};
use osprey_collector::metrics::federate::{Format, render};
use osprey_protocol::remote_write::decode_v1;
use prost::Message;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts the sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(1_000_000);
    let store = metrics_store();
    let (heap0, rss0) = (LIVE.load(Ordering::Relaxed), rss_kib());
    let started = Instant::now();
    let batch = 10_000;
    let mut i = 0;
    while i < n {
        let k = batch.min(n - i);
        let raw = fleet_request(i, k, 1_700_000_000_000).encode_to_vec();
        let view = decode_v1(&raw).expect("decodes");
        let out = store.ingest("fake", &view);
        assert_eq!(out.series_written as usize, k, "{:?}", out.over_limit);
        i += k;
    }
    let load = started.elapsed();
    let (heap1, rss1) = (LIVE.load(Ordering::Relaxed), rss_kib());
    let heap = heap1 - heap0;
    println!("series: {}", store.len());
    println!("created in {:.2} s ({:.0} new series/s)", load.as_secs_f64(), n as f64 / load.as_secs_f64());
    println!("heap: {} bytes, {:.1} bytes per series (counted by the allocator)", heap, heap as f64 / n as f64);
    println!(
        "store estimate (osprey_metrics_index_bytes): {:.1} bytes per series",
        store.heap_bytes() as f64 / n as f64
    );
    println!("RSS: {} KiB more, {:.1} bytes per series", rss1 - rss0, (rss1 - rss0) as f64 * 1024.0 / n as f64);
    for (name, format) in [("text", Format::Text), ("openmetrics", Format::OpenMetrics)] {
        let t = Instant::now();
        let chunks = render(&store, "fake", &[], format);
        let bytes: usize = chunks.iter().map(|c| c.len()).sum();
        println!("federate {name}: {:.3} s for {} series, {} MiB", t.elapsed().as_secs_f64(), n, bytes >> 20);
    }
}
