//! End-to-end log store harness (run by hand, release build; see benches/RESULTS.md).
//!
//! `logstore ingest --dir D [--lines N] [--connections C]`: generates N lines from the Loghub
//! samples (40 streams: 10 files × 4 hosts; every digit run shifted per cycle and host so lines
//! do not repeat verbatim), writes them to `D/raw.log` (the ripgrep baseline), starts
//! `osprey collector` (release, `fsync = "batch"`) on loopback, pushes protobuf+snappy batches
//! of 2,000 lines over C keep-alive connections, and reports lines/s, the collector's CPU seconds
//! and peak RSS; then waits for the flush and the merges and reports bytes on disk ÷ raw bytes.
//!
//! `logstore query --dir D`: opens the store in-process and times `LogStore::scan` for a rare
//! token, substrings with no usable token, and a scan of everything, side by side with
//! `rg -c -F` over `D/raw.log`: median wall time and mean CPU time of the warm runs (CPU time
//! is the robust figure on a shared machine; 10 ms resolution); reports peak RSS.

use osprey_protocol::logproto::{EntryAdapter, PushRequest, StreamAdapter, Timestamp, encode_push_request};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const HOSTS: usize = 4;
const BATCH_PER_STREAM: usize = 1000;
const STREAMS_PER_BATCH: usize = 2;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let get = |flag: &str| args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).cloned();
    let dir = PathBuf::from(get("--dir").unwrap_or_else(|| "/tmp/osprey-logstore-bench".into()));
    match args.get(1).map(String::as_str) {
        Some("ingest") => {
            let lines: usize = get("--lines").and_then(|v| v.parse().ok()).unwrap_or(10_000_000);
            let conns: usize = get("--connections").and_then(|v| v.parse().ok()).unwrap_or(16);
            ingest(&dir, lines, conns);
        }
        Some("query") => query(&dir),
        _ => eprintln!("usage: logstore ingest|query --dir DIR [--lines N] [--connections C]"),
    }
}

/// Loghub templates: (file stem, lines).
fn templates() -> Vec<(String, Vec<String>)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(osprey_benches::loghub_dir())
        .expect("testdata/loghub")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let name = p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            let text = String::from_utf8_lossy(&std::fs::read(&p).unwrap_or_default()).into_owned();
            (name, text.lines().map(|l| l.trim_end_matches('\r').to_string()).collect())
        })
        .collect()
}

/// Every digit run of `line` plus `k`, modulo its width (same length, different number).
fn shift_digits(line: &str, k: u64, out: &mut String) {
    out.clear();
    let b = line.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_digit() {
            let start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            let run = &line[start..i];
            if run.len() > 18 {
                // Too wide for u64 arithmetic: shift the last 18 digits.
                let cut = run.len() - 18;
                out.push_str(&run[..cut]);
                push_shifted(&run[cut..], k, out);
            } else {
                push_shifted(run, k, out);
            }
        } else {
            let start = i;
            while i < b.len() && !b[i].is_ascii_digit() {
                i += 1;
            }
            out.push_str(&line[start..i]);
        }
    }
}

/// Short runs (times, counters, ports: < 10 digits) are shifted by `k`, keeping their
/// structure; long runs are identifiers and are scrambled (a bijection mod 10^width), as real
/// block, request and trace ids are random across all their digits.
fn push_shifted(run: &str, k: u64, out: &mut String) {
    let width = run.len() as u32;
    let m = 10u128.pow(width);
    let d = u128::from(run.parse::<u64>().unwrap_or(0));
    let v = if width >= 10 {
        // Odd and not a multiple of 5: invertible mod 10^width.
        let a = (6_364_136_223_846_793_005u128 % m) | 1;
        let a = if a.is_multiple_of(5) { a + 2 } else { a };
        ((d + u128::from(k)) % m * a) % m
    } else {
        (d + u128::from(k) % m) % m
    };
    out.push_str(&format!("{v:0width$}", width = width as usize));
}

/// The j-th line of stream (file f, host h).
fn stream_line(t: &[(String, Vec<String>)], f: usize, h: usize, j: usize, out: &mut String) {
    let lines = &t[f].1;
    let cycle = (j / lines.len()) as u64;
    let k = cycle * 7919 + h as u64 * 104_729;
    if k == 0 {
        out.clear();
        out.push_str(&lines[j % lines.len()]);
    } else {
        shift_digits(&lines[j % lines.len()], k, out);
    }
}

fn base_ns() -> i64 {
    // 01:00 UTC today: one day partition for the whole run.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i64);
    let day = 86_400 * 1_000_000_000i64;
    now - now.rem_euclid(day) + 3_600 * 1_000_000_000
}

fn labels(t: &[(String, Vec<String>)], f: usize, h: usize) -> String {
    format!(r#"{{file="{}", host="host{}", job="loghub"}}"#, t[f].0, h)
}

fn proc_stat(pid: u32) -> (f64, u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb = |key: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (ticks / 100.0, kb("VmRSS:") * 1024, kb("VmHWM:") * 1024)
}

/// CPU seconds of this process's waited-for children (`cutime + cstime`): ripgrep's CPU time.
fn children_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(13) + ticks(14)) / 100.0
}

fn http(conn: &mut TcpStream, reader: &mut BufReader<TcpStream>, req: &[u8]) -> (u16, String) {
    conn.write_all(req).expect("send");
    let mut status = String::new();
    reader.read_line(&mut status).expect("status line");
    let code: u16 = status.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).expect("header");
        if h == "\r\n" || h.is_empty() {
            break;
        }
        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body).expect("body");
    (code, String::from_utf8_lossy(&body).into_owned())
}

fn get_metrics(addr: &str) -> String {
    let mut c = TcpStream::connect(addr).expect("connect");
    let mut r = BufReader::new(c.try_clone().expect("clone"));
    http(&mut c, &mut r, format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes()).1
}

fn metric(m: &str, name: &str) -> f64 {
    m.lines().find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok())).unwrap_or(-1.0)
}

fn dir_bytes(p: &Path) -> u64 {
    let mut n = 0;
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let m = e.metadata().expect("metadata");
            n += if m.is_dir() { dir_bytes(&e.path()) } else { m.len() };
        }
    }
    n
}

fn ingest(dir: &Path, total: usize, conns: usize) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).expect("bench dir");
    let t = templates();
    let streams = t.len() * HOSTS;
    let per_stream = total.div_ceil(streams);
    let base = base_ns();
    eprintln!("generating {total} lines in {streams} streams...");
    let gen_start = Instant::now();
    let mut raw = std::io::BufWriter::new(std::fs::File::create(dir.join("raw.log")).expect("raw.log"));
    let mut bodies: Vec<(Vec<u8>, usize)> = Vec::new();
    let mut raw_bytes = 0u64;
    let mut line = String::new();
    let mut j0 = 0;
    while j0 < per_stream {
        let j1 = (j0 + BATCH_PER_STREAM).min(per_stream);
        for group in (0..streams).collect::<Vec<_>>().chunks(STREAMS_PER_BATCH) {
            let mut req = PushRequest { streams: vec![] };
            let mut n = 0;
            for &s in group {
                let (f, h) = (s % t.len(), s / t.len());
                let mut entries = Vec::with_capacity(j1 - j0);
                for j in j0..j1 {
                    stream_line(&t, f, h, j, &mut line);
                    raw.write_all(line.as_bytes()).expect("write raw");
                    raw.write_all(b"\n").expect("write raw");
                    raw_bytes += line.len() as u64;
                    entries.push(EntryAdapter {
                        timestamp: Some(Timestamp::from_unix_nanos(base + j as i64 * 10_000)),
                        line: line.clone(),
                        structured_metadata: vec![],
                    });
                }
                n += entries.len();
                req.streams.push(StreamAdapter { labels: labels(&t, f, h), entries, hash: 0 });
            }
            bodies.push((encode_push_request(&req), n));
        }
        j0 = j1;
    }
    raw.flush().expect("flush raw");
    let lines_total: usize = bodies.iter().map(|b| b.1).sum();
    eprintln!(
        "generated {lines_total} lines, {raw_bytes} bytes of line text, {} bodies in {:.1}s",
        bodies.len(),
        gen_start.elapsed().as_secs_f64()
    );
    std::fs::write(dir.join("raw_bytes"), raw_bytes.to_string()).expect("raw_bytes");

    let config = format!(
        "data_dir = {:?}\n[server]\nlisten = \"127.0.0.1:0\"\n[logs]\nfsync = \"batch\"\nflush_interval = \"10s\"\nmaintenance_interval = \"2s\"\nmerge_min_parts = 2\nmerge_max_parts = 16\nmerge_max_part_bytes = 4294967296\n{}",
        dir.join("data").display().to_string(),
        // More `[logs]` keys to compare settings, e.g. OSPREY_BENCH_LOGS='flush_zstd_level = 1'.
        std::env::var("OSPREY_BENCH_LOGS").map(|s| s + "\n").unwrap_or_default()
    );
    std::fs::write(dir.join("collector.toml"), config).expect("config");
    let bin = std::env::var("OSPREY_BIN").unwrap_or_else(|_| "target/release/osprey".into());
    let mut child = Command::new(&bin)
        .args(["collector", "--config"])
        .arg(dir.join("collector.toml"))
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.join("collector.log")).expect("log"))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {bin}: {e} (build it with cargo build --release)"));
    let pid = child.id();
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut first = String::new();
    out.read_line(&mut first).expect("listening line");
    let addr = first.split("http://").nth(1).map(|s| s.trim().to_string()).expect("address");
    eprintln!("collector pid {pid} on {addr}; pushing with {conns} connections...");

    let bodies = Arc::new(bodies);
    let next = Arc::new(AtomicUsize::new(0));
    let acked = Arc::new(AtomicU64::new(0));
    let (cpu0, _, _) = proc_stat(pid);
    let started = Instant::now();
    let peak_rss = Arc::new(AtomicU64::new(0));
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let (peak, on) = (peak_rss.clone(), sampling.clone());
        std::thread::spawn(move || {
            while on.load(Ordering::Relaxed) {
                let (_, rss, _) = proc_stat(pid);
                peak.fetch_max(rss, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let workers: Vec<_> = (0..conns)
        .map(|_| {
            let (bodies, next, acked, addr) = (bodies.clone(), next.clone(), acked.clone(), addr.clone());
            std::thread::spawn(move || {
                let mut conn = TcpStream::connect(&addr).expect("connect");
                conn.set_nodelay(true).ok();
                let mut reader = BufReader::new(conn.try_clone().expect("clone"));
                let mut req = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((body, n)) = bodies.get(i) else { break };
                    req.clear();
                    write!(
                        req,
                        "POST /loki/api/v1/push HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-protobuf\r\nContent-Encoding: snappy\r\nContent-Length: {}\r\n\r\n",
                        body.len()
                    )
                    .expect("request");
                    req.extend_from_slice(body);
                    let (code, text) = http(&mut conn, &mut reader, &req);
                    assert_eq!(code, 204, "push refused: {text}");
                    acked.fetch_add(*n as u64, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("worker");
    }
    let secs = started.elapsed().as_secs_f64();
    sampling.store(false, Ordering::Relaxed);
    sampler.join().expect("sampler");
    let (cpu1, _, _) = proc_stat(pid);
    let lines = acked.load(Ordering::Relaxed);
    println!("## ingest");
    println!("lines acknowledged: {lines}");
    println!("line bytes: {raw_bytes} ({:.1} MiB)", raw_bytes as f64 / 1048576.0);
    println!("wall: {secs:.2} s");
    println!(
        "throughput: {:.0} lines/s, {:.1} MiB/s of line text",
        lines as f64 / secs,
        raw_bytes as f64 / secs / 1048576.0
    );
    println!("collector CPU: {:.1} s ({:.2} cores)", cpu1 - cpu0, (cpu1 - cpu0) / secs);
    println!("collector peak RSS during ingest: {:.0} MiB", peak_rss.load(Ordering::Relaxed) as f64 / 1048576.0);

    // Wait for the head to be flushed and the WAL truncated, then for the merges to end in one
    // part (merge_min_parts = 2) with no merge output being written.
    let data = dir.join("data");
    let count = |sub: &str, suffix: &str| -> usize {
        std::fs::read_dir(data.join(sub))
            .map(|rd| rd.flatten().filter(|e| e.file_name().to_string_lossy().ends_with(suffix)).count())
            .unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(900);
    while (metric(&get_metrics(&addr), "osprey_logs_head_lines ") != 0.0 || count("wal", ".wal") > 1)
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(200));
    }
    let flushed_at = Instant::now();
    let m = get_metrics(&addr);
    let flushed_parts = metric(&m, "osprey_logs_parts ");
    let flushed = dir_bytes(&data.join("logs")) + dir_bytes(&data.join("wal"));
    println!("## disk");
    println!(
        "after flush ({:.0} s after the last ack): {} parts, {flushed} bytes on disk (parts+index+WAL) = raw / {:.2}",
        (flushed_at - started).as_secs_f64() - secs,
        flushed_parts,
        raw_bytes as f64 / flushed as f64
    );
    let settle = Instant::now();
    let mut last = (flushed_parts, Instant::now());
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        let p = metric(&get_metrics(&addr), "osprey_logs_parts ");
        if p <= 1.0 && count("logs/parts", ".tmp") == 0 {
            last = (p, Instant::now());
            break;
        }
        last.0 = p;
    }
    let (cpu2, _, hwm) = proc_stat(pid);
    let merged = dir_bytes(&data.join("logs")) + dir_bytes(&data.join("wal"));
    println!(
        "after merges ({:.0} s, {:.1} CPU-s): {} parts, {merged} bytes on disk = raw / {:.2}",
        settle.elapsed().as_secs_f64(),
        cpu2 - cpu1,
        last.0,
        raw_bytes as f64 / merged as f64
    );
    println!("collector VmHWM (whole run): {:.0} MiB", hwm as f64 / 1048576.0);
    let _ = Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
    let _ = child.wait();
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn query(dir: &Path) {
    use osprey_collector::logs::{LogStore, ScanRequest};
    use std::ops::ControlFlow;
    let mut cfg = osprey_config::CollectorConfig { data_dir: dir.join("data"), ..Default::default() };
    cfg.logs.flush_interval = osprey_config::Duration::from_secs(3600);
    cfg.logs.maintenance_interval = osprey_config::Duration::from_secs(3600);
    let mut registry = prometheus_client::registry::Registry::default();
    let telemetry = osprey_collector::telemetry::Telemetry::new(&mut registry);
    let opened = Instant::now();
    let store = LogStore::open(&cfg, telemetry).expect("open the store (run `logstore ingest` first)");
    let (_, rss_open, _) = proc_stat(std::process::id());
    println!("## query");
    println!("store opened in {:.2} s, RSS {:.0} MiB", opened.elapsed().as_secs_f64(), rss_open as f64 / 1048576.0);
    let mut total = (0u64, 0u64, 0u64, 0u64);
    for (tenant, day, file_bytes, entries, line_bytes, filter_bytes) in store.parts_summary() {
        println!(
            "part {tenant}/{day}: {entries} lines, {line_bytes} line bytes, {file_bytes} file bytes (raw / {:.2}), filters {filter_bytes} bytes ({:.2} % of raw)",
            line_bytes as f64 / file_bytes as f64,
            filter_bytes as f64 * 100.0 / line_bytes as f64
        );
        total = (total.0 + entries, total.1 + line_bytes, total.2 + file_bytes, total.3 + filter_bytes);
    }
    println!(
        "all parts: {} lines, raw / {:.2}, filters {:.2} % of raw",
        total.0,
        total.1 as f64 / total.2 as f64,
        total.3 as f64 * 100.0 / total.1 as f64
    );
    let t = templates();
    let mut line = String::new();
    // A rare token: the block id of one HDFS line deep in the run.
    let hdfs = t.iter().position(|(n, _)| n.starts_with("HDFS")).expect("HDFS sample");
    let mut j = 123_457;
    let token = loop {
        stream_line(&t, hdfs, 1, j, &mut line);
        if let Some(at) = line.find("blk_") {
            let end = line[at..].find(|c: char| c.is_whitespace()).map_or(line.len(), |e| at + e);
            break line[at..end].to_string();
        }
        j += 1;
    };
    let digits = token.trim_start_matches("blk_").trim_start_matches('-');
    let mid_digits = digits[3..10].to_string();
    let queries: Vec<(&str, String)> = vec![
        ("rare token", token.clone()),
        ("substring, no usable token (inside words)", "ession clo".to_string()),
        ("substring, digits inside a number", mid_digits),
        ("scan of everything (no filter)", String::new()),
    ];
    let selector = osprey_collector::selector::parse_series_selector(r#"{job="loghub"}"#).expect("selector");
    for (what, literal) in queries {
        let hints = if literal.is_empty() { vec![] } else { vec![literal.as_bytes().to_vec()] };
        let req = ScanRequest {
            tenant: "fake".into(),
            selector: selector.clone(),
            start_ns: 0,
            end_ns: i64::MAX,
            backward: true,
            line_hints: hints,
        };
        let finder = memchr::memmem::Finder::new(literal.as_bytes());
        let mut times = Vec::new();
        let mut count = 0u64;
        let mut stats = osprey_collector::logs::ScanStats::default();
        let mut cpu_warm = 0.0;
        for run in 0..5 {
            let cpu0 = proc_stat(std::process::id()).0;
            let t0 = Instant::now();
            count = 0;
            stats = store
                .scan(&req, &mut |_, e| {
                    if finder.find(e.line.as_bytes()).is_some() {
                        count += 1;
                    }
                    ControlFlow::Continue(())
                })
                .expect("scan");
            times.push(t0.elapsed().as_secs_f64());
            if run > 0 {
                cpu_warm += proc_stat(std::process::id()).0 - cpu0;
            }
        }
        let (_, rss, _) = proc_stat(std::process::id());
        let ours = median(times[1..].to_vec());
        let rg = if literal.is_empty() { vec!["-c", ""] } else { vec!["-c", "-F", literal.as_str()] };
        let mut rg_times = Vec::new();
        let mut rg_count = String::new();
        let mut rg_cpu = 0.0;
        for run in 0..3 {
            let cpu0 = children_cpu();
            let t0 = Instant::now();
            let out =
                Command::new("rg").args(&rg).arg(dir.join("raw.log")).output().expect("rg (cargo install ripgrep)");
            rg_times.push(t0.elapsed().as_secs_f64());
            rg_count = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if run > 0 {
                rg_cpu += children_cpu() - cpu0;
            }
        }
        let rg_med = median(rg_times[1..].to_vec());
        println!(
            "{what} {literal:?}: {count} lines (rg: {rg_count}), osprey {:.1} ms warm, {:.0} CPU-ms (cold {:.1} ms), rg {:.1} ms, {:.0} CPU-ms; blocks read {} pruned {}, RSS {:.0} MiB",
            ours * 1000.0,
            cpu_warm * 1000.0 / 4.0,
            times[0] * 1000.0,
            rg_med * 1000.0,
            rg_cpu * 1000.0 / 2.0,
            stats.blocks_read,
            stats.blocks_pruned,
            rss as f64 / 1048576.0
        );
    }
    let (_, _, hwm) = proc_stat(std::process::id());
    println!("query process VmHWM: {:.0} MiB", hwm as f64 / 1048576.0);
}
