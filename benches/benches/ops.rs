//! What day-2 operations add to every request: reading the reloadable config (`Live::load`,
//! once per push, query or ingest) and the collector's startup front (`http::Front`, which
//! hands every request to the API router once the stores are open), against calling the API
//! router directly.

use axum::Router;
use axum::body::Body;
use axum::http::Request;
use axum::routing::get;
use criterion::{Criterion, criterion_group, criterion_main};
use osprey_collector::http::{Front, front_router};
use osprey_collector::live::Live;
use std::hint::black_box;
use tower::ServiceExt;

fn live(c: &mut Criterion) {
    let cfg = Live::new(osprey_config::CollectorConfig::default());
    c.bench_function("live_config_load", |b| b.iter(|| black_box(cfg.load().logs.max_line_bytes)));
}

fn dispatch(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let api = Router::new().route("/loki/api/v1/push", get(|| async { "ok" }));
    let front = Front::new();
    front.serve(api.clone());
    let fronted = front_router(front);
    let mut g = c.benchmark_group("request_dispatch");
    for (name, app) in [("api_router", api), ("through_front", fronted)] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let req = Request::get("/loki/api/v1/push").body(Body::empty()).expect("request");
                let resp = rt.block_on(app.clone().oneshot(req)).expect("infallible");
                black_box(resp.status())
            })
        });
    }
}

criterion_group!(benches, live, dispatch);
criterion_main!(benches);
