//! Socket.IO v5: the socket layer (namespaces, sockets, events, acks, rooms, broadcasts).
//!
//! Spec: `socketio/socket.io`, `docs/socket.io-protocol/v5-current.md`.

mod broadcast;
mod client;
pub mod handshake;
mod io;
mod namespace;
pub mod packet;
mod payload;
#[allow(clippy::module_inception)]
mod socket;

pub use crate::http::{HttpLimits, serve_http, serve_http_with};
pub use broadcast::{AckError, BroadcastAcks, BroadcastOperator, RemoteSocket};
pub use io::{Body, Io, IoConfig, SocketLimits};
pub use namespace::{ConnectError, Namespace, ServerAck};
pub use payload::Payload;
pub(crate) use socket::encode_frames;
pub use socket::{AckSender, DisconnectReason, Event, Handshake, Socket};
