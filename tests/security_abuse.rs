//! Abuse: 10,000 idle connections, a 1 GiB body (declared and streamed), slow senders (headers
//! and body), and queries that would hold unbounded memory. While each runs, the collector keeps
//! answering a small query from another client, and its resident memory (VmRSS) stays under a
//! bound.
//!
//! File descriptors: 10,000 client sockets here and as many accepted sockets in the collector.
//! The test raises its own soft RLIMIT_NOFILE (to the hard limit, and the hard limit too when
//! running as root), the collector inherits it, and the collector raises its own soft limit to
//! its hard limit at start.

mod harness;
mod security_support;

use harness::*;
use security_support::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;

/// Samples the collector's VmRSS every 50 ms and a small query every 100 ms (from its own
/// connection each time) until stopped; reports the peak and how many small queries answered.
struct Watch {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    answered: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Watch {
    fn start(pid: u32, url: &str) -> Watch {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let answered = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let mut threads = Vec::new();
        {
            let (stop, peak) = (stop.clone(), peak.clone());
            threads.push(std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    peak.fetch_max(rss_bytes(pid), Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(50));
                }
            }));
        }
        {
            let (stop, answered, failed, url) = (stop.clone(), answered.clone(), failed.clone(), url.to_string());
            threads.push(std::thread::spawn(move || {
                let path = format!("/loki/api/v1/query_range?query={}&since=1h&limit=10", enc(r#"{job="small"}"#));
                while !stop.load(Ordering::Relaxed) {
                    match http(&url, "GET", &path, &[], b"") {
                        Ok(a) if a.status == 200 && a.body.contains("small and quick") => {
                            answered.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }));
        }
        Watch { stop, peak, answered, failed, threads }
    }

    /// Waits until at least one more small query answered than `before` (the process is
    /// responsive now, during the abuse).
    fn answers_after(&self, before: u64, what: &str) {
        let ok = eventually(Duration::from_secs(30), || (self.answered.load(Ordering::Relaxed) > before).then_some(()));
        assert!(ok.is_some(), "{what}: no small query answered meanwhile");
    }

    fn answered(&self) -> u64 {
        self.answered.load(Ordering::Relaxed)
    }

    fn finish(mut self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        (self.peak.load(Ordering::Relaxed), self.failed.load(Ordering::Relaxed))
    }
}

fn seed_small(url: &str) {
    let a = http(url, "POST", "/loki/api/v1/push", &[JSON], &push_body(r#"{"job":"small"}"#, &["small and quick"]))
        .unwrap();
    assert_eq!(a.status, 204, "{a:?}");
}

fn metrics_of(url: &str) -> String {
    http(url, "GET", "/metrics", &[], b"").map(|a| a.body).unwrap_or_default()
}

#[test]
fn ten_thousand_idle_connections() {
    const IDLE: usize = 10_000;
    let limit = raise_fd_limit(2 * IDLE as u64 + 1000);
    assert!(
        limit >= IDLE as u64 + 500,
        "this test needs {} open files in the test process; the limit is {limit} and cannot be raised",
        IDLE + 500
    );
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (collector, url) = start_collector(
        dir,
        // A header timeout long enough that no idle connection is cut while the 10,000 are
        // opened on a busy machine (slow_senders_are_cut_off tests that cut).
        &collector_config(dir, "max_connections = 10050\nheader_read_timeout = \"5m\"\n"),
    );
    seed_small(&url);
    let pid = collector.pid();
    let baseline = rss_bytes(pid);
    let watch = Watch::start(pid, &url);

    let host = host_port(&url);
    // In steps of 500, each accepted before the next: a connect loop faster than the accept
    // loop overflows the kernel's accept queue, and with SYN cookies the overflow is dropped by
    // the kernel on the server side while the client believes it is connected.
    let mut idle = Vec::with_capacity(IDLE);
    while idle.len() < IDLE {
        for _ in 0..500 {
            match TcpStream::connect(&host) {
                Ok(s) => idle.push(s),
                Err(e) => panic!("connection {} of {IDLE} failed: {e}", idle.len()),
            }
        }
        let want = idle.len() as f64;
        let open = eventually(Duration::from_secs(30), || {
            let n = metric(&metrics_of(&url), "osprey_http_connections_open");
            (n >= want).then_some(n)
        });
        assert!(open.is_some(), "the collector never held {want} connections open");
    }
    let before = watch.answered();
    watch.answers_after(before, "10,000 idle connections");

    // Over the limit: closed at once and counted, the process unharmed.
    let mut extra = Vec::new();
    for _ in 0..100 {
        if let Ok(s) = TcpStream::connect(&host) {
            extra.push(s);
        }
    }
    // The collector works through its accept queue before the idle clients leave (leaving
    // first would free slots for the extra connections still queued). /metrics cannot be read
    // while every slot is taken, so watch the refused connections close from this side.
    for s in &extra {
        s.set_nonblocking(true).unwrap();
    }
    let closed_by_server = eventually(Duration::from_secs(30), || {
        let closed = extra
            .iter()
            .filter(|s| {
                let mut s: &TcpStream = s;
                match s.read(&mut [0u8; 1]) {
                    Ok(0) => true,
                    Ok(_) => false,
                    Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
                }
            })
            .count();
        (closed >= 40).then_some(closed)
    });
    assert!(closed_by_server.is_some(), "connections over max_connections are closed at once");
    // The idle clients leave; their slots come back, and the refusals were counted.
    drop(idle);
    drop(extra);
    let drained = eventually(Duration::from_secs(60), || {
        let m = metrics_of(&url);
        (metric(&m, "osprey_http_connections_open") < 100.0).then_some(m)
    })
    .expect("closed connections give their slots back");
    let refused = metric(&drained, r#"osprey_http_connections_refused_total{reason="limit"}"#);
    assert!(refused >= 40.0, "connections over max_connections are refused and counted: {refused}");
    let after = watch.answered();
    watch.answers_after(after, "after the idle connections left");
    let (peak, _) = watch.finish();
    eprintln!("10k idle connections: collector RSS {} MiB before, peak {} MiB", baseline / MIB, peak / MIB);
    assert!(peak < baseline + 256 * MIB, "RSS grew from {} to {} MiB", baseline / MIB, peak / MIB);
}

/// Writes `total` bytes of body in 64 KiB writes until the peer stops taking them; returns
/// what was written.
fn stream_body(mut s: TcpStream, total: u64, chunked: bool) -> u64 {
    let chunk = vec![b'x'; 64 << 10];
    let mut sent = 0u64;
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    while sent < total {
        let ok = if chunked {
            s.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                .and_then(|_| s.write_all(&chunk))
                .and_then(|_| s.write_all(b"\r\n"))
        } else {
            s.write_all(&chunk)
        };
        if ok.is_err() {
            break;
        }
        sent += chunk.len() as u64;
    }
    sent
}

#[test]
fn a_one_gib_body_is_refused_without_being_read() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (collector, url) = start_collector(dir, &collector_config(dir, "max_body_bytes = 1048576\n"));
    seed_small(&url);
    let pid = collector.pid();
    let baseline = rss_bytes(pid);
    let watch = Watch::start(pid, &url);
    let host = host_port(&url);

    for (path, chunked) in [("/loki/api/v1/push", false), ("/api/v1/write", true), ("/loki/api/v1/push", true)] {
        let mut s = TcpStream::connect(&host).unwrap();
        let framing =
            if chunked { "Transfer-Encoding: chunked".to_string() } else { format!("Content-Length: {}", 1u64 << 30) };
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/x-protobuf\r\nContent-Encoding: snappy\r\n{framing}\r\n\r\n"
        );
        s.write_all(head.as_bytes()).unwrap();
        let writer = s.try_clone().unwrap();
        let before = watch.answered();
        let sender = std::thread::spawn(move || stream_body(writer, 1 << 30, chunked));
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let answer = read_answer(&mut std::io::BufReader::new(s)).expect("an answer before the body is sent");
        let sent = sender.join().unwrap();
        assert_eq!(answer.status, 413, "{path} chunked={chunked}: {answer:?}");
        assert!(answer.body.contains("server.max_body_bytes"), "{answer:?}");
        assert!(sent < 256 * MIB, "{path} chunked={chunked}: the collector read {} MiB of a 1 GiB body", sent / MIB);
        eprintln!("1 GiB body to {path} (chunked={chunked}): refused with 413 after {} MiB sent", sent / MIB);
        watch.answers_after(before, "a 1 GiB body");
    }
    let (peak, _) = watch.finish();
    eprintln!("1 GiB bodies: collector RSS {} MiB before, peak {} MiB", baseline / MIB, peak / MIB);
    assert!(peak < baseline + 128 * MIB, "RSS grew from {} to {} MiB", baseline / MIB, peak / MIB);
    let m = metrics_of(&url);
    assert!(
        metric(&m, r#"osprey_rejected_requests_total{endpoint="loki_push",reason="body_too_large"}"#) >= 1.0,
        "{m}"
    );
}

#[test]
fn slow_senders_are_cut_off() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (collector, url) =
        start_collector(dir, &collector_config(dir, "header_read_timeout = \"1s\"\nrequest_timeout = \"2s\"\n"));
    seed_small(&url);
    let watch = Watch::start(collector.pid(), &url);
    let host = host_port(&url);

    // Headers one byte at a time, forever: the connection is closed once header_read_timeout
    // passes. (Without the bound this loop would go on for its full 30 s and fail.)
    let before = watch.answered();
    let mut s = TcpStream::connect(&host).unwrap();
    s.write_all(b"GET /ready HTTP/1.1\r\nHost: x\r\n").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let started = Instant::now();
    let mut cut = false;
    while started.elapsed() < Duration::from_secs(30) {
        if s.write_all(b"X").is_err() {
            cut = true;
            break;
        }
        let mut buf = [0u8; 256];
        match s.read(&mut buf) {
            Ok(0) => {
                cut = true;
                break;
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => {
                cut = true;
                break;
            }
        }
    }
    assert!(cut, "a slow header sender was never cut off");
    watch.answers_after(before, "a slow header sender");

    // A body at 10 bytes per 100 ms: answered 408 once request_timeout passes, then closed.
    let before = watch.answered();
    let mut s = TcpStream::connect(&host).unwrap();
    s.write_all(
        format!("POST /loki/api/v1/push HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n")
            .as_bytes(),
    )
    .unwrap();
    let writer = s.try_clone().unwrap();
    let dribble = std::thread::spawn(move || {
        let mut w = writer;
        for _ in 0..300 {
            if w.write_all(b"{\"streams\"").is_err() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    });
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let answer = read_answer(&mut std::io::BufReader::new(s)).expect("an answer to the slow body");
    assert_eq!(answer.status, 408, "{answer:?}");
    assert!(answer.body.contains("server.request_timeout"), "{answer:?}");
    assert!(dribble.join().unwrap(), "the connection stayed open after the 408");
    watch.answers_after(before, "a slow body sender");

    // An idle keep-alive connection is closed after header_read_timeout as well.
    let mut s = TcpStream::connect(&host).unwrap();
    s.write_all(format!("GET /ready HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut r = std::io::BufReader::new(s);
    assert_eq!(read_answer(&mut r).unwrap().status, 200);
    let mut rest = Vec::new();
    let end = r.read_to_end(&mut rest);
    assert!(matches!(end, Ok(0)), "the idle keep-alive connection was not closed: {end:?}");
    watch.finish();

    // Each cut is counted.
    let m = metrics_of(&url);
    assert!(metric(&m, r#"osprey_http_connections_refused_total{reason="header_timeout"}"#) >= 1.0, "{m}");
    assert!(metric(&m, r#"osprey_rejected_requests_total{endpoint="loki_push",reason="slow_body"}"#) >= 1.0, "{m}");
}

#[test]
fn queries_that_would_need_unbounded_memory_stop_at_their_budget() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (collector, url) = start_collector(
        dir,
        &collector_config(dir, "[logs]\nmax_query_memory_bytes = 1048576\n[metrics]\nmax_query_series = 1000\n"),
    );
    seed_small(&url);
    // 100,000 lines, each with its own `user`: a query grouping by it would hold 100,000 series.
    let mut pushed = 0;
    for batch in 0..10 {
        let lines: Vec<String> =
            (0..10_000).map(|i| format!("level=info user=u{} msg=hello", batch * 10_000 + i)).collect();
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let a = http(&url, "POST", "/loki/api/v1/push", &[JSON], &push_body(r#"{"job":"big"}"#, &refs)).unwrap();
        assert_eq!(a.status, 204, "{a:?}");
        pushed += refs.len();
    }
    // 5,000 series: more than one query may select.
    let names: Vec<String> = (0..5000).map(|i| format!("s{i}")).collect();
    let series: Vec<[(&str, &str); 2]> =
        names.iter().map(|n| [("__name__", "big_metric"), ("id", n.as_str())]).collect();
    let refs: Vec<&[(&str, &str)]> = series.iter().map(|s| &s[..]).collect();
    let a = http(&url, "POST", "/api/v1/write", &REMOTE_WRITE, &write_body(&refs)).unwrap();
    assert_eq!(a.status, 204, "{a:?}");

    let pid = collector.pid();
    let baseline = rss_bytes(pid);
    let watch = Watch::start(pid, &url);
    for round in 0..3 {
        let before = watch.answered();
        let q = enc(r#"sum by (user) (count_over_time({job="big"} | logfmt [1h]))"#);
        let a = http(&url, "GET", &format!("/loki/api/v1/query_range?query={q}&since=1h&step=60"), &[], b"").unwrap();
        assert_eq!(a.status, 400, "round {round}: {a:?}");
        assert!(a.body.contains("logs.max_query_memory_bytes"), "{a:?}");
        let a = http(&url, "GET", &format!("/api/v1/query?query={}", enc("big_metric")), &[], b"").unwrap();
        assert_eq!(a.status, 422, "{a:?}");
        assert!(a.body.contains("1000"), "the refusal names the limit: {a:?}");
        watch.answers_after(before, "a query over its memory budget");
    }
    let (peak, _) = watch.finish();
    eprintln!(
        "budgeted queries over {pushed} lines and 5000 series: collector RSS {} MiB before, peak {} MiB",
        baseline / MIB,
        peak / MIB
    );
    assert!(peak < baseline + 128 * MIB, "RSS grew from {} to {} MiB", baseline / MIB, peak / MIB);
    let m = metrics_of(&url);
    assert!(
        metric(&m, r#"osprey_rejected_requests_total{endpoint="loki_query_range",reason="memory_budget"}"#) >= 3.0,
        "{m}"
    );
}
