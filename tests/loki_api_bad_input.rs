//! Bad queries get a clear 4xx naming the problem, never a panic, a hang or a dead process:
//! syntax errors point at the line and column, regexes cannot be catastrophic, limits are
//! enforced, and a query over its memory budget stops with a message naming the config key.

mod harness;

use harness::{collector_config, start_collector};
use serde_json::json;
use std::time::Duration;

fn get(base: &str, path: &str, params: &[(&str, &str)]) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into();
    let mut req = agent.get(format!("{base}{path}"));
    for (k, v) in params {
        req = req.query(*k, *v);
    }
    let mut r = req.call().unwrap();
    (r.status().as_u16(), r.body_mut().read_to_string().unwrap_or_default())
}

fn push_lines(base: &str, streams: &[(&str, Vec<String>)]) {
    let streams: Vec<_> = streams
        .iter()
        .map(|(job, lines)| {
            let values: Vec<_> = lines
                .iter()
                .enumerate()
                .map(|(i, l)| json!([(1_700_000_000_000_000_000i64 + i as i64 * 1_000_000).to_string(), l]))
                .collect();
            json!({"stream": {"job": job}, "values": values})
        })
        .collect();
    let body = json!({ "streams": streams }).to_string();
    let (status, resp) =
        harness::post(&format!("{base}/loki/api/v1/push"), &[("content-type", "application/json")], body.as_bytes());
    assert_eq!(status, 204, "{resp}");
}

const RANGE: [(&str, &str); 2] = [("start", "1700000000000000000"), ("end", "1700000100000000000")];

fn query_range(base: &str, query: &str, extra: &[(&str, &str)]) -> (u16, String) {
    let mut p = vec![("query", query)];
    p.extend_from_slice(&RANGE);
    p.extend_from_slice(extra);
    get(base, "/loki/api/v1/query_range", &p)
}

#[test]
fn bad_queries_are_refused_with_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let (_proc, base) = start_collector(dir.path(), &collector_config(dir.path(), "[logs]\nfsync = \"never\"\n"));
    push_lines(&base, &[("x", vec!["hello".into()])]);
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        (r#"{job="x"} |= error"#, &[], "parse error at line 1, col 14: expected a quoted string"),
        ("sum(\n  rate({job=\"x\"}[5q]))", &[], "parse error at line 2, col 18: invalid range"),
        (r#"{job=~".*"}"#, &[], "empty-compatible value"),
        (r#"{job="x"} |~ "(""#, &[], "invalid regex"),
        (r#"{job="x"} |~ "a{1000}{1000}""#, &[], "size limit"),
        (r#"{job="x"} | json | unwrap latency"#, &[], "'| unwrap' is not supported"),
        (r#"quantile_over_time(0.9, {job="x"}[5m])"#, &[], "quantile_over_time is not supported"),
        (r#"{job="x"} | line_format "{{if .a}}x{{end}}""#, &[], "not supported by line_format"),
        (r#"{job="x"} | pattern "no captures""#, &[], "at least one named capture"),
        (r#"{job="x"}"#, &[("limit", "100000000")], "max entries limit per query exceeded"),
        (r#"{job="x"}"#, &[("limit", "0")], "limit must be a positive value"),
        (r#"{job="x"}"#, &[("direction", "sideways")], "invalid direction"),
        (r#"count_over_time({job="x"}[1m])"#, &[("step", "0")], "zero or negative"),
        (r#"count_over_time({job="x"}[1m])"#, &[("step", "1ms")], "exceeded maximum resolution of 11000 points"),
        (r#"count_over_time({job="x"} | json [1m])"#, &[], "pipeline error: 'JSONParserErr'"),
    ];
    for (query, extra, want) in cases {
        let (status, body) = query_range(&base, query, extra);
        assert_eq!(status, 400, "{query}: {body}");
        assert!(body.contains(want), "{query}: expected {want:?} in {body:?}");
    }
    let (status, body) = get(&base, "/loki/api/v1/query_range", &[("start", "yesterday"), ("query", r#"{job="x"}"#)]);
    assert_eq!(status, 400);
    assert!(body.contains("invalid start"), "{body}");
    let (status, body) = get(&base, "/loki/api/v1/query_range", &[]);
    assert_eq!((status, body.trim()), (400, "missing required parameter \"query\""));
    let (status, body) = get(&base, "/loki/api/v1/query", &[("query", r#"{job="x"}"#)]);
    assert_eq!(status, 400);
    assert!(body.contains("log queries are not supported as an instant query type"), "{body}");
    // Extreme timestamps: answered, not overflowed.
    let extreme = [("start", "-9223372036854775808"), ("end", "9223372036854775807")];
    let (status, body) = get(
        &base,
        "/loki/api/v1/query_range",
        &[&[("query", r#"count_over_time({job="x"}[1m])"#), ("step", "60")][..], &extreme[..]].concat(),
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("exceeded maximum resolution"), "{body}");
    let (status, body) =
        get(&base, "/loki/api/v1/query_range", &[&[("query", r#"{job="x"}"#)][..], &extreme[..]].concat());
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("hello"), "{body}");
    let (status, body) = get(
        &base,
        "/loki/api/v1/query",
        &[("query", r#"count_over_time({job="x"}[1m] offset 1h)"#), ("time", "-9223372036854775808")],
    );
    assert_eq!(status, 200, "{body}");
    // The collector is still serving.
    assert_eq!(query_range(&base, r#"{job="x"}"#, &[]).0, 200);
}

/// `(a|aa)+b` against a long run of `a`s is exponential for backtracking engines; here it is a
/// linear scan that finds nothing.
#[test]
fn catastrophic_regexes_are_linear() {
    let dir = tempfile::tempdir().unwrap();
    let (_proc, base) = start_collector(dir.path(), &collector_config(dir.path(), "[logs]\nfsync = \"never\"\n"));
    push_lines(&base, &[("x", vec!["a".repeat(100_000); 20])]);
    for q in [r#"{job="x"} |~ "(a|aa)+b""#, r#"{job="x"} |~ "(a+)+$c""#, r#"{job="x"} | regexp "(?P<x>(a*)*b)""#] {
        let (status, body) = query_range(&base, q, &[]);
        assert_eq!(status, 200, "{q}: {body}");
        if q.contains("regexp") {
            assert!(!body.contains("\"x\":"), "no capture when no match: {body:.300}");
            assert!(body.contains("\"values\""), "{body:.300}");
        } else {
            assert!(body.contains("\"result\":[]"), "{q}: {body:.200}");
        }
    }
    let (status, body) = query_range(&base, r#"{job="x"} |~ "((a{100}){100}){100}""#, &[]);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("size limit"), "{body}");
}

/// A query that would hold more than `logs.max_query_memory_bytes` stops with a message naming
/// the key; the process keeps serving and counts the refusal.
#[test]
fn memory_budget_stops_big_queries_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let extra = "[logs]\nfsync = \"never\"\nmax_query_memory_bytes = 1048576\nmax_line_bytes = 1048576\n";
    let (_proc, base) = start_collector(dir.path(), &collector_config(dir.path(), extra));
    // 30 lines of 100 KB: returning them all needs about 3 MB.
    push_lines(&base, &[("big", (0..30).map(|i| format!("{i} {}", "x".repeat(100_000))).collect())]);
    let (status, body) = query_range(&base, r#"{job="big"}"#, &[("limit", "1000")]);
    assert_eq!(status, 400, "{body:.300}");
    assert!(body.contains("memory budget of 1048576 bytes (logs.max_query_memory_bytes)"), "{body}");
    // Fewer lines fit.
    let (status, body) = query_range(&base, r#"{job="big"}"#, &[("limit", "5")]);
    assert_eq!(status, 200, "{body:.300}");
    // Label sets of lines that do not make the cut are not held: 20,000 lines with unique
    // parsed labels (several MB of label sets) fit a 1 MiB budget when 10 are returned.
    let uniq: Vec<String> = (0..20_000)
        .map(|i| format!(r#"{{"request_id":"req-{i:08}","user":"user-{i}","path":"/api/v1/items/{i}"}}"#))
        .collect();
    push_lines(&base, &[("uniq", uniq)]);
    let (status, body) = query_range(&base, r#"{job="uniq"} | json"#, &[("limit", "10")]);
    assert_eq!(status, 200, "{body:.300}");
    assert_eq!(body.matches("request_id").count(), 2 * 10, "{body:.300}");
    // Metric queries: 40 series of 10,000 steps each hold more than 1 MiB.
    let streams: Vec<(String, Vec<String>)> = (0..40).map(|i| (format!("s{i}"), vec!["l".to_string()])).collect();
    let refs: Vec<(&str, Vec<String>)> = streams.iter().map(|(j, l)| (j.as_str(), l.clone())).collect();
    push_lines(&base, &refs);
    let p = [("step", "1"), ("start", "1700000000"), ("end", "1700010000")];
    let q = [("query", r#"count_over_time({job=~"s.+"}[1h])"#)];
    let (status, body) = get(&base, "/loki/api/v1/query_range", &[&q[..], &p[..]].concat());
    assert_eq!(status, 400, "{body:.300}");
    assert!(body.contains("logs.max_query_memory_bytes"), "{body}");
    // Summing them (pushed down while scanning) needs one series and fits.
    let q = [("query", r#"sum(count_over_time({job=~"s.+"}[1h]))"#)];
    let (status, body) = get(&base, "/loki/api/v1/query_range", &[&q[..], &p[..]].concat());
    assert_eq!(status, 200, "{body:.300}");
    let (_, metrics) = get(&base, "/metrics", &[]);
    assert!(
        metrics.contains(r#"osprey_rejected_requests_total{endpoint="loki_query_range",reason="memory_budget"} 2"#),
        "{metrics}"
    );
}
