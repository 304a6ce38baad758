//! The Redis adapters, wire-compatible with Node's `@socket.io/redis-adapter` 8.3 (the
//! classic adapter, and `@socket.io/redis-emitter`; [`sharded`] for `createShardedAdapter`):
//! ioscale and Node nodes on one Redis behave as one cluster.
//!
//! Both are the cluster core ([`crate::adapter::cluster`]) over a format and a link:
//! [`ClassicRedis`] is the link to one Redis server, speaking `ClassicFormat`;
//! [`sharded::ShardedRedis`] the link to a Redis Cluster, speaking
//! `ShardedFormat`. A link holds two connections (through `fred`, which
//! pipelines, reconnects with a backoff and resubscribes): a publisher fed by a bounded
//! queue and drained in pipelined batches, and a subscriber whose messages wait in a
//! byte-bounded queue for the node's receive loop, which never waits on a client. While
//! Redis is down, local delivery goes on; what cannot be published is dropped and counted.
//!
//! Wire formats: see [`wire`]; the reference is `socketio/socket.io-redis-adapter`,
//! `lib/index.ts` (8.3.0).

mod classic;
pub(crate) mod health;
mod link;
pub mod sharded;
/// The classic adapter's wire codec, public as a door for the fuzz targets only.
#[doc(hidden)]
pub mod wire;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use fred::clients::SubscriberClient;
use fred::prelude::{Client, ClientLike, Config, EventInterface, PubsubInterface};
use parking_lot::Mutex;
use tokio::sync::mpsc;

pub(crate) use classic::ClassicFormat;
pub use health::Health;

pub(crate) use super::cluster::new_uid;
use super::cluster::seam::{Link, Messages, Subscription};
pub use super::cluster::{ClusterNode, ClusterStats};
use super::{AdapterError, BoxFuture};

/// Redis adapter settings. Defaults match the Node adapter.
#[derive(Debug, Clone)]
#[non_exhaustive]
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
    /// The settings for the server at `url`, every other field at its default.
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

/// Why a Redis adapter could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisError {
    /// The URL or another setting was refused by the Redis client (the reason).
    #[error("invalid Redis configuration: {0}")]
    Config(String),
}

/// The link to one Redis server (classic pub/sub: `PUBLISH`, `SUBSCRIBE`, `PSUBSCRIBE`).
pub struct ClassicRedis {
    publisher: Client,
    subscriber: SubscriberClient,
    outgoing: mpsc::Sender<link::Outgoing>,
    inbox: Mutex<Option<link::Inbox>>,
    stats: Arc<ClusterStats>,
    health: Arc<Health>,
    /// This node's uid and the key whose holder is the one node out of rotation for
    /// repeated cuts.
    uid: String,
    cut_hold_key: String,
}

impl std::fmt::Debug for ClassicRedis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClassicRedis")
            .field("uid", &self.uid)
            .field("up", &self.health.is_up())
            .finish()
    }
}

impl ClassicRedis {
    /// Joins the cluster of the nodes on one Redis server with Node's classic adapter
    /// protocol. Connects in the background: a node whose Redis is down still serves its
    /// own clients, and joins the cluster once Redis answers.
    pub fn connect(config: RedisConfig) -> Result<Arc<ClusterNode>, RedisError> {
        let uid = new_uid();
        let link = ClassicRedis::open(&config, uid.clone())?;
        let format = ClassicFormat::new(
            &config.key_prefix,
            &uid,
            config.publish_on_specific_response_channel,
        );
        Ok(ClusterNode::new(
            uid,
            Box::new(format),
            link,
            config.requests_timeout,
        ))
    }

    /// The link alone (its messages wait for a [`ClusterNode`] to read them).
    pub(crate) fn open(config: &RedisConfig, uid: String) -> Result<Arc<Self>, RedisError> {
        let redis_config =
            Config::from_url(&config.url).map_err(|e| RedisError::Config(e.to_string()))?;
        let build = |subscriber: bool| link::builder(redis_config.clone(), subscriber, 5_000);
        let publisher = build(false)
            .build()
            .map_err(|e| RedisError::Config(e.to_string()))?;
        let subscriber = build(true)
            .build_subscriber_client()
            .map_err(|e| RedisError::Config(e.to_string()))?;
        let stats = Arc::new(ClusterStats::default());
        let outgoing = link::spawn_publisher(
            publisher.clone(),
            config.publish_queue,
            link::PublishCommand::Publish,
            stats.clone(),
        );
        let inbox = link::Inbox::new(subscriber.message_rx(), config.subscriber_queue_bytes);
        let redis = Arc::new(ClassicRedis {
            publisher,
            subscriber,
            outgoing,
            inbox: Mutex::new(Some(inbox)),
            stats,
            health: Health::new(health::redacted(&config.url), "Redis"),
            uid,
            cut_hold_key: cut_hold_key(&config.key_prefix),
        });
        redis.publisher.connect();
        redis.subscriber.connect();
        // A spawned task: resubscribes after every reconnection.
        drop(redis.subscriber.manage_subscriptions());
        tokio::spawn(watch_connection(
            redis.subscriber.clone(),
            redis.publisher.clone(),
            Arc::downgrade(&redis),
        ));
        let publisher = redis.publisher.clone();
        tokio::spawn(health::probe(Arc::downgrade(&redis.health), move || {
            let publisher = publisher.clone();
            async move {
                let options = fred::prelude::Options {
                    timeout: Some(health::PING_TIMEOUT),
                    ..Default::default()
                };
                publisher.with_options(&options).ping::<()>(None).await
            }
        }));
        Ok(redis)
    }
}

impl Link for ClassicRedis {
    /// Queues a message for `PUBLISH`; never waits (dropped and counted when the queue is
    /// full or Redis is down).
    fn publish(&self, channel: String, payload: Vec<u8>) {
        link::enqueue(&self.outgoing, &self.health, &self.stats, channel, payload);
    }

    /// Patterns first, then channels, in one task; fred keeps the subscriptions and renews
    /// them after every reconnection.
    fn subscribe(&self, subscriptions: Vec<Subscription>) {
        let subscriber = self.subscriber.clone();
        tokio::spawn(async move {
            let (mut patterns, mut channels) = (Vec::new(), Vec::new());
            for subscription in subscriptions {
                match subscription {
                    Subscription::Pattern(pattern) => patterns.push(pattern),
                    Subscription::Channel(channel) => channels.push(channel),
                }
            }
            if !patterns.is_empty()
                && let Err(error) = subscriber.psubscribe(patterns).await
            {
                tracing::warn!(%error, "Redis PSUBSCRIBE failed (retried on reconnect)");
            }
            if !channels.is_empty()
                && let Err(error) = subscriber.subscribe(channels).await
            {
                tracing::warn!(%error, "Redis SUBSCRIBE failed (retried on reconnect)");
            }
        });
    }

    fn unsubscribe(&self, channel: String) {
        let subscriber = self.subscriber.clone();
        tokio::spawn(async move {
            let _ = subscriber.unsubscribe(channel).await;
        });
    }

    /// `PUBSUB NUMSUB` of a channel: how many nodes subscribe to it.
    fn server_count(&self, channel: &str) -> BoxFuture<Result<usize, AdapterError>> {
        let publisher = self.publisher.clone();
        let channel = channel.to_owned();
        Box::pin(async move {
            let reply: Vec<fred::prelude::Value> = publisher
                .pubsub_numsub(channel)
                .await
                .map_err(|e| AdapterError::Unavailable(e.to_string()))?;
            Ok(reply.get(1).and_then(|count| count.as_u64()).unwrap_or(0) as usize)
        })
    }

    fn messages(&self) -> Option<Messages> {
        let inbox = self.inbox.lock().take()?;
        Some(link::received(inbox, self.stats.clone()))
    }

    fn stats(&self) -> &ClusterStats {
        &self.stats
    }

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

    /// Unsubscribes everything and closes both connections (a deliberate stop, not logged
    /// as an outage).
    fn close(&self) -> BoxFuture<()> {
        let (publisher, subscriber, health) = (
            self.publisher.clone(),
            self.subscriber.clone(),
            self.health.clone(),
        );
        Box::pin(async move {
            health.begin_close();
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                let _ = subscriber.unsubscribe_all().await;
                let _ = subscriber.quit().await;
                let _ = publisher.quit().await;
            })
            .await;
            health.set_up(false);
            tracing::info!(redis = %health.address(), "left the Redis cluster");
        })
    }
}

/// Tracks whether Redis is reachable (one log line per change of state), and counts the
/// cuts of the subscriber connection.
async fn watch_connection(
    subscriber: SubscriberClient,
    publisher: Client,
    redis: Weak<ClassicRedis>,
) {
    let Some((health, stats)) = redis
        .upgrade()
        .map(|redis| (redis.health.clone(), redis.stats.clone()))
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
        let Some(redis) = redis.upgrade() else {
            return;
        };
        if cut {
            health::subscriber_cut(
                &health,
                &stats,
                &redis.publisher,
                redis.cut_hold_key.clone(),
                &redis.uid,
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
