//! End to end with real receivers and real targets: one agent remote_writes into Debian's
//! Prometheus (`--web.enable-remote-write-receiver`), another into Debian's VictoriaMetrics.
//! Both collect host metrics and scrape a real node_exporter and Prometheus' own `/metrics`.
//! Each receiver's `/api/v1/query` must return the values the agent sent.

mod harness;

use harness::*;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

fn spawn(name: &str, mut cmd: Command, log: &Path) -> Proc {
    cmd.stdout(Stdio::null()).stderr(std::fs::File::create(log).unwrap());
    Proc { child: cmd.spawn().unwrap_or_else(|e| panic!("cannot start {name}: {e}")), name: name.into(), stdout: None }
}

fn wait_http(url: &str) {
    eventually(Duration::from_secs(60), || (get(url).0 == 200).then_some(()))
        .unwrap_or_else(|| panic!("{url} never answered"));
}

/// The value of an instant query that returns exactly one series, once it does.
fn query_one(base: &str, promql: &str) -> Option<f64> {
    let url = format!("{base}/api/v1/query?query={}", form_urlencoded_encode(promql));
    let (status, body) = get(&url);
    if status != 200 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    let result = v["data"]["result"].as_array()?;
    if result.len() != 1 {
        return None;
    }
    result[0]["value"][1].as_str()?.parse().ok()
}

fn form_urlencoded_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn agent_config(dir: &Path, write_url: &str, node_exporter: u16, prometheus: u16) -> String {
    format!(
        "data_dir = {:?}\nhostname = \"e2e-host\"\n\n[server]\nlisten = \"127.0.0.1:0\"\n\n[collector]\nurl = \"http://127.0.0.1:9\"\nmetrics_url = \"{write_url}\"\nretry_max_backoff = \"1s\"\n\n[[sources.files]]\njob = \"none\"\ninclude = [{:?}]\n\n[host_metrics]\ninterval = \"1s\"\n\n[scrape]\ninterval = \"1s\"\n\n[[scrape.jobs]]\njob_name = \"node_exporter\"\nstatic_configs = [{{ targets = [\"127.0.0.1:{node_exporter}\"] }}]\n\n[[scrape.jobs]]\njob_name = \"prometheus\"\nstatic_configs = [{{ targets = [\"127.0.0.1:{prometheus}\"] }}]\n",
        dir.join("data").display().to_string(),
        dir.join("logs/*.log").display().to_string(),
    )
}

#[test]
fn agent_remote_writes_into_real_prometheus_and_victoria_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    let ne_port = free_port();
    let mut ne = Command::new(peer_bin("prometheus-node-exporter"));
    ne.arg(format!("--web.listen-address=127.0.0.1:{ne_port}")).arg("--no-collector.systemd");
    let _ne = spawn("node_exporter", ne, &d.join("node_exporter.log"));

    let prom_port = free_port();
    std::fs::write(d.join("prometheus.yml"), "global:\n  scrape_interval: 1m\n").unwrap();
    let mut prom = Command::new(peer_bin("prometheus"));
    prom.arg(format!("--config.file={}", d.join("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", d.join("tsdb").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
        .arg("--web.enable-remote-write-receiver")
        .arg("--log.level=warn");
    let _prom = spawn("prometheus", prom, &d.join("prometheus.log"));

    let vm_port = free_port();
    let mut vm = Command::new(peer_bin("victoria-metrics"));
    vm.arg(format!("-httpListenAddr=127.0.0.1:{vm_port}"))
        .arg(format!("-storageDataPath={}", d.join("vm").display()))
        .arg("-retentionPeriod=1d")
        .arg("-search.latencyOffset=1s")
        .arg("-loggerLevel=WARN");
    let _vm = spawn("victoria-metrics", vm, &d.join("vm.log"));

    let prom_url = format!("http://127.0.0.1:{prom_port}");
    let vm_url = format!("http://127.0.0.1:{vm_port}");
    wait_http(&format!("http://127.0.0.1:{ne_port}/metrics"));
    wait_http(&format!("{prom_url}/-/ready"));
    wait_http(&format!("{vm_url}/health"));

    let to_prom = d.join("to_prometheus");
    let to_vm = d.join("to_vm");
    std::fs::create_dir_all(&to_prom).unwrap();
    std::fs::create_dir_all(&to_vm).unwrap();
    let (_a1, a1_url) =
        start_agent(&to_prom, &agent_config(&to_prom, &format!("{prom_url}/api/v1/write"), ne_port, prom_port));
    let (_a2, a2_url) =
        start_agent(&to_vm, &agent_config(&to_vm, &format!("{vm_url}/api/v1/write"), ne_port, prom_port));

    // The value the agent itself serves for a series that does not move.
    let (_, own) = get(&format!("{a1_url}/metrics"));
    let mem_total: f64 = eventually(Duration::from_secs(20), || {
        let (_, body) = get(&format!("{a1_url}/metrics"));
        body.lines().find_map(|l| l.strip_prefix("node_memory_MemTotal_bytes ")).and_then(|v| v.parse().ok())
    })
    .unwrap_or_else(|| panic!("agent serves MemTotal:\n{own}"));

    for (receiver, base) in [("prometheus", &prom_url), ("victoria-metrics", &vm_url)] {
        for (query, check) in [
            ("up{job=\"node_exporter\"}", Box::new(|v: f64| v == 1.0) as Box<dyn Fn(f64) -> bool>),
            ("up{job=\"prometheus\"}", Box::new(|v: f64| v == 1.0)),
            ("scrape_samples_scraped{job=\"node_exporter\"}", Box::new(|v: f64| v > 100.0)),
            ("node_memory_MemTotal_bytes{job=\"node\",host=\"e2e-host\"}", Box::new(move |v: f64| v == mem_total)),
            ("count(node_cpu_seconds_total{job=\"node\",mode=\"idle\"})", Box::new(|v: f64| v >= 1.0)),
            ("prometheus_build_info{job=\"prometheus\"}", Box::new(|v: f64| v == 1.0)),
        ] {
            let got = eventually(Duration::from_secs(60), || query_one(base, query).filter(|v| check(*v)));
            assert!(
                got.is_some(),
                "{receiver}: {query} never returned the expected value (last: {:?})",
                query_one(base, query)
            );
        }
    }
    // Neither receiver refused a request (Prometheus refuses out-of-order samples with 400).
    for url in [&a1_url, &a2_url] {
        let (_, body) = get(&format!("{url}/metrics"));
        let refused = body
            .lines()
            .find_map(|l| l.strip_prefix("osprey_agent_batches_dropped_total{sink=\"remote_write\"} "))
            .unwrap_or("0");
        assert_eq!(refused, "0", "{url} had requests refused:\n{body}");
    }
}
