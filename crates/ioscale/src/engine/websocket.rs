//! The WebSocket transport: direct sessions and upgrades from polling.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::Utf8Bytes as WsText;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};

use std::sync::atomic::Ordering;

use super::EngineHandler;
use super::http_util::Body;
use super::server::{Engine, on_packet};
use super::session::{CloseReason, Session, TransportKind};
use super::ws_io::{ReadStash, write_frames};
use crate::metrics::Metrics;
use crate::protocol::Utf8Bytes;
use crate::protocol::engineio::{Frame, Packet, decode_text};

type Socket = WebSocketStream<ReadStash<TokioIo<Upgraded>>>;

/// tungstenite's read buffer, kept for the life of the connection (it grows for a large
/// message). Small, because `ReadStash` reads the socket in bigger chunks on the stack.
const READ_BUFFER_SIZE: usize = 128;

pub(crate) fn is_upgrade_request<B>(request: &Request<B>) -> bool {
    let has_token = |name: header::HeaderName, token: &str| {
        request
            .headers()
            .get_all(name)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .any(|part| part.trim().eq_ignore_ascii_case(token))
    };
    has_token(header::CONNECTION, "upgrade") && has_token(header::UPGRADE, "websocket")
}

fn switching_protocols(request: &Request<Incoming>) -> Option<Response<Body>> {
    let key = request.headers().get(header::SEC_WEBSOCKET_KEY)?;
    let accept = derive_accept_key(key.as_bytes());
    let mut response = Response::new(Body::default());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept.parse().ok()?);
    Some(response)
}

fn bad_upgrade() -> Response<Body> {
    let mut response = Response::new(Body::default());
    *response.status_mut() = StatusCode::BAD_REQUEST;
    response
}

async fn into_socket<H: EngineHandler>(engine: &Engine<H>, upgraded: Upgraded) -> Socket {
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_SIZE)
        .max_message_size(Some(engine.shared.config.max_payload))
        .max_frame_size(Some(engine.shared.config.max_payload));
    let stream = ReadStash::new(TokioIo::new(upgraded));
    WebSocketStream::from_raw_socket(stream, Role::Server, Some(config)).await
}

/// A WebSocket that opens a new session (no `sid`).
pub(crate) fn accept_fresh<H: EngineHandler>(
    engine: Engine<H>,
    mut request: Request<Incoming>,
    remote_addr: SocketAddr,
) -> Response<Body> {
    let Some(response) = switching_protocols(&request) else {
        return bad_upgrade();
    };
    let on_upgrade = hyper::upgrade::on(&mut request);
    // The open packet is written right after the upgrade: the 101 goes with it.
    if let Some(deferred) = request.extensions().get::<crate::http::DeferredHead>() {
        deferred.arm();
    }
    let session = engine.open_session(&request, remote_addr, TransportKind::WebSocket);
    drop(request);
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(error) => {
                tracing::debug!(%error, "websocket upgrade failed");
                engine.shared.remove_session(&session);
                return;
            }
        };
        let mut socket = Box::pin(into_socket(&engine, upgraded)).await;
        let mut open = vec![Frame::Text(
            engine
                .open_packet(session.id, TransportKind::WebSocket)
                .into(),
        )];
        let written = Box::pin(write_batch(&mut socket, &mut open, &engine.shared.metrics)).await;
        drop(open);
        if written.is_err() {
            engine.shared.remove_session(&session);
            return;
        }
        engine.start(session.clone());
        run(&engine, &session, &mut socket).await;
    });
    response
}

/// A WebSocket that upgrades an existing polling session (`2probe`, `3probe`, `5`).
pub(crate) fn accept_upgrade<H: EngineHandler>(
    engine: Engine<H>,
    mut request: Request<Incoming>,
    session: Arc<Session<H::Data>>,
) -> Response<Body> {
    let Some(response) = switching_protocols(&request) else {
        session.cancel_upgrade();
        return bad_upgrade();
    };
    let on_upgrade = hyper::upgrade::on(&mut request);
    drop(request);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            session.cancel_upgrade();
            return;
        };
        let mut socket = Box::pin(into_socket(&engine, upgraded)).await;
        let timeout = engine.shared.config.upgrade_timeout;
        let probed = tokio::select! {
            _ = session.closed() => None,
            result = tokio::time::timeout(timeout, probe(&session, &mut socket)) => result.ok().flatten(),
        };
        if probed.is_none() {
            session.cancel_upgrade();
            let _ = socket.close(None).await;
            return;
        }
        session.finish_upgrade();
        tracing::debug!(sid = %session.id, "upgraded to websocket");
        run(&engine, &session, &mut socket).await;
    });
    response
}

/// Runs the probe exchange; `Some(())` once the client sent `upgrade`.
async fn probe<D>(session: &Session<D>, socket: &mut Socket) -> Option<()> {
    let mut probed = false;
    while let Some(Ok(message)) = socket.next().await {
        let WsMessage::Text(text) = message else {
            return None;
        };
        match (probed, text.as_str()) {
            (false, "2probe") => {
                let metrics = session.metrics();
                Metrics::add(&metrics.packets_received, 1);
                Metrics::add(&metrics.bytes_received, 6);
                write_batch(socket, &mut vec![Frame::PROBE_PONG], metrics)
                    .await
                    .ok()?;
                probed = true;
                session.probed();
            }
            (true, "5") => {
                Metrics::add(&session.metrics().packets_received, 1);
                Metrics::add(&session.metrics().bytes_received, 1);
                return Some(());
            }
            _ => return None,
        }
    }
    None
}

/// Reads and writes one session's WebSocket until either side closes it. The socket is
/// borrowed, not moved: each async layer that took it by value would hold its own copy.
async fn run<H: EngineHandler>(
    engine: &Engine<H>,
    session: &Arc<Session<H::Data>>,
    socket: &mut Socket,
) {
    let active = &engine.shared.active_websockets;
    active.fetch_add(1, Ordering::AcqRel);
    run_socket(engine, session, socket).await;
    active.fetch_sub(1, Ordering::AcqRel);
}

async fn run_socket<H: EngineHandler>(
    engine: &Engine<H>,
    session: &Arc<Session<H::Data>>,
    socket: &mut Socket,
) {
    let metrics = &engine.shared.metrics;
    // This loop is where an idle connection waits, so its state is what every idle
    // connection's task holds: the write and close paths are boxed to keep it small.
    // (The outbox is also ready once the session closes.)
    let mut peer_closed = false;
    loop {
        tokio::select! {
            biased;
            _ = session.outbox.ready() => {
                if session.is_closed() {
                    break;
                }
                if Box::pin(write_queued(engine, session, socket)).await.is_err() {
                    session.close(CloseReason::TransportError);
                    break;
                }
            }
            incoming = socket.next() => match incoming {
                Some(Ok(WsMessage::Text(text))) => {
                    Metrics::add(&metrics.bytes_received, text.len() as u64);
                    match decode_text(from_ws_text(text)) {
                        Ok(packet) => on_packet(&engine.shared, session, packet),
                        Err(error) => {
                            tracing::debug!(sid = %session.id, %error, "invalid packet");
                            session.close(CloseReason::ParseError);
                        }
                    }
                }
                Some(Ok(WsMessage::Binary(data))) => {
                    Metrics::add(&metrics.bytes_received, data.len() as u64);
                    on_packet(&engine.shared, session, Packet::Binary(data));
                }
                Some(Ok(WsMessage::Close(_))) | None => {
                    peer_closed = true;
                    session.close(CloseReason::TransportClose);
                }
                Some(Ok(_)) => {}
                Some(Err(WsError::Capacity(CapacityError::MessageTooLong { size, max_size }))) => {
                    tracing::debug!(sid = %session.id, size, max_size, "websocket message too large");
                    session.close(CloseReason::TransportError);
                    let frame = CloseFrame { code: CloseCode::Size, reason: "message too big".into() };
                    let _ = Box::pin(socket.close(Some(frame))).await;
                    return;
                }
                Some(Err(error)) => {
                    tracing::debug!(sid = %session.id, %error, "websocket error");
                    peer_closed = true;
                    session.close(CloseReason::TransportError);
                }
            },
        }
    }
    Box::pin(finish(engine, session, socket, peer_closed)).await;
}

/// Writes everything queued. Closed mid-write: a graceful close still writes this batch
/// (bounded); an abort (ping timeout, slow consumer) drops it.
async fn write_queued<H: EngineHandler>(
    engine: &Engine<H>,
    session: &Session<H::Data>,
    socket: &mut Socket,
) -> Result<(), WsError> {
    let mut batch = Vec::new();
    session.outbox.drain_into(&mut batch);
    let flush_timeout = engine.shared.config.ping_timeout;
    let write = write_batch(socket, &mut batch, &engine.shared.metrics);
    tokio::pin!(write);
    tokio::select! {
        result = &mut write => result,
        _ = session.closed() => match session.close_reason() {
            Some(reason) if reason.flushes() => {
                tokio::time::timeout(flush_timeout, &mut write).await.unwrap_or(Ok(()))
            }
            _ => Ok(()),
        },
    }
}

/// The session closed: writes what may still be flushed, then closes the WebSocket.
async fn finish<H: EngineHandler>(
    engine: &Engine<H>,
    session: &Session<H::Data>,
    socket: &mut Socket,
    peer_closed: bool,
) {
    let timeout = engine.shared.config.ping_timeout;
    // Nothing may follow the peer's close (tungstenite already answered it).
    if !peer_closed && session.close_reason().is_some_and(CloseReason::flushes) {
        let mut batch = Vec::new();
        session.outbox.drain_into(&mut batch);
        let write = write_batch(socket, &mut batch, &engine.shared.metrics);
        let _ = tokio::time::timeout(timeout, write).await;
    }
    let _ = tokio::time::timeout(timeout, socket.close(None)).await;
    // Read what the client still sends until its close (bounded): closing a socket with
    // unread data makes the kernel reset it, and the client would lose what was flushed.
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while let Some(Ok(_)) = socket.next().await {}
    })
    .await;
}

/// Writes every frame of the batch with one flush (see `ws_io::write_frames`).
async fn write_batch(
    socket: &mut Socket,
    batch: &mut Vec<Frame>,
    metrics: &Metrics,
) -> Result<(), WsError> {
    if batch.is_empty() {
        return Ok(());
    }
    let bytes: usize = batch.iter().map(Frame::len).sum();
    Metrics::add(&metrics.packets_sent, batch.len() as u64);
    Metrics::add(&metrics.bytes_sent, bytes as u64);
    // What tungstenite queued itself (a pong, a close reply) goes first.
    socket.flush().await?;
    let size_hint = bytes + 10 * batch.len();
    write_frames(socket.get_mut(), batch.drain(..), size_hint).await
}

/// tungstenite's text as the codec's text: the same buffer, not copied or checked again.
fn from_ws_text(text: WsText) -> Utf8Bytes {
    // SAFETY: tungstenite's `Utf8Bytes` only ever holds valid UTF-8 (it checks each text
    // frame once as it reads it).
    #[allow(unsafe_code)]
    unsafe {
        Utf8Bytes::from_bytes_unchecked(Bytes::from(text))
    }
}
