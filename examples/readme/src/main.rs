use ioscale::{ConnectError, Io, IoConfig, Payload};
use serde_json::json;
use std::time::Duration;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    // Logs to stderr; RUST_LOG=debug shows the library's own lines too.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let io = Io::new(IoConfig::default());
    let chat = io.of("/chat");
    chat.use_middleware(|socket| async move {
        match socket.handshake().auth.get("token") {
            Some(_) => Ok(()),
            None => Err(ConnectError::with_data(
                "unauthorized",
                json!({"reason": "no token"}),
            )),
        }
    });
    chat.on_connection(|socket| {
        tracing::info!(id = socket.id().as_str(), "connected to /chat");
        socket.join("lobby");
        let _ = socket.emit("hello", json!({"id": socket.id().as_str()}));
    });
    // One registration for every socket of the namespace (no per-socket cost).
    chat.on("say", |socket, event| {
        // To the lobby, except the sender; encoded once for every recipient.
        socket
            .to("lobby")
            .emit("said", Payload::args(event.payload.args.clone()));
        if let Some(ack) = event.ack {
            ack.send(json!("delivered"));
        }
    });
    chat.on("ping-me", |socket, _event| {
        let socket = socket.clone();
        tokio::spawn(async move {
            let reply = socket
                .emit_with_ack("are-you-there", (), Duration::from_secs(5))
                .await;
            tracing::info!(?reply, "client answered");
        });
    });
    io.dynamic_namespace(
        |name| name.starts_with("/team-"),
        |ns| {
            ns.on_connection(|socket| tracing::info!(nsp = socket.namespace().name(), "joined"));
        },
    );
    let listener = tokio::net::TcpListener::bind("0.0.0.0:3000").await?;
    tracing::info!("listening on http://{}", listener.local_addr()?);
    io.serve(listener, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await;
    Ok(())
}
