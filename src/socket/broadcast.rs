//! Broadcast operators: `to`, `in`, `except`, `local`, `volatile`, `timeout`.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::namespace::Namespace;
use super::payload::Payload;
use super::socket::{encode_frames, event_packet};
use crate::adapter::{AckReply, AckRoute, Room, Target};

/// Why waiting for an ack ended without one.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AckError {
    #[error("operation has timed out")]
    Timeout,
    #[error("socket disconnected")]
    Disconnected,
}

/// The outcome of a broadcast with acks: every reply that came in time, and whether some
/// recipients did not answer before the timeout.
#[derive(Debug, Clone, Default)]
pub struct BroadcastAcks {
    pub replies: Vec<AckReply>,
    pub timed_out: bool,
}

/// A broadcast being described; `emit` sends it, encoded once for every recipient.
#[derive(Clone)]
pub struct BroadcastOperator {
    ns: Arc<Namespace>,
    target: Target,
    volatile: bool,
    local: bool,
    timeout: Option<Duration>,
}

impl BroadcastOperator {
    pub(crate) fn new(ns: Arc<Namespace>) -> Self {
        BroadcastOperator {
            ns,
            target: Target::default(),
            volatile: false,
            local: false,
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

    /// Only sockets of this node (no effect without a cluster adapter).
    pub fn local(mut self) -> Self {
        self.local = true;
        self
    }

    /// The packet may be dropped for clients whose queue is full.
    pub fn volatile(mut self) -> Self {
        self.volatile = true;
        self
    }

    /// How long [`BroadcastOperator::emit_with_ack`] waits for acks (default 5 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Sends the event to every target; returns how many sockets accepted it.
    pub fn emit(&self, event: &str, payload: impl Into<Payload>) -> usize {
        let packet = event_packet(self.ns.name(), event, payload.into());
        let frames = encode_frames(&packet);
        self.ns
            .adapter
            .broadcast(&frames, &self.target, self.volatile, self.local, None)
    }

    /// Sends the event expecting an ack from every target, and collects them.
    pub async fn emit_with_ack(&self, event: &str, payload: impl Into<Payload>) -> BroadcastAcks {
        let id = self.ns.next_ack_id();
        let mut packet = event_packet(self.ns.name(), event, payload.into());
        packet.id = Some(id);
        let frames = encode_frames(&packet);
        let (replies, mut receiver) = mpsc::unbounded_channel();
        let route = AckRoute { id, replies };
        let expected = self.ns.adapter.broadcast(
            &frames,
            &self.target,
            self.volatile,
            self.local,
            Some(&route),
        );
        drop(route);
        let mut acks = BroadcastAcks::default();
        let deadline = tokio::time::Instant::now() + self.timeout.unwrap_or(Duration::from_secs(5));
        while acks.replies.len() < expected {
            match tokio::time::timeout_at(deadline, receiver.recv()).await {
                Ok(Some(reply)) => acks.replies.push(reply),
                // Every recipient is gone: no further reply can come.
                Ok(None) | Err(_) => break,
            }
        }
        acks.timed_out = acks.replies.len() < expected;
        acks
    }

    /// Ids of the sockets this operator targets on this node.
    pub fn socket_ids(&self) -> Vec<crate::engine::Sid> {
        self.ns.adapter.sockets(&self.target)
    }
}
