//! The in-memory adapter: a sharded rooms index and local fan-out.

use std::collections::HashSet;
use std::sync::Arc;

use std::time::Instant;

use dashmap::DashMap;

use super::members::Members;
use super::{
    AckEvent, AckRoute, Adapter, AdapterError, BoxFuture, Broadcast, BroadcastFlags, Recipient,
    Room, RoomEvent, RoomEventHook, SocketInfo, Target,
};
use crate::metrics::Metrics;
use crate::protocol::Payload;
use crate::protocol::{Frame, Sid};

/// Rooms index of one namespace. Maps are sharded (no global lock on the broadcast
/// path), and a broadcast to a room touches only that room's members.
pub struct MemoryAdapter {
    namespace: String,
    metrics: Arc<Metrics>,
    sockets: DashMap<Sid, Socket>,
    rooms: DashMap<Room, Members>,
    events: Option<RoomEventHook>,
}

struct Socket {
    recipient: Arc<dyn Recipient>,
    rooms: Vec<Room>,
}

impl MemoryAdapter {
    /// An empty adapter for `namespace`, reporting room events to `events` if given.
    pub fn new(
        namespace: impl Into<String>,
        events: Option<RoomEventHook>,
        metrics: Arc<Metrics>,
    ) -> Self {
        MemoryAdapter {
            namespace: namespace.into(),
            metrics,
            sockets: DashMap::new(),
            rooms: DashMap::new(),
            events,
        }
    }

    fn emit(&self, event: RoomEvent) {
        if let Some(hook) = &self.events {
            hook(&self.namespace, &event);
        }
    }

    fn join_one(&self, sid: Sid, recipient: &Arc<dyn Recipient>, room: &Room) -> bool {
        let mut created = false;
        let inserted = {
            let mut members = self.rooms.entry(room.clone()).or_insert_with(|| {
                created = true;
                Members::new()
            });
            members.insert(sid, recipient)
        };
        if created {
            self.emit(RoomEvent::Create(room.clone()));
        }
        if inserted {
            self.emit(RoomEvent::Join(room.clone(), sid));
        }
        inserted
    }

    fn leave_one(&self, sid: Sid, room: &str) {
        let removed = self
            .rooms
            .get_mut(room)
            .is_some_and(|mut members| members.remove(&sid));
        let deleted = self
            .rooms
            .remove_if(room, |_, members| members.is_empty())
            .map(|(room, _)| room);
        if removed {
            self.emit(RoomEvent::Leave(Room::from(room), sid));
        }
        if let Some(room) = deleted {
            self.emit(RoomEvent::Delete(room));
        }
    }

    fn excluded(&self, except: &[Room]) -> HashSet<Sid> {
        let mut excluded = HashSet::new();
        for room in except {
            if let Some(members) = self.rooms.get(room) {
                excluded.extend(members.keys().copied());
            }
        }
        excluded
    }

    /// Calls `visit` once for each targeted recipient.
    fn for_each_target(&self, target: &Target, mut visit: impl FnMut(&Arc<dyn Recipient>)) {
        let excluded = self.excluded(&target.except);
        match target.rooms.as_slice() {
            [] => {
                for entry in self.sockets.iter() {
                    if !excluded.contains(entry.key()) {
                        visit(&entry.value().recipient);
                    }
                }
            }
            [room] => {
                if let Some(members) = self.rooms.get(room) {
                    for (sid, recipient) in members.iter() {
                        if !excluded.contains(sid) {
                            visit(recipient);
                        }
                    }
                }
            }
            rooms => {
                let mut seen = HashSet::new();
                for room in rooms {
                    if let Some(members) = self.rooms.get(room) {
                        for (sid, recipient) in members.iter() {
                            if !excluded.contains(sid) && seen.insert(*sid) {
                                visit(recipient);
                            }
                        }
                    }
                }
            }
        }
    }
}

impl Adapter for MemoryAdapter {
    fn add_socket(&self, recipient: Arc<dyn Recipient>) {
        let sid = recipient.sid();
        let own_room: Room = Room::from(sid.as_str());
        self.sockets.insert(
            sid,
            Socket {
                recipient: recipient.clone(),
                rooms: vec![own_room.clone()],
            },
        );
        self.join_one(sid, &recipient, &own_room);
    }

    fn remove_socket(&self, sid: Sid) {
        if let Some((_, socket)) = self.sockets.remove(&sid) {
            for room in socket.rooms {
                self.leave_one(sid, &room);
            }
        }
    }

    fn join(&self, sid: Sid, rooms: &[Room]) {
        let Some(recipient) = self.sockets.get(&sid).map(|s| s.recipient.clone()) else {
            return;
        };
        for room in rooms {
            if self.join_one(sid, &recipient, room)
                && let Some(mut socket) = self.sockets.get_mut(&sid)
            {
                socket.rooms.push(room.clone());
            }
        }
    }

    fn leave(&self, sid: Sid, room: &str) {
        if let Some(mut socket) = self.sockets.get_mut(&sid) {
            socket.rooms.retain(|r| &**r != room);
        }
        self.leave_one(sid, room);
    }

    fn socket_rooms(&self, sid: Sid) -> Vec<Room> {
        self.sockets
            .get(&sid)
            .map(|socket| socket.rooms.clone())
            .unwrap_or_default()
    }

    fn sockets(&self, target: &Target) -> Vec<Sid> {
        let mut sids = Vec::new();
        self.for_each_target(target, |recipient| sids.push(recipient.sid()));
        sids
    }

    fn rooms(&self) -> Vec<Room> {
        self.rooms.iter().map(|entry| entry.key().clone()).collect()
    }

    fn broadcast(&self, message: &Broadcast, target: &Target, flags: BroadcastFlags) -> usize {
        Metrics::add(&self.metrics.broadcasts_local, 1);
        self.deliver(&message.frames, target, flags.volatile, None)
    }

    fn broadcast_with_ack(
        &self,
        message: &Broadcast,
        target: &Target,
        flags: BroadcastFlags,
        route: AckRoute,
    ) -> usize {
        let delivered = self.deliver(&message.frames, target, flags.volatile, Some(&route));
        let _ = route.events.send(AckEvent::RemoteServers(0));
        delivered
    }

    fn fetch_sockets(
        &self,
        target: &Target,
        _flags: BroadcastFlags,
    ) -> BoxFuture<Result<Vec<SocketInfo>, AdapterError>> {
        let sockets = self.local_infos(target);
        Box::pin(async move { Ok(sockets) })
    }

    fn sockets_join(&self, target: &Target, rooms: &[Room], _flags: BroadcastFlags) {
        self.local_join(target, rooms);
    }

    fn sockets_leave(&self, target: &Target, rooms: &[Room], _flags: BroadcastFlags) {
        self.local_leave(target, rooms);
    }

    fn disconnect_sockets(&self, target: &Target, close: bool, _flags: BroadcastFlags) {
        self.local_disconnect(target, close);
    }

    fn all_rooms(&self) -> BoxFuture<Result<Vec<Room>, AdapterError>> {
        let rooms = self.rooms();
        Box::pin(async move { Ok(rooms) })
    }

    fn server_side_emit(&self, _payload: Payload) {
        // A single node has no other node to tell (Socket.IO's in-memory adapter neither).
    }

    fn server_side_emit_with_ack(
        &self,
        _payload: Payload,
    ) -> BoxFuture<Result<Vec<Payload>, AdapterError>> {
        Box::pin(async { Ok(Vec::new()) })
    }

    fn server_count(&self) -> BoxFuture<Result<usize, AdapterError>> {
        Box::pin(async { Ok(1) })
    }
}

impl MemoryAdapter {
    /// Delivers encoded frames to the targeted local sockets; returns how many accepted.
    pub fn deliver(
        &self,
        frames: &[Frame],
        target: &Target,
        volatile: bool,
        ack: Option<&AckRoute>,
    ) -> usize {
        let started = Instant::now();
        let mut delivered = 0;
        self.for_each_target(target, |recipient| {
            if recipient.deliver(frames, volatile, ack) {
                delivered += 1;
            }
        });
        self.metrics.fanout.observe(started.elapsed());
        delivered
    }

    /// Whether a local socket has this id (a room named after it is that socket's own).
    pub fn has_socket(&self, id: &str) -> bool {
        Sid::parse(id).is_some_and(|sid| self.sockets.contains_key(&sid))
    }

    /// Whether some local socket is in the room.
    pub fn has_room(&self, room: &str) -> bool {
        self.rooms.contains_key(room)
    }

    /// `fetch_sockets` on this node.
    pub fn local_infos(&self, target: &Target) -> Vec<SocketInfo> {
        let mut recipients = Vec::new();
        self.for_each_target(target, |recipient| recipients.push(recipient.clone()));
        recipients
            .iter()
            .map(|recipient| recipient.info())
            .collect()
    }

    /// `sockets_join` on this node.
    pub fn local_join(&self, target: &Target, rooms: &[Room]) {
        for sid in self.sockets(target) {
            self.join(sid, rooms);
        }
    }

    /// `sockets_leave` on this node.
    pub fn local_leave(&self, target: &Target, rooms: &[Room]) {
        for sid in self.sockets(target) {
            for room in rooms {
                self.leave(sid, room);
            }
        }
    }

    /// `disconnect_sockets` on this node. Recipients are collected first: disconnecting
    /// changes the indexes being walked.
    pub fn local_disconnect(&self, target: &Target, close: bool) {
        let mut recipients = Vec::new();
        self.for_each_target(target, |recipient| recipients.push(recipient.clone()));
        for recipient in recipients {
            recipient.disconnect(close);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parking_lot::Mutex;

    struct Probe {
        sid: Sid,
        received: Mutex<Vec<Frame>>,
    }

    impl Recipient for Probe {
        fn sid(&self) -> Sid {
            self.sid
        }
        fn deliver(&self, frames: &[Frame], _volatile: bool, _ack: Option<&AckRoute>) -> bool {
            self.received.lock().extend_from_slice(frames);
            true
        }
        fn info(&self) -> SocketInfo {
            SocketInfo {
                id: self.sid.to_string(),
                handshake: serde_json::Value::Null,
                rooms: Vec::new(),
                data: serde_json::Value::Null,
            }
        }
        fn disconnect(&self, _close: bool) {}
    }

    fn probe() -> Arc<Probe> {
        Arc::new(Probe {
            sid: Sid::random(),
            received: Mutex::new(Vec::new()),
        })
    }

    fn room(name: &str) -> Room {
        Room::from(name)
    }

    #[test]
    fn union_of_rooms_reaches_each_socket_once_and_honours_except() {
        let adapter = MemoryAdapter::new("/", None, Default::default());
        let (a, b, c) = (probe(), probe(), probe());
        for p in [&a, &b, &c] {
            adapter.add_socket(p.clone());
        }
        adapter.join(a.sid, &[room("r1"), room("r2")]);
        adapter.join(b.sid, &[room("r2"), room("vip")]);
        adapter.join(c.sid, &[room("r3")]);
        let target = Target {
            rooms: vec![room("r1"), room("r2"), room("r3")],
            except: vec![room("vip")],
        };
        let count = adapter.deliver(&[Frame::message("x")], &target, false, None);
        assert_eq!(count, 2);
        assert_eq!(a.received.lock().len(), 1);
        assert_eq!(b.received.lock().len(), 0);
        assert_eq!(c.received.lock().len(), 1);
        let all = adapter.deliver(&[Frame::message("y")], &Target::default(), false, None);
        assert_eq!(all, 3);
    }

    #[test]
    fn room_lifecycle_events_and_cleanup() {
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        let hook: RoomEventHook = Arc::new(move |_, event| sink.lock().push(event.clone()));
        let adapter = MemoryAdapter::new("/", Some(hook), Default::default());
        let a = probe();
        adapter.add_socket(a.clone());
        adapter.join(a.sid, &[room("lobby")]);
        adapter.join(a.sid, &[room("lobby")]);
        adapter.leave(a.sid, "lobby");
        let own = room(a.sid.as_str());
        assert_eq!(
            *events.lock(),
            vec![
                RoomEvent::Create(own.clone()),
                RoomEvent::Join(own.clone(), a.sid),
                RoomEvent::Create(room("lobby")),
                RoomEvent::Join(room("lobby"), a.sid),
                RoomEvent::Leave(room("lobby"), a.sid),
                RoomEvent::Delete(room("lobby")),
            ]
        );
        adapter.remove_socket(a.sid);
        assert!(adapter.rooms().is_empty());
        assert!(adapter.socket_rooms(a.sid).is_empty());
    }
}
