//! `ioscale cluster`: N worker nodes (`ioscale serve` processes on internal ports, server
//! ids `worker-<i>`) and the sticky balancer on the public port, in one command. A worker
//! that exits is restarted; SIGTERM stops the balancer, then every worker gracefully.

use std::net::Ipv4Addr;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::sync::Notify;

use crate::app::bind_with_ops;
use crate::config::{ClusterOptions, LogFormat};
use crate::lb::command::{serve, shutdown};

pub async fn run(options: ClusterOptions) -> anyhow::Result<()> {
    if options.redis_url.is_empty() {
        eprintln!(
            "ioscale cluster needs --redis-url (or REDIS_URL): without Redis the workers would not see each other's clients"
        );
        std::process::exit(2);
    }
    let redis_url = options.redis_url.join(",");
    let redis_mode = options.redis_mode.to_args();
    // Handlers first: a signal during startup must still stop the workers.
    let signal = shutdown();
    let (listener, ops) = bind_with_ops(options.host, options.port, options.ops_port).await?;
    let executable = std::env::current_exe().context("cannot find the ioscale executable")?;
    let stopping = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(Notify::new());
    let mut workers = Vec::new();
    let mut backends = Vec::new();
    for index in 0..options.workers {
        let port = free_port().context("no free port for a worker")?;
        backends.push(format!("127.0.0.1:{port}"));
        let worker = Worker {
            index,
            port,
            executable: executable.clone(),
            redis_url: redis_url.clone(),
            redis_mode: redis_mode.clone(),
            log_format: options.log.log_format,
            shutdown_timeout: options.shutdown_timeout,
        };
        workers.push(tokio::spawn(supervise(
            worker,
            stopping.clone(),
            stop.clone(),
        )));
    }
    // Serve only once the workers answer, so the first clients do not meet a cluster
    // whose nodes all look down.
    for backend in &backends {
        wait_until_listening(backend, Duration::from_secs(15)).await;
    }
    // On a signal the workers stop first, while the balancer still carries their last
    // packets (a polling client collects its close through it); then the balancer stops.
    let grace = Duration::from_secs(options.shutdown_timeout + 2);
    let stop_workers = async move {
        signal.await;
        tracing::info!("stopping the workers");
        stopping.store(true, Ordering::Release);
        stop.notify_waiters();
        for worker in workers {
            let _ = tokio::time::timeout(grace, worker).await;
        }
    };
    let limits = ioscale::http::HttpLimits {
        tls: options.tls.acceptor()?,
        ..Default::default()
    };
    serve(
        listener,
        ops,
        backends,
        options.balancer.clone(),
        limits,
        stop_workers,
    )
    .await?;
    tracing::info!("cluster stopped");
    Ok(())
}

struct Worker {
    index: u16,
    port: u16,
    executable: std::path::PathBuf,
    redis_url: String,
    redis_mode: Vec<String>,
    log_format: LogFormat,
    shutdown_timeout: u64,
}

impl Worker {
    fn spawn(&self) -> std::io::Result<Child> {
        let format = match self.log_format {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        };
        Command::new(&self.executable)
            .arg("serve")
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--server-id", &format!("worker-{}", self.index)])
            .args(["--redis-url", &self.redis_url])
            .args(&self.redis_mode)
            .args(["--log-format", format])
            .args(["--shutdown-timeout", &self.shutdown_timeout.to_string()])
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
    }
}

/// Keeps one worker running: restarts it when it exits (with a short pause against
/// crash loops), stops it with SIGTERM when the cluster stops.
async fn supervise(worker: Worker, stopping: Arc<AtomicBool>, stop: Arc<Notify>) {
    let mut restarts = 0u32;
    loop {
        let stopped = stop.notified();
        tokio::pin!(stopped);
        stopped.as_mut().enable();
        if stopping.load(Ordering::Acquire) {
            return;
        }
        let mut child = match worker.spawn() {
            Ok(child) => child,
            Err(error) => {
                tracing::error!(worker = worker.index, %error, "cannot start worker");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        tracing::info!(
            worker = worker.index,
            port = worker.port,
            pid = child.id(),
            "worker started"
        );
        tokio::select! {
            status = child.wait() => {
                restarts += 1;
                tracing::warn!(worker = worker.index, ?status, restarts, "worker exited: restarting");
                tokio::time::sleep(Duration::from_millis(200 * u64::from(restarts.min(10)))).await;
            }
            _ = &mut stopped => {
                if let Some(pid) = child.id().and_then(|pid| i32::try_from(pid).ok()) {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
                }
                let grace = Duration::from_secs(worker.shutdown_timeout + 1);
                if tokio::time::timeout(grace, child.wait()).await.is_err() {
                    let _ = child.kill().await;
                }
                tracing::info!(worker = worker.index, "worker stopped");
                return;
            }
        }
    }
}

async fn wait_until_listening(address: &str, limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if tokio::net::TcpStream::connect(address).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    tracing::warn!(address, "worker not listening yet: serving anyway");
}

fn free_port() -> std::io::Result<u16> {
    let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}
