//! `ioscale lb`: a sticky HTTP/1.1 reverse proxy for Socket.IO nodes.
//!
//! Every request of one Socket.IO session must reach the node holding the session. The
//! default stickiness learns session ids from the polling handshakes it forwards (no
//! cooperation from the nodes beyond the protocol); a request whose node is gone or
//! unknown is answered with Engine.IO's "Session ID unknown", so the client reconnects
//! and lands on a healthy node. WebSocket upgrades are tunnelled byte for byte.

mod backends;
pub mod command;
mod sessions;

use std::error::Error;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, Limited};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use crate::config::{BalancerOptions, Sticky};
use backends::{Backend, Chooser, by_ip};
use ioscale::balance;
use sessions::SessionTable;

pub type ProxyBody = BoxBody<Bytes, Box<dyn Error + Send + Sync>>;

/// Handshake answers are small; anything larger is passed through unread.
const HANDSHAKE_BODY_LIMIT: usize = 64 * 1024;

pub struct Balancer {
    backends: Vec<Backend>,
    chooser: Chooser,
    sessions: SessionTable,
    options: BalancerOptions,
    client: Client<HttpConnector, ProxyBody>,
    /// `X-Forwarded-Proto` of every request: `https` when this balancer terminates TLS.
    forwarded_proto: HeaderValue,
    warned_ping_interval: AtomicBool,
}

/// Where a request goes.
enum Route {
    /// A node fixed by stickiness.
    Fixed(usize),
    /// A new session (or a path outside Socket.IO): any node, by policy.
    New,
}

impl Balancer {
    pub fn new(backends: Vec<String>, options: BalancerOptions, tls: bool) -> Arc<Self> {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_millis(options.connect_timeout)));
        // Idle connections must close before the nodes' header timeout does: the node counts
        // a connection that never carried a request (the pool opens spare ones when requests
        // race) as a slowloris. Without a timer the pool evicts only when it is next used.
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_millis(options.pool_idle_timeout))
            .build(connector);
        Arc::new(Balancer {
            backends: backends.into_iter().map(Backend::new).collect(),
            chooser: Chooser::new(options.policy),
            sessions: SessionTable::new(
                Duration::from_secs(options.session_ttl),
                options.max_sessions,
            ),
            options,
            client,
            forwarded_proto: HeaderValue::from_static(if tls { "https" } else { "http" }),
            warned_ping_interval: AtomicBool::new(false),
        })
    }

    /// Starts the active health checks and the session expiry.
    pub fn start(self: &Arc<Self>) {
        if self.options.health_interval > 0 {
            tokio::spawn(health_checks(Arc::downgrade(self)));
        }
        tokio::spawn(expire_sessions(Arc::downgrade(self)));
    }

    pub fn handle(
        self: &Arc<Self>,
        request: Request<Incoming>,
        remote: SocketAddr,
    ) -> impl std::future::Future<Output = Response<ProxyBody>> + Send + use<> {
        let balancer = self.clone();
        async move { balancer.route_and_forward(request, remote).await }
    }

    fn unknown_sid(&self) -> Response<ProxyBody> {
        let mut response = Response::new(full(r#"{"code":1,"message":"Session ID unknown"}"#));
        *response.status_mut() = StatusCode::BAD_REQUEST;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
    }

    fn forget(&self, sid: &str) {
        if let Some(index) = self.sessions.remove(sid) {
            self.backends[index]
                .sessions
                .fetch_sub(1, Ordering::Relaxed);
        }
    }

    async fn route_and_forward(
        self: Arc<Self>,
        mut request: Request<Incoming>,
        remote: SocketAddr,
    ) -> Response<ProxyBody> {
        let is_socketio = balance::is_socketio_path(request.uri().path(), &self.options.path);
        let query = request.uri().query().unwrap_or("").to_owned();
        let sid = balance::session_id(request.uri(), &self.options.path).map(str::to_owned);
        let route = match self.options.sticky {
            Sticky::Sid => match &sid {
                Some(sid) => match self.sessions.get(sid) {
                    Some(index) if self.backends[index].available() => Route::Fixed(index),
                    Some(_) => {
                        self.forget(sid);
                        return self.unknown_sid();
                    }
                    None => return self.unknown_sid(),
                },
                None => Route::New,
            },
            Sticky::Cookie => match balance::cookie_node(
                request.headers(),
                &self.options.cookie_name,
                self.backends.len(),
            ) {
                Some(index) if self.backends[index].available() => Route::Fixed(index),
                _ if sid.is_some() => return self.unknown_sid(),
                _ => Route::New,
            },
            Sticky::Ip => match by_ip(&self.backends, remote.ip()) {
                Some(index) => Route::Fixed(index),
                None => return status(StatusCode::SERVICE_UNAVAILABLE),
            },
            Sticky::None => Route::New,
        };
        let is_upgrade = balance::is_websocket_upgrade(request.headers());
        let client_upgrade = is_upgrade.then(|| hyper::upgrade::on(&mut request));
        // A client closing its polling session says so in a tiny POST (`1`): read it, so
        // the session stops counting at once rather than at its idle expiry.
        let (parts, body) = request.into_parts();
        let peeked = match &sid {
            Some(_) if parts.method == Method::POST => peek_small(&parts.headers, body).await,
            _ => Peeked::Stream(body),
        };
        let closes = matches!(&peeked, Peeked::Read(bytes) if balance::is_close_payload(bytes));
        let mut peeked = Some(peeked);
        // A request without sid on the Socket.IO path opens a session: it counts on its
        // node from the choice on, so a burst of handshakes spreads by least-connection.
        let opens_session = is_socketio && sid.is_none();
        let mut reservation: Option<Reservation<'_>>;
        // Bodiless requests (handshakes, polls, upgrades) can be retried on another node.
        let retryable = parts.method == Method::GET && matches!(route, Route::New);
        let mut tried = Vec::new();
        let (index, mut response) = loop {
            let index = match route {
                Route::Fixed(index) => index,
                Route::New => match self.chooser.choose(&self.backends, &tried) {
                    Some(index) => index,
                    None => return status(StatusCode::SERVICE_UNAVAILABLE),
                },
            };
            tried.push(index);
            let backend = &self.backends[index];
            backend.requests.fetch_add(1, Ordering::Relaxed);
            reservation = opens_session.then(|| Reservation::new(backend));
            let upstream_body = match (parts.method == Method::GET, peeked.take()) {
                (false, Some(Peeked::Stream(body))) => body.map_err(boxed).boxed(),
                (false, Some(Peeked::Read(bytes))) => full(bytes),
                _ => empty(),
            };
            let upstream =
                upstream_request(&parts, &backend.address, remote, is_upgrade, upstream_body).map(
                    |mut upstream| {
                        upstream.headers_mut().insert(
                            HeaderName::from_static("x-forwarded-proto"),
                            self.forwarded_proto.clone(),
                        );
                        upstream
                    },
                );
            let pending = match upstream {
                Ok(upstream) => self.client.request(upstream),
                Err(error) => {
                    tracing::warn!(%error, "cannot build the upstream request");
                    return status(StatusCode::BAD_REQUEST);
                }
            };
            // A frozen node accepts connections and never answers: the request ends when the
            // node is marked down (by a health check or another request's failure) or at the
            // response timeout, which counts as a failure (nginx's proxy_read_timeout).
            let timeout = Duration::from_millis(self.options.response_timeout);
            let failed = tokio::select! {
                answer = pending => match answer {
                    // A draining node (or one at its --max-connections) refuses new sessions
                    // with 503 while it still serves its own: another node may take this one.
                    Ok(response)
                        if opens_session
                            && retryable
                            && response.status() == StatusCode::SERVICE_UNAVAILABLE =>
                    {
                        tracing::debug!(backend = %backend.address, "node refused a new session: trying another");
                        let another = (0..self.backends.len())
                            .any(|other| !tried.contains(&other) && self.backends[other].available());
                        if !another {
                            break (index, response);
                        }
                        continue;
                    }
                    Ok(response) => break (index, response),
                    Err(error) => {
                        tracing::warn!(backend = %backend.address, %error, "node request failed");
                        StatusCode::BAD_GATEWAY
                    }
                },
                () = backend.down() => {
                    tracing::debug!(backend = %backend.address, "node marked down during a request");
                    StatusCode::BAD_GATEWAY
                }
                () = tokio::time::sleep(timeout) => {
                    tracing::warn!(backend = %backend.address, ?timeout, "node did not answer in time");
                    StatusCode::GATEWAY_TIMEOUT
                }
            };
            // Down already: counting it again would only extend its skip.
            if backend.available() {
                backend.record_failure(
                    self.options.max_fails,
                    Duration::from_secs(self.options.fail_timeout),
                );
            }
            if let Some(sid) = &sid {
                self.forget(sid);
                return self.unknown_sid();
            }
            if !retryable {
                return status(failed);
            }
        };
        if closes && let Some(sid) = &sid {
            self.forget(sid);
        }
        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            if let Some(client_upgrade) = client_upgrade {
                let backend_upgrade = hyper::upgrade::on(&mut response);
                // The tunnel of a new WebSocket session releases its count when it ends.
                if let Some(reservation) = reservation.take() {
                    reservation.keep();
                }
                self.tunnel(index, sid.clone(), client_upgrade, backend_upgrade);
            }
            let (parts, _) = response.into_parts();
            return Response::from_parts(parts, empty());
        }
        let is_handshake = is_socketio
            && sid.is_none()
            && parts.method == Method::GET
            && balance::query_param(&query, "transport") == Some("polling")
            && response.status() == StatusCode::OK;
        if is_handshake {
            return self
                .learn_session(index, response, reservation.take())
                .await;
        }
        if sid.is_some() && response.status() == StatusCode::BAD_REQUEST {
            // The node no longer knows the session (closed or expired there).
            if let Some(sid) = &sid {
                self.forget(sid);
            }
        }
        let (parts, body) = response.into_parts();
        Response::from_parts(parts, body.map_err(boxed).boxed())
    }

    /// Reads the sid from a polling handshake answer and remembers its node.
    async fn learn_session(
        &self,
        index: usize,
        response: Response<Incoming>,
        reservation: Option<Reservation<'_>>,
    ) -> Response<ProxyBody> {
        let (mut parts, body) = response.into_parts();
        let body = match Limited::new(body, HANDSHAKE_BODY_LIMIT).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(error) => {
                tracing::warn!(%error, "cannot read a handshake answer");
                return status(StatusCode::BAD_GATEWAY);
            }
        };
        self.check_ping_interval(&body);
        match balance::handshake_sid(&body) {
            Some(sid) => {
                if self.sessions.insert(sid.to_owned(), index) {
                    // The table entry now holds the count (released when it goes).
                    if let Some(reservation) = reservation {
                        reservation.keep();
                    }
                } else if self.options.sticky == Sticky::Sid {
                    tracing::warn!(max = self.options.max_sessions, "session table full");
                    return status(StatusCode::SERVICE_UNAVAILABLE);
                }
            }
            None => tracing::debug!("handshake answer without a sid"),
        }
        if self.options.sticky == Sticky::Cookie {
            let cookie = format!(
                "{}={index}; Path=/; HttpOnly; SameSite=Lax",
                self.options.cookie_name
            );
            if let Ok(value) = HeaderValue::from_str(&cookie) {
                parts.headers.append(header::SET_COOKIE, value);
            }
        }
        parts.headers.remove(header::CONTENT_LENGTH);
        Response::from_parts(parts, full(body))
    }

    /// Warns once when the nodes hold a long-poll longer than the response timeout allows:
    /// every idle poll would time out and mark a healthy node down.
    fn check_ping_interval(&self, handshake: &[u8]) {
        let Some(interval) = balance::handshake_ping_interval(handshake) else {
            return;
        };
        if interval.saturating_add(1000) > self.options.response_timeout
            && !self.warned_ping_interval.swap(true, Ordering::Relaxed)
        {
            tracing::warn!(
                ping_interval = interval,
                response_timeout = self.options.response_timeout,
                "the nodes' ping interval leaves idle long-polls no time within --response-timeout: raise it"
            );
        }
    }

    /// Copies bytes both ways between the client and the node until either side closes.
    fn tunnel(
        self: &Arc<Self>,
        index: usize,
        sid: Option<String>,
        client: hyper::upgrade::OnUpgrade,
        backend: hyper::upgrade::OnUpgrade,
    ) {
        let balancer = self.clone();
        tokio::spawn(async move {
            // A WebSocket without sid is a session of its own (counted when it was
            // routed); an upgrade moves a known one.
            match tokio::try_join!(client, backend) {
                Ok((client, backend)) => {
                    let mut client = TokioIo::new(client);
                    let mut backend = TokioIo::new(backend);
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut backend).await;
                }
                Err(error) => tracing::debug!(%error, "upgrade failed"),
            }
            match sid {
                None => {
                    balancer.backends[index]
                        .sessions
                        .fetch_sub(1, Ordering::Relaxed);
                }
                Some(sid) => balancer.forget(&sid),
            }
        });
    }

    pub fn session_count(&self) -> usize {
        self.backends
            .iter()
            .map(|b| b.sessions.load(Ordering::Relaxed).max(0) as usize)
            .sum()
    }

    /// Sessions in the sticky table (polling handshakes learned, not yet expired).
    pub fn tracked_sessions(&self) -> usize {
        self.sessions.len()
    }

    pub fn backends_up(&self) -> usize {
        self.backends.iter().filter(|b| b.available()).count()
    }

    /// `(address, up, sessions, requests)` of each node.
    pub fn backend_stats(&self) -> Vec<(String, bool, i64, u64)> {
        self.backends
            .iter()
            .map(|b| {
                (
                    b.address.clone(),
                    b.available(),
                    b.sessions.load(Ordering::Relaxed),
                    b.requests.load(Ordering::Relaxed),
                )
            })
            .collect()
    }
}

/// One session counted on a node until it is kept (handed to the session table or a
/// tunnel) or dropped (the request did not open a session).
struct Reservation<'a> {
    backend: &'a Backend,
    kept: bool,
}

impl<'a> Reservation<'a> {
    fn new(backend: &'a Backend) -> Self {
        backend.sessions.fetch_add(1, Ordering::Relaxed);
        Reservation {
            backend,
            kept: false,
        }
    }

    fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if !self.kept {
            self.backend.sessions.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// A request body: streamed through, or already read by the balancer.
enum Peeked {
    Stream(Incoming),
    Read(Bytes),
}

/// Reads a body of at most a few bytes (a client's close packet fits); streams any other.
async fn peek_small(headers: &HeaderMap, body: Incoming) -> Peeked {
    const SMALL: usize = 16;
    if !balance::content_length_at_most(headers, SMALL) {
        return Peeked::Stream(body);
    }
    match Limited::new(body, SMALL).collect().await {
        Ok(collected) => Peeked::Read(collected.to_bytes()),
        Err(_) => Peeked::Read(Bytes::new()),
    }
}

fn boxed<E: Into<Box<dyn Error + Send + Sync>>>(error: E) -> Box<dyn Error + Send + Sync> {
    error.into()
}

fn empty() -> ProxyBody {
    Empty::new().map_err(|never| match never {}).boxed()
}

fn full(body: impl Into<Bytes>) -> ProxyBody {
    Full::new(body.into())
        .map_err(|never| match never {})
        .boxed()
}

fn status(status: StatusCode) -> Response<ProxyBody> {
    let mut response = Response::new(empty());
    *response.status_mut() = status;
    response
}

/// Hop-by-hop headers, which a proxy must not forward (RFC 9110 7.6.1).
const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn upstream_request(
    parts: &http::request::Parts,
    address: &str,
    remote: SocketAddr,
    is_upgrade: bool,
    body: ProxyBody,
) -> Result<Request<ProxyBody>, http::Error> {
    let uri = balance::upstream_uri(address, &parts.uri)?;
    let mut builder = Request::builder().method(parts.method.clone()).uri(uri);
    if let Some(headers) = builder.headers_mut() {
        for (name, value) in &parts.headers {
            if !HOP_BY_HOP.contains(&name.as_str()) {
                headers.append(name.clone(), value.clone());
            }
        }
        if is_upgrade {
            headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
            headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        }
        headers.insert(
            HeaderName::from_static("x-forwarded-for"),
            balance::forwarded_for(&parts.headers, remote.ip()),
        );
    }
    builder.body(body)
}

async fn health_checks(balancer: std::sync::Weak<Balancer>) {
    // A connection per check: none idles on a node (its header timeout would close it) and
    // each check also proves that the node accepts.
    let client: Client<HttpConnector, ProxyBody> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build(HttpConnector::new());
    loop {
        let Some(this) = balancer.upgrade() else {
            return;
        };
        let interval = Duration::from_millis(this.options.health_interval);
        // All nodes at once: a hung node must not delay the verdict on the others.
        let checks = this.backends.iter().map(|backend| {
            let client = &client;
            let uri = format!("http://{}{}", backend.address, this.options.health_path);
            async move {
                let healthy = match Request::get(uri).body(empty()) {
                    Ok(request) => matches!(
                        tokio::time::timeout(Duration::from_secs(1), client.request(request)).await,
                        // 404: the node has no health endpoint; it answers, so it is up.
                        Ok(Ok(response)) if response.status().is_success() || response.status() == StatusCode::NOT_FOUND
                    ),
                    Err(_) => false,
                };
                backend.set_healthy(healthy);
            }
        });
        futures_util::future::join_all(checks).await;
        drop(this);
        tokio::time::sleep(interval).await;
    }
}

async fn expire_sessions(balancer: std::sync::Weak<Balancer>) {
    loop {
        let Some(this) = balancer.upgrade() else {
            return;
        };
        for index in this.sessions.expire() {
            this.backends[index]
                .sessions
                .fetch_sub(1, Ordering::Relaxed);
        }
        let pause = Duration::from_secs(this.options.session_ttl).min(Duration::from_secs(5));
        drop(this);
        tokio::time::sleep(pause).await;
    }
}
