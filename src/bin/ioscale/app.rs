//! `ioscale serve`: the chat-style application every deployment runs.
//!
//! On connect each socket gets `server-info`; `message` is relayed to everyone (or one
//! room) with the sender and this node's id; `join`/`leave` manage rooms with an ack.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::stats::ClusterStats;

use anyhow::Context;
use ioscale::adapter::redis::RedisCluster;
use ioscale::socket::serve_http;
use ioscale::{Event, Io, RoomEvent, Socket};
use serde_json::{Value, json};

use crate::config::ServeOptions;
use crate::logging;

pub async fn serve(options: ServeOptions) -> anyhow::Result<()> {
    let server_id = options.server_id();
    logging::init(&server_id);
    let cluster = match options.redis_config() {
        Some(config) => {
            let cluster = RedisCluster::connect(config).context("cannot set up Redis")?;
            if !cluster.wait_until_up(Duration::from_secs(5)).await {
                tracing::warn!("Redis is not reachable yet: serving local clients, retrying");
            }
            Some(cluster)
        }
        None => None,
    };
    let io = match &cluster {
        Some(cluster) => Io::with_adapter(options.io_config(), cluster.factory()),
        None => Io::new(options.io_config()),
    };
    install(&io, Arc::from(server_id.as_str()));
    let address = SocketAddr::new(options.host, options.port);
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on {address}"))?;
    let local = listener.local_addr().context("listener has no address")?;
    tracing::info!("listening on {local}");
    let stats = ClusterStats::new(io.clone(), Arc::from(server_id.as_str()));
    let io_for_shutdown = io.clone();
    serve_http(listener, shutdown_signal(), move |request, remote| {
        let io = io.clone();
        let stats = stats.clone();
        async move {
            if request.uri().path() == "/stats" {
                stats.response().await
            } else {
                io.handle(request, remote).await
            }
        }
    })
    .await;
    io_for_shutdown.close_all();
    if let Some(cluster) = cluster {
        cluster.close().await;
    }
    tracing::info!("shut down");
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for SIGTERM");
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}

fn now_iso() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// Registers the application's handlers on the main namespace.
pub fn install(io: &Io, server_id: Arc<str>) {
    io.on_room_event(|nsp, event| match event {
        // Every socket has a room named by its id; only named rooms are worth a line.
        RoomEvent::Create(room) | RoomEvent::Delete(room) if is_socket_room(room) => {}
        RoomEvent::Join(room, _) | RoomEvent::Leave(room, _) if is_socket_room(room) => {}
        RoomEvent::Create(room) => tracing::info!(nsp, room = &**room, "create-room"),
        RoomEvent::Delete(room) => tracing::info!(nsp, room = &**room, "delete-room"),
        RoomEvent::Join(room, sid) => tracing::info!(nsp, room = &**room, %sid, "join-room"),
        RoomEvent::Leave(room, sid) => tracing::info!(nsp, room = &**room, %sid, "leave-room"),
    });
    let main = io.of("/");
    {
        let server_id = server_id.clone();
        let main_ns = main.clone();
        main.on_connection(move |socket| {
            let _ = socket.emit(
                "server-info",
                json!({"serverId": &*server_id, "timestamp": now_iso()}),
            );
            tracing::info!(
                socket_id = %socket.id(),
                transport = socket.transport(),
                connections = main_ns.socket_count(),
                "client connected"
            );
        });
    }
    {
        let main_ns = main.clone();
        main.on_disconnect(move |socket, reason| {
            tracing::info!(
                socket_id = %socket.id(),
                %reason,
                connections = main_ns.socket_count(),
                "client disconnected"
            );
        });
    }
    {
        let main_ns = main.clone();
        main.on("message", move |socket, event| {
            relay_message(&main_ns, &server_id, socket, event);
        });
    }
    main.on("join", |socket, event| {
        let reply = match room_name(&event) {
            Ok(room) => {
                socket.join(room);
                json!({"ok": true, "room": room})
            }
            Err(error) => json!({"ok": false, "error": error}),
        };
        if let Some(ack) = event.ack {
            ack.send(reply);
        }
    });
    main.on("leave", |socket, event| {
        let reply = match room_name(&event) {
            Ok(room) => {
                socket.leave(room);
                json!({"ok": true, "room": room})
            }
            Err(error) => json!({"ok": false, "error": error}),
        };
        if let Some(ack) = event.ack {
            ack.send(reply);
        }
    });
}

fn is_socket_room(room: &str) -> bool {
    ioscale::engine::Sid::parse(room).is_some()
}

fn room_name(event: &Event) -> Result<&str, &'static str> {
    match event.payload.args.first() {
        Some(Value::String(room)) if !room.is_empty() => Ok(room),
        Some(Value::String(_)) => Err("room name must not be empty"),
        _ => Err("room name must be a string"),
    }
}

fn relay_message(
    main: &Arc<ioscale::Namespace>,
    server_id: &str,
    socket: &Arc<Socket>,
    event: Event,
) {
    let Some(Value::Object(body)) = event.payload.args.first() else {
        tracing::debug!(socket_id = %socket.id(), "message without an object payload");
        return;
    };
    let Some(Value::String(text)) = body.get("message") else {
        tracing::debug!(socket_id = %socket.id(), "message without a `message` string");
        return;
    };
    let outgoing = json!({
        "serverId": server_id,
        "socketId": socket.id().as_str(),
        "message": text,
        "timestamp": now_iso(),
    });
    match body.get("room") {
        Some(Value::String(room)) => {
            main.to(room.as_str()).emit("message", outgoing);
        }
        _ => {
            main.emit("message", outgoing);
        }
    }
}
