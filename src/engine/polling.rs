//! HTTP long-polling: a GET waits for queued packets, a POST carries packets in.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use super::EngineHandler;
use super::http_util::{Body, Cors, status_response, text_response};
use super::packet::{Frame, decode_payload, encode_payload};
use super::server::{Shared, on_packet};
use super::session::{CloseReason, Session, TransportKind};

const TEXT_PLAIN: &str = "text/plain; charset=UTF-8";

/// Marks one of the session's request slots busy for as long as it lives.
struct SlotGuard<'a>(&'a AtomicBool);

impl<'a> SlotGuard<'a> {
    fn acquire(slot: &'a AtomicBool) -> Option<Self> {
        (!slot.swap(true, Ordering::AcqRel)).then_some(SlotGuard(slot))
    }
}

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// A GET: answers at once with everything queued, or waits until something is.
pub(crate) async fn poll<H: EngineHandler>(
    _shared: &Shared<H>,
    session: Arc<Session<H::Data>>,
    cors: Cors,
) -> Response<Body> {
    let Some(_slot) = SlotGuard::acquire(&session.poll_active) else {
        // As the reference server: an overlapping poll is a transport error.
        tracing::debug!(sid = %session.id, "overlapping poll");
        session.close(CloseReason::TransportError);
        return status_response(StatusCode::BAD_REQUEST, &cors);
    };
    let mut frames = Vec::new();
    loop {
        if session.is_closed() {
            session.outbox.drain_into(&mut frames);
            // A client-initiated close answers the pending poll with a noop, any other with close.
            frames.push(match session.close_reason() {
                Some(CloseReason::TransportClose) => Frame::NOOP,
                _ => Frame::CLOSE,
            });
            break;
        }
        if session.transport() == TransportKind::WebSocket {
            frames.push(Frame::NOOP);
            break;
        }
        session.outbox.drain_into(&mut frames);
        if !frames.is_empty() {
            break;
        }
        tokio::select! {
            _ = session.outbox.ready() => {}
            _ = session.closed() => {}
            _ = session.upgraded() => {}
        }
    }
    let mut body = Vec::with_capacity(frames.iter().map(|f| f.len() + 1).sum());
    encode_payload(&frames, &mut body);
    text_response(body, TEXT_PLAIN, &cors)
}

/// A POST: decodes the payload and hands each packet on, in order.
pub(crate) async fn post<H: EngineHandler>(
    shared: &Shared<H>,
    session: Arc<Session<H::Data>>,
    request: Request<Incoming>,
    cors: Cors,
) -> Response<Body> {
    let Some(_slot) = SlotGuard::acquire(&session.post_active) else {
        tracing::debug!(sid = %session.id, "overlapping POST");
        session.close(CloseReason::TransportError);
        return status_response(StatusCode::BAD_REQUEST, &cors);
    };
    let limit = shared.config.max_payload;
    let body: Bytes = match Limited::new(request.into_body(), limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) => {
            if error.is::<http_body_util::LengthLimitError>() {
                tracing::debug!(sid = %session.id, limit, "polling body too large");
                return status_response(StatusCode::PAYLOAD_TOO_LARGE, &cors);
            }
            session.close(CloseReason::TransportError);
            return status_response(StatusCode::BAD_REQUEST, &cors);
        }
    };
    match decode_payload(body) {
        Ok(packets) => {
            for packet in packets {
                on_packet(shared, &session, packet);
            }
        }
        Err(error) => {
            tracing::debug!(sid = %session.id, %error, "invalid polling payload");
            session.close(CloseReason::ParseError);
        }
    }
    text_response(Bytes::from_static(b"ok"), "text/html", &cors)
}
