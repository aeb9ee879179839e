//! Typed configuration for the agent and the collector.
//!
//! One TOML file per role. Every default lives once, in the `Default` impls here, and
//! `osprey agent --print-default-config` prints exactly those. Unknown keys are errors, and
//! every problem is reported as `FILE:LINE:COL: key.path: what is wrong` so an operator can jump
//! straight to it (see [`diagnostics`]). Loading is three steps: parse TOML (syntax errors),
//! deserialize into the typed structs (unknown keys, wrong types), then [`Validate`] the values
//! (globs, URLs, ranges), collecting every problem rather than stopping at the first.

pub mod agent;
pub mod collector;
pub mod diagnostics;
mod duration;
pub mod ops;
pub mod scrape;
pub mod tls;

pub use agent::AgentConfig;
pub use collector::CollectorConfig;
pub use diagnostics::{ConfigError, Problem};
pub use duration::Duration;
pub use ops::{Log, LogFormat, ReloadPlan};

/// Semantic checks that serde cannot express. Each problem carries the dotted key path it is
/// about, e.g. `sources.files[0].include[1]`, so [`diagnostics`] can find its line and column.
pub trait Validate {
    fn validate(&self, problems: &mut Vec<(String, String)>);
}

/// Which kind of file a config is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Agent,
    Collector,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Agent => "agent",
            Role::Collector => "collector",
        }
    }
}

/// Environment variables that override the few keys set per host.
pub mod env {
    /// Agent: base URL of the collector (`collector.url`).
    pub const COLLECTOR_URL: &str = "OSPREY_COLLECTOR_URL";
    /// Agent: bearer token sent to the collector (overrides `collector.token_file`).
    pub const AUTH_TOKEN: &str = "OSPREY_AUTH_TOKEN";
    /// Both roles: `data_dir`.
    pub const DATA_DIR: &str = "OSPREY_DATA_DIR";
}

/// Loads, validates and applies environment overrides to an agent config file.
pub fn load_agent(path: &std::path::Path) -> Result<AgentConfig, ConfigError> {
    let text = diagnostics::read(path)?;
    let mut cfg: AgentConfig = diagnostics::parse(path, &text)?;
    cfg.apply_env(|k| std::env::var(k).ok());
    diagnostics::check(path, &text, &cfg)?;
    Ok(cfg)
}

/// Loads, validates and applies environment overrides to a collector config file.
pub fn load_collector(path: &std::path::Path) -> Result<CollectorConfig, ConfigError> {
    let text = diagnostics::read(path)?;
    let mut cfg: CollectorConfig = diagnostics::parse(path, &text)?;
    cfg.apply_env(|k| std::env::var(k).ok());
    diagnostics::check(path, &text, &cfg)?;
    Ok(cfg)
}

/// Checks a file for `osprey validate`. `role` is guessed when not given: from the top-level
/// sections present, then from the file name.
pub fn validate_file(path: &std::path::Path, role: Option<Role>) -> Result<Role, ConfigError> {
    let text = diagnostics::read(path)?;
    let role = match role {
        Some(r) => r,
        None => guess_role(path, &text).ok_or_else(|| ConfigError {
            problems: vec![Problem {
                file: path.display().to_string(),
                line: 1,
                column: 1,
                key: String::new(),
                message:
                    "cannot tell whether this is an agent or a collector config; pass --role agent or --role collector"
                        .into(),
            }],
        })?,
    };
    match role {
        Role::Agent => {
            let cfg: AgentConfig = diagnostics::parse(path, &text)?;
            diagnostics::check(path, &text, &cfg)?;
        }
        Role::Collector => {
            let cfg: CollectorConfig = diagnostics::parse(path, &text)?;
            diagnostics::check(path, &text, &cfg)?;
        }
    }
    Ok(role)
}

fn guess_role(path: &std::path::Path, text: &str) -> Option<Role> {
    if let Ok(table) = text.parse::<toml::Table>() {
        let agent = ["sources", "collector", "host_metrics", "pipeline", "scrape", "remote_write", "health"]
            .iter()
            .any(|k| table.contains_key(*k));
        let collector = ["logs", "metrics"].iter().any(|k| table.contains_key(*k));
        match (agent, collector) {
            (true, false) => return Some(Role::Agent),
            (false, true) => return Some(Role::Collector),
            _ => {}
        }
    }
    let name = path.file_name()?.to_string_lossy().to_lowercase();
    if name.contains("collector") {
        Some(Role::Collector)
    } else if name.contains("agent") {
        Some(Role::Agent)
    } else {
        None
    }
}

/// Checks an `http(s)` URL and returns the problem, if any.
pub(crate) fn check_http_url(value: &str) -> Option<String> {
    match url::Url::parse(value) {
        Err(e) => Some(format!("invalid URL {value:?}: {e}")),
        Ok(u) if u.scheme() != "http" && u.scheme() != "https" => {
            Some(format!("invalid URL {value:?}: scheme must be http or https, not {:?}", u.scheme()))
        }
        Ok(u) if u.host_str().is_none_or(str::is_empty) => Some(format!("invalid URL {value:?}: no host")),
        Ok(_) => None,
    }
}
