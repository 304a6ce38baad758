//! Delivery guarantees over real WebSockets: order under bursts, slow consumers
//! disconnected without harming others, volatile packets dropped instead.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::ws::next_text;

use std::sync::Arc;

use ioscale::engine::PushError;
use ioscale::{DisconnectReason, Io, Socket};
use serde_json::json;
use tokio::sync::mpsc;

/// A server whose main namespace reports each connection and disconnection.
async fn server(
    max_buffered_bytes: usize,
) -> (
    common::TestServer,
    mpsc::UnboundedReceiver<Arc<Socket>>,
    mpsc::UnboundedReceiver<DisconnectReason>,
) {
    let mut config = common::config();
    config.engine.max_buffered_bytes = max_buffered_bytes;
    let io = Io::new(config);
    let (connected_tx, connected) = mpsc::unbounded_channel();
    let (disconnected_tx, disconnected) = mpsc::unbounded_channel();
    let main = io.of("/");
    main.on_connection(move |socket| {
        let _ = connected_tx.send(socket.clone());
    });
    main.on_disconnect(move |_, reason| {
        let _ = disconnected_tx.send(reason);
    });
    (common::start(io).await, connected, disconnected)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_broadcasts_arrives_in_order_at_every_client() {
    let (server, mut connected, _) = server(4 << 20).await;
    let mut clients = Vec::new();
    for _ in 0..20 {
        clients.push(common::ws::connect(server.addr, false).await.0);
        connected.recv().await.unwrap();
    }
    let main = server.io.of("/");
    for seq in 0..500 {
        assert_eq!(main.emit("tick", json!(seq)), 20);
    }
    for ws in &mut clients {
        for seq in 0..500 {
            assert_eq!(next_text(ws).await, format!("42[\"tick\",{seq}]"));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_is_disconnected_while_others_keep_receiving() {
    let (server, mut connected, mut disconnected) = server(256 << 10).await;
    let _stalled = common::ws::connect(server.addr, true).await.0;
    let stalled_socket = connected.recv().await.unwrap();
    let mut reader = common::ws::connect(server.addr, false).await.0;
    connected.recv().await.unwrap();
    let main = server.io.of("/");
    let chunk = "x".repeat(1024);
    let mut sent = 0u64;
    // The stalled client never reads: once kernel buffers and its queue are full it is
    // cut off. The reader drains each batch before the next, so it never falls behind.
    let reason = loop {
        assert!(sent < 100_000, "slow consumer never disconnected");
        for _ in 0..32 {
            main.emit("data", json!({"seq": sent, "chunk": chunk}));
            sent += 1;
        }
        for seq in sent - 32..sent {
            let text = next_text(&mut reader).await;
            let prefix = format!("42[\"data\",{{\"seq\":{seq},");
            assert!(text.starts_with(&prefix), "out of order: {seq}");
        }
        if let Ok(reason) = disconnected.try_recv() {
            break reason;
        }
    };
    assert_eq!(reason, DisconnectReason::TransportError);
    assert!(!stalled_socket.connected());
    // The other client is unaffected.
    main.emit("after", json!(1));
    assert_eq!(next_text(&mut reader).await, "42[\"after\",1]");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volatile_packets_are_dropped_for_a_full_queue_without_disconnecting() {
    let (server, mut connected, mut disconnected) = server(64 << 10).await;
    let _stalled = common::ws::connect(server.addr, true).await.0;
    let socket = connected.recv().await.unwrap();
    let chunk = "v".repeat(1024);
    let mut outcome = Ok(());
    for _ in 0..100_000 {
        outcome = socket.emit_volatile("v", json!(chunk));
        if outcome.is_err() {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(outcome, Err(PushError::VolatileDropped));
    assert!(socket.connected());
    assert!(disconnected.try_recv().is_err());
}
