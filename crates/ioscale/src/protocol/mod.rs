//! The protocol layer: the shared vocabulary of every layer above it.
//!
//! Pure codecs over bytes: Engine.IO v4 packets and polling payloads ([`engineio`]),
//! Socket.IO v5 packets ([`socketio`]), event arguments ([`Payload`]), a packet as
//! Engine.IO frames ([`encode_frames`]), session ids ([`Sid`]). No tokio, no I/O, no
//! transport crate types (`tests/architecture.rs` checks it): easy to unit-test,
//! property-test and fuzz, and usable by the engine, the socket layer and the adapters
//! alike.

pub mod engineio;
mod frames;
mod payload;
pub mod sid;
pub mod socketio;
mod utf8;

pub use engineio::Frame;
pub use frames::encode_frames;
pub use payload::Payload;
pub use sid::Sid;
pub use utf8::Utf8Bytes;
