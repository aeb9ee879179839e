//! Merges and retention on real files: merges replace their inputs with one part holding every
//! line; retention by age (with a per-tenant override) and by size deletes whole part files,
//! oldest first; files left by an interrupted flush or merge are deleted at startup.

use osprey_collector::logs::{LogStore, ScanRequest};
use osprey_collector::selector::parse_series_selector;
use osprey_collector::telemetry::Telemetry;
use osprey_config::collector::{FsyncMode, TenantRetention};
use osprey_config::{CollectorConfig, Duration};
use osprey_protocol::logproto::{EntryAdapter, PushRequest, StreamAdapter, Timestamp};
use prometheus_client::registry::Registry;
use std::ops::ControlFlow;
use std::path::Path;

const DAY: i64 = 86_400 * 1_000_000_000;

fn open(cfg: &CollectorConfig) -> LogStore {
    LogStore::open(cfg, Telemetry::new(&mut Registry::default())).unwrap()
}

fn base_config(dir: &Path) -> CollectorConfig {
    let mut cfg = CollectorConfig { data_dir: dir.to_path_buf(), ..Default::default() };
    cfg.logs.fsync = FsyncMode::Never;
    cfg.logs.block_bytes = 4096;
    cfg.logs.flush_interval = Duration::from_secs(3600);
    cfg.logs.maintenance_interval = Duration::from_secs(3600);
    cfg.logs.out_of_order_window = Duration::from_secs(400 * 86_400);
    cfg
}

fn push(store: &LogStore, tenant: &str, job: &str, ts: &[i64]) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let entries = ts
        .iter()
        .map(|&t| EntryAdapter {
            timestamp: Some(Timestamp::from_unix_nanos(t)),
            line: format!("{job} line at {t} with some text to compress: lorem ipsum dolor sit amet"),
            structured_metadata: vec![],
        })
        .collect();
    let req = PushRequest { streams: vec![StreamAdapter { labels: format!(r#"{{job="{job}"}}"#), entries, hash: 0 }] };
    let out = rt.block_on(store.push(tenant, req)).unwrap();
    assert!(out.refused.is_empty(), "{:?}", out.refused);
}

fn count(store: &LogStore, tenant: &str, job: &str) -> usize {
    let req = ScanRequest {
        tenant: tenant.into(),
        selector: parse_series_selector(&format!(r#"{{job="{job}"}}"#)).unwrap(),
        start_ns: 0,
        end_ns: i64::MAX,
        backward: false,
        line_hints: vec![],
    };
    let mut n = 0;
    store
        .scan(&req, &mut |_, _| {
            n += 1;
            ControlFlow::Continue(())
        })
        .unwrap();
    n
}

fn part_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir.join("logs/parts"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".part"))
        .collect();
    v.sort();
    v
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as i64
}

#[test]
fn merges_replace_inputs_with_one_part() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = base_config(tmp.path());
    cfg.logs.merge_min_parts = 3;
    let store = open(&cfg);
    let t0 = now();
    for round in 0..4 {
        let ts: Vec<i64> = (0..500).map(|i| t0 + (round * 500 + i) * 1_000_000).collect();
        push(&store, "t", "merge", &ts);
        store.flush_now().unwrap();
    }
    let before = part_files(tmp.path());
    assert!(before.len() >= 4, "{before:?}");
    store.maintain_now().unwrap();
    let after = part_files(tmp.path());
    assert!(after.len() < before.len(), "{before:?} -> {after:?}");
    assert!(after.iter().all(|f| !before.contains(f) || after.len() == 1), "inputs deleted: {after:?}");
    assert_eq!(count(&store, "t", "merge"), 2000);
    drop(store);
    let store = open(&cfg);
    assert_eq!(count(&store, "t", "merge"), 2000, "after restart");
    assert_eq!(part_files(tmp.path()), after);
}

#[test]
fn retention_by_age_per_tenant_and_by_size() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = base_config(tmp.path());
    cfg.logs.merge_min_parts = 100;
    cfg.logs.retention.period = Duration::from_secs(7 * 86_400);
    cfg.logs
        .retention
        .tenants
        .insert("short".into(), TenantRetention { period: Some(Duration::from_secs(86_400)), max_bytes: None });
    cfg.logs
        .retention
        .tenants
        .insert("small".into(), TenantRetention { period: Some(Duration::from_secs(0)), max_bytes: Some(60_000) });
    let store = open(&cfg);
    let t = now();
    let series = |start: i64| -> Vec<i64> { (0..300).map(|i| start + i * 1_000_000).collect() };
    // Default tenant: 10 days old (expires), 3 days old (kept).
    push(&store, "long", "old", &series(t - 10 * DAY));
    push(&store, "long", "recent", &series(t - 3 * DAY));
    // Per-tenant override of one day: 3 days old expires there.
    push(&store, "short", "recent", &series(t - 3 * DAY));
    push(&store, "short", "now", &series(t - 1_000_000_000));
    store.flush_now().unwrap();
    // Size-bounded tenant: five parts on five days, oldest first.
    for d in (0..5).rev() {
        push(
            &store,
            "small",
            &format!("day{d}"),
            &(0..2000).map(|i| t - d * DAY - i * 1_000_000).rev().collect::<Vec<_>>(),
        );
        store.flush_now().unwrap();
    }
    let files_before = part_files(tmp.path()).len();
    let small_bytes = |s: &LogStore| s.parts_summary().iter().filter(|p| p.0 == "small").map(|p| p.2).sum::<u64>();
    assert!(small_bytes(&store) > 60_000, "the test needs the size bound to bite: {}", small_bytes(&store));
    store.maintain_now().unwrap();
    assert_eq!(count(&store, "long", "old"), 0, "10 days old, 7 day retention");
    assert_eq!(count(&store, "long", "recent"), 300);
    assert_eq!(count(&store, "short", "recent"), 0, "per-tenant 1 day retention");
    assert_eq!(count(&store, "short", "now"), 300);
    assert!(small_bytes(&store) <= 60_000, "{}", small_bytes(&store));
    assert_eq!(count(&store, "small", "day0"), 2000, "newest kept");
    assert_eq!(count(&store, "small", "day4"), 0, "oldest deleted first");
    let files_after = part_files(tmp.path()).len();
    assert!(files_after < files_before, "whole files deleted: {files_before} -> {files_after}");
    assert_eq!(files_after, store.parts_summary().len(), "no file left behind");
}

#[test]
fn leftovers_of_interrupted_flushes_are_deleted_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = base_config(tmp.path());
    let store = open(&cfg);
    push(&store, "t", "a", &[now()]);
    store.flush_now().unwrap();
    drop(store);
    let parts = tmp.path().join("logs/parts");
    std::fs::write(parts.join("0000000000000999.part"), b"half a part").unwrap();
    std::fs::write(parts.join("0000000000000998.part.tmp"), b"torn").unwrap();
    let store = open(&cfg);
    assert_eq!(part_files(tmp.path()).len(), 1);
    assert!(!parts.join("0000000000000998.part.tmp").exists());
    assert_eq!(count(&store, "t", "a"), 1);
}
