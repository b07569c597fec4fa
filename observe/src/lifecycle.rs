//! What both daemons do the same way around their work: logging set-up, the wall clock, and
//! running until a signal while feeding systemd's watchdog.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tracing::info;

/// Logs to standard error, human-readable or as JSON lines; `RUST_LOG` filters (default info).
pub fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Wall-clock time as the data model stores it. Daemons read clocks; the protocol never does.
pub fn unix_now() -> protocol::model::UnixNanos {
    let now = std::time::SystemTime::now();
    match now.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_nanos()).unwrap_or(i64::MAX),
    }
}

/// Runs until `work` ends (an error the daemon cannot carry on from) or SIGTERM/SIGINT
/// arrives, telling systemd READY first and STOPPING last. The watchdog is fed from this loop
/// only while `alive` holds (the link task lives), so systemd restarts a daemon whose runtime
/// hangs or whose link task died.
pub async fn run_until_shutdown(
    work: impl Future<Output = anyhow::Result<()>>,
    alive: Arc<AtomicBool>,
    ready_status: &str,
) -> anyhow::Result<()> {
    crate::notify::ready(ready_status);
    let mut watchdog = crate::notify::watchdog_interval().map(tokio::time::interval);
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    tokio::pin!(work);
    let result = loop {
        tokio::select! {
            r = &mut work => break r,
            r = &mut shutdown => { info!("shutting down"); break r }
            () = tick(&mut watchdog) => {
                if alive.load(Ordering::Relaxed) {
                    crate::notify::watchdog();
                }
            }
        }
    };
    crate::notify::stopping();
    result
}

/// The next watchdog tick, or never when systemd asked for no watchdog.
async fn tick(interval: &mut Option<tokio::time::Interval>) {
    match interval {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

async fn shutdown_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Ok(())
}
