//! The service-manager side of running as a daemon: systemd readiness and watchdog
//! (`Type=notify`, `WatchdogSec=`), and SIGHUP.
//!
//! All of it is inert outside systemd: `sd_notify` does nothing when `NOTIFY_SOCKET` is unset,
//! and the watchdog only runs when systemd asked for it (`WATCHDOG_USEC`, and `WATCHDOG_PID`
//! naming this process when set). A notification that cannot be sent is logged, never fatal: the
//! data path must not depend on the service manager.

use sd_notify::NotifyState;
use std::time::Duration;

/// Called once the role is listening: installs the SIGHUP handler, tells systemd the service is
/// ready, and starts the watchdog pings if systemd enabled them.
///
/// The SIGHUP handler goes in *before* READY=1, so an `ExecReload=` (or a stray `kill -HUP`) that
/// arrives right after start-up never hits the default action, which terminates the process.
pub fn started(role: &str) {
    log_reload_requests(role);
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

/// SIGHUP: log that a reload was requested, and keep running.
///
/// MINIMAL ON PURPOSE: configuration reload is issue 8 (it must keep checkpoints, queues and
/// listeners). Until then a reload is a no-op that says so; `systemctl restart` applies a changed
/// config. What this handler guarantees now is only that SIGHUP (`systemctl reload`, logrotate
/// `postrotate` habits) no longer kills the process.
fn log_reload_requests(role: &str) {
    use tokio::signal::unix::{SignalKind, signal};
    let role = role.to_string();
    match signal(SignalKind::hangup()) {
        Ok(mut hup) => {
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    tracing::warn!(
                        role = %role,
                        "SIGHUP: reload requested, but configuration reload is not implemented yet; \
                         the running configuration is unchanged (restart the service to apply changes)"
                    );
                    send(&[NotifyState::Status(&format!("osprey {role} running (reload not supported yet)"))]);
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
