//! The service inside the test process: the only code of the harness that uses the library's
//! composition API (`config::load`, `app::build`, `app::serve_until`), so a change of that API
//! is adapted here once. Each service runs on a runtime of its own, on a thread of its own, so
//! that a test may block (curl, `std::net`) or use a current-thread runtime without starving it.

use std::net::TcpListener;

use token_service::config::load;
use token_service::config::source::{Origin, Values};
use token_service::flows::FlowRegistry;

/// A service served in-process; dropping it stops it (and its background tasks).
pub struct InProcess {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

/// Builds the service from `settings` (name → value, as the environment would give them) and
/// serves it on `listener`, which the caller bound (to port 0) and hands over. Returns once the
/// application is built, or the startup problems the service would print.
pub fn spawn_app(
    listener: TcpListener,
    settings: &[(String, String)],
) -> Result<InProcess, String> {
    let values: Values = settings
        .iter()
        .map(|(k, v)| (k.clone(), (v.clone(), Origin::Env)))
        .collect();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (built, started) = std::sync::mpsc::channel::<Result<(), String>>();
    std::thread::spawn(move || {
        let runtime = match tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(e) => return drop(built.send(Err(e.to_string()))),
        };
        runtime.block_on(async move {
            let registry = FlowRegistry::builtin();
            let app = load(values, &registry)
                .and_then(|config| token_service::app::build(&config, &registry));
            let app = match app {
                Ok(app) => app,
                Err(problems) => {
                    let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
                    return drop(built.send(Err(lines.join("\n"))));
                }
            };
            let listener = listener
                .set_nonblocking(true)
                .and_then(|()| tokio::net::TcpListener::from_std(listener));
            let listener = match listener {
                Ok(listener) => listener,
                Err(e) => return drop(built.send(Err(e.to_string()))),
            };
            let _ = built.send(Ok(()));
            let shutdown = async move {
                let _ = stopped.await;
            };
            if let Err(e) = token_service::app::serve_until(listener, app, shutdown).await {
                eprintln!("in-process service stopped: {e:#}");
            }
        });
    });
    match started.recv() {
        Ok(Ok(())) => Ok(InProcess { stop: Some(stop) }),
        Ok(Err(problems)) => Err(problems),
        Err(_) => Err("the service's thread ended before it started".into()),
    }
}

impl Drop for InProcess {
    /// Signals shutdown without waiting: the drain ends on its own within the grace period
    /// and a test need not wait for its clients' kept-alive connections.
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
