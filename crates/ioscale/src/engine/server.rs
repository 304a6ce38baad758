//! The Engine.IO server: request routing, handshakes, the session table and heartbeats.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Once, Weak};

use dashmap::DashMap;
use http::{Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;

use super::config::EngineConfig;
use super::http_util::{
    Body, Cors, EngineError, check_origin, preflight_response, query_param, status_response,
    text_response,
};
use super::session::{CloseReason, RequestInfo, Session, TransportKind};
use super::timer::{Due, Millis, Timers};
use super::{EngineHandler, Message, polling, websocket};
use crate::metrics::{Limit, Metrics};
use crate::protocol::Sid;
use crate::protocol::engineio::{Frame, Packet, PacketType};

/// An Engine.IO server. Cheap to clone; clones share sessions.
pub struct Engine<H: EngineHandler> {
    pub(crate) shared: Arc<Shared<H>>,
}

impl<H: EngineHandler> Clone for Engine<H> {
    fn clone(&self) -> Self {
        Engine {
            shared: self.shared.clone(),
        }
    }
}

pub(crate) struct Shared<H: EngineHandler> {
    pub config: EngineConfig,
    pub handler: Arc<H>,
    pub sessions: DashMap<Sid, Arc<Session<H::Data>>>,
    pub metrics: Arc<Metrics>,
    /// WebSocket connections still running (they flush before they end).
    pub active_websockets: AtomicUsize,
    /// Set by `close_all`: no new session is opened.
    pub closing: AtomicBool,
    /// Open sessions per client IP (kept only with a per-IP limit).
    pub per_ip: DashMap<IpAddr, usize>,
    /// Every session's heartbeat and connect deadlines (no task per session).
    pub(crate) timers: Arc<Timers>,
    /// Starts the timer tasks with the first session (an engine may be built outside a runtime).
    timer_tasks: Once,
}

impl<H: EngineHandler> Shared<H> {
    /// Forgets a session (and its place in the per-IP count).
    pub(crate) fn remove_session(&self, session: &Session<H::Data>) {
        if self.sessions.remove(&session.id).is_some()
            && self.config.max_connections_per_ip.is_some()
        {
            let ip = session.request.remote_addr.ip();
            self.per_ip.remove_if_mut(&ip, |_, count| {
                *count = count.saturating_sub(1);
                *count == 0
            });
        }
    }

    /// Admits a new session within the connection limits, or gives the refusal's status.
    fn admit(&self, ip: IpAddr) -> Result<(), StatusCode> {
        if let Some(max) = self.config.max_connections
            && self.sessions.len() >= max
        {
            self.metrics
                .limit_hit(Limit::Connections, "max connections");
            return Err(StatusCode::SERVICE_UNAVAILABLE);
        }
        if let Some(max) = self.config.max_connections_per_ip
            && self.per_ip.get(&ip).is_some_and(|count| *count >= max)
        {
            self.metrics
                .limit_hit(Limit::ConnectionsPerIp, &ip.to_string());
            return Err(StatusCode::TOO_MANY_REQUESTS);
        }
        Ok(())
    }
}

impl<H: EngineHandler> Engine<H> {
    /// An engine with its own metrics, handing sessions to `handler`.
    pub fn new(config: EngineConfig, handler: Arc<H>) -> Self {
        Engine::with_metrics(config, handler, Arc::new(Metrics::default()))
    }

    /// An engine counting into the given metrics.
    pub fn with_metrics(config: EngineConfig, handler: Arc<H>, metrics: Arc<Metrics>) -> Self {
        Engine {
            shared: Arc::new(Shared {
                config,
                handler,
                sessions: DashMap::new(),
                metrics,
                active_websockets: AtomicUsize::new(0),
                closing: AtomicBool::new(false),
                per_ip: DashMap::new(),
                timers: Arc::new(Timers::new(timer_shards())),
                timer_tasks: Once::new(),
            }),
        }
    }

    /// The counters this engine updates.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.shared.metrics
    }

    /// Open sessions by transport: `(polling, websocket)`.
    pub fn connections_by_transport(&self) -> (usize, usize) {
        let mut counts = (0, 0);
        for entry in self.shared.sessions.iter() {
            if entry.value().is_closed() {
                continue;
            }
            match entry.value().transport() {
                TransportKind::Polling => counts.0 += 1,
                TransportKind::WebSocket => counts.1 += 1,
            }
        }
        counts
    }

    /// Whether every session ended and every WebSocket finished flushing (for shutdown).
    pub fn is_idle(&self) -> bool {
        self.shared.sessions.is_empty()
            && self.shared.active_websockets.load(Ordering::Acquire) == 0
    }

    /// The configuration it was built with.
    pub fn config(&self) -> &EngineConfig {
        &self.shared.config
    }

    /// Number of open sessions.
    pub fn session_count(&self) -> usize {
        self.shared.sessions.len()
    }

    /// Closes every session (graceful: queued frames are flushed first) and refuses new ones.
    pub fn close_all(&self, reason: CloseReason) {
        self.shared.closing.store(true, Ordering::Release);
        let sessions: Vec<_> = self
            .shared
            .sessions
            .iter()
            .map(|entry| entry.value().clone())
            .collect();
        for session in sessions {
            session.close(reason);
        }
    }

    /// Whether a request path belongs to this engine.
    pub fn matches_path(&self, path: &str) -> bool {
        let prefix = &self.shared.config.path;
        path == prefix || path == prefix.trim_end_matches('/')
    }

    /// Answers one HTTP request for the engine path (polling, WebSocket upgrade, preflight).
    pub async fn handle(
        &self,
        request: Request<Incoming>,
        remote_addr: SocketAddr,
    ) -> Response<Body> {
        let is_upgrade = websocket::is_upgrade_request(&request);
        let origin = check_origin(&self.shared.config.allowed_origins, request.headers());
        // Kept for the log line of a refusal (the request moves on).
        let request_origin = match &origin {
            Err(()) => request.headers().get(header::ORIGIN).cloned(),
            Ok(_) => None,
        };
        if request.method() == Method::OPTIONS {
            // A preflight is answered either way; only an allowed origin gets CORS headers.
            return preflight_response(&origin.unwrap_or_default(), request.headers());
        }
        let result = match origin {
            Ok(cors) => self.route(request, remote_addr, is_upgrade, cors).await,
            Err(()) => Err((EngineError::Forbidden, Cors::None)),
        };
        if let Err((error, _)) = &result {
            let count = self.shared.metrics.handshake_errors.increment(*error);
            if *error == EngineError::Forbidden {
                log_refused_origin(&request_origin, remote_addr, count);
            }
        }
        match result {
            Ok(response) => response,
            // As the reference server: refused upgrades get a bare 400 with the message.
            // (Without the WebSocket transport, upgrades are plain requests, as there.)
            Err((error, _)) if is_upgrade && self.shared.config.transports.websocket => {
                error.upgrade_response()
            }
            Err((error, cors)) => error.response(&cors),
        }
    }

    async fn route(
        &self,
        request: Request<Incoming>,
        remote_addr: SocketAddr,
        is_upgrade: bool,
        cors: Cors,
    ) -> Result<Response<Body>, (EngineError, Cors)> {
        let config = &self.shared.config;
        let target_length = request
            .uri()
            .path_and_query()
            .map_or(0, |pq| pq.as_str().len());
        if target_length > config.max_url_length {
            self.shared
                .metrics
                .limit_hit(Limit::UrlLength, "long request target");
            return Ok(status_response(StatusCode::URI_TOO_LONG, &cors));
        }
        let query = request.uri().query().unwrap_or("");
        let transport = match query_param(query, "transport") {
            Some("polling") if config.transports.polling => TransportKind::Polling,
            Some("websocket") if config.transports.websocket => TransportKind::WebSocket,
            _ => return Err((EngineError::UnknownTransport, cors)),
        };
        if let Some(sid) = query_param(query, "sid") {
            let Some(session) = Sid::parse(sid).and_then(|sid| {
                self.shared
                    .sessions
                    .get(&sid)
                    .map(|entry| entry.value().clone())
            }) else {
                return Err((EngineError::UnknownSid, cors));
            };
            // A closed session is gone for the client, except for the one poll that
            // collects a server-side close (see `start`).
            let collecting_close = request.method() == Method::GET
                && session.close_reason().is_some_and(|reason| {
                    reason.flushes() && reason != CloseReason::TransportClose
                });
            if session.is_closed() && !collecting_close {
                return Err((EngineError::UnknownSid, cors));
            }
            return match (transport, is_upgrade) {
                (TransportKind::WebSocket, true) => {
                    if session.transport() != TransportKind::Polling
                        || session.is_closed()
                        || !session.start_upgrade()
                    {
                        return Err((EngineError::BadRequest, cors));
                    }
                    Ok(websocket::accept_upgrade(self.clone(), request, session))
                }
                (TransportKind::Polling, false) => {
                    if session.transport() != TransportKind::Polling {
                        return Err((EngineError::BadRequest, cors));
                    }
                    match *request.method() {
                        Method::GET => Ok(polling::poll(&self.shared, session, cors).await),
                        Method::POST => {
                            Ok(polling::post(&self.shared, session, request, cors).await)
                        }
                        _ => Err((EngineError::BadRequest, cors)),
                    }
                }
                _ => Err((EngineError::BadRequest, cors)),
            };
        }
        if request.method() != Method::GET {
            return Err((EngineError::BadHandshakeMethod, cors));
        }
        if self.shared.closing.load(Ordering::Acquire) {
            return Ok(status_response(StatusCode::SERVICE_UNAVAILABLE, &cors));
        }
        if let Err(status) = self.shared.admit(remote_addr.ip()) {
            return Ok(status_response(status, &cors));
        }
        if query_param(query, "EIO") != Some("4") {
            return Err((EngineError::UnsupportedProtocolVersion, cors));
        }
        match (transport, is_upgrade) {
            (TransportKind::Polling, _) => Ok(self.handshake_polling(request, remote_addr, cors)),
            (TransportKind::WebSocket, true) => {
                Ok(websocket::accept_fresh(self.clone(), request, remote_addr))
            }
            (TransportKind::WebSocket, false) => Err((EngineError::BadRequest, cors)),
        }
    }

    fn handshake_polling(
        &self,
        request: Request<Incoming>,
        remote_addr: SocketAddr,
        cors: Cors,
    ) -> Response<Body> {
        let session = self.open_session(&request, remote_addr, TransportKind::Polling);
        let open = self.open_packet(session.id, TransportKind::Polling);
        Metrics::add(&self.shared.metrics.packets_sent, 1);
        Metrics::add(&self.shared.metrics.bytes_sent, open.len() as u64);
        let mut response = text_response(open, "text/plain; charset=UTF-8", &cors);
        if self.shared.config.cookie
            && let Ok(value) = format!("io={}; Path=/; HttpOnly; SameSite=Lax", session.id).parse()
        {
            response.headers_mut().insert(header::SET_COOKIE, value);
        }
        self.start(session);
        response
    }

    /// Creates and registers a session (its lifecycle task starts with [`Engine::start`]).
    pub(crate) fn open_session(
        &self,
        request: &Request<Incoming>,
        remote_addr: SocketAddr,
        transport: TransportKind,
    ) -> Arc<Session<H::Data>> {
        let info = RequestInfo::detached(request.uri(), request.headers(), remote_addr);
        let session = Arc::new(Session::new(
            Sid::random(),
            info,
            H::Data::default(),
            transport,
            self.shared.config.max_buffered_bytes,
            self.shared.timers.clone(),
            self.shared.metrics.clone(),
        ));
        self.shared.sessions.insert(session.id, session.clone());
        if self.shared.config.max_connections_per_ip.is_some() {
            *self.shared.per_ip.entry(remote_addr.ip()).or_insert(0) += 1;
        }
        session
    }

    /// The `open` packet text for a new session.
    pub(crate) fn open_packet(&self, sid: Sid, transport: TransportKind) -> String {
        let config = &self.shared.config;
        let upgrades = if transport == TransportKind::Polling && config.transports.websocket {
            "[\"websocket\"]"
        } else {
            "[]"
        };
        format!(
            "0{{\"sid\":\"{sid}\",\"upgrades\":{upgrades},\"pingInterval\":{},\"pingTimeout\":{},\"maxPayload\":{}}}",
            config.ping_interval.as_millis(),
            config.ping_timeout.as_millis(),
            config.max_payload
        )
    }

    /// Tells the handler about the session and arms its heartbeat and connect timeout.
    pub(crate) fn start(&self, session: Arc<Session<H::Data>>) {
        self.shared.handler.on_open(&session);
        let shared = &self.shared;
        shared.timer_tasks.call_once(|| {
            for shard in 0..shared.timers.shard_count() {
                tokio::spawn(drive_timers(
                    Arc::downgrade(shared),
                    shared.timers.clone(),
                    shard,
                ));
            }
        });
        let timers = &shared.timers;
        let establish = shared
            .handler
            .establish_timeout()
            .map(|timeout| timers.after(timeout));
        session.start_timer(timers.after(shared.config.ping_interval), establish);
    }
}

/// A browser page from an origin the server does not allow: silent for the page's user
/// (the browser shows a CORS error), so the operator hears of it. Logged the first time,
/// then at every power of two (as the limits), so a flood cannot flood the logs too.
fn log_refused_origin(origin: &Option<http::HeaderValue>, remote: SocketAddr, count: u64) {
    // Peer-controlled: printable ASCII only, and bounded.
    let origin = origin.as_ref().map_or_else(String::new, |value| {
        String::from_utf8_lossy(value.as_bytes())
            .chars()
            .take(200)
            .map(|c| if c.is_ascii_graphic() { c } else { '?' })
            .collect()
    });
    if count.is_power_of_two() {
        tracing::warn!(
            %origin,
            %remote,
            count,
            "origin not allowed: request refused (allow it with --allowed-origins)"
        );
    } else {
        tracing::debug!(%origin, %remote, count, "origin not allowed");
    }
}

/// One timer task per core is plenty: each wake handles every session due by then.
fn timer_shards() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().clamp(1, 8))
}

/// Serves one timer shard: sleeps until its earliest entry, then looks at every session due.
/// Holds the engine only weakly, so it ends with the engine.
async fn drive_timers<H: EngineHandler>(
    shared: Weak<Shared<H>>,
    timers: Arc<Timers>,
    index: usize,
) {
    let shard = timers.shard(index);
    let mut due = Vec::new();
    loop {
        let woken = shard.woken();
        tokio::pin!(woken);
        woken.as_mut().enable();
        match shard.next() {
            Some(at) if at <= timers.now() => {}
            Some(at) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(timers.instant(at)) => {}
                    _ = woken => {}
                }
            }
            None => woken.await,
        }
        let Some(shared) = shared.upgrade() else {
            return;
        };
        shard.take_due(timers.now(), &mut due);
        for (at, sid) in due.drain(..) {
            let session = shared.sessions.get(&sid).map(|entry| entry.value().clone());
            if let Some(session) = session {
                // The handler's close callbacks run here: one that panics must not stop the
                // timers of every other session of the shard.
                let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    check_session(&shared, &session, at)
                }));
                if checked.is_err() {
                    tracing::error!(sid = %sid, "panic in a session callback: session dropped");
                    session.close(CloseReason::ForcedClose);
                    shared.remove_session(&session);
                }
            }
        }
    }
}

/// Does what is due for one session (ping, pong timeout, connect timeout; on close: tell the
/// handler, then forget the session, after a linger for a polling client), and queues it
/// again at its next deadline.
fn check_session<H: EngineHandler>(
    shared: &Shared<H>,
    session: &Arc<Session<H::Data>>,
    entry: Millis,
) {
    let timers = &shared.timers;
    let timer = &session.timer;
    timer.took_entry(entry);
    let now = timers.now();
    loop {
        if session.is_closed() {
            if timer.take_close() {
                let reason = session
                    .close_reason()
                    .unwrap_or(CloseReason::TransportClose);
                tracing::debug!(sid = %session.id, reason = reason.as_str(), "session closed");
                shared.handler.on_close(session, reason);
                timer.set_close_reported();
                // A polling client closed by the server learns it (and gets what was queued)
                // from its next poll; the session stays known until then, within limits.
                // At a shutdown, a session never polled since its handshake has no client to
                // wait for (an abandoned handshake): it ends at once, as Node discards it.
                if session.transport() == TransportKind::Polling
                    && reason.flushes()
                    && reason != CloseReason::TransportClose
                    && (reason != CloseReason::ServerShuttingDown || session.was_polled())
                {
                    timer.linger(timers.after(shared.config.ping_timeout));
                } else {
                    shared.remove_session(session);
                    return;
                }
            }
            if timer.linger_over(now) {
                shared.remove_session(session);
                return;
            }
            break;
        }
        match timer.due(now, timers.after(shared.config.ping_timeout)) {
            Due::Nothing(_) => break,
            // A failed send closed the session (or found it closed): handled above.
            Due::Ping => {
                let _ = session.send(&[Frame::PING], false);
            }
            Due::PongTimeout => session.close(CloseReason::PingTimeout),
            Due::Establish => {
                if !shared.handler.is_established(session) {
                    tracing::debug!(sid = %session.id, "not established in time: closing");
                    session.close(CloseReason::ForcedClose);
                }
            }
        }
    }
    let next = timer.next();
    if timer.needs_entry(next) {
        timers.schedule(session.id, next);
    }
}

/// Acts on one packet received on any transport, in arrival order.
pub(crate) fn on_packet<H: EngineHandler>(
    shared: &Shared<H>,
    session: &Arc<Session<H::Data>>,
    packet: Packet,
) {
    if session.is_closed() {
        return;
    }
    Metrics::add(&shared.metrics.packets_received, 1);
    match packet {
        Packet::Text(PacketType::Message, data) => {
            shared.handler.on_message(session, Message::Text(data))
        }
        Packet::Binary(data) => shared.handler.on_message(session, Message::Binary(data)),
        Packet::Text(PacketType::Ping, _) => {
            // Engine.IO v4: only the server pings (the reference closes the same way).
            tracing::debug!(sid = %session.id, "invalid heartbeat direction");
            session.close(CloseReason::TransportError);
        }
        Packet::Text(PacketType::Pong, _) => session.on_pong(shared.config.ping_interval),
        Packet::Text(PacketType::Close, _) => session.close(CloseReason::TransportClose),
        Packet::Text(PacketType::Open | PacketType::Upgrade | PacketType::Noop, _) => {}
    }
}
