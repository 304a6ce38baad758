//! Counters of one server, kept as plain atomics on the hot paths; an exporter (the
//! binary's Prometheus endpoint) reads them on each scrape.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the broadcast fan-out histogram buckets.
pub const FANOUT_BUCKETS: [f64; 12] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.05,
    0.25,
];

/// Socket disconnect reasons, in the order [`Metrics::disconnects`] counts them.
pub const DISCONNECT_REASONS: [&str; 9] = [
    "transport close",
    "transport error",
    "ping timeout",
    "parse error",
    "forced close",
    "forced server close",
    "server shutting down",
    "client namespace disconnect",
    "server namespace disconnect",
];

/// Limits that refused something, in the order [`Metrics::limit_rejections`] counts them.
pub const LIMITS: [&str; 9] = [
    "connections",
    "connections_per_ip",
    "url_length",
    "event_rate",
    "rooms_per_socket",
    "namespaces_per_connection",
    "pending_acks",
    "header_bytes",
    "header_read_timeout",
];

/// Which limit refused something (index into [`LIMITS`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Connections,
    ConnectionsPerIp,
    UrlLength,
    EventRate,
    RoomsPerSocket,
    NamespacesPerConnection,
    PendingAcks,
    /// Request head over the HTTP layer's buffer (hyper answers 431).
    HeaderBytes,
    /// Request headers (or the TLS handshake) not complete within the header read timeout.
    HeaderReadTimeout,
}

/// Engine.IO handshake and request error codes 0-5, as [`Metrics::handshake_errors`] counts them.
pub const HANDSHAKE_ERROR_CODES: usize = 6;

#[derive(Debug, Default)]
pub struct Metrics {
    pub packets_received: AtomicU64,
    pub packets_sent: AtomicU64,
    pub bytes_received: AtomicU64,
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
    pub disconnects: [AtomicU64; DISCONNECT_REASONS.len()],
    pub handshake_errors: [AtomicU64; HANDSHAKE_ERROR_CODES],
    pub limit_rejections: [AtomicU64; LIMITS.len()],
    pub fanout: Histogram,
}

impl Metrics {
    pub(crate) fn add(counter: &AtomicU64, value: u64) {
        counter.fetch_add(value, Ordering::Relaxed);
    }

    /// Counts a refusal and logs it: the first time, then at every power of two, so a
    /// flood cannot flood the logs too.
    pub(crate) fn limit_hit(&self, limit: Limit, detail: &str) {
        let count = self.limit_rejections[limit as usize].fetch_add(1, Ordering::Relaxed) + 1;
        if count.is_power_of_two() {
            tracing::warn!(
                limit = LIMITS[limit as usize],
                count,
                detail,
                "limit reached"
            );
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
mod tests {
    use super::*;

    #[test]
    fn limit_labels_follow_the_enum() {
        assert_eq!(LIMITS[Limit::PendingAcks as usize], "pending_acks");
        assert_eq!(LIMITS[Limit::HeaderBytes as usize], "header_bytes");
        assert_eq!(
            LIMITS[Limit::HeaderReadTimeout as usize],
            "header_read_timeout"
        );
        assert_eq!(LIMITS.len(), Limit::HeaderReadTimeout as usize + 1);
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
