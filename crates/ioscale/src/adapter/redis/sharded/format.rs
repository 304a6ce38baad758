//! The sharded format: socket.io-adapter's `ClusterAdapter` protocol as Node's
//! `createShardedAdapter` publishes it, as a [`Format`] of the cluster core. Channels per
//! namespace `N` and prefix `P`: the main channel `P#N#` (every broadcast and request), one
//! response channel per node `P#N#<uid>#`, and in the dynamic subscription modes one channel
//! per room `P#N#<room>#`. The bytes are [`wire`]'s.

use bytes::Bytes;
use serde_json::Value;

use super::SubscriptionMode;
use super::wire::{self, Flags, ShardedChannels};
use crate::adapter::Target;
use crate::adapter::cluster::{Channel, Codec, Envelope, Format, Message, Subscription};
use crate::adapter::redis::wire::WireError;

/// The sharded protocol of one node.
#[derive(Debug, Clone)]
pub struct ShardedFormat {
    prefix: String,
    uid: String,
    mode: SubscriptionMode,
}

impl ShardedFormat {
    /// `prefix` is Node's `channelPrefix`, `mode` its `subscriptionMode`; `uid` this node's.
    pub fn new(prefix: &str, uid: &str, mode: SubscriptionMode) -> Self {
        ShardedFormat {
            prefix: prefix.to_owned(),
            uid: uid.to_owned(),
            mode,
        }
    }
}

impl Format for ShardedFormat {
    fn parse_channel<'a>(&self, channel: &'a str) -> Option<(&'a str, Channel<'a>)> {
        let (nsp, tail) = wire::parse_channel(&self.prefix, channel)?;
        Some(match tail {
            None => (nsp, Channel::Request),
            Some(tail) if tail == self.uid => (nsp, Channel::Response),
            Some(room) => (nsp, Channel::Broadcast { room: Some(room) }),
        })
    }

    fn namespace(&self, nsp: &str) -> Box<dyn Codec> {
        let channels = ShardedChannels::new(&self.prefix, nsp);
        Box::new(ShardedCodec {
            responses: channels.sub(&self.uid),
            channels,
            nsp: nsp.to_owned(),
            mode: self.mode,
        })
    }
}

struct ShardedCodec {
    channels: ShardedChannels,
    /// `P#N#<uid>#`: where other nodes answer this node's requests.
    responses: String,
    nsp: String,
    mode: SubscriptionMode,
}

impl Codec for ShardedCodec {
    fn subscriptions(&self) -> Vec<Subscription> {
        vec![
            Subscription::Channel(self.channels.main.clone()),
            Subscription::Channel(self.responses.clone()),
        ]
    }

    /// Node counts servers by `PUBSUB SHARDNUMSUB` of the main channel.
    fn server_channel(&self) -> &str {
        &self.channels.main
    }

    fn room_subscription(&self, room: &str, private: bool) -> Option<String> {
        self.mode
            .subscribes_room(private)
            .then(|| self.channels.sub(room))
    }

    /// Unwanted channels are ignored by the link's subscription task.
    fn room_unsubscription(&self, room: &str) -> Option<String> {
        (self.mode != SubscriptionMode::Static).then(|| self.channels.sub(room))
    }

    fn has_room_channels(&self) -> bool {
        true
    }

    fn has_all_rooms(&self) -> bool {
        false
    }

    /// On the room's channel or the main one, as Node's `computeChannel`.
    fn encode_broadcast(
        &self,
        uid: &str,
        args: &[Value],
        attachments: &[Bytes],
        target: &Target,
        volatile: bool,
    ) -> (String, Vec<u8>) {
        let channel = match target.rooms.as_slice() {
            [room] if self.mode.publishes_on_room_channel(room) => self.channels.sub(room),
            _ => self.channels.main.clone(),
        };
        let bytes =
            wire::encode_broadcast_args(uid, &self.nsp, args, attachments, target, volatile);
        (channel, bytes)
    }

    /// Requests on the main channel (a broadcast with ack too: every node must report a
    /// client count, even 0), responses on the requester's channel.
    fn encode(
        &self,
        uid: &str,
        reply_to: Option<&str>,
        message: Message,
    ) -> Option<(String, Vec<u8>)> {
        let message = match message {
            Message::Broadcast {
                payload,
                target,
                volatile,
                request_id: None,
                ..
            } => {
                return Some(self.encode_broadcast(
                    uid,
                    &payload.args,
                    &payload.attachments,
                    &target,
                    volatile,
                ));
            }
            Message::Broadcast {
                payload,
                target,
                volatile,
                request_id,
                timeout_ms,
            } => wire::Message::Broadcast {
                payload,
                target,
                flags: Flags {
                    volatile,
                    timeout_ms,
                },
                request_id,
            },
            Message::Join { target, rooms } => wire::Message::Join { target, rooms },
            Message::Leave { target, rooms } => wire::Message::Leave { target, rooms },
            Message::Disconnect { target, close } => wire::Message::Disconnect { target, close },
            Message::Fetch { request_id, target } => wire::Message::Fetch { target, request_id },
            Message::ServerSideEmit {
                request_id,
                payload,
            } => wire::Message::ServerSideEmit {
                request_id,
                payload,
            },
            Message::FetchResponse {
                request_id,
                sockets,
            } => wire::Message::FetchResponse {
                request_id,
                sockets,
            },
            Message::ServerSideEmitResponse {
                request_id,
                payload,
            } => wire::Message::ServerSideEmitResponse {
                request_id,
                payload,
            },
            Message::ClientCount { request_id, count } => {
                wire::Message::ClientCount { request_id, count }
            }
            Message::BroadcastAck {
                request_id,
                payload,
            } => wire::Message::BroadcastAck {
                request_id,
                payload,
            },
            // Not in the protocol (Node's sharded adapter has neither).
            Message::AllRooms { .. }
            | Message::AllRoomsResponse { .. }
            | Message::SocketIds { .. }
            | Message::SocketIdsResponse { .. } => return None,
        };
        let channel = match (reply_to, message.response_to()) {
            (Some(requester), Some(_)) => self.channels.sub(requester),
            _ => self.channels.main.clone(),
        };
        Some((channel, wire::encode(uid, &self.nsp, &message)))
    }

    fn decode(&self, channel: Channel<'_>, bytes: &[u8]) -> Result<Option<Envelope>, WireError> {
        let Some(wire::Envelope { uid, nsp, message }) = wire::decode(bytes)? else {
            return Ok(None);
        };
        // Node drops a message without a namespace (except on its response channel).
        if nsp.is_none() && channel != Channel::Response {
            return Ok(None);
        }
        let message = match message {
            wire::Message::Broadcast {
                payload,
                target,
                flags,
                request_id,
            } => Message::Broadcast {
                payload,
                target,
                volatile: flags.volatile,
                request_id,
                timeout_ms: flags.timeout_ms,
            },
            wire::Message::Join { target, rooms } => Message::Join { target, rooms },
            wire::Message::Leave { target, rooms } => Message::Leave { target, rooms },
            wire::Message::Disconnect { target, close } => Message::Disconnect { target, close },
            wire::Message::Fetch { target, request_id } => Message::Fetch { request_id, target },
            wire::Message::FetchResponse {
                request_id,
                sockets,
            } => Message::FetchResponse {
                request_id,
                sockets,
            },
            wire::Message::ServerSideEmit {
                request_id,
                payload,
            } => Message::ServerSideEmit {
                request_id,
                payload,
            },
            wire::Message::ServerSideEmitResponse {
                request_id,
                payload,
            } => Message::ServerSideEmitResponse {
                request_id,
                payload,
            },
            wire::Message::ClientCount { request_id, count } => {
                Message::ClientCount { request_id, count }
            }
            wire::Message::BroadcastAck {
                request_id,
                payload,
            } => Message::BroadcastAck {
                request_id,
                payload,
            },
        };
        Ok(Some(Envelope { uid, nsp, message }))
    }
}
