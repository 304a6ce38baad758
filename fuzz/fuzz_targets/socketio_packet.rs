//! Feeds arbitrary text/binary frame sequences to the Socket.IO packet decoder.
//!
//! Input layout: the first byte picks `max_attachments` (0..=15); the rest is split on 0xFF
//! into frames. A frame starting with 0x00 is a binary frame (the bytes after the tag),
//! any other frame is a text frame (lossily decoded as UTF-8).
//! Every decoded packet must re-encode into frames that decode to the same header.

#![no_main]

use bytes::Bytes;
use ioscale::protocol::socketio::{Decoder, Packet, encode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Some((&max, frames)) = input.split_first() else {
        return;
    };
    let max = usize::from(max % 16);
    let mut decoder = Decoder::new(max);
    for frame in frames.split(|&b| b == 0xFF) {
        let result = match frame.split_first() {
            Some((0, binary)) => decoder.decode_binary(Bytes::copy_from_slice(binary)),
            _ => decoder.decode_text(&String::from_utf8_lossy(frame)),
        };
        if let Ok(Some(packet)) = result {
            check_round_trip(&packet, max);
        }
    }
});

fn check_round_trip(packet: &Packet, max: usize) {
    let encoded = encode(packet);
    let mut decoder = Decoder::new(max);
    let mut done = decoder
        .decode_text(&encoded.text)
        .expect("an encoded packet decodes");
    for frame in encoded.attachments {
        assert!(done.is_none(), "packet completed before its attachments");
        done = decoder.decode_binary(frame).expect("attachment accepted");
    }
    let again = done.expect("packet complete after its attachments");
    // JSON data is not compared: serde_json's default float parsing is not always exact.
    assert_eq!(
        (again.kind, &again.nsp, again.id, &again.attachments),
        (packet.kind, &packet.nsp, packet.id, &packet.attachments)
    );
    assert_eq!(again.data.is_some(), packet.data.is_some());
}
