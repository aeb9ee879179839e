//! POSTing a body until the receiver takes it.
//!
//! Both sinks (Loki push and remote_write) share this: the same status handling as Prometheus'
//! and Promtail's clients. 2xx: delivered. 429, 5xx, timeouts and connection errors: retried
//! forever with exponential backoff and full jitter, because the data is still wanted. 401 and
//! 403 are retried the same way (logged as errors): they say the credentials are wrong, not the
//! data, and an operator fixing a token must not find the lines sent meanwhile gone (Promtail
//! and Vector drop them). Any other 4xx: the receiver says the data is bad; retrying cannot
//! help, so the batch is logged with the response body, counted and dropped.

use crate::telemetry::{SinkLabels, Telemetry};
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// How a send ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Delivery {
    Delivered,
    /// Refused with a non-retryable status; the batch is gone (and counted).
    Refused(StatusCode),
    /// Shutdown came first; the batch was not delivered.
    Interrupted,
}

pub struct HttpSender {
    client: HttpsClient,
    url: Uri,
    headers: Vec<(HeaderName, HeaderValue)>,
    timeout: Duration,
    initial_backoff: Duration,
    max_backoff: Duration,
    sink: &'static str,
    telemetry: Telemetry,
}

/// Options shared by every sink of an agent.
pub struct SenderOptions {
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub tenant: String,
    pub bearer_token: Option<String>,
    pub timeout: Duration,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// How https receivers are verified (CA file, client certificate); `None`: the system's
    /// trust store, no client certificate.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

/// The client config with the system's trust store and no client certificate (scrapes, and
/// senders without `tls`).
pub(crate) fn tls_config() -> rustls::ClientConfig {
    match osprey_server::tls::client_config("tls", &osprey_config::tls::ClientTls::default()) {
        Ok(c) => c,
        // Without a CA file nothing is read; the ring provider supports the default versions.
        Err(e) => {
            tracing::error!("cannot build the TLS client config: {e}");
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map(|b| b.with_root_certificates(rustls::RootCertStore::empty()).with_no_client_auth())
                .unwrap_or_else(|_| {
                    rustls::ClientConfig::builder()
                        .with_root_certificates(rustls::RootCertStore::empty())
                        .with_no_client_auth()
                })
        }
    }
}

impl HttpSender {
    pub fn new(sink: &'static str, opts: SenderOptions, telemetry: Telemetry) -> anyhow::Result<Self> {
        let url: Uri = opts.url.parse().map_err(|e| anyhow::anyhow!("invalid {sink} URL {:?}: {e}", opts.url))?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(opts.tls.as_deref().cloned().unwrap_or_else(tls_config))
            .https_or_http()
            .enable_http1()
            .build();
        let client = Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(30)).build(connector);
        let mut headers = Vec::new();
        let mut add = |k: &str, v: &str| -> anyhow::Result<()> {
            headers.push((
                HeaderName::from_bytes(k.as_bytes()).map_err(|e| anyhow::anyhow!("invalid header name {k:?}: {e}"))?,
                HeaderValue::from_str(v).map_err(|e| anyhow::anyhow!("invalid value for header {k}: {e}"))?,
            ));
            Ok(())
        };
        for (k, v) in &opts.headers {
            add(k, v)?;
        }
        add("user-agent", concat!("osprey-agent/", env!("CARGO_PKG_VERSION")))?;
        if !opts.tenant.is_empty() {
            add("x-scope-orgid", &opts.tenant)?;
        }
        if let Some(token) = &opts.bearer_token {
            add("authorization", &format!("Bearer {token}"))?;
        }
        Ok(HttpSender {
            client,
            url,
            headers,
            timeout: opts.timeout,
            initial_backoff: opts.initial_backoff,
            max_backoff: opts.max_backoff,
            sink,
            telemetry,
        })
    }

    /// Sends `body` until it is delivered, refused for good, or `shutdown` turns true.
    pub async fn send(&self, body: Bytes, shutdown: &mut watch::Receiver<bool>) -> Delivery {
        let labels = SinkLabels { sink: self.sink };
        let started = Instant::now();
        let mut backoff = self.initial_backoff;
        loop {
            let problem = match self.attempt(body.clone()).await {
                Ok((status, _)) if status.is_success() => {
                    self.telemetry.sink_health.answered(self.sink);
                    self.telemetry.batches_sent.get_or_create(&labels).inc();
                    self.telemetry.send_seconds.get_or_create(&labels).observe(started.elapsed().as_secs_f64());
                    return Delivery::Delivered;
                }
                Ok((status, text)) if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() => {
                    format!("{} answered {status}: {}", self.url, text.trim())
                }
                Ok((status, text)) if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN => {
                    let problem = format!(
                        "{} answered {status}: {}; check collector.token_file (the batch is kept and retried)",
                        self.url,
                        text.trim()
                    );
                    tracing::error!(sink = self.sink, "credentials refused: {problem}");
                    problem
                }
                Ok((status, text)) => {
                    tracing::error!(sink = self.sink, url = %self.url, %status, body = %text.trim(), "receiver refused a batch; dropping it (not retryable)");
                    self.telemetry.sink_health.answered(self.sink);
                    self.telemetry.batches_dropped.get_or_create(&labels).inc();
                    return Delivery::Refused(status);
                }
                Err(e) => format!("{}: {e}", self.url),
            };
            self.telemetry.batches_retried.get_or_create(&labels).inc();
            self.telemetry.sink_health.failed(self.sink, &problem);
            let wait = jitter(backoff);
            tracing::warn!(
                sink = self.sink,
                retry_in_ms = wait.as_millis() as u64,
                "send failed, will retry: {problem}"
            );
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.wait_for(|s| *s) => return Delivery::Interrupted,
            }
            backoff = (backoff * 2).min(self.max_backoff);
        }
    }

    async fn attempt(&self, body: Bytes) -> anyhow::Result<(StatusCode, String)> {
        let mut req = Request::post(self.url.clone());
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        let req = req.body(Full::new(body))?;
        let resp = tokio::time::timeout(self.timeout, self.client.request(req))
            .await
            .map_err(|_| anyhow::anyhow!("no answer within {:?}", self.timeout))??;
        let status = resp.status();
        // Read at most 4 KiB of the answer: enough for an error message, bounded against a
        // receiver that streams forever.
        let mut text = Vec::new();
        let mut body = resp.into_body();
        while text.len() < 4096 {
            match tokio::time::timeout(self.timeout, body.frame()).await {
                Ok(Some(Ok(frame))) => {
                    if let Some(d) = frame.data_ref() {
                        text.extend_from_slice(&d[..d.len().min(4096 - text.len())]);
                    }
                }
                _ => break,
            }
        }
        Ok((status, String::from_utf8_lossy(&text).into_owned()))
    }
}

/// Full jitter: a uniform delay in `[backoff/2, backoff]`, so many agents do not retry in step.
fn jitter(backoff: Duration) -> Duration {
    let half = backoff / 2;
    half + Duration::from_secs_f64(half.as_secs_f64() * rand::random::<f64>())
}
