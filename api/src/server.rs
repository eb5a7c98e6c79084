//! The API's accept loop, for plain HTTP and HTTPS alike, with the per-connection limits that keep
//! slow, huge or very many clients from taking the API down. It never looks inside a request.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::sync::Semaphore;
use tower::ServiceExt;

use tokio_util::sync::CancellationToken;

use crate::shutdown::Shutdown;
use crate::tls::TlsConfig;

/// How long one TLS handshake may take before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for open connections to finish.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest number of request headers; a request with more gets 431.
const MAX_HEADERS: usize = 100;
/// Largest HTTP/1 read buffer, so also the largest request head; a larger head gets 431.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Marks a request that came over TLS, where the certificate check already stops a page that
/// rebinds its DNS name to this node.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OverTls;

/// Per-connection limits of the API server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// How long a client may take to send a request's headers, and how long an idle keep-alive
    /// connection stays open (a slow-loris client is cut off after this).
    pub header_timeout: Duration,
    /// Connections open at once; one more is accepted and closed at once, so the backlog never
    /// fills with clients nobody will serve.
    pub max_connections: usize,
}

impl Default for ConnLimits {
    fn default() -> Self {
        Self { header_timeout: Duration::from_secs(10), max_connections: 16_384 }
    }
}

/// Serves `router` on `listener` (HTTPS with HTTP/1.1 and HTTP/2 if `tls` is set) under `limits`
/// until `shutdown` resolves.
///
/// When `shutdown` resolves the listener stops accepting, every SSE stream ends, and the call
/// returns once the requests in flight are answered (or after [`DRAIN_TIMEOUT`]).
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    tls: Option<TlsConfig>,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let token = CancellationToken::new();
    let router = router.layer(axum::Extension(Shutdown::new(token.clone())));
    let shutdown = async move {
        shutdown.await;
        tracing::info!("api: shutting down");
        token.cancel();
    };
    let acceptor = tls.map(|t| tokio_rustls::TlsAcceptor::from(t.0));
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    // One protocol per connection, chosen up front (plain: HTTP/1.1; TLS: by ALPN): an `auto`
    // builder sniffs for the HTTP/2 preface first, and a client that sends nothing at all would
    // then never meet the header timeout.
    let mut h1 = http1::Builder::new();
    h1.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_headers(MAX_HEADERS)
        .max_buf_size(MAX_HEAD_BYTES);
    let mut h2 = http2::Builder::new(TokioExecutor::new());
    h2.timer(TokioTimer::new())
        .max_header_list_size(MAX_HEAD_BYTES as u32)
        .keep_alive_interval(limits.header_timeout)
        .keep_alive_timeout(limits.header_timeout);
    let builders = Arc::new((h1, h2));
    let mut turned_away = 0u64;
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off rather than spin.
                    tracing::warn!(error = %e, "api: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            turned_away += 1;
            if turned_away % 1000 == 1 {
                tracing::warn!(
                    max = limits.max_connections,
                    turned_away,
                    "api: too many connections; closing new ones"
                );
            }
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, router, builders, watcher) =
            (acceptor.clone(), router.clone(), builders.clone(), graceful.watcher());
        tokio::spawn(async move {
            let _slot = slot;
            let secure = acceptor.is_some();
            let service = router.map_request(move |mut req: axum::extract::Request<_>| {
                req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
                if secure {
                    req.extensions_mut().insert(OverTls);
                }
                req
            });
            let service = TowerToHyperService::new(service);
            let (h1, h2) = &*builders;
            let Some(acceptor) = acceptor else {
                let conn = h1.serve_connection(TokioIo::new(tcp), service);
                return report(peer, watcher.watch(conn).await);
            };
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "api: TLS handshake failed"),
                Err(_) => return tracing::debug!(%peer, "api: TLS handshake timed out"),
            };
            if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
                report(peer, watcher.watch(h2.serve_connection(TokioIo::new(stream), service)).await);
            } else {
                report(peer, watcher.watch(h1.serve_connection(TokioIo::new(stream), service)).await);
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown()).await.is_err() {
        tracing::warn!("api: connections still open after {DRAIN_TIMEOUT:?}; closing them");
    }
    Ok(())
}

fn report(peer: SocketAddr, ended: Result<(), hyper::Error>) {
    if let Err(e) = ended {
        tracing::debug!(%peer, error = %e, "api: connection ended with an error");
    }
}
