//! TLS on every listener, with certificates made in the test (rcgen): the agent ships to a
//! collector that requires client certificates, `osprey query` reads over https and wss, the
//! agent's own /metrics is served over https behind a token; expired certificates, a wrong CA,
//! a missing or foreign client certificate and plain HTTP on a TLS port fail with errors that say
//! so; and a certificate rotated on disk is picked up without dropping an open connection.

mod harness;
mod security_support;

use harness::*;
use security_support::*;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

fn tls_section(cert: &Issued, client_ca: Option<&Path>, reload: &str) -> String {
    format!(
        "[server.tls]\ncert_file = {:?}\nkey_file = {:?}\nclient_ca_file = {:?}\nreload_interval = {reload:?}\n",
        cert.cert.display().to_string(),
        cert.key.display().to_string(),
        client_ca.map(|p| p.display().to_string()).unwrap_or_default(),
    )
}

fn query_range(q: &str) -> String {
    format!("/loki/api/v1/query_range?query={}&since=1h&limit=100", enc(q))
}

#[test]
fn agent_ships_over_mutual_tls_and_every_listener_speaks_https() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pki = Pki::new(dir, "main");
    let collector_cert = pki.issue("collector", "first", None);
    let agent_client = pki.issue("agent-client", "agent client", None);
    let agent_server = pki.issue("agent-server", "agent server", None);
    let reader = pki.issue("reader", "reader", None);

    let (_collector, url) =
        start_collector(dir, &collector_config(dir, &tls_section(&collector_cert, Some(&pki.ca_file()), "10s")));
    assert!(url.starts_with("https://"), "the collector announces https: {url}");

    let token = dir.join("metrics.token");
    std::fs::write(&token, "agent-metrics-token-0123456789\n").unwrap();
    let log = dir.join("app.log");
    std::fs::write(&log, "hello over mutual tls\n").unwrap();
    let agent_dir = dir.join("agent");
    std::fs::create_dir_all(&agent_dir).unwrap();
    let agent_cfg = format!(
        r#"data_dir = {data:?}
hostname = "tls-test"

[server]
listen = "127.0.0.1:0"
bearer_token_file = {token:?}

{server_tls}
[collector]
url = {url:?}
batch_max_wait = "100ms"
retry_initial_backoff = "50ms"
retry_max_backoff = "500ms"

[collector.tls]
ca_file = {ca:?}
cert_file = {cert:?}
key_file = {key:?}

[[sources.files]]
job = "app"
include = [{log:?}]
read_from = "beginning"

[host_metrics]
enabled = false
"#,
        data = agent_dir.join("data").display().to_string(),
        token = token.display().to_string(),
        server_tls = tls_section(&agent_server, None, "10s"),
        ca = pki.ca_file().display().to_string(),
        cert = agent_client.cert.display().to_string(),
        key = agent_client.key.display().to_string(),
        log = log.display().to_string(),
    );
    let (_agent, agent_url) = start_agent(&agent_dir, &agent_cfg);
    assert!(agent_url.starts_with("https://"), "the agent announces https: {agent_url}");

    // The line crossed mutual TLS; a client with a certificate of the same CA reads it back.
    let with_cert = client_tls(&pki.ca_file(), Some(&reader));
    let found = eventually(Duration::from_secs(30), || {
        let a = https(&url, &with_cert, "GET", &query_range(r#"{job="app"}"#), &[], b"").ok()?;
        (a.status == 200 && a.body.contains("hello over mutual tls")).then_some(a)
    });
    assert!(
        found.is_some(),
        "the agent's line never arrived over mTLS; agent log:\n{}",
        read(&agent_dir.join("agent.log"))
    );

    // The agent's own listener: https, /metrics behind the token, /ready open.
    let no_cert = client_tls(&pki.ca_file(), None);
    let a = https(&agent_url, &no_cert, "GET", "/metrics", &[], b"").unwrap();
    assert_eq!(a.status, 401, "{a:?}");
    assert!(a.body.contains("server.bearer_token_file"), "{a:?}");
    let a = https(&agent_url, &no_cert, "GET", "/metrics", &[("Authorization", "Bearer wrong-token-0000000000")], b"")
        .unwrap();
    assert_eq!(a.status, 401, "{a:?}");
    assert!(a.body.contains("invalid token"), "{a:?}");
    let a = https(
        &agent_url,
        &no_cert,
        "GET",
        "/metrics",
        &[("Authorization", "Bearer agent-metrics-token-0123456789")],
        b"",
    )
    .unwrap();
    assert_eq!(a.status, 200, "{a:?}");
    assert!(a.body.contains("osprey_agent_batches_sent_total"), "{}", a.body);
    assert_eq!(https(&agent_url, &no_cert, "GET", "/ready", &[], b"").unwrap().status, 200);

    // `osprey query` over https with a CA file and a client certificate...
    let ca = pki.ca_file().display().to_string();
    let cert = reader.cert.display().to_string();
    let key = reader.key.display().to_string();
    let tls_args = ["--ca-file", ca.as_str(), "--cert-file", cert.as_str(), "--key-file", key.as_str()];
    let mut args = vec!["query", "--addr", url.as_str(), r#"{job="app"}"#, "--since", "1h"];
    args.extend(tls_args);
    let (code, out, err) = osprey(&args);
    assert_eq!(code, 0, "osprey query over https: {err}");
    assert!(out.contains("hello over mutual tls"), "{out}");

    // ... and --tail over wss.
    let mut tail = Command::new(osprey_bin())
        .args(["query", "--addr", url.as_str(), r#"{job="app"}"#, "--tail", "--since", "1h"])
        .args(tls_args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = tail.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let first = rx.recv_timeout(Duration::from_secs(30));
    let _ = tail.kill();
    let err = tail.wait_with_output().map(|o| String::from_utf8_lossy(&o.stderr).into_owned()).unwrap_or_default();
    assert_eq!(first.as_deref(), Ok("hello over mutual tls"), "osprey query --tail over wss: {err}");
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

#[test]
fn bad_certificates_and_plain_http_fail_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pki = Pki::new(dir, "main");
    let stranger = Pki::new(dir, "stranger");
    let good = pki.issue("collector", "first", None);
    let expired = pki.issue("expired", "second", Some((2000, 2001)));

    // Mutual TLS required.
    let mtls_dir = dir.join("mtls");
    std::fs::create_dir_all(&mtls_dir).unwrap();
    let (_mtls, mtls_url) =
        start_collector(&mtls_dir, &collector_config(&mtls_dir, &tls_section(&good, Some(&pki.ca_file()), "10s")));
    // A client that trusts another CA refuses the server.
    let e = https(&mtls_url, &client_tls(&stranger.ca_file(), None), "GET", "/ready", &[], b"").unwrap_err();
    assert!(e.contains("invalid peer certificate") && e.contains("UnknownIssuer"), "{e}");
    // A client without a certificate is refused by the server (TLS 1.3: after its handshake).
    let e = https(&mtls_url, &client_tls(&pki.ca_file(), None), "GET", "/ready", &[], b"").unwrap_err();
    assert!(e.contains("CertificateRequired") || e.contains("alert"), "{e}");
    // A client certificate from another CA is refused.
    let foreign = stranger.issue("foreign-client", "foreign", None);
    let e = https(&mtls_url, &client_tls(&pki.ca_file(), Some(&foreign)), "GET", "/ready", &[], b"").unwrap_err();
    assert!(e.contains("alert") || e.contains("UnknownCA") || e.contains("BadCertificate"), "{e}");
    // The right certificate works.
    let mine = pki.issue("client", "client", None);
    let ok = https(&mtls_url, &client_tls(&pki.ca_file(), Some(&mine)), "GET", "/ready", &[], b"").unwrap();
    assert_eq!(ok.status, 200);
    let refused = eventually(Duration::from_secs(10), || {
        let m = https(&mtls_url, &client_tls(&pki.ca_file(), Some(&mine)), "GET", "/metrics", &[], b"").ok()?;
        let n = metric(&m.body, r#"osprey_http_connections_refused_total{reason="tls_handshake"}"#);
        (n >= 2.0).then_some(n)
    });
    assert!(refused.is_some(), "failed handshakes are counted");

    // Plain HTTP against the TLS port: a 400 that says to use https.
    let (code, body) = get(&format!("{}/ready", mtls_url.replace("https://", "http://")));
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("This port speaks HTTPS") && body.contains("https://"), "{body}");

    // An expired server certificate: `osprey query` says so.
    let exp_dir = dir.join("expired");
    std::fs::create_dir_all(&exp_dir).unwrap();
    let (_exp, exp_url) = start_collector(&exp_dir, &collector_config(&exp_dir, &tls_section(&expired, None, "10s")));
    let ca = pki.ca_file().display().to_string();
    let (code, _, err) = osprey(&["query", "--addr", exp_url.as_str(), "--ca-file", ca.as_str(), r#"{job="x"}"#]);
    assert_ne!(code, 0);
    assert!(err.contains("certificate expired"), "{err}");
    // A wrong CA: `osprey query` says so too.
    let other = stranger.ca_file().display().to_string();
    let (code, _, err) = osprey(&["query", "--addr", mtls_url.as_str(), "--ca-file", other.as_str(), r#"{job="x"}"#]);
    assert_ne!(code, 0);
    assert!(err.contains("UnknownIssuer"), "{err}");
    // A CA file that is not one: the flag and the file are named.
    let bogus = good.key.display().to_string();
    let (code, _, err) = osprey(&["query", "--addr", mtls_url.as_str(), "--ca-file", bogus.as_str(), r#"{job="x"}"#]);
    assert_ne!(code, 0);
    assert!(err.contains("--ca-file") && err.contains("holds no certificate"), "{err}");

    // A collector whose key does not match its certificate does not start, and says why.
    let broken_dir = dir.join("broken");
    std::fs::create_dir_all(&broken_dir).unwrap();
    let mismatched = Issued { cert: good.cert.clone(), key: expired.key.clone() };
    let path = broken_dir.join("collector.toml");
    std::fs::write(&path, collector_config(&broken_dir, &tls_section(&mismatched, None, "10s"))).unwrap();
    let (code, _, err) = osprey(&["collector", "--config", path.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(err.contains("server.tls.cert_file") && err.contains("do not make a usable certificate"), "{err}");
}

#[test]
fn a_rotated_certificate_is_picked_up_and_open_connections_stay() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pki = Pki::new(dir, "main");
    let live = pki.issue("live", "first", None);
    let (_collector, url) = start_collector(dir, &collector_config(dir, &tls_section(&live, None, "200ms")));
    let tls = client_tls(&pki.ca_file(), None);

    let mut open = TlsConn::connect(&url, &tls).unwrap();
    assert_eq!(open.server_cn(), "first");
    assert_eq!(open.request("GET", "/ready", &[], b"").unwrap().status, 200);

    // Rotate: a new pair replaces the files in place (key first, as a renewal script would).
    let next = pki.issue("next", "second", None);
    std::fs::copy(&next.key, &live.key).unwrap();
    std::fs::copy(&next.cert, &live.cert).unwrap();
    let rotated = eventually(Duration::from_secs(20), || {
        let c = TlsConn::connect(&url, &tls).ok()?;
        (c.server_cn() == "second").then_some(())
    });
    assert!(rotated.is_some(), "new connections never got the rotated certificate");

    // The connection opened before the rotation still works, with the certificate it began with.
    let a = open.request("GET", "/ready", &[], b"").expect("the open connection survived the rotation");
    assert_eq!(a.status, 200);
    assert_eq!(open.server_cn(), "first");

    // A broken rewrite is refused and the running certificate stays.
    std::fs::write(&live.cert, "not a certificate\n").unwrap();
    let counted = eventually(Duration::from_secs(20), || {
        let m = https(&url, &tls, "GET", "/metrics", &[], b"").ok()?;
        (metric(&m.body, r#"osprey_tls_reloads_total{result="error"}"#) >= 1.0).then_some(m)
    });
    assert!(counted.is_some(), "the broken files were never looked at");
    let c = TlsConn::connect(&url, &tls).unwrap();
    assert_eq!(c.server_cn(), "second");
    let log = read(&dir.join("collector.log"));
    assert!(log.contains("TLS files changed but cannot be used") && log.contains("server.tls.cert_file"), "{log}");
}

/// With file watching off (`reload_interval = "0s"`), SIGHUP is what loads a renewed
/// certificate; a broken one is refused with the file named and the running one stays.
#[test]
fn sighup_reloads_the_certificate_and_refuses_a_broken_one() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pki = Pki::new(dir, "main");
    let live = pki.issue("live", "first", None);
    let (collector, url) = start_collector(dir, &collector_config(dir, &tls_section(&live, None, "0s")));
    let tls = client_tls(&pki.ca_file(), None);
    assert_eq!(TlsConn::connect(&url, &tls).unwrap().server_cn(), "first");

    let next = pki.issue("next", "second", None);
    std::fs::copy(&next.key, &live.key).unwrap();
    std::fs::copy(&next.cert, &live.cert).unwrap();
    // Not watched: the old certificate is still served until the signal.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(TlsConn::connect(&url, &tls).unwrap().server_cn(), "first");
    collector.signal("HUP");
    let rotated = eventually(Duration::from_secs(20), || {
        (TlsConn::connect(&url, &tls).ok()?.server_cn() == "second").then_some(())
    });
    assert!(rotated.is_some(), "SIGHUP did not load the renewed certificate");

    std::fs::write(&live.cert, "not a certificate\n").unwrap();
    collector.signal("HUP");
    let log = wait_for_log(&dir.join("collector.log"), "configuration reload rejected", 1, Duration::from_secs(20));
    assert!(log.contains("server.tls.cert_file"), "the refusal names the key: {log}");
    assert_eq!(TlsConn::connect(&url, &tls).unwrap().server_cn(), "second");
    let m = https(&url, &tls, "GET", "/metrics", &[], b"").unwrap();
    assert!(metric(&m.body, r#"osprey_config_reloads_total{result="failure"}"#) >= 1.0, "{}", m.body);
}

/// `osprey status` reaches a collector that speaks https and wants a `metrics` token, with the
/// same flags as `osprey query`; without the token it shows the refusal and exits 1.
#[test]
fn status_reads_a_secured_collector() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pki = Pki::new(dir, "main");
    let live = pki.issue("live", "collector", None);
    let token = dir.join("metrics.token");
    std::fs::write(&token, "metrics-secret-for-status-0123\n").unwrap();
    let auth = format!(
        "[auth]\nenabled = true\n[[auth.tokens]]\nname = \"status\"\nfile = {:?}\nscopes = [\"metrics\"]\ntenants = []\n",
        token.display().to_string()
    );
    let config = collector_config(dir, &format!("{}{auth}", tls_section(&live, None, "0s")));
    let (_collector, url) = start_collector(dir, &config);
    assert!(url.starts_with("https://"), "{url}");
    let ca = pki.ca_file().display().to_string();
    let token_arg = token.display().to_string();
    let base = ["status", "--collector", url.as_str(), "--once", "--interval", "200ms", "--ca-file", ca.as_str()];

    let mut with_token = base.to_vec();
    with_token.extend(["--bearer-token-file", token_arg.as_str()]);
    let (code, out, err) = osprey(&with_token);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&format!("collector {url}  health ok")), "{out}");

    let (code, out, _) = osprey(&base);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("401"), "the refusal is shown: {out}");
}
