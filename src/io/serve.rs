//! Serving the router: one HTTP/1 connection per client, WebSocket upgrades, graceful stop.
//!
//! Written out instead of `axum::serve` for two per-connection settings that matter when
//! thousands of sockets stay open: `TCP_NODELAY` (events are small and latency matters; Nagle
//! would hold them back until the client's delayed ACK), and a capped HTTP/1 read buffer (it
//! stays allocated for as long as an upgraded WebSocket lives). Each connection also counts the
//! bytes written to it ([`WireBytes`], in the request's extensions and, for a WebSocket that
//! upgrades a polling session, registered under its session id): how the Socket.IO stage tells
//! how far a socket's queue has drained.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;
use tracing::{debug, warn};

/// The largest request head (and read buffer): Node's default header limit, so whatever Strapi
/// accepts passes through the proxy (a Strapi site's cookies, the admin's JWT among them, can
/// exceed 8 KiB, and the browser sends them to Socket.IO on the same origin too). hyper's read
/// buffer starts at 8 KiB and grows only for a connection that needs more, so a connection
/// with a small head keeps 8 KiB.
const HTTP1_MAX_BUF_BYTES: usize = 16 * 1024;

/// How long a client has to send its request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Accepts connections until `stop` is cancelled, then waits up to `grace` for open
/// connections to finish (close the Socket.IO server first, so WebSockets end).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    stop: CancellationToken,
    grace: Duration,
) {
    let connections = TaskTracker::new();
    loop {
        let (tcp, peer) = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Too many open files and the like: wait a little rather than spin.
                    warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        if let Err(e) = tcp.set_nodelay(true) {
            debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let wire = WireBytes::default();
        let tcp = Counted {
            inner: tcp,
            written: wire.0.clone(),
        };
        let service = router
            .clone()
            .map_request(move |req: hyper::Request<Incoming>| {
                let mut req = req.map(axum::body::Body::new);
                // The client's address, for the proxy's X-Forwarded-For.
                req.extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                super::flow::note_upgrade(req.uri(), &wire);
                req.extensions_mut().insert(wire.clone());
                req
            })
            .map_err(|e: Infallible| match e {});
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .max_buf_size(HTTP1_MAX_BUF_BYTES)
            .serve_connection(TokioIo::new(tcp), TowerToHyperService::new(service))
            .with_upgrades();
        let stop = stop.clone();
        connections.spawn(async move {
            let mut connection = std::pin::pin!(connection);
            let ended = tokio::select! {
                ended = connection.as_mut() => ended,
                () = stop.cancelled() => {
                    // Finish the request in flight, then close.
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = ended {
                debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    connections.close();
    if tokio::time::timeout(grace, connections.wait())
        .await
        .is_err()
    {
        warn!("some connections were still open after {grace:?}; closing anyway");
    }
}

/// Writes to client connections since start, over all connections.
static CONNECTION_WRITES: AtomicU64 = AtomicU64::new(0);

/// Writes to client connections since start (for the metrics).
pub fn connection_writes() -> u64 {
    CONNECTION_WRITES.load(Ordering::Relaxed)
}

/// Bytes written to one client connection so far.
#[derive(Debug, Clone, Default)]
pub struct WireBytes(pub Arc<AtomicU64>);

/// A connection that counts what is written to it.
struct Counted<T> {
    inner: T,
    written: Arc<AtomicU64>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &res {
            self.written.fetch_add(*n as u64, Ordering::Relaxed);
            CONNECTION_WRITES.fetch_add(1, Ordering::Relaxed);
        }
        res
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = &res {
            self.written.fetch_add(*n as u64, Ordering::Relaxed);
            CONNECTION_WRITES.fetch_add(1, Ordering::Relaxed);
        }
        res
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
