//! `osprey query`: LogQL from the command line against a collector (or any Loki).
//!
//! Log queries go to `/loki/api/v1/query_range` and print lines (oldest or newest first);
//! metric queries print their series. `--tail` follows new lines through the `/tail`
//! websocket, as logcli does.

use anyhow::Context;
use bytes::Bytes;
use clap::{Args, ValueEnum};
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full};
use serde_json::{Map, Value};
use std::io::Write;
use std::process::ExitCode;

#[derive(Args)]
pub struct QueryArgs {
    /// The LogQL query, e.g. '{filename=~".*syslog"} |= "error"' or
    /// 'sum by (level) (count_over_time({job="app"} | logfmt [5m]))'.
    query: String,
    /// Base URL of the collector.
    #[arg(long, default_value = "http://127.0.0.1:3100", env = "OSPREY_ADDR")]
    addr: String,
    /// How far back to look (e.g. 15m, 1h, 7d).
    #[arg(long, default_value = "1h")]
    since: String,
    /// Start of the range (RFC 3339, or Unix seconds or nanoseconds); overrides --since.
    #[arg(long)]
    from: Option<String>,
    /// End of the range (RFC 3339, or Unix seconds or nanoseconds); default now.
    #[arg(long)]
    to: Option<String>,
    /// Most lines to return (log queries).
    #[arg(long, default_value_t = 100)]
    limit: usize,
    /// Oldest first instead of newest first.
    #[arg(long)]
    forward: bool,
    /// Resolution of metric queries (e.g. 30s, 5m); default range/250.
    #[arg(long)]
    step: Option<String>,
    /// Follow: print new lines as they arrive (log queries; Ctrl-C to stop).
    #[arg(long, short = 'f')]
    tail: bool,
    /// Tenant (X-Scope-OrgID).
    #[arg(long, env = "OSPREY_ORG_ID")]
    org_id: Option<String>,
    #[command(flatten)]
    connect: crate::client::ConnectArgs,
    #[arg(long, short, value_enum, default_value = "raw")]
    output: Output,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    /// The line text only (metric queries: one `labels time value` row per point).
    Raw,
    /// One JSON object per line: timestamp, labels, line (metric queries: one per series).
    Jsonl,
    /// Time, the labels that differ between streams, and the line; common labels first.
    Table,
}

fn query_string(params: &[(&str, String)]) -> String {
    form_urlencoded::Serializer::new(String::new()).extend_pairs(params.iter().map(|(k, v)| (*k, v.as_str()))).finish()
}

pub async fn run(args: QueryArgs) -> anyhow::Result<ExitCode> {
    if args.tail {
        return tail(&args).await;
    }
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
    if let Some(s) = &args.step {
        params.push(("step", s.clone()));
    }
    let url = format!("{}/loki/api/v1/query_range?{}", args.addr.trim_end_matches('/'), query_string(&params));
    let client = args.connect.client()?;
    let mut req = http::Request::get(&url);
    if let Some(org) = &args.org_id {
        req = req.header("x-scope-orgid", org);
    }
    if let Some(auth) = args.connect.authorization()? {
        req = req.header(http::header::AUTHORIZATION, auth);
    }
    let req = req.body(Full::new(Bytes::new()))?;
    let resp = client.request(req).await.map_err(|e| {
        // hyper-util's error hides the cause (a refused certificate, a reset) one level down.
        let cause = std::error::Error::source(&e).map(|c| format!(": {c}")).unwrap_or_default();
        anyhow::anyhow!("cannot reach the collector at {}: {e}{cause}", args.addr)
    })?;
    let status = resp.status();
    let body = resp.into_body().collect().await.context("reading the answer")?.to_bytes();
    if !status.is_success() {
        eprintln!("osprey query: the collector answered {status}: {}", String::from_utf8_lossy(&body).trim());
        return Ok(ExitCode::FAILURE);
    }
    let v: Value = serde_json::from_slice(&body).context("the collector's answer is not JSON")?;
    let mut out = std::io::stdout().lock();
    match v["data"]["resultType"].as_str() {
        Some("streams") => print_streams(&mut out, &v["data"]["result"], args.forward, args.output)?,
        Some("matrix") => print_matrix(&mut out, &v["data"]["result"], args.output)?,
        other => anyhow::bail!("unexpected resultType {other:?} in the collector's answer"),
    }
    Ok(ExitCode::SUCCESS)
}

/// `(ts, labels, line)` of every entry in a `streams` result.
fn entries(result: &Value) -> Vec<(i64, &Map<String, Value>, &str)> {
    let mut rows = Vec::new();
    for stream in result.as_array().into_iter().flatten() {
        let Some(labels) = stream["stream"].as_object() else { continue };
        for value in stream["values"].as_array().into_iter().flatten() {
            let ts = value[0].as_str().and_then(|s| s.parse().ok()).unwrap_or(0);
            rows.push((ts, labels, value[1].as_str().unwrap_or("")));
        }
    }
    rows
}

fn format_labels<'a>(labels: impl Iterator<Item = (&'a String, &'a Value)>) -> String {
    let parts: Vec<String> =
        labels.map(|(k, v)| format!("{k}={}", Value::String(v.as_str().unwrap_or("").into()))).collect();
    format!("{{{}}}", parts.join(", "))
}

fn rfc3339(ts_ns: i64) -> String {
    jiff::Timestamp::from_nanosecond(ts_ns as i128).map_or_else(|_| ts_ns.to_string(), |t| format!("{t:.9}"))
}

fn print_streams(out: &mut impl Write, result: &Value, forward: bool, output: Output) -> anyhow::Result<()> {
    let mut rows = entries(result);
    if forward {
        rows.sort_by_key(|r| r.0);
    } else {
        rows.sort_by_key(|r| std::cmp::Reverse(r.0));
    }
    print_rows(out, &rows, output, true)
}

fn print_rows(
    out: &mut impl Write,
    rows: &[(i64, &Map<String, Value>, &str)],
    output: Output,
    header: bool,
) -> anyhow::Result<()> {
    // Labels every stream shares, shown once in a table.
    let common: Vec<(&String, &Value)> = match rows.first() {
        Some((_, first, _)) => {
            first.iter().filter(|(k, v)| rows.iter().all(|(_, l, _)| l.get(*k) == Some(*v))).collect()
        }
        None => Vec::new(),
    };
    if output == Output::Table && header && !common.is_empty() {
        writeln!(out, "Common labels: {}", format_labels(common.iter().copied()))?;
    }
    for (ts, labels, line) in rows {
        match output {
            Output::Raw => writeln!(out, "{line}")?,
            Output::Jsonl => {
                writeln!(out, "{}", serde_json::json!({"timestamp": ts.to_string(), "labels": labels, "line": line}))?
            }
            Output::Table => {
                let varying = labels.iter().filter(|(k, _)| !common.iter().any(|(c, _)| c == k));
                writeln!(out, "{} {} {line}", rfc3339(*ts), format_labels(varying))?
            }
        }
    }
    Ok(())
}

fn print_matrix(out: &mut impl Write, result: &Value, output: Output) -> anyhow::Result<()> {
    for series in result.as_array().into_iter().flatten() {
        let empty = Map::new();
        let metric = series["metric"].as_object().unwrap_or(&empty);
        let labels = format_labels(metric.iter());
        if output == Output::Jsonl {
            writeln!(out, "{series}")?;
            continue;
        }
        if output == Output::Table {
            writeln!(out, "{labels}")?;
        }
        for point in series["values"].as_array().into_iter().flatten() {
            let secs = point[0].as_f64().unwrap_or(0.0);
            let time = rfc3339((secs * 1e9).round() as i64);
            let value = point[1].as_str().unwrap_or("");
            match output {
                Output::Table => writeln!(out, "  {time}  {value}")?,
                _ => writeln!(out, "{labels} {time} {value}")?,
            }
        }
    }
    Ok(())
}

/// Follows the query through `/loki/api/v1/tail` until Ctrl-C or the collector closes it.
async fn tail(args: &QueryArgs) -> anyhow::Result<ExitCode> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let (scheme, rest) = match (args.addr.strip_prefix("http://"), args.addr.strip_prefix("https://")) {
        (Some(rest), _) => ("ws", rest),
        (_, Some(rest)) => ("wss", rest),
        _ => anyhow::bail!("--tail needs an http:// or https:// collector address (got {})", args.addr),
    };
    let mut params: Vec<(&str, String)> = vec![("query", args.query.clone()), ("limit", args.limit.to_string())];
    if let Some(f) = &args.from {
        params.push(("start", f.clone()));
    } else {
        let since = osprey_collector::time::parse_duration(&args.since).map_err(|e| anyhow::anyhow!("--since: {e}"))?;
        let start = osprey_collector::time::now_ns() - i64::try_from(since.as_nanos()).unwrap_or(i64::MAX);
        params.push(("start", start.to_string()));
    }
    let url = format!("{scheme}://{}/loki/api/v1/tail?{}", rest.trim_end_matches('/'), query_string(&params));
    let mut req = url.as_str().into_client_request().context("building the tail request")?;
    if let Some(org) = &args.org_id {
        req.headers_mut().insert("x-scope-orgid", org.parse().context("--org-id is not a valid header value")?);
    }
    if let Some(auth) = args.connect.authorization()? {
        req.headers_mut()
            .insert(http::header::AUTHORIZATION, auth.parse().context("the token is not a valid header value")?);
    }
    // wss: our own TLS stream (rustls with --ca-file), then the websocket handshake over it.
    let connector = tokio_tungstenite::Connector::Rustls(std::sync::Arc::new(args.connect.tls_config()?));
    let connected = match scheme {
        "wss" => tokio_tungstenite::connect_async_tls_with_config(req, None, false, Some(connector)).await,
        _ => tokio_tungstenite::connect_async(req).await,
    };
    let (mut ws, _) = match connected {
        Ok(ok) => ok,
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            let body = resp.body().as_deref().map(String::from_utf8_lossy).unwrap_or_default();
            eprintln!("osprey query: the collector answered {}: {}", resp.status(), body.trim());
            return Ok(ExitCode::FAILURE);
        }
        Err(e) => return Err(e).with_context(|| format!("cannot open the tail at {}", args.addr)),
    };
    let mut first = true;
    loop {
        let msg = tokio::select! {
            m = ws.next() => m,
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
        };
        let Some(msg) = msg else { return Ok(ExitCode::SUCCESS) };
        let msg = msg.context("tail connection failed")?;
        if msg.is_close() {
            return Ok(ExitCode::SUCCESS);
        }
        let Ok(text) = msg.into_text() else { continue };
        let v: Value = serde_json::from_str(&text).context("a tail frame is not JSON")?;
        let mut rows = entries(&v["streams"]);
        rows.sort_by_key(|r| r.0);
        let mut out = std::io::stdout().lock();
        print_rows(&mut out, &rows, args.output, first)?;
        out.flush()?;
        first = false;
    }
}
