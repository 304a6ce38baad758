//! Micro-benchmarks of the per-message hot path: packet encoding and decoding, and local
//! fan-out of one encoded broadcast to many sockets' outbound queues.
//! Run: `cargo bench --bench fanout`.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ioscale::adapter::{AckRoute, Adapter, MemoryAdapter, Recipient, SocketInfo, Target};
use ioscale::engine::outbox::Outbox;
use ioscale::protocol::socketio::{Decoder, Packet, encode_text_into};
use ioscale::protocol::{Frame, Sid};
use serde_json::json;

/// A socket stand-in whose delivery is the real one: a push onto a bounded outbox.
struct QueueRecipient {
    sid: Sid,
    outbox: Outbox,
}

impl Recipient for QueueRecipient {
    fn sid(&self) -> Sid {
        self.sid
    }

    fn deliver(&self, frames: &[Frame], volatile: bool, _ack: Option<&AckRoute>) -> bool {
        self.outbox.push_all(frames, volatile).is_ok()
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

fn message_packet() -> Packet {
    Packet::event(
        "/",
        json!(["message", {
            "serverId": "server-1",
            "socketId": "AAAAAAAAAAAAAAAAAAAA",
            "message": "hello, this is an ordinary chat message",
            "timestamp": "2026-11-28T00:00:00.000Z"
        }]),
    )
}

fn encode_frame(packet: &Packet) -> Frame {
    let mut text = String::with_capacity(160);
    text.push('4');
    encode_text_into(packet, &mut text);
    Frame::Text(text.into())
}

fn codec(c: &mut Criterion) {
    let packet = message_packet();
    c.bench_function("encode message event", |b| {
        b.iter(|| encode_frame(black_box(&packet)))
    });
    let mut text = String::new();
    encode_text_into(&packet, &mut text);
    c.bench_function("decode message event", |b| {
        let mut decoder = Decoder::new(10);
        b.iter(|| decoder.decode_text(black_box(&text)))
    });
}

fn fanout(c: &mut Criterion) {
    let mut group = c.benchmark_group("local fan-out");
    for sockets in [1_000usize, 10_000] {
        let adapter = MemoryAdapter::new("/", None, Default::default());
        let recipients: Vec<Arc<QueueRecipient>> = (0..sockets)
            .map(|_| {
                Arc::new(QueueRecipient {
                    sid: Sid::random(),
                    outbox: Outbox::new(4 << 20),
                })
            })
            .collect();
        for recipient in &recipients {
            adapter.add_socket(recipient.clone());
        }
        let frames = [encode_frame(&message_packet())];
        let target = Target::default();
        let mut drained = Vec::new();
        group.throughput(Throughput::Elements(sockets as u64));
        group.bench_with_input(
            BenchmarkId::new("broadcast to all", sockets),
            &sockets,
            |b, _| {
                b.iter(|| {
                    let delivered = adapter.deliver(&frames, &target, false, None);
                    // Drain as the writers would, so queues stay small across iterations.
                    for recipient in &recipients {
                        recipient.outbox.drain_into(&mut drained);
                        drained.clear();
                    }
                    delivered
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, codec, fanout);
criterion_main!(benches);
