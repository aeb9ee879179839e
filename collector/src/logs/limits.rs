//! Push validation with Loki's limits, messages and reasons.
//!
//! Checks, in Loki's order: labels parse and are not empty; label count, name and value lengths
//! (`pkg/validation/validate.go` messages); line size; then, per stream, the active-stream limit
//! (429) and the out-of-order window ("entry too far behind", 400). Everything valid is kept;
//! every refusal adds Loki's message to the outcome and is counted in
//! `osprey_logs_discarded_lines_total{reason}` with Loki's reason name.

use super::index::TenantIndex;
use super::metrics::LogMetrics;
use super::store::PushOutcome;
use osprey_config::collector::Logs;
use osprey_protocol::logproto::PushRequest;
use osprey_protocol::loki_labels;

/// The accepted entries of one stream of a push.
pub struct Validated {
    /// Index into `PushRequest::streams`.
    pub stream_index: usize,
    pub stream_id: u32,
    pub canonical: String,
    /// Indexes into that stream's entries.
    pub entries: Vec<usize>,
}

fn line_bytes(req: &PushRequest, s: usize) -> u64 {
    req.streams[s].entries.iter().map(|e| e.line.len() as u64).sum()
}

/// The limits one push is checked against: `[logs]`, and the tenant's active-stream bound
/// (`max_streams_per_tenant` or its `[limits.tenants.<name>] max_streams` override).
pub struct Limits<'a> {
    pub cfg: &'a Logs,
    pub max_streams: usize,
}

/// Validates `req` against the limits and `index` (creating streams and advancing each
/// stream's newest timestamp), recording refusals in `out`.
pub fn validate(
    limits: &Limits<'_>,
    tenant: &str,
    index: &mut TenantIndex,
    req: &PushRequest,
    now: u64,
    metrics: &LogMetrics,
    out: &mut PushOutcome,
) -> Vec<Validated> {
    let cfg = limits.cfg;
    let mut valid = Vec::with_capacity(req.streams.len());
    let window = i64::try_from(cfg.out_of_order_window.get().as_nanos()).unwrap_or(i64::MAX);
    for (si, stream) in req.streams.iter().enumerate() {
        let n = stream.entries.len() as u64;
        let refuse = |out: &mut PushOutcome, reason: &'static str, msg: String| {
            metrics.discard(reason, n, line_bytes(req, si));
            out.refused.push(msg);
        };
        let labels = match loki_labels::parse(&stream.labels) {
            Ok(l) if l.is_empty() => {
                refuse(out, "missing_labels", "error at least one label pair is required per stream".into());
                continue;
            }
            Ok(l) => l,
            Err(e) => {
                refuse(out, "invalid_labels", format!("Error parsing labels '{}' with error: {}", stream.labels, e));
                continue;
            }
        };
        let canonical = loki_labels::format(&labels);
        if labels.len() > cfg.max_labels_per_stream {
            refuse(
                out,
                "max_label_names_per_series",
                format!(
                    "entry for stream '{}' has {} label names; limit {}",
                    canonical,
                    labels.len(),
                    cfg.max_labels_per_stream
                ),
            );
            continue;
        }
        if let Some((k, _)) = labels.iter().find(|(k, _)| k.len() > cfg.max_label_name_bytes) {
            refuse(out, "label_name_too_long", format!("stream '{canonical}' has label name too long: '{k}'"));
            continue;
        }
        if let Some((_, v)) = labels.iter().find(|(_, v)| v.len() > cfg.max_label_value_bytes) {
            refuse(out, "label_value_too_long", format!("stream '{canonical}' has label value too long: '{v}'"));
            continue;
        }
        // Line size, per entry.
        let mut kept: Vec<usize> = Vec::with_capacity(stream.entries.len());
        for (i, e) in stream.entries.iter().enumerate() {
            if e.line.len() > cfg.max_line_bytes {
                metrics.discard("line_too_long", 1, e.line.len() as u64);
                out.refused.push(format!(
                    "Max entry size '{}' bytes exceeded for stream '{}' while adding an entry with length '{}' bytes",
                    cfg.max_line_bytes,
                    canonical,
                    e.line.len()
                ));
            } else {
                kept.push(i);
            }
        }
        if kept.is_empty() {
            continue;
        }
        // Active-stream limit (Loki's ingester answers 429 for it).
        let id = match index.get(&canonical) {
            Some(id) => id,
            None if index.active >= limits.max_streams => {
                refuse_stream_limit(metrics, req, si, &kept, tenant, &canonical, out);
                continue;
            }
            None => index.intern(&canonical, &labels),
        };
        if !index.streams[id as usize].active {
            if index.active >= limits.max_streams {
                refuse_stream_limit(metrics, req, si, &kept, tenant, &canonical, out);
                continue;
            }
            index.streams[id as usize].active = true;
            index.active += 1;
        }
        let info = &mut index.streams[id as usize];
        info.last_push = now;
        // Out-of-order window against the stream's newest line.
        let mut accepted = Vec::with_capacity(kept.len());
        let mut behind: Vec<String> = Vec::new();
        let mut behind_bytes = 0u64;
        for i in kept {
            let e = &stream.entries[i];
            let ts = e.timestamp.map_or(0, |t| t.to_unix_nanos());
            let cutoff = info.max_ts.saturating_sub(window);
            if info.max_ts != i64::MIN && ts < cutoff {
                behind_bytes += e.line.len() as u64;
                behind.push(format!(
                    "entry with timestamp {} ignored, reason: 'entry too far behind, entry timestamp is: {}, oldest acceptable timestamp is: {}',",
                    go_time(ts),
                    rfc3339(ts),
                    rfc3339(cutoff)
                ));
                continue;
            }
            info.max_ts = info.max_ts.max(ts);
            accepted.push(i);
        }
        if !behind.is_empty() {
            metrics.discard("too_far_behind", behind.len() as u64, behind_bytes);
            let total = stream.entries.len();
            let count = behind.len();
            let mut msg = behind.into_iter().take(10).collect::<Vec<_>>().join("\n");
            msg.push_str(&format!("\nuser '{tenant}', total ignored: {count} out of {total} for stream: {canonical}"));
            out.refused.push(msg);
        }
        if !accepted.is_empty() {
            valid.push(Validated { stream_index: si, stream_id: id, canonical, entries: accepted });
        }
    }
    valid
}

fn refuse_stream_limit(
    metrics: &LogMetrics,
    req: &PushRequest,
    si: usize,
    kept: &[usize],
    tenant: &str,
    canonical: &str,
    out: &mut PushOutcome,
) {
    let bytes = kept.iter().map(|&i| req.streams[si].entries[i].line.len() as u64).sum();
    metrics.discard("stream_limit", kept.len() as u64, bytes);
    out.rate_limited = true;
    out.refused.push(format!(
        "Maximum active stream limit exceeded when trying to create stream {canonical}, reduce the number of active streams (reduce labels or reduce label values), or contact your Loki administrator to see if the limit can be increased, user: '{tenant}'"
    ));
}

/// Go's `time.Format(time.RFC3339)` in UTC.
fn rfc3339(ns: i64) -> String {
    match jiff::Timestamp::from_nanosecond(i128::from(ns)) {
        Ok(t) => t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        Err(_) => ns.to_string(),
    }
}

/// Go's `time.Time.String()` in UTC (`2006-01-02 15:04:05.999999999 +0000 UTC`).
fn go_time(ns: i64) -> String {
    match jiff::Timestamp::from_nanosecond(i128::from(ns)) {
        Ok(t) => {
            let frac = ns.rem_euclid(1_000_000_000);
            let base = t.strftime("%Y-%m-%d %H:%M:%S").to_string();
            if frac == 0 {
                format!("{base} +0000 UTC")
            } else {
                let f = format!("{frac:09}");
                format!("{base}.{} +0000 UTC", f.trim_end_matches('0'))
            }
        }
        Err(_) => ns.to_string(),
    }
}

/// Marks streams idle for longer than `stream_idle_timeout` inactive (they stop counting
/// against `max_streams_per_tenant`).
pub fn expire_idle(cfg: &Logs, index: &mut TenantIndex, now: u64) {
    let idle = cfg.stream_idle_timeout.get().as_secs();
    let mut freed = 0;
    for s in &mut index.streams {
        if s.active && now.saturating_sub(s.last_push) > idle {
            s.active = false;
            freed += 1;
        }
    }
    index.active -= freed;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_formats() {
        assert_eq!(rfc3339(1_700_000_000_500_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(go_time(1_700_000_000_500_000_000), "2023-11-14 22:13:20.5 +0000 UTC");
        assert_eq!(go_time(1_700_000_000_000_000_000), "2023-11-14 22:13:20 +0000 UTC");
    }
}
