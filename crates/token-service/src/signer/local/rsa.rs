//! Threads that make RSA signatures, shared by every key of the signer (and kept across
//! reloads of the key file): each job carries the key pair it signs with.

use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{RSA_PKCS1_SHA256, RsaKeyPair};

use crate::error::Failure;
use crate::tasks::Background;

/// What the RSA signing threads are sent.
enum RsaJob {
    /// Sign this input and send the signature (`None` if signing failed) back.
    Sign(
        Arc<RsaKeyPair>,
        Vec<u8>,
        tokio::sync::oneshot::Sender<Option<Vec<u8>>>,
    ),
    /// Shutdown has begun: the thread that takes this ends.
    Quit,
}

/// Threads that make RSA signatures (about 0.25 ms each for RSA-2048), one per core, so the
/// async workers never block on them and no worker hands its core over per signature (as
/// `block_in_place` would). They belong to the service's [`Background`]: at shutdown one more
/// thread of it sends each a [`RsaJob::Quit`] (behind the signatures already queued), so
/// `Background::shutdown` joins them.
pub(super) struct RsaPool {
    /// One queue for all threads: a signature goes to whichever thread is free first, so a
    /// thread that the scheduler set aside does not hold up the jobs queued behind it.
    jobs: mpsc::Sender<RsaJob>,
}

impl RsaPool {
    /// Starts the threads under `background`; `None` when the OS gives none.
    pub(super) fn start(background: &Background) -> Option<Self> {
        let threads = std::thread::available_parallelism().map_or(2, usize::from);
        let (jobs, queue) = mpsc::channel::<RsaJob>();
        // The stopper first: a signing thread that nothing tells to end would hold up shutdown.
        let quit = jobs.clone();
        background
            .spawn_thread("rsa-signer-stop", move |stop| {
                while !stop.sleep(Duration::from_secs(3600)) {}
                for _ in 0..threads {
                    let _ = quit.send(RsaJob::Quit);
                }
            })
            .ok()?;
        let queue = Arc::new(Mutex::new(queue));
        let mut started = 0;
        for i in 0..threads {
            let queue = queue.clone();
            let spawned = background.spawn_thread(&format!("rsa-signer-{i}"), move |_stop| {
                sign_jobs(&queue);
            });
            started += usize::from(spawned.is_ok());
        }
        (started > 0).then_some(Self { jobs })
    }

    pub(super) async fn sign(
        &self,
        pair: Arc<RsaKeyPair>,
        message: Vec<u8>,
    ) -> Result<Vec<u8>, Failure> {
        let (reply, signature) = tokio::sync::oneshot::channel();
        self.jobs
            .send(RsaJob::Sign(pair, message, reply))
            .map_err(|_| signing_failed("the RSA signing threads stopped"))?;
        signature
            .await
            .ok()
            .flatten()
            .ok_or_else(|| signing_failed("RSA signing failed"))
    }
}

/// The loop of one RSA signing thread: signs what the queue holds until it takes a
/// [`RsaJob::Quit`] (or every sender is gone).
fn sign_jobs(queue: &Mutex<mpsc::Receiver<RsaJob>>) {
    let rng = SystemRandom::new();
    loop {
        // The thread holding the lock waits for the next job; the others wait for the lock.
        let job = queue.lock().unwrap_or_else(PoisonError::into_inner).recv();
        let Ok(RsaJob::Sign(pair, message, reply)) = job else {
            return;
        };
        // A panic fails this one signature, never the thread: the pool must outlive anything
        // a single job does.
        let signed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut sig = vec![0; pair.public_modulus_len()];
            pair.sign(&RSA_PKCS1_SHA256, &rng, &message, &mut sig)
                .ok()
                .map(|()| sig)
        }))
        .ok()
        .flatten();
        let _ = reply.send(signed);
    }
}

/// A local signature that could not be made: a fault of this service, never of the client.
pub(super) fn signing_failed(detail: &str) -> Failure {
    Failure::server("The token could not be signed; this is a fault of the service, retry later")
        .with_detail(detail)
}
