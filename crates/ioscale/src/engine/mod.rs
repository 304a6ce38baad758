//! Engine.IO v4: the transport layer (WebSocket, HTTP long-polling, upgrade, heartbeat).
//!
//! This layer knows nothing of namespaces or rooms. The Socket.IO layer plugs in through
//! [`EngineHandler`]; it sends by queueing [`Frame`]s on a [`Session`].
//!
//! Spec: `socketio/socket.io`, `docs/engine.io-protocol/v4-current.md`.

mod config;
mod http_util;
/// Public as a door for the benchmarks only (sessions own their outbox).
#[doc(hidden)]
pub mod outbox;
mod polling;
mod server;
mod session;
mod timer;
mod websocket;
mod ws_io;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::protocol::Utf8Bytes;

pub use crate::protocol::Sid;
/// The Engine.IO codec, now in the protocol layer (the old path, kept for users).
pub use crate::protocol::engineio as packet;
pub use crate::protocol::engineio::Frame;
/// Session ids, now in the protocol layer (the old path, kept for users).
pub use crate::protocol::sid;
pub use config::{AllowedOrigins, EngineConfig, Transports};
pub use http_util::EngineError;
pub use outbox::PushError;
pub use server::Engine;
pub use session::{CloseReason, RequestInfo, Session, TransportKind};

/// A `message` packet's data as received.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// Text data (a text WebSocket frame or a polling record), type digit removed.
    Text(Utf8Bytes),
    /// Binary data (a binary WebSocket frame or a polling `b<base64>` record).
    Binary(Bytes),
}

/// The seam between the Engine.IO layer and what runs on top of it. Calls for one session
/// are made in the order its packets arrived, never concurrently.
pub trait EngineHandler: Send + Sync + 'static {
    /// State attached to each session.
    type Data: Default + Send + Sync + 'static;

    /// Called once, when the session is created (before any of its messages).
    fn on_open(&self, session: &Arc<Session<Self::Data>>);
    /// How long a new session may stay unestablished (Socket.IO: joined no namespace)
    /// before it is closed; checked once by the engine's shared timers.
    fn establish_timeout(&self) -> Option<Duration> {
        None
    }
    /// Whether the session got past its establishment (checked when the establish timeout
    /// fires; a session not established then is closed).
    fn is_established(&self, _session: &Session<Self::Data>) -> bool {
        true
    }
    /// Called for each `message` packet of the session, in arrival order.
    fn on_message(&self, session: &Arc<Session<Self::Data>>, message: Message);
    /// Called once, after the session closed (no frame can be queued any more).
    fn on_close(&self, session: &Arc<Session<Self::Data>>, reason: CloseReason);
}
