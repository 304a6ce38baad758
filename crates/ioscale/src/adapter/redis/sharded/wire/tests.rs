//! Byte-identical checks against payloads captured from Node's sharded adapter 8.3.0
//! (`docs/wire/redis-sharded-adapter-8.3.md` §7), and the malformed messages that crash
//! Node (§10), which must decode to an error here.

use serde_json::json;

use super::*;

const A: &str = "5a85f2c6eb733fe1";
const B: &str = "df83a11ae6094f89";

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap_or(0))
        .collect()
}

fn rooms(names: &[&str]) -> Vec<Room> {
    names.iter().map(|name| Room::from(*name)).collect()
}

fn target(r: &[&str], e: &[&str]) -> Target {
    Target {
        rooms: rooms(r),
        except: rooms(e),
    }
}

fn payload(args: serde_json::Value, attachments: Vec<&[u8]>) -> Payload {
    let serde_json::Value::Array(args) = args else {
        panic!("args must be an array")
    };
    Payload {
        args,
        attachments: attachments
            .into_iter()
            .map(Bytes::copy_from_slice)
            .collect(),
    }
}

fn text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| panic!("not UTF-8: {e}"))
}

fn decoded(bytes: &[u8]) -> Envelope {
    match decode(bytes) {
        Ok(Some(envelope)) => envelope,
        other => panic!("expected a message, got {other:?}"),
    }
}

#[test]
fn io_emit_is_node_json_on_both_encoders() {
    let captured = r#"{"type":3,"data":{"packet":{"type":2,"data":["hello","world",1,2.5,-3,null,true,{"a":1},[1,"x"]]},"opts":{"rooms":[],"except":[],"flags":{}}},"uid":"5a85f2c6eb733fe1","nsp":"/"}"#;
    let args = json!(["hello", "world", 1, 2.5, -3, null, true, {"a": 1}, [1, "x"]]);
    let p = payload(args, vec![]);
    let fast = encode_broadcast_args(A, "/", &p.args, &[], &Target::default(), false);
    assert_eq!(text(fast), captured);
    let message = Message::Broadcast {
        payload: p.clone(),
        target: Target::default(),
        flags: Flags::default(),
        request_id: None,
    };
    assert_eq!(text(encode(A, "/", &message)), captured);
    let back = decoded(captured.as_bytes());
    assert_eq!(back.uid.as_deref(), Some(A));
    assert_eq!(back.nsp.as_deref(), Some("/"));
    assert_eq!(back.message, message);
}

#[test]
fn room_and_except_broadcasts_are_node_json() {
    let captured = r#"{"type":3,"data":{"packet":{"type":2,"data":["multi",1]},"opts":{"rooms":["room1","room2"],"except":["room3"],"flags":{}}},"uid":"5a85f2c6eb733fe1","nsp":"/"}"#;
    let p = payload(json!(["multi", 1]), vec![]);
    let t = target(&["room1", "room2"], &["room3"]);
    assert_eq!(
        text(encode_broadcast_args(A, "/", &p.args, &[], &t, false)),
        captured
    );
    let adm = r#"{"type":3,"data":{"packet":{"type":2,"data":["adm",1]},"opts":{"rooms":[],"except":[],"flags":{}}},"uid":"7cba88e8f79a1da8","nsp":"/admin"}"#;
    let p = payload(json!(["adm", 1]), vec![]);
    let fast = encode_broadcast_args(
        "7cba88e8f79a1da8",
        "/admin",
        &p.args,
        &[],
        &Target::default(),
        false,
    );
    assert_eq!(text(fast), adm);
}

#[test]
fn volatile_flag_travels_and_is_read() {
    let p = payload(json!(["vol", 1]), vec![]);
    let bytes = encode_broadcast_args(A, "/", &p.args, &[], &target(&["room1"], &[]), true);
    assert!(text(bytes.clone()).contains(r#""flags":{"volatile":true}"#));
    // Node adds `compress`; it is ignored.
    let node = r#"{"type":3,"data":{"packet":{"type":2,"data":["vol",1]},"opts":{"rooms":["room1"],"except":[],"flags":{"volatile":true,"compress":false}}},"uid":"5a85f2c6eb733fe1","nsp":"/"}"#;
    for bytes in [bytes, node.as_bytes().to_vec()] {
        let Message::Broadcast { flags, .. } = decoded(&bytes).message else {
            panic!("not a broadcast")
        };
        assert!(flags.volatile);
    }
}

#[test]
fn binary_broadcast_is_node_msgpack() {
    let captured = hex(
        "84a47479706503a46461746182a67061636b657482a47479706502a46461746192a462696e72c40109a46f70747383a5726f6f6d7391a5726f6f6d31a665786365707490a5666c61677380a3756964b035613835663263366562373333666531a36e7370a12f",
    );
    let p = payload(
        json!(["binr", {"_placeholder": true, "num": 0}]),
        vec![&[9]],
    );
    let t = target(&["room1"], &[]);
    assert_eq!(
        encode_broadcast_args(A, "/", &p.args, &p.attachments, &t, false),
        captured
    );
    let message = Message::Broadcast {
        payload: p,
        target: t,
        flags: Flags::default(),
        request_id: None,
    };
    assert_eq!(encode(A, "/", &message), captured);
    assert_eq!(decoded(&captured).message, message);
}

#[test]
fn hand_written_msgpack_broadcast_without_flags_decodes() {
    let bytes = hex(
        "84a3756964b066616b6566616b6566616b6566616b65a36e7370a12fa47479706503a46461746182a67061636b657482a47479706502a46461746192a766616b6562696ec4020708a46f70747382a5726f6f6d7390a665786365707490",
    );
    let envelope = decoded(&bytes);
    assert_eq!(envelope.uid.as_deref(), Some("fakefakefakefake"));
    let Message::Broadcast { payload, flags, .. } = envelope.message else {
        panic!("not a broadcast")
    };
    assert_eq!(payload.args[0], json!("fakebin"));
    assert_eq!(payload.attachments, vec![Bytes::from_static(&[7, 8])]);
    assert_eq!(flags, Flags::default());
}

#[test]
fn broadcast_with_ack_and_its_answers_are_node_bytes() {
    let request = r#"{"type":3,"data":{"packet":{"type":2,"data":["ackme","q"]},"requestId":"cb186cd8cf6221c0","opts":{"rooms":[],"except":[],"flags":{"timeout":1000}}},"uid":"5a85f2c6eb733fe1","nsp":"/"}"#;
    let message = Message::Broadcast {
        payload: payload(json!(["ackme", "q"]), vec![]),
        target: Target::default(),
        flags: Flags {
            volatile: false,
            timeout_ms: Some(1000),
        },
        request_id: Some("cb186cd8cf6221c0".into()),
    };
    assert_eq!(text(encode(A, "/", &message)), request);
    assert_eq!(decoded(request.as_bytes()).message, message);

    let binary = hex(
        "84a47479706503a46461746183a67061636b657482a47479706502a46461746192a661636b62696ec402deada9726571756573744964b035316237393063306232363063643936a46f70747383a5726f6f6d7391a5726f6f6d33a665786365707490a5666c61677381a774696d656f7574cd03e8a3756964b035613835663263366562373333666531a36e7370a12f",
    );
    let message = Message::Broadcast {
        payload: payload(
            json!(["ackbin", {"_placeholder": true, "num": 0}]),
            vec![&[0xde, 0xad]],
        ),
        target: target(&["room3"], &[]),
        flags: Flags {
            volatile: false,
            timeout_ms: Some(1000),
        },
        request_id: Some("51b790c0b260cd96".into()),
    };
    assert_eq!(encode(A, "/", &message), binary);

    let count = r#"{"type":11,"data":{"requestId":"cb186cd8cf6221c0","clientCount":2},"uid":"df83a11ae6094f89","nsp":"/"}"#;
    let message = Message::ClientCount {
        request_id: "cb186cd8cf6221c0".into(),
        count: 2,
    };
    assert_eq!(text(encode(B, "/", &message)), count);
    assert_eq!(decoded(count.as_bytes()).message, message);

    let ack = r#"{"type":12,"data":{"requestId":"cb186cd8cf6221c0","packet":"ack-from-b1"},"uid":"df83a11ae6094f89","nsp":"/"}"#;
    let message = Message::BroadcastAck {
        request_id: "cb186cd8cf6221c0".into(),
        payload: payload(json!(["ack-from-b1"]), vec![]),
    };
    assert_eq!(text(encode(B, "/", &message)), ack);
    assert_eq!(decoded(ack.as_bytes()).message, message);

    let binary_ack = hex(
        "84a4747970650ca46461746182a9726571756573744964a866616b6572657133a67061636b6574c402beefa3756964b035643035343038623834636463633762a36e7370a12f",
    );
    let message = Message::BroadcastAck {
        request_id: "fakereq3".into(),
        payload: payload(
            json!([{"_placeholder": true, "num": 0}]),
            vec![&[0xbe, 0xef]],
        ),
    };
    assert_eq!(encode("5d05408b84cdcc7b", "/", &message), binary_ack);
    assert_eq!(decoded(&binary_ack).message, message);
}

#[test]
fn fetch_request_and_responses_are_node_json() {
    let request = r#"{"type":7,"data":{"opts":{"rooms":["room3"],"except":["room1"],"flags":{}},"requestId":"6628053cec2051c2"},"uid":"5a85f2c6eb733fe1","nsp":"/"}"#;
    let message = Message::Fetch {
        target: target(&["room3"], &["room1"]),
        request_id: "6628053cec2051c2".into(),
    };
    assert_eq!(text(encode(A, "/", &message)), request);
    assert_eq!(decoded(request.as_bytes()).message, message);

    let empty = r#"{"type":8,"data":{"requestId":"a046e696bdd9eec0","sockets":[]},"uid":"4310a0e29e97a05c","nsp":"/"}"#;
    let message = Message::FetchResponse {
        request_id: "a046e696bdd9eec0".into(),
        sockets: vec![],
    };
    assert_eq!(text(encode("4310a0e29e97a05c", "/", &message)), empty);

    let full = r#"{"type":8,"data":{"requestId":"6628053cec2051c2","sockets":[{"id":"tY98fPw-8BkCSItmAAAB","handshake":{"headers":{"host":"127.0.0.1:3202"},"time":"Sat Nov 28 2026 01:57:30 GMT+0000 (Coordinated Universal Time)","address":"::ffff:127.0.0.1","xdomain":false,"secure":false,"issued":1795831050146,"url":"/socket.io/?EIO=4&transport=websocket","query":{"EIO":"4","transport":"websocket"},"auth":{"token":"t-b2"}},"rooms":["tY98fPw-8BkCSItmAAAB","room3"],"data":{"name":"b2"}}]},"uid":"df83a11ae6094f89","nsp":"/"}"#;
    let Message::FetchResponse { sockets, .. } = decoded(full.as_bytes()).message else {
        panic!("not a fetch response")
    };
    assert_eq!(sockets.len(), 1);
    assert_eq!(sockets[0].id, "tY98fPw-8BkCSItmAAAB");
    assert_eq!(sockets[0].rooms, vec!["tY98fPw-8BkCSItmAAAB", "room3"]);
    assert_eq!(sockets[0].data, json!({"name": "b2"}));
    assert_eq!(sockets[0].handshake["issued"], json!(1795831050146u64));
    // Our own answer carries the same object and reads back identically.
    let message = Message::FetchResponse {
        request_id: "6628053cec2051c2".into(),
        sockets,
    };
    assert_eq!(text(encode(B, "/", &message)), full);
}

#[test]
fn server_side_emits_are_node_bytes() {
    let plain = r#"{"type":9,"data":{"packet":["sse",1,{"a":"b"},"x"]},"uid":"5a85f2c6eb733fe1","nsp":"/"}"#;
    let message = Message::ServerSideEmit {
        request_id: None,
        payload: payload(json!(["sse", 1, {"a": "b"}, "x"]), vec![]),
    };
    assert_eq!(text(encode(A, "/", &message)), plain);
    assert_eq!(decoded(plain.as_bytes()).message, message);

    let binary = hex(
        "84a47479706509a46461746181a67061636b657492a3737365c4020102a3756964b035613835663263366562373333666531a36e7370a12f",
    );
    let message = Message::ServerSideEmit {
        request_id: None,
        payload: payload(
            json!(["sse", {"_placeholder": true, "num": 0}]),
            vec![&[1, 2]],
        ),
    };
    assert_eq!(encode(A, "/", &message), binary);
    assert_eq!(decoded(&binary).message, message);

    let with_ack = r#"{"type":9,"data":{"requestId":"5218a3fe9f417774","packet":["ssea",42]},"uid":"5a85f2c6eb733fe1","nsp":"/"}"#;
    let message = Message::ServerSideEmit {
        request_id: Some("5218a3fe9f417774".into()),
        payload: payload(json!(["ssea", 42]), vec![]),
    };
    assert_eq!(text(encode(A, "/", &message)), with_ack);

    let answer = r#"{"type":10,"data":{"requestId":"5218a3fe9f417774","packet":"pong-B"},"uid":"df83a11ae6094f89","nsp":"/"}"#;
    let message = Message::ServerSideEmitResponse {
        request_id: "5218a3fe9f417774".into(),
        payload: payload(json!(["pong-B"]), vec![]),
    };
    assert_eq!(text(encode(B, "/", &message)), answer);
    assert_eq!(decoded(answer.as_bytes()).message, message);
    // An ack without arguments omits `packet`, as JSON.stringify drops undefined.
    let message = Message::ServerSideEmitResponse {
        request_id: "r".into(),
        payload: Payload::empty(),
    };
    assert_eq!(
        text(encode(B, "/", &message)),
        r#"{"type":10,"data":{"requestId":"r"},"uid":"df83a11ae6094f89","nsp":"/"}"#
    );
}

#[test]
fn join_leave_and_disconnect_are_node_json() {
    let cases = [
        (
            r#"{"type":4,"data":{"opts":{"rooms":["room1"],"except":[],"flags":{}},"rooms":["newroom","nr2"]},"uid":"5a85f2c6eb733fe1","nsp":"/"}"#,
            Message::Join {
                target: target(&["room1"], &[]),
                rooms: rooms(&["newroom", "nr2"]),
            },
        ),
        (
            r#"{"type":5,"data":{"opts":{"rooms":[],"except":["room1"],"flags":{}},"rooms":["room2"]},"uid":"5a85f2c6eb733fe1","nsp":"/"}"#,
            Message::Leave {
                target: target(&[], &["room1"]),
                rooms: rooms(&["room2"]),
            },
        ),
        (
            r#"{"type":6,"data":{"opts":{"rooms":["room3"],"except":[],"flags":{}},"close":true},"uid":"5a85f2c6eb733fe1","nsp":"/"}"#,
            Message::Disconnect {
                target: target(&["room3"], &[]),
                close: true,
            },
        ),
    ];
    for (captured, message) in cases {
        assert_eq!(text(encode(A, "/", &message)), captured);
        assert_eq!(decoded(captured.as_bytes()).message, message);
    }
}

#[test]
fn messages_that_crash_node_are_errors_here() {
    let bad: [&[u8]; 11] = [
        br#"{"type":3,"uid":"x","nsp":"/"}"#,
        br#"{"type":3,"data":{"packet":{"type":2,"data":["e"]}},"uid":"x","nsp":"/"}"#,
        br#"{"type":3,"data":{"opts":{"rooms":[]}},"uid":"x","nsp":"/"}"#,
        br#"{"type":3,"data":{"packet":{"type":2},"opts":{}},"uid":"x","nsp":"/"}"#,
        br#"{"type":5,"data":{"opts":{},"rooms":"r"},"uid":"x","nsp":"/"}"#,
        br#"{"type":7,"data":{"requestId":"r"},"uid":"x","nsp":"/"}"#,
        br#"{"type":9,"data":{"requestId":"r"},"uid":"x","nsp":"/"}"#,
        br#"{"type":8,"data":{"requestId":"r"},"uid":"x","nsp":"/"}"#,
        br#"{"type":8,"uid":"x","nsp":"/"}"#,
        &[0xc0],
        br#"[1,2]"#,
    ];
    for bytes in bad {
        assert!(
            decode(bytes).is_err(),
            "{:?} decoded",
            String::from_utf8_lossy(bytes)
        );
    }
    for bytes in [&b"null"[..], b"{not json", &[0xc1], &[0x84, 0xa4]] {
        assert!(decode(bytes).is_err());
    }
}

#[test]
fn heartbeats_close_and_unknown_types_are_ignored() {
    for code in [1, 2, 13, 99, 100_000] {
        let bytes = format!(r#"{{"type":{code},"uid":"x","nsp":"/"}}"#);
        assert_eq!(decode(bytes.as_bytes()), Ok(None), "type {code}");
    }
}

#[test]
fn channels_parse_into_namespace_and_tail() {
    let channels = ShardedChannels::new("socket.io", "/admin");
    assert_eq!(channels.main, "socket.io#/admin#");
    assert_eq!(channels.sub("room1"), "socket.io#/admin#room1#");
    assert_eq!(
        parse_channel("socket.io", "socket.io#/#"),
        Some(("/", None))
    );
    assert_eq!(
        parse_channel("socket.io", "socket.io#/admin#5a85f2c6eb733fe1#"),
        Some(("/admin", Some("5a85f2c6eb733fe1")))
    );
    assert_eq!(
        parse_channel("socket.io", "socket.io#/#a#b#"),
        Some(("/", Some("a#b")))
    );
    assert_eq!(parse_channel("socket.io", "socket.io-request#/#"), None);
    assert_eq!(parse_channel("socket.io", "other#/#"), None);
    assert_eq!(parse_channel("socket.io", "socket.io#/#room"), None);
}

#[test]
fn socket_id_detection_counts_utf16_units_like_javascript() {
    assert!(looks_like_socket_id("tY98fPw-8BkCSItmAAAB"));
    assert!(!looks_like_socket_id("room1"));
    assert!(!looks_like_socket_id("tY98fPw-8BkCSItmAAAB1"));
    // 10 astral characters are 20 UTF-16 units in JavaScript.
    assert!(looks_like_socket_id(&"😀".repeat(10)));
    assert!(!looks_like_socket_id(&"é".repeat(19)));
}
