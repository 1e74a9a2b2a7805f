//! One shutdown signal for every stage: SIGTERM or Ctrl-C.

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// A second signal this soon after the first is the same request delivered twice (`timeout`
/// and some supervisors signal both the process and its group), not an impatient operator.
const DUPLICATE_WINDOW: std::time::Duration = std::time::Duration::from_secs(1);

/// A token cancelled on the first SIGTERM or Ctrl-C. A second signal (more than a second
/// later) exits at once.
pub fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        let first = tokio::time::Instant::now();
        info!("shutting down: finishing what was read, then confirming to PostgreSQL");
        cancel.cancel();
        loop {
            wait_for_signal().await;
            if first.elapsed() > DUPLICATE_WINDOW {
                break;
            }
        }
        warn!("second signal: exiting now");
        std::process::exit(130);
    });
    token
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
