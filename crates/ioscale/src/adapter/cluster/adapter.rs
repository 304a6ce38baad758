//! The cluster adapter of one namespace: local delivery through a [`MemoryAdapter`], plus
//! the cluster side of every operation, written once for every format and link.
//!
//! Invariants: a message is decoded once and its frames encoded once for every local
//! recipient; nothing here waits on the network (publishes are queued by the link, requests
//! end by their timeout); a node skips its own messages by uid, and its own requests by
//! their pending request id.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use dashmap::DashMap;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use super::seam::{Channel, Codec, Envelope, Message};
use super::{ClusterNode, Packet, Payload, encode_frames, new_uid};
use crate::adapter::redis::wire::WireError;
use crate::adapter::{
    AckEvent, AckRoute, Adapter, AdapterContext, AdapterError, BoxFuture, Broadcast,
    BroadcastFlags, MemoryAdapter, Room, RoomEvent, RoomEventHook, ServerEventHook, SocketInfo,
    Target,
};
use crate::metrics::Metrics;
use crate::protocol::Sid;

pub struct ClusterAdapter {
    local: MemoryAdapter,
    metrics: Arc<Metrics>,
    node: Arc<ClusterNode>,
    nsp: String,
    codec: Box<dyn Codec>,
    ack_ids: Arc<AtomicU64>,
    server_events: ServerEventHook,
    /// Requests of this node waiting for responses, by request id.
    pending: DashMap<String, mpsc::UnboundedSender<Message>>,
    /// Broadcasts with ack of this node waiting for counts and acks, by request id.
    pending_acks: DashMap<String, mpsc::UnboundedSender<AckEvent>>,
    this: Weak<ClusterAdapter>,
}

impl ClusterAdapter {
    pub(super) fn new(node: Arc<ClusterNode>, context: AdapterContext) -> Arc<Self> {
        let codec = node.format.namespace(&context.namespace);
        Arc::new_cyclic(|this| {
            // Room channels follow the rooms of this node; without them, the namespace's
            // own hook is called directly.
            let hook = if codec.has_room_channels() {
                Some(room_hook(this.clone(), context.room_events))
            } else {
                context.room_events
            };
            ClusterAdapter {
                local: MemoryAdapter::new(context.namespace.clone(), hook, context.metrics.clone()),
                metrics: context.metrics,
                node,
                nsp: context.namespace,
                codec,
                ack_ids: context.ack_ids,
                server_events: context.server_events,
                pending: DashMap::new(),
                pending_acks: DashMap::new(),
                this: this.clone(),
            }
        })
    }

    pub fn namespace(&self) -> &str {
        &self.nsp
    }

    pub(super) fn codec(&self) -> &dyn Codec {
        &*self.codec
    }

    fn uid(&self) -> &str {
        &self.node.uid
    }

    fn timeout(&self) -> Duration {
        self.node.requests_timeout
    }

    /// Publishes a message of this node; `reply_to` is the requester of a response.
    fn publish(&self, reply_to: Option<&str>, message: Message) {
        if let Some((channel, bytes)) = self.codec.encode(self.uid(), reply_to, message) {
            self.node.link().publish(channel, bytes);
        }
    }

    fn publish_request(&self, message: Message) {
        self.node
            .link()
            .stats()
            .requests
            .fetch_add(1, Ordering::Relaxed);
        self.publish(None, message);
    }

    /// A message on one of this namespace's channels.
    pub(super) fn on_message(&self, channel: Channel<'_>, bytes: &[u8]) -> Result<(), WireError> {
        // A single-room message for a room nobody here is in: nothing to decode.
        if let Channel::Broadcast { room: Some(room) } = channel
            && !self.local.has_room(room)
        {
            return Ok(());
        }
        let Some(Envelope { uid, nsp, message }) = self.codec.decode(channel, bytes)? else {
            return Ok(());
        };
        if channel == Channel::Response {
            // Node checks neither uid nor namespace on response channels.
            self.on_response(message);
            return Ok(());
        }
        if uid.as_deref() == Some(self.uid()) || nsp.is_some_and(|nsp| nsp != self.nsp) {
            return Ok(());
        }
        match message {
            Message::Broadcast {
                payload,
                target,
                volatile,
                request_id: None,
                ..
            } => {
                let packet = event_from_payload(&self.nsp, payload);
                self.local
                    .deliver(&encode_frames(&packet), &target, volatile, None);
            }
            Message::Broadcast {
                payload,
                target,
                volatile,
                request_id: Some(request_id),
                timeout_ms,
            } => {
                if self.pending_acks.contains_key(&request_id) {
                    return Ok(());
                }
                let requester = uid.ok_or(WireError::Shape("broadcast with ack without a uid"))?;
                let timeout = timeout_ms.map_or(self.timeout(), Duration::from_millis);
                self.on_broadcast_with_ack(
                    requester, request_id, payload, target, volatile, timeout,
                );
            }
            // No uid check on classic messages: this node applied its own requests when it
            // sent them, and emitters send no uid at all.
            Message::Join { target, rooms } => self.local.local_join(&target, &rooms),
            Message::Leave { target, rooms } => self.local.local_leave(&target, &rooms),
            Message::Disconnect { target, close } => self.local.local_disconnect(&target, close),
            Message::Fetch { request_id, target } => {
                if self.pending.contains_key(&request_id) {
                    return Ok(());
                }
                let requester = uid.ok_or(WireError::Shape("fetch without a uid"))?;
                let sockets = self.local.local_infos(&target);
                self.publish(
                    Some(&requester),
                    Message::FetchResponse {
                        request_id,
                        sockets,
                    },
                );
            }
            Message::AllRooms { request_id } => {
                if self.pending.contains_key(&request_id) {
                    return Ok(());
                }
                let rooms = self.local.rooms();
                self.publish(
                    uid.as_deref(),
                    Message::AllRoomsResponse { request_id, rooms },
                );
            }
            Message::SocketIds { request_id, rooms } => {
                if self.pending.contains_key(&request_id) {
                    return Ok(());
                }
                let target = Target {
                    rooms,
                    except: Vec::new(),
                };
                let ids = self
                    .local
                    .sockets(&target)
                    .iter()
                    .map(Sid::to_string)
                    .collect();
                self.publish(None, Message::SocketIdsResponse { request_id, ids });
            }
            Message::ServerSideEmit {
                request_id: None,
                payload,
            } => (self.server_events)(payload, None),
            Message::ServerSideEmit {
                request_id: Some(request_id),
                payload,
            } => {
                let requester =
                    uid.ok_or(WireError::Shape("server-side emit with ack without a uid"))?;
                self.on_server_side_emit(requester, request_id, payload);
            }
            // Node hands responses that arrive on a request channel to its response handler.
            response => self.on_response(response),
        }
        Ok(())
    }

    /// Hands another node's server-side event with ack to the handlers; the first argument
    /// of the first ack is the answer. A handler that never answers is given up after the
    /// requests timeout (the requester has given up by then too).
    fn on_server_side_emit(&self, requester: String, request_id: String, payload: Payload) {
        let (reply, receiver) = oneshot::channel();
        (self.server_events)(payload, Some(reply));
        let this = self.this.clone();
        let timeout = self.timeout();
        tokio::spawn(async move {
            if let Ok(Ok(mut payload)) = tokio::time::timeout(timeout, receiver).await {
                payload.args.truncate(1);
                if let Some(this) = this.upgrade() {
                    this.publish(
                        Some(&requester),
                        Message::ServerSideEmitResponse {
                            request_id,
                            payload,
                        },
                    );
                }
            }
        });
    }

    /// Runs another node's broadcast with ack on the local sockets: answers the number of
    /// local recipients at once, then each client's ack as it arrives, until all answered
    /// or `timeout` passed.
    fn on_broadcast_with_ack(
        &self,
        requester: String,
        request_id: String,
        payload: Payload,
        target: Target,
        volatile: bool,
        timeout: Duration,
    ) {
        let mut packet = event_from_payload(&self.nsp, payload);
        let id = self.ack_ids.fetch_add(1, Ordering::Relaxed);
        packet.id = Some(id);
        let (events, mut replies) = mpsc::unbounded_channel();
        let route = AckRoute {
            id,
            timeout,
            events,
        };
        let count = self
            .local
            .deliver(&encode_frames(&packet), &target, volatile, Some(&route));
        drop(route);
        self.publish(
            Some(&requester),
            Message::ClientCount {
                request_id: request_id.clone(),
                count,
            },
        );
        if count == 0 {
            return;
        }
        let this = self.this.clone();
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + timeout;
            for _ in 0..count {
                let Ok(Some(AckEvent::Reply(payload))) =
                    tokio::time::timeout_at(deadline, replies.recv()).await
                else {
                    return;
                };
                let Some(this) = this.upgrade() else {
                    return;
                };
                this.publish(
                    Some(&requester),
                    Message::BroadcastAck {
                        request_id: request_id.clone(),
                        payload,
                    },
                );
            }
        });
    }

    fn on_response(&self, message: Message) {
        let Some(request_id) = message.response_to() else {
            return;
        };
        if let Some(events) = self.pending_acks.get(request_id) {
            let event = match message {
                Message::ClientCount { count, .. } => AckEvent::RemoteClients(count),
                Message::BroadcastAck { payload, .. } => AckEvent::Reply(payload),
                _ => return,
            };
            let _ = events.send(event);
            return;
        }
        if let Some(pending) = self.pending.get(request_id) {
            let _ = pending.send(message);
        }
    }

    /// Publishes a request and collects one response from each other node (counted by the
    /// subscribers of the server channel, as Node does), until all answered or the requests
    /// timeout passed.
    async fn request(
        self: Arc<Self>,
        operation: &'static str,
        build: impl FnOnce(String) -> Message,
    ) -> Result<Vec<Message>, AdapterError> {
        let servers = self
            .node
            .link()
            .server_count(self.codec.server_channel())
            .await?;
        let expected = servers.saturating_sub(1);
        if expected == 0 {
            return Ok(Vec::new());
        }
        let request_id = new_uid();
        let (sender, mut receiver) = mpsc::unbounded_channel();
        // Registered before publishing: the request coming back to this node is skipped.
        self.pending.insert(request_id.clone(), sender);
        self.publish_request(build(request_id.clone()));
        let deadline = tokio::time::Instant::now() + self.timeout();
        let mut responses = Vec::with_capacity(expected);
        while responses.len() < expected {
            match tokio::time::timeout_at(deadline, receiver.recv()).await {
                Ok(Some(response)) => responses.push(response),
                Ok(None) | Err(_) => break,
            }
        }
        self.pending.remove(&request_id);
        if responses.len() < expected {
            self.node
                .link()
                .stats()
                .request_timeouts
                .fetch_add(1, Ordering::Relaxed);
            let received = responses.len();
            let partial = responses
                .into_iter()
                .filter_map(|response| match response {
                    Message::ServerSideEmitResponse { payload, .. } => Some(payload),
                    _ => None,
                })
                .collect::<Vec<_>>();
            return Err(AdapterError::Timeout {
                operation,
                received,
                expected,
                partial,
            });
        }
        Ok(responses)
    }

    fn arc(&self) -> Result<Arc<Self>, AdapterError> {
        self.this
            .upgrade()
            .ok_or_else(|| AdapterError::Unavailable("namespace closed".into()))
    }
}

/// The room lifecycle hook of formats with room channels: subscribes a room's channel when
/// the room appears on this node and unsubscribes it when the room empties, then calls the
/// namespace's own hook.
fn room_hook(adapter: Weak<ClusterAdapter>, user: Option<RoomEventHook>) -> RoomEventHook {
    Arc::new(move |nsp: &str, event: &RoomEvent| {
        if let Some(adapter) = adapter.upgrade() {
            let link = adapter.node.link();
            match event {
                RoomEvent::Create(room) => {
                    let private = adapter.local.has_socket(room);
                    if let Some(channel) = adapter.codec.room_subscription(room, private) {
                        link.subscribe(vec![super::Subscription::Channel(channel)]);
                    }
                }
                RoomEvent::Delete(room) => {
                    if let Some(channel) = adapter.codec.room_unsubscription(room) {
                        link.unsubscribe(channel);
                    }
                }
                _ => {}
            }
        }
        if let Some(user) = &user {
            user(nsp, event);
        }
    })
}

/// An EVENT packet from `[event, ...args]` (binary as attachments).
fn event_from_payload(nsp: &str, payload: Payload) -> Packet {
    let mut packet = Packet::event(nsp, Value::Array(payload.args));
    packet.attachments = payload.attachments;
    packet
}

/// `[event, ...args]` of an event packet, as the wire carries it.
fn payload_of(packet: &Packet) -> Payload {
    Payload {
        args: args_of(packet).to_vec(),
        attachments: packet.attachments.clone(),
    }
}

/// The arguments of an event packet, borrowed.
fn args_of(packet: &Packet) -> &[Value] {
    match &packet.data {
        Some(Value::Array(args)) => args.as_slice(),
        _ => &[],
    }
}

impl Adapter for ClusterAdapter {
    fn add_socket(&self, recipient: Arc<dyn crate::adapter::Recipient>) {
        self.local.add_socket(recipient);
    }

    fn remove_socket(&self, sid: Sid) {
        self.local.remove_socket(sid);
    }

    fn join(&self, sid: Sid, rooms: &[Room]) {
        self.local.join(sid, rooms);
    }

    fn leave(&self, sid: Sid, room: &str) {
        self.local.leave(sid, room);
    }

    fn socket_rooms(&self, sid: Sid) -> Vec<Room> {
        self.local.socket_rooms(sid)
    }

    fn sockets(&self, target: &Target) -> Vec<Sid> {
        self.local.sockets(target)
    }

    fn rooms(&self) -> Vec<Room> {
        self.local.rooms()
    }

    fn broadcast(&self, message: &Broadcast, target: &Target, flags: BroadcastFlags) -> usize {
        if flags.local {
            return self.local.broadcast(message, target, flags);
        }
        let (channel, bytes) = self.codec.encode_broadcast(
            self.uid(),
            args_of(&message.packet),
            &message.packet.attachments,
            target,
            flags.volatile,
        );
        self.node.link().publish(channel, bytes);
        Metrics::add(&self.metrics.broadcasts_cluster, 1);
        self.local
            .deliver(&message.frames, target, flags.volatile, None)
    }

    fn broadcast_with_ack(
        &self,
        message: &Broadcast,
        target: &Target,
        flags: BroadcastFlags,
        route: AckRoute,
    ) -> usize {
        if flags.local {
            return self.local.broadcast_with_ack(message, target, flags, route);
        }
        let request_id = new_uid();
        self.pending_acks
            .insert(request_id.clone(), route.events.clone());
        // On the request channel: every node must report a client count, even 0.
        self.publish_request(Message::Broadcast {
            payload: payload_of(&message.packet),
            target: target.clone(),
            volatile: flags.volatile,
            request_id: Some(request_id.clone()),
            timeout_ms: Some(route.timeout.as_millis() as u64),
        });
        let delivered = self
            .local
            .deliver(&message.frames, target, flags.volatile, Some(&route));
        let servers = self.server_count();
        let this = self.this.clone();
        let (events, timeout) = (route.events, route.timeout);
        tokio::spawn(async move {
            // Unknown (link down): expect no other node rather than wait out the timeout.
            let servers = servers.await.unwrap_or(1);
            let _ = events.send(AckEvent::RemoteServers(servers.saturating_sub(1)));
            tokio::time::sleep(timeout).await;
            if let Some(adapter) = this.upgrade() {
                adapter.pending_acks.remove(&request_id);
            }
        });
        delivered
    }

    fn fetch_sockets(
        &self,
        target: &Target,
        flags: BroadcastFlags,
    ) -> BoxFuture<Result<Vec<SocketInfo>, AdapterError>> {
        let mut sockets = self.local.local_infos(target);
        if flags.local {
            return Box::pin(async move { Ok(sockets) });
        }
        let this = self.arc();
        let target = target.clone();
        Box::pin(async move {
            let responses = this?
                .request("fetchSockets", |request_id| Message::Fetch {
                    request_id,
                    target,
                })
                .await?;
            for response in responses {
                if let Message::FetchResponse {
                    sockets: remote, ..
                } = response
                {
                    sockets.extend(remote);
                }
            }
            Ok(sockets)
        })
    }

    fn sockets_join(&self, target: &Target, rooms: &[Room], flags: BroadcastFlags) {
        self.local.local_join(target, rooms);
        if !flags.local {
            self.publish_request(Message::Join {
                target: target.clone(),
                rooms: rooms.to_vec(),
            });
        }
    }

    fn sockets_leave(&self, target: &Target, rooms: &[Room], flags: BroadcastFlags) {
        self.local.local_leave(target, rooms);
        if !flags.local {
            self.publish_request(Message::Leave {
                target: target.clone(),
                rooms: rooms.to_vec(),
            });
        }
    }

    fn disconnect_sockets(&self, target: &Target, close: bool, flags: BroadcastFlags) {
        if !flags.local {
            self.publish_request(Message::Disconnect {
                target: target.clone(),
                close,
            });
        }
        self.local.local_disconnect(target, close);
    }

    fn all_rooms(&self) -> BoxFuture<Result<Vec<Room>, AdapterError>> {
        if !self.codec.has_all_rooms() {
            return Box::pin(async {
                Err(AdapterError::Unsupported(
                    "all_rooms: the sharded adapter's protocol has no such request (Node's has none either)",
                ))
            });
        }
        let local = self.local.rooms();
        let this = self.arc();
        Box::pin(async move {
            let responses = this?
                .request("allRooms", |request_id| Message::AllRooms { request_id })
                .await?;
            let mut rooms: HashSet<Room> = local.into_iter().collect();
            for response in responses {
                if let Message::AllRoomsResponse { rooms: remote, .. } = response {
                    rooms.extend(remote);
                }
            }
            Ok(rooms.into_iter().collect())
        })
    }

    fn server_side_emit(&self, payload: Payload) {
        self.publish_request(Message::ServerSideEmit {
            request_id: None,
            payload,
        });
    }

    fn server_side_emit_with_ack(
        &self,
        payload: Payload,
    ) -> BoxFuture<Result<Vec<Payload>, AdapterError>> {
        let this = self.arc();
        Box::pin(async move {
            let responses = this?
                .request("serverSideEmit", |request_id| Message::ServerSideEmit {
                    request_id: Some(request_id),
                    payload,
                })
                .await?;
            Ok(responses
                .into_iter()
                .filter_map(|response| match response {
                    Message::ServerSideEmitResponse { payload, .. } => Some(payload),
                    _ => None,
                })
                .collect())
        })
    }

    fn server_count(&self) -> BoxFuture<Result<usize, AdapterError>> {
        let this = self.arc();
        Box::pin(async move {
            let this = this?;
            this.node
                .link()
                .server_count(this.codec.server_channel())
                .await
        })
    }
}
