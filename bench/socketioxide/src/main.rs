//! The socketioxide reference of `ioscale serve`'s application, for side-by-side benchmarks
//! (the same application as `bench/node/server.mjs`): `server-info` on connect, `message`
//! relayed to everyone (or a room), `join` with an acknowledgement.
//!
//! socketioxide runs with its default settings: ping interval 25 s, ping timeout 20 s,
//! connect timeout 45 s, at most 128 packets queued per connection (`max_buffer_size`; a
//! packet emitted to a connection whose queue is full is not sent, and the emit reports
//! `InternalChannelFull` for it; the connection stays open), 100 kB max payload.
//!
//! Event handlers are async (socketioxide requires it) and socketioxide runs each event in
//! its own task: on the multi-threaded runtime, two `message` events of one client may be
//! relayed in either order (the benchmarks count it as reordering).
//!
//! The listener is tokio's, with the same accept backlog as `ioscale serve` (8192).
//!
//! Since socketioxide drops such packets silently (for the client), the app counts them
//! and prints the counts on SIGTERM / SIGINT, so a benchmark can account for every message.
//!
//! Usage: socketioxide-reference --port N [--server-id ID]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use socketioxide::extract::{AckSender, Data, SocketRef};
use socketioxide::{BroadcastError, SocketError, SocketIo};

/// What a `message` event carries; anything else in it is ignored.
#[derive(Deserialize)]
struct Incoming {
    message: String,
    /// Only a string names a room (as in the Node reference); any other value means everyone.
    #[serde(default)]
    room: Option<Value>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Relayed<'a> {
    server_id: &'a str,
    socket_id: String,
    message: String,
    timestamp: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ServerInfo<'a> {
    server_id: &'a str,
    timestamp: String,
}

#[derive(Serialize)]
struct JoinAck {
    ok: bool,
    room: Value,
}

/// Packets a broadcast could not queue, by cause.
#[derive(Default)]
struct Dropped {
    channel_full: AtomicU64,
    closed: AtomicU64,
    other: AtomicU64,
}

impl Dropped {
    fn count(&self, result: Result<(), BroadcastError>) {
        match result {
            Ok(()) => {}
            Err(BroadcastError::Socket(errors)) => {
                for error in errors {
                    let counter = match error {
                        SocketError::InternalChannelFull => &self.channel_full,
                        SocketError::Closed => &self.closed,
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(_) => {
                self.other.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Pending connections the kernel may queue before `accept` (as `ioscale serve`).
const LISTEN_BACKLOG: u32 = 8192;

fn now_iso() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

fn option(args: &[String], name: &str) -> Option<String> {
    let index = args.iter().position(|arg| arg == name)?;
    args.get(index + 1).cloned()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let port: u16 = match option(&args, "--port") {
        Some(port) => port.parse()?,
        None => 3000,
    };
    let server_id: Arc<str> = option(&args, "--server-id")
        .unwrap_or_else(|| format!("socketioxide-{}", std::process::id()))
        .into();
    let dropped = Arc::new(Dropped::default());

    let (layer, io) = SocketIo::new_layer();
    {
        let server_id = server_id.clone();
        let dropped = dropped.clone();
        io.ns("/", async move |socket: SocketRef| {
            let info = ServerInfo {
                server_id: &server_id,
                timestamp: now_iso(),
            };
            socket.emit("server-info", &info).ok();

            let (id, drops) = (server_id.clone(), dropped.clone());
            socket.on(
                "message",
                async move |socket: SocketRef, io: SocketIo, Data::<Incoming>(body)| {
                    let relayed = Relayed {
                        server_id: &id,
                        socket_id: socket.id.to_string(),
                        message: body.message,
                        timestamp: now_iso(),
                    };
                    let result = match body.room {
                        Some(Value::String(room)) => io.to(room).emit("message", &relayed).await,
                        _ => io.emit("message", &relayed).await,
                    };
                    drops.count(result);
                },
            );

            socket.on(
                "join",
                async |socket: SocketRef, Data::<Value>(room), ack: AckSender| {
                    let ok = matches!(&room, Value::String(name) if !name.is_empty());
                    if let Value::String(name) = &room
                        && ok
                    {
                        socket.join(name.clone());
                    }
                    // Without an ack id from the client there is nobody to answer.
                    ack.send(&JoinAck { ok, room }).ok();
                },
            );
        });
    }

    let app = axum::Router::new().layer(layer);
    // The same listen backlog as `ioscale serve` (8192, capped by net.core.somaxconn):
    // `TcpListener::bind` asks for 128, and then a thousand simultaneous connects overflow
    // the accept queue and wait for SYN retransmits (1 s), which measures the kernel queue,
    // not the server.
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(std::net::SocketAddr::from(([0, 0, 0, 0], port)))?;
    let listener = socket.listen(LISTEN_BACKLOG)?;
    println!("listening on 0.0.0.0:{}", listener.local_addr()?.port());

    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        served = axum::serve(listener, app) => served?,
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    eprintln!(
        "dropped packets: channel_full={} closed={} other={}",
        dropped.channel_full.load(Ordering::Relaxed),
        dropped.closed.load(Ordering::Relaxed),
        dropped.other.load(Ordering::Relaxed),
    );
    Ok(())
}
