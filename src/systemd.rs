//! The service-manager side of running as a daemon: systemd readiness and watchdog
//! (`Type=notify`, `WatchdogSec=`), and SIGHUP, which reloads the configuration (what
//! `systemctl reload` sends through `ExecReload=`).
//!
//! All of it is inert outside systemd: `sd_notify` does nothing when `NOTIFY_SOCKET` is unset,
//! and the watchdog only runs when systemd asked for it (`WATCHDOG_USEC`, and `WATCHDOG_PID`
//! naming this process when set). A notification that cannot be sent is logged, never fatal: the
//! data path must not depend on the service manager.

use osprey_agent::ops::ReloadOutcome;
use sd_notify::NotifyState;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// Re-reads and applies the config file (the role's `reload`).
pub type Reloader = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = ReloadOutcome> + Send>> + Send + Sync>;

/// Called once the role is listening: installs the SIGHUP handler, tells systemd the service is
/// ready, and starts the watchdog pings if systemd enabled them.
///
/// The SIGHUP handler goes in *before* READY=1, so an `ExecReload=` (or a stray `kill -HUP`) that
/// arrives right after start-up never hits the default action, which terminates the process.
pub fn started(role: &str, reload: Reloader) {
    handle_sighup(role, reload);
    send(&[NotifyState::Ready, NotifyState::Status(&format!("osprey {role} running"))]);
    if let Some(timeout) = sd_notify::watchdog_enabled() {
        let every = ping_interval(timeout);
        tracing::info!(?timeout, ?every, "systemd watchdog enabled");
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                send(&[NotifyState::Watchdog]);
            }
        });
    }
}

/// Tells systemd the service is stopping (shown by `systemctl status` while shutdown drains).
pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

/// Half the watchdog timeout, as sd_watchdog_enabled(3) recommends, so one late ping is not a
/// restart. The pings run on the async runtime: if every worker is wedged they stop, and systemd
/// restarts the service (`Restart=on-failure`), which is the point of the watchdog.
fn ping_interval(timeout: Duration) -> Duration {
    (timeout / 2).max(Duration::from_millis(1))
}

fn send(state: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::warn!(error = %e, "cannot notify systemd (NOTIFY_SOCKET)");
    }
}

/// SIGHUP: reload the configuration, one request at a time; the process keeps running whatever
/// the outcome (a refused config is logged with its reason and the running one stays).
///
/// Around the reload it tells systemd `RELOADING=1` (with `MONOTONIC_USEC`, as
/// `Type=notify-reload` requires) and then `READY=1` with a status line saying how it went, so
/// `systemctl status` shows the outcome.
fn handle_sighup(role: &str, reload: Reloader) {
    use tokio::signal::unix::{SignalKind, signal};
    let role = role.to_string();
    match signal(SignalKind::hangup()) {
        Ok(mut hup) => {
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    tracing::info!(role = %role, "SIGHUP: reloading the configuration");
                    let mut reloading = vec![NotifyState::Reloading];
                    if let Ok(now) = NotifyState::monotonic_usec_now() {
                        reloading.push(now);
                    }
                    send(&reloading);
                    let outcome = reload().await;
                    let status = match &outcome.error {
                        None if outcome.needs_restart.is_empty() => {
                            format!("osprey {role} running (configuration reloaded)")
                        }
                        None => format!(
                            "osprey {role} running (reloaded; restart to apply {})",
                            outcome.needs_restart.join(", ")
                        ),
                        Some(e) => {
                            format!("osprey {role} running (reload rejected: {})", e.lines().next().unwrap_or(""))
                        }
                    };
                    send(&[NotifyState::Ready, NotifyState::Status(&status)]);
                }
            });
        }
        Err(e) => tracing::warn!(error = %e, "cannot install the SIGHUP handler; SIGHUP will terminate"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pings_at_half_the_timeout() {
        assert_eq!(ping_interval(Duration::from_secs(30)), Duration::from_secs(15));
        assert_eq!(ping_interval(Duration::from_micros(1)), Duration::from_millis(1));
    }
}
