//! `/federate` and the collector's own `/metrics`.

use super::{AppState, text_error};
use crate::selector::parse_series_selector;
use axum::extract::{RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use osprey_protocol::exposition::TEXT_CONTENT_TYPE;

/// Query-string pairs, percent-decoded; repeated keys (`match[]`) kept in order.
pub fn query_pairs(raw: Option<&str>) -> Vec<(String, String)> {
    form_urlencoded::parse(raw.unwrap_or("").as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect()
}

pub async fn federate(State(state): State<AppState>, RawQuery(raw): RawQuery) -> Response {
    let mut selectors = Vec::new();
    for (k, v) in query_pairs(raw.as_deref()) {
        if k == "match[]" {
            match parse_series_selector(&v) {
                Ok(s) => selectors.push(s),
                Err(e) => return text_error(StatusCode::BAD_REQUEST, format!("invalid match[] {v:?}: {e}")),
            }
        }
    }
    state.telemetry.queries.get_or_create(&crate::telemetry::EndpointLabels { endpoint: "federate" }).inc();
    let body = state.series.federate(&selectors);
    ([(header::CONTENT_TYPE, TEXT_CONTENT_TYPE)], body).into_response()
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
}
