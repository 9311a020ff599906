//! Being asked to stop: Ctrl-C (SIGINT) or SIGTERM, for the worker's job loop and the
//! coordinator's search alike. The first request sets a flag the loop reads and leaves cleanly
//! (nothing heard is lost); a second one ends the process at once, for a user who will not wait.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context as _, Result};

/// Exit status of a process ended by a second request to stop (128 + SIGINT, as shells use).
pub const EXIT_ASKED_TWICE: i32 = 130;

/// Requests to stop, heard from the moment this is made.
pub struct StopRequests {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl StopRequests {
    /// Starts listening; must be called within a Tokio runtime (with its I/O driver).
    pub fn listen() -> Result<StopRequests> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(StopRequests {
                interrupt: signal(SignalKind::interrupt()).context("listening for Ctrl-C")?,
                terminate: signal(SignalKind::terminate()).context("listening for SIGTERM")?,
            })
        }
        #[cfg(not(unix))]
        Ok(StopRequests {})
    }

    /// Returns when the next request comes.
    pub async fn next(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Watches for requests to stop on a thread of its own, listening from before this returns:
/// the first sets `stop`, the second ends the process with [`EXIT_ASKED_TWICE`]. For a
/// program with no async runtime of its own.
pub fn watch(stop: Arc<AtomicBool>) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the signal watcher's runtime")?;
    let mut requests = {
        let _in = rt.enter();
        StopRequests::listen()?
    };
    std::thread::Builder::new()
        .name("hx-signals".into())
        .spawn(move || {
            rt.block_on(async {
                requests.next().await;
                stop.store(true, Ordering::SeqCst);
                requests.next().await;
                eprintln!("hx: asked to stop again: stopping now");
                std::process::exit(EXIT_ASKED_TWICE);
            });
        })
        .context("starting the signal watcher")?;
    Ok(())
}
