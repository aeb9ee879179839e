//! The installed deb, used as shipped: the default `/etc/osprey/agent.toml`, started as the
//! `osprey` user on a machine with the usual `/var/log`, ships to a local collector (the shipped
//! `/etc/osprey/collector.toml`, same user) with no changes.
//!
//! It needs the package installed and root (to switch to the `osprey` user and to write in
//! /var/log), so it is ignored in the normal suite and run by `packaging/check` right after
//! `dpkg -i` (as `cargo nextest run -p osprey --test packaging_deb --run-ignored only`). It uses
//! the installed `/usr/bin/osprey`, not the build tree's binary, and the fixed default ports
//! 127.0.0.1:3100 and 127.0.0.1:9101, because that is what "no changes" means.

mod harness;

use harness::*;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const BIN: &str = "/usr/bin/osprey";

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(out.status.success(), "{cmd} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `osprey ROLE --config /etc/osprey/ROLE.toml` as the osprey user, with its groups (adm), the
/// way systemd's User= starts it.
fn start_as_osprey(role: &str, log: &Path) -> (Proc, String) {
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=osprey", "--regid=osprey", "--init-groups", "--"])
        .arg(BIN)
        .arg(role)
        .arg("--config")
        .arg(format!("/etc/osprey/{role}.toml"))
        .env_remove("OSPREY_COLLECTOR_URL")
        .env_remove("OSPREY_AUTH_TOKEN")
        .env_remove("OSPREY_DATA_DIR");
    let (proc, line) =
        spawn_until(&format!("osprey {role}"), cmd, &format!("osprey {role} listening"), log, Duration::from_secs(60));
    (proc, url_in(&line))
}

fn uid_of(pid: u32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Removes the test's files from /var/log even when an assertion fails.
struct Cleanup(Vec<std::path::PathBuf>);
impl Drop for Cleanup {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

#[test]
#[ignore = "needs the osprey deb installed and root: run by packaging/check"]
fn shipped_default_agent_config_ships_var_log_to_a_local_collector_as_the_osprey_user() {
    // The package is installed, with the configs exactly as the repository ships them.
    assert!(Path::new(BIN).exists(), "{BIN} missing: install the deb first (packaging/check does)");
    assert_eq!(run("id", &["-u"]), "0", "must run as root to switch to the osprey user");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/etc");
    for name in ["agent.toml", "collector.toml"] {
        assert_eq!(
            std::fs::read(Path::new("/etc/osprey").join(name)).unwrap(),
            std::fs::read(repo.join(name)).unwrap(),
            "/etc/osprey/{name} is not the shipped file"
        );
    }
    let groups = run("id", &["-nG", "osprey"]);
    assert!(groups.split_whitespace().any(|g| g == "adm"), "osprey is not in group adm: {groups}");
    let osprey_uid: u32 = run("id", &["-u", "osprey"]).parse().unwrap();
    for port in [3100, 9101] {
        assert!(
            std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
            "127.0.0.1:{port} is taken; the shipped configs use it: stop what listens there"
        );
    }

    let tmp = tempfile::tempdir().unwrap();
    let (collector, curl) = start_as_osprey("collector", &tmp.path().join("collector.log"));
    assert_eq!(curl, "http://127.0.0.1:3100");
    let (agent, aurl) = start_as_osprey("agent", &tmp.path().join("agent.log"));
    assert_eq!(aurl, "http://127.0.0.1:9101");
    assert_eq!(uid_of(collector.pid()), osprey_uid, "collector does not run as osprey");
    assert_eq!(uid_of(agent.pid()), osprey_uid, "agent does not run as osprey");

    // A log file like syslog's (root:adm 0640) created after the agent started: read from its
    // start. And one only root may read (0600): the agent must not see it (it is not root).
    let id = std::process::id();
    let adm_log = Path::new("/var/log").join(format!("osprey-packaging-test-{id}.log"));
    let private_log = Path::new("/var/log").join(format!("osprey-packaging-private-{id}.log"));
    let mut cleanup = Cleanup(vec![adm_log.clone(), private_log.clone()]);
    let adm_gid = run("getent", &["group", "adm"]).split(':').nth(2).unwrap().parse::<u32>().unwrap();
    let marker = format!("osprey packaging test line {id}");
    for (path, mode, gid, text) in
        [(&adm_log, 0o640, adm_gid, marker.clone()), (&private_log, 0o600, 0, format!("secret {id}"))]
    {
        std::fs::write(path, format!("{text}\n")).unwrap();
        std::os::unix::fs::chown(path, Some(0), Some(gid)).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
        assert_eq!(std::fs::metadata(path).unwrap().gid(), gid);
    }

    // Debian's syslog has no .log suffix: the shipped config names it. Created like rsyslog does
    // (root:adm 0640) when this machine has none, and removed afterwards.
    let syslog = Path::new("/var/log/syslog");
    if !syslog.exists() {
        std::fs::write(syslog, "").unwrap();
        std::os::unix::fs::chown(syslog, Some(0), Some(adm_gid)).unwrap();
        std::fs::set_permissions(syslog, std::fs::Permissions::from_mode(0o640)).unwrap();
        cleanup.0.push(syslog.to_path_buf());
    }
    let syslog_marker = format!("osprey packaging test syslog line {id}");
    let mut f = std::fs::OpenOptions::new().append(true).open(syslog).unwrap();
    std::io::Write::write_all(&mut f, format!("{syslog_marker}\n").as_bytes()).unwrap();
    drop(f);

    let query = format!(r#"{{job="varlogs", filename="{}"}}"#, adm_log.display());
    let found = eventually(Duration::from_secs(60), || {
        let (code, out, _) = osprey(&["query", "--addr", &curl, "--since", "1h", &query]);
        (code == 0 && out.contains(&marker)).then_some(out)
    });
    assert!(
        found.is_some(),
        "the line written to {} never reached the collector; agent log:\n{}",
        adm_log.display(),
        std::fs::read_to_string(tmp.path().join("agent.log")).unwrap_or_default()
    );

    let query = r#"{job="varlogs", filename="/var/log/syslog"}"#;
    let found = eventually(Duration::from_secs(60), || {
        let (code, out, _) = osprey(&["query", "--addr", &curl, "--since", "1h", query]);
        (code == 0 && out.contains(&syslog_marker)).then_some(out)
    });
    assert!(found.is_some(), "the line appended to /var/log/syslog never reached the collector");

    // The unreadable file was seen and counted, and none of it shipped.
    let counted = eventually(Duration::from_secs(30), || {
        let (_, body) = get(&format!("{aurl}/metrics"));
        body.lines()
            .find(|l| l.starts_with("osprey_agent_files_unreadable_total "))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .filter(|v| *v >= 1.0)
    });
    assert!(counted.is_some(), "the 0600 root file was not counted as unreadable");
    let (_, out, _) =
        osprey(&["query", "--addr", &curl, "--since", "1h", &format!(r#"{{job="varlogs"}} |= "secret {id}""#)]);
    assert!(out.trim().is_empty(), "a root-only file was shipped: {out}");

    // Host metrics arrive too, with this host's name (default interval 15 s).
    let host = run("cat", &["/proc/sys/kernel/hostname"]);
    let federated = eventually(Duration::from_secs(60), || {
        let (code, body) = get(&format!("{curl}/federate?match[]=node_load1"));
        (code == 200 && body.contains(&format!("host=\"{host}\""))).then_some(())
    });
    assert!(federated.is_some(), "node_load1 from host {host} never reached /federate");

    // The collector keeps its data where the package prepared it, owned by osprey.
    let data = std::fs::metadata("/var/lib/osprey/collector").expect("collector data dir");
    assert_eq!(data.uid(), osprey_uid, "/var/lib/osprey/collector is not owned by osprey");
}
