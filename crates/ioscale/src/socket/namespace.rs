//! Namespaces: their middlewares, handlers, sockets and adapter.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use dashmap::DashMap;
use parking_lot::RwLock;
use serde_json::{Value, json};

use tokio::sync::oneshot;

use super::broadcast::{BroadcastOperator, RemoteSocket};
use super::io::SocketLimits;
use super::recovery::{Recovery, RecoveryConfig};
use super::socket::{DisconnectReason, Event, Socket};
use crate::adapter::{Adapter, AdapterError, Room};
use crate::protocol::Payload;
use crate::protocol::Sid;

/// Refuses a connection; the client receives CONNECT_ERROR `{"message","data"}`.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectError {
    /// The client's `err.message`.
    pub message: String,
    /// The client's `err.data`, if any.
    pub data: Option<Value>,
}

impl ConnectError {
    /// A refusal with a message and no data.
    pub fn new(message: impl Into<String>) -> Self {
        ConnectError {
            message: message.into(),
            data: None,
        }
    }

    /// A refusal with a message and data.
    pub fn with_data(message: impl Into<String>, data: Value) -> Self {
        ConnectError {
            message: message.into(),
            data: Some(data),
        }
    }

    pub(crate) fn to_json(&self) -> Value {
        match &self.data {
            Some(data) => json!({"message": self.message, "data": data}),
            None => json!({"message": self.message}),
        }
    }
}

pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
pub(crate) type Middleware =
    Arc<dyn Fn(Arc<Socket>) -> BoxFuture<Result<(), ConnectError>> + Send + Sync>;
pub(crate) type ConnectionHandler = Arc<dyn Fn(&Arc<Socket>) + Send + Sync>;
pub(crate) type EventHandler = Arc<dyn Fn(&Arc<Socket>, Event) + Send + Sync>;
pub(crate) type DisconnectHandler = Arc<dyn Fn(&Arc<Socket>, DisconnectReason) + Send + Sync>;
pub(crate) type ServerEventHandler = Arc<dyn Fn(Payload, Option<ServerAck>) + Send + Sync>;

/// Answers another node's `server_side_emit_with_ack` (once; the first argument is kept).
#[derive(Debug)]
pub struct ServerAck(oneshot::Sender<Payload>);

impl ServerAck {
    /// Sends the answer (its first argument is what the emitting node gets).
    pub fn send(self, payload: impl Into<Payload>) {
        let _ = self.0.send(payload.into());
    }
}

/// A Socket.IO namespace (`io.of("/chat")`).
pub struct Namespace {
    name: Arc<str>,
    pub(crate) limits: SocketLimits,
    pub(crate) adapter: Arc<dyn Adapter>,
    middlewares: RwLock<Vec<Middleware>>,
    connection_handlers: RwLock<Vec<ConnectionHandler>>,
    event_handlers: RwLock<HashMap<String, EventHandler>>,
    disconnect_handlers: RwLock<Vec<DisconnectHandler>>,
    server_event_handlers: RwLock<HashMap<String, ServerEventHandler>>,
    pub(crate) sockets: DashMap<Sid, Arc<Socket>>,
    /// Connection state recovery, when on.
    pub(crate) recovery: Option<Recovery>,
    next_ack_id: Arc<AtomicU64>,
}

impl Namespace {
    /// A namespace whose adapter is built knowing the namespace (for server-side events).
    pub(crate) fn new(
        name: &str,
        limits: SocketLimits,
        recovery: Option<RecoveryConfig>,
        make_adapter: impl FnOnce(Weak<Namespace>, Arc<AtomicU64>) -> Arc<dyn Adapter>,
    ) -> Arc<Self> {
        let next_ack_id = Arc::new(AtomicU64::new(0));
        Arc::new_cyclic(|this| Namespace {
            name: Arc::from(name),
            limits,
            adapter: make_adapter(this.clone(), next_ack_id.clone()),
            middlewares: RwLock::new(Vec::new()),
            connection_handlers: RwLock::new(Vec::new()),
            event_handlers: RwLock::new(HashMap::new()),
            disconnect_handlers: RwLock::new(Vec::new()),
            server_event_handlers: RwLock::new(HashMap::new()),
            sockets: DashMap::new(),
            recovery: recovery.map(Recovery::new),
            next_ack_id,
        })
    }

    /// The namespace's name (`/` for the main one).
    pub fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn name_arc(&self) -> &Arc<str> {
        &self.name
    }

    /// Adds a connect middleware; they run in order, the first error refuses the connection.
    pub fn use_middleware<F, Fut>(&self, middleware: F) -> &Self
    where
        F: Fn(Arc<Socket>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), ConnectError>> + Send + 'static,
    {
        self.middlewares
            .write()
            .push(Arc::new(move |socket| Box::pin(middleware(socket))));
        self
    }

    /// Called for each socket that connected (after the middlewares accepted it).
    pub fn on_connection(&self, handler: impl Fn(&Arc<Socket>) + Send + Sync + 'static) -> &Self {
        self.connection_handlers.write().push(Arc::new(handler));
        self
    }

    /// Handles an event for every socket of the namespace (one registration, no per-socket
    /// cost). A socket's own [`Socket::on`] handler for the same event takes precedence.
    pub fn on(
        &self,
        event: impl Into<String>,
        handler: impl Fn(&Arc<Socket>, Event) + Send + Sync + 'static,
    ) -> &Self {
        self.event_handlers
            .write()
            .insert(event.into(), Arc::new(handler));
        self
    }

    /// Called when any socket of the namespace disconnects.
    pub fn on_disconnect(
        &self,
        handler: impl Fn(&Arc<Socket>, DisconnectReason) + Send + Sync + 'static,
    ) -> &Self {
        self.disconnect_handlers.write().push(Arc::new(handler));
        self
    }

    /// Handles an event sent by another node with `server_side_emit` (Socket.IO's
    /// `io.on(event, ...)` for server-side events). The ack is present when the sender waits.
    pub fn on_server_event(
        &self,
        event: impl Into<String>,
        handler: impl Fn(Payload, Option<ServerAck>) + Send + Sync + 'static,
    ) -> &Self {
        self.server_event_handlers
            .write()
            .insert(event.into(), Arc::new(handler));
        self
    }

    /// Runs the handler of a server-side event received from another node.
    pub(crate) fn dispatch_server_event(
        &self,
        mut payload: Payload,
        ack: Option<oneshot::Sender<Payload>>,
    ) {
        let Some(Value::String(event)) = payload.args.first().cloned() else {
            return;
        };
        payload.args.remove(0);
        let handler = self.server_event_handlers.read().get(&event).cloned();
        match handler {
            Some(handler) => handler(payload, ack.map(ServerAck)),
            None => tracing::debug!(nsp = %self.name, event, "no handler for server-side event"),
        }
    }

    /// Sends an event to the handlers of the other nodes.
    pub fn server_side_emit(&self, event: &str, payload: impl Into<Payload>) {
        self.adapter.server_side_emit(named(event, payload.into()));
    }

    /// Sends an event to the other nodes and collects one ack from each (the adapter's
    /// requests timeout bounds the wait).
    pub async fn server_side_emit_with_ack(
        &self,
        event: &str,
        payload: impl Into<Payload>,
    ) -> Result<Vec<Payload>, AdapterError> {
        self.adapter
            .server_side_emit_with_ack(named(event, payload.into()))
            .await
    }

    /// Every socket of the namespace across the cluster.
    pub async fn fetch_sockets(self: &Arc<Self>) -> Result<Vec<RemoteSocket>, AdapterError> {
        self.broadcast().fetch_sockets().await
    }

    /// Every room of the namespace across the cluster.
    pub async fn all_rooms(&self) -> Result<Vec<Room>, AdapterError> {
        self.adapter.all_rooms().await
    }

    /// Number of nodes serving this namespace, this one included.
    pub async fn server_count(&self) -> Result<usize, AdapterError> {
        self.adapter.server_count().await
    }

    /// Targets sockets in this room (calls chain: `to("a").to("b")` is a union).
    pub fn to(self: &Arc<Self>, room: impl Into<Room>) -> BroadcastOperator {
        BroadcastOperator::new(self.clone()).to(room)
    }

    /// Same as [`Namespace::to`].
    pub fn in_room(self: &Arc<Self>, room: impl Into<Room>) -> BroadcastOperator {
        self.to(room)
    }

    /// Targets every socket except those in this room.
    pub fn except(self: &Arc<Self>, room: impl Into<Room>) -> BroadcastOperator {
        BroadcastOperator::new(self.clone()).except(room)
    }

    /// A broadcast to every socket of the namespace; chain flags on it.
    pub fn broadcast(self: &Arc<Self>) -> BroadcastOperator {
        BroadcastOperator::new(self.clone())
    }

    /// Emits to every socket of the namespace.
    pub fn emit(self: &Arc<Self>, event: &str, payload: impl Into<super::Payload>) -> usize {
        BroadcastOperator::new(self.clone()).emit(event, payload)
    }

    /// A connected socket of this node, by id.
    pub fn socket(&self, sid: &str) -> Option<Arc<Socket>> {
        let sid = Sid::parse(sid)?;
        self.sockets.get(&sid).map(|entry| entry.value().clone())
    }

    /// Number of sockets connected to this namespace on this node.
    pub fn socket_count(&self) -> usize {
        self.sockets.len()
    }

    /// Every room with members on this node.
    pub fn rooms(&self) -> Vec<Room> {
        self.adapter.rooms()
    }

    pub(crate) fn has_middlewares(&self) -> bool {
        !self.middlewares.read().is_empty()
    }

    pub(crate) async fn run_middlewares(&self, socket: &Arc<Socket>) -> Result<(), ConnectError> {
        let middlewares = self.middlewares.read().clone();
        for middleware in middlewares {
            middleware(socket.clone()).await?;
        }
        Ok(())
    }

    pub(crate) fn fire_connection(&self, socket: &Arc<Socket>) {
        let handlers = self.connection_handlers.read().clone();
        for handler in handlers {
            handler(socket);
        }
    }

    pub(crate) fn event_handler(&self, event: &str) -> Option<EventHandler> {
        self.event_handlers.read().get(event).cloned()
    }

    pub(crate) fn fire_disconnect(&self, socket: &Arc<Socket>, reason: DisconnectReason) {
        let handlers = self.disconnect_handlers.read().clone();
        for handler in handlers {
            handler(socket, reason);
        }
    }

    pub(crate) fn next_ack_id(&self) -> u64 {
        self.next_ack_id.fetch_add(1, Ordering::Relaxed)
    }
}

/// `[event, ...args]`, the shape server-side events travel in.
fn named(event: &str, mut payload: Payload) -> Payload {
    payload.args.insert(0, Value::String(event.to_owned()));
    payload
}
