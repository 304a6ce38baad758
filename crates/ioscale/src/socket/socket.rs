//! A socket: one client's connection to one namespace.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use super::broadcast::{AckError, BroadcastOperator};
use super::client::ClientState;
use super::namespace::{EventHandler, Namespace};
use super::recovery::{Audience, Claim};
use crate::adapter::{AckEvent, AckRoute, Recipient, Room, SocketInfo};
use crate::engine::{CloseReason, PushError, RequestInfo, Session};
use crate::metrics::{Label, Limit};
use crate::protocol::Payload;
use crate::protocol::socketio::Packet;
use crate::protocol::{Frame, Sid, encode_frames};

/// Why a socket disconnected, with Socket.IO's reason strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DisconnectReason {
    /// The client closed the connection.
    TransportClose,
    /// The connection failed (or the client did not read fast enough).
    TransportError,
    /// The client did not answer a ping in time.
    PingTimeout,
    /// The client sent a packet that does not decode.
    ParseError,
    /// The connection was closed by the server: a packet that does not fit the socket's
    /// state, or a disconnect of another namespace with `close`.
    ForcedClose,
    /// Socket.IO's `forced server close`, listed for parity; ioscale does not produce it.
    ForcedServerClose,
    /// The server is shutting down.
    ServerShuttingDown,
    /// The client left the namespace.
    ClientNamespaceDisconnect,
    /// The server disconnected the socket (`socket.disconnect`).
    ServerNamespaceDisconnect,
}

impl DisconnectReason {
    /// Socket.IO's reason string (`transport close`, `ping timeout`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            DisconnectReason::TransportClose => "transport close",
            DisconnectReason::TransportError => "transport error",
            DisconnectReason::PingTimeout => "ping timeout",
            DisconnectReason::ParseError => "parse error",
            DisconnectReason::ForcedClose => "forced close",
            DisconnectReason::ForcedServerClose => "forced server close",
            DisconnectReason::ServerShuttingDown => "server shutting down",
            DisconnectReason::ClientNamespaceDisconnect => "client namespace disconnect",
            DisconnectReason::ServerNamespaceDisconnect => "server namespace disconnect",
        }
    }

    /// Whether a session is kept for recovery after this reason (as Socket.IO's
    /// `RECOVERABLE_DISCONNECT_REASONS`): never after the client's or the server's own
    /// namespace disconnect, nor after a parse error.
    pub fn is_recoverable(self) -> bool {
        matches!(
            self,
            DisconnectReason::TransportClose
                | DisconnectReason::TransportError
                | DisconnectReason::PingTimeout
                | DisconnectReason::ForcedClose
                | DisconnectReason::ForcedServerClose
                | DisconnectReason::ServerShuttingDown
        )
    }

    pub(crate) fn from_close(reason: CloseReason) -> Self {
        match reason {
            CloseReason::TransportClose => DisconnectReason::TransportClose,
            // A slow consumer is logged as such by the engine; to the application it is a
            // transport failure, as Socket.IO would report it.
            CloseReason::TransportError | CloseReason::SlowConsumer => {
                DisconnectReason::TransportError
            }
            CloseReason::PingTimeout => DisconnectReason::PingTimeout,
            CloseReason::ParseError => DisconnectReason::ParseError,
            CloseReason::ForcedClose => DisconnectReason::ForcedClose,
            CloseReason::ServerShuttingDown => DisconnectReason::ServerShuttingDown,
        }
    }
}

/// The `reason` label of `ioscale_disconnects_total`: Socket.IO's reason strings.
impl Label for DisconnectReason {
    const ALL: &'static [DisconnectReason] = &[
        DisconnectReason::TransportClose,
        DisconnectReason::TransportError,
        DisconnectReason::PingTimeout,
        DisconnectReason::ParseError,
        DisconnectReason::ForcedClose,
        DisconnectReason::ForcedServerClose,
        DisconnectReason::ServerShuttingDown,
        DisconnectReason::ClientNamespaceDisconnect,
        DisconnectReason::ServerNamespaceDisconnect,
    ];

    fn as_str(self) -> &'static str {
        DisconnectReason::as_str(self)
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An event received from the client.
#[derive(Debug)]
#[non_exhaustive]
pub struct Event {
    /// The event's name.
    pub name: String,
    /// The arguments after the event name.
    pub payload: Payload,
    /// Present when the client expects an ack.
    pub ack: Option<AckSender>,
}

/// Answers a client's event with an ack (once).
#[derive(Debug)]
pub struct AckSender {
    socket: Arc<Socket>,
    id: u64,
}

impl AckSender {
    pub(crate) fn new(socket: Arc<Socket>, id: u64) -> Self {
        AckSender { socket, id }
    }

    /// Sends the ack with these arguments (best effort: lost if the socket is gone).
    pub fn send(self, payload: impl Into<Payload>) {
        let payload = payload.into();
        let mut packet = Packet::ack(self.socket.ns.name(), self.id, Value::Array(payload.args));
        packet.attachments = payload.attachments;
        let _ = self.socket.send_packet(&packet, false);
    }
}

/// What the client sent when it connected (Socket.IO's `socket.handshake`).
#[derive(Debug)]
#[non_exhaustive]
pub struct Handshake {
    /// The CONNECT packet's auth payload (`{}` when absent).
    pub auth: Value,
}

/// Tokens refill at the configured rate up to the burst size; each event takes one.
#[derive(Debug)]
pub(crate) struct TokenBucket {
    tokens: f64,
    refilled: Instant,
}

impl TokenBucket {
    fn full(burst: f64) -> Self {
        TokenBucket {
            tokens: burst,
            refilled: Instant::now(),
        }
    }
}

pub(crate) enum AckWaiter {
    One(oneshot::Sender<Payload>),
    Broadcast(mpsc::UnboundedSender<AckEvent>),
}

/// One client's connection to one namespace.
pub struct Socket {
    id: Sid,
    this: Weak<Socket>,
    pub(crate) ns: Arc<Namespace>,
    pub(crate) session: Arc<Session<ClientState>>,
    handshake: Handshake,
    /// Handlers of this socket only (rare: most are the namespace's), boxed like the claims
    /// so that sockets without them stay small (a `HashMap` inline is 48 bytes).
    #[allow(clippy::box_collection)]
    handlers: RwLock<Option<Box<HashMap<String, EventHandler>>>>,
    acks: Mutex<HashMap<u64, AckWaiter>>,
    connected: AtomicBool,
    /// Claims of the verified token, when a JWT middleware accepted the socket.
    claims: std::sync::OnceLock<Box<Value>>,
    /// Application data attached to the socket (Socket.IO's `socket.data`).
    pub data: RwLock<Value>,
    /// Recovery state (only with connection state recovery on), inline: `serve` has it on
    /// for every socket.
    recovery: Option<SocketRecovery>,
}

/// A socket's connection state recovery: its private session id, whether it was
/// recovered, and the session it claims until its CONNECT is answered.
struct SocketRecovery {
    pid: Mutex<Sid>,
    recovered: AtomicBool,
    claim: Mutex<Option<Box<Claim>>>,
}

impl std::fmt::Debug for Socket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Socket")
            .field("id", &self.id)
            .field("nsp", &self.ns.name())
            .finish()
    }
}

impl Socket {
    pub(crate) fn new(
        ns: Arc<Namespace>,
        session: Arc<Session<ClientState>>,
        auth: Value,
    ) -> Arc<Self> {
        let claim = ns.recovery.as_ref().and_then(|recovery| {
            if auth.get("pid").is_some() {
                crate::metrics::Metrics::add(&session.metrics().recovery_attempts, 1);
            }
            recovery.claim(&auth).map(Box::new)
        });
        let id = claim
            .as_ref()
            .map_or_else(Sid::random, |claim| claim.session.sid);
        let data = claim.as_ref().map_or_else(
            || Value::Object(Default::default()),
            |claim| claim.session.data.clone(),
        );
        let recovery = ns.recovery.as_ref().map(|_| {
            let pid = claim.as_ref().map_or_else(Sid::random, |claim| claim.pid);
            SocketRecovery {
                pid: Mutex::new(pid),
                recovered: AtomicBool::new(false),
                claim: Mutex::new(claim),
            }
        });
        Arc::new_cyclic(|this| Socket {
            id,
            this: this.clone(),
            ns,
            session,
            handshake: Handshake { auth },
            handlers: RwLock::new(None),
            acks: Mutex::new(HashMap::new()),
            connected: AtomicBool::new(false),
            claims: std::sync::OnceLock::new(),
            data: RwLock::new(data),
            recovery,
        })
    }

    /// Whether this socket is a recovered one (connection state recovery): same id, rooms
    /// and data as before its disconnect, and the packets it missed were sent to it.
    pub fn recovered(&self) -> bool {
        self.recovery
            .as_ref()
            .is_some_and(|recovery| recovery.recovered.load(Ordering::Acquire))
    }

    /// Whether the socket claims a recoverable session (checked when it connects).
    pub(crate) fn claims_session(&self) -> bool {
        self.recovery
            .as_ref()
            .is_some_and(|recovery| recovery.claim.lock().is_some())
    }

    /// Registers the socket with its namespace's adapter and sends the CONNECT answer. A
    /// socket that claims a session gets its rooms back and the packets it missed first,
    /// while the log is locked (no broadcast falls between the replay and the join); if its
    /// offset left the log meanwhile, it becomes a new session instead.
    pub(crate) fn attach(self: &Arc<Self>) {
        let ns = self.ns.clone();
        let (Some(recovery), Some(state)) = (&ns.recovery, &self.recovery) else {
            ns.adapter.add_socket(self.clone());
            let reply = Packet::connect(
                ns.name(),
                Some(serde_json::json!({"sid": self.id.as_str()})),
            );
            let _ = self.session.send(&encode_frames(&reply), false);
            return;
        };
        let claim = state.claim.lock().take();
        let mut log = recovery.log();
        ns.adapter.add_socket(self.clone());
        if let Some(claim) = claim {
            match log.missed(claim.offset, &claim.session.rooms, Instant::now()) {
                Some(frames) => {
                    let rooms: Vec<Room> = claim
                        .session
                        .rooms
                        .iter()
                        .filter(|room| &***room != self.id.as_str())
                        .cloned()
                        .collect();
                    if !rooms.is_empty() {
                        ns.adapter.join(self.id, &rooms);
                    }
                    if !frames.is_empty() {
                        let _ = self.session.send(&frames, false);
                    }
                    state.recovered.store(true, Ordering::Release);
                    crate::metrics::Metrics::add(&self.session.metrics().recovery_successes, 1);
                }
                None => {
                    *state.pid.lock() = Sid::random();
                    *self.data.write() = Value::Object(Default::default());
                }
            }
        }
        let pid = *state.pid.lock();
        let reply = Packet::connect(
            ns.name(),
            Some(serde_json::json!({"sid": self.id.as_str(), "pid": pid.as_str()})),
        );
        let _ = self.session.send(&encode_frames(&reply), false);
        drop(log);
    }

    /// The socket's id (not the Engine.IO session's).
    pub fn id(&self) -> Sid {
        self.id
    }

    /// The namespace the socket is connected to.
    pub fn namespace(&self) -> &Arc<Namespace> {
        &self.ns
    }

    /// What the client sent to connect to the namespace (its auth payload).
    pub fn handshake(&self) -> &Handshake {
        &self.handshake
    }

    /// The claims of the token that authenticated the socket (the `auth` module, feature
    /// `jwt`); `None` without it.
    pub fn claims(&self) -> Option<&Value> {
        self.claims.get().map(|claims| &**claims)
    }

    #[cfg(feature = "jwt")]
    pub(crate) fn set_claims(&self, claims: Value) {
        let _ = self.claims.set(Box::new(claims));
    }

    /// The HTTP request that opened the underlying connection (headers, query, address).
    pub fn request(&self) -> &RequestInfo {
        &self.session.request
    }

    /// The transport the connection currently uses (`polling` or `websocket`).
    pub fn transport(&self) -> &'static str {
        self.session.transport().as_str()
    }

    /// Whether the namespace accepted the socket (set once its CONNECT is answered; it stays
    /// set after a disconnect).
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    pub(crate) fn mark_connected(&self) {
        self.connected.store(true, Ordering::Release);
    }

    /// Takes one event token; false when the socket is over its event rate.
    pub(crate) fn take_event_token(&self) -> bool {
        let Some(rate) = self.ns.limits.event_rate else {
            return true;
        };
        let burst = self.ns.limits.event_burst;
        let mut bucket = self.session.data.event_bucket.lock();
        let bucket = bucket.get_or_insert_with(|| TokenBucket::full(burst));
        let now = Instant::now();
        let refill = now.duration_since(bucket.refilled).as_secs_f64() * rate;
        bucket.tokens = (bucket.tokens + refill).min(self.ns.limits.event_burst);
        bucket.refilled = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// A socket over its event rate gets an `error` event, then is disconnected.
    pub(crate) fn exceeded_event_rate(self: &Arc<Self>) {
        self.session
            .metrics()
            .limit_hit(Limit::EventRate, self.id.as_str());
        // Sent as is, without a recovery offset: the socket is disconnected for good.
        let packet = event_packet(
            self.ns.name(),
            "error",
            serde_json::json!({"message": "rate limit exceeded", "data": {"limit": "event_rate"}})
                .into(),
        );
        let _ = self.send_packet(&packet, false);
        self.disconnect(false);
    }

    /// Handles an event on this socket only.
    pub fn on(
        &self,
        event: impl Into<String>,
        handler: impl Fn(&Arc<Socket>, Event) + Send + Sync + 'static,
    ) {
        self.handlers
            .write()
            .get_or_insert_with(Default::default)
            .insert(event.into(), Arc::new(handler));
    }

    pub(crate) fn handler(&self, event: &str) -> Option<EventHandler> {
        if let Some(handlers) = self.handlers.read().as_ref()
            && let Some(handler) = handlers.get(event)
        {
            return Some(handler.clone());
        }
        self.ns.event_handler(event)
    }

    /// Emits an event to this client. Fails when the socket is gone or its queue is full.
    pub fn emit(&self, event: &str, payload: impl Into<Payload>) -> Result<(), PushError> {
        if let Some(recovery) = &self.ns.recovery {
            // As Socket.IO: an emit to the socket is logged (and gets an offset) like a
            // broadcast to its own room.
            let mut log = recovery.log();
            let mut payload = payload.into();
            payload.args.push(Value::String(log.next_offset()));
            let frames = encode_frames(&event_packet(self.ns.name(), event, payload));
            log.push(Audience::Socket(self.id), frames.clone(), Instant::now());
            return self.session.send(&frames, false);
        }
        let packet = event_packet(self.ns.name(), event, payload.into());
        self.send_packet(&packet, false)
    }

    /// Emits an event that may be dropped when the client's queue is full.
    pub fn emit_volatile(&self, event: &str, payload: impl Into<Payload>) -> Result<(), PushError> {
        let packet = event_packet(self.ns.name(), event, payload.into());
        self.send_packet(&packet, true)
    }

    /// Emits an event and waits up to `timeout` for the client's ack.
    pub async fn emit_with_ack(
        &self,
        event: &str,
        payload: impl Into<Payload>,
        timeout: Duration,
    ) -> Result<Payload, AckError> {
        let id = self.ns.next_ack_id();
        let mut packet = event_packet(self.ns.name(), event, payload.into());
        packet.id = Some(id);
        let (sender, receiver) = oneshot::channel();
        {
            let mut acks = self.acks.lock();
            if acks.len() >= self.ns.limits.pending_acks {
                drop(acks);
                self.session
                    .metrics()
                    .limit_hit(Limit::PendingAcks, self.id.as_str());
                return Err(AckError::TooManyPending);
            }
            acks.insert(id, AckWaiter::One(sender));
        }
        if self.send_packet(&packet, false).is_err() {
            self.acks.lock().remove(&id);
            return Err(AckError::Disconnected);
        }
        match tokio::time::timeout(timeout, receiver).await {
            Ok(Ok(payload)) => Ok(payload),
            Ok(Err(_)) => Err(AckError::Disconnected),
            Err(_) => {
                self.acks.lock().remove(&id);
                Err(AckError::Timeout)
            }
        }
    }

    pub(crate) fn send_packet(&self, packet: &Packet, volatile: bool) -> Result<(), PushError> {
        self.session.send(&encode_frames(packet), volatile)
    }

    /// Joins a room (a socket is always in the room named by its id). False when the socket
    /// is already in as many rooms as its limit allows.
    pub fn join(&self, room: impl Into<Room>) -> bool {
        let room = room.into();
        let rooms = self.ns.adapter.socket_rooms(self.id);
        if rooms.len() >= self.ns.limits.rooms_per_socket && !rooms.contains(&room) {
            self.session
                .metrics()
                .limit_hit(Limit::RoomsPerSocket, self.id.as_str());
            return false;
        }
        self.ns.adapter.join(self.id, &[room]);
        true
    }

    /// Leaves `room` (nothing if not in it).
    pub fn leave(&self, room: &str) {
        self.ns.adapter.leave(self.id, room);
    }

    /// The rooms the socket is in, its own room included.
    pub fn rooms(&self) -> Vec<Room> {
        self.ns.adapter.socket_rooms(self.id)
    }

    /// Broadcast to rooms, excluding this socket (Socket.IO's `socket.to(room)`).
    pub fn to(&self, room: impl Into<Room>) -> BroadcastOperator {
        self.broadcast().to(room)
    }

    /// Broadcast to every socket of the namespace but this one.
    pub fn broadcast(&self) -> BroadcastOperator {
        BroadcastOperator::new(self.ns.clone()).except(Room::from(self.id.as_str()))
    }

    /// Disconnects from the namespace (the client sees `io server disconnect`). With
    /// `close_connection`, the whole underlying connection closes too.
    pub fn disconnect(self: &Arc<Self>, close_connection: bool) {
        if !self.connected() {
            return;
        }
        if close_connection {
            // As the reference server: every namespace of the connection is told (so the
            // client does not reconnect any of them), then the connection closes.
            for socket in self.session.data.take_all() {
                let _ = socket.send_packet(&Packet::disconnect(socket.ns.name()), false);
                socket.on_close(DisconnectReason::ServerNamespaceDisconnect);
            }
            self.session.close(CloseReason::ForcedClose);
        } else {
            let _ = self.send_packet(&Packet::disconnect(self.ns.name()), false);
            self.session.data.remove(self.ns.name());
            self.on_close(DisconnectReason::ServerNamespaceDisconnect);
        }
    }

    /// Leaves every room and tells the handlers; runs once.
    pub(crate) fn on_close(self: &Arc<Self>, reason: DisconnectReason) {
        if !self.connected.swap(false, Ordering::AcqRel) {
            return;
        }
        self.session.metrics().disconnects.increment(reason);
        if let (Some(recovery), Some(state)) = (&self.ns.recovery, &self.recovery)
            && reason.is_recoverable()
        {
            let pid = *state.pid.lock();
            let rooms = self.ns.adapter.socket_rooms(self.id);
            recovery.persist(pid, self.id, rooms, self.data.read().clone());
        }
        self.ns.adapter.remove_socket(self.id);
        self.ns.sockets.remove(&self.id);
        self.acks.lock().clear();
        self.ns.fire_disconnect(self, reason);
    }

    pub(crate) fn on_ack(&self, id: u64, payload: Payload) {
        let waiter = self.acks.lock().remove(&id);
        match waiter {
            Some(AckWaiter::One(sender)) => {
                let _ = sender.send(payload);
            }
            Some(AckWaiter::Broadcast(events)) => {
                // Socket.IO keeps each client's first ack argument.
                let mut first = payload;
                first.args.truncate(1);
                let _ = events.send(AckEvent::Reply(first));
            }
            None => tracing::debug!(sid = %self.id, id, "ack for unknown id"),
        }
    }
}

impl Recipient for Socket {
    fn sid(&self) -> Sid {
        self.id
    }

    fn deliver(&self, frames: &[Frame], volatile: bool, ack: Option<&AckRoute>) -> bool {
        if let Some(route) = ack {
            let mut acks = self.acks.lock();
            // Drop waiters of broadcasts that already gave up, so the table stays small.
            if acks.len() >= 16 {
                acks.retain(|_, waiter| match waiter {
                    AckWaiter::Broadcast(replies) => !replies.is_closed(),
                    AckWaiter::One(sender) => !sender.is_closed(),
                });
            }
            if acks.len() >= self.ns.limits.pending_acks {
                drop(acks);
                self.session
                    .metrics()
                    .limit_hit(Limit::PendingAcks, self.id.as_str());
                return false;
            }
            acks.insert(route.id, AckWaiter::Broadcast(route.events.clone()));
        }
        let accepted = self.session.send(frames, volatile).is_ok();
        if !accepted && let Some(route) = ack {
            self.acks.lock().remove(&route.id);
        }
        accepted
    }

    fn info(&self) -> SocketInfo {
        SocketInfo {
            id: self.id.to_string(),
            handshake: super::handshake::to_json(&self.session.request, &self.handshake.auth),
            rooms: self.rooms().iter().map(|room| room.to_string()).collect(),
            data: self.data.read().clone(),
        }
    }

    fn disconnect(&self, close: bool) {
        if let Some(this) = self.this.upgrade() {
            Socket::disconnect(&this, close);
        }
    }
}

/// An EVENT packet: `[event, ...args]`.
pub(crate) fn event_packet(nsp: &str, event: &str, payload: Payload) -> Packet {
    let mut args = Vec::with_capacity(payload.args.len() + 1);
    args.push(Value::String(event.to_owned()));
    args.extend(payload.args);
    let mut packet = Packet::event(nsp, Value::Array(args));
    packet.attachments = payload.attachments;
    packet
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disconnect_reasons_are_the_metric_labels() {
        crate::metrics::tests::check_label::<DisconnectReason>();
        // The exported label values, unchanged since they were a list in `metrics.rs`.
        let values: Vec<_> = DisconnectReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(
            values,
            [
                "transport close",
                "transport error",
                "ping timeout",
                "parse error",
                "forced close",
                "forced server close",
                "server shutting down",
                "client namespace disconnect",
                "server namespace disconnect",
            ]
        );
    }
}
