//! The reference servers of Socket.IO's official protocol test suites.
//!
//! `conformance engineio [--port N]`: Engine.IO on `/engine.io/`, echoing every message.
//! `conformance socketio [--port N]`: Socket.IO on `/socket.io/` with namespaces `/` and
//! `/custom`: emits `auth` with the handshake auth on connect, answers `message` with
//! `message-back` and acks `message-with-ack` with the same arguments.
//! Both: pingInterval 300 ms, pingTimeout 200 ms, maxPayload 1e6, connectTimeout 1 s, CORS `*`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ioscale::engine::{
    AllowedOrigins, CloseReason, Engine, EngineConfig, EngineHandler, Frame, Message, Session,
};
use ioscale::{Io, IoConfig, socket::serve_http};

fn engine_config(path: &str) -> EngineConfig {
    // `EngineConfig` is `#[non_exhaustive]`: set fields on the default.
    let mut config = EngineConfig::default();
    config.path = path.to_owned();
    config.ping_interval = Duration::from_millis(300);
    config.ping_timeout = Duration::from_millis(200);
    config.max_payload = 1_000_000;
    config.allowed_origins = AllowedOrigins::Any;
    config
}

/// Sends every message back as it came.
struct Echo;

impl EngineHandler for Echo {
    type Data = ();

    fn on_open(&self, _session: &Arc<Session<()>>) {}

    fn on_message(&self, session: &Arc<Session<()>>, message: Message) {
        let frame = match message {
            Message::Text(text) => Frame::message(&text),
            Message::Binary(data) => Frame::Binary(data),
        };
        let _ = session.send(&[frame], false);
    }

    fn on_close(&self, _session: &Arc<Session<()>>, _reason: CloseReason) {}
}

fn socketio_server() -> Io {
    let mut config = IoConfig::default();
    config.engine = engine_config("/socket.io/");
    config.connect_timeout = Duration::from_millis(1000);
    let io = Io::new(config);
    for name in ["/", "/custom"] {
        let ns = io.of(name);
        ns.on_connection(|socket| {
            let _ = socket.emit("auth", socket.handshake().auth.clone());
        });
        ns.on("message", |socket, event| {
            let _ = socket.emit("message-back", event.payload);
        });
        ns.on("message-with-ack", |_socket, event| {
            if let Some(ack) = event.ack {
                ack.send(event.payload);
            }
        });
    }
    io
}

fn parse_args() -> Result<(String, u16), String> {
    let mut args = std::env::args().skip(1);
    let mode = args
        .next()
        .ok_or("usage: conformance engineio|socketio [--port N]")?;
    let mut port = 3000;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--port" => {
                port = args
                    .next()
                    .and_then(|value| value.parse().ok())
                    .ok_or("--port expects a port number")?;
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok((mode, port))
}

#[tokio::main]
async fn main() {
    let (mode, port) = match parse_args() {
        Ok(parsed) => parsed,
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(2);
        }
    };
    let listener = match tokio::net::TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], port))).await
    {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("cannot listen on port {port}: {error}");
            std::process::exit(1);
        }
    };
    let address = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    match mode.as_str() {
        "engineio" => {
            let engine = Engine::new(engine_config("/engine.io/"), Arc::new(Echo));
            println!("engineio conformance server listening on {address}");
            serve_http(listener, shutdown, move |request, remote| {
                let engine = engine.clone();
                async move {
                    if engine.matches_path(request.uri().path()) {
                        engine.handle(request, remote).await
                    } else {
                        let mut response = http::Response::new(ioscale::socket::Body::default());
                        *response.status_mut() = http::StatusCode::NOT_FOUND;
                        response
                    }
                }
            })
            .await;
        }
        "socketio" => {
            let io = socketio_server();
            println!("socketio conformance server listening on {address}");
            io.serve(listener, shutdown).await;
        }
        other => {
            eprintln!("unknown mode {other:?}: expected engineio or socketio");
            std::process::exit(2);
        }
    }
}
