//! Loki's query API, same paths, parameters and JSON shapes as Loki 3: `query`, `query_range`,
//! `labels`, `label/<name>/values`, `series`, `index/stats`, `index/volume`,
//! `index/volume_range`, `tail` (websocket) and `status/buildinfo`. Every request is scoped to
//! the tenant of `X-Scope-OrgID` (or `logs.default_tenant`). Errors are plain text, as Loki's.
//!
//! Queries run on the blocking pool, at most `logs.max_concurrent_queries` at once, each within
//! `logs.max_query_memory_bytes` and `server.request_timeout`.

// Parameter helpers return the ready 4xx `Response` as their error: it is the cold path, and
// boxing it would only add noise at every call site.
#![allow(clippy::result_large_err)]

use super::prom::query_pairs;
use super::{AppState, tenant, text_error};
use crate::State;
use crate::logql::engine::{
    self, ExecStats, Limits, LogParams, QueryError, Series, Steps, StreamOut, Value as MetricValue,
};
use crate::logql::{self, Expr};
use crate::logs::ScanRequest;
use crate::selector::Selector;
use crate::time::{now_ns, parse_duration, parse_loki_time};
use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, RawQuery, State as AxumState};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use std::collections::{HashMap, HashSet};
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

const HOUR_NS: i64 = 3_600 * 1_000_000_000;
const DEFAULT_LIMIT: usize = 100;
const CATEGORIZE_LABELS: &str = "categorize-labels";

type Params = Vec<(String, String)>;
type LabelPairs = Vec<(String, String)>;

/// Parameters from the query string, then from a form-encoded body (POST).
fn params(raw: Option<String>, body: &Bytes) -> Params {
    let mut p = query_pairs(raw.as_deref());
    if !body.is_empty() {
        p.extend(query_pairs(std::str::from_utf8(body).ok()));
    }
    p
}

fn get<'a>(p: &'a [(String, String)], key: &str) -> Option<&'a str> {
    p.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty())
}

fn bad(msg: impl Into<String>) -> Response {
    text_error(StatusCode::BAD_REQUEST, msg)
}

fn duration_ns(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// `start`/`end`/`since` as Loki reads them; `default_since` when neither start nor since.
fn time_range(p: &Params, default_since: i64) -> Result<(i64, i64), Response> {
    let end = match get(p, "end").map(parse_loki_time).transpose() {
        Ok(v) => v.unwrap_or_else(now_ns),
        Err(e) => return Err(bad(format!("invalid end: {e}"))),
    };
    let start = match (get(p, "start"), get(p, "since")) {
        (Some(s), _) => parse_loki_time(s).map_err(|e| bad(format!("invalid start: {e}")))?,
        (None, Some(since)) => {
            let d = parse_duration(since).map_err(|e| bad(format!("invalid since: {e}")))?;
            end.min(now_ns()).saturating_sub(duration_ns(d))
        }
        (None, None) => end.saturating_sub(default_since),
    };
    if end < start {
        return Err(bad("end timestamp must not be before or equal to start time"));
    }
    Ok((start, end))
}

fn limit_param(p: &Params, state: &State) -> Result<usize, Response> {
    let limit = match get(p, "limit").map(str::parse::<i64>).transpose() {
        Ok(v) => v.unwrap_or(DEFAULT_LIMIT as i64),
        Err(_) => return Err(bad("invalid limit: not an integer")),
    };
    if limit <= 0 {
        return Err(bad("limit must be a positive value"));
    }
    let max = state.cfg().logs.max_query_lines;
    if limit as u64 > max as u64 {
        return Err(bad(format!(
            "max entries limit per query exceeded, limit > max_entries_limit ({limit} > {max}) (logs.max_query_lines)"
        )));
    }
    Ok(limit as usize)
}

fn direction_param(p: &Params) -> Result<bool, Response> {
    match get(p, "direction").map(str::to_ascii_lowercase).as_deref() {
        None | Some("backward") => Ok(true),
        Some("forward") => Ok(false),
        Some(other) => Err(bad(format!("invalid direction {other:?}: use forward or backward"))),
    }
}

/// `step` as a duration or float seconds; Loki's default is range/250, at least 1s.
fn step_param(p: &Params, start: i64, end: i64) -> Result<i64, Response> {
    match get(p, "step") {
        Some(s) => {
            let d = parse_duration(s).map_err(|e| bad(format!("invalid step: {e}")))?;
            let ns = duration_ns(d);
            if ns <= 0 {
                return Err(bad(
                    "zero or negative query resolution step widths are not accepted. Try a positive integer",
                ));
            }
            Ok(ns)
        }
        None => Ok((end.saturating_sub(start) / 250 / 1_000_000_000).max(1) * 1_000_000_000),
    }
}

fn categorize(headers: &HeaderMap) -> bool {
    headers
        .get_all("x-loki-response-encoding-flags")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|f| f == CATEGORIZE_LABELS))
}

fn parse_query(p: &Params) -> Result<Expr, Response> {
    let Some(query) = get(p, "query") else {
        return Err(bad("missing required parameter \"query\""));
    };
    logql::parse(query).map_err(|e| bad(e.to_string()))
}

fn limits(state: &State) -> Limits {
    let cfg = state.cfg();
    Limits { max_memory_bytes: cfg.logs.max_query_memory_bytes, timeout: cfg.server.request_timeout.get() }
}

fn count_query(state: &State, endpoint: &'static str) {
    state.telemetry.queries.get_or_create(&crate::telemetry::EndpointLabels { endpoint }).inc();
}

/// Runs `work` on the blocking pool holding a query slot; maps failures to Loki-style answers.
async fn run<T: Send + 'static>(
    state: &AppState,
    endpoint: &'static str,
    work: impl FnOnce(&State) -> Result<T, QueryError> + Send + 'static,
) -> Result<T, Response> {
    count_query(state, endpoint);
    let wait = state.cfg().server.request_timeout.get();
    let permit = match tokio::time::timeout(wait, state.query_slots.clone().acquire_owned()).await {
        Ok(Ok(p)) => p,
        _ => {
            state.telemetry.reject(endpoint, "too_many_queries");
            return Err(text_error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "too many queries running: {} at once (logs.max_concurrent_queries); retry later",
                    state.cfg().logs.max_concurrent_queries
                ),
            ));
        }
    };
    let worker = state.clone();
    let result = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        work(&worker)
    })
    .await;
    match result {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => {
            let (status, reason) = match &e {
                QueryError::MemoryBudget { .. } => (StatusCode::BAD_REQUEST, "memory_budget"),
                QueryError::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
                QueryError::Store(_) => (StatusCode::INTERNAL_SERVER_ERROR, "store_error"),
                _ => (StatusCode::BAD_REQUEST, "bad_query"),
            };
            state.telemetry.reject(endpoint, reason);
            if !e.is_client_error() {
                tracing::error!(error = %e, endpoint, "query failed");
            }
            Err(text_error(status, e.to_string()))
        }
        Err(_) => Err(text_error(StatusCode::INTERNAL_SERVER_ERROR, "query worker panicked")),
    }
}

fn label_map(labels: &[(String, String)]) -> Value {
    Value::Object(labels.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect::<Map<_, _>>())
}

/// Loki's `stats` object: the summary Grafana and logcli show, plus the per-component blocks
/// they parse (the store block carries the scan's figures; Osprey has no ingesters).
fn stats_json(s: &ExecStats, returned: usize) -> Value {
    let secs = s.exec_time.as_secs_f64();
    let per_sec = |n: u64| if secs > 0.0 { (n as f64 / secs) as u64 } else { 0 };
    json!({
        "summary": {
            "bytesProcessedPerSecond": per_sec(s.bytes_scanned),
            "linesProcessedPerSecond": per_sec(s.lines_scanned),
            "totalBytesProcessed": s.bytes_scanned,
            "totalLinesProcessed": s.lines_scanned,
            "execTime": secs,
            "queueTime": 0,
            "subqueries": 0,
            "totalEntriesReturned": returned,
            "splits": 0,
            "shards": 0,
            "totalPostFilterLines": s.lines_matched,
            "totalStructuredMetadataBytesProcessed": 0,
        },
        "querier": {
            "store": {
                "totalChunksRef": 0,
                "totalChunksDownloaded": 0,
                "chunksDownloadTime": 0,
                "queryReferencedStructuredMetadata": false,
                "chunk": {
                    "headChunkBytes": 0,
                    "headChunkLines": 0,
                    "decompressedBytes": s.bytes_scanned,
                    "decompressedLines": s.lines_scanned,
                    "compressedBytes": 0,
                    "totalDuplicates": 0,
                    "postFilterLines": s.lines_matched,
                    "headChunkStructuredMetadataBytes": 0,
                    "decompressedStructuredMetadataBytes": 0,
                }
            }
        },
        "ingester": {
            "totalReached": 0,
            "totalChunksMatched": 0,
            "totalBatches": 0,
            "totalLinesSent": 0,
            "store": {
                "totalChunksRef": 0,
                "totalChunksDownloaded": 0,
                "chunksDownloadTime": 0,
                "chunk": {
                    "headChunkBytes": 0,
                    "headChunkLines": 0,
                    "decompressedBytes": 0,
                    "decompressedLines": 0,
                    "compressedBytes": 0,
                    "totalDuplicates": 0,
                }
            }
        }
    })
}

/// The `result` of a `streams` answer.
pub fn streams_json(streams: &[StreamOut]) -> Value {
    Value::Array(
        streams
            .iter()
            .map(|s| {
                let values: Vec<Value> = s
                    .entries
                    .iter()
                    .map(|(ts, line, extra)| match extra {
                        None => json!([ts.to_string(), line]),
                        Some((metadata, parsed)) => {
                            let mut cat = Map::new();
                            if !metadata.is_empty() {
                                cat.insert("structuredMetadata".into(), label_map(metadata));
                            }
                            if !parsed.is_empty() {
                                cat.insert("parsed".into(), label_map(parsed));
                            }
                            json!([ts.to_string(), line, Value::Object(cat)])
                        }
                    })
                    .collect();
                json!({ "stream": label_map(&s.labels), "values": values })
            })
            .collect(),
    )
}

fn matrix_json(series: &[Series], steps: Steps) -> Value {
    Value::Array(
        series
            .iter()
            .map(|s| {
                let values: Vec<Value> = s
                    .values
                    .iter()
                    .enumerate()
                    .filter_map(|(k, v)| {
                        v.map(|v| json!([engine::format_step_time(steps.at(k)), engine::format_value(v)]))
                    })
                    .collect();
                json!({ "metric": label_map(&s.labels), "values": values })
            })
            .collect(),
    )
}

fn success(data: Value) -> Response {
    axum::Json(json!({ "status": "success", "data": data })).into_response()
}

fn with_flags(mut data: Map<String, Value>, categorized: bool) -> Value {
    if categorized {
        data.insert("encodingFlags".into(), json!([CATEGORIZE_LABELS]));
    }
    Value::Object(data)
}

/// `GET|POST /loki/api/v1/query_range`: log queries answer `streams`, metric queries `matrix`.
pub async fn query_range(
    AxumState(state): AxumState<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Response {
    let p = params(raw, &body);
    let expr = match parse_query(&p) {
        Ok(e) => e,
        Err(r) => return r,
    };
    let (start, end) = match time_range(&p, HOUR_NS) {
        Ok(r) => r,
        Err(r) => return r,
    };
    if get(&p, "interval").is_some() {
        return bad("the interval parameter is not supported; leave it out to get every entry");
    }
    let tenant = tenant(&headers, &state);
    match expr {
        Expr::Log(q) => {
            let (limit, backward) = match (limit_param(&p, &state), direction_param(&p)) {
                (Ok(l), Ok(d)) => (l, d),
                (Err(r), _) | (_, Err(r)) => return r,
            };
            let categorized = categorize(&headers);
            let lp = LogParams { tenant, start_ns: start, end_ns: end, limit, backward };
            let answer =
                run(&state, "loki_query_range", move |s| engine::select_logs(&s.logs, &q, &lp, limits(s))).await;
            match answer {
                Ok(a) => {
                    let returned = a.entries.len();
                    let stats = stats_json(&a.stats, returned);
                    let streams = engine::group_streams(a.entries, categorized);
                    let mut data = Map::new();
                    data.insert("resultType".into(), json!("streams"));
                    data.insert("result".into(), streams_json(&streams));
                    data.insert("stats".into(), stats);
                    success(with_flags(data, categorized))
                }
                Err(r) => r,
            }
        }
        Expr::Metric(m) => {
            let step = match step_param(&p, start, end) {
                Ok(s) => s,
                Err(r) => return r,
            };
            let steps = Steps { start_ns: start, end_ns: end, step_ns: step };
            let answer =
                run(&state, "loki_query_range", move |s| engine::eval_metric(&s.logs, &tenant, &m, steps, limits(s)))
                    .await;
            match answer {
                Ok(a) => {
                    let series = match a.value {
                        MetricValue::Vector(v) => v,
                        MetricValue::Scalar(x) => {
                            let n = steps.count().unwrap_or(1);
                            vec![Series { labels: Vec::new(), values: vec![Some(x); n] }]
                        }
                    };
                    let returned: usize = series.iter().map(|s| s.values.iter().flatten().count()).sum();
                    success(json!({
                        "resultType": "matrix",
                        "result": matrix_json(&series, steps),
                        "stats": stats_json(&a.stats, returned),
                    }))
                }
                Err(r) => r,
            }
        }
    }
}

/// `GET|POST /loki/api/v1/query`: instant metric queries (`vector` or `scalar`). Log queries
/// are refused with 400, as Loki does.
pub async fn query(
    AxumState(state): AxumState<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Response {
    let p = params(raw, &body);
    let expr = match parse_query(&p) {
        Ok(e) => e,
        Err(r) => return r,
    };
    let t = match get(&p, "time").map(parse_loki_time).transpose() {
        Ok(v) => v.unwrap_or_else(now_ns),
        Err(e) => return bad(format!("invalid time: {e}")),
    };
    if let Err(r) = limit_param(&p, &state).and(direction_param(&p)) {
        return r;
    }
    let Expr::Metric(m) = expr else {
        return bad(
            "log queries are not supported as an instant query type, please change your query to a range query type",
        );
    };
    let tenant = tenant(&headers, &state);
    let steps = Steps::instant(t);
    let answer = run(&state, "loki_query", move |s| engine::eval_metric(&s.logs, &tenant, &m, steps, limits(s))).await;
    match answer {
        Ok(a) => {
            let time = engine::format_step_time(t);
            match a.value {
                MetricValue::Scalar(x) => success(json!({
                    "resultType": "scalar",
                    "result": [time, engine::format_value(x)],
                    "stats": stats_json(&a.stats, 1),
                })),
                MetricValue::Vector(series) => {
                    let result: Vec<Value> = series
                        .iter()
                        .filter_map(|s| {
                            let v = s.values.first().copied().flatten()?;
                            Some(json!({ "metric": label_map(&s.labels), "value": [time, engine::format_value(v)] }))
                        })
                        .collect();
                    let n = result.len();
                    success(json!({ "resultType": "vector", "result": result, "stats": stats_json(&a.stats, n) }))
                }
            }
        }
        Err(r) => r,
    }
}

/// The stream selector of a `query` or `match[]` parameter (a log query; its pipeline, if any,
/// is ignored, as Loki's metadata endpoints do).
fn selector_of(text: &str) -> Result<Selector, Response> {
    match logql::parse(text) {
        Ok(Expr::Log(q)) => Ok(q.selector),
        Ok(Expr::Metric(m)) => match m.range_aggs().as_slice() {
            [one] => Ok(one.query.selector.clone()),
            _ => Err(bad(format!("expected a stream selector like {{job=\"x\"}}, got {text:?}"))),
        },
        Err(e) => Err(bad(e.to_string())),
    }
}

fn optional_selector(p: &Params) -> Result<Option<Selector>, Response> {
    get(p, "query").map(selector_of).transpose()
}

/// `GET|POST /loki/api/v1/labels`.
pub async fn labels(
    AxumState(state): AxumState<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Response {
    let p = params(raw, &body);
    let ((start, end), selector) = match (time_range(&p, 6 * HOUR_NS), optional_selector(&p)) {
        (Ok(r), Ok(s)) => (r, s),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    let tenant = tenant(&headers, &state);
    let answer = run(&state, "loki_labels", move |s| {
        let series = s.logs.series(&tenant, selector.as_ref(), start, end)?;
        let mut names: Vec<String> = series.iter().flat_map(|l| l.iter().map(|(k, _)| k.clone())).collect();
        names.sort();
        names.dedup();
        Ok(names)
    })
    .await;
    match answer {
        Ok(names) => success(json!(names)),
        Err(r) => r,
    }
}

/// `GET|POST /loki/api/v1/label/<name>/values`.
pub async fn label_values(
    AxumState(state): AxumState<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Response {
    let p = params(raw, &body);
    let ((start, end), selector) = match (time_range(&p, 6 * HOUR_NS), optional_selector(&p)) {
        (Ok(r), Ok(s)) => (r, s),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    let tenant = tenant(&headers, &state);
    let answer = run(&state, "loki_label_values", move |s| {
        let series = s.logs.series(&tenant, selector.as_ref(), start, end)?;
        let mut values: Vec<String> =
            series.iter().filter_map(|l| l.iter().find(|(k, _)| *k == name).map(|(_, v)| v.clone())).collect();
        values.sort();
        values.dedup();
        Ok(values)
    })
    .await;
    match answer {
        Ok(values) => success(json!(values)),
        Err(r) => r,
    }
}

/// `GET|POST /loki/api/v1/series`: streams matching any `match[]` (or `match`).
pub async fn series(
    AxumState(state): AxumState<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Response {
    let p = params(raw, &body);
    let range = match time_range(&p, HOUR_NS) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let mut selectors = Vec::new();
    for (k, v) in &p {
        if k == "match[]" || k == "match" {
            match selector_of(v) {
                Ok(s) => selectors.push(s),
                Err(r) => return r,
            }
        }
    }
    let tenant = tenant(&headers, &state);
    let answer = run(&state, "loki_series", move |s| {
        let (start, end) = range;
        let mut all: Vec<Arc<Vec<(String, String)>>> = Vec::new();
        if selectors.is_empty() {
            all = s.logs.series(&tenant, None, start, end)?;
        }
        for sel in &selectors {
            all.extend(s.logs.series(&tenant, Some(sel), start, end)?);
        }
        all.sort();
        all.dedup();
        Ok(all)
    })
    .await;
    match answer {
        Ok(all) => success(Value::Array(all.iter().map(|l| label_map(l)).collect())),
        Err(r) => r,
    }
}

/// Visits every entry of the selector's streams in the range (for the index endpoints).
fn scan_all(
    s: &State,
    tenant: &str,
    selector: &Selector,
    start: i64,
    end: i64,
    mut visit: impl FnMut(&Arc<Vec<(String, String)>>, i64, usize),
) -> Result<(), QueryError> {
    let req = ScanRequest {
        tenant: tenant.to_string(),
        selector: selector.clone(),
        start_ns: start,
        end_ns: end,
        backward: false,
        line_hints: Vec::new(),
    };
    let deadline = std::time::Instant::now() + s.cfg().server.request_timeout.get();
    let mut n = 0u32;
    let mut expired = false;
    s.logs.scan(&req, &mut |labels, e| {
        n = n.wrapping_add(1);
        if n.is_multiple_of(4096) && std::time::Instant::now() > deadline {
            expired = true;
            return ControlFlow::Break(());
        }
        visit(labels, e.ts_ns, e.line.len());
        ControlFlow::Continue(())
    })?;
    if expired {
        return Err(QueryError::Timeout(s.cfg().server.request_timeout.get()));
    }
    Ok(())
}

/// `GET|POST /loki/api/v1/index/stats`: streams, entries and bytes a selector covers. Osprey
/// has no chunks: `chunks` is 0.
pub async fn index_stats(
    AxumState(state): AxumState<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Response {
    let p = params(raw, &body);
    let range = match time_range(&p, HOUR_NS) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let selector = match get(&p, "query").map(selector_of) {
        Some(Ok(s)) => s,
        Some(Err(r)) => return r,
        None => return bad("missing required parameter \"query\""),
    };
    let tenant = tenant(&headers, &state);
    let answer = run(&state, "loki_index_stats", move |s| {
        let mut streams: HashMap<usize, Arc<Vec<(String, String)>>> = HashMap::new();
        let (mut entries, mut bytes) = (0u64, 0u64);
        scan_all(s, &tenant, &selector, range.0, range.1, |labels, _, len| {
            streams.entry(Arc::as_ptr(labels) as usize).or_insert_with(|| labels.clone());
            entries += 1;
            bytes += len as u64;
        })?;
        let distinct: HashSet<&Vec<(String, String)>> = streams.values().map(|a| a.as_ref()).collect();
        Ok((distinct.len(), entries, bytes))
    })
    .await;
    match answer {
        Ok((streams, entries, bytes)) => {
            axum::Json(json!({ "streams": streams, "chunks": 0, "entries": entries, "bytes": bytes })).into_response()
        }
        Err(r) => r,
    }
}

/// How `index/volume` groups streams.
struct VolumeGrouping {
    by_labels: bool,
    names: Vec<String>,
}

impl VolumeGrouping {
    fn from_params(p: &Params, selector: &Selector) -> Result<Self, Response> {
        let names: Vec<String> = match get(p, "targetLabels") {
            Some(t) => t.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect(),
            None => {
                let mut n: Vec<String> = selector.matchers.iter().map(|m| m.name.clone()).collect();
                n.sort();
                n.dedup();
                n
            }
        };
        let by_labels = match get(p, "aggregateBy") {
            None | Some("series") => false,
            Some("labels") => true,
            Some(other) => return Err(bad(format!("invalid aggregateBy {other:?}: use series or labels"))),
        };
        Ok(VolumeGrouping { by_labels, names })
    }

    /// The groups a stream's bytes count towards.
    fn keys(&self, labels: &[(String, String)]) -> Vec<Vec<(String, String)>> {
        if self.by_labels {
            labels
                .iter()
                .filter(|(k, _)| self.names.contains(k))
                .map(|(k, _)| vec![(k.clone(), String::new())])
                .collect()
        } else {
            vec![labels.iter().filter(|(k, _)| self.names.contains(k)).cloned().collect()]
        }
    }
}

fn volume_limit(p: &Params) -> Result<usize, Response> {
    match get(p, "limit").map(str::parse::<usize>).transpose() {
        Ok(v) => Ok(v.unwrap_or(100).max(1)),
        Err(_) => Err(bad("invalid limit: not a non-negative integer")),
    }
}

/// `GET|POST /loki/api/v1/index/volume`: bytes per group over the range, as a vector at `end`,
/// largest first, at most `limit` series.
pub async fn index_volume(
    AxumState(state): AxumState<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Response {
    volume(state, headers, raw, body, false).await
}

/// `GET|POST /loki/api/v1/index/volume_range`: the same per `step` bucket `(t - step, t]`.
pub async fn index_volume_range(
    AxumState(state): AxumState<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Response {
    volume(state, headers, raw, body, true).await
}

async fn volume(state: AppState, headers: HeaderMap, raw: Option<String>, body: Bytes, ranged: bool) -> Response {
    let p = params(raw, &body);
    let (start, end) = match time_range(&p, HOUR_NS) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let selector = match get(&p, "query").map(selector_of) {
        Some(Ok(s)) => s,
        Some(Err(r)) => return r,
        None => return bad("missing required parameter \"query\""),
    };
    let (grouping, limit) = match (VolumeGrouping::from_params(&p, &selector), volume_limit(&p)) {
        (Ok(g), Ok(l)) => (g, l),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    let steps = if ranged {
        match step_param(&p, start, end) {
            Ok(step) => Steps { start_ns: start, end_ns: end, step_ns: step },
            Err(r) => return r,
        }
    } else {
        Steps::instant(end)
    };
    let n = match steps.count() {
        Ok(n) => n,
        Err(e) => return bad(e.to_string()),
    };
    let tenant = tenant(&headers, &state);
    let answer = run(&state, if ranged { "loki_index_volume_range" } else { "loki_index_volume" }, move |s| {
        let mut budget = engine::Budget::new(s.cfg().logs.max_query_memory_bytes);
        let mut groups: HashMap<Vec<(String, String)>, Vec<u64>> = HashMap::new();
        let mut keys_of: HashMap<usize, (Arc<LabelPairs>, Vec<LabelPairs>)> = HashMap::new();
        let mut failure = None;
        // volume_range scans from the first bucket's start.
        let scan_start = if ranged { start.saturating_sub(steps.step_ns).saturating_add(1) } else { start };
        scan_all(s, &tenant, &selector, scan_start, end.saturating_add(1), |labels, ts, len| {
            if failure.is_some() {
                return;
            }
            let k = if ranged {
                // Bucket (t - step, t] holding ts.
                let d = ts as i128 - steps.start_ns as i128;
                let step = steps.step_ns as i128;
                let k = d.div_euclid(step) + i128::from(d.rem_euclid(step) != 0);
                if k < 0 || k >= n as i128 {
                    return;
                }
                k as usize
            } else {
                0
            };
            let (_, keys) =
                keys_of.entry(Arc::as_ptr(labels) as usize).or_insert_with(|| (labels.clone(), grouping.keys(labels)));
            for key in keys.iter() {
                let slot = match groups.get_mut(key) {
                    Some(v) => v,
                    None => {
                        if let Err(e) = budget.charge(n * 8 + 256, "the volume groups") {
                            failure = Some(e);
                            return;
                        }
                        groups.entry(key.clone()).or_insert_with(|| vec![0; n])
                    }
                };
                slot[k] += len as u64;
            }
        })?;
        if let Some(e) = failure {
            return Err(e);
        }
        let mut out: Vec<(LabelPairs, Vec<u64>)> = groups.into_iter().collect();
        out.sort_by(|a, b| b.1.iter().sum::<u64>().cmp(&a.1.iter().sum::<u64>()).then(a.0.cmp(&b.0)));
        out.truncate(limit);
        Ok(out)
    })
    .await;
    let groups = match answer {
        Ok(g) => g,
        Err(r) => return r,
    };
    if ranged {
        let series: Vec<Series> = groups
            .into_iter()
            .map(|(labels, v)| Series { labels, values: v.into_iter().map(|b| (b > 0).then_some(b as f64)).collect() })
            .collect();
        success(json!({ "resultType": "matrix", "result": matrix_json(&series, steps) }))
    } else {
        let time = engine::format_step_time(end);
        let result: Vec<Value> = groups
            .iter()
            .map(|(labels, v)| json!({ "metric": label_map(labels), "value": [time, v[0].to_string()] }))
            .collect();
        success(json!({ "resultType": "vector", "result": result }))
    }
}

/// `GET /loki/api/v1/status/buildinfo`. `version` is the Loki API level served (clients use it
/// for feature detection); the Osprey build is in `revision`.
pub async fn buildinfo() -> Response {
    axum::Json(json!({
        "version": "3.0.0",
        "revision": format!("osprey-{}", env!("CARGO_PKG_VERSION")),
        "branch": "osprey",
        "buildUser": "",
        "buildDate": "",
        "goVersion": "",
    }))
    .into_response()
}

/// `GET /loki/api/v1/tail` (websocket): the last `limit` entries since `start`, then new ones
/// as they arrive, polled every second `delay_for` seconds behind now.
///
/// Polling the store (which has no subscription) means an entry arriving with a timestamp
/// older than what was already sent is not sent, as Loki's tail, which follows ingestion, would;
/// `query_range` finds it.
pub async fn tail(
    AxumState(state): AxumState<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    guard: Option<axum::Extension<osprey_server::listener::ConnectionGuard>>,
    ws: WebSocketUpgrade,
) -> Response {
    let p = params(raw, &Bytes::new());
    let q = match parse_query(&p) {
        Ok(Expr::Log(q)) => q,
        Ok(Expr::Metric(_)) => return bad("tail needs a log query, not a metric query"),
        Err(r) => return r,
    };
    let limit = match limit_param(&p, &state) {
        Ok(l) => l,
        Err(r) => return r,
    };
    let delay = match get(&p, "delay_for").map(str::parse::<u64>).transpose() {
        Ok(Some(d)) if d > 5 => return bad("delay_for can't be greater than 5"),
        Ok(d) => d.unwrap_or(0),
        Err(_) => return bad("invalid delay_for: not a number of seconds"),
    };
    let start = match get(&p, "start").map(parse_loki_time).transpose() {
        Ok(v) => v.unwrap_or_else(|| now_ns() - HOUR_NS),
        Err(e) => return bad(format!("invalid start: {e}")),
    };
    let tenant = tenant(&headers, &state);
    let categorized = categorize(&headers);
    count_query(&state, "loki_tail");
    // The socket keeps its connection's slot (`server.max_connections`) while it lives, and
    // ends when the listener stops.
    let guard = guard.map(|g| g.0);
    ws.on_upgrade(move |socket| {
        tail_loop(
            socket,
            state,
            TailSpec { q, tenant, start, delay_ns: delay as i64 * 1_000_000_000, limit, categorized },
            guard,
        )
    })
}

struct TailSpec {
    q: logql::LogQuery,
    tenant: String,
    start: i64,
    delay_ns: i64,
    limit: usize,
    categorized: bool,
}

async fn tail_loop(
    mut socket: WebSocket,
    state: AppState,
    spec: TailSpec,
    mut guard: Option<osprey_server::listener::ConnectionGuard>,
) {
    let spec = Arc::new(spec);
    let mut cursor = spec.start;
    // Entries already sent at the cursor's timestamp: (labels, line) hashes.
    let mut sent_at_cursor: HashSet<u64> = HashSet::new();
    let mut first = true;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut collector_stop = state.ops.stop_signal();
    loop {
        // A tail never ends by itself: it is closed when the listener drains its connections or
        // the collector stops.
        let stopping = async {
            let connection = async {
                match guard.as_mut() {
                    Some(g) => g.stopping().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = connection => {}
                _ = collector_stop.wait_for(|s| *s) => {}
            }
        };
        tokio::select! {
            msg = socket.recv() => match msg {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => continue,
            },
            _ = tick.tick() => {}
            () = stopping => {
                let _ = socket.send(Message::Close(None)).await;
                return;
            }
        }
        let end = now_ns() - spec.delay_ns;
        if end <= cursor {
            continue;
        }
        let (from, backward, limit) =
            if first { (cursor, true, spec.limit) } else { (cursor, false, state.cfg().logs.max_query_lines) };
        let s = spec.clone();
        let lp = LogParams { tenant: s.tenant.clone(), start_ns: from, end_ns: end, limit, backward };
        let answer = run(&state, "loki_tail", move |st| engine::select_logs(&st.logs, &s.q, &lp, limits(st))).await;
        let mut entries = match answer {
            Ok(a) => a.entries,
            Err(_) => {
                let _ = socket.send(Message::Close(None)).await;
                return;
            }
        };
        if backward {
            entries.reverse();
        }
        first = false;
        entries.retain(|e| !(e.ts == cursor && sent_at_cursor.contains(&entry_hash(&e.labels.all, &e.line))));
        let Some(last) = entries.last().map(|e| e.ts) else {
            continue;
        };
        if last != cursor {
            sent_at_cursor.clear();
            cursor = last;
        }
        for e in entries.iter().filter(|e| e.ts == cursor) {
            sent_at_cursor.insert(entry_hash(&e.labels.all, &e.line));
        }
        let streams = engine::group_streams(entries, spec.categorized);
        let mut msg = Map::new();
        msg.insert("streams".into(), streams_json(&streams));
        if spec.categorized {
            msg.insert("encodingFlags".into(), json!([CATEGORIZE_LABELS]));
        }
        if socket.send(Message::Text(Value::Object(msg).to_string().into())).await.is_err() {
            return;
        }
    }
}

fn entry_hash(labels: &[(String, String)], line: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    labels.hash(&mut h);
    line.hash(&mut h);
    h.finish()
}
