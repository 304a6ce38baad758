//! Engine.IO v4 packet codec: pure functions over bytes.
//!
//! Spec: `socketio/socket.io`, `docs/engine.io-protocol/v4-current.md`. A packet is one
//! type digit followed by its data; WebSocket frames carry one packet each (binary
//! frames are raw `message` data), HTTP long-polling payloads join packets with the
//! record separator `\x1e` and write binary data as `b<base64>`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;

use super::Utf8Bytes;

/// Separator between packets of one HTTP long-polling payload.
pub const RECORD_SEPARATOR: u8 = 0x1e;

/// Engine.IO packet types, as the digit that starts a text packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketType {
    /// `0`: the handshake, server to client (sid, upgrades, ping interval and timeout).
    Open,
    /// `1`: the transport is closing.
    Close,
    /// `2`: a heartbeat (or `2probe` during an upgrade).
    Ping,
    /// `3`: the answer to a ping (or `3probe`).
    Pong,
    /// `4`: application data (a Socket.IO packet).
    Message,
    /// `5`: the client switches to the probed WebSocket.
    Upgrade,
    /// `6`: nothing; flushes a pending poll during an upgrade.
    Noop,
}

impl PacketType {
    fn from_digit(digit: u8) -> Option<Self> {
        Some(match digit {
            b'0' => Self::Open,
            b'1' => Self::Close,
            b'2' => Self::Ping,
            b'3' => Self::Pong,
            b'4' => Self::Message,
            b'5' => Self::Upgrade,
            b'6' => Self::Noop,
            _ => return None,
        })
    }
}

/// One decoded incoming packet. Text data borrows nothing: it is a cheap slice of the frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Packet {
    /// A packet of any type with its text data (`2probe` is `Text(Ping, "probe")`).
    Text(PacketType, Utf8Bytes),
    /// A binary `message` packet.
    Binary(Bytes),
}

/// An encoded outgoing packet, ready for either transport. Cloning shares the buffer,
/// which is how one broadcast encoding reaches every recipient.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// A whole text packet, type digit included (`4` + Socket.IO packet, `2`, `6`, ...).
    Text(Utf8Bytes),
    /// Binary `message` data, sent as a binary WebSocket frame or `b<base64>` on polling.
    Binary(Bytes),
}

impl Frame {
    /// The server's heartbeat.
    pub const PING: Frame = Frame::Text(Utf8Bytes::from_static("2"));
    /// The answer to a ping.
    pub const PONG: Frame = Frame::Text(Utf8Bytes::from_static("3"));
    /// A packet that does nothing (ends a pending poll).
    pub const NOOP: Frame = Frame::Text(Utf8Bytes::from_static("6"));
    /// The close packet.
    pub const CLOSE: Frame = Frame::Text(Utf8Bytes::from_static("1"));
    /// The answer to the `2probe` of a WebSocket upgrade.
    pub const PROBE_PONG: Frame = Frame::Text(Utf8Bytes::from_static("3probe"));

    /// A `message` packet around text data.
    pub fn message(data: &str) -> Frame {
        let mut text = String::with_capacity(data.len() + 1);
        text.push('4');
        text.push_str(data);
        Frame::Text(text.into())
    }

    /// Bytes this frame occupies in an outbound queue (used for the queue bound).
    pub fn len(&self) -> usize {
        match self {
            Frame::Text(text) => text.len(),
            Frame::Binary(data) => data.len(),
        }
    }

    /// Whether [`Frame::len`] is zero.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Why an Engine.IO packet did not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PacketError {
    /// No type digit.
    #[error("empty packet")]
    Empty,
    /// A type digit outside `0`..=`6` (the character found).
    #[error("unknown packet type {0:?}")]
    UnknownType(char),
    /// A polling `b<base64>` record whose data is not base64.
    #[error("invalid base64 in binary packet")]
    InvalidBase64,
    /// Text that is not valid UTF-8.
    #[error("packet is not valid UTF-8")]
    InvalidUtf8,
}

/// Decodes one text WebSocket frame (or one record of a polling payload that is not binary).
pub fn decode_text(text: Utf8Bytes) -> Result<Packet, PacketError> {
    let first = *text.as_bytes().first().ok_or(PacketError::Empty)?;
    let kind = PacketType::from_digit(first).ok_or(PacketError::UnknownType(first as char))?;
    // The type digit is ASCII, so byte 1 is a char boundary: the data shares the frame.
    let data = text.slice_from(1).ok_or(PacketError::InvalidUtf8)?;
    Ok(Packet::Text(kind, data))
}

/// Decodes an HTTP long-polling payload: packets separated by `\x1e`, binary as `b<base64>`.
pub fn decode_payload(body: Bytes) -> Result<Vec<Packet>, PacketError> {
    match decode_payload_prefix(body) {
        (packets, None) => Ok(packets),
        (_, Some(error)) => Err(error),
    }
}

/// Decodes a payload up to its first invalid record: the packets before it, and the error.
/// The reference server acts on those packets before it reports the error.
pub fn decode_payload_prefix(body: Bytes) -> (Vec<Packet>, Option<PacketError>) {
    let mut packets = Vec::new();
    for range in split_records(&body) {
        match decode_record(body.slice(range)) {
            Ok(packet) => packets.push(packet),
            Err(error) => return (packets, Some(error)),
        }
    }
    (packets, None)
}

fn decode_record(record: Bytes) -> Result<Packet, PacketError> {
    if record.first() == Some(&b'b') {
        let data = BASE64
            .decode(&record[1..])
            .map_err(|_| PacketError::InvalidBase64)?;
        Ok(Packet::Binary(data.into()))
    } else {
        let text = Utf8Bytes::try_from(record).map_err(|_| PacketError::InvalidUtf8)?;
        decode_text(text)
    }
}

fn split_records(body: &[u8]) -> impl Iterator<Item = std::ops::Range<usize>> + '_ {
    let mut start = 0;
    let mut done = false;
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        match memchr_separator(&body[start..]) {
            Some(offset) => {
                let range = start..start + offset;
                start += offset + 1;
                Some(range)
            }
            None => {
                done = true;
                Some(start..body.len())
            }
        }
    })
}

fn memchr_separator(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| b == RECORD_SEPARATOR)
}

/// Appends frames as one HTTP long-polling payload.
pub fn encode_payload<'a>(frames: impl IntoIterator<Item = &'a Frame>, out: &mut Vec<u8>) {
    for (index, frame) in frames.into_iter().enumerate() {
        if index > 0 {
            out.push(RECORD_SEPARATOR);
        }
        match frame {
            Frame::Text(text) => out.extend_from_slice(text.as_bytes()),
            Frame::Binary(data) => {
                out.push(b'b');
                let start = out.len();
                out.resize(
                    start + base64::encoded_len(data.len(), true).unwrap_or(0),
                    0,
                );
                let written = BASE64.encode_slice(data, &mut out[start..]).unwrap_or(0);
                out.truncate(start + written);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &'static str) -> Utf8Bytes {
        Utf8Bytes::from_static(s)
    }

    #[test]
    fn decodes_each_packet_type() {
        for (input, kind) in [
            ("0", PacketType::Open),
            ("1", PacketType::Close),
            ("2", PacketType::Ping),
            ("3", PacketType::Pong),
            ("4", PacketType::Message),
            ("5", PacketType::Upgrade),
            ("6", PacketType::Noop),
        ] {
            assert_eq!(decode_text(text(input)), Ok(Packet::Text(kind, text(""))));
        }
        assert_eq!(
            decode_text(text("2probe")),
            Ok(Packet::Text(PacketType::Ping, text("probe")))
        );
        assert_eq!(
            decode_text(text("4héllo")),
            Ok(Packet::Text(PacketType::Message, text("héllo")))
        );
    }

    #[test]
    fn rejects_empty_and_unknown_types() {
        assert_eq!(decode_text(text("")), Err(PacketError::Empty));
        assert_eq!(decode_text(text("7")), Err(PacketError::UnknownType('7')));
        assert_eq!(decode_text(text("é")), Err(PacketError::UnknownType('Ã')));
    }

    #[test]
    fn decodes_polling_payload_with_binary() {
        let body = Bytes::from_static(b"4hello\x1ebAQID\x1e2");
        assert_eq!(
            decode_payload(body),
            Ok(vec![
                Packet::Text(PacketType::Message, text("hello")),
                Packet::Binary(Bytes::from_static(&[1, 2, 3])),
                Packet::Text(PacketType::Ping, text("")),
            ])
        );
    }

    #[test]
    fn rejects_bad_polling_payloads() {
        assert_eq!(
            decode_payload(Bytes::from_static(b"b!!")),
            Err(PacketError::InvalidBase64)
        );
        assert_eq!(
            decode_payload(Bytes::from_static(b"4a\x1e")),
            Err(PacketError::Empty)
        );
        assert_eq!(
            decode_payload(Bytes::from_static(b"4\xff")),
            Err(PacketError::InvalidUtf8)
        );
    }

    #[test]
    fn encodes_polling_payload() {
        let frames = [
            Frame::message("hello"),
            Frame::Binary(Bytes::from_static(&[1, 2, 3])),
            Frame::PING,
        ];
        let mut out = Vec::new();
        encode_payload(&frames, &mut out);
        assert_eq!(out, b"4hello\x1ebAQID\x1e2");
    }

    #[test]
    fn payload_round_trip() {
        let frames = [
            Frame::message("[\"a\"]"),
            Frame::Binary(Bytes::from_static(&[0, 255, 30])),
        ];
        let mut out = Vec::new();
        encode_payload(&frames, &mut out);
        let decoded = decode_payload(out.into()).unwrap();
        assert_eq!(
            decoded,
            vec![
                Packet::Text(PacketType::Message, text("[\"a\"]")),
                Packet::Binary(Bytes::from_static(&[0, 255, 30])),
            ]
        );
    }

    // ---- properties ----

    use proptest::prelude::*;

    fn arb_kind() -> impl Strategy<Value = (PacketType, char)> {
        prop::sample::select(vec![
            (PacketType::Open, '0'),
            (PacketType::Close, '1'),
            (PacketType::Ping, '2'),
            (PacketType::Pong, '3'),
            (PacketType::Message, '4'),
            (PacketType::Upgrade, '5'),
            (PacketType::Noop, '6'),
        ])
    }

    /// A frame the codec round-trips, with the packet it decodes to. Text data never holds
    /// the record separator: it would split a polling payload (Socket.IO's JSON escapes it).
    fn arb_frame() -> impl Strategy<Value = (Frame, Packet)> {
        prop_oneof![
            (arb_kind(), "[^\x1e]*").prop_map(|((kind, digit), data)| (
                Frame::Text(format!("{digit}{data}").into()),
                Packet::Text(kind, data.into())
            )),
            prop::collection::vec(any::<u8>(), 0..48).prop_map(|data| {
                let data = Bytes::from(data);
                (Frame::Binary(data.clone()), Packet::Binary(data))
            }),
        ]
    }

    proptest! {
        /// A payload holds at least one packet: zero frames encode to an empty body, which
        /// is an empty packet, not an empty payload.
        #[test]
        fn payload_decodes_to_what_was_encoded(frames in prop::collection::vec(arb_frame(), 1..8)) {
            let (frames, packets): (Vec<Frame>, Vec<Packet>) = frames.into_iter().unzip();
            let mut body = Vec::new();
            encode_payload(&frames, &mut body);
            prop_assert_eq!(decode_payload(body.into()), Ok(packets));
        }

        /// A WebSocket text frame is one packet: any text, the separator included.
        #[test]
        fn text_frame_decodes_to_its_packet((kind, digit) in arb_kind(), data in any::<String>()) {
            let decoded = decode_text(format!("{digit}{data}").into());
            prop_assert_eq!(decoded, Ok(Packet::Text(kind, data.into())));
        }
    }
}
