//! End-to-end tail benchmarks of the release `osprey` binary (run by hand, not in CI).
//!
//! ```text
//! cargo build --release -p osprey -p osprey-benches
//! target/release/tail_bench throughput --to receiver   # (a) 1 GiB, 10 files -> acking receiver
//! target/release/tail_bench throughput --to collector  # (b) same, to `osprey collector`
//! target/release/tail_bench idle                       # RSS and CPU of an idle agent
//! target/release/tail_bench rate                       # CPU at 10k lines/s
//! target/release/tail_bench files                      # 10,000 files, 100 active
//! ```
//!
//! The agent's CPU seconds come from `/proc/<pid>/stat` (utime + stime), its peak RSS from
//! `VmHWM` in `/proc/<pid>/status`. The receiver for (a) is [`ack_receiver`]: it reads each
//! request and answers 204 at once, decoding nothing, so it measures the agent alone.
//! Generated data lives in `$TAIL_BENCH_DIR` (default `/tmp/osprey-tail-bench`) and is reused.

use osprey_benches::ack_receiver;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const MIB: f64 = 1024.0 * 1024.0;

fn osprey_bin() -> PathBuf {
    std::env::var_os("OSPREY_BIN").map(PathBuf::from).unwrap_or_else(|| {
        let exe = std::env::current_exe().expect("current exe");
        exe.parent().expect("bin dir").join("osprey")
    })
}

fn work_dir() -> PathBuf {
    PathBuf::from(std::env::var("TAIL_BENCH_DIR").unwrap_or_else(|_| "/tmp/osprey-tail-bench".into()))
}

/// CPU seconds (user + system) of a process.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 =
        f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0) + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

/// CPU seconds of a process's live threads, summed by thread name (which part of the agent
/// the CPU went to: the tailer, the sink's runtime workers, the checkpoint writer, ...).
fn cpu_by_thread(pid: u32) -> Vec<(String, f64)> {
    let mut by: std::collections::BTreeMap<String, f64> = Default::default();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return Vec::new() };
    for task in tasks.flatten() {
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        let name = stat.split_once('(').and_then(|(_, r)| r.rsplit_once(')')).map_or("?", |(n, _)| n);
        let after = stat.rsplit(')').next().unwrap_or("");
        let f: Vec<&str> = after.split_whitespace().collect();
        let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
            + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
        *by.entry(name.to_string()).or_default() += ticks / 100.0;
    }
    by.into_iter().filter(|(_, s)| *s > 0.0).collect()
}

/// (VmRSS, VmHWM) in MiB.
fn rss_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb = |key: &str| -> f64 {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    (kb("VmRSS:") / 1024.0, kb("VmHWM:") / 1024.0)
}

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `osprey <role> --config <file>` and returns it with the URL it announced.
fn start(role: &str, config: &Path) -> (Proc, String) {
    let mut child = Command::new(osprey_bin())
        .arg(role)
        .arg("--config")
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(Stdio::from(std::fs::File::create(config.with_extension("log")).expect("log file")))
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start {}: {e} (build it: cargo build --release -p osprey)", osprey_bin().display())
        });
    let out = child.stdout.take().expect("stdout");
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(out), &mut line).expect("announce line");
    let url = line.split_whitespace().last().unwrap_or("").to_string();
    assert!(url.starts_with("http://"), "{role} did not start: {line}");
    (Proc(child), url)
}

fn metric(url: &str, name: &str) -> f64 {
    let body = http_get(&format!("{url}/metrics"));
    body.lines()
        .filter(|l| !l.starts_with('#') && l.split(['{', ' ']).next() == Some(name))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}

fn http_get(url: &str) -> String {
    let rest = url.trim_start_matches("http://");
    let (host, path) = rest.split_once('/').map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
    let Ok(mut s) = std::net::TcpStream::connect(host) else { return String::new() };
    let _ = write!(s, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n");
    let mut out = String::new();
    let _ = std::io::Read::read_to_string(&mut s, &mut out);
    out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default()
}

fn agent_config(dir: &Path, url: &str, include: &str, extra: &str) -> PathBuf {
    let data = dir.join("agent-data");
    let _ = std::fs::remove_dir_all(&data);
    let cfg = format!(
        "data_dir = {:?}\nhostname = \"bench\"\n\n[server]\nlisten = \"127.0.0.1:0\"\n\n[collector]\nurl = \"{url}\"\n\n[host_metrics]\nenabled = false\n\n[sources]\n{extra}\n[[sources.files]]\njob = \"bench\"\ninclude = [\"{include}\"]\nread_from = \"beginning\"\n",
        data.display().to_string()
    );
    // More sections to compare settings, e.g. TAIL_BENCH_CONFIG=$'[pipeline]\nlog_requests_in_flight = 2'.
    let cfg = cfg + &std::env::var("TAIL_BENCH_CONFIG").map(|s| format!("\n{s}\n")).unwrap_or_default();
    let path = dir.join("agent.toml");
    std::fs::write(&path, cfg).expect("write agent config");
    path
}

fn loghub_lines() -> Vec<String> {
    let lines = osprey_benches::loghub_lines();
    assert!(!lines.is_empty(), "no loghub lines found in {}", osprey_benches::loghub_dir().display());
    lines
}

/// 10 files of `total / 10` bytes of Loghub lines, each starting with a distinct line.
fn generate(dir: &Path, total: u64) -> (u64, u64) {
    std::fs::create_dir_all(dir).expect("data dir");
    let marker = dir.join(format!(".complete-{total}"));
    let per = total / 10;
    if !marker.exists() {
        let lines = loghub_lines();
        for i in 0..10 {
            let mut f =
                std::io::BufWriter::new(std::fs::File::create(dir.join(format!("app{i}.log"))).expect("create"));
            let mut n = 0u64;
            let first = format!("osprey tail bench file {i} of 10, generated for a distinct first line\n");
            f.write_all(first.as_bytes()).expect("write");
            n += first.len() as u64;
            let mut j = i * 1000;
            while n < per {
                let l = &lines[j % lines.len()];
                f.write_all(l.as_bytes()).expect("write");
                f.write_all(b"\n").expect("write");
                n += l.len() as u64 + 1;
                j += 1;
            }
            f.flush().expect("flush");
        }
        std::fs::write(&marker, b"").expect("marker");
    }
    let mut bytes = 0;
    let mut lines = 0;
    for i in 0..10 {
        let data = std::fs::read(dir.join(format!("app{i}.log"))).expect("read");
        bytes += data.len() as u64;
        lines += memchr_count(&data);
    }
    (bytes, lines)
}

fn memchr_count(b: &[u8]) -> u64 {
    b.iter().filter(|c| **c == b'\n').count() as u64
}

fn throughput(to: &str, total: u64) {
    let dir = work_dir();
    let data = dir.join("data");
    let (bytes, lines) = generate(&data, total);
    let run = dir.join(format!("run-{to}"));
    let _ = std::fs::remove_dir_all(&run);
    std::fs::create_dir_all(&run).expect("run dir");
    let (_receiver_proc, receiver_url, receiver_pid, receiver) = match to {
        "receiver" => {
            let r = ack_receiver::start().expect("receiver");
            let url = format!("http://{}", r.addr);
            (None, url, std::process::id(), Some(r))
        }
        _ => {
            let cfg = run.join("collector.toml");
            std::fs::write(
                &cfg,
                format!(
                    "data_dir = {:?}\n\n[server]\nlisten = \"127.0.0.1:0\"\n",
                    run.join("collector-data").display().to_string()
                ),
            )
            .expect("collector config");
            let (p, url) = start("collector", &cfg);
            let pid = p.0.id();
            (Some(p), url, pid, None)
        }
    };
    let recv_cpu0 = cpu_seconds(receiver_pid);
    let cfg = agent_config(&run, &receiver_url, &format!("{}/*.log", data.display()), "");
    let t0 = Instant::now();
    let (agent, agent_url) = start("agent", &cfg);
    let pid = agent.0.id();
    // Done when every byte was read and every built batch was acknowledged.
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let read = metric(&agent_url, "osprey_agent_bytes_read_total");
        let built = metric(&agent_url, "osprey_agent_log_batches_built_total");
        let acked = metric(&agent_url, "osprey_agent_ack_latency_seconds_count");
        if read as u64 >= bytes && built > 0.0 && acked >= built {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(600), "not done after 10 minutes (read {read} of {bytes})");
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid);
    let threads = cpu_by_thread(pid);
    let (_, peak) = rss_mib(pid);
    let lines_shipped = metric(&agent_url, "osprey_agent_lines_read_total");
    let checkpoint_writes = metric(&agent_url, "osprey_agent_checkpoint_writes_total");
    let recv_cpu = cpu_seconds(receiver_pid) - recv_cpu0;
    let gib = bytes as f64 / (1024.0 * MIB);
    println!(
        "throughput to {to}: {:.0} MiB in {secs:.1} s = {:.0} MiB/s, {:.0} lines/s ({lines} lines, {lines_shipped} read); agent CPU {cpu:.1} s = {:.2} CPU-s/GiB ({checkpoint_writes} checkpoint writes); peak agent RSS {peak:.1} MiB; {} CPU {recv_cpu:.1} s",
        bytes as f64 / MIB,
        bytes as f64 / MIB / secs,
        lines as f64 / secs,
        cpu / gib,
        if to == "receiver" { "receiver (in this process)" } else { "collector" },
    );
    let threads: Vec<String> = threads.iter().map(|(n, s)| format!("{n} {s:.2}")).collect();
    println!("agent CPU-s by thread: {}", threads.join(", "));
    if let Some(r) = receiver {
        println!("receiver: {} requests, {:.0} MiB compressed", r.requests(), r.bytes() as f64 / MIB);
    }
}

fn idle() {
    let dir = work_dir().join("idle");
    let _ = std::fs::remove_dir_all(&dir);
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs).expect("dir");
    for i in 0..10 {
        std::fs::write(logs.join(format!("idle{i}.log")), "one line\n").expect("write");
    }
    let r = ack_receiver::start().expect("receiver");
    let cfg = agent_config(&dir, &format!("http://{}", r.addr), &format!("{}/*.log", logs.display()), "");
    let (agent, _) = start("agent", &cfg);
    let pid = agent.0.id();
    std::thread::sleep(Duration::from_secs(3));
    let c0 = cpu_seconds(pid);
    std::thread::sleep(Duration::from_secs(20));
    let c1 = cpu_seconds(pid);
    let (rss, peak) = rss_mib(pid);
    println!(
        "idle (10 files followed, 20 s): RSS {rss:.1} MiB (peak {peak:.1}), CPU {:.3} % of a core",
        (c1 - c0) / 20.0 * 100.0
    );
}

fn rate() {
    let dir = work_dir().join("rate");
    let _ = std::fs::remove_dir_all(&dir);
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs).expect("dir");
    let r = ack_receiver::start().expect("receiver");
    let cfg = agent_config(&dir, &format!("http://{}", r.addr), &format!("{}/*.log", logs.display()), "");
    let (agent, url) = start("agent", &cfg);
    let pid = agent.0.id();
    let lines = loghub_lines();
    let path = logs.join("rate.log");
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&path).expect("open");
    std::thread::sleep(Duration::from_secs(1));
    let secs = 20;
    let c0 = cpu_seconds(pid);
    let t0 = Instant::now();
    let mut n = 0usize;
    // 100 lines every 10 ms: 10k lines/s.
    for tick in 0..(secs * 100) {
        let mut chunk = String::new();
        for _ in 0..100 {
            chunk.push_str(&lines[n % lines.len()]);
            chunk.push('\n');
            n += 1;
        }
        f.write_all(chunk.as_bytes()).expect("write");
        let next = Duration::from_millis(10 * (tick as u64 + 1));
        if let Some(d) = next.checked_sub(t0.elapsed()) {
            std::thread::sleep(d);
        }
    }
    let wall = t0.elapsed().as_secs_f64();
    let c1 = cpu_seconds(pid);
    let (rss, peak) = rss_mib(pid);
    std::thread::sleep(Duration::from_secs(2));
    println!(
        "rate: {n} lines in {wall:.1} s ({:.0} lines/s): agent CPU {:.2} % of a core, RSS {rss:.1} MiB (peak {peak:.1}); shipped {}",
        n as f64 / wall,
        (c1 - c0) / wall * 100.0,
        metric(&url, "osprey_agent_lines_read_total")
    );
}

fn files() {
    let dir = work_dir().join("files");
    let _ = std::fs::remove_dir_all(&dir);
    let logs = dir.join("logs");
    for d in 0..100 {
        let sub = logs.join(format!("d{d:02}"));
        std::fs::create_dir_all(&sub).expect("dir");
        for f in 0..100 {
            std::fs::write(sub.join(format!("f{f:03}.log")), format!("file {d} {f} first line\n")).expect("write");
        }
    }
    let r = ack_receiver::start().expect("receiver");
    let cfg = agent_config(&dir, &format!("http://{}", r.addr), &format!("{}/**/*.log", logs.display()), "");
    let (agent, url) = start("agent", &cfg);
    let pid = agent.0.id();
    let t0 = Instant::now();
    while metric(&url, "osprey_agent_lines_read_total") < 10_000.0 {
        std::thread::sleep(Duration::from_millis(200));
        assert!(t0.elapsed() < Duration::from_secs(120), "10,000 files not read within 2 minutes");
    }
    println!(
        "files: 10,000 files discovered and read in {:.1} s (agent CPU {:.2} s)",
        t0.elapsed().as_secs_f64(),
        cpu_seconds(pid)
    );
    std::thread::sleep(Duration::from_secs(2));
    let c0 = cpu_seconds(pid);
    std::thread::sleep(Duration::from_secs(10));
    let idle = (cpu_seconds(pid) - c0) / 10.0 * 100.0;
    // 100 active files (one per directory), 10 lines/s each.
    let active: Vec<PathBuf> = (0..100).map(|d| logs.join(format!("d{d:02}/f000.log"))).collect();
    let secs = 20;
    let c0 = cpu_seconds(pid);
    let t1 = Instant::now();
    for tick in 0..(secs * 10) {
        for p in &active {
            let mut f = std::fs::OpenOptions::new().append(true).open(p).expect("open");
            let _ = writeln!(f, "tick {tick} a line written to an active file among ten thousand");
        }
        let next = Duration::from_millis(100 * (tick as u64 + 1));
        if let Some(d) = next.checked_sub(t1.elapsed()) {
            std::thread::sleep(d);
        }
    }
    let active_cpu = (cpu_seconds(pid) - c0) / t1.elapsed().as_secs_f64() * 100.0;
    let (rss, peak) = rss_mib(pid);
    println!(
        "files: 10,000 matched in 100 dirs: idle {idle:.2} % of a core; with 100 active (1,000 lines/s) {active_cpu:.2} % of a core; RSS {rss:.1} MiB (peak {peak:.1}); open {} ",
        metric(&url, "osprey_agent_files_open")
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map(String::as_str).unwrap_or("");
    let arg = |k: &str| args.iter().position(|a| a == k).and_then(|i| args.get(i + 1)).cloned();
    match mode {
        "throughput" => {
            let to = arg("--to").unwrap_or_else(|| "receiver".into());
            let mib: u64 = arg("--mib").and_then(|v| v.parse().ok()).unwrap_or(1024);
            throughput(&to, mib << 20);
        }
        "receiver" => {
            let r = ack_receiver::start().expect("receiver");
            println!("acking receiver on http://{}", r.addr);
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
        "idle" => idle(),
        "rate" => rate(),
        "files" => files(),
        _ => {
            eprintln!(
                "usage: tail_bench throughput [--to receiver|collector] [--mib N] | idle | rate | files | receiver"
            );
            std::process::exit(2);
        }
    }
}
