//! What the classic and the sharded Redis links do alike: the client settings, the bounded
//! publish queue drained in pipelined batches, the subscriber's byte-bounded inbox, counting
//! what is lost, and following the connections (outages, cuts of the subscriber).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fred::error::ErrorKind;
use fred::prelude::{
    Builder, Client, ClientLike, Config, Options, PubsubInterface, ReconnectPolicy, TcpConfig,
};
use tokio::sync::{broadcast, mpsc};

use super::ClusterStats;
use super::health::{DOWN_AFTER, Health};
use crate::adapter::cluster::seam::{Messages, Received};

/// A message waiting to be published: channel and payload.
pub(super) type Outgoing = (String, Bytes);

/// Slots of the client library's queue between its reader and the subscriber loop, which
/// moves every message at once into its own [`Inbox`] (bounded in bytes).
const SUBSCRIBER_SLOTS: usize = 16_384;

/// How long a batch of publishes may wait for Redis's answers before their fate is
/// reported unknown. Long, so that a stalled Redis (which delivers them once it resumes)
/// does not make delivered messages look lost; meanwhile new messages wait in the bounded
/// publish queue.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(30);

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
                p.broadcast_channel_capacity = SUBSCRIBER_SLOTS;
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

/// Counts messages lost for `reason` and logs it: the first time, then each time the total
/// passes a power of two (as the limits do), so a flood of losses does not flood the logs.
pub(super) fn count_lost(counter: &AtomicU64, lost: u64, reason: &str, what: &str) {
    if lost == 0 {
        return;
    }
    let before = counter.fetch_add(lost, Ordering::Relaxed);
    let total = before + lost;
    if before == 0 || total.ilog2() > before.ilog2() {
        tracing::warn!(reason, lost, total, "{what}");
    }
}

/// What became of a batch of publishes.
#[derive(Debug, Default, PartialEq, Eq)]
struct Outcome {
    published: u64,
    /// Redis answered with an error: not published.
    failed: u64,
    /// No answer (timeout, connection lost with the batch in flight): maybe published.
    unknown: u64,
}

fn fate_unknown(error: &fred::error::Error) -> bool {
    matches!(
        error.kind(),
        ErrorKind::Timeout | ErrorKind::IO | ErrorKind::Canceled
    )
}

/// Sorts the answers to `count` pipelined publishes; an error for the whole pipeline (one
/// answer) stands for every message of it.
fn outcome<T>(count: u64, results: &[Result<T, fred::error::Error>]) -> Outcome {
    let mut outcome = Outcome::default();
    if results.len() as u64 != count {
        match results.iter().find_map(|result| result.as_ref().err()) {
            Some(error) if fate_unknown(error) => outcome.unknown = count,
            Some(_) => outcome.failed = count,
            None => outcome.published = count,
        }
        return outcome;
    }
    for result in results {
        match result {
            Ok(_) => outcome.published += 1,
            Err(error) if fate_unknown(error) => outcome.unknown += 1,
            Err(_) => outcome.failed += 1,
        }
    }
    outcome
}

/// Starts the task that publishes queued messages in pipelined batches, in queue order;
/// returns the queue. The task ends when the queue's last sender is dropped.
pub(super) fn spawn_publisher(
    publisher: Client,
    capacity: usize,
    command: PublishCommand,
    stats: Arc<ClusterStats>,
) -> mpsc::Sender<Outgoing> {
    const MAX_BATCH: usize = 512;
    let (outgoing, mut queue) = mpsc::channel::<Outgoing>(capacity.max(1));
    let options = Options {
        timeout: Some(PUBLISH_TIMEOUT),
        ..Options::default()
    };
    tokio::spawn(async move {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
            let count = batch.len() as u64;
            let pipeline = publisher.pipeline().with_options(&options);
            for (channel, payload) in batch.drain(..) {
                let _: Result<(), _> = match command {
                    PublishCommand::Publish => pipeline.publish(channel, payload).await,
                    PublishCommand::SPublish => pipeline.spublish(channel, payload).await,
                };
            }
            let results = pipeline.try_all::<fred::prelude::Value>().await;
            let outcome = outcome(count, &results);
            stats
                .published
                .fetch_add(outcome.published, Ordering::Relaxed);
            count_lost(
                &stats.publish_unknown,
                outcome.unknown,
                "publish_unknown",
                "Redis did not confirm published messages (timeout or connection lost): other nodes may or may not have them",
            );
            if outcome.failed > 0 {
                let error = results
                    .iter()
                    .find_map(|result| result.as_ref().err())
                    .map(super::health::readable)
                    .unwrap_or_default();
                let before = stats
                    .publish_dropped
                    .fetch_add(outcome.failed, Ordering::Relaxed);
                if before == 0 || (before + outcome.failed).ilog2() > before.ilog2() {
                    tracing::warn!(failed = outcome.failed, %error, "Redis refused published messages");
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
    health: &Health,
    stats: &ClusterStats,
    channel: String,
    payload: Vec<u8>,
) {
    if !health.is_up() {
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

/// The subscriber's queue: messages from Redis wait here, at most `max_bytes` of them,
/// until the subscriber loop hands them to their namespace. It takes everything the client
/// library has received before each message it hands out, so a burst waits here (bounded
/// in bytes, whatever the messages' sizes) rather than in the library's fixed number of
/// slots, and Redis's output buffer for this node stays empty.
pub(super) struct Inbox {
    messages: broadcast::Receiver<fred::types::Message>,
    queue: VecDeque<(fred::types::Message, usize)>,
    bytes: usize,
    max_bytes: usize,
}

impl Inbox {
    pub(super) fn new(
        messages: broadcast::Receiver<fred::types::Message>,
        max_bytes: usize,
    ) -> Self {
        Inbox {
            messages,
            queue: VecDeque::new(),
            bytes: 0,
            max_bytes,
        }
    }

    /// What a message costs in the queue: its channel and payload plus a fixed overhead.
    fn size(message: &fred::types::Message) -> usize {
        let payload = match &message.value {
            fred::prelude::Value::Bytes(bytes) => bytes.len(),
            fred::prelude::Value::String(text) => text.len(),
            _ => 0,
        };
        message.channel.len() + payload + 64
    }

    /// Queues a message, or drops and counts it when the queue is full (a message larger
    /// than the bound is taken when the queue is empty).
    fn push(&mut self, message: fred::types::Message, stats: &ClusterStats) {
        let size = Self::size(&message);
        if !self.queue.is_empty() && self.bytes + size > self.max_bytes {
            self.lost(1, stats);
            return;
        }
        self.bytes += size;
        self.queue.push_back((message, size));
    }

    fn lost(&self, missed: u64, stats: &ClusterStats) {
        count_lost(
            &stats.received_lagged,
            missed,
            "lagged",
            "Redis subscriber fell behind: cluster messages lost",
        );
    }

    /// The next message, counted; `None` once the client is gone.
    pub(super) async fn next(&mut self, stats: &ClusterStats) -> Option<fred::types::Message> {
        loop {
            // Take what has arrived (bounded: the library's queue holds no more).
            for _ in 0..SUBSCRIBER_SLOTS {
                match self.messages.try_recv() {
                    Ok(message) => self.push(message, stats),
                    Err(broadcast::error::TryRecvError::Lagged(missed)) => self.lost(missed, stats),
                    Err(_) => break,
                }
            }
            if let Some((message, size)) = self.queue.pop_front() {
                self.bytes -= size;
                stats.received.fetch_add(1, Ordering::Relaxed);
                return Some(message);
            }
            match self.messages.recv().await {
                Ok(message) => self.push(message, stats),
                Err(broadcast::error::RecvError::Lagged(missed)) => self.lost(missed, stats),
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

/// The inbox as the ordered stream of received messages the cluster core reads: channel
/// and payload move out of the client's message, nothing is copied.
pub(super) fn received(inbox: Inbox, stats: Arc<ClusterStats>) -> Messages {
    Box::pin(futures_util::stream::unfold(
        (inbox, stats),
        |(mut inbox, stats)| async move {
            let message = inbox.next(&stats).await?;
            let payload = match message.value {
                fred::prelude::Value::Bytes(bytes) => Some(bytes),
                fred::prelude::Value::String(text) => Some(text.into_inner()),
                _ => None,
            };
            let received = Received {
                channel: message.channel,
                payload,
            };
            Some((received, (inbox, stats)))
        },
    ))
}

/// Waits until both clients are connected (or the timeout passes), and marks the link up.
pub(super) async fn wait_connected(
    publisher: &impl ClientLike,
    subscriber: &impl ClientLike,
    health: &Health,
    timeout: Duration,
) -> bool {
    let connected = async {
        let _ = publisher.wait_for_connect().await;
        let _ = subscriber.wait_for_connect().await;
    };
    let connected = tokio::time::timeout(timeout, connected).await.is_ok();
    if connected {
        health.set_up(true);
    }
    connected
}

/// Follows the connections' events for the link's watcher: whether the link is up (a
/// disconnection counts once it has lasted [`DOWN_AFTER`]), and whether a reconnection of the
/// subscriber was a cut: Redis closed it while the publisher's connection stayed up.
#[derive(Debug, Default)]
pub(super) struct Watch {
    disconnected_since: Option<Instant>,
    subscriber_connected_once: bool,
    /// Incremented at each error or reconnection of the publisher.
    publisher_epoch: u64,
    /// The publisher's epoch when the subscriber lost its connection.
    subscriber_lost: Option<u64>,
}

impl Watch {
    pub(super) fn subscriber_error(
        &mut self,
        health: &Health,
        error: &fred::error::Error,
        server: Option<&impl std::fmt::Display>,
    ) {
        health.note_error(error, server);
        if *error.kind() != ErrorKind::Cluster && self.subscriber_lost.is_none() {
            self.subscriber_lost = Some(self.publisher_epoch);
        }
    }

    pub(super) fn publisher_error(
        &mut self,
        health: &Health,
        error: &fred::error::Error,
        server: Option<&impl std::fmt::Display>,
    ) {
        health.note_error(error, server);
        if *error.kind() != ErrorKind::Cluster {
            self.publisher_epoch += 1;
        }
    }

    pub(super) fn publisher_reconnected(&mut self) {
        self.publisher_epoch += 1;
    }

    /// The subscriber connected: `None` the first time, then whether this reconnection
    /// followed a cut.
    pub(super) fn subscriber_reconnected(&mut self, publisher_connected: bool) -> Option<bool> {
        let lost = self.subscriber_lost.take();
        std::mem::replace(&mut self.subscriber_connected_once, true)
            .then_some(publisher_connected && lost == Some(self.publisher_epoch))
    }

    /// Updates the link's state from whether both clients are connected now.
    pub(super) fn observe(&mut self, health: &Health, connected: bool) {
        health.set_connected(connected);
        if connected {
            self.disconnected_since = None;
            health.set_up(true);
        } else if self
            .disconnected_since
            .get_or_insert_with(Instant::now)
            .elapsed()
            >= DOWN_AFTER
        {
            health.set_up(false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fred::error::Error;

    #[test]
    fn a_pipeline_error_stands_for_every_message_of_it() {
        let timeout: Vec<Result<(), Error>> = vec![Err(Error::new(ErrorKind::Timeout, "t"))];
        assert_eq!(
            outcome(5, &timeout),
            Outcome {
                unknown: 5,
                ..Outcome::default()
            }
        );
        let refused: Vec<Result<(), Error>> = vec![Err(Error::new(ErrorKind::Unknown, "ERR"))];
        assert_eq!(outcome(3, &refused).failed, 3);
        let mixed: Vec<Result<(), Error>> = vec![
            Ok(()),
            Err(Error::new(ErrorKind::Canceled, "closed")),
            Err(Error::new(ErrorKind::Unknown, "ERR")),
        ];
        assert_eq!(
            outcome(3, &mixed),
            Outcome {
                published: 1,
                failed: 1,
                unknown: 1
            }
        );
    }

    #[test]
    fn losses_are_counted_exactly_and_logged_sparingly() {
        let counter = AtomicU64::new(0);
        count_lost(&counter, 3, "lagged", "lost");
        count_lost(&counter, 0, "lagged", "lost");
        count_lost(&counter, 1, "lagged", "lost");
        assert_eq!(counter.load(Ordering::Relaxed), 4);
    }

    fn message(bytes: usize) -> fred::types::Message {
        fred::types::Message {
            channel: "c".into(),
            value: fred::prelude::Value::Bytes(vec![0; bytes].into()),
            kind: fred::types::MessageKind::Message,
            server: fred::types::config::Server::new("127.0.0.1", 6379),
        }
    }

    #[tokio::test]
    async fn the_inbox_is_bounded_in_bytes_and_counts_what_it_drops() {
        let (sender, receiver) = broadcast::channel(64);
        let stats = ClusterStats::default();
        // Room for two 100-byte messages (165 bytes each with channel and overhead).
        let mut inbox = Inbox::new(receiver, 400);
        for _ in 0..5 {
            sender.send(message(100)).unwrap_or_default();
        }
        assert!(inbox.next(&stats).await.is_some());
        assert!(inbox.next(&stats).await.is_some());
        assert_eq!(stats.received_lagged.load(Ordering::Relaxed), 3);
        // Room again once drained; a message over the bound passes alone.
        sender.send(message(1000)).unwrap_or_default();
        assert!(inbox.next(&stats).await.is_some());
        assert_eq!(stats.received.load(Ordering::Relaxed), 3);
        assert_eq!(inbox.bytes, 0);
        drop(sender);
        assert!(inbox.next(&stats).await.is_none());
    }

    #[test]
    fn a_cut_is_a_subscriber_reconnection_while_the_publisher_stayed_up() {
        let health = Health::new("redis://h:1".into(), "Redis");
        let error = Error::new(ErrorKind::IO, "closed");
        let server: Option<&String> = None;
        let mut watch = Watch::default();
        assert_eq!(
            watch.subscriber_reconnected(true),
            None,
            "the first connection"
        );
        watch.subscriber_error(&health, &error, server);
        assert_eq!(watch.subscriber_reconnected(true), Some(true), "a cut");
        // Redis restarted: both connections went.
        watch.subscriber_error(&health, &error, server);
        watch.publisher_error(&health, &error, server);
        watch.publisher_reconnected();
        assert_eq!(watch.subscriber_reconnected(true), Some(false));
    }
}
