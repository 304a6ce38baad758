//! ioscale: a Socket.IO server (Engine.IO v4 + Socket.IO v5) built to scale out.

pub mod engine;
