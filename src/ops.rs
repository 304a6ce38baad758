//! Operations endpoints: `/health`, `/ready`, `/metrics` (Prometheus) and `/stats`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use bytes::Bytes;
use http::{Response, StatusCode, header};
use ioscale::DisconnectReason;
use ioscale::Io;
use ioscale::adapter::cluster::ClusterNode;
use ioscale::engine::EngineError;
use ioscale::metrics::{Label, LabeledCounters, Limit};
use ioscale::socket::Body;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use serde_json::json;

use crate::stats::ClusterStats;

/// The node's operational state and endpoints.
pub struct Ops {
    io: Io,
    cluster: Option<Arc<ClusterNode>>,
    server_id: Arc<str>,
    started: Instant,
    shutting_down: AtomicBool,
    stats: ClusterStats,
    registry: Registry,
}

impl Ops {
    pub fn new(io: Io, cluster: Option<Arc<ClusterNode>>, server_id: Arc<str>) -> Arc<Self> {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(NodeCollector {
            io: io.clone(),
            cluster: cluster.clone(),
        }));
        Arc::new(Ops {
            stats: ClusterStats::new(io.clone(), server_id.clone()),
            io,
            cluster,
            server_id,
            started: Instant::now(),
            shutting_down: AtomicBool::new(false),
            registry,
        })
    }

    /// `/ready` turns 503 from now on.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Release);
    }

    /// Answers an operations path, or `None` for any other path.
    pub async fn handle(&self, path: &str) -> Option<Response<Body>> {
        Some(match path {
            "/health" => json_response(
                StatusCode::OK,
                json!({
                    "status": "ok",
                    "serverId": &*self.server_id,
                    "uptimeSeconds": self.started.elapsed().as_secs(),
                    "version": env!("CARGO_PKG_VERSION"),
                }),
            ),
            "/ready" => match self.not_ready_reason() {
                None => json_response(StatusCode::OK, json!({"ready": true})),
                Some(reason) => json_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    json!({"ready": false, "reason": reason}),
                ),
            },
            "/metrics" => {
                let mut text = String::new();
                if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
                    return Some(plain(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "metrics encoding failed",
                    ));
                }
                let mut response = plain(StatusCode::OK, text);
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static(
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    ),
                );
                response
            }
            "/stats" => json_response(StatusCode::OK, self.stats.collect().await),
            _ => return None,
        })
    }

    fn not_ready_reason(&self) -> Option<&'static str> {
        if self.shutting_down.load(Ordering::Acquire) {
            return Some("shutting down");
        }
        self.cluster
            .as_ref()
            .and_then(|cluster| cluster.health().not_ready_reason())
    }

    /// One stats log line.
    pub fn log_stats(&self) {
        let rooms: usize = self.io.namespaces().iter().map(|ns| ns.rooms().len()).sum();
        tracing::info!(
            connections = self.io.connection_count(),
            sockets = self.io.of("/").socket_count(),
            rooms,
            "stats"
        );
    }
}

fn plain(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Body::new(body.into()));
    *response.status_mut() = status;
    response
}

fn json_response(status: StatusCode, body: serde_json::Value) -> Response<Body> {
    let mut response = plain(status, body.to_string());
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

/// Reads the node's counters on each scrape.
#[derive(Debug)]
struct NodeCollector {
    io: Io,
    cluster: Option<Arc<ClusterNode>>,
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> std::fmt::Result {
    let metric = ConstCounter::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: i64) -> std::fmt::Result {
    let metric = ConstGauge::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

/// Every value of a label with its count; the values come from the enum that owns them.
fn samples<L: Label>(counters: &LabeledCounters) -> Vec<(String, u64)> {
    let samples = counters.samples::<L>().into_iter();
    samples
        .map(|(value, count)| (value.to_owned(), count))
        .collect()
}

/// A counter family with one label.
fn labeled_counters(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    values: &[(String, u64)],
) -> std::fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (value, count) in values {
        let labels = [(label, value.as_str())];
        ConstCounter::new(*count).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

fn labeled_gauges(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    values: &[(String, i64)],
) -> std::fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (value, count) in values {
        let labels = [(label, value.as_str())];
        ConstGauge::new(*count).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for NodeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let load = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
        let metrics = self.io.metrics();
        let (polling, websocket) = self.io.connections_by_transport();
        labeled_gauges(
            &mut encoder,
            "ioscale_connections",
            "Open connections by transport",
            "transport",
            &[
                ("polling".into(), polling as i64),
                ("websocket".into(), websocket as i64),
            ],
        )?;
        let namespaces = self.io.namespaces();
        let sockets: Vec<(String, i64)> = namespaces
            .iter()
            .map(|ns| (ns.name().to_owned(), ns.socket_count() as i64))
            .collect();
        labeled_gauges(
            &mut encoder,
            "ioscale_sockets",
            "Connected sockets by namespace",
            "namespace",
            &sockets,
        )?;
        let rooms: usize = namespaces.iter().map(|ns| ns.rooms().len()).sum();
        gauge(
            &mut encoder,
            "ioscale_rooms",
            "Rooms with members on this node (socket id rooms included)",
            rooms as i64,
        )?;
        counter(
            &mut encoder,
            "ioscale_packets_received",
            "Engine.IO packets received",
            load(&metrics.packets_received),
        )?;
        counter(
            &mut encoder,
            "ioscale_packets_sent",
            "Engine.IO packets sent",
            load(&metrics.packets_sent),
        )?;
        counter(
            &mut encoder,
            "ioscale_bytes_received",
            "Bytes of packets received",
            load(&metrics.bytes_received),
        )?;
        counter(
            &mut encoder,
            "ioscale_bytes_sent",
            "Bytes of packets sent",
            load(&metrics.bytes_sent),
        )?;
        labeled_counters(
            &mut encoder,
            "ioscale_broadcasts",
            "Broadcasts, delivered on this node only or published to the cluster",
            "scope",
            &[
                ("local".into(), load(&metrics.broadcasts_local)),
                ("cluster".into(), load(&metrics.broadcasts_cluster)),
            ],
        )?;
        labeled_counters(
            &mut encoder,
            "ioscale_recoveries",
            "Connection state recovery: reconnections that named a session, and sessions restored",
            "result",
            &[
                ("attempted".into(), load(&metrics.recovery_attempts)),
                ("recovered".into(), load(&metrics.recovery_successes)),
            ],
        )?;
        let redis_dropped = self
            .cluster
            .as_ref()
            .map_or(0, |c| load(&c.stats().publish_dropped));
        labeled_counters(
            &mut encoder,
            "ioscale_dropped_packets",
            "Packets not delivered, by reason",
            "reason",
            &[
                ("slow_consumer".into(), load(&metrics.dropped_slow_consumer)),
                ("volatile".into(), load(&metrics.dropped_volatile)),
                ("redis_unavailable".into(), redis_dropped),
            ],
        )?;
        let disconnects = samples::<DisconnectReason>(&metrics.disconnects);
        labeled_counters(
            &mut encoder,
            "ioscale_disconnects",
            "Socket disconnections by reason",
            "reason",
            &disconnects,
        )?;
        let errors = samples::<EngineError>(&metrics.handshake_errors);
        labeled_counters(
            &mut encoder,
            "ioscale_handshake_errors",
            "Refused Engine.IO requests by error code (0 transport unknown .. 5 unsupported version)",
            "code",
            &errors,
        )?;
        let limits = samples::<Limit>(&metrics.limit_rejections);
        labeled_counters(
            &mut encoder,
            "ioscale_limit_rejections",
            "Requests, connections and events refused by a limit",
            "limit",
            &limits,
        )?;
        let (sum, count, buckets) = metrics.fanout.snapshot();
        let family = encoder.encode_descriptor(
            "ioscale_broadcast_fanout_seconds",
            "Time to queue one broadcast on every local recipient",
            None,
            MetricType::Histogram,
        )?;
        let mut family = family;
        family.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            sum, count, &buckets, None,
        )?;
        let (requests, timeouts, up, reconnects, ping) = match &self.cluster {
            Some(cluster) => {
                let stats = cluster.stats();
                let health = cluster.health();
                (
                    load(&stats.requests),
                    load(&stats.request_timeouts),
                    i64::from(health.is_up() && !health.is_stalled()),
                    load(&stats.reconnects),
                    health.ping_seconds(),
                )
            }
            None => (0, 0, 0, 0, 0.0),
        };
        counter(
            &mut encoder,
            "ioscale_adapter_requests",
            "Cluster requests sent",
            requests,
        )?;
        counter(
            &mut encoder,
            "ioscale_adapter_timeouts",
            "Cluster requests that timed out",
            timeouts,
        )?;
        gauge(
            &mut encoder,
            "ioscale_redis_up",
            "1 when both Redis connections are up and Redis answers PING within 2 s",
            up,
        )?;
        let ping = ConstGauge::new(ping);
        ping.encode(encoder.encode_descriptor(
            "ioscale_redis_ping_seconds",
            "Latency of the last PING to Redis (or how long the one in flight has waited, if longer)",
            None,
            ping.metric_type(),
        )?)?;
        let lost = |pick: fn(
            &ioscale::adapter::cluster::ClusterStats,
        ) -> &std::sync::atomic::AtomicU64| {
            self.cluster.as_ref().map_or(0, |c| load(pick(c.stats())))
        };
        labeled_counters(
            &mut encoder,
            "ioscale_cluster_messages_lost",
            "Cluster messages lost by this node, by reason (publish_unknown: fate unknown, not known lost)",
            "reason",
            &[
                ("lagged".into(), lost(|s| &s.received_lagged)),
                ("invalid".into(), lost(|s| &s.received_invalid)),
                ("subscriber_cut".into(), lost(|s| &s.subscriber_cuts)),
                ("publish_unknown".into(), lost(|s| &s.publish_unknown)),
            ],
        )?;
        counter(
            &mut encoder,
            "ioscale_redis_reconnects",
            "Redis reconnections",
            reconnects,
        )?;
        Ok(())
    }
}
