//! The accept loop: hyper's HTTP/1.1 server under an axum router, with the limits an exposed
//! daemon needs.
//!
//! - **Connections**: at most `max_connections` open at once (each holds a permit, websockets
//!   included, see [`ConnectionGuard`]). A connection over the limit is accepted and closed at
//!   once, counted as `http_connections_refused_total{reason="limit"}`, so it holds no
//!   descriptor and no memory.
//! - **Slow or idle clients**: the TLS handshake, and each request's head, must arrive within
//!   `header_read_timeout` (hyper starts that timer at the start of the connection and again after
//!   each answer, so it is also the keep-alive idle timeout). The body and the handler are bounded
//!   by [`within`] (`server.request_timeout`).
//! - **Heads**: larger than `max_header_bytes` or more than 100 headers: 431, then closed.
//! - **Plain HTTP on a TLS port**: answered with a plain-text 400 that says to use `https://`
//!   (the first byte of a TLS handshake is 0x16; an HTTP method is a letter).
//! - **Stop**: stop accepting, ask every connection to finish its request in flight and close,
//!   wait at most `drain_timeout`.
//!
//! HTTP/2 is not served: every client of ours (agents, Prometheus, Promtail, Grafana) speaks
//! HTTP/1.1, and one protocol means one set of limits to get right.

use crate::tls::ReloadingTls;
use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;
use tower::ServiceExt;

/// The limits of one listener.
#[derive(Clone, Debug)]
pub struct ListenerOptions {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub max_header_bytes: usize,
    /// How long a stop waits for requests in flight (and websockets) before closing them.
    pub drain_timeout: Duration,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusedLabels {
    pub reason: &'static str,
}

/// `http_connections_*` under the prefix of the registry they are registered in.
#[derive(Clone, Default)]
pub struct ListenerMetrics {
    pub open: Gauge,
    pub accepted: Counter,
    pub refused: Family<RefusedLabels, Counter>,
}

impl ListenerMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register("http_connections_open", "HTTP connections open now", self.open.clone());
        registry.register("http_connections_accepted", "HTTP connections accepted", self.accepted.clone());
        registry.register(
            "http_connections_refused",
            "Connections the listener closed or refused: limit (server.max_connections), tls_handshake \
             (failed handshake), handshake_timeout, plain_http (HTTP on the TLS port), accept_error, \
             header_timeout (a request head not complete within server.header_read_timeout), \
             header_too_large (431, server.max_header_bytes), bad_request (an unparsable request)",
            self.refused.clone(),
        );
    }

    fn refuse(&self, reason: &'static str) {
        self.refused.get_or_create(&RefusedLabels { reason }).inc();
    }
}

/// Connections the kernel queues for `accept` (Linux caps it at `net.core.somaxconn`, 4096 by
/// default). Larger than the usual 1024 so a burst (every agent reconnecting after an outage)
/// waits in the queue instead of having its SYNs dropped and retried a second later.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds a listening socket with [`LISTEN_BACKLOG`] (and `SO_REUSEADDR`, as `TcpListener::bind`
/// does, so a restart does not wait for old connections in TIME_WAIT).
pub fn bind(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Raises the soft limit of open files to the hard limit (as Go's runtime does) and returns the
/// soft limit now in force: connections, log files and parts all need descriptors.
pub fn raise_fd_limit() -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut lim = getrlimit(Resource::Nofile);
    if let (Some(cur), max) = (lim.current, lim.maximum)
        && max.is_none_or(|m| m > cur)
    {
        lim.current = Some(max.unwrap_or(1 << 20).min(1 << 20));
        if setrlimit(Resource::Nofile, lim).is_err() {
            lim = getrlimit(Resource::Nofile);
        }
    }
    lim.current.unwrap_or(u64::MAX)
}

/// Held by every connection, and by a websocket after its upgrade (take it from the request's
/// extensions and keep it while the socket lives), so upgraded connections count against
/// `max_connections` too and learn when the listener stops.
#[derive(Clone)]
pub struct ConnectionGuard {
    _permit: Arc<OwnedSemaphorePermit>,
    drain: watch::Receiver<bool>,
}

impl ConnectionGuard {
    /// Resolves when the listener is stopping: a long-lived handler (a tail) should end.
    pub async fn stopping(&mut self) {
        let _ = self.drain.wait_for(|d| *d).await.map(|_| ());
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then drains.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<Arc<ReloadingTls>>,
    opts: ListenerOptions,
    metrics: ListenerMetrics,
    shutdown: impl Future<Output = ()> + Send,
) {
    let fds = raise_fd_limit();
    if (opts.max_connections as u64).saturating_add(256) > fds {
        tracing::warn!(
            max_connections = opts.max_connections,
            open_files_limit = fds,
            "max_connections is close to or above the open-files limit; raise LimitNOFILE or lower max_connections"
        );
    }
    let slots = Arc::new(Semaphore::new(opts.max_connections.min(Semaphore::MAX_PERMITS)));
    let (drain_tx, drain_rx) = watch::channel(false);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(opts.header_read_timeout)
        .max_header_size(opts.max_header_bytes)
        .max_headers(100);
    if opts.max_header_bytes > 400 << 10 {
        http.max_buf_size(opts.max_header_bytes);
    }
    let http = Arc::new(http);
    tokio::pin!(shutdown);
    let mut last_accept_warning: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors (EMFILE) or the like: back off instead of spinning.
                metrics.refuse("accept_error");
                if last_accept_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                    tracing::warn!("cannot accept a connection: {e}");
                    last_accept_warning = Some(Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            metrics.refuse("limit");
            drop(stream);
            continue;
        };
        metrics.accepted.inc();
        let _ = stream.set_nodelay(true);
        let conn = Connection {
            guard: ConnectionGuard { _permit: Arc::new(permit), drain: drain_rx.clone() },
            http: http.clone(),
            app: app.clone(),
            metrics: metrics.clone(),
            handshake_timeout: opts.header_read_timeout,
        };
        let tls = tls.as_ref().map(|t| t.current());
        tokio::spawn(async move {
            conn.metrics.open.inc();
            let m = conn.metrics.clone();
            conn.run(stream, tls, peer).await;
            m.open.dec();
        });
    }
    drop(listener);
    let _ = drain_tx.send(true);
    let all = u32::try_from(opts.max_connections.min(Semaphore::MAX_PERMITS)).unwrap_or(u32::MAX);
    if tokio::time::timeout(opts.drain_timeout, slots.acquire_many(all)).await.is_err() {
        tracing::warn!(open = metrics.open.get(), "connections still open after the drain timeout; closing them");
    }
}

struct Connection {
    guard: ConnectionGuard,
    http: Arc<hyper::server::conn::http1::Builder>,
    app: Router,
    metrics: ListenerMetrics,
    handshake_timeout: Duration,
}

impl Connection {
    async fn run(self, stream: TcpStream, tls: Option<Arc<rustls::ServerConfig>>, peer: std::net::SocketAddr) {
        let Some(tls) = tls else {
            return self.drive(TokioIo::new(stream)).await;
        };
        let deadline = Instant::now() + self.handshake_timeout;
        let mut first = [0u8; 1];
        match tokio::time::timeout_at(deadline, stream.peek(&mut first)).await {
            Ok(Ok(1)) if first[0] != 0x16 => {
                self.metrics.refuse("plain_http");
                return answer_plain_http(stream).await;
            }
            Ok(Ok(1)) => {}
            Ok(_) => return,
            Err(_) => return self.metrics.refuse("handshake_timeout"),
        }
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
            Ok(Ok(s)) => self.drive(TokioIo::new(s)).await,
            Ok(Err(e)) => {
                // Debug only: an internet-facing port sees scanners all day; the counter shows it.
                tracing::debug!(%peer, "TLS handshake failed: {e}");
                self.metrics.refuse("tls_handshake");
            }
            Err(_) => self.metrics.refuse("handshake_timeout"),
        }
    }

    async fn drive<I>(self, io: I)
    where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let Connection { guard, http, app, metrics, .. } = self;
        let mut drain = guard.drain.clone();
        let request_guard = guard.clone();
        let service = hyper::service::service_fn(move |mut req: http::Request<Incoming>| {
            req.extensions_mut().insert(request_guard.clone());
            app.clone().oneshot(req)
        });
        let conn = http.serve_connection(io, service).with_upgrades();
        tokio::pin!(conn);
        let stopping = async move {
            let _ = drain.wait_for(|d| *d).await;
        };
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    // hyper answers these itself (431, or closes a slow head): count them here.
                    if e.is_timeout() {
                        metrics.refuse("header_timeout");
                    } else if e.is_parse_too_large() {
                        metrics.refuse("header_too_large");
                    } else if e.is_parse() {
                        metrics.refuse("bad_request");
                    }
                    tracing::debug!("connection ended: {e}");
                }
            }
            () = stopping => {
                conn.as_mut().graceful_shutdown();
                let _ = conn.await;
            }
        }
        drop(guard);
    }
}

/// What Go's server answers an HTTP request on a TLS port, with the fix in the text. The request
/// is read first (up to 16 KiB or a second), so closing does not reset the connection before the
/// client reads the answer.
async fn answer_plain_http(mut stream: TcpStream) {
    let mut buf = vec![0u8; 16 << 10];
    let mut got = 0;
    let until = Instant::now() + Duration::from_secs(1);
    while got < buf.len() && !buf[..got].windows(4).any(|w| w == b"\r\n\r\n") {
        match tokio::time::timeout_at(until, stream.read(&mut buf[got..])).await {
            Ok(Ok(n)) if n > 0 => got += n,
            _ => break,
        }
    }
    let body = "This port speaks HTTPS: the client sent plain HTTP. Use an https:// URL.\n";
    let answer = format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(answer.as_bytes())).await;
    let _ = stream.shutdown().await;
    let _ = tokio::time::timeout(Duration::from_secs(1), async { while let Ok(1..) = stream.read(&mut buf).await {} })
        .await;
}

/// State of the [`within`] middleware: the whole-request bound and the config key that sets it.
#[derive(Clone, Copy, Debug)]
pub struct Deadline {
    pub timeout: Duration,
    pub key: &'static str,
}

/// Bounds a request from the end of its head to the end of its answer's head. Past the bound:
/// 408 when the body had not all arrived (a slow sender; the connection is closed), else 504
/// (the handler was too slow). Long-lived websockets are not affected: their handler returns
/// once the upgrade is answered.
pub async fn within(
    axum::extract::State(deadline): axum::extract::State<Deadline>,
    req: Request,
    next: Next,
) -> Response {
    bound(deadline, req, next).await
}

/// [`within`] for a bound read per request (a server whose timeout a reload may change).
pub async fn bound(deadline: Deadline, req: Request, next: Next) -> Response {
    let done = Arc::new(AtomicBool::new(false));
    let (parts, body) = req.into_parts();
    let body = if hyper::body::Body::is_end_stream(&body) {
        done.store(true, Ordering::Relaxed);
        body
    } else {
        Body::new(Tracked { inner: body, done: done.clone() })
    };
    match tokio::time::timeout(deadline.timeout, next.run(Request::from_parts(parts, body))).await {
        Ok(resp) => resp,
        Err(_) if !done.load(Ordering::Relaxed) => {
            let mut resp = (
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request body did not arrive within {:?} ({}); send it faster or in smaller requests\n",
                    deadline.timeout, deadline.key
                ),
            )
                .into_response();
            resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            resp.extensions_mut().insert(DeadlineExceeded::SlowBody);
            resp
        }
        Err(_) => {
            let mut resp = (
                StatusCode::GATEWAY_TIMEOUT,
                format!("the request took longer than {:?} ({}) and was stopped\n", deadline.timeout, deadline.key),
            )
                .into_response();
            resp.extensions_mut().insert(DeadlineExceeded::Handler);
            resp
        }
    }
}

/// Marks an answer [`bound`] gave because its deadline passed, so the server can count it
/// (a handler's own 504 carries no mark).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeadlineExceeded {
    /// 408: the body had not all arrived (a slow sender).
    SlowBody,
    /// 504: the handler was still working.
    Handler,
}

impl DeadlineExceeded {
    /// The `reason` label it is counted under.
    pub fn reason(self) -> &'static str {
        match self {
            DeadlineExceeded::SlowBody => "slow_body",
            DeadlineExceeded::Handler => "request_timeout",
        }
    }
}

/// A request body that says when it has been read to its end.
struct Tracked {
    inner: Body,
    done: Arc<AtomicBool>,
}

impl hyper::body::Body for Tracked {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) || self.inner.is_end_stream() {
            self.done.store(true, Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}
