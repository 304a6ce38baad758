//! One Engine.IO connection seen from the socket layer: its packet decoder and the
//! sockets it holds, one per namespace (multiplexing).

use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::{Value, json};

use super::io::IoInner;
use super::socket::{AckSender, DisconnectReason, Event, Socket};
use crate::engine::{CloseReason, Message, Session};
use crate::metrics::Limit;
use crate::protocol::Payload;
use crate::protocol::encode_frames;
use crate::protocol::socketio::{Decoder, Packet, PacketKind};

/// Socket.IO's cap on binary attachments per packet.
const MAX_ATTACHMENTS: usize = 10;

type ClientSession = Arc<Session<ClientState>>;

/// Socket-layer state attached to each engine session.
#[derive(Default)]
pub struct ClientState {
    /// Only while a binary packet waits for its attachments (rare): no decoder is kept idle.
    decoder: Mutex<Option<Box<Decoder>>>,
    /// Event rate bucket of the whole connection (a socket reconnecting to a namespace on
    /// the same connection does not get a fresh burst).
    pub(crate) event_bucket: Mutex<Option<super::socket::TokenBucket>>,
    sockets: Mutex<Vec<Arc<Socket>>>,
    /// Namespaces whose connect is waiting on middlewares.
    connecting: Mutex<Vec<Arc<str>>>,
}

impl std::fmt::Debug for ClientState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientState")
            .field("sockets", &self.sockets.lock().len())
            .finish()
    }
}

impl ClientState {
    pub(crate) fn socket(&self, nsp: &str) -> Option<Arc<Socket>> {
        self.sockets
            .lock()
            .iter()
            .find(|socket| socket.namespace().name() == nsp)
            .cloned()
    }

    pub(crate) fn has_sockets(&self) -> bool {
        !self.sockets.lock().is_empty() || !self.connecting.lock().is_empty()
    }

    /// Forgets the socket of a namespace (it disconnected alone).
    pub(crate) fn remove(&self, nsp: &str) {
        self.sockets
            .lock()
            .retain(|socket| socket.namespace().name() != nsp);
    }

    /// Disconnects every socket of the connection.
    pub(crate) fn remove_all(&self, reason: DisconnectReason) {
        for socket in self.take_all() {
            socket.on_close(reason);
        }
    }

    /// Forgets every socket of the connection and returns them.
    pub(crate) fn take_all(&self) -> Vec<Arc<Socket>> {
        std::mem::take(&mut *self.sockets.lock())
    }
}

pub(crate) fn on_message(io: &Arc<IoInner>, session: &ClientSession, message: Message) {
    let decoded = {
        let mut slot = session.data.decoder.lock();
        let mut decoder = slot
            .take()
            .map_or_else(|| Decoder::new(MAX_ATTACHMENTS), |pending| *pending);
        let decoded = match message {
            Message::Text(text) => decoder.decode_text(&text),
            Message::Binary(data) => decoder.decode_binary(data),
        };
        if decoder.is_pending() {
            *slot = Some(Box::new(decoder));
        }
        decoded
    };
    match decoded {
        Ok(Some(packet)) => on_packet(io, session, packet),
        Ok(None) => {}
        Err(error) => {
            tracing::debug!(sid = %session.id, %error, "invalid Socket.IO packet");
            session.data.remove_all(DisconnectReason::ParseError);
            // As the reference server: the connection is closed (gracefully) after a parse error.
            session.close(CloseReason::ForcedClose);
        }
    }
}

fn on_packet(io: &Arc<IoInner>, session: &ClientSession, packet: Packet) {
    let socket = session.data.socket(&packet.nsp);
    match (packet.kind, socket) {
        (PacketKind::Connect, None) => connect(io, session, packet),
        (PacketKind::Event | PacketKind::BinaryEvent, Some(socket)) => on_event(&socket, packet),
        (PacketKind::Ack | PacketKind::BinaryAck, Some(socket)) => {
            if let Some(id) = packet.id {
                socket.on_ack(id, Payload::from_packet(packet));
            }
        }
        (PacketKind::Disconnect, Some(socket)) => {
            session.data.remove(&packet.nsp);
            socket.on_close(DisconnectReason::ClientNamespaceDisconnect);
        }
        (kind, _) => {
            // As the reference server: a packet that does not fit the state closes the connection.
            tracing::debug!(sid = %session.id, ?kind, nsp = %packet.nsp, "packet in invalid state");
            session.data.remove_all(DisconnectReason::ForcedClose);
            session.close(CloseReason::ForcedClose);
        }
    }
}

fn on_event(socket: &Arc<Socket>, packet: Packet) {
    let id = packet.id;
    let mut payload = Payload::from_packet(packet);
    let name = match payload.args.first() {
        Some(Value::String(_)) => match payload.args.remove(0) {
            Value::String(name) => name,
            _ => return,
        },
        Some(other) => {
            let name = other.to_string();
            payload.args.remove(0);
            name
        }
        None => return,
    };
    if !socket.take_event_token() {
        socket.exceeded_event_rate();
        return;
    }
    let Some(handler) = socket.handler(&name) else {
        return;
    };
    let ack = id.map(|id| AckSender::new(socket.clone(), id));
    handler(socket, Event { name, payload, ack });
}

fn connect(io: &Arc<IoInner>, session: &ClientSession, packet: Packet) {
    // The limit comes first: a client over it must not create dynamic namespaces either.
    let joined = session.data.sockets.lock().len() + session.data.connecting.lock().len();
    if joined >= io.limits().namespaces_per_connection {
        session
            .metrics()
            .limit_hit(Limit::NamespacesPerConnection, &packet.nsp);
        let error = Packet::connect_error(&packet.nsp, json!({"message": "too many namespaces"}));
        let _ = session.send(&encode_frames(&error), false);
        return;
    }
    let Some(nsp) = io.namespace_for(&packet.nsp) else {
        let error = Packet::connect_error(&packet.nsp, json!({"message": "Invalid namespace"}));
        let _ = session.send(&encode_frames(&error), false);
        return;
    };
    let auth = match packet.data {
        Some(auth @ Value::Object(_)) => auth,
        _ => json!({}),
    };
    let socket = Socket::new(nsp.clone(), session.clone(), auth);
    let skip = socket.claims_session()
        && nsp
            .recovery
            .as_ref()
            .is_some_and(|recovery| recovery.config.skip_middlewares);
    if skip || !nsp.has_middlewares() {
        finish_connect(session, socket);
        return;
    }
    {
        let mut connecting = session.data.connecting.lock();
        if connecting.iter().any(|name| **name == *nsp.name()) {
            return;
        }
        connecting.push(nsp.name_arc().clone());
    }
    let session = session.clone();
    tokio::spawn(async move {
        let result = nsp.run_middlewares(&socket).await;
        session
            .data
            .connecting
            .lock()
            .retain(|name| **name != *nsp.name());
        match result {
            Ok(()) => finish_connect(&session, socket),
            Err(error) => {
                let packet = Packet::connect_error(nsp.name(), error.to_json());
                let _ = session.send(&encode_frames(&packet), false);
            }
        }
    });
}

fn finish_connect(session: &ClientSession, socket: Arc<Socket>) {
    if session.is_closed() {
        return;
    }
    let nsp = socket.namespace().clone();
    socket.mark_connected();
    {
        let mut sockets = session.data.sockets.lock();
        // Most connections join one namespace: room for one, not the default four.
        sockets.reserve_exact(1);
        sockets.push(socket.clone());
    }
    nsp.sockets.insert(socket.id(), socket.clone());
    socket.attach();
    nsp.fire_connection(&socket);
}
