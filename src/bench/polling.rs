//! One benchmark client over HTTP long-polling: a GET always pending, POSTs for what it
//! sends (batched with `\x1e` while one is in flight), pongs for the server's pings.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use tokio::sync::mpsc;

use super::Shared;
use super::client::{ClientPlan, LATENCY_BATCH, Tracker, parse_message, server_info_id};
use super::now_micros;

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub fn http_client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_max_idle_per_host(usize::MAX)
        .build(connector)
}

struct Session {
    http: HttpClient,
    base: String,
}

impl Session {
    async fn get(&self) -> Result<Bytes, String> {
        let request = http::Request::get(&self.base)
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        let response = self
            .http
            .request(request)
            .await
            .map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("poll answered {}", response.status()));
        }
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        Ok(body.to_bytes())
    }

    async fn post(&self, payload: String) -> Result<(), String> {
        let request = http::Request::post(&self.base)
            .header(http::header::CONTENT_TYPE, "text/plain;charset=UTF-8")
            .body(Full::new(Bytes::from(payload)))
            .map_err(|e| e.to_string())?;
        let response = self
            .http
            .request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let _ = response.into_body().collect().await;
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("post answered {status}"))
        }
    }
}

async fn handshake(plan: &ClientPlan, http: HttpClient) -> Result<(Session, String), String> {
    let url = format!("http://{}{}?EIO=4&transport=polling", plan.host, plan.path);
    let first = Session {
        http: http.clone(),
        base: url.clone(),
    };
    let open = first.get().await?;
    let text = std::str::from_utf8(&open).map_err(|e| e.to_string())?;
    let start = text.find("\"sid\":\"").ok_or("no sid in the open packet")? + 7;
    let end = start + text[start..].find('"').ok_or("bad open packet")?;
    let session = Session {
        http,
        base: format!("{url}&sid={}", &text[start..end]),
    };
    session.post("40".into()).await?;
    let mut server_id = None;
    while server_id.is_none() {
        let body = session.get().await?;
        for packet in String::from_utf8_lossy(&body).split('\u{1e}') {
            if let Some(id) = server_info_id(packet) {
                server_id = Some(id.to_owned());
            }
        }
    }
    Ok((session, server_id.unwrap_or_default()))
}

pub async fn run(plan: ClientPlan, shared: Arc<Shared>, http: HttpClient) {
    let started = Instant::now();
    let (session, server_id) =
        match tokio::time::timeout(shared.connect_timeout, handshake(&plan, http)).await {
            Ok(Ok(connected)) => connected,
            Ok(Err(error)) => return shared.connect_failed(&error),
            Err(_) => return shared.connect_failed("connect timed out"),
        };
    shared.record_connect(started.elapsed(), &server_id);
    let session = Arc::new(session);
    // Sends: what the sender queues plus pongs, one POST at a time, batched.
    let (pongs, pong_queue) = mpsc::unbounded_channel::<String>();
    let poster = tokio::spawn(post_loop(
        session.clone(),
        plan.outgoing,
        pong_queue,
        shared.clone(),
    ));
    let mut tracker = Tracker::new(shared.senders, shared.messages);
    let mut latencies = Vec::with_capacity(LATENCY_BATCH);
    let mut stop = shared.stop.subscribe();
    loop {
        let body = tokio::select! {
            _ = stop.changed() => break,
            body = session.get() => body,
        };
        let Ok(body) = body else {
            shared.disconnected.fetch_add(1, Ordering::Relaxed);
            break;
        };
        let text = String::from_utf8_lossy(&body);
        for packet in text.split('\u{1e}') {
            match packet {
                "2" => {
                    let _ = pongs.send("3".into());
                }
                "1" => {
                    shared.disconnected.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                _ => {
                    if let Some((sender, seq, sent_at)) = parse_message(packet) {
                        tracker.record(sender, seq, &shared);
                        latencies.push(now_micros().saturating_sub(sent_at));
                        if latencies.len() == LATENCY_BATCH {
                            shared.record_latencies(&latencies);
                            latencies.clear();
                        }
                    }
                }
            }
        }
    }
    shared.record_latencies(&latencies);
    poster.abort();
}

async fn post_loop(
    session: Arc<Session>,
    mut outgoing: Option<mpsc::Receiver<String>>,
    mut pongs: mpsc::UnboundedReceiver<String>,
    shared: Arc<Shared>,
) {
    loop {
        let first = tokio::select! {
            pong = pongs.recv() => match pong { Some(pong) => pong, None => return },
            message = async {
                match outgoing.as_mut() {
                    Some(outgoing) => outgoing.recv().await,
                    None => std::future::pending().await,
                }
            } => match message {
                Some(message) => message,
                None => { outgoing = None; continue; }
            },
        };
        let mut payload = first;
        let mut batched = u64::from(!payload.starts_with('3'));
        while let Some(next) = outgoing.as_mut().and_then(|o| o.try_recv().ok()) {
            payload.push('\u{1e}');
            payload.push_str(&next);
            batched += 1;
        }
        if session.post(payload).await.is_err() {
            shared.note_error("post failed");
            return;
        }
        shared.sent.fetch_add(batched, Ordering::Relaxed);
    }
}
