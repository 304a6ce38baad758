//! The two seams of the cluster adapter: a wire [`Format`] (what a message becomes on which
//! channel, and back) and a pub/sub [`Link`] (how bytes travel between the nodes).
//!
//! The core ([`super::ClusterAdapter`]) speaks format-neutral [`Message`]s; each format maps
//! them to its protocol, each link carries the bytes. Classic Redis (Node's
//! `@socket.io/redis-adapter` 8.3 `createAdapter`) and sharded Redis (socket.io-adapter's
//! `ClusterAdapter` protocol under `createShardedAdapter`) are two formats over two links; the
//! in-process [`super::Bus`] is a third link, able to carry either format.
//!
//! # How Node's streams adapter will plug in
//!
//! `@socket.io/redis-streams-adapter` speaks the `ClusterAdapter` protocol over one Redis
//! stream (`XADD`/`XREAD`) instead of channels, and keeps sessions for connection state
//! recovery (`SET PX` / `GETDEL`). It fits as a third format and a third link, with this core:
//! - the link's [`Link::messages`] is already an ordered stream of [`Received`] messages; an
//!   `XREAD` loop yields each stream entry as one [`Received`] whose `channel` names the
//!   namespace (the entry's `nsp` field, as the format's [`Format::parse_channel`] expects)
//!   and whose `payload` is the entry's encoded message, in the stream's order;
//! - [`Link::publish`] of such a link is an `XADD` (with `MAXLEN`); subscriptions are no-ops
//!   (one stream carries every namespace) and [`Link::server_count`] answers from the
//!   heartbeats the `ClusterAdapter` protocol already has (`INITIAL_HEARTBEAT` / `HEARTBEAT`
//!   / `ADAPTER_CLOSE` are message kinds the format adds to [`Message`]);
//! - sessions are an extra capability, not a second core: a `Sessions` trait (`persist(pid,
//!   session, ttl)` as `SET PX`, `restore(pid)` as `GETDEL` plus an `XRANGE` of the missed
//!   entries) that only the streams link implements, offered by a `Link::sessions()` method
//!   added then with a default of `None`, which the socket layer asks for when recovery is
//!   configured; the classic and sharded links keep the default.

use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;

use super::super::redis::health::Health;
use super::{ClusterStats, Payload};
use crate::adapter::redis::wire::WireError;
use crate::adapter::{AdapterError, BoxFuture, Room, SocketInfo, Target};

/// A channel name backed by the received bytes (no copy; UTF-8 checked once, by the Redis
/// client that parsed it).
pub type ChannelName = fred::bytes_utils::Str;

/// One message a link received, in the link's order.
#[derive(Debug, Clone)]
pub struct Received {
    pub channel: ChannelName,
    /// `None` when the message is not a string (counted invalid).
    pub payload: Option<Bytes>,
}

/// The ordered stream of a link's received messages; it ends with the link.
pub type Messages = Pin<Box<dyn Stream<Item = Received> + Send>>;

/// Something to subscribe to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subscription {
    Channel(String),
    /// A glob ending with `*` (classic Redis: the broadcast channel and every room's).
    Pattern(String),
}

/// A pub/sub link between the nodes: carries bytes, knows nothing of their meaning.
///
/// Invariants: [`Link::publish`] never waits (it queues, or drops and counts in
/// [`ClusterStats::publish_dropped`]); [`Link::messages`] yields what was received in order,
/// a node's own publications included (the core skips them by uid), and counts what it
/// could not keep (`received_lagged`, `subscriber_cuts`).
pub trait Link: Send + Sync + 'static {
    /// Queues a message for publishing; never waits.
    fn publish(&self, channel: String, payload: Vec<u8>);
    /// Subscribes (in order; renewed by the link after a reconnection).
    fn subscribe(&self, subscriptions: Vec<Subscription>);
    fn unsubscribe(&self, channel: String);
    /// How many nodes subscribe to this channel (this one included).
    fn server_count(&self, channel: &str) -> BoxFuture<Result<usize, AdapterError>>;
    /// The received messages; taken once, by the node that owns the link.
    fn messages(&self) -> Option<Messages>;
    fn stats(&self) -> &ClusterStats;
    /// Up or down, stalls, cuts: what `/ready` and the metrics report.
    fn health(&self) -> &Health;
    /// Waits until the link is up (or the timeout passes).
    fn wait_until_up(&self, timeout: Duration) -> BoxFuture<bool>;
    /// Leaves the cluster (a deliberate stop, not logged as an outage).
    fn close(&self) -> BoxFuture<()>;
}

/// What a received channel is to its namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel<'a> {
    /// Broadcasts; `room` names a single-room channel (not decoded when no local socket is
    /// in the room).
    Broadcast { room: Option<&'a str> },
    /// Requests (and, in the sharded protocol, everything else of the namespace).
    Request,
    /// Responses to this node's requests: no uid nor namespace check.
    Response,
}

/// A wire format: per node, it routes received channels to namespaces; per namespace
/// ([`Format::namespace`]), it encodes and decodes.
pub trait Format: Send + Sync + 'static {
    /// The namespace a received channel belongs to, and what the channel is.
    fn parse_channel<'a>(&self, channel: &'a str) -> Option<(&'a str, Channel<'a>)>;
    /// The codec of one namespace.
    fn namespace(&self, nsp: &str) -> Box<dyn Codec>;
}

/// One namespace's wire format.
pub trait Codec: Send + Sync + 'static {
    /// What the namespace subscribes to when it is created.
    fn subscriptions(&self) -> Vec<Subscription>;
    /// The channel whose subscribers are the namespace's servers.
    fn server_channel(&self) -> &str;
    /// The channel to subscribe when `room` appears on this node (`private`: named after a
    /// local socket); `None` when rooms have no channels.
    fn room_subscription(&self, room: &str, private: bool) -> Option<String>;
    /// The channel to unsubscribe when `room` empties on this node.
    fn room_unsubscription(&self, room: &str) -> Option<String>;
    /// Whether rooms have channels of their own (then room events drive subscriptions).
    fn has_room_channels(&self) -> bool;
    /// Whether the protocol can ask every node for its rooms.
    fn has_all_rooms(&self) -> bool;
    /// A broadcast without ack, encoded from the packet's borrowed arguments: its channel
    /// and bytes.
    fn encode_broadcast(
        &self,
        uid: &str,
        args: &[serde_json::Value],
        attachments: &[Bytes],
        target: &Target,
        volatile: bool,
    ) -> (String, Vec<u8>);
    /// Any other message; `reply_to` is the requester of a response. `None` when the
    /// protocol has no such message.
    fn encode(
        &self,
        uid: &str,
        reply_to: Option<&str>,
        message: Message,
    ) -> Option<(String, Vec<u8>)>;
    /// Decodes a message received on `channel`; `Ok(None)` for a message the protocol
    /// ignores.
    fn decode(&self, channel: Channel<'_>, bytes: &[u8]) -> Result<Option<Envelope>, WireError>;
}

/// A decoded message and who sent it.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// The sender's uid; `None` for messages that carry none (emitters, hand-written
    /// messages, classic join/leave/disconnect): those are never taken for this node's own.
    pub uid: Option<String>,
    /// The namespace the message names; `None` when only its channel does.
    pub nsp: Option<String>,
    pub message: Message,
}

/// One cluster message, whatever the protocol.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// `[event, ...args]` to the targeted sockets; with `request_id`, a broadcast with ack
    /// (answered by one client count, then one ack per client).
    Broadcast {
        payload: Payload,
        target: Target,
        volatile: bool,
        request_id: Option<String>,
        /// The requester's ack timeout.
        timeout_ms: Option<u64>,
    },
    Join {
        target: Target,
        rooms: Vec<Room>,
    },
    Leave {
        target: Target,
        rooms: Vec<Room>,
    },
    Disconnect {
        target: Target,
        close: bool,
    },
    Fetch {
        request_id: String,
        target: Target,
    },
    AllRooms {
        request_id: String,
    },
    /// Classic protocol only (Node's legacy `sockets()`): ids of the sockets in rooms.
    SocketIds {
        request_id: String,
        rooms: Vec<Room>,
    },
    /// `payload.args[0]` is the event name; `request_id` is set when acks are expected.
    ServerSideEmit {
        request_id: Option<String>,
        payload: Payload,
    },
    FetchResponse {
        request_id: String,
        sockets: Vec<SocketInfo>,
    },
    AllRoomsResponse {
        request_id: String,
        rooms: Vec<Room>,
    },
    SocketIdsResponse {
        request_id: String,
        ids: Vec<String>,
    },
    /// The first argument of one node's ack.
    ServerSideEmitResponse {
        request_id: String,
        payload: Payload,
    },
    ClientCount {
        request_id: String,
        count: usize,
    },
    /// The first argument of one client's ack.
    BroadcastAck {
        request_id: String,
        payload: Payload,
    },
}

impl Message {
    /// The request a response answers.
    pub fn response_to(&self) -> Option<&str> {
        match self {
            Message::FetchResponse { request_id, .. }
            | Message::AllRoomsResponse { request_id, .. }
            | Message::SocketIdsResponse { request_id, .. }
            | Message::ServerSideEmitResponse { request_id, .. }
            | Message::ClientCount { request_id, .. }
            | Message::BroadcastAck { request_id, .. } => Some(request_id),
            _ => None,
        }
    }
}
