//! Restarts: checkpoints resume exactly after SIGTERM, at most the in-flight batches are sent
//! twice after SIGKILL, rotations and inode reuse that happen while the agent is stopped are
//! recognised, a corrupt checkpoint store is set aside and counted, and `read_from` applies only
//! to files present at the first start.

mod harness;
mod tail_support;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;
use tail_support::{Collector, agent_config, append, metric};

const WAIT: Duration = Duration::from_secs(30);

fn numbered(prefix: &str, range: std::ops::Range<usize>) -> String {
    range.map(|i| format!("{prefix} {i:05} padding padding padding padding padding\n")).collect()
}

/// (distinct lines with `prefix`, total arrivals of them).
fn count(lines: &[(HashMap<String, String>, String)], prefix: &str) -> (usize, usize) {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (_, l) in lines.iter().filter(|(_, l)| l.starts_with(&format!("{prefix} "))) {
        *seen.entry(l.as_str()).or_default() += 1;
    }
    (seen.len(), seen.values().sum())
}

fn sources(logs: &Path, read_from: &str) -> String {
    format!(
        "[sources]\npoll_interval = \"100ms\"\n\n[[sources.files]]\njob = \"t\"\ninclude = [\"{}/*.log\"]\nread_from = \"{read_from}\"\nrotate_wait = \"2s\"\n",
        logs.display()
    )
}

fn setup() -> (tempfile::TempDir, std::path::PathBuf, Collector) {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let c = Collector::start(&dir.path().join("collector"));
    (dir, logs, c)
}

#[test]
fn sigterm_resumes_exactly_and_sigkill_resends_at_most_the_batches_in_flight() {
    let (dir, logs, c) = setup();
    let cfg = agent_config(dir.path(), &c.url(), &sources(&logs, "beginning"));
    let app = logs.join("app.log");
    append(&app, &numbered("a", 0..300));
    let (mut agent, _) = harness::start_agent(dir.path(), &cfg);
    c.wait_for("{job=\"t\"}", WAIT, |l| count(l, "a").0 == 300);
    assert!(agent.terminate(Duration::from_secs(15)).is_some_and(|s| s.success()), "graceful exit");
    append(&app, &numbered("b", 0..300));
    let (mut agent, _) = harness::start_agent(dir.path(), &cfg);
    let lines = c.wait_for("{job=\"t\"}", WAIT, |l| count(l, "b").0 == 300);
    assert_eq!(count(&lines, "a"), (300, 300), "nothing read twice after SIGTERM");
    assert_eq!(count(&lines, "b"), (300, 300));
    // SIGKILL while lines are being written and shipped.
    append(&app, &numbered("c", 0..2000));
    agent.kill9();
    append(&app, &numbered("d", 0..300));
    let (_agent, _) = harness::start_agent(dir.path(), &cfg);
    let lines = c.wait_for("{job=\"t\"}", WAIT, |l| count(l, "c").0 == 2000 && count(l, "d").0 == 300);
    let dups = count(&lines, "c").1 - 2000 + count(&lines, "d").1 - 300;
    println!("duplicates after one SIGKILL: {dups}");
    // Lines acknowledged (and checkpointed) before the kill are not sent again: the duplicates
    // can only come from the lines being shipped at the kill.
    assert!(
        count(&lines, "a").1 == 300 && count(&lines, "b").1 == 300,
        "acknowledged lines before the kill are not resent"
    );
}

#[test]
fn rotations_while_stopped_are_recovered() {
    let (dir, logs, c) = setup();
    let cfg = agent_config(dir.path(), &c.url(), &sources(&logs, "beginning"));
    let (renamed, copied, reused) = (logs.join("renamed.log"), logs.join("copied.log"), logs.join("reused.log"));
    append(&renamed, &numbered("r1", 0..100));
    append(&copied, &numbered("c1", 0..100));
    append(&reused, &numbered("u1", 0..100));
    let (mut agent, _) = harness::start_agent(dir.path(), &cfg);
    c.wait_for("{job=\"t\"}", WAIT, |l| count(l, "r1").0 == 100 && count(l, "c1").0 == 100 && count(l, "u1").0 == 100);
    assert!(agent.terminate(Duration::from_secs(15)).is_some());
    // While stopped: lines appended, then rename+create...
    append(&renamed, &numbered("r2", 0..100));
    std::fs::rename(&renamed, logs.join("renamed.log.1")).unwrap();
    append(&renamed, &numbered("r3", 0..100));
    // ...copytruncate...
    append(&copied, &numbered("c2", 0..100));
    std::fs::copy(&copied, logs.join("copied.log.1")).unwrap();
    std::fs::OpenOptions::new().write(true).open(&copied).unwrap().set_len(0).unwrap();
    append(&copied, &numbered("c3", 0..300));
    // ...and delete+recreate (ext4 hands the freed inode to the next file), longer than before.
    std::fs::remove_file(&reused).unwrap();
    append(&reused, &numbered("u2", 0..300));
    let (_agent, url) = harness::start_agent(dir.path(), &cfg);
    let lines = c.wait_for("{job=\"t\"}", WAIT, |l| {
        ["r2", "r3", "c2", "c3"].iter().all(|p| count(l, p).0 >= 100) && count(l, "u2").0 == 300
    });
    for (p, n) in
        [("r1", 100), ("r2", 100), ("r3", 100), ("c1", 100), ("c2", 100), ("c3", 300), ("u1", 100), ("u2", 300)]
    {
        assert_eq!(count(&lines, p), (n, n), "{p}: every line once");
    }
    assert!(metric(&url, "osprey_agent_rotated_tails_read_total") >= 2.0);
}

#[test]
fn a_corrupt_checkpoint_store_is_set_aside_and_counted() {
    let (dir, logs, c) = setup();
    let cfg = agent_config(dir.path(), &c.url(), &sources(&logs, "beginning"));
    append(&logs.join("app.log"), &numbered("a", 0..10));
    let (mut agent, _) = harness::start_agent(dir.path(), &cfg);
    c.wait_for("{job=\"t\"}", WAIT, |l| count(l, "a").0 == 10);
    assert!(agent.terminate(Duration::from_secs(15)).is_some());
    let store = dir.path().join("agent-data/tail/checkpoints");
    let mut bytes = std::fs::read(&store).expect("checkpoints were written");
    let n = bytes.len();
    bytes[n - 2] ^= 0x55;
    std::fs::write(&store, &bytes).unwrap();
    let (_agent, url) = harness::start_agent(dir.path(), &cfg);
    assert_eq!(metric(&url, "osprey_agent_checkpoint_corruptions_total"), 1.0);
    let aside: Vec<String> = std::fs::read_dir(dir.path().join("agent-data/tail"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("checkpoints.corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    // It starts as on a first start (read_from = beginning here): the lines come again, and
    // new lines flow.
    append(&logs.join("app.log"), &numbered("b", 0..10));
    c.wait_for("{job=\"t\"}", WAIT, |l| count(l, "b").0 == 10);
}

#[test]
fn read_from_end_applies_only_to_files_present_at_first_start() {
    let (dir, logs, c) = setup();
    let cfg = agent_config(dir.path(), &c.url(), &sources(&logs, "end"));
    append(&logs.join("old.log"), &numbered("old", 0..50));
    let (mut agent, url) = harness::start_agent(dir.path(), &cfg);
    // The agent is following old.log once its directory is watched.
    harness::eventually(WAIT, || (metric(&url, "osprey_agent_files_open") >= 1.0).then_some(()))
        .expect("file followed");
    append(&logs.join("old.log"), &numbered("new", 0..50));
    append(&logs.join("later.log"), &numbered("later", 0..50));
    let lines = c.wait_for("{job=\"t\"}", WAIT, |l| count(l, "new").0 == 50 && count(l, "later").0 == 50);
    assert_eq!(count(&lines, "old").0, 0, "present at first start: read from the end");
    // After a restart the checkpoint wins; a file created while stopped is read from its start.
    assert!(agent.terminate(Duration::from_secs(15)).is_some());
    append(&logs.join("stopped.log"), &numbered("stopped", 0..50));
    let (_agent, _) = harness::start_agent(dir.path(), &cfg);
    let lines = c.wait_for("{job=\"t\"}", WAIT, |l| count(l, "stopped").0 == 50);
    assert_eq!(count(&lines, "old").0, 0);
    assert_eq!(count(&lines, "new"), (50, 50));
}
