//! The adapter: which sockets are in which rooms, and broadcast fan-out.
//!
//! The socket layer talks to rooms only through [`Adapter`], held as `Arc<dyn Adapter>`
//! per namespace: the in-memory [`MemoryAdapter`] serves one node; a cluster adapter
//! (Redis) wraps it, delivering locally and publishing to the other nodes.

mod memory;

use std::sync::Arc;

use crate::engine::{Frame, Sid};

pub use memory::MemoryAdapter;

/// A room name. Shared, so the same room in many indexes costs one allocation.
pub type Room = Arc<str>;

/// Someone a broadcast can reach: a connected socket, seen from below the socket layer.
pub trait Recipient: Send + Sync + 'static {
    fn sid(&self) -> Sid;
    /// Queues an already-encoded packet (text frame plus attachments). With `ack`, the
    /// recipient routes its ack for that id to the broadcast's collector.
    fn deliver(&self, frames: &[Frame], volatile: bool, ack: Option<&AckRoute>) -> bool;
}

/// Where the acks of a broadcast go: one id for every recipient, one shared channel.
#[derive(Debug, Clone)]
pub struct AckRoute {
    pub id: u64,
    pub replies: tokio::sync::mpsc::UnboundedSender<AckReply>,
}

/// One recipient's answer to a broadcast with ack.
#[derive(Debug, Clone)]
pub struct AckReply {
    pub sid: Sid,
    pub args: Vec<serde_json::Value>,
    pub attachments: Vec<bytes::Bytes>,
}

/// Which local sockets a broadcast or query targets.
#[derive(Debug, Clone, Default)]
pub struct Target {
    /// Union of these rooms; empty means every socket of the namespace.
    pub rooms: Vec<Room>,
    /// Sockets in any of these rooms are skipped.
    pub except: Vec<Room>,
}

/// Room lifecycle, as Socket.IO's adapter emits it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomEvent {
    Create(Room),
    Delete(Room),
    Join(Room, Sid),
    Leave(Room, Sid),
}

pub type RoomEventHook = Arc<dyn Fn(&str, &RoomEvent) + Send + Sync>;

/// The per-namespace cluster seam.
pub trait Adapter: Send + Sync + 'static {
    /// Registers a connected socket (it joins the room named by its id).
    fn add_socket(&self, recipient: Arc<dyn Recipient>);
    /// Forgets a socket and leaves all its rooms.
    fn remove_socket(&self, sid: Sid);
    fn join(&self, sid: Sid, rooms: &[Room]);
    fn leave(&self, sid: Sid, room: &str);
    /// Rooms the socket is in (its own room included).
    fn socket_rooms(&self, sid: Sid) -> Vec<Room>;
    /// Ids of the local sockets the target selects.
    fn sockets(&self, target: &Target) -> Vec<Sid>;
    /// Every room that has members.
    fn rooms(&self) -> Vec<Room>;
    /// Delivers one encoded packet to every targeted socket, each once; returns how many
    /// accepted it. `local` restricts it to this node (no effect on a single node).
    fn broadcast(
        &self,
        frames: &[Frame],
        target: &Target,
        volatile: bool,
        local: bool,
        ack: Option<&AckRoute>,
    ) -> usize;
}
