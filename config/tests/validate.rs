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
