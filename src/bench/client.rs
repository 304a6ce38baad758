//! One benchmark client: a raw Engine.IO + Socket.IO WebSocket peer of `ioscale serve`'s
//! application (or any server with the same `server-info` / `message` behaviour).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpSocket;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::{Shared, now_micros};

/// Latencies are handed to the shared histogram in batches (few lock takings).
pub(super) const LATENCY_BATCH: usize = 256;

pub struct ClientPlan {
    pub index: usize,
    pub server: SocketAddr,
    pub host: String,
    pub path: String,
    pub local_ip: Option<IpAddr>,
    /// Present for senders: messages to send, in order.
    pub outgoing: Option<mpsc::Receiver<String>>,
}

/// Runs one client until `shared.stop` fires; every outcome lands in `shared`.
pub async fn run(plan: ClientPlan, shared: Arc<Shared>) {
    let started = Instant::now();
    let connected = tokio::time::timeout(shared.connect_timeout, connect(&plan)).await;
    let (mut ws, server_id) = match connected {
        Ok(Ok(connected)) => connected,
        Ok(Err(error)) => return shared.connect_failed(&error),
        Err(_) => return shared.connect_failed("connect timed out"),
    };
    shared.record_connect(started.elapsed(), &server_id);
    let mut outgoing = plan.outgoing;
    let mut tracker = Tracker::new(shared.senders, shared.messages);
    let mut latencies = Vec::with_capacity(LATENCY_BATCH);
    let mut stop = shared.stop.subscribe();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            message = async {
                match outgoing.as_mut() {
                    Some(outgoing) => outgoing.recv().await,
                    None => std::future::pending().await,
                }
            } => match message {
                Some(text) => {
                    if ws.send(Message::Text(text.into())).await.is_err() {
                        shared.note_error("send failed");
                        break;
                    }
                    shared.sent.fetch_add(1, Ordering::Relaxed);
                }
                None => outgoing = None,
            },
            incoming = ws.next() => match incoming {
                Some(Ok(Message::Text(text))) => {
                    if text.as_str() == "2" {
                        let _ = ws.send(Message::Text("3".into())).await;
                    } else if let Some((sender, seq, sent_at)) = parse_message(&text) {
                        let latency = now_micros().saturating_sub(sent_at);
                        tracker.record(sender, seq, &shared);
                        latencies.push(latency);
                        if latencies.len() == LATENCY_BATCH {
                            shared.record_latencies(&latencies);
                            latencies.clear();
                        }
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => {
                    shared.disconnected.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            },
        }
    }
    shared.record_latencies(&latencies);
    let _ = ws.close(None).await;
}

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

async fn connect(plan: &ClientPlan) -> Result<(Ws, String), String> {
    let socket = match plan.server {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .map_err(|e| e.to_string())?;
    if let Some(ip) = plan.local_ip {
        socket
            .bind(SocketAddr::new(ip, 0))
            .map_err(|e| format!("bind {ip}: {e}"))?;
    }
    let stream = socket
        .connect(plan.server)
        .await
        .map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    let url = format!("ws://{}{}?EIO=4&transport=websocket", plan.host, plan.path);
    let config = WebSocketConfig::default().read_buffer_size(4096);
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(config))
        .await
        .map_err(|e| e.to_string())?;
    let open = next_text(&mut ws).await?;
    if !open.starts_with("0{") {
        return Err(format!("unexpected open packet {open}"));
    }
    ws.send(Message::Text("40".into()))
        .await
        .map_err(|e| e.to_string())?;
    let mut server_id = String::from("?");
    // The CONNECT answer, then the application's server-info (either order is fine).
    for _ in 0..2 {
        let text = next_text(&mut ws).await?;
        if let Some(id) = server_info_id(&text) {
            server_id = id.to_owned();
        }
    }
    Ok((ws, server_id))
}

async fn next_text(ws: &mut Ws) -> Result<String, String> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) if text.as_str() == "2" => {
                ws.send(Message::Text("3".into()))
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Some(Ok(Message::Text(text))) => return Ok(text.to_string()),
            Some(Ok(_)) => {}
            Some(Err(error)) => return Err(error.to_string()),
            None => return Err("closed during the handshake".into()),
        }
    }
}

pub(super) fn server_info_id(text: &str) -> Option<&str> {
    let rest = text.strip_prefix("42[\"server-info\",")?;
    let start = rest.find("\"serverId\":\"")? + 12;
    let end = start + rest[start..].find('"')?;
    Some(&rest[start..end])
}

/// The text of an outgoing benchmark message: `bench|<sender>|<seq>|<sent at, µs>`.
pub fn message_text(sender: usize, seq: usize) -> String {
    format!(
        "42[\"message\",{{\"message\":\"bench|{sender}|{seq}|{}\"}}]",
        now_micros()
    )
}

/// `(sender, seq, sent at)` of a relayed benchmark message, without a JSON parse.
pub(super) fn parse_message(text: &str) -> Option<(usize, usize, u64)> {
    if !text.starts_with("42[\"message\"") {
        return None;
    }
    let start = text.find("bench|")? + 6;
    let rest = &text[start..];
    let end = rest.find('"')?;
    let mut parts = rest[..end].split('|');
    let sender = parts.next()?.parse().ok()?;
    let seq = parts.next()?.parse().ok()?;
    let sent_at = parts.next()?.parse().ok()?;
    Some((sender, seq, sent_at))
}

/// Which (sender, sequence) pairs one client saw: loss, duplicates and order.
pub(super) struct Tracker {
    seen: Vec<Vec<u64>>,
    highest: Vec<Option<usize>>,
}

impl Tracker {
    pub(super) fn new(senders: usize, messages: usize) -> Self {
        Tracker {
            seen: vec![vec![0; messages.div_ceil(64)]; senders],
            highest: vec![None; senders],
        }
    }

    pub(super) fn record(&mut self, sender: usize, seq: usize, shared: &Shared) {
        let (Some(bits), Some(highest)) = (self.seen.get_mut(sender), self.highest.get_mut(sender))
        else {
            return;
        };
        let Some(word) = bits.get_mut(seq / 64) else {
            return;
        };
        let bit = 1u64 << (seq % 64);
        if *word & bit != 0 {
            shared.duplicates.fetch_add(1, Ordering::Relaxed);
            return;
        }
        *word |= bit;
        shared.received.fetch_add(1, Ordering::Relaxed);
        if highest.is_some_and(|h| seq < h) {
            shared.reordered.fetch_add(1, Ordering::Relaxed);
        } else {
            *highest = Some(seq);
        }
    }
}

/// Paces connection attempts at `rate` per second.
pub async fn pace(index: usize, rate: u32, start: Instant) {
    if rate == 0 {
        return;
    }
    let due = start + Duration::from_secs_f64(index as f64 / f64::from(rate));
    tokio::time::sleep_until(due.into()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_relayed_messages_and_server_info() {
        let relayed = r#"42["message",{"serverId":"A","socketId":"x","message":"bench|3|17|123456","timestamp":"t"}]"#;
        assert_eq!(parse_message(relayed), Some((3, 17, 123456)));
        assert_eq!(parse_message(r#"42["other",{}]"#), None);
        let info = r#"42["server-info",{"serverId":"node-a","timestamp":"t"}]"#;
        assert_eq!(server_info_id(info), Some("node-a"));
        assert!(message_text(1, 2).starts_with(r#"42["message",{"message":"bench|1|2|"#));
    }
}
