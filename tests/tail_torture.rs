//! The tailing torture test: writers append numbered lines to four files while the files are
//! rotated (Debian logrotate `create` and `copytruncate`; by hand: rename, truncate-and-rewrite,
//! delete-and-recreate reusing the inode), the agent is SIGKILLed and restarted at random
//! moments, and the collector is down for a while. Afterwards the collector must hold every
//! line; duplicates may only come from the batches in flight at each kill, and are printed.
//!
//! What no tailer can recover, and the test therefore avoids (it is not the agent's doing):
//! - copytruncate loses lines written between logrotate's copy and its truncate, and a writer
//!   that recreates its file between logrotate's rename and create gets it moved aside to
//!   `*.backup`, so writers pause while logrotate runs (as applications reopen after rotation);
//! - truncate-and-rewrite and delete-and-recreate destroy the file's content, so they are done
//!   once the collector holds that file's lines: the point is that lines written *after* them
//!   are neither skipped nor mixed up with the old content (inode reuse);
//! - a file renamed twice while the agent was down was never at a watched path while the agent
//!   ran, so rotations and kills take turns (a rotation waits until the agent has been up a
//!   little).
//!
//! `OSPREY_TORTURE_SECS` makes the writing phase longer for a soak run by hand.

mod harness;
mod tail_support;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tail_support::{Collector, agent_config, append, logrotate};

const FILES: [&str; 4] = ["create", "copy", "rename", "rewrite"];

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn line(name: &str, seq: u64) -> String {
    format!("{name} {seq:07} the quick brown fox jumps over the lazy dog {}\n", "x".repeat((seq % 17) as usize))
}

/// Distinct and total lines per file name, parsed back from the collector.
fn tally(lines: &[(HashMap<String, String>, String)]) -> (HashMap<String, std::collections::HashSet<u64>>, usize) {
    let mut per: HashMap<String, std::collections::HashSet<u64>> = HashMap::new();
    let mut total = 0;
    for (_, l) in lines {
        let mut it = l.split(' ');
        if let (Some(name), Some(seq)) = (it.next(), it.next().and_then(|s| s.parse::<u64>().ok())) {
            per.entry(name.to_string()).or_default().insert(seq);
            total += 1;
        }
    }
    (per, total)
}

#[test]
fn no_line_is_lost_through_rotations_kills_and_outages() {
    let secs: u64 = std::env::var("OSPREY_TORTURE_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(15);
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1;
    println!("torture: {secs}s of writing, seed {seed}");
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let mut collector = Collector::start(&dir.path().join("collector"));
    let sources = format!(
        "[sources]\npoll_interval = \"100ms\"\n\n[[sources.files]]\njob = \"torture\"\ninclude = [\"{}/*.log\"]\nread_from = \"beginning\"\nrotate_wait = \"30s\"\n",
        logs.display()
    );
    let cfg = agent_config(dir.path(), &collector.url(), &sources)
        .replace("batch_max_bytes = 65536", "batch_max_bytes = 16384")
        .replace("[host_metrics]", "[pipeline]\nlog_channel_batches = 4\n\n[host_metrics]");
    std::fs::write(dir.path().join("agent.toml"), &cfg).unwrap();
    let starts = AtomicU64::new(0);
    let start_agent = || {
        let n = starts.fetch_add(1, Ordering::Relaxed);
        let mut cmd = std::process::Command::new(harness::osprey_bin());
        cmd.arg("agent").arg("--config").arg(dir.path().join("agent.toml"));
        let log = dir.path().join(format!("agent-{n:02}.log"));
        harness::spawn_until("osprey agent", cmd, "osprey agent listening", &log, Duration::from_secs(30)).0
    };
    let agent = Arc::new(Mutex::new((start_agent(), Instant::now())));
    let stop = Arc::new(AtomicBool::new(false));
    let written: Arc<Vec<AtomicU64>> = Arc::new(FILES.iter().map(|_| AtomicU64::new(0)).collect());
    let locks: Arc<Vec<Mutex<()>>> = Arc::new(FILES.iter().map(|_| Mutex::new(())).collect());
    let path = |name: &str| -> PathBuf { logs.join(format!("{name}.log")) };

    // Writers: bursts of lines, each burst an open-append-close (a writer that follows renames).
    let mut threads = Vec::new();
    for (i, name) in FILES.iter().enumerate() {
        let (stop, written, locks, p) = (stop.clone(), written.clone(), locks.clone(), path(name));
        let name = name.to_string();
        threads.push(std::thread::spawn(move || {
            let mut rng = Rng(seed.wrapping_add(i as u64 * 7919) | 1);
            while !stop.load(Ordering::Relaxed) {
                {
                    let _g = locks[i].lock().unwrap();
                    let from = written[i].load(Ordering::Relaxed);
                    let n = 1 + rng.below(30);
                    let text: String = (from..from + n).map(|s| line(&name, s)).collect();
                    append(&p, &text);
                    written[i].store(from + n, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(5 + rng.below(20)));
            }
        }));
    }

    let started = Instant::now();
    let mut rng = Rng(seed);
    let (mut kills, mut rotations, mut outages) = (0u32, HashMap::<&str, u32>::new(), 0u32);
    let mut next_kill = Instant::now() + Duration::from_millis(800 + rng.below(2000));
    let mut next_rotation = Instant::now() + Duration::from_millis(500);
    let mut outage_at = Some(started + Duration::from_secs(secs * 2 / 5));
    let mut outage_end: Option<Instant> = None;
    let mut rename_n = 0;
    let lr_state = dir.path().join("logrotate");
    while started.elapsed() < Duration::from_secs(secs) {
        let now = Instant::now();
        if now >= next_kill {
            let mut a = agent.lock().unwrap();
            a.0.kill9();
            kills += 1;
            std::thread::sleep(Duration::from_millis(rng.below(400)));
            *a = (start_agent(), Instant::now());
            next_kill = Instant::now() + Duration::from_millis(1000 + rng.below(2500));
        }
        if outage_at.is_some_and(|t| now >= t) {
            collector.down();
            outages += 1;
            outage_at = None;
            outage_end = Some(now + Duration::from_secs(3));
        }
        if outage_end.is_some_and(|t| now >= t) {
            collector.up();
            outage_end = None;
        }
        if now >= next_rotation && agent.lock().unwrap().1.elapsed() > Duration::from_millis(600) {
            let _a = agent.lock().unwrap(); // no kill during a rotation
            let which = FILES[rng.below(FILES.len() as u64) as usize];
            let i = FILES.iter().position(|f| *f == which).unwrap();
            let p = path(which);
            match which {
                "create" => {
                    // An application reopens its file after logrotate created the new one; a
                    // writer that recreates it itself in between races logrotate, which then
                    // moves the writer's file aside to `*.backup`, out of every glob.
                    let _g = locks[i].lock().unwrap();
                    logrotate(&p, "create", &lr_state);
                }
                "copy" => {
                    let _g = locks[i].lock().unwrap();
                    logrotate(&p, "copytruncate", &lr_state);
                }
                "rename" => {
                    rename_n += 1;
                    if p.exists() {
                        std::fs::rename(&p, logs.join(format!("rename.log.{rename_n}"))).unwrap();
                    }
                }
                _ => {
                    // Destructive: only once the collector holds every line of this file.
                    if outage_end.is_none() {
                        let _g = locks[i].lock().unwrap();
                        let n = written[i].load(Ordering::Relaxed);
                        let sel = format!("{{job=\"torture\", filename=\"{}\"}}", p.display());
                        let have = harness::eventually(Duration::from_secs(20), || {
                            let (per, _) = tally(&collector.lines(&sel));
                            (per.get("rewrite").map_or(0, |s| s.len() as u64) >= n).then_some(())
                        });
                        if have.is_some() {
                            if rng.below(2) == 0 {
                                std::fs::OpenOptions::new().write(true).open(&p).unwrap().set_len(0).unwrap();
                                *rotations.entry("truncate").or_default() += 1;
                            } else {
                                std::fs::remove_file(&p).unwrap();
                                *rotations.entry("delete").or_default() += 1;
                            }
                        }
                    }
                }
            }
            *rotations.entry(which).or_default() += 1;
            next_rotation = Instant::now() + Duration::from_millis(300 + rng.below(700));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    if outage_end.is_some() {
        collector.up();
    }
    let total: u64 = written.iter().map(|w| w.load(Ordering::Relaxed)).sum();
    println!("torture: wrote {total} lines; {kills} SIGKILLs, {outages} collector outage(s), rotations {rotations:?}");

    // Every line must arrive.
    let mut last = (HashMap::new(), 0);
    let done = harness::eventually(Duration::from_secs(60), || {
        last = tally(&collector.lines("{job=\"torture\"}"));
        FILES
            .iter()
            .enumerate()
            .all(|(i, f)| last.0.get(*f).map_or(0, |s| s.len() as u64) == written[i].load(Ordering::Relaxed))
            .then_some(())
    });
    let (per, arrived) = &last;
    let mut missing = Vec::new();
    for (i, f) in FILES.iter().enumerate() {
        let n = written[i].load(Ordering::Relaxed);
        let got = per.get(*f).cloned().unwrap_or_default();
        let lost: Vec<u64> = (0..n).filter(|s| !got.contains(s)).collect();
        if !lost.is_empty() {
            missing.push(format!("{f}: {} missing, first {:?}", lost.len(), &lost[..lost.len().min(10)]));
        }
    }
    let duplicates = *arrived as u64 - per.values().map(|s| s.len() as u64).sum::<u64>();
    println!("torture: {arrived} lines arrived, {duplicates} duplicates (from batches in flight at {kills} kills)");
    if done.is_none() || !missing.is_empty() {
        drop(agent);
        let kept = dir.keep();
        panic!("lines lost: {missing:?}; files, agent logs (agent-NN.log) and data kept in {}", kept.display());
    }
    // Each kill can re-send what was in flight: the batches being sent (4), the queued ones (4)
    // and the one being built, at 16 KiB (~250 of these lines) each.
    let bound = u64::from(kills) * 10 * 260;
    assert!(duplicates <= bound, "{duplicates} duplicates for {kills} kills (bound {bound})");
}
