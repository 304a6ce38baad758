//! What the classic and the sharded adapters do alike once a message is decoded: answer a
//! server-side event, run another node's broadcast with ack on local sockets, collect the
//! responses to a request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use crate::adapter::{AckEvent, AckRoute, MemoryAdapter, ServerEventHook, Target};
use crate::protocol::Payload;
use crate::protocol::encode_frames;
use crate::protocol::socketio::Packet;

/// Hands another node's server-side event with ack to the handlers; `answer` gets the
/// first argument of the first ack. A handler that never answers is given up after
/// `timeout` (the requester has given up by then too).
pub(super) fn answer_server_event(
    hook: &ServerEventHook,
    payload: Payload,
    timeout: Duration,
    answer: impl FnOnce(Payload) + Send + 'static,
) {
    let (reply, receiver) = oneshot::channel();
    hook(payload, Some(reply));
    tokio::spawn(async move {
        if let Ok(Ok(mut payload)) = tokio::time::timeout(timeout, receiver).await {
            payload.args.truncate(1);
            answer(payload);
        }
    });
}

/// Runs another node's broadcast with ack on the local sockets: `announce` gets the number of
/// local recipients at once, then `forward` gets each client's ack as it arrives, until all
/// answered or `timeout` passed.
#[allow(clippy::too_many_arguments)]
pub(super) fn deliver_remote_ack_broadcast(
    local: &MemoryAdapter,
    nsp: &str,
    ack_ids: &AtomicU64,
    payload: Payload,
    target: &Target,
    volatile: bool,
    timeout: Duration,
    announce: impl FnOnce(usize),
    forward: impl Fn(Payload) -> bool + Send + 'static,
) {
    let mut packet = event_from_payload(nsp, payload);
    let id = ack_ids.fetch_add(1, Ordering::Relaxed);
    packet.id = Some(id);
    let (events, mut replies) = mpsc::unbounded_channel();
    let route = AckRoute {
        id,
        timeout,
        events,
    };
    let count = local.deliver(&encode_frames(&packet), target, volatile, Some(&route));
    drop(route);
    announce(count);
    if count == 0 {
        return;
    }
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + timeout;
        for _ in 0..count {
            let Ok(Some(AckEvent::Reply(payload))) =
                tokio::time::timeout_at(deadline, replies.recv()).await
            else {
                return;
            };
            if !forward(payload) {
                return;
            }
        }
    });
}

/// Waits for `expected` responses on `receiver`, or until the deadline.
pub(super) async fn collect<T>(
    receiver: &mut mpsc::UnboundedReceiver<T>,
    expected: usize,
    deadline: tokio::time::Instant,
) -> Vec<T> {
    let mut responses = Vec::with_capacity(expected);
    while responses.len() < expected {
        match tokio::time::timeout_at(deadline, receiver.recv()).await {
            Ok(Some(response)) => responses.push(response),
            Ok(None) | Err(_) => break,
        }
    }
    responses
}

/// An EVENT packet from `[event, ...args]` (binary as attachments).
pub(super) fn event_from_payload(nsp: &str, payload: Payload) -> Packet {
    let mut packet = Packet::event(nsp, Value::Array(payload.args));
    packet.attachments = payload.attachments;
    packet
}

/// `[event, ...args]` of an event packet, as the wire carries it.
pub(super) fn payload_of(packet: &Packet) -> Payload {
    let args = match &packet.data {
        Some(Value::Array(args)) => args.clone(),
        _ => Vec::new(),
    };
    Payload {
        args,
        attachments: packet.attachments.clone(),
    }
}

/// The arguments of an event packet, borrowed.
pub(super) fn args_of(packet: &Packet) -> &[Value] {
    match &packet.data {
        Some(Value::Array(args)) => args.as_slice(),
        _ => &[],
    }
}

/// The local half of [`crate::adapter::Adapter`]: socket and room bookkeeping, delegated to
/// the adapter's `local` [`MemoryAdapter`] (the cluster adds nothing to it).
macro_rules! delegate_local_rooms {
    () => {
        fn add_socket(&self, recipient: std::sync::Arc<dyn crate::adapter::Recipient>) {
            self.local.add_socket(recipient);
        }

        fn remove_socket(&self, sid: crate::protocol::Sid) {
            self.local.remove_socket(sid);
        }

        fn join(&self, sid: crate::protocol::Sid, rooms: &[crate::adapter::Room]) {
            self.local.join(sid, rooms);
        }

        fn leave(&self, sid: crate::protocol::Sid, room: &str) {
            self.local.leave(sid, room);
        }

        fn socket_rooms(&self, sid: crate::protocol::Sid) -> Vec<crate::adapter::Room> {
            self.local.socket_rooms(sid)
        }

        fn sockets(&self, target: &crate::adapter::Target) -> Vec<crate::protocol::Sid> {
            self.local.sockets(target)
        }

        fn rooms(&self) -> Vec<crate::adapter::Room> {
            self.local.rooms()
        }
    };
}
pub(super) use delegate_local_rooms;

/// After this node published a broadcast with ack: tells its collector how many other nodes
/// will report (`servers` counts this one too), then forgets the request when its timeout
/// has passed.
pub(super) fn follow_ack_broadcast(
    servers: crate::adapter::BoxFuture<Result<usize, crate::adapter::AdapterError>>,
    events: mpsc::UnboundedSender<AckEvent>,
    timeout: Duration,
    forget: impl FnOnce() + Send + 'static,
) {
    tokio::spawn(async move {
        // Unknown (Redis down): expect no other node rather than wait out the timeout.
        let servers = servers.await.unwrap_or(1);
        let _ = events.send(AckEvent::RemoteServers(servers.saturating_sub(1)));
        tokio::time::sleep(timeout).await;
        forget();
    });
}
