//! The outage test: the receiver (Debian's VictoriaMetrics) is down for about a minute, and the
//! agent is restarted in the middle of it. Afterwards every sample the agent scraped is in the
//! receiver, in order, and the agent's on-disk queue is empty.
//!
//! The scraped target counts its own scrapes (`outage_seq` = 1, 2, 3, ...), so the test knows
//! exactly which values were handed to the agent and can check that each one arrived.

mod harness;
mod scrape_support;

use harness::*;
use scrape_support::*;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn start_vm(dir: &Path, port: u16) -> Proc {
    let mut cmd = Command::new(peer_bin("victoria-metrics"));
    cmd.arg(format!("-httpListenAddr=127.0.0.1:{port}"))
        .arg(format!("-storageDataPath={}", dir.join("vm").display()))
        .arg("-retentionPeriod=1d")
        .arg("-loggerLevel=WARN")
        .stdout(Stdio::null())
        .stderr(std::fs::OpenOptions::new().create(true).append(true).open(dir.join("vm.log")).unwrap());
    let proc = Proc { child: cmd.spawn().expect("start victoria-metrics"), name: "vm".into(), stdout: None };
    eventually(Duration::from_secs(60), || (get(&format!("http://127.0.0.1:{port}/health")).0 == 200).then_some(()))
        .expect("victoria-metrics answers");
    proc
}

/// Every `(timestamp, value)` VictoriaMetrics holds for `outage_seq`, by time.
fn exported(port: u16) -> Vec<(i64, f64)> {
    let (status, body) = get(&format!("http://127.0.0.1:{port}/api/v1/export?match[]=outage_seq"));
    if status != 200 {
        return vec![];
    }
    let mut out = Vec::new();
    for line in body.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let ts = v["timestamps"].as_array().unwrap();
        let vals = v["values"].as_array().unwrap();
        for (t, x) in ts.iter().zip(vals) {
            out.push((t.as_i64().unwrap(), x.as_f64().unwrap()));
        }
    }
    out.sort_by_key(|(t, _)| *t);
    out
}

fn pending(agent: &str) -> Option<f64> {
    let (_, body) = get(&format!("{agent}/metrics"));
    body.lines()
        .find_map(|l| l.strip_prefix("osprey_agent_queue_pending_records{queue=\"remote_write\"} "))
        .and_then(|v| v.parse().ok())
}

#[test]
fn samples_survive_a_receiver_outage_and_an_agent_restart() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let served = Arc::new(AtomicU64::new(0));
    let counter = served.clone();
    let _target = Server::start(0, move |path, _, _| match path {
        "/metrics" => Reply::text(&format!("outage_seq {}\n", counter.fetch_add(1, Ordering::SeqCst) + 1)),
        _ => Reply { status: 404, ..Reply::text("") },
    });
    let vm_port = free_port();
    let mut vm = start_vm(d, vm_port);
    let config = format!(
        "data_dir = {:?}\n\n[server]\nlisten = \"127.0.0.1:0\"\n\n[collector]\nurl = \"http://127.0.0.1:9\"\nmetrics_url = \"http://127.0.0.1:{vm_port}/api/v1/write\"\nretry_initial_backoff = \"200ms\"\nretry_max_backoff = \"2s\"\ntimeout = \"2s\"\n\n[[sources.files]]\njob = \"none\"\ninclude = [{:?}]\n\n[host_metrics]\nenabled = false\n\n[scrape]\ninterval = \"1s\"\n\n[[scrape.jobs]]\njob_name = \"seq\"\nstatic_configs = [{{ targets = [\"127.0.0.1:{}\"] }}]\n",
        d.join("data").display().to_string(),
        d.join("logs/*.log").display().to_string(),
        _target.port,
    );
    let agent_dir = d.join("agent");
    std::fs::create_dir_all(&agent_dir).unwrap();
    let (mut agent, _) = start_agent(&agent_dir, &config);
    eventually(Duration::from_secs(30), || (exported(vm_port).len() >= 3).then_some(()))
        .expect("samples reach the receiver");

    // Receiver down for about a minute; the agent restarts half way through.
    assert!(vm.terminate(Duration::from_secs(30)).is_some(), "victoria-metrics stops");
    let outage = Instant::now();
    std::thread::sleep(Duration::from_secs(28));
    assert!(agent.terminate(Duration::from_secs(20)).is_some_and(|s| s.success()), "agent stops cleanly");
    let during_restart = served.load(Ordering::SeqCst);
    let (_agent2, agent2_url) = start_agent(&agent_dir, &config);
    let queued = pending(&agent2_url).expect("queue gauge");
    assert!(queued >= 20.0, "the restarted agent found the outage's requests on disk ({queued})");
    std::thread::sleep(Duration::from_secs(60).saturating_sub(outage.elapsed()));
    let _vm = start_vm(d, vm_port);

    // Everything arrives: every value served, in time order, no gap, no duplicate.
    let target_max = served.load(Ordering::SeqCst) as f64;
    let samples = eventually(Duration::from_secs(60), || {
        let s = exported(vm_port);
        (s.last().is_some_and(|(_, v)| *v >= target_max)).then_some(s)
    })
    .unwrap_or_else(|| panic!("the backlog never arrived: {:?}", exported(vm_port).last()));
    let values: Vec<f64> = samples.iter().map(|(_, v)| *v).collect();
    let expected: Vec<f64> = (values[0] as u64..=*values.last().unwrap() as u64).map(|v| v as f64).collect();
    assert_eq!(values[0], 1.0, "the first scrape is there");
    assert_eq!(values, expected, "every scraped value arrived once, in order (restart after value {during_restart})");
    assert!(samples.windows(2).all(|w| w[0].0 < w[1].0), "timestamps increase");
    assert!(values.len() >= 60, "about a minute of samples: {}", values.len());
    // And the queue drains.
    eventually(Duration::from_secs(30), || (pending(&agent2_url) == Some(0.0)).then_some(()))
        .expect("the on-disk queue is empty again");
}
