//! Helpers of the security tests: certificates made on the spot with rcgen, a small blocking
//! HTTPS client on rustls (so a test sees the exact TLS error), raw-socket requests, pushes and
//! writes with headers, and the resident memory of a process.

#![allow(dead_code)]

use osprey_protocol::prompb::{self, Label, Sample, TimeSeries, WriteRequest};
use rustls::pki_types::ServerName;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// A certificate authority that issues server and client certificates into `dir`.
pub struct Pki {
    dir: PathBuf,
    name: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

/// A certificate and its key, as PEM files.
#[derive(Clone, Debug)]
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Pki {
    pub fn new(dir: &Path, name: &str) -> Pki {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, format!("{name} test CA"));
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(dir.join(format!("{name}-ca.crt")), cert.pem()).unwrap();
        Pki { dir: dir.into(), name: name.into(), issuer: rcgen::Issuer::new(params, key) }
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.join(format!("{}-ca.crt", self.name))
    }

    /// A certificate for `localhost` and 127.0.0.1 named `cn`, valid now (or over the given
    /// years, for an expired one), written to `<file>.crt` and `<file>.key`.
    pub fn issue(&self, file: &str, cn: &str, years: Option<(i32, i32)>) -> Issued {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, cn);
        if let Some((from, to)) = years {
            params.not_before = rcgen::date_time_ymd(from, 1, 1);
            params.not_after = rcgen::date_time_ymd(to, 1, 1);
        }
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let issued = Issued { cert: self.dir.join(format!("{file}.crt")), key: self.dir.join(format!("{file}.key")) };
        // Key first, then certificate: a watcher that looks in between sees a mismatched pair
        // and must keep the old one.
        std::fs::write(&issued.key, key.serialize_pem()).unwrap();
        std::fs::write(&issued.cert, cert.pem()).unwrap();
        issued
    }
}

/// A client config trusting `ca`, presenting `identity` when given.
pub fn client_tls(ca: &Path, identity: Option<&Issued>) -> Arc<rustls::ClientConfig> {
    let tls = osprey_config::tls::ClientTls {
        ca_file: ca.display().to_string(),
        cert_file: identity.map(|i| i.cert.display().to_string()).unwrap_or_default(),
        key_file: identity.map(|i| i.key.display().to_string()).unwrap_or_default(),
    };
    Arc::new(osprey_server::tls::client_config("test", &tls).unwrap())
}

/// `host:port` of `http(s)://host:port`.
pub fn host_port(url: &str) -> String {
    url.split("://").nth(1).unwrap_or(url).trim_end_matches('/').to_string()
}

/// One HTTP/1.1 exchange's answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

/// Reads one answer: status line, headers, then a body by Content-Length or chunked (or to EOF).
pub fn read_answer(r: &mut impl BufRead) -> Result<Answer, String> {
    let mut line = String::new();
    r.read_line(&mut line).map_err(|e| format!("reading the status line: {e}"))?;
    if line.is_empty() {
        return Err("connection closed before an answer".into());
    }
    let status =
        line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or(format!("bad status line {line:?}"))?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        r.read_line(&mut line).map_err(|e| format!("reading headers: {e}"))?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let header = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let mut body = Vec::new();
    if status == 101 {
    } else if let Some(len) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        body.resize(len, 0);
        r.read_exact(&mut body).map_err(|e| format!("reading the body: {e}"))?;
    } else if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        loop {
            line.clear();
            r.read_line(&mut line).map_err(|e| format!("reading a chunk size: {e}"))?;
            let size = usize::from_str_radix(line.trim(), 16).map_err(|_| format!("bad chunk size {line:?}"))?;
            let mut chunk = vec![0; size + 2];
            r.read_exact(&mut chunk).map_err(|e| format!("reading a chunk: {e}"))?;
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    } else {
        let _ = r.read_to_end(&mut body);
    }
    Ok(Answer { status, headers, body: String::from_utf8_lossy(&body).into_owned() })
}

fn request_text(method: &str, path: &str, host: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

/// A kept-alive HTTPS connection.
pub struct TlsConn {
    host: String,
    reader: BufReader<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>,
}

impl TlsConn {
    /// Connects and completes the handshake; the error is rustls' (or the socket's) message.
    pub fn connect(url: &str, tls: &Arc<rustls::ClientConfig>) -> Result<TlsConn, String> {
        let host = host_port(url);
        let mut sock = TcpStream::connect(&host).map_err(|e| format!("connect: {e}"))?;
        sock.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let mut conn = rustls::ClientConnection::new(tls.clone(), name).map_err(|e| e.to_string())?;
        while conn.is_handshaking() {
            conn.complete_io(&mut sock).map_err(|e| e.to_string())?;
        }
        Ok(TlsConn { host, reader: BufReader::new(rustls::StreamOwned::new(conn, sock)) })
    }

    /// The common name of the server's certificate (to tell certificates apart).
    pub fn server_cn(&self) -> String {
        let certs = self.reader.get_ref().conn.peer_certificates().unwrap_or_default();
        let der = certs.first().map(|c| c.as_ref().to_vec()).unwrap_or_default();
        // The CN is printable ASCII in these test certificates: find it in the DER.
        let text = String::from_utf8_lossy(&der);
        ["first", "second", "third"].iter().find(|cn| text.contains(*cn)).map(|s| s.to_string()).unwrap_or_default()
    }

    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Answer, String> {
        let raw = request_text(method, path, &self.host, headers, body);
        let stream = self.reader.get_mut();
        stream.write_all(&raw).map_err(|e| format!("sending: {e}"))?;
        stream.flush().map_err(|e| format!("sending: {e}"))?;
        read_answer(&mut self.reader)
    }
}

/// One HTTPS request on a new connection.
pub fn https(
    url: &str,
    tls: &Arc<rustls::ClientConfig>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Answer, String> {
    TlsConn::connect(url, tls)?.request(method, path, headers, body)
}

/// One plain HTTP request on a new connection (`Connection: close`), any method, any headers.
pub fn http(url: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Result<Answer, String> {
    let host = host_port(url);
    let mut sock = TcpStream::connect(&host).map_err(|e| format!("connect: {e}"))?;
    sock.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut all = headers.to_vec();
    all.push(("Connection", "close"));
    sock.write_all(&request_text(method, path, &host, &all, body)).map_err(|e| format!("sending: {e}"))?;
    read_answer(&mut BufReader::new(sock))
}

/// A Loki JSON push body of `lines` in one stream.
pub fn push_body(labels: &str, lines: &[&str]) -> Vec<u8> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let values: Vec<serde_json::Value> =
        lines.iter().enumerate().map(|(i, l)| serde_json::json!([(now + i as u128).to_string(), l])).collect();
    let stream: serde_json::Value = serde_json::from_str(labels).unwrap();
    serde_json::json!({"streams": [{"stream": stream, "values": values}]}).to_string().into_bytes()
}

pub const JSON: (&str, &str) = ("Content-Type", "application/json");

/// A remote_write 1.0 body of one sample per series.
pub fn write_body(series: &[&[(&str, &str)]]) -> Vec<u8> {
    let ts = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let timeseries = series
        .iter()
        .map(|labels| TimeSeries {
            labels: labels.iter().map(|(k, v)| Label::new(*k, *v)).collect(),
            samples: vec![Sample { value: 1.0, timestamp: ts }],
            exemplars: vec![],
        })
        .collect();
    prompb::encode_write_request(&WriteRequest { timeseries, metadata: vec![] })
}

pub const REMOTE_WRITE: [(&str, &str); 3] = prompb::REMOTE_WRITE_HEADERS;

/// Resident memory of a process in bytes (VmRSS of /proc/PID/status).
pub fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// The value of the first line of an exposition that starts with `series` (name and labels as
/// written, e.g. `osprey_http_connections_open`), or 0.
pub fn metric(exposition: &str, series: &str) -> f64 {
    exposition
        .lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with([' ', '{']))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Raises this process's open-files limit (soft to hard, and the hard limit too when allowed:
/// tests run as root in CI) to at least `want`, and returns the soft limit in force. Children
/// inherit it.
pub fn raise_fd_limit(want: u64) -> u64 {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let cur = getrlimit(Resource::Nofile);
    if cur.current.is_none_or(|c| c >= want) {
        return cur.current.unwrap_or(u64::MAX);
    }
    let hard = cur.maximum.map_or(want, |m| m.max(want));
    if setrlimit(Resource::Nofile, Rlimit { current: Some(hard), maximum: Some(hard) }).is_err() {
        let max = cur.maximum;
        let _ = setrlimit(Resource::Nofile, Rlimit { current: max, maximum: max });
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}
