//! In-process ioscale nodes on a real Redis Cluster (three masters) with the sharded adapter:
//! which channels each subscription mode subscribes, server counting by `SHARDNUMSUB`,
//! cluster requests, and garbage on the channels. Interoperability with Node's sharded
//! adapter and master failover are tested in `tests/interop` (cluster-sharded-*).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::redis_cluster::RedisClusterServers;
use common::ws::{connect, next_text, try_next_text};
use ioscale::Io;
use ioscale::adapter::cluster::ClusterNode;
use ioscale::adapter::redis::sharded::{ShardedConfig, ShardedRedis, SubscriptionMode};
use serde_json::json;

struct Node {
    server: common::TestServer,
    cluster: Arc<ClusterNode>,
}

async fn node(redis: &RedisClusterServers, mode: SubscriptionMode) -> Node {
    let mut config = ShardedConfig::new(redis.urls());
    config.subscription_mode = mode;
    config.requests_timeout = Duration::from_millis(1500);
    let cluster = ShardedRedis::connect(config).unwrap();
    assert!(cluster.wait_until_up(Duration::from_secs(5)).await);
    let io = Io::with_adapter(common::config(), cluster.factory());
    let server = common::start(io).await;
    Node { server, cluster }
}

/// Subscriptions are made in the background: polls Redis until `check` holds.
async fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !check() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn nodes(redis: &RedisClusterServers, mode: SubscriptionMode, count: u64) -> Vec<Node> {
    let mut nodes = Vec::new();
    for _ in 0..count {
        nodes.push(node(redis, mode).await);
    }
    eventually("every node subscribes to the main channel", || {
        redis.shard_numsub("socket.io#/#") == count
    })
    .await;
    nodes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamic_mode_subscribes_a_room_channel_where_the_room_is() {
    let redis = RedisClusterServers::start();
    let nodes = nodes(&redis, SubscriptionMode::Dynamic, 2).await;
    let (mut ws, sid) = connect(nodes[0].server.addr, false).await;
    let socket = nodes[0].server.io.of("/").socket(&sid).unwrap();
    socket.join("vip");
    eventually("the room channel is subscribed by its one node", || {
        redis.shard_numsub("socket.io#/#vip#") == 1
    })
    .await;
    nodes[1].server.io.to("vip").emit("in-room", json!(1));
    assert_eq!(next_text(&mut ws).await, "42[\"in-room\",1]");
    // A socket's own room is private in `dynamic`: emits to it go through the main channel.
    assert_eq!(redis.shard_numsub(&format!("socket.io#/#{sid}#")), 0);
    nodes[1].server.io.to(sid.as_str()).emit("direct", json!(2));
    assert_eq!(next_text(&mut ws).await, "42[\"direct\",2]");
    socket.leave("vip");
    eventually("the emptied room is unsubscribed", || {
        redis.shard_numsub("socket.io#/#vip#") == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamic_private_mode_subscribes_each_socket_and_static_no_room() {
    let redis = RedisClusterServers::start();
    let private = nodes(&redis, SubscriptionMode::DynamicPrivate, 2).await;
    let (mut ws, sid) = connect(private[0].server.addr, false).await;
    let own = format!("socket.io#/#{sid}#");
    eventually("the socket's channel is subscribed", || {
        redis.shard_numsub(&own) == 1
    })
    .await;
    private[1]
        .server
        .io
        .to(sid.as_str())
        .emit("direct", json!(1));
    assert_eq!(next_text(&mut ws).await, "42[\"direct\",1]");
    drop(ws);
    eventually("a disconnection unsubscribes the socket's channel", || {
        redis.shard_numsub(&own) == 0
    })
    .await;

    let redis = RedisClusterServers::start();
    let fixed = nodes(&redis, SubscriptionMode::Static, 2).await;
    let (mut ws, sid) = connect(fixed[0].server.addr, false).await;
    fixed[0].server.io.of("/").socket(&sid).unwrap().join("vip");
    // Delivered though no room channel exists: static publishes rooms on the main channel.
    fixed[1].server.io.to("vip").emit("in-room", json!(2));
    assert_eq!(next_text(&mut ws).await, "42[\"in-room\",2]");
    assert_eq!(redis.shard_numsub("socket.io#/#vip#"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_expect_one_answer_per_subscribed_node() {
    let redis = RedisClusterServers::start();
    let nodes = nodes(&redis, SubscriptionMode::Dynamic, 3).await;
    let mut sids = Vec::new();
    let mut clients = Vec::new();
    for node in &nodes {
        let (ws, sid) = connect(node.server.addr, false).await;
        sids.push(sid);
        clients.push(ws);
    }
    for (index, node) in nodes.iter().enumerate() {
        let name = format!("node-{index}");
        node.server
            .io
            .of("/")
            .on_server_event("who", move |_payload, ack| {
                if let Some(ack) = ack {
                    ack.send(json!(name.clone()));
                }
            });
    }
    assert_eq!(nodes[0].server.io.of("/").server_count().await.unwrap(), 3);
    let mut fetched: Vec<String> = nodes[1]
        .server
        .io
        .of("/")
        .fetch_sockets()
        .await
        .unwrap()
        .iter()
        .map(|socket| socket.id().to_owned())
        .collect();
    fetched.sort();
    sids.sort();
    assert_eq!(fetched, sids);
    let mut answers: Vec<String> = nodes[2]
        .server
        .io
        .of("/")
        .server_side_emit_with_ack("who", ())
        .await
        .unwrap()
        .into_iter()
        .map(|reply| reply.args[0].as_str().unwrap().to_owned())
        .collect();
    answers.sort();
    assert_eq!(answers, vec!["node-0", "node-1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_sharded_channels_is_dropped_and_counted() {
    let redis = RedisClusterServers::start();
    let nodes = nodes(&redis, SubscriptionMode::Dynamic, 2).await;
    let (mut ws, _) = connect(nodes[0].server.addr, false).await;
    let invalid = || {
        nodes[0]
            .cluster
            .stats()
            .received_invalid
            .load(Ordering::Relaxed)
    };
    let before = invalid();
    let response_channel = format!("socket.io#/#{}#", nodes[0].cluster.uid());
    for (channel, payload) in [
        ("socket.io#/#", &b"not json"[..]),
        ("socket.io#/#", b"\xc0"),
        ("socket.io#/#", br#"{"type":3,"uid":"x","nsp":"/"}"#),
        (
            "socket.io#/#",
            br#"{"type":5,"data":{"opts":{},"rooms":"r"},"uid":"x","nsp":"/"}"#,
        ),
        (
            response_channel.as_str(),
            br#"{"type":8,"uid":"x","nsp":"/"}"#,
        ),
    ] {
        assert!(redis.spublish(channel, payload), "SPUBLISH on {channel}");
    }
    // The node keeps working: a broadcast from the other node still arrives, after the garbage.
    nodes[1].server.io.emit("still", json!("alive"));
    assert_eq!(next_text(&mut ws).await, "42[\"still\",\"alive\"]");
    eventually("the five messages are counted", || invalid() - before == 5).await;
    assert!(
        try_next_text(&mut ws, Duration::from_millis(50))
            .await
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_master_is_reported_and_what_was_published_meanwhile_arrives() {
    let redis = RedisClusterServers::start();
    let nodes = nodes(&redis, SubscriptionMode::Dynamic, 2).await;
    let (mut ws, _) = connect(nodes[0].server.addr, false).await;
    let health = nodes[0].cluster.health();
    eventually("a PING answered", || health.ping_seconds() > 0.0).await;
    assert_eq!(health.not_ready_reason(), None);

    // Every master sleeps 4 s (DEBUG SLEEP blocks the connection that sent it).
    let ports = redis.ports.clone();
    let sleepers: Vec<_> = ports
        .into_iter()
        .map(|port| {
            std::thread::spawn(move || {
                let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
                std::io::Write::write_all(
                    &mut stream,
                    b"*3\r\n$5\r\nDEBUG\r\n$5\r\nSLEEP\r\n$1\r\n4\r\n",
                )
                .unwrap();
                let mut reply = [0u8; 5];
                std::io::Read::read_exact(&mut stream, &mut reply).unwrap();
                assert_eq!(&reply, b"+OK\r\n");
            })
        })
        .collect();
    for n in 0..20 {
        nodes[1].server.io.emit("during", json!(n));
    }
    eventually("node 0 reports Redis stalled", || {
        health.not_ready_reason() == Some("redis stalled")
    })
    .await;
    assert!(health.is_stalled());
    assert!(health.is_up(), "stalled is not down");
    assert!(health.ping_seconds() >= 2.0);
    for sleeper in sleepers {
        tokio::task::spawn_blocking(move || sleeper.join().unwrap())
            .await
            .unwrap();
    }
    // Everything published during the stall arrives, in order, and nothing counts as lost.
    for n in 0..20 {
        assert_eq!(next_text(&mut ws).await, format!("42[\"during\",{n}]"));
    }
    eventually("node 0 answers PING again", || !health.is_stalled()).await;
    assert_eq!(health.not_ready_reason(), None);
    for node in &nodes {
        let stats = node.cluster.stats();
        assert_eq!(stats.publish_unknown.load(Ordering::Relaxed), 0);
        assert_eq!(stats.publish_dropped.load(Ordering::Relaxed), 0);
        assert_eq!(stats.received_lagged.load(Ordering::Relaxed), 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cuts_of_the_sharded_subscriber_are_counted_and_take_one_node_out_of_rotation() {
    let redis = RedisClusterServers::start();
    let nodes = nodes(&redis, SubscriptionMode::Dynamic, 2).await;
    let (mut ws, _) = connect(nodes[0].server.addr, false).await;
    for reply in redis.command_all(&[
        "CONFIG",
        "SET",
        "client-output-buffer-limit",
        "pubsub 65536 32768 60",
    ]) {
        assert_eq!(reply.as_deref(), Some("+OK"));
    }
    let cuts = |node: &Node| node.cluster.stats().subscriber_cuts.load(Ordering::Relaxed);
    let big = "x".repeat(200_000);
    for cut in 1..=3 {
        nodes[1].server.io.emit("big", json!(big));
        for node in &nodes {
            eventually("the cut is counted", || cuts(node) == cut).await;
        }
        eventually("both nodes subscribe again", || {
            redis.shard_numsub("socket.io#/#") == 2
        })
        .await;
    }
    // The rotation lock is taken in the background.
    let reasons = || -> Vec<_> {
        nodes
            .iter()
            .map(|node| node.cluster.health().not_ready_reason())
            .collect()
    };
    eventually("one node out of rotation", || {
        reasons().iter().any(Option::is_some)
    })
    .await;
    let mut reasons = reasons();
    reasons.sort();
    assert_eq!(reasons, vec![None, Some("redis subscriber cut repeatedly")]);
    assert!(nodes.iter().all(|node| node.cluster.health().is_up()));
    // Small messages still flow; none of the big ones arrived.
    nodes[1].server.io.emit("small", json!(1));
    assert_eq!(next_text(&mut ws).await, "42[\"small\",1]");
}
