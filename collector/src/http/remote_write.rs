//! The remote_write receiver: content negotiation, limits, decoding, and the answer.
//!
//! Order of checks, each refusal counted in `osprey_rejected_requests_total{endpoint=
//! "remote_write", reason}`: body size (413, also enforced by the router from the headers),
//! content type and encoding (415), snappy framing and decompressed size (400), protobuf
//! framing (400, nothing stored). Then the store checks each series (400 for invalid ones, 429
//! for capacity, valid series kept either way).

use super::{AppState, tenant};
use crate::metrics::IngestOutcome;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use osprey_protocol::remote_write::{self, Version, WriteView};
use osprey_protocol::snappy::SnappyError;
use osprey_protocol::writev2;

/// Bodies larger than this are decoded on the blocking pool instead of an async worker.
const INLINE_BODY_BYTES: usize = 256 << 10;

/// The answer to one write, and what the counters need to know about it.
pub struct Answer {
    pub status: StatusCode,
    pub message: String,
    pub version_label: &'static str,
    /// 2.0 only: samples, histograms and exemplars written.
    pub written: Option<(u64, u64, u64)>,
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        let mut resp = if self.status == StatusCode::NO_CONTENT {
            StatusCode::NO_CONTENT.into_response()
        } else {
            super::text_error(self.status, self.message)
        };
        if let Some((samples, histograms, exemplars)) = self.written {
            let h = resp.headers_mut();
            h.insert(writev2::SAMPLES_WRITTEN_HEADER, HeaderValue::from(samples));
            h.insert(writev2::HISTOGRAMS_WRITTEN_HEADER, HeaderValue::from(histograms));
            h.insert(writev2::EXEMPLARS_WRITTEN_HEADER, HeaderValue::from(exemplars));
        }
        resp
    }
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> &str {
    headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

pub async fn handle(state: &AppState, headers: &HeaderMap, body: Result<Bytes, BytesRejection>) -> Answer {
    let refuse = |status: StatusCode, reason: &'static str, version: Option<Version>, message: String| {
        state.telemetry.reject("remote_write", reason);
        Answer {
            status,
            message,
            version_label: version.map_or("unknown", label),
            written: (version == Some(Version::V2)).then_some((0, 0, 0)),
        }
    };
    let version = match Version::from_content_type(header_str(headers, header::CONTENT_TYPE)) {
        Ok(v) => v,
        Err(e) => return refuse(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", None, e),
    };
    let encoding = header_str(headers, header::CONTENT_ENCODING);
    if !encoding.is_empty() && !encoding.eq_ignore_ascii_case("snappy") {
        return refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_encoding",
            Some(version),
            format!(
                "unsupported Content-Encoding {encoding:?}: remote_write bodies are snappy-compressed (block format)"
            ),
        );
    }
    let body = match body {
        Ok(b) => b,
        Err(e) => {
            let limit = state.cfg().server.max_body_bytes;
            return refuse(
                e.status(),
                "body_too_large",
                Some(version),
                format!(
                    "cannot read the request body ({e}); bodies are limited to {limit} bytes (server.max_body_bytes)"
                ),
            );
        }
    };
    let tenant = tenant(headers, state);
    let (answer, forward) = if body.len() <= INLINE_BODY_BYTES {
        decode_and_store(state, &tenant, version, &body)
    } else {
        let st = state.clone();
        let t = tenant.clone();
        match tokio::task::spawn_blocking(move || decode_and_store(&st, &t, version, &body)).await {
            Ok(done) => done,
            Err(e) => {
                return refuse(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    Some(version),
                    format!("write task failed: {e}"),
                );
            }
        }
    };
    // What was accepted is on disk in every forwarding queue before anything is acknowledged.
    if let Some(forward) = forward {
        let st = state.clone();
        let pushed = tokio::task::spawn_blocking(move || st.forward.push(&tenant, &forward)).await;
        let problem = match pushed {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(e) => Some(format!("forwarding task failed: {e}")),
        };
        if let Some(problem) = problem {
            tracing::error!(%problem, "cannot queue a request for forwarding; answering 503 so the sender retries");
            return refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "forward_queue_error",
                Some(version),
                format!("the collector could not queue this request for forwarding ({problem}); retry later"),
            );
        }
    }
    answer
}

fn label(v: Version) -> &'static str {
    match v {
        Version::V1 => "1.0",
        Version::V2 => "2.0",
    }
}

/// The answer, and the body to forward (snappy 1.0) when forwarding is on and something was
/// accepted.
fn decode_and_store(state: &AppState, tenant: &str, version: Version, body: &[u8]) -> (Answer, Option<Vec<u8>>) {
    DECOMPRESSED.with_borrow_mut(|raw| {
        let answer = decode_raw(state, tenant, version, body, raw);
        // Keep a buffer of ordinary size for the next request; give back a huge one.
        if raw.capacity() > KEEP_BUFFER_BYTES {
            *raw = Vec::new();
        }
        answer
    })
}

/// Decompressed bodies up to this size keep their buffer for the next request on the thread.
const KEEP_BUFFER_BYTES: usize = 8 << 20;

thread_local! {
    static DECOMPRESSED: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn decode_raw(
    state: &AppState,
    tenant: &str,
    version: Version,
    body: &[u8],
    raw: &mut Vec<u8>,
) -> (Answer, Option<Vec<u8>>) {
    let limit = state.cfg().server.max_decompressed_bytes;
    let answer = |status: StatusCode, message: String, samples: u64| Answer {
        status,
        message,
        version_label: label(version),
        written: (version == Version::V2).then_some((samples, 0, 0)),
    };
    let fail = |reason: &'static str, message: String| {
        state.telemetry.reject("remote_write", reason);
        (answer(StatusCode::BAD_REQUEST, message, 0), None)
    };
    match osprey_protocol::snappy::decompress_into(body, limit, raw) {
        Ok(()) => {}
        Err(e @ SnappyError::TooLarge { .. }) => {
            return fail("decompressed_too_large", format!("{e} (server.max_decompressed_bytes)"));
        }
        Err(e @ SnappyError::Empty) => return fail("empty_body", format!("empty remote_write body: {e}")),
        Err(e) => return fail("bad_snappy", e.to_string()),
    };
    let decoded = match version {
        Version::V1 => remote_write::decode_v1(raw),
        Version::V2 => remote_write::decode_v2(raw),
    };
    let view: WriteView<'_> = match decoded {
        Ok(v) => v,
        Err(e) => return fail("bad_body", e.to_string()),
    };
    let samples: u64 = view.series.iter().map(|s| u64::from(s.samples) + u64::from(s.histograms)).sum();
    if let Err(message) = state.limits.check_samples(tenant, samples) {
        state.telemetry.reject("remote_write", "rate_limited");
        return (answer(StatusCode::TOO_MANY_REQUESTS, message, 0), None);
    }
    let outcome = state.metrics.ingest(tenant, &view);
    let written = outcome.samples_written;
    let forward = forward_body(state, version, body, raw, &view, &outcome);
    if outcome.invalid_series > 0 {
        state.telemetry.reject("remote_write", "invalid_series");
        let mut message = IngestOutcome::message(&outcome.invalid, outcome.invalid_series);
        if outcome.over_limit_series > 0 {
            message.push('\n');
            message.push_str(&IngestOutcome::message(&outcome.over_limit, outcome.over_limit_series));
        }
        return (answer(StatusCode::BAD_REQUEST, message, written), forward);
    }
    if outcome.over_limit_series > 0 {
        state.telemetry.reject("remote_write", "over_limit");
        let message = IngestOutcome::message(&outcome.over_limit, outcome.over_limit_series);
        return (answer(StatusCode::TOO_MANY_REQUESTS, message, written), forward);
    }
    (answer(StatusCode::NO_CONTENT, String::new(), written), forward)
}

/// The 1.0 body to forward: the request as it came when it is 1.0 and nothing in it was
/// refused (the common case, no re-encoding), else the accepted series re-encoded.
/// Series refused by a capacity limit are forwarded: they are valid, the long-term store
/// may well have room for them.
fn forward_body(
    state: &AppState,
    version: Version,
    body: &[u8],
    raw: &[u8],
    view: &WriteView<'_>,
    outcome: &IngestOutcome,
) -> Option<Vec<u8>> {
    if state.forward.is_empty() || view.series.len() == outcome.invalid_index.len() && view.metadata.is_empty() {
        return None;
    }
    if version == Version::V1 && outcome.invalid_series == 0 {
        return Some(body.to_vec());
    }
    let keep = |i: usize| outcome.invalid_index.binary_search(&i).is_err();
    let v1 = remote_write::to_v1(raw, view, version, keep);
    Some(osprey_protocol::snappy::compress(&v1))
}
