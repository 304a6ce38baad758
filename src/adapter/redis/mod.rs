//! The Redis adapter, wire-compatible with Node's `@socket.io/redis-adapter` 8.3.

pub mod wire;
