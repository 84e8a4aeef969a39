//! Messages to the service manager: the [`Notifier`] trait the daemon talks
//! to, and its systemd implementation (the only `sd-notify` user).

use std::time::Duration;

/// Messages to systemd (or to a test).
pub trait Notifier: Send + Sync {
    /// Start-up is complete.
    fn ready(&self);
    /// One-line status for `systemctl status`.
    fn status(&self, text: &str);
    /// Watchdog keep-alive.
    fn watchdog(&self);
    /// Shutdown has begun.
    fn stopping(&self);
    /// The watchdog interval systemd expects, if any.
    fn watchdog_interval(&self) -> Option<Duration>;
}

/// `sd_notify` over `$NOTIFY_SOCKET`; silent when not run by systemd.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemdNotifier;

impl Notifier for SystemdNotifier {
    fn ready(&self) {
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    }
    fn status(&self, text: &str) {
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Status(text)]);
    }
    fn watchdog(&self) {
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
    }
    fn stopping(&self) {
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    }
    fn watchdog_interval(&self) -> Option<Duration> {
        let mut usec = 0u64;
        sd_notify::watchdog_enabled(false, &mut usec).then(|| Duration::from_micros(usec))
    }
}
