//! Configuration reload, end to end with real processes: SIGHUP and `POST /-/reload` both
//! re-read the file; a valid change takes effect without losing or repeating a line (a source
//! added while another file is written; a source removed and added back resumes at its
//! checkpoint); an invalid one is refused with its reason, counted, and the running config keeps
//! working; a collector applies new limits; keys that need a restart are reported as such.

mod harness;
mod tail_support;

use harness::*;
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;
use tail_support::{Collector, agent_config, append, metric};

const WAIT: Duration = Duration::from_secs(30);

fn numbered(prefix: &str, range: std::ops::Range<usize>) -> String {
    range.map(|i| format!("{prefix} {i:05} some padding to make the line longer\n")).collect()
}

/// (distinct lines with `prefix`, total arrivals of them).
fn count(lines: &[(HashMap<String, String>, String)], prefix: &str) -> (usize, usize) {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (_, l) in lines.iter().filter(|(_, l)| l.starts_with(&format!("{prefix} "))) {
        *seen.entry(l.as_str()).or_default() += 1;
    }
    (seen.len(), seen.values().sum())
}

fn source(job: &str, glob: &Path) -> String {
    format!("[[sources.files]]\njob = \"{job}\"\ninclude = [\"{}\"]\nread_from = \"beginning\"\n", glob.display())
}

fn config(dir: &Path, collector: &str, sources: &[String]) -> String {
    agent_config(dir, collector, &format!("[sources]\npoll_interval = \"100ms\"\n\n{}", sources.join("\n")))
}

fn reload(url: &str) -> (u16, serde_json::Value) {
    let (code, body) = post(&format!("{url}/-/reload"), &[], b"");
    let v = serde_json::from_str(&body).unwrap_or_else(|e| panic!("/-/reload answer is not JSON ({e}): {body}"));
    (code, v)
}

fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array().map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect()).unwrap_or_default()
}

#[test]
fn sources_added_and_removed_by_reload_lose_and_repeat_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let c = Collector::start(&dir.path().join("collector"));
    let (a, b) = (logs.join("a.log"), logs.join("b.log"));
    append(&b, &numbered("b", 0..500));
    let only_a = config(dir.path(), &c.url(), &[source("t", &a)]);
    let both = config(dir.path(), &c.url(), &[source("t", &a), source("u", &b)]);
    let only_b = config(dir.path(), &c.url(), &[source("u", &b)]);
    let (mut agent, url) = start_agent(dir.path(), &only_a);
    let selector = r#"{job=~"t|u"}"#;

    // a.log is being written while b.log's source is added.
    append(&a, &numbered("a", 0..100));
    c.wait_for(selector, WAIT, |l| count(l, "a").0 == 100);
    let writer = {
        let a = a.clone();
        std::thread::spawn(move || {
            for chunk in 1..30 {
                append(&a, &numbered("a", chunk * 100..(chunk + 1) * 100));
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    std::fs::write(dir.path().join("agent.toml"), &both).unwrap();
    let (code, answer) = reload(&url);
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["status"], "success");
    assert_eq!(strings(&answer["applied"]), ["sources.files"]);
    assert!(strings(&answer["needs_restart"]).is_empty(), "{answer}");
    let details = strings(&answer["details"]).join(" ");
    assert!(details.contains("1 followed files kept their position"), "{details}");
    writer.join().unwrap();
    let lines = c.wait_for(selector, WAIT, |l| count(l, "a").0 == 3000 && count(l, "b").0 == 500);
    assert_eq!(count(&lines, "a"), (3000, 3000), "the file being written: every line once");
    assert_eq!(count(&lines, "b"), (500, 500), "the file of the new source: every line once");
    assert!(lines.iter().filter(|(_, l)| l.starts_with("b ")).all(|(labels, _)| labels["job"] == "u"));

    // SIGHUP removes a.log's source: it is released, its checkpoint kept; what is written to it
    // meanwhile is not shipped...
    std::fs::write(dir.path().join("agent.toml"), &only_b).unwrap();
    agent.signal("HUP");
    wait_for_log(&dir.path().join("agent.log"), "configuration reloaded", 2, WAIT);
    assert_eq!(metric(&url, "osprey_config_reloads_total"), 2.0);
    assert_eq!(metric(&url, "osprey_agent_files_open"), 1.0, "a.log is closed");
    append(&a, &numbered("c", 0..300));
    append(&b, &numbered("d", 0..300));
    let lines = c.wait_for(selector, WAIT, |l| count(l, "d").0 == 300);
    assert_eq!(count(&lines, "c").0, 0, "a.log is not followed while no source matches it");
    // ...until a reload matches it again: it resumes at its checkpoint.
    std::fs::write(dir.path().join("agent.toml"), &both).unwrap();
    let (code, answer) = reload(&url);
    assert_eq!(code, 200, "{answer}");
    let lines = c.wait_for(selector, WAIT, |l| count(l, "c").0 == 300);
    assert_eq!(count(&lines, "a"), (3000, 3000), "nothing before the checkpoint is read again");
    assert_eq!(count(&lines, "c"), (300, 300));
    assert_eq!(count(&lines, "d"), (300, 300));

    // The checkpoints survive a restart too: nothing is shipped twice.
    assert!(agent.terminate(WAIT).is_some_and(|s| s.success()));
    append(&a, &numbered("e", 0..50));
    let (_agent, _) = start_agent(dir.path(), &both);
    let lines = c.wait_for(selector, WAIT, |l| count(l, "e").0 == 50);
    for (p, n) in [("a", 3000), ("b", 500), ("c", 300), ("d", 300), ("e", 50)] {
        assert_eq!(count(&lines, p), (n, n), "{p}: every line once");
    }
}

#[test]
fn an_invalid_config_is_refused_with_its_reason_and_the_running_one_keeps_working() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let c = Collector::start(&dir.path().join("collector"));
    let a = logs.join("a.log");
    let good = config(dir.path(), &c.url(), &[source("t", &a)]);
    let (agent, url) = start_agent(dir.path(), &good);
    append(&a, &numbered("a", 0..20));
    c.wait_for(r#"{job="t"}"#, WAIT, |l| count(l, "a").0 == 20);

    // A bad regex: 400, the key and the problem in the answer, counted.
    let bad = good.replace("read_from = \"beginning\"\n", "read_from = \"beginning\"\nkeep_lines = \"(\"\n");
    std::fs::write(dir.path().join("agent.toml"), &bad).unwrap();
    let (code, answer) = reload(&url);
    assert_eq!(code, 400, "{answer}");
    assert_eq!(answer["status"], "error");
    let error = answer["error"].as_str().unwrap();
    assert!(error.contains("sources.files[0].keep_lines") && error.contains("invalid regex"), "{error}");
    assert!(error.contains("agent.toml:"), "names the file and line: {error}");
    assert_eq!(metric(&url, "osprey_config_reloads_total"), 1.0);
    assert_eq!(metric(&url, "osprey_config_last_reload_successful"), 0.0);
    // The running config keeps working.
    append(&a, &numbered("b", 0..20));
    c.wait_for(r#"{job="t"}"#, WAIT, |l| count(l, "b").0 == 20);

    // SIGHUP with a syntax error: logged with the reason, the process keeps running.
    std::fs::write(dir.path().join("agent.toml"), "[[sources.files]\n").unwrap();
    agent.signal("HUP");
    let log = wait_for_log(&dir.path().join("agent.log"), "configuration reload rejected", 2, WAIT);
    assert!(log.contains("agent.toml:1:"), "the reason names the file and line:\n{log}");
    assert_eq!(metric(&url, "osprey_config_reloads_total"), 2.0);

    // A valid change with a key that needs a restart: applied as far as possible, and said.
    let moved = good
        .replace("listen = \"127.0.0.1:0\"", "listen = \"127.0.0.1:1\"")
        .replace("batch_max_wait = \"200ms\"", "batch_max_wait = \"300ms\"");
    std::fs::write(dir.path().join("agent.toml"), &moved).unwrap();
    let (code, answer) = reload(&url);
    assert_eq!(code, 200, "{answer}");
    assert_eq!(strings(&answer["needs_restart"]), ["server.listen"]);
    assert_eq!(strings(&answer["applied"]), ["collector.batch_max_wait"]);
    assert_eq!(metric(&url, "osprey_config_last_reload_successful"), 1.0);
    append(&a, &numbered("c", 0..20));
    let lines = c.wait_for(r#"{job="t"}"#, WAIT, |l| count(l, "c").0 == 20);
    assert_eq!(count(&lines, "a"), (20, 20));
    assert_eq!(count(&lines, "b"), (20, 20));
}

#[test]
fn a_collector_applies_new_limits_on_reload() {
    let dir = tempfile::tempdir().unwrap();
    let config = |max_line: &str, max_query: &str| {
        collector_config(dir.path(), &format!("\n[logs]\nmax_line_bytes = {max_line}\nmax_query_lines = {max_query}\n"))
    };
    let (proc, url) = start_collector(dir.path(), &config("1000", "100"));
    let push = |line: &str, ts: u64| {
        let body = format!(r#"{{"streams":[{{"stream":{{"job":"r"}},"values":[["{ts}","{line}"]]}}]}}"#);
        post(&format!("{url}/loki/api/v1/push"), &[("content-type", "application/json")], body.as_bytes())
    };
    let now = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    let long = "x".repeat(500);
    assert_eq!(push(&long, now()).0, 204);
    let query = |limit: u32| get(&format!("{url}/loki/api/v1/query_range?query=%7Bjob%3D%22r%22%7D&limit={limit}"));
    assert_eq!(query(20).0, 200);

    // SIGHUP: smaller limits from the next request on.
    std::fs::write(dir.path().join("collector.toml"), config("100", "10")).unwrap();
    proc.signal("HUP");
    wait_for_log(&dir.path().join("collector.log"), "configuration reloaded", 1, WAIT);
    let (code, body) = push(&long, now());
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("Max entry size '100' bytes exceeded"), "{body}");
    let (code, body) = query(20);
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("(20 > 10)"), "{body}");

    // An invalid value is refused with its key; the limits in force stay.
    std::fs::write(dir.path().join("collector.toml"), config("0", "10")).unwrap();
    let (code, answer) = reload(&url);
    assert_eq!(code, 400, "{answer}");
    let error = answer["error"].as_str().unwrap();
    assert!(error.contains("logs.max_line_bytes: must be greater than 0"), "{error}");
    assert_eq!(push(&long, now()).0, 400);
    assert_eq!(push("short enough", now()).0, 204);

    // Raised again through POST /-/reload; a changed listener needs a restart.
    let raised = config("1000", "100").replace("127.0.0.1:0", "127.0.0.1:1");
    std::fs::write(dir.path().join("collector.toml"), raised).unwrap();
    let (code, answer) = reload(&url);
    assert_eq!(code, 200, "{answer}");
    assert_eq!(strings(&answer["needs_restart"]), ["server.listen"]);
    assert_eq!(strings(&answer["applied"]), ["logs.max_line_bytes", "logs.max_query_lines"]);
    assert_eq!(push(&long, now()).0, 204);
    assert_eq!(query(20).0, 200);
    let (_, metrics) = get(&format!("{url}/metrics"));
    assert!(metrics.contains("osprey_config_reloads_total{result=\"success\"} 2"), "{metrics}");
    assert!(metrics.contains("osprey_config_reloads_total{result=\"failure\"} 1"), "{metrics}");
    assert!(metrics.contains("osprey_config_last_reload_successful 1"), "{metrics}");
}
