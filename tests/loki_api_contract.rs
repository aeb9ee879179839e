//! Loki's query API, by contract: a real collector ingests `fixtures/loki_api/push.json` and
//! every endpoint's answer is compared with a fixture written from Loki's API documentation
//! (see `fixtures/loki_api/README.md`). Also: the tail websocket, tenants, and `osprey query`.

mod harness;

use harness::{collector_config, start_collector};
use serde_json::{Value, json};
use std::time::Duration;

const START: &str = "1700000000000000000";
const END: &str = "1700000003000000000";

fn fixture(name: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/loki_api").join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

/// GET `path` with query `params` and headers; returns (status, body).
fn get(base: &str, path: &str, params: &[(&str, &str)], headers: &[(&str, &str)]) -> (u16, String) {
    let mut req = agent().get(format!("{base}{path}"));
    for (k, v) in params {
        req = req.query(*k, *v);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut r = req.call().unwrap();
    (r.status().as_u16(), r.body_mut().read_to_string().unwrap_or_default())
}

fn get_json(base: &str, path: &str, params: &[(&str, &str)], headers: &[(&str, &str)]) -> Value {
    let (status, body) = get(base, path, params, headers);
    assert_eq!(status, 200, "{path} {params:?}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {body}"))
}

/// The answer without `data.stats` (timings vary), after checking the stats' shape.
fn without_stats(mut v: Value) -> Value {
    if let Some(data) = v.get_mut("data").and_then(Value::as_object_mut)
        && let Some(stats) = data.remove("stats")
    {
        let summary = &stats["summary"];
        for key in [
            "bytesProcessedPerSecond",
            "linesProcessedPerSecond",
            "totalBytesProcessed",
            "totalLinesProcessed",
            "execTime",
            "queueTime",
            "totalEntriesReturned",
        ] {
            assert!(summary[key].is_number(), "stats.summary.{key} missing: {stats}");
        }
        assert!(stats["querier"]["store"]["chunk"].is_object(), "stats.querier.store.chunk: {stats}");
        assert!(stats["ingester"].is_object(), "stats.ingester: {stats}");
    }
    v
}

fn push(base: &str, body: &str, tenant: Option<&str>) {
    let mut headers = vec![("content-type", "application/json")];
    if let Some(t) = tenant {
        headers.push(("x-scope-orgid", t));
    }
    let (status, resp) = harness::post(&format!("{base}/loki/api/v1/push"), &headers, body.as_bytes());
    assert_eq!(status, 204, "push: {resp}");
}

fn collector(dir: &std::path::Path) -> (harness::Proc, String) {
    let (proc, base) = start_collector(dir, &collector_config(dir, "[logs]\nfsync = \"never\"\n"));
    push(&base, &fixture("push.json").to_string(), None);
    (proc, base)
}

#[test]
fn query_endpoints_answer_like_loki() {
    let dir = tempfile::tempdir().unwrap();
    let (_proc, base) = collector(dir.path());
    let range = |q: &'static str| vec![("query", q), ("start", START), ("end", END)];

    // Log query: streams, newest first, structured metadata folded into the labels.
    let mut p = range(r#"{job="api"}"#);
    p.push(("limit", "100"));
    let v = get_json(&base, "/loki/api/v1/query_range", &p, &[]);
    assert_eq!(v["data"]["stats"]["summary"]["totalEntriesReturned"], 4);
    assert_eq!(without_stats(v), fixture("query_range_streams.json"));

    // categorize-labels: stream labels apart from structured metadata and parsed labels.
    let mut p = range(r#"{job="api", env="prod"} | logfmt"#);
    p.push(("direction", "forward"));
    let v = get_json(&base, "/loki/api/v1/query_range", &p, &[("X-Loki-Response-Encoding-Flags", "categorize-labels")]);
    assert_eq!(without_stats(v), fixture("query_range_categorized.json"));

    // Parsers, error handling, label filters and line_format together.
    let q = r#"{job="api"} |~ "warn|error" | logfmt | json | drop __error__, __error_details__ | status >= 400 | line_format "{{ .level | ToUpper }} {{.status}}""#;
    let v = get_json(&base, "/loki/api/v1/query_range", &range(q), &[]);
    assert_eq!(without_stats(v), fixture("query_range_filtered.json"));

    // Metric range query: a matrix of [seconds, "value"].
    let p = [
        ("query", r#"sum by (env) (count_over_time({job="api"}[2s]))"#),
        ("start", "1700000002"),
        ("end", "1700000004"),
        ("step", "1"),
    ];
    let v = get_json(&base, "/loki/api/v1/query_range", &p, &[]);
    assert_eq!(without_stats(v), fixture("query_range_matrix.json"));

    // Instant queries: vector, Grafana's health check, scalar.
    let at =
        |q: &'static str, t: &'static str| get_json(&base, "/loki/api/v1/query", &[("query", q), ("time", t)], &[]);
    assert_eq!(without_stats(at(r#"sum(rate({job="api"}[10s]))"#, "1700000005")), fixture("query_vector.json"));
    assert_eq!(without_stats(at("vector(1)+vector(1)", "1700000005.5")), fixture("query_healthcheck.json"));
    assert_eq!(without_stats(at("1 + 2 * 3", "1700000005")), fixture("query_scalar.json"));

    // Labels, values, series (POST form body, as logcli and Grafana may send).
    let t = [("start", START), ("end", END)];
    assert_eq!(get_json(&base, "/loki/api/v1/labels", &t, &[]), fixture("labels.json"));
    assert_eq!(get_json(&base, "/loki/api/v1/label/job/values", &t, &[]), fixture("label_job_values.json"));
    let form = format!("match%5B%5D=%7Bjob%3D~%22.%2B%22%7D&start={START}&end={END}");
    let (status, body) = harness::post(
        &format!("{base}/loki/api/v1/series"),
        &[("content-type", "application/x-www-form-urlencoded")],
        form.as_bytes(),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap(), fixture("series.json"));

    // Index endpoints.
    let v = get_json(&base, "/loki/api/v1/index/stats", &range(r#"{job="api"}"#), &[]);
    assert_eq!(v, fixture("index_stats.json"));
    let v = get_json(&base, "/loki/api/v1/index/volume", &range(r#"{job=~".+"}"#), &[]);
    assert_eq!(v, fixture("index_volume.json"));
    let p = [("query", r#"{job="api"}"#), ("start", "1700000000"), ("end", "1700000002"), ("step", "1")];
    let v = get_json(&base, "/loki/api/v1/index/volume_range", &p, &[]);
    let result = v["data"]["result"].as_array().unwrap();
    assert_eq!(v["data"]["resultType"], "matrix");
    assert_eq!(result.len(), 1, "{v}");
    // Buckets (t - 1s, t] for t = 0s, 1s, 2s: each of the four api entries lands in one.
    let values = result[0]["values"].as_array().unwrap();
    assert_eq!(values.len(), 3, "{v}");
    let total: u64 = values.iter().map(|p| p[1].as_str().unwrap().parse::<u64>().unwrap()).sum();
    assert_eq!(total, 131, "{v}");

    // Status endpoints.
    let v = get_json(&base, "/loki/api/v1/status/buildinfo", &[], &[]);
    for key in ["version", "revision", "branch", "buildUser", "buildDate", "goVersion"] {
        assert!(v[key].is_string(), "buildinfo.{key}: {v}");
    }
    assert_eq!(get(&base, "/ready", &[], &[]).0, 200);
}

#[test]
fn tenants_are_isolated() {
    let dir = tempfile::tempdir().unwrap();
    let (_proc, base) = collector(dir.path());
    let body =
        json!({"streams": [{"stream": {"job": "secret"}, "values": [["1700000001000000000", "tenant b line"]]}]});
    push(&base, &body.to_string(), Some("team-b"));
    let q = [("query", r#"{job="secret"}"#), ("start", START), ("end", END)];
    let default = get_json(&base, "/loki/api/v1/query_range", &q, &[]);
    assert_eq!(default["data"]["result"], json!([]), "the default tenant must not see team-b");
    let b = get_json(&base, "/loki/api/v1/query_range", &q, &[("X-Scope-OrgID", "team-b")]);
    assert_eq!(b["data"]["result"][0]["values"][0][1], "tenant b line");
    let labels =
        get_json(&base, "/loki/api/v1/labels", &[("start", START), ("end", END)], &[("X-Scope-OrgID", "team-b")]);
    assert_eq!(labels["data"], json!(["job"]));
}

#[test]
fn tail_streams_new_lines_over_a_websocket() {
    use futures_util::{SinkExt, StreamExt};
    let dir = tempfile::tempdir().unwrap();
    let (_proc, base) = start_collector(dir.path(), &collector_config(dir.path(), "[logs]\nfsync = \"never\"\n"));
    let now = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let line = |text: &str| {
        json!({"streams": [{"stream": {"job": "tail"}, "values": [[now().to_string(), text]]}]}).to_string()
    };
    push(&base, &line("before the tail"), None);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let url = format!(
            "{}/loki/api/v1/tail?query={}",
            base.replace("http://", "ws://"),
            form_urlencoded::byte_serialize(br#"{job="tail"} |= "the tail""#).collect::<String>()
        );
        let (mut ws, _) = tokio_tungstenite::connect_async(url).await.expect("websocket handshake");
        let mut seen: Vec<String> = Vec::new();
        let mut pushed_after = false;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while seen.len() < 2 {
            let msg = tokio::time::timeout_at(deadline, ws.next()).await.expect("tail delivered both lines in time");
            let msg = msg.expect("stream open").expect("frame");
            let text = msg.into_text().expect("text frame");
            let v: Value = serde_json::from_str(&text).expect("tail frames are JSON");
            for s in v["streams"].as_array().expect("streams") {
                assert_eq!(s["stream"], json!({"job": "tail"}));
                for e in s["values"].as_array().unwrap() {
                    assert!(e[0].as_str().unwrap().parse::<i64>().is_ok(), "ns timestamp string: {e}");
                    seen.push(e[1].as_str().unwrap().to_string());
                }
            }
            if !pushed_after && seen.iter().any(|l| l == "before the tail") {
                pushed_after = true;
                let (base, body) = (base.clone(), line("after the tail started"));
                tokio::task::spawn_blocking(move || push(&base, &body, None)).await.unwrap();
            }
        }
        assert_eq!(seen, ["before the tail", "after the tail started"]);
        let _ = ws.send(tokio_tungstenite::tungstenite::Message::Close(None)).await;
    });
}
