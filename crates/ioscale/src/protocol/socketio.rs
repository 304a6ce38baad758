//! Socket.IO v5 packet codec, wire-compatible with `socket.io-parser` v4.
//!
//! A packet is one text frame `<type>[<n>-][<nsp>,][<ack id>][<JSON>]`, followed for
//! `BinaryEvent`/`BinaryAck` by `<n>` binary frames. Their JSON keeps the
//! `{"_placeholder":true,"num":N}` objects; frame `N` is `Packet::attachments[N]`.
//! Pure and synchronous: no I/O, no runtime.

use std::fmt::Write as _;

use bytes::Bytes;
use serde_json::Value;

/// Event names a peer may not use: the parser rejects events carrying them.
pub const RESERVED_EVENTS: [&str; 6] = [
    "connect",
    "connect_error",
    "disconnect",
    "disconnecting",
    "newListener",
    "removeListener",
];

/// Packet type; the discriminant is the digit on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketKind {
    /// Joins a namespace (client to server, with `auth`), or accepts it (server to client,
    /// with the socket id).
    Connect = 0,
    /// Leaves a namespace.
    Disconnect = 1,
    /// An event: name and arguments, optionally with an ack id.
    Event = 2,
    /// The reply to an event sent with an ack id.
    Ack = 3,
    /// Refuses a namespace connection (with the error's message and data).
    ConnectError = 4,
    /// An event whose arguments carry binary attachments.
    BinaryEvent = 5,
    /// An ack whose arguments carry binary attachments.
    BinaryAck = 6,
}

impl PacketKind {
    fn from_digit(byte: u8) -> Option<Self> {
        Some(match byte {
            b'0' => Self::Connect,
            b'1' => Self::Disconnect,
            b'2' => Self::Event,
            b'3' => Self::Ack,
            b'4' => Self::ConnectError,
            b'5' => Self::BinaryEvent,
            b'6' => Self::BinaryAck,
            _ => return None,
        })
    }

    fn digit(self) -> char {
        char::from(b'0' + self as u8)
    }
}

/// A Socket.IO packet. Decoded binary packets come back as `Event`/`Ack` with
/// their `attachments` filled, as the parser does.
#[derive(Debug, Clone, PartialEq)]
pub struct Packet {
    /// The type. Decoding gives `Event`/`Ack` for binary packets; encoding writes the binary
    /// kind iff there are attachments.
    pub kind: PacketKind,
    /// `"/"` when the wire omits it. To encode: starts with `/`, contains no `,`.
    pub nsp: String,
    /// Ack id.
    pub id: Option<u64>,
    /// JSON payload; binary placeholders stay in it.
    pub data: Option<Value>,
    /// Binary attachments; index `N` is placeholder `num` `N`.
    pub attachments: Vec<Bytes>,
}

impl Packet {
    fn new(kind: PacketKind, nsp: &str, id: Option<u64>, data: Option<Value>) -> Packet {
        Packet {
            kind,
            nsp: nsp.to_owned(),
            id,
            data,
            attachments: Vec::new(),
        }
    }

    /// An `Event`; `args` is a JSON array whose first element is the event name.
    pub fn event(nsp: &str, args: Value) -> Packet {
        Packet::new(PacketKind::Event, nsp, None, Some(args))
    }

    /// An `Ack` answering ack id `id`; `args` is a JSON array.
    pub fn ack(nsp: &str, id: u64, args: Value) -> Packet {
        Packet::new(PacketKind::Ack, nsp, Some(id), Some(args))
    }

    /// A `Connect`, with an optional object payload (auth from a client, `{"sid":..}` from a server).
    pub fn connect(nsp: &str, data: Option<Value>) -> Packet {
        Packet::new(PacketKind::Connect, nsp, None, data)
    }

    /// A `ConnectError`; `data` is an object (`{"message":..}`) or a string.
    pub fn connect_error(nsp: &str, data: Value) -> Packet {
        Packet::new(PacketKind::ConnectError, nsp, None, Some(data))
    }

    /// A `Disconnect`.
    pub fn disconnect(nsp: &str) -> Packet {
        Packet::new(PacketKind::Disconnect, nsp, None, None)
    }

    /// The event name (`data[0]`) of an `Event`/`BinaryEvent` packet.
    /// `None` for other kinds and for numeric event names.
    pub fn event_name(&self) -> Option<&str> {
        match self.kind {
            PacketKind::Event | PacketKind::BinaryEvent => {
                self.data.as_ref()?.as_array()?.first()?.as_str()
            }
            _ => None,
        }
    }
}

/// One encoded packet: the text frame, then the binary frames (attachments) that follow it.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedPacket {
    /// The text frame (Engine.IO `message` data, without the `4`).
    pub text: String,
    /// The binary frames, in placeholder order.
    pub attachments: Vec<Bytes>,
}

/// The kind written on the wire: events and acks are binary iff they carry attachments.
fn wire_kind(packet: &Packet) -> PacketKind {
    let binary = !packet.attachments.is_empty();
    match packet.kind {
        PacketKind::Event | PacketKind::BinaryEvent if binary => PacketKind::BinaryEvent,
        PacketKind::Event | PacketKind::BinaryEvent => PacketKind::Event,
        PacketKind::Ack | PacketKind::BinaryAck if binary => PacketKind::BinaryAck,
        PacketKind::Ack | PacketKind::BinaryAck => PacketKind::Ack,
        kind => kind,
    }
}

/// Encodes `packet` exactly as socket.io-parser's `Encoder` does.
///
/// Events/acks with attachments are written as `BinaryEvent`/`BinaryAck` (`<n>-` header), without
/// as `Event`/`Ack`. Attachments of other kinds are dropped. Namespace `"/"` (or `""`) is omitted.
pub fn encode(packet: &Packet) -> EncodedPacket {
    let mut text = String::new();
    encode_text_into(packet, &mut text);
    let attachments = match wire_kind(packet) {
        PacketKind::BinaryEvent | PacketKind::BinaryAck => packet.attachments.clone(),
        _ => Vec::new(),
    };
    EncodedPacket { text, attachments }
}

/// Appends the text frame of `packet` (header and JSON) to `out`.
/// `data` of `Some(Value::Null)` is omitted, like `null` in the parser.
pub fn encode_text_into(packet: &Packet, out: &mut String) {
    let kind = wire_kind(packet);
    out.reserve(packet.nsp.len() + 24);
    out.push(kind.digit());
    // Writing into a `String` cannot fail.
    if matches!(kind, PacketKind::BinaryEvent | PacketKind::BinaryAck) {
        let _ = write!(out, "{}-", packet.attachments.len());
    }
    if !packet.nsp.is_empty() && packet.nsp != "/" {
        out.push_str(&packet.nsp);
        out.push(',');
    }
    if let Some(id) = packet.id {
        let _ = write!(out, "{id}");
    }
    match &packet.data {
        None | Some(Value::Null) => {}
        // `Value`'s `Display` streams compact JSON straight into `out`.
        Some(data) => {
            let _ = write!(out, "{data}");
        }
    }
}

/// Why a frame could not be decoded. After any error the connection should be closed.
#[derive(Debug, thiserror::Error, PartialEq)]
#[non_exhaustive]
pub enum DecodeError {
    /// An empty text frame.
    #[error("empty packet")]
    Empty,
    /// A type digit outside `0`..=`6` (the character found).
    #[error("unknown packet type {0:?}")]
    UnknownPacketType(char),
    /// A binary packet whose `<n>-` prefix is missing or announces no attachment.
    #[error("illegal attachments: invalid attachment count")]
    InvalidAttachmentCount,
    /// A binary packet announcing more attachments than the decoder allows.
    #[error("too many attachments: {count} > {max}")]
    TooManyAttachments {
        /// Attachments announced.
        count: usize,
        /// The decoder's limit.
        max: usize,
    },
    /// An ack id that does not fit in a `u64`.
    #[error("invalid ack id (does not fit in u64)")]
    InvalidAckId,
    /// Data that is not JSON (the parser's message).
    #[error("invalid JSON payload: {0}")]
    InvalidJson(String),
    /// JSON of the wrong shape for the packet type (e.g. an event that is not a non-empty
    /// array starting with a name).
    #[error("invalid payload for {0:?} packet")]
    InvalidPayload(PacketKind),
    /// Placeholders in the JSON that do not match the announced attachments.
    #[error("illegal attachments: invalid binary placeholder")]
    InvalidPlaceholder,
    /// A text frame while the attachments of a binary packet were awaited.
    #[error("got plaintext data when reconstructing a packet")]
    UnexpectedText,
    /// A binary frame while no binary packet awaited attachments.
    #[error("got binary data when not reconstructing a packet")]
    UnexpectedBinary,
}

/// Stateful decoder for one connection: a text frame either completes a packet, or
/// (binary kinds) starts collecting the announced number of binary frames.
#[derive(Debug)]
pub struct Decoder {
    max_attachments: usize,
    /// A binary packet and the number of attachments it announced.
    pending: Option<(Packet, usize)>,
}

impl Decoder {
    /// `max_attachments` caps the announced attachment count (Socket.IO's default is 10).
    pub fn new(max_attachments: usize) -> Self {
        Decoder {
            max_attachments,
            pending: None,
        }
    }

    /// Whether a binary packet waits for attachments.
    pub fn is_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// Decodes a text frame: `Some` when it completes a packet, `None` when binary frames must follow.
    pub fn decode_text(&mut self, text: &str) -> Result<Option<Packet>, DecodeError> {
        if self.pending.is_some() {
            return Err(DecodeError::UnexpectedText);
        }
        let (packet, expected) = parse_text(text, self.max_attachments)?;
        if expected == 0 {
            return Ok(Some(packet));
        }
        self.pending = Some((packet, expected));
        Ok(None)
    }

    /// Adds a binary frame to the pending packet: `Some` when it was the last one.
    pub fn decode_binary(&mut self, data: Bytes) -> Result<Option<Packet>, DecodeError> {
        let Some((packet, expected)) = self.pending.as_mut() else {
            return Err(DecodeError::UnexpectedBinary);
        };
        packet.attachments.push(data);
        if packet.attachments.len() < *expected {
            return Ok(None);
        }
        Ok(self.pending.take().map(|(packet, _)| packet))
    }

    /// Whether a binary packet is waiting for attachments.
    pub fn is_awaiting_attachments(&self) -> bool {
        self.pending.is_some()
    }
}

/// Splits off the leading run of ASCII digits.
fn split_digits(s: &str) -> (&str, &str) {
    let n = s
        .bytes()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(s.len());
    // `n` is a char boundary: every byte before it is ASCII.
    s.split_at(n)
}

/// Parses one text frame into a packet and the number of binary frames it announces.
fn parse_text(text: &str, max_attachments: usize) -> Result<(Packet, usize), DecodeError> {
    let mut chars = text.chars();
    let first = chars.next().ok_or(DecodeError::Empty)?;
    let wire = u8::try_from(first)
        .ok()
        .and_then(PacketKind::from_digit)
        .ok_or(DecodeError::UnknownPacketType(first))?;
    let mut rest = chars.as_str();

    let binary = matches!(wire, PacketKind::BinaryEvent | PacketKind::BinaryAck);
    let mut expected = 0;
    if binary {
        let (digits, after) = split_digits(rest);
        let after = after
            .strip_prefix('-')
            .filter(|_| !digits.is_empty())
            .ok_or(DecodeError::InvalidAttachmentCount)?;
        let count = digits.bytes().fold(0usize, |n, d| {
            n.saturating_mul(10).saturating_add(usize::from(d - b'0'))
        });
        // socket.io-parser 4.2.7 rejects a binary packet announcing no attachment.
        if count == 0 {
            return Err(DecodeError::InvalidAttachmentCount);
        }
        if count > max_attachments {
            return Err(DecodeError::TooManyAttachments {
                count,
                max: max_attachments,
            });
        }
        expected = count;
        rest = after;
    }

    let mut nsp = "/";
    if rest.starts_with('/') {
        (nsp, rest) = rest.split_once(',').unwrap_or((rest, ""));
    }

    let (digits, after) = split_digits(rest);
    let id = if digits.is_empty() {
        None
    } else {
        Some(
            digits
                .parse::<u64>()
                .map_err(|_| DecodeError::InvalidAckId)?,
        )
    };
    rest = after;

    let data = if rest.is_empty() {
        None
    } else if wire == PacketKind::Disconnect {
        return Err(DecodeError::InvalidPayload(wire));
    } else {
        let value = serde_json::from_str::<Value>(rest)
            .map_err(|e| DecodeError::InvalidJson(e.to_string()))?;
        Some(value)
    };
    if !payload_valid(wire, data.as_ref()) {
        return Err(DecodeError::InvalidPayload(wire));
    }
    if binary
        && !data
            .as_ref()
            .is_some_and(|d| placeholders_valid(d, expected))
    {
        return Err(DecodeError::InvalidPlaceholder);
    }

    let kind = match wire {
        PacketKind::BinaryEvent => PacketKind::Event,
        PacketKind::BinaryAck => PacketKind::Ack,
        kind => kind,
    };
    let packet = Packet {
        kind,
        nsp: nsp.to_owned(),
        id,
        data,
        attachments: Vec::with_capacity(expected),
    };
    Ok((packet, expected))
}

/// The parser's `isPayloadValid`. Unlike the parser, a missing payload is only
/// accepted for `Connect` and `Disconnect`.
fn payload_valid(kind: PacketKind, data: Option<&Value>) -> bool {
    match (kind, data) {
        (PacketKind::Connect, None) | (PacketKind::Disconnect, None) => true,
        (PacketKind::Connect, Some(v)) => v.is_object(),
        (PacketKind::ConnectError, Some(v)) => v.is_string() || v.is_object(),
        (PacketKind::Event | PacketKind::BinaryEvent, Some(Value::Array(args))) => {
            match args.first() {
                Some(Value::Number(_)) => true,
                Some(Value::String(name)) => !RESERVED_EVENTS.contains(&name.as_str()),
                _ => false,
            }
        }
        (PacketKind::Ack | PacketKind::BinaryAck, Some(v)) => v.is_array(),
        _ => false,
    }
}

/// The parser's `reconstructPacket` check: every `{"_placeholder":true}` object has a
/// `num` indexing one of the `count` attachments. Depth is bounded by serde_json's
/// recursion limit (128), so the recursion cannot overflow the stack.
fn placeholders_valid(value: &Value, count: usize) -> bool {
    match value {
        Value::Array(items) => items.iter().all(|v| placeholders_valid(v, count)),
        Value::Object(map) if map.get("_placeholder") == Some(&Value::Bool(true)) => map
            .get("num")
            .and_then(Value::as_u64)
            .is_some_and(|n| usize::try_from(n).is_ok_and(|n| n < count)),
        Value::Object(map) => map.values().all(|v| placeholders_valid(v, count)),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::DecodeError::*;
    use super::PacketKind::*;
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn ph(num: usize) -> Value {
        json!({ "_placeholder": true, "num": num })
    }

    fn bin(bytes: &'static [u8]) -> Bytes {
        Bytes::from_static(bytes)
    }

    fn with(mut packet: Packet, id: Option<u64>, attachments: Vec<Bytes>) -> Packet {
        (packet.id, packet.attachments) = (id, attachments);
        packet
    }

    fn decode(text: &str) -> Result<Option<Packet>, DecodeError> {
        Decoder::new(10).decode_text(text)
    }

    fn ok(text: &str) -> Packet {
        match decode(text) {
            Ok(Some(packet)) => packet,
            other => panic!("{text:?} decoded as {other:?}"),
        }
    }

    fn err(text: &str) -> DecodeError {
        decode(text).expect_err(text)
    }

    /// Asserts `packet` encodes to `text` and `text` decodes back to `packet`.
    fn both_ways(packet: Packet, text: &str) {
        let encoded = encode(&packet);
        assert_eq!(encoded.text, text);
        assert_eq!(
            decode_frames(&mut Decoder::new(10), &encoded),
            packet,
            "{text}"
        );
    }

    /// Decodes a text frame plus its binary frames, checking the decoder waits for all of them.
    fn decode_frames(decoder: &mut Decoder, encoded: &EncodedPacket) -> Packet {
        let mut done = decoder.decode_text(&encoded.text).unwrap();
        for frame in &encoded.attachments {
            assert!(done.is_none() && decoder.is_awaiting_attachments());
            done = decoder.decode_binary(frame.clone()).unwrap();
        }
        assert!(!decoder.is_awaiting_attachments());
        done.expect("packet complete after its attachments")
    }

    #[test]
    fn documented_examples_both_ways() {
        both_ways(Packet::event("/", json!(["hello", 1])), r#"2["hello",1]"#);
        let p = with(Packet::event("/admin", json!(["a"])), Some(12), vec![]);
        both_ways(p, r#"2/admin,12["a"]"#);
        both_ways(Packet::ack("/", 456, json!([1, "2"])), r#"3456[1,"2"]"#);
        let p = with(
            Packet::event("/", json!(["m", ph(0)])),
            None,
            vec![bin(&[1])],
        );
        assert_eq!(encode(&p).attachments, vec![bin(&[1])]);
        both_ways(p, r#"51-["m",{"_placeholder":true,"num":0}]"#);
        let p = Packet::connect("/custom", Some(json!({"sid": "x"})));
        both_ways(p, r#"0/custom,{"sid":"x"}"#);
        both_ways(Packet::disconnect("/admin"), "1/admin,");
        let p = Packet::connect_error("/", json!({"message": "Invalid namespace"}));
        both_ways(p, r#"4{"message":"Invalid namespace"}"#);
    }

    #[test]
    fn every_kind_both_ways() {
        both_ways(Packet::connect("/", None), "0");
        both_ways(
            Packet::connect("/", Some(json!({"token": "1"}))),
            r#"0{"token":"1"}"#,
        );
        both_ways(Packet::disconnect("/"), "1");
        both_ways(Packet::event("/", json!([1, "a", {}])), r#"2[1,"a",{}]"#);
        both_ways(Packet::ack("/", 0, json!([])), "30[]");
        both_ways(
            Packet::connect_error("/", json!("Unauthorized")),
            r#"4"Unauthorized""#,
        );
        both_ways(Packet::connect_error("/x", json!("no")), r#"4/x,"no""#);
        let p = Packet::ack("/a", 7, json!([ph(0), ph(1)]));
        let p = with(p, Some(7), vec![bin(b"x"), bin(b"")]);
        both_ways(
            p,
            r#"62-/a,7[{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#,
        );
    }

    #[test]
    fn encoding_normalises_kinds_and_drops_what_cannot_be_sent() {
        // A BinaryEvent/BinaryAck without attachments is a plain Event/Ack on the wire.
        let mut p = Packet::event("/", json!(["a"]));
        p.kind = BinaryEvent;
        assert_eq!(encode(&p).text, r#"2["a"]"#);
        (p.kind, p.id) = (BinaryAck, Some(3));
        assert_eq!(encode(&p).text, r#"33["a"]"#);
        p.attachments = vec![bin(b"z")];
        assert_eq!(encode(&p).text, r#"61-3["a"]"#);
        p.kind = BinaryEvent;
        assert_eq!(encode(&p).text, r#"51-3["a"]"#);
        // Attachments of other kinds, `null` data and the "" namespace are not written.
        let p = with(
            Packet::connect("", Some(Value::Null)),
            None,
            vec![bin(b"z")],
        );
        assert_eq!(
            encode(&p),
            EncodedPacket {
                text: "0".into(),
                attachments: vec![]
            }
        );
    }

    #[test]
    fn encode_text_into_appends() {
        let mut out = String::from("4");
        encode_text_into(&Packet::event("/", json!(["hello", 1])), &mut out);
        assert_eq!(out, r#"42["hello",1]"#);
        encode_text_into(&Packet::disconnect("/chat"), &mut out);
        assert_eq!(out, r#"42["hello",1]1/chat,"#);
    }

    #[test]
    fn event_name() {
        assert_eq!(
            Packet::event("/", json!(["hi", 1])).event_name(),
            Some("hi")
        );
        assert_eq!(Packet::event("/", json!([1, "hi"])).event_name(), None);
        assert_eq!(Packet::ack("/", 1, json!(["hi"])).event_name(), None);
        assert_eq!(Packet::connect("/", None).event_name(), None);
        let mut p = Packet::event("/", json!(["bin"]));
        p.kind = BinaryEvent;
        assert_eq!(p.event_name(), Some("bin"));
    }

    #[test]
    fn protocol_test_suite_packets() {
        // From socket.io-protocol's test suite, without the Engine.IO "4" prefix.
        let p = ok(r#"2["message",1,"2",{"3":[true]}]"#);
        assert_eq!(
            p,
            Packet::event("/", json!(["message", 1, "2", {"3": [true]}]))
        );
        assert_eq!(p.event_name(), Some("message"));
        let p = ok(r#"2456["message-with-ack",1,"2",{"3":[false]}]"#);
        assert_eq!(
            (p.kind, p.id, p.event_name()),
            (Event, Some(456), Some("message-with-ack"))
        );
        both_ways(
            Packet::ack("/", 456, json!([1, "2", {"3": [false]}])),
            r#"3456[1,"2",{"3":[false]}]"#,
        );
        let auth = Some(json!({"token": "abc"}));
        both_ways(
            Packet::connect("/custom", auth),
            r#"0/custom,{"token":"abc"}"#,
        );
        assert_eq!(ok("0/custom,"), Packet::connect("/custom", None));
        assert_eq!(ok("0/random"), Packet::connect("/random", None));
        assert_eq!(ok("1/custom"), Packet::disconnect("/custom"));
        let p = Packet::connect_error("/random", json!({"message": "Invalid namespace"}));
        both_ways(p, r#"4/random,{"message":"Invalid namespace"}"#);
        assert_eq!(err("abc"), UnknownPacketType('a'));
        assert_eq!(err("2{}"), InvalidPayload(Event));
        let invalid_id = err(r#"2abc["message-with-ack",1,"2",{"3":[false]}]"#);
        assert!(matches!(invalid_id, InvalidJson(_)));
    }

    #[test]
    fn protocol_test_suite_binary_packets() {
        let mut decoder = Decoder::new(10);
        let text = r#"52-["message",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#;
        assert_eq!(decoder.decode_text(text), Ok(None));
        assert!(decoder.is_awaiting_attachments());
        assert_eq!(decoder.decode_binary(bin(&[1, 2, 3])), Ok(None));
        let p = decoder.decode_binary(bin(&[4, 5, 6])).unwrap().unwrap();
        let args = json!(["message", ph(0), ph(1)]);
        let frames = vec![bin(&[1, 2, 3]), bin(&[4, 5, 6])];
        assert_eq!(p, with(Packet::event("/", args), None, frames.clone()));
        assert_eq!(encode(&p).text, text);

        let args = json!(["message-with-ack", ph(0), ph(1)]);
        let p = with(Packet::event("/", args), Some(789), frames.clone());
        let text = r#"52-789["message-with-ack",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#;
        both_ways(p, text);
        let reply = with(
            Packet::ack("/", 789, json!([ph(0), ph(1)])),
            Some(789),
            frames,
        );
        both_ways(
            reply,
            r#"62-789[{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#,
        );
    }

    #[test]
    fn decodes_namespaces_ids_and_whitespace() {
        // The namespace runs from '/' to ',' or to the end of the frame, whatever it contains.
        assert_eq!(ok(r#"2/é ü,["a"]"#).nsp, "/é ü");
        assert_eq!(ok(r#"2/,["a"]"#).nsp, "/");
        assert_eq!(ok("1/a[1]").nsp, "/a[1]");
        // No comma: the JSON is swallowed by the namespace, leaving an event without payload.
        assert_eq!(err(r#"2/admin["a"]"#), InvalidPayload(Event));
        assert_eq!(ok("3007[]").id, Some(7));
        assert_eq!(ok("1/a,5").id, Some(5));
        assert_eq!(ok(r#"218446744073709551615["a"]"#).id, Some(u64::MAX));
        assert_eq!(err(r#"218446744073709551616["a"]"#), InvalidAckId);
        assert_eq!(err(&format!("3{}[]", "9".repeat(500))), InvalidAckId);
        let p = ok(r#"2[1.5,"a",{}]"#);
        assert_eq!((p.kind, p.event_name()), (Event, None));
        // serde_json, like JSON.parse, skips whitespace around the payload.
        let p = ok("2 [\"a\" , 1 ]\n");
        assert_eq!((p.id, p.data), (None, Some(json!(["a", 1]))));
    }

    #[test]
    fn rejects_bad_packet_types() {
        assert_eq!(err(""), Empty);
        for (text, c) in [
            ("7", '7'),
            ("999", '9'),
            ("a", 'a'),
            (" 0", ' '),
            ("é2", 'é'),
        ] {
            assert_eq!(err(text), UnknownPacketType(c), "{text}");
        }
    }

    #[test]
    fn rejects_bad_attachment_counts() {
        for text in [
            "5",
            "51",
            "5-",
            "5a-",
            "51.23-",
            "6-[]",
            "5 1-[\"a\"]",
            "5é",
            "51é-",
        ] {
            assert_eq!(err(text), InvalidAttachmentCount, "{text}");
        }
        let too_many = Decoder::new(2).decode_text(r#"53-["hello",{},{},{}]"#);
        assert_eq!(too_many, Err(TooManyAttachments { count: 3, max: 2 }));
        let huge = format!("5{}-[\"a\"]", "9".repeat(60));
        assert_eq!(
            err(&huge),
            TooManyAttachments {
                count: usize::MAX,
                max: 10
            }
        );
    }

    #[test]
    fn zero_attachments_are_rejected_like_parser_4_2_7() {
        let mut decoder = Decoder::new(10);
        assert_eq!(
            decoder.decode_text(r#"50-["a"]"#),
            Err(DecodeError::InvalidAttachmentCount)
        );
        assert_eq!(
            decoder.decode_text("600-/x,4[]"),
            Err(DecodeError::InvalidAttachmentCount)
        );
        assert!(!decoder.is_awaiting_attachments());
    }

    #[test]
    fn rejects_invalid_payloads_like_the_parser() {
        let cases = [
            (
                Connect,
                &[r#"0/admin,"invalid""#, "0[]", "0null", "0\"s\""][..],
            ),
            (Disconnect, &["1/admin,{}", "1{not json", "1\"\""]),
            (
                Event,
                &["2/admin,{}", r#"2[{"toString":"foo"}]"#, r#"2[true,"foo"]"#],
            ),
            (
                Event,
                &[
                    r#"2[null,"bar"]"#,
                    r#"2["disconnect","123"]"#,
                    "2[]",
                    "2\"a\"",
                ],
            ),
            (Ack, &["3{}", "3\"a\"", "3null"]),
            (ConnectError, &["4[]", "4null", "41"]),
            (BinaryEvent, &[r#"51-{"a":1}"#, r#"51-["connect"]"#]),
            (BinaryAck, &["61-{}"]),
            // A payload is only optional for Connect/Disconnect.
            (Event, &["2", "2/a,", "212"]),
            (Ack, &["3", "312"]),
            (ConnectError, &["4", "4/a,"]),
            (BinaryEvent, &["51-"]),
            (BinaryAck, &["61-/a,1"]),
        ];
        for (kind, texts) in cases {
            for text in texts {
                assert_eq!(err(text), InvalidPayload(kind), "{text}");
            }
        }
        for name in RESERVED_EVENTS {
            assert_eq!(
                err(&format!("2{}", json!([name, 1]))),
                InvalidPayload(Event)
            );
        }
    }

    #[test]
    fn rejects_invalid_json() {
        let deep = format!("2[\"a\",{}", "[".repeat(10_000));
        let texts = [
            r#"2["a""#,
            r#"42["some","data""#,
            r#"2/a,"invalid"#,
            "2[1] x",
            "0 ",
            &deep,
        ];
        for text in texts {
            assert!(matches!(err(text), InvalidJson(_)), "{text}");
        }
    }

    #[test]
    fn rejects_invalid_placeholders() {
        let bad = [
            r#"51-["a",{"_placeholder":true,"num":1}]"#,
            r#"51-["a",{"_placeholder":true,"num":-1}]"#,
            r#"51-["a",{"_placeholder":true,"num":"0"}]"#,
            r#"51-["a",{"_placeholder":true,"num":0.5}]"#,
            r#"51-["a",{"_placeholder":true}]"#,
            r#"61-[{"x":[{"_placeholder":true,"num":3}]}]"#,
        ];
        for text in bad {
            assert_eq!(err(text), InvalidPlaceholder, "{text}");
        }
        // `_placeholder` must be `true`; other objects are plain data, also in non-binary packets.
        let fine = r#"51-["a",{"_placeholder":1,"num":9},{"k":[{"_placeholder":true,"num":0}]}]"#;
        assert_eq!(decode(fine), Ok(None));
        assert!(
            decode(r#"2["a",{"_placeholder":true,"num":7}]"#)
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn decoder_state_machine() {
        let mut decoder = Decoder::new(10);
        assert_eq!(decoder.decode_binary(bin(b"x")), Err(UnexpectedBinary));
        assert_eq!(
            decoder.decode_text(r#"51-["a",{"_placeholder":true,"num":0}]"#),
            Ok(None)
        );
        // Like the parser, a text frame mid-packet is an error and the packet stays pending.
        assert_eq!(decoder.decode_text(r#"2["b"]"#), Err(UnexpectedText));
        assert!(decoder.is_awaiting_attachments());
        let p = decoder.decode_binary(bin(b"x")).unwrap().unwrap();
        assert_eq!(p.attachments, vec![bin(b"x")]);
        let p = decoder.decode_text(r#"2["b"]"#).unwrap();
        assert_eq!(p, Some(Packet::event("/", json!(["b"]))));
        // A failed text frame leaves no state behind.
        assert_eq!(
            decoder.decode_text("52-{}"),
            Err(InvalidPayload(BinaryEvent))
        );
        assert!(!decoder.is_awaiting_attachments());
        assert_eq!(decoder.decode_binary(bin(b"x")), Err(UnexpectedBinary));
    }

    // ---- properties ----

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            (-1_000_000i32..1_000_000).prop_map(|n| Value::from(f64::from(n) / 8.0)),
            any::<String>().prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(any::<String>(), inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn arb_object() -> impl Strategy<Value = Value> {
        prop::collection::btree_map(any::<String>(), arb_json(), 0..4)
            .prop_map(|m| Value::Object(m.into_iter().collect()))
    }

    fn arb_nsp() -> impl Strategy<Value = String> {
        prop_oneof![Just("/".to_owned()), "/[^,]{0,12}", "/[a-z0-9_-]{1,8}"]
    }

    /// A valid event or ack with placeholders for its generated attachments.
    fn arb_event_or_ack() -> impl Strategy<Value = Packet> {
        let head = prop_oneof![
            "[a-z]{0,8}".prop_filter("reserved", |s| !RESERVED_EVENTS.contains(&s.as_str())),
            any::<String>().prop_map(|s| format!("ev{s}")),
        ];
        let head = prop_oneof![
            head.prop_map(Value::String),
            any::<u32>().prop_map(Value::from)
        ];
        let args = prop::collection::vec(arb_json(), 0..4);
        let blobs = prop::collection::vec(prop::collection::vec(any::<u8>(), 0..16), 0..4);
        let id = proptest::option::of(any::<u64>());
        (any::<bool>(), arb_nsp(), id, head, args, blobs).prop_map(
            |(event, nsp, id, head, mut args, blobs)| {
                args.extend((0..blobs.len()).map(|num| json!({ "bin": [ph(num)] })));
                if event {
                    args.insert(0, head);
                }
                let attachments = blobs.into_iter().map(Bytes::from).collect();
                let packet = if event {
                    Packet::event(&nsp, Value::Array(args))
                } else {
                    Packet::ack(&nsp, 0, Value::Array(args))
                };
                with(packet, id, attachments)
            },
        )
    }

    fn arb_packet() -> impl Strategy<Value = Packet> {
        let error_data = prop_oneof![arb_object(), any::<String>().prop_map(Value::String)];
        prop_oneof![
            (arb_nsp(), proptest::option::of(arb_object()))
                .prop_map(|(nsp, data)| Packet::connect(&nsp, data)),
            arb_nsp().prop_map(|nsp| Packet::disconnect(&nsp)),
            (arb_nsp(), error_data).prop_map(|(nsp, data)| Packet::connect_error(&nsp, data)),
            arb_event_or_ack(),
        ]
    }

    /// Text frames built from protocol-looking fragments, to reach deep decoder paths.
    fn arb_frame() -> impl Strategy<Value = String> {
        let token = prop_oneof![
            "[0-9]{1,3}",
            "[-/, ]",
            "/[a-zé]{0,3},?",
            Just(r#"{"_placeholder":true,"num":0}"#.to_owned()),
            arb_json().prop_map(|v| v.to_string()),
            any::<String>(),
        ];
        prop::collection::vec(token, 0..6).prop_map(|t| t.concat())
    }

    proptest! {
        #[test]
        fn round_trip(packet in arb_packet()) {
            let encoded = encode(&packet);
            let mut text = String::new();
            encode_text_into(&packet, &mut text);
            prop_assert_eq!(&encoded.text, &text);
            prop_assert_eq!(decode_frames(&mut Decoder::new(10), &encoded), packet);
        }

        #[test]
        fn decoder_never_panics(
            frames in prop::collection::vec(
                prop_oneof![
                    arb_frame().prop_map(Ok),
                    prop::collection::vec(any::<u8>(), 0..8).prop_map(Err),
                ],
                1..6,
            ),
            max in 0usize..12,
        ) {
            let mut decoder = Decoder::new(max);
            for frame in frames {
                let result = match frame {
                    Ok(text) => decoder.decode_text(&text),
                    Err(frame) => decoder.decode_binary(Bytes::from(frame)),
                };
                if let Ok(Some(packet)) = result {
                    // Whatever decodes re-encodes into frames that decode to the same header.
                    let again = decode_frames(&mut Decoder::new(max), &encode(&packet));
                    prop_assert_eq!(
                        (again.kind, &again.nsp, again.id, &again.attachments),
                        (packet.kind, &packet.nsp, packet.id, &packet.attachments)
                    );
                }
            }
        }
    }
}
