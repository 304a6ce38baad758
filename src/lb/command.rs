//! `ioscale lb` and the balancer's own `/health` and `/metrics`.

use std::fmt::Write as _;

use anyhow::Context;
use http::{Response, StatusCode, header};
use ioscale::metrics::{Limit, Metrics};
use ioscale::socket::serve_http;

use super::{Balancer, ProxyBody, full};
use crate::app::bind_with_ops;
use crate::config::{BalancerOptions, LbOptions};

pub async fn run(options: LbOptions) -> anyhow::Result<()> {
    let (listener, ops) = bind_with_ops(options.host, options.port, options.ops_port).await?;
    let limits = ioscale::http::HttpLimits {
        tls: options.tls.acceptor()?,
        ..Default::default()
    };
    let stop = shutdown();
    serve(
        listener,
        ops,
        options.backends,
        options.balancer,
        limits,
        stop,
    )
    .await
}

/// Runs a balancer on `listener` until `stop` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    ops: Option<tokio::net::TcpListener>,
    backends: Vec<String>,
    options: BalancerOptions,
    limits: ioscale::http::HttpLimits,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let balancer = Balancer::new(backends.clone(), options.clone(), limits.tls.is_some());
    balancer.start();
    tracing::info!(
        backends = ?backends,
        sticky = ?options.sticky,
        policy = ?options.policy,
        "listening on {}",
        listener.local_addr().context("listener has no address")?
    );
    if let Some(ops) = ops {
        tracing::info!(
            "balancer endpoints on {}",
            ops.local_addr().context("no address")?
        );
        let balancer = balancer.clone();
        let refusals = limits.metrics.clone();
        tokio::spawn(serve_http(
            ops,
            std::future::pending(),
            move |request, _| {
                let response = endpoint(&balancer, &refusals, request.uri().path());
                async move { response }
            },
        ));
    }
    ioscale::http::serve_http_with(listener, limits, stop, move |request, remote| {
        balancer.handle(request, remote)
    })
    .await;
    tracing::info!("balancer stopped");
    Ok(())
}

fn endpoint(balancer: &Balancer, refusals: &Metrics, path: &str) -> Response<ProxyBody> {
    let (status, content_type, body) = match path {
        "/health" => (
            StatusCode::OK,
            "application/json",
            serde_json::json!({
                "status": "ok",
                "backendsUp": balancer.backends_up(),
                "sessions": balancer.session_count(),
                "trackedSessions": balancer.tracked_sessions(),
            })
            .to_string(),
        ),
        "/metrics" => (
            StatusCode::OK,
            "text/plain; version=0.0.4",
            metrics(balancer, refusals),
        ),
        _ => (StatusCode::NOT_FOUND, "text/plain", String::new()),
    };
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    if let Ok(value) = header::HeaderValue::from_str(content_type) {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    response
}

/// Prometheus text format, written directly: a few small families.
fn metrics(balancer: &Balancer, refusals: &Metrics) -> String {
    let mut out = String::new();
    let stats = balancer.backend_stats();
    let _ = writeln!(
        out,
        "# HELP ioscale_lb_sessions Sessions the balancer routes"
    );
    let _ = writeln!(out, "# TYPE ioscale_lb_sessions gauge");
    let _ = writeln!(out, "ioscale_lb_sessions {}", balancer.session_count());
    let _ = writeln!(
        out,
        "# HELP ioscale_lb_backends_up Nodes currently available"
    );
    let _ = writeln!(out, "# TYPE ioscale_lb_backends_up gauge");
    let _ = writeln!(out, "ioscale_lb_backends_up {}", balancer.backends_up());
    let _ = writeln!(
        out,
        "# HELP ioscale_lb_backend_up 1 when the node is available"
    );
    let _ = writeln!(out, "# TYPE ioscale_lb_backend_up gauge");
    for (address, up, _, _) in &stats {
        let _ = writeln!(
            out,
            "ioscale_lb_backend_up{{backend=\"{address}\"}} {}",
            u8::from(*up)
        );
    }
    let _ = writeln!(out, "# HELP ioscale_lb_backend_sessions Sessions per node");
    let _ = writeln!(out, "# TYPE ioscale_lb_backend_sessions gauge");
    for (address, _, sessions, _) in &stats {
        let _ = writeln!(
            out,
            "ioscale_lb_backend_sessions{{backend=\"{address}\"}} {sessions}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP ioscale_lb_requests_total Requests forwarded per node"
    );
    let _ = writeln!(out, "# TYPE ioscale_lb_requests_total counter");
    for (address, _, _, requests) in &stats {
        let _ = writeln!(
            out,
            "ioscale_lb_requests_total{{backend=\"{address}\"}} {requests}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP ioscale_lb_limit_rejections_total Connections the HTTP layer refused"
    );
    let _ = writeln!(out, "# TYPE ioscale_lb_limit_rejections_total counter");
    // The balancer's own HTTP limits; the other limits are the nodes'.
    for limit in [Limit::HeaderBytes, Limit::HeaderReadTimeout] {
        let _ = writeln!(
            out,
            "ioscale_lb_limit_rejections_total{{limit=\"{}\"}} {}",
            limit.as_str(),
            refusals.limit_rejections.get(limit)
        );
    }
    out
}

/// Resolves on SIGINT or SIGTERM. The handlers are registered when this is called, not
/// when the future is first polled.
pub fn shutdown() -> impl std::future::Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let interrupt = signal(SignalKind::interrupt());
    let terminate = signal(SignalKind::terminate());
    async move {
        match (interrupt, terminate) {
            (Ok(mut interrupt), Ok(mut terminate)) => {
                tokio::select! {
                    _ = interrupt.recv() => {}
                    _ = terminate.recv() => {}
                }
            }
            _ => {
                tracing::warn!("cannot handle signals: stop with SIGKILL");
                std::future::pending::<()>().await;
            }
        }
    }
}
