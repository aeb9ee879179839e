#![no_main]
//! LogQL queries, as `query` parameters arrive: parse, and run what parses over a few lines
//! (and the input itself as a line), so parsers, label filters and templates are fuzzed too.
use libfuzzer_sys::fuzz_target;
use osprey_collector::logql::{self, Expr, pipeline::Evaluator};
use std::sync::Arc;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(Expr::Log(q)) = logql::parse(s) {
        let stream = Arc::new(vec![("job".to_string(), "a".to_string())]);
        let mut ev = Evaluator::default();
        for line in ["", "level=info status=200 msg=\"a b\"", r#"{"level":"warn","n":{"x":[1,{"y":2}]}}"#, s] {
            ev.process(&q, 1, line, &stream, &[("trace_id", "t")]);
        }
    }
});
