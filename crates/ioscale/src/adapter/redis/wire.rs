//! Wire formats of Node's `@socket.io/redis-adapter` 8.3 (classic adapter) and
//! `@socket.io/redis-emitter` 5: pure functions over bytes.
//!
//! Source: `socketio/socket.io-redis-adapter`, `lib/index.ts` (8.3.0), checked on the wire
//! against socket.io 4.8.4 with notepack.io 3.0.1. In short:
//! - broadcasts: msgpack `[uid, {type: 2, data: [event, ...args], nsp}, {rooms, except, flags}]`
//!   on `P#nsp#` (or `P#nsp#room#` for exactly one room); binary is msgpack `bin` inline,
//!   the packet type is always 2;
//! - requests on `P-request#nsp#`: JSON, except type 7 (broadcast with ack) in msgpack;
//! - responses on `P-response#nsp#` (or `...#uid#`): JSON, except type 9 (ack) in msgpack;
//! - a receiver tells the two apart by the first byte (`{` is JSON).
//!
//! The full notes, with captures of each message kind: `docs/wire/redis-adapter-8.3.md`.

use bytes::Bytes;
use rmpv::Value as Mp;
use serde_json::{Map, Number, Value};

use crate::adapter::{SocketInfo, Target};
use crate::protocol::Payload;

/// Request and response type codes (`RequestType` in the Node adapter).
pub mod kind {
    pub const SOCKETS: u8 = 0;
    pub const ALL_ROOMS: u8 = 1;
    pub const REMOTE_JOIN: u8 = 2;
    pub const REMOTE_LEAVE: u8 = 3;
    pub const REMOTE_DISCONNECT: u8 = 4;
    pub const REMOTE_FETCH: u8 = 5;
    pub const SERVER_SIDE_EMIT: u8 = 6;
    pub const BROADCAST: u8 = 7;
    pub const BROADCAST_CLIENT_COUNT: u8 = 8;
    pub const BROADCAST_ACK: u8 = 9;
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WireError {
    #[error("invalid msgpack: {0}")]
    Msgpack(String),
    #[error("invalid JSON: {0}")]
    Json(String),
    #[error("unexpected message shape: {0}")]
    Shape(&'static str),
}

/// The channels of one namespace.
#[derive(Debug, Clone)]
pub struct Channels {
    pub broadcast: String,
    pub request: String,
    pub response: String,
    prefix: String,
    nsp: String,
}

impl Channels {
    pub fn new(prefix: &str, nsp: &str) -> Self {
        Channels {
            broadcast: format!("{prefix}#{nsp}#"),
            request: format!("{prefix}-request#{nsp}#"),
            response: format!("{prefix}-response#{nsp}#"),
            prefix: prefix.to_owned(),
            nsp: nsp.to_owned(),
        }
    }

    /// The pattern covering the broadcast channel and every single-room channel.
    pub fn broadcast_pattern(&self) -> String {
        format!("{}*", self.broadcast)
    }

    /// The single-room broadcast channel.
    pub fn room(&self, room: &str) -> String {
        format!("{}{room}#", self.broadcast)
    }

    /// The response channel of one node (`publishOnSpecificResponseChannel`).
    pub fn response_for(&self, uid: &str) -> String {
        format!("{}-response#{}#{uid}#", self.prefix, self.nsp)
    }
}

/// What a channel received on the subscriber connection is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelKind<'a> {
    /// A broadcast; `room` is set for a single-room channel.
    Broadcast {
        nsp: &'a str,
        room: Option<&'a str>,
    },
    Request {
        nsp: &'a str,
    },
    Response {
        nsp: &'a str,
    },
}

/// Classifies a channel of this prefix (namespaces never contain `#`).
pub fn parse_channel<'a>(prefix: &str, channel: &'a str) -> Option<ChannelKind<'a>> {
    let rest = channel.strip_prefix(prefix)?;
    if let Some(rest) = rest.strip_prefix("-request#") {
        let (nsp, _) = rest.split_once('#')?;
        return Some(ChannelKind::Request { nsp });
    }
    if let Some(rest) = rest.strip_prefix("-response#") {
        let (nsp, _) = rest.split_once('#')?;
        return Some(ChannelKind::Response { nsp });
    }
    let rest = rest.strip_prefix('#')?;
    let (nsp, tail) = rest.split_once('#')?;
    let room = match tail {
        "" => None,
        room => Some(room.strip_suffix('#')?),
    };
    Some(ChannelKind::Broadcast { nsp, room })
}

// ---------------------------------------------------------------------------------------
// Values: our payloads (JSON with placeholders + attachments) <-> msgpack with inline bin.

/// msgpack arguments with binary inline, from a payload whose JSON holds placeholders.
pub fn payload_to_msgpack(payload: &Payload) -> Vec<Mp> {
    args_to_msgpack(&payload.args, &payload.attachments)
}

pub(super) fn args_to_msgpack(args: &[Value], attachments: &[Bytes]) -> Vec<Mp> {
    args.iter()
        .map(|arg| json_to_msgpack(arg, attachments))
        .collect()
}

pub(super) fn json_to_msgpack(value: &Value, attachments: &[Bytes]) -> Mp {
    match value {
        Value::Null => Mp::Nil,
        Value::Bool(b) => Mp::Boolean(*b),
        Value::Number(n) => {
            if let Some(i) = n.as_u64() {
                Mp::from(i)
            } else if let Some(i) = n.as_i64() {
                Mp::from(i)
            } else {
                Mp::F64(n.as_f64().unwrap_or(0.0))
            }
        }
        Value::String(s) => Mp::from(s.as_str()),
        Value::Array(items) => Mp::Array(
            items
                .iter()
                .map(|item| json_to_msgpack(item, attachments))
                .collect(),
        ),
        Value::Object(map) => {
            if let Some(data) = placeholder(map).and_then(|num| attachments.get(num)) {
                return Mp::Binary(data.to_vec());
            }
            Mp::Map(
                map.iter()
                    .map(|(key, value)| {
                        (Mp::from(key.as_str()), json_to_msgpack(value, attachments))
                    })
                    .collect(),
            )
        }
    }
}

fn placeholder(map: &Map<String, Value>) -> Option<usize> {
    if map.len() != 2 || map.get("_placeholder") != Some(&Value::Bool(true)) {
        return None;
    }
    usize::try_from(map.get("num")?.as_u64()?).ok()
}

/// A payload from msgpack arguments: every `bin` becomes an attachment and a placeholder.
pub fn msgpack_to_payload(args: Vec<Mp>) -> Payload {
    let mut payload = Payload::empty();
    for arg in args {
        let json = msgpack_to_json(arg, &mut payload.attachments);
        payload.args.push(json);
    }
    payload
}

fn msgpack_to_json(value: Mp, attachments: &mut Vec<Bytes>) -> Value {
    match value {
        Mp::Nil => Value::Null,
        Mp::Boolean(b) => Value::Bool(b),
        Mp::Integer(i) => match (i.as_u64(), i.as_i64()) {
            (Some(u), _) => Value::from(u),
            (None, Some(s)) => Value::from(s),
            _ => Value::Null,
        },
        Mp::F32(f) => Number::from_f64(f64::from(f)).map_or(Value::Null, Value::Number),
        Mp::F64(f) => Number::from_f64(f).map_or(Value::Null, Value::Number),
        Mp::String(s) => Value::String(s.into_str().unwrap_or_default()),
        Mp::Binary(data) => {
            attachments.push(Bytes::from(data));
            serde_json::json!({"_placeholder": true, "num": attachments.len() - 1})
        }
        Mp::Array(items) => Value::Array(
            items
                .into_iter()
                .map(|item| msgpack_to_json(item, attachments))
                .collect(),
        ),
        Mp::Map(entries) => Value::Object(
            entries
                .into_iter()
                .map(|(key, value)| (map_key(key), msgpack_to_json(value, attachments)))
                .collect(),
        ),
        // notepack's Date: a msgpack timestamp, which Node hands to clients as an ISO string.
        Mp::Ext(-1, data) => timestamp_iso(&data).map_or(Value::Null, Value::String),
        Mp::Ext(_, _) => Value::Null,
    }
}

fn map_key(key: Mp) -> String {
    match key {
        Mp::String(s) => s.into_str().unwrap_or_default(),
        Mp::Integer(i) => i.to_string(),
        other => other.to_string(),
    }
}

/// The msgpack timestamp extension (4, 8 or 12 bytes) as `YYYY-MM-DDTHH:mm:ss.sssZ`.
fn timestamp_iso(data: &[u8]) -> Option<String> {
    let (seconds, nanos): (i64, u32) = match data.len() {
        4 => (i64::from(u32::from_be_bytes(data.try_into().ok()?)), 0),
        8 => {
            let raw = u64::from_be_bytes(data.try_into().ok()?);
            ((raw & 0x3_ffff_ffff) as i64, (raw >> 34) as u32)
        }
        12 => (
            i64::from_be_bytes(data[4..12].try_into().ok()?),
            u32::from_be_bytes(data[0..4].try_into().ok()?),
        ),
        _ => return None,
    };
    let time = if seconds >= 0 {
        std::time::UNIX_EPOCH.checked_add(std::time::Duration::new(
            seconds as u64,
            nanos.min(999_999_999),
        ))?
    } else {
        return None;
    };
    Some(humantime::format_rfc3339_millis(time).to_string())
}

pub(super) fn rooms_to_msgpack(rooms: &[crate::adapter::Room]) -> Mp {
    Mp::Array(rooms.iter().map(|room| Mp::from(&**room)).collect())
}

/// Room names from the wire: strings, or numbers (Node allows numeric rooms).
pub(super) fn rooms_from(value: Option<&Mp>) -> Vec<crate::adapter::Room> {
    match value {
        Some(Mp::Array(items)) => items.iter().filter_map(room_name).collect(),
        Some(single) => room_name(single).into_iter().collect(),
        None => Vec::new(),
    }
}

fn room_name(value: &Mp) -> Option<crate::adapter::Room> {
    match value {
        Mp::String(s) => s.as_str().map(crate::adapter::Room::from),
        Mp::Integer(i) => Some(crate::adapter::Room::from(i.to_string().as_str())),
        Mp::F64(f) => Some(crate::adapter::Room::from(f.to_string().as_str())),
        _ => None,
    }
}

fn target_to_msgpack(target: &Target) -> Mp {
    Mp::Map(vec![
        (Mp::from("rooms"), rooms_to_msgpack(&target.rooms)),
        (Mp::from("except"), rooms_to_msgpack(&target.except)),
    ])
}

pub(super) fn target_from(opts: &Mp) -> Target {
    Target {
        rooms: rooms_from(field(opts, "rooms")),
        except: rooms_from(field(opts, "except")),
    }
}

pub(super) fn field<'a>(map: &'a Mp, name: &str) -> Option<&'a Mp> {
    match map {
        Mp::Map(entries) => entries
            .iter()
            .find(|(key, _)| key.as_str() == Some(name))
            .map(|(_, value)| value),
        _ => None,
    }
}

pub(super) fn take_field(map: &mut Mp, name: &str) -> Option<Mp> {
    match map {
        Mp::Map(entries) => {
            let index = entries
                .iter()
                .position(|(key, _)| key.as_str() == Some(name))?;
            Some(entries.swap_remove(index).1)
        }
        _ => None,
    }
}

pub(super) fn str_field(map: &Mp, name: &str) -> Option<String> {
    field(map, name)?.as_str().map(str::to_owned)
}

// ---------------------------------------------------------------------------------------
// Any message: JSON or msgpack, told apart by the first byte.

/// Decodes a request or response body into a msgpack value (JSON is converted).
pub fn decode_any(bytes: &[u8]) -> Result<Mp, WireError> {
    if bytes.first() == Some(&b'{') {
        let json: Value =
            serde_json::from_slice(bytes).map_err(|e| WireError::Json(e.to_string()))?;
        Ok(json_value_to_msgpack(json))
    } else {
        decode_msgpack(bytes)
    }
}

fn decode_msgpack(bytes: &[u8]) -> Result<Mp, WireError> {
    let mut reader = bytes;
    // A depth bound keeps hostile nesting from exhausting the stack.
    let value = rmpv::decode::read_value_with_max_depth(&mut reader, 256)
        .map_err(|e| WireError::Msgpack(e.to_string()))?;
    if !reader.is_empty() {
        return Err(WireError::Msgpack(format!(
            "{} trailing bytes",
            reader.len()
        )));
    }
    Ok(value)
}

fn json_value_to_msgpack(value: Value) -> Mp {
    json_to_msgpack(&value, &[])
}

pub(super) fn encode_msgpack(value: &Mp) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    // Writing into a Vec cannot fail.
    let _ = rmpv::encode::write_value(&mut out, value);
    out
}

pub(super) fn msgpack_to_plain_json(value: Mp) -> Value {
    let mut attachments = Vec::new();
    let json = msgpack_to_json(value, &mut attachments);
    if attachments.is_empty() {
        json
    } else {
        // Binary inside JSON-shaped data (handshakes, socket data) as Node's Buffer.toJSON.
        restore_buffers_as_json(json, &attachments)
    }
}

fn restore_buffers_as_json(value: Value, attachments: &[Bytes]) -> Value {
    match value {
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .map(|item| restore_buffers_as_json(item, attachments))
                .collect(),
        ),
        Value::Object(map) => {
            if let Some(data) = placeholder(&map).and_then(|num| attachments.get(num)) {
                return serde_json::json!({"type": "Buffer", "data": data.to_vec()});
            }
            Value::Object(
                map.into_iter()
                    .map(|(key, value)| (key, restore_buffers_as_json(value, attachments)))
                    .collect(),
            )
        }
        other => other,
    }
}

// ---------------------------------------------------------------------------------------
// Broadcasts.

/// A broadcast from another node or an emitter.
#[derive(Debug, Clone, PartialEq)]
pub struct BroadcastMessage {
    pub uid: String,
    pub nsp: String,
    /// `[event, ...args]` with binary as attachments.
    pub payload: Payload,
    pub target: Target,
    pub volatile: bool,
}

/// `[uid, {type: 2, data, nsp}, {rooms, except, flags}]`.
pub fn encode_broadcast(
    uid: &str,
    nsp: &str,
    payload: &Payload,
    target: &Target,
    volatile: bool,
) -> Vec<u8> {
    encode_broadcast_args(
        uid,
        nsp,
        &payload.args,
        &payload.attachments,
        target,
        volatile,
    )
}

/// [`encode_broadcast`] from borrowed arguments (the broadcast path encodes without copying
/// the packet's JSON).
pub fn encode_broadcast_args(
    uid: &str,
    nsp: &str,
    args: &[Value],
    attachments: &[Bytes],
    target: &Target,
    volatile: bool,
) -> Vec<u8> {
    let mut flags = Vec::new();
    if volatile {
        flags.push((Mp::from("volatile"), Mp::Boolean(true)));
    }
    let mut opts = target_to_msgpack(target);
    if let Mp::Map(entries) = &mut opts {
        entries.push((Mp::from("flags"), Mp::Map(flags)));
    }
    let message = Mp::Array(vec![
        Mp::from(uid),
        packet_args_to_msgpack(nsp, args, attachments),
        opts,
    ]);
    encode_msgpack(&message)
}

fn packet_to_msgpack(nsp: &str, payload: &Payload) -> Mp {
    packet_args_to_msgpack(nsp, &payload.args, &payload.attachments)
}

fn packet_args_to_msgpack(nsp: &str, args: &[Value], attachments: &[Bytes]) -> Mp {
    Mp::Map(vec![
        (Mp::from("type"), Mp::from(2)),
        (
            Mp::from("data"),
            Mp::Array(args_to_msgpack(args, attachments)),
        ),
        (Mp::from("nsp"), Mp::from(nsp)),
    ])
}

/// `(nsp, payload)` of a packet map; a missing namespace means `/`.
fn packet_from(mut packet: Mp) -> Result<(String, Payload), WireError> {
    let nsp = str_field(&packet, "nsp").unwrap_or_else(|| "/".to_owned());
    let data = match take_field(&mut packet, "data") {
        Some(Mp::Array(args)) => args,
        _ => return Err(WireError::Shape("packet without a data array")),
    };
    Ok((nsp, msgpack_to_payload(data)))
}

pub fn decode_broadcast(bytes: &[u8]) -> Result<BroadcastMessage, WireError> {
    let Mp::Array(parts) = decode_msgpack(bytes)? else {
        return Err(WireError::Shape("broadcast is not an array"));
    };
    let mut parts = parts.into_iter();
    let (Some(uid), Some(packet), Some(opts)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(WireError::Shape("broadcast needs [uid, packet, opts]"));
    };
    let uid = uid.as_str().unwrap_or_default().to_owned();
    let (nsp, payload) = packet_from(packet)?;
    let volatile = field(&opts, "flags")
        .and_then(|flags| field(flags, "volatile"))
        .and_then(Mp::as_bool)
        .unwrap_or(false);
    Ok(BroadcastMessage {
        uid,
        nsp,
        payload,
        target: target_from(&opts),
        volatile,
    })
}

// ---------------------------------------------------------------------------------------
// Requests.

#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// Legacy (type 0): ids of local sockets in rooms.
    Sockets {
        request_id: String,
        rooms: Vec<crate::adapter::Room>,
    },
    AllRooms {
        uid: String,
        request_id: String,
    },
    Join {
        target: Target,
        rooms: Vec<crate::adapter::Room>,
    },
    Leave {
        target: Target,
        rooms: Vec<crate::adapter::Room>,
    },
    Disconnect {
        target: Target,
        close: bool,
    },
    Fetch {
        uid: String,
        request_id: String,
        target: Target,
    },
    /// `payload.args[0]` is the event name; `request_id` is set when an ack is expected.
    ServerSideEmit {
        uid: String,
        request_id: Option<String>,
        payload: Payload,
    },
    BroadcastWithAck {
        uid: String,
        request_id: String,
        nsp: String,
        payload: Payload,
        target: Target,
        /// The requester's ack timeout (`flags.timeout`), in milliseconds.
        timeout_ms: Option<u64>,
    },
}

/// Encodes a request as the Node adapter does (JSON; msgpack for broadcasts with ack and
/// for server-side events carrying binary, which Node also accepts).
pub fn encode_request(uid: &str, request: &Request) -> Vec<u8> {
    let json = |value: Value| serde_json::to_vec(&value).unwrap_or_default();
    let target_json = |target: &Target| {
        serde_json::json!({
            "rooms": target.rooms.iter().map(|r| &**r).collect::<Vec<_>>(),
            "except": target.except.iter().map(|r| &**r).collect::<Vec<_>>(),
        })
    };
    match request {
        Request::Sockets { request_id, rooms } => json(serde_json::json!({
            "uid": uid, "requestId": request_id, "type": kind::SOCKETS,
            "rooms": rooms.iter().map(|r| &**r).collect::<Vec<_>>(),
        })),
        Request::AllRooms { request_id, .. } => json(serde_json::json!({
            "uid": uid, "requestId": request_id, "type": kind::ALL_ROOMS,
        })),
        Request::Join { target, rooms } | Request::Leave { target, rooms } => {
            let code = if matches!(request, Request::Join { .. }) {
                kind::REMOTE_JOIN
            } else {
                kind::REMOTE_LEAVE
            };
            json(serde_json::json!({
                "uid": uid, "type": code, "opts": target_json(target),
                "rooms": rooms.iter().map(|r| &**r).collect::<Vec<_>>(),
            }))
        }
        Request::Disconnect { target, close } => json(serde_json::json!({
            "uid": uid, "type": kind::REMOTE_DISCONNECT, "opts": target_json(target), "close": close,
        })),
        Request::Fetch {
            request_id, target, ..
        } => json(serde_json::json!({
            "uid": uid, "requestId": request_id, "type": kind::REMOTE_FETCH, "opts": target_json(target),
        })),
        Request::ServerSideEmit {
            request_id,
            payload,
            ..
        } => {
            if payload.attachments.is_empty() {
                let mut body = serde_json::json!({"uid": uid, "type": kind::SERVER_SIDE_EMIT, "data": payload.args});
                if let (Some(id), Value::Object(map)) = (request_id, &mut body) {
                    map.insert("requestId".into(), Value::from(id.as_str()));
                }
                json(body)
            } else {
                let mut entries = vec![(Mp::from("uid"), Mp::from(uid))];
                if let Some(id) = request_id {
                    entries.push((Mp::from("requestId"), Mp::from(id.as_str())));
                }
                entries.push((Mp::from("type"), Mp::from(kind::SERVER_SIDE_EMIT)));
                entries.push((Mp::from("data"), Mp::Array(payload_to_msgpack(payload))));
                encode_msgpack(&Mp::Map(entries))
            }
        }
        Request::BroadcastWithAck {
            request_id,
            nsp,
            payload,
            target,
            timeout_ms,
            ..
        } => {
            let mut opts = target_to_msgpack(target);
            let flags = timeout_ms
                .map(|ms| vec![(Mp::from("timeout"), Mp::from(ms))])
                .unwrap_or_default();
            if let Mp::Map(entries) = &mut opts {
                entries.push((Mp::from("flags"), Mp::Map(flags)));
            }
            encode_msgpack(&Mp::Map(vec![
                (Mp::from("uid"), Mp::from(uid)),
                (Mp::from("requestId"), Mp::from(request_id.as_str())),
                (Mp::from("type"), Mp::from(kind::BROADCAST)),
                (Mp::from("packet"), packet_to_msgpack(nsp, payload)),
                (Mp::from("opts"), opts),
            ]))
        }
    }
}

/// Decodes a request; `Ok(None)` for a type this node does not handle.
pub fn decode_request(bytes: &[u8]) -> Result<Option<Request>, WireError> {
    let mut message = decode_any(bytes)?;
    let code = field(&message, "type")
        .and_then(Mp::as_u64)
        .ok_or(WireError::Shape("request without a type"))?;
    let uid = str_field(&message, "uid").unwrap_or_default();
    let request_id = str_field(&message, "requestId");
    let need_id = |id: Option<String>| id.ok_or(WireError::Shape("request without a requestId"));
    let opts = field(&message, "opts").cloned();
    // A code past u8 is unknown, not another type modulo 256.
    let Ok(code) = u8::try_from(code) else {
        return Ok(None);
    };
    let request = match code {
        kind::SOCKETS => Request::Sockets {
            request_id: need_id(request_id)?,
            rooms: rooms_from(field(&message, "rooms")),
        },
        kind::ALL_ROOMS => Request::AllRooms {
            uid,
            request_id: need_id(request_id)?,
        },
        kind::REMOTE_JOIN | kind::REMOTE_LEAVE | kind::REMOTE_DISCONNECT => {
            let Some(opts) = opts else {
                // The legacy per-socket form (no opts) is not sent by adapter 8.x.
                return Ok(None);
            };
            let target = target_from(&opts);
            match code {
                kind::REMOTE_JOIN => Request::Join {
                    target,
                    rooms: rooms_from(field(&message, "rooms")),
                },
                kind::REMOTE_LEAVE => Request::Leave {
                    target,
                    rooms: rooms_from(field(&message, "rooms")),
                },
                _ => Request::Disconnect {
                    target,
                    close: field(&message, "close")
                        .and_then(Mp::as_bool)
                        .unwrap_or(false),
                },
            }
        }
        kind::REMOTE_FETCH => Request::Fetch {
            uid,
            request_id: need_id(request_id)?,
            target: target_from(&opts.ok_or(WireError::Shape("fetch without opts"))?),
        },
        kind::SERVER_SIDE_EMIT => {
            let Some(Mp::Array(data)) = take_field(&mut message, "data") else {
                return Err(WireError::Shape("server-side emit without a data array"));
            };
            Request::ServerSideEmit {
                uid,
                request_id,
                payload: msgpack_to_payload(data),
            }
        }
        kind::BROADCAST => {
            let packet = take_field(&mut message, "packet")
                .ok_or(WireError::Shape("broadcast without a packet"))?;
            let (nsp, payload) = packet_from(packet)?;
            let opts = opts.ok_or(WireError::Shape("broadcast without opts"))?;
            let timeout_ms = field(&opts, "flags")
                .and_then(|flags| field(flags, "timeout"))
                .and_then(Mp::as_u64);
            Request::BroadcastWithAck {
                uid,
                request_id: need_id(request_id)?,
                nsp,
                payload,
                target: target_from(&opts),
                timeout_ms,
            }
        }
        _ => return Ok(None),
    };
    Ok(Some(request))
}

// ---------------------------------------------------------------------------------------
// Responses.

#[derive(Debug, Clone, PartialEq)]
pub enum Response {
    Sockets {
        request_id: String,
        sockets: Vec<SocketInfo>,
    },
    SocketIds {
        request_id: String,
        ids: Vec<String>,
    },
    Rooms {
        request_id: String,
        rooms: Vec<crate::adapter::Room>,
    },
    ServerSideAck {
        request_id: String,
        payload: Payload,
    },
    ClientCount {
        request_id: String,
        count: usize,
    },
    BroadcastAck {
        request_id: String,
        payload: Payload,
    },
}

impl Response {
    pub fn request_id(&self) -> &str {
        match self {
            Response::Sockets { request_id, .. }
            | Response::SocketIds { request_id, .. }
            | Response::Rooms { request_id, .. }
            | Response::ServerSideAck { request_id, .. }
            | Response::ClientCount { request_id, .. }
            | Response::BroadcastAck { request_id, .. } => request_id,
        }
    }
}

pub fn encode_response(response: &Response) -> Vec<u8> {
    let json = |value: Value| serde_json::to_vec(&value).unwrap_or_default();
    match response {
        Response::Sockets {
            request_id,
            sockets,
        } => json(serde_json::json!({
            "requestId": request_id,
            "sockets": sockets.iter().map(|s| serde_json::json!({
                "id": s.id, "handshake": s.handshake, "rooms": s.rooms, "data": s.data,
            })).collect::<Vec<_>>(),
        })),
        Response::SocketIds { request_id, ids } => {
            json(serde_json::json!({"requestId": request_id, "sockets": ids}))
        }
        Response::Rooms { request_id, rooms } => json(serde_json::json!({
            "requestId": request_id, "rooms": rooms.iter().map(|r| &**r).collect::<Vec<_>>(),
        })),
        Response::ClientCount { request_id, count } => json(serde_json::json!({
            "type": kind::BROADCAST_CLIENT_COUNT, "requestId": request_id, "clientCount": count,
        })),
        Response::ServerSideAck {
            request_id,
            payload,
        }
        | Response::BroadcastAck {
            request_id,
            payload,
        } => {
            let (code, data_key) = match response {
                Response::ServerSideAck { .. } => (kind::SERVER_SIDE_EMIT, "data"),
                _ => (kind::BROADCAST_ACK, "packet"),
            };
            let first = payload_to_msgpack(payload).into_iter().next();
            if code == kind::SERVER_SIDE_EMIT && payload.attachments.is_empty() {
                let mut body = serde_json::json!({"type": code, "requestId": request_id});
                if let (Some(arg), Value::Object(map)) = (payload.args.first(), &mut body) {
                    map.insert(data_key.into(), arg.clone());
                }
                return json(body);
            }
            let mut entries = vec![
                (Mp::from("type"), Mp::from(code)),
                (Mp::from("requestId"), Mp::from(request_id.as_str())),
            ];
            if let Some(first) = first {
                entries.push((Mp::from(data_key), first));
            }
            encode_msgpack(&Mp::Map(entries))
        }
    }
}

pub fn decode_response(bytes: &[u8]) -> Result<Response, WireError> {
    let mut message = decode_any(bytes)?;
    let request_id =
        str_field(&message, "requestId").ok_or(WireError::Shape("response without a requestId"))?;
    let code = field(&message, "type").and_then(Mp::as_u64);
    let single = |value: Option<Mp>| msgpack_to_payload(value.into_iter().collect());
    Ok(match code {
        Some(c) if c == u64::from(kind::SERVER_SIDE_EMIT) => Response::ServerSideAck {
            request_id,
            payload: single(take_field(&mut message, "data")),
        },
        Some(c) if c == u64::from(kind::BROADCAST_CLIENT_COUNT) => Response::ClientCount {
            request_id,
            count: field(&message, "clientCount")
                .and_then(Mp::as_u64)
                .unwrap_or(0) as usize,
        },
        Some(c) if c == u64::from(kind::BROADCAST_ACK) => Response::BroadcastAck {
            request_id,
            payload: single(take_field(&mut message, "packet")),
        },
        _ => {
            if let Some(Mp::Array(sockets)) = take_field(&mut message, "sockets") {
                if sockets.iter().all(|s| s.is_str()) {
                    Response::SocketIds {
                        request_id,
                        ids: sockets
                            .iter()
                            .filter_map(|s| s.as_str().map(str::to_owned))
                            .collect(),
                    }
                } else {
                    Response::Sockets {
                        request_id,
                        sockets: sockets.into_iter().filter_map(socket_info).collect(),
                    }
                }
            } else if let Some(rooms) = field(&message, "rooms") {
                Response::Rooms {
                    request_id: request_id.clone(),
                    rooms: rooms_from(Some(rooms)),
                }
            } else {
                return Err(WireError::Shape("response of unknown kind"));
            }
        }
    })
}

pub(super) fn socket_info(mut socket: Mp) -> Option<SocketInfo> {
    let id = str_field(&socket, "id")?;
    let rooms = rooms_from(field(&socket, "rooms"))
        .iter()
        .map(|r| r.to_string())
        .collect();
    let handshake = take_field(&mut socket, "handshake").map_or(Value::Null, msgpack_to_plain_json);
    let data = take_field(&mut socket, "data").map_or(Value::Null, msgpack_to_plain_json);
    Some(SocketInfo {
        id,
        handshake,
        rooms,
        data,
    })
}

#[cfg(test)]
mod tests;
