//! Helpers shared by the `tail_*` tests: a collector on a fixed port (so it can be restarted
//! under the agent), agent configs, Loki queries and `/metrics` reads.

#![allow(dead_code)]

use crate::harness::{self, Proc};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A collector that can be stopped and started again on the same port and data.
pub struct Collector {
    pub dir: PathBuf,
    pub port: u16,
    pub proc: Option<Proc>,
}

impl Collector {
    pub fn start(dir: &Path) -> Collector {
        std::fs::create_dir_all(dir).unwrap();
        let mut c = Collector { dir: dir.to_path_buf(), port: harness::free_port(), proc: None };
        c.up();
        c
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn up(&mut self) {
        let config = format!(
            "data_dir = {:?}\n\n[server]\nlisten = \"127.0.0.1:{}\"\n\n[logs]\nmax_query_lines = 2000000\n",
            self.dir.join("data").display().to_string(),
            self.port
        );
        let (proc, _) = harness::start_collector(&self.dir, &config);
        self.proc = Some(proc);
    }

    pub fn down(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill9();
        }
    }

    /// Every entry of the streams matching `selector`: (labels, line).
    pub fn lines(&self, selector: &str) -> Vec<(HashMap<String, String>, String)> {
        self.entries(selector).into_iter().map(|(l, _, line)| (l, line)).collect()
    }

    /// Every entry: (labels, timestamp ns, line), oldest first. Fetched in pages of 20,000 by
    /// time (an answer is a few MB at most: the harness's HTTP client caps bodies at 10 MB).
    pub fn entries(&self, selector: &str) -> Vec<(HashMap<String, String>, i64, String)> {
        const PAGE: usize = 20_000;
        let mut out = Vec::new();
        let mut seen: std::collections::HashSet<(String, i64, String)> = std::collections::HashSet::new();
        let mut start: i64 = 0;
        loop {
            let url = format!(
                "{}/loki/api/v1/query_range?query={}&start={start}&limit={PAGE}&direction=forward",
                self.url(),
                encode(selector)
            );
            let (status, body) = harness::get(&url);
            assert_eq!(status, 200, "query {selector}: {body}");
            let v: serde_json::Value = serde_json::from_str(&body).expect("query answer is JSON");
            let mut page = Vec::new();
            for s in v["data"]["result"].as_array().cloned().unwrap_or_default() {
                let labels: HashMap<String, String> = s["stream"]
                    .as_object()
                    .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string())).collect())
                    .unwrap_or_default();
                for e in s["values"].as_array().cloned().unwrap_or_default() {
                    let ts: i64 = e[0].as_str().and_then(|t| t.parse().ok()).unwrap_or(0);
                    page.push((labels.clone(), ts, e[1].as_str().unwrap_or("").to_string()));
                }
            }
            let full = page.len() >= PAGE;
            let mut new = 0;
            for (labels, ts, line) in page {
                let key = (labels.get("filename").cloned().unwrap_or_default(), ts, line.clone());
                if seen.insert(key) {
                    start = start.max(ts);
                    out.push((labels, ts, line));
                    new += 1;
                }
            }
            if !full || new == 0 {
                break;
            }
        }
        out.sort_by_key(|(_, ts, _)| *ts);
        out
    }

    /// Waits until `check` holds for the lines of `selector`; panics with what was seen.
    pub fn wait_for(
        &self,
        selector: &str,
        timeout: Duration,
        check: impl Fn(&[(HashMap<String, String>, String)]) -> bool,
    ) -> Vec<(HashMap<String, String>, String)> {
        let mut last = Vec::new();
        let ok = harness::eventually(timeout, || {
            last = self.lines(selector);
            check(&last).then_some(())
        });
        if ok.is_none() {
            let sample: Vec<&String> = last.iter().map(|(_, l)| l).take(20).collect();
            panic!("{selector}: condition not met within {timeout:?}; {} lines, first: {sample:?}", last.len());
        }
        last
    }
}

fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// An agent config shipping to `collector` with `sources` (TOML for `[[sources.files]]` and
/// `[sources]` keys) and quick batching and polling.
pub fn agent_config(dir: &Path, collector: &str, sources: &str) -> String {
    format!(
        r#"data_dir = {data:?}
hostname = "test-host"

[server]
listen = "127.0.0.1:0"

[collector]
url = "{collector}"
batch_max_wait = "200ms"
batch_max_bytes = 65536
retry_initial_backoff = "50ms"
retry_max_backoff = "500ms"

[host_metrics]
enabled = false

{sources}
"#,
        data = dir.join("agent-data").display().to_string(),
    )
}

/// The sum of every sample of `name` on an agent's `/metrics` (0 when absent).
pub fn metric(agent: &str, name: &str) -> f64 {
    let (status, body) = harness::get(&format!("{agent}/metrics"));
    assert_eq!(status, 200);
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}

/// Runs `/usr/sbin/logrotate` once, now, on `file` (`create` or `copytruncate`).
pub fn logrotate(file: &Path, mode: &str, state_dir: &Path) {
    let bin = harness::peer_bin("logrotate");
    std::fs::create_dir_all(state_dir).unwrap();
    let conf = state_dir.join(format!("{}.conf", file.file_name().unwrap().to_string_lossy()));
    let body = format!(
        "\"{}\" {{\n  su root root\n  rotate 50\n  missingok\n  notifempty\n  nocompress\n  {mode}\n}}\n",
        file.display()
    );
    std::fs::write(&conf, body).unwrap();
    let out = Command::new(bin)
        .arg("--force")
        .arg("--state")
        .arg(state_dir.join("state"))
        .arg(&conf)
        .output()
        .expect("run logrotate");
    assert!(out.status.success(), "logrotate failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// Appends `text` to `path` (opened, written, closed: a writer that follows renames).
pub fn append(path: &Path, text: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}
