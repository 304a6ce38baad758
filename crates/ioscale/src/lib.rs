//! ioscale: a Socket.IO server (Engine.IO v4 + Socket.IO v5) built to scale out.

#![warn(missing_docs)]

pub mod adapter;
#[cfg(feature = "jwt")]
pub mod auth;
pub mod balance;
pub mod engine;
pub mod http;
pub mod metrics;
pub mod protocol;
pub mod socket;

pub use adapter::{Adapter, Room, RoomEvent};
pub use socket::{
    AckError, AckSender, BroadcastAcks, BroadcastOperator, ConnectError, DisconnectReason, Event,
    Handshake, Io, IoConfig, Namespace, Payload, RecoveryConfig, Socket,
};

/// The README's code compiles (checked as a doctest).
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
