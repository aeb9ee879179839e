//! The agent's host metrics against the real node_exporter (Debian's
//! `prometheus-node-exporter`), both started here on 127.0.0.1 reading the same machine:
//!
//! - for every `node_*` family both expose: the same type, HELP text and label sets;
//! - values that do not move (memory size, file system sizes, boot time, CPU count, OS and
//!   kernel identity) are equal, counters agree within a small tolerance;
//! - the families node_exporter has and the agent lacks are printed;
//! - `promtool check metrics` parses the agent's `/metrics` and finds no more lint problems
//!   than in node_exporter's own output.

mod harness;

use harness::*;
use osprey_protocol::exposition::{Entry, Format, MetricKind, Parser};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

#[derive(Default, Debug)]
struct Fam {
    kind: Option<MetricKind>,
    help: Option<String>,
    samples: BTreeMap<Vec<(String, String)>, f64>,
}

fn families(body: &str) -> BTreeMap<String, Fam> {
    let mut out: BTreeMap<String, Fam> = BTreeMap::new();
    for e in Parser::new(body.as_bytes(), Format::Text) {
        match e.unwrap_or_else(|e| panic!("unparsable exposition: {e}")) {
            Entry::Help { name, help } => out.entry(name.into()).or_default().help = Some(help.into_owned()),
            Entry::Type { name, kind } => out.entry(name.into()).or_default().kind = Some(kind),
            Entry::Unit { .. } => {}
            Entry::Sample(s) => {
                let mut labels: Vec<(String, String)> =
                    s.labels().map(|(k, v)| (k.to_string(), v.into_owned())).collect();
                labels.sort();
                out.entry(s.name.into()).or_default().samples.insert(labels, s.value);
            }
        }
    }
    out
}

fn start_node_exporter(dir: &Path, textfile: &Path) -> (Proc, String) {
    let port = free_port();
    let mut cmd = Command::new(peer_bin("prometheus-node-exporter"));
    cmd.arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg(format!("--collector.textfile.directory={}", textfile.display()))
        .arg("--no-collector.systemd")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("node_exporter.log")).unwrap());
    let proc = Proc { child: cmd.spawn().expect("start node_exporter"), name: "node_exporter".into(), stdout: None };
    let url = format!("http://127.0.0.1:{port}");
    eventually(Duration::from_secs(20), || (get(&format!("{url}/metrics")).0 == 200).then_some(()))
        .expect("node_exporter answers");
    (proc, url)
}

pub fn agent_config(dir: &Path, extra: &str) -> String {
    format!(
        "data_dir = {data:?}\n\n[server]\nlisten = \"127.0.0.1:0\"\n\n[collector]\nurl = \"http://127.0.0.1:9\"\n\n[[sources.files]]\njob = \"none\"\ninclude = [{logs:?}]\n\n{extra}",
        data = dir.join("data").display().to_string(),
        logs = dir.join("logs/*.log").display().to_string(),
    )
}

/// Label sets whose values differ legitimately between two processes scraping at different
/// moments, or that only one of the two can know.
fn volatile(name: &str) -> bool {
    name.starts_with("node_scrape_collector_")
}

fn promtool_lint(body: &str) -> (i32, usize, String) {
    let mut child = Command::new(peer_bin("promtool"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let findings = text.lines().filter(|l| !l.trim().is_empty()).count();
    (out.status.code().unwrap_or(-1), findings, text)
}

#[test]
fn host_metrics_match_node_exporter() {
    let dir = tempfile::tempdir().unwrap();
    let textfile = dir.path().join("textfile");
    std::fs::create_dir_all(&textfile).unwrap();
    std::fs::write(
        textfile.join("app.prom"),
        "# HELP app_jobs_done Jobs done.\n# TYPE app_jobs_done counter\napp_jobs_done{queue=\"a\"} 42\n",
    )
    .unwrap();
    let (_ne, ne_url) = start_node_exporter(dir.path(), &textfile);
    let config = agent_config(
        dir.path(),
        &format!("[host_metrics]\ninterval = \"1s\"\ntextfile_directory = {:?}\n", textfile.display().to_string()),
    );
    let (_agent, agent_url) = start_agent(dir.path(), &config);
    let ours = eventually(Duration::from_secs(20), || {
        let (status, body) = get(&format!("{agent_url}/metrics"));
        (status == 200 && body.contains("node_load1 ")).then_some(body)
    })
    .expect("agent serves host metrics");
    let (_, theirs) = get(&format!("{ne_url}/metrics"));
    let ours_f = families(&ours);
    let theirs_f = families(&theirs);

    let mut problems = Vec::new();
    let mut compared = 0;
    for (name, t) in theirs_f.iter().filter(|(n, _)| n.starts_with("node_") || n.starts_with("app_")) {
        let Some(o) = ours_f.get(name) else { continue };
        compared += 1;
        if o.kind != t.kind {
            problems.push(format!("{name}: type {:?}, node_exporter {:?}", o.kind, t.kind));
        }
        if o.help != t.help {
            problems.push(format!("{name}: HELP {:?}, node_exporter {:?}", o.help, t.help));
        }
        let names = |f: &Fam| -> BTreeSet<Vec<String>> {
            f.samples.keys().map(|l| l.iter().map(|(k, _)| k.clone()).collect()).collect()
        };
        if names(o) != names(t) {
            problems.push(format!("{name}: label names {:?}, node_exporter {:?}", names(o), names(t)));
            continue;
        }
        if volatile(name) {
            continue;
        }
        let ours_sets: BTreeSet<_> = o.samples.keys().collect();
        let theirs_sets: BTreeSet<_> = t.samples.keys().collect();
        if ours_sets != theirs_sets {
            problems.push(format!("{name}: label sets {ours_sets:?}, node_exporter {theirs_sets:?}"));
            continue;
        }
        if t.kind == Some(MetricKind::Counter) {
            for (labels, tv) in &t.samples {
                let ov = o.samples[labels];
                let tolerance = 0.05 * tv.abs().max(ov.abs()) + 50.0;
                if (ov - tv).abs() > tolerance {
                    problems.push(format!("{name}{labels:?}: counter {ov}, node_exporter {tv}"));
                }
            }
        }
    }
    // Values that do not move must be equal.
    for name in [
        "node_memory_MemTotal_bytes",
        "node_memory_SwapTotal_bytes",
        "node_filesystem_size_bytes",
        "node_filesystem_files",
        "node_boot_time_seconds",
        "node_filefd_maximum",
        "node_os_info",
        "node_os_version",
        "node_uname_info",
        "node_disk_info",
        "node_textfile_scrape_error",
        "app_jobs_done",
    ] {
        let (Some(o), Some(t)) = (ours_f.get(name), theirs_f.get(name)) else {
            problems.push(format!(
                "{name}: missing (ours: {}, node_exporter: {})",
                ours_f.contains_key(name),
                theirs_f.contains_key(name)
            ));
            continue;
        };
        if o.samples != t.samples {
            problems.push(format!("{name}: {:?}, node_exporter {:?}", o.samples, t.samples));
        }
    }
    let cpus = |f: &BTreeMap<String, Fam>| f["node_cpu_seconds_total"].samples.len();
    assert_eq!(cpus(&ours_f), cpus(&theirs_f), "same CPUs and modes");

    let lacking: Vec<&String> =
        theirs_f.keys().filter(|n| n.starts_with("node_") && !ours_f.contains_key(*n)).collect();
    eprintln!("compared {compared} families; node_exporter has {} families the agent lacks:", lacking.len());
    for n in &lacking {
        eprintln!("  {n}");
    }
    assert!(compared > 100, "compared only {compared} families");
    assert!(problems.is_empty(), "{} differences:\n{}", problems.len(), problems.join("\n"));

    // promtool: parses (exit 0, or 3 for lint findings only) with no more findings than
    // node_exporter's own output gets.
    let (ours_code, ours_lint, ours_text) = promtool_lint(&ours);
    let (theirs_code, theirs_lint, _) = promtool_lint(&theirs);
    assert!(
        ours_code == 0 || ours_code == 3,
        "promtool could not parse the agent's /metrics (exit {ours_code}):\n{ours_text}"
    );
    assert!(theirs_code == 0 || theirs_code == 3);
    eprintln!("promtool lint findings: agent {ours_lint}, node_exporter {theirs_lint}");
    assert!(ours_lint <= theirs_lint, "agent has {ours_lint} lint findings, node_exporter {theirs_lint}:\n{ours_text}");
}
