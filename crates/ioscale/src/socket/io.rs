//! The Socket.IO server: configuration, namespaces, and the HTTP entry point.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use dashmap::DashMap;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use parking_lot::RwLock;
use tokio::net::TcpListener;

use super::broadcast::BroadcastOperator;
use super::client::{self, ClientState};
use super::namespace::Namespace;
use super::socket::DisconnectReason;
use crate::adapter::{
    Adapter, AdapterContext, AdapterFactory, MemoryAdapter, Room, RoomEvent, RoomEventHook,
    ServerEventHook,
};
use crate::engine::{CloseReason, Engine, EngineConfig, EngineHandler, Message, Session};
use crate::metrics::Metrics;
use crate::protocol::Payload;

/// Socket.IO settings. Defaults match Socket.IO's server.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct IoConfig {
    /// The Engine.IO layer's settings (path, heartbeat, payload size, origins, limits).
    pub engine: EngineConfig,
    /// Time a new connection has to join a namespace before it is closed. Default 45 s.
    pub connect_timeout: Duration,
    /// Per-socket limits.
    pub limits: SocketLimits,
    /// Connection state recovery; `None` (the default, as Socket.IO's) turns it off. One
    /// node only: with a cluster adapter, broadcasts received from other nodes are not
    /// logged, so a recovered client would not get those it missed.
    pub connection_state_recovery: Option<super::recovery::RecoveryConfig>,
}

/// Limits on what one client may do. Each refusal is counted
/// (`ioscale_limit_rejections_total{limit}`) and logged.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct SocketLimits {
    /// Namespaces one connection may join; more get CONNECT_ERROR. Default 64.
    pub namespaces_per_connection: usize,
    /// Rooms one socket may be in (its own included); joins beyond are refused. Default 10,000.
    pub rooms_per_socket: usize,
    /// Acks the server may wait for on one socket; emits with ack beyond fail. Default 1,024.
    pub pending_acks: usize,
    /// Events per second a socket may send (token bucket with `event_burst`); a socket past
    /// it gets an `error` event, then is disconnected. Default: no limit.
    pub event_rate: Option<f64>,
    /// Bucket size of `event_rate`. Default 100.
    pub event_burst: f64,
}

impl Default for SocketLimits {
    fn default() -> Self {
        SocketLimits {
            namespaces_per_connection: 64,
            rooms_per_socket: 10_000,
            pending_acks: 1024,
            event_rate: None,
            event_burst: 100.0,
        }
    }
}

impl Default for IoConfig {
    fn default() -> Self {
        IoConfig {
            engine: EngineConfig::default(),
            connect_timeout: Duration::from_millis(45_000),
            limits: SocketLimits::default(),
            connection_state_recovery: None,
        }
    }
}

type Predicate = Arc<dyn Fn(&str) -> bool + Send + Sync>;
type Setup = Arc<dyn Fn(&Arc<Namespace>) + Send + Sync>;

/// HTTP response body type of [`Io::handle`].
pub type Body = Full<Bytes>;

/// A Socket.IO server. Cheap to clone; clones are the same server.
#[derive(Clone)]
pub struct Io {
    inner: Arc<IoInner>,
    engine: Engine<IoInner>,
}

impl std::fmt::Debug for Io {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Io")
            .field("connections", &self.connection_count())
            .finish()
    }
}

pub struct IoInner {
    config: IoConfig,
    namespaces: DashMap<String, Arc<Namespace>>,
    dynamic: RwLock<Vec<(Predicate, Setup)>>,
    adapter_factory: AdapterFactory,
    room_events: RwLock<Option<RoomEventHook>>,
    metrics: Arc<Metrics>,
    this: Weak<IoInner>,
}

impl Io {
    /// A single-node server (in-memory adapter).
    pub fn new(config: IoConfig) -> Io {
        Io::with_adapter(
            config,
            Arc::new(|context: AdapterContext| {
                Arc::new(MemoryAdapter::new(
                    context.namespace,
                    context.room_events,
                    context.metrics,
                )) as Arc<dyn Adapter>
            }),
        )
    }

    /// A server whose namespaces get their adapter from `factory` (a cluster adapter).
    pub fn with_adapter(config: IoConfig, factory: AdapterFactory) -> Io {
        let engine_config = config.engine.clone();
        let inner = Arc::new_cyclic(|this| IoInner {
            config,
            namespaces: DashMap::new(),
            dynamic: RwLock::new(Vec::new()),
            adapter_factory: factory,
            room_events: RwLock::new(None),
            metrics: Arc::new(Metrics::default()),
            this: this.clone(),
        });
        let engine = Engine::with_metrics(engine_config, inner.clone(), inner.metrics.clone());
        let io = Io { inner, engine };
        io.of("/");
        io
    }

    /// The configuration it was built with.
    pub fn config(&self) -> &IoConfig {
        &self.inner.config
    }

    /// Observes room creation, deletion, joins and leaves in every namespace.
    pub fn on_room_event(&self, hook: impl Fn(&str, &RoomEvent) + Send + Sync + 'static) {
        *self.inner.room_events.write() = Some(Arc::new(hook));
    }

    /// The namespace with this name, created if needed (names start with `/`).
    pub fn of(&self, name: &str) -> Arc<Namespace> {
        self.inner.get_or_create(name)
    }

    /// Namespaces created on demand when a client connects to a name the predicate accepts;
    /// `setup` configures each one once (handlers, middlewares).
    pub fn dynamic_namespace(
        &self,
        predicate: impl Fn(&str) -> bool + Send + Sync + 'static,
        setup: impl Fn(&Arc<Namespace>) + Send + Sync + 'static,
    ) {
        self.inner
            .dynamic
            .write()
            .push((Arc::new(predicate), Arc::new(setup)));
    }

    /// Every namespace that exists now.
    pub fn namespaces(&self) -> Vec<Arc<Namespace>> {
        self.inner
            .namespaces
            .iter()
            .map(|entry| entry.value().clone())
            .collect()
    }

    /// Emits to every socket of the main namespace.
    pub fn emit(&self, event: &str, payload: impl Into<Payload>) -> usize {
        self.of("/").emit(event, payload)
    }

    /// Broadcast to a room of the main namespace.
    pub fn to(&self, room: impl Into<Room>) -> BroadcastOperator {
        self.of("/").to(room)
    }

    /// Number of open connections (Engine.IO sessions) on this node.
    pub fn connection_count(&self) -> usize {
        self.engine.session_count()
    }

    /// Open connections by transport: `(polling, websocket)`.
    pub fn connections_by_transport(&self) -> (usize, usize) {
        self.engine.connections_by_transport()
    }

    /// This server's counters.
    pub fn metrics(&self) -> &Arc<Metrics> {
        self.engine.metrics()
    }

    /// Whether every connection ended and flushed (after [`Io::close_all`]).
    pub fn is_idle(&self) -> bool {
        self.engine.is_idle()
    }

    /// Closes every connection; clients see a transport close and reconnect elsewhere.
    pub fn close_all(&self) {
        self.engine.close_all(CloseReason::ServerShuttingDown);
    }

    /// Whether the request path is the Socket.IO path.
    pub fn matches_path(&self, path: &str) -> bool {
        self.engine.matches_path(path)
    }

    /// Answers one HTTP request; requests outside the Socket.IO path get 404.
    pub async fn handle(
        &self,
        request: Request<Incoming>,
        remote_addr: SocketAddr,
    ) -> Response<Body> {
        if self.engine.matches_path(request.uri().path()) {
            self.engine.handle(request, remote_addr).await
        } else {
            let mut response = Response::new(Body::default());
            *response.status_mut() = StatusCode::NOT_FOUND;
            response
        }
    }

    /// Serves HTTP on the listener until `shutdown` resolves, then drains: every connection is
    /// closed once its queue is flushed and new handshakes get 503, while the listener still
    /// serves the known sessions (a polling client, with a new connection per request,
    /// collects its queue and the close packet). Returns once every session ended, which the
    /// sessions' own timeouts bound (about `ping_timeout`).
    pub async fn serve(&self, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        let io = self.clone();
        let limits = crate::http::HttpLimits {
            metrics: self.metrics().clone(),
            ..Default::default()
        };
        let (drained, stop_accepting) = tokio::sync::oneshot::channel::<()>();
        let serving = crate::http::serve_http_with(
            listener,
            limits,
            async move {
                let _ = stop_accepting.await;
            },
            move |request, remote| {
                let io = io.clone();
                async move { io.handle(request, remote).await }
            },
        );
        let drain = async {
            shutdown.await;
            self.close_all();
            self.drained().await;
            let _ = drained.send(());
        };
        tokio::join!(serving, drain);
    }

    /// Resolves once every connection ended and flushed (after [`Io::close_all`]).
    pub async fn drained(&self) {
        while !self.is_idle() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl IoInner {
    fn get_or_create(&self, name: &str) -> Arc<Namespace> {
        if let Some(ns) = self.namespaces.get(name) {
            return ns.value().clone();
        }
        self.namespaces
            .entry(name.to_owned())
            .or_insert_with(|| self.new_namespace(name))
            .value()
            .clone()
    }

    fn new_namespace(&self, name: &str) -> Arc<Namespace> {
        let this = self.this.clone();
        let room_events: RoomEventHook = Arc::new(move |nsp, event| {
            if let Some(io) = this.upgrade() {
                let hook = io.room_events.read().clone();
                if let Some(hook) = hook {
                    hook(nsp, event);
                }
            }
        });
        Namespace::new(
            name,
            self.config.limits,
            self.config.connection_state_recovery,
            |namespace, ack_ids| {
                let server_events: ServerEventHook = Arc::new(move |payload, ack| {
                    if let Some(namespace) = namespace.upgrade() {
                        namespace.dispatch_server_event(payload, ack);
                    }
                });
                (self.adapter_factory)(AdapterContext {
                    namespace: name.to_owned(),
                    ack_ids,
                    room_events: Some(room_events),
                    server_events,
                    metrics: self.metrics.clone(),
                })
            },
        )
    }

    pub(crate) fn limits(&self) -> &SocketLimits {
        &self.config.limits
    }

    /// The namespace a client asks for: an existing one, or a new dynamic one.
    pub(crate) fn namespace_for(&self, name: &str) -> Option<Arc<Namespace>> {
        if let Some(ns) = self.namespaces.get(name) {
            return Some(ns.value().clone());
        }
        let setup = self
            .dynamic
            .read()
            .iter()
            .find(|(predicate, _)| predicate(name))
            .map(|(_, setup)| setup.clone())?;
        let mut created = false;
        let ns = self
            .namespaces
            .entry(name.to_owned())
            .or_insert_with(|| {
                created = true;
                self.new_namespace(name)
            })
            .value()
            .clone();
        if created {
            setup(&ns);
        }
        Some(ns)
    }
}

impl EngineHandler for IoInner {
    type Data = ClientState;

    fn on_open(&self, _session: &Arc<Session<ClientState>>) {}

    fn establish_timeout(&self) -> Option<Duration> {
        Some(self.config.connect_timeout)
    }

    fn is_established(&self, session: &Session<ClientState>) -> bool {
        session.data.has_sockets()
    }

    fn on_message(&self, session: &Arc<Session<ClientState>>, message: Message) {
        if let Some(io) = self.this.upgrade() {
            client::on_message(&io, session, message);
        }
    }

    fn on_close(&self, session: &Arc<Session<ClientState>>, reason: CloseReason) {
        session
            .data
            .remove_all(DisconnectReason::from_close(reason));
    }
}
