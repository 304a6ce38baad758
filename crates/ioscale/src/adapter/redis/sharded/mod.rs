//! The sharded Redis adapter, wire-compatible with Node's `createShardedAdapter`
//! (`@socket.io/redis-adapter` 8.3): Redis Cluster with sharded pub/sub (`SPUBLISH`,
//! `SSUBSCRIBE`, Redis ≥ 7), so that channels spread over the shards and survive the failover
//! of a master to its replica.
//!
//! Channels of namespace `N` with prefix `P`: the main channel `P#N#` (every broadcast and
//! request), one response channel per node `P#N#<uid>#`, and in the dynamic subscription
//! modes one channel per room `P#N#<room>#`, subscribed by the nodes that have the room.
//!
//! It is the cluster core over `ShardedFormat` and the [`ShardedRedis`] link. The link
//! holds two `fred` cluster clients: a publisher fed by a
//! bounded queue and drained in pipelined batches (each `SPUBLISH` goes to its slot's master),
//! and a subscriber with one connection per master. Subscriptions are made by one task that
//! keeps the set of wanted channels and renews them all after a reconnection or a topology
//! change (a promoted replica, moved slots), one channel per command.
//!
//! Wire formats: [`wire`]; notes: `docs/wire/redis-sharded-adapter-8.3.md`.

mod format;
/// The sharded adapter's wire codec, public as a door for the fuzz targets only.
#[doc(hidden)]
pub mod wire;

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use fred::prelude::{
    Client, ClientLike, ClusterInterface, Config, EventInterface, PubsubInterface, ServerConfig,
};
use futures_util::StreamExt as _;
use parking_lot::Mutex;
use tokio::sync::mpsc;

pub(crate) use format::ShardedFormat;

use super::{ClusterNode, ClusterStats, Health, RedisError, health, link, new_uid};
use crate::adapter::cluster::seam::{self, Link};
use crate::adapter::{AdapterError, BoxFuture};

/// Which channels a node subscribes to, and where single-room broadcasts are published
/// (`subscriptionMode` of the Node adapter). Every node of a cluster must use the same.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SubscriptionMode {
    /// Main and response channels only: every broadcast goes through the main channel.
    Static,
    /// Plus one channel per room, except the rooms named after a local socket id.
    #[default]
    Dynamic,
    /// Plus one channel per room, socket-id rooms included.
    DynamicPrivate,
}

impl FromStr for SubscriptionMode {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "static" => Ok(SubscriptionMode::Static),
            "dynamic" => Ok(SubscriptionMode::Dynamic),
            "dynamic-private" => Ok(SubscriptionMode::DynamicPrivate),
            other => Err(format!(
                "unknown subscription mode {other:?} (expected static, dynamic or dynamic-private)"
            )),
        }
    }
}

impl SubscriptionMode {
    /// Whether a single-room broadcast without ack goes to the room's own channel rather
    /// than the main one (Node's `computeChannel`).
    pub fn publishes_on_room_channel(self, room: &str) -> bool {
        match self {
            SubscriptionMode::Static => false,
            SubscriptionMode::Dynamic => !wire::looks_like_socket_id(room),
            SubscriptionMode::DynamicPrivate => true,
        }
    }

    /// Whether a node subscribes to a room's channel when the room appears on it; a room
    /// named after one of the node's sockets is private (Node's `shouldUseASeparateNamespace`).
    pub fn subscribes_room(self, private: bool) -> bool {
        match self {
            SubscriptionMode::Static => false,
            SubscriptionMode::Dynamic => !private,
            SubscriptionMode::DynamicPrivate => true,
        }
    }
}

/// Sharded adapter settings. Defaults match the Node adapter.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ShardedConfig {
    /// Seed nodes of the Redis Cluster (`redis://[user:password@]host:port`); the rest of
    /// the cluster is discovered from them.
    pub urls: Vec<String>,
    /// Channel prefix (`channelPrefix`). Default `socket.io`.
    pub key_prefix: String,
    /// Default `dynamic`.
    pub subscription_mode: SubscriptionMode,
    /// How long fetch sockets and server-side acks wait. Default 5 s.
    pub requests_timeout: Duration,
    /// Messages waiting to be published before new ones are dropped. Default 65536.
    pub publish_queue: usize,
    /// Bytes of messages from Redis waiting for the subscriber loop before new ones are
    /// dropped (counted as lagged). Default 64 MiB.
    pub subscriber_queue_bytes: usize,
}

impl ShardedConfig {
    /// The settings for the cluster (or single server) at `urls`, every other field at its
    /// default.
    pub fn new(urls: Vec<String>) -> Self {
        ShardedConfig {
            urls,
            key_prefix: "socket.io".to_owned(),
            subscription_mode: SubscriptionMode::default(),
            requests_timeout: Duration::from_millis(5000),
            publish_queue: 65_536,
            subscriber_queue_bytes: super::DEFAULT_SUBSCRIBER_QUEUE_BYTES,
        }
    }
}

/// A change to the set of channels this node wants.
#[derive(Debug)]
enum Subscription {
    Add(String),
    Remove(String),
    /// Subscribe every wanted channel again (after a reconnection or a topology change).
    Renew,
}

/// The link to a Redis Cluster (sharded pub/sub: `SPUBLISH`, `SSUBSCRIBE`).
pub struct ShardedRedis {
    publisher: Client,
    subscriber: Client,
    outgoing: mpsc::Sender<link::Outgoing>,
    subscriptions: mpsc::UnboundedSender<Subscription>,
    inbox: Mutex<Option<link::Inbox>>,
    stats: Arc<ClusterStats>,
    health: Arc<Health>,
    /// Channels wanted but not (yet) subscribed, for the logs and `/ready`.
    subscribe_failures: AtomicU64,
    /// This node's uid and the key whose holder is the one node out of rotation for
    /// repeated cuts.
    uid: String,
    cut_hold_key: String,
}

impl std::fmt::Debug for ShardedRedis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardedRedis")
            .field("uid", &self.uid)
            .field("up", &self.health.is_up())
            .finish()
    }
}

impl ShardedRedis {
    /// Joins the cluster of the nodes on a Redis Cluster with Node's sharded adapter
    /// protocol. Connects in the background (local clients are served while the Redis
    /// Cluster is unreachable).
    pub fn connect(config: ShardedConfig) -> Result<Arc<ClusterNode>, RedisError> {
        let uid = new_uid();
        let link = ShardedRedis::open(&config, uid.clone())?;
        let format = ShardedFormat::new(&config.key_prefix, &uid, config.subscription_mode);
        Ok(ClusterNode::new(
            uid,
            Box::new(format),
            link,
            config.requests_timeout,
        ))
    }

    /// The link alone (its messages wait for a [`ClusterNode`] to read them).
    pub(crate) fn open(config: &ShardedConfig, uid: String) -> Result<Arc<Self>, RedisError> {
        let redis_config = cluster_config(&config.urls)?;
        // A failed master is replaced after the cluster's node timeout: retry quickly.
        let build = |subscriber: bool| {
            link::builder(redis_config.clone(), subscriber, 2_000)
                .build()
                .map_err(|e| RedisError::Config(e.to_string()))
        };
        let publisher = build(false)?;
        let subscriber = build(true)?;
        let stats = Arc::new(ClusterStats::default());
        let outgoing = link::spawn_publisher(
            publisher.clone(),
            config.publish_queue,
            link::PublishCommand::SPublish,
            stats.clone(),
        );
        let (subscriptions, changes) = mpsc::unbounded_channel();
        let address = config
            .urls
            .iter()
            .map(|url| health::redacted(url))
            .collect::<Vec<_>>()
            .join(",");
        let inbox = link::Inbox::new(subscriber.message_rx(), config.subscriber_queue_bytes);
        let redis = Arc::new(ShardedRedis {
            publisher,
            subscriber,
            outgoing,
            subscriptions,
            inbox: Mutex::new(Some(inbox)),
            stats,
            health: Health::new(address, "Redis Cluster"),
            subscribe_failures: AtomicU64::new(0),
            uid,
            cut_hold_key: super::cut_hold_key(&config.key_prefix),
        });
        redis.publisher.connect();
        redis.subscriber.connect();
        let weak = Arc::downgrade(&redis);
        tokio::spawn(manage_subscriptions(
            redis.subscriber.clone(),
            changes,
            weak.clone(),
        ));
        tokio::spawn(watch_cluster(
            redis.subscriber.clone(),
            redis.publisher.clone(),
            weak,
        ));
        let publisher = redis.publisher.clone();
        tokio::spawn(health::probe(Arc::downgrade(&redis.health), move || {
            ping_masters(publisher.clone())
        }));
        Ok(redis)
    }

    fn want(&self, change: Subscription) {
        let _ = self.subscriptions.send(change);
    }
}

impl Link for ShardedRedis {
    /// Queues a message for `SPUBLISH`; never waits (dropped and counted when the queue is
    /// full or Redis is down).
    fn publish(&self, channel: String, payload: Vec<u8>) {
        link::enqueue(&self.outgoing, &self.health, &self.stats, channel, payload);
    }

    /// Sharded pub/sub has no patterns: the sharded format asks for channels only.
    fn subscribe(&self, subscriptions: Vec<seam::Subscription>) {
        for subscription in subscriptions {
            match subscription {
                seam::Subscription::Channel(channel) => self.want(Subscription::Add(channel)),
                seam::Subscription::Pattern(pattern) => {
                    tracing::warn!(pattern, "sharded pub/sub has no pattern subscriptions")
                }
            }
        }
    }

    fn unsubscribe(&self, channel: String) {
        self.want(Subscription::Remove(channel));
    }

    /// `PUBSUB SHARDNUMSUB` of a channel, asked of its slot's master: how many nodes
    /// subscribe to it (Node sums the answers of every master; the others answer 0).
    fn server_count(&self, channel: &str) -> BoxFuture<Result<usize, AdapterError>> {
        let publisher = self.publisher.clone();
        let channel = channel.to_owned();
        Box::pin(async move {
            let reply: Vec<fred::prelude::Value> = publisher
                .pubsub_shardnumsub(channel)
                .await
                .map_err(|e| AdapterError::Unavailable(e.to_string()))?;
            Ok(reply.get(1).and_then(|count| count.as_u64()).unwrap_or(0) as usize)
        })
    }

    fn messages(&self) -> Option<seam::Messages> {
        let inbox = self.inbox.lock().take()?;
        Some(link::received(inbox, self.stats.clone()))
    }

    fn stats(&self) -> &ClusterStats {
        &self.stats
    }

    /// The link's state, PING latency (of the slowest master), stalls and cuts.
    fn health(&self) -> &Health {
        &self.health
    }

    fn wait_until_up(&self, timeout: Duration) -> BoxFuture<bool> {
        let (publisher, subscriber, health) = (
            self.publisher.clone(),
            self.subscriber.clone(),
            self.health.clone(),
        );
        Box::pin(
            async move { link::wait_connected(&publisher, &subscriber, &health, timeout).await },
        )
    }

    /// Closing the connections drops every subscription (Node sends nothing either). A
    /// deliberate stop, not logged as an outage.
    fn close(&self) -> BoxFuture<()> {
        let (publisher, subscriber, health) = (
            self.publisher.clone(),
            self.subscriber.clone(),
            self.health.clone(),
        );
        Box::pin(async move {
            health.begin_close();
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                let _ = subscriber.quit().await;
                let _ = publisher.quit().await;
            })
            .await;
            health.set_up(false);
            tracing::info!(redis = %health.address(), "left the Redis Cluster");
        })
    }
}

/// A fred cluster configuration from seed urls (credentials and TLS of the first one).
fn cluster_config(urls: &[String]) -> Result<Config, RedisError> {
    let first = urls
        .first()
        .ok_or_else(|| RedisError::Config("no Redis Cluster seed url".into()))?;
    let mut config = Config::from_url(first).map_err(|e| RedisError::Config(e.to_string()))?;
    let mut hosts = Vec::with_capacity(urls.len());
    for url in urls {
        if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
            return Err(RedisError::Config(format!(
                "{url}: expected redis://host:port or rediss://host:port"
            )));
        }
        let seed = Config::from_url(url).map_err(|e| RedisError::Config(e.to_string()))?;
        match seed.server {
            ServerConfig::Centralized { server } => {
                hosts.push((server.host.to_string(), server.port))
            }
            ServerConfig::Clustered { hosts: more, .. } => {
                hosts.extend(more.into_iter().map(|s| (s.host.to_string(), s.port)))
            }
            _ => return Err(RedisError::Config(format!("unsupported Redis url {url}"))),
        }
    }
    config.server = ServerConfig::Clustered {
        hosts: hosts
            .into_iter()
            .map(|(host, port)| fred::types::config::Server::new(host, port))
            .collect(),
        // Rediscover through every node seen so far, not only the seeds: a seed may be the
        // very master that failed.
        policy: fred::types::config::ClusterDiscoveryPolicy::UseCache,
    };
    Ok(config)
}

/// PING to every master (one stalled shard stalls the messages of its channels).
async fn ping_masters(publisher: Client) -> Result<(), fred::error::Error> {
    let options = fred::prelude::Options {
        timeout: Some(health::PING_TIMEOUT),
        ..Default::default()
    };
    let masters = publisher
        .cached_cluster_state()
        .map(|state| state.unique_primary_nodes())
        .unwrap_or_default();
    if masters.is_empty() {
        return publisher.with_options(&options).ping::<()>(None).await;
    }
    let pings = masters.into_iter().map(|master| {
        let options = fred::prelude::Options {
            cluster_node: Some(master),
            ..options.clone()
        };
        let publisher = publisher.clone();
        async move { publisher.with_options(&options).ping::<()>(None).await }
    });
    futures_util::future::join_all(pings)
        .await
        .into_iter()
        .collect()
}

/// Applies subscription changes in order, one channel per command (channels of one
/// `SSUBSCRIBE` must share a slot), and renews them all on request.
async fn manage_subscriptions(
    subscriber: Client,
    mut changes: mpsc::UnboundedReceiver<Subscription>,
    cluster: Weak<ShardedRedis>,
) {
    const MAX_BATCH: usize = 4096;
    const IN_FLIGHT: usize = 32;
    let mut wanted: HashSet<String> = HashSet::new();
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while changes.recv_many(&mut batch, MAX_BATCH).await > 0 {
        // The last change of a channel in the batch wins: a room created and deleted in
        // one batch costs nothing.
        let mut net: HashMap<String, bool> = HashMap::new();
        let mut renew = false;
        for change in batch.drain(..) {
            match change {
                Subscription::Add(channel) => {
                    net.insert(channel, true);
                }
                Subscription::Remove(channel) => {
                    net.insert(channel, false);
                }
                Subscription::Renew => renew = true,
            }
        }
        let mut subscribe = Vec::new();
        let mut unsubscribe = Vec::new();
        for (channel, on) in net {
            if on {
                if wanted.insert(channel.clone()) {
                    subscribe.push(channel);
                }
            } else if wanted.remove(&channel) {
                unsubscribe.push(channel);
            }
        }
        if renew {
            subscribe = wanted.iter().cloned().collect();
        }
        let subscribing = futures_util::stream::iter(subscribe.into_iter().map(|channel| {
            let subscriber = subscriber.clone();
            async move { (subscriber.ssubscribe(channel.clone()).await, channel) }
        }))
        .buffer_unordered(IN_FLIGHT)
        .collect::<Vec<_>>();
        let unsubscribing = futures_util::stream::iter(unsubscribe.into_iter().map(|channel| {
            let subscriber = subscriber.clone();
            async move { (subscriber.sunsubscribe(channel.clone()).await, channel) }
        }))
        .buffer_unordered(IN_FLIGHT)
        .collect::<Vec<_>>();
        let (subscribed, _) = tokio::join!(subscribing, unsubscribing);
        let failed: Vec<_> = subscribed
            .into_iter()
            .filter_map(|(result, channel)| result.err().map(|error| (error, channel)))
            .collect();
        let Some(cluster) = cluster.upgrade() else {
            return;
        };
        if let Some((error, channel)) = failed.first() {
            cluster
                .subscribe_failures
                .fetch_add(failed.len() as u64, Ordering::Relaxed);
            tracing::warn!(
                failed = failed.len(),
                channel,
                %error,
                "Redis SSUBSCRIBE failed: retrying in 1 s"
            );
            let retry = cluster.subscriptions.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let _ = retry.send(Subscription::Renew);
            });
        }
    }
}

/// Tracks whether the cluster is reachable, and renews the subscriptions after every
/// reconnection and every change of slot owners. Redis drops a channel's subscribers when
/// its slot moves (to a promoted replica, say) and tells them with a push that the client
/// library discards; the old master may even go on accepting `SPUBLISH` as a replica, so
/// nothing fails. Hence the slot map is read again every second and compared.
async fn watch_cluster(subscriber: Client, publisher: Client, cluster: Weak<ShardedRedis>) {
    let Some((health, stats)) = cluster
        .upgrade()
        .map(|cluster| (cluster.health.clone(), cluster.stats.clone()))
    else {
        return;
    };
    let mut errors = subscriber.error_rx();
    let mut publisher_errors = publisher.error_rx();
    let mut reconnects = subscriber.reconnect_rx();
    let mut publisher_reconnects = publisher.reconnect_rx();
    let mut watch = link::Watch::default();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut topology = tokio::time::interval(TOPOLOGY_CHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    topology.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut owners = slot_owners(&subscriber);
    loop {
        let mut renew = false;
        let mut cut = false;
        tokio::select! {
            error = errors.recv() => if let Ok((error, server)) = error {
                watch.subscriber_error(&health, &error, server.as_ref());
            },
            error = publisher_errors.recv() => if let Ok((error, server)) = error {
                watch.publisher_error(&health, &error, server.as_ref());
            },
            server = reconnects.recv() => if let Ok(server) = server {
                tracing::debug!(%server, "Redis Cluster subscriber connected");
                if let Some(was_cut) = watch.subscriber_reconnected(publisher.is_connected()) {
                    cut = was_cut;
                    stats.reconnects.fetch_add(1, Ordering::Relaxed);
                }
                renew = true;
            },
            server = publisher_reconnects.recv() => if let Ok(server) = server {
                tracing::debug!(%server, "Redis Cluster publisher connected");
                watch.publisher_reconnected();
            },
            _ = topology.tick() => {
                if subscriber.is_connected() {
                    // A failed sync is retried at the next tick.
                    let _ = tokio::time::timeout(TOPOLOGY_CHECK, subscriber.sync_cluster()).await;
                }
                let now = slot_owners(&subscriber);
                if now != owners {
                    tracing::info!(?now, "Redis Cluster slot owners changed: renewing subscriptions");
                    if publisher.is_connected() {
                        let _ = tokio::time::timeout(TOPOLOGY_CHECK, publisher.sync_cluster()).await;
                    }
                    owners = now;
                    renew = true;
                }
            },
            _ = tick.tick() => {}
        }
        if health.is_closing() {
            return;
        }
        let Some(cluster) = cluster.upgrade() else {
            return;
        };
        if renew {
            cluster.want(Subscription::Renew);
        }
        if cut {
            health::subscriber_cut(
                &health,
                &stats,
                &cluster.publisher,
                cluster.cut_hold_key.clone(),
                &cluster.uid,
            );
        }
        watch.observe(
            &health,
            subscriber.is_connected() && publisher.is_connected(),
        );
    }
}

/// How often the slot map is read again.
const TOPOLOGY_CHECK: Duration = Duration::from_secs(1);

/// `(first slot, last slot, master)` of each range, as the client routes them now.
fn slot_owners(client: &Client) -> Vec<(u16, u16, String)> {
    client
        .cached_cluster_state()
        .map(|state| {
            state
                .slots()
                .iter()
                .map(|range| (range.start, range.end, range.primary.to_string()))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_by_their_node_names() {
        assert_eq!("static".parse(), Ok(SubscriptionMode::Static));
        assert_eq!("dynamic".parse(), Ok(SubscriptionMode::Dynamic));
        assert_eq!(
            "dynamic-private".parse(),
            Ok(SubscriptionMode::DynamicPrivate)
        );
        assert!("Dynamic".parse::<SubscriptionMode>().is_err());
        assert_eq!(SubscriptionMode::default(), SubscriptionMode::Dynamic);
    }

    #[test]
    fn room_channels_follow_node_rules_in_each_mode() {
        let sid = "tY98fPw-8BkCSItmAAAB";
        for room in ["room1", sid] {
            assert!(!SubscriptionMode::Static.publishes_on_room_channel(room));
            assert!(SubscriptionMode::DynamicPrivate.publishes_on_room_channel(room));
        }
        assert!(SubscriptionMode::Dynamic.publishes_on_room_channel("room1"));
        // Socket ids (any 20-character room) go through the main channel in `dynamic`.
        assert!(!SubscriptionMode::Dynamic.publishes_on_room_channel(sid));
        assert!(!SubscriptionMode::Dynamic.publishes_on_room_channel("twenty-characters-xx"));

        assert!(!SubscriptionMode::Static.subscribes_room(false));
        assert!(SubscriptionMode::Dynamic.subscribes_room(false));
        assert!(!SubscriptionMode::Dynamic.subscribes_room(true));
        assert!(SubscriptionMode::DynamicPrivate.subscribes_room(true));
    }

    #[test]
    fn seeds_become_one_cluster_configuration() {
        let urls = vec![
            "redis://user:pw@127.0.0.1:7001".to_owned(),
            "redis://127.0.0.1:7002".to_owned(),
        ];
        let config = cluster_config(&urls).unwrap_or_else(|e| panic!("{e}"));
        let ServerConfig::Clustered { hosts, .. } = &config.server else {
            panic!("not a cluster configuration")
        };
        let ports: Vec<u16> = hosts.iter().map(|server| server.port).collect();
        assert_eq!(ports, vec![7001, 7002]);
        assert_eq!(config.username.as_deref(), Some("user"));
        assert!(cluster_config(&[]).is_err());
        assert!(cluster_config(&["http://x".to_owned()]).is_err());
    }

    #[test]
    fn hex_ids_are_sixteen_lower_case_digits() {
        let id = new_uid();
        assert_eq!(id.len(), 16);
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
        assert_ne!(id, new_uid());
    }
}
