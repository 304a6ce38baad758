//! The session table of sid stickiness: which node holds each Socket.IO session, learned
//! from the handshakes the balancer forwards. Bounded, and idle entries expire.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dashmap::DashMap;

pub struct SessionTable {
    entries: DashMap<String, Entry>,
    started: Instant,
    ttl: Duration,
    max: usize,
}

struct Entry {
    backend: usize,
    /// Milliseconds since `started` of the last request of the session.
    last_seen: AtomicU64,
}

impl SessionTable {
    pub fn new(ttl: Duration, max: usize) -> Self {
        SessionTable {
            entries: DashMap::new(),
            started: Instant::now(),
            ttl,
            max,
        }
    }

    fn now(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Remembers a new session; false when the table is full.
    pub fn insert(&self, sid: String, backend: usize) -> bool {
        if self.entries.len() >= self.max {
            return false;
        }
        let entry = Entry {
            backend,
            last_seen: AtomicU64::new(self.now()),
        };
        self.entries.insert(sid, entry).is_none()
    }

    /// The node of a session, refreshing its idle timer.
    pub fn get(&self, sid: &str) -> Option<usize> {
        let entry = self.entries.get(sid)?;
        entry.last_seen.store(self.now(), Ordering::Relaxed);
        Some(entry.backend)
    }

    /// Forgets a session; returns its node.
    pub fn remove(&self, sid: &str) -> Option<usize> {
        self.entries.remove(sid).map(|(_, entry)| entry.backend)
    }

    /// Forgets sessions idle past the TTL; returns the node of each one forgotten.
    pub fn expire(&self) -> Vec<usize> {
        let cutoff = self.now().saturating_sub(self.ttl.as_millis() as u64);
        let mut expired = Vec::new();
        self.entries.retain(|_, entry| {
            let keep = entry.last_seen.load(Ordering::Relaxed) >= cutoff;
            if !keep {
                expired.push(entry.backend);
            }
            keep
        });
        expired
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_bounded_and_expire_when_idle() {
        let table = SessionTable::new(Duration::from_millis(0), 2);
        assert!(table.insert("a".into(), 0));
        assert!(table.insert("b".into(), 1));
        assert!(!table.insert("c".into(), 2));
        assert_eq!(table.get("b"), Some(1));
        assert_eq!(table.remove("a"), Some(0));
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(table.expire(), vec![1]);
        assert_eq!(table.len(), 0);
    }
}
