//! The WebSocket transport: direct sessions and upgrades from polling.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message as WsMessage, Utf8Bytes};

use std::sync::atomic::Ordering;

use super::EngineHandler;
use super::http_util::Body;
use super::packet::{Frame, Packet, decode_text};
use super::server::{Engine, on_packet};
use super::session::{CloseReason, Session, TransportKind};
use crate::metrics::Metrics;

type Socket = WebSocketStream<TokioIo<Upgraded>>;

/// Small eager read buffer: idle connections should cost little (grows for big messages).
const READ_BUFFER_SIZE: usize = 1024;
/// Frames are batched up to this size per write (a flush writes whatever is left).
const WRITE_BUFFER_SIZE: usize = 32 * 1024;

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
        .write_buffer_size(WRITE_BUFFER_SIZE)
        .max_message_size(Some(engine.shared.config.max_payload))
        .max_frame_size(Some(engine.shared.config.max_payload));
    WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config)).await
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
        let mut socket = into_socket(&engine, upgraded).await;
        let open = engine.open_packet(session.id, TransportKind::WebSocket);
        Metrics::add(&engine.shared.metrics.packets_sent, 1);
        Metrics::add(&engine.shared.metrics.bytes_sent, open.len() as u64);
        if socket.send(WsMessage::Text(open.into())).await.is_err() {
            engine.shared.remove_session(&session);
            return;
        }
        engine.start(session.clone());
        run(&engine, &session, socket).await;
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
        let mut socket = into_socket(&engine, upgraded).await;
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
        run(&engine, &session, socket).await;
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
                Metrics::add(&metrics.packets_sent, 1);
                Metrics::add(&metrics.bytes_sent, 6);
                socket
                    .send(WsMessage::Text(Utf8Bytes::from_static("3probe")))
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

/// Reads and writes one session's WebSocket until either side closes it.
async fn run<H: EngineHandler>(
    engine: &Engine<H>,
    session: &Arc<Session<H::Data>>,
    socket: Socket,
) {
    let active = &engine.shared.active_websockets;
    active.fetch_add(1, Ordering::AcqRel);
    run_socket(engine, session, socket).await;
    active.fetch_sub(1, Ordering::AcqRel);
}

async fn run_socket<H: EngineHandler>(
    engine: &Engine<H>,
    session: &Arc<Session<H::Data>>,
    mut socket: Socket,
) {
    let metrics = engine.shared.metrics.clone();
    let mut batch = Vec::new();
    loop {
        tokio::select! {
            biased;
            _ = session.closed() => break,
            _ = session.outbox.ready() => {
                session.outbox.drain_into(&mut batch);
                let flush_timeout = engine.shared.config.ping_timeout;
                let write = write_batch(&mut socket, &mut batch, &metrics);
                tokio::pin!(write);
                let written = tokio::select! {
                    result = &mut write => result,
                    // Closed mid-write: a graceful close still writes this batch (bounded);
                    // an abort (ping timeout, slow consumer) drops it.
                    _ = session.closed() => match session.close_reason() {
                        Some(reason) if reason.flushes() => {
                            tokio::time::timeout(flush_timeout, &mut write).await.unwrap_or(Ok(()))
                        }
                        _ => Ok(()),
                    },
                };
                if written.is_err() {
                    session.close(CloseReason::TransportError);
                    break;
                }
            }
            incoming = socket.next() => match incoming {
                Some(Ok(WsMessage::Text(text))) => {
                    Metrics::add(&metrics.bytes_received, text.len() as u64);
                    match decode_text(text) {
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
                Some(Ok(WsMessage::Close(_))) | None => session.close(CloseReason::TransportClose),
                Some(Ok(_)) => {}
                Some(Err(WsError::Capacity(CapacityError::MessageTooLong { size, max_size }))) => {
                    tracing::debug!(sid = %session.id, size, max_size, "websocket message too large");
                    session.close(CloseReason::TransportError);
                    let frame = CloseFrame { code: CloseCode::Size, reason: "message too big".into() };
                    let _ = socket.close(Some(frame)).await;
                    return;
                }
                Some(Err(error)) => {
                    tracing::debug!(sid = %session.id, %error, "websocket error");
                    session.close(CloseReason::TransportError);
                }
            },
        }
    }
    // Closed: write what may still be flushed, then close the WebSocket.
    if session.close_reason().is_some_and(CloseReason::flushes) {
        session.outbox.drain_into(&mut batch);
        let _ = tokio::time::timeout(
            engine.shared.config.ping_timeout,
            write_batch(&mut socket, &mut batch, &metrics),
        )
        .await;
    }
    let _ = tokio::time::timeout(engine.shared.config.ping_timeout, socket.close(None)).await;
    // Read what the client still sends until its close (bounded): closing a socket with
    // unread data makes the kernel reset it, and the client would lose what was flushed.
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while let Some(Ok(_)) = socket.next().await {}
    })
    .await;
}

/// Writes every frame of the batch with one flush.
async fn write_batch(
    socket: &mut Socket,
    batch: &mut Vec<Frame>,
    metrics: &Metrics,
) -> Result<(), WsError> {
    if batch.is_empty() {
        return Ok(());
    }
    Metrics::add(&metrics.packets_sent, batch.len() as u64);
    Metrics::add(
        &metrics.bytes_sent,
        batch.iter().map(|f| f.len() as u64).sum(),
    );
    for frame in batch.drain(..) {
        let message = match frame {
            Frame::Text(text) => WsMessage::Text(text),
            Frame::Binary(data) => WsMessage::Binary(data),
        };
        socket.feed(message).await?;
    }
    socket.flush().await
}
