//! systemd notification: `READY=1` once the config is valid and the store is open, `STATUS=`
//! lines (the last cycle's outcome, a stalled rule), `STOPPING=1` when shutdown starts, and
//! `WATCHDOG=1` pings (the service decides when: see `daemon::spawn_watchdog`).
//! Every call is a no-op outside systemd (no `NOTIFY_SOCKET`).

use std::time::Duration;

use sd_notify::NotifyState;
use tracing::debug;

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        debug!(error = %e, "systemd notification failed");
    }
}

/// Tells systemd the service is up.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// Replaces the status line `systemctl status` shows.
pub fn status(line: &str) {
    send(&[NotifyState::Status(line)]);
}

/// Tells systemd the service is shutting down.
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// The watchdog interval systemd asked for (`WatchdogSec=`, as `WATCHDOG_USEC`), if any and if
/// it is meant for this process (`WATCHDOG_PID`).
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled()
}

/// Tells systemd's watchdog the service is well.
pub fn watchdog_ping() {
    send(&[NotifyState::Watchdog]);
}
