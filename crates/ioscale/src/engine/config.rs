use std::time::Duration;

/// Engine.IO settings. Defaults match Socket.IO's server.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct EngineConfig {
    /// Request path the engine answers, with a trailing slash. Default `/socket.io/`.
    pub path: String,
    /// Time between server pings. Default 25 s.
    pub ping_interval: Duration,
    /// Time a client has to answer a ping. Default 20 s.
    pub ping_timeout: Duration,
    /// Time a client has to finish an upgrade after opening the WebSocket. Default 10 s.
    pub upgrade_timeout: Duration,
    /// Largest message or polling body accepted, in bytes (`maxHttpBufferSize`). Default 1e6.
    pub max_payload: usize,
    /// Bound of each session's outbound queue, in bytes. Default 4 MiB.
    pub max_buffered_bytes: usize,
    /// Allowed transports. Default both.
    pub transports: Transports,
    /// Whether the handshake sets the `io` cookie (for cookie-based stickiness). Default off.
    pub cookie: bool,
    /// Origins allowed by CORS and the origin check. Default same-origin only.
    pub allowed_origins: AllowedOrigins,
    /// Most open sessions on this server; handshakes beyond get 503. Default unlimited.
    pub max_connections: Option<usize>,
    /// Most open sessions from one client IP; handshakes beyond get 429. Default unlimited.
    pub max_connections_per_ip: Option<usize>,
    /// Longest request target (path and query) accepted; longer gets 414. Default 8 KiB.
    pub max_url_length: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            path: "/socket.io/".to_owned(),
            ping_interval: Duration::from_millis(25_000),
            ping_timeout: Duration::from_millis(20_000),
            upgrade_timeout: Duration::from_millis(10_000),
            max_payload: 1_000_000,
            max_buffered_bytes: 4 << 20,
            transports: Transports::default(),
            cookie: false,
            allowed_origins: AllowedOrigins::SameOrigin,
            max_connections: None,
            max_connections_per_ip: None,
            max_url_length: 8192,
        }
    }
}

/// The transports clients may use; at least one should be on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transports {
    /// HTTP long-polling (also what a handshake without WebSocket starts on).
    pub polling: bool,
    /// WebSocket, directly or by upgrade from polling.
    pub websocket: bool,
}

impl Default for Transports {
    fn default() -> Self {
        Transports {
            polling: true,
            websocket: true,
        }
    }
}

/// Which `Origin`s may talk to the server.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AllowedOrigins {
    /// Requests without `Origin`, or whose `Origin` host is the request's `Host`.
    SameOrigin,
    /// Any origin (`*`).
    Any,
    /// These exact origins (`scheme://host[:port]`), with credentials allowed.
    List(Vec<String>),
}
