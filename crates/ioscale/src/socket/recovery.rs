//! Connection state recovery on one node (socket.io 4.6+'s `connectionStateRecovery`).
//!
//! Each namespace with recovery on keeps a bounded log of its recent eligible packets
//! (EVENT without ack id, not volatile): each gets an offset, appended to its arguments
//! before its single encoding, so every recipient gets the same bytes. A socket that
//! disconnects for a recoverable reason leaves a session (sid, pid, rooms, data); a client
//! that comes back with `{pid, offset}` gets its id, rooms and data back and the logged
//! packets after its offset that target it, as long as the session has not expired and
//! the offset is still in the log. Otherwise it gets a normal new connection.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, MutexGuard};
use serde_json::Value;

use crate::adapter::{Room, Target};
use crate::protocol::{Frame, Sid};

/// Connection state recovery settings (off by default, as in Socket.IO).
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct RecoveryConfig {
    /// How long a disconnected session, and a logged packet, are kept. Default 2 min.
    pub max_disconnection_duration: Duration,
    /// Whether a recovered socket skips the namespace's middlewares. Default false.
    pub skip_middlewares: bool,
    /// Bound on the bytes of packets the log of one namespace keeps. Default 8 MiB.
    pub max_log_bytes: usize,
}

impl Default for RecoveryConfig {
    fn default() -> Self {
        RecoveryConfig {
            max_disconnection_duration: Duration::from_secs(120),
            skip_middlewares: false,
            max_log_bytes: 8 << 20,
        }
    }
}

/// Bytes counted per entry beyond its frames (its audience and bookkeeping).
const ENTRY_OVERHEAD: usize = 64;

/// The offset string a packet carries: this log's epoch, then its number, so that an offset
/// from another node or an earlier process never matches an entry here.
pub(crate) fn offset_string(epoch: &str, offset: u64) -> String {
    format!("{epoch}-{offset}")
}

/// Who a logged packet was for. A socket's own emits (one per connection at least, in the
/// `serve` application) are the most numerous entries: they hold the socket's id inline,
/// not a room list.
pub(crate) enum Audience {
    /// Every socket of the namespace.
    All,
    /// One socket (`socket.emit`).
    Socket(Sid),
    /// A broadcast's rooms and exceptions.
    Rooms(Box<Target>),
}

impl Audience {
    pub(crate) fn of(target: &Target) -> Audience {
        if target.rooms.is_empty() && target.except.is_empty() {
            Audience::All
        } else {
            Audience::Rooms(Box::new(target.clone()))
        }
    }

    /// Whether a socket in `rooms` (its own id's room included) was a recipient.
    fn includes(&self, rooms: &[Room]) -> bool {
        match self {
            Audience::All => true,
            Audience::Socket(sid) => rooms.iter().any(|room| &**room == sid.as_str()),
            Audience::Rooms(target) => {
                let included =
                    target.rooms.is_empty() || rooms.iter().any(|room| target.rooms.contains(room));
                included && !rooms.iter().any(|room| target.except.contains(room))
            }
        }
    }
}

/// A packet's frames: one for a text packet (no separate allocation), more with binary
/// attachments.
enum Frames {
    One(Frame),
    Many(Box<[Frame]>),
}

impl Frames {
    fn new(mut frames: Vec<Frame>) -> Frames {
        match frames.pop() {
            Some(frame) if frames.is_empty() => Frames::One(frame),
            Some(last) => {
                frames.push(last);
                Frames::Many(frames.into_boxed_slice())
            }
            None => Frames::Many(Box::default()),
        }
    }

    fn as_slice(&self) -> &[Frame] {
        match self {
            Frames::One(frame) => std::slice::from_ref(frame),
            Frames::Many(frames) => frames,
        }
    }
}

struct Entry {
    offset: u64,
    at: Instant,
    audience: Audience,
    frames: Frames,
    bytes: usize,
}

/// The log of recent eligible packets of one namespace, bounded by bytes and by time.
pub(crate) struct PacketLog {
    entries: VecDeque<Entry>,
    bytes: usize,
    epoch: String,
    next: u64,
    max_bytes: usize,
    max_age: Duration,
}

impl PacketLog {
    fn new(max_bytes: usize, max_age: Duration) -> Self {
        PacketLog {
            entries: VecDeque::new(),
            bytes: 0,
            epoch: Sid::random().as_str()[..8].to_owned(),
            next: 1,
            max_bytes,
            max_age,
        }
    }

    /// The offset string the next packet carries.
    pub(crate) fn next_offset(&self) -> String {
        offset_string(&self.epoch, self.next)
    }

    /// The number of an offset string of this log; `None` for another log's.
    fn parse_offset(&self, offset: &str) -> Option<u64> {
        let (epoch, number) = offset.rsplit_once('-')?;
        if epoch != self.epoch {
            return None;
        }
        number.parse().ok()
    }

    /// Logs a packet (its frames already carry `offset`, from [`PacketLog::next_offset`]).
    pub(crate) fn push(&mut self, audience: Audience, frames: Vec<Frame>, now: Instant) {
        let bytes = ENTRY_OVERHEAD + frames.iter().map(Frame::len).sum::<usize>();
        self.entries.push_back(Entry {
            offset: self.next,
            at: now,
            audience,
            frames: Frames::new(frames),
            bytes,
        });
        self.next += 1;
        self.bytes += bytes;
        self.trim(now);
    }

    fn trim(&mut self, now: Instant) {
        while let Some(front) = self.entries.front() {
            let too_old = now.saturating_duration_since(front.at) > self.max_age;
            if !too_old && self.bytes <= self.max_bytes {
                break;
            }
            self.bytes -= front.bytes;
            self.entries.pop_front();
        }
    }

    fn position(&mut self, offset: u64, now: Instant) -> Option<usize> {
        self.trim(now);
        self.entries
            .binary_search_by_key(&offset, |entry| entry.offset)
            .ok()
    }

    /// The frames of the packets after `offset` that target a socket in `rooms`, in order;
    /// `None` when `offset` is no longer (or never was) in the log.
    pub(crate) fn missed(
        &mut self,
        offset: u64,
        rooms: &[Room],
        now: Instant,
    ) -> Option<Vec<Frame>> {
        let index = self.position(offset, now)?;
        let mut frames = Vec::new();
        for entry in self.entries.iter().skip(index + 1) {
            if entry.audience.includes(rooms) {
                frames.extend(entry.frames.as_slice().iter().cloned());
            }
        }
        Some(frames)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

/// What a socket that disconnected for a recoverable reason leaves behind.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    pub(crate) sid: Sid,
    pub(crate) rooms: Vec<Room>,
    pub(crate) data: Value,
    at: Instant,
}

/// A session found for a reconnecting client, still to be checked against the log.
#[derive(Debug)]
pub(crate) struct Claim {
    pub(crate) pid: Sid,
    pub(crate) offset: u64,
    pub(crate) session: Session,
}

/// The disconnected sessions by private id, and the order they expire in: each disconnect
/// drops the expired ones from the front, without scanning every session (a graceful
/// shutdown persists every socket of the node at once).
#[derive(Default)]
struct Sessions {
    by_pid: HashMap<Sid, Session>,
    expiry: VecDeque<(Instant, Sid)>,
}

impl Sessions {
    fn expire(&mut self, now: Instant, max: Duration) {
        while let Some(&(at, pid)) = self.expiry.front() {
            if now.saturating_duration_since(at) <= max {
                break;
            }
            self.expiry.pop_front();
            // Only if it is still that session (not claimed, not persisted again since).
            if self
                .by_pid
                .get(&pid)
                .is_some_and(|session| session.at == at)
            {
                self.by_pid.remove(&pid);
            }
        }
    }
}

/// One namespace's recovery state: the packet log and the disconnected sessions.
pub(crate) struct Recovery {
    pub(crate) config: RecoveryConfig,
    log: Mutex<PacketLog>,
    sessions: Mutex<Sessions>,
}

impl Recovery {
    pub(crate) fn new(config: RecoveryConfig) -> Self {
        Recovery {
            config,
            log: Mutex::new(PacketLog::new(
                config.max_log_bytes,
                config.max_disconnection_duration,
            )),
            sessions: Mutex::new(Sessions::default()),
        }
    }

    /// The log, locked: held across an offset's assignment and its delivery, so that
    /// every socket receives packets in offset order and a restore sees no gap.
    pub(crate) fn log(&self) -> MutexGuard<'_, PacketLog> {
        self.log.lock()
    }

    /// Keeps a disconnected socket's session until it expires.
    pub(crate) fn persist(&self, pid: Sid, sid: Sid, rooms: Vec<Room>, data: Value) {
        let now = Instant::now();
        let mut sessions = self.sessions.lock();
        sessions.expire(now, self.config.max_disconnection_duration);
        sessions.expiry.push_back((now, pid));
        sessions.by_pid.insert(
            pid,
            Session {
                sid,
                rooms,
                data,
                at: now,
            },
        );
    }

    /// Takes (once) the session a client's CONNECT auth names, if it has not expired and
    /// its offset is still in the log.
    pub(crate) fn claim(&self, auth: &Value) -> Option<Claim> {
        let pid = Sid::parse(auth.get("pid")?.as_str()?)?;
        let offset = auth.get("offset")?.as_str()?;
        let now = Instant::now();
        let session = {
            let mut sessions = self.sessions.lock();
            sessions.expire(now, self.config.max_disconnection_duration);
            sessions.by_pid.remove(&pid)?
        };
        if now.saturating_duration_since(session.at) > self.config.max_disconnection_duration {
            return None;
        }
        let mut log = self.log.lock();
        let offset = log.parse_offset(offset)?;
        log.position(offset, now)?;
        drop(log);
        Some(Claim {
            pid,
            offset,
            session,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(text: &str) -> Vec<Frame> {
        vec![Frame::message(text)]
    }

    fn room(name: &str) -> Room {
        Room::from(name)
    }

    #[test]
    fn missed_packets_are_those_after_the_offset_that_target_the_rooms() {
        let mut log = PacketLog::new(1 << 20, Duration::from_secs(60));
        let now = Instant::now();
        log.push(Audience::All, frames("a"), now);
        log.push(
            Audience::of(&Target {
                rooms: vec![room("r")],
                except: vec![],
            }),
            frames("b"),
            now,
        );
        log.push(
            Audience::of(&Target {
                rooms: vec![room("other")],
                except: vec![],
            }),
            frames("c"),
            now,
        );
        log.push(
            Audience::of(&Target {
                rooms: vec![],
                except: vec![room("me")],
            }),
            frames("d"),
            now,
        );
        log.push(Audience::All, frames("e"), now);
        let me = Sid::random();
        let other = Sid::random();
        log.push(Audience::Socket(me), frames("f"), now);
        log.push(Audience::Socket(other), frames("g"), now);
        let missed = log
            .missed(1, &[room(me.as_str()), room("me"), room("r")], now)
            .unwrap();
        let texts: Vec<_> = missed
            .iter()
            .map(|frame| match frame {
                Frame::Text(text) => text.to_string(),
                Frame::Binary(_) => String::new(),
            })
            .collect();
        assert_eq!(texts, ["4b", "4e", "4f"]);
    }

    #[test]
    fn the_log_is_bounded_by_bytes() {
        let mut log = PacketLog::new(10 * (ENTRY_OVERHEAD + 2), Duration::from_secs(60));
        let now = Instant::now();
        for _ in 0..25 {
            log.push(Audience::All, frames("x"), now);
        }
        assert_eq!(log.len(), 10);
        // Offsets 1..=15 were trimmed: a client at offset 3 cannot be recovered.
        assert!(log.missed(3, &[room("me")], now).is_none());
        assert_eq!(log.missed(16, &[room("me")], now).unwrap().len(), 9);
    }

    #[test]
    fn the_log_is_bounded_by_time() {
        let mut log = PacketLog::new(1 << 20, Duration::from_secs(10));
        let start = Instant::now();
        log.push(Audience::All, frames("old"), start);
        log.push(Audience::All, frames("new"), start + Duration::from_secs(8));
        assert!(log.missed(1, &[], start + Duration::from_secs(9)).is_some());
        let later = start + Duration::from_secs(11);
        assert!(log.missed(1, &[], later).is_none());
        assert_eq!(log.missed(2, &[], later).unwrap().len(), 0);
    }

    #[test]
    fn a_trimmed_offset_or_an_expired_session_gives_no_claim() {
        let config = RecoveryConfig {
            max_log_bytes: 2 * (ENTRY_OVERHEAD + 2),
            ..Default::default()
        };
        let recovery = Recovery::new(config);
        let sid = Sid::random();
        let (p1, p2) = (Sid::random(), Sid::random());
        for _ in 0..5 {
            recovery
                .log()
                .push(Audience::All, frames("x"), Instant::now());
        }
        let epoch = recovery.log().epoch.clone();
        let at = |n: u64| offset_string(&epoch, n);
        recovery.persist(p1, sid, vec![room(sid.as_str())], Value::Null);
        // Offset 1 was trimmed: a fresh connection.
        assert!(
            recovery
                .claim(&serde_json::json!({"pid": p1.as_str(), "offset": at(1)}))
                .is_none()
        );
        // An offset of another log (another node, an earlier process): a fresh connection.
        recovery.persist(p2, sid, vec![room(sid.as_str())], Value::Null);
        assert!(
            recovery
                .claim(&serde_json::json!({"pid": p2.as_str(), "offset": offset_string("elsewhere", 4)}))
                .is_none()
        );
        recovery.persist(p2, sid, vec![room(sid.as_str())], Value::Null);
        let claim = recovery
            .claim(&serde_json::json!({"pid": p2.as_str(), "offset": at(4)}))
            .unwrap();
        assert_eq!(claim.session.sid, sid);
        // Used once.
        assert!(
            recovery
                .claim(&serde_json::json!({"pid": p2.as_str(), "offset": at(4)}))
                .is_none()
        );
        // Expired.
        let config = RecoveryConfig {
            max_disconnection_duration: Duration::ZERO,
            ..Default::default()
        };
        let recovery = Recovery::new(config);
        recovery
            .log()
            .push(Audience::All, frames("x"), Instant::now());
        let p3 = Sid::random();
        recovery.persist(p3, sid, vec![], Value::Null);
        std::thread::sleep(Duration::from_millis(2));
        assert!(
            recovery
                .claim(&serde_json::json!({"pid": p3.as_str(), "offset": offset_string(&recovery.log().epoch.clone(), 1)}))
                .is_none()
        );
    }

    #[test]
    fn sessions_expire_in_order_and_a_renewed_one_outlives_its_first_expiry() {
        let mut sessions = Sessions::default();
        let start = Instant::now();
        let max = Duration::from_secs(10);
        let session = |at| Session {
            sid: Sid::random(),
            rooms: vec![],
            data: Value::Null,
            at,
        };
        let (old, renewed) = (Sid::random(), Sid::random());
        for (pid, at) in [(old, start), (renewed, start)] {
            sessions.expiry.push_back((at, pid));
            sessions.by_pid.insert(pid, session(at));
        }
        // `renewed` disconnects again later: its first expiry entry must not remove it.
        let later = start + Duration::from_secs(5);
        sessions.expiry.push_back((later, renewed));
        sessions.by_pid.insert(renewed, session(later));
        sessions.expire(start + Duration::from_secs(11), max);
        assert!(!sessions.by_pid.contains_key(&old));
        assert!(sessions.by_pid.contains_key(&renewed));
        assert_eq!(sessions.expiry.len(), 1);
        sessions.expire(start + Duration::from_secs(16), max);
        assert!(sessions.by_pid.is_empty() && sessions.expiry.is_empty());
    }
}
