//! The collector's HTTP API: one router, Loki and Prometheus paths side by side (they do not
//! collide), so Grafana's Loki and Prometheus data sources can both point at the same URL.

mod ingest;
mod loki;
mod prom;
mod remote_write;

use crate::State;
use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use std::sync::Arc;
use std::time::Instant;

pub type AppState = Arc<State>;

pub fn router(state: AppState) -> Router {
    let body_limit = state.cfg().server.max_body_bytes;
    Router::new()
        .route("/loki/api/v1/push", post(ingest::loki_push))
        .route("/api/v1/write", post(ingest::remote_write))
        .route("/api/v1/push", post(ingest::remote_write))
        .route("/loki/api/v1/query_range", get(loki::query_range).post(loki::query_range))
        .route("/loki/api/v1/query", get(loki::query).post(loki::query))
        .route("/loki/api/v1/labels", get(loki::labels).post(loki::labels))
        .route("/loki/api/v1/label/{name}/values", get(loki::label_values).post(loki::label_values))
        .route("/loki/api/v1/series", get(loki::series).post(loki::series))
        .route("/loki/api/v1/index/stats", get(loki::index_stats).post(loki::index_stats))
        .route("/loki/api/v1/index/volume", get(loki::index_volume).post(loki::index_volume))
        .route("/loki/api/v1/index/volume_range", get(loki::index_volume_range).post(loki::index_volume_range))
        .route("/loki/api/v1/tail", get(loki::tail))
        .route("/loki/api/v1/status/buildinfo", get(loki::buildinfo))
        .route("/api/v1/query", get(prom::query).post(prom::query))
        .route("/api/v1/query_range", get(prom::query_range).post(prom::query_range))
        .route("/api/v1/series", get(prom::series).post(prom::series))
        .route("/api/v1/labels", get(prom::labels).post(prom::labels))
        .route("/api/v1/label/{name}/values", get(prom::label_values))
        .route("/api/v1/metadata", get(prom::metadata))
        .route("/api/v1/status/buildinfo", get(prom::buildinfo))
        .route("/federate", get(prom::federate))
        .route("/metrics", get(prom::self_metrics))
        .route("/ready", get(ready))
        .route("/health", get(health))
        .route("/-/reload", post(reload))
        .route("/-/log-level", get(log_level).post(set_log_level).put(set_log_level))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(state.clone(), refuse_oversized))
        .layer(middleware::from_fn_with_state(state.clone(), crate::auth::authorize))
        .layer(middleware::from_fn_with_state(state.clone(), deadline))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// Bounds each request by `server.request_timeout` as in force when it arrives (a reload
/// changes it for the next request).
async fn deadline(axum::extract::State(state): axum::extract::State<AppState>, req: Request, next: Next) -> Response {
    let timeout = state.cfg().server.request_timeout.get();
    let bound = osprey_server::listener::Deadline { timeout, key: "server.request_timeout" };
    let endpoint = req.extensions().get::<MatchedPath>().map(|p| endpoint_name(p.as_str())).unwrap_or("other");
    let resp = osprey_server::listener::bound(bound, req, next).await;
    if let Some(exceeded) = resp.extensions().get::<osprey_server::listener::DeadlineExceeded>() {
        state.telemetry.reject(endpoint, exceeded.reason());
    }
    resp
}

/// `/ready`: 200 `ready`, or 503 with the reasons (shutting down, WAL refusing writes).
async fn ready(axum::extract::State(state): axum::extract::State<AppState>) -> Response {
    let (code, body) = osprey_agent::ops::ready_answer(&crate::control::not_ready(&state));
    osprey_agent::ops::text(code, body)
}

/// `/health`: JSON checks; 503 only when a check is unhealthy.
async fn health(axum::extract::State(state): axum::extract::State<AppState>) -> Response {
    let report = crate::control::health(&state);
    osprey_agent::ops::json(report.http_status(), report.to_json())
}

/// `POST /-/reload`: re-reads the config file; 400 with the reason when it is refused.
async fn reload(axum::extract::State(state): axum::extract::State<AppState>) -> Response {
    let outcome = crate::control::reload(&state, "POST /-/reload").await;
    osprey_agent::ops::json(outcome.http_status(), outcome.to_json())
}

/// `GET /-/log-level`: the filter in force.
async fn log_level(axum::extract::State(state): axum::extract::State<AppState>) -> Response {
    let (code, body) = osprey_agent::ops::log_level_request(state.ops.hooks.log_control().as_ref(), None);
    osprey_agent::ops::text(code, body)
}

/// `POST|PUT /-/log-level` with directives (`info,osprey_collector::logs=debug`) as the body.
async fn set_log_level(axum::extract::State(state): axum::extract::State<AppState>, body: String) -> Response {
    let (code, body) = osprey_agent::ops::log_level_request(state.ops.hooks.log_control().as_ref(), Some(&body));
    osprey_agent::ops::text(code, body)
}

/// What the listener serves: during the start (WAL replay) only `/ready` (503 with the
/// progress), `/health` (200) and 503 "starting" for everything else; then the whole API.
/// Binding first lets probes and clients get an answer that says what is happening instead of a
/// refused connection, and keeps a long replay from failing a liveness probe.
#[derive(Clone)]
pub struct Front {
    app: Arc<std::sync::OnceLock<Router>>,
    pub progress: Arc<crate::progress::Progress>,
}

impl Front {
    pub fn new() -> Front {
        Front { app: Arc::default(), progress: Arc::default() }
    }

    /// From now on every request goes to `app`.
    pub fn serve(&self, app: Router) {
        let _ = self.app.set(app);
    }

    fn starting(&self) -> String {
        match self.progress.get() {
            Some((done, total)) => format!("replaying the WAL: {}", crate::progress::describe(done, total)),
            None => "opening the stores".to_string(),
        }
    }
}

impl Default for Front {
    fn default() -> Self {
        Front::new()
    }
}

pub fn front_router(front: Front) -> Router {
    Router::new().fallback(dispatch).with_state(front)
}

async fn dispatch(axum::extract::State(front): axum::extract::State<Front>, req: Request) -> Response {
    use tower::ServiceExt;
    if let Some(app) = front.app.get() {
        return match app.clone().oneshot(req).await {
            Ok(r) => r,
            Err(never) => match never {},
        };
    }
    let what = front.starting();
    match req.uri().path() {
        "/ready" => osprey_agent::ops::text(503, format!("not ready: starting: {what}\n")),
        "/health" => {
            let report = osprey_agent::ops::HealthReport::new(vec![osprey_agent::ops::Check::new(
                "startup",
                osprey_agent::ops::Status::Ok,
                format!("starting: {what}"),
            )]);
            osprey_agent::ops::json(report.http_status(), report.to_json())
        }
        _ => {
            let mut resp = text_error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the collector is starting ({what}); retry shortly"),
            );
            resp.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
            resp
        }
    }
}

/// Records per-endpoint latency.
async fn observe(axum::extract::State(state): axum::extract::State<AppState>, req: Request, next: Next) -> Response {
    let endpoint = req.extensions().get::<MatchedPath>().map(|p| endpoint_name(p.as_str())).unwrap_or("other");
    let started = Instant::now();
    let resp = next.run(req).await;
    state
        .telemetry
        .request_seconds
        .get_or_create(&crate::telemetry::EndpointLabels { endpoint })
        .observe(started.elapsed().as_secs_f64());
    resp
}

/// Refuses a body whose declared length is over `server.max_body_bytes` from the headers alone,
/// before reading any of it (a client that sent `Expect: 100-continue` never sends it). Bodies
/// without a declared length are cut at the same bound by `DefaultBodyLimit`.
async fn refuse_oversized(
    axum::extract::State(state): axum::extract::State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let limit = state.cfg().server.max_body_bytes;
    let declared =
        req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if let Some(len) = declared
        && len > limit as u64
    {
        state.telemetry.reject(endpoint_name(req.uri().path()), "body_too_large");
        let mut resp = text_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body of {len} bytes is over the limit of {limit} bytes (server.max_body_bytes)"),
        );
        resp.headers_mut().insert(header::CONNECTION, header::HeaderValue::from_static("close"));
        return resp;
    }
    next.run(req).await
}

/// Static names for the endpoints we route, so the label has bounded cardinality.
pub(crate) fn endpoint_name(path: &str) -> &'static str {
    match path {
        "/loki/api/v1/push" => "loki_push",
        "/api/v1/write" | "/api/v1/push" => "remote_write",
        "/loki/api/v1/query_range" => "loki_query_range",
        "/loki/api/v1/query" => "loki_query",
        "/loki/api/v1/labels" => "loki_labels",
        "/loki/api/v1/label/{name}/values" => "loki_label_values",
        "/loki/api/v1/series" => "loki_series",
        "/loki/api/v1/index/stats" => "loki_index_stats",
        "/loki/api/v1/index/volume" => "loki_index_volume",
        "/loki/api/v1/index/volume_range" => "loki_index_volume_range",
        "/loki/api/v1/tail" => "loki_tail",
        "/loki/api/v1/status/buildinfo" => "loki_buildinfo",
        "/federate" => "federate",
        "/api/v1/query" => "query",
        "/api/v1/query_range" => "query_range",
        "/api/v1/series" => "series",
        "/api/v1/labels" => "labels",
        "/api/v1/label/{name}/values" => "label_values",
        "/api/v1/metadata" => "metadata",
        "/api/v1/status/buildinfo" => "buildinfo",
        "/metrics" => "metrics",
        "/ready" => "ready",
        "/health" => "health",
        "/-/reload" => "reload",
        "/-/log-level" => "log_level",
        _ => "other",
    }
}

/// The tenant of a request: `X-Scope-OrgID`, or the configured default. Behind
/// [`crate::auth::authorize`] the header always holds the one tenant the caller may act for.
pub fn tenant(headers: &HeaderMap, state: &State) -> String {
    let cfg = state.cfg();
    headers
        .get("x-scope-orgid")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .unwrap_or(&cfg.logs.default_tenant)
        .to_string()
}

/// A plain-text error response, as Loki and the remote_write spec answer.
pub fn text_error(status: StatusCode, message: impl Into<String>) -> Response {
    let mut body = message.into();
    if !body.ends_with('\n') {
        body.push('\n');
    }
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use tower::ServiceExt;

    async fn call(app: &Router, path: &str) -> (StatusCode, Option<String>, String) {
        let resp = app.clone().oneshot(Request::get(path).body(Body::empty()).unwrap()).await.unwrap();
        let status = resp.status();
        let retry = resp.headers().get(header::RETRY_AFTER).map(|v| v.to_str().unwrap().to_string());
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
        (status, retry, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn while_the_wal_replays_ready_says_how_far_and_the_api_says_retry() {
        let front = Front::new();
        let app = front_router(front.clone());
        let (status, _, body) = call(&app, "/ready").await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, "not ready: starting: opening the stores\n")
        );
        front.progress.begin(200 << 20);
        front.progress.set(50 << 20);
        let (status, _, body) = call(&app, "/ready").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body, "not ready: starting: replaying the WAL: 25% (50.0 MiB of 200.0 MiB)\n");
        // Alive: a liveness probe must not kill a long replay.
        let (status, _, body) = call(&app, "/health").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("\"status\": \"ok\"") && body.contains("replaying the WAL: 25%"), "{body}");
        let (status, retry, body) = call(&app, "/loki/api/v1/query?query=x").await;
        assert_eq!((status, retry.as_deref()), (StatusCode::SERVICE_UNAVAILABLE, Some("5")));
        assert!(body.contains("the collector is starting (replaying the WAL: 25%"), "{body}");
        // Once open, everything goes to the API.
        front.progress.finish();
        front.serve(Router::new().route("/ready", get(|| async { "ready\n" })));
        assert_eq!(call(&app, "/ready").await.0, StatusCode::OK);
        assert_eq!(call(&app, "/nothing").await.0, StatusCode::NOT_FOUND);
    }
}
