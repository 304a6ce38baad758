//! The Redis adapter, wire-compatible with Node's `@socket.io/redis-adapter` 8.3 (the
//! classic adapter) and `@socket.io/redis-emitter`: ioscale and Node nodes on one Redis
//! behave as one cluster.
//!
//! One [`RedisCluster`] per process holds two Redis connections (through `fred`, which
//! pipelines, reconnects with a backoff and resubscribes): a publisher fed by a bounded
//! queue and drained in pipelined batches, and a subscriber whose read loop hands each
//! message to its namespace's [`RedisAdapter`] without ever waiting on a client. While
//! Redis is down, local delivery goes on; what cannot be published is dropped and counted.
//!
//! Wire formats: see [`wire`]; the reference is `socketio/socket.io-redis-adapter`,
//! `lib/index.ts` (8.3.0).

mod adapter;
pub mod health;
mod link;
pub mod sharded;
mod shared;
pub mod wire;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use dashmap::DashMap;
use fred::clients::SubscriberClient;
use fred::prelude::{Client, ClientLike, Config, EventInterface, PubsubInterface};
use tokio::sync::mpsc;

pub use adapter::RedisAdapter;
pub use health::Health;

use super::{Adapter, AdapterContext, AdapterError, AdapterFactory};

/// Redis adapter settings. Defaults match the Node adapter.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port[/db]`.
    pub url: String,
    /// Channel prefix (`key` in the Node adapter). Default `socket.io`.
    pub key_prefix: String,
    /// How long cluster requests (fetch sockets, all rooms, server-side acks) wait. Default 5 s.
    pub requests_timeout: Duration,
    /// Answer requests on the requester's own response channel. Default off.
    pub publish_on_specific_response_channel: bool,
    /// Messages waiting to be published before new ones are dropped. Default 65536.
    pub publish_queue: usize,
    /// Bytes of messages from Redis waiting for the subscriber loop before new ones are
    /// dropped (counted as lagged). Default 64 MiB.
    pub subscriber_queue_bytes: usize,
}

/// Default of [`RedisConfig::subscriber_queue_bytes`]: twice Redis's default hard limit of a
/// subscriber's output buffer (32 MB), so that the node takes in whatever Redis would hold
/// for it before cutting it.
pub const DEFAULT_SUBSCRIBER_QUEUE_BYTES: usize = 64 << 20;

impl RedisConfig {
    pub fn new(url: impl Into<String>) -> Self {
        RedisConfig {
            url: url.into(),
            key_prefix: "socket.io".to_owned(),
            requests_timeout: Duration::from_millis(5000),
            publish_on_specific_response_channel: false,
            publish_queue: 65_536,
            subscriber_queue_bytes: DEFAULT_SUBSCRIBER_QUEUE_BYTES,
        }
    }
}

/// Counters of the Redis link, for logs, health checks and metrics.
#[derive(Debug, Default)]
pub struct RedisStats {
    pub published: AtomicU64,
    /// Messages not published: queue full, Redis down, or refused by Redis.
    pub publish_dropped: AtomicU64,
    /// Published messages Redis did not confirm (timeout, connection lost in flight): they
    /// may or may not have reached the other nodes.
    pub publish_unknown: AtomicU64,
    pub received: AtomicU64,
    /// Messages from Redis that did not decode (dropped).
    pub received_invalid: AtomicU64,
    /// Messages from Redis dropped because the subscriber loop fell behind (its queue full).
    pub received_lagged: AtomicU64,
    /// Times Redis closed the subscriber connection while the publisher's stayed up (its
    /// output-buffer limit): each lost at least one message, how many is not known here.
    pub subscriber_cuts: AtomicU64,
    pub reconnects: AtomicU64,
    pub requests: AtomicU64,
    pub request_timeouts: AtomicU64,
}

#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("invalid Redis configuration: {0}")]
    Config(String),
}

/// One node's link to Redis, shared by the adapters of all its namespaces.
pub struct RedisCluster {
    config: RedisConfig,
    uid: String,
    publisher: Client,
    subscriber: SubscriberClient,
    outgoing: mpsc::Sender<link::Outgoing>,
    adapters: DashMap<String, Weak<RedisAdapter>>,
    stats: Arc<RedisStats>,
    health: Arc<Health>,
}

impl std::fmt::Debug for RedisCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCluster")
            .field("uid", &self.uid)
            .field("up", &self.is_up())
            .finish()
    }
}

impl RedisCluster {
    /// Starts connecting (in the background: a node whose Redis is down still serves its
    /// own clients, and joins the cluster once Redis answers).
    pub fn connect(config: RedisConfig) -> Result<Arc<Self>, RedisError> {
        let redis_config =
            Config::from_url(&config.url).map_err(|e| RedisError::Config(e.to_string()))?;
        let build = |subscriber: bool| link::builder(redis_config.clone(), subscriber, 5_000);
        let publisher = build(false)
            .build()
            .map_err(|e| RedisError::Config(e.to_string()))?;
        let subscriber = build(true)
            .build_subscriber_client()
            .map_err(|e| RedisError::Config(e.to_string()))?;
        let stats = Arc::new(RedisStats::default());
        let outgoing = link::spawn_publisher(
            publisher.clone(),
            config.publish_queue,
            link::PublishCommand::Publish,
            stats.clone(),
        );
        let cluster = Arc::new(RedisCluster {
            uid: hex_id(),
            publisher,
            subscriber,
            outgoing,
            adapters: DashMap::new(),
            stats,
            health: Health::new(health::redacted(&config.url), "Redis"),
            config,
        });
        cluster.publisher.connect();
        cluster.subscriber.connect();
        // A spawned task: resubscribes after every reconnection.
        drop(cluster.subscriber.manage_subscriptions());
        tokio::spawn(subscribe_loop(
            link::Inbox::new(
                cluster.subscriber.message_rx(),
                cluster.config.subscriber_queue_bytes,
            ),
            Arc::downgrade(&cluster),
        ));
        tokio::spawn(watch_connection(
            cluster.subscriber.clone(),
            cluster.publisher.clone(),
            Arc::downgrade(&cluster),
        ));
        let publisher = cluster.publisher.clone();
        tokio::spawn(health::probe(Arc::downgrade(&cluster.health), move || {
            let publisher = publisher.clone();
            async move {
                let options = fred::prelude::Options {
                    timeout: Some(health::PING_TIMEOUT),
                    ..Default::default()
                };
                publisher.with_options(&options).ping::<()>(None).await
            }
        }));
        Ok(cluster)
    }

    /// The adapter factory to build an [`crate::Io`] with.
    pub fn factory(self: &Arc<Self>) -> AdapterFactory {
        let cluster = self.clone();
        Arc::new(move |context: AdapterContext| {
            let adapter = RedisAdapter::new(cluster.clone(), context);
            cluster
                .adapters
                .insert(adapter.namespace().to_owned(), Arc::downgrade(&adapter));
            adapter.subscribe();
            adapter as Arc<dyn Adapter>
        })
    }

    pub fn config(&self) -> &RedisConfig {
        &self.config
    }

    /// This node's id on the wire (compared with `uid` to skip its own messages).
    pub fn uid(&self) -> &str {
        &self.uid
    }

    pub fn stats(&self) -> &RedisStats {
        &self.stats
    }

    /// Whether both connections are up.
    pub fn is_up(&self) -> bool {
        self.health.is_up()
    }

    /// The link's state, PING latency, stalls and cuts.
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// Waits until both connections are up (or the timeout passes).
    pub async fn wait_until_up(&self, timeout: Duration) -> bool {
        link::wait_connected(&self.publisher, &self.subscriber, &self.health, timeout).await
    }

    /// Leaves the cluster: unsubscribes everything and closes both connections (a
    /// deliberate stop, not logged as an outage).
    pub async fn close(&self) {
        self.health.begin_close();
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            let _ = self.subscriber.unsubscribe_all().await;
            let _ = self.subscriber.quit().await;
            let _ = self.publisher.quit().await;
        })
        .await;
        self.health.set_up(false);
        tracing::info!(redis = %self.health.address(), "left the Redis cluster");
    }

    /// Queues a message for publishing; never waits (see [`link::enqueue`]).
    fn publish(&self, channel: String, payload: Vec<u8>) {
        link::enqueue(&self.outgoing, &self.health, &self.stats, channel, payload);
    }

    /// `PUBSUB NUMSUB` of a channel: how many nodes subscribe to it.
    async fn numsub(&self, channel: &str) -> Result<usize, AdapterError> {
        let reply: Vec<fred::prelude::Value> = self
            .publisher
            .pubsub_numsub(channel)
            .await
            .map_err(|e| AdapterError::Unavailable(e.to_string()))?;
        Ok(reply.get(1).and_then(|count| count.as_u64()).unwrap_or(0) as usize)
    }

    fn adapter(&self, nsp: &str) -> Option<Arc<RedisAdapter>> {
        self.adapters.get(nsp).and_then(|weak| weak.upgrade())
    }
}

/// Hands every message from Redis to its namespace's adapter. Never waits on clients:
/// deliveries only queue bytes.
async fn subscribe_loop(mut inbox: link::Inbox, cluster: Weak<RedisCluster>) {
    let Some(stats) = cluster.upgrade().map(|cluster| cluster.stats.clone()) else {
        return;
    };
    while let Some(message) = inbox.next(&stats).await {
        let Some(cluster) = cluster.upgrade() else {
            return;
        };
        let Some(payload) = message.value.as_bytes() else {
            link::invalid(&cluster.stats, &message.channel, &"message is not a string");
            continue;
        };
        let channel: &str = &message.channel;
        let Some(kind) = wire::parse_channel(&cluster.config.key_prefix, channel) else {
            continue;
        };
        let nsp = match kind {
            wire::ChannelKind::Broadcast { nsp, .. }
            | wire::ChannelKind::Request { nsp }
            | wire::ChannelKind::Response { nsp } => nsp,
        };
        let Some(adapter) = cluster.adapter(nsp) else {
            continue;
        };
        let handled = match kind {
            wire::ChannelKind::Broadcast { room, .. } => adapter.on_broadcast(room, payload),
            wire::ChannelKind::Request { .. } => adapter.on_request(payload),
            wire::ChannelKind::Response { .. } => adapter.on_response(payload),
        };
        if let Err(error) = handled {
            link::invalid(&cluster.stats, channel, &error);
        }
    }
}

/// Tracks whether Redis is reachable (one log line per change of state), and counts the
/// cuts of the subscriber connection.
async fn watch_connection(
    subscriber: SubscriberClient,
    publisher: Client,
    cluster: Weak<RedisCluster>,
) {
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
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut watch = link::Watch::default();
    loop {
        let mut cut = false;
        tokio::select! {
            error = errors.recv() => if let Ok((error, server)) = error {
                watch.subscriber_error(&health, &error, server.as_ref());
            },
            error = publisher_errors.recv() => if let Ok((error, server)) = error {
                watch.publisher_error(&health, &error, server.as_ref());
            },
            server = reconnects.recv() => if let Ok(server) = server {
                tracing::debug!(%server, "Redis subscriber connected");
                if let Some(was_cut) = watch.subscriber_reconnected(publisher.is_connected()) {
                    cut = was_cut;
                    stats.reconnects.fetch_add(1, Ordering::Relaxed);
                }
            },
            server = publisher_reconnects.recv() => if let Ok(server) = server {
                tracing::debug!(%server, "Redis publisher connected");
                watch.publisher_reconnected();
            },
            _ = tick.tick() => {}
        }
        if health.is_closing() {
            return;
        }
        let Some(cluster) = cluster.upgrade() else {
            return;
        };
        if cut {
            health::subscriber_cut(
                &health,
                &stats,
                &cluster.publisher,
                cut_hold_key(&cluster.config.key_prefix),
                &cluster.uid,
            );
        }
        watch.observe(
            &health,
            subscriber.is_connected() && publisher.is_connected(),
        );
    }
}

/// The key whose holder is the one node out of rotation for repeated cuts.
fn cut_hold_key(prefix: &str) -> String {
    format!("{prefix}#ioscale#cut-hold")
}

/// 16 lower-case hex digits: node uids and request ids of both adapters, as Node's
/// adapters make them.
fn hex_id() -> String {
    let raw: [u8; 8] = rand::random();
    raw.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// A node's link to Redis: the classic adapter on one Redis server, or the sharded adapter
/// on a Redis Cluster. What the application and its operations endpoints need of either.
#[derive(Debug, Clone)]
pub enum RedisLink {
    Classic(Arc<RedisCluster>),
    Sharded(Arc<sharded::ShardedCluster>),
}

impl RedisLink {
    /// The adapter factory to build an [`crate::Io`] with.
    pub fn factory(&self) -> AdapterFactory {
        match self {
            RedisLink::Classic(cluster) => cluster.factory(),
            RedisLink::Sharded(cluster) => cluster.factory(),
        }
    }

    pub fn is_up(&self) -> bool {
        match self {
            RedisLink::Classic(cluster) => cluster.is_up(),
            RedisLink::Sharded(cluster) => cluster.is_up(),
        }
    }

    pub fn stats(&self) -> &RedisStats {
        match self {
            RedisLink::Classic(cluster) => cluster.stats(),
            RedisLink::Sharded(cluster) => cluster.stats(),
        }
    }

    /// Up or down, PING latency, stalls, repeated cuts: what `/ready` and the metrics report.
    pub fn health(&self) -> &Health {
        match self {
            RedisLink::Classic(cluster) => cluster.health(),
            RedisLink::Sharded(cluster) => cluster.health(),
        }
    }

    /// This node's id on the wire.
    pub fn uid(&self) -> &str {
        match self {
            RedisLink::Classic(cluster) => cluster.uid(),
            RedisLink::Sharded(cluster) => cluster.uid(),
        }
    }

    pub async fn wait_until_up(&self, timeout: Duration) -> bool {
        match self {
            RedisLink::Classic(cluster) => cluster.wait_until_up(timeout).await,
            RedisLink::Sharded(cluster) => cluster.wait_until_up(timeout).await,
        }
    }

    pub async fn close(&self) {
        match self {
            RedisLink::Classic(cluster) => cluster.close().await,
            RedisLink::Sharded(cluster) => cluster.close().await,
        }
    }
}
