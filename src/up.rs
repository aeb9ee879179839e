//! `osprey up`: a collector and an agent in one process, zero configuration.
//!
//! The agent still reaches the collector over loopback HTTP with the real protocols, exactly as
//! it would across a network; `up` only saves writing two config files.

use clap::Args;
use osprey_config::{AgentConfig, CollectorConfig};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Args)]
pub struct UpArgs {
    /// Where the collector's and the agent's data live.
    #[arg(long, default_value = "osprey-data", env = "OSPREY_DATA_DIR")]
    data_dir: PathBuf,
    /// The collector's listen address (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:3100")]
    listen: SocketAddr,
    /// The agent's listen address for its /metrics (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:9101")]
    agent_listen: SocketAddr,
    /// Log files to follow (repeatable). Unreadable files are skipped with one warning each.
    #[arg(long = "include", default_value = "/var/log/**/*.log")]
    include: Vec<String>,
    /// How often host metrics are collected.
    #[arg(long, default_value = "15s")]
    metrics_interval: humantime_arg::Dur,
    /// How long a graceful stop may take (agent drain, then collector); a second signal exits
    /// at once.
    #[arg(long, default_value = "30s")]
    shutdown_timeout: humantime_arg::Dur,
}

mod humantime_arg {
    #[derive(Clone, Copy)]
    pub struct Dur(pub std::time::Duration);
    impl std::str::FromStr for Dur {
        type Err = String;
        fn from_str(s: &str) -> Result<Self, String> {
            s.parse::<osprey_config::Duration>().map(|d| Dur(d.get()))
        }
    }
}

pub async fn run(args: UpArgs, log: osprey_agent::ops::LogControl) -> anyhow::Result<ExitCode> {
    let mut signals = crate::Signals::install()?;
    let data_dir = std::path::absolute(&args.data_dir)?;
    let mut collector_cfg = CollectorConfig { data_dir: data_dir.join("collector"), ..CollectorConfig::default() };
    collector_cfg.server.listen = args.listen;
    let collector = osprey_collector::start(collector_cfg).await?;

    let mut agent_cfg = AgentConfig { data_dir: data_dir.join("agent"), ..AgentConfig::default() };
    agent_cfg.server.listen = args.agent_listen;
    agent_cfg.collector.url = format!("http://{}", collector.addr);
    agent_cfg.sources.files[0].include = args.include.iter().map(|g| absolute_glob(g)).collect();
    agent_cfg.host_metrics.interval = osprey_config::Duration(args.metrics_interval.0);
    let includes = agent_cfg.sources.files[0].include.join(", ");
    let agent = osprey_agent::start(agent_cfg).await?;
    let (control, state) = (agent.control(), collector.state());
    control.hooks.set_log_control(log.clone());
    state.ops.hooks.set_log_control(log);

    let mut out = std::io::stdout().lock();
    writeln!(out, "osprey up: collector http://{} (Loki push and query API, remote_write, /federate)", collector.addr)?;
    writeln!(out, "osprey up: agent     http://{}/metrics", agent.addr)?;
    writeln!(out, "osprey up: following {includes} and host metrics; data in {}", data_dir.display())?;
    writeln!(
        out,
        "osprey up: try  osprey query --addr http://{} '{{job=\"varlogs\"}} |= \"error\"' --since 1h",
        collector.addr
    )?;
    writeln!(out, "osprey up: or   curl -s 'http://{}/federate?match[]=node_load1'", collector.addr)?;
    out.flush()?;
    drop(out);

    // No config file: a reload says so (both roles count it), the running settings stay.
    crate::systemd::started(
        "up",
        Arc::new(move || {
            let (control, state) = (control.clone(), state.clone());
            Box::pin(async move {
                let agent = control.reload("SIGHUP").await;
                let collector = osprey_collector::control::reload(&state, "SIGHUP").await;
                if agent.succeeded() { collector } else { agent }
            })
        }),
    );
    signals.next().await;
    crate::systemd::stopping();
    let bound = args.shutdown_timeout.0;
    let deadline = tokio::time::Instant::now() + bound;
    // The agent first (it drains into the collector), then the collector, in one bound.
    crate::stop_within(bound, &mut signals, async move {
        agent.shutdown(bound).await;
        tokio::time::timeout_at(deadline, collector.shutdown()).await.unwrap_or(Ok(()))
    })
    .await
}

fn absolute_glob(g: &str) -> String {
    if g.starts_with('/') {
        return g.to_string();
    }
    match std::env::current_dir() {
        Ok(d) => format!("{}/{}", d.display(), g),
        Err(_) => g.to_string(),
    }
}
