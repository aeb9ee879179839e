//! Prometheus' read side: `/federate`, the HTTP API subset Grafana and `promtool query` use
//! (`/api/v1/query`, `series`, `labels`, `label/<name>/values`, `metadata`,
//! `status/buildinfo`), and the collector's own `/metrics`.
//!
//! Answers have Prometheus' exact shapes: `{"status":"success","data":...}`, or
//! `{"status":"error","errorType":"bad_data","error":"invalid parameter \"query\": ..."}` with
//! 400 (bad input) or 422 (a query over a limit). Parameters come from the query string and,
//! for POST, from a form-encoded body (which wins, as in Go's `ParseForm`).

use super::{AppState, tenant, text_error};
use crate::metrics::federate::{self, Format};
use crate::metrics::{Selected, Window};
use crate::promql::{self, EvalError, Value};
use crate::selector::{ParseError, Selector, parse_series_selector};
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use osprey_protocol::exposition::TEXT_CONTENT_TYPE;
use std::fmt::Write as _;

/// Query-string pairs, percent-decoded; repeated keys (`match[]`) kept in order.
pub fn query_pairs(raw: Option<&str>) -> Vec<(String, String)> {
    form_urlencoded::parse(raw.unwrap_or("").as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect()
}

/// Form body parameters first, then the query string's.
fn params(headers: &HeaderMap, raw: Option<&str>, body: &Bytes) -> Vec<(String, String)> {
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.to_ascii_lowercase().starts_with("application/x-www-form-urlencoded"));
    let mut p = if form && !body.is_empty() { query_pairs(std::str::from_utf8(body).ok()) } else { Vec::new() };
    p.extend(query_pairs(raw));
    p
}

fn first<'a>(p: &'a [(String, String)], key: &str) -> Option<&'a str> {
    p.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty())
}

/// Prometheus' error document.
fn api_error(status: StatusCode, error_type: &str, message: impl Into<String>) -> Response {
    // Written by hand to keep Prometheus' key order.
    let mut body = String::from(r#"{"status":"error","errorType":"#);
    json_string(&mut body, error_type);
    body.push_str(r#","error":"#);
    json_string(&mut body, &message.into());
    body.push('}');
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn bad_data(message: impl Into<String>) -> Response {
    api_error(StatusCode::BAD_REQUEST, "bad_data", message)
}

fn invalid_param(name: &str, problem: impl std::fmt::Display) -> Response {
    bad_data(format!("invalid parameter {name:?}: {problem}"))
}

/// `{"status":"success","data":<data>}` around already-encoded JSON.
fn api_success(data: &str) -> Response {
    let mut body = String::with_capacity(data.len() + 32);
    body.push_str(r#"{"status":"success","data":"#);
    body.push_str(data);
    body.push('}');
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn json_string(out: &mut String, s: &str) {
    // serde_json's escaping of a str cannot fail.
    out.push_str(&serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into()));
}

/// A label set as a JSON object, keys in the order given (sorted by name).
fn json_labels<'a>(out: &mut String, labels: impl IntoIterator<Item = (&'a str, &'a str)>) {
    out.push('{');
    for (i, (k, v)) in labels.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        json_string(out, k);
        out.push(':');
        json_string(out, v);
    }
    out.push('}');
}

/// Milliseconds as Prometheus writes them in JSON: seconds with three decimals when needed.
fn json_timestamp(out: &mut String, ms: i64) {
    let abs = ms.unsigned_abs();
    if ms < 0 {
        out.push('-');
    }
    let _ = write!(out, "{}", abs / 1000);
    let frac = abs % 1000;
    if frac != 0 {
        let _ = write!(out, ".{frac:03}");
    }
}

/// A sample value as Prometheus writes it in JSON: a string, Go's `'f'` formatting.
fn json_value(out: &mut String, v: f64) {
    out.push('"');
    if v.is_nan() {
        out.push_str("NaN");
    } else if v == f64::INFINITY {
        out.push_str("+Inf");
    } else if v == f64::NEG_INFINITY {
        out.push_str("-Inf");
    } else {
        let _ = write!(out, "{v}");
    }
    out.push('"');
}

/// Parses `match[]` values into selectors (Prometheus' error wording and positions).
/// An answer that ends a handler early (boxed: a `Response` is large).
type Refusal = Box<Response>;

fn matchers(p: &[(String, String)]) -> Result<Vec<Selector>, Refusal> {
    p.iter()
        .filter(|(k, _)| k == "match[]")
        .map(|(_, v)| parse_series_selector(v).map_err(|e| Box::new(invalid_param("match[]", selector_error(v, &e)))))
        .collect()
}

fn selector_error(input: &str, e: &ParseError) -> String {
    let before: String = input.chars().take(e.column.saturating_sub(1)).collect();
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    format!("{line}:{column}: parse error: {}", e.message)
}

fn time_param(p: &[(String, String)], name: &str) -> Result<Option<i64>, Refusal> {
    match first(p, name) {
        None => Ok(None),
        Some(v) => crate::time::parse_prometheus_time(v)
            .map(|ns| Some(ns.div_euclid(1_000_000)))
            .map_err(|e| Box::new(invalid_param(name, e))),
    }
}

/// The series window of `/series`, `/labels` and `/label/<n>/values`: series whose latest
/// sample is at or after `start`. (Only the latest sample is held, so a series that was alive
/// during `[start, end]` and has written since is still in range; `end` cannot narrow.)
fn series_window(p: &[(String, String)]) -> Result<Window, Refusal> {
    let start = time_param(p, "start")?;
    let end = time_param(p, "end")?;
    if let (Some(s), Some(e)) = (start, end)
        && e < s
    {
        return Err(Box::new(invalid_param("end", "end timestamp must not be before start time")));
    }
    Ok(Window { min_ms: start.unwrap_or(i64::MIN), max_ms: i64::MAX })
}

fn count_query(state: &AppState, endpoint: &'static str) {
    state.telemetry.queries.get_or_create(&crate::telemetry::EndpointLabels { endpoint }).inc();
}

/// Runs CPU-bound work off the async workers, holding one of the query slots the Loki API
/// uses too (`logs.max_concurrent_queries`: waits up to `server.request_timeout`, then 503), so
/// Prometheus queries and `/federate` are bounded together with log queries.
async fn blocking<T: Send + 'static>(
    state: &AppState,
    endpoint: &'static str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Response> {
    let wait = state.cfg().server.request_timeout.get();
    let Ok(Ok(permit)) = tokio::time::timeout(wait, state.query_slots.clone().acquire_owned()).await else {
        state.telemetry.reject(endpoint, "too_many_queries");
        return Err(api_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!(
                "too many queries running: {} at once (logs.max_concurrent_queries); retry later",
                state.cfg().logs.max_concurrent_queries
            ),
        ));
    };
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        f()
    })
    .await
    .map_err(|e| api_error(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("query task failed: {e}")))
}

/// `/api/v1/query`: an instant query of the PromQL subset.
pub async fn query(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Response {
    count_query(&state, "query");
    let p = params(&headers, raw.as_deref(), &body);
    let time_ms = match time_param(&p, "time") {
        Ok(t) => t.unwrap_or_else(|| crate::time::now_ns().div_euclid(1_000_000)),
        Err(r) => return *r,
    };
    if let Some(t) = first(&p, "timeout")
        && crate::time::parse_duration(t).is_err()
    {
        return invalid_param("timeout", format!("cannot parse {t:?} to a valid duration"));
    }
    let expr = match promql::parse(first(&p, "query").unwrap_or("")) {
        Ok(e) => e,
        Err(e) => return invalid_param("query", e),
    };
    let tenant = tenant(&headers, &state);
    let lookback_ms = state.metrics.config().query_lookback.get().as_millis() as i64;
    let st = state.clone();
    let result = blocking(&state, "query", move || {
        let cx = promql::Context { store: &st.metrics, tenant: &tenant, time_ms, lookback_ms };
        promql::eval(&expr, &cx)
    })
    .await;
    let value = match result {
        Err(r) => return r,
        Ok(Err(e @ (EvalError::TooManySeries(_) | EvalError::DuplicateLabelset))) => {
            return api_error(StatusCode::UNPROCESSABLE_ENTITY, "execution", e.to_string());
        }
        Ok(Ok(v)) => v,
    };
    let mut data = String::new();
    match value {
        Value::Scalar(v) => {
            data.push_str(r#"{"resultType":"scalar","result":["#);
            json_timestamp(&mut data, time_ms);
            data.push(',');
            json_value(&mut data, v);
            data.push_str("]}");
        }
        Value::Vector(samples) => {
            data.push_str(r#"{"resultType":"vector","result":["#);
            for (i, s) in samples.iter().enumerate() {
                if i > 0 {
                    data.push(',');
                }
                data.push_str(r#"{"metric":"#);
                json_labels(&mut data, s.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())));
                data.push_str(r#","value":["#);
                json_timestamp(&mut data, time_ms);
                data.push(',');
                json_value(&mut data, s.value);
                data.push_str("]}");
            }
            data.push_str("]}");
        }
    }
    api_success(&data)
}

/// `/api/v1/query_range`: refused with an explanation (the store holds latest samples only).
pub async fn query_range(State(state): State<AppState>) -> Response {
    count_query(&state, "query_range");
    bad_data(
        "range queries are not supported by the collector: it keeps only the latest sample of each series; run range queries against the long-term store it forwards to, or use an instant query",
    )
}

/// `/api/v1/series`.
pub async fn series(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Response {
    count_query(&state, "series");
    let p = params(&headers, raw.as_deref(), &body);
    if !p.iter().any(|(k, _)| k == "match[]") {
        return bad_data("no match[] parameter provided");
    }
    let window = match series_window(&p) {
        Ok(w) => w,
        Err(r) => return *r,
    };
    let selectors = match matchers(&p) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let tenant = tenant(&headers, &state);
    let st = state.clone();
    let picked = match blocking(&state, "series", move || st.metrics.select(&tenant, &selectors, window)).await {
        Err(r) => return r,
        Ok(Err(e)) => return api_error(StatusCode::UNPROCESSABLE_ENTITY, "execution", e.to_string()),
        Ok(Ok(v)) => v,
    };
    let mut sets: Vec<Selected> = picked;
    sets.sort_unstable_by(|a, b| a.labels.cmp(&b.labels));
    let mut data = String::from("[");
    for (i, s) in sets.iter().enumerate() {
        if i > 0 {
            data.push(',');
        }
        json_labels(&mut data, s.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    }
    data.push(']');
    api_success(&data)
}

fn json_string_array(items: &[String]) -> String {
    let mut out = String::from("[");
    for (i, s) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        json_string(&mut out, s);
    }
    out.push(']');
    out
}

/// `/api/v1/labels`.
pub async fn labels(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Response {
    count_query(&state, "labels");
    let p = params(&headers, raw.as_deref(), &body);
    let (window, selectors) = match (series_window(&p), matchers(&p)) {
        (Ok(w), Ok(s)) => (w, s),
        (Err(r), _) | (_, Err(r)) => return *r,
    };
    let tenant = tenant(&headers, &state);
    let st = state.clone();
    match blocking(&state, "labels", move || st.metrics.label_names(&tenant, &selectors, window)).await {
        Ok(names) => api_success(&json_string_array(&names)),
        Err(r) => r,
    }
}

/// `/api/v1/label/<name>/values`.
pub async fn label_values(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    count_query(&state, "label_values");
    if !osprey_protocol::loki_labels::is_valid_label_name(&name) {
        return bad_data(format!("invalid label name: {name:?}"));
    }
    let p = params(&headers, raw.as_deref(), &Bytes::new());
    let (window, selectors) = match (series_window(&p), matchers(&p)) {
        (Ok(w), Ok(s)) => (w, s),
        (Err(r), _) | (_, Err(r)) => return *r,
    };
    let tenant = tenant(&headers, &state);
    let st = state.clone();
    match blocking(&state, "label_values", move || st.metrics.label_values(&tenant, &name, &selectors, window)).await {
        Ok(values) => api_success(&json_string_array(&values)),
        Err(r) => r,
    }
}

/// `/api/v1/metadata`: `{"<family>":[{"type":..,"help":..,"unit":..}]}`.
pub async fn metadata(State(state): State<AppState>, headers: HeaderMap, RawQuery(raw): RawQuery) -> Response {
    count_query(&state, "metadata");
    let p = params(&headers, raw.as_deref(), &Bytes::new());
    let limit = match first(&p, "limit").map(str::parse::<i64>).transpose() {
        Ok(l) => l.unwrap_or(-1),
        Err(_) => return bad_data("limit must be a number"),
    };
    let metric = first(&p, "metric");
    let tenant = tenant(&headers, &state);
    let mut data = serde_json::Map::new();
    for (family, kind, help, unit) in state.metrics.metadata(&tenant) {
        if metric.is_some_and(|m| m != family) {
            continue;
        }
        if limit >= 0 && data.len() as i64 >= limit {
            break;
        }
        data.insert(family, serde_json::json!([{"type": kind, "help": help, "unit": unit}]));
    }
    api_success(&serde_json::Value::Object(data).to_string())
}

/// `/api/v1/status/buildinfo`. `version` is the Prometheus version whose HTTP API and answers
/// this collector follows (Grafana reads it to decide which API features it may use); Osprey's
/// own version is in `revision` and `osprey_version`.
pub async fn buildinfo() -> Response {
    let data = concat!(
        r#"{"version":"#,
        "\"2.42.0\"",
        r#","revision":"osprey-"#,
        env!("CARGO_PKG_VERSION"),
        r#"","branch":"","buildUser":"","buildDate":"","goVersion":"","application":"osprey","osprey_version":""#,
        env!("CARGO_PKG_VERSION"),
        r#""}"#
    );
    api_success(data)
}

/// True when `Accept-Encoding` allows gzip (a `q=0` refuses it).
fn accepts_gzip(headers: &HeaderMap) -> bool {
    let Some(v) = headers.get(header::ACCEPT_ENCODING).and_then(|v| v.to_str().ok()) else { return false };
    v.split(',').any(|part| {
        let mut params = part.split(';');
        let coding = params.next().unwrap_or("").trim();
        let refused = params.any(|p| {
            p.split_once('=').is_some_and(|(k, q)| k.trim() == "q" && q.trim().parse::<f32>().is_ok_and(|q| q <= 0.0))
        });
        (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !refused
    })
}

/// `/federate?match[]=...`: the latest sample of every matching series (all without
/// `match[]`), text 0.0.4 or OpenMetrics by `Accept`, gzip when accepted.
pub async fn federate(State(state): State<AppState>, headers: HeaderMap, RawQuery(raw): RawQuery) -> Response {
    count_query(&state, "federate");
    let mut selectors = Vec::new();
    for (k, v) in query_pairs(raw.as_deref()) {
        if k == "match[]" {
            match parse_series_selector(&v) {
                Ok(s) => selectors.push(s),
                Err(e) => {
                    return text_error(
                        StatusCode::BAD_REQUEST,
                        format!("invalid match[] {v:?}: {}", selector_error(&v, &e)),
                    );
                }
            }
        }
    }
    let format = Format::from_accept(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or(""));
    let gzip = accepts_gzip(&headers);
    let tenant = tenant(&headers, &state);
    let st = state.clone();
    let rendered = blocking(&state, "federate", move || {
        let chunks = federate::render(&st.metrics, &tenant, &selectors, format);
        if !gzip {
            return chunks;
        }
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        for c in &chunks {
            // Writing into a Vec cannot fail.
            let _ = std::io::Write::write_all(&mut enc, c);
        }
        vec![Bytes::from(enc.finish().unwrap_or_default())]
    })
    .await;
    let chunks = match rendered {
        Ok(c) => c,
        Err(r) => return r,
    };
    let stream = futures_util::stream::iter(chunks.into_iter().map(Ok::<_, std::convert::Infallible>));
    let mut resp = Response::new(Body::from_stream(stream));
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(format.content_type()));
    if gzip {
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    h.insert(header::VARY, HeaderValue::from_static("Accept, Accept-Encoding"));
    resp
}

pub async fn self_metrics(State(state): State<AppState>) -> Response {
    state.telemetry.resident_memory_bytes.set(crate::telemetry::resident_memory_bytes());
    let mut body = String::new();
    if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut body, &state.registry) {
        return text_error(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot encode metrics: {e}"));
    }
    ([(header::CONTENT_TYPE, TEXT_CONTENT_TYPE)], body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_repeated_match() {
        let p = query_pairs(Some("match[]=up%7Bjob%3D%22a%22%7D&match%5B%5D=x+y&z"));
        assert_eq!(p[0], ("match[]".into(), "up{job=\"a\"}".into()));
        assert_eq!(p[1], ("match[]".into(), "x y".into()));
        assert_eq!(p[2], ("z".into(), "".into()));
    }

    #[test]
    fn json_numbers_like_prometheus() {
        let mut s = String::new();
        json_timestamp(&mut s, 1_700_000_000_120);
        s.push(' ');
        json_timestamp(&mut s, 1_700_000_000_000);
        s.push(' ');
        json_timestamp(&mut s, -1_500);
        s.push(' ');
        for v in [1.0, 0.1, 1e21, -0.0, f64::NAN, f64::INFINITY] {
            json_value(&mut s, v);
        }
        assert_eq!(s, r#"1700000000.120 1700000000 -1.500 "1""0.1""1000000000000000000000""-0""NaN""+Inf""#);
    }

    #[test]
    fn gzip_negotiation() {
        let mut h = HeaderMap::new();
        assert!(!accepts_gzip(&h));
        h.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("gzip, deflate"));
        assert!(accepts_gzip(&h));
        h.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("gzip;q=0, identity"));
        assert!(!accepts_gzip(&h));
    }
}
