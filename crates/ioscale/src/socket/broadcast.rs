//! Broadcast operators: `to`, `in`, `except`, `local`, `volatile`, `timeout`, and the
//! cluster-wide operations on the sockets they select.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;

use super::namespace::Namespace;
use super::recovery::Audience;
use super::socket::event_packet;
use crate::adapter::{
    AckEvent, AckRoute, AdapterError, Broadcast, BroadcastFlags, Room, SocketInfo, Target,
};
use crate::protocol::Payload;
use crate::protocol::encode_frames;

/// Why waiting for an ack ended without one.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum AckError {
    /// No ack within the timeout.
    #[error("operation has timed out")]
    Timeout,
    /// The socket disconnected (or could not be sent the event) before it answered.
    #[error("socket disconnected")]
    Disconnected,
    /// The socket already awaits its limit of acks; the event was not sent.
    #[error("too many acks pending on this socket")]
    TooManyPending,
}

/// The outcome of a broadcast with acks: every reply that came in time (each client's
/// first ack argument), and whether some recipients did not answer before the timeout.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct BroadcastAcks {
    /// The replies, in arrival order.
    pub replies: Vec<Payload>,
    /// Whether the timeout passed before every recipient answered.
    pub timed_out: bool,
}

/// Default wait of [`BroadcastOperator::emit_with_ack`] without [`BroadcastOperator::timeout`].
const DEFAULT_ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// A broadcast being described; `emit` sends it, encoded once for every recipient.
#[derive(Clone)]
pub struct BroadcastOperator {
    ns: Arc<Namespace>,
    target: Target,
    flags: BroadcastFlags,
    timeout: Option<Duration>,
}

impl BroadcastOperator {
    pub(crate) fn new(ns: Arc<Namespace>) -> Self {
        BroadcastOperator {
            ns,
            target: Target::default(),
            flags: BroadcastFlags::default(),
            timeout: None,
        }
    }

    /// Adds a room to the targets (several rooms: union, each socket once).
    pub fn to(mut self, room: impl Into<Room>) -> Self {
        let room = room.into();
        if !self.target.rooms.contains(&room) {
            self.target.rooms.push(room);
        }
        self
    }

    /// Same as [`BroadcastOperator::to`].
    pub fn in_room(self, room: impl Into<Room>) -> Self {
        self.to(room)
    }

    /// Skips sockets in this room.
    pub fn except(mut self, room: impl Into<Room>) -> Self {
        let room = room.into();
        if !self.target.except.contains(&room) {
            self.target.except.push(room);
        }
        self
    }

    /// Only sockets of this node.
    pub fn local(mut self) -> Self {
        self.flags.local = true;
        self
    }

    /// The packet may be dropped for clients whose queue is full.
    pub fn volatile(mut self) -> Self {
        self.flags.volatile = true;
        self
    }

    /// How long [`BroadcastOperator::emit_with_ack`] waits for acks (default 5 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    fn message(&self, event: &str, payload: Payload, ack_id: Option<u64>) -> Broadcast {
        let packet = event_packet(self.ns.name(), event, payload);
        let frames = match ack_id {
            None => encode_frames(&packet),
            Some(id) => {
                let mut with_id = packet.clone();
                with_id.id = Some(id);
                encode_frames(&with_id)
            }
        };
        Broadcast { packet, frames }
    }

    /// Sends the event to every target of the cluster; returns how many sockets of this
    /// node accepted it.
    pub fn emit(&self, event: &str, payload: impl Into<Payload>) -> usize {
        if let Some(recovery) = &self.ns.recovery
            && !self.flags.volatile
        {
            // The offset is part of the single encoding; the log stays locked until every
            // local recipient has it, so that sockets see offsets in order.
            let mut log = recovery.log();
            let mut payload = payload.into();
            payload.args.push(Value::String(log.next_offset()));
            let message = self.message(event, payload, None);
            log.push(
                Audience::of(&self.target),
                message.frames.clone(),
                std::time::Instant::now(),
            );
            return self
                .ns
                .adapter
                .broadcast(&message, &self.target, self.flags);
        }
        let message = self.message(event, payload.into(), None);
        self.ns
            .adapter
            .broadcast(&message, &self.target, self.flags)
    }

    /// Sends the event expecting an ack from every target of the cluster, and collects them
    /// until every recipient answered or the timeout passed.
    pub async fn emit_with_ack(&self, event: &str, payload: impl Into<Payload>) -> BroadcastAcks {
        let id = self.ns.next_ack_id();
        let message = self.message(event, payload.into(), Some(id));
        let (events, mut receiver) = mpsc::unbounded_channel();
        let timeout = self.timeout.unwrap_or(DEFAULT_ACK_TIMEOUT);
        let mut expected_clients = self.ns.adapter.broadcast_with_ack(
            &message,
            &self.target,
            self.flags,
            AckRoute {
                id,
                timeout,
                events,
            },
        );
        let deadline = tokio::time::Instant::now() + timeout;
        let mut acks = BroadcastAcks::default();
        let mut remote_servers: Option<usize> = None;
        let mut servers_counted = 0;
        loop {
            let complete =
                remote_servers == Some(servers_counted) && acks.replies.len() >= expected_clients;
            if complete {
                return acks;
            }
            match tokio::time::timeout_at(deadline, receiver.recv()).await {
                Ok(Some(AckEvent::Reply(reply))) => acks.replies.push(reply),
                Ok(Some(AckEvent::RemoteServers(count))) => remote_servers = Some(count),
                Ok(Some(AckEvent::RemoteClients(count))) => {
                    servers_counted += 1;
                    expected_clients += count;
                }
                // Every local recipient is gone and the adapter reported all it will.
                Ok(None) | Err(_) => {
                    acks.timed_out = true;
                    return acks;
                }
            }
        }
    }

    /// Sockets of the cluster this operator targets.
    pub async fn fetch_sockets(&self) -> Result<Vec<RemoteSocket>, AdapterError> {
        let infos = self
            .ns
            .adapter
            .fetch_sockets(&self.target, self.flags)
            .await?;
        Ok(infos
            .into_iter()
            .map(|info| RemoteSocket {
                ns: self.ns.clone(),
                info,
            })
            .collect())
    }

    /// Makes the targeted sockets of the cluster join a room.
    pub fn sockets_join(&self, room: impl Into<Room>) {
        self.ns
            .adapter
            .sockets_join(&self.target, &[room.into()], self.flags);
    }

    /// Makes the targeted sockets of the cluster leave a room.
    pub fn sockets_leave(&self, room: impl Into<Room>) {
        self.ns
            .adapter
            .sockets_leave(&self.target, &[room.into()], self.flags);
    }

    /// Disconnects the targeted sockets of the cluster (their whole connection with `close`).
    pub fn disconnect_sockets(&self, close: bool) {
        self.ns
            .adapter
            .disconnect_sockets(&self.target, close, self.flags);
    }

    /// Ids of the sockets this operator targets on this node.
    pub fn socket_ids(&self) -> Vec<crate::protocol::Sid> {
        self.ns.adapter.sockets(&self.target)
    }
}

/// A socket of any node of the cluster, as `fetch_sockets` returns it; operations on it go
/// through the adapter to the node that holds it.
#[derive(Clone)]
pub struct RemoteSocket {
    ns: Arc<Namespace>,
    info: SocketInfo,
}

impl std::fmt::Debug for RemoteSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteSocket")
            .field("info", &self.info)
            .finish()
    }
}

impl RemoteSocket {
    /// The socket's id.
    pub fn id(&self) -> &str {
        &self.info.id
    }

    /// Socket.IO's `socket.handshake` object, as its node reported it.
    pub fn handshake(&self) -> &Value {
        &self.info.handshake
    }

    /// Its rooms when it was fetched (its own room included).
    pub fn rooms(&self) -> &[String] {
        &self.info.rooms
    }

    /// Its `socket.data` when it was fetched.
    pub fn data(&self) -> &Value {
        &self.info.data
    }

    fn operator(&self) -> BroadcastOperator {
        self.ns.to(self.info.id.as_str())
    }

    /// Emits to this socket, on whichever node it is.
    pub fn emit(&self, event: &str, payload: impl Into<Payload>) {
        self.operator().emit(event, payload);
    }

    /// Makes the socket join `room`, on whichever node it is.
    pub fn join(&self, room: impl Into<Room>) {
        self.operator().sockets_join(room);
    }

    /// Makes the socket leave `room`, on whichever node it is.
    pub fn leave(&self, room: impl Into<Room>) {
        self.operator().sockets_leave(room);
    }

    /// Disconnects the socket (and its whole connection with `close`).
    pub fn disconnect(&self, close: bool) {
        self.operator().disconnect_sockets(close);
    }
}
