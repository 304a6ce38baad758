//! The adapter: which sockets are in which rooms, broadcast fan-out, and the cluster seam.
//!
//! The socket layer talks to rooms and to other nodes only through [`Adapter`], held as
//! `Arc<dyn Adapter>` per namespace. The in-memory [`MemoryAdapter`] serves one node; the
//! cluster adapter ([`cluster`]) wraps it, delivering locally and publishing to other nodes
//! over a link ([`redis`] for Redis, an in-process bus in the crate's tests).

#[cfg(feature = "redis")]
pub mod cluster;
mod members;
mod memory;
#[cfg(feature = "redis")]
pub mod redis;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use crate::protocol::Payload;
use crate::protocol::socketio::Packet;
use crate::protocol::{Frame, Sid};

pub use memory::MemoryAdapter;

/// A room name. Shared, so the same room in many indexes costs one allocation.
pub type Room = Arc<str>;

/// A boxed future, for the asynchronous (cluster-wide) adapter operations.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Someone a broadcast can reach: a connected socket, seen from below the socket layer.
pub trait Recipient: Send + Sync + 'static {
    /// The socket's id (unique within its namespace).
    fn sid(&self) -> Sid;
    /// Queues an already-encoded packet (text frame plus attachments). With `ack`, the
    /// recipient routes its ack for that id to the broadcast's collector.
    fn deliver(&self, frames: &[Frame], volatile: bool, ack: Option<&AckRoute>) -> bool;
    /// What `fetch_sockets` reports about this socket.
    fn info(&self) -> SocketInfo;
    /// Disconnects the socket (and its whole connection with `close`).
    fn disconnect(&self, close: bool);
}

/// A socket as `fetch_sockets` reports it, on this node or another (Socket.IO's fields).
#[derive(Debug, Clone, PartialEq)]
pub struct SocketInfo {
    /// The socket's id.
    pub id: String,
    /// Socket.IO's `socket.handshake` object (headers, time, address, xdomain, secure,
    /// issued, url, query, auth).
    pub handshake: Value,
    /// The rooms it is in, its own room included.
    pub rooms: Vec<String>,
    /// Socket.IO's `socket.data`.
    pub data: Value,
}

/// A broadcast packet, encoded once: the Socket.IO packet (for other nodes) and its
/// Engine.IO frames (for local recipients).
#[derive(Debug, Clone)]
pub struct Broadcast {
    /// The packet, for other nodes (each encodes it in its wire format).
    pub packet: Packet,
    /// The same packet as Engine.IO frames: the text frame, then one frame per attachment.
    pub frames: Vec<Frame>,
}

/// Which sockets a broadcast or cluster operation targets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Target {
    /// Union of these rooms; empty means every socket of the namespace.
    pub rooms: Vec<Room>,
    /// Sockets in any of these rooms are skipped.
    pub except: Vec<Room>,
}

/// How a broadcast is delivered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BroadcastFlags {
    /// May be dropped for clients whose queue is full.
    pub volatile: bool,
    /// This node only.
    pub local: bool,
}

/// Where the acks of a broadcast go: one ack id for every local recipient, one channel for
/// every reply and for the counts other nodes report.
#[derive(Debug, Clone)]
pub struct AckRoute {
    /// The ack id every local recipient gets the packet with.
    pub id: u64,
    /// How long the broadcast waits for acks.
    pub timeout: std::time::Duration,
    /// Where replies and remote counts are sent.
    pub events: mpsc::UnboundedSender<AckEvent>,
}

/// What arrives on an [`AckRoute`] while a broadcast waits for acks.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum AckEvent {
    /// One client's ack (its first argument, as Socket.IO keeps it).
    Reply(Payload),
    /// How many other nodes will report a client count.
    RemoteServers(usize),
    /// One other node's number of recipients.
    RemoteClients(usize),
}

/// Room lifecycle, as Socket.IO's adapter emits it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RoomEvent {
    /// The room got its first member.
    Create(Room),
    /// The room lost its last member.
    Delete(Room),
    /// The socket joined the room.
    Join(Room, Sid),
    /// The socket left the room.
    Leave(Room, Sid),
}

/// Called with the namespace's name and each [`RoomEvent`] of its adapter.
pub type RoomEventHook = Arc<dyn Fn(&str, &RoomEvent) + Send + Sync>;

/// Delivers a server-side event (from another node) to the namespace's handlers; the
/// sender is present when the emitting node waits for an ack.
pub type ServerEventHook = Arc<dyn Fn(Payload, Option<oneshot::Sender<Payload>>) + Send + Sync>;

/// What a namespace gives the adapter it gets built with.
#[derive(Clone)]
pub struct AdapterContext {
    /// The namespace's name (`/` for the main one).
    pub namespace: String,
    /// The namespace's ack id counter (ack ids must not collide on a socket).
    pub ack_ids: Arc<std::sync::atomic::AtomicU64>,
    /// Where room events go, if anyone listens.
    pub room_events: Option<RoomEventHook>,
    /// Where server-side events from other nodes go.
    pub server_events: ServerEventHook,
    /// The server's counters.
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// Builds the adapter of each namespace.
pub type AdapterFactory = Arc<dyn Fn(AdapterContext) -> Arc<dyn Adapter> + Send + Sync>;

/// Why a cluster-wide adapter operation failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum AdapterError {
    /// Not every node answered within the requests timeout.
    #[error(
        "timeout reached while waiting for {operation} response ({received} of {expected} servers answered)"
    )]
    Timeout {
        /// The operation that waited (`fetchSockets`, `serverSideEmit`, ...).
        operation: &'static str,
        /// How many nodes answered.
        received: usize,
        /// How many nodes were expected to answer.
        expected: usize,
        /// Replies that did arrive (server-side emit with ack).
        partial: Vec<Payload>,
    },
    /// The cluster link is down (the reason).
    #[error("cluster unavailable: {0}")]
    Unavailable(String),
    /// This adapter cannot do the named operation.
    #[error("not supported by this adapter: {0}")]
    Unsupported(&'static str),
}

/// The per-namespace cluster seam. Local operations are synchronous; cluster-wide ones
/// return futures that end by their timeout at the latest.
pub trait Adapter: Send + Sync + 'static {
    /// Registers a connected socket (it joins the room named by its id).
    fn add_socket(&self, recipient: Arc<dyn Recipient>);
    /// Forgets a socket and leaves all its rooms.
    fn remove_socket(&self, sid: Sid);
    /// Adds a local socket to rooms.
    fn join(&self, sid: Sid, rooms: &[Room]);
    /// Removes a local socket from a room.
    fn leave(&self, sid: Sid, room: &str);
    /// Rooms the socket is in (its own room included).
    fn socket_rooms(&self, sid: Sid) -> Vec<Room>;
    /// Ids of the local sockets the target selects.
    fn sockets(&self, target: &Target) -> Vec<Sid>;
    /// Every room with members on this node.
    fn rooms(&self) -> Vec<Room>;

    /// Delivers to every targeted socket of the cluster, each once; returns how many local
    /// sockets accepted it. Never waits on the network.
    fn broadcast(&self, message: &Broadcast, target: &Target, flags: BroadcastFlags) -> usize;
    /// Same, expecting acks: local replies and the other nodes' counts and replies arrive
    /// on `route`. Returns the number of local recipients.
    fn broadcast_with_ack(
        &self,
        message: &Broadcast,
        target: &Target,
        flags: BroadcastFlags,
        route: AckRoute,
    ) -> usize;
    /// Sockets of the cluster the target selects.
    fn fetch_sockets(
        &self,
        target: &Target,
        flags: BroadcastFlags,
    ) -> BoxFuture<Result<Vec<SocketInfo>, AdapterError>>;
    /// Makes the targeted sockets of the cluster join rooms.
    fn sockets_join(&self, target: &Target, rooms: &[Room], flags: BroadcastFlags);
    /// Makes the targeted sockets of the cluster leave rooms.
    fn sockets_leave(&self, target: &Target, rooms: &[Room], flags: BroadcastFlags);
    /// Disconnects the targeted sockets of the cluster.
    fn disconnect_sockets(&self, target: &Target, close: bool, flags: BroadcastFlags);
    /// Every room of the cluster.
    fn all_rooms(&self) -> BoxFuture<Result<Vec<Room>, AdapterError>>;
    /// Sends an event (`payload.args[0]` is its name) to the other nodes' handlers.
    fn server_side_emit(&self, payload: Payload);
    /// Same, collecting one ack per other node.
    fn server_side_emit_with_ack(
        &self,
        payload: Payload,
    ) -> BoxFuture<Result<Vec<Payload>, AdapterError>>;
    /// Number of nodes serving this namespace, this one included.
    fn server_count(&self) -> BoxFuture<Result<usize, AdapterError>>;
}
