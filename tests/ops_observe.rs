//! Self-monitoring against real processes: `/ready` and `/health` with reasons, `osprey status
//! --once` over a real agent and collector, JSON log lines, and log levels changed at runtime.

mod harness;
mod tail_support;

use harness::*;
use std::process::Command;
use std::time::Duration;
use tail_support::{Collector, agent_config, append, metric};

const WAIT: Duration = Duration::from_secs(30);

fn sources(logs: &std::path::Path) -> String {
    format!(
        "[sources]\npoll_interval = \"100ms\"\n\n[[sources.files]]\njob = \"t\"\ninclude = [\"{}/*.log\"]\nread_from = \"beginning\"\n",
        logs.display()
    )
}

fn json(url: &str) -> (u16, serde_json::Value) {
    let (code, body) = get(url);
    (code, serde_json::from_str(&body).unwrap_or_else(|e| panic!("{url}: not JSON ({e}): {body}")))
}

#[test]
fn ready_and_health_say_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    // A collector: ready, healthy, with the checks named.
    std::fs::create_dir_all(dir.path().join("c")).unwrap();
    let (_collector, curl) = start_collector(&dir.path().join("c"), &collector_config(&dir.path().join("c"), ""));
    assert_eq!(get(&format!("{curl}/ready")), (200, "ready\n".into()));
    let (code, h) = json(&format!("{curl}/health"));
    assert_eq!(code, 200);
    assert_eq!(h["status"], "ok");
    assert_eq!(h["checks"][0]["name"], "wal");

    // An agent whose receiver is down: ready (it reads and retries), degraded once the sink
    // has failed for longer than health.sink_failing_after, and it says why.
    let receiver = format!("http://127.0.0.1:{}", free_port());
    let cfg = agent_config(dir.path(), &receiver, &sources(&logs))
        .replace("[host_metrics]", "[health]\nsink_failing_after = \"1s\"\n\n[host_metrics]");
    append(&logs.join("app.log"), "one line\n");
    let (_agent, aurl) = start_agent(dir.path(), &cfg);
    assert_eq!(get(&format!("{aurl}/ready")), (200, "ready\n".into()));
    let degraded = eventually(WAIT, || {
        let (code, h) = json(&format!("{aurl}/health"));
        (h["status"] == "degraded").then_some((code, h))
    })
    .expect("the agent reports its failing sink");
    let (code, h) = degraded;
    assert_eq!(code, 200, "degraded is not a reason to restart the agent: {h}");
    let sink = h["checks"].as_array().unwrap().iter().find(|c| c["name"] == "sink_loki").expect("sink_loki check");
    assert_eq!(sink["status"], "degraded");
    let msg = sink["message"].as_str().unwrap();
    assert!(msg.contains("sends have failed for") && msg.contains(&receiver), "{msg}");
}

#[test]
fn status_once_shows_an_agent_and_a_collector() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let c = Collector::start(&dir.path().join("collector"));
    let (_agent, aurl) = start_agent(dir.path(), &agent_config(dir.path(), &c.url(), &sources(&logs)));
    append(&logs.join("app.log"), &(0..100).map(|i| format!("line {i}\n")).collect::<String>());
    c.wait_for(r#"{job="t"}"#, WAIT, |l| l.len() == 100);

    let (code, out, err) =
        osprey(&["status", "--agent", &aurl, "--collector", &c.url(), "--once", "--interval", "300ms"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&format!("agent {aurl}  health ok")), "{out}");
    assert!(out.contains(&format!("collector {}  health ok", c.url())), "{out}");
    let row = |prefix: &str| {
        out.lines().find(|l| l.trim_start().starts_with(prefix)).unwrap_or_else(|| panic!("no {prefix} row:\n{out}"))
    };
    assert!(row("tail").contains("files open 1"), "{out}");
    assert!(row("loki").contains("dropped 0"), "{out}");
    assert!(row("ingest").contains("lines "), "{out}");
    assert!(row("storage").contains("head "), "{out}");
    assert!(row("queues").contains("queue=remote_write"), "{out}");
    assert!(row("config").contains("reloads ok 0  failed 0  last reload ok"), "{out}");
    // The numbers are the targets' own: the ingested lines appear as the collector counts them.
    assert_eq!(metric(&c.url(), "osprey_ingested_lines_total"), 100.0);

    // A target that does not answer is shown as such, and the exit status says so.
    let gone = format!("http://127.0.0.1:{}", free_port());
    let (code, out, _) = osprey(&["status", "--collector", &gone, "--once", "--interval", "100ms"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&format!("collector {gone}  UNREACHABLE")), "{out}");
}

#[test]
fn json_logs_are_one_object_per_line_and_levels_change_at_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    // The collector from its config key, the agent from the flag.
    let cdir = dir.path().join("c");
    std::fs::create_dir_all(&cdir).unwrap();
    let ccfg = collector_config(&cdir, "\n[log]\nformat = \"json\"\n");
    let (mut collector, curl) = start_collector(&cdir, &ccfg);
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, agent_config(dir.path(), &curl, &sources(&logs))).unwrap();
    let mut cmd = Command::new(osprey_bin());
    cmd.arg("agent").arg("--log-format").arg("json").arg("--config").arg(&path).env_remove("OSPREY_LOG");
    let agent_log = dir.path().join("agent.log");
    let (mut agent, line) = spawn_until("osprey agent", cmd, "osprey agent listening", &agent_log, WAIT);
    let aurl = url_in(&line);

    // Debug lines of the tailer are off at the default level...
    assert_eq!(get(&format!("{aurl}/-/log-level")), (200, "info\n".into()));
    append(&logs.join("first.log"), "x\n");
    eventually(WAIT, || (metric(&aurl, "osprey_agent_files_open") >= 1.0).then_some(())).expect("first.log followed");
    // ...and on once asked for.
    let (code, body) = post(&format!("{aurl}/-/log-level"), &[], b"info,osprey_agent::tail=debug");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("osprey_agent::tail=debug") && body.contains("info"), "{body}");
    append(&logs.join("second.log"), "y\n");
    wait_for_log(&agent_log, "second.log", 1, WAIT);
    let (code, body) = post(&format!("{aurl}/-/log-level"), &[], b"osprey=loud");
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("osprey=loud"), "{body}");

    // A reload and a stop write their lines too; then every line of both logs is a JSON object.
    assert_eq!(post(&format!("{curl}/-/reload"), &[], b"").0, 200);
    assert!(agent.terminate(WAIT).is_some_and(|s| s.success()));
    assert!(collector.terminate(WAIT).is_some_and(|s| s.success()));
    for (name, file) in [("agent", agent_log), ("collector", cdir.join("collector.log"))] {
        let text = std::fs::read_to_string(&file).unwrap();
        let mut messages = Vec::new();
        for line in text.lines() {
            let v: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("{name}: not a JSON line ({e}): {line}"));
            for key in ["timestamp", "level", "target", "message"] {
                assert!(v.get(key).is_some(), "{name}: no {key:?} in {line}");
            }
            messages.push(v["message"].as_str().unwrap_or("").to_string());
        }
        assert!(messages.iter().any(|m| m == "stopped"), "{name}: {messages:?}");
        if name == "agent" {
            let debug = text.lines().find(|l| l.contains("second.log") && l.contains("\"DEBUG\""));
            assert!(debug.is_some(), "the tailer's debug line after the level change:\n{text}");
            assert!(!text.contains("first.log\""), "no debug line before the change:\n{text}");
        } else {
            assert!(messages.iter().any(|m| m == "configuration reloaded"), "{messages:?}");
        }
    }
}
