//! Line handling end to end: CRLF (the Loghub files), a 10 MiB line, invalid UTF-8, a binary
//! file, multiline joining, parsing into labels and filters, an unreadable file, a directory
//! that disappears, and readers pausing while the collector is down.

mod harness;
mod tail_support;

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use tail_support::{Collector, agent_config, append, metric};

const WAIT: Duration = Duration::from_secs(30);

fn sources(logs: &Path, extra: &str) -> String {
    format!(
        "[sources]\npoll_interval = \"100ms\"\n\n[[sources.files]]\njob = \"t\"\ninclude = [\"{}/**/*.log\"]\nread_from = \"beginning\"\n{extra}\n",
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

fn of_file<'a>(lines: &'a [(HashMap<String, String>, String)], file: &Path) -> Vec<&'a String> {
    lines.iter().filter(|(l, _)| l["filename"] == file.display().to_string()).map(|(_, l)| l).collect()
}

#[test]
fn loghub_crlf_files_arrive_line_for_line_without_cr() {
    let (dir, logs, c) = setup();
    let loghub = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/loghub");
    for name in ["Apache_2k.log", "OpenSSH_2k.log"] {
        std::fs::copy(loghub.join(name), logs.join(name)).unwrap();
    }
    let (_agent, _) = harness::start_agent(dir.path(), &agent_config(dir.path(), &c.url(), &sources(&logs, "")));
    let lines = c.wait_for("{job=\"t\"}", WAIT, |l| l.len() >= 3998);
    for name in ["Apache_2k.log", "OpenSSH_2k.log"] {
        let raw = std::fs::read(loghub.join(name)).unwrap();
        // These files end without a newline: their last line is not complete yet and stays
        // unshipped until its newline arrives (or the file is rotated away).
        let mut want: Vec<String> = raw
            .split(|b| *b == b'\n')
            .map(|l| String::from_utf8_lossy(l.strip_suffix(b"\r").unwrap_or(l)).into_owned())
            .collect();
        want.pop();
        assert_eq!(want.len(), 1999);
        let got = of_file(&lines, &logs.join(name));
        assert_eq!(got.len(), want.len(), "{name}");
        assert!(got.iter().zip(&want).all(|(g, w)| *g == w), "{name}: same lines, same order, no CR");
    }
}

#[test]
fn huge_lines_invalid_utf8_and_binary_files() {
    let (dir, logs, c) = setup();
    let mut huge = vec![b'x'; 10 << 20];
    huge.extend_from_slice(b"\nafter the huge line\n");
    std::fs::write(logs.join("huge.log"), &huge).unwrap();
    std::fs::write(logs.join("utf8.log"), b"ok \xff\xfe bad bytes\nfine\n").unwrap();
    // Pseudo-random bytes (a fixed LCG): newlines, NULs, CRs and invalid UTF-8 everywhere.
    let mut x: u32 = 12345;
    let binary: Vec<u8> = (0..256 << 10)
        .map(|_| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            (x >> 16) as u8
        })
        .collect();
    std::fs::write(logs.join("binary.log"), &binary).unwrap();
    let (agent, url) = harness::start_agent(dir.path(), &agent_config(dir.path(), &c.url(), &sources(&logs, "")));
    let lines = c.wait_for("{job=\"t\"}", WAIT, |l| {
        of_file(l, &logs.join("huge.log")).len() == 2 && of_file(l, &logs.join("utf8.log")).len() == 2
    });
    let h = of_file(&lines, &logs.join("huge.log"));
    assert_eq!(h[0].len(), 256 << 10, "cut to max_line_bytes");
    assert_eq!(h[1], "after the huge line");
    assert_eq!(of_file(&lines, &logs.join("utf8.log"))[0], "ok \u{fffd}\u{fffd} bad bytes");
    let newlines = binary.iter().filter(|b| **b == b'\n').count();
    c.wait_for("{job=\"t\"}", WAIT, |l| of_file(l, &logs.join("binary.log")).len() == newlines);
    assert_eq!(metric(&url, "osprey_agent_lines_truncated_total"), 1.0);
    assert!(metric(&url, "osprey_agent_lines_invalid_utf8_total") >= 2.0);
    drop(agent);
}

#[test]
fn multiline_parsing_labels_and_filters() {
    let (dir, logs, c) = setup();
    let java = logs.join("java.log");
    let json = logs.join("app").join("json.log");
    std::fs::create_dir_all(json.parent().unwrap()).unwrap();
    let sources = format!(
        r#"[sources]
poll_interval = "100ms"

[[sources.files]]
job = "java"
include = ["{java}"]
read_from = "beginning"
multiline = {{ preset = "java", flush_timeout = "300ms" }}

[[sources.files]]
job = "json"
include = ["{logs}/app/*.log"]
read_from = "beginning"
drop_lines = "healthz"
labels = {{ team = "core" }}
parse = {{ format = "json", labels = ["level"], timestamp_field = "ts", timestamp_format = "rfc3339" }}
"#,
        java = java.display(),
        logs = logs.display()
    );
    append(
        &java,
        "2026-11-26 ERROR failed\njava.lang.IllegalStateException: boom\n\tat a.B.c(B.java:1)\n\tat a.B.main(B.java:9)\nCaused by: java.io.IOException: disk\n\t... 1 more\n2026-11-26 INFO last one\n",
    );
    append(
        &json,
        concat!(
            r#"{"level":"error","ts":"2026-11-26T08:00:00Z","msg":"a","req":"1"}"#,
            "\n",
            r#"{"level":"info","ts":"2026-11-26T08:00:01Z","msg":"GET /healthz"}"#,
            "\n",
            r#"{"level":"info","ts":"not a time","msg":"b"}"#,
            "\n",
            "not json at all\n"
        ),
    );
    let (_agent, url) = harness::start_agent(dir.path(), &agent_config(dir.path(), &c.url(), &sources));
    // The last event of a quiet file is shipped after flush_timeout.
    let lines = c.wait_for("{job=\"java\"}", WAIT, |l| l.len() == 3);
    assert!(
        lines[1].1.starts_with("java.lang.IllegalStateException: boom\n\tat a.B.c")
            && lines[1].1.ends_with("... 1 more")
    );
    assert_eq!(lines[2].1, "2026-11-26 INFO last one");
    let all = c.wait_for("{job=\"json\"}", WAIT, |l| l.len() == 3);
    let errors = c.entries("{job=\"json\", level=\"error\", team=\"core\"}");
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].1, 1_795_680_000_000_000_000, "timestamp taken from the line");
    assert!(all.iter().all(|(_, l)| !l.contains("healthz")));
    assert_eq!(metric(&url, "osprey_agent_lines_filtered_total"), 1.0);
    assert_eq!(metric(&url, "osprey_agent_line_parse_failures_total"), 1.0);
    assert_eq!(metric(&url, "osprey_agent_timestamp_parse_failures_total"), 1.0);
}

#[test]
fn unreadable_files_and_disappearing_directories() {
    let (dir, logs, c) = setup();
    let secret = logs.join("secret.log");
    append(&secret, "secret\n");
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o000)).unwrap();
    let sub = logs.join("sub");
    std::fs::create_dir_all(&sub).unwrap();
    append(&sub.join("a.log"), "a1\n");
    // Root reads any file: run the agent as nobody then, with its data dir open to it.
    let root = unsafe_is_root();
    let cfg = agent_config(dir.path(), &c.url(), &sources(&logs, ""));
    std::fs::write(dir.path().join("agent.toml"), &cfg).unwrap();
    let mut cmd;
    if root {
        for p in [dir.path(), &logs, &sub] {
            std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
        }
        std::fs::set_permissions(sub.join("a.log"), std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
        cmd = Command::new(harness::peer_bin("setpriv"));
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", harness::osprey_bin()]);
    } else {
        cmd = Command::new(harness::osprey_bin());
    }
    cmd.arg("agent").arg("--config").arg(dir.path().join("agent.toml"));
    let (_agent, line) =
        harness::spawn_until("agent", cmd, "osprey agent listening", &dir.path().join("agent.log"), WAIT);
    let url = harness::url_in(&line);
    c.wait_for("{job=\"t\"}", WAIT, |l| l.iter().any(|(_, l)| l == "a1"));
    assert!(metric(&url, "osprey_agent_files_unreadable_total") >= 1.0);
    let log = std::fs::read_to_string(dir.path().join("agent.log")).unwrap();
    assert!(log.contains("cannot open a matched log file") && log.contains("secret.log"), "{log}");
    // The directory goes away, comes back with a new file.
    std::fs::remove_dir_all(&sub).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    std::fs::create_dir_all(&sub).unwrap();
    append(&sub.join("b.log"), "b1\n");
    if root {
        std::fs::set_permissions(sub.join("b.log"), std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
    }
    let lines = c.wait_for("{job=\"t\"}", WAIT, |l| l.iter().any(|(_, l)| l == "b1"));
    assert!(!lines.iter().any(|(_, l)| l == "secret"));
}

fn unsafe_is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

#[test]
fn readers_pause_while_the_collector_is_down_then_catch_up() {
    let (dir, logs, mut c) = setup();
    let cfg = agent_config(dir.path(), &c.url(), &sources(&logs, ""))
        .replace("batch_max_bytes = 65536", "batch_max_bytes = 8192")
        .replace("[host_metrics]", "[pipeline]\nlog_channel_batches = 2\n\n[host_metrics]");
    let (_agent, url) = harness::start_agent(dir.path(), &cfg);
    c.down();
    let body: String = (0..40_000).map(|i| format!("line {i:06} with some text to fill it\n")).collect();
    append(&logs.join("big.log"), &body);
    // Reading stops when the channel is full: most of the file waits on disk, not in memory.
    harness::eventually(WAIT, || (metric(&url, "osprey_agent_file_lag_bytes") > 0.0).then_some(()))
        .expect("the agent followed the file");
    std::thread::sleep(Duration::from_millis(1500));
    let read = metric(&url, "osprey_agent_bytes_read_total");
    assert!(read < body.len() as f64 / 2.0, "read {read} of {} bytes while the collector was down", body.len());
    assert!(metric(&url, "osprey_agent_batches_retried_total") >= 1.0);
    c.up();
    let lines = c.wait_for("{job=\"t\"}", Duration::from_secs(60), |l| l.len() >= 40_000);
    let distinct: std::collections::HashSet<&String> = lines.iter().map(|(_, l)| l).collect();
    assert_eq!(distinct.len(), 40_000);
}

#[test]
fn more_files_than_descriptors_are_all_read() {
    let (dir, logs, c) = setup();
    for i in 0..40 {
        append(&logs.join(format!("f{i:02}.log")), &format!("first {i}\n"));
    }
    let cfg =
        agent_config(dir.path(), &c.url(), &sources(&logs, "")).replace("[sources]", "[sources]\nmax_open_files = 8");
    let (_agent, url) = harness::start_agent(dir.path(), &cfg);
    c.wait_for("{job=\"t\"}", WAIT, |l| l.iter().filter(|(_, l)| l.starts_with("first ")).count() == 40);
    assert!(metric(&url, "osprey_agent_files_open") <= 8.0);
    assert!(metric(&url, "osprey_agent_files_open_limit_reached_total") >= 1.0);
    // Closed idle files are reopened when they grow, and their identity is checked.
    for i in 0..40 {
        append(&logs.join(format!("f{i:02}.log")), &format!("second {i}\n"));
    }
    let lines = c.wait_for("{job=\"t\"}", WAIT, |l| l.iter().filter(|(_, l)| l.starts_with("second ")).count() == 40);
    assert_eq!(lines.len(), 80, "each line once");
}
