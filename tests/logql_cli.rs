//! `osprey query` against a real collector: log and metric queries in each output format,
//! errors, and `--tail`.

mod harness;

use harness::{collector_config, osprey, start_collector};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

fn push(base: &str, body: &str) {
    let (status, resp) =
        harness::post(&format!("{base}/loki/api/v1/push"), &[("content-type", "application/json")], body.as_bytes());
    assert_eq!(status, 204, "{resp}");
}

#[test]
fn prints_lines_series_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (_proc, base) = start_collector(dir.path(), &collector_config(dir.path(), "[logs]\nfsync = \"never\"\n"));
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/loki_api/push.json");
    push(&base, &std::fs::read_to_string(fixture).unwrap());
    let q = |extra: &[&str]| {
        let mut args = vec!["query", "--addr", &base, "--from", "1700000000", "--to", "1700000003"];
        args.extend_from_slice(extra);
        osprey(&args)
    };

    let (code, out, err) = q(&[r#"{job="api"} | logfmt | level="info""#]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "level=info msg=\"done\" status=200\nlevel=info msg=\"started\" status=200\n");
    let (_, out, _) = q(&["--forward", "--limit", "1", r#"{job="api"}"#]);
    assert_eq!(out, "level=info msg=\"started\" status=200\n");

    let (code, out, err) = q(&["-o", "table", "--forward", r#"{job="api"} |= "status=""#]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], r#"Common labels: {env="prod", job="api"}"#);
    assert_eq!(lines[1], r#"2023-11-14T22:13:20.000000000Z {} level=info msg="started" status=200"#);
    assert_eq!(lines[2], r#"2023-11-14T22:13:21.000000000Z {trace_id="abc"} level=error msg="failed" status=500"#);

    let (_, out, _) = q(&["-o", "jsonl", r#"{job="db"}"#]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["timestamp"], "1700000000500000000");
    assert_eq!(v["labels"]["job"], "db");
    assert_eq!(v["line"], "slow query took 1.5s");

    let (code, out, err) = q(&["--step", "1s", r#"sum by (env) (count_over_time({job="api"}[2s]))"#]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(r#"{env="prod"} 2023-11-14T22:13:22.000000000Z 2"#), "{out}");
    let (_, out, _) = q(&["--step", "1s", "-o", "table", r#"sum(count_over_time({job="db"}[1s]))"#]);
    assert_eq!(out, "{}\n  2023-11-14T22:13:21.000000000Z  1\n");

    let (code, _, err) = q(&[r#"{job="api"} |= oops"#]);
    assert_eq!(code, 1);
    assert!(err.contains("400") && err.contains("parse error at line 1, col 16"), "{err}");
}

#[test]
fn tail_follows_new_lines() {
    let dir = tempfile::tempdir().unwrap();
    let (_proc, base) = start_collector(dir.path(), &collector_config(dir.path(), "[logs]\nfsync = \"never\"\n"));
    let now = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos().to_string();
    let body =
        |line: &str| serde_json::json!({"streams": [{"stream": {"job": "t"}, "values": [[now(), line]]}]}).to_string();
    push(&base, &body("old line"));
    let mut child = Command::new(harness::osprey_bin())
        .args(["query", "--addr", &base, "--tail", "--since", "5m", r#"{job="t"}"#])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap_or_default()).is_err() {
                break;
            }
        }
    });
    let first = rx.recv_timeout(Duration::from_secs(30)).expect("the tail prints what is already there");
    assert_eq!(first, "old line");
    push(&base, &body("new line"));
    let second = rx.recv_timeout(Duration::from_secs(30)).expect("the tail prints a new line");
    assert_eq!(second, "new line");
    let _ = child.kill();
    let _ = child.wait();
}
