//! `osprey up` end to end: a line appended to a file comes back from `osprey query`, and host
//! metrics with the `host` label appear on `/federate`, both through the real protocols over
//! loopback HTTP.

mod harness;

use harness::*;
use std::io::Write;
use std::time::Duration;

#[test]
fn appended_lines_come_back_from_osprey_query() {
    let tmp = tempfile::tempdir().unwrap();
    let logs = tmp.path().join("logs");
    std::fs::create_dir_all(logs.join("nested")).unwrap();
    // Present at start: only lines appended later are shipped (read_from = end).
    std::fs::write(logs.join("app.log"), "old line that must not be shipped\n").unwrap();
    let up = Up::start(&tmp.path().join("data"), &[format!("{}/**/*.log", logs.display())], &tmp.path().join("up.log"));

    let mut f = std::fs::OpenOptions::new().append(true).open(logs.join("app.log")).unwrap();
    let mut expected = Vec::new();
    for i in 0..50 {
        let line = format!("line {i} of app.log status=ok");
        writeln!(f, "{line}").unwrap();
        expected.push(line);
    }
    writeln!(f, "a line with an ERROR in it\r").unwrap();
    // A file created after start is read from its beginning.
    std::fs::write(logs.join("nested/new.log"), "first line of a new file\nsecond line\n").unwrap();

    let found = eventually(Duration::from_secs(20), || {
        let (code, out, _) =
            osprey(&["query", "--addr", &up.collector, "--limit", "1000", "--forward", r#"{job="varlogs"}"#]);
        assert_eq!(code, 0);
        (out.lines().count() >= 53).then_some(out)
    })
    .expect("all lines arrive within 20 s");
    let lines: Vec<&str> = found.lines().collect();
    for line in &expected {
        assert!(lines.contains(&line.as_str()), "missing {line:?}");
    }
    assert!(lines.contains(&"a line with an ERROR in it"), "CR stripped from CRLF line");
    assert!(lines.contains(&"first line of a new file"));
    assert!(!found.contains("old line that must not be shipped"));
    // Forward order within one file is write order.
    let pos: Vec<usize> = expected.iter().map(|l| lines.iter().position(|x| x == l).unwrap()).collect();
    assert!(pos.windows(2).all(|w| w[0] < w[1]), "forward query returns lines in order");

    // A line filter and a filename selector.
    let (code, out, err) = osprey(&[
        "query",
        "--addr",
        &up.collector,
        &format!(r#"{{filename="{}"}} |= "ERROR""#, logs.join("app.log").display()),
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "a line with an ERROR in it");
    let (_, out, _) =
        osprey(&["query", "--addr", &up.collector, r#"{job="varlogs"} != "app" != "ERROR" |~ "(?i)LINE$" "#]);
    assert_eq!(out.trim(), "second line");

    // JSON lines carry the labels the agent attached.
    let (_, out, _) = osprey(&["query", "--addr", &up.collector, "-o", "jsonl", r#"{job="varlogs"} |= "second line""#]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["labels"]["filename"], logs.join("nested/new.log").display().to_string());
    assert!(v["labels"]["host"].as_str().is_some_and(|h| !h.is_empty()));
}

#[test]
fn host_metrics_reach_federate_with_the_host_label() {
    let tmp = tempfile::tempdir().unwrap();
    let up =
        Up::start(&tmp.path().join("data"), &[format!("{}/*.log", tmp.path().display())], &tmp.path().join("up.log"));
    let body = eventually(Duration::from_secs(20), || {
        let (code, body) = get(&format!("{}/federate?match[]=node_cpu_seconds_total", up.collector));
        (code == 200 && body.contains("node_cpu_seconds_total{")).then_some(body)
    })
    .expect("node_cpu_seconds_total on /federate");
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap().trim().to_string();
    let line = body.lines().find(|l| l.starts_with("node_cpu_seconds_total{")).unwrap();
    assert!(line.contains(&format!("host=\"{host}\"")), "{line}");
    assert!(line.contains("mode=\"idle\"") || body.contains("mode=\"idle\""));
    // Only the matched family is returned.
    assert!(!body.contains("node_load1"));
    // The agent serves the same families on its own /metrics.
    let (code, metrics) = get(&format!("{}/metrics", up.agent));
    assert_eq!(code, 200);
    assert!(metrics.contains("# TYPE node_cpu_seconds_total counter"));
    assert!(metrics.contains("osprey_agent_batches_sent_total"), "{metrics}");
}
