//! Counters of one server, kept as plain atomics on the hot paths; an exporter (the
//! binary's Prometheus endpoint) reads them on each scrape.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the broadcast fan-out histogram buckets.
pub const FANOUT_BUCKETS: [f64; 12] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.05,
    0.25,
];

/// A label whose values are an enum's variants. The enum lives with the layer that counts
/// it (disconnect reasons in the socket layer, handshake error codes in the engine) and
/// says its own label values; this module only keeps one counter per value and never
/// names a layer's enum, so every layer can import it.
pub trait Label: Copy + 'static {
    /// Every value, in [`Label::index`] order (what an exporter iterates).
    const ALL: &'static [Self];
    /// The label value, as exported (`reason="ping timeout"`, `code="4"`).
    fn as_str(self) -> &'static str;
    /// Position of the value in [`Label::ALL`], below [`MAX_LABEL_VALUES`].
    fn index(self) -> usize;
}

/// How many values one label may have (a unit test per label checks its enum fits).
pub const MAX_LABEL_VALUES: usize = 16;

/// One counter per value of a [`Label`]. Which enum labels it is said where the field
/// is declared; the typed methods take that enum.
#[derive(Debug, Default)]
pub struct LabeledCounters([AtomicU64; MAX_LABEL_VALUES]);

impl LabeledCounters {
    /// Adds one for `label` and returns the new count.
    pub fn increment<L: Label>(&self, label: L) -> u64 {
        self.0[label.index()].fetch_add(1, Ordering::Relaxed) + 1
    }

    /// The count for `label`.
    pub fn get<L: Label>(&self, label: L) -> u64 {
        self.0[label.index()].load(Ordering::Relaxed)
    }

    /// `(label value, count)` for every value of `L`, in its order.
    pub fn samples<L: Label>(&self) -> Vec<(&'static str, u64)> {
        L::ALL
            .iter()
            .map(|label| (label.as_str(), self.get(*label)))
            .collect()
    }
}

impl std::ops::Index<usize> for LabeledCounters {
    type Output = AtomicU64;

    /// The counter at a label's [`Label::index`].
    fn index(&self, index: usize) -> &AtomicU64 {
        &self.0[index]
    }
}

/// Which limit refused something. The limits are checked by several layers (the HTTP
/// server, the engine, the socket layer), so the enum lives here, below all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Limit {
    /// A handshake over the engine's maximum number of sessions (answered 503).
    Connections,
    /// A handshake over the maximum number of sessions of one IP address.
    ConnectionsPerIp,
    /// A request target longer than the engine allows (answered 414).
    UrlLength,
    /// A socket over its event rate (it is disconnected).
    EventRate,
    /// A join over a socket's maximum number of rooms.
    RoomsPerSocket,
    /// A namespace connection over a connection's maximum number of namespaces.
    NamespacesPerConnection,
    /// An emit with ack over a socket's maximum number of acks awaited.
    PendingAcks,
    /// Request head over the HTTP layer's buffer (hyper answers 431).
    HeaderBytes,
    /// Request headers (or the TLS handshake) not complete within the header read timeout.
    HeaderReadTimeout,
}

impl Label for Limit {
    const ALL: &'static [Limit] = &[
        Limit::Connections,
        Limit::ConnectionsPerIp,
        Limit::UrlLength,
        Limit::EventRate,
        Limit::RoomsPerSocket,
        Limit::NamespacesPerConnection,
        Limit::PendingAcks,
        Limit::HeaderBytes,
        Limit::HeaderReadTimeout,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Limit::Connections => "connections",
            Limit::ConnectionsPerIp => "connections_per_ip",
            Limit::UrlLength => "url_length",
            Limit::EventRate => "event_rate",
            Limit::RoomsPerSocket => "rooms_per_socket",
            Limit::NamespacesPerConnection => "namespaces_per_connection",
            Limit::PendingAcks => "pending_acks",
            Limit::HeaderBytes => "header_bytes",
            Limit::HeaderReadTimeout => "header_read_timeout",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl Limit {
    /// The label value (`limit="pending_acks"`).
    pub fn as_str(self) -> &'static str {
        Label::as_str(self)
    }
}

/// A server's counters, shared by all its layers (all relaxed atomics, only ever growing).
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct Metrics {
    /// Engine.IO packets received from clients.
    pub packets_received: AtomicU64,
    /// Engine.IO packets written to clients.
    pub packets_sent: AtomicU64,
    /// Bytes of Engine.IO packets and payloads received.
    pub bytes_received: AtomicU64,
    /// Bytes written to clients (polling bodies, WebSocket frames).
    pub bytes_sent: AtomicU64,
    /// Broadcasts delivered on this node only.
    pub broadcasts_local: AtomicU64,
    /// Broadcasts also published to the cluster.
    pub broadcasts_cluster: AtomicU64,
    /// Packets lost because a client's queue overflowed (the client was disconnected).
    pub dropped_slow_consumer: AtomicU64,
    /// Volatile packets dropped for a full queue.
    pub dropped_volatile: AtomicU64,
    /// Slow consumers disconnected.
    pub slow_consumers: AtomicU64,
    /// Socket disconnections, labelled by `socket::DisconnectReason`.
    pub disconnects: LabeledCounters,
    /// Refused Engine.IO requests, labelled by `engine::EngineError` (its code).
    pub handshake_errors: LabeledCounters,
    /// Refusals, labelled by [`Limit`].
    pub limit_rejections: LabeledCounters,
    /// How long local deliveries of one broadcast took.
    pub fanout: Histogram,
    /// Connection state recovery: reconnecting clients that named a session.
    pub recovery_attempts: AtomicU64,
    /// Connection state recovery: sessions restored.
    pub recovery_successes: AtomicU64,
}

impl Metrics {
    pub(crate) fn add(counter: &AtomicU64, value: u64) {
        counter.fetch_add(value, Ordering::Relaxed);
    }

    /// Counts a refusal and logs it: the first time, then at every power of two, so a
    /// flood cannot flood the logs too.
    pub(crate) fn limit_hit(&self, limit: Limit, detail: &str) {
        let count = self.limit_rejections.increment(limit);
        if count.is_power_of_two() {
            tracing::warn!(limit = limit.as_str(), count, detail, "limit reached");
        }
    }
}

/// A fixed-bucket histogram of durations ([`FANOUT_BUCKETS`]).
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; FANOUT_BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    /// Counts one duration in its bucket.
    pub fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let index = FANOUT_BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(FANOUT_BUCKETS.len());
        self.buckets[index].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos
            .fetch_add(elapsed.as_nanos() as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// `(sum in seconds, count, per-bucket counts with their upper bounds; +Inf last)`.
    pub fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let buckets = FANOUT_BUCKETS
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(self.buckets.iter().map(|b| b.load(Ordering::Relaxed)))
            .collect();
        (
            self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
            self.count.load(Ordering::Relaxed),
            buckets,
        )
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Checks a label's enum against what [`LabeledCounters`] and an exporter assume.
    pub(crate) fn check_label<L: Label + std::fmt::Debug + PartialEq>() {
        assert!(L::ALL.len() <= MAX_LABEL_VALUES);
        for (position, label) in L::ALL.iter().enumerate() {
            assert_eq!(label.index(), position, "{label:?}");
        }
        let mut values: Vec<_> = L::ALL.iter().map(|label| label.as_str()).collect();
        values.sort_unstable();
        values.dedup();
        assert_eq!(values.len(), L::ALL.len(), "label values are distinct");
    }

    #[test]
    fn limit_labels_follow_the_enum() {
        check_label::<Limit>();
        assert_eq!(Limit::PendingAcks.as_str(), "pending_acks");
        assert_eq!(Limit::HeaderBytes.as_str(), "header_bytes");
        assert_eq!(Limit::HeaderReadTimeout.as_str(), "header_read_timeout");
        assert_eq!(Limit::ALL.len(), Limit::HeaderReadTimeout as usize + 1);
    }

    #[test]
    fn labeled_counters_count_per_value() {
        let counters = LabeledCounters::default();
        assert_eq!(counters.increment(Limit::EventRate), 1);
        assert_eq!(counters.increment(Limit::EventRate), 2);
        counters.increment(Limit::Connections);
        let samples = counters.samples::<Limit>();
        assert_eq!(samples.len(), Limit::ALL.len());
        assert_eq!(samples[0], ("connections", 1));
        assert_eq!(samples[3], ("event_rate", 2));
        assert_eq!(
            counters[Limit::EventRate as usize].load(Ordering::Relaxed),
            2
        );
    }

    #[test]
    fn histogram_puts_observations_in_the_right_bucket() {
        let histogram = Histogram::default();
        histogram.observe(Duration::from_micros(5));
        histogram.observe(Duration::from_micros(30));
        histogram.observe(Duration::from_secs(2));
        let (sum, count, buckets) = histogram.snapshot();
        assert_eq!(count, 3);
        assert!((sum - 2.000_035).abs() < 1e-9);
        assert_eq!(buckets[0], (0.000_01, 1));
        assert_eq!(buckets[2], (0.000_05, 1));
        assert_eq!(buckets.last(), Some(&(f64::INFINITY, 1)));
    }
}
