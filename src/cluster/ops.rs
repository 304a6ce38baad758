//! The cluster's operations view on `--ops-port`: one place for the balancer and every
//! worker. `/health` and `/ready` are the balancer's (ready while a worker is available),
//! `/metrics` the balancer's families plus each worker's relabelled `worker="worker-<i>"`,
//! `/workers` the list of workers with their internal address (to scrape one directly),
//! `/stats` the cluster view of one worker (every worker answers for the whole cluster).
//!
//! The balancer's endpoints are read over HTTP on an internal port, as the workers' are:
//! the cluster aggregates scrape targets and needs nothing from the balancer's internals.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Empty, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// What the supervisor knows of one worker.
pub struct WorkerState {
    pub index: u16,
    pub port: u16,
    /// Pid of the running process, 0 while none runs.
    pub pid: AtomicU32,
    /// Times it exited and was started again.
    pub restarts: AtomicU32,
}

impl WorkerState {
    pub fn new(index: u16, port: u16) -> Self {
        WorkerState {
            index,
            port,
            pid: AtomicU32::new(0),
            restarts: AtomicU32::new(0),
        }
    }

    pub fn server_id(&self) -> String {
        format!("worker-{}", self.index)
    }

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

/// A scrape of one target must not hold the whole answer.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest answer read from a target.
const SCRAPE_LIMIT: usize = 16 << 20;
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

struct View {
    client: Client<HttpConnector, Empty<Bytes>>,
    /// The balancer's internal endpoints.
    balancer: String,
    workers: Vec<Arc<WorkerState>>,
    stopping: Arc<AtomicBool>,
}

/// Serves the view on `listener`; returns the internal listener the balancer must serve
/// its own endpoints on.
pub async fn start(
    listener: TcpListener,
    workers: Vec<Arc<WorkerState>>,
    stopping: Arc<AtomicBool>,
) -> anyhow::Result<TcpListener> {
    let internal = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))
        .await
        .context("cannot bind the balancer's internal endpoints")?;
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(SCRAPE_TIMEOUT));
    let view = Arc::new(View {
        client: Client::builder(TokioExecutor::new()).build(connector),
        balancer: internal.local_addr()?.to_string(),
        workers,
        stopping,
    });
    tracing::info!(
        "cluster endpoints on {}",
        listener.local_addr().context("no address")?
    );
    tokio::spawn(ioscale::socket::serve_http(
        listener,
        std::future::pending(),
        move |request, _| {
            let view = view.clone();
            async move { view.handle(request.uri().path()).await }
        },
    ));
    Ok(internal)
}

impl View {
    async fn handle(&self, path: &str) -> Response<Full<Bytes>> {
        match path {
            "/health" => match self.balancer_health().await {
                Some(Value::Object(mut health)) => {
                    health.insert("workers".into(), json!(self.workers.len()));
                    health.insert(
                        "workersRunning".into(),
                        json!(self.workers.iter().filter(|w| running(w)).count()),
                    );
                    json_response(StatusCode::OK, Value::Object(health))
                }
                _ => json_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    json!({"status": "balancer not answering"}),
                ),
            },
            "/ready" => self.ready().await,
            "/workers" => json_response(
                StatusCode::OK,
                Value::Array(
                    self.workers
                        .iter()
                        .map(|worker| {
                            json!({
                                "serverId": worker.server_id(),
                                "address": worker.address(),
                                "pid": pid(worker),
                                "restarts": worker.restarts.load(Ordering::Relaxed),
                            })
                        })
                        .collect(),
                ),
            ),
            "/metrics" => self.metrics().await,
            "/stats" => {
                for worker in &self.workers {
                    if let Some((StatusCode::OK, body)) =
                        self.get(&worker.address(), "/stats").await
                    {
                        return respond(StatusCode::OK, "application/json", body);
                    }
                }
                json_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    json!({"error": "no worker answered"}),
                )
            }
            _ => respond(StatusCode::NOT_FOUND, "text/plain", Bytes::new()),
        }
    }

    async fn ready(&self) -> Response<Full<Bytes>> {
        if self.stopping.load(Ordering::Acquire) {
            return json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"ready": false, "reason": "shutting down"}),
            );
        }
        let up = self
            .balancer_health()
            .await
            .and_then(|health| health.get("backendsUp").and_then(Value::as_u64))
            .unwrap_or(0);
        if up > 0 {
            json_response(StatusCode::OK, json!({"ready": true, "backendsUp": up}))
        } else {
            json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"ready": false, "reason": "no worker available"}),
            )
        }
    }

    async fn balancer_health(&self) -> Option<Value> {
        match self.get(&self.balancer, "/health").await {
            Some((StatusCode::OK, body)) => serde_json::from_slice(&body).ok(),
            _ => None,
        }
    }

    async fn metrics(&self) -> Response<Full<Bytes>> {
        let scrapes = futures_util::future::join_all(
            self.workers
                .iter()
                .map(|worker| async move { self.get_text(&worker.address(), "/metrics").await }),
        );
        let (balancer, scrapes) = tokio::join!(self.get_text(&self.balancer, "/metrics"), scrapes);
        let workers: Vec<_> = self
            .workers
            .iter()
            .zip(scrapes)
            .map(|(worker, text)| WorkerScrape {
                id: worker.server_id(),
                running: running(worker),
                restarts: worker.restarts.load(Ordering::Relaxed),
                text,
            })
            .collect();
        let text = compose(balancer.as_deref().unwrap_or(""), &workers);
        respond(StatusCode::OK, OPENMETRICS, Bytes::from(text))
    }

    async fn get_text(&self, address: &str, path: &str) -> Option<String> {
        match self.get(address, path).await {
            Some((StatusCode::OK, body)) => String::from_utf8(body.to_vec()).ok(),
            _ => None,
        }
    }

    /// One GET with a deadline; `None` on any failure.
    async fn get(&self, address: &str, path: &str) -> Option<(StatusCode, Bytes)> {
        let request = Request::get(format!("http://{address}{path}"))
            .body(Empty::new())
            .ok()?;
        let fetch = async {
            let response = self.client.request(request).await.ok()?;
            let status = response.status();
            let body = Limited::new(response.into_body(), SCRAPE_LIMIT)
                .collect()
                .await
                .ok()?
                .to_bytes();
            Some((status, body))
        };
        tokio::time::timeout(SCRAPE_TIMEOUT, fetch).await.ok()?
    }
}

fn pid(worker: &WorkerState) -> Option<u32> {
    Some(worker.pid.load(Ordering::Relaxed)).filter(|pid| *pid != 0)
}

fn running(worker: &WorkerState) -> bool {
    pid(worker).is_some()
}

struct WorkerScrape {
    id: String,
    running: bool,
    restarts: u32,
    /// Its `/metrics`, `None` when it did not answer.
    text: Option<String>,
}

/// One OpenMetrics exposition: the balancer's families, the supervisor's, then every
/// worker family once with the samples of all workers, each labelled with its worker.
fn compose(balancer: &str, workers: &[WorkerScrape]) -> String {
    let mut out = openmetrics_counters(balancer);
    let _ = writeln!(
        out,
        "# HELP ioscale_cluster_worker_up 1 when the worker runs and answered this scrape"
    );
    let _ = writeln!(out, "# TYPE ioscale_cluster_worker_up gauge");
    for worker in workers {
        let up = worker.running && worker.text.is_some();
        let _ = writeln!(
            out,
            "ioscale_cluster_worker_up{{worker=\"{}\"}} {}",
            worker.id,
            u8::from(up)
        );
    }
    let _ = writeln!(
        out,
        "# HELP ioscale_cluster_worker_restarts Times the worker exited and was started again"
    );
    let _ = writeln!(out, "# TYPE ioscale_cluster_worker_restarts counter");
    for worker in workers {
        let _ = writeln!(
            out,
            "ioscale_cluster_worker_restarts_total{{worker=\"{}\"}} {}",
            worker.id, worker.restarts
        );
    }
    // Family name -> (metadata lines, samples), in the order first seen.
    let mut families: Vec<(String, Vec<String>, Vec<String>)> = Vec::new();
    for worker in workers {
        let Some(text) = &worker.text else { continue };
        let mut current: Option<usize> = None;
        for line in text.lines() {
            if line.is_empty() || line == "# EOF" {
                continue;
            }
            if let Some(meta) = line.strip_prefix("# ") {
                let name = meta.split(' ').nth(1).unwrap_or("");
                let index = match families.iter().position(|(family, ..)| family == name) {
                    Some(index) => index,
                    None => {
                        families.push((name.to_owned(), Vec::new(), Vec::new()));
                        families.len() - 1
                    }
                };
                let (_, metadata, samples) = &mut families[index];
                // The first worker's metadata only (every worker has the same).
                if samples.is_empty() && !metadata.iter().any(|m| m == line) {
                    metadata.push(line.to_owned());
                }
                current = Some(index);
                continue;
            }
            let index = match current {
                Some(index) => index,
                None => {
                    families.push((String::new(), Vec::new(), Vec::new()));
                    let index = families.len() - 1;
                    current = Some(index);
                    index
                }
            };
            families[index].2.push(with_worker(line, &worker.id));
        }
    }
    for (_, metadata, samples) in &families {
        for line in metadata.iter().chain(samples) {
            out.push_str(line);
            out.push('\n');
        }
    }
    out.push_str("# EOF\n");
    out
}

/// The balancer writes the classic text format, where a counter's family is named with
/// its `_total`; OpenMetrics names the family without it.
fn openmetrics_counters(text: &str) -> String {
    let counters: Vec<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .filter(|name| name.ends_with("_total"))
        .collect();
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let name = rest.split(' ').next()?;
            counters.contains(&name).then(|| {
                format!(
                    "{prefix}{}{}",
                    name.trim_end_matches("_total"),
                    &rest[name.len()..]
                )
            })
        });
        if line.is_empty() || line == "# EOF" {
            continue;
        }
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

/// A sample line with `worker="<id>"` as its first label.
fn with_worker(line: &str, worker: &str) -> String {
    match line.find(['{', ' ']) {
        Some(at) if line.as_bytes()[at] == b'{' => {
            let rest = &line[at + 1..];
            let separator = if rest.starts_with('}') { "" } else { "," };
            format!("{}{{worker=\"{worker}\"{separator}{rest}", &line[..at])
        }
        Some(at) => format!("{}{{worker=\"{worker}\"}}{}", &line[..at], &line[at..]),
        None => line.to_owned(),
    }
}

fn respond(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response
}

fn json_response(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    respond(status, "application/json", Bytes::from(body.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_samples_with_their_worker() {
        assert_eq!(
            with_worker("a_total 3", "worker-0"),
            "a_total{worker=\"worker-0\"} 3"
        );
        assert_eq!(with_worker("a{} 3", "worker-1"), "a{worker=\"worker-1\"} 3");
        assert_eq!(
            with_worker("a{reason=\"x y}\"} 3", "worker-2"),
            "a{worker=\"worker-2\",reason=\"x y}\"} 3"
        );
    }

    #[test]
    fn merges_families_of_every_worker() {
        let worker = |n: u32| {
            format!(
                "# HELP ioscale_rooms Rooms.\n# TYPE ioscale_rooms gauge\nioscale_rooms {n}\n\
                 # HELP ioscale_packets_sent Sent.\n# TYPE ioscale_packets_sent counter\n\
                 ioscale_packets_sent_total{{transport=\"ws\"}} {n}\n# EOF\n"
            )
        };
        let scrape = |index: u16, text: Option<String>| WorkerScrape {
            id: format!("worker-{index}"),
            running: text.is_some(),
            restarts: u32::from(index),
            text,
        };
        let balancer = "# HELP ioscale_lb_requests_total Requests\n# TYPE ioscale_lb_requests_total counter\nioscale_lb_requests_total{backend=\"b\"} 7\n";
        let text = compose(
            balancer,
            &[
                scrape(0, Some(worker(1))),
                scrape(1, Some(worker(2))),
                scrape(2, None),
            ],
        );
        let expected = "# HELP ioscale_lb_requests Requests\n# TYPE ioscale_lb_requests counter\n\
            ioscale_lb_requests_total{backend=\"b\"} 7\n\
            # HELP ioscale_cluster_worker_up 1 when the worker runs and answered this scrape\n\
            # TYPE ioscale_cluster_worker_up gauge\n\
            ioscale_cluster_worker_up{worker=\"worker-0\"} 1\n\
            ioscale_cluster_worker_up{worker=\"worker-1\"} 1\n\
            ioscale_cluster_worker_up{worker=\"worker-2\"} 0\n\
            # HELP ioscale_cluster_worker_restarts Times the worker exited and was started again\n\
            # TYPE ioscale_cluster_worker_restarts counter\n\
            ioscale_cluster_worker_restarts_total{worker=\"worker-0\"} 0\n\
            ioscale_cluster_worker_restarts_total{worker=\"worker-1\"} 1\n\
            ioscale_cluster_worker_restarts_total{worker=\"worker-2\"} 2\n\
            # HELP ioscale_rooms Rooms.\n# TYPE ioscale_rooms gauge\n\
            ioscale_rooms{worker=\"worker-0\"} 1\nioscale_rooms{worker=\"worker-1\"} 2\n\
            # HELP ioscale_packets_sent Sent.\n# TYPE ioscale_packets_sent counter\n\
            ioscale_packets_sent_total{worker=\"worker-0\",transport=\"ws\"} 1\n\
            ioscale_packets_sent_total{worker=\"worker-1\",transport=\"ws\"} 2\n# EOF\n";
        assert_eq!(text, expected);
    }
}
