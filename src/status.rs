//! `osprey status`: a live view, in the terminal, of what an agent and a collector are doing:
//! rates, lag, queues and errors, computed from their `/metrics` (and their `/health`), like
//! `vector top`. It reads only what every operator's Prometheus could read too, so it works
//! against any version of either role and needs nothing but the listen addresses.
//!
//! Each refresh scrapes every target; a rate is the counter's increase between the last two
//! scrapes divided by the time between them (a counter that went down restarted: its new value
//! is the increase). `--once` scrapes twice, `--interval` apart, prints one view and exits: 0
//! when every target answered, 1 otherwise (scripts and tests use it).

use anyhow::Context;
use bytes::Bytes;
use clap::Args;
use http_body_util::{BodyExt, Full};
use osprey_protocol::exposition::{Entry, Format, Parser};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Args)]
pub struct StatusArgs {
    /// Base URL of an agent's listener (repeatable). With neither --agent nor --collector, the
    /// default listeners of both roles on this host.
    #[arg(long)]
    agent: Vec<String>,
    /// Base URL of a collector (repeatable).
    #[arg(long)]
    collector: Vec<String>,
    /// Time between refreshes (and, with --once, between the two scrapes rates come from).
    #[arg(long, default_value = "2s")]
    interval: Interval,
    /// Print one view and exit (status 1 when a target did not answer).
    #[arg(long)]
    once: bool,
    /// https, mutual TLS and a bearer token (the `metrics` scope on a collector with `[auth]`).
    #[command(flatten)]
    connect: crate::client::ConnectArgs,
}

#[derive(Clone, Copy)]
struct Interval(Duration);

impl std::str::FromStr for Interval {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let d = s.parse::<osprey_config::Duration>()?.get();
        if d < Duration::from_millis(100) {
            return Err(format!("{s:?} is too short; use at least 100ms"));
        }
        Ok(Interval(d))
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Agent,
    Collector,
}

struct Target {
    role: Role,
    url: String,
    last: Option<Scrape>,
    current: Result<Scrape, String>,
}

/// Samples by name: (labels, value).
type Samples = BTreeMap<String, Vec<(Vec<(String, String)>, f64)>>;

struct Scrape {
    at: Instant,
    samples: Samples,
    /// `/health`'s status and the messages of its checks that are not ok.
    health: Option<(String, Vec<String>)>,
}

pub async fn run(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let mut targets: Vec<Target> = Vec::new();
    let (agents, collectors) = if args.agent.is_empty() && args.collector.is_empty() {
        (vec!["http://127.0.0.1:9101".to_string()], vec!["http://127.0.0.1:3100".to_string()])
    } else {
        (args.agent.clone(), args.collector.clone())
    };
    for (role, urls) in [(Role::Agent, agents), (Role::Collector, collectors)] {
        for url in urls {
            let url = url.trim_end_matches('/').to_string();
            targets.push(Target { role, url, last: None, current: Err("not scraped yet".into()) });
        }
    }
    let client = Http { client: args.connect.client()?, authorization: args.connect.authorization()? };
    let interval = args.interval.0;
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let mut first = true;
    loop {
        for t in &mut targets {
            let previous = std::mem::replace(&mut t.current, Err(String::new()));
            if let Ok(p) = previous {
                t.last = Some(p);
            }
            t.current = scrape(&client, &t.url).await;
        }
        if args.once && first {
            first = false;
            tokio::time::sleep(interval).await;
            continue;
        }
        let view = render(&targets, interval);
        let mut out = std::io::stdout().lock();
        if terminal && !args.once {
            // Clear and redraw in place.
            write!(out, "\x1b[2J\x1b[H")?;
        }
        out.write_all(view.as_bytes())?;
        out.flush()?;
        drop(out);
        if args.once {
            let all_up = targets.iter().all(|t| t.current.is_ok());
            return Ok(if all_up { ExitCode::SUCCESS } else { ExitCode::FAILURE });
        }
        tokio::time::sleep(interval).await;
    }
}

/// The client and the `Authorization` header every request carries.
struct Http {
    client: crate::client::HttpsClient,
    authorization: Option<String>,
}

async fn get(http: &Http, url: &str) -> anyhow::Result<(u16, Vec<u8>)> {
    let mut req = http::Request::get(url);
    if let Some(auth) = &http.authorization {
        req = req.header(http::header::AUTHORIZATION, auth);
    }
    let req = req.body(Full::new(Bytes::new()))?;
    let resp = tokio::time::timeout(Duration::from_secs(5), http.client.request(req))
        .await
        .map_err(|_| anyhow::anyhow!("no answer within 5s"))??;
    let status = resp.status().as_u16();
    let body = tokio::time::timeout(Duration::from_secs(5), resp.into_body().collect())
        .await
        .map_err(|_| anyhow::anyhow!("the answer did not finish within 5s"))?
        .context("reading the answer")?
        .to_bytes();
    Ok((status, body.to_vec()))
}

async fn scrape(client: &Http, base: &str) -> Result<Scrape, String> {
    let url = format!("{base}/metrics");
    let (status, body) = get(client, &url).await.map_err(|e| format!("{url}: {e:#}"))?;
    if status != 200 {
        return Err(format!("{url} answered {status}"));
    }
    let at = Instant::now();
    let mut samples = Samples::new();
    for entry in Parser::new(&body, Format::Text) {
        match entry {
            Ok(Entry::Sample(s)) => {
                let labels = s.labels().map(|(k, v)| (k.to_string(), v.into_owned())).collect();
                samples.entry(s.name.to_string()).or_default().push((labels, s.value));
            }
            Ok(_) => {}
            Err(e) => return Err(format!("{url}: {e}")),
        }
    }
    // /health is newer than /metrics in some versions: without it the view just omits it.
    let health = match get(client, &format!("{base}/health")).await {
        Ok((_, body)) => serde_json::from_slice::<serde_json::Value>(&body).ok().map(|v| {
            let status = v["status"].as_str().unwrap_or("?").to_string();
            let problems = v["checks"]
                .as_array()
                .map(|c| {
                    c.iter()
                        .filter(|c| c["status"].as_str() != Some("ok"))
                        .map(|c| {
                            format!("{}: {}", c["name"].as_str().unwrap_or("?"), c["message"].as_str().unwrap_or(""))
                        })
                        .collect()
                })
                .unwrap_or_default();
            (status, problems)
        }),
        Err(_) => None,
    };
    Ok(Scrape { at, samples, health })
}

/// Reads values out of one target's last two scrapes.
struct View<'a> {
    now: &'a Scrape,
    before: Option<&'a Scrape>,
}

impl View<'_> {
    fn matching<'s>(s: &'s Scrape, name: &str, labels: &[(&str, &str)]) -> impl Iterator<Item = f64> + 's {
        let want: Vec<(String, String)> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        s.samples
            .get(name)
            .into_iter()
            .flatten()
            .filter(move |(l, _)| want.iter().all(|w| l.contains(w)))
            .map(|(_, v)| *v)
    }

    /// Sum of the series of `name` with `labels`, if any exists.
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut it = Self::matching(self.now, name, labels).peekable();
        it.peek()?;
        Some(it.sum())
    }

    fn value(&self, name: &str) -> String {
        self.sum(name, &[]).map_or_else(|| "-".into(), number)
    }

    /// Per-second increase of the sum of `name` with `labels` between the two scrapes.
    fn rate(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let before = self.before?;
        // A family with no series yet (nothing retried) is a rate of 0.
        let now = self.sum(name, labels).unwrap_or(0.0);
        let then: f64 = Self::matching(before, name, labels).sum();
        let secs = self.now.at.duration_since(before.at).as_secs_f64();
        if secs <= 0.0 {
            return None;
        }
        let increase = if now >= then { now - then } else { now };
        Some(increase / secs)
    }

    fn rate_text(&self, name: &str, labels: &[(&str, &str)]) -> String {
        self.rate(name, labels).map_or_else(|| "-".into(), |r| format!("{}/s", number(r)))
    }

    fn bytes_rate(&self, name: &str) -> String {
        self.rate(name, &[]).map_or_else(|| "-".into(), |r| format!("{}/s", bytes(r)))
    }

    /// Every `*_queue_bytes` with its `*_queue_max_bytes`: "name{labels} used of max (pct)".
    fn queues(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (name, series) in &self.now.samples {
            let Some(prefix) = name.strip_suffix("_queue_bytes") else { continue };
            for (labels, used) in series {
                let max = self
                    .now
                    .samples
                    .get(&format!("{prefix}_queue_max_bytes"))
                    .and_then(|m| m.iter().find(|(l, _)| l == labels))
                    .map(|(_, v)| *v);
                let what: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                let id = if what.is_empty() { prefix.to_string() } else { what.join(",") };
                out.push(match max {
                    Some(m) if m > 0.0 => format!("{id} {} of {} ({:.0}%)", bytes(*used), bytes(m), 100.0 * used / m),
                    _ => format!("{id} {}", bytes(*used)),
                });
            }
        }
        out
    }
}

fn number(v: f64) -> String {
    if (v.fract() == 0.0 && v.abs() < 1e15) || v.abs() >= 100.0 { format!("{v:.0}") } else { format!("{v:.2}") }
}

fn bytes(v: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = v;
    let mut unit = 0;
    while v.abs() >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{v:.0} B") } else { format!("{v:.1} {}", UNITS[unit]) }
}

fn render(targets: &[Target], interval: Duration) -> String {
    let mut out = String::new();
    let now = jiff::Timestamp::now();
    let _ =
        writeln!(out, "osprey status  {}  (rates over {})", now.strftime("%Y-%m-%d %H:%M:%S UTC"), humantime(interval));
    for t in targets {
        let role = if t.role == Role::Agent { "agent" } else { "collector" };
        let _ = writeln!(out);
        match &t.current {
            Err(e) => {
                let _ = writeln!(out, "{role} {}  UNREACHABLE: {e}", t.url);
            }
            Ok(s) => {
                let v = View { now: s, before: t.last.as_ref() };
                let health = match &s.health {
                    Some((status, problems)) if problems.is_empty() => status.clone(),
                    Some((status, problems)) => format!("{status}: {}", problems.join("; ")),
                    None => "-".into(),
                };
                let _ = writeln!(out, "{role} {}  health {health}", t.url);
                match t.role {
                    Role::Agent => agent_rows(&mut out, &v),
                    Role::Collector => collector_rows(&mut out, &v),
                }
                let queues = v.queues();
                if !queues.is_empty() {
                    let _ = writeln!(out, "  {:<12} {}", "queues", queues.join("   "));
                }
                let _ = writeln!(
                    out,
                    "  {:<12} reloads ok {}  failed {}  last reload {}",
                    "config",
                    v.sum("osprey_config_reloads_total", &[("result", "success")]).map_or("-".into(), number),
                    v.sum("osprey_config_reloads_total", &[("result", "failure")]).map_or("-".into(), number),
                    match v.sum("osprey_config_last_reload_successful", &[]) {
                        Some(1.0) => "ok",
                        Some(_) => "FAILED",
                        None => "-",
                    }
                );
            }
        }
    }
    out
}

fn humantime(d: Duration) -> String {
    osprey_config::Duration(d).to_string()
}

fn agent_rows(out: &mut String, v: &View<'_>) {
    let _ = writeln!(
        out,
        "  {:<12} lines {}  bytes {}  files open {}  lag {}",
        "tail",
        v.rate_text("osprey_agent_lines_read_total", &[]),
        v.bytes_rate("osprey_agent_bytes_read_total"),
        v.value("osprey_agent_files_open"),
        v.sum("osprey_agent_file_lag_bytes", &[]).map_or_else(|| "0 B".into(), bytes),
    );
    for sink in ["loki", "remote_write"] {
        let l = [("sink", sink)];
        let _ = writeln!(
            out,
            "  {:<12} sent {}  retried {}  dropped {}",
            sink,
            v.rate_text("osprey_agent_batches_sent_total", &l),
            v.rate_text("osprey_agent_batches_retried_total", &l),
            v.sum("osprey_agent_batches_dropped_total", &l).map_or("0".into(), number),
        );
    }
    let _ = writeln!(
        out,
        "  {:<12} targets {}  scrapes {}  failures {}  host collections {}",
        "metrics",
        v.sum("osprey_agent_scrape_targets", &[]).map_or("0".into(), number),
        v.rate_text("osprey_agent_scrapes_total", &[]),
        v.rate_text("osprey_agent_scrape_failures_total", &[]),
        v.rate_text("osprey_agent_host_metrics_collections_total", &[]),
    );
    let _ = writeln!(
        out,
        "  {:<12} lines refused {}  truncated {}  checkpoint write failures {}  queue drops {}",
        "errors",
        v.value("osprey_agent_lines_refused_total"),
        v.value("osprey_agent_lines_truncated_total"),
        v.value("osprey_agent_checkpoint_write_failures_total"),
        v.sum("osprey_agent_queue_records_dropped_total", &[]).map_or("0".into(), number),
    );
}

fn collector_rows(out: &mut String, v: &View<'_>) {
    let _ = writeln!(
        out,
        "  {:<12} lines {}  bytes {}  samples {}",
        "ingest",
        v.rate_text("osprey_ingested_lines_total", &[]),
        v.bytes_rate("osprey_ingested_line_bytes_total"),
        v.rate_text("osprey_ingested_samples_total", &[]),
    );
    let _ = writeln!(
        out,
        "  {:<12} fsyncs {}  written {}  head {}  parts {} ({})",
        "storage",
        v.rate_text("osprey_wal_fsyncs_total", &[]),
        v.bytes_rate("osprey_wal_written_bytes_total"),
        v.sum("osprey_logs_head_bytes", &[]).map_or("-".into(), bytes),
        v.value("osprey_logs_parts"),
        v.sum("osprey_logs_part_bytes", &[]).map_or("-".into(), bytes),
    );
    let _ = writeln!(
        out,
        "  {:<12} series {}  queries {}",
        "serving",
        v.value("osprey_series_active"),
        v.rate_text("osprey_queries_total", &[]),
    );
    // Refusals by reason, busiest first.
    let mut reasons: BTreeMap<String, f64> = BTreeMap::new();
    for (labels, value) in v.now.samples.get("osprey_rejected_requests_total").into_iter().flatten() {
        let reason = labels.iter().find(|(k, _)| k == "reason").map_or("?", |(_, r)| r.as_str());
        *reasons.entry(reason.to_string()).or_default() += value;
    }
    let mut reasons: Vec<(String, f64)> = reasons.into_iter().filter(|(_, n)| *n > 0.0).collect();
    reasons.sort_by(|a, b| b.1.total_cmp(&a.1));
    let listed: Vec<String> = reasons.iter().take(4).map(|(r, n)| format!("{r} {}", number(*n))).collect();
    let _ = writeln!(
        out,
        "  {:<12} rejected {}{}  WAL corruptions {}",
        "errors",
        v.rate_text("osprey_rejected_requests_total", &[]),
        if listed.is_empty() { String::new() } else { format!(" ({})", listed.join(", ")) },
        v.value("osprey_wal_corruptions_total"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrape(text: &str, at: Instant) -> Scrape {
        let mut samples = Samples::new();
        for e in Parser::new(text.as_bytes(), Format::Text) {
            if let Ok(Entry::Sample(s)) = e {
                let labels = s.labels().map(|(k, v)| (k.to_string(), v.into_owned())).collect();
                samples.entry(s.name.to_string()).or_default().push((labels, s.value));
            }
        }
        Scrape { at, samples, health: None }
    }

    #[test]
    fn rates_come_from_two_scrapes_and_survive_counter_resets() {
        let t0 = Instant::now();
        let a = scrape("x_total{s=\"a\"} 10\nx_total{s=\"b\"} 5\n", t0);
        let b = scrape("x_total{s=\"a\"} 30\nx_total{s=\"b\"} 5\n", t0 + Duration::from_secs(2));
        let v = View { now: &b, before: Some(&a) };
        assert_eq!(v.rate("x_total", &[]), Some(10.0));
        assert_eq!(v.rate("x_total", &[("s", "b")]), Some(0.0));
        let reset = scrape("x_total{s=\"a\"} 4\nx_total{s=\"b\"} 0\n", t0 + Duration::from_secs(4));
        let v = View { now: &reset, before: Some(&b) };
        assert_eq!(v.rate("x_total", &[]), Some(2.0), "restarted counters count from zero");
        assert_eq!(View { now: &a, before: None }.rate("x_total", &[]), None);
    }

    #[test]
    fn queues_pair_their_bound() {
        let s = scrape(
            "osprey_agent_queue_bytes{queue=\"remote_write\"} 512\nosprey_agent_queue_max_bytes{queue=\"remote_write\"} 1024\n",
            Instant::now(),
        );
        let v = View { now: &s, before: None };
        assert_eq!(v.queues(), ["queue=remote_write 512 B of 1.0 KiB (50%)"]);
    }
}
