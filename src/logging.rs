//! The process's own log lines: text or JSON on stderr, with a level filter that can change
//! while the process runs (`POST /-/log-level`, or `log.level` on reload).
//!
//! The level at start is `OSPREY_LOG` when set, else the config's `log.level` (`info` by
//! default), in `RUST_LOG` syntax (`warn,osprey_agent::tail=debug`). The format is the
//! `--log-format` flag, else `log.format`; it is fixed for the life of the process.

use osprey_agent::ops::LogControl;
use osprey_config::LogFormat;
use std::sync::Arc;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Installs the global subscriber; returns the handle that changes the level.
pub fn init(format: LogFormat, configured_level: &str) -> LogControl {
    let from_env = std::env::var("OSPREY_LOG").ok().filter(|v| !v.trim().is_empty());
    let wanted = from_env.as_deref().unwrap_or(configured_level);
    let (filter, problem) = match EnvFilter::builder().parse(wanted) {
        Ok(f) => (f, None),
        Err(e) => (EnvFilter::new("info"), Some(format!("invalid log level {wanted:?} ({e}); using \"info\""))),
    };
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    // Colour only on a terminal: under systemd or in a file, escape codes are noise.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let text = (format == LogFormat::Text)
        .then(|| tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(ansi));
    let json = (format == LogFormat::Json).then(|| {
        tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_writer(std::io::stderr)
    });
    tracing_subscriber::registry().with(filter).with(text).with(json).init();
    if let Some(p) = problem {
        tracing::warn!("{p}");
    }
    Arc::new(move |directives: Option<&str>| {
        if let Some(d) = directives {
            osprey_config::ops::check_log_level(d)?;
            let next = EnvFilter::builder().parse(d).map_err(|e| format!("invalid level directives {d:?}: {e}"))?;
            handle.reload(next).map_err(|e| format!("cannot change the log level: {e}"))?;
        }
        handle.with_current(|f| f.to_string()).map_err(|e| format!("cannot read the log level: {e}"))
    })
}
