//! The nodes behind the balancer: passive and active health, session counts, choice.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::watch;

use crate::config::Policy;

pub struct Backend {
    /// `host:port`.
    pub address: String,
    /// Result of the last active health check (true until one fails).
    healthy: AtomicBool,
    failures: Mutex<Failures>,
    /// Sessions currently held (for least-connection).
    pub sessions: AtomicI64,
    pub requests: AtomicU64,
    /// Bumped each time the node is marked down: requests waiting on it give up at once.
    downs: watch::Sender<u64>,
}

#[derive(Default)]
struct Failures {
    count: u32,
    window_start: Option<Instant>,
    down_until: Option<Instant>,
}

impl Backend {
    pub fn new(address: String) -> Self {
        Backend {
            address,
            healthy: AtomicBool::new(true),
            failures: Mutex::new(Failures::default()),
            sessions: AtomicI64::new(0),
            requests: AtomicU64::new(0),
            downs: watch::Sender::new(0),
        }
    }

    /// Healthy and not skipped after recent failures.
    pub fn available(&self) -> bool {
        if !self.healthy.load(Ordering::Acquire) {
            return false;
        }
        let failures = self.failures.lock();
        failures
            .down_until
            .is_none_or(|until| Instant::now() >= until)
    }

    pub fn set_healthy(&self, healthy: bool) {
        let was = self.healthy.swap(healthy, Ordering::AcqRel);
        if was != healthy {
            if healthy {
                tracing::info!(backend = %self.address, "node healthy again");
                *self.failures.lock() = Failures::default();
            } else {
                tracing::warn!(backend = %self.address, "node failed its health check");
                self.downs.send_modify(|downs| *downs += 1);
            }
        }
    }

    /// Resolves when the node is marked down after this call, or at once if it is down now
    /// (subscribed before the check, so a change in between is not missed).
    pub fn down(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut downs = self.downs.subscribe();
        let already = !self.available();
        async move {
            if already {
                return;
            }
            // The sender lives as long as the node; an error cannot happen, and is not "down".
            if downs.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// Counts a failed attempt; after `max_fails` within `fail_timeout` the node is skipped
    /// for `fail_timeout` (nginx's passive health checks).
    pub fn record_failure(&self, max_fails: u32, fail_timeout: Duration) {
        let now = Instant::now();
        let mut failures = self.failures.lock();
        if failures
            .window_start
            .is_none_or(|start| now.duration_since(start) > fail_timeout)
        {
            failures.window_start = Some(now);
            failures.count = 0;
        }
        failures.count += 1;
        if failures.count >= max_fails {
            failures.down_until = Some(now + fail_timeout);
            failures.count = 0;
            failures.window_start = None;
            tracing::warn!(backend = %self.address, ?fail_timeout, "node unreachable: skipped");
            drop(failures);
            self.downs.send_modify(|downs| *downs += 1);
        }
    }
}

/// Picks nodes for new sessions.
pub struct Chooser {
    policy: Policy,
    next: AtomicUsize,
}

impl Chooser {
    pub fn new(policy: Policy) -> Self {
        Chooser {
            policy,
            next: AtomicUsize::new(0),
        }
    }

    /// An available node not in `exclude`, by policy.
    pub fn choose(&self, backends: &[Backend], exclude: &[usize]) -> Option<usize> {
        let candidates: Vec<usize> = (0..backends.len())
            .filter(|index| !exclude.contains(index) && backends[*index].available())
            .collect();
        if candidates.is_empty() {
            return None;
        }
        Some(match self.policy {
            Policy::LeastConn => {
                // Ties go round-robin, so an idle cluster still spreads.
                let start = self.next.fetch_add(1, Ordering::Relaxed);
                let rotated = candidates
                    .iter()
                    .cycle()
                    .skip(start % candidates.len())
                    .take(candidates.len());
                *rotated
                    .min_by_key(|index| backends[**index].sessions.load(Ordering::Relaxed))
                    .unwrap_or(&candidates[0])
            }
            Policy::RoundRobin => {
                candidates[self.next.fetch_add(1, Ordering::Relaxed) % candidates.len()]
            }
            Policy::Random => candidates[rand::random_range(0..candidates.len())],
        })
    }
}

/// The node for a client IP: a stable hash over the configured list, walking on to the
/// next available node when that one is down.
pub fn by_ip(backends: &[Backend], ip: std::net::IpAddr) -> Option<usize> {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    ip.hash(&mut hasher);
    let start = (hasher.finish() % backends.len().max(1) as u64) as usize;
    (0..backends.len())
        .map(|offset| (start + offset) % backends.len())
        .find(|index| backends[*index].available())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backends(n: usize) -> Vec<Backend> {
        (0..n)
            .map(|i| Backend::new(format!("127.0.0.1:{}", 4000 + i)))
            .collect()
    }

    #[test]
    fn least_connection_prefers_the_emptiest_node() {
        let nodes = backends(3);
        nodes[0].sessions.store(5, Ordering::Relaxed);
        nodes[1].sessions.store(1, Ordering::Relaxed);
        nodes[2].sessions.store(3, Ordering::Relaxed);
        let chooser = Chooser::new(Policy::LeastConn);
        for _ in 0..5 {
            assert_eq!(chooser.choose(&nodes, &[]), Some(1));
        }
        assert_eq!(chooser.choose(&nodes, &[1]), Some(2));
    }

    #[test]
    fn round_robin_cycles_and_skips_failed_nodes() {
        let nodes = backends(3);
        let chooser = Chooser::new(Policy::RoundRobin);
        let picks: Vec<_> = (0..6).filter_map(|_| chooser.choose(&nodes, &[])).collect();
        assert_eq!(picks, vec![0, 1, 2, 0, 1, 2]);
        nodes[1].record_failure(1, Duration::from_secs(60));
        assert!(!nodes[1].available());
        assert!((0..6).all(|_| chooser.choose(&nodes, &[]) != Some(1)));
    }

    #[test]
    fn passive_health_needs_max_fails_within_the_window() {
        let nodes = backends(1);
        nodes[0].record_failure(2, Duration::from_secs(60));
        assert!(nodes[0].available());
        nodes[0].record_failure(2, Duration::from_secs(60));
        assert!(!nodes[0].available());
        nodes[0].set_healthy(false);
        nodes[0].set_healthy(true);
        assert!(nodes[0].available());
    }

    #[tokio::test]
    async fn waiting_requests_wake_when_the_node_is_marked_down() {
        let nodes = backends(2);
        let wake = Duration::from_millis(200);
        // Armed before the change: a health check failure wakes it.
        let waiting = nodes[0].down();
        nodes[0].set_healthy(false);
        assert!(tokio::time::timeout(wake, waiting).await.is_ok());
        // Already down: at once.
        assert!(tokio::time::timeout(wake, nodes[0].down()).await.is_ok());
        // Passive health: only the failure that marks the node down wakes it.
        let waiting = nodes[1].down();
        tokio::pin!(waiting);
        nodes[1].record_failure(2, Duration::from_secs(60));
        assert!(tokio::time::timeout(wake, &mut waiting).await.is_err());
        nodes[1].record_failure(2, Duration::from_secs(60));
        assert!(tokio::time::timeout(wake, &mut waiting).await.is_ok());
    }

    #[test]
    fn ip_hash_is_stable_and_walks_past_down_nodes() {
        let nodes = backends(3);
        let ip: std::net::IpAddr = "10.1.2.3".parse().unwrap();
        let first = by_ip(&nodes, ip).unwrap();
        assert_eq!(by_ip(&nodes, ip), Some(first));
        nodes[first].set_healthy(false);
        let second = by_ip(&nodes, ip).unwrap();
        assert_ne!(second, first);
        assert!(Chooser::new(Policy::Random).choose(&nodes, &[]).is_some());
    }
}
