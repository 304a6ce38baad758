//! Wire format of Node's sharded adapter (`createShardedAdapter`, `@socket.io/redis-adapter`
//! 8.3), which is socket.io-adapter's `ClusterAdapter` protocol: pure functions over bytes.
//!
//! Every message is one envelope `{type, data, uid, nsp}`, JSON unless `data` holds binary,
//! then msgpack (notepack: `bin` inline). A receiver tells them apart by the first byte
//! (`{` is JSON). Types 1, 2 and 13 (heartbeats, adapter close) are not used by the sharded
//! adapter and are ignored, like unknown types.
//!
//! The full notes, with captures of each message: `docs/wire/redis-sharded-adapter-8.3.md`.

use std::io::Write as _;

use bytes::Bytes;
use rmpv::Value as Mp;
use serde_json::Value;

use super::super::wire::{
    WireError, args_to_msgpack, decode_any, encode_msgpack, field, json_to_msgpack,
    msgpack_to_payload, msgpack_to_plain_json, rooms_from, rooms_to_msgpack, socket_info,
    str_field, take_field, target_from,
};
use crate::adapter::{Room, SocketInfo, Target};
use crate::protocol::Payload;

/// `MessageType` of socket.io-adapter's `ClusterAdapter`.
pub mod kind {
    pub const BROADCAST: u8 = 3;
    pub const SOCKETS_JOIN: u8 = 4;
    pub const SOCKETS_LEAVE: u8 = 5;
    pub const DISCONNECT_SOCKETS: u8 = 6;
    pub const FETCH_SOCKETS: u8 = 7;
    pub const FETCH_SOCKETS_RESPONSE: u8 = 8;
    pub const SERVER_SIDE_EMIT: u8 = 9;
    pub const SERVER_SIDE_EMIT_RESPONSE: u8 = 10;
    pub const BROADCAST_CLIENT_COUNT: u8 = 11;
    pub const BROADCAST_ACK: u8 = 12;
}

/// One message of the protocol, without its envelope.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// `request_id` is set for a broadcast with ack (answered by one client count, then one
    /// ack per client).
    Broadcast {
        payload: Payload,
        target: Target,
        flags: Flags,
        request_id: Option<String>,
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
        target: Target,
        request_id: String,
    },
    FetchResponse {
        request_id: String,
        sockets: Vec<SocketInfo>,
    },
    /// `payload.args[0]` is the event name; `request_id` is set when acks are expected.
    ServerSideEmit {
        request_id: Option<String>,
        payload: Payload,
    },
    /// The first argument of one node's ack (none when it acked with nothing).
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
            | Message::ServerSideEmitResponse { request_id, .. }
            | Message::ClientCount { request_id, .. }
            | Message::BroadcastAck { request_id, .. } => Some(request_id),
            _ => None,
        }
    }
}

/// Socket.IO's broadcast flags, as far as they travel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flags {
    pub volatile: bool,
    /// The requester's ack timeout, in milliseconds.
    pub timeout_ms: Option<u64>,
}

/// A decoded message and who sent it.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// Missing in hand-written messages; Node processes those.
    pub uid: Option<String>,
    /// Missing means the message is dropped (Node compares it with its namespace).
    pub nsp: Option<String>,
    pub message: Message,
}

/// Decodes a message; `Ok(None)` for a type the sharded adapter ignores (1, 2, 13, unknown).
pub fn decode(bytes: &[u8]) -> Result<Option<Envelope>, WireError> {
    let mut envelope = decode_any(bytes)?;
    if !matches!(envelope, Mp::Map(_)) {
        return Err(WireError::Shape("message is not a map"));
    }
    let code = field(&envelope, "type")
        .and_then(Mp::as_u64)
        .ok_or(WireError::Shape("message without a numeric type"))?;
    let uid = str_field(&envelope, "uid");
    let nsp = str_field(&envelope, "nsp");
    let Ok(code) = u8::try_from(code) else {
        return Ok(None);
    };
    if !(kind::BROADCAST..=kind::BROADCAST_ACK).contains(&code) {
        return Ok(None);
    }
    let mut data =
        take_field(&mut envelope, "data").ok_or(WireError::Shape("message without data"))?;
    if !matches!(data, Mp::Map(_)) {
        return Err(WireError::Shape("data is not a map"));
    }
    let request_id = str_field(&data, "requestId");
    let need_id = |id: Option<String>| id.ok_or(WireError::Shape("message without a requestId"));
    let opts = || {
        field(&data, "opts")
            .filter(|opts| matches!(opts, Mp::Map(_)))
            .map(target_from)
            .ok_or(WireError::Shape("message without opts"))
    };
    let rooms = |data: &Mp| match field(data, "rooms") {
        Some(Mp::Array(_)) => Ok(rooms_from(field(data, "rooms"))),
        _ => Err(WireError::Shape("rooms is not an array")),
    };
    let first_arg =
        |data: &mut Mp| msgpack_to_payload(take_field(data, "packet").into_iter().collect());
    let message = match code {
        kind::BROADCAST => {
            let target = opts()?;
            let flags = field(&data, "opts").and_then(|opts| field(opts, "flags"));
            let flags = Flags {
                volatile: flags
                    .and_then(|f| field(f, "volatile"))
                    .and_then(Mp::as_bool)
                    .unwrap_or(false),
                timeout_ms: flags.and_then(|f| field(f, "timeout")).and_then(Mp::as_u64),
            };
            let mut packet = take_field(&mut data, "packet")
                .ok_or(WireError::Shape("broadcast without a packet"))?;
            let Some(Mp::Array(args)) = take_field(&mut packet, "data") else {
                return Err(WireError::Shape("broadcast packet without a data array"));
            };
            if args.is_empty() {
                return Err(WireError::Shape("broadcast of an event without a name"));
            }
            Message::Broadcast {
                payload: msgpack_to_payload(args),
                target,
                flags,
                request_id,
            }
        }
        kind::SOCKETS_JOIN => Message::Join {
            target: opts()?,
            rooms: rooms(&data)?,
        },
        kind::SOCKETS_LEAVE => Message::Leave {
            target: opts()?,
            rooms: rooms(&data)?,
        },
        kind::DISCONNECT_SOCKETS => Message::Disconnect {
            target: opts()?,
            close: field(&data, "close").and_then(Mp::as_bool).unwrap_or(false),
        },
        kind::FETCH_SOCKETS => Message::Fetch {
            target: opts()?,
            request_id: need_id(request_id)?,
        },
        kind::FETCH_SOCKETS_RESPONSE => {
            let Some(Mp::Array(sockets)) = take_field(&mut data, "sockets") else {
                return Err(WireError::Shape("fetch response without a sockets array"));
            };
            Message::FetchResponse {
                request_id: need_id(request_id)?,
                sockets: sockets.into_iter().filter_map(socket_info).collect(),
            }
        }
        kind::SERVER_SIDE_EMIT => {
            let Some(Mp::Array(args)) = take_field(&mut data, "packet") else {
                return Err(WireError::Shape("server-side emit without a packet array"));
            };
            if args.is_empty() {
                return Err(WireError::Shape("server-side emit without an event name"));
            }
            Message::ServerSideEmit {
                request_id,
                payload: msgpack_to_payload(args),
            }
        }
        kind::SERVER_SIDE_EMIT_RESPONSE => Message::ServerSideEmitResponse {
            request_id: need_id(request_id)?,
            payload: first_arg(&mut data),
        },
        kind::BROADCAST_CLIENT_COUNT => Message::ClientCount {
            request_id: need_id(request_id)?,
            count: field(&data, "clientCount")
                .and_then(Mp::as_u64)
                .and_then(|count| usize::try_from(count).ok())
                .ok_or(WireError::Shape("client count is not a number"))?,
        },
        _ => Message::BroadcastAck {
            request_id: need_id(request_id)?,
            payload: first_arg(&mut data),
        },
    };
    Ok(Some(Envelope { uid, nsp, message }))
}

/// Encodes a message as Node does: `{type, data, uid, nsp}`, JSON unless it carries binary.
pub fn encode(uid: &str, nsp: &str, message: &Message) -> Vec<u8> {
    let s = |text: &str| Mp::from(text);
    let with_id = |request_id: &str, mut entries: Vec<(Mp, Mp)>| {
        entries.insert(0, (s("requestId"), s(request_id)));
        entries
    };
    let (code, data) = match message {
        Message::Broadcast {
            payload,
            target,
            flags,
            request_id,
        } => {
            let mut data = vec![(s("packet"), packet(&payload.args, &payload.attachments))];
            if let Some(id) = request_id {
                data.push((s("requestId"), s(id)));
            }
            data.push((s("opts"), opts(target, *flags)));
            (kind::BROADCAST, data)
        }
        Message::Join { target, rooms } | Message::Leave { target, rooms } => {
            let code = if matches!(message, Message::Join { .. }) {
                kind::SOCKETS_JOIN
            } else {
                kind::SOCKETS_LEAVE
            };
            let data = vec![
                (s("opts"), opts(target, Flags::default())),
                (s("rooms"), rooms_to_msgpack(rooms)),
            ];
            (code, data)
        }
        Message::Disconnect { target, close } => (
            kind::DISCONNECT_SOCKETS,
            vec![
                (s("opts"), opts(target, Flags::default())),
                (s("close"), Mp::Boolean(*close)),
            ],
        ),
        Message::Fetch { target, request_id } => (
            kind::FETCH_SOCKETS,
            vec![
                (s("opts"), opts(target, Flags::default())),
                (s("requestId"), s(request_id)),
            ],
        ),
        Message::FetchResponse {
            request_id,
            sockets,
        } => {
            let sockets = sockets
                .iter()
                .map(|socket| {
                    Mp::Map(vec![
                        (s("id"), s(&socket.id)),
                        (s("handshake"), json_to_msgpack(&socket.handshake, &[])),
                        (
                            s("rooms"),
                            Mp::Array(socket.rooms.iter().map(|room| s(room)).collect()),
                        ),
                        (s("data"), json_to_msgpack(&socket.data, &[])),
                    ])
                })
                .collect();
            (
                kind::FETCH_SOCKETS_RESPONSE,
                with_id(request_id, vec![(s("sockets"), Mp::Array(sockets))]),
            )
        }
        Message::ServerSideEmit {
            request_id,
            payload,
        } => {
            let mut data = vec![(
                s("packet"),
                Mp::Array(args_to_msgpack(&payload.args, &payload.attachments)),
            )];
            if let Some(id) = request_id {
                data.insert(0, (s("requestId"), s(id)));
            }
            (kind::SERVER_SIDE_EMIT, data)
        }
        Message::ServerSideEmitResponse {
            request_id,
            payload,
        }
        | Message::BroadcastAck {
            request_id,
            payload,
        } => {
            let code = if matches!(message, Message::BroadcastAck { .. }) {
                kind::BROADCAST_ACK
            } else {
                kind::SERVER_SIDE_EMIT_RESPONSE
            };
            // Only the first argument travels; an ack without one omits the key (JS undefined).
            let first = args_to_msgpack(&payload.args, &payload.attachments)
                .into_iter()
                .next();
            let data = first
                .map(|arg| vec![(s("packet"), arg)])
                .unwrap_or_default();
            (code, with_id(request_id, data))
        }
        Message::ClientCount { request_id, count } => (
            kind::BROADCAST_CLIENT_COUNT,
            with_id(
                request_id,
                vec![(s("clientCount"), Mp::from(*count as u64))],
            ),
        ),
    };
    let envelope = Mp::Map(vec![
        (s("type"), Mp::from(code)),
        (s("data"), Mp::Map(data)),
        (s("uid"), s(uid)),
        (s("nsp"), s(nsp)),
    ]);
    if has_binary(&envelope) {
        encode_msgpack(&envelope)
    } else {
        serde_json::to_vec(&msgpack_to_plain_json(envelope)).unwrap_or_default()
    }
}

/// A broadcast without ack, encoded from the packet's borrowed arguments (the broadcast path
/// publishes without copying the packet's JSON).
pub fn encode_broadcast_args(
    uid: &str,
    nsp: &str,
    args: &[Value],
    attachments: &[Bytes],
    target: &Target,
    volatile: bool,
) -> Vec<u8> {
    let flags = Flags {
        volatile,
        timeout_ms: None,
    };
    if !attachments.is_empty() {
        let envelope = Mp::Map(vec![
            (Mp::from("type"), Mp::from(kind::BROADCAST)),
            (
                Mp::from("data"),
                Mp::Map(vec![
                    (Mp::from("packet"), packet(args, attachments)),
                    (Mp::from("opts"), opts(target, flags)),
                ]),
            ),
            (Mp::from("uid"), Mp::from(uid)),
            (Mp::from("nsp"), Mp::from(nsp)),
        ]);
        return encode_msgpack(&envelope);
    }
    let mut out = Vec::with_capacity(128);
    // Writing JSON into a Vec cannot fail.
    let _ = (|| -> std::io::Result<()> {
        out.write_all(br#"{"type":3,"data":{"packet":{"type":2,"data":"#)?;
        serde_json::to_writer(&mut out, args)?;
        out.write_all(br#"},"opts":{"rooms":"#)?;
        write_rooms(&mut out, &target.rooms)?;
        out.write_all(br#","except":"#)?;
        write_rooms(&mut out, &target.except)?;
        out.write_all(if volatile {
            br#","flags":{"volatile":true}}},"uid":"#
        } else {
            br#","flags":{}}},"uid":"#
        })?;
        serde_json::to_writer(&mut out, uid)?;
        out.write_all(br#","nsp":"#)?;
        serde_json::to_writer(&mut out, nsp)?;
        out.write_all(b"}")
    })();
    out
}

fn write_rooms(out: &mut Vec<u8>, rooms: &[Room]) -> std::io::Result<()> {
    out.push(b'[');
    for (i, room) in rooms.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut *out, &**room)?;
    }
    out.push(b']');
    Ok(())
}

/// The event packet of a broadcast: `{type: 2, data: [event, ...args]}` (no `nsp`: the
/// receiver sets its own).
fn packet(args: &[Value], attachments: &[Bytes]) -> Mp {
    Mp::Map(vec![
        (Mp::from("type"), Mp::from(2)),
        (
            Mp::from("data"),
            Mp::Array(args_to_msgpack(args, attachments)),
        ),
    ])
}

fn opts(target: &Target, flags: Flags) -> Mp {
    let mut flag_entries = Vec::new();
    if flags.volatile {
        flag_entries.push((Mp::from("volatile"), Mp::Boolean(true)));
    }
    if let Some(ms) = flags.timeout_ms {
        flag_entries.push((Mp::from("timeout"), Mp::from(ms)));
    }
    Mp::Map(vec![
        (Mp::from("rooms"), rooms_to_msgpack(&target.rooms)),
        (Mp::from("except"), rooms_to_msgpack(&target.except)),
        (Mp::from("flags"), Mp::Map(flag_entries)),
    ])
}

fn has_binary(value: &Mp) -> bool {
    match value {
        Mp::Binary(_) => true,
        Mp::Array(items) => items.iter().any(has_binary),
        Mp::Map(entries) => entries.iter().any(|(_, value)| has_binary(value)),
        _ => false,
    }
}

/// Where a publication goes: `P#N#` (main), `P#N#<uid>#` (a node's responses) or
/// `P#N#<room>#` (single-room broadcasts in the dynamic modes).
#[derive(Debug, Clone)]
pub struct ShardedChannels {
    pub main: String,
}

impl ShardedChannels {
    pub fn new(prefix: &str, nsp: &str) -> Self {
        ShardedChannels {
            main: format!("{prefix}#{nsp}#"),
        }
    }

    /// A room's channel, or a node's response channel (the same shape).
    pub fn sub(&self, name: &str) -> String {
        format!("{}{name}#", self.main)
    }
}

/// What a sharded channel of this prefix is: `(namespace, None)` for a main channel,
/// `(namespace, Some(rest))` for a response or room channel.
pub fn parse_channel<'a>(prefix: &str, channel: &'a str) -> Option<(&'a str, Option<&'a str>)> {
    let rest = channel.strip_prefix(prefix)?.strip_prefix('#')?;
    // Namespaces never contain '#'; room names may.
    let (nsp, tail) = rest.split_once('#')?;
    match tail {
        "" => Some((nsp, None)),
        tail => Some((nsp, Some(tail.strip_suffix('#')?))),
    }
}

/// Whether Node's `dynamic` mode takes a room for a socket id (`typeof room === "string" &&
/// room.length === 20`, in UTF-16 units) and so publishes to it on the main channel.
pub fn looks_like_socket_id(room: &str) -> bool {
    room.len() <= 80 && room.encode_utf16().count() == 20
}

#[cfg(test)]
mod tests;
