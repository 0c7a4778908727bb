//! Polls files for changes (modification time and length, following symlinks as Kubernetes
//! swaps them) and calls back when any changed. Polling instead of inotify keeps it working on
//! network and overlay file systems and in every container runtime. Knows nothing of what the
//! files hold; the threads belong to the service's [`Background`].

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use crate::tasks::Background;

/// What identifies one version of a file.
pub type Stamp = Option<(SystemTime, u64)>;

/// The stamps of `files`, in order (`None` for a missing or unreadable file).
pub fn stamps(files: &[PathBuf]) -> Vec<Stamp> {
    files
        .iter()
        .map(|f| {
            std::fs::metadata(f)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())))
        })
        .collect()
}

/// Every `interval`, compares the stamps of `files()` with the previous ones and calls
/// `changed()` when they differ. The file list is asked anew each time, so a reload may change
/// which files are watched.
///
/// Runs on a thread of its own, not on the async workers: a reload parses and compiles whole
/// files (a CRL of 60,000 entries, a large policy), which must not stall requests. It also keeps
/// every version of the material allocated by one thread, so the allocator reuses the memory of
/// the version it replaced; built on whichever async worker ran the poll, each version landed in
/// another allocator arena and RSS grew by the material's size with every reload (issue 10,
/// finding 8).
///
/// The thread belongs to `background` and ends when the service shuts down.
pub fn spawn(
    background: &Background,
    interval: Duration,
    files: impl Fn() -> Vec<PathBuf> + Send + 'static,
    changed: impl Fn() + Send + 'static,
) {
    let spawned = background.spawn_thread("token-service-watch", move |stop| {
        let mut seen = stamps(&files());
        while !stop.sleep(interval) {
            let now = stamps(&files());
            if now != seen {
                seen = now;
                changed();
            }
        }
    });
    if let Err(e) = spawned {
        tracing::error!(
            event = "watch_failed",
            "cannot start the thread that watches files for changes: {e}; changed files are not reloaded until a restart"
        );
    }
}
