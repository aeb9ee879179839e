//! Per-tenant limits (`[limits]`, `[limits.tenants.<name>]`): ingest rates for logs and samples,
//! streams, series and query concurrency. Over a limit a request gets 429 with the reason, the
//! refusal is counted, and other tenants are not affected.

mod harness;
mod security_support;

use harness::*;
use security_support::*;
use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

fn push(url: &str, tenant: &str, labels: &str, lines: &[&str]) -> Answer {
    http(url, "POST", "/loki/api/v1/push", &[JSON, ("X-Scope-OrgID", tenant)], &push_body(labels, lines)).unwrap()
}

fn write(url: &str, tenant: &str, series: &[&[(&str, &str)]]) -> Answer {
    let mut h = REMOTE_WRITE.to_vec();
    h.push(("X-Scope-OrgID", tenant));
    http(url, "POST", "/api/v1/write", &h, &write_body(series)).unwrap()
}

#[test]
fn each_tenant_gets_its_own_allowance() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let extra = r#"
[limits]
max_concurrent_queries = 1

[limits.tenants.slow]
log_bytes_per_second = 10
log_burst_bytes = 2000
samples_per_second = 1
sample_burst = 3

[limits.tenants.narrow]
max_streams = 2
max_series = 2
"#;
    let (_collector, url) = start_collector(dir, &collector_config(dir, extra));

    // Log bytes: 1500 fit the burst of 2000, the next 1500 do not (the bucket refills 10/s).
    let line = "x".repeat(1500);
    assert_eq!(push(&url, "slow", r#"{"job":"a"}"#, &[&line]).status, 204);
    let a = push(&url, "slow", r#"{"job":"a"}"#, &[&line]);
    assert_eq!(a.status, 429, "{a:?}");
    assert!(
        a.body.contains("Ingestion rate limit exceeded for user slow")
            && a.body.contains("limits.log_bytes_per_second"),
        "{a:?}"
    );
    // Another tenant has no such limit.
    for _ in 0..5 {
        assert_eq!(push(&url, "fast", r#"{"job":"a"}"#, &[&line]).status, 204);
    }

    // Samples: a burst of 3.
    assert_eq!(write(&url, "slow", &[&[("__name__", "m1")], &[("__name__", "m2")]]).status, 204);
    let a = write(&url, "slow", &[&[("__name__", "m3")], &[("__name__", "m4")]]);
    assert_eq!(a.status, 429, "{a:?}");
    assert!(a.body.contains("limits.samples_per_second"), "{a:?}");
    assert_eq!(write(&url, "fast", &[&[("__name__", "m3")], &[("__name__", "m4")]]).status, 204);

    // Streams and series: the tenant's override instead of the global per-tenant bound.
    assert_eq!(push(&url, "narrow", r#"{"job":"s1"}"#, &["l"]).status, 204);
    assert_eq!(push(&url, "narrow", r#"{"job":"s2"}"#, &["l"]).status, 204);
    let a = push(&url, "narrow", r#"{"job":"s3"}"#, &["l"]);
    assert_eq!(a.status, 429, "{a:?}");
    assert!(a.body.contains("Maximum active stream limit exceeded"), "{a:?}");
    assert_eq!(push(&url, "fast", r#"{"job":"s3"}"#, &["l"]).status, 204);
    let a = write(&url, "narrow", &[&[("__name__", "a")], &[("__name__", "b")], &[("__name__", "c")]]);
    assert_eq!(a.status, 429, "{a:?}");
    assert!(
        a.body.contains("holds its maximum of 2 series") && a.body.contains("limits.tenants.narrow.max_series"),
        "{a:?}"
    );

    // Query concurrency, one per tenant: a query whose body is still arriving holds the slot.
    // (If a probe happened to take the slot first, the held query itself got the 429: try again.)
    let host = host_port(&url);
    let (mut held, refused) = (0..20)
        .find_map(|_| {
            let mut held = TcpStream::connect(&host).unwrap();
            held.write_all(
                format!(
                    "POST /loki/api/v1/labels HTTP/1.1\r\nHost: {host}\r\nX-Scope-OrgID: fast\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 8\r\n\r\nsince"
                )
                .as_bytes(),
            )
            .unwrap();
            held.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
            for _ in 0..50 {
                let a = http(&url, "GET", "/loki/api/v1/labels", &[("X-Scope-OrgID", "fast")], b"").unwrap();
                if a.status == 429 {
                    return Some((held, a));
                }
                let mut b = [0u8; 1];
                if held.peek(&mut b).is_ok() {
                    return None; // the held query was answered (refused): start over
                }
            }
            None
        })
        .expect("a second query of the same tenant is refused while the first runs");
    assert!(
        refused.body.contains("too many concurrent queries for tenant \"fast\"")
            && refused.body.contains("limits.max_concurrent_queries"),
        "{refused:?}"
    );
    let other = http(&url, "GET", "/loki/api/v1/labels", &[("X-Scope-OrgID", "slow")], b"").unwrap();
    assert_eq!(other.status, 200, "another tenant is not affected: {other:?}");
    held.write_all(b"=1h").unwrap();
    held.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut r = std::io::BufReader::new(held);
    assert_eq!(read_answer(&mut r).unwrap().status, 200);
    let again = eventually(Duration::from_secs(10), || {
        let a = http(&url, "GET", "/loki/api/v1/labels", &[("X-Scope-OrgID", "fast")], b"").ok()?;
        (a.status == 200).then_some(())
    });
    assert!(again.is_some(), "the slot came back");

    let m = http(&url, "GET", "/metrics", &[], b"").unwrap().body;
    for (tenant, limit) in [("slow", "log_bytes_rate"), ("slow", "samples_rate"), ("fast", "query_concurrency")] {
        let series = format!(r#"osprey_tenant_limit_refusals_total{{tenant="{tenant}",limit="{limit}"}}"#);
        assert!(metric(&m, &series) >= 1.0, "{series} in\n{m}");
    }
    assert!(metric(&m, r#"osprey_logs_discarded_lines_total{reason="stream_limit"}"#) >= 1.0, "{m}");
}
