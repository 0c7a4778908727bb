//! Polls files for changes (modification time and length, following symlinks as Kubernetes
//! swaps them) and calls back when any changed. Polling instead of inotify keeps it working on
//! network and overlay file systems and in every container runtime. Knows nothing of what the
//! files hold.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

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
/// which files are watched. Must run inside a Tokio runtime.
pub fn spawn(
    interval: Duration,
    files: impl Fn() -> Vec<PathBuf> + Send + 'static,
    changed: impl Fn() + Send + 'static,
) {
    tokio::spawn(async move {
        let mut seen = stamps(&files());
        loop {
            tokio::time::sleep(interval).await;
            let now = stamps(&files());
            if now != seen {
                seen = now;
                changed();
            }
        }
    });
}
