//! `ioscale serve`: the chat-style application every deployment runs.
//!
//! On connect each socket gets `server-info`; `message` is relayed to everyone (or one
//! room) with the sender and this node's id; `join`/`leave` manage rooms with an ack.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::ops::Ops;
use crate::signals::Signals;

use anyhow::Context;
use ioscale::socket::{serve_http, serve_http_with};
use ioscale::{Event, Io, RoomEvent, Socket};
use serde_json::{Value, json};

use crate::config::ServeOptions;

pub async fn serve(options: ServeOptions) -> anyhow::Result<()> {
    let server_id = options.server_id();
    let shutdown = Signals::new()?;
    // Read the TLS files first: a bad certificate must fail the start, not a later request.
    let mut http = options.limits.http(&options.tls)?;
    let cluster = match options.redis_link()? {
        Some(cluster) => {
            // Not up within the wait: the link has logged "Redis is down" with its address,
            // and keeps retrying while local clients are served.
            let _ = cluster.wait_until_up(Duration::from_secs(5)).await;
            Some(cluster)
        }
        None => None,
    };
    let io = match &cluster {
        Some(cluster) => Io::with_adapter(options.io_config(), cluster.factory()),
        None => Io::new(options.io_config()),
    };
    match (&io.config().connection_state_recovery, &cluster) {
        (Some(recovery), _) => tracing::info!(
            max_disconnection_ms = recovery.max_disconnection_duration.as_millis() as u64,
            "connection state recovery on (one node)"
        ),
        (None, Some(_)) if options.connection_state_recovery > 0 => tracing::warn!(
            "connection state recovery is off with --redis-url: it is one-node only for now \
             (broadcasts from other nodes are not logged, so a recovered client would miss them)"
        ),
        (None, _) => {}
    }
    if let Some(verifier) = options.auth.verifier() {
        verifier.install(&io.of("/"));
        tracing::info!("JWT authentication on");
    }
    http.metrics = io.metrics().clone();
    install(&io, Arc::from(server_id.as_str()));
    let ops = Ops::new(io.clone(), cluster.clone(), Arc::from(server_id.as_str()));
    let (listener, ops_listener) =
        bind_with_ops(options.host, options.port, options.ops_port).await?;
    tracing::info!(
        "listening on {}",
        listener.local_addr().context("listener has no address")?
    );
    tokio::spawn(crate::trim::trim_after_churn(io.clone()));
    if options.stats_interval > 0 {
        tokio::spawn(log_stats(
            ops.clone(),
            Duration::from_secs(options.stats_interval),
        ));
    }
    let ops_port = ops_listener
        .as_ref()
        .and_then(|listener| listener.local_addr().ok())
        .map(|address| address.port());
    if let Some(ops_listener) = ops_listener {
        tracing::info!(
            "operations endpoints on {}",
            ops_listener.local_addr().context("no address")?
        );
        let ops = ops.clone();
        tokio::spawn(serve_http(
            ops_listener,
            std::future::pending(),
            move |request, _| {
                let ops = ops.clone();
                async move {
                    match ops.handle(request.uri().path()).await {
                        Some(response) => response,
                        None if request.uri().path() == "/" => root_page(None, None),
                        None => not_found(),
                    }
                }
            },
        ));
    }
    let serving = io.clone();
    let routing = ops.clone();
    // The listener stays open through the drain: a polling client reaches its closing
    // session with a new connection per request (engine.io-client's default), and new
    // handshakes get 503 from the engine meanwhile. It closes once every session is gone.
    let (drained, stop_accepting) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve_http_with(
        listener,
        http,
        async move {
            let _ = stop_accepting.await;
        },
        move |request, remote| {
            let io = serving.clone();
            let ops = routing.clone();
            async move {
                let path = request.uri().path();
                if ops_port.is_none()
                    && let Some(response) = ops.handle(path).await
                {
                    return response;
                }
                if path == "/" && !io.matches_path(path) {
                    return root_page(Some(&io), ops_port);
                }
                io.handle(request, remote).await
            }
        },
    ));
    shutdown.first().await;
    // Graceful shutdown: not ready at once, no new session (the engine answers 503),
    // every client's transport closed after its queue is flushed (clients reconnect on
    // their own), then leave the cluster. A second signal exits at once.
    ops.begin_shutdown();
    tracing::info!(connections = io.connection_count(), "shutting down");
    let second = tokio::spawn(async move {
        shutdown.second().await;
        tracing::warn!("second signal: exiting now");
        std::process::exit(130);
    });
    io.close_all();
    let drained_in_time =
        tokio::time::timeout(Duration::from_secs(options.shutdown_timeout), io.drained())
            .await
            .is_ok();
    if !drained_in_time {
        tracing::warn!(
            connections = io.connection_count(),
            "shutdown timeout: exiting anyway"
        );
    }
    let _ = drained.send(());
    let _ = server.await;
    if let Some(cluster) = cluster {
        cluster.close().await;
    }
    // Done: no signal from now on may turn the exit into a failure.
    second.abort();
    tracing::info!("shut down");
    Ok(())
}

pub(crate) async fn bind(address: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    let socket = match address {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
    }
    .context("cannot create a socket")?;
    socket.set_reuseaddr(true).context("SO_REUSEADDR")?;
    socket
        .bind(address)
        .with_context(|| format!("cannot listen on {address}"))?;
    // A deep accept queue: thousands of clients reconnecting at once must not be dropped
    // (the kernel caps it at net.core.somaxconn).
    socket
        .listen(LISTEN_BACKLOG)
        .with_context(|| format!("cannot listen on {address}"))
}

const LISTEN_BACKLOG: u32 = 8192;

/// The main listener and, when a port is given, the operations listener.
pub(crate) async fn bind_with_ops(
    host: std::net::IpAddr,
    port: u16,
    ops_port: Option<u16>,
) -> anyhow::Result<(tokio::net::TcpListener, Option<tokio::net::TcpListener>)> {
    let listener = bind(SocketAddr::new(host, port)).await?;
    let ops = match ops_port {
        Some(port) => Some(bind(SocketAddr::new(host, port)).await?),
        None => None,
    };
    Ok((listener, ops))
}

/// `GET /`: one line for a human who opens the server in a browser or with curl.
fn root_page(io: Option<&Io>, ops_port: Option<u16>) -> http::Response<ioscale::socket::Body> {
    let ops = "/health, /ready, /metrics, /stats";
    let text = match (io, ops_port) {
        (Some(io), None) => format!(
            "ioscale {}: Socket.IO server at {}, operations at {ops}\n",
            env!("CARGO_PKG_VERSION"),
            io.config().engine.path
        ),
        (Some(io), Some(port)) => format!(
            "ioscale {}: Socket.IO server at {}, operations on port {port} at {ops}\n",
            env!("CARGO_PKG_VERSION"),
            io.config().engine.path
        ),
        (None, _) => format!(
            "ioscale {}: operations endpoints {ops}\n",
            env!("CARGO_PKG_VERSION")
        ),
    };
    let mut response = http::Response::new(ioscale::socket::Body::from(text));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn not_found() -> http::Response<ioscale::socket::Body> {
    let mut response = http::Response::new(ioscale::socket::Body::default());
    *response.status_mut() = http::StatusCode::NOT_FOUND;
    response
}

async fn log_stats(ops: Arc<Ops>, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        ops.log_stats();
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
        // `RoomEvent` is non-exhaustive: events added later are not logged.
        _ => {}
    });
    let main = io.of("/");
    {
        let server_id = server_id.clone();
        let main_ns = main.clone();
        main.on_connection(move |socket| {
            // A recovered socket already had it (and its rooms are restored).
            if !socket.recovered() {
                let _ = socket.emit(
                    "server-info",
                    json!({"serverId": &*server_id, "timestamp": now_iso()}),
                );
            }
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
            Ok(room) if socket.join(room) => json!({"ok": true, "room": room}),
            Ok(_) => json!({"ok": false, "error": "too many rooms"}),
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
    let mut outgoing = json!({
        "serverId": server_id,
        "socketId": socket.id().as_str(),
        "message": text,
        "timestamp": now_iso(),
    });
    // With authentication on, the token's subject names the sender.
    if let Some(user) = socket.claims().and_then(|claims| claims.get("sub"))
        && let Value::Object(fields) = &mut outgoing
    {
        fields.insert("userId".into(), user.clone());
    }
    match body.get("room") {
        Some(Value::String(room)) => {
            main.to(room.as_str()).emit("message", outgoing);
        }
        _ => {
            main.emit("message", outgoing);
        }
    }
}
