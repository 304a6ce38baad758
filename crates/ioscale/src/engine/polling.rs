//! HTTP long-polling: a GET waits for queued packets, a POST carries packets in.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use super::EngineHandler;
use super::http_util::{Body, Cors, status_response, text_response};
use super::server::{Shared, on_packet};
use super::session::{CloseReason, Session, TransportKind};
use crate::metrics::Metrics;
use crate::protocol::engineio::{Frame, decode_payload_prefix, encode_payload};

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

/// Closes the session when a poll is dropped before it was answered (the client went
/// away mid-poll), as the reference server does.
struct PollInFlight<'a, D> {
    session: &'a Session<D>,
    answered: bool,
}

impl<D> Drop for PollInFlight<'_, D> {
    fn drop(&mut self) {
        if !self.answered {
            tracing::debug!(sid = %self.session.id, "poll connection closed prematurely");
            self.session.close(CloseReason::TransportError);
        }
    }
}

/// A GET: answers at once with everything queued, or waits until something is.
pub(crate) async fn poll<H: EngineHandler>(
    shared: &Shared<H>,
    session: Arc<Session<H::Data>>,
    cors: Cors,
) -> Response<Body> {
    let Some(_slot) = SlotGuard::acquire(&session.poll_active) else {
        // As the reference server: an overlapping poll is a transport error.
        tracing::debug!(sid = %session.id, "overlapping poll");
        session.close(CloseReason::TransportError);
        return status_response(StatusCode::BAD_REQUEST, &cors);
    };
    session.set_polled();
    let mut in_flight = PollInFlight {
        session: &session,
        answered: false,
    };
    let mut frames = Vec::new();
    let mut waited = false;
    loop {
        let changed = session.transport_changed();
        tokio::pin!(changed);
        changed.as_mut().enable();
        if session.is_closed() {
            session.outbox.drain_into(&mut frames);
            match session.close_reason() {
                // The client closed: its pending poll just ends.
                Some(CloseReason::TransportClose) => frames.push(Frame::NOOP),
                // What was queued goes first; the close follows in the next poll (as the
                // reference server does: the client hands packets that arrive together
                // with a close to the application only after it reconnected).
                Some(reason) if reason.flushes() && !frames.is_empty() => break,
                _ => {
                    // A poll arriving after a server-side close gets `6` then `1` when
                    // nothing is left, as the reference server answers it.
                    if frames.is_empty() && !waited {
                        frames.push(Frame::NOOP);
                    }
                    frames.push(Frame::CLOSE);
                }
            }
            // Forgotten before the answer leaves, so the client's next request finds no session.
            if session.final_poll_answered() {
                shared.remove_session(&session);
            }
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
        if session.is_upgrading() {
            // Probed: release the client so it can pause polling and finish the upgrade.
            frames.push(Frame::NOOP);
            break;
        }
        waited = true;
        tokio::select! {
            _ = session.outbox.ready() => {}
            _ = session.closed() => {}
            _ = changed => {}
        }
    }
    in_flight.answered = true;
    let mut body = Vec::with_capacity(frames.iter().map(|f| f.len() + 1).sum());
    encode_payload(&frames, &mut body);
    let metrics = session.metrics();
    Metrics::add(&metrics.packets_sent, frames.len() as u64);
    Metrics::add(&metrics.bytes_sent, body.len() as u64);
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
    // Engine.IO v4 sends binary as base64 text: a binary body is refused, as the reference does.
    if request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes() == b"application/octet-stream")
    {
        session.close(CloseReason::TransportError);
        return status_response(StatusCode::BAD_REQUEST, &cors);
    }
    let limit = shared.config.max_payload;
    let collected = tokio::select! {
        collected = Limited::new(request.into_body(), limit).collect() => collected,
        // Closed meanwhile (an overlapping POST, a timeout): this request ends too.
        _ = session.closed() => return status_response(StatusCode::BAD_REQUEST, &cors),
    };
    let body: Bytes = match collected {
        Ok(collected) => collected.to_bytes(),
        Err(error) => {
            session.close(CloseReason::TransportError);
            if error.is::<http_body_util::LengthLimitError>() {
                tracing::debug!(sid = %session.id, limit, "polling body too large");
                return status_response(StatusCode::PAYLOAD_TOO_LARGE, &cors);
            }
            return status_response(StatusCode::BAD_REQUEST, &cors);
        }
    };
    Metrics::add(&shared.metrics.bytes_received, body.len() as u64);
    let (packets, error) = decode_payload_prefix(body);
    for packet in packets {
        on_packet(shared, &session, packet);
    }
    if let Some(error) = error {
        tracing::debug!(sid = %session.id, %error, "invalid polling payload");
        session.close(CloseReason::ParseError);
    }
    text_response(Bytes::from_static(b"ok"), "text/html", &cors)
}
