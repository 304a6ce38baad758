//! Feeds arbitrary bytes to the Engine.IO decoders: as an HTTP long-polling payload and,
//! when valid UTF-8, as one WebSocket text frame. Decoded payloads must re-encode to
//! records that decode to the same packets.

#![no_main]

use bytes::Bytes;
use ioscale::protocol::engineio::{
    Frame, Packet, PacketType, decode_payload, decode_text, encode_payload,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    if let Ok(text) = std::str::from_utf8(input) {
        let _ = decode_text(text.to_owned().into());
    }
    let Ok(packets) = decode_payload(Bytes::copy_from_slice(input)) else {
        return;
    };
    let frames: Vec<Frame> = packets
        .iter()
        .map(|packet| match packet {
            Packet::Binary(data) => Frame::Binary(data.clone()),
            Packet::Text(kind, data) => {
                Frame::Text(format!("{}{}", digit(*kind), data.as_str()).into())
            }
        })
        .collect();
    let mut encoded = Vec::new();
    encode_payload(&frames, &mut encoded);
    let again = decode_payload(encoded.into());
    assert_eq!(again.as_ref(), Ok(&packets));
});

fn digit(kind: PacketType) -> char {
    match kind {
        PacketType::Open => '0',
        PacketType::Close => '1',
        PacketType::Ping => '2',
        PacketType::Pong => '3',
        PacketType::Message => '4',
        PacketType::Upgrade => '5',
        PacketType::Noop => '6',
    }
}
