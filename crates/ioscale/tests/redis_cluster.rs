//! Three in-process ioscale nodes on a real `redis-server`: every cluster operation.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::redis::RedisServer;
use common::ws::{Ws, connect, next_text, send, try_next_text};
use ioscale::Io;
use ioscale::adapter::AdapterError;
use ioscale::adapter::cluster::ClusterNode;
use ioscale::adapter::redis::{ClassicRedis, RedisConfig};
use serde_json::{Value, json};

struct Node {
    server: common::TestServer,
    cluster: Arc<ClusterNode>,
}

async fn node(redis: &RedisServer, requests_timeout: Duration) -> Node {
    let mut config = RedisConfig::new(redis.url());
    config.requests_timeout = requests_timeout;
    let cluster = ClassicRedis::connect(config).unwrap();
    assert!(cluster.wait_until_up(Duration::from_secs(5)).await);
    let io = Io::with_adapter(common::config(), cluster.factory());
    let server = common::start(io).await;
    Node { server, cluster }
}

/// Waits until every node sees `count` subscribers (subscriptions are asynchronous).
async fn wait_for_servers(node: &Node, count: usize) {
    for _ in 0..200 {
        if node.server.io.of("/").server_count().await.ok() == Some(count) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("cluster never reached {count} servers");
}

async fn three_nodes(redis: &RedisServer) -> Vec<Node> {
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(node(redis, Duration::from_millis(1500)).await);
    }
    wait_for_servers(&nodes[0], 3).await;
    nodes
}

/// Sends a marker broadcast and reads until it arrives; returns what came before it.
async fn drain_until_marker(ws: &mut Ws, marker: &str) -> Vec<String> {
    let mut before = Vec::new();
    loop {
        let text = next_text(ws).await;
        if text.contains(marker) {
            return before;
        }
        before.push(text);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcasts_reach_every_node_exactly_once_and_rooms_only_members() {
    let redis = RedisServer::start();
    let nodes = three_nodes(&redis).await;
    let mut clients = Vec::new();
    for node in &nodes {
        clients.push(connect(node.server.addr, false).await);
    }
    // One client per node joins "vip" through its own node.
    let vip_sid = clients[2].1.clone();
    nodes[2]
        .server
        .io
        .of("/")
        .socket(&vip_sid)
        .unwrap()
        .join("vip");

    nodes[0].server.io.emit("hello", json!(1));
    nodes[1].server.io.to("vip").emit("vip-only", json!(2));
    nodes[1]
        .server
        .io
        .of("/")
        .broadcast()
        .except("vip")
        .emit("not-vip", json!(3));
    // Order holds per publishing node: a marker from each node closes what it sent.
    nodes[0].server.io.emit("marker-0", json!(0));
    nodes[1].server.io.emit("marker-1", json!(1));
    for (index, (ws, _)) in clients.iter_mut().enumerate() {
        let mut received = Vec::new();
        let mut markers = 0;
        while markers < 2 {
            let text = next_text(ws).await;
            if text.contains("marker-") {
                markers += 1;
            } else {
                received.push(text);
            }
        }
        received.sort();
        let mut expected = vec!["42[\"hello\",1]".to_owned()];
        expected.push(if index == 2 {
            "42[\"vip-only\",2]".to_owned()
        } else {
            "42[\"not-vip\",3]".to_owned()
        });
        expected.sort();
        assert_eq!(received, expected, "client on node {index}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_operations_span_every_node() {
    let redis = RedisServer::start();
    let nodes = three_nodes(&redis).await;
    let mut clients = Vec::new();
    for node in &nodes {
        clients.push(connect(node.server.addr, false).await);
    }
    let sids: Vec<String> = clients.iter().map(|(_, sid)| sid.clone()).collect();
    *nodes[1]
        .server
        .io
        .of("/")
        .socket(&sids[1])
        .unwrap()
        .data
        .write() = json!({"name": "b"});

    // fetch_sockets from node 0 sees the sockets of all three nodes, with their data.
    let mut fetched = nodes[0].server.io.of("/").fetch_sockets().await.unwrap();
    fetched.sort_by(|a, b| a.id().cmp(b.id()));
    let mut expected = sids.clone();
    expected.sort();
    assert_eq!(
        fetched
            .iter()
            .map(|s| s.id().to_owned())
            .collect::<Vec<_>>(),
        expected
    );
    let b = fetched.iter().find(|s| s.id() == sids[1]).unwrap();
    assert_eq!(b.data(), &json!({"name": "b"}));
    assert_eq!(b.rooms(), &[sids[1].clone()]);
    assert_eq!(b.handshake()["auth"], json!({}));

    // sockets_join from node 0 makes every socket join; a room broadcast then reaches all.
    nodes[0]
        .server
        .io
        .of("/")
        .broadcast()
        .sockets_join("everyone");
    let mut rooms = nodes[2].server.io.of("/").all_rooms().await.unwrap();
    for _ in 0..100 {
        if rooms.iter().filter(|r| &***r == "everyone").count() == 1
            && nodes[2]
                .server
                .io
                .of("/")
                .rooms()
                .iter()
                .any(|r| &**r == "everyone")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        rooms = nodes[2].server.io.of("/").all_rooms().await.unwrap();
    }
    assert!(rooms.iter().any(|r| &**r == "everyone"));
    for sid in &sids {
        assert!(
            rooms.iter().any(|r| &**r == sid.as_str()),
            "all_rooms misses {sid}"
        );
    }
    nodes[1]
        .server
        .io
        .to("everyone")
        .emit("in-room", json!(true));
    for (ws, _) in clients.iter_mut() {
        assert_eq!(next_text(ws).await, "42[\"in-room\",true]");
    }

    // A remote socket leaves through the node that fetched it.
    let remote = fetched.iter().find(|s| s.id() == sids[2]).unwrap();
    remote.leave("everyone");
    remote.emit("direct", json!("to-c"));
    assert_eq!(
        next_text(&mut clients[2].0).await,
        "42[\"direct\",\"to-c\"]"
    );
    nodes[0]
        .server
        .io
        .to("everyone")
        .emit("after-leave", json!(1));
    nodes[0].server.io.emit("marker", json!(1));
    assert_eq!(
        drain_until_marker(&mut clients[2].0, "marker").await,
        Vec::<String>::new()
    );
    assert_eq!(
        drain_until_marker(&mut clients[1].0, "marker").await,
        vec!["42[\"after-leave\",1]"]
    );
    assert_eq!(
        drain_until_marker(&mut clients[0].0, "marker").await,
        vec!["42[\"after-leave\",1]"]
    );

    // Server-side events with acks: one answer per other node.
    for (index, node) in nodes.iter().enumerate() {
        node.server
            .io
            .of("/")
            .on_server_event("whoami", move |payload, ack| {
                if let Some(ack) = ack {
                    ack.send(json!({"node": index, "asked": payload.args}));
                }
            });
    }
    let mut replies: Vec<Value> = nodes[0]
        .server
        .io
        .of("/")
        .server_side_emit_with_ack("whoami", json!("q"))
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.args[0].clone())
        .collect();
    replies.sort_by_key(|r| r["node"].as_u64());
    assert_eq!(
        replies,
        vec![
            json!({"node": 1, "asked": ["q"]}),
            json!({"node": 2, "asked": ["q"]})
        ]
    );

    // Broadcast with acks: every client of the cluster answers.
    let main = nodes[1].server.io.of("/");
    let acks = tokio::spawn(async move {
        main.broadcast()
            .timeout(Duration::from_secs(3))
            .emit_with_ack("ask", json!("?"))
            .await
    });
    for (ws, _) in clients.iter_mut() {
        let text = next_text(ws).await;
        // 42<id>["ask","?"]: answer with 43<id>["yes"].
        let id: String = text[2..].chars().take_while(char::is_ascii_digit).collect();
        assert_eq!(&text[2 + id.len()..], "[\"ask\",\"?\"]");
        send(ws, &format!("43{id}[\"yes\"]")).await;
    }
    let acks = acks.await.unwrap();
    assert!(!acks.timed_out);
    assert_eq!(acks.replies.len(), 3);
    assert!(acks.replies.iter().all(|r| r.args == vec![json!("yes")]));

    // disconnect_sockets from node 2 disconnects a socket held by node 0.
    nodes[2]
        .server
        .io
        .to(sids[0].as_str())
        .disconnect_sockets(false);
    assert_eq!(next_text(&mut clients[0].0).await, "41");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_time_out_when_a_node_stops_answering() {
    let redis = RedisServer::start();
    let node = node(&redis, Duration::from_millis(300)).await;
    // A second "node" that subscribes to the request channel and never answers.
    let silent = {
        let mut silent = std::net::TcpStream::connect(("127.0.0.1", redis.port)).unwrap();
        use std::io::Write;
        silent
            .write_all(b"SUBSCRIBE socket.io-request#/#\r\n")
            .unwrap();
        silent
    };
    wait_for_servers(&node, 2).await;
    let started = std::time::Instant::now();
    let fetched = node.server.io.of("/").fetch_sockets().await;
    assert!(
        matches!(
            fetched,
            Err(AdapterError::Timeout {
                operation: "fetchSockets",
                ..
            })
        ),
        "{fetched:?}"
    );
    let acked = node
        .server
        .io
        .of("/")
        .server_side_emit_with_ack("x", ())
        .await;
    assert!(
        matches!(
            acked,
            Err(AdapterError::Timeout {
                expected: 1,
                received: 0,
                ..
            })
        ),
        "{acked:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    let acks = node
        .server
        .io
        .of("/")
        .broadcast()
        .timeout(Duration::from_millis(300))
        .emit_with_ack("x", ())
        .await;
    assert!(acks.timed_out);
    drop(silent);
    let _ = node.cluster.stats();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_cluster_channels_is_dropped_and_counted() {
    let redis = RedisServer::start();
    let nodes = [
        node(&redis, Duration::from_secs(1)).await,
        node(&redis, Duration::from_secs(1)).await,
    ];
    wait_for_servers(&nodes[0], 2).await;
    let (mut ws, _) = connect(nodes[0].server.addr, false).await;
    let before = nodes[0]
        .cluster
        .stats()
        .received_invalid
        .load(std::sync::atomic::Ordering::Relaxed);
    for (channel, payload) in [
        ("socket.io#/#", &b"not msgpack"[..]),
        ("socket.io#/#", b"\x92\xa1a\x80"),
        ("socket.io#/#", b"\x91\x91\x91\x91\x91"),
        ("socket.io-request#/#", b"{\"type\":5}"),
        ("socket.io-request#/#", b"{broken"),
        ("socket.io-response#/#", b"\xc1"),
    ] {
        redis.publish(channel, payload).unwrap();
    }
    // The node keeps working: a broadcast from the other node still arrives.
    nodes[1].server.io.emit("still", json!("alive"));
    assert_eq!(next_text(&mut ws).await, "42[\"still\",\"alive\"]");
    let after = nodes[0]
        .cluster
        .stats()
        .received_invalid
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(after - before, 6);
    assert!(
        try_next_text(&mut ws, Duration::from_millis(50))
            .await
            .is_none()
    );
}
