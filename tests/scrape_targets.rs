//! The agent scraping crafted targets (a real HTTP server in this test) and shipping with
//! remote_write to a receiver that decodes every request: each kind of target gets the right
//! `up`, and each failure a log line that says what went wrong.

mod harness;
mod scrape_support;

use harness::*;
use scrape_support::*;
use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn gzip(body: &str) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(body.as_bytes()).unwrap();
    e.finish().unwrap()
}

const OK: &str = "# HELP app_requests_total Requests.\n# TYPE app_requests_total counter\napp_requests_total{code=\"200\",job=\"scraped\"} 7\ndrop_me 1\napp_temp 21.5 1700000000000\n";
const OPENMETRICS: &str = "# TYPE om_seconds histogram\n# UNIT om_seconds seconds\nom_seconds_bucket{le=\"1\"} 3 # {trace_id=\"abc\"} 0.5 1700000000.1\nom_seconds_bucket{le=\"+Inf\"} 4\nom_seconds_sum 2.5\nom_seconds_count 4\n# EOF\n";

fn job(name: &str, port: u16, path: &str, extra: &str) -> String {
    format!(
        "[[scrape.jobs]]\njob_name = \"{name}\"\nmetrics_path = \"{path}\"\nstatic_configs = [{{ targets = [\"127.0.0.1:{port}\"], labels = {{ team = \"t\" }} }}]\n{extra}\n"
    )
}

#[test]
fn crafted_targets_get_the_right_up_and_a_clear_log_line() {
    let dir = tempfile::tempdir().unwrap();
    let accept_seen: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    let seen = accept_seen.clone();
    let target = Server::start(0, move |path, headers, _| {
        seen.lock().unwrap().insert(path.to_string(), headers.get("accept").cloned().unwrap_or_default());
        match path {
            "/ok" => Reply::text(OK),
            "/om" => Reply {
                headers: vec![(
                    "content-type".into(),
                    "application/openmetrics-text; version=1.0.0; charset=utf-8".into(),
                )],
                ..Reply::text(OPENMETRICS)
            },
            "/gzip" if headers.get("accept-encoding").is_some_and(|v| v.contains("gzip")) => Reply {
                headers: vec![("content-encoding".into(), "gzip".into())],
                body: gzip("zipped_value 42\n"),
                ..Reply::text("")
            },
            "/malformed" => Reply::text("good_one 1\ngood_two 2\nbroken{a=\"b\" 3\n"),
            "/slow" => Reply { delay: Duration::from_millis(1500), ..Reply::text("slow 1\n") },
            "/hang" => Reply { delay: Duration::from_secs(120), ..Reply::text("never 1\n") },
            "/big" => Reply::text(&"big_metric{i=\"0123456789\"} 1\n".repeat(200)),
            "/dup" => Reply::text("dup_metric{a=\"1\"} 1\ndup_metric{a=\"1\"} 2\nother 3\n"),
            "/limit" => Reply::text("l1 1\nl2 2\nl3 3\nl4 4\nl5 5\n"),
            "/auth" if headers.get("authorization").map(String::as_str) == Some("Basic dXNlcjpzM2NyM3Q=") => {
                Reply::text("authed 1\n")
            }
            "/bearer" if headers.get("authorization").map(String::as_str) == Some("Bearer tok123") => {
                Reply::text("bearer_ok 1\n")
            }
            "/auth" | "/bearer" => Reply { status: 401, ..Reply::text("unauthorized") },
            _ => Reply { status: 404, ..Reply::text("no such path") },
        }
    });
    let (_rx_server, got) = receiver(0);
    let p = target.port;
    let jobs = [
        job(
            "ok",
            p,
            "/ok",
            "metric_relabel_configs = [{ source_labels = [\"__name__\"], regex = \"drop_me\", action = \"drop\" }]",
        ),
        job("om", p, "/om", ""),
        job("gzip", p, "/gzip", ""),
        job("malformed", p, "/malformed", ""),
        job("slow", p, "/slow", ""),
        job("hang", p, "/hang", ""),
        job("big", p, "/big", "body_size_limit = 1000"),
        job("dup", p, "/dup", ""),
        job("limit", p, "/limit", "sample_limit = 3"),
        job("notfound", p, "/nope", ""),
        job("auth", p, "/auth", "basic_auth = { username = \"user\", password = \"s3cr3t\" }"),
        job("bearer", p, "/bearer", "bearer_token = \"tok123\""),
    ]
    .join("\n");
    let config = format!(
        "data_dir = {:?}\n\n[server]\nlisten = \"127.0.0.1:0\"\n\n[collector]\nurl = \"http://127.0.0.1:{}\"\nretry_max_backoff = \"1s\"\n\n[[sources.files]]\njob = \"none\"\ninclude = [{:?}]\n\n[host_metrics]\nenabled = false\n\n[scrape]\ninterval = \"1s\"\ntimeout = \"700ms\"\n\n{jobs}",
        dir.path().join("data").display().to_string(),
        _rx_server.port,
        dir.path().join("logs/*.log").display().to_string(),
    );
    let (_agent, agent_url) = start_agent(dir.path(), &config);

    let expected_up = [
        ("ok", 1.0),
        ("om", 1.0),
        ("gzip", 1.0),
        ("malformed", 0.0),
        ("slow", 0.0),
        ("hang", 0.0),
        ("big", 0.0),
        ("dup", 1.0),
        ("limit", 0.0),
        ("notfound", 0.0),
        ("auth", 1.0),
        ("bearer", 1.0),
    ];
    let all_up = eventually(Duration::from_secs(30), || {
        let ups: Vec<Option<f64>> =
            expected_up.iter().map(|(j, _)| last_value(&got, &[("__name__", "up"), ("job", j)])).collect();
        ups.iter().all(Option::is_some).then_some(ups)
    })
    .expect("every job reported up");
    for ((job, want), got_up) in expected_up.iter().zip(&all_up) {
        assert_eq!(got_up, &Some(*want), "up{{job={job:?}}}");
    }

    // Samples, target labels and the honor_labels=false rule.
    let v = |labels: &[(&str, &str)]| last_value(&got, labels);
    assert_eq!(
        v(&[("__name__", "app_requests_total"), ("job", "ok"), ("exported_job", "scraped"), ("team", "t")]),
        Some(7.0)
    );
    assert_eq!(v(&[("__name__", "drop_me")]), None, "metric_relabel_configs drop");
    let temp = got.lock().unwrap().iter().find(|s| label(s, "__name__") == Some("app_temp")).cloned().unwrap();
    assert_eq!(temp.samples[0].timestamp, 1_700_000_000_000, "honor_timestamps keeps the exposed timestamp");
    assert_eq!(v(&[("__name__", "om_seconds_bucket"), ("le", "1")]), Some(3.0), "OpenMetrics with an exemplar");
    assert_eq!(v(&[("__name__", "om_seconds_count")]), Some(4.0));
    assert_eq!(v(&[("__name__", "zipped_value")]), Some(42.0), "gzip body");
    assert_eq!(v(&[("__name__", "authed")]), Some(1.0));
    assert_eq!(v(&[("__name__", "dup_metric"), ("a", "1")]), Some(1.0), "the first of duplicates is kept");
    assert_eq!(v(&[("__name__", "scrape_samples_scraped"), ("job", "ok")]), Some(3.0));
    assert_eq!(v(&[("__name__", "scrape_samples_post_metric_relabeling"), ("job", "ok")]), Some(2.0));
    assert_eq!(v(&[("__name__", "scrape_samples_scraped"), ("job", "dup")]), Some(3.0));
    assert!(v(&[("__name__", "scrape_duration_seconds"), ("job", "ok")]).is_some());
    assert!(
        v(&[("__name__", "scrape_series_added"), ("job", "ok"), ("instance", &format!("127.0.0.1:{p}"))]).is_some()
    );
    for s in got.lock().unwrap().iter() {
        let names: Vec<&str> = s.labels.iter().map(|l| l.name.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted, "remote_write labels are sorted by name");
        assert!(!names.iter().any(|n| n.starts_with("__") && *n != "__name__"), "no internal labels leak: {names:?}");
    }
    // OpenMetrics was asked for first.
    assert!(accept_seen.lock().unwrap()["/ok"].starts_with("application/openmetrics-text"));

    // A clear log line per failure.
    let log = strip_ansi(&std::fs::read_to_string(dir.path().join("agent.log")).unwrap());
    for (job, needle) in [
        ("malformed", "line 3, column"),
        ("slow", "scrape_timeout"),
        ("hang", "scrape_timeout"),
        ("big", "body_size_limit"),
        ("limit", "sample_limit exceeded"),
        ("notfound", "HTTP status 404"),
    ] {
        assert!(
            log.lines().any(|l| l.contains("scrape failed") && l.contains(&format!("job={job}")) && l.contains(needle)),
            "no log line for job {job} mentioning {needle:?} in:\n{log}"
        );
    }
    assert!(log.lines().any(|l| l.contains("duplicate series") && l.contains("job=dup")), "{log}");
    let (_, metrics) = get(&format!("{agent_url}/metrics"));
    assert!(metrics.contains("osprey_agent_scrape_duplicate_samples_total{job=\"dup\"}"), "{metrics}");
}

/// The agent's log may carry terminal colours around field names; compare the text.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn file_sd_targets_follow_the_file_and_leave_stale_markers() {
    let dir = tempfile::tempdir().unwrap();
    let target = Server::start(0, |path, _, _| match path {
        "/metrics" => Reply::text("fsd_metric 5\n"),
        _ => Reply { status: 404, ..Reply::text("") },
    });
    let (_rx_server, got) = receiver(0);
    let sd = dir.path().join("sd");
    std::fs::create_dir_all(&sd).unwrap();
    std::fs::write(
        sd.join("a.json"),
        format!(r#"[{{"targets": ["127.0.0.1:{}"], "labels": {{"env": "json"}}}}]"#, target.port),
    )
    .unwrap();
    let config = format!(
        "data_dir = {:?}\n\n[server]\nlisten = \"127.0.0.1:0\"\n\n[collector]\nurl = \"http://127.0.0.1:{}\"\nretry_max_backoff = \"1s\"\n\n[[sources.files]]\njob = \"none\"\ninclude = [{:?}]\n\n[host_metrics]\nenabled = false\n\n[scrape]\ninterval = \"1s\"\n\n[[scrape.jobs]]\njob_name = \"fsd\"\nfile_sd_configs = [{{ files = [{:?}, {:?}] }}]\nrelabel_configs = [{{ source_labels = [\"__meta_filepath\"], regex = \".*/(.*)\", target_label = \"sd_file\" }}]\n",
        dir.path().join("data").display().to_string(),
        _rx_server.port,
        dir.path().join("logs/*.log").display().to_string(),
        sd.join("*.json").display().to_string(),
        sd.join("*.yml").display().to_string(),
    );
    let (_agent, _) = start_agent(dir.path(), &config);
    let json_labels = [("__name__", "fsd_metric"), ("env", "json"), ("sd_file", "a.json")];
    eventually(Duration::from_secs(20), || (last_value(&got, &json_labels) == Some(5.0)).then_some(()))
        .expect("target from the JSON file scraped, with its labels");

    // Move the target to a YAML file with another label: the JSON-labelled series go stale.
    std::fs::write(sd.join("b.yml"), format!("- targets: ['127.0.0.1:{}']\n  labels:\n    env: yaml\n", target.port))
        .unwrap();
    std::fs::remove_file(sd.join("a.json")).unwrap();
    let yaml_labels = [("__name__", "fsd_metric"), ("env", "yaml"), ("sd_file", "b.yml")];
    eventually(Duration::from_secs(20), || (last_value(&got, &yaml_labels) == Some(5.0)).then_some(()))
        .expect("target from the YAML file scraped after the change");
    let stale = |labels: &[(&str, &str)]| {
        last_value(&got, labels).is_some_and(|v| v.to_bits() == osprey_protocol::STALE_NAN_BITS)
    };
    eventually(Duration::from_secs(10), || stale(&json_labels).then_some(()))
        .expect("stale marker for the removed target's series");
    assert!(stale(&[("__name__", "up"), ("env", "json")]), "its up series is marked stale too");
}
