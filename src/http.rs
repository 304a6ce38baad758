//! The HTTP/1.1 server loop (hyper) shared by the Socket.IO server, the operations
//! endpoints and the balancer: upgrades, header limits, slowloris protection, optional TLS.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::metrics::{Limit, Metrics};

/// Limits of the HTTP layer, and TLS.
#[derive(Clone)]
pub struct HttpLimits {
    /// Time a client has to send a request's headers (slowloris). Default 10 s.
    pub header_read_timeout: Duration,
    /// Most bytes of request headers buffered. Default 64 KiB.
    pub max_header_bytes: usize,
    /// Serve HTTPS (and WSS) with this certificate. Default: plain HTTP.
    pub tls: Option<TlsAcceptor>,
    /// Where refusals are counted (`header_bytes`, `header_read_timeout`, and `url_length`
    /// for a target past hyper's own bound); pass the server's [`crate::Io::metrics`].
    /// Default: counters of their own.
    pub metrics: Arc<Metrics>,
}

impl std::fmt::Debug for HttpLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpLimits")
            .field("header_read_timeout", &self.header_read_timeout)
            .field("max_header_bytes", &self.max_header_bytes)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 64 * 1024,
            tls: None,
            metrics: Arc::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("no certificate in {0}")]
    NoCertificate(String),
    #[error("invalid certificate or key: {0}")]
    Invalid(String),
}

/// A TLS acceptor from PEM files: a certificate chain and its private key.
pub fn tls_acceptor(certificate: &str, key: &str) -> Result<TlsAcceptor, TlsError> {
    let read = |path: &str| {
        std::fs::read(path).map_err(|e| TlsError::Read {
            path: path.to_owned(),
            reason: e.to_string(),
        })
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&read(certificate)?)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Invalid(e.to_string()))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate(certificate.to_owned()));
    }
    let key = PrivateKeyDer::from_pem_slice(&read(key)?)
        .map_err(|e| TlsError::Invalid(format!("{key}: {e}")))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| TlsError::Invalid(e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .map_err(|e| TlsError::Invalid(e.to_string()))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Accepts HTTP/1.1 connections (with upgrades) and answers each request with `handler`,
/// with the default [`HttpLimits`].
pub async fn serve_http<F, Fut, B>(
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
    handler: F,
) where
    F: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    serve_http_with(listener, HttpLimits::default(), shutdown, handler).await;
}

/// [`serve_http`] with explicit limits (and TLS).
pub async fn serve_http_with<F, Fut, B>(
    listener: TcpListener,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()>,
    handler: F,
) where
    F: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    tokio::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let limits = limits.clone();
        tokio::spawn(async move {
            match &limits.tls {
                None => serve_connection(stream, remote, &limits, handler).await,
                Some(acceptor) => {
                    // The handshake is bounded like the headers (a slow TLS client is a slowloris).
                    let accepted =
                        tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream))
                            .await;
                    match accepted {
                        Ok(Ok(stream)) => serve_connection(stream, remote, &limits, handler).await,
                        Ok(Err(error)) => tracing::debug!(%remote, %error, "TLS handshake failed"),
                        Err(_) => limits
                            .metrics
                            .limit_hit(Limit::HeaderReadTimeout, &remote.ip().to_string()),
                    }
                }
            }
        });
    }
}

async fn serve_connection<I, F, Fut, B>(io: I, remote: SocketAddr, limits: &HttpLimits, handler: F)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let service = service_fn(move |request| {
        let handler = handler.clone();
        async move { Ok::<_, Infallible>(handler(request, remote).await) }
    });
    let activity = Arc::new(AtomicU8::new(FRESH));
    let io = Watched {
        io,
        activity: activity.clone(),
    };
    let connection = http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        // max_buf_size alone bounds only an incomplete head: a complete one that arrives
        // in a large read could pass it by up to a read's size.
        .max_header_size(limits.max_header_bytes)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    if let Err(error) = connection.await {
        match refusal(&error, activity.load(Ordering::Relaxed)) {
            Some(limit) => limits.metrics.limit_hit(limit, &remote.ip().to_string()),
            None => tracing::trace!(%error, "http connection ended with an error"),
        }
    }
}

/// The limit a connection error is the refusal of, if any.
fn refusal(error: &hyper::Error, activity: u8) -> Option<Limit> {
    if error.is_timeout() {
        // hyper's header timer also runs while a keep-alive connection waits for its next
        // request: closing that one is housekeeping, not a refusal.
        return (activity != IDLE).then_some(Limit::HeaderReadTimeout);
    }
    if error.is_parse_too_large() {
        // hyper answered 431, or 414 for a target past its own 64 KiB bound (only reachable
        // when max_header_bytes is larger); its error kind is private, its text is not.
        return Some(if error.to_string() == "URI too long" {
            Limit::UrlLength
        } else {
            Limit::HeaderBytes
        });
    }
    None
}

/// No byte read or written yet.
const FRESH: u8 = 0;
/// Bytes read since the last write: a request is under way.
const READING: u8 = 1;
/// Written since the last read: between requests.
const IDLE: u8 = 2;

/// The connection's stream, noting whether the peer sent anything since the server last
/// wrote, so that a header timeout can tell a slowloris from an idle keep-alive connection.
struct Watched<I> {
    io: I,
    activity: Arc<AtomicU8>,
}

impl<I> Watched<I> {
    fn note(&self, state: u8) {
        // A load first: after an upgrade every frame passes here, and the state rarely changes.
        if self.activity.load(Ordering::Relaxed) != state {
            self.activity.store(state, Ordering::Relaxed);
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.note(READING);
        }
        result
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.io).poll_write(cx, data);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            this.note(IDLE);
        }
        result
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.io).poll_write_vectored(cx, data);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            this.note(IDLE);
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
