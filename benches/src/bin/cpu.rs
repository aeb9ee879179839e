//! CPU-time harness (run by hand, release profile). The machine is shared, so wall-clock
//! benches are skewed by other work; these measure CPU seconds of this process (and of the
//! peer process, from `/proc/PID/stat`), which contention disturbs far less.
//!
//! ```sh
//! cargo run --release -p osprey-benches --bin cpu -- parse 200
//! cargo run --release -p osprey-benches --bin cpu -- host 1000
//! ```

use osprey_benches::{exposition_20k, node_exporter_body};
use osprey_protocol::exposition::{Entry, Format, Parser};
use std::process::{Command, Stdio};
use std::time::Duration;

fn cpu_now() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

fn parse_all(body: &[u8], format: Format) -> usize {
    let mut n = 0;
    for e in Parser::new(body, format) {
        if let Ok(Entry::Sample(s)) = e {
            n += s.labels().count() + 1;
            std::hint::black_box(s.value);
        }
    }
    n
}

fn parse(rounds: usize) {
    let node = node_exporter_body();
    let big = exposition_20k(false);
    let big_om = exposition_20k(true);
    for (name, body, format, reps) in [
        ("node_exporter 1.5 body (57 KB, 1071 lines), text", &node, Format::Text, rounds * 40),
        ("20k series (2.0 MB), text 0.0.4", &big, Format::Text, rounds),
        ("20k series (2.0 MB), OpenMetrics", &big_om, Format::OpenMetrics, rounds),
    ] {
        parse_all(body, format);
        let start = cpu_now();
        let mut n = 0;
        for _ in 0..reps {
            n += parse_all(std::hint::black_box(body), format);
        }
        let cpu = (cpu_now() - start).as_secs_f64();
        let mb = (body.len() * reps) as f64 / 1e6;
        println!("parse {name}: {reps} parses, {cpu:.3} CPU-s, {:.0} MB per CPU-second ({n} labels+samples)", mb / cpu);
    }
}

fn proc_cpu(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

fn host(rounds: usize) {
    let cfg = osprey_config::agent::HostMetrics::default();
    let mut collectors = osprey_agent::host::HostCollectors::new(&cfg).expect("collectors");
    let families = collectors.collect();
    let samples: usize = families.iter().map(|f| f.samples.len()).sum();
    let mut text = String::new();
    let start = cpu_now();
    for _ in 0..rounds {
        let f = collectors.collect();
        text.clear();
        osprey_agent::host::to_text(&f, &mut text);
    }
    let ours = (cpu_now() - start).as_secs_f64() / rounds as f64;
    let start = cpu_now();
    let extra = vec![("host".to_string(), "h".to_string()), ("job".to_string(), "node".to_string())];
    for _ in 0..rounds {
        let f = collectors.collect();
        std::hint::black_box(osprey_agent::host::to_series(&f, &extra, 0));
    }
    let ours_series = (cpu_now() - start).as_secs_f64() / rounds as f64;
    println!(
        "osprey host collection + text exposition: {:.3} ms CPU per collection ({samples} samples, {} bytes)",
        ours * 1e3,
        text.len()
    );
    println!("osprey host collection + remote_write series: {:.3} ms CPU per collection", ours_series * 1e3);

    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("port");
    let mut ne = Command::new("prometheus-node-exporter")
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--no-collector.systemd")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start prometheus-node-exporter");
    let url = format!("127.0.0.1:{port}");
    let get = || -> usize {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(&url) else { return 0 };
        let _ = s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n");
        let mut body = Vec::new();
        let _ = s.read_to_end(&mut body);
        body.len()
    };
    let mut tries = 0;
    while get() == 0 && tries < 100 {
        std::thread::sleep(Duration::from_millis(50));
        tries += 1;
    }
    for _ in 0..5 {
        get();
    }
    let before = proc_cpu(ne.id());
    let mut bytes = 0;
    for _ in 0..rounds {
        bytes = get();
    }
    let theirs = (proc_cpu(ne.id()) - before).as_secs_f64() / rounds as f64;
    let _ = ne.kill();
    let _ = ne.wait();
    println!("node_exporter 1.5 scrape: {:.3} ms CPU per scrape ({bytes} bytes), {rounds} scrapes", theirs * 1e3);
    println!("ratio: osprey uses 1/{:.1} of node_exporter's CPU per collection", theirs / ours);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rounds = args.get(2).and_then(|v| v.parse().ok()).unwrap_or(100);
    match args.get(1).map(String::as_str) {
        Some("parse") => parse(rounds),
        Some("host") => host(rounds),
        _ => eprintln!("usage: cpu parse|host [rounds]"),
    }
}
