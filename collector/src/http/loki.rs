//! Loki's query API: `/loki/api/v1/query_range` (log queries; metric queries come with the
//! log-search issue).

use super::prom::query_pairs;
use super::{AppState, tenant, text_error};
use crate::logs::QueryRequest;
use crate::time::{now_ns, parse_duration, parse_loki_time};
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

/// Loki's default range when neither `start` nor `since` is given.
const DEFAULT_SINCE_NS: i64 = 3_600 * 1_000_000_000;
const DEFAULT_LIMIT: usize = 100;

/// Parameters from the query string, then from a form-encoded body (POST).
fn params(raw: Option<String>, body: &Bytes) -> Vec<(String, String)> {
    let mut p = query_pairs(raw.as_deref());
    if !body.is_empty() {
        p.extend(query_pairs(std::str::from_utf8(body).ok()));
    }
    p
}

fn get<'a>(p: &'a [(String, String)], key: &str) -> Option<&'a str> {
    p.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty())
}

pub async fn query_range(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Response {
    let p = params(raw, &body);
    let Some(query) = get(&p, "query") else {
        return text_error(StatusCode::BAD_REQUEST, "missing required parameter \"query\"");
    };
    let parsed = match crate::logql::parse(query) {
        Ok(q) => q,
        Err(e) => return text_error(StatusCode::BAD_REQUEST, format!("parse error : {e}")),
    };
    let end_ns = match get(&p, "end").map(parse_loki_time).transpose() {
        Ok(v) => v.unwrap_or_else(now_ns),
        Err(e) => return text_error(StatusCode::BAD_REQUEST, format!("invalid end: {e}")),
    };
    let start_ns = match (get(&p, "start"), get(&p, "since")) {
        (Some(s), _) => match parse_loki_time(s) {
            Ok(v) => v,
            Err(e) => return text_error(StatusCode::BAD_REQUEST, format!("invalid start: {e}")),
        },
        (None, Some(since)) => match parse_duration(since) {
            Ok(d) => end_ns.saturating_sub(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)),
            Err(e) => return text_error(StatusCode::BAD_REQUEST, format!("invalid since: {e}")),
        },
        (None, None) => end_ns.saturating_sub(DEFAULT_SINCE_NS),
    };
    if end_ns < start_ns {
        return text_error(StatusCode::BAD_REQUEST, "end timestamp must not be before or equal to start time");
    }
    let limit = match get(&p, "limit").map(str::parse::<usize>).transpose() {
        Ok(v) => v.unwrap_or(DEFAULT_LIMIT),
        Err(_) => return text_error(StatusCode::BAD_REQUEST, "invalid limit: not a non-negative integer"),
    };
    let max = state.cfg.logs.max_query_lines;
    if limit > max {
        return text_error(
            StatusCode::BAD_REQUEST,
            format!("max entries limit per query exceeded, limit > max_entries_limit ({limit} > {max})"),
        );
    }
    let backward = match get(&p, "direction").map(str::to_ascii_lowercase).as_deref() {
        None | Some("backward") => true,
        Some("forward") => false,
        Some(other) => {
            return text_error(
                StatusCode::BAD_REQUEST,
                format!("invalid direction {other:?}: use forward or backward"),
            );
        }
    };
    let req = QueryRequest { tenant: tenant(&headers, &state), query: parsed, start_ns, end_ns, limit, backward };
    state.telemetry.queries.get_or_create(&crate::telemetry::EndpointLabels { endpoint: "loki_query_range" }).inc();
    let worker = state.clone();
    let result = match tokio::task::spawn_blocking(move || worker.logs.query(&req)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return text_error(StatusCode::INTERNAL_SERVER_ERROR, format!("query failed: {e}")),
        Err(_) => return text_error(StatusCode::INTERNAL_SERVER_ERROR, "query worker panicked"),
    };
    let returned: usize = result.streams.iter().map(|s| s.entries.len()).sum();
    let streams: Vec<Value> = result
        .streams
        .iter()
        .map(|s| {
            let labels: Map<String, Value> =
                s.labels.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
            let values: Vec<Value> = s.entries.iter().map(|(ts, line)| json!([ts.to_string(), line])).collect();
            json!({ "stream": labels, "values": values })
        })
        .collect();
    let secs = result.exec_time.as_secs_f64();
    let per_sec = |n: u64| if secs > 0.0 { (n as f64 / secs) as u64 } else { 0 };
    let body = json!({
        "status": "success",
        "data": {
            "resultType": "streams",
            "result": streams,
            "stats": {
                "summary": {
                    "bytesProcessedPerSecond": per_sec(result.bytes_scanned),
                    "linesProcessedPerSecond": per_sec(result.lines_scanned),
                    "totalBytesProcessed": result.bytes_scanned,
                    "totalLinesProcessed": result.lines_scanned,
                    "execTime": secs,
                    "queueTime": 0,
                    "subqueries": 0,
                    "totalEntriesReturned": returned,
                    "splits": 0,
                    "shards": 0,
                }
            }
        }
    });
    axum::Json(body).into_response()
}
