//! SIGTERM and SIGINT: the first stops after the current action (within the grace period), a
//! second exits at once.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{error, info};

/// Cancels `token` on SIGINT or SIGTERM; a second signal exits at once. `grace` is how long the
/// action in flight may still take, for the message.
///
/// The handlers are in place when this returns (not when the spawned task first runs), so a
/// signal that comes right after, say once `READY=1` told systemd it may stop us, is caught
/// instead of killing the process mid-action.
pub fn cancel_on_signals(token: CancellationToken, grace: Duration) {
    let mut signals = Signals::install();
    tokio::spawn(async move {
        signals.recv().await;
        info!(
            grace_secs = grace.as_secs(),
            "stopping after the current action, within the grace period (send the signal again \
             to exit at once)"
        );
        token.cancel();
        signals.recv().await;
        error!("second signal: exiting at once");
        std::process::exit(130);
    });
}

/// SIGTERM and SIGINT, registered when created. Elsewhere, or if registering fails, Ctrl-C.
struct Signals {
    #[cfg(unix)]
    unix: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl Signals {
    fn install() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let unix = match (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) {
                (Ok(term), Ok(int)) => Some((term, int)),
                (Err(e), _) | (_, Err(e)) => {
                    error!(error = %e, "cannot handle SIGTERM; only Ctrl-C stops cleanly");
                    None
                }
            };
            Signals { unix }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    async fn recv(&mut self) {
        #[cfg(unix)]
        if let Some((term, int)) = &mut self.unix {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
    }
}
