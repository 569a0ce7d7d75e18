//! The accept loop: TCP connections, their timeouts, and HTTP (with upgrades) on each.
//!
//! A connection that sends nothing within `server.idle_timeout` is closed; a request head
//! (an upgrade included) must arrive within `server.handshake_timeout`. Accept errors such as
//! running out of file descriptors back off instead of spinning. `server.max_connections`
//! bounds the connections served here at once; a connection leaves this count when it is
//! upgraded, and the WebSocket session then holds its own slot (`admission`). Each
//! request carries the peer's address as `ConnectInfo`. With `server.tls`, the TLS handshake
//! (see [`crate::tls`]) must also complete within `server.handshake_timeout`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::config::ServerConfig;
use crate::tls::Tls;

/// Accept queue length asked of the kernel (which caps it at `net.core.somaxconn`).
const ACCEPT_BACKLOG: i32 = 4096;

/// Serves `router` on `listener` (over TLS when `tls` is given) until `stop` is cancelled,
/// then lets HTTP requests in flight finish (upgraded WebSocket sessions are drained by the
/// node, not here).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    config: ServerConfig,
    tls: Option<Tls>,
    stop: CancellationToken,
) {
    // tokio (through mio) listens with a backlog of 128: a reconnect storm overflows that
    // accept queue, and each dropped SYN costs its client a 1 s retransmission. Listening
    // again on the same socket only changes the backlog, at once.
    if let Err(e) = socket2::SockRef::from(&listener).listen(ACCEPT_BACKLOG) {
        tracing::warn!(error = %e, "Cannot raise the accept backlog; connect storms may stall.");
    }
    let connections = TaskTracker::new();
    let permits = Arc::new(Semaphore::new(config.max_connections.max(1)));
    loop {
        let permit = tokio::select! {
            _ = stop.cancelled() => break,
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "Accept failed; backing off.");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let idle = config.idle_timeout;
        let handshake = config.handshake_timeout;
        let stop = stop.clone();
        let tls = tls.clone();
        connections.spawn(async move {
            let _permit = permit;
            // A connection that never sends a byte is closed after the idle timeout. `peek`,
            // not `readable`: a freshly accepted socket reports itself readable at once.
            let mut first = [0u8; 1];
            match tokio::time::timeout(idle, stream.peek(&mut first)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => return,
            }
            match tls {
                None => serve_http(stream, router, peer, handshake, stop).await,
                Some(tls) => {
                    if let Some(stream) = tls.accept(stream, handshake).await {
                        serve_http(stream, router, peer, handshake, stop).await;
                    }
                }
            }
        });
    }
    drop(listener);
    connections.close();
    let _ = tokio::time::timeout(Duration::from_secs(5), connections.wait()).await;
}

/// Serves HTTP/1.1 (with upgrades) on one connection until it ends or `stop`.
async fn serve_http<IO>(
    io: IO,
    router: Router,
    peer: std::net::SocketAddr,
    handshake: Duration,
    stop: CancellationToken,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    // The peer address reaches the handlers as `ConnectInfo` (admission counts by it).
    let service = TowerToHyperService::new(router.map_request(
        move |mut req: axum::http::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            req
        },
    ));
    // HTTP/1.1 only: wallets upgrade to WebSocket over HTTP/1.1 and publishers post over it.
    // (The auto HTTP/1-or-2 detection reads the first bytes with no timer, so a client could
    // hold a connection open by sending one byte.)
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(handshake)
        .keep_alive(true)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = stop.cancelled() => {
            // Let the request in flight finish, then close (upgraded sessions are already
            // detached from this connection and drained by the node).
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}
