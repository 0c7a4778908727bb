//! A child process (the broker, `token-client serve`) whose stdout and stderr are collected.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

/// A running child; `url` is the first `scheme://address` after the start marker in its
/// output.
pub struct Process {
    pub url: String,
    logs: Arc<Mutex<String>>,
    child: Child,
}

impl Process {
    /// Spawns `command` and waits (60 s at most) for `marker` followed by a URL.
    pub fn start(mut command: Command, marker: &'static str) -> Process {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let logs = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let out: Box<dyn std::io::Read + Send> = Box::new(child.stdout.take().unwrap());
        let err: Box<dyn std::io::Read + Send> = Box::new(child.stderr.take().unwrap());
        for stream in [out, err] {
            let (sink, tx) = (logs.clone(), tx.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if let Some(url) = url_after(&line, marker) {
                        let _ = tx.send(url);
                    }
                    let mut logs = sink.lock().unwrap();
                    logs.push_str(&line);
                    logs.push('\n');
                }
            });
        }
        let Ok(url) = rx.recv_timeout(Duration::from_secs(60)) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{command:?} did not start:\n{}", logs.lock().unwrap());
        };
        Process { url, logs, child }
    }

    /// Everything the process printed so far.
    pub fn logs(&self) -> String {
        std::thread::sleep(Duration::from_millis(100));
        self.logs.lock().unwrap().clone()
    }

    /// Sends SIGTERM and waits for the exit.
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal("-TERM")
    }

    /// Sends `signal` (`-TERM`, `-INT`) and waits for the exit.
    pub fn signal(&mut self, signal: &str) -> ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args([signal, &pid]).status().unwrap();
        assert!(sent.success());
        for _ in 0..100 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("no exit within 10 s of {signal}:\n{}", self.logs());
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `scheme://address` after `marker` in a log line.
pub fn url_after(line: &str, marker: &str) -> Option<String> {
    let rest = &line[line.rfind(marker)? + marker.len()..];
    let end = rest
        .find(|c: char| c.is_whitespace() || c == '"' || c == '\\')
        .unwrap_or(rest.len());
    let url = &rest[..end];
    url.contains("://").then(|| url.to_owned())
}
