//! The alerting rules (`packaging/prometheus/osprey-alerts.yml`) and the Grafana dashboards
//! (`packaging/grafana/*.json`) query metrics by name. A renamed metric silently empties a panel
//! and, worse, silences an alert. This test runs a real collector and agent, drives them until
//! every metric family has a series (a delivered batch, a refused one, retries, a query), and checks
//! that every `osprey_*` and `node_*` name the rules and dashboards use is served — except the
//! ones listed in `PLANNED`, which other issues add, and which must *not* be served yet (so the
//! list shrinks as they land).

mod harness;

use harness::*;
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

/// Names the rules and dashboards use ahead of the code that serves them, with the issue that adds
/// them. Remove a line when its metric lands (the test says when).
const PLANNED: &[(&str, &str)] = &[];

/// Every `osprey_*` / `node_*` identifier in `text`.
fn metric_names(text: &str, out: &mut BTreeSet<String>) {
    let bytes = text.as_bytes();
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut i = 0;
    while i < bytes.len() {
        if ident(bytes[i]) && (i == 0 || !ident(bytes[i - 1])) {
            let start = i;
            while i < bytes.len() && ident(bytes[i]) {
                i += 1;
            }
            let word = &text[start..i];
            // Prose mentions (`node_exporter`, `node_filesystem_*`) are not metric names.
            let prose = word == "node_exporter" || word.ends_with('_');
            if (word.starts_with("osprey_") || word.starts_with("node_")) && !prose {
                out.insert(word.to_string());
            }
        } else {
            i += 1;
        }
    }
}

/// Sample names a `/metrics` body serves: every series name, plus `_bucket`/`_sum`/`_count` of
/// histograms (present as series already).
fn served(body: &str, out: &mut BTreeSet<String>) {
    for line in body.lines() {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let end = line.find(['{', ' ']).unwrap_or(line.len());
        out.insert(line[..end].to_string());
    }
}

fn used_by_rules_and_dashboards() -> BTreeSet<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging");
    let mut used = BTreeSet::new();
    metric_names(&std::fs::read_to_string(root.join("prometheus/osprey-alerts.yml")).unwrap(), &mut used);
    let mut boards = 0;
    for entry in std::fs::read_dir(root.join("grafana")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            metric_names(&std::fs::read_to_string(&path).unwrap(), &mut used);
            boards += 1;
        }
    }
    assert!(boards >= 3, "expected the three dashboards in packaging/grafana");
    used
}

#[test]
fn every_metric_the_alerts_and_dashboards_use_is_served_or_planned() {
    let tmp = tempfile::tempdir().unwrap();
    let cdir = tmp.path().join("collector");
    std::fs::create_dir_all(&cdir).unwrap();
    // Lines over 200 bytes are refused (400): the agent drops that batch and counts it.
    let (_collector, curl) = start_collector(&cdir, &collector_config(&cdir, "[logs]\nmax_line_bytes = 200\n"));

    let adir = tmp.path().join("agent");
    let logs = tmp.path().join("logs");
    std::fs::create_dir_all(&adir).unwrap();
    std::fs::create_dir_all(&logs).unwrap();
    // remote_write goes to a closed port: the agent retries it (batches_retried).
    let closed = format!("http://127.0.0.1:{}/api/v1/write", free_port());
    let config = format!(
        "data_dir = {data:?}\n[server]\nlisten = \"127.0.0.1:0\"\n\
         [collector]\nurl = {curl:?}\nmetrics_url = {closed:?}\nbatch_max_wait = \"100ms\"\n\
         retry_initial_backoff = \"50ms\"\nretry_max_backoff = \"200ms\"\n\
         [[sources.files]]\ninclude = [{glob:?}]\n[host_metrics]\ninterval = \"200ms\"\n",
        data = adir.join("data").display().to_string(),
        glob = format!("{}/*.log", logs.display()),
    );
    let (_agent, aurl) = start_agent(&adir, &config);

    // A query, so the query families have a series.
    let (code, _) = get(&format!("{curl}/loki/api/v1/query_range?query=%7Bjob%3D%22varlogs%22%7D&limit=10"));
    assert_eq!(code, 200);
    // Metrics from a host, so the fleet liveness families (osprey_agent_up) have a series.
    use osprey_protocol::prompb::{
        Label, REMOTE_WRITE_HEADERS, Sample, TimeSeries, WriteRequest, encode_write_request,
    };
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let body = encode_write_request(&WriteRequest {
        timeseries: vec![TimeSeries {
            labels: vec![Label::new("__name__", "node_load1"), Label::new("host", "web-1")],
            samples: vec![Sample { value: 0.5, timestamp: now_ms }],
            exemplars: vec![],
        }],
        metadata: vec![],
    });
    assert_eq!(post(&format!("{curl}/api/v1/write"), &REMOTE_WRITE_HEADERS, &body).0, 204);

    let mut names = BTreeSet::new();
    let mut scrape_until = |want: &[&str]| {
        let done = eventually(Duration::from_secs(30), || {
            names.clear();
            served(&get(&format!("{aurl}/metrics")).1, &mut names);
            served(&get(&format!("{curl}/metrics")).1, &mut names);
            want.iter().all(|w| names.contains(*w)).then_some(())
        });
        assert!(done.is_some(), "never served all of {want:?}; served: {names:?}");
        names.clone()
    };
    // A deliverable line first (one push holds a whole batch, and one refused line refuses it)...
    std::fs::write(logs.join("ok.log"), "a short line\n").unwrap();
    scrape_until(&["osprey_agent_batches_sent_total", "osprey_agent_batches_retried_total"]);
    // ...then one the collector refuses for good.
    std::fs::write(logs.join("long.log"), format!("{}\n", "x".repeat(500))).unwrap();
    let names = scrape_until(&["osprey_agent_batches_dropped_total", "osprey_agent_send_duration_seconds_bucket"]);

    let planned: BTreeSet<&str> = PLANNED.iter().map(|(n, _)| *n).collect();
    let used = used_by_rules_and_dashboards();
    let missing: Vec<_> = used.iter().filter(|n| !names.contains(*n) && !planned.contains(n.as_str())).collect();
    assert!(
        missing.is_empty(),
        "the alerts or dashboards use metrics that the agent and collector do not serve: {missing:?}\n\
         served: {names:?}"
    );
    let landed: Vec<_> = PLANNED.iter().filter(|(n, _)| names.contains(*n)).collect();
    assert!(landed.is_empty(), "planned metrics are served now, remove them from PLANNED: {landed:?}");
    let unused: Vec<_> = PLANNED.iter().filter(|(n, _)| !used.contains(*n)).collect();
    assert!(unused.is_empty(), "PLANNED lists names no rule or dashboard uses: {unused:?}");
}

#[test]
fn metric_names_are_found_in_queries() {
    let mut out = BTreeSet::new();
    metric_names(
        r#"rate(osprey_agent_x_total{job="a"}[5m]) / node_load1 + my_osprey_y # node_exporter's node_disk_*"#,
        &mut out,
    );
    assert_eq!(out.into_iter().collect::<Vec<_>>(), ["node_load1", "osprey_agent_x_total"]);
}
