//! `osprey`: one binary for the agent, the collector, and the tools around them.

mod query;
mod systemd;
mod up;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use osprey_config::{AgentConfig, CollectorConfig, Role};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "osprey",
    version,
    about = "Host observability: a light agent and a collector speaking Prometheus and Loki"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent: tail logs, collect host metrics, ship them to a collector.
    Agent {
        /// The agent's TOML config file.
        #[arg(long, short, default_value = "/etc/osprey/agent.toml")]
        config: PathBuf,
        /// Print the complete default configuration and exit.
        #[arg(long)]
        print_default_config: bool,
    },
    /// Run the collector: ingest, store and serve logs and metrics.
    Collector {
        /// The collector's TOML config file.
        #[arg(long, short, default_value = "/etc/osprey/collector.toml")]
        config: PathBuf,
        /// Print the complete default configuration and exit.
        #[arg(long)]
        print_default_config: bool,
    },
    /// Run a collector and an agent on this host with working defaults, no config needed.
    Up(up::UpArgs),
    /// Search the collector's logs (LogQL).
    Query(query::QueryArgs),
    /// Check a config file; print each problem as FILE:LINE:COL: key: problem.
    Validate {
        file: PathBuf,
        /// Which kind of config the file is; guessed from its sections when omitted.
        #[arg(long, value_enum)]
        role: Option<RoleArg>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum RoleArg {
    Agent,
    Collector,
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("OSPREY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only on a terminal: under systemd or in a file, escape codes are noise.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi).init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("osprey: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Validate { file, role } => {
            let role = role.map(|r| match r {
                RoleArg::Agent => Role::Agent,
                RoleArg::Collector => Role::Collector,
            });
            match osprey_config::validate_file(&file, role) {
                Ok(role) => {
                    println!("{}: valid {} config", file.display(), role.as_str());
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("{e}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Command::Agent { print_default_config: true, .. } => {
            print!("{}", toml_of(&AgentConfig::default())?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Collector { print_default_config: true, .. } => {
            print!("{}", toml_of(&CollectorConfig::default())?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Agent { config, .. } => {
            let cfg = osprey_config::load_agent(&config).map_err(|e| anyhow::anyhow!("{e}"))?;
            init_logging();
            runtime()?.block_on(async move {
                let signals = Signals::install()?;
                let agent = osprey_agent::start(cfg).await?;
                announce("agent", &agent.url());
                systemd::started("agent");
                signals.wait().await;
                systemd::stopping();
                agent.shutdown(Duration::from_secs(10)).await;
                Ok(ExitCode::SUCCESS)
            })
        }
        Command::Collector { config, .. } => {
            let cfg = osprey_config::load_collector(&config).map_err(|e| anyhow::anyhow!("{e}"))?;
            init_logging();
            runtime()?.block_on(async move {
                let signals = Signals::install()?;
                let collector = osprey_collector::start(cfg).await?;
                announce("collector", &collector.url());
                systemd::started("collector");
                signals.wait().await;
                systemd::stopping();
                collector.shutdown().await?;
                Ok(ExitCode::SUCCESS)
            })
        }
        Command::Up(args) => {
            init_logging();
            runtime()?.block_on(up::run(args))
        }
        Command::Query(args) => runtime()?.block_on(query::run(args)),
    }
}

/// One line on stdout once listening, for supervisors and test harnesses (a port of 0 in the
/// config picks a free port; this line says which, and whether it is http or https).
fn announce(role: &str, url: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "osprey {role} listening on {url}");
    let _ = out.flush();
}

fn toml_of<T: serde::Serialize>(value: &T) -> anyhow::Result<String> {
    toml::to_string_pretty(value).context("cannot render the default configuration")
}

/// SIGTERM and SIGINT handlers, installed *before* a role announces that it listens, so a
/// supervisor that stops the process right after the announcement gets a graceful shutdown, not
/// the default action of the signal.
pub struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    pub fn install() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("cannot install the SIGINT handler")?,
        })
    }

    /// Waits for SIGINT or SIGTERM.
    pub async fn wait(mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
        tracing::info!("shutting down");
    }
}
