//! Socket.IO packets as Engine.IO frames: what every transport and every adapter queues.

use super::engineio::Frame;
use super::socketio::{Packet, encode_text_into};

/// Encodes a packet once into Engine.IO frames: the `4`-prefixed text, then attachments.
/// The frames share their buffers when cloned, so one encoding serves every recipient.
pub fn encode_frames(packet: &Packet) -> Vec<Frame> {
    let mut text = String::with_capacity(64);
    text.push('4');
    encode_text_into(packet, &mut text);
    let mut frames = Vec::with_capacity(1 + packet.attachments.len());
    frames.push(Frame::Text(text.into()));
    frames.extend(packet.attachments.iter().cloned().map(Frame::Binary));
    frames
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use serde_json::json;

    use super::*;

    #[test]
    fn a_packet_is_one_text_frame_then_its_attachments() {
        let mut packet = Packet::event("/chat", json!(["m", {"_placeholder": true, "num": 0}]));
        packet.attachments = vec![Bytes::from_static(&[1, 2])];
        assert_eq!(
            encode_frames(&packet),
            vec![
                Frame::Text(r#"451-/chat,["m",{"_placeholder":true,"num":0}]"#.into()),
                Frame::Binary(Bytes::from_static(&[1, 2])),
            ]
        );
        assert_eq!(
            encode_frames(&Packet::event("/", json!(["hi"]))),
            vec![Frame::Text(r#"42["hi"]"#.into())]
        );
    }
}
