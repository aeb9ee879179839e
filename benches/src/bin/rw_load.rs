//! A remote_write load generator: sends the same load to any receiver (the collector,
//! VictoriaMetrics, Prometheus) over keep-alive HTTP/1.1 connections and reports the samples
//! per second it had acknowledged.
//!
//! ```text
//! rw_load URL [--series N] [--batch N] [--connections N] [--seconds S] [--rounds R] [--v2]
//! ```
//!
//! Each round sends one sample for each of the `--series` series of [`fleet_labels`], in
//! requests of `--batch` series; round `r` has timestamp `start + r` ms, so every receiver sees
//! each series' samples in order (the series are partitioned over the connections, as
//! Prometheus shards its queues). Requests are assembled from pre-encoded label blocks and
//! snappy-compressed per request, so the generator costs little next to the receiver. Runs for
//! `--seconds` or `--rounds`, whichever ends first.

use osprey_benches::fleet_labels;
use osprey_protocol::prompb::Label;
use prost::Message;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

struct Args {
    url: String,
    series: usize,
    batch: usize,
    connections: usize,
    seconds: f64,
    rounds: u64,
    v2: bool,
}

fn args() -> Args {
    let mut a = Args {
        url: String::new(),
        series: 100_000,
        batch: 2_000,
        connections: 2,
        seconds: 20.0,
        rounds: u64::MAX,
        v2: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut num =
            || it.next().and_then(|v| v.parse::<f64>().ok()).unwrap_or_else(|| panic!("{arg} needs a number"));
        match arg.as_str() {
            "--series" => a.series = num() as usize,
            "--batch" => a.batch = num() as usize,
            "--connections" => a.connections = num() as usize,
            "--seconds" => a.seconds = num(),
            "--rounds" => a.rounds = num() as u64,
            "--v2" => a.v2 = true,
            url => a.url = url.to_string(),
        }
    }
    assert!(a.url.starts_with("http://"), "usage: rw_load http://HOST:PORT/api/v1/write [options]");
    a
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Pre-encoded pieces of one series: for 1.0 its `labels` fields, for 2.0 its `labels_refs`
/// into a request-wide symbol table built per batch.
struct Batch {
    /// 1.0: label fields per series.
    v1_labels: Vec<Vec<u8>>,
    /// 2.0: the encoded symbols field(s) and the packed labels_refs field per series.
    v2_symbols: Vec<u8>,
    v2_refs: Vec<Vec<u8>>,
    first: usize,
}

fn prepare(first: usize, n: usize) -> Batch {
    let mut v1_labels = Vec::with_capacity(n);
    let mut symbols: Vec<String> = vec![String::new()];
    let mut index = std::collections::HashMap::new();
    let mut v2_refs = Vec::with_capacity(n);
    for i in first..first + n {
        let labels = fleet_labels(i);
        // Each label is field 1 (length-delimited) of TimeSeries.
        let mut l = Vec::new();
        for (k, v) in &labels {
            let msg = Label::new(k.clone(), v.clone()).encode_to_vec();
            l.push(0x0a);
            varint(&mut l, msg.len() as u64);
            l.extend_from_slice(&msg);
        }
        v1_labels.push(l);
        let mut refs = Vec::new();
        for (k, v) in &labels {
            for s in [k, v] {
                let next = symbols.len() as u64;
                let r = *index.entry(s.clone()).or_insert_with(|| {
                    symbols.push(s.clone());
                    next
                });
                varint(&mut refs, r);
            }
        }
        let mut field = vec![0x0a];
        varint(&mut field, refs.len() as u64);
        field.extend_from_slice(&refs);
        v2_refs.push(field);
    }
    let mut v2_symbols = Vec::new();
    for s in &symbols {
        v2_symbols.push(0x22);
        varint(&mut v2_symbols, s.len() as u64);
        v2_symbols.extend_from_slice(s.as_bytes());
    }
    Batch { v1_labels, v2_symbols, v2_refs, first }
}

/// One request body (uncompressed) for `batch` at `ts`.
fn encode(batch: &Batch, ts: i64, v2: bool, out: &mut Vec<u8>) {
    out.clear();
    let mut sample = Vec::with_capacity(20);
    let mut series = Vec::with_capacity(256);
    if v2 {
        out.extend_from_slice(&batch.v2_symbols);
    }
    let n = if v2 { batch.v2_refs.len() } else { batch.v1_labels.len() };
    for k in 0..n {
        sample.clear();
        sample.push(0x09);
        sample.extend_from_slice(&((batch.first + k) as f64 + ts as f64 / 1e3).to_le_bytes());
        sample.push(0x10);
        varint(&mut sample, ts as u64);
        series.clear();
        series.extend_from_slice(if v2 { &batch.v2_refs[k] } else { &batch.v1_labels[k] });
        series.push(0x12);
        varint(&mut series, sample.len() as u64);
        series.extend_from_slice(&sample);
        out.push(if v2 { 0x2a } else { 0x0a });
        varint(out, series.len() as u64);
        out.extend_from_slice(&series);
    }
}

/// Sends one request on a keep-alive connection; returns the status.
fn send(
    conn: &mut BufReader<TcpStream>,
    host: &str,
    path: &str,
    v2: bool,
    body: &[u8],
) -> std::io::Result<(u16, String)> {
    let ct = if v2 { osprey_protocol::writev2::CONTENT_TYPE } else { "application/x-protobuf" };
    let version = if v2 { "2.0.0" } else { "0.1.0" };
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {ct}\r\nContent-Encoding: snappy\r\nX-Prometheus-Remote-Write-Version: {version}\r\nUser-Agent: osprey-rw-load\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut request = Vec::with_capacity(head.len() + body.len());
    request.extend_from_slice(head.as_bytes());
    request.extend_from_slice(body);
    conn.get_mut().write_all(&request)?;
    let mut line = String::new();
    conn.read_line(&mut line)?;
    let status: u16 = line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        conn.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            len = v.trim().parse().unwrap_or(0);
        }
    }
    let mut text = vec![0; len];
    conn.read_exact(&mut text)?;
    Ok((status, String::from_utf8_lossy(&text).into_owned()))
}

fn main() {
    let a = args();
    let rest = a.url.trim_start_matches("http://");
    let (host, path) = rest.split_once('/').map_or((rest, "/"), |(h, p)| (h, p));
    let path = format!("/{path}");
    let batches: Vec<Arc<Batch>> = (0..a.series.div_ceil(a.batch))
        .map(|b| Arc::new(prepare(b * a.batch, a.batch.min(a.series - b * a.batch))))
        .collect();
    let start_ts =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    let acked = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(a.seconds);
    let mut threads = Vec::new();
    for c in 0..a.connections {
        let mine: Vec<Arc<Batch>> = batches.iter().skip(c).step_by(a.connections).cloned().collect();
        let (acked, errors, stop) = (acked.clone(), errors.clone(), stop.clone());
        let (host, path, v2, rounds) = (host.to_string(), path.clone(), a.v2, a.rounds);
        threads.push(std::thread::spawn(move || {
            let stream = TcpStream::connect(&host).expect("connect");
            // One write per request and no Nagle delay: the receiver, not TCP, sets the pace.
            stream.set_nodelay(true).expect("TCP_NODELAY");
            let mut conn = BufReader::new(stream);
            let mut raw = Vec::new();
            let mut compressed = Vec::new();
            let mut encoder = snap::raw::Encoder::new();
            'rounds: for round in 0..rounds {
                for b in &mine {
                    if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
                        break 'rounds;
                    }
                    encode(b, start_ts + round as i64, v2, &mut raw);
                    osprey_protocol::snappy::compress_into(&mut encoder, &raw, &mut compressed);
                    match send(&mut conn, &host, &path, v2, &compressed) {
                        Ok((s, _)) if (200..300).contains(&s) => {
                            acked.fetch_add(b.v1_labels.len() as u64, Ordering::Relaxed);
                        }
                        Ok((s, text)) => {
                            if errors.fetch_add(1, Ordering::Relaxed) < 3 {
                                eprintln!("rw_load: {s}: {}", text.trim());
                            }
                        }
                        Err(e) => {
                            eprintln!("rw_load: connection failed: {e}");
                            stop.store(true, Ordering::Relaxed);
                            break 'rounds;
                        }
                    }
                }
            }
        }));
    }
    for t in threads {
        let _ = t.join();
    }
    let secs = started.elapsed().as_secs_f64();
    let n = acked.load(Ordering::Relaxed);
    println!(
        "samples_acked={n} seconds={secs:.2} samples_per_second={:.0} errors={}",
        n as f64 / secs,
        errors.load(Ordering::Relaxed)
    );
}
