//! Multi-node behaviour of the cluster core over the in-process [`Bus`], with each wire
//! format: no Redis, milliseconds per test. Every message a node receives goes through the
//! same encode, decode and dispatch as over Redis (the formats are the Redis ones).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::*;
use crate::adapter::redis::ClassicFormat;
use crate::adapter::redis::sharded::{ShardedFormat, SubscriptionMode};
use crate::adapter::{
    AckEvent, AckRoute, Adapter, AdapterError, Broadcast, BroadcastFlags, Recipient, Room,
    ServerEventHook, SocketInfo, Target,
};
use crate::protocol::{Frame, Sid};

#[derive(Debug, Clone, Copy)]
enum Proto {
    Classic,
    /// Classic, answering on each requester's own response channel.
    ClassicSpecific,
    Sharded(SubscriptionMode),
}

const PROTOS: [Proto; 5] = [
    Proto::Classic,
    Proto::ClassicSpecific,
    Proto::Sharded(SubscriptionMode::Static),
    Proto::Sharded(SubscriptionMode::Dynamic),
    Proto::Sharded(SubscriptionMode::DynamicPrivate),
];

fn format(proto: Proto, uid: &str) -> Box<dyn Format> {
    match proto {
        Proto::Classic => Box::new(ClassicFormat::new("socket.io", uid, false)),
        Proto::ClassicSpecific => Box::new(ClassicFormat::new("socket.io", uid, true)),
        Proto::Sharded(mode) => Box::new(ShardedFormat::new("socket.io", uid, mode)),
    }
}

/// A socket: every frame it gets is sent on `frames`; it acks broadcasts with its id.
struct Probe {
    sid: Sid,
    frames: mpsc::UnboundedSender<String>,
    disconnected: AtomicBool,
}

impl Recipient for Probe {
    fn sid(&self) -> Sid {
        self.sid
    }
    fn deliver(&self, frames: &[Frame], _volatile: bool, ack: Option<&AckRoute>) -> bool {
        for frame in frames {
            let _ = self.frames.send(format!("{frame:?}"));
        }
        if let Some(route) = ack {
            let reply = Payload {
                args: vec![json!(self.sid.to_string())],
                attachments: Vec::new(),
            };
            let _ = route.events.send(AckEvent::Reply(reply));
        }
        true
    }
    fn info(&self) -> SocketInfo {
        SocketInfo {
            id: self.sid.to_string(),
            handshake: Value::Null,
            rooms: Vec::new(),
            data: Value::Null,
        }
    }
    fn disconnect(&self, _close: bool) {
        self.disconnected.store(true, Ordering::Release);
    }
}

struct TestNode {
    node: Arc<ClusterNode>,
    link: Arc<BusLink>,
    adapter: Arc<dyn Adapter>,
    /// Server-side events this node's handlers got.
    events: Arc<Mutex<Vec<Payload>>>,
    probe: Arc<Probe>,
    frames: mpsc::UnboundedReceiver<String>,
}

impl TestNode {
    /// The next frame the node's socket gets.
    async fn next(&mut self) -> String {
        tokio::time::timeout(Duration::from_secs(2), self.frames.recv())
            .await
            .expect("a frame within 2 s")
            .expect("frames open")
    }

    /// What the socket got before `marker`, other markers left out.
    async fn before_marker(&mut self, marker: &str) -> Vec<String> {
        let mut before = Vec::new();
        loop {
            let frame = self.next().await;
            if frame.contains(marker) {
                return before;
            }
            if !frame.contains("marker-") {
                before.push(frame);
            }
        }
    }
}

/// What each node's socket got until now: for each node, a marker broadcast from another
/// node (so that it travels through the bus: each link keeps the order, and the bus
/// delivers at publish, so everything published earlier has been handled by then).
async fn settle(nodes: &mut [TestNode]) -> Vec<Vec<String>> {
    let mut got = Vec::new();
    for index in 0..nodes.len() {
        let name = format!("marker-{index}");
        let from = (index + 1) % nodes.len();
        nodes[from]
            .adapter
            .broadcast(&broadcast(&name), &Target::default(), CLUSTER);
        got.push(nodes[index].before_marker(&name).await);
    }
    got
}

/// `count` nodes of namespace `/` on one bus, one socket each; server-side events are
/// acked with the node's index.
async fn nodes(proto: Proto, count: usize, timeout: Duration) -> (Bus, Vec<TestNode>) {
    let bus = Bus::new();
    let mut nodes = Vec::new();
    for index in 0..count {
        let uid = new_uid();
        let (node, link) = bus.node(uid.clone(), format(proto, &uid), timeout);
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        let server_events: ServerEventHook = Arc::new(move |payload, ack| {
            sink.lock().push(payload);
            if let Some(ack) = ack {
                let _ = ack.send(Payload {
                    args: vec![json!(index), json!("dropped: only the first argument")],
                    attachments: Vec::new(),
                });
            }
        });
        let adapter = node.factory()(AdapterContext {
            namespace: "/".into(),
            ack_ids: Arc::new(AtomicU64::new(0)),
            room_events: None,
            server_events,
            metrics: Default::default(),
        });
        let (sender, frames) = mpsc::unbounded_channel();
        let probe = Arc::new(Probe {
            sid: Sid::random(),
            frames: sender,
            disconnected: AtomicBool::new(false),
        });
        adapter.add_socket(probe.clone());
        nodes.push(TestNode {
            node,
            link,
            adapter,
            events,
            probe,
            frames,
        });
    }
    // Subscriptions are applied at once on the bus.
    assert_eq!(nodes[0].adapter.server_count().await, Ok(count));
    (bus, nodes)
}

fn broadcast(event: &str) -> Broadcast {
    let packet = Packet::event("/", json!([event, "data"]));
    let frames = encode_frames(&packet);
    Broadcast { packet, frames }
}

fn rooms(names: &[&str]) -> Vec<Room> {
    names.iter().map(|name| Room::from(*name)).collect()
}

fn to(names: &[&str]) -> Target {
    Target {
        rooms: rooms(names),
        except: Vec::new(),
    }
}

const CLUSTER: BroadcastFlags = BroadcastFlags {
    volatile: false,
    local: false,
};

#[tokio::test]
async fn broadcasts_reach_every_node_once_rooms_only_members_except_skipped() {
    for proto in PROTOS {
        let (_bus, mut nodes) = nodes(proto, 3, Duration::from_secs(1)).await;
        nodes[2].adapter.join(nodes[2].probe.sid, &rooms(&["vip"]));
        nodes[1]
            .adapter
            .join(nodes[1].probe.sid, &rooms(&["muted"]));
        let sender = &nodes[0].adapter;
        assert_eq!(
            sender.broadcast(&broadcast("all"), &Target::default(), CLUSTER),
            1
        );
        assert_eq!(
            sender.broadcast(&broadcast("vip"), &to(&["vip"]), CLUSTER),
            0
        );
        let except = Target {
            rooms: Vec::new(),
            except: rooms(&["muted"]),
        };
        sender.broadcast(&broadcast("not-muted"), &except, CLUSTER);
        let local = BroadcastFlags {
            local: true,
            ..CLUSTER
        };
        sender.broadcast(&broadcast("local"), &Target::default(), local);
        let got: Vec<Vec<String>> = settle(&mut nodes)
            .await
            .iter()
            .map(|frames| {
                frames
                    .iter()
                    .map(|frame| frame.split('"').nth(2).unwrap_or_default().to_owned())
                    .collect()
            })
            .collect();
        let expected = |names: &[&str]| names.iter().map(|n| format!("{n}\\")).collect::<Vec<_>>();
        assert_eq!(
            got[0],
            expected(&["all", "not-muted", "local"]),
            "{proto:?}"
        );
        assert_eq!(got[1], expected(&["all"]), "{proto:?}");
        assert_eq!(got[2], expected(&["all", "vip", "not-muted"]), "{proto:?}");
    }
}

#[tokio::test]
async fn fetch_sockets_server_count_and_all_rooms_span_the_cluster() {
    for proto in PROTOS {
        let (_bus, nodes) = nodes(proto, 3, Duration::from_secs(1)).await;
        nodes[1].adapter.join(nodes[1].probe.sid, &rooms(&["r1"]));
        nodes[2]
            .adapter
            .join(nodes[2].probe.sid, &rooms(&["r1", "r2"]));
        let all = nodes[0]
            .adapter
            .fetch_sockets(&Target::default(), CLUSTER)
            .await
            .unwrap();
        assert_eq!(all.len(), 3, "{proto:?}");
        let in_r1 = nodes[0]
            .adapter
            .fetch_sockets(&to(&["r1"]), CLUSTER)
            .await
            .unwrap();
        let mut ids: Vec<String> = in_r1.into_iter().map(|s| s.id).collect();
        ids.sort();
        let mut want = vec![
            nodes[1].probe.sid.to_string(),
            nodes[2].probe.sid.to_string(),
        ];
        want.sort();
        assert_eq!(ids, want, "{proto:?}");
        assert_eq!(nodes[2].adapter.server_count().await, Ok(3));
        match proto {
            Proto::Classic | Proto::ClassicSpecific => {
                let mut all_rooms: Vec<String> = nodes[0]
                    .adapter
                    .all_rooms()
                    .await
                    .unwrap()
                    .iter()
                    .map(|room| room.to_string())
                    .collect();
                all_rooms.sort();
                // Every socket's own room too, as Node's allRooms.
                let mut want: Vec<String> = nodes.iter().map(|n| n.probe.sid.to_string()).collect();
                want.extend(["r1".to_owned(), "r2".to_owned()]);
                want.sort();
                assert_eq!(all_rooms, want);
            }
            Proto::Sharded(_) => assert!(matches!(
                nodes[0].adapter.all_rooms().await,
                Err(AdapterError::Unsupported(_))
            )),
        }
        assert_eq!(
            nodes[0]
                .node
                .stats()
                .request_timeouts
                .load(Ordering::Relaxed),
            0
        );
    }
}

#[tokio::test]
async fn server_side_emits_reach_the_other_nodes_with_and_without_ack() {
    for proto in PROTOS {
        let (_bus, mut nodes) = nodes(proto, 3, Duration::from_secs(1)).await;
        let event = |name: &str| Payload {
            args: vec![json!(name), json!(1)],
            attachments: Vec::new(),
        };
        nodes[0].adapter.server_side_emit(event("hello"));
        let mut acks = nodes[0]
            .adapter
            .server_side_emit_with_ack(event("ping"))
            .await
            .unwrap();
        acks.sort_by_key(|ack| ack.args[0].as_u64());
        // One ack per other node, its first argument only.
        let firsts: Vec<Vec<Value>> = acks.into_iter().map(|ack| ack.args).collect();
        assert_eq!(firsts, vec![vec![json!(1)], vec![json!(2)]], "{proto:?}");
        // The emitting node's own handlers get nothing; the others get both, in order.
        settle(&mut nodes).await;
        assert!(nodes[0].events.lock().is_empty());
        for node in &nodes[1..] {
            let names: Vec<Value> = node
                .events
                .lock()
                .iter()
                .map(|p| p.args[0].clone())
                .collect();
            assert_eq!(names, [json!("hello"), json!("ping")], "{proto:?}");
        }
    }
}

#[tokio::test]
async fn remote_join_leave_and_disconnect_apply_on_every_node() {
    for proto in PROTOS {
        let (_bus, mut nodes) = nodes(proto, 3, Duration::from_secs(1)).await;
        nodes[0]
            .adapter
            .sockets_join(&Target::default(), &rooms(&["joined"]), CLUSTER);
        // Applied on every node before the fetch is answered (each link keeps the order);
        // in the dynamic modes, only then are the room's channels subscribed.
        let joined = nodes[0]
            .adapter
            .fetch_sockets(&to(&["joined"]), CLUSTER)
            .await;
        assert_eq!(joined.map(|sockets| sockets.len()), Ok(3), "{proto:?}");
        nodes[0]
            .adapter
            .broadcast(&broadcast("to-joined"), &to(&["joined"]), CLUSTER);
        for node in &mut nodes {
            assert!(node.next().await.contains("to-joined"), "{proto:?}");
        }
        nodes[1]
            .adapter
            .sockets_leave(&Target::default(), &rooms(&["joined"]), CLUSTER);
        nodes[1]
            .adapter
            .broadcast(&broadcast("after-leave"), &to(&["joined"]), CLUSTER);
        for frames in settle(&mut nodes).await {
            assert!(frames.is_empty(), "{proto:?}: {frames:?}");
        }
        let only_two = Target {
            rooms: vec![Room::from(nodes[2].probe.sid.as_str())],
            except: Vec::new(),
        };
        nodes[0]
            .adapter
            .disconnect_sockets(&only_two, false, CLUSTER);
        settle(&mut nodes).await;
        let disconnected: Vec<bool> = nodes
            .iter()
            .map(|node| node.probe.disconnected.load(Ordering::Acquire))
            .collect();
        assert_eq!(disconnected, [false, false, true], "{proto:?}");
    }
}

#[tokio::test]
async fn broadcast_with_acks_collects_counts_and_acks_of_every_node() {
    for proto in PROTOS {
        let (_bus, nodes) = nodes(proto, 3, Duration::from_secs(1)).await;
        let (events, mut received) = mpsc::unbounded_channel();
        let route = AckRoute {
            id: 7,
            timeout: Duration::from_secs(1),
            events,
        };
        let local = nodes[0].adapter.broadcast_with_ack(
            &broadcast("ask"),
            &Target::default(),
            CLUSTER,
            route,
        );
        assert_eq!(local, 1);
        let (mut servers, mut reports, mut clients, mut replies) = (None, 0, 0, Vec::new());
        while servers.is_none_or(|servers| reports < servers) || replies.len() < 1 + clients {
            match tokio::time::timeout(Duration::from_secs(2), received.recv()).await {
                Ok(Some(AckEvent::RemoteServers(count))) => servers = Some(count),
                Ok(Some(AckEvent::RemoteClients(count))) => {
                    reports += 1;
                    clients += count;
                }
                Ok(Some(AckEvent::Reply(reply))) => replies.push(reply.args[0].clone()),
                other => panic!("{proto:?}: {other:?}"),
            }
        }
        assert_eq!(
            (servers, clients, replies.len()),
            (Some(2), 2, 3),
            "{proto:?}"
        );
    }
}

#[tokio::test]
async fn a_node_that_stops_answering_makes_requests_time_out() {
    for proto in PROTOS {
        let (_bus, nodes) = nodes(proto, 3, Duration::from_millis(100)).await;
        nodes[2].link.pause(true);
        let fetched = nodes[0]
            .adapter
            .fetch_sockets(&Target::default(), CLUSTER)
            .await;
        assert!(
            matches!(
                fetched,
                Err(AdapterError::Timeout {
                    operation: "fetchSockets",
                    received: 1,
                    expected: 2,
                    ..
                })
            ),
            "{proto:?}: {fetched:?}"
        );
        let acked = nodes[0]
            .adapter
            .server_side_emit_with_ack(Payload {
                args: vec![json!("x")],
                attachments: Vec::new(),
            })
            .await;
        let Err(AdapterError::Timeout { partial, .. }) = acked else {
            panic!("{proto:?}: {acked:?}");
        };
        assert_eq!(
            partial.len(),
            1,
            "{proto:?}: the answering node's ack is kept"
        );
        let stats = nodes[0].node.stats();
        assert_eq!(stats.request_timeouts.load(Ordering::Relaxed), 2);
        assert_eq!(stats.requests.load(Ordering::Relaxed), 2);
        // Resumed, the node answers again (late answers to dead requests are ignored).
        nodes[2].link.pause(false);
        let all = nodes[0]
            .adapter
            .fetch_sockets(&Target::default(), CLUSTER)
            .await;
        assert_eq!(all.map(|sockets| sockets.len()), Ok(3), "{proto:?}");
    }
}

#[tokio::test]
async fn garbage_on_the_channels_is_counted_invalid_and_the_node_keeps_working() {
    type Published<'a> = &'a [(&'a str, &'a [u8])];
    let garbage: [(Proto, Published); 2] = [
        (
            Proto::Classic,
            &[
                ("socket.io#/#", b"not msgpack"),
                ("socket.io#/#", b"\x92\xa1a\x80"),
                ("socket.io#/#", b"\x91\x91\x91\x91\x91"),
                ("socket.io-request#/#", b"{\"type\":5}"),
                ("socket.io-request#/#", b"{broken"),
                ("socket.io-response#/#", b"\xc1"),
            ],
        ),
        (
            Proto::Sharded(SubscriptionMode::Dynamic),
            &[
                ("socket.io#/#", b"not msgpack"),
                ("socket.io#/#", b"\xc1"),
                ("socket.io#/#", b"{\"uid\":\"x\",\"nsp\":\"/\",\"type\":3}"),
            ],
        ),
    ];
    for (proto, messages) in garbage {
        let (bus, mut nodes) = nodes(proto, 2, Duration::from_secs(1)).await;
        for (channel, payload) in messages {
            bus.publish(channel, payload);
        }
        assert_eq!(settle(&mut nodes).await, [Vec::<String>::new(), Vec::new()]);
        let invalid = nodes[0]
            .node
            .stats()
            .received_invalid
            .load(Ordering::Relaxed);
        assert_eq!(invalid, messages.len() as u64, "{proto:?}");
    }
}

#[tokio::test]
async fn a_closed_link_drops_and_counts_what_it_cannot_publish() {
    let (_bus, mut nodes) = nodes(Proto::Classic, 2, Duration::from_secs(1)).await;
    nodes[1].node.close().await;
    assert!(!nodes[1].node.is_up());
    // Local delivery goes on.
    assert_eq!(
        nodes[1]
            .adapter
            .broadcast(&broadcast("lost"), &Target::default(), CLUSTER),
        1
    );
    assert!(nodes[1].next().await.contains("lost"));
    assert_eq!(
        nodes[1]
            .node
            .stats()
            .publish_dropped
            .load(Ordering::Relaxed),
        1
    );
    // The closed node left: one server, and broadcasts of the other reach only its own.
    assert_eq!(nodes[0].adapter.server_count().await, Ok(1));
    nodes[0]
        .adapter
        .broadcast(&broadcast("after"), &Target::default(), CLUSTER);
    assert!(nodes[0].next().await.contains("after"));
    assert!(nodes[1].frames.try_recv().is_err());
}

#[tokio::test]
async fn dynamic_modes_subscribe_room_channels_while_the_room_lives() {
    let (bus, mut nodes) = nodes(
        Proto::Sharded(SubscriptionMode::Dynamic),
        2,
        Duration::from_secs(1),
    )
    .await;
    let sid = nodes[1].probe.sid;
    nodes[1].adapter.join(sid, &rooms(&["room1"]));
    assert_eq!(
        nodes[0]
            .node
            .link()
            .server_count("socket.io#/#room1#")
            .await,
        Ok(1)
    );
    // The socket's own room is private in `dynamic`: no channel.
    let own = format!("socket.io#/#{sid}#");
    assert_eq!(nodes[0].node.link().server_count(&own).await, Ok(0));
    nodes[0]
        .adapter
        .broadcast(&broadcast("in-room"), &to(&["room1"]), CLUSTER);
    assert!(nodes[1].next().await.contains("in-room"));
    nodes[1].adapter.leave(sid, "room1");
    assert_eq!(
        nodes[0]
            .node
            .link()
            .server_count("socket.io#/#room1#")
            .await,
        Ok(0)
    );
    drop(bus);
}
