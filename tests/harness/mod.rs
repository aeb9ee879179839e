//! Shared test harness: start real `osprey` processes and real peers on 127.0.0.1 with temp
//! dirs and free ports, and talk HTTP to them.
//!
//! Every process is started with a kill-on-drop guard, so a failing test never leaves a daemon
//! behind. Nothing here is mocked: the binaries are the ones users run.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub fn osprey_bin() -> &'static str {
    env!("CARGO_BIN_EXE_osprey")
}

/// A child process that is killed (SIGKILL) and reaped when dropped.
pub struct Proc {
    pub child: Child,
    pub name: String,
    /// Lines the process printed on stdout after the ones the harness consumed.
    pub stdout: Option<mpsc::Receiver<String>>,
}

impl Proc {
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits up to `timeout` for the exit status.
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Proc {
    /// Sends `signal` (`"HUP"`, `"TERM"`, ...) with kill(1).
    pub fn signal(&self, signal: &str) {
        let ok = Command::new("kill").arg(format!("-{signal}")).arg(self.child.id().to_string()).status();
        assert!(ok.is_ok_and(|s| s.success()), "kill -{signal} {} failed", self.child.id());
    }

    /// Waits up to `timeout` for the process to exit; its status, or `None` if still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Waits up to `timeout` until the file at `log` contains `needle` at least `times` times;
/// panics with the file's content otherwise.
pub fn wait_for_log(log: &Path, needle: &str, times: usize, timeout: Duration) -> String {
    let found = eventually(timeout, || {
        let text = std::fs::read_to_string(log).ok()?;
        (text.matches(needle).count() >= times).then_some(text)
    });
    found.unwrap_or_else(|| {
        panic!(
            "{} does not contain {needle:?} {times} time(s) within {timeout:?}:\n{}",
            log.display(),
            std::fs::read_to_string(log).unwrap_or_default()
        )
    })
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Spawns `cmd` with stdout piped and waits for a stdout line containing `marker`; returns the
/// process and that line. Stderr goes to `log` so failures can be diagnosed.
pub fn spawn_until(name: &str, mut cmd: Command, marker: &str, log: &Path, timeout: Duration) -> (Proc, String) {
    let log_file = std::fs::File::create(log).expect("create log file");
    cmd.stdout(Stdio::piped()).stderr(log_file).stdin(Stdio::null());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut proc = Proc { child, name: name.to_string(), stdout: None };
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains(marker) => {
                proc.stdout = Some(rx);
                return (proc, line);
            }
            Ok(_) => continue,
            Err(_) => {
                let status = proc.child.try_wait().ok().flatten();
                let log = std::fs::read_to_string(log).unwrap_or_default();
                panic!("{name} did not print {marker:?} within {timeout:?} (exit: {status:?}); stderr:\n{log}");
            }
        }
    }
}

/// Extracts `http://host:port` or `https://host:port` (without any path) from a line.
pub fn url_in(line: &str) -> String {
    let start = line.find("http://").or_else(|| line.find("https://")).expect("line has a URL");
    let url = line[start..].split_whitespace().next().expect("URL");
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    let end = url[after_scheme..].find('/').map_or(url.len(), |i| i + after_scheme);
    url[..end].to_string()
}

/// `osprey up` with its own data dir, free ports, and the given include globs.
pub struct Up {
    pub proc: Proc,
    pub collector: String,
    pub agent: String,
}

impl Up {
    pub fn start(data_dir: &Path, includes: &[String], log: &Path) -> Up {
        let mut cmd = Command::new(osprey_bin());
        cmd.arg("up").arg("--data-dir").arg(data_dir).args([
            "--listen",
            "127.0.0.1:0",
            "--agent-listen",
            "127.0.0.1:0",
            "--metrics-interval",
            "1s",
        ]);
        for i in includes {
            cmd.arg("--include").arg(i);
        }
        let (mut proc, first) = spawn_until("osprey up", cmd, "osprey up: collector", log, Duration::from_secs(30));
        let collector = url_in(&first);
        let rx = proc.stdout.take().expect("stdout");
        let agent_line = rx.recv_timeout(Duration::from_secs(10)).expect("agent line");
        proc.stdout = Some(rx);
        Up { proc, collector, agent: url_in(&agent_line) }
    }
}

/// Writes `config` to `dir/collector.toml` and starts `osprey collector` on it.
pub fn start_collector(dir: &Path, config: &str) -> (Proc, String) {
    let path = dir.join("collector.toml");
    std::fs::write(&path, config).expect("write collector config");
    let mut cmd = Command::new(osprey_bin());
    cmd.arg("collector").arg("--config").arg(&path);
    let (proc, line) = spawn_until(
        "osprey collector",
        cmd,
        "osprey collector listening",
        &dir.join("collector.log"),
        Duration::from_secs(60),
    );
    (proc, url_in(&line))
}

/// Writes `config` to `dir/agent.toml` and starts `osprey agent` on it.
pub fn start_agent(dir: &Path, config: &str) -> (Proc, String) {
    let path = dir.join("agent.toml");
    std::fs::write(&path, config).expect("write agent config");
    let mut cmd = Command::new(osprey_bin());
    cmd.arg("agent").arg("--config").arg(&path);
    let (proc, line) =
        spawn_until("osprey agent", cmd, "osprey agent listening", &dir.join("agent.log"), Duration::from_secs(30));
    (proc, url_in(&line))
}

/// A free TCP port on 127.0.0.1 (for peers that cannot be told to use port 0).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

/// GET; returns the status and the body.
pub fn get(url: &str) -> (u16, String) {
    match agent().get(url).call() {
        Ok(mut r) => (r.status().as_u16(), read_body(r.body_mut())),
        Err(e) => (0, e.to_string()),
    }
}

/// POST with headers; returns the status and the body.
pub fn post(url: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String) {
    let mut req = agent().post(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    match req.send(body) {
        Ok(mut r) => (r.status().as_u16(), read_body(r.body_mut())),
        Err(e) => (0, e.to_string()),
    }
}

/// Retries `check` every 100 ms until it returns `Some` or `timeout` passes.
pub fn eventually<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs `osprey` with `args`; returns (exit code, stdout, stderr).
pub fn osprey(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(osprey_bin()).args(args).output().expect("run osprey");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Path of a Debian peer binary; panics with the install hint when it is missing, because a
/// test that silently skips its peer proves nothing.
pub fn peer_bin(name: &str) -> PathBuf {
    for dir in ["/usr/bin", "/usr/sbin", "/usr/local/bin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!(
        "{name} is not installed: run scripts/install-test-deps (apt-get install prometheus prometheus-node-exporter victoria-metrics)"
    );
}

/// A minimal collector config for tests: loopback, free port, data in `dir`.
pub fn collector_config(dir: &Path, extra: &str) -> String {
    format!("data_dir = {:?}\n\n[server]\nlisten = \"127.0.0.1:0\"\n{extra}", dir.join("data").display().to_string())
}

/// A real peer listening on 127.0.0.1 (Prometheus, node_exporter, VictoriaMetrics).
pub struct Peer {
    pub proc: Proc,
    /// `http://127.0.0.1:PORT`
    pub url: String,
}

/// Starts `cmd` (a peer that cannot announce its port) on `port` and waits until `ready_path`
/// answers 200.
fn start_peer(name: &str, mut cmd: Command, port: u16, ready_path: &str, log: &Path) -> Peer {
    let out = std::fs::File::create(log).expect("create peer log");
    cmd.stdout(out.try_clone().expect("dup log")).stderr(out).stdin(Stdio::null());
    let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
    let mut proc = Proc { child, name: name.to_string(), stdout: None };
    let url = format!("http://127.0.0.1:{port}");
    let ready = eventually(Duration::from_secs(60), || {
        if let Ok(Some(status)) = proc.child.try_wait() {
            panic!("{name} exited with {status}: {}", std::fs::read_to_string(log).unwrap_or_default());
        }
        (get(&format!("{url}{ready_path}")).0 == 200).then_some(())
    });
    assert!(
        ready.is_some(),
        "{name} not ready on {url} within 60 s: {}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
    Peer { proc, url }
}

/// Debian's node_exporter on a free port (systemd collector off: no systemd here).
pub fn node_exporter(dir: &Path) -> Peer {
    let port = free_port();
    let mut cmd = Command::new(peer_bin("prometheus-node-exporter"));
    cmd.arg(format!("--web.listen-address=127.0.0.1:{port}")).arg("--no-collector.systemd");
    start_peer("node_exporter", cmd, port, "/metrics", &dir.join("node_exporter.log"))
}

/// Debian's Prometheus with `config` (YAML) in `dir/<name>/`, the remote_write receiver on.
pub fn prometheus(dir: &Path, name: &str, config: &str) -> Peer {
    let home = dir.join(name);
    std::fs::create_dir_all(&home).expect("prometheus dir");
    std::fs::write(home.join("prometheus.yml"), config).expect("write prometheus.yml");
    let port = free_port();
    let mut cmd = Command::new(peer_bin("prometheus"));
    cmd.arg(format!("--config.file={}", home.join("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", home.join("tsdb").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--web.enable-remote-write-receiver")
        .arg("--log.level=warn");
    start_peer(name, cmd, port, "/-/ready", &home.join("prometheus.log"))
}

/// Debian's VictoriaMetrics (single node) with its data in `dir/victoria-metrics/`.
pub fn victoria_metrics(dir: &Path) -> Peer {
    victoria_metrics_on(dir, free_port())
}

/// [`victoria_metrics`] on a given port (for tests that point a sender at it before it runs).
pub fn victoria_metrics_on(dir: &Path, port: u16) -> Peer {
    let home = dir.join("victoria-metrics");
    let mut cmd = Command::new(peer_bin("victoria-metrics"));
    cmd.arg(format!("-httpListenAddr=127.0.0.1:{port}"))
        .arg(format!("-storageDataPath={}", home.display()))
        .arg("-retentionPeriod=1d")
        .arg("-search.latencyOffset=0s")
        .arg("-loggerLevel=WARN");
    start_peer("victoria-metrics", cmd, port, "/health", &dir.join("victoria-metrics.log"))
}

/// GET with headers; returns the status, the response headers (lowercase names) and the raw body.
pub fn get_raw(url: &str, headers: &[(&str, &str)]) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut req = agent().get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    match req.call() {
        Ok(mut r) => {
            let hs = r
                .headers()
                .iter()
                .map(|(k, v)| (k.as_str().to_ascii_lowercase(), v.to_str().unwrap_or("").to_string()))
                .collect();
            let body = r.body_mut().with_config().limit(1 << 30).read_to_vec().unwrap_or_default();
            (r.status().as_u16(), hs, body)
        }
        Err(e) => (0, vec![], e.to_string().into_bytes()),
    }
}

/// POST with headers; returns the status, the response headers (lowercase names) and the body.
pub fn post_raw(url: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, Vec<(String, String)>, String) {
    let mut req = agent().post(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    match req.send(body) {
        Ok(mut r) => {
            let hs = r
                .headers()
                .iter()
                .map(|(k, v)| (k.as_str().to_ascii_lowercase(), v.to_str().unwrap_or("").to_string()))
                .collect();
            (r.status().as_u16(), hs, read_body(r.body_mut()))
        }
        Err(e) => (0, vec![], e.to_string()),
    }
}

/// Runs `promtool` with `args`; returns (exit code, stdout, stderr).
pub fn promtool(args: &[&str], stdin: Option<&[u8]>) -> (i32, String, String) {
    use std::io::Write;
    let mut child = Command::new(peer_bin("promtool"))
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start promtool");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin");
        pipe.write_all(input).expect("write to promtool");
    }
    let out = child.wait_with_output().expect("promtool output");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `GET url` and parses the JSON answer (panics with the body when it is not JSON).
pub fn get_json(url: &str) -> serde_json::Value {
    let (code, body) = get(url);
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {url}: {code} {body:?} is not JSON: {e}"))
}

/// Percent-encodes a query parameter value.
pub fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One request a [`CaptureServer`] received.
pub type CapturedRequest = (std::collections::HashMap<String, String>, Vec<u8>);

/// A bare HTTP/1.1 receiver on 127.0.0.1 that records every request (lower-cased headers and
/// body) and answers with the scripted statuses in order, then 204 for ever. It stands in for a
/// receiver whose answers a test needs to control (5xx, 429, 400); everything it records came
/// over a real socket from the real sender.
pub struct CaptureServer {
    pub port: u16,
    pub requests: std::sync::Arc<std::sync::Mutex<Vec<CapturedRequest>>>,
}

impl CaptureServer {
    pub fn start(script: Vec<u16>) -> CaptureServer {
        use std::io::{Read, Write};
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind capture server");
        let port = listener.local_addr().expect("addr").port();
        let requests: std::sync::Arc<std::sync::Mutex<Vec<CapturedRequest>>> = Default::default();
        let script = std::sync::Arc::new(std::sync::Mutex::new(std::collections::VecDeque::from(script)));
        let store = requests.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { break };
                let store = store.clone();
                let script = script.clone();
                std::thread::spawn(move || {
                    let Ok(read_half) = conn.try_clone() else { return };
                    let mut reader = BufReader::new(read_half);
                    let mut writer = conn;
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let mut headers = std::collections::HashMap::new();
                        loop {
                            let mut h = String::new();
                            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                                return;
                            }
                            let h = h.trim_end();
                            if h.is_empty() {
                                break;
                            }
                            if let Some((k, v)) = h.split_once(':') {
                                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
                            }
                        }
                        let len: usize = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
                        let mut body = vec![0; len];
                        if reader.read_exact(&mut body).is_err() {
                            return;
                        }
                        let status = script.lock().map(|mut s| s.pop_front()).ok().flatten().unwrap_or(204);
                        store.lock().expect("lock").push((headers, body));
                        let reply = if status == 204 {
                            "HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n".to_string()
                        } else {
                            let text = format!("scripted answer {status}");
                            format!("HTTP/1.1 {status} Scripted\r\nContent-Length: {}\r\n\r\n{text}", text.len())
                        };
                        if writer.write_all(reply.as_bytes()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        CaptureServer { port, requests }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

/// The whole response body (up to 1 GiB: query answers in tests can pass ureq's 10 MB default).
/// A body that cannot be read panics with the reason rather than looking empty.
pub fn read_body(body: &mut ureq::Body) -> String {
    body.with_config().limit(1 << 30).read_to_string().unwrap_or_else(|e| panic!("cannot read the response body: {e}"))
}
