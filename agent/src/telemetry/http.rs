//! A small HTTP endpoint on `telemetry.metrics_listen`: `GET /metrics` (Prometheus text)
//! and `GET /health` (JSON status). Loopback by default; deliberately minimal (no
//! keep-alive, bounded request size) since Prometheus scrapes it a few times a minute.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::metrics::metrics;

/// Supplies the JSON body of `/health`.
pub type HealthFn = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

/// Binds and serves until shutdown; returns the bound address (port 0 picks one).
pub async fn serve(
    listen: &str,
    health: HealthFn,
    shutdown: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let (mut sock, _) = tokio::select! {
                r = listener.accept() => match r { Ok(s) => s, Err(_) => continue },
                _ = shutdown.cancelled() => break,
            };
            let health = health.clone();
            tokio::spawn(async move {
                let _ = tokio::time::timeout(Duration::from_secs(5), async {
                    let mut buf = vec![0u8; 4096];
                    let mut n = 0;
                    while n < buf.len() {
                        match sock.read(&mut buf[n..]).await {
                            Ok(0) | Err(_) => break,
                            Ok(m) => n += m,
                        }
                        if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                            break;
                        }
                    }
                    let req = String::from_utf8_lossy(&buf[..n]);
                    let path = req.split_whitespace().nth(1).unwrap_or("/");
                    let (status, ctype, body) = match path {
                        "/metrics" => ("200 OK", "text/plain; version=0.0.4; charset=utf-8", metrics().encode()),
                        "/health" | "/healthz" => ("200 OK", "application/json", health().to_string()),
                        _ => ("404 Not Found", "text/plain", "try /metrics or /health\n".to_string()),
                    };
                    let head = format!("HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
                    let _ = sock.write_all(head.as_bytes()).await;
                    let _ = sock.write_all(body.as_bytes()).await;
                    let _ = sock.shutdown().await;
                })
                .await;
            });
        }
    });
    Ok(addr)
}
