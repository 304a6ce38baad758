//! The classic format: Node's `@socket.io/redis-adapter` 8.3 protocol (`lib/index.ts`), as
//! a [`Format`] of the cluster core. Channels per namespace `N` and prefix `P`: broadcasts on
//! `P#N#` and `P#N#<room>#` (one pattern subscription covers them), requests on
//! `P-request#N#`, responses on `P-response#N#` (or `P-response#N#<uid>#` with
//! `publishOnSpecificResponseChannel`). The bytes are [`wire`]'s.

use bytes::Bytes;
use serde_json::Value;

use super::wire::{self, ChannelKind, Channels, Request, Response, WireError};
use crate::adapter::Target;
use crate::adapter::cluster::{Channel, Codec, Envelope, Format, Message, Subscription};

/// The classic protocol of one node.
#[derive(Debug, Clone)]
pub struct ClassicFormat {
    prefix: String,
    uid: String,
    specific_response_channel: bool,
}

impl ClassicFormat {
    /// `prefix` is Node's `key`; `uid` this node's; `specific_response_channel` Node's
    /// `publishOnSpecificResponseChannel`.
    pub fn new(prefix: &str, uid: &str, specific_response_channel: bool) -> Self {
        ClassicFormat {
            prefix: prefix.to_owned(),
            uid: uid.to_owned(),
            specific_response_channel,
        }
    }
}

impl Format for ClassicFormat {
    fn parse_channel<'a>(&self, channel: &'a str) -> Option<(&'a str, Channel<'a>)> {
        Some(match wire::parse_channel(&self.prefix, channel)? {
            ChannelKind::Broadcast { nsp, room } => (nsp, Channel::Broadcast { room }),
            ChannelKind::Request { nsp } => (nsp, Channel::Request),
            ChannelKind::Response { nsp } => (nsp, Channel::Response),
        })
    }

    fn namespace(&self, nsp: &str) -> Box<dyn Codec> {
        Box::new(ClassicCodec {
            channels: Channels::new(&self.prefix, nsp),
            own_responses: Channels::new(&self.prefix, nsp).response_for(&self.uid),
            nsp: nsp.to_owned(),
            specific_response_channel: self.specific_response_channel,
        })
    }
}

struct ClassicCodec {
    channels: Channels,
    own_responses: String,
    nsp: String,
    specific_response_channel: bool,
}

impl ClassicCodec {
    fn response(&self, requester: Option<&str>, response: Response) -> (String, Vec<u8>) {
        let channel = match requester {
            Some(requester)
                if self.specific_response_channel
                    && !requester.is_empty()
                    && !matches!(response, Response::ServerSideAck { .. }) =>
            {
                self.channels.response_for(requester)
            }
            _ => self.channels.response.clone(),
        };
        (channel, wire::encode_response(&response))
    }

    fn request(&self, uid: &str, request: Request) -> (String, Vec<u8>) {
        (
            self.channels.request.clone(),
            wire::encode_request(uid, &request),
        )
    }
}

impl Codec for ClassicCodec {
    /// One pattern subscription for broadcasts, plain ones for requests and responses (Node
    /// counts servers by the plain subscribers of the request channel).
    fn subscriptions(&self) -> Vec<Subscription> {
        vec![
            Subscription::Pattern(self.channels.broadcast_pattern()),
            Subscription::Channel(self.channels.request.clone()),
            Subscription::Channel(self.channels.response.clone()),
            Subscription::Channel(self.own_responses.clone()),
        ]
    }

    fn server_channel(&self) -> &str {
        &self.channels.request
    }

    fn room_subscription(&self, _room: &str, _private: bool) -> Option<String> {
        None
    }

    fn room_unsubscription(&self, _room: &str) -> Option<String> {
        None
    }

    fn has_room_channels(&self) -> bool {
        false
    }

    fn has_all_rooms(&self) -> bool {
        true
    }

    fn encode_broadcast(
        &self,
        uid: &str,
        args: &[Value],
        attachments: &[Bytes],
        target: &Target,
        volatile: bool,
    ) -> (String, Vec<u8>) {
        let channel = match target.rooms.as_slice() {
            [room] => self.channels.room(room),
            _ => self.channels.broadcast.clone(),
        };
        let bytes =
            wire::encode_broadcast_args(uid, &self.nsp, args, attachments, target, volatile);
        (channel, bytes)
    }

    fn encode(
        &self,
        uid: &str,
        reply_to: Option<&str>,
        message: Message,
    ) -> Option<(String, Vec<u8>)> {
        let uid_owned = || uid.to_owned();
        Some(match message {
            Message::Broadcast {
                payload,
                target,
                volatile,
                request_id: None,
                ..
            } => self.encode_broadcast(uid, &payload.args, &payload.attachments, &target, volatile),
            // The classic protocol carries no volatile flag on broadcasts with ack.
            Message::Broadcast {
                payload,
                target,
                request_id: Some(request_id),
                timeout_ms,
                ..
            } => self.request(
                uid,
                Request::BroadcastWithAck {
                    uid: uid_owned(),
                    request_id,
                    nsp: self.nsp.clone(),
                    payload,
                    target,
                    timeout_ms,
                },
            ),
            Message::Join { target, rooms } => self.request(uid, Request::Join { target, rooms }),
            Message::Leave { target, rooms } => self.request(uid, Request::Leave { target, rooms }),
            Message::Disconnect { target, close } => {
                self.request(uid, Request::Disconnect { target, close })
            }
            Message::Fetch { request_id, target } => self.request(
                uid,
                Request::Fetch {
                    uid: uid_owned(),
                    request_id,
                    target,
                },
            ),
            Message::AllRooms { request_id } => self.request(
                uid,
                Request::AllRooms {
                    uid: uid_owned(),
                    request_id,
                },
            ),
            Message::SocketIds { request_id, rooms } => {
                self.request(uid, Request::Sockets { request_id, rooms })
            }
            Message::ServerSideEmit {
                request_id,
                payload,
            } => self.request(
                uid,
                Request::ServerSideEmit {
                    uid: uid_owned(),
                    request_id,
                    payload,
                },
            ),
            Message::FetchResponse {
                request_id,
                sockets,
            } => self.response(
                reply_to,
                Response::Sockets {
                    request_id,
                    sockets,
                },
            ),
            Message::AllRoomsResponse { request_id, rooms } => {
                self.response(reply_to, Response::Rooms { request_id, rooms })
            }
            Message::SocketIdsResponse { request_id, ids } => {
                self.response(reply_to, Response::SocketIds { request_id, ids })
            }
            Message::ServerSideEmitResponse {
                request_id,
                payload,
            } => self.response(
                reply_to,
                Response::ServerSideAck {
                    request_id,
                    payload,
                },
            ),
            Message::ClientCount { request_id, count } => {
                self.response(reply_to, Response::ClientCount { request_id, count })
            }
            Message::BroadcastAck {
                request_id,
                payload,
            } => self.response(
                reply_to,
                Response::BroadcastAck {
                    request_id,
                    payload,
                },
            ),
        })
    }

    fn decode(&self, channel: Channel<'_>, bytes: &[u8]) -> Result<Option<Envelope>, WireError> {
        Ok(Some(match channel {
            Channel::Broadcast { .. } => {
                let message = wire::decode_broadcast(bytes)?;
                Envelope {
                    uid: Some(message.uid),
                    nsp: Some(message.nsp),
                    message: Message::Broadcast {
                        payload: message.payload,
                        target: message.target,
                        volatile: message.volatile,
                        request_id: None,
                        timeout_ms: None,
                    },
                }
            }
            Channel::Request => {
                let Some(request) = wire::decode_request(bytes)? else {
                    return Ok(None);
                };
                request_envelope(request)
            }
            Channel::Response => Envelope {
                uid: None,
                nsp: None,
                message: match wire::decode_response(bytes)? {
                    Response::Sockets {
                        request_id,
                        sockets,
                    } => Message::FetchResponse {
                        request_id,
                        sockets,
                    },
                    Response::SocketIds { request_id, ids } => {
                        Message::SocketIdsResponse { request_id, ids }
                    }
                    Response::Rooms { request_id, rooms } => {
                        Message::AllRoomsResponse { request_id, rooms }
                    }
                    Response::ServerSideAck {
                        request_id,
                        payload,
                    } => Message::ServerSideEmitResponse {
                        request_id,
                        payload,
                    },
                    Response::ClientCount { request_id, count } => {
                        Message::ClientCount { request_id, count }
                    }
                    Response::BroadcastAck {
                        request_id,
                        payload,
                    } => Message::BroadcastAck {
                        request_id,
                        payload,
                    },
                },
            },
        }))
    }
}

/// A classic request as the core sees it: the channel names the namespace (Node checks no
/// `nsp` on requests), and join/leave/disconnect carry no uid (they are applied even when
/// they come back to their sender, as Node does).
fn request_envelope(request: Request) -> Envelope {
    let (uid, message) = match request {
        Request::Sockets { request_id, rooms } => (None, Message::SocketIds { request_id, rooms }),
        Request::AllRooms { uid, request_id } => (Some(uid), Message::AllRooms { request_id }),
        Request::Join { target, rooms } => (None, Message::Join { target, rooms }),
        Request::Leave { target, rooms } => (None, Message::Leave { target, rooms }),
        Request::Disconnect { target, close } => (None, Message::Disconnect { target, close }),
        Request::Fetch {
            uid,
            request_id,
            target,
        } => (Some(uid), Message::Fetch { request_id, target }),
        Request::ServerSideEmit {
            uid,
            request_id,
            payload,
        } => (
            Some(uid),
            Message::ServerSideEmit {
                request_id,
                payload,
            },
        ),
        Request::BroadcastWithAck {
            uid,
            request_id,
            payload,
            target,
            timeout_ms,
            ..
        } => (
            Some(uid),
            Message::Broadcast {
                payload,
                target,
                volatile: false,
                request_id: Some(request_id),
                timeout_ms,
            },
        ),
    };
    Envelope {
        uid,
        nsp: None,
        message,
    }
}
