//! Byte-level checks against messages captured from Node's adapter 8.3.0 and emitter 5.1.0.

use super::*;
use crate::adapter::Room;
use serde_json::json;

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

fn rooms(names: &[&str]) -> Vec<Room> {
    names.iter().map(|n| Room::from(*n)).collect()
}

fn target(to: &[&str], except: &[&str]) -> Target {
    Target {
        rooms: rooms(to),
        except: rooms(except),
    }
}

#[test]
fn room_broadcast_is_byte_identical_to_node() {
    // io.to('room1').emit('r1','x') from a node whose uid is GOurat.
    let node = hex(
        "93a6474f7572617483a47479706502a46461746192a27231a178a36e7370a12f83a5726f6f6d7391a5726f6f6d31a665786365707490a5666c61677380",
    );
    let payload = Payload::args(vec![json!("r1"), json!("x")]);
    let ours = encode_broadcast("GOurat", "/", &payload, &target(&["room1"], &[]), false);
    assert_eq!(ours, node);
    let decoded = decode_broadcast(&node).unwrap();
    assert_eq!(decoded.uid, "GOurat");
    assert_eq!(decoded.nsp, "/");
    assert_eq!(decoded.payload, payload);
    assert_eq!(decoded.target.rooms, rooms(&["room1"]));
    assert!(!decoded.volatile);
}

#[test]
fn binary_broadcast_round_trips_through_placeholders() {
    // io.emit('bin', Buffer[1,2,3], {nested: Buffer[4,5]}, Uint8Array[6,7].buffer)
    let node = hex(
        "93a6474f7572617483a47479706502a46461746194a362696ec40301020381a66e6573746564c4020405c4020607a36e7370a12f83a5726f6f6d7390a665786365707490a5666c61677380",
    );
    let decoded = decode_broadcast(&node).unwrap();
    assert_eq!(
        decoded.payload.args,
        vec![
            json!("bin"),
            json!({"_placeholder": true, "num": 0}),
            json!({"nested": {"_placeholder": true, "num": 1}}),
            json!({"_placeholder": true, "num": 2}),
        ]
    );
    assert_eq!(
        decoded.payload.attachments,
        vec![
            Bytes::from_static(&[1, 2, 3]),
            Bytes::from_static(&[4, 5]),
            Bytes::from_static(&[6, 7])
        ]
    );
    let ours = encode_broadcast("GOurat", "/", &decoded.payload, &Target::default(), false);
    assert_eq!(ours, node);
}

#[test]
fn volatile_flag_and_multi_room_targets() {
    // io.to(['room1','room2']).except('room3').emit('multi',1)
    let node = hex(
        "93a6474f7572617483a47479706502a46461746192a56d756c746901a36e7370a12f83a5726f6f6d7392a5726f6f6d31a5726f6f6d32a665786365707491a5726f6f6d33a5666c61677380",
    );
    let decoded = decode_broadcast(&node).unwrap();
    assert_eq!(decoded.target.rooms, rooms(&["room1", "room2"]));
    assert_eq!(decoded.target.except, rooms(&["room3"]));
    // io.volatile.emit('vol',1)
    let node = hex(
        "93a6474f7572617483a47479706502a46461746192a3766f6c01a36e7370a12f83a5726f6f6d7390a665786365707490a5666c61677381a8766f6c6174696c65c3",
    );
    let decoded = decode_broadcast(&node).unwrap();
    assert!(decoded.volatile);
    let ours = encode_broadcast("GOurat", "/", &decoded.payload, &Target::default(), true);
    assert_eq!(ours, node);
}

#[test]
fn emitter_messages_decode_whatever_the_key_order() {
    // emitter.to(['room1','room3']).except('room2').emit('e3'): opts order rooms, flags, except.
    let emitter = hex(
        "93a7656d697474657283a47479706502a46461746191a26533a36e7370a12f83a5726f6f6d7392a5726f6f6d31a5726f6f6d33a5666c61677380a665786365707491a5726f6f6d32",
    );
    let decoded = decode_broadcast(&emitter).unwrap();
    assert_eq!(decoded.uid, "emitter");
    assert_eq!(decoded.payload.args, vec![json!("e3")]);
    assert_eq!(decoded.target, target(&["room1", "room3"], &["room2"]));
}

#[test]
fn dates_become_iso_strings_and_undefined_becomes_null() {
    // [nil, {d: Date(1700000000123)}, Date(1700000000000)]
    let mut args = Vec::new();
    args.extend(hex("93c081a164d7ff1d5353006553f100d6ff6553f100"));
    let value = decode_msgpack(&args).unwrap();
    let Mp::Array(items) = value else { panic!() };
    let payload = msgpack_to_payload(items);
    assert_eq!(
        payload.args,
        vec![
            Value::Null,
            json!({"d": "2023-11-14T22:13:20.123Z"}),
            json!("2023-11-14T22:13:20.000Z")
        ]
    );
}

#[test]
fn broadcast_with_ack_request_and_ack_response_match_node() {
    let request = hex(
        "85a3756964a6474f75726174a9726571756573744964a64f3143764963a47479706507a67061636b657483a47479706502a46461746192a561636b6d65a171a36e7370a12fa46f70747383a5726f6f6d7390a665786365707490a5666c61677381a774696d656f7574cd03e8",
    );
    let decoded = decode_request(&request).unwrap().unwrap();
    assert_eq!(
        decoded,
        Request::BroadcastWithAck {
            uid: "GOurat".into(),
            request_id: "O1CvIc".into(),
            nsp: "/".into(),
            payload: Payload::args(vec![json!("ackme"), json!("q")]),
            target: Target::default(),
            timeout_ms: Some(1000),
        }
    );
    let ack = hex(
        "83a47479706509a9726571756573744964a64f3143764963a67061636b6574ab61636b2d66726f6d2d6231",
    );
    let response = Response::BroadcastAck {
        request_id: "O1CvIc".into(),
        payload: Payload::args(vec![json!("ack-from-b1")]),
    };
    assert_eq!(decode_response(&ack).unwrap(), response);
    assert_eq!(encode_response(&response), ack);
    // cb() without arguments: no `packet` key.
    let empty = hex("82a47479706509a9726571756573744964a6547a584b6136");
    assert_eq!(
        decode_response(&empty).unwrap(),
        Response::BroadcastAck {
            request_id: "TzXKa6".into(),
            payload: Payload::empty()
        }
    );
}

#[test]
fn json_requests_from_node_and_emitter() {
    let fetch = br#"{"uid":"GOurat","requestId":"0GBD1u","type":5,"opts":{"rooms":["room1"],"except":["room2"]}}"#;
    assert_eq!(
        decode_request(fetch).unwrap(),
        Some(Request::Fetch {
            uid: "GOurat".into(),
            request_id: "0GBD1u".into(),
            target: target(&["room1"], &["room2"])
        })
    );
    let join = br#"{"type":2,"opts":{"rooms":["room3"],"except":[]},"rooms":["er"]}"#;
    assert_eq!(
        decode_request(join).unwrap(),
        Some(Request::Join {
            target: target(&["room3"], &[]),
            rooms: rooms(&["er"])
        })
    );
    let disconnect =
        br#"{"uid":"GOurat","type":4,"opts":{"rooms":["room1"],"except":[]},"close":true}"#;
    assert_eq!(
        decode_request(disconnect).unwrap(),
        Some(Request::Disconnect {
            target: target(&["room1"], &[]),
            close: true
        })
    );
    let sse = br#"{"uid":"emitter","type":6,"data":["sse","from-emitter"]}"#;
    assert_eq!(
        decode_request(sse).unwrap(),
        Some(Request::ServerSideEmit {
            uid: "emitter".into(),
            request_id: None,
            payload: Payload::args(vec![json!("sse"), json!("from-emitter")])
        })
    );
    assert_eq!(decode_request(br#"{"type":42}"#).unwrap(), None);
    assert_eq!(
        decode_request(br#"{"type":256,"requestId":"r"}"#).unwrap(),
        None
    );
}

#[test]
fn requests_round_trip() {
    let cases = vec![
        Request::AllRooms {
            uid: "u1".into(),
            request_id: "r1".into(),
        },
        Request::Join {
            target: target(&["a"], &["b"]),
            rooms: rooms(&["x", "y"]),
        },
        Request::Leave {
            target: target(&[], &["b"]),
            rooms: rooms(&["x"]),
        },
        Request::Disconnect {
            target: target(&["a"], &[]),
            close: false,
        },
        Request::Fetch {
            uid: "u1".into(),
            request_id: "r2".into(),
            target: target(&["a"], &[]),
        },
        Request::ServerSideEmit {
            uid: "u1".into(),
            request_id: Some("r3".into()),
            payload: Payload::args(vec![json!("ev"), json!({"k": [1, 2.5, null]})]),
        },
        Request::ServerSideEmit {
            uid: "u1".into(),
            request_id: None,
            payload: Payload::from(Bytes::from_static(b"\x00\x01")),
        },
        Request::BroadcastWithAck {
            uid: "u1".into(),
            request_id: "r4".into(),
            nsp: "/admin".into(),
            payload: Payload::args(vec![json!("ev")]),
            target: target(&["r"], &[]),
            timeout_ms: Some(2500),
        },
    ];
    for request in cases {
        let bytes = encode_request("u1", &request);
        assert_eq!(decode_request(&bytes).unwrap(), Some(request));
    }
}

#[test]
fn responses_round_trip() {
    let socket = SocketInfo {
        id: "abc".into(),
        handshake: json!({"auth": {"token": "t"}, "issued": 1}),
        rooms: vec!["abc".into(), "room1".into()],
        data: json!({"name": "b1"}),
    };
    let cases = vec![
        Response::Sockets {
            request_id: "r".into(),
            sockets: vec![socket],
        },
        Response::Rooms {
            request_id: "r".into(),
            rooms: rooms(&["a", "b"]),
        },
        Response::ClientCount {
            request_id: "r".into(),
            count: 3,
        },
        Response::ServerSideAck {
            request_id: "r".into(),
            payload: Payload::args(vec![json!("pong")]),
        },
        Response::BroadcastAck {
            request_id: "r".into(),
            payload: Payload::from(Bytes::from_static(b"\xde\xad")),
        },
    ];
    for response in cases {
        let bytes = encode_response(&response);
        assert_eq!(decode_response(&bytes).unwrap(), response);
    }
}

#[test]
fn garbage_is_an_error_never_a_panic() {
    for bytes in [
        &b""[..],
        b"{",
        b"\x93",
        b"\x92\xa1a\x80",
        b"\xc1",
        b"{\"type\":\"x\"}",
        b"\x93\xa1u\x80\x80",
        b"\x91\x91\x91\x91",
    ] {
        let _ = decode_broadcast(bytes);
        let _ = decode_request(bytes);
        let _ = decode_response(bytes);
    }
    assert!(decode_broadcast(b"\x92\xa1a\x80").is_err());
    assert!(decode_broadcast(b"\x93\xa1u\x80\x80").is_err());
    let deep = [0x91u8; 10_000];
    assert!(decode_broadcast(&deep).is_err());
}

#[test]
fn channels_parse() {
    let channels = Channels::new("socket.io", "/admin");
    assert_eq!(channels.broadcast, "socket.io#/admin#");
    assert_eq!(channels.room("x"), "socket.io#/admin#x#");
    assert_eq!(channels.response_for("u1"), "socket.io-response#/admin#u1#");
    assert_eq!(
        parse_channel("socket.io", "socket.io#/admin#x#"),
        Some(ChannelKind::Broadcast {
            nsp: "/admin",
            room: Some("x")
        })
    );
    assert_eq!(
        parse_channel("socket.io", "socket.io#/#"),
        Some(ChannelKind::Broadcast {
            nsp: "/",
            room: None
        })
    );
    assert_eq!(
        parse_channel("socket.io", "socket.io-request#/#"),
        Some(ChannelKind::Request { nsp: "/" })
    );
    assert_eq!(
        parse_channel("socket.io", "socket.io-response#/#u1#"),
        Some(ChannelKind::Response { nsp: "/" })
    );
    assert_eq!(parse_channel("socket.io", "other#/#"), None);
}
