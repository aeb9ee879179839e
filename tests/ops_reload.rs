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
    let config = |max_line: &str, max_query: &str, max_series: &str| {
        collector_config(
            dir.path(),
            &format!(
                "\n[logs]\nmax_line_bytes = {max_line}\nmax_query_lines = {max_query}\n\n[metrics]\nmax_series_per_tenant = {max_series}\n"
            ),
        )
    };
    let (proc, url) = start_collector(dir.path(), &config("1000", "100", "1000"));
    let write = |name: &str| {
        use osprey_protocol::prompb::{Label, Sample, TimeSeries, WriteRequest};
        let ts = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
        let series = TimeSeries {
            labels: vec![Label::new("__name__", name), Label::new("job", "r")],
            samples: vec![Sample { value: 1.0, timestamp: ts }],
            exemplars: vec![],
        };
        let body =
            osprey_protocol::prompb::encode_write_request(&WriteRequest { timeseries: vec![series], metadata: vec![] });
        post(&format!("{url}/api/v1/write"), &osprey_protocol::prompb::REMOTE_WRITE_HEADERS, &body)
    };
    for name in ["s1", "s2", "s3"] {
        assert_eq!(write(name).0, 204);
    }
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
    std::fs::write(dir.path().join("collector.toml"), config("100", "10", "3")).unwrap();
    proc.signal("HUP");
    wait_for_log(&dir.path().join("collector.log"), "configuration reloaded", 1, WAIT);
    let (code, body) = push(&long, now());
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("Max entry size '100' bytes exceeded"), "{body}");
    let (code, body) = query(20);
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("(20 > 10)"), "{body}");
    let (code, body) = write("s4");
    assert_eq!(code, 429, "a new series over the lowered limit: {body}");
    assert!(body.contains("metrics.max_series_per_tenant"), "{body}");
    assert_eq!(write("s1").0, 204, "series already stored keep being updated");

    // An invalid value is refused with its key; the limits in force stay.
    std::fs::write(dir.path().join("collector.toml"), config("0", "10", "3")).unwrap();
    let (code, answer) = reload(&url);
    assert_eq!(code, 400, "{answer}");
    let error = answer["error"].as_str().unwrap();
    assert!(error.contains("logs.max_line_bytes: must be greater than 0"), "{error}");
    assert_eq!(push(&long, now()).0, 400);
    assert_eq!(push("short enough", now()).0, 204);

    // Raised again through POST /-/reload; a changed listener needs a restart.
    let raised = config("1000", "100", "1000").replace("127.0.0.1:0", "127.0.0.1:1");
    std::fs::write(dir.path().join("collector.toml"), raised).unwrap();
    let (code, answer) = reload(&url);
    assert_eq!(code, 200, "{answer}");
    assert_eq!(strings(&answer["needs_restart"]), ["server.listen"]);
    assert_eq!(
        strings(&answer["applied"]),
        ["logs.max_line_bytes", "logs.max_query_lines", "metrics.max_series_per_tenant"]
    );
    assert_eq!(push(&long, now()).0, 204);
    assert_eq!(write("s4").0, 204);
    assert_eq!(query(20).0, 200);
    let (_, metrics) = get(&format!("{url}/metrics"));
    assert!(metrics.contains("osprey_config_reloads_total{result=\"success\"} 2"), "{metrics}");
    assert!(metrics.contains("osprey_config_reloads_total{result=\"failure\"} 1"), "{metrics}");
    assert!(metrics.contains("osprey_config_last_reload_successful 1"), "{metrics}");
}

#[test]
fn scrape_jobs_and_host_metrics_follow_a_reload() {
    let dir = tempfile::tempdir().unwrap();
    let cdir = dir.path().join("c");
    std::fs::create_dir_all(&cdir).unwrap();
    let (_collector, curl) = start_collector(&cdir, &collector_config(&cdir, ""));
    let base = agent_config(dir.path(), &curl, "");
    let (_agent, url) = start_agent(dir.path(), &base);
    let target = curl.trim_start_matches("http://");
    let job = format!(
        "[scrape]\ninterval = \"1s\"\n\n[[scrape.jobs]]\njob_name = \"collector-self\"\nstatic_configs = [{{ targets = [\"{target}\"] }}]\n"
    );
    let with_host = base.replace("[host_metrics]\nenabled = false", "[host_metrics]\ninterval = \"1s\"");
    std::fs::write(dir.path().join("agent.toml"), format!("{with_host}\n{job}")).unwrap();
    let (code, answer) = reload(&url);
    assert_eq!(code, 200, "{answer}");
    assert_eq!(
        strings(&answer["applied"]),
        ["host_metrics.enabled", "host_metrics.interval", "scrape.interval", "scrape.jobs"]
    );
    let federate = |selector: &str| get(&format!("{curl}/federate?match[]={}", enc(selector))).1;
    eventually(WAIT, || get(&format!("{url}/metrics")).1.contains("node_load1").then_some(()))
        .expect("host metrics collected after the reload");
    eventually(WAIT, || federate(r#"{job="collector-self"}"#).contains("osprey_ingested_samples_total").then_some(()))
        .expect("the new scrape job's samples reach the collector");

    // Removing the job: its series are marked stale and leave the collector.
    std::fs::write(dir.path().join("agent.toml"), &with_host).unwrap();
    let (code, answer) = reload(&url);
    assert_eq!(code, 200, "{answer}");
    assert_eq!(strings(&answer["applied"]), ["scrape.interval", "scrape.jobs"]);
    eventually(WAIT, || federate(r#"{job="collector-self"}"#).trim().is_empty().then_some(()))
        .expect("the removed job's series are stale");
    assert!(federate(r#"{job="node"}"#).contains("node_load1"), "host metrics still flow");
}

#[test]
fn retention_changed_by_reload_applies_at_the_next_maintenance_pass() {
    use osprey_collector::logs::{LogStore, ScanRequest};
    use osprey_config::{CollectorConfig, Duration as D};
    use osprey_protocol::logproto::{EntryAdapter, PushRequest, StreamAdapter, Timestamp};
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = CollectorConfig { data_dir: dir.path().to_path_buf(), ..Default::default() };
    cfg.logs.fsync = osprey_config::collector::FsyncMode::Never;
    cfg.logs.maintenance_interval = D::from_secs(3600);
    cfg.logs.out_of_order_window = D::from_secs(400 * 86_400);
    let store = LogStore::open(&cfg, osprey_collector::telemetry::Telemetry::new(&mut Default::default())).unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as i64;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    for (job, ts) in [("old", now - 10 * 86_400 * 1_000_000_000), ("new", now)] {
        let entries = vec![EntryAdapter {
            timestamp: Some(Timestamp::from_unix_nanos(ts)),
            line: format!("{job} line"),
            structured_metadata: vec![],
        }];
        let req =
            PushRequest { streams: vec![StreamAdapter { labels: format!(r#"{{job="{job}"}}"#), entries, hash: 0 }] };
        rt.block_on(store.push("t", req)).unwrap();
    }
    store.flush_now().unwrap();
    let count = |job: &str| {
        let req = ScanRequest {
            tenant: "t".into(),
            selector: osprey_collector::selector::parse_series_selector(&format!(r#"{{job="{job}"}}"#)).unwrap(),
            start_ns: 0,
            end_ns: i64::MAX,
            backward: false,
            line_hints: vec![],
        };
        let mut n = 0;
        store
            .scan(&req, &mut |_, _| {
                n += 1;
                std::ops::ControlFlow::Continue(())
            })
            .unwrap();
        n
    };
    assert_eq!((count("old"), count("new")), (1, 1));
    // The reload: a 2-day retention, and maintenance often enough to see it.
    let mut reloaded = cfg.logs.clone();
    reloaded.retention.period = D::from_secs(2 * 86_400);
    reloaded.maintenance_interval = D::from_millis(100);
    store.apply_config(&reloaded);
    eventually(WAIT, || (count("old") == 0).then_some(())).expect("the old part is deleted by the new retention");
    assert_eq!(count("new"), 1);
}
