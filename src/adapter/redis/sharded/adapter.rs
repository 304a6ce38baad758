//! The sharded adapter of one namespace: local delivery through a [`MemoryAdapter`], plus
//! the cluster side of every operation, as socket.io-adapter's `ClusterAdapter` does it
//! under Node's `ShardedRedisAdapter` 8.3.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use dashmap::DashMap;
use tokio::sync::mpsc;

use super::super::hex_id;
use super::wire::{self, Envelope, Flags, Message, ShardedChannels};
use super::{ShardedCluster, Subscription, SubscriptionMode};
use crate::adapter::redis::shared;
use crate::adapter::redis::wire::WireError;
use crate::adapter::{
    AckEvent, AckRoute, Adapter, AdapterContext, AdapterError, BoxFuture, Broadcast,
    BroadcastFlags, MemoryAdapter, Room, RoomEvent, RoomEventHook, ServerEventHook, SocketInfo,
    Target,
};
use crate::metrics::Metrics;
use crate::protocol::Payload;
use crate::protocol::encode_frames;

pub struct ShardedAdapter {
    local: MemoryAdapter,
    metrics: Arc<Metrics>,
    cluster: Arc<ShardedCluster>,
    nsp: String,
    channels: ShardedChannels,
    /// `P#N#<uid>#`: where other nodes answer this node's requests.
    responses: String,
    ack_ids: Arc<AtomicU64>,
    server_events: ServerEventHook,
    /// Requests of this node waiting for responses, by request id.
    pending: DashMap<String, mpsc::UnboundedSender<Message>>,
    /// Broadcasts with ack of this node waiting for counts and acks, by request id.
    pending_acks: DashMap<String, mpsc::UnboundedSender<AckEvent>>,
    this: Weak<ShardedAdapter>,
}

impl ShardedAdapter {
    pub(super) fn new(cluster: Arc<ShardedCluster>, context: AdapterContext) -> Arc<Self> {
        let channels = ShardedChannels::new(&cluster.config.key_prefix, &context.namespace);
        let responses = channels.sub(&cluster.uid);
        Arc::new_cyclic(|this| {
            let hook = room_hook(this.clone(), context.room_events);
            ShardedAdapter {
                local: MemoryAdapter::new(
                    context.namespace.clone(),
                    Some(hook),
                    context.metrics.clone(),
                ),
                metrics: context.metrics,
                cluster,
                nsp: context.namespace,
                channels,
                responses,
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

    /// The main and response channels; room channels follow the rooms (dynamic modes).
    pub(super) fn subscribe(&self) {
        self.cluster
            .want(Subscription::Add(self.channels.main.clone()));
        self.cluster.want(Subscription::Add(self.responses.clone()));
    }

    fn uid(&self) -> &str {
        &self.cluster.uid
    }

    fn mode(&self) -> SubscriptionMode {
        self.cluster.config.subscription_mode
    }

    fn timeout(&self) -> Duration {
        self.cluster.config.requests_timeout
    }

    /// Whether this node subscribes to a room's channel when the room appears here.
    fn subscribes_room(&self, room: &str) -> bool {
        self.mode().subscribes_room(self.local.has_socket(room))
    }

    /// The channel of a broadcast without ack (Node's `computeChannel`).
    fn broadcast_channel(&self, target: &Target) -> String {
        match target.rooms.as_slice() {
            [room] if self.mode().publishes_on_room_channel(room) => self.channels.sub(room),
            _ => self.channels.main.clone(),
        }
    }

    fn publish(&self, channel: String, message: &Message) {
        self.cluster
            .publish(channel, wire::encode(self.uid(), &self.nsp, message));
    }

    fn publish_request(&self, message: &Message) {
        self.cluster.stats.requests.fetch_add(1, Ordering::Relaxed);
        self.publish(self.channels.main.clone(), message);
    }

    fn answer(&self, requester: &str, message: &Message) {
        self.publish(self.channels.sub(requester), message);
    }

    /// A message on one of this namespace's channels; `tail` is the part after the main
    /// channel (this node's uid for responses, a room name for room channels).
    pub(super) fn on_message(&self, tail: Option<&str>, bytes: &[u8]) -> Result<(), WireError> {
        let Some(Envelope { uid, nsp, message }) = wire::decode(bytes)? else {
            return Ok(());
        };
        if tail == Some(self.uid()) {
            // Node checks neither uid nor namespace on its response channel.
            self.on_response(message);
            return Ok(());
        }
        if uid.as_deref() == Some(self.uid()) || nsp.as_deref() != Some(self.nsp.as_str()) {
            return Ok(());
        }
        match message {
            Message::Broadcast {
                payload,
                target,
                flags,
                request_id: None,
            } => {
                let packet = shared::event_from_payload(&self.nsp, payload);
                self.local
                    .deliver(&encode_frames(&packet), &target, flags.volatile, None);
            }
            Message::Broadcast {
                payload,
                target,
                flags,
                request_id: Some(request_id),
            } => {
                let Some(requester) = uid else {
                    return Err(WireError::Shape("broadcast with ack without a uid"));
                };
                self.on_broadcast_with_ack(requester, request_id, payload, target, flags);
            }
            Message::Join { target, rooms } => self.local.local_join(&target, &rooms),
            Message::Leave { target, rooms } => self.local.local_leave(&target, &rooms),
            Message::Disconnect { target, close } => self.local.local_disconnect(&target, close),
            Message::Fetch { target, request_id } => {
                let Some(requester) = uid else {
                    return Err(WireError::Shape("fetch without a uid"));
                };
                let sockets = self.local.local_infos(&target);
                self.answer(
                    &requester,
                    &Message::FetchResponse {
                        request_id,
                        sockets,
                    },
                );
            }
            Message::ServerSideEmit {
                request_id: None,
                payload,
            } => (self.server_events)(payload, None),
            Message::ServerSideEmit {
                request_id: Some(request_id),
                payload,
            } => {
                let Some(requester) = uid else {
                    return Err(WireError::Shape("server-side emit with ack without a uid"));
                };
                let this = self.this.clone();
                shared::answer_server_event(
                    &self.server_events,
                    payload,
                    self.timeout(),
                    move |first| {
                        if let Some(this) = this.upgrade() {
                            this.answer(
                                &requester,
                                &Message::ServerSideEmitResponse {
                                    request_id,
                                    payload: first,
                                },
                            );
                        }
                    },
                );
            }
            // Node hands responses that arrive on the main channel to its response handler.
            response => self.on_response(response),
        }
        Ok(())
    }

    fn on_broadcast_with_ack(
        &self,
        requester: String,
        request_id: String,
        payload: Payload,
        target: Target,
        flags: Flags,
    ) {
        let timeout = flags
            .timeout_ms
            .map_or(self.timeout(), Duration::from_millis);
        let announce = |count| {
            self.answer(
                &requester,
                &Message::ClientCount {
                    request_id: request_id.clone(),
                    count,
                },
            )
        };
        let this = self.this.clone();
        let (ack_requester, ack_request_id) = (requester.clone(), request_id.clone());
        shared::deliver_remote_ack_broadcast(
            &self.local,
            &self.nsp,
            &self.ack_ids,
            payload,
            &target,
            flags.volatile,
            timeout,
            announce,
            move |payload| {
                let Some(this) = this.upgrade() else {
                    return false;
                };
                this.answer(
                    &ack_requester,
                    &Message::BroadcastAck {
                        request_id: ack_request_id.clone(),
                        payload,
                    },
                );
                true
            },
        );
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

    /// Publishes a request on the main channel and collects one response per other node
    /// (counted by `SHARDNUMSUB`, as Node does), until all answered or the timeout passed.
    async fn request(
        self: Arc<Self>,
        operation: &'static str,
        build: impl FnOnce(String) -> Message,
    ) -> Result<Vec<Message>, AdapterError> {
        let servers = self.cluster.shard_numsub(&self.channels.main).await?;
        let expected = servers.saturating_sub(1);
        if expected == 0 {
            return Ok(Vec::new());
        }
        let request_id = hex_id();
        let (sender, mut receiver) = mpsc::unbounded_channel();
        self.pending.insert(request_id.clone(), sender);
        self.publish_request(&build(request_id.clone()));
        let deadline = tokio::time::Instant::now() + self.timeout();
        let responses = shared::collect(&mut receiver, expected, deadline).await;
        self.pending.remove(&request_id);
        if responses.len() < expected {
            self.cluster
                .stats
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

/// The room lifecycle hook: subscribes a room's channel when the room appears on this node
/// and unsubscribes it when the room empties (dynamic modes), then calls the namespace's own
/// hook.
fn room_hook(adapter: Weak<ShardedAdapter>, user: Option<RoomEventHook>) -> RoomEventHook {
    Arc::new(move |nsp: &str, event: &RoomEvent| {
        if let Some(adapter) = adapter.upgrade() {
            match event {
                RoomEvent::Create(room) if adapter.subscribes_room(room) => adapter
                    .cluster
                    .want(Subscription::Add(adapter.channels.sub(room))),
                // Unwanted channels are ignored by the subscription task.
                RoomEvent::Delete(room) if adapter.mode() != SubscriptionMode::Static => adapter
                    .cluster
                    .want(Subscription::Remove(adapter.channels.sub(room))),
                _ => {}
            }
        }
        if let Some(user) = &user {
            user(nsp, event);
        }
    })
}

impl Adapter for ShardedAdapter {
    shared::delegate_local_rooms!();

    fn broadcast(&self, message: &Broadcast, target: &Target, flags: BroadcastFlags) -> usize {
        if flags.local {
            return self.local.broadcast(message, target, flags);
        }
        let bytes = wire::encode_broadcast_args(
            self.uid(),
            &self.nsp,
            shared::args_of(&message.packet),
            &message.packet.attachments,
            target,
            flags.volatile,
        );
        self.cluster.publish(self.broadcast_channel(target), bytes);
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
        let request_id = hex_id();
        self.pending_acks
            .insert(request_id.clone(), route.events.clone());
        // Always on the main channel: every node must report a client count, even 0.
        self.publish_request(&Message::Broadcast {
            payload: shared::payload_of(&message.packet),
            target: target.clone(),
            flags: Flags {
                volatile: flags.volatile,
                timeout_ms: Some(route.timeout.as_millis() as u64),
            },
            request_id: Some(request_id.clone()),
        });
        let delivered = self
            .local
            .deliver(&message.frames, target, flags.volatile, Some(&route));
        let servers = self.server_count();
        let this = self.this.clone();
        shared::follow_ack_broadcast(servers, route.events, route.timeout, move || {
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
                    target,
                    request_id,
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
            self.publish_request(&Message::Join {
                target: target.clone(),
                rooms: rooms.to_vec(),
            });
        }
    }

    fn sockets_leave(&self, target: &Target, rooms: &[Room], flags: BroadcastFlags) {
        self.local.local_leave(target, rooms);
        if !flags.local {
            self.publish_request(&Message::Leave {
                target: target.clone(),
                rooms: rooms.to_vec(),
            });
        }
    }

    fn disconnect_sockets(&self, target: &Target, close: bool, flags: BroadcastFlags) {
        if !flags.local {
            self.publish_request(&Message::Disconnect {
                target: target.clone(),
                close,
            });
        }
        self.local.local_disconnect(target, close);
    }

    fn all_rooms(&self) -> BoxFuture<Result<Vec<Room>, AdapterError>> {
        Box::pin(async {
            Err(AdapterError::Unsupported(
                "all_rooms: the sharded adapter's protocol has no such request (Node's has none either)",
            ))
        })
    }

    fn server_side_emit(&self, payload: Payload) {
        self.publish_request(&Message::ServerSideEmit {
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
            this.cluster.shard_numsub(&this.channels.main).await
        })
    }
}
