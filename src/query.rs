//! `osprey query`: LogQL from the command line against a collector (or any Loki).

use anyhow::Context;
use bytes::Bytes;
use clap::{Args, ValueEnum};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use std::io::Write;
use std::process::ExitCode;

#[derive(Args)]
pub struct QueryArgs {
    /// The LogQL query, e.g. '{filename=~".*syslog"} |= "error"'.
    query: String,
    /// Base URL of the collector.
    #[arg(long, default_value = "http://127.0.0.1:3100", env = "OSPREY_ADDR")]
    addr: String,
    /// How far back to look (e.g. 15m, 1h, 7d).
    #[arg(long, default_value = "1h")]
    since: String,
    /// Start of the range (RFC 3339 or Unix time); overrides --since.
    #[arg(long)]
    from: Option<String>,
    /// End of the range (RFC 3339 or Unix time); default now.
    #[arg(long)]
    to: Option<String>,
    /// Most lines to return.
    #[arg(long, default_value_t = 100)]
    limit: usize,
    /// Oldest first instead of newest first.
    #[arg(long)]
    forward: bool,
    /// Tenant (X-Scope-OrgID).
    #[arg(long, env = "OSPREY_ORG_ID")]
    org_id: Option<String>,
    #[arg(long, short, value_enum, default_value = "raw")]
    output: Output,
}

#[derive(Clone, Copy, ValueEnum)]
enum Output {
    /// The line text only.
    Raw,
    /// One JSON object per line: timestamp, labels, line.
    Jsonl,
}

pub async fn run(args: QueryArgs) -> anyhow::Result<ExitCode> {
    let mut params: Vec<(&str, String)> = vec![
        ("query", args.query.clone()),
        ("limit", args.limit.to_string()),
        ("direction", if args.forward { "forward" } else { "backward" }.into()),
    ];
    match &args.from {
        Some(f) => params.push(("start", f.clone())),
        None => params.push(("since", args.since.clone())),
    }
    if let Some(t) = &args.to {
        params.push(("end", t.clone()));
    }
    let qs = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params.iter().map(|(k, v)| (*k, v.as_str())))
        .finish();
    let url = format!("{}/loki/api/v1/query_range?{qs}", args.addr.trim_end_matches('/'));
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut req = http::Request::get(&url);
    if let Some(org) = &args.org_id {
        req = req.header("x-scope-orgid", org);
    }
    let req = req.body(Full::new(Bytes::new()))?;
    let resp = client.request(req).await.with_context(|| format!("cannot reach the collector at {}", args.addr))?;
    let status = resp.status();
    let body = resp.into_body().collect().await.context("reading the answer")?.to_bytes();
    if !status.is_success() {
        eprintln!("osprey query: the collector answered {status}: {}", String::from_utf8_lossy(&body).trim());
        return Ok(ExitCode::FAILURE);
    }
    let v: Value = serde_json::from_slice(&body).context("the collector's answer is not JSON")?;
    let mut rows: Vec<(i64, &serde_json::Map<String, Value>, &str)> = Vec::new();
    for stream in v["data"]["result"].as_array().into_iter().flatten() {
        let Some(labels) = stream["stream"].as_object() else { continue };
        for value in stream["values"].as_array().into_iter().flatten() {
            let ts = value[0].as_str().and_then(|s| s.parse().ok()).unwrap_or(0);
            rows.push((ts, labels, value[1].as_str().unwrap_or("")));
        }
    }
    if args.forward {
        rows.sort_by_key(|r| r.0);
    } else {
        rows.sort_by_key(|r| std::cmp::Reverse(r.0));
    }
    let mut out = std::io::stdout().lock();
    for (ts, labels, line) in rows {
        match args.output {
            Output::Raw => writeln!(out, "{line}")?,
            Output::Jsonl => {
                writeln!(out, "{}", serde_json::json!({"timestamp": ts.to_string(), "labels": labels, "line": line}))?
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
