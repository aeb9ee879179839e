//! `osprey validate` and `--print-default-config` as an operator uses them.

mod harness;

use harness::osprey;

fn validate(name: &str, text: &str) -> (i32, String) {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join(name);
    std::fs::write(&path, text).unwrap();
    let (code, out, err) = osprey(&["validate", path.to_str().unwrap()]);
    (code, format!("{out}{err}").replace(path.to_str().unwrap(), "FILE"))
}

#[test]
fn each_mistake_names_file_line_column_and_key() {
    let cases = [
        (
            "agent.toml",
            "[collector]\nurl = \"http://c:3100\"\nbatch_bytes = 1\n",
            "FILE:3:1: collector.batch_bytes: unknown field `batch_bytes`",
        ),
        (
            "agent.toml",
            "[host_metrics]\nenabled = 3\n",
            "FILE:2:11: host_metrics.enabled: invalid type: integer `3`, expected a boolean",
        ),
        (
            "agent.toml",
            "[[sources.files]]\ninclude = [\"/var/log/[x.log\"]\n",
            "FILE:2:12: sources.files[0].include[0]: invalid glob \"/var/log/[x.log\": unclosed character class",
        ),
        (
            "agent.toml",
            "[collector]\nurl = \"collector:3100\"\n",
            "FILE:2:7: collector.url: invalid URL \"collector:3100\": scheme must be http or https",
        ),
        (
            "collector.toml",
            "[server]\nlisten = \"localhost\"\n",
            "FILE:2:10: server.listen: invalid socket address syntax",
        ),
    ];
    for (name, text, expected) in cases {
        let (code, out) = validate(name, text);
        assert_ne!(code, 0, "{text}");
        assert!(out.starts_with(expected), "for {text:?}\n got: {out}\nwant: {expected}");
        assert!(!out.contains("panicked"));
    }
}

#[test]
fn printed_defaults_validate() {
    for role in ["agent", "collector"] {
        let (code, out, _) = osprey(&[role, "--print-default-config"]);
        assert_eq!(code, 0);
        let (code, msg) = validate(&format!("{role}.toml"), &out);
        assert_eq!(code, 0, "{msg}");
        assert!(msg.contains(&format!("valid {role} config")));
    }
}

#[test]
fn missing_file_is_a_clear_error() {
    let (code, out, err) = osprey(&["validate", "/nonexistent/agent.toml"]);
    assert_ne!(code, 0);
    assert!(format!("{out}{err}").contains("/nonexistent/agent.toml: cannot read the config file"), "{err}");
}

#[test]
fn bad_config_stops_the_daemon_with_the_problem() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("collector.toml");
    std::fs::write(&path, "[logs]\nfsync = \"sometimes\"\n").unwrap();
    let (code, _, err) = osprey(&["collector", "--config", path.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(
        err.contains(":2:9: logs.fsync: unknown variant `sometimes`, expected one of `always`, `batch`, `never`"),
        "{err}"
    );
}
