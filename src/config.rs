//! Command-line options. Each flag also reads an environment variable (flags win), and a
//! `.env` file in the working directory fills variables that are not set.

use std::time::Duration;

use clap::{Args, CommandFactory, Parser, Subcommand};
use ioscale::IoConfig;
use ioscale::adapter::cluster::ClusterNode;
use ioscale::adapter::redis::sharded::{ShardedConfig, ShardedRedis, SubscriptionMode};
use ioscale::adapter::redis::{ClassicRedis, RedisConfig};
use ioscale::engine::{AllowedOrigins, EngineConfig, Transports};
use ioscale::socket::{HttpLimits, RecoveryConfig, SocketLimits};

#[derive(Debug, Parser)]
#[command(
    name = "ioscale",
    version,
    about = "A Socket.IO server that scales out"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Checks what clap's parsers do not: the TLS files, read and matched now so that a bad
    /// one exits 2 naming its option, as any bad value does.
    pub fn check(&self) -> Result<(), clap::Error> {
        let (name, tls) = match &self.command {
            Command::Serve(options) => ("serve", &options.tls),
            Command::Lb(options) => ("lb", &options.tls),
            Command::Cluster(options) => ("cluster", &options.tls),
            Command::Bench(_) => return Ok(()),
        };
        tls.check().map_err(|(option, message)| {
            let (kind, message) = (
                clap::error::ErrorKind::ValueValidation,
                format!("invalid value for '{option}': {message}"),
            );
            let mut cli = Cli::command();
            cli.build();
            match cli.find_subcommand_mut(name) {
                Some(command) => command.error(kind, message),
                None => cli.error(kind, message),
            }
        })
    }
}

// Parsed once at startup: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one node: the Socket.IO server and its application.
    Serve(ServeOptions),
    /// Run the sticky load balancer in front of several nodes.
    Lb(LbOptions),
    /// Run N worker nodes and the balancer in one command (needs Redis).
    Cluster(ClusterOptions),
    /// Measure: N clients, broadcast latency, loss, order, server memory and CPU.
    #[command(
        after_help = "Exit status: 0 when every client connected and every message \
        reached every client once and in order; 1 on an error (such as an unresolvable URL); \
        2 on a bad option; 3 when a client did not connect (none listening, refused, timed \
        out); 4 when a message was lost, duplicated or reordered."
    )]
    Bench(crate::bench::BenchOptions),
}

/// How requests of one Socket.IO session stick to one node. (Plain comments on the variants:
/// documented values would switch `--help` to its long, ungrouped-looking layout.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Sticky {
    // By session id, learned from each handshake the balancer forwards.
    Sid,
    // By a cookie naming the node, set by the balancer on handshakes.
    Cookie,
    // By a hash of the client's IP address.
    Ip,
    // No stickiness (breaks HTTP long-polling; for testing).
    None,
}

/// Which node a new session goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Policy {
    LeastConn,
    RoundRobin,
    Random,
}

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Balancer")]
pub struct BalancerOptions {
    /// Stickiness: sid (learned from handshakes), cookie (set by the balancer), ip (client IP
    /// hash), none (breaks long-polling; for tests).
    #[arg(long, env = "LB_STICKY", value_enum, default_value_t = Sticky::Sid)]
    pub sticky: Sticky,
    /// Node choice for new sessions.
    #[arg(long, env = "LB_POLICY", value_enum, default_value_t = Policy::LeastConn)]
    pub policy: Policy,
    /// Socket.IO request path on the nodes.
    #[arg(long = "lb-path", env = "LB_PATH", default_value = "/socket.io/", value_parser = request_path)]
    pub path: String,
    /// Failed attempts before a node is skipped (passive health, as nginx's max_fails).
    #[arg(long, env = "LB_MAX_FAILS", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_fails: u32,
    /// Seconds a failing node is skipped (nginx's fail_timeout).
    #[arg(long, env = "LB_FAIL_TIMEOUT", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub fail_timeout: u64,
    /// Milliseconds between active health checks of every node (0 = off).
    #[arg(long, env = "LB_HEALTH_INTERVAL", default_value_t = 2000)]
    pub health_interval: u64,
    /// Path of the nodes' health endpoint (404 counts as healthy: no endpoint).
    #[arg(long, env = "LB_HEALTH_PATH", default_value = "/health")]
    pub health_path: String,
    /// Seconds a session may stay idle before the balancer forgets it (ping interval + timeout).
    #[arg(long, env = "LB_SESSION_TTL", default_value_t = 45, value_parser = clap::value_parser!(u64).range(1..))]
    pub session_ttl: u64,
    /// Most sessions remembered; beyond it, new sessions are refused with 503.
    #[arg(long, env = "LB_MAX_SESSIONS", default_value_t = 1_000_000)]
    pub max_sessions: usize,
    /// Name of the balancer's stickiness cookie (cookie mode).
    #[arg(long, env = "LB_COOKIE_NAME", default_value = "ioscale_node")]
    pub cookie_name: String,
    /// Milliseconds a node has to answer a request; keep it above the nodes' ping interval (a
    /// long-polling GET waits that long). Longer counts as a failure: a handshake is retried on
    /// another node, a session's request gets "Session ID unknown". Default: 25 s + 20 s + 5 s.
    #[arg(long, env = "LB_RESPONSE_TIMEOUT", default_value_t = 50_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub response_timeout: u64,
    /// Milliseconds to open a connection to a node.
    #[arg(long, env = "LB_CONNECT_TIMEOUT", default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..))]
    pub connect_timeout: u64,
    /// Milliseconds an idle pooled connection to a node is kept; keep it under half the nodes'
    /// --header-read-timeout, which closes idle connections (and counts never-used ones).
    #[arg(long, env = "LB_POOL_IDLE_TIMEOUT", default_value_t = 4000, value_parser = clap::value_parser!(u64).range(1..))]
    pub pool_idle_timeout: u64,
}

#[derive(Debug, Args)]
pub struct LbOptions {
    /// Public TCP port (0 picks a free one).
    #[arg(help_heading = "Network", long, env = "PORT", default_value_t = 8080)]
    pub port: u16,
    /// Address to bind.
    #[arg(
        help_heading = "Network",
        long,
        env = "HOST",
        default_value = "0.0.0.0"
    )]
    pub host: std::net::IpAddr,
    /// A node, `host:port`; repeat for each (or a comma list in BACKENDS).
    #[arg(help_heading = "Balancer", long = "backend", env = "BACKENDS", value_delimiter = ',', required = true, value_parser = backend)]
    pub backends: Vec<String>,
    /// Serve the balancer's /health and /metrics on this port.
    #[arg(help_heading = "Operations", long, env = "OPS_PORT")]
    pub ops_port: Option<u16>,
    #[command(flatten)]
    pub balancer: BalancerOptions,
    #[command(flatten)]
    pub log: LogOptions,
    #[command(flatten)]
    pub tls: TlsOptions,
}

#[derive(Debug, Args)]
pub struct ClusterOptions {
    /// Number of worker nodes.
    #[arg(help_heading = "Cluster", long, env = "WORKERS", default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub workers: u16,
    /// Public TCP port of the balancer (0 picks a free one).
    #[arg(help_heading = "Network", long, env = "PORT", default_value_t = 3000)]
    pub port: u16,
    /// Address to bind.
    #[arg(
        help_heading = "Network",
        long,
        env = "HOST",
        default_value = "0.0.0.0"
    )]
    pub host: std::net::IpAddr,
    /// Redis URL shared by the workers (required: without it they would not see each other).
    /// With `--redis-mode sharded`: the Redis Cluster's seed nodes (repeat, or a comma list).
    #[arg(help_heading = "Redis cluster", long, env = "REDIS_URL", value_parser = redis_url, value_delimiter = ',')]
    pub redis_url: Vec<String>,
    #[command(flatten)]
    pub redis_mode: RedisModeOptions,
    /// Seconds to wait for Redis at startup before refusing to start.
    #[arg(help_heading = "Redis cluster", long, env = "REDIS_WAIT", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub redis_wait: u64,
    /// Seconds a graceful shutdown may take (each worker's --shutdown-timeout).
    #[arg(help_heading = "Operations", long, env = "SHUTDOWN_TIMEOUT", default_value_t = 10, value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub shutdown_timeout: u64,
    /// Serve the cluster's /health, /ready, /metrics (balancer and every worker), /workers
    /// and /stats on this port.
    #[arg(help_heading = "Operations", long, env = "OPS_PORT")]
    pub ops_port: Option<u16>,
    #[command(flatten)]
    pub balancer: BalancerOptions,
    #[command(flatten)]
    pub log: LogOptions,
    #[command(flatten)]
    pub tls: TlsOptions,
    /// Options of `ioscale serve` given to every worker (after `--`; the workers read
    /// neither the environment nor `.env`).
    #[arg(last = true, value_name = "WORKER OPTIONS")]
    pub worker_args: Vec<String>,
}

/// Which Redis adapter a node uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum RedisMode {
    // One Redis server (or a primary with replicas behind Sentinel): Node's `createAdapter`.
    #[default]
    Classic,
    // A Redis Cluster with sharded pub/sub (Redis 7+): Node's `createShardedAdapter`.
    Sharded,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "Redis cluster")]
pub struct RedisModeOptions {
    /// Redis adapter: `classic` (one Redis) or `sharded` (Redis Cluster, sharded pub/sub).
    #[arg(long, env = "REDIS_MODE", value_enum, default_value_t = RedisMode::Classic)]
    pub redis_mode: RedisMode,
    /// Sharded adapter only: `static`, `dynamic` or `dynamic-private` (Node's
    /// `subscriptionMode`; every node of a cluster must use the same).
    #[arg(long, env = "REDIS_SUBSCRIPTION_MODE", default_value = "dynamic")]
    pub redis_subscription_mode: SubscriptionMode,
}

impl RedisModeOptions {
    /// The same options as command-line arguments (for the workers of `ioscale cluster`).
    pub fn to_args(&self) -> Vec<String> {
        let mode = match self.redis_mode {
            RedisMode::Classic => "classic",
            RedisMode::Sharded => "sharded",
        };
        let subscription = match self.redis_subscription_mode {
            SubscriptionMode::Static => "static",
            SubscriptionMode::Dynamic => "dynamic",
            SubscriptionMode::DynamicPrivate => "dynamic-private",
        };
        [
            "--redis-mode",
            mode,
            "--redis-subscription-mode",
            subscription,
        ]
        .map(String::from)
        .to_vec()
    }
}

#[derive(Debug, Args)]
pub struct ServeOptions {
    /// TCP port to listen on (0 picks a free one).
    #[arg(help_heading = "Network", long, env = "PORT", default_value_t = 3000)]
    pub port: u16,
    /// Address to bind.
    #[arg(
        help_heading = "Network",
        long,
        env = "HOST",
        default_value = "0.0.0.0"
    )]
    pub host: std::net::IpAddr,
    /// This node's id in logs, `server-info` and cluster stats [default: server-PID].
    #[arg(help_heading = "Network", long, env = "SERVER_ID", value_parser = non_empty)]
    pub server_id: Option<String>,
    /// Redis URL for the cluster adapter; without it the node runs alone (in-memory adapter).
    /// With `--redis-mode sharded`: the Redis Cluster's seed nodes (repeat, or a comma list).
    #[arg(help_heading = "Redis cluster", long, env = "REDIS_URL", value_parser = redis_url, value_delimiter = ',')]
    pub redis_url: Vec<String>,
    #[command(flatten)]
    pub redis_mode: RedisModeOptions,
    /// Allowed origins, comma separated; `*` allows any. Unset: same origin only.
    #[arg(help_heading = "Network", long, env = "ALLOWED_ORIGINS")]
    pub allowed_origins: Option<String>,
    /// Milliseconds between server pings.
    #[arg(help_heading = "Protocol", long, env = "PING_INTERVAL", default_value_t = 25_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub ping_interval: u64,
    /// Milliseconds a client has to answer a ping.
    #[arg(help_heading = "Protocol", long, env = "PING_TIMEOUT", default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub ping_timeout: u64,
    /// Largest accepted message or polling body, in bytes.
    #[arg(help_heading = "Protocol", long, env = "MAX_HTTP_BUFFER_SIZE", default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..=(1 << 30)))]
    pub max_http_buffer_size: u64,
    /// Milliseconds a new connection has to join a namespace.
    #[arg(help_heading = "Protocol", long, env = "CONNECT_TIMEOUT", default_value_t = 45_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub connect_timeout: u64,
    /// Connection state recovery: milliseconds a disconnected client's session (and the
    /// packets it may miss) are kept; 0 turns it off. On by default, unlike Node. One node
    /// only for now: off with --redis-url.
    #[arg(
        help_heading = "Protocol",
        long,
        env = "CONNECTION_STATE_RECOVERY",
        default_value_t = 120_000
    )]
    pub connection_state_recovery: u64,
    /// Socket.IO request path.
    #[arg(help_heading = "Network", long, env = "SOCKETIO_PATH", default_value = "/socket.io/", value_parser = request_path)]
    pub path: String,
    /// Allowed transports, comma separated: polling, websocket.
    #[arg(help_heading = "Network", long, env = "TRANSPORTS", default_value = "polling,websocket", value_parser = transports)]
    pub transports: Transports,
    /// Set the `io` cookie on handshakes (for cookie-based sticky sessions).
    #[arg(help_heading = "Network", long, env = "COOKIE")]
    pub cookie: bool,
    /// Bound of each client's outbound queue in bytes; a client past it is disconnected.
    #[arg(help_heading = "Limits", long, env = "MAX_BUFFERED_BYTES", default_value_t = 4 << 20, value_parser = clap::value_parser!(u64).range(1024..))]
    pub max_buffered_bytes: u64,
    /// Channel prefix of the Redis adapter (`key` in Node's adapter).
    #[arg(help_heading = "Redis cluster", long, env = "REDIS_KEY_PREFIX", default_value = "socket.io", value_parser = non_empty)]
    pub redis_key_prefix: String,
    /// Milliseconds cluster requests (fetch sockets, all rooms, server-side acks) wait.
    #[arg(help_heading = "Redis cluster", long, env = "REDIS_REQUESTS_TIMEOUT", default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..))]
    pub redis_requests_timeout: u64,
    /// Answer cluster requests on the requester's own response channel
    /// (`publishOnSpecificResponseChannel`).
    #[arg(
        help_heading = "Redis cluster",
        long,
        env = "REDIS_SPECIFIC_RESPONSE_CHANNEL"
    )]
    pub redis_specific_response_channel: bool,
    /// Serve /health, /ready, /metrics and /stats on this port instead of the main one.
    #[arg(help_heading = "Operations", long, env = "OPS_PORT")]
    pub ops_port: Option<u16>,
    /// Seconds a graceful shutdown may take before the process exits anyway.
    #[arg(help_heading = "Operations", long, env = "SHUTDOWN_TIMEOUT", default_value_t = 10, value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub shutdown_timeout: u64,
    /// Seconds between stats log lines (0 turns them off).
    #[arg(
        help_heading = "Operations",
        long,
        env = "STATS_INTERVAL",
        default_value_t = 30
    )]
    pub stats_interval: u64,
    #[command(flatten)]
    pub log: LogOptions,
    #[command(flatten)]
    pub limits: LimitOptions,
    #[command(flatten)]
    pub auth: AuthOptions,
    #[command(flatten)]
    pub tls: TlsOptions,
    /// Bytes of cluster messages waiting to be handled before new ones are dropped (counted
    /// in ioscale_cluster_messages_lost_total{reason="lagged"}).
    #[arg(long, env = "REDIS_SUBSCRIBER_QUEUE_BYTES", default_value_t = ioscale::adapter::redis::DEFAULT_SUBSCRIBER_QUEUE_BYTES as u64, value_parser = clap::value_parser!(u64).range(1024..=(1 << 40)))]
    pub redis_subscriber_queue_bytes: u64,
}

/// JWT authentication of connections (off unless a secret or a public key is given).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Auth")]
pub struct AuthOptions {
    /// Verify `auth.token` as an HS256 JWT with this shared secret.
    #[arg(
        long,
        env = "AUTH_JWT_SECRET",
        conflicts_with = "auth_jwt_public_key",
        hide_env_values = true
    )]
    pub auth_jwt_secret: Option<String>,
    /// Verify `auth.token` as an RS256/ES256 JWT with this public key (PEM or JWKS file).
    #[arg(long, env = "AUTH_JWT_PUBLIC_KEY", value_parser = public_key_file)]
    pub auth_jwt_public_key: Option<PublicKeyFile>,
    /// Required `iss` claim.
    #[arg(long, env = "AUTH_JWT_ISSUER")]
    pub auth_jwt_issuer: Option<String>,
    /// Required `aud` claim.
    #[arg(long, env = "AUTH_JWT_AUDIENCE")]
    pub auth_jwt_audience: Option<String>,
}

/// A public key file, read and checked when the options are parsed.
#[derive(Clone)]
pub struct PublicKeyFile(ioscale::auth::JwtVerifier);

impl std::fmt::Debug for PublicKeyFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PublicKeyFile")
    }
}

fn public_key_file(path: &str) -> Result<PublicKeyFile, String> {
    let contents = std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    ioscale::auth::JwtVerifier::public_key(&contents)
        .map(PublicKeyFile)
        .map_err(|e| format!("{path}: {e}"))
}

impl AuthOptions {
    /// The verifier these options describe, if any.
    pub fn verifier(&self) -> Option<ioscale::auth::JwtVerifier> {
        let mut verifier = match (&self.auth_jwt_secret, &self.auth_jwt_public_key) {
            (Some(secret), _) => ioscale::auth::JwtVerifier::hs256(secret.as_bytes()),
            (None, Some(PublicKeyFile(verifier))) => verifier.clone(),
            (None, None) => return None,
        };
        if let Some(issuer) = &self.auth_jwt_issuer {
            verifier = verifier.issuer(issuer.clone());
        }
        if let Some(audience) = &self.auth_jwt_audience {
            verifier = verifier.audience(audience.clone());
        }
        Some(verifier)
    }
}

/// Limits a public endpoint needs (each refusal is counted in
/// `ioscale_limit_rejections_total{limit}` and logged).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Limits")]
pub struct LimitOptions {
    /// Most open connections on this node (handshakes beyond get 503) [default: unlimited].
    #[arg(long, env = "MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Most open connections from one client IP (beyond: 429) [default: unlimited].
    #[arg(long, env = "MAX_CONNECTIONS_PER_IP")]
    pub max_connections_per_ip: Option<usize>,
    /// Longest request target (path and query) in bytes; longer gets 414.
    #[arg(long, env = "MAX_URL_LENGTH", default_value_t = 8192)]
    pub max_url_length: usize,
    /// Most bytes of request headers (hyper's read buffer); more closes the connection.
    #[arg(long, env = "MAX_HEADER_BYTES", default_value_t = 65_536, value_parser = clap::value_parser!(u64).range(8192..=16_777_216))]
    pub max_header_bytes: u64,
    /// Milliseconds a client has to send a request's headers (slowloris protection).
    #[arg(long, env = "HEADER_READ_TIMEOUT", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub header_read_timeout: u64,
    /// Namespaces one connection may join.
    #[arg(long, env = "MAX_NAMESPACES_PER_CONNECTION", default_value_t = 64)]
    pub max_namespaces_per_connection: usize,
    /// Rooms one socket may be in (its own room included).
    #[arg(long, env = "MAX_ROOMS_PER_SOCKET", default_value_t = 10_000)]
    pub max_rooms_per_socket: usize,
    /// Acks the server may wait for on one socket.
    #[arg(long, env = "MAX_PENDING_ACKS", default_value_t = 1024)]
    pub max_pending_acks: usize,
    /// Events per second one socket may send (token bucket); past it the socket gets an
    /// `error` event and is disconnected [default: unlimited].
    #[arg(long, env = "EVENT_RATE")]
    pub event_rate: Option<f64>,
    /// Burst size of --event-rate.
    #[arg(long, env = "EVENT_BURST", default_value_t = 100.0)]
    pub event_burst: f64,
}

impl LimitOptions {
    /// The HTTP layer's limits, serving TLS when the options give a certificate.
    pub fn http(&self, tls: &TlsOptions) -> anyhow::Result<HttpLimits> {
        Ok(HttpLimits {
            header_read_timeout: Duration::from_millis(self.header_read_timeout),
            max_header_bytes: self.max_header_bytes as usize,
            tls: tls.acceptor()?,
            metrics: Default::default(),
        })
    }
}

/// TLS on the public listener (rustls), for deployments without a terminating proxy.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "TLS")]
pub struct TlsOptions {
    /// PEM certificate chain; with --tls-key the listener speaks HTTPS/WSS.
    #[arg(long, env = "TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<String>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<String>,
}

impl TlsOptions {
    pub fn acceptor(&self) -> anyhow::Result<Option<tokio_rustls::TlsAcceptor>> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Ok(Some(ioscale::http::tls_acceptor(cert, key)?)),
            _ => Ok(None),
        }
    }

    /// `Err((option, reason))` when a file cannot be read, holds no PEM certificate or key,
    /// or the key does not belong to the certificate.
    fn check(&self) -> Result<(), (&'static str, String)> {
        use tokio_rustls::rustls::pki_types::pem::PemObject;
        use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(());
        };
        let read = |path: &str| std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"));
        let chain = read(cert)
            .and_then(|pem| {
                CertificateDer::pem_slice_iter(&pem)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| format!("{cert}: {e}"))
            })
            .map_err(|e| ("--tls-cert", e))?;
        if chain.is_empty() {
            return Err(("--tls-cert", format!("no PEM certificate in {cert}")));
        }
        read(key)
            .and_then(|pem| PrivateKeyDer::from_pem_slice(&pem).map_err(|e| format!("{key}: {e}")))
            .map_err(|e| ("--tls-key", e))?;
        ioscale::http::tls_acceptor(cert, key)
            .map(drop)
            .map_err(|e| ("--tls-key", format!("{e} (is it the key of --tls-cert?)")))
    }
}

/// Logging options (levels come from `RUST_LOG`).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Logging")]
pub struct LogOptions {
    /// Log line format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

impl ServeOptions {
    pub fn server_id(&self) -> String {
        self.server_id
            .clone()
            .unwrap_or_else(|| format!("server-{}", std::process::id()))
    }

    /// Connects to Redis as configured (in the background); `None` without `--redis-url`.
    pub fn redis_link(&self) -> anyhow::Result<Option<std::sync::Arc<ClusterNode>>> {
        if self.redis_url.is_empty() {
            return Ok(None);
        }
        let requests_timeout = Duration::from_millis(self.redis_requests_timeout);
        let link = match self.redis_mode.redis_mode {
            RedisMode::Classic => {
                let [url] = self.redis_url.as_slice() else {
                    anyhow::bail!(
                        "--redis-mode classic takes one --redis-url (several are seed nodes of a Redis Cluster: use --redis-mode sharded)"
                    );
                };
                let mut config = RedisConfig::new(url.clone());
                config.key_prefix = self.redis_key_prefix.clone();
                config.requests_timeout = requests_timeout;
                config.publish_on_specific_response_channel = self.redis_specific_response_channel;
                config.subscriber_queue_bytes = self.redis_subscriber_queue_bytes as usize;
                ClassicRedis::connect(config)?
            }
            RedisMode::Sharded => {
                let mut config = ShardedConfig::new(self.redis_url.clone());
                config.key_prefix = self.redis_key_prefix.clone();
                config.requests_timeout = requests_timeout;
                config.subscription_mode = self.redis_mode.redis_subscription_mode;
                config.subscriber_queue_bytes = self.redis_subscriber_queue_bytes as usize;
                ShardedRedis::connect(config)?
            }
        };
        Ok(Some(link))
    }

    /// The library's configs are `#[non_exhaustive]`: built from their defaults, field by field.
    pub fn io_config(&self) -> IoConfig {
        let mut engine = EngineConfig::default();
        engine.path = self.path.clone();
        engine.ping_interval = Duration::from_millis(self.ping_interval);
        engine.ping_timeout = Duration::from_millis(self.ping_timeout);
        engine.max_payload = self.max_http_buffer_size as usize;
        engine.max_buffered_bytes = self.max_buffered_bytes as usize;
        engine.transports = self.transports;
        engine.cookie = self.cookie;
        engine.allowed_origins = allowed_origins(self.allowed_origins.as_deref());
        engine.max_connections = self.limits.max_connections;
        engine.max_connections_per_ip = self.limits.max_connections_per_ip;
        engine.max_url_length = self.limits.max_url_length;
        let mut limits = SocketLimits::default();
        limits.namespaces_per_connection = self.limits.max_namespaces_per_connection;
        limits.rooms_per_socket = self.limits.max_rooms_per_socket;
        limits.pending_acks = self.limits.max_pending_acks;
        limits.event_rate = self.limits.event_rate;
        limits.event_burst = self.limits.event_burst;
        let mut config = IoConfig::default();
        config.engine = engine;
        config.connect_timeout = Duration::from_millis(self.connect_timeout);
        // One node only for now: broadcasts from other nodes would not be in the log.
        if self.connection_state_recovery > 0 && self.redis_url.is_empty() {
            let mut recovery = RecoveryConfig::default();
            recovery.max_disconnection_duration =
                Duration::from_millis(self.connection_state_recovery);
            config.connection_state_recovery = Some(recovery);
        }
        config.limits = limits;
        config
    }
}

fn allowed_origins(value: Option<&str>) -> AllowedOrigins {
    match value.map(str::trim) {
        None | Some("") => AllowedOrigins::SameOrigin,
        Some("*") => AllowedOrigins::Any,
        Some(list) => AllowedOrigins::List(
            list.split(',')
                .map(|origin| origin.trim().trim_end_matches('/').to_owned())
                .filter(|origin| !origin.is_empty())
                .collect(),
        ),
    }
}

fn non_empty(value: &str) -> Result<String, String> {
    if value.trim().is_empty() {
        Err("must not be empty".into())
    } else {
        Ok(value.to_owned())
    }
}

fn redis_url(value: &str) -> Result<String, String> {
    if value.starts_with("redis://") || value.starts_with("rediss://") {
        Ok(value.to_owned())
    } else {
        Err("expected redis://host:port or rediss://host:port".into())
    }
}

fn request_path(value: &str) -> Result<String, String> {
    if !value.starts_with('/') || value.contains(['?', '#', ' ']) {
        return Err("expected an absolute path such as /socket.io/".into());
    }
    Ok(if value.ends_with('/') {
        value.to_owned()
    } else {
        format!("{value}/")
    })
}

fn backend(value: &str) -> Result<String, String> {
    let value = value.trim();
    match value.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
            Ok(value.to_owned())
        }
        _ => Err("expected host:port".into()),
    }
}

fn transports(value: &str) -> Result<Transports, String> {
    let mut transports = Transports {
        polling: false,
        websocket: false,
    };
    for name in value.split(',').map(str::trim) {
        match name {
            "polling" => transports.polling = true,
            "websocket" => transports.websocket = true,
            other => {
                return Err(format!(
                    "unknown transport {other:?} (expected polling, websocket)"
                ));
            }
        }
    }
    Ok(transports)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_transports_and_paths() {
        assert_eq!(
            transports("websocket"),
            Ok(Transports {
                polling: false,
                websocket: true
            })
        );
        assert!(transports("carrier-pigeon").is_err());
        assert_eq!(request_path("/io"), Ok("/io/".to_owned()));
        assert!(request_path("io").is_err());
    }

    #[test]
    fn parses_origins() {
        assert_eq!(allowed_origins(None), AllowedOrigins::SameOrigin);
        assert_eq!(allowed_origins(Some("*")), AllowedOrigins::Any);
        assert_eq!(
            allowed_origins(Some("http://a.example/, http://b.example")),
            AllowedOrigins::List(vec!["http://a.example".into(), "http://b.example".into()])
        );
    }
}
