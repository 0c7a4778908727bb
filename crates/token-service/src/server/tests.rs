use std::sync::Arc;
use std::time::Duration;

use super::*;

fn rejected(metrics: &Metrics) -> Option<u64> {
    metrics
        .render()
        .lines()
        .find_map(|l| l.strip_prefix("token_service_connections_rejected_total "))
        .and_then(|v| v.parse().ok())
}

/// Two servers in one process count their connections in their own registries: a
/// connection refused by one is not counted by the other (a process-global registry would).
#[tokio::test]
async fn two_servers_in_one_process_count_their_connections_apart() {
    let (full, open) = (Arc::new(Metrics::new()), Arc::new(Metrics::new()));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut addresses = Vec::new();
    let mut servers = Vec::new();
    for (metrics, max_connections) in [(full.clone(), 0), (open.clone(), 8)] {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        addresses.push(listener.local_addr().unwrap());
        let settings = ServerSettings {
            max_connections,
            grace_period: Duration::from_millis(100),
            ..ServerSettings::default()
        };
        let mut stopped = stopped.clone();
        servers.push(tokio::spawn(serve(
            listener,
            Router::new(),
            None,
            settings,
            metrics,
            async move {
                let _ = stopped.wait_for(|s| *s).await;
            },
        )));
    }
    let _refused = tokio::net::TcpStream::connect(addresses[0]).await.unwrap();
    let _accepted = tokio::net::TcpStream::connect(addresses[1]).await.unwrap();
    for _ in 0..200 {
        if rejected(&full) == Some(1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(rejected(&full), Some(1), "{}", full.render());
    assert_eq!(rejected(&open), Some(0), "{}", open.render());
    let _ = stop.send(true);
    for server in servers {
        server.await.unwrap().unwrap();
    }
}
