//! Shared session timers: heartbeat (ping, pong timeout), connect timeout, and the deferred
//! close of polling sessions, without a task or a sleep per session.
//!
//! Each session keeps its own deadlines in atomics ([`SessionTimer`]). The engine keeps a few
//! shards, each a min-heap of "look at session `sid` at time `t`" entries served by one task
//! (see `server::drive_timers`). Entries are lazy: a pong only moves the session's deadline
//! later (lock-free); the stale entry fires, finds nothing due and queues the session again at
//! its new deadline. Only what moves a deadline earlier (a close, the closing poll) pushes an
//! extra entry. So an idle session costs its atomics and one heap entry instead of a task.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::protocol::Sid;

/// Milliseconds since the timers' epoch.
pub(crate) type Millis = u64;

/// The engine's timer shards.
#[derive(Debug)]
pub(crate) struct Timers {
    epoch: Instant,
    shards: Box<[Shard]>,
}

#[derive(Debug, Default)]
pub(crate) struct Shard {
    queue: Mutex<BinaryHeap<Reverse<(Millis, Sid)>>>,
    wake: Notify,
}

impl Timers {
    pub(crate) fn new(shards: usize) -> Self {
        Timers {
            epoch: Instant::now(),
            shards: (0..shards.max(1)).map(|_| Shard::default()).collect(),
        }
    }

    pub(crate) fn shard_count(&self) -> usize {
        self.shards.len()
    }

    pub(crate) fn shard(&self, index: usize) -> &Shard {
        &self.shards[index % self.shards.len()]
    }

    /// The shard serving a session (fixed, so one task handles all of a session's entries).
    pub(crate) fn shard_of(&self, sid: Sid) -> &Shard {
        let hash = sid
            .as_str()
            .bytes()
            .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize));
        self.shard(hash)
    }

    /// Now, in milliseconds since the epoch (rounded down).
    pub(crate) fn now(&self) -> Millis {
        self.epoch.elapsed().as_millis() as Millis
    }

    /// A deadline `after` from now, rounded up to the next millisecond.
    pub(crate) fn after(&self, after: Duration) -> Millis {
        (self.epoch.elapsed() + after).as_micros().div_ceil(1000) as Millis
    }

    pub(crate) fn instant(&self, at: Millis) -> Instant {
        self.epoch + Duration::from_millis(at)
    }

    /// Queues a look at `sid` at `at` (or as soon as possible when `at` has passed).
    pub(crate) fn schedule(&self, sid: Sid, at: Millis) {
        self.shard_of(sid).push(sid, at);
    }
}

impl Shard {
    fn push(&self, sid: Sid, at: Millis) {
        let earliest = {
            let mut queue = self.queue.lock();
            let earliest = queue.peek().is_none_or(|Reverse((first, _))| at < *first);
            queue.push(Reverse((at, sid)));
            earliest
        };
        // Only a new earliest entry changes when the shard's task must wake.
        if earliest {
            self.wake.notify_one();
        }
    }

    /// The time of the earliest entry.
    pub(crate) fn next(&self) -> Option<Millis> {
        self.queue.lock().peek().map(|Reverse((at, _))| *at)
    }

    /// Takes every entry due at `now`, earliest first.
    pub(crate) fn take_due(&self, now: Millis, out: &mut Vec<(Millis, Sid)>) {
        let mut queue = self.queue.lock();
        while let Some(Reverse((at, _))) = queue.peek()
            && *at <= now
        {
            if let Some(Reverse(entry)) = queue.pop() {
                out.push(entry);
            }
        }
        // Give memory back after a crowd of sessions left.
        if queue.capacity() > 64 && queue.len() < queue.capacity() / 4 {
            let keep = queue.len() * 2;
            queue.shrink_to(keep);
        }
    }

    /// Resolves at the next [`Timers::schedule`] that makes a new earliest entry.
    pub(crate) fn woken(&self) -> tokio::sync::futures::Notified<'_> {
        self.wake.notified()
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.queue.lock().len()
    }
}

// Heartbeat phases (top two bits of `SessionTimer::heartbeat`; the deadline is below).
const PHASE_SHIFT: u32 = 62;
const DEADLINE_MASK: u64 = (1 << PHASE_SHIFT) - 1;
/// A ping is due at the deadline.
const PING_AT: u64 = 0;
/// The pong is due by the deadline.
const PONG_BY: u64 = 1;
/// Closed and handed to the handler; the session is forgotten at the deadline (a polling
/// client gets until then to collect the close).
const LINGER_UNTIL: u64 = 2;

// Flags.
const STARTED: u8 = 1;
const CLOSE_HANDLED: u8 = 2;
const FINAL_POLLED: u8 = 4;
const CLOSE_REPORTED: u8 = 8;

const NOT_QUEUED: Millis = Millis::MAX;

/// One session's deadlines. Written by its shard's task, except `on_pong` (any transport)
/// and the flags.
#[derive(Debug)]
pub(crate) struct SessionTimer {
    heartbeat: AtomicU64,
    /// Connect deadline; 0 once checked (or without one).
    establish: AtomicU64,
    /// Time of the entry that stands for the session in its shard (only its task touches it).
    queued: AtomicU64,
    flags: AtomicU8,
}

/// What a session's shard task has to do for it now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Due {
    /// Nothing before this time.
    Nothing(Millis),
    /// Send a ping (the pong is now awaited).
    Ping,
    /// No pong came in time.
    PongTimeout,
    /// Check that the session joined in time.
    Establish,
}

impl Default for SessionTimer {
    fn default() -> Self {
        SessionTimer {
            heartbeat: AtomicU64::new(PING_AT << PHASE_SHIFT),
            establish: AtomicU64::new(0),
            queued: AtomicU64::new(NOT_QUEUED),
            flags: AtomicU8::new(0),
        }
    }
}

fn pack(phase: u64, at: Millis) -> u64 {
    (phase << PHASE_SHIFT) | (at & DEADLINE_MASK)
}

fn unpack(word: u64) -> (u64, Millis) {
    (word >> PHASE_SHIFT, word & DEADLINE_MASK)
}

impl SessionTimer {
    /// Arms the heartbeat (first ping at `first_ping`) and the connect deadline; returns
    /// the first time to look at the session.
    pub(crate) fn start(&self, first_ping: Millis, establish: Option<Millis>) -> Millis {
        self.heartbeat
            .store(pack(PING_AT, first_ping), Ordering::Release);
        // 0 means "none": a deadline of 0 ms would be the epoch itself.
        self.establish
            .store(establish.map_or(0, |at| at.max(1)), Ordering::Release);
        let first = self.next();
        self.queued.store(first, Ordering::Relaxed);
        first
    }

    /// Marks the timer started (from then on a close queues the session; see `Session::close`).
    pub(crate) fn set_started(&self) {
        self.flags.fetch_or(STARTED, Ordering::SeqCst);
    }

    pub(crate) fn is_started(&self) -> bool {
        self.flags.load(Ordering::SeqCst) & STARTED != 0
    }

    /// A pong: the next ping is `interval` after it. A pong nobody waits for is ignored.
    /// The session's standing entry is at or before the pong deadline; when the next ping
    /// comes before that (an interval shorter than the timeout), returns the time of the
    /// extra entry the caller must queue.
    pub(crate) fn on_pong(&self, next_ping: Millis) -> Option<Millis> {
        let previous = self
            .heartbeat
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |word| {
                (unpack(word).0 == PONG_BY).then_some(pack(PING_AT, next_ping))
            })
            .ok()?;
        let (_, pong_by) = unpack(previous);
        (next_ping < pong_by).then_some(next_ping)
    }

    /// The earliest deadline.
    pub(crate) fn next(&self) -> Millis {
        let (_, heartbeat) = unpack(self.heartbeat.load(Ordering::Acquire));
        match self.establish.load(Ordering::Acquire) {
            0 => heartbeat,
            establish => establish.min(heartbeat),
        }
    }

    /// What is due at `now`. A due ping switches to awaiting the pong, by `pong_by`,
    /// before the ping is sent (so a quick pong is never missed).
    pub(crate) fn due(&self, now: Millis, pong_by: Millis) -> Due {
        let establish = self.establish.load(Ordering::Acquire);
        if establish != 0 && establish <= now {
            self.establish.store(0, Ordering::Release);
            return Due::Establish;
        }
        let word = self.heartbeat.load(Ordering::Acquire);
        match unpack(word) {
            (PING_AT, at) if at <= now => {
                // A pong cannot race this (it only acts on PONG_BY), so the swap cannot fail
                // for that reason; a failure means another phase: look again later.
                if self
                    .heartbeat
                    .compare_exchange(
                        word,
                        pack(PONG_BY, pong_by),
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    )
                    .is_ok()
                {
                    Due::Ping
                } else {
                    Due::Nothing(self.next())
                }
            }
            (PONG_BY, at) if at <= now => Due::PongTimeout,
            _ => Due::Nothing(self.next()),
        }
    }

    /// The session closed: true the first time (its close is then handled).
    pub(crate) fn take_close(&self) -> bool {
        self.flags.fetch_or(CLOSE_HANDLED, Ordering::AcqRel) & CLOSE_HANDLED == 0
    }

    /// Keeps a closed session until `until` (or its closing poll).
    pub(crate) fn linger(&self, until: Millis) {
        self.establish.store(0, Ordering::Release);
        self.heartbeat
            .store(pack(LINGER_UNTIL, until), Ordering::Release);
    }

    /// Whether a lingering session can be forgotten.
    pub(crate) fn linger_over(&self, now: Millis) -> bool {
        let (phase, at) = unpack(self.heartbeat.load(Ordering::Acquire));
        self.final_polled() || (phase == LINGER_UNTIL && at <= now)
    }

    /// The closing poll was answered: true when the handler already heard of the close (the
    /// caller then forgets the session itself). SeqCst with `set_close_reported`: of the poll
    /// and the shard task, at least one sees the other's flag and forgets the session.
    pub(crate) fn set_final_polled(&self) -> bool {
        self.flags.fetch_or(FINAL_POLLED, Ordering::SeqCst) & CLOSE_REPORTED != 0
    }

    pub(crate) fn final_polled(&self) -> bool {
        self.flags.load(Ordering::SeqCst) & FINAL_POLLED != 0
    }

    /// The handler was told of the close.
    pub(crate) fn set_close_reported(&self) {
        self.flags.fetch_or(CLOSE_REPORTED, Ordering::SeqCst);
    }

    /// Called by the shard task for each entry it takes, with the entry's time: whether it
    /// was the session's standing entry (which is then gone).
    pub(crate) fn took_entry(&self, at: Millis) -> bool {
        self.queued
            .compare_exchange(at, NOT_QUEUED, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }

    /// Whether a new entry at `at` is needed (none stands at or before it); records it.
    pub(crate) fn needs_entry(&self, at: Millis) -> bool {
        let queued = self.queued.load(Ordering::Relaxed);
        if queued <= at {
            return false;
        }
        self.queued.store(at, Ordering::Relaxed);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sid(n: u8) -> Sid {
        let text: String = std::iter::repeat_n(char::from(b'a' + n), Sid::LEN).collect();
        Sid::parse(&text).unwrap()
    }

    #[test]
    fn shard_gives_entries_in_time_order_once_due() {
        let timers = Timers::new(1);
        timers.schedule(sid(0), 30);
        timers.schedule(sid(1), 10);
        timers.schedule(sid(2), 20);
        let shard = timers.shard(0);
        assert_eq!(shard.next(), Some(10));
        let mut due = Vec::new();
        shard.take_due(20, &mut due);
        assert_eq!(due, vec![(10, sid(1)), (20, sid(2))]);
        assert_eq!(shard.next(), Some(30));
        assert_eq!(shard.len(), 1);
    }

    #[tokio::test]
    async fn a_new_earliest_entry_wakes_the_shard_task() {
        let timers = Timers::new(1);
        timers.schedule(sid(0), 10);
        let shard = timers.shard(0);
        // The permit of the first schedule.
        shard.woken().await;
        let woken = shard.woken();
        tokio::pin!(woken);
        woken.as_mut().enable();
        timers.schedule(sid(1), 20); // later: no wake
        assert!(futures_util::poll!(woken.as_mut()).is_pending());
        timers.schedule(sid(2), 5); // earlier: wake
        assert!(futures_util::poll!(woken.as_mut()).is_ready());
    }

    #[test]
    fn ping_fires_at_the_interval_then_the_pong_is_awaited() {
        let timer = SessionTimer::default();
        assert_eq!(timer.start(100, None), 100);
        assert_eq!(timer.due(99, 0), Due::Nothing(100));
        assert_eq!(timer.due(100, 150), Due::Ping);
        // Awaiting the pong until 150.
        assert_eq!(timer.due(120, 0), Due::Nothing(150));
        assert_eq!(timer.due(150, 0), Due::PongTimeout);
    }

    #[test]
    fn pong_reschedules_the_next_ping() {
        let timer = SessionTimer::default();
        timer.start(100, None);
        assert_eq!(timer.due(100, 150), Due::Ping);
        assert_eq!(timer.on_pong(230), None);
        // The pong deadline passed without effect; the next ping is due at 230.
        assert_eq!(timer.due(150, 0), Due::Nothing(230));
        assert_eq!(timer.due(230, 280), Due::Ping);
    }

    #[test]
    fn an_unsolicited_pong_is_ignored() {
        let timer = SessionTimer::default();
        timer.start(100, None);
        assert_eq!(timer.on_pong(500), None);
        assert_eq!(timer.next(), 100);
    }

    #[test]
    fn a_pong_before_an_earlier_next_ping_asks_for_an_entry() {
        // Interval 100, timeout 1000: the standing entry is at the pong deadline (1100), but
        // after a pong at 130 the next ping is due at 230.
        let timer = SessionTimer::default();
        timer.start(100, None);
        assert_eq!(timer.due(100, 1100), Due::Ping);
        assert_eq!(timer.on_pong(230), Some(230));
        assert_eq!(timer.due(230, 1230), Due::Ping);
        // Interval longer than the timeout: the standing entry comes first.
        assert_eq!(timer.on_pong(5000), None);
    }

    #[test]
    fn connect_deadline_is_checked_once_before_the_heartbeat() {
        let timer = SessionTimer::default();
        assert_eq!(timer.start(100, Some(40)), 40);
        assert_eq!(timer.due(39, 0), Due::Nothing(40));
        assert_eq!(timer.due(40, 0), Due::Establish);
        assert_eq!(timer.due(40, 0), Due::Nothing(100));
    }

    #[test]
    fn close_is_handled_once_and_lingering_ends_at_the_deadline_or_the_poll() {
        let timer = SessionTimer::default();
        timer.start(100, Some(40));
        assert!(timer.take_close());
        assert!(!timer.take_close());
        timer.linger(60);
        assert_eq!(timer.next(), 60);
        assert!(!timer.linger_over(59));
        assert!(timer.linger_over(60));
        let polled = SessionTimer::default();
        polled.linger(60);
        assert!(!polled.set_final_polled());
        assert!(polled.linger_over(0));
        // Polled after the handler heard of the close: the poll forgets the session.
        let reported = SessionTimer::default();
        reported.set_close_reported();
        assert!(reported.set_final_polled());
    }

    #[test]
    fn one_standing_entry_per_session() {
        let timer = SessionTimer::default();
        timer.start(100, None);
        // The standing entry is at 100: a later deadline needs no new one.
        assert!(!timer.needs_entry(150));
        // An extra entry (a close) is not the standing one.
        assert!(!timer.took_entry(7));
        // The standing entry fires: the next deadline needs one again.
        assert!(timer.took_entry(100));
        assert!(timer.needs_entry(150));
        // An earlier deadline (lingering) needs its own entry.
        assert!(timer.needs_entry(120));
        assert!(!timer.needs_entry(120));
    }
}
