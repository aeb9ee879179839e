//! `LogStore::scan` and `::series` are exact: generated streams plus the Loghub samples are
//! pushed through the real store (WAL, head, flushes into parts, merges, a restart that replays
//! the WAL), and every answer to random selectors, time ranges and line hints is compared with a
//! naive scan of the same data.

use osprey_collector::logs::{LogStore, ScanRequest};
use osprey_collector::selector::parse_series_selector;
use osprey_collector::telemetry::Telemetry;
use osprey_config::CollectorConfig;
use osprey_protocol::logproto::{EntryAdapter, LabelPairAdapter, PushRequest, StreamAdapter, Timestamp};
use prometheus_client::registry::Registry;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeSet;
use std::ops::ControlFlow;
use std::path::Path;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Row {
    labels: String,
    ts: i64,
    line: String,
    meta: Vec<(String, String)>,
}

fn config(dir: &Path) -> CollectorConfig {
    let mut cfg = CollectorConfig { data_dir: dir.to_path_buf(), ..Default::default() };
    cfg.logs.block_bytes = 8192;
    cfg.logs.merge_min_parts = 2;
    cfg.logs.flush_interval = osprey_config::Duration::from_secs(3600);
    cfg.logs.maintenance_interval = osprey_config::Duration::from_secs(3600);
    cfg.logs.fsync = osprey_config::collector::FsyncMode::Never;
    cfg
}

fn open(dir: &Path) -> LogStore {
    LogStore::open(&config(dir), Telemetry::new(&mut Registry::default())).unwrap()
}

fn loghub() -> Vec<(String, Vec<String>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/loghub");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let name = p.file_stem().unwrap().to_string_lossy().into_owned();
            let text = String::from_utf8_lossy(&std::fs::read(&p).unwrap()).into_owned();
            (name, text.lines().map(|l| l.trim_end_matches('\r').to_string()).collect())
        })
        .collect()
}

/// All rows, in push order: the Loghub files as one stream each, plus generated streams with
/// small vocabularies, structured metadata and out-of-order timestamps within the window.
fn dataset(rng: &mut StdRng) -> Vec<Row> {
    let base = 1_700_000_000_000_000_000i64;
    let mut rows = Vec::new();
    for (name, lines) in loghub() {
        for (i, line) in lines.iter().enumerate() {
            let jitter = rng.random_range(0..5_000_000i64);
            rows.push(Row {
                labels: format!(r#"{{file="{name}", job="loghub"}}"#),
                ts: base + i as i64 * 10_000_000 + jitter,
                line: line.clone(),
                meta: vec![],
            });
        }
    }
    let words = ["alpha", "beta", "gamma", "delta", "error", "warn", "user=alice", "id-7731", "ERR_QUOTA", "é漢字"];
    for s in 0..6 {
        for i in 0..1500 {
            let n = rng.random_range(1..8);
            let line: Vec<&str> = (0..n).map(|_| words[rng.random_range(0..words.len())]).collect();
            let meta = if i % 7 == 0 { vec![("trace_id".to_string(), format!("t{i}"))] } else { vec![] };
            let mut line = format!("{} {}", line.join(" "), rng.random_range(0..100_000u32));
            // Long numbers (ids) go to their own column in skeleton blocks; a control byte
            // that is a skeleton placeholder keeps its block in the plain layout.
            if i % 3 == 0 {
                let shift = rng.random_range(0..40);
                line.push_str(&format!(" id={}", rng.random_range(0..u64::MAX >> shift)));
            }
            if s == 5 && i % 97 == 0 {
                line.push_str(" \u{1}\u{2}");
            }
            rows.push(Row {
                labels: format!(r#"{{app="gen{}", env="{}", job="gen"}}"#, s, ["prod", "dev"][s % 2]),
                ts: base + i as i64 * 13_000_000 - rng.random_range(0..50_000_000i64),
                line,
                meta,
            });
        }
    }
    // Interleave streams like agents do: shuffle in chunks.
    let mut chunks: Vec<Vec<Row>> = rows.chunks(250).map(|c| c.to_vec()).collect();
    for i in (1..chunks.len()).rev() {
        chunks.swap(i, rng.random_range(0..=i));
    }
    chunks.concat()
}

fn push_all(store: &LogStore, rows: &[Row]) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    for batch in rows.chunks(300) {
        let mut streams: Vec<StreamAdapter> = Vec::new();
        for r in batch {
            let e = EntryAdapter {
                timestamp: Some(Timestamp::from_unix_nanos(r.ts)),
                line: r.line.clone(),
                structured_metadata: r
                    .meta
                    .iter()
                    .map(|(k, v)| LabelPairAdapter { name: k.clone(), value: v.clone() })
                    .collect(),
            };
            match streams.iter_mut().find(|s| s.labels == r.labels) {
                Some(s) => s.entries.push(e),
                None => streams.push(StreamAdapter { labels: r.labels.clone(), entries: vec![e], hash: 0 }),
            }
        }
        let out = rt.block_on(store.push("tenant-a", PushRequest { streams })).unwrap();
        assert!(out.refused.is_empty(), "{:?}", out.refused);
    }
}

fn scan(store: &LogStore, selector: &str, start: i64, end: i64, hints: &[String], backward: bool) -> Vec<Row> {
    let req = ScanRequest {
        tenant: "tenant-a".into(),
        selector: parse_series_selector(selector).unwrap(),
        start_ns: start,
        end_ns: end,
        backward,
        line_hints: hints.iter().map(|h| h.as_bytes().to_vec()).collect(),
    };
    let mut out = Vec::new();
    store
        .scan(&req, &mut |labels, e| {
            // The contract: only lines holding every hint are visited.
            assert!(hints.iter().all(|h| e.line.contains(h.as_str())), "{:?} visited for {hints:?}", e.line);
            out.push(Row {
                labels: osprey_protocol::loki_labels::format(labels),
                ts: e.ts_ns,
                line: e.line.to_string(),
                meta: e.metadata.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            });
            ControlFlow::Continue(())
        })
        .unwrap();
    out.sort();
    out
}

fn naive(rows: &[Row], selector: &str, start: i64, end: i64, hints: &[String]) -> Vec<Row> {
    let sel = parse_series_selector(selector).unwrap();
    let mut matches: std::collections::HashMap<&str, bool> = Default::default();
    let mut out: Vec<Row> = rows
        .iter()
        .filter(|r| {
            *matches
                .entry(r.labels.as_str())
                .or_insert_with(|| sel.matches_pairs(&osprey_protocol::loki_labels::parse(&r.labels).unwrap()))
                && (start..end).contains(&r.ts)
                && hints.iter().all(|h| r.line.contains(h.as_str()))
        })
        .cloned()
        .collect();
    out.sort();
    out
}

/// Random queries: selectors over both label sets, ranges, and hints taken from real lines
/// (substrings with and without separators, whole words) or absent from the data.
fn check(store: &LogStore, rows: &[Row], rng: &mut StdRng, rounds: usize, phase: &str) {
    let selectors = [
        r#"{job="loghub"}"#,
        r#"{job="gen"}"#,
        r#"{file="HDFS_2k"}"#,
        r#"{file=~"(Linux|OpenSSH)_2k"}"#,
        r#"{job="gen", env!="prod"}"#,
        r#"{app=~"gen[0-3]", job="gen"}"#,
        r#"{job=~".+"}"#,
        r#"{job="nope"}"#,
    ];
    let (lo, hi) = (rows.iter().map(|r| r.ts).min().unwrap(), rows.iter().map(|r| r.ts).max().unwrap());
    let mut pruned_some = false;
    for round in 0..rounds {
        let selector = selectors[rng.random_range(0..selectors.len())];
        let (start, end) = if round % 3 == 0 {
            (lo, hi + 1)
        } else {
            let a = rng.random_range(lo..hi);
            (a, rng.random_range(a..=hi + 1))
        };
        let mut hints = Vec::new();
        for _ in 0..rng.random_range(0..3) {
            let line = &rows[rng.random_range(0..rows.len())].line;
            let hint = match rng.random_range(0..5) {
                0 => "zzqx-not-there".to_string(),
                1 => line.split_whitespace().nth(rng.random_range(0..4)).unwrap_or("").to_string(),
                2 => {
                    // Digits only: part of one number of the line (or a number not there).
                    let runs: Vec<&str> = line.split(|c: char| !c.is_ascii_digit()).filter(|r| !r.is_empty()).collect();
                    match runs.get(rng.random_range(0..runs.len() + 1)) {
                        Some(run) => {
                            let a = rng.random_range(0..run.len());
                            run[a..rng.random_range(a + 1..=run.len())].to_string()
                        }
                        None => "98765432109876".to_string(),
                    }
                }
                _ => {
                    let chars: Vec<char> = line.chars().collect();
                    if chars.is_empty() {
                        String::new()
                    } else {
                        let a = rng.random_range(0..chars.len());
                        let b = (a + rng.random_range(1..24)).min(chars.len());
                        chars[a..b].iter().collect()
                    }
                }
            };
            hints.push(hint);
        }
        let got = scan(store, selector, start, end, &hints, round % 2 == 1);
        let want = naive(rows, selector, start, end, &hints);
        assert_eq!(got.len(), want.len(), "{phase}: {selector} [{start}, {end}) hints {hints:?}");
        assert!(got == want, "{phase}: {selector} [{start}, {end}) hints {hints:?}: rows differ");
        pruned_some |= hints.iter().any(|h| h == "zzqx-not-there");
    }
    assert!(pruned_some);
    // Series: exact, including ranges that cut through blocks.
    for _ in 0..10 {
        let a = rng.random_range(lo..hi);
        let b = rng.random_range(a..=hi + 1);
        let got: Vec<String> = store
            .series("tenant-a", None, a, b)
            .unwrap()
            .iter()
            .map(|l| osprey_protocol::loki_labels::format(l))
            .collect();
        let want: BTreeSet<String> = rows.iter().filter(|r| (a..b).contains(&r.ts)).map(|r| r.labels.clone()).collect();
        assert_eq!(got, want.into_iter().collect::<Vec<_>>(), "{phase}: series [{a}, {b})");
    }
}

#[test]
fn scan_matches_a_naive_scan_across_flushes_merges_and_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(0x0005_b5e7);
    let rows = dataset(&mut rng);
    let third = rows.len() / 3;
    let store = open(tmp.path());
    push_all(&store, &rows[..third]);
    check(&store, &rows[..third], &mut rng, 40, "head only");
    store.flush_now().unwrap();
    push_all(&store, &rows[third..2 * third]);
    store.flush_now().unwrap();
    push_all(&store, &rows[2 * third..]);
    check(&store, &rows, &mut rng, 80, "parts and head");
    let before = store.parts_summary().len();
    assert!(before >= 2, "two flushes made parts");
    store.maintain_now().unwrap();
    assert!(store.parts_summary().len() < before, "parts were merged");
    check(&store, &rows, &mut rng, 80, "merged parts and head");
    drop(store);
    // Restart: parts from the manifest, the head from the WAL.
    let store = open(tmp.path());
    check(&store, &rows, &mut rng, 60, "after restart");
    store.flush_now().unwrap();
    let wal_files = std::fs::read_dir(tmp.path().join("wal")).unwrap().count();
    assert_eq!(wal_files, 1, "flushed WAL segments are deleted; only the open one remains");
    check(&store, &rows, &mut rng, 40, "all in parts");
    let entries: u64 = store.parts_summary().iter().map(|p| p.3).sum();
    assert_eq!(entries, rows.len() as u64, "every line exactly once in parts");
}
