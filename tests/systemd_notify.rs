//! The binary as systemd runs it (`Type=notify`, `WatchdogSec=`, `ExecReload=kill -HUP`): the
//! test plays the service manager with a real notification socket and real signals.

mod harness;

use harness::*;
use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::{Duration, Instant};

/// A notification socket like systemd's: the test reads what the daemon sends.
struct NotifySocket {
    sock: UnixDatagram,
    path: std::path::PathBuf,
}

impl NotifySocket {
    fn bind(dir: &std::path::Path) -> NotifySocket {
        let path = dir.join("notify.sock");
        let sock = UnixDatagram::bind(&path).expect("bind notify socket");
        sock.set_read_timeout(Some(Duration::from_millis(200))).expect("read timeout");
        NotifySocket { sock, path }
    }

    /// Collects messages until `done` says the collected ones are enough, or `timeout` passes.
    fn until(&self, timeout: Duration, done: impl Fn(&[String]) -> bool) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline && !done(&seen) {
            if let Ok(n) = self.sock.recv(&mut buf) {
                seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
        seen
    }
}

fn watchdog_pings(msgs: &[String]) -> usize {
    msgs.iter().filter(|m| m.lines().any(|l| l == "WATCHDOG=1")).count()
}

fn start(dir: &std::path::Path, role: &str, config: &str, notify: &NotifySocket) -> (Proc, String) {
    let path = dir.join(format!("{role}.toml"));
    std::fs::write(&path, config).unwrap();
    let mut cmd = Command::new(osprey_bin());
    cmd.arg(role).arg("--config").arg(&path);
    cmd.env("NOTIFY_SOCKET", &notify.path).env("WATCHDOG_USEC", "400000").env_remove("WATCHDOG_PID");
    let marker = format!("osprey {role} listening");
    let (proc, line) = spawn_until(role, cmd, &marker, &dir.join(format!("{role}.log")), Duration::from_secs(60));
    (proc, url_in(&line))
}

#[test]
fn collector_notifies_ready_then_pings_the_watchdog_and_survives_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let notify = NotifySocket::bind(dir.path());
    let (mut proc, url) = start(dir.path(), "collector", &collector_config(dir.path(), ""), &notify);

    let msgs = notify.until(Duration::from_secs(30), |m| watchdog_pings(m) >= 2);
    let ready = msgs.iter().position(|m| m.lines().any(|l| l == "READY=1"));
    let first_ping = msgs.iter().position(|m| m.lines().any(|l| l == "WATCHDOG=1"));
    assert!(ready.is_some(), "no READY=1 from the collector; got {msgs:?}");
    assert!(watchdog_pings(&msgs) >= 2, "fewer than 2 WATCHDOG=1 pings; got {msgs:?}");
    assert!(ready < first_ping, "READY=1 must come before the watchdog pings: {msgs:?}");
    // READY=1 is sent once listening: the HTTP API answers by now.
    assert_eq!(get(&format!("{url}/ready")).0, 200);

    // SIGHUP is `systemctl reload`: the config is reloaded, systemd hears RELOADING=1 (with
    // MONOTONIC_USEC) then READY=1 with the outcome, and the process keeps serving.
    let status = Command::new("kill").arg("-HUP").arg(proc.pid().to_string()).status().unwrap();
    assert!(status.success());
    let log = dir.path().join("collector.log");
    let logged = eventually(Duration::from_secs(20), || {
        std::fs::read_to_string(&log).ok().filter(|l| l.contains("configuration reloaded")).map(|_| ())
    });
    assert!(logged.is_some(), "no reload log line after SIGHUP");
    let msgs = notify.until(Duration::from_secs(20), |m| m.iter().any(|x| x.contains("configuration reloaded")));
    let reloading = msgs.iter().position(|m| m.lines().any(|l| l == "RELOADING=1"));
    let ready = msgs.iter().position(|m| m.lines().any(|l| l == "READY=1") && m.contains("configuration reloaded"));
    assert!(reloading.is_some() && reloading < ready, "RELOADING=1 then READY=1 with a status: {msgs:?}");
    assert!(msgs[reloading.unwrap()].contains("MONOTONIC_USEC="), "{msgs:?}");
    assert!(proc.child.try_wait().unwrap().is_none(), "SIGHUP killed the collector");
    assert_eq!(get(&format!("{url}/ready")).0, 200);
    // Still pinging after the signal.
    let more = notify.until(Duration::from_secs(30), |m| watchdog_pings(m) >= 1);
    assert!(watchdog_pings(&more) >= 1, "watchdog pings stopped after SIGHUP: {more:?}");

    // SIGTERM still stops it, cleanly, after saying STOPPING=1.
    let exit = proc.terminate(Duration::from_secs(30)).expect("collector did not exit on SIGTERM");
    assert!(exit.success(), "collector exit status {exit:?}");
    let after = notify.until(Duration::from_secs(5), |m| m.iter().any(|x| x.contains("STOPPING=1")));
    assert!(after.iter().any(|m| m.contains("STOPPING=1")), "no STOPPING=1: {after:?}");
}

#[test]
fn agent_notifies_ready_and_survives_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let notify = NotifySocket::bind(dir.path());
    let config = format!(
        "data_dir = {:?}\n[server]\nlisten = \"127.0.0.1:0\"\n[collector]\nurl = \"http://127.0.0.1:9\"\n\
         [[sources.files]]\ninclude = [{:?}]\n[host_metrics]\nenabled = false\n",
        dir.path().join("data").display().to_string(),
        dir.path().join("logs/*.log").display().to_string(),
    );
    let (mut proc, url) = start(dir.path(), "agent", &config, &notify);
    let msgs = notify.until(Duration::from_secs(30), |m| watchdog_pings(m) >= 1);
    assert!(msgs.iter().any(|m| m.lines().any(|l| l == "READY=1")), "no READY=1 from the agent: {msgs:?}");
    assert!(watchdog_pings(&msgs) >= 1, "no WATCHDOG=1 from the agent: {msgs:?}");

    Command::new("kill").arg("-HUP").arg(proc.pid().to_string()).status().unwrap();
    let log = dir.path().join("agent.log");
    let logged = eventually(Duration::from_secs(20), || {
        std::fs::read_to_string(&log).ok().filter(|l| l.contains("configuration reloaded")).map(|_| ())
    });
    assert!(logged.is_some(), "no reload log line after SIGHUP");
    assert!(proc.child.try_wait().unwrap().is_none(), "SIGHUP killed the agent");
    assert_eq!(get(&format!("{url}/ready")).0, 200);
}

#[test]
fn without_notify_socket_nothing_changes() {
    // Outside systemd (no NOTIFY_SOCKET, no WATCHDOG_USEC) the collector starts and serves as before.
    let dir = tempfile::tempdir().unwrap();
    let (mut proc, url) = start_collector(dir.path(), &collector_config(dir.path(), ""));
    assert_eq!(get(&format!("{url}/ready")).0, 200);
    let exit = proc.terminate(Duration::from_secs(30)).expect("collector did not exit on SIGTERM");
    assert!(exit.success());
}
