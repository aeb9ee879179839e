//! Two real Prometheus servers around the collector: the first scrapes node_exporter and
//! remote_writes into the collector; the second scrapes the collector's `/federate` with
//! `honor_labels: true`. The second must see the first's series with the first's values, and
//! `promtool check metrics` must accept what the collector serves.

mod harness;

use harness::*;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

fn now_s() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64()
}

/// The first Prometheus: scrapes node_exporter every second, remote_writes samples and
/// metadata to `write_url` within a second.
pub fn scraper_config(node_exporter: &str, write_url: &str) -> String {
    let target = node_exporter.trim_start_matches("http://");
    format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: node\n    static_configs:\n      - targets: ['{target}']\nremote_write:\n  - url: {write_url}\n    queue_config:\n      batch_send_deadline: 1s\n    metadata_config:\n      send_interval: 1s\n"
    )
}

/// Label sets of `/api/v1/series` as sorted JSON texts.
fn series(url: &str, matcher: &str, since_s: f64) -> BTreeSet<String> {
    let v = get_json(&format!("{url}/api/v1/series?match[]={}&start={since_s}", enc(matcher)));
    assert_eq!(v["status"], "success", "{v}");
    v["data"].as_array().unwrap().iter().map(|s| s.to_string()).collect()
}

/// Raw samples of a range selector at `time`: labels → [(ts, value)].
fn samples(url: &str, q: &str, time: f64) -> BTreeMap<String, Vec<(String, String)>> {
    let v = get_json(&format!("{url}/api/v1/query?query={}&time={time}", enc(q)));
    assert_eq!(v["status"], "success", "{q}: {v}");
    v["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let points = r["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| (p[0].to_string(), p[1].as_str().unwrap().to_string()))
                .collect();
            (r["metric"].to_string(), points)
        })
        .collect()
}

#[test]
fn a_second_prometheus_federates_what_the_first_wrote() {
    let tmp = tempfile::tempdir().unwrap();
    let (_collector, url) = start_collector(tmp.path(), &collector_config(tmp.path(), ""));
    let node = node_exporter(tmp.path());
    let first = prometheus(tmp.path(), "first", &scraper_config(&node.url, &format!("{url}/api/v1/write")));
    let collector_target = url.trim_start_matches("http://");
    let second = prometheus(
        tmp.path(),
        "second",
        &format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: federate\n    honor_labels: true\n    metrics_path: /federate\n    params:\n      'match[]': ['{{job=\"node\"}}']\n    static_configs:\n      - targets: ['{collector_target}']\n"
        ),
    );

    // The second Prometheus scrapes the collector successfully.
    let up = eventually(Duration::from_secs(60), || {
        let v = get_json(&format!("{}/api/v1/query?query={}", second.url, enc(r#"up{job="federate"}"#)));
        let r = v["data"]["result"].as_array()?.first()?.clone();
        (r["value"][1] == "1").then_some(r)
    });
    assert!(up.is_some(), "second Prometheus' up{{job=\"federate\"}} never became 1");

    // The same series, labels and all (honor_labels kept job="node" and the instance).
    let matched = eventually(Duration::from_secs(60), || {
        let since = now_s() - 5.0;
        let a = series(&first.url, r#"{job="node"}"#, since);
        let b = series(&second.url, r#"{job="node"}"#, since);
        (a.len() > 100 && a == b).then_some(a.len())
    });
    let a = series(&first.url, r#"{job="node"}"#, now_s() - 5.0);
    let b = series(&second.url, r#"{job="node"}"#, now_s() - 5.0);
    assert!(
        matched.is_some(),
        "series differ: only in first {:?}; only in second {:?}",
        a.difference(&b).take(5).collect::<Vec<_>>(),
        b.difference(&a).take(5).collect::<Vec<_>>()
    );

    // The same values: every sample the second has came from the first, timestamp and value.
    std::thread::sleep(Duration::from_secs(3));
    let at = now_s() - 1.0;
    let a = samples(&first.url, r#"{job="node"}[20s]"#, at);
    let b = samples(&second.url, r#"{job="node"}[20s]"#, at);
    let mut compared = 0;
    for (labels, points) in &b {
        let theirs = a.get(labels).unwrap_or_else(|| panic!("second has {labels} that the first does not"));
        for p in points {
            assert!(theirs.contains(p), "{labels}: sample {p:?} of the second is not among the first's {theirs:?}");
            compared += 1;
        }
    }
    assert!(compared > 500, "only {compared} samples compared");

    // promtool accepts the collector's output. Families with known metadata and conventional
    // names lint clean (exit 0); the full federation parses (node_exporter's own camelCase names
    // and series without HELP are lint notes, exit 3, never a parse error, exit 1).
    let clean = r#"{job="node",__name__=~"node_load1|node_load5|node_load15|node_boot_time_seconds|node_time_seconds|node_procs_running|node_cpu_seconds_total"}"#;
    let helped = eventually(Duration::from_secs(30), || {
        let (_, body) = get(&format!("{url}/federate?match[]={}", enc(clean)));
        (body.contains("# HELP node_load1 ") && body.contains("# HELP node_cpu_seconds_total ")).then_some(body)
    })
    .expect("metadata (HELP) for the node families arrived");
    let (code, out, err) = promtool(&["check", "metrics"], Some(helped.as_bytes()));
    assert_eq!(code, 0, "promtool check metrics on /federate: {out}{err}\n{helped}");
    let (_, everything) = get(&format!("{url}/federate"));
    let (code, out, err) = promtool(&["check", "metrics"], Some(everything.as_bytes()));
    assert!(code == 0 || code == 3, "promtool could not parse /federate (exit {code}): {out}{err}");
    let (_, own) = get(&format!("{url}/metrics"));
    let (code, out, err) = promtool(&["check", "metrics"], Some(own.as_bytes()));
    assert_eq!(code, 0, "promtool check metrics on /metrics: {out}{err}\n{own}");

    // OpenMetrics by Accept, gzip by Accept-Encoding.
    let (code, headers, body) = get_raw(
        &format!("{url}/federate?match[]=node_load1"),
        &[("accept", "application/openmetrics-text;version=1.0.0,text/plain;q=0.5"), ("accept-encoding", "gzip")],
    );
    assert_eq!(code, 200);
    let header = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()).unwrap_or("");
    assert_eq!(header("content-encoding"), "gzip");
    assert!(header("content-type").starts_with("application/openmetrics-text; version=1.0.0"), "{headers:?}");
    let text = String::from_utf8(osprey_protocol::gzip::decompress(&body, 1 << 20).expect("gzip")).unwrap();
    assert!(
        text.starts_with("# HELP node_load1 ") && text.contains("\n# TYPE node_load1 unknown\nnode_load1{"),
        "{text}"
    );
    assert!(text.ends_with("# EOF\n"), "{text}");
}
