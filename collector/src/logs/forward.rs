//! Loki push fan-out: a copy of every accepted push goes to each `[[logs.forward]]` receiver
//! (Loki, VictoriaLogs, another collector) through the agent's durable disk queue and HTTP
//! sender (`osprey_agent::queue`, `osprey_agent::sink::http`).
//!
//! Order of events for one push: WAL append (fsync) → enqueue on every target's queue (fsync)
//! → acknowledge. So an acknowledged line is on disk twice: in the store and in each queue, and
//! reaches each receiver at least once even across `kill -9` and outages. Enqueueing is a group
//! commit like the WAL's: one thread collects the pushes of up to 10 ms, joins them per tenant
//! (concatenated protobuf messages merge their repeated `streams`), and writes one record per
//! tenant and target, so the queue costs one fsync per batch, not per push.
//!
//! A queue record is `tenant_len: u16 LE | tenant | snappy(logproto.PushRequest)`. One sender
//! task per target sends records in order with the agent's retry policy (429/5xx and network
//! errors, 401 and 403 retried forever with backoff; other 4xx dropped, counted and logged) and acknowledges
//! each once it is delivered or refused for good.

use bytes::Bytes;
use osprey_agent::queue::{DiskQueue, QueueMetrics, QueueOptions};
use osprey_agent::sink::http::{Delivery, HttpSender, SenderOptions};
use osprey_config::collector::Forward;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};

/// Longest an enqueue waits for others to share its fsync.
const GROUP_WAIT: Duration = Duration::from_millis(10);
const GROUP_BYTES: usize = 8 << 20;

struct Enqueue {
    tenant: String,
    /// A `logproto.PushRequest`, protobuf-encoded, not compressed.
    proto: Vec<u8>,
    done: oneshot::Sender<()>,
}

pub struct Forwarder {
    tx: Option<mpsc::Sender<Enqueue>>,
    stop: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
    errors: Counter,
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Target {
    name: String,
    queue: Arc<DiskQueue>,
}

impl Forwarder {
    /// Opens one queue per target under `data_dir/forward/logs/<name>` and starts the enqueuer thread
    /// and, on `runtime`, one sender task per target.
    pub fn start(
        data_dir: &Path,
        targets: &[Forward],
        registry: &mut Registry,
        runtime: &tokio::runtime::Handle,
    ) -> std::io::Result<Forwarder> {
        let r = registry.sub_registry_with_prefix("osprey_logs_forward");
        let errors = Counter::default();
        r.register(
            "enqueue_errors",
            "Pushes stored but not queued for forwarding because a queue write failed (logged)",
            errors.clone(),
        );
        let (stop, stop_rx) = watch::channel(false);
        let mut queues = Vec::new();
        for t in targets {
            let metrics = QueueMetrics::default();
            metrics.register(r.sub_registry_with_label(("target".into(), t.name.clone().into())));
            let opts = QueueOptions {
                dir: data_dir.join("forward").join("logs").join(&t.name),
                max_bytes: t.queue_max_bytes,
                segment_bytes: (t.queue_max_bytes / 16).clamp(1 << 20, 64 << 20),
                ..QueueOptions::default()
            };
            let (queue, report) = DiskQueue::open(opts, metrics)?;
            tracing::info!(
                target = %t.name,
                url = %t.url,
                pending = report.pending_records,
                corruptions = report.corruptions,
                "log forwarding queue opened"
            );
            let queue = Arc::new(queue);
            // The sender's own metrics (osprey_agent_* names) stay private: the queue's metrics
            // above say what was sent, pending and dropped.
            let sender_telemetry = osprey_agent::telemetry::Telemetry::new(&mut Registry::default());
            let token = crate::metrics::forward::read_bearer_token("logs.forward", t)?;
            runtime.spawn(send_loop(t.clone(), token, queue.clone(), sender_telemetry, stop_rx.clone()));
            queues.push(Target { name: t.name.clone(), queue });
        }
        let (tx, rx) = mpsc::channel(1024);
        let thread_errors = errors.clone();
        let thread = std::thread::Builder::new()
            .name("osprey-log-forward".into())
            .spawn(move || enqueue_loop(rx, queues, thread_errors))?;
        Ok(Forwarder { tx: Some(tx), stop, thread: Some(thread), errors })
    }

    /// Queues `proto` (an encoded `PushRequest`) for every target; returns once it is on disk.
    /// A queue write that fails is logged and counted, not returned: the push is already in the
    /// store, and failing it would make the client send it again.
    pub async fn enqueue(&self, tenant: &str, proto: Vec<u8>) {
        let (done, wait) = oneshot::channel();
        let Some(tx) = &self.tx else { return };
        if tx.send(Enqueue { tenant: tenant.to_string(), proto, done }).await.is_err() || wait.await.is_err() {
            self.errors.inc();
        }
    }
}

fn enqueue_loop(mut rx: mpsc::Receiver<Enqueue>, targets: Vec<Target>, errors: Counter) {
    let mut batch: Vec<Enqueue> = Vec::new();
    while let Some(first) = rx.blocking_recv() {
        let started = Instant::now();
        let mut bytes = first.proto.len();
        batch.push(first);
        while bytes < GROUP_BYTES && started.elapsed() < GROUP_WAIT {
            match rx.try_recv() {
                Ok(e) => {
                    bytes += e.proto.len();
                    batch.push(e);
                }
                Err(mpsc::error::TryRecvError::Empty) => std::thread::sleep(Duration::from_micros(200)),
                Err(mpsc::error::TryRecvError::Disconnected) => break,
            }
        }
        let mut by_tenant: HashMap<&str, Vec<u8>> = HashMap::new();
        for e in &batch {
            // Concatenated protobuf messages merge: the repeated `streams` fields append.
            by_tenant.entry(e.tenant.as_str()).or_default().extend_from_slice(&e.proto);
        }
        for (tenant, proto) in by_tenant {
            let mut record = Vec::with_capacity(proto.len() / 2 + tenant.len() + 2);
            record.extend_from_slice(&(tenant.len() as u16).to_le_bytes());
            record.extend_from_slice(tenant.as_bytes());
            record.extend_from_slice(&osprey_protocol::snappy::compress(&proto));
            for t in &targets {
                if let Err(e) = t.queue.push(&record) {
                    errors.inc();
                    tracing::error!(target = %t.name, error = %e, "cannot queue a push for forwarding; it is stored locally but will not be forwarded");
                }
            }
        }
        for e in batch.drain(..) {
            let _ = e.done.send(());
        }
    }
}

async fn send_loop(
    target: Forward,
    token: Option<String>,
    queue: Arc<DiskQueue>,
    telemetry: osprey_agent::telemetry::Telemetry,
    mut stop: watch::Receiver<bool>,
) {
    let mut senders: HashMap<String, HttpSender> = HashMap::new();
    loop {
        let record = tokio::select! {
            r = queue.next_wait() => r,
            _ = stop.wait_for(|s| *s) => return,
        };
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(target = %target.name, error = %e, "cannot read the forwarding queue; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let Some((tenant, body)) = split_record(&record.bytes) else {
            tracing::error!(target = %target.name, "malformed forwarding record skipped");
            ack(&queue, record.id).await;
            continue;
        };
        if !senders.contains_key(tenant) {
            let opts = SenderOptions {
                url: target.url.clone(),
                headers: target.headers.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                tenant: if target.tenant.is_empty() { tenant.to_string() } else { target.tenant.clone() },
                bearer_token: token.clone(),
                timeout: target.timeout.get(),
                initial_backoff: target.retry_initial_backoff.get(),
                max_backoff: target.retry_max_backoff.get(),
                tls: None,
            };
            let mut with_type = opts;
            with_type.headers.push(("content-type".into(), "application/x-protobuf".into()));
            with_type.headers.push(("content-encoding".into(), "snappy".into()));
            match HttpSender::new("forward", with_type, telemetry.clone()) {
                Ok(s) => {
                    senders.insert(tenant.to_string(), s);
                }
                Err(e) => {
                    tracing::error!(target = %target.name, error = %e, "cannot build the forwarding sender; stopping this target");
                    return;
                }
            }
        }
        let Some(sender) = senders.get(tenant) else { continue };
        match sender.send(Bytes::copy_from_slice(body), &mut stop).await {
            Delivery::Delivered | Delivery::Refused(_) => ack(&queue, record.id).await,
            Delivery::Interrupted => return,
        }
    }
}

async fn ack(queue: &Arc<DiskQueue>, id: osprey_agent::queue::RecordId) {
    let q = queue.clone();
    match tokio::task::spawn_blocking(move || q.ack(id)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::error!(error = %e, "cannot persist a forwarding acknowledgement; the push may be sent again")
        }
        Err(_) => tracing::error!("forwarding acknowledgement task panicked"),
    }
}

fn split_record(b: &[u8]) -> Option<(&str, &[u8])> {
    let len = u16::from_le_bytes([*b.first()?, *b.get(1)?]) as usize;
    let tenant = std::str::from_utf8(b.get(2..2 + len)?).ok()?;
    Some((tenant, b.get(2 + len..)?))
}
