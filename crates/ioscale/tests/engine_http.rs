//! Engine.IO over HTTP long-polling, asserted on raw bytes.

mod common;

use std::time::Duration;

use common::{http, open_polling, start};
use ioscale::Io;

#[tokio::test]
async fn handshake_has_the_v4_fields_and_defaults() {
    let server = start(Io::new(common::config())).await;
    let response = http(
        server.addr,
        "GET",
        "/socket.io/?EIO=4&transport=polling",
        &[],
        b"",
    )
    .await;
    assert_eq!(response.status, 200);
    assert_eq!(
        response.header("content-type"),
        Some("text/plain; charset=UTF-8")
    );
    let text = response.text();
    assert!(text.starts_with('0'), "{text}");
    let open: serde_json::Value = serde_json::from_str(&text[1..]).unwrap();
    let sid = open["sid"].as_str().unwrap();
    assert_eq!(sid.len(), 20);
    assert!(
        sid.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    );
    assert_eq!(open["upgrades"], serde_json::json!(["websocket"]));
    assert_eq!(open["pingInterval"], 25000);
    assert_eq!(open["pingTimeout"], 20000);
    assert_eq!(open["maxPayload"], 1000000);
}

#[tokio::test]
async fn errors_carry_engine_io_codes() {
    let server = start(Io::new(common::config())).await;
    let cases = [
        (
            "GET",
            "/socket.io/?EIO=4&transport=carrier",
            400,
            r#"{"code":0,"message":"Transport unknown"}"#,
        ),
        (
            "GET",
            "/socket.io/?EIO=4&transport=polling&sid=AAAAAAAAAAAAAAAAAAAA",
            400,
            r#"{"code":1,"message":"Session ID unknown"}"#,
        ),
        (
            "POST",
            "/socket.io/?EIO=4&transport=polling",
            400,
            r#"{"code":2,"message":"Bad handshake method"}"#,
        ),
        (
            "GET",
            "/socket.io/?EIO=4&transport=websocket",
            400,
            r#"{"code":3,"message":"Bad request"}"#,
        ),
        (
            "GET",
            "/socket.io/?EIO=3&transport=polling",
            400,
            r#"{"code":5,"message":"Unsupported protocol version"}"#,
        ),
        (
            "GET",
            "/socket.io/?transport=polling",
            400,
            r#"{"code":5,"message":"Unsupported protocol version"}"#,
        ),
    ];
    for (method, target, status, body) in cases {
        let response = http(server.addr, method, target, &[], b"").await;
        assert_eq!(response.status, status, "{method} {target}");
        assert_eq!(response.text(), body, "{method} {target}");
        assert_eq!(response.header("content-type"), Some("application/json"));
    }
}

#[tokio::test]
async fn payloads_split_and_join_on_the_record_separator() {
    let server = start(Io::new(common::config())).await;
    let sid = open_polling(server.addr).await;
    let target = format!("/socket.io/?EIO=4&transport=polling&sid={sid}");
    let posted = http(server.addr, "POST", &target, &[], b"40\x1e40/missing,").await;
    assert_eq!((posted.status, posted.text()), (200, "ok"));
    let polled = http(server.addr, "GET", &target, &[], b"").await;
    let (connected, refused) = polled.text().split_once('\x1e').unwrap();
    assert!(connected.starts_with("40{\"sid\":"), "{connected}");
    assert_eq!(refused, r#"44/missing,{"message":"Invalid namespace"}"#);
}

#[tokio::test]
async fn a_ping_from_the_client_closes_the_session() {
    // Engine.IO v4 clients never ping; the reference server closes the session for it.
    let server = start(Io::new(common::config())).await;
    let sid = open_polling(server.addr).await;
    let target = format!("/socket.io/?EIO=4&transport=polling&sid={sid}");
    let posted = http(server.addr, "POST", &target, &[], b"2").await;
    assert_eq!((posted.status, posted.text()), (200, "ok"));
    let polled = http(server.addr, "GET", &target, &[], b"").await;
    assert_eq!(
        polled.text(),
        r#"{"code":1,"message":"Session ID unknown"}"#
    );
}

#[tokio::test]
async fn oversized_polling_body_gets_413() {
    let mut config = common::config();
    config.engine.max_payload = 100;
    let server = start(Io::new(config)).await;
    let sid = open_polling(server.addr).await;
    let target = format!("/socket.io/?EIO=4&transport=polling&sid={sid}");
    let response = http(server.addr, "POST", &target, &[], &[b'4'; 101]).await;
    assert_eq!(response.status, 413);
}

#[tokio::test]
async fn overlapping_polls_close_the_session() {
    let server = start(Io::new(common::config())).await;
    let sid = open_polling(server.addr).await;
    let target = format!("/socket.io/?EIO=4&transport=polling&sid={sid}");
    let addr = server.addr;
    let first = tokio::spawn({
        let target = target.clone();
        async move { http(addr, "GET", &target, &[], b"").await }
    });
    // The first poll is waiting (nothing queued); wait until the server holds it.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let second = http(addr, "GET", &target, &[], b"").await;
    assert_eq!(second.status, 400);
    let first = first.await.unwrap();
    assert_eq!((first.status, first.text()), (200, "1"));
    let after = http(addr, "GET", &target, &[], b"").await;
    assert_eq!(after.text(), r#"{"code":1,"message":"Session ID unknown"}"#);
}

#[tokio::test]
async fn server_pings_and_closes_on_missing_pong() {
    let mut config = common::config();
    config.engine.ping_interval = Duration::from_millis(50);
    config.engine.ping_timeout = Duration::from_millis(50);
    let server = start(Io::new(config)).await;
    let sid = open_polling(server.addr).await;
    let target = format!("/socket.io/?EIO=4&transport=polling&sid={sid}");
    let ping = http(server.addr, "GET", &target, &[], b"").await;
    assert_eq!(ping.text(), "2");
    // No pong: the next poll is answered with close once the timeout fires.
    let closed = http(server.addr, "GET", &target, &[], b"").await;
    assert_eq!(closed.text(), "1");
    assert_eq!(server.io.connection_count(), 0);
}

#[tokio::test]
async fn cors_preflight_and_forbidden_origin() {
    let mut config = common::config();
    config.engine.allowed_origins =
        ioscale::engine::AllowedOrigins::List(vec!["http://a.example".into()]);
    let server = start(Io::new(config)).await;
    let preflight = http(
        server.addr,
        "OPTIONS",
        "/socket.io/?EIO=4&transport=polling",
        &[
            ("Origin", "http://a.example"),
            ("Access-Control-Request-Headers", "content-type"),
        ],
        b"",
    )
    .await;
    assert_eq!(preflight.status, 204);
    assert_eq!(
        preflight.header("access-control-allow-origin"),
        Some("http://a.example")
    );
    assert_eq!(
        preflight.header("access-control-allow-credentials"),
        Some("true")
    );
    assert_eq!(
        preflight.header("access-control-allow-headers"),
        Some("content-type")
    );
    let forbidden = http(
        server.addr,
        "GET",
        "/socket.io/?EIO=4&transport=polling",
        &[("Origin", "http://evil.example")],
        b"",
    )
    .await;
    assert_eq!(forbidden.status, 403);
    assert_eq!(forbidden.text(), r#"{"code":4,"message":"Forbidden"}"#);
}

#[tokio::test]
async fn cookie_is_set_on_handshake_when_enabled() {
    let mut config = common::config();
    config.engine.cookie = true;
    let server = start(Io::new(config)).await;
    let response = http(
        server.addr,
        "GET",
        "/socket.io/?EIO=4&transport=polling",
        &[],
        b"",
    )
    .await;
    let open: serde_json::Value = serde_json::from_str(&response.text()[1..]).unwrap();
    let expected = format!(
        "io={}; Path=/; HttpOnly; SameSite=Lax",
        open["sid"].as_str().unwrap()
    );
    assert_eq!(response.header("set-cookie"), Some(expected.as_str()));
}

#[tokio::test]
async fn each_pong_moves_the_next_ping_and_a_close_forgets_the_session() {
    let mut config = common::config();
    config.engine.ping_interval = Duration::from_millis(100);
    // Generous, so a slow machine never times out; without the pong's reschedule the next
    // poll would get no ping (and then the close).
    config.engine.ping_timeout = Duration::from_millis(1000);
    let server = start(Io::new(config)).await;
    let sid = open_polling(server.addr).await;
    let target = format!("/socket.io/?EIO=4&transport=polling&sid={sid}");
    // Several rounds: each ping comes one interval after the pong (not after the ping).
    for _ in 0..4 {
        let ponged = std::time::Instant::now();
        let ping = http(server.addr, "GET", &target, &[], b"").await;
        assert_eq!(ping.text(), "2");
        let waited = ponged.elapsed();
        assert!(waited >= Duration::from_millis(90), "{waited:?}");
        // Well below the 1 s timeout, where a ping that missed the pong's reschedule lands.
        assert!(waited < Duration::from_millis(600), "{waited:?}");
        tokio::time::sleep(Duration::from_millis(30)).await;
        let pong = http(server.addr, "POST", &target, &[], b"3").await;
        assert_eq!(pong.status, 200);
    }
    assert_eq!(server.io.connection_count(), 1);
    let close = http(server.addr, "POST", &target, &[], b"1").await;
    assert_eq!(close.status, 200);
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while server.io.connection_count() != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "session kept after close"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_panicking_disconnect_handler_does_not_stop_other_sessions_timers() {
    let mut config = common::config();
    config.engine.ping_interval = Duration::from_millis(100);
    config.engine.ping_timeout = Duration::from_millis(1000);
    let io = Io::new(config);
    io.of("/")
        .on_disconnect(|_, _| panic!("handler bug (expected by this test)"));
    let server = start(io).await;
    // Several sessions, so that some share the timer shard of the one that panics.
    let mut others = Vec::new();
    for _ in 0..6 {
        others.push(open_polling(server.addr).await);
    }
    let doomed = open_polling(server.addr).await;
    let target = |sid: &str| format!("/socket.io/?EIO=4&transport=polling&sid={sid}");
    let joined = http(server.addr, "POST", &target(&doomed), &[], b"40").await;
    assert_eq!(joined.status, 200);
    let connect = http(server.addr, "GET", &target(&doomed), &[], b"").await;
    assert!(connect.text().starts_with("40"), "{}", connect.text());
    // The client closes: the timer task runs the (panicking) disconnect handler.
    http(server.addr, "POST", &target(&doomed), &[], b"1").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    for sid in &others {
        let ping = tokio::time::timeout(
            Duration::from_secs(2),
            http(server.addr, "GET", &target(sid), &[], b""),
        )
        .await
        .expect("a session's timers stopped");
        assert_eq!(ping.text(), "2");
    }
}
