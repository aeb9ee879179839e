//! `osprey`: one binary for the agent, the collector, and the tools around them.

mod client;
mod logging;
mod query;
mod status;
mod systemd;
mod up;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use osprey_config::{AgentConfig, CollectorConfig, LogFormat, Role};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "osprey",
    version,
    about = "Host observability: a light agent and a collector speaking Prometheus and Loki"
)]
struct Cli {
    /// Log line format on stderr (overrides the config's `log.format`).
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormatArg>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormatArg {
    Text,
    Json,
}

impl From<LogFormatArg> for LogFormat {
    fn from(f: LogFormatArg) -> LogFormat {
        match f {
            LogFormatArg::Text => LogFormat::Text,
            LogFormatArg::Json => LogFormat::Json,
        }
    }
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
    /// A live view of an agent's and a collector's rates, lags, queues and errors (from their
    /// /metrics).
    Status(status::StatusArgs),
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
            let log = logging::init(cli.log_format.map_or(cfg.log.format, Into::into), &cfg.log.level);
            with_runtime(async move {
                let mut signals = Signals::install()?;
                let agent = osprey_agent::start(cfg).await?;
                let control = agent.control();
                control
                    .hooks
                    .set_config_source(Arc::new(move || osprey_config::load_agent(&config).map_err(|e| e.to_string())));
                control.hooks.set_log_control(log);
                announce("agent", &agent.url());
                let c = control.clone();
                systemd::started(
                    "agent",
                    Arc::new(move || {
                        let c = c.clone();
                        Box::pin(async move { c.reload("SIGHUP").await })
                    }),
                );
                signals.next().await;
                systemd::stopping();
                let bound = control.config().shutdown_timeout.get();
                // The agent's own drain ends a little before the hard bound, so it can still
                // abandon what is undelivered and write its checkpoints.
                stop_within(bound, &mut signals, async move {
                    agent.shutdown(bound - bound / 10).await;
                    Ok(())
                })
                .await
            })
        }
        Command::Collector { config, .. } => {
            let cfg = osprey_config::load_collector(&config).map_err(|e| anyhow::anyhow!("{e}"))?;
            let log = logging::init(cli.log_format.map_or(cfg.log.format, Into::into), &cfg.log.level);
            with_runtime(async move {
                let mut signals = Signals::install()?;
                let collector = osprey_collector::start(cfg).await?;
                let state = collector.state();
                state.ops.hooks.set_config_source(Arc::new(move || {
                    osprey_config::load_collector(&config).map_err(|e| e.to_string())
                }));
                state.ops.hooks.set_log_control(log);
                announce("collector", &collector.url());
                let s = state.clone();
                systemd::started(
                    "collector",
                    Arc::new(move || {
                        let s = s.clone();
                        Box::pin(async move { osprey_collector::control::reload(&s, "SIGHUP").await })
                    }),
                );
                signals.next().await;
                systemd::stopping();
                let bound = state.cfg().shutdown_timeout.get();
                drop(state);
                stop_within(bound, &mut signals, collector.shutdown()).await
            })
        }
        Command::Up(args) => {
            let log = logging::init(cli.log_format.map_or(LogFormat::Text, Into::into), "info");
            with_runtime(up::run(args, log))
        }
        Command::Query(args) => with_runtime(query::run(args)),
        Command::Status(args) => with_runtime(status::run(args)),
    }
}

/// Runs `work` on a fresh runtime, then stops the runtime without waiting for blocking work
/// still running (a query, a store being closed): the shutdown bound is the caller's, and
/// nothing acknowledged depends on that work finishing.
fn with_runtime<F: std::future::Future<Output = anyhow::Result<ExitCode>>>(work: F) -> anyhow::Result<ExitCode> {
    let rt = runtime()?;
    let result = rt.block_on(work);
    rt.shutdown_timeout(Duration::from_millis(500));
    result
}

/// Exit status after a second SIGTERM/SIGINT cut a graceful stop short (128 + SIGINT, as shells
/// report an interrupted program).
const EXIT_INTERRUPTED: u8 = 130;

/// Runs a graceful stop for at most `bound`; a second signal meanwhile exits at once. Either
/// way what was acknowledged is on disk (the collector's WAL, the agent's checkpoints lag at
/// most by the batches in flight, which are sent again).
async fn stop_within(
    bound: Duration,
    signals: &mut Signals,
    stop: impl std::future::Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<ExitCode> {
    tokio::select! {
        r = tokio::time::timeout(bound, stop) => match r {
            Ok(r) => r.map(|()| {
                tracing::info!("stopped");
                ExitCode::SUCCESS
            }),
            Err(_) => {
                tracing::warn!(?bound, "graceful stop not finished within shutdown_timeout; exiting now (undelivered data is sent after the restart)");
                Ok(ExitCode::SUCCESS)
            }
        },
        _ = signals.next() => {
            tracing::warn!("second stop signal: exiting at once");
            Ok(ExitCode::from(EXIT_INTERRUPTED))
        }
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
/// the default action of the signal. The first signal starts the graceful stop; a second one
/// (see [`stop_within`]) ends it at once.
pub struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    seen: u32,
}

impl Signals {
    pub fn install() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("cannot install the SIGINT handler")?,
            seen: 0,
        })
    }

    /// Waits for the next SIGINT or SIGTERM.
    pub async fn next(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
        self.seen += 1;
        if self.seen == 1 {
            tracing::info!("shutting down (a second SIGTERM or SIGINT exits at once)");
        }
    }
}
