//! `/loki/api/v1/push` and `/api/v1/write` (remote_write; the work is in
//! [`super::remote_write`]).

use super::{AppState, tenant, text_error};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use osprey_protocol::snappy::SnappyError;
use osprey_protocol::{gzip, logproto, push_json};

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> &str {
    headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// Loki push: protobuf + snappy, or JSON (optionally gzip). 204 when stored; 400 with Loki's
/// messages for invalid streams or entries (the valid ones are stored first).
pub async fn loki_push(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let cfg = state.cfg();
    let limit = cfg.server.max_decompressed_bytes;
    let body = match body {
        Ok(b) => b,
        Err(e) => {
            state.telemetry.reject("loki_push", "body_too_large");
            return text_error(
                e.status(),
                format!(
                    "cannot read the request body ({e}); bodies are limited to {} bytes (server.max_body_bytes)",
                    cfg.server.max_body_bytes
                ),
            );
        }
    };
    if body.is_empty() {
        state.telemetry.reject("loki_push", "empty_body");
        return text_error(StatusCode::BAD_REQUEST, "empty push body");
    }
    let content_type = header_str(&headers, header::CONTENT_TYPE).to_ascii_lowercase();
    let encoding = header_str(&headers, header::CONTENT_ENCODING).to_ascii_lowercase();
    let body = if encoding == "gzip" {
        match gzip::decompress(&body, limit) {
            Ok(b) => Bytes::from(b),
            Err(e @ gzip::GzipError::TooLarge { .. }) => {
                state.telemetry.reject("loki_push", "decompressed_too_large");
                return text_error(StatusCode::BAD_REQUEST, format!("{e} (server.max_decompressed_bytes)"));
            }
            Err(e) => {
                state.telemetry.reject("loki_push", "bad_gzip");
                return text_error(StatusCode::BAD_REQUEST, e.to_string());
            }
        }
    } else {
        body
    };
    let req = if content_type.starts_with("application/json") {
        push_json::decode(&body).map_err(|e| ("bad_body", format!("invalid JSON push body: {e}")))
    } else {
        logproto::decode_push_request(&body, limit).map_err(|e| match e {
            logproto::DecodeError::Snappy(SnappyError::TooLarge { .. }) => {
                ("decompressed_too_large", format!("{e} (server.max_decompressed_bytes)"))
            }
            e => ("bad_body", e.to_string()),
        })
    };
    let req = match req {
        Ok(r) => r,
        Err((reason, msg)) => {
            state.telemetry.reject("loki_push", reason);
            return text_error(StatusCode::BAD_REQUEST, msg);
        }
    };
    let tenant = tenant(&headers, &state);
    let lines: u64 = req.streams.iter().map(|s| s.entries.len() as u64).sum();
    let bytes: u64 = req.streams.iter().flat_map(|s| &s.entries).map(|e| e.line.len() as u64).sum();
    if let Err(msg) = state.limits.check_log_bytes(&tenant, bytes, lines) {
        state.telemetry.reject("loki_push", "rate_limited");
        return text_error(StatusCode::TOO_MANY_REQUESTS, msg);
    }
    match state.logs.push(&tenant, req).await {
        Ok(outcome) if outcome.refused.is_empty() => StatusCode::NO_CONTENT.into_response(),
        Ok(outcome) => {
            let shown: Vec<&str> = outcome.refused.iter().take(10).map(String::as_str).collect();
            let more = outcome.refused.len().saturating_sub(shown.len());
            let mut msg = shown.join("\n");
            if more > 0 {
                msg.push_str(&format!("\n(and {more} more errors)"));
            }
            // Loki answers 429 (retry later) for the stream limit, 400 for bad data.
            let status = if outcome.rate_limited { StatusCode::TOO_MANY_REQUESTS } else { StatusCode::BAD_REQUEST };
            text_error(status, msg)
        }
        Err(e) => {
            state.telemetry.reject("loki_push", "storage_error");
            tracing::error!(error = %e, "push could not be stored");
            text_error(StatusCode::SERVICE_UNAVAILABLE, format!("push could not be stored: {e}"))
        }
    }
}

/// Prometheus remote_write, 1.0 (`prometheus.WriteRequest`) or 2.0
/// (`io.prometheus.write.v2.Request`) as the `Content-Type` says. 204 when stored; 400 with a
/// message for invalid data (the valid series of the request are kept); 429 when a capacity
/// limit refused new series; 415 for a content type or encoding we do not speak. 2.0 answers
/// carry the `X-Prometheus-Remote-Write-*-Written` headers.
pub async fn remote_write(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let outcome = super::remote_write::handle(&state, &headers, body).await;
    state
        .metrics
        .stats
        .write_requests
        .get_or_create(&crate::metrics::telemetry::WriteLabels {
            version: outcome.version_label,
            status: outcome.status.as_u16(),
        })
        .inc();
    outcome.into_response()
}
