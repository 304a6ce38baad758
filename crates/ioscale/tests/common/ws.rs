//! A raw Engine.IO + Socket.IO client over WebSocket.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, client_async};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Connects to `/` and completes the Socket.IO handshake; returns the socket id too.
pub async fn connect(addr: SocketAddr, small_receive_buffer: bool) -> (Ws, String) {
    let socket = TcpSocket::new_v4().unwrap();
    if small_receive_buffer {
        socket.set_recv_buffer_size(4096).unwrap();
    }
    let stream = socket.connect(addr).await.unwrap();
    let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
    let (mut ws, _) = client_async(url, MaybeTlsStream::Plain(stream))
        .await
        .unwrap();
    let open = next_text(&mut ws).await;
    assert!(open.starts_with("0{"), "{open}");
    ws.send(Message::Text("40".into())).await.unwrap();
    let connected = next_text(&mut ws).await;
    let reply: serde_json::Value = serde_json::from_str(&connected[2..]).unwrap();
    let sid = reply["sid"].as_str().unwrap().to_owned();
    (ws, sid)
}

/// The next text frame other than a ping (answered with a pong).
pub async fn next_text(ws: &mut Ws) -> String {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(Message::Text(text)))) if text.as_str() == "2" => {
                ws.send(Message::Text("3".into())).await.unwrap();
            }
            Ok(Some(Ok(Message::Text(text)))) => return text.to_string(),
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

/// Whether a text frame arrives within `wait` (for proving something was not delivered,
/// after a marker that was).
pub async fn try_next_text(ws: &mut Ws, wait: Duration) -> Option<String> {
    match tokio::time::timeout(wait, ws.next()).await {
        Ok(Some(Ok(Message::Text(text)))) => Some(text.to_string()),
        _ => None,
    }
}

pub async fn send(ws: &mut Ws, text: &str) {
    ws.send(Message::Text(text.to_owned().into()))
        .await
        .unwrap();
}
