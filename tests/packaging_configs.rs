//! The configs the packages ship (`packaging/etc/*.toml`, installed as `/etc/osprey/*.toml` by the
//! deb, the container image, the Kubernetes ConfigMaps and the Ansible roles' defaults) stay valid,
//! and their commented-out settings stay true: every key of the role is documented, each with its
//! real default, so uncommenting a line never changes behaviour by surprise.

mod harness;

use harness::osprey;
use osprey_config::{AgentConfig, CollectorConfig};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn shipped(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/etc").join(name)
}

/// The file with every commented-out setting (`#key = …`, `#[section]`: a '#' directly followed
/// by a key or a table header; prose comments have a space after the '#') switched on.
fn uncommented(text: &str) -> String {
    text.lines()
        .map(|l| match l.strip_prefix('#') {
            Some(rest) if rest.starts_with(|c: char| c.is_ascii_lowercase() || c == '[') => rest,
            _ => l,
        })
        .map(|l| format!("{l}\n"))
        .collect()
}

/// Dotted key paths of a TOML document (array-of-tables entries are merged under `key[]`).
fn keys(value: &toml::Value, prefix: &str, out: &mut BTreeSet<String>) {
    match value {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let path = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                out.insert(path.clone());
                keys(v, &path, out);
            }
        }
        toml::Value::Array(items) if items.iter().all(toml::Value::is_table) => {
            for item in items {
                keys(item, &format!("{prefix}[]"), out);
            }
        }
        _ => {}
    }
}

fn key_set(text: &str) -> BTreeSet<String> {
    let v: toml::Value = toml::from_str(text).expect("parses as TOML");
    let mut out = BTreeSet::new();
    keys(&v, "", &mut out);
    out
}

fn assert_documents_every_key(file: &str, text: &str, defaults: &str) {
    let documented = key_set(&uncommented(text));
    let all = key_set(defaults);
    let missing: Vec<_> = all.difference(&documented).collect();
    let unknown: Vec<_> = documented.difference(&all).collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "{file}: keys of --print-default-config not documented in the shipped file: {missing:?}; \
         documented keys that do not exist: {unknown:?}. Add each missing key as a commented line \
         `#key = <default>` with a sentence on what it does."
    );
}

#[test]
fn shipped_configs_pass_osprey_validate_as_they_are_and_fully_uncommented() {
    for (name, role) in [("agent.toml", "agent"), ("collector.toml", "collector")] {
        let path = shipped(name);
        let (code, out, err) = osprey(&["validate", path.to_str().unwrap(), "--role", role]);
        assert_eq!(code, 0, "{name} as shipped: {out}{err}");
        assert!(out.contains(&format!("valid {role} config")), "{out}");

        let dir = tempfile::tempdir().unwrap();
        let all_on = dir.path().join(name);
        std::fs::write(&all_on, uncommented(&std::fs::read_to_string(&path).unwrap())).unwrap();
        let (code, out, err) = osprey(&["validate", all_on.to_str().unwrap(), "--role", role]);
        assert_eq!(code, 0, "{name} with every commented setting switched on: {out}{err}");
    }
}

#[test]
fn shipped_agent_config_documents_every_key_with_its_real_default() {
    let text = std::fs::read_to_string(shipped("agent.toml")).unwrap();
    let (_, defaults, _) = osprey(&["agent", "--print-default-config"]);
    assert_documents_every_key("agent.toml", &text, &defaults);

    // As shipped, it differs from the built-in defaults only where it says so: Debian's syslog
    // files (no .log suffix) are followed too.
    let mut cfg: AgentConfig = toml::from_str(&text).unwrap();
    assert_eq!(cfg.sources.files[0].include, ["/var/log/**/*.log", "/var/log/syslog", "/var/log/messages"]);
    cfg.sources.files[0].include = AgentConfig::default().sources.files[0].include.clone();
    assert_eq!(cfg, AgentConfig::default(), "agent.toml sets a value it does not explain");

    // Every commented value is the real default.
    let mut all_on: AgentConfig = toml::from_str(&uncommented(&text)).unwrap();
    all_on.sources.files[0].include = AgentConfig::default().sources.files[0].include.clone();
    assert_eq!(all_on, AgentConfig::default(), "a commented value in agent.toml is not the default");
}

#[test]
fn shipped_collector_config_documents_every_key_with_its_real_default() {
    let text = std::fs::read_to_string(shipped("collector.toml")).unwrap();
    let (_, defaults, _) = osprey(&["collector", "--print-default-config"]);
    assert_documents_every_key("collector.toml", &text, &defaults);
    let cfg: CollectorConfig = toml::from_str(&text).unwrap();
    assert_eq!(cfg, CollectorConfig::default(), "collector.toml sets a value it does not explain");
    let all_on: CollectorConfig = toml::from_str(&uncommented(&text)).unwrap();
    assert_eq!(all_on, CollectorConfig::default(), "a commented value in collector.toml is not the default");
}

#[test]
fn container_and_kubernetes_configs_pass_osprey_validate() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging");
    for dir in ["docker", "kubernetes"] {
        for role in ["agent", "collector"] {
            let path = root.join(dir).join(format!("{role}.toml"));
            let (code, out, err) = osprey(&["validate", path.to_str().unwrap(), "--role", role]);
            assert_eq!(code, 0, "{}: {out}{err}", path.display());
            // In a container or a pod, loopback is unreachable from outside: they must listen on
            // all interfaces (the container or pod network is the boundary).
            let text = std::fs::read_to_string(&path).unwrap();
            let listen = if role == "agent" { "0.0.0.0:9101" } else { "0.0.0.0:3100" };
            assert!(text.contains(&format!("listen = \"{listen}\"")), "{} must listen on {listen}", path.display());
        }
    }
}

#[test]
fn uncommenting_keeps_prose_comments() {
    let text = "# a sentence\n#key = 1\n#[table]\n#  indented prose\nx = 2\n";
    assert_eq!(uncommented(text), "# a sentence\nkey = 1\n[table]\n#  indented prose\nx = 2\n");
}
