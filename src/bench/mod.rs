//! `ioscale bench`: the scaling test. Opens N WebSocket clients over one or more URLs at
//! a bounded rate, then S senders each emit M `message` events; every client measures
//! delivery latency and checks every (sender, sequence) for loss, duplicates and order.
//! Every phase is bounded in time, so the tool always stops by itself.

mod client;
mod polling;
mod report;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::Args;
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use tokio::sync::{mpsc, watch};

use client::{ClientPlan, message_text, pace};

#[derive(Debug, Args)]
pub struct BenchOptions {
    /// Server or balancer URL (`http://host:port`); repeat to spread clients over several.
    #[arg(long = "url", required = true)]
    pub urls: Vec<String>,
    /// Number of clients.
    #[arg(long, default_value_t = 100)]
    pub clients: usize,
    /// Transport of the clients: websocket, or polling (HTTP long-polling only; no local
    /// address rotation).
    #[arg(long, default_value = "websocket", value_parser = ["websocket", "polling"])]
    pub transport: String,
    /// New connections per second (0 = as fast as possible).
    #[arg(long, default_value_t = 2000)]
    pub connect_rate: u32,
    /// Bind outgoing sockets to 127.0.0.1 .. 127.0.0.N in turn (more ephemeral ports on loopback).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=250))]
    pub local_addresses: u8,
    /// Clients that send (the first ones).
    #[arg(long, default_value_t = 1)]
    pub senders: usize,
    /// Messages each sender emits.
    #[arg(long, default_value_t = 100)]
    pub messages: usize,
    /// Microseconds between two messages of one sender (0 = a burst).
    #[arg(long, default_value_t = 10_000)]
    pub interval_us: u64,
    /// Seconds to wait for every connection.
    #[arg(long, default_value_t = 120)]
    pub connect_timeout: u64,
    /// Seconds to keep the idle connections open before sending (memory measurements).
    #[arg(long, default_value_t = 0)]
    pub hold: u64,
    /// Seconds to wait for the deliveries after the last message was sent.
    #[arg(long, default_value_t = 30)]
    pub drain_timeout: u64,
    /// Socket.IO path.
    #[arg(long, default_value = "/socket.io/")]
    pub path: String,
    /// A server process to measure (RSS and CPU); repeat for several.
    #[arg(long = "pid")]
    pub pids: Vec<u32>,
    /// Print the result as one JSON object (for scripts) instead of the table, and no progress.
    #[arg(long)]
    pub json: bool,
}

/// What every client reports into.
pub struct Shared {
    senders: usize,
    messages: usize,
    connect_timeout: Duration,
    stop: watch::Sender<bool>,
    connected: AtomicU64,
    connect_failed: AtomicU64,
    disconnected: AtomicU64,
    sent: AtomicU64,
    received: AtomicU64,
    duplicates: AtomicU64,
    reordered: AtomicU64,
    connect_times: Mutex<Histogram<u64>>,
    latencies: Mutex<Histogram<u64>>,
    per_server: Mutex<BTreeMap<String, u64>>,
    first_error: Mutex<Option<String>>,
}

impl Shared {
    fn record_connect(&self, elapsed: Duration, server_id: &str) {
        self.connected.fetch_add(1, Ordering::Relaxed);
        let _ = self
            .connect_times
            .lock()
            .record(elapsed.as_micros().max(1) as u64);
        *self
            .per_server
            .lock()
            .entry(server_id.to_owned())
            .or_default() += 1;
    }

    fn record_latencies(&self, latencies: &[u64]) {
        if latencies.is_empty() {
            return;
        }
        let mut histogram = self.latencies.lock();
        for latency in latencies {
            let _ = histogram.record((*latency).max(1));
        }
    }

    /// A client that could not connect (error or timeout).
    fn connect_failed(&self, error: &str) {
        self.connect_failed.fetch_add(1, Ordering::Relaxed);
        self.note_error(error);
    }

    fn note_error(&self, error: &str) {
        self.first_error
            .lock()
            .get_or_insert_with(|| error.to_owned());
    }
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// 1 µs .. 10 min, 3 significant digits (valid bounds: construction cannot fail).
fn histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 600_000_000, 3).context("histogram bounds")
}

struct Target {
    address: SocketAddr,
    host: String,
}

fn resolve(url: &str) -> anyhow::Result<Target> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("ws://"))
        .with_context(|| format!("{url}: expected http://host:port"))?;
    let host = rest.split('/').next().unwrap_or(rest).to_owned();
    let address = host
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {host}"))?
        .next()
        .with_context(|| format!("no address for {host}"))?;
    Ok(Target { address, host })
}

/// `(RSS KiB, CPU seconds)` of a process, from /proc.
fn process_usage(pid: u32) -> Option<(u64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let hz = 100.0; // USER_HZ on Linux
    Some((rss, ticks as f64 / hz))
}

fn own_cpu_seconds() -> f64 {
    use nix::sys::resource::{UsageWho, getrusage};
    getrusage(UsageWho::RUSAGE_SELF).map_or(0.0, |usage| {
        let user = usage.user_time();
        let system = usage.system_time();
        user.tv_sec() as f64
            + user.tv_usec() as f64 / 1e6
            + system.tv_sec() as f64
            + system.tv_usec() as f64 / 1e6
    })
}

/// Live counts: a spinner line on a terminal, plain lines otherwise, nothing with `--json`.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    quiet: bool,
}

impl Progress {
    fn new(json: bool) -> Self {
        use std::io::IsTerminal;
        let bar = (!json && std::io::stderr().is_terminal()).then(|| {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Progress { bar, quiet: json }
    }

    /// Shows `line()` at once (every phase is announced, even one that is over at once) and
    /// then every second until `finished()`.
    async fn watch(&self, mut finished: impl FnMut() -> bool, line: impl Fn() -> String) {
        let mut last_shown = Instant::now();
        self.show(&line());
        while !finished() {
            if last_shown.elapsed() >= Duration::from_secs(1) {
                self.show(&line());
                last_shown = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn show(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.set_message(line.to_owned()),
            None if !self.quiet => eprintln!("{line}"),
            None => {}
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Exit status of a run whose clients did not all connect (see `--help`).
pub const EXIT_CONNECT_FAILED: u8 = 3;
/// Exit status of a run where messages were lost, duplicated or reordered.
pub const EXIT_DELIVERY_FAILED: u8 = 4;

pub async fn run(options: BenchOptions) -> anyhow::Result<ExitCode> {
    if options.senders > options.clients {
        bail!("--senders must not exceed --clients");
    }
    let targets: Vec<Target> = options
        .urls
        .iter()
        .map(|url| resolve(url))
        .collect::<anyhow::Result<_>>()?;
    let (stop, _) = watch::channel(false);
    let shared = Arc::new(Shared {
        senders: options.senders,
        messages: options.messages,
        connect_timeout: Duration::from_secs(options.connect_timeout),
        stop,
        connected: AtomicU64::new(0),
        connect_failed: AtomicU64::new(0),
        disconnected: AtomicU64::new(0),
        sent: AtomicU64::new(0),
        received: AtomicU64::new(0),
        duplicates: AtomicU64::new(0),
        reordered: AtomicU64::new(0),
        connect_times: Mutex::new(histogram()?),
        latencies: Mutex::new(histogram()?),
        per_server: Mutex::new(BTreeMap::new()),
        first_error: Mutex::new(None),
    });
    let usage_before: Vec<_> = options.pids.iter().map(|pid| process_usage(*pid)).collect();
    let cpu_start = own_cpu_seconds();

    let progress = Progress::new(options.json);
    // Phase 1: connect.
    let http = (options.transport == "polling").then(polling::http_client);
    let connect_started = Instant::now();
    let mut senders = Vec::new();
    let mut tasks = Vec::with_capacity(options.clients);
    for index in 0..options.clients {
        let target = &targets[index % targets.len()];
        let outgoing = if index < options.senders {
            let (sender, receiver) = mpsc::channel(options.messages.max(1));
            senders.push(sender);
            Some(receiver)
        } else {
            None
        };
        let local_ip = (options.local_addresses > 1).then(|| {
            IpAddr::V4(Ipv4Addr::new(
                127,
                0,
                0,
                1 + (index % options.local_addresses as usize) as u8,
            ))
        });
        let plan = ClientPlan {
            index,
            server: target.address,
            host: target.host.clone(),
            path: options.path.clone(),
            local_ip,
            outgoing,
        };
        let shared = shared.clone();
        let rate = options.connect_rate;
        let http = http.clone();
        tasks.push(tokio::spawn(async move {
            pace(plan.index, rate, connect_started).await;
            match http {
                Some(http) => polling::run(plan, shared, http).await,
                None => client::run(plan, shared).await,
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(options.connect_timeout + 1);
    let connected_now = || shared.connected.load(Ordering::Relaxed);
    let failed_now = || shared.connect_failed.load(Ordering::Relaxed);
    progress
        .watch(
            || {
                (connected_now() + failed_now()) as usize >= options.clients
                    || Instant::now() > deadline
            },
            || {
                format!(
                    "connecting: {} of {} connected, {} failed",
                    connected_now(),
                    options.clients,
                    failed_now()
                )
            },
        )
        .await;
    let connect_elapsed = connect_started.elapsed();
    let connected = connected_now();
    progress.show(&format!(
        "connected {connected} of {} in {:.2} s",
        options.clients,
        connect_elapsed.as_secs_f64()
    ));
    // Nobody to send to or to measure: the report says why.
    let anyone = connected > 0;
    if options.hold > 0 && anyone {
        let until = Instant::now() + Duration::from_secs(options.hold);
        progress
            .watch(
                || Instant::now() >= until,
                || {
                    let left = until.saturating_duration_since(Instant::now());
                    format!(
                        "holding idle connections: {connected} for {} s more",
                        left.as_secs_f64().ceil()
                    )
                },
            )
            .await;
    }
    let usage_connected: Vec<_> = options.pids.iter().map(|pid| process_usage(*pid)).collect();

    // Phase 2: broadcast.
    let send_started = Instant::now();
    let messages = options.messages;
    let interval = Duration::from_micros(options.interval_us);
    let sending: Vec<_> = senders
        .into_iter()
        .enumerate()
        .filter(|_| anyone)
        .map(|(sender, channel)| {
            tokio::spawn(async move {
                let start = tokio::time::Instant::now();
                for seq in 0..messages {
                    if !interval.is_zero() {
                        tokio::time::sleep_until(start + interval * seq as u32).await;
                    }
                    if channel.send(message_text(sender, seq)).await.is_err() {
                        return;
                    }
                }
            })
        })
        .collect();
    let expected = (options.senders * options.messages) as u64 * connected;
    let to_send = (options.senders * options.messages) as u64;
    let received_now = || shared.received.load(Ordering::Relaxed);
    progress
        .watch(
            || sending.iter().all(|task| task.is_finished()),
            || {
                format!(
                    "sending: {} of {to_send} messages sent, {} of {expected} delivered",
                    shared.sent.load(Ordering::Relaxed),
                    received_now()
                )
            },
        )
        .await;
    let drain_deadline = Instant::now() + Duration::from_secs(options.drain_timeout);
    progress
        .watch(
            || received_now() >= expected || Instant::now() >= drain_deadline,
            || format!("delivering: {} of {expected}", received_now()),
        )
        .await;
    let broadcast_elapsed = send_started.elapsed();
    let usage_after: Vec<_> = options.pids.iter().map(|pid| process_usage(*pid)).collect();
    progress.finish();
    let _ = shared.stop.send(true);
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }

    let report = report::json(&report::Run {
        options: &options,
        shared: &shared,
        connected,
        expected,
        connect_elapsed,
        broadcast_elapsed,
        usage: [usage_before, usage_connected, usage_after],
        bench_cpu_seconds: own_cpu_seconds() - cpu_start,
    });
    let (verdict, code) = report::verdict(&report);
    if options.json {
        let mut report = report;
        report["verdict"] = verdict.clone().into();
        println!("{report}");
        if code != 0 {
            eprintln!("{verdict}");
        }
    } else {
        print!("{}", report::human(&report, &options));
        println!("\n{verdict}");
    }
    Ok(ExitCode::from(code))
}
