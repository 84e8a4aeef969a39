//! Unix signals → the daemon's shutdown token and [`Control`] requests, and
//! the two-step cancellation of the one-pass commands.

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::Control;

fn install(kind: SignalKind, name: &str) -> std::io::Result<tokio::signal::unix::Signal> {
    signal(kind).map_err(|e| std::io::Error::new(e.kind(), format!("cannot handle {name}: {e}")))
}

/// For `run`: SIGTERM or SIGINT cancel `shutdown`; SIGHUP sends
/// [`Control::Reload`] on the returned channel. Fails when a handler cannot
/// be installed.
pub fn listen(shutdown: CancellationToken) -> std::io::Result<mpsc::UnboundedReceiver<Control>> {
    let (controls, control_rx) = mpsc::unbounded_channel();
    let mut term = install(SignalKind::terminate(), "SIGTERM")?;
    let mut int = install(SignalKind::interrupt(), "SIGINT")?;
    let mut hup = install(SignalKind::hangup(), "SIGHUP")?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = hup.recv() => {
                    info!("SIGHUP: reloading the policy file");
                    let _ = controls.send(Control::Reload);
                }
            }
        }
        info!("stop signal: finishing the removal in flight, starting no new one");
        shutdown.cancel();
    });
    Ok(control_rx)
}

/// For `once`, `plan`, `explain`: the first SIGTERM/SIGINT cancels `cancel`
/// (no new removal), the second `interrupt` (stop waiting for the engine).
pub async fn cancel_on_signal(cancel: CancellationToken, interrupt: CancellationToken) {
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    warn!("signal received: finishing the removal in flight, starting no new one (a second signal stops waiting)");
    cancel.cancel();
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    warn!("second signal: no longer waiting for the engine; reporting what was done");
    interrupt.cancel();
}
