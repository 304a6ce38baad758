//! The bounded outbound queue of one session, shared by whichever transport drains it.
//!
//! Producers (handlers, broadcasts) push encoded frames without awaiting; the transport
//! drains everything queued at once and writes it as one batch. The bound is in bytes:
//! a volatile frame that does not fit is dropped, any other frame that does not fit
//! marks the session as a slow consumer (the caller then closes it).

use std::collections::VecDeque;

use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::protocol::engineio::Frame;

/// Why a frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PushError {
    /// The session is closed; the frame was discarded.
    Closed,
    /// A volatile frame did not fit; it was dropped.
    VolatileDropped,
    /// A non-volatile frame did not fit: the peer does not keep up.
    Full,
}

/// A session's outbound frames, bounded in bytes.
#[derive(Debug)]
pub struct Outbox {
    state: Mutex<State>,
    ready: Notify,
    max_bytes: usize,
}

#[derive(Debug, Default)]
struct State {
    frames: VecDeque<Frame>,
    bytes: usize,
    closed: bool,
}

impl Outbox {
    /// An open, empty outbox holding at most `max_bytes` (one packet always fits).
    pub fn new(max_bytes: usize) -> Self {
        Outbox {
            state: Mutex::new(State::default()),
            ready: Notify::new(),
            max_bytes,
        }
    }

    /// Queues one frame; see [`Outbox::push_all`].
    pub fn push(&self, frame: Frame, volatile: bool) -> Result<(), PushError> {
        self.push_all(std::slice::from_ref(&frame), volatile)
    }

    /// Pushes several frames atomically (a packet and its binary attachments stay together).
    pub fn push_all(&self, frames: &[Frame], volatile: bool) -> Result<(), PushError> {
        let was_empty = {
            let mut state = self.state.lock();
            if state.closed {
                return Err(PushError::Closed);
            }
            let len: usize = frames.iter().map(Frame::len).sum();
            // An empty queue always accepts one packet, so one large packet can still go out.
            if state.bytes + len > self.max_bytes && !state.frames.is_empty() {
                return Err(if volatile {
                    PushError::VolatileDropped
                } else {
                    PushError::Full
                });
            }
            let was_empty = state.frames.is_empty();
            state.bytes += len;
            state.frames.extend(frames.iter().cloned());
            was_empty
        };
        // The drainer takes everything queued at once: only the first frame of a batch
        // needs to wake it (a burst costs one wake per recipient, not one per packet).
        if was_empty {
            self.ready.notify_one();
        }
        Ok(())
    }

    /// Moves every queued frame into `out` (which the caller reuses between batches).
    pub fn drain_into(&self, out: &mut Vec<Frame>) {
        let mut state = self.state.lock();
        state.bytes = 0;
        out.extend(state.frames.drain(..));
        if state.frames.capacity() > 64 {
            // Give back memory after a burst; idle sessions keep nothing.
            state.frames = VecDeque::new();
        }
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.state.lock().frames.is_empty()
    }

    /// Refuses further frames; what is queued stays for a final flush.
    pub fn close(&self) {
        self.state.lock().closed = true;
        self.ready.notify_one();
    }

    /// Drops everything queued (an aborted session flushes nothing); returns how many frames.
    pub fn clear(&self) -> usize {
        let mut state = self.state.lock();
        let dropped = state.frames.len();
        state.frames = VecDeque::new();
        state.bytes = 0;
        dropped
    }

    /// Whether [`Outbox::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.state.lock().closed
    }

    /// Resolves when frames are queued or the outbox is closed (at once if so already).
    pub async fn ready(&self) {
        let notified = self.ready.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        {
            let state = self.state.lock();
            if !state.frames.is_empty() || state.closed {
                return;
            }
        }
        notified.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn frame(len: usize) -> Frame {
        Frame::Binary(Bytes::from(vec![0u8; len]))
    }

    #[test]
    fn bound_is_in_bytes_and_volatile_frames_drop_first() {
        let outbox = Outbox::new(10);
        assert_eq!(outbox.push(frame(6), false), Ok(()));
        assert_eq!(outbox.push(frame(4), false), Ok(()));
        assert_eq!(outbox.push(frame(1), true), Err(PushError::VolatileDropped));
        assert_eq!(outbox.push(frame(1), false), Err(PushError::Full));
        let mut out = Vec::new();
        outbox.drain_into(&mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(outbox.push(frame(10), false), Ok(()));
    }

    #[test]
    fn empty_queue_accepts_one_oversized_frame() {
        let outbox = Outbox::new(4);
        assert_eq!(outbox.push(frame(100), false), Ok(()));
        assert_eq!(outbox.push(frame(1), false), Err(PushError::Full));
    }

    #[test]
    fn closed_outbox_refuses_but_keeps_queued_frames() {
        let outbox = Outbox::new(100);
        outbox.push(Frame::PING, false).unwrap();
        outbox.close();
        assert_eq!(outbox.push(Frame::PING, false), Err(PushError::Closed));
        let mut out = Vec::new();
        outbox.drain_into(&mut out);
        assert_eq!(out, vec![Frame::PING]);
    }

    #[test]
    fn frames_keep_their_order() {
        let outbox = Outbox::new(1000);
        for i in 0..50u8 {
            outbox
                .push(Frame::Binary(Bytes::from(vec![i])), false)
                .unwrap();
        }
        let mut out = Vec::new();
        outbox.drain_into(&mut out);
        let order: Vec<u8> = out
            .iter()
            .map(|f| match f {
                Frame::Binary(b) => b[0],
                Frame::Text(_) => 255,
            })
            .collect();
        assert_eq!(order, (0..50).collect::<Vec<_>>());
    }
}
