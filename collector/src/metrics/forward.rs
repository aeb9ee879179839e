//! Forwarding: every accepted sample also goes, by remote_write 1.0, to the long-term stores
//! configured in `[[metrics.forward]]` (Mimir, Thanos Receive, a VictoriaMetrics cluster,
//! Prometheus). This is how a fleet that outgrows one collector keeps every sample.
//!
//! One implementation with the agent: each target is the agent's [`DiskQueue`] (durable,
//! bounded, CRC-framed) drained by the agent's [`HttpSender`] (retries 429, 5xx, 401, 403 and network
//! errors with backoff; drops and counts what the receiver refuses as bad). The receiver side
//! pushes a request's accepted series into every target's queue, fsynced, *before* it answers
//! 2xx; so a `kill -9` of the collector loses no acknowledged sample: it is sent after the
//! restart. Delivery is at least once (what was delivered in the last second before a crash,
//! whose acknowledgement was not yet persisted, is sent again).
//!
//! A queue record is `tenant length (u16 LE) | tenant | snappy-compressed prometheus.WriteRequest`;
//! the tenant becomes the `X-Scope-OrgID` of its request, unless the target sets its own.

use osprey_agent::queue::{DiskQueue, QueueError, QueueMetrics, QueueOptions};
use osprey_agent::sink::http::{Delivery, HttpSender, SenderOptions};
use osprey_config::collector::Forward;
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use tokio::sync::watch;

struct Target {
    name: &'static str,
    cfg: Forward,
    token: Option<String>,
    queue: Arc<DiskQueue>,
}

/// Every forwarding target, with its queue.
pub struct Forwarders {
    targets: Vec<Target>,
    telemetry: osprey_agent::telemetry::Telemetry,
    default_tenant: String,
}

/// Frames a queue record.
pub fn record(tenant: &str, body: &[u8]) -> Vec<u8> {
    let t = &tenant.as_bytes()[..tenant.len().min(u16::MAX as usize)];
    let mut r = Vec::with_capacity(2 + t.len() + body.len());
    r.extend_from_slice(&(t.len() as u16).to_le_bytes());
    r.extend_from_slice(t);
    r.extend_from_slice(body);
    r
}

/// Splits a queue record into (tenant, body); `None` when it is too short to be one.
pub fn split(record: &[u8]) -> Option<(&str, &[u8])> {
    let len = usize::from(u16::from_le_bytes([*record.first()?, *record.get(1)?]));
    let tenant = std::str::from_utf8(record.get(2..2 + len)?).ok()?;
    Some((tenant, &record[2 + len..]))
}

impl Forwarders {
    /// Opens (or creates) each target's queue under `data_dir/forward/<name>` and registers
    /// the forwarding metrics: `osprey_metrics_forward_*{sink="<name>"}`.
    pub fn open(
        targets: &[Forward],
        data_dir: &Path,
        default_tenant: &str,
        registry: &mut Registry,
    ) -> anyhow::Result<Forwarders> {
        // The sender's counters, registered under names that say what they are here.
        let mut scratch = Registry::default();
        let telemetry = osprey_agent::telemetry::Telemetry::new(&mut scratch);
        if !targets.is_empty() {
            let r = registry.sub_registry_with_prefix("osprey_metrics_forward");
            r.register("requests_sent", "Forwarded requests acknowledged, by target", telemetry.batches_sent.clone());
            r.register(
                "requests_retried",
                "Forwarding attempts that failed and were retried (429, 5xx, network), by target",
                telemetry.batches_retried.clone(),
            );
            r.register(
                "requests_dropped",
                "Forwarded requests the target refused as bad (4xx other than 429), dropped",
                telemetry.batches_dropped.clone(),
            );
            r.register(
                "send_duration_seconds",
                "Time from first attempt to acknowledgement of a forwarded request",
                telemetry.send_seconds.clone(),
            );
        }
        let mut out = Vec::new();
        for t in targets {
            let metrics = QueueMetrics::default();
            let dir = data_dir.join("forward").join("metrics").join(&t.name);
            let (queue, report) = DiskQueue::open(
                QueueOptions {
                    dir: dir.clone(),
                    max_bytes: t.queue_max_bytes,
                    segment_bytes: (t.queue_max_bytes / 16).clamp(1 << 20, 64 << 20),
                    // Acks persisted at most once a second: a crash resends at most a second of
                    // delivered requests (duplicates, never loss).
                    ..QueueOptions::default()
                },
                metrics.clone(),
            )
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot open the forwarding queue {} (metrics.forward {:?}): {e}",
                    dir.display(),
                    t.name
                )
            })?;
            if report.pending_records > 0 {
                tracing::info!(sink = %t.name, pending = report.pending_records, "forwarding queue has records from before the restart; sending them");
            }
            let labelled = registry
                .sub_registry_with_prefix("osprey_metrics_forward")
                .sub_registry_with_label(("sink".into(), t.name.clone().into()));
            metrics.register(labelled);
            let token = read_bearer_token("metrics.forward", t)?;
            // Names live as long as the process (metric labels need 'static); targets are few
            // and fixed at startup.
            let name: &'static str = Box::leak(t.name.clone().into_boxed_str());
            out.push(Target { name, cfg: t.clone(), token, queue: Arc::new(queue) });
        }
        Ok(Forwarders { targets: out, telemetry, default_tenant: default_tenant.to_string() })
    }

    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    /// Appends one accepted request (snappy 1.0 body) to every target's queue; durable
    /// (fsynced) when it returns `Ok`. Blocking: call it from a blocking thread.
    pub fn push(&self, tenant: &str, body: &[u8]) -> Result<(), QueueError> {
        let rec = record(tenant, body);
        for t in &self.targets {
            t.queue.push(&rec)?;
        }
        Ok(())
    }

    /// Starts one sending task per target; they stop when `shutdown` turns true, leaving
    /// what they have not delivered in their queues.
    pub fn spawn(&self, shutdown: watch::Receiver<bool>) -> Vec<tokio::task::JoinHandle<()>> {
        self.targets
            .iter()
            .map(|t| {
                let sender = Sender {
                    name: t.name,
                    cfg: t.cfg.clone(),
                    token: t.token.clone(),
                    queue: t.queue.clone(),
                    telemetry: self.telemetry.clone(),
                    default_tenant: self.default_tenant.clone(),
                    senders: HashMap::new(),
                };
                tokio::spawn(sender.run(shutdown.clone()))
            })
            .collect()
    }
}

/// The sending side of one target: oldest record first, one at a time, acknowledged in the
/// queue only once the target took it (or refused it for good).
struct Sender {
    name: &'static str,
    cfg: Forward,
    token: Option<String>,
    queue: Arc<DiskQueue>,
    telemetry: osprey_agent::telemetry::Telemetry,
    default_tenant: String,
    /// One HTTP sender per `X-Scope-OrgID` sent (they differ in that header only).
    senders: HashMap<String, HttpSender>,
}

impl Sender {
    fn sender_for(&mut self, tenant: &str) -> anyhow::Result<&HttpSender> {
        let header = if !self.cfg.tenant.is_empty() {
            self.cfg.tenant.clone()
        } else if tenant == self.default_tenant {
            String::new()
        } else {
            tenant.to_string()
        };
        if !self.senders.contains_key(&header) {
            let mut headers: Vec<(String, String)> = osprey_protocol::prompb::REMOTE_WRITE_HEADERS
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            headers.extend(self.cfg.headers.iter().map(|(k, v)| (k.clone(), v.clone())));
            let opts = SenderOptions {
                url: self.cfg.url.clone(),
                headers,
                tenant: header.clone(),
                bearer_token: self.token.clone(),
                timeout: self.cfg.timeout.get(),
                initial_backoff: self.cfg.retry_initial_backoff.get(),
                max_backoff: self.cfg.retry_max_backoff.get(),
                tls: None,
            };
            let sender = HttpSender::new(self.name, opts, self.telemetry.clone())?;
            self.senders.insert(header.clone(), sender);
        }
        self.senders.get(&header).ok_or_else(|| anyhow::anyhow!("sender for {header:?} vanished"))
    }

    async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        loop {
            let record = tokio::select! {
                r = self.queue.next_wait() => r,
                _ = shutdown.wait_for(|s| *s) => return,
            };
            let record = match record {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(sink = self.name, error = %e, "cannot read the forwarding queue; retrying in 1s");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    continue;
                }
            };
            let Some((tenant, body)) = split(&record.bytes) else {
                tracing::error!(sink = self.name, "unreadable forwarding record; skipping it");
                self.ack(record.id).await;
                continue;
            };
            let body = bytes::Bytes::copy_from_slice(body);
            let tenant = tenant.to_string();
            let delivery = match self.sender_for(&tenant) {
                Ok(sender) => sender.send(body, &mut shutdown).await,
                Err(e) => {
                    tracing::error!(sink = self.name, error = %e, "cannot build a sender; retrying in 1s");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    self.queue.rewind();
                    continue;
                }
            };
            match delivery {
                // Refused for good: logged and counted by the sender; nothing more to do.
                Delivery::Delivered | Delivery::Refused(_) => self.ack(record.id).await,
                Delivery::Interrupted => return,
            }
        }
    }

    async fn ack(&self, id: osprey_agent::queue::RecordId) {
        let queue = self.queue.clone();
        match tokio::task::spawn_blocking(move || queue.ack(id)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(sink = self.name, error = %e, "cannot persist the forwarding position; the record may be sent again")
            }
            Err(e) => tracing::error!(sink = self.name, error = %e, "forwarding ack task failed"),
        }
    }
}

/// Reads a forwarding target's `bearer_token_file` (trimmed); `None` when no file is set. Shared
/// by `[[logs.forward]]` and `[[metrics.forward]]`; `section` names which in the error.
pub(crate) fn read_bearer_token(section: &str, t: &Forward) -> std::io::Result<Option<String>> {
    if t.bearer_token_file.is_empty() {
        return Ok(None);
    }
    let raw = std::fs::read_to_string(&t.bearer_token_file).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot read {section} {:?} bearer_token_file {}: {e}", t.name, t.bearer_token_file),
        )
    })?;
    Ok(Some(raw.trim().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_carry_the_tenant() {
        let r = record("team-a", b"body");
        assert_eq!(split(&r), Some(("team-a", &b"body"[..])));
        assert_eq!(split(&record("", b"")), Some(("", &b""[..])));
        assert_eq!(split(&[5, 0, b'a']), None);
        assert_eq!(split(&[]), None);
    }
}
