//! `promtool query instant` and `promtool query series` get the same answers from the
//! collector as from the real Prometheus whose samples it received.

mod harness;

use harness::*;
use std::time::Duration;

/// promtool's lines without the evaluation timestamps (`... => 1 @[1700000000.1]`), sorted.
fn normalized(out: &str) -> Vec<String> {
    let mut lines: Vec<String> =
        out.lines().map(|l| l.split(" @[").next().unwrap_or(l).trim().to_string()).filter(|l| !l.is_empty()).collect();
    lines.sort();
    lines
}

fn instant(url: &str, q: &str) -> Vec<String> {
    let (code, out, err) = promtool(&["query", "instant", url, q], None);
    assert_eq!(code, 0, "promtool query instant {url} {q:?}: {err}");
    normalized(&out)
}

fn series(url: &str, matcher: &str) -> Vec<String> {
    let (code, out, err) = promtool(&["query", "series", url, &format!("--match={matcher}")], None);
    assert_eq!(code, 0, "promtool query series {url} {matcher:?}: {err}");
    normalized(&out)
}

#[test]
fn promtool_gets_what_prometheus_answers() {
    let tmp = tempfile::tempdir().unwrap();
    let (_collector, url) = start_collector(tmp.path(), &collector_config(tmp.path(), ""));
    let node = node_exporter(tmp.path());
    let target = node.url.trim_start_matches("http://");
    let prom = prometheus(
        tmp.path(),
        "prometheus",
        &format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: node\n    static_configs:\n      - targets: ['{target}']\nremote_write:\n  - url: {url}/api/v1/write\n    queue_config:\n      batch_send_deadline: 1s\n"
        ),
    );
    let arrived = eventually(Duration::from_secs(60), || {
        let got = instant(&url, "node_memory_MemTotal_bytes");
        (!got.is_empty()).then_some(got)
    });
    assert!(arrived.is_some(), "node_exporter's samples reached the collector");

    // Values that do not change between scrapes, so both sides must agree exactly.
    let queries = [
        "up",
        r#"up{job="node"} == 1"#,
        "node_memory_MemTotal_bytes",
        "node_memory_MemTotal_bytes / 1024",
        r#"count by (job) ({job="node"})"#,
        "count(node_cpu_seconds_total) by (mode)",
        "count without (cpu) (node_cpu_seconds_total)",
        "sum by (job) (node_filesystem_size_bytes)",
        "max by (device) (node_filesystem_size_bytes)",
        "min without (mountpoint) (node_filesystem_size_bytes)",
        "avg(node_filesystem_size_bytes)",
        "sum(count by (mode) (node_cpu_seconds_total))",
        r#"node_uname_info{job="node", sysname=~"Lin.x", machine!=""}"#,
    ];
    for q in queries {
        let same = eventually(Duration::from_secs(30), || {
            let (ours, theirs) = (instant(&url, q), instant(&prom.url, q));
            (!theirs.is_empty() && ours == theirs).then_some(())
        });
        assert!(same.is_some(), "{q}: collector {:?} vs Prometheus {:?}", instant(&url, q), instant(&prom.url, q));
    }
    for m in ["up", r#"{job="node", __name__=~"node_load.*"}"#, r#"node_cpu_seconds_total{mode="idle"}"#] {
        let same = eventually(Duration::from_secs(30), || {
            let (ours, theirs) = (series(&url, m), series(&prom.url, m));
            (!theirs.is_empty() && ours == theirs).then_some(())
        });
        assert!(same.is_some(), "series {m}: collector {:?} vs Prometheus {:?}", series(&url, m), series(&prom.url, m));
    }
    // Labels and label values, as promtool lists them.
    let (code, ours, _) = promtool(&["query", "labels", &url, "job"], None);
    let (_, theirs, _) = promtool(&["query", "labels", &prom.url, "job"], None);
    assert_eq!((code, normalized(&ours)), (0, normalized(&theirs)));
    // An unsupported query is refused with Prometheus' error shape, which promtool reports.
    let (code, _, err) = promtool(&["query", "instant", &url, "rate(node_cpu_seconds_total[1m])"], None);
    assert_ne!(code, 0);
    assert!(err.contains("function calls are not supported (rate)"), "{err}");
}
