//! systemd notifications (`Type=notify`, `WatchdogSec=`): readiness once the daemon runs, a
//! watchdog ping from the main loop while its link task lives, and stopping on shutdown.
//! Without `NOTIFY_SOCKET` (not started by systemd) every call does nothing.

use std::time::Duration;

use sd_notify::NotifyState;

/// `READY=1`, with a status line `systemctl status` shows.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// `STOPPING=1`.
pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

/// `WATCHDOG=1`.
pub fn watchdog() {
    send(&[NotifyState::Watchdog]);
}

/// How often to ping the watchdog: half of `WATCHDOG_USEC` when systemd set it for this
/// process, as sd_watchdog_enabled(3) recommends.
pub fn watchdog_interval() -> Option<Duration> {
    let mut usec = 0u64;
    // The environment is left as it is: removing variables is not thread-safe, and the
    // daemons start no child processes that could inherit them.
    if sd_notify::watchdog_enabled(false, &mut usec) && usec > 0 {
        Some(Duration::from_micros(usec / 2).max(Duration::from_millis(1)))
    } else {
        None
    }
}

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::warn!(error = %e, "systemd notification failed");
    }
}
