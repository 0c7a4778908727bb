//! Background work that outlives a request: file watchers, cache housekeeping, the IAM signer's
//! identity check, the RSA signer's signing threads, the expired-CRL watcher, the refresher of
//! fetched CRLs. The composition root owns one [`Background`]; everything that starts work in
//! the background does it through it, so shutdown stops all of it and waits for it (no task or
//! thread is left running after `serve` returns, and tests that start the service in-process
//! leave nothing behind).
//!
//! Uses nothing of ours.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// The stop signal of background work, for async tasks and threads alike.
#[derive(Clone, Default)]
pub struct Stop(Arc<StopInner>);

#[derive(Default)]
struct StopInner {
    stopped: Mutex<bool>,
    wake_threads: Condvar,
    wake_tasks: Notify,
}

impl Stop {
    /// Whether shutdown has begun.
    pub fn is_stopped(&self) -> bool {
        *self
            .0
            .stopped
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Completes once shutdown begins.
    pub async fn stopped(&self) {
        loop {
            let notified = self.0.wake_tasks.notified();
            if self.is_stopped() {
                return;
            }
            notified.await;
        }
    }

    /// Sleeps on this thread for `pause` or until shutdown begins; returns whether it has.
    /// For watcher threads: `while !stop.sleep(interval) { poll() }`.
    pub fn sleep(&self, pause: Duration) -> bool {
        let stopped = self
            .0
            .stopped
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (stopped, _) = self
            .0
            .wake_threads
            .wait_timeout_while(stopped, pause, |stopped| !*stopped)
            .unwrap_or_else(PoisonError::into_inner);
        *stopped
    }

    fn trigger(&self) {
        *self
            .0
            .stopped
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = true;
        self.0.wake_threads.notify_all();
        self.0.wake_tasks.notify_waiters();
    }
}

/// The owner of every background task and thread of one running service. Dropping it (a
/// failed build, `check-config`) signals its work to stop without waiting for it.
#[derive(Default)]
pub struct Background {
    stop: Stop,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    running: Arc<AtomicUsize>,
}

/// Counts one task or thread as running for as long as its work lives (aborted or not).
struct Running(Arc<AtomicUsize>);

impl Running {
    fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(count.clone())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.stop.trigger();
    }
}

impl Background {
    /// No background work yet.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The stop signal, for work that wants to finish cleanly rather than be aborted.
    pub fn stop_signal(&self) -> Stop {
        self.stop.clone()
    }

    /// Runs `work` on the Tokio runtime until it ends or shutdown aborts it. Must be called
    /// inside a runtime.
    pub fn spawn<F>(&self, work: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let stop = self.stop.clone();
        let running = Running::new(&self.running);
        let handle = tokio::spawn(async move {
            let _running = running;
            tokio::select! {
                () = work => {}
                () = stop.stopped() => {}
            }
        });
        self.tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(handle);
    }

    /// Runs `work` on a thread of its own named `name`; `work` gets the stop signal and must
    /// return soon after it fires (see [`Stop::sleep`]). Fails only when the OS refuses a
    /// thread.
    pub fn spawn_thread<F>(&self, name: &str, work: F) -> std::io::Result<()>
    where
        F: FnOnce(Stop) + Send + 'static,
    {
        let stop = self.stop.clone();
        let running = Running::new(&self.running);
        let handle = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                let _running = running;
                work(stop);
            })?;
        self.threads
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(handle);
        Ok(())
    }

    /// Signals every task and thread to stop and waits for them.
    pub async fn shutdown(&self) {
        self.stop.trigger();
        let tasks: Vec<_> =
            std::mem::take(&mut *self.tasks.lock().unwrap_or_else(PoisonError::into_inner));
        for task in tasks {
            let _ = task.await;
        }
        let threads: Vec<_> =
            std::mem::take(&mut *self.threads.lock().unwrap_or_else(PoisonError::into_inner));
        if !threads.is_empty() {
            // Joining blocks; do it off the async workers.
            let _ = tokio::task::spawn_blocking(move || {
                for thread in threads {
                    let _ = thread.join();
                }
            })
            .await;
        }
    }

    /// How many tasks and threads are running now (started and not yet ended), for tests.
    pub fn running(&self) -> usize {
        self.running.load(Ordering::Relaxed)
    }

    /// How many tasks and threads were started and not yet joined by [`Self::shutdown`]
    /// (finished ones included), for tests.
    pub fn started(&self) -> usize {
        self.tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
            + self
                .threads
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn shutdown_stops_tasks_and_threads_and_waits_for_them() {
        let background = Background::new();
        let ticks = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = ticks.clone();
        background
            .spawn_thread("test-watch", move |stop| {
                while !stop.sleep(Duration::from_millis(5)) {
                    counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            })
            .unwrap();
        background.spawn(std::future::pending());
        assert_eq!(background.started(), 2);
        assert_eq!(background.running(), 2);
        background.shutdown().await;
        assert_eq!(background.running(), 0);
        let after = ticks.load(std::sync::atomic::Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(ticks.load(std::sync::atomic::Ordering::Relaxed), after);
        assert!(background.stop_signal().is_stopped());
    }

    #[tokio::test]
    async fn dropping_the_owner_stops_its_work() {
        let background = Background::new();
        let (ended, done) = std::sync::mpsc::channel();
        background
            .spawn_thread("test-drop", move |stop| {
                while !stop.sleep(Duration::from_secs(60)) {}
                let _ = ended.send(());
            })
            .unwrap();
        drop(background);
        done.recv_timeout(Duration::from_secs(5)).unwrap();
    }
}
