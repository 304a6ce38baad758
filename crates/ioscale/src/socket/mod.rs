//! Socket.IO v5: the socket layer (namespaces, sockets, events, acks, rooms, broadcasts).
//!
//! Spec: `socketio/socket.io`, `docs/socket.io-protocol/v5-current.md`.

mod broadcast;
mod client;
pub(crate) mod handshake;
mod io;
mod namespace;
mod recovery;
#[allow(clippy::module_inception)]
mod socket;

pub use crate::http::{HttpLimits, serve_http, serve_http_with};
pub use crate::protocol::Payload;
/// The Socket.IO codec, now in the protocol layer (the old path, kept for users).
pub use crate::protocol::socketio as packet;
pub use broadcast::{AckError, BroadcastAcks, BroadcastOperator, RemoteSocket};
pub use io::{Body, Io, IoConfig, SocketLimits};
pub use namespace::{ConnectError, Namespace, ServerAck};
pub use recovery::RecoveryConfig;
pub use socket::{AckSender, DisconnectReason, Event, Handshake, Socket};
