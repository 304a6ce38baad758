//! `ioscale cluster`: N worker nodes (`ioscale serve` processes on internal ports, server
//! ids `worker-<i>`) and the sticky balancer on the public port, in one command. A worker
//! that exits is restarted; SIGTERM or SIGINT stops the workers gracefully, then the
//! balancer.
//!
//! Workers get exactly the options the cluster gives them: their own arguments, the
//! options after `--`, and a cleared environment (no `.env` either). They run in their own
//! process group, so a signal sent to the terminal's group reaches only the supervisor,
//! which signals each worker once; a pipe on their stdin tells them when the supervisor
//! is gone, even after SIGKILL.

mod ops;

use std::net::Ipv4Addr;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use clap::{Args, FromArgMatches};
use ioscale::adapter::redis::sharded::{ShardedConfig, ShardedRedis};
use ioscale::adapter::redis::{ClassicRedis, RedisConfig};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::sync::Notify;

use crate::app::bind_with_ops;
use crate::config::{ClusterOptions, LogFormat, RedisMode, ServeOptions};
use crate::lb::command::serve;
use crate::signals::Signals;

/// Set in a worker's environment: the process is a worker of `ioscale cluster`.
const WORKER_MARKER: &str = "IOSCALE_CLUSTER_WORKER";

/// What a worker keeps of the cluster's environment: what any process needs (locale, time
/// zone, log filter), never an ioscale option.
fn kept_env(name: &str) -> bool {
    matches!(
        name,
        "PATH" | "HOME" | "USER" | "LOGNAME" | "TMPDIR" | "TZ" | "LANG" | "LANGUAGE"
    ) || name == "RUST_LOG"
        || name == "RUST_BACKTRACE"
        || name == "NO_COLOR"
        || name.starts_with("LC_")
}

/// `ServeOptions` the cluster sets itself on every worker: refused after `--`, with the
/// cluster option to use instead.
const SET_BY_CLUSTER: [(&str, &str); 12] = [
    (
        "port",
        "workers listen on internal ports of 127.0.0.1 (the public one is --port)",
    ),
    (
        "host",
        "workers listen on 127.0.0.1 (the public address is --host)",
    ),
    ("server_id", "workers are named worker-0, worker-1, ..."),
    ("redis_url", "give --redis-url to the cluster"),
    ("redis_mode", "give --redis-mode to the cluster"),
    (
        "redis_subscription_mode",
        "give --redis-subscription-mode to the cluster",
    ),
    (
        "ops_port",
        "the cluster's --ops-port serves every worker's metrics",
    ),
    ("shutdown_timeout", "give --shutdown-timeout to the cluster"),
    ("log_format", "give --log-format to the cluster"),
    ("path", "give --lb-path to the cluster (workers get it too)"),
    (
        "tls_cert",
        "the balancer terminates TLS: give --tls-cert to the cluster",
    ),
    (
        "tls_key",
        "the balancer terminates TLS: give --tls-key to the cluster",
    ),
];

/// Called first thing in `main`: true in a worker of `ioscale cluster`, which must not read
/// `.env` (the supervisor chose its options); there it also turns the end of stdin (the
/// supervisor is gone, even killed) into a SIGTERM: a graceful shutdown.
pub fn as_worker() -> bool {
    if std::env::var_os(WORKER_MARKER).is_none() {
        return false;
    }
    let spawned = std::thread::Builder::new()
        .name("supervisor-watch".into())
        .spawn(|| {
            use std::io::Read;
            let mut buffer = [0u8; 64];
            // The supervisor never writes: the pipe closing ends the read.
            loop {
                match std::io::stdin().read(&mut buffer) {
                    Ok(0) => break,
                    Err(error) if error.kind() != std::io::ErrorKind::Interrupted => break,
                    _ => {}
                }
            }
            let _ = kill(Pid::this(), Signal::SIGTERM);
        });
    if let Err(error) = spawned {
        eprintln!("ioscale: cannot watch the supervisor: {error}");
    }
    true
}

pub async fn run(options: ClusterOptions) -> anyhow::Result<()> {
    if options.redis_url.is_empty() {
        eprintln!(
            "ioscale cluster needs --redis-url (or REDIS_URL): without Redis the workers would not see each other's clients"
        );
        std::process::exit(2);
    }
    if options.redis_mode.redis_mode == RedisMode::Classic && options.redis_url.len() > 1 {
        eprintln!(
            "ioscale cluster: --redis-mode classic takes one --redis-url (several are seed nodes of a Redis Cluster: use --redis-mode sharded)"
        );
        std::process::exit(2);
    }
    if let Err(message) = check_worker_args(&options.worker_args) {
        eprintln!("{message}");
        std::process::exit(2);
    }
    // Read the TLS files before starting anything.
    let limits = ioscale::http::HttpLimits {
        tls: options.tls.acceptor()?,
        ..Default::default()
    };
    // Handlers first: a signal at any point of the startup stops the cluster.
    let signals = Signals::new()?;
    let (listener, ops_listener) =
        bind_with_ops(options.host, options.port, options.ops_port).await?;
    tokio::select! {
        result = wait_for_redis(&options) => result?,
        () = signals.wait_for(1) => {
            tracing::info!("signal before Redis answered: stopped");
            return Ok(());
        }
    }
    let executable = std::env::current_exe().context("cannot find the ioscale executable")?;
    let stopping = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(Notify::new());
    let mut tasks = Vec::new();
    let mut workers = Vec::new();
    let mut backends = Vec::new();
    let template = Arc::new(WorkerCommand {
        executable,
        redis_url: options.redis_url.join(","),
        redis_mode: options.redis_mode.to_args(),
        log_format: options.log.log_format,
        shutdown_timeout: options.shutdown_timeout,
        path: options.balancer.path.clone(),
        extra: options.worker_args.clone(),
    });
    for index in 0..options.workers {
        let port = free_port().context("no free port for a worker")?;
        backends.push(format!("127.0.0.1:{port}"));
        let state = Arc::new(ops::WorkerState::new(index, port));
        workers.push(state.clone());
        tasks.push(tokio::spawn(supervise(
            template.clone(),
            state,
            stopping.clone(),
            stop.clone(),
        )));
    }
    // A second signal stops at once: the supervisor exits, every worker sees its stdin
    // close and takes that as its own second signal.
    let second = signals.wait_for(2);
    tokio::spawn(async move {
        second.await;
        tracing::warn!("second signal: exiting now");
        std::process::exit(130);
    });
    let grace = Duration::from_secs(options.shutdown_timeout + 2);
    let stop_all = {
        let stopping = stopping.clone();
        async move {
            stopping.store(true, Ordering::Release);
            stop.notify_waiters();
            for task in tasks {
                let _ = tokio::time::timeout(grace, task).await;
            }
        }
    };
    // Serve only once the workers answer, so the first clients do not meet a cluster
    // whose nodes all look down.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let listening =
        futures_util::future::join_all(backends.iter().map(|b| wait_until_listening(b, deadline)));
    tokio::select! {
        _ = listening => {}
        () = signals.wait_for(1) => {
            tracing::info!("signal during startup: stopping the workers");
            stop_all.await;
            tracing::info!("cluster stopped");
            return Ok(());
        }
    }
    let ops_view = match ops_listener {
        Some(listener) => Some(ops::start(listener, workers, stopping).await?),
        None => None,
    };
    // On a signal the workers stop first, while the balancer still carries their last
    // packets (a polling client collects its close through it); then the balancer stops.
    let first = signals.wait_for(1);
    let stop_workers = async move {
        first.await;
        tracing::info!("stopping the workers");
        stop_all.await;
    };
    serve(
        listener,
        ops_view,
        backends,
        options.balancer.clone(),
        limits,
        stop_workers,
    )
    .await?;
    tracing::info!("cluster stopped");
    Ok(())
}

/// Parses the options after `--` as `ioscale serve` would, without reading the environment
/// (workers do not see it), and refuses those the cluster sets itself.
fn check_worker_args(args: &[String]) -> Result<(), String> {
    let command = ServeOptions::augment_args(
        clap::Command::new("ioscale cluster [OPTIONS] --")
            .no_binary_name(true)
            .disable_help_flag(true),
    )
    .mut_args(|arg| arg.env(None));
    let matches = command.try_get_matches_from(args).map_err(|error| {
        format!(
            "ioscale cluster: invalid worker option after `--` (options of `ioscale serve`):\n{}",
            error.render()
        )
    })?;
    for (id, instead) in SET_BY_CLUSTER {
        if matches.value_source(id) == Some(clap::parser::ValueSource::CommandLine) {
            let flag = id.replace('_', "-");
            return Err(format!(
                "ioscale cluster: --{flag} after `--` is set by the cluster itself: {instead}"
            ));
        }
    }
    ServeOptions::from_arg_matches(&matches)
        .map(drop)
        .map_err(|error| format!("ioscale cluster: invalid worker option after `--`: {error}"))
}

/// Waits until Redis answers (at most `--redis-wait` seconds): workers without it would
/// serve split-brain, each seeing only its own clients.
async fn wait_for_redis(options: &ClusterOptions) -> anyhow::Result<()> {
    let shown = options
        .redis_url
        .iter()
        .map(|url| redact(url))
        .collect::<Vec<_>>()
        .join(",");
    // The adapter's own connection (no subscription: this probe joins no cluster).
    let link = match options.redis_mode.redis_mode {
        RedisMode::Classic => {
            ClassicRedis::connect(RedisConfig::new(options.redis_url[0].clone()))?
        }
        RedisMode::Sharded => ShardedRedis::connect(ShardedConfig::new(options.redis_url.clone()))?,
    };
    let limit = Duration::from_secs(options.redis_wait);
    let mut up = link.wait_until_up(limit.min(Duration::from_secs(1))).await;
    if !up && limit > Duration::from_secs(1) {
        tracing::warn!(
            redis = %shown,
            "Redis does not answer: waiting up to {} s (--redis-wait)",
            options.redis_wait
        );
        up = link
            .wait_until_up(limit.saturating_sub(Duration::from_secs(1)))
            .await;
    }
    if !up {
        anyhow::bail!(
            "Redis at {shown} did not answer within {} s (--redis-wait): the workers need it to see each other's clients; not starting",
            options.redis_wait
        );
    }
    // (Not closed when down: closing waits for a server that does not answer.)
    link.close().await;
    tracing::info!(redis = %shown, "Redis is up");
    Ok(())
}

/// The URL without its password, for logs.
fn redact(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, _)), Some(at)) => format!("{scheme}://***@{}", &url[at + 1..]),
        _ => url.to_owned(),
    }
}

/// What every worker runs, but its index and port.
struct WorkerCommand {
    executable: std::path::PathBuf,
    redis_url: String,
    redis_mode: Vec<String>,
    log_format: LogFormat,
    shutdown_timeout: u64,
    path: String,
    extra: Vec<String>,
}

impl WorkerCommand {
    fn spawn(&self, state: &ops::WorkerState) -> std::io::Result<Child> {
        let format = match self.log_format {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        };
        Command::new(&self.executable)
            .arg("serve")
            .args(["--host", "127.0.0.1", "--port", &state.port.to_string()])
            .args(["--server-id", &state.server_id()])
            .args(["--redis-url", &self.redis_url])
            .args(&self.redis_mode)
            .args(["--log-format", format])
            .args(["--shutdown-timeout", &self.shutdown_timeout.to_string()])
            .args(["--path", &self.path])
            .args(&self.extra)
            .env_clear()
            .envs(std::env::vars_os().filter(|(name, _)| name.to_str().is_some_and(kept_env)))
            .env(WORKER_MARKER, "1")
            // Held open until the worker exits; its end is the worker's sign to stop.
            .stdin(Stdio::piped())
            // Out of the terminal's process group: only the supervisor signals a worker.
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
    }
}

/// Keeps one worker running: restarts it when it exits (with a growing pause against
/// crash loops), stops it with one SIGTERM when the cluster stops.
async fn supervise(
    command: Arc<WorkerCommand>,
    state: Arc<ops::WorkerState>,
    stopping: Arc<AtomicBool>,
    stop: Arc<Notify>,
) {
    let index = state.index;
    let stopped = stop.notified();
    tokio::pin!(stopped);
    stopped.as_mut().enable();
    loop {
        if stopping.load(Ordering::Acquire) {
            return;
        }
        let mut child = match command.spawn(&state) {
            Ok(child) => child,
            Err(error) => {
                tracing::error!(worker = index, %error, "cannot start worker");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    () = &mut stopped => return,
                }
            }
        };
        // Held here: `Child::wait` closes the stdin it holds, which tells the worker to stop.
        let _supervisor_alive = child.stdin.take();
        let pid = child.id().unwrap_or(0);
        state.pid.store(pid, Ordering::Relaxed);
        tracing::info!(worker = index, port = state.port, pid, "worker started");
        tokio::select! {
            status = child.wait() => {
                state.pid.store(0, Ordering::Relaxed);
                let restarts = state.restarts.fetch_add(1, Ordering::Relaxed) + 1;
                let (code, signal) = describe(status);
                tracing::warn!(worker = index, code, signal, restarts, "worker exited: restarting");
                let pause = Duration::from_millis(200 * u64::from(restarts.min(10)));
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = &mut stopped => return,
                }
            }
            () = &mut stopped => {
                if let Ok(pid) = i32::try_from(pid) {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
                }
                let grace = Duration::from_secs(command.shutdown_timeout + 1);
                let status = match tokio::time::timeout(grace, child.wait()).await {
                    Ok(status) => status,
                    Err(_) => {
                        tracing::warn!(worker = index, "worker still running after the shutdown timeout: killing it");
                        let _ = child.kill().await;
                        child.wait().await
                    }
                };
                state.pid.store(0, Ordering::Relaxed);
                let (code, signal) = describe(status);
                tracing::info!(worker = index, code, signal, "worker stopped");
                return;
            }
        }
    }
}

/// Exit code and signal of a worker (-1 where none), for its log line.
fn describe(status: std::io::Result<ExitStatus>) -> (i32, i32) {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(status) => (status.code().unwrap_or(-1), status.signal().unwrap_or(-1)),
        Err(_) => (-1, -1),
    }
}

async fn wait_until_listening(address: &str, deadline: tokio::time::Instant) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_args_are_checked_without_the_environment() {
        let args = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(check_worker_args(&[]).is_ok());
        assert!(
            check_worker_args(&args(&[
                "--allowed-origins",
                "http://a.example",
                "--max-connections",
                "5"
            ]))
            .is_ok()
        );
        let refused = check_worker_args(&args(&["--ops-port", "9101"])).unwrap_err();
        assert!(
            refused.contains("--ops-port") && refused.contains("set by the cluster"),
            "{refused}"
        );
        assert!(check_worker_args(&args(&["--redis-url=redis://x:1"])).is_err());
        assert!(check_worker_args(&args(&["--port", "1"])).is_err());
        assert!(check_worker_args(&args(&["--ping-interval", "soon"])).is_err());
        assert!(check_worker_args(&args(&["--no-such-option"])).is_err());
        // Options the cluster does not set are a worker's own.
        assert!(check_worker_args(&args(&["--redis-key-prefix", "app"])).is_ok());
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact("redis://user:secret@host:6379/0"),
            "redis://***@host:6379/0"
        );
        assert_eq!(redact("redis://host:6379"), "redis://host:6379");
    }

    #[test]
    fn keeps_only_a_process_environment() {
        for name in ["PATH", "HOME", "RUST_LOG", "LANG", "LC_ALL", "TZ"] {
            assert!(kept_env(name), "{name}");
        }
        for name in [
            "OPS_PORT",
            "PORT",
            "REDIS_URL",
            "MAX_CONNECTIONS",
            "ALLOWED_ORIGINS",
        ] {
            assert!(!kept_env(name), "{name}");
        }
    }
}
