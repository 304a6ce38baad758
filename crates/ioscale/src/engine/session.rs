//! One Engine.IO session: its outbound queue, transport state and lifecycle signals.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::SystemTime;

use http::{HeaderMap, Uri};
use parking_lot::Mutex;
use tokio::sync::Notify;

use super::outbox::{Outbox, PushError};
use super::timer::{Millis, SessionTimer, Timers};
use crate::metrics::Metrics;
use crate::protocol::Sid;
use crate::protocol::engineio::Frame;

/// The transport a session currently writes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransportKind {
    /// HTTP long-polling.
    Polling,
    /// WebSocket (from the start or after an upgrade).
    WebSocket,
}

impl TransportKind {
    /// The name on the wire (`polling`, `websocket`).
    pub fn as_str(self) -> &'static str {
        match self {
            TransportKind::Polling => "polling",
            TransportKind::WebSocket => "websocket",
        }
    }
}

/// Why a session closed, with the strings Engine.IO uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// The client closed the transport (or sent a `close` packet).
    TransportClose,
    /// The transport failed (I/O error, protocol violation such as overlapping polls).
    TransportError,
    /// No pong within `ping_timeout` after a ping.
    PingTimeout,
    /// The client sent a packet that does not decode.
    ParseError,
    /// The server application closed the session.
    ForcedClose,
    /// The server is shutting down.
    ServerShuttingDown,
    /// The outbound queue overflowed: the client does not read fast enough.
    SlowConsumer,
}

impl CloseReason {
    /// The reason as Engine.IO words it (`transport close`, `ping timeout`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::TransportClose => "transport close",
            CloseReason::TransportError => "transport error",
            CloseReason::PingTimeout => "ping timeout",
            CloseReason::ParseError => "parse error",
            CloseReason::ForcedClose => "forced close",
            CloseReason::ServerShuttingDown => "server shutting down",
            CloseReason::SlowConsumer => "slow consumer",
        }
    }

    /// Whether what is queued is still written before the transport closes.
    pub(crate) fn flushes(self) -> bool {
        matches!(
            self,
            CloseReason::ForcedClose
                | CloseReason::ServerShuttingDown
                | CloseReason::TransportClose
        )
    }
}

/// What the client's handshake request carried, kept for the application (Socket.IO's
/// `socket.handshake`).
#[derive(Debug)]
pub struct RequestInfo {
    /// The request target, then each header's name and value, each followed by a NUL (a
    /// byte that neither a target, a header name nor a header value may contain): one block
    /// instead of a `HeaderMap` and a `Uri` (about 850 bytes less per session).
    raw: Box<[u8]>,
    /// The peer's address (the TCP peer, not a forwarded one).
    pub remote_addr: SocketAddr,
    /// When the handshake request was received.
    pub issued: SystemTime,
}

impl RequestInfo {
    /// A copy that owns its bytes. The request's own header values and URI are slices of
    /// the connection's read buffer (kilobytes); keeping them would keep that buffer alive
    /// for the whole session.
    pub(crate) fn detached(uri: &Uri, headers: &HeaderMap, remote_addr: SocketAddr) -> Self {
        let target = uri.path_and_query().map_or("/", |pq| pq.as_str());
        let length = target.len()
            + 1
            + headers
                .iter()
                .map(|(name, value)| name.as_str().len() + value.len() + 2)
                .sum::<usize>();
        let mut raw = Vec::with_capacity(length);
        raw.extend_from_slice(target.as_bytes());
        raw.push(0);
        for (name, value) in headers {
            raw.extend_from_slice(name.as_str().as_bytes());
            raw.push(0);
            raw.extend_from_slice(value.as_bytes());
            raw.push(0);
        }
        RequestInfo {
            raw: raw.into_boxed_slice(),
            remote_addr,
            issued: SystemTime::now(),
        }
    }

    /// The request target: path and query (`/socket.io/?EIO=4&transport=websocket`).
    pub fn target(&self) -> &str {
        let target = self.raw.split(|b| *b == 0).next().unwrap_or_default();
        std::str::from_utf8(target).unwrap_or("/")
    }

    /// The request target's path (before `?`).
    pub fn path(&self) -> &str {
        let target = self.target();
        target.split_once('?').map_or(target, |(path, _)| path)
    }

    /// The request target's query (after `?`), if any.
    pub fn query(&self) -> Option<&str> {
        self.target().split_once('?').map(|(_, query)| query)
    }

    /// The headers in the order they came, names in lowercase.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> {
        let mut parts = self.raw.split(|b| *b == 0).skip(1);
        std::iter::from_fn(move || {
            let name = parts.next().filter(|name| !name.is_empty())?;
            let value = parts.next()?;
            Some((std::str::from_utf8(name).unwrap_or_default(), value))
        })
    }

    /// The first value of a header (the name in any case).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers()
            .find(|(candidate, _)| candidate.eq_ignore_ascii_case(name))
            .map(|(_, value)| value)
    }
}

const POLLING: u8 = 0;
const WEBSOCKET: u8 = 1;

const UPGRADE_NONE: u8 = 0;
const UPGRADE_PROBING: u8 = 1;
const UPGRADE_DONE: u8 = 2;

/// An Engine.IO session. `D` is the state the handler above attaches to it.
#[derive(Debug)]
pub struct Session<D> {
    /// The session id (`sid` on the wire).
    pub id: Sid,
    /// What the handshake request said.
    pub request: RequestInfo,
    /// The handler's state for this session.
    pub data: D,
    pub(crate) outbox: Outbox,
    transport: AtomicU8,
    upgrade: AtomicU8,
    pub(crate) poll_active: AtomicBool,
    pub(crate) post_active: AtomicBool,
    /// A GET came since the handshake: a client reads this session.
    polled: AtomicBool,
    closed: AtomicBool,
    close_reason: Mutex<Option<CloseReason>>,
    close_signal: Notify,
    transport_signal: Notify,
    /// Heartbeat and connect deadlines, served by the engine's shared timers.
    pub(crate) timer: SessionTimer,
    timers: Arc<Timers>,
    metrics: Arc<Metrics>,
}

impl<D> Session<D> {
    pub(crate) fn new(
        id: Sid,
        request: RequestInfo,
        data: D,
        transport: TransportKind,
        max_buffered_bytes: usize,
        timers: Arc<Timers>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Session {
            id,
            request,
            data,
            outbox: Outbox::new(max_buffered_bytes),
            transport: AtomicU8::new(match transport {
                TransportKind::Polling => POLLING,
                TransportKind::WebSocket => WEBSOCKET,
            }),
            upgrade: AtomicU8::new(UPGRADE_NONE),
            poll_active: AtomicBool::new(false),
            post_active: AtomicBool::new(false),
            polled: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            close_reason: Mutex::new(None),
            close_signal: Notify::new(),
            transport_signal: Notify::new(),
            timer: SessionTimer::default(),
            timers,
            metrics,
        }
    }

    /// The transport the session writes through now.
    pub fn transport(&self) -> TransportKind {
        if self.transport.load(Ordering::Acquire) == WEBSOCKET {
            TransportKind::WebSocket
        } else {
            TransportKind::Polling
        }
    }

    /// Queues frames for the client (a packet and its attachments go together). When the
    /// queue is full a volatile packet is dropped; otherwise the session is closed as a
    /// slow consumer, and the error says so.
    pub fn send(&self, frames: &[Frame], volatile: bool) -> Result<(), PushError> {
        let result = self.outbox.push_all(frames, volatile);
        match result {
            Err(PushError::Full) => {
                tracing::warn!(sid = %self.id, "outbound queue full: closing slow consumer");
                Metrics::add(&self.metrics.dropped_slow_consumer, 1);
                Metrics::add(&self.metrics.slow_consumers, 1);
                self.close(CloseReason::SlowConsumer);
            }
            Err(PushError::VolatileDropped) => Metrics::add(&self.metrics.dropped_volatile, 1),
            // Packets for a client cut as a slow consumer (until it leaves its rooms) are lost
            // to it too: counted, so every lost delivery shows up.
            Err(PushError::Closed) if self.close_reason() == Some(CloseReason::SlowConsumer) => {
                Metrics::add(&self.metrics.dropped_slow_consumer, 1)
            }
            _ => {}
        }
        result
    }

    /// The engine's counters.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Whether the session is closed (no frame can be queued any more).
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Why it closed, once it did.
    pub fn close_reason(&self) -> Option<CloseReason> {
        *self.close_reason.lock()
    }

    /// Closes the session once; later calls are ignored. The transports observe it and
    /// finish (flushing first when the reason allows); the engine's timers tell the handler.
    pub fn close(&self, reason: CloseReason) {
        // SeqCst with `start_timer`: one of the two sees the other and queues the close.
        if self.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        *self.close_reason.lock() = Some(reason);
        if !reason.flushes() {
            let dropped = self.outbox.clear() as u64;
            if reason == CloseReason::SlowConsumer {
                Metrics::add(&self.metrics.dropped_slow_consumer, dropped);
            }
        }
        self.outbox.close();
        self.close_signal.notify_waiters();
        if self.timer.is_started() {
            self.timers.schedule(self.id, 0);
        }
    }

    /// Arms the heartbeat (first ping at `first_ping`) and the connect deadline.
    pub(crate) fn start_timer(&self, first_ping: Millis, establish: Option<Millis>) {
        let first = self.timer.start(first_ping, establish);
        self.timers.schedule(self.id, first);
        self.timer.set_started();
        if self.closed.load(Ordering::SeqCst) {
            self.timers.schedule(self.id, 0);
        }
    }

    /// A pong arrived: the next ping is `interval` from now.
    pub(crate) fn on_pong(&self, interval: std::time::Duration) {
        if let Some(at) = self.timer.on_pong(self.timers.after(interval)) {
            self.timers.schedule(self.id, at);
        }
    }

    /// Resolves once the session is closed.
    pub async fn closed(&self) {
        let notified = self.close_signal.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if self.is_closed() {
            return;
        }
        notified.await;
    }

    pub(crate) fn set_polled(&self) {
        if !self.polled.load(Ordering::Relaxed) {
            self.polled.store(true, Ordering::Relaxed);
        }
    }

    /// Whether a client ever polled this session (a WebSocket session counts as read).
    pub(crate) fn was_polled(&self) -> bool {
        self.polled.load(Ordering::Relaxed) || self.transport() == TransportKind::WebSocket
    }

    pub(crate) fn start_upgrade(&self) -> bool {
        self.upgrade
            .compare_exchange(
                UPGRADE_NONE,
                UPGRADE_PROBING,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
    }

    pub(crate) fn cancel_upgrade(&self) {
        let _ = self.upgrade.compare_exchange(
            UPGRADE_PROBING,
            UPGRADE_NONE,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
    }

    pub(crate) fn finish_upgrade(&self) {
        self.upgrade.store(UPGRADE_DONE, Ordering::Release);
        self.transport.store(WEBSOCKET, Ordering::Release);
        // A poll still pending answers with a noop; the queue now belongs to the WebSocket.
        self.transport_signal.notify_waiters();
    }

    /// A probe succeeded: a pending poll answers with a noop so the client can pause polling.
    pub(crate) fn probed(&self) {
        self.transport_signal.notify_waiters();
    }

    pub(crate) fn is_upgrading(&self) -> bool {
        self.upgrade.load(Ordering::Acquire) != UPGRADE_NONE
    }

    /// Fires at the next upgrade step (probe answered, upgrade done). Create it before
    /// checking the state, so a step in between is not missed.
    pub(crate) fn transport_changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.transport_signal.notified()
    }

    /// The closing poll was answered: a closed polling session can be forgotten now. True
    /// when the caller must forget it (the handler already heard of the close); otherwise
    /// the timers do, right after telling the handler.
    #[must_use]
    pub(crate) fn final_poll_answered(&self) -> bool {
        if self.timer.set_final_polled() {
            return true;
        }
        if self.timer.is_started() {
            self.timers.schedule(self.id, 0);
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_info_keeps_target_and_headers_in_order() {
        let uri: Uri = "/socket.io/?EIO=4&transport=websocket".parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("host", "example.com".parse().unwrap());
        headers.append("x-many", "one".parse().unwrap());
        headers.append("x-many", "two".parse().unwrap());
        headers.insert("x-empty", "".parse().unwrap());
        headers.insert(
            "x-latin",
            http::HeaderValue::from_bytes(b"caf\xe9").unwrap(),
        );
        let info = RequestInfo::detached(&uri, &headers, "127.0.0.1:1".parse().unwrap());
        assert_eq!(info.target(), "/socket.io/?EIO=4&transport=websocket");
        assert_eq!(info.path(), "/socket.io/");
        assert_eq!(info.query(), Some("EIO=4&transport=websocket"));
        let all: Vec<_> = info.headers().collect();
        assert_eq!(
            all,
            [
                ("host", &b"example.com"[..]),
                ("x-many", b"one"),
                ("x-many", b"two"),
                ("x-empty", b""),
                ("x-latin", b"caf\xe9"),
            ]
        );
        assert_eq!(info.header("Host"), Some(&b"example.com"[..]));
        assert_eq!(info.header("x-empty"), Some(&b""[..]));
        assert_eq!(info.header("missing"), None);
    }
}
