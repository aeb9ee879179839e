//! The disk queue under `kill -9`: a real child process pushes (and acks some) records as fast
//! as it can and is killed at arbitrary moments; after each kill the queue opens, every record
//! the child reported as pushed and not acknowledged is there, in order, with no gap, and a
//! torn tail (if the kill landed mid-write) was cut rather than refusing to open.
//!
//! The child is this test binary itself, re-run on the ignored `child_writer` test.

use osprey_agent::queue::{DiskQueue, QueueMetrics, QueueOptions};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

const DIR_ENV: &str = "OSPREY_QUEUE_TEST_DIR";
const START_ENV: &str = "OSPREY_QUEUE_TEST_START";

fn options(dir: &std::path::Path) -> QueueOptions {
    // Small segments so kills also land around segment rolls and deletions.
    QueueOptions { dir: dir.to_path_buf(), max_bytes: 64 << 20, segment_bytes: 16 << 10, ..QueueOptions::default() }
}

fn record(i: u64) -> Vec<u8> {
    let mut r = i.to_le_bytes().to_vec();
    r.resize(8 + (i as usize * 37) % 3000, (i % 251) as u8);
    r
}

#[test]
#[ignore = "child process of queue_survives_kill9, started by it"]
fn child_writer() {
    let Ok(dir) = std::env::var(DIR_ENV) else { return };
    let mut i: u64 = std::env::var(START_ENV).unwrap().parse().unwrap();
    let (q, _) = DiskQueue::open(options(std::path::Path::new(&dir)), QueueMetrics::default()).unwrap();
    let mut out = std::io::stdout().lock();
    loop {
        q.push(&record(i)).unwrap();
        writeln!(out, "pushed {i}").unwrap();
        if i.is_multiple_of(7)
            && let Some(r) = q.next().unwrap()
        {
            let n = u64::from_le_bytes(r.bytes[..8].try_into().unwrap());
            q.ack(r.id).unwrap();
            writeln!(out, "acked {n}").unwrap();
        }
        out.flush().unwrap();
        i += 1;
    }
}

#[test]
fn queue_survives_kill9() {
    let dir = tempfile::tempdir().unwrap();
    let mut next_start = 0u64;
    let mut total_corruptions = 0;
    for round in 0..6 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["child_writer", "--exact", "--ignored", "--nocapture"])
            .env(DIR_ENV, dir.path())
            .env(START_ENV, next_start.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut last_pushed = None;
        let mut last_acked = None;
        let target = 150 + round * 53;
        let mut seen = 0;
        for line in stdout.lines() {
            let line = line.unwrap();
            if let Some(n) = line.strip_prefix("pushed ") {
                last_pushed = Some(n.parse::<u64>().unwrap());
                seen += 1;
            } else if let Some(n) = line.strip_prefix("acked ") {
                last_acked = Some(n.parse::<u64>().unwrap());
            }
            if seen >= target {
                break;
            }
        }
        child.kill().unwrap();
        child.wait().unwrap();
        let last_pushed = last_pushed.expect("the child pushed records");

        let metrics = QueueMetrics::default();
        let (q, report) = DiskQueue::open(options(dir.path()), metrics).unwrap();
        total_corruptions += report.corruptions;
        let mut got = Vec::new();
        while let Some(r) = q.next().unwrap() {
            let n = u64::from_le_bytes(r.bytes[..8].try_into().unwrap());
            assert_eq!(r.bytes, record(n), "record {n} comes back byte for byte");
            got.push(n);
        }
        assert!(!got.is_empty(), "round {round}: unacknowledged records survive");
        for w in got.windows(2) {
            assert_eq!(w[1], w[0] + 1, "round {round}: records in order with no gap: {got:?}");
        }
        // The child may have persisted one more ack than it lived to print.
        let first_expected = last_acked.map_or(0, |a| a + 1);
        assert!(
            got[0] <= first_expected + 1,
            "round {round}: first record {} but {first_expected} was never acknowledged",
            got[0]
        );
        let last = *got.last().unwrap();
        assert!(
            last >= last_pushed,
            "round {round}: record {last_pushed} was reported pushed but the queue ends at {last}"
        );
        assert_eq!(q.pending(), got.len() as u64);
        next_start = last + 1;
    }
    // Not every kill tears a write, but the queue opened every time, whatever it found.
    eprintln!("torn tails repaired over 6 kills: {total_corruptions}");
}
