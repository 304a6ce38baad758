//! What the classic and the sharded Redis links do alike: the client settings, the bounded
//! publish queue drained in pipelined batches, the subscriber's receive step, and waiting for
//! the connections.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use fred::prelude::{
    Builder, Client, ClientLike, Config, PubsubInterface, ReconnectPolicy, TcpConfig,
};
use tokio::sync::{broadcast, mpsc};

use super::RedisStats;

/// A message waiting to be published: channel and payload.
pub(super) type Outgoing = (String, Bytes);

/// Client settings of both links: keepalive and nodelay, 5 s timeouts, reconnection forever
/// with a linear backoff (100 ms more per attempt) capped at `max_backoff_ms`.
pub(super) fn builder(config: Config, subscriber: bool, max_backoff_ms: u32) -> Builder {
    let mut builder = Builder::from_config(config);
    builder
        .with_config(|c| c.fail_fast = false)
        .with_connection_config(|c| {
            c.connection_timeout = Duration::from_secs(5);
            c.max_redirections = 16;
            c.tcp = TcpConfig {
                nodelay: Some(true),
                keepalive: Some(
                    fred::socket2::TcpKeepalive::new()
                        .with_time(Duration::from_secs(30))
                        .with_interval(Duration::from_secs(10)),
                ),
                ..TcpConfig::default()
            };
        })
        .with_performance_config(|p| {
            p.default_command_timeout = Duration::from_secs(5);
            if subscriber {
                // The read loop drains promptly; this absorbs bursts.
                p.broadcast_channel_capacity = 16_384;
            }
        })
        .set_policy(ReconnectPolicy::new_linear(0, max_backoff_ms, 100));
    builder
}

/// `PUBLISH` (classic) or `SPUBLISH` (sharded).
#[derive(Debug, Clone, Copy)]
pub(super) enum PublishCommand {
    Publish,
    SPublish,
}

/// Starts the task that publishes queued messages in pipelined batches, in queue order;
/// returns the queue. The task ends when the queue's last sender is dropped.
pub(super) fn spawn_publisher(
    publisher: Client,
    capacity: usize,
    command: PublishCommand,
    stats: Arc<RedisStats>,
) -> mpsc::Sender<Outgoing> {
    const MAX_BATCH: usize = 512;
    let (outgoing, mut queue) = mpsc::channel::<Outgoing>(capacity.max(1));
    tokio::spawn(async move {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
            let count = batch.len() as u64;
            let pipeline = publisher.pipeline();
            for (channel, payload) in batch.drain(..) {
                let _: Result<(), _> = match command {
                    PublishCommand::Publish => pipeline.publish(channel, payload).await,
                    PublishCommand::SPublish => pipeline.spublish(channel, payload).await,
                };
            }
            let results = pipeline.try_all::<fred::prelude::Value>().await;
            let failed = results.iter().filter(|result| result.is_err()).count() as u64;
            stats.published.fetch_add(count - failed, Ordering::Relaxed);
            if failed > 0 {
                stats.publish_dropped.fetch_add(failed, Ordering::Relaxed);
                if let Some(Err(error)) = results.iter().find(|result| result.is_err()) {
                    tracing::warn!(failed, %error, "Redis publish failed");
                }
            }
        }
    });
    outgoing
}

/// Queues a message for publishing; never waits. Dropped and counted when the queue is
/// full or Redis is down.
pub(super) fn enqueue(
    outgoing: &mpsc::Sender<Outgoing>,
    up: &AtomicBool,
    stats: &RedisStats,
    channel: String,
    payload: Vec<u8>,
) {
    if !up.load(Ordering::Acquire) {
        stats.publish_dropped.fetch_add(1, Ordering::Relaxed);
        return;
    }
    if outgoing.try_send((channel, Bytes::from(payload))).is_err() {
        let dropped = stats.publish_dropped.fetch_add(1, Ordering::Relaxed);
        if dropped.is_power_of_two() {
            tracing::warn!(
                dropped = dropped + 1,
                "Redis publish queue full: dropping messages"
            );
        }
    }
}

/// The next message from the subscriber connection, counted; messages the loop fell behind
/// on (dropped by the client library) are counted and skipped. `None` once the client is gone.
pub(super) async fn next_message(
    messages: &mut broadcast::Receiver<fred::types::Message>,
    stats: &RedisStats,
) -> Option<fred::types::Message> {
    loop {
        match messages.recv().await {
            Ok(message) => {
                stats.received.fetch_add(1, Ordering::Relaxed);
                return Some(message);
            }
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                stats.received_lagged.fetch_add(missed, Ordering::Relaxed);
                tracing::warn!(missed, "Redis subscriber fell behind: messages lost");
            }
            Err(broadcast::error::RecvError::Closed) => return None,
        }
    }
}

/// Waits until both clients are connected (or the timeout passes), and marks the link up.
pub(super) async fn wait_connected(
    publisher: &impl ClientLike,
    subscriber: &impl ClientLike,
    up: &AtomicBool,
    timeout: Duration,
) -> bool {
    let connected = async {
        let _ = publisher.wait_for_connect().await;
        let _ = subscriber.wait_for_connect().await;
    };
    let connected = tokio::time::timeout(timeout, connected).await.is_ok();
    if connected {
        up.store(true, Ordering::Release);
    }
    connected
}

/// Records whether both clients are connected, logging each change.
pub(super) fn track_up(up: &AtomicBool, now_up: bool, what: &str) {
    if up.swap(now_up, Ordering::AcqRel) != now_up {
        if now_up {
            tracing::info!("{what} is up: cluster traffic resumes");
        } else {
            tracing::warn!("{what} is down: serving local clients only");
        }
    }
}
