//! `FILE:LINE:COL: key: problem` for each kind of mistake an operator makes.

use osprey_config::{Role, validate_file};
use std::io::Write;

fn check(role: Role, text: &str) -> Vec<String> {
    let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    f.write_all(text.as_bytes()).unwrap();
    let path = f.path().display().to_string();
    match validate_file(f.path(), Some(role)) {
        Ok(_) => vec![],
        Err(e) => e.problems.iter().map(|p| p.to_string().replacen(&path, "FILE", 1)).collect(),
    }
}

#[test]
fn defaults_are_valid_and_round_trip() {
    let agent = toml::to_string_pretty(&osprey_config::AgentConfig::default()).unwrap();
    assert_eq!(check(Role::Agent, &agent), Vec::<String>::new());
    let back: osprey_config::AgentConfig = toml::from_str(&agent).unwrap();
    assert_eq!(back, osprey_config::AgentConfig::default());
    let collector = toml::to_string_pretty(&osprey_config::CollectorConfig::default()).unwrap();
    assert_eq!(check(Role::Collector, &collector), Vec::<String>::new());
    let back: osprey_config::CollectorConfig = toml::from_str(&collector).unwrap();
    assert_eq!(back, osprey_config::CollectorConfig::default());
}

#[test]
fn unknown_key() {
    let p = check(Role::Agent, "hostname = \"a\"\n\n[collector]\nurl = \"http://c:3100\"\nbatch_bytes = 5\n");
    assert_eq!(p.len(), 1);
    assert!(p[0].starts_with("FILE:5:1: collector.batch_bytes: unknown field `batch_bytes`"), "{p:?}");
}

#[test]
fn unknown_top_level_key() {
    let p = check(Role::Collector, "[server]\nlisten = \"127.0.0.1:3100\"\n[bogus]\nx = 1\n");
    assert!(p[0].starts_with("FILE:3:2: bogus: unknown field `bogus`"), "{p:?}");
}

#[test]
fn wrong_type() {
    let p = check(Role::Agent, "[host_metrics]\nenabled = \"yes\"\n");
    assert_eq!(p, vec!["FILE:2:11: host_metrics.enabled: invalid type: string \"yes\", expected a boolean"]);
}

#[test]
fn invalid_duration() {
    let p = check(Role::Agent, "[host_metrics]\ninterval = \"15 parsecs\"\n");
    assert_eq!(p.len(), 1);
    assert!(p[0].starts_with("FILE:2:12: host_metrics.interval: invalid duration \"15 parsecs\""), "{p:?}");
}

#[test]
fn invalid_glob() {
    let p = check(Role::Agent, "[[sources.files]]\ninclude = [\"/var/log/*.log\", \"/var/log/[a.log\"]\n");
    assert_eq!(
        p,
        vec![
            "FILE:2:30: sources.files[0].include[1]: invalid glob \"/var/log/[a.log\": unclosed character class; missing ']'"
        ]
    );
}

#[test]
fn invalid_url() {
    let p = check(Role::Agent, "[collector]\nurl = \"ftp://collector:3100\"\n");
    assert_eq!(
        p,
        vec![
            "FILE:2:7: collector.url: invalid URL \"ftp://collector:3100\": scheme must be http or https, not \"ftp\""
        ]
    );
    let p = check(Role::Agent, "[collector]\nurl = \"not a url\"\n");
    assert_eq!(p, vec!["FILE:2:7: collector.url: invalid URL \"not a url\": relative URL without a base"]);
}

#[test]
fn several_problems_are_all_reported() {
    let p = check(
        Role::Agent,
        "[collector]\nurl = \"nope\"\nbatch_max_bytes = 0\n[[sources.files]]\ninclude = []\nlabels = { \"bad-name\" = \"x\" }\n",
    );
    assert_eq!(p.len(), 4, "{p:?}");
}

#[test]
fn syntax_error() {
    let p = check(Role::Collector, "[server\nlisten = 1\n");
    assert_eq!(p.len(), 1);
    assert!(p[0].starts_with("FILE:1:8: (syntax): "), "{p:?}");
}

#[test]
fn role_is_guessed_from_sections() {
    let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    f.write_all(b"[logs]\nfsync = \"always\"\n").unwrap();
    assert_eq!(validate_file(f.path(), None).unwrap(), Role::Collector);
}

#[test]
fn metrics_limits_and_forwarding_targets() {
    let p = check(
        Role::Collector,
        "[metrics]\nmax_series = 10\nmax_series_per_tenant = 20\nagent_label = \"bad-label\"\n\
         [[metrics.forward]]\nname = \"vm\"\nurl = \"http://vm:8428/api/v1/write\"\n\
         [[metrics.forward]]\nname = \"vm\"\nurl = \"ftp://x\"\nqueue_max_bytes = 1024\n",
    );
    assert_eq!(
        p,
        vec![
            "FILE:3:25: metrics.max_series_per_tenant: must be at most metrics.max_series",
            "FILE:4:15: metrics.agent_label: \"bad-label\" is not a valid Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*)",
            "FILE:9:8: metrics.forward[1].name: \"vm\" is used by another forwarding target",
            "FILE:10:7: metrics.forward[1].url: invalid URL \"ftp://x\": scheme must be http or https, not \"ftp\"",
            "FILE:11:19: metrics.forward[1].queue_max_bytes: must be at least 4 MiB (4194304)",
        ]
    );
    let p = check(Role::Collector, "[[metrics.forward]]\nurl = \"http://vm:8428/api/v1/write\"\nbogus = 1\n");
    assert!(p[0].contains("metrics.forward[0].bogus: unknown field `bogus`"), "{p:?}");
}

#[test]
fn auth_is_required_beyond_loopback() {
    let p = check(Role::Collector, "[server]\nlisten = \"0.0.0.0:3100\"\n");
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].starts_with("FILE:2:10: server.listen: 0.0.0.0:3100 is reachable from other hosts but auth is off"),
        "{p:?}"
    );
    let explicit = "[server]\nlisten = \"0.0.0.0:3100\"\n[auth]\nallow_unauthenticated = true\n";
    assert_eq!(check(Role::Collector, explicit), Vec::<String>::new());
    assert_eq!(check(Role::Collector, "[server]\nlisten = \"[::1]:3100\"\n"), Vec::<String>::new());
}

#[test]
fn tokens_and_tls_are_checked() {
    let p = check(
        Role::Collector,
        "[server.tls]\nkey_file = \"/k.pem\"\nclient_ca_file = \"/ca.pem\"\n\
         [auth]\nenabled = true\n\
         [[auth.tokens]]\nname = \"agents\"\nfile = \"/t\"\nscopes = [\"push\"]\n\
         [[auth.tokens]]\nname = \"agents\"\nfile = \"\"\nscopes = [\"query\"]\ntenants = [\"a|b\", \"*\"]\n",
    );
    let joined = p.join("\n");
    for expected in [
        "server.tls.cert_file: must be set when key_file is set",
        "server.tls.client_ca_file: client certificates need TLS",
        "auth.tokens[0].tenants: a push or query token needs its tenants",
        "auth.tokens[1].name: \"agents\" is used by another token",
        "auth.tokens[1].file: must name the file holding the secret",
        "auth.tokens[1].tenants: \"*\" (any tenant) must be the only entry",
        "auth.tokens[1].tenants[0]: tenant name \"a|b\" holds '|'",
    ] {
        assert!(joined.contains(expected), "missing {expected:?} in:\n{joined}");
    }
    let p = check(Role::Collector, "[[auth.tokens]]\nname = \"x\"\nfile = \"/x\"\nscopes = [\"write\"]\n");
    assert!(p[0].starts_with("FILE:4:11: auth.tokens[0].scopes[0]: unknown variant `write`"), "{p:?}");
    let p = check(Role::Collector, "[auth]\nenabled = true\n");
    assert!(p[0].contains("auth.tokens: auth.enabled needs at least one [[auth.tokens]]"), "{p:?}");
    let p = check(Role::Agent, "[server.tls]\ncert_file = \"/c.pem\"\n[collector.tls]\nkey_file = \"/k\"\n");
    assert_eq!(p.len(), 2, "{p:?}");
    assert!(p[0].contains("server.tls.key_file: must be set when cert_file is set"), "{p:?}");
    assert!(p[1].contains("collector.tls.cert_file: must be set when key_file is set"), "{p:?}");
}

#[test]
fn tenant_limits_are_checked() {
    let p = check(
        Role::Collector,
        "[limits]\nlog_bytes_per_second = 1000\nlog_burst_bytes = 10\n\
         [limits.tenants.\"a b\"]\nmax_streams = 1\n\
         [limits.tenants.team]\nmax_series = 0\nsamples_per_second = 100\nsample_burst = 5\n",
    );
    let joined = p.join("\n");
    for expected in [
        "limits.log_burst_bytes: must be 0 (one second's worth) or at least the rate (1000)",
        "tenant name \"a b\" holds ' '",
        "limits.tenants.team.max_series: must be greater than 0",
        "limits.tenants.team.sample_burst: must be 0 (one second's worth) or at least the rate (100)",
    ] {
        assert!(joined.contains(expected), "missing {expected:?} in:\n{joined}");
    }
    let cfg: osprey_config::CollectorConfig = toml::from_str(
        "[limits]\nlog_bytes_per_second = 1000\n[limits.tenants.team]\nlog_bytes_per_second = 50\nmax_streams = 7\n",
    )
    .unwrap();
    let team = cfg.limits_for("team");
    assert_eq!((team.log_bytes_per_second, team.log_burst_bytes, team.max_streams), (50, 50, 7));
    let other = cfg.limits_for("other");
    assert_eq!((other.log_bytes_per_second, other.log_burst_bytes, other.max_streams), (1000, 1000, 5000));
}
