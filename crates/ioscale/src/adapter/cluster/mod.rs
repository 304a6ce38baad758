//! The cluster adapter: one core for every multi-node adapter, over two crate-private seams
//! (`seam.rs`): a wire `Format` and a pub/sub `Link`.
//!
//! A [`ClusterNode`] is one node's membership of a cluster: its uid, its link, its format,
//! and the `ClusterAdapter`s of its namespaces, to which its receive loop hands every
//! message. Build one with [`crate::adapter::redis::ClassicRedis::connect`],
//! [`crate::adapter::redis::sharded::ShardedRedis::connect`], or `Bus::node` (in-process,
//! in the crate's tests), then give [`ClusterNode::factory`] to [`crate::Io::with_adapter`].

mod adapter;
#[cfg(test)]
mod bus;
pub(crate) mod seam;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use dashmap::DashMap;
use futures_util::StreamExt as _;

pub(crate) use adapter::ClusterAdapter;
#[cfg(test)]
pub(crate) use bus::{Bus, BusLink};
pub(crate) use seam::{Channel, Codec, Envelope, Format, Link, Message, Subscription};

use super::redis::health::Health;
use super::{Adapter, AdapterContext, AdapterFactory};
// The protocol's vocabulary, imported in this one place of the cluster core.
use crate::protocol::socketio::Packet;
use crate::protocol::{Payload, encode_frames};

/// Counters of a node's cluster traffic, for logs, health checks and metrics.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct ClusterStats {
    /// Messages published on the link (for Redis: those Redis confirmed).
    pub published: AtomicU64,
    /// Messages not published: queue full, link down, or refused by Redis.
    pub publish_dropped: AtomicU64,
    /// Published messages Redis did not confirm (timeout, connection lost in flight): they
    /// may or may not have reached the other nodes.
    pub publish_unknown: AtomicU64,
    /// Messages received from the link.
    pub received: AtomicU64,
    /// Received messages that did not decode (dropped).
    pub received_invalid: AtomicU64,
    /// Received messages dropped because the receive loop fell behind (its queue full).
    pub received_lagged: AtomicU64,
    /// Times Redis closed the subscriber connection while the publisher's stayed up (its
    /// output-buffer limit): each lost at least one message, how many is not known here.
    pub subscriber_cuts: AtomicU64,
    /// Reconnections of the subscriber connection after it was cut.
    pub reconnects: AtomicU64,
    /// Requests this node sent to the other nodes (fetches, room lists, counts, acks).
    pub requests: AtomicU64,
    /// Requests that timed out before every node answered.
    pub request_timeouts: AtomicU64,
}

/// One node's membership of a cluster, shared by the adapters of all its namespaces.
pub struct ClusterNode {
    uid: String,
    requests_timeout: Duration,
    format: Box<dyn Format>,
    link: Arc<dyn Link>,
    adapters: DashMap<String, Weak<ClusterAdapter>>,
}

impl std::fmt::Debug for ClusterNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterNode")
            .field("uid", &self.uid)
            .field("up", &self.is_up())
            .finish()
    }
}

impl ClusterNode {
    /// A node speaking `format` over `link` (whose messages it starts reading);
    /// `requests_timeout` bounds how long cluster requests wait for every node.
    pub(crate) fn new(
        uid: String,
        format: Box<dyn Format>,
        link: Arc<dyn Link>,
        requests_timeout: Duration,
    ) -> Arc<Self> {
        let messages = link.messages();
        let node = Arc::new(ClusterNode {
            uid,
            requests_timeout,
            format,
            link,
            adapters: DashMap::new(),
        });
        if let Some(messages) = messages {
            tokio::spawn(receive_loop(messages, Arc::downgrade(&node)));
        }
        node
    }

    /// The adapter factory to build an [`crate::Io`] with.
    pub fn factory(self: &Arc<Self>) -> AdapterFactory {
        let node = self.clone();
        Arc::new(move |context: AdapterContext| {
            let adapter = ClusterAdapter::new(node.clone(), context);
            node.adapters
                .insert(adapter.namespace().to_owned(), Arc::downgrade(&adapter));
            node.link.subscribe(adapter.codec().subscriptions());
            adapter as Arc<dyn Adapter>
        })
    }

    /// This node's id on the wire (compared with messages' uids to skip its own).
    pub fn uid(&self) -> &str {
        &self.uid
    }

    /// The link's traffic counters.
    pub fn stats(&self) -> &ClusterStats {
        self.link.stats()
    }

    /// Whether the link is up.
    pub fn is_up(&self) -> bool {
        self.link.health().is_up()
    }

    /// Up or down, PING latency, stalls, repeated cuts: what `/ready` and the metrics report.
    pub fn health(&self) -> &Health {
        self.link.health()
    }

    /// Waits until the link is up (or the timeout passes).
    pub async fn wait_until_up(&self, timeout: Duration) -> bool {
        self.link.wait_until_up(timeout).await
    }

    /// Leaves the cluster: unsubscribes and closes the link.
    pub async fn close(&self) {
        self.link.close().await
    }

    pub(crate) fn link(&self) -> &dyn Link {
        &*self.link
    }

    fn adapter(&self, nsp: &str) -> Option<Arc<ClusterAdapter>> {
        self.adapters.get(nsp).and_then(|weak| weak.upgrade())
    }
}

/// Hands every received message to its namespace's adapter, in the link's order. Never
/// waits on clients: deliveries only queue bytes.
async fn receive_loop(mut messages: seam::Messages, node: Weak<ClusterNode>) {
    while let Some(message) = messages.next().await {
        let Some(node) = node.upgrade() else {
            return;
        };
        let channel: &str = &message.channel;
        let Some((nsp, kind)) = node.format.parse_channel(channel) else {
            continue;
        };
        let Some(adapter) = node.adapter(nsp) else {
            continue;
        };
        let handled = match &message.payload {
            Some(payload) => adapter.on_message(kind, payload),
            None => Err(crate::adapter::redis::wire::WireError::Shape(
                "message is not a string",
            )),
        };
        if let Err(error) = handled {
            invalid(node.stats(), channel, &error);
        }
    }
}

/// Counts and logs (the first, then at each power of two) a received message that does not
/// decode.
pub(crate) fn invalid(stats: &ClusterStats, channel: &str, error: &dyn std::fmt::Display) {
    let total = stats.received_invalid.fetch_add(1, Ordering::Relaxed) + 1;
    if total.is_power_of_two() {
        tracing::warn!(
            reason = "invalid",
            total,
            channel,
            %error,
            "dropping invalid messages from Redis"
        );
    }
}

/// 16 lower-case hex digits: node uids and request ids, as Node's adapters make them.
pub(crate) fn new_uid() -> String {
    let raw: [u8; 8] = rand::random();
    raw.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests;
