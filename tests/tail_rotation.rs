//! Rotation and identity cases while the agent runs: rename+create, copytruncate (by hand and
//! with Debian's logrotate), truncate-and-rewrite, delete-and-recreate (inode reuse), symlinks,
//! gzip-compressed rotations. Every case checks that each line arrives exactly once.

mod harness;
mod tail_support;

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;
use tail_support::{Collector, agent_config, append, logrotate, metric};

const WAIT: Duration = Duration::from_secs(30);

fn numbered(prefix: &str, range: std::ops::Range<usize>) -> String {
    range.map(|i| format!("{prefix} {i:05} some padding to make the line longer than a few bytes\n")).collect()
}

fn expect_once(lines: &[(HashMap<String, String>, String)], prefix: &str, n: usize) -> Result<(), String> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (_, l) in lines.iter().filter(|(_, l)| l.starts_with(&format!("{prefix} "))) {
        *seen.entry(l.as_str()).or_default() += 1;
    }
    if seen.len() != n {
        return Err(format!("{prefix}: {} distinct of {n}", seen.len()));
    }
    if let Some((l, c)) = seen.iter().find(|(_, c)| **c > 1) {
        return Err(format!("{prefix}: {l:?} arrived {c} times"));
    }
    Ok(())
}

fn start(dir: &Path, sources: &str) -> (Collector, harness::Proc, String) {
    let c = Collector::start(&dir.join("collector"));
    let (agent, url) = harness::start_agent(dir, &agent_config(dir, &c.url(), sources));
    (c, agent, url)
}

fn source(logs: &Path, extra: &str) -> String {
    format!(
        "[sources]\npoll_interval = \"100ms\"\n\n[[sources.files]]\njob = \"t\"\ninclude = [\"{}/*.log\"]\nread_from = \"beginning\"\nrotate_wait = \"2s\"\n{extra}\n",
        logs.display()
    )
}

#[test]
fn rename_and_create_keeps_reading_the_old_file() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let app = logs.join("app.log");
    append(&app, &numbered("a", 0..200));
    let (c, _agent, _) = start(dir.path(), &source(&logs, ""));
    c.wait_for("{job=\"t\"}", WAIT, |l| expect_once(l, "a", 200).is_ok());
    // A writer that still holds the old file writes after the rename: those lines are read
    // from the renamed file, which no glob matches.
    let mut old = std::fs::OpenOptions::new().append(true).open(&app).unwrap();
    std::fs::rename(&app, logs.join("app.log.1")).unwrap();
    old.write_all(numbered("b", 0..300).as_bytes()).unwrap();
    append(&app, &numbered("c", 0..100));
    let lines = c.wait_for("{job=\"t\"}", WAIT, |l| {
        expect_once(l, "a", 200).is_ok() && expect_once(l, "b", 300).is_ok() && expect_once(l, "c", 100).is_ok()
    });
    assert!(lines.iter().all(|(labels, _)| labels["filename"] == app.display().to_string()));
}

#[test]
fn copytruncate_by_hand_and_by_logrotate() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let app = logs.join("app.log");
    append(&app, &numbered("a", 0..100));
    let (c, agent, agent_url) = start(dir.path(), &source(&logs, ""));
    c.wait_for("{job=\"t\"}", WAIT, |l| expect_once(l, "a", 100).is_ok());
    // Append and copy+truncate at once: whatever the agent had not read yet is in the copy.
    append(&app, &numbered("b", 0..500));
    std::fs::copy(&app, logs.join("app.log.1")).unwrap();
    std::fs::OpenOptions::new().write(true).open(&app).unwrap().set_len(0).unwrap();
    append(&app, &numbered("c", 0..50));
    c.wait_for("{job=\"t\"}", WAIT, |l| {
        expect_once(l, "a", 100).is_ok() && expect_once(l, "b", 500).is_ok() && expect_once(l, "c", 50).is_ok()
    });
    // The real logrotate, copytruncate then create.
    append(&app, &numbered("d", 0..300));
    logrotate(&app, "copytruncate", &dir.path().join("logrotate"));
    append(&app, &numbered("e", 0..100));
    logrotate(&app, "create", &dir.path().join("logrotate"));
    append(&app, &numbered("f", 0..100));
    c.wait_for("{job=\"t\"}", WAIT, |l| {
        ["a", "b", "c", "d", "e", "f"]
            .iter()
            .zip([100, 500, 50, 300, 100, 100])
            .all(|(p, n)| expect_once(l, p, n).is_ok())
    });
    assert!(metric(&agent_url, "osprey_agent_file_truncations_total") >= 2.0);
    assert!(metric(&agent_url, "osprey_agent_file_rotations_total") >= 1.0);
    drop(agent);
}

#[test]
fn truncate_and_rewrite_past_the_old_offset() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let app = logs.join("app.log");
    append(&app, &numbered("a", 0..100));
    let (c, _agent, agent_url) = start(dir.path(), &source(&logs, ""));
    c.wait_for("{job=\"t\"}", WAIT, |l| expect_once(l, "a", 100).is_ok());
    // Rewritten with more bytes than were there, in one write: a size check alone cannot see it.
    std::fs::write(&app, numbered("b", 0..400)).unwrap();
    c.wait_for("{job=\"t\"}", WAIT, |l| expect_once(l, "a", 100).is_ok() && expect_once(l, "b", 400).is_ok());
    let changed = metric(&agent_url, "osprey_agent_file_truncations_total")
        + metric(&agent_url, "osprey_agent_file_rewrites_total");
    assert!(changed >= 1.0, "the rewrite was noticed");
}

#[test]
fn delete_and_recreate_reusing_the_inode() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let app = logs.join("app.log");
    append(&app, &numbered("a", 0..100));
    let (c, _agent, _) =
        start(dir.path(), &source(&logs, "").replace("rotate_wait = \"2s\"", "rotate_wait = \"200ms\""));
    c.wait_for("{job=\"t\"}", WAIT, |l| expect_once(l, "a", 100).is_ok());
    let mut reused = false;
    for round in 0..5 {
        let ino = std::fs::metadata(&app).unwrap().ino();
        std::fs::remove_file(&app).unwrap();
        // Wait for the agent to let the deleted file go, so its inode can be reused.
        std::thread::sleep(Duration::from_millis(700));
        let prefix = format!("r{round}");
        append(&app, &numbered(&prefix, 0..150));
        reused |= std::fs::metadata(&app).unwrap().ino() == ino;
        c.wait_for("{job=\"t\"}", WAIT, |l| expect_once(l, &prefix, 150).is_ok());
    }
    println!("inode reused by a recreated file: {reused}");
    c.wait_for("{job=\"t\"}", WAIT, |l| expect_once(l, "a", 100).is_ok());
}

#[test]
fn symlinks_are_followed_once_by_target() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    let real = dir.path().join("real");
    std::fs::create_dir_all(&logs).unwrap();
    std::fs::create_dir_all(&real).unwrap();
    append(&real.join("x.txt"), &numbered("a", 0..100));
    std::os::unix::fs::symlink(real.join("x.txt"), logs.join("one.log")).unwrap();
    std::os::unix::fs::symlink(real.join("x.txt"), logs.join("two.log")).unwrap();
    // A dangling link and a link loop are ignored.
    std::os::unix::fs::symlink(real.join("missing"), logs.join("dangling.log")).unwrap();
    std::os::unix::fs::symlink(logs.join("loop.log"), logs.join("loop.log")).unwrap();
    let (c, _agent, _) = start(dir.path(), &source(&logs, ""));
    c.wait_for("{job=\"t\"}", WAIT, |l| expect_once(l, "a", 100).is_ok());
    append(&real.join("x.txt"), &numbered("b", 0..100));
    let lines =
        c.wait_for("{job=\"t\"}", WAIT, |l| expect_once(l, "a", 100).is_ok() && expect_once(l, "b", 100).is_ok());
    let files: std::collections::HashSet<&String> = lines.iter().map(|(l, _)| &l["filename"]).collect();
    assert_eq!(files.len(), 1, "one stream for one target: {files:?}");
}

#[test]
fn gzip_rotations_are_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    append(&logs.join("app.log"), &numbered("a", 0..10));
    std::fs::write(logs.join("app.log.2.gz"), [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, b'\n', b'x', b'\n']).unwrap();
    let sources = format!(
        "[sources]\npoll_interval = \"100ms\"\n\n[[sources.files]]\njob = \"t\"\ninclude = [\"{}/app.log*\"]\nread_from = \"beginning\"\n",
        logs.display()
    );
    let (c, _agent, agent_url) = start(dir.path(), &sources);
    let lines = c.wait_for("{job=\"t\"}", WAIT, |l| expect_once(l, "a", 10).is_ok());
    assert_eq!(lines.len(), 10, "nothing from the gzip file: {lines:?}");
    assert_eq!(metric(&agent_url, "osprey_agent_files_skipped_total"), 1.0);
}

#[test]
fn deleted_files_are_released_after_rotate_wait_and_unread_bytes_counted() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let mut c = Collector::start(&dir.path().join("collector"));
    let cfg = agent_config(dir.path(), &c.url(), &source(&logs, ""))
        .replace("batch_max_bytes = 65536", "batch_max_bytes = 8192")
        .replace("[host_metrics]", "[pipeline]\nlog_channel_batches = 1\n\n[host_metrics]");
    let (agent, url) = harness::start_agent(dir.path(), &cfg);
    // The collector is down: the agent reads a little, then waits, holding the file open.
    c.down();
    let big = logs.join("big.log");
    append(&big, &numbered("a", 0..20_000));
    harness::eventually(WAIT, || (metric(&url, "osprey_agent_file_lag_bytes") > 0.0).then_some(())).expect("followed");
    std::fs::remove_file(&big).unwrap();
    harness::eventually(WAIT, || (metric(&url, "osprey_agent_deleted_bytes_held") > 1_000_000.0).then_some(()))
        .expect("the deleted file's bytes are reported as held");
    // rotate_wait (2 s) later the descriptor is closed and what was never read is counted.
    harness::eventually(WAIT, || (metric(&url, "osprey_agent_file_bytes_unread_total") > 0.0).then_some(()))
        .expect("unread bytes counted");
    assert_eq!(metric(&url, "osprey_agent_deleted_bytes_held"), 0.0);
    let fds: Vec<String> = std::fs::read_dir(format!("/proc/{}/fd", agent.pid()))
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .map(|p| p.display().to_string())
        .collect();
    assert!(!fds.iter().any(|p| p.contains("big.log")), "descriptor released: {fds:?}");
    c.up();
}
