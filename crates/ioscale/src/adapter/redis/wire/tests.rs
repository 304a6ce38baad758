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

// ---- properties ----
//
// The domain the codecs round-trip: JSON without NaN or infinities (JSON has none; every
// finite float is exact, serde_json parses with `float_roundtrip`), no object of the
// placeholder shape except the placeholders of the payload's attachments, numbered in the
// order the wire lists binaries (depth first, keys in order). Per message: acks carry at
// most one argument, a sockets answer at least one socket (an empty one reads as an empty
// list of ids), socket handshakes and data hold no binary (Node sends those as JSON).

use proptest::prelude::*;

fn placeholder_marker() -> Value {
    json!({"_placeholder": true, "num": 0})
}

fn arb_json(with_binary: bool) -> BoxedStrategy<Value> {
    let mut leaves = vec![
        Just(Value::Null).boxed(),
        any::<bool>().prop_map(Value::Bool).boxed(),
        any::<i64>().prop_map(Value::from).boxed(),
        any::<u64>().prop_map(Value::from).boxed(),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from)
            .boxed(),
        any::<String>().prop_map(Value::String).boxed(),
    ];
    if with_binary {
        leaves.push(Just(placeholder_marker()).boxed());
    }
    let key = any::<String>().prop_filter("placeholder key", |k| k != "_placeholder");
    proptest::strategy::Union::new(leaves)
        .prop_recursive(3, 24, 5, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::btree_map(key.clone(), inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
        .boxed()
}

/// Numbers the placeholder markers in wire order, counting them in `next`.
fn number_placeholders(value: &mut Value, next: &mut usize) {
    if *value == placeholder_marker() {
        *value = json!({"_placeholder": true, "num": *next});
        *next += 1;
        return;
    }
    match value {
        Value::Object(map) => map
            .values_mut()
            .for_each(|item| number_placeholders(item, next)),
        Value::Array(items) => items
            .iter_mut()
            .for_each(|item| number_placeholders(item, next)),
        _ => {}
    }
}

/// Up to `max_args` arguments, binary anywhere in them.
fn arb_payload(max_args: usize) -> impl Strategy<Value = Payload> {
    prop::collection::vec(arb_json(true), 0..=max_args).prop_flat_map(|mut args| {
        let mut count = 0;
        for arg in &mut args {
            number_placeholders(arg, &mut count);
        }
        let blob = prop::collection::vec(any::<u8>(), 0..16).prop_map(Bytes::from);
        prop::collection::vec(blob, count).prop_map(move |attachments| Payload {
            args: args.clone(),
            attachments,
        })
    })
}

fn arb_rooms() -> impl Strategy<Value = Vec<Room>> {
    prop::collection::vec(
        any::<String>().prop_map(|room| Room::from(room.as_str())),
        0..4,
    )
}

fn arb_target() -> impl Strategy<Value = Target> {
    (arb_rooms(), arb_rooms()).prop_map(|(rooms, except)| Target { rooms, except })
}

fn arb_request() -> impl Strategy<Value = Request> {
    let text = any::<String>;
    prop_oneof![
        (text(), arb_rooms())
            .prop_map(|(request_id, rooms)| Request::Sockets { request_id, rooms }),
        (text(), text()).prop_map(|(uid, request_id)| Request::AllRooms { uid, request_id }),
        (arb_target(), arb_rooms()).prop_map(|(target, rooms)| Request::Join { target, rooms }),
        (arb_target(), arb_rooms()).prop_map(|(target, rooms)| Request::Leave { target, rooms }),
        (arb_target(), any::<bool>())
            .prop_map(|(target, close)| Request::Disconnect { target, close }),
        (text(), text(), arb_target()).prop_map(|(uid, request_id, target)| Request::Fetch {
            uid,
            request_id,
            target
        }),
        (text(), proptest::option::of(text()), arb_payload(4)).prop_map(
            |(uid, request_id, payload)| Request::ServerSideEmit {
                uid,
                request_id,
                payload
            }
        ),
        (
            (text(), text(), text()),
            arb_payload(4),
            arb_target(),
            proptest::option::of(any::<u64>())
        )
            .prop_map(|((uid, request_id, nsp), payload, target, timeout_ms)| {
                Request::BroadcastWithAck {
                    uid,
                    request_id,
                    nsp,
                    payload,
                    target,
                    timeout_ms,
                }
            }),
    ]
}

/// The uid a request is sent with: its own when it names one (the decoder reads it back).
fn sender(request: &Request) -> &str {
    match request {
        Request::AllRooms { uid, .. }
        | Request::Fetch { uid, .. }
        | Request::ServerSideEmit { uid, .. }
        | Request::BroadcastWithAck { uid, .. } => uid,
        _ => "node-uid",
    }
}

fn arb_socket() -> impl Strategy<Value = SocketInfo> {
    (
        any::<String>(),
        arb_json(false),
        prop::collection::vec(any::<String>(), 0..4),
        arb_json(false),
    )
        .prop_map(|(id, handshake, rooms, data)| SocketInfo {
            id,
            handshake,
            rooms,
            data,
        })
}

fn arb_response() -> impl Strategy<Value = Response> {
    let text = any::<String>;
    prop_oneof![
        (text(), prop::collection::vec(arb_socket(), 1..3)).prop_map(|(request_id, sockets)| {
            Response::Sockets {
                request_id,
                sockets,
            }
        }),
        (text(), prop::collection::vec(text(), 0..4))
            .prop_map(|(request_id, ids)| Response::SocketIds { request_id, ids }),
        (text(), arb_rooms()).prop_map(|(request_id, rooms)| Response::Rooms { request_id, rooms }),
        (text(), arb_payload(1)).prop_map(|(request_id, payload)| Response::ServerSideAck {
            request_id,
            payload
        }),
        (text(), any::<usize>())
            .prop_map(|(request_id, count)| Response::ClientCount { request_id, count }),
        (text(), arb_payload(1)).prop_map(|(request_id, payload)| Response::BroadcastAck {
            request_id,
            payload
        }),
    ]
}

proptest! {
    #[test]
    fn broadcasts_decode_to_what_was_encoded(
        (uid, nsp) in (any::<String>(), any::<String>()),
        payload in arb_payload(4),
        target in arb_target(),
        volatile in any::<bool>(),
    ) {
        let bytes = encode_broadcast(&uid, &nsp, &payload, &target, volatile);
        let decoded = decode_broadcast(&bytes);
        prop_assert_eq!(decoded, Ok(BroadcastMessage { uid, nsp, payload, target, volatile }));
    }

    #[test]
    fn requests_decode_to_what_was_encoded(request in arb_request()) {
        let bytes = encode_request(sender(&request), &request);
        prop_assert_eq!(decode_request(&bytes), Ok(Some(request)));
    }

    #[test]
    fn responses_decode_to_what_was_encoded(response in arb_response()) {
        let bytes = encode_response(&response);
        prop_assert_eq!(decode_response(&bytes), Ok(response));
    }
}
