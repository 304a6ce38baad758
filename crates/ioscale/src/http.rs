//! The HTTP/1.1 server loop (hyper) shared by the Socket.IO server, the operations
//! endpoints and the balancer: upgrades, header limits, slowloris protection, optional TLS.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
#[cfg(feature = "tls")]
use tokio_rustls::TlsAcceptor;

use crate::metrics::{Limit, Metrics};

mod patient;
#[cfg(feature = "tls")]
mod tls;

#[cfg(feature = "tls")]
pub use tls::{TlsError, tls_acceptor};

/// Limits of the HTTP layer, and TLS.
#[derive(Clone)]
pub struct HttpLimits {
    /// Time a client has to send a request's headers (slowloris). Default 10 s. A client past
    /// it is cut a grace later (a quarter of it, at most 1 s), so that a stall of the process
    /// itself does not cut requests that arrived meanwhile.
    pub header_read_timeout: Duration,
    /// Most bytes of request headers buffered. Default 64 KiB.
    pub max_header_bytes: usize,
    /// Serve HTTPS (and WSS) with this certificate. Default: plain HTTP.
    #[cfg(feature = "tls")]
    pub tls: Option<TlsAcceptor>,
    /// Where refusals are counted (`header_bytes`, `header_read_timeout`, and `url_length`
    /// for a target past hyper's own bound); pass the server's [`crate::Io::metrics`].
    /// Default: counters of their own.
    pub metrics: Arc<Metrics>,
}

impl std::fmt::Debug for HttpLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut debug = f.debug_struct("HttpLimits");
        debug
            .field("header_read_timeout", &self.header_read_timeout)
            .field("max_header_bytes", &self.max_header_bytes);
        #[cfg(feature = "tls")]
        debug.field("tls", &self.tls.is_some());
        debug.finish_non_exhaustive()
    }
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 64 * 1024,
            #[cfg(feature = "tls")]
            tls: None,
            metrics: Arc::default(),
        }
    }
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
            #[cfg(feature = "tls")]
            if let Some(acceptor) = &limits.tls {
                // The handshake is bounded like the headers (a slow TLS client is a slowloris).
                let accepted =
                    patient::timeout(limits.header_read_timeout, acceptor.accept(stream)).await;
                match accepted {
                    Some(Ok(stream)) => serve_connection(stream, remote, &limits, handler).await,
                    Some(Err(error)) => tracing::debug!(%remote, %error, "TLS handshake failed"),
                    None => limits
                        .metrics
                        .limit_hit(Limit::HeaderReadTimeout, &remote.ip().to_string()),
                }
                return;
            }
            serve_connection(stream, remote, &limits, handler).await;
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
    let state = Arc::new(ConnState {
        activity: AtomicU8::new(FRESH),
        defer_head: AtomicBool::new(false),
    });
    let service_state = state.clone();
    let service = service_fn(move |mut request: Request<Incoming>| {
        request
            .extensions_mut()
            .insert(DeferredHead(service_state.clone()));
        let handler = handler.clone();
        async move { Ok::<_, Infallible>(handler(request, remote).await) }
    });
    let io = Watched {
        io,
        state: state.clone(),
        held: Vec::new(),
        holding: false,
    };
    let connection = http1::Builder::new()
        // A process stall past the timeout must not cut requests that arrived (see `patient`).
        .timer(patient::PatientTimer {
            grace: patient::grace_for(limits.header_read_timeout),
        })
        .header_read_timeout(limits.header_read_timeout)
        // max_buf_size alone bounds only an incomplete head: a complete one that arrives
        // in a large read could pass it by up to a read's size.
        .max_header_size(limits.max_header_bytes)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    if let Err(error) = connection.await {
        match refusal(&error, state.activity.load(Ordering::Relaxed)) {
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

/// What a connection's stream shares with its requests.
struct ConnState {
    activity: AtomicU8,
    defer_head: AtomicBool,
}

/// In every request's extensions: lets a handler that answers with an upgrade and writes
/// at once (a fresh WebSocket's open packet) have the response head sent with that first
/// write, one TCP segment instead of two (a loopback send costs about 5 µs of server CPU).
#[derive(Clone)]
pub(crate) struct DeferredHead(Arc<ConnState>);

impl DeferredHead {
    /// The next response head is held until the upgraded stream's first write. Only for a
    /// handler that then writes without waiting for the peer (which waits for the head).
    pub(crate) fn arm(&self) {
        self.0.defer_head.store(true, Ordering::Relaxed);
    }
}

/// The connection's stream, noting whether the peer sent anything since the server last
/// wrote, so that a header timeout can tell a slowloris from an idle keep-alive connection.
/// It also holds a deferred response head (see `DeferredHead`).
struct Watched<I> {
    io: I,
    state: Arc<ConnState>,
    /// A deferred head, then that plus the first write until written out.
    held: Vec<u8>,
    /// The head is held and nothing followed yet: flushes do not send it.
    holding: bool,
}

impl<I> Watched<I> {
    fn note(&self, state: u8) {
        // A load first: after an upgrade every frame passes here, and the state rarely changes.
        if self.state.activity.load(Ordering::Relaxed) != state {
            self.state.activity.store(state, Ordering::Relaxed);
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

impl<I: AsyncWrite + Unpin> Watched<I> {
    /// Holds this write if a head was deferred (`Some`), or appends it to the held head.
    fn hold(&mut self, data: &[std::io::IoSlice<'_>]) -> Option<usize> {
        let len = data.iter().map(|slice| slice.len()).sum();
        if self.holding {
            self.holding = false;
        } else if self.held.is_empty()
            // A plain load first: every frame after an upgrade passes here, the flag is
            // almost never set, and a swap would be a locked instruction per write.
            && self.state.defer_head.load(Ordering::Relaxed)
            && self.state.defer_head.swap(false, Ordering::Relaxed)
        {
            self.holding = true;
        } else {
            return None;
        }
        for slice in data {
            self.held.extend_from_slice(slice);
        }
        self.note(IDLE);
        Some(len)
    }

    /// Writes out what is held (nothing while the head still waits for its follower).
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while !self.holding && !self.held.is_empty() {
            let n = std::task::ready!(Pin::new(&mut self.io).poll_write(cx, &self.held))?;
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            self.held.drain(..n);
            if self.held.is_empty() {
                self.held = Vec::new();
            }
        }
        Poll::Ready(Ok(()))
    }

    fn poll_write_slices(
        &mut self,
        cx: &mut Context<'_>,
        data: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        if let Some(len) = self.hold(data) {
            // Already taken: what the socket does not take now goes with the next flush.
            if let Poll::Ready(Err(error)) = self.poll_drain(cx) {
                return Poll::Ready(Err(error));
            }
            return Poll::Ready(Ok(len));
        }
        std::task::ready!(self.poll_drain(cx))?;
        // A single slice keeps the stream's plain write (`send`, with MSG_NOSIGNAL).
        let result = match data {
            [single] => Pin::new(&mut self.io).poll_write(cx, single),
            _ => Pin::new(&mut self.io).poll_write_vectored(cx, data),
        };
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.note(IDLE);
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
        self.get_mut()
            .poll_write_slices(cx, &[std::io::IoSlice::new(data)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.get_mut().poll_write_slices(cx, data)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        this.holding = false;
        std::task::ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// Records each write the socket would see.
    #[derive(Default)]
    struct Writes(Vec<Vec<u8>>);

    impl AsyncWrite for Writes {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            data: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            self.get_mut().0.push(data.to_vec());
            Poll::Ready(Ok(data.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn watched() -> (Watched<Writes>, DeferredHead) {
        let state = Arc::new(ConnState {
            activity: AtomicU8::new(FRESH),
            defer_head: AtomicBool::new(false),
        });
        let io = Watched {
            io: Writes::default(),
            state: state.clone(),
            held: Vec::new(),
            holding: false,
        };
        (io, DeferredHead(state))
    }

    #[tokio::test]
    async fn a_deferred_head_goes_with_the_first_write() {
        let (mut io, deferred) = watched();
        deferred.arm();
        io.write_all(b"head").await.unwrap();
        io.flush().await.unwrap();
        assert!(io.io.0.is_empty());
        io.write_all(b"open").await.unwrap();
        io.write_all(b"next").await.unwrap();
        io.flush().await.unwrap();
        assert_eq!(io.io.0, [b"headopen".to_vec(), b"next".to_vec()]);
    }

    #[tokio::test]
    async fn without_arming_writes_pass_through() {
        let (mut io, _) = watched();
        io.write_all(b"head").await.unwrap();
        io.write_all(b"body").await.unwrap();
        assert_eq!(io.io.0, [b"head".to_vec(), b"body".to_vec()]);
    }

    #[tokio::test]
    async fn shutdown_sends_a_held_head() {
        let (mut io, deferred) = watched();
        deferred.arm();
        io.write_all(b"head").await.unwrap();
        io.shutdown().await.unwrap();
        assert_eq!(io.io.0, [b"head".to_vec()]);
    }
}
