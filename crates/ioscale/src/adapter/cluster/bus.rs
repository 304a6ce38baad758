//! An in-process link: nodes of one process share a [`Bus`] that behaves as Redis pub/sub
//! does (exact channels and `*` patterns, a publisher receives its own messages, the
//! server count is the number of exact subscribers), so that multi-node behaviour is tested
//! without Redis, in milliseconds, with either wire format.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::{mpsc, watch};

use super::seam::{ChannelName, Format, Link, Messages, Received, Subscription};
use super::{ClusterNode, ClusterStats};
use crate::adapter::redis::health::Health;
use crate::adapter::{AdapterError, BoxFuture};

/// The shared medium of in-process nodes.
#[derive(Debug, Clone, Default)]
pub struct Bus {
    links: Arc<Mutex<Vec<Weak<BusLink>>>>,
}

impl Bus {
    pub fn new() -> Self {
        Bus::default()
    }

    /// A node on this bus speaking `format`; its link, to pause it in tests.
    pub fn node(
        &self,
        uid: String,
        format: Box<dyn Format>,
        requests_timeout: Duration,
    ) -> (Arc<ClusterNode>, Arc<BusLink>) {
        let (sender, receiver) = mpsc::unbounded_channel();
        let health = Health::new("in-process".to_owned(), "in-process bus");
        health.set_up(true);
        let link = Arc::new(BusLink {
            bus: self.clone(),
            channels: Mutex::new(HashSet::new()),
            patterns: Mutex::new(Vec::new()),
            sender,
            receiver: Mutex::new(Some(receiver)),
            paused: watch::channel(false).0,
            closed: AtomicBool::new(false),
            stats: Arc::new(ClusterStats::default()),
            health,
        });
        self.links.lock().push(Arc::downgrade(&link));
        let node = ClusterNode::new(uid, format, link.clone(), requests_timeout);
        (node, link)
    }

    /// Publishes raw bytes, as any client of the bus could (garbage included).
    pub fn publish(&self, channel: &str, payload: &[u8]) {
        self.deliver(
            &ChannelName::from(channel.to_owned()),
            &Bytes::copy_from_slice(payload),
        );
    }

    fn deliver(&self, channel: &ChannelName, payload: &Bytes) {
        let links: Vec<Arc<BusLink>> = self.links.lock().iter().filter_map(Weak::upgrade).collect();
        for link in links {
            for _ in 0..link.matches(channel) {
                let _ = link.sender.send(Received {
                    channel: channel.clone(),
                    payload: Some(payload.clone()),
                });
            }
        }
    }
}

/// One node's link to a [`Bus`].
pub struct BusLink {
    bus: Bus,
    channels: Mutex<HashSet<String>>,
    /// Pattern prefixes (the pattern without its final `*`).
    patterns: Mutex<Vec<String>>,
    sender: mpsc::UnboundedSender<Received>,
    receiver: Mutex<Option<mpsc::UnboundedReceiver<Received>>>,
    paused: watch::Sender<bool>,
    closed: AtomicBool,
    stats: Arc<ClusterStats>,
    health: Arc<Health>,
}

impl BusLink {
    /// Holds (`true`) or releases the messages for this node: a paused node answers
    /// nothing, as a stalled one; what arrives meanwhile is delivered when it resumes.
    pub fn pause(&self, paused: bool) {
        self.paused.send_replace(paused);
    }

    /// How many of this link's subscriptions match the channel (Redis delivers once each).
    fn matches(&self, channel: &str) -> usize {
        if self.closed.load(Ordering::Acquire) {
            return 0;
        }
        let exact = usize::from(self.channels.lock().contains(channel));
        let patterns = self
            .patterns
            .lock()
            .iter()
            .filter(|prefix| channel.starts_with(prefix.as_str()))
            .count();
        exact + patterns
    }
}

impl Link for BusLink {
    fn publish(&self, channel: String, payload: Vec<u8>) {
        if self.closed.load(Ordering::Acquire) {
            self.stats.publish_dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.stats.published.fetch_add(1, Ordering::Relaxed);
        self.bus
            .deliver(&ChannelName::from(channel), &Bytes::from(payload));
    }

    fn subscribe(&self, subscriptions: Vec<Subscription>) {
        for subscription in subscriptions {
            match subscription {
                Subscription::Channel(channel) => {
                    self.channels.lock().insert(channel);
                }
                Subscription::Pattern(pattern) => {
                    let prefix = pattern.strip_suffix('*').unwrap_or(&pattern).to_owned();
                    self.patterns.lock().push(prefix);
                }
            }
        }
    }

    fn unsubscribe(&self, channel: String) {
        self.channels.lock().remove(&channel);
    }

    fn server_count(&self, channel: &str) -> BoxFuture<Result<usize, AdapterError>> {
        let links: Vec<Arc<BusLink>> = self
            .bus
            .links
            .lock()
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        let count = links
            .iter()
            .filter(|link| {
                !link.closed.load(Ordering::Acquire) && link.channels.lock().contains(channel)
            })
            .count();
        Box::pin(async move { Ok(count) })
    }

    fn messages(&self) -> Option<Messages> {
        let receiver = self.receiver.lock().take()?;
        let paused = self.paused.subscribe();
        let stats = self.stats.clone();
        Some(Box::pin(futures_util::stream::unfold(
            (receiver, paused, stats),
            |(mut receiver, mut paused, stats)| async move {
                while *paused.borrow_and_update() {
                    paused.changed().await.ok()?;
                }
                let message = receiver.recv().await?;
                stats.received.fetch_add(1, Ordering::Relaxed);
                Some((message, (receiver, paused, stats)))
            },
        )))
    }

    fn stats(&self) -> &ClusterStats {
        &self.stats
    }

    fn health(&self) -> &Health {
        &self.health
    }

    fn wait_until_up(&self, _timeout: Duration) -> BoxFuture<bool> {
        let up = self.health.is_up();
        Box::pin(async move { up })
    }

    fn close(&self) -> BoxFuture<()> {
        self.health.begin_close();
        self.closed.store(true, Ordering::Release);
        self.channels.lock().clear();
        self.patterns.lock().clear();
        self.health.set_up(false);
        Box::pin(async {})
    }
}
