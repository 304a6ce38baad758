//! The Redis adapter of one namespace: local delivery through a [`MemoryAdapter`], plus
//! the cluster side of every operation, as Node's `RedisAdapter` 8.3 does it.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use dashmap::DashMap;
use fred::prelude::PubsubInterface;
use tokio::sync::mpsc;

use super::wire::{self, Channels, Request, Response, WireError};
use super::{RedisCluster, hex_id, shared};
use crate::adapter::{
    AckEvent, AckRoute, Adapter, AdapterContext, AdapterError, BoxFuture, Broadcast,
    BroadcastFlags, MemoryAdapter, Room, ServerEventHook, SocketInfo, Target,
};
use crate::metrics::Metrics;
use crate::protocol::Payload;
use crate::protocol::Sid;
use crate::protocol::encode_frames;

pub struct RedisAdapter {
    local: MemoryAdapter,
    metrics: Arc<Metrics>,
    cluster: Arc<RedisCluster>,
    nsp: String,
    channels: Channels,
    ack_ids: Arc<AtomicU64>,
    server_events: ServerEventHook,
    /// Requests of this node waiting for responses, by request id.
    pending: DashMap<String, mpsc::UnboundedSender<Response>>,
    /// Broadcasts with ack of this node waiting for counts and acks, by request id.
    pending_acks: DashMap<String, mpsc::UnboundedSender<AckEvent>>,
    this: Weak<RedisAdapter>,
}

impl RedisAdapter {
    pub(super) fn new(cluster: Arc<RedisCluster>, context: AdapterContext) -> Arc<Self> {
        let channels = Channels::new(&cluster.config.key_prefix, &context.namespace);
        Arc::new_cyclic(|this| RedisAdapter {
            local: MemoryAdapter::new(
                context.namespace.clone(),
                context.room_events,
                context.metrics.clone(),
            ),
            metrics: context.metrics,
            cluster,
            nsp: context.namespace,
            channels,
            ack_ids: context.ack_ids,
            server_events: context.server_events,
            pending: DashMap::new(),
            pending_acks: DashMap::new(),
            this: this.clone(),
        })
    }

    pub fn namespace(&self) -> &str {
        &self.nsp
    }

    /// One pattern subscription for broadcasts, one plain subscription for requests and
    /// responses (Node counts servers by the plain subscribers of the request channel).
    pub(super) fn subscribe(&self) {
        let subscriber = self.cluster.subscriber.clone();
        let pattern = self.channels.broadcast_pattern();
        let channels = vec![
            self.channels.request.clone(),
            self.channels.response.clone(),
            self.channels.response_for(&self.cluster.uid),
        ];
        tokio::spawn(async move {
            // fred keeps the subscriptions and renews them after every reconnection.
            if let Err(error) = subscriber.psubscribe(pattern).await {
                tracing::warn!(%error, "Redis PSUBSCRIBE failed (retried on reconnect)");
            }
            if let Err(error) = subscriber.subscribe(channels).await {
                tracing::warn!(%error, "Redis SUBSCRIBE failed (retried on reconnect)");
            }
        });
    }

    fn uid(&self) -> &str {
        &self.cluster.uid
    }

    fn timeout(&self) -> Duration {
        self.cluster.config.requests_timeout
    }

    fn publish_request(&self, request: &Request) {
        self.cluster.stats.requests.fetch_add(1, Ordering::Relaxed);
        self.cluster.publish(
            self.channels.request.clone(),
            wire::encode_request(self.uid(), request),
        );
    }

    fn publish_response(&self, requester: &str, response: &Response) {
        let channel = if self.cluster.config.publish_on_specific_response_channel
            && !requester.is_empty()
            && !matches!(response, Response::ServerSideAck { .. })
        {
            self.channels.response_for(requester)
        } else {
            self.channels.response.clone()
        };
        self.cluster
            .publish(channel, wire::encode_response(response));
    }

    /// A broadcast from another node or an emitter.
    pub(super) fn on_broadcast(&self, room: Option<&str>, bytes: &[u8]) -> Result<(), WireError> {
        // A single-room message for a room nobody here is in: nothing to decode.
        if let Some(room) = room
            && !self.local.has_room(room)
        {
            return Ok(());
        }
        let message = wire::decode_broadcast(bytes)?;
        if message.uid == self.uid() || message.nsp != self.nsp {
            return Ok(());
        }
        let packet = shared::event_from_payload(&self.nsp, message.payload);
        self.local.deliver(
            &encode_frames(&packet),
            &message.target,
            message.volatile,
            None,
        );
        Ok(())
    }

    pub(super) fn on_request(&self, bytes: &[u8]) -> Result<(), WireError> {
        let Some(request) = wire::decode_request(bytes)? else {
            return Ok(());
        };
        match request {
            Request::Sockets { request_id, rooms } => {
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
                self.publish_response("", &Response::SocketIds { request_id, ids });
            }
            Request::AllRooms { uid, request_id } => {
                if self.pending.contains_key(&request_id) {
                    return Ok(());
                }
                let rooms = self.local.rooms();
                self.publish_response(&uid, &Response::Rooms { request_id, rooms });
            }
            Request::Fetch {
                uid,
                request_id,
                target,
            } => {
                if self.pending.contains_key(&request_id) {
                    return Ok(());
                }
                let sockets = self.local.local_infos(&target);
                self.publish_response(
                    &uid,
                    &Response::Sockets {
                        request_id,
                        sockets,
                    },
                );
            }
            // No uid check: this node applied its own requests when it sent them, and
            // emitters send no uid at all.
            Request::Join { target, rooms } => self.local.local_join(&target, &rooms),
            Request::Leave { target, rooms } => self.local.local_leave(&target, &rooms),
            Request::Disconnect { target, close } => self.local.local_disconnect(&target, close),
            Request::ServerSideEmit {
                uid,
                request_id,
                payload,
            } => {
                if uid == self.uid() {
                    return Ok(());
                }
                self.on_server_side_emit(request_id, payload);
            }
            Request::BroadcastWithAck {
                uid,
                request_id,
                payload,
                target,
                timeout_ms,
                ..
            } => {
                if self.pending_acks.contains_key(&request_id) {
                    return Ok(());
                }
                self.on_broadcast_with_ack(uid, request_id, payload, target, timeout_ms);
            }
        }
        Ok(())
    }

    fn on_server_side_emit(&self, request_id: Option<String>, payload: Payload) {
        let Some(request_id) = request_id else {
            (self.server_events)(payload, None);
            return;
        };
        let this = self.this.clone();
        shared::answer_server_event(&self.server_events, payload, self.timeout(), move |first| {
            if let Some(this) = this.upgrade() {
                this.publish_response(
                    "",
                    &Response::ServerSideAck {
                        request_id,
                        payload: first,
                    },
                );
            }
        });
    }

    fn on_broadcast_with_ack(
        &self,
        requester: String,
        request_id: String,
        payload: Payload,
        target: Target,
        timeout_ms: Option<u64>,
    ) {
        let timeout = timeout_ms.map_or(self.timeout(), Duration::from_millis);
        let this = self.this.clone();
        let count_response = |count| Response::ClientCount {
            request_id: request_id.clone(),
            count,
        };
        let announce = |count| self.publish_response(&requester, &count_response(count));
        let (ack_requester, ack_request_id) = (requester.clone(), request_id.clone());
        shared::deliver_remote_ack_broadcast(
            &self.local,
            &self.nsp,
            &self.ack_ids,
            payload,
            &target,
            false,
            timeout,
            announce,
            move |payload| {
                let Some(this) = this.upgrade() else {
                    return false;
                };
                let response = Response::BroadcastAck {
                    request_id: ack_request_id.clone(),
                    payload,
                };
                this.publish_response(&ack_requester, &response);
                true
            },
        );
    }

    pub(super) fn on_response(&self, bytes: &[u8]) -> Result<(), WireError> {
        let response = wire::decode_response(bytes)?;
        let request_id = response.request_id();
        if let Some(events) = self.pending_acks.get(request_id) {
            let event = match response {
                Response::ClientCount { count, .. } => AckEvent::RemoteClients(count),
                Response::BroadcastAck { payload, .. } => AckEvent::Reply(payload),
                _ => return Ok(()),
            };
            let _ = events.send(event);
            return Ok(());
        }
        if let Some(pending) = self.pending.get(request_id) {
            let _ = pending.send(response);
        }
        Ok(())
    }

    /// Publishes a request and collects one response from each other node, until all
    /// answered or the requests timeout passed.
    async fn request(
        self: Arc<Self>,
        operation: &'static str,
        build: impl FnOnce(String) -> Request,
    ) -> Result<Vec<Response>, AdapterError> {
        let servers = self.cluster.numsub(&self.channels.request).await?;
        let expected = servers.saturating_sub(1);
        if expected == 0 {
            return Ok(Vec::new());
        }
        let request_id = hex_id();
        let (sender, mut receiver) = mpsc::unbounded_channel();
        // Registered before publishing: the request coming back to this node is skipped.
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
            let partial = responses
                .into_iter()
                .filter_map(|response| match response {
                    Response::ServerSideAck { payload, .. } => Some(payload),
                    _ => None,
                })
                .collect::<Vec<_>>();
            return Err(AdapterError::Timeout {
                operation,
                received: partial.len(),
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

impl Adapter for RedisAdapter {
    shared::delegate_local_rooms!();

    fn broadcast(&self, message: &Broadcast, target: &Target, flags: BroadcastFlags) -> usize {
        if !flags.local {
            let channel = match target.rooms.as_slice() {
                [room] => self.channels.room(room),
                _ => self.channels.broadcast.clone(),
            };
            let bytes = wire::encode_broadcast_args(
                self.uid(),
                &self.nsp,
                shared::args_of(&message.packet),
                &message.packet.attachments,
                target,
                flags.volatile,
            );
            self.cluster.publish(channel, bytes);
            Metrics::add(&self.metrics.broadcasts_cluster, 1);
            self.local
                .deliver(&message.frames, target, flags.volatile, None)
        } else {
            self.local.broadcast(message, target, flags)
        }
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
        self.publish_request(&Request::BroadcastWithAck {
            uid: self.uid().to_owned(),
            request_id: request_id.clone(),
            nsp: self.nsp.clone(),
            payload: shared::payload_of(&message.packet),
            target: target.clone(),
            timeout_ms: Some(route.timeout.as_millis() as u64),
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
            let this = this?;
            let uid = this.uid().to_owned();
            let responses = this
                .request("fetchSockets", |request_id| Request::Fetch {
                    uid,
                    request_id,
                    target,
                })
                .await?;
            for response in responses {
                if let Response::Sockets {
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
            self.publish_request(&Request::Join {
                target: target.clone(),
                rooms: rooms.to_vec(),
            });
        }
    }

    fn sockets_leave(&self, target: &Target, rooms: &[Room], flags: BroadcastFlags) {
        self.local.local_leave(target, rooms);
        if !flags.local {
            self.publish_request(&Request::Leave {
                target: target.clone(),
                rooms: rooms.to_vec(),
            });
        }
    }

    fn disconnect_sockets(&self, target: &Target, close: bool, flags: BroadcastFlags) {
        if !flags.local {
            self.publish_request(&Request::Disconnect {
                target: target.clone(),
                close,
            });
        }
        self.local.local_disconnect(target, close);
    }

    fn all_rooms(&self) -> BoxFuture<Result<Vec<Room>, AdapterError>> {
        let local = self.local.rooms();
        let this = self.arc();
        Box::pin(async move {
            let this = this?;
            let uid = this.uid().to_owned();
            let responses = this
                .request("allRooms", |request_id| Request::AllRooms {
                    uid,
                    request_id,
                })
                .await?;
            let mut rooms: HashSet<Room> = local.into_iter().collect();
            for response in responses {
                if let Response::Rooms { rooms: remote, .. } = response {
                    rooms.extend(remote);
                }
            }
            Ok(rooms.into_iter().collect())
        })
    }

    fn server_side_emit(&self, payload: Payload) {
        self.publish_request(&Request::ServerSideEmit {
            uid: self.uid().to_owned(),
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
            let this = this?;
            let uid = this.uid().to_owned();
            let responses = this
                .request("serverSideEmit", |request_id| Request::ServerSideEmit {
                    uid,
                    request_id: Some(request_id),
                    payload,
                })
                .await?;
            Ok(responses
                .into_iter()
                .filter_map(|response| match response {
                    Response::ServerSideAck { payload, .. } => Some(payload),
                    _ => None,
                })
                .collect())
        })
    }

    fn server_count(&self) -> BoxFuture<Result<usize, AdapterError>> {
        let this = self.arc();
        Box::pin(async move {
            let this = this?;
            this.cluster.numsub(&this.channels.request).await
        })
    }
}
