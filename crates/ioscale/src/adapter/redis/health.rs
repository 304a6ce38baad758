//! How a node's link to Redis is doing, as the operations endpoints report it: up or down
//! (one log line per change, with the Redis address and a readable error), the latency of a
//! PING sent every second and whether Redis is stalled, and the subscriber connections Redis
//! cut (its output-buffer limit), which take the node out of rotation when repeated.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use fred::prelude::{Client, ClientLike, Value};
use fred::types::{ClusterHash, CustomCommand};
use parking_lot::Mutex;

use super::ClusterStats;

/// How often Redis is sent a PING.
pub const PING_INTERVAL: Duration = Duration::from_secs(1);
/// A PING unanswered this long means Redis is stalled: cluster messages wait.
pub const STALL_DEADLINE: Duration = Duration::from_secs(2);
/// A link disconnected for less than this is not reported down: a subscriber connection
/// cut by Redis reconnects within ~100 ms and is reported as a cut instead.
pub const DOWN_AFTER: Duration = Duration::from_secs(1);
/// This many cuts of the subscriber connection within [`CUT_WINDOW`] make the node ask to
/// leave the rotation for [`CUT_HOLD`].
pub const CUT_THRESHOLD: usize = 3;
/// The window in which [`CUT_THRESHOLD`] cuts count.
pub const CUT_WINDOW: Duration = Duration::from_secs(60);
/// How long a node with repeated cuts asks to stay out of the rotation.
pub const CUT_HOLD: Duration = Duration::from_secs(30);

const STARTING: u8 = 0;
const UP: u8 = 1;
const DOWN: u8 = 2;

/// The link's state and what the probe measured.
#[derive(Debug)]
pub struct Health {
    /// `redis://host:port` (credentials removed), or the seed list of a Redis Cluster.
    address: String,
    /// "Redis" or "Redis Cluster", in log lines.
    what: &'static str,
    state: AtomicU8,
    /// Whether both clients are connected right now (no grace period), so that a PING lost
    /// in a disconnection is not taken for a stall.
    connected: AtomicBool,
    /// Set by a deliberate close: nothing is logged as an outage from then on.
    closing: AtomicBool,
    /// The last connection error since the link was last up, readable.
    last_error: Mutex<Option<String>>,
    stalled: AtomicBool,
    /// Micros of the last answered PING.
    ping_micros: AtomicU64,
    /// When the PING in flight was sent.
    ping_started: Mutex<Option<Instant>>,
    /// Times of the recent subscriber cuts.
    cuts: Mutex<VecDeque<Instant>>,
    /// Until when this node reports not ready because of repeated cuts.
    cut_hold_until: Mutex<Option<Instant>>,
}

impl Health {
    pub(crate) fn new(address: String, what: &'static str) -> Arc<Self> {
        Arc::new(Health {
            address,
            what,
            state: AtomicU8::new(STARTING),
            connected: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            last_error: Mutex::new(None),
            stalled: AtomicBool::new(false),
            ping_micros: AtomicU64::new(0),
            ping_started: Mutex::new(None),
            cuts: Mutex::new(VecDeque::new()),
            cut_hold_until: Mutex::new(None),
        })
    }

    /// The Redis address (or link name) this health is of, for logs.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Whether both connections are up (a reconnection shorter than 1 s included).
    pub fn is_up(&self) -> bool {
        self.state.load(Ordering::Acquire) == UP
    }

    /// Whether a PING has gone unanswered for longer than 2 s.
    pub fn is_stalled(&self) -> bool {
        self.stalled.load(Ordering::Acquire)
    }

    /// The latency of the last PING, or how long the one in flight has waited if longer.
    pub fn ping_seconds(&self) -> f64 {
        let answered = self.ping_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let waiting = self
            .ping_started
            .lock()
            .map_or(0.0, |started| started.elapsed().as_secs_f64());
        answered.max(waiting)
    }

    /// Why `/ready` should say no, if it should.
    pub fn not_ready_reason(&self) -> Option<&'static str> {
        if !self.is_up() {
            Some("redis unavailable")
        } else if self.is_stalled() {
            Some("redis stalled")
        } else if self.cut_hold().is_some() {
            Some("redis subscriber cut repeatedly")
        } else {
            None
        }
    }

    fn cut_hold(&self) -> Option<Instant> {
        let mut hold = self.cut_hold_until.lock();
        match *hold {
            Some(until) if until > Instant::now() => Some(until),
            Some(_) => {
                *hold = None;
                tracing::info!(
                    redis = %self.address,
                    "Redis subscriber cut hold over: ready again"
                );
                None
            }
            None => None,
        }
    }

    /// From now on the link is being closed on purpose: no outage is logged.
    pub(crate) fn begin_close(&self) {
        self.closing.store(true, Ordering::Release);
    }

    pub(super) fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    /// Keeps a connection error for the next "down" line (not logged by itself: a client
    /// retrying every few hundred milliseconds would log each attempt).
    pub(super) fn note_error(
        &self,
        error: &fred::error::Error,
        server: Option<&impl std::fmt::Display>,
    ) {
        let text = readable(error);
        tracing::debug!(redis = %self.address, error = %text, "Redis connection error");
        *self.last_error.lock() = Some(match server {
            Some(server) => format!("{server}: {text}"),
            None => text,
        });
    }

    /// Records whether the link is up; logs each change once.
    pub(crate) fn set_up(&self, up: bool) {
        let new = if up { UP } else { DOWN };
        let old = self.state.swap(new, Ordering::AcqRel);
        if old == new || self.is_closing() {
            return;
        }
        if up {
            *self.last_error.lock() = None;
            tracing::info!(redis = %self.address, "{} is up: cluster traffic resumes", self.what);
        } else {
            let error = self
                .last_error
                .lock()
                .clone()
                .unwrap_or_else(|| "not connected".to_owned());
            tracing::warn!(
                redis = %self.address,
                %error,
                "{} is down: serving local clients only",
                self.what
            );
        }
    }

    fn ping_sent(&self) {
        *self.ping_started.lock() = Some(Instant::now());
    }

    pub(super) fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Ordering::Release);
    }

    fn ping_waited(&self) {
        if !self.connected.load(Ordering::Acquire) {
            return;
        }
        if !self.stalled.swap(true, Ordering::AcqRel) && !self.is_closing() {
            tracing::warn!(
                redis = %self.address,
                deadline_ms = STALL_DEADLINE.as_millis() as u64,
                "{} stalled: no answer to PING, cluster messages wait",
                self.what
            );
        }
    }

    fn ping_answered(&self, answered: bool) {
        let started = self.ping_started.lock().take();
        if !answered {
            return;
        }
        let elapsed = started.map_or(Duration::ZERO, |started| started.elapsed());
        self.ping_micros
            .store(elapsed.as_micros() as u64, Ordering::Relaxed);
        if self.stalled.swap(false, Ordering::AcqRel) {
            tracing::info!(
                redis = %self.address,
                stalled_ms = elapsed.as_millis() as u64,
                "{} answers again",
                self.what
            );
        }
    }

    /// Records a cut of the subscriber connection; true when the node should now ask to
    /// leave the rotation (enough recent cuts, and not already out).
    fn note_cut(&self) -> bool {
        let now = Instant::now();
        let mut cuts = self.cuts.lock();
        cuts.push_back(now);
        while cuts
            .front()
            .is_some_and(|cut| now.duration_since(*cut) > CUT_WINDOW)
        {
            cuts.pop_front();
        }
        cuts.len() >= CUT_THRESHOLD && self.cut_hold().is_none()
    }

    fn hold_for_cuts(&self, until: Instant) {
        *self.cut_hold_until.lock() = Some(until);
    }
}

/// An error as an operator reads it: the library's text without its kind's name.
pub(super) fn readable(error: &fred::error::Error) -> String {
    let details = error.details();
    // An I/O error arrives as its Debug text: `Os { code: 111, kind: .., message: "Connection refused" }`.
    if let Some(start) = details.find("message: \"") {
        let message = &details[start + 10..];
        if let Some(end) = message.find('"') {
            return message[..end].to_owned();
        }
    }
    match details {
        "" => format!("{:?}", error.kind()),
        details => details.trim_end_matches('.').to_owned(),
    }
}

/// A Redis url without its credentials.
pub(super) fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}{}", &url[..scheme + 3], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

/// Sends a PING every [`PING_INTERVAL`] while the link is up (`ping` answers once every
/// server answered) and tracks latency and stalls. Ends with the link.
pub(super) async fn probe<F, Fut>(health: Weak<Health>, ping: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<(), fred::error::Error>>,
{
    let mut tick = tokio::time::interval(PING_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        {
            let Some(health) = health.upgrade() else {
                return;
            };
            if health.is_closing() {
                return;
            }
            // Down is reported as down; the cut hold expires here too.
            let _ = health.cut_hold();
            if health.state.load(Ordering::Acquire) != UP {
                health.stalled.store(false, Ordering::Release);
                continue;
            }
            health.ping_sent();
        }
        let mut ping = std::pin::pin!(ping());
        let answered = match tokio::time::timeout(STALL_DEADLINE, &mut ping).await {
            Ok(result) => result.is_ok(),
            Err(_) => {
                if let Some(health) = health.upgrade() {
                    health.ping_waited();
                }
                // Wait for this very PING: its latency is the stall's length.
                ping.await.is_ok()
            }
        };
        if let Some(health) = health.upgrade() {
            health.ping_answered(answered);
        }
    }
}

/// How long a PING may wait for its answer: long enough to measure a whole stall.
pub(super) const PING_TIMEOUT: Duration = Duration::from_secs(60);

/// Counts a cut of the subscriber connection (at least one message lost: Redis dropped what
/// it held for this node and what was published until it subscribed again), logs it (the
/// first, then at each power of two) and, when cuts repeat, takes this node out of rotation
/// for [`CUT_HOLD`], unless another node already is: the `SET NX` of one key per key prefix
/// lets at most one node of a cluster be out for this reason at a time.
pub(super) fn subscriber_cut(
    health: &Arc<Health>,
    stats: &ClusterStats,
    publisher: &Client,
    lock_key: String,
    uid: &str,
) {
    super::link::count_lost(
        &stats.subscriber_cuts,
        1,
        "subscriber_cut",
        "Redis closed the subscriber connection (client-output-buffer-limit pubsub?): cluster messages lost",
    );
    if !health.note_cut() {
        return;
    }
    let publisher = publisher.clone();
    let health = Arc::downgrade(health);
    let uid = uid.to_owned();
    tokio::spawn(async move {
        let since = Instant::now();
        let command = CustomCommand::new_static("SET", ClusterHash::FirstKey, false);
        let args: Vec<Value> = vec![
            lock_key.into(),
            uid.into(),
            "NX".into(),
            "PX".into(),
            (CUT_HOLD.as_millis() as i64).into(),
        ];
        let reply: Result<Value, _> = publisher.custom(command, args).await;
        let Some(health) = health.upgrade() else {
            return;
        };
        match reply {
            Ok(Value::Null) => tracing::info!(
                redis = %health.address,
                "Redis subscriber cut repeatedly, but another node is out of rotation for it: staying ready"
            ),
            Ok(_) => {
                // The hold is measured from before the SET: it ends before the key expires.
                health.hold_for_cuts(since + CUT_HOLD);
                tracing::warn!(
                    redis = %health.address,
                    cuts = CUT_THRESHOLD,
                    window_s = CUT_WINDOW.as_secs(),
                    hold_s = CUT_HOLD.as_secs(),
                    "Redis subscriber cut repeatedly: /ready says not ready"
                );
            }
            Err(error) => tracing::info!(
                redis = %health.address,
                error = %readable(&error),
                "Redis subscriber cut repeatedly, but the rotation lock is not available: staying ready"
            ),
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_removed_from_urls() {
        assert_eq!(redacted("redis://u:p@host:6379/0"), "redis://host:6379/0");
        assert_eq!(redacted("redis://host:6379"), "redis://host:6379");
        assert_eq!(redacted("rediss://:p@a:1"), "rediss://a:1");
    }

    #[test]
    fn io_errors_read_as_their_message() {
        let error = fred::error::Error::new(
            fred::error::ErrorKind::IO,
            "Os { code: 111, kind: ConnectionRefused, message: \"Connection refused\" }",
        );
        assert_eq!(readable(&error), "Connection refused");
        let closed = fred::error::Error::new(fred::error::ErrorKind::IO, "Connection closed.");
        assert_eq!(readable(&closed), "Connection closed");
    }

    #[test]
    fn readiness_follows_state_stall_and_cuts() {
        let health = Health::new("redis://h:1".into(), "Redis");
        assert_eq!(health.not_ready_reason(), Some("redis unavailable"));
        health.set_up(true);
        assert_eq!(health.not_ready_reason(), None);
        health.ping_sent();
        health.ping_waited();
        assert_eq!(health.not_ready_reason(), None, "disconnected: not a stall");
        health.set_connected(true);
        health.ping_waited();
        assert_eq!(health.not_ready_reason(), Some("redis stalled"));
        health.ping_answered(true);
        assert_eq!(health.not_ready_reason(), None);
        assert!(!health.note_cut());
        assert!(!health.note_cut());
        assert!(health.note_cut());
        health.hold_for_cuts(Instant::now() + Duration::from_secs(5));
        assert!(!health.note_cut(), "already out of rotation");
        assert_eq!(
            health.not_ready_reason(),
            Some("redis subscriber cut repeatedly")
        );
        health.hold_for_cuts(Instant::now());
        assert_eq!(health.not_ready_reason(), None);
        health.set_up(false);
        assert_eq!(health.not_ready_reason(), Some("redis unavailable"));
    }
}
