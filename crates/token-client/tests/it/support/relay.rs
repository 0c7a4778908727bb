//! A loopback listener that relays connections: raw TCP to the broker ([`Relay::start_tcp`],
//! cut with [`Relay::stop`]) or plain HTTP GETs to it over TLS ([`Relay::start_http_to_tls`]:
//! the issuer URL that the emulated STS fetches discovery and keys from).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

pub struct Relay {
    pub address: std::net::SocketAddr,
    listener: Mutex<Option<tokio::net::TcpListener>>,
    tasks: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Relay {
    pub async fn bind() -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Relay {
            address: listener.local_addr().unwrap(),
            listener: Mutex::new(Some(listener)),
            tasks: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// The bound listener, or after [`Relay::stop`] a new one on the same address.
    fn listener(&self) -> tokio::net::TcpListener {
        if let Some(listener) = self.listener.lock().unwrap().take() {
            return listener;
        }
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_reuseaddr(true).unwrap();
        socket.bind(self.address).unwrap();
        socket.listen(128).unwrap()
    }

    /// Relays every connection to `target` byte for byte (TLS passes through).
    pub fn start_tcp(&self, target: &str) {
        let listener = self.listener();
        let target = target.to_owned();
        let tasks = self.tasks.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                let target = target.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                tasks.lock().unwrap().push(task);
            }
        });
        self.tasks.lock().unwrap().push(accept);
    }

    /// Closes the listener and every relayed connection: the broker is unreachable.
    pub fn stop(&self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    /// Answers each GET with the broker's answer to it over TLS (trusting `ca_pem`).
    pub fn start_http_to_tls(&self, broker: &str, ca_pem: &str) {
        let listener = self.listener();
        let http = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap()])
            .build()
            .unwrap();
        let broker = broker.to_owned();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(relay_get(socket, http.clone(), broker.clone()));
            }
        });
        self.tasks.lock().unwrap().push(accept);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

async fn relay_get(mut socket: tokio::net::TcpStream, http: reqwest::Client, broker: String) {
    let mut request = Vec::new();
    let mut buf = [0u8; 4096];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        match socket.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&request);
    let path = text.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let (status, body) = match http.get(format!("{broker}{path}")).send().await {
        Ok(r) => (r.status().as_u16(), r.bytes().await.unwrap_or_default()),
        Err(_) => (502, Default::default()),
    };
    let head = format!(
        "HTTP/1.1 {status} Relayed\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let _ = socket.write_all(head.as_bytes()).await;
    let _ = socket.write_all(&body).await;
}
