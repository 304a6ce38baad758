//! Logs through `tracing`, every line carrying this node's server id.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;

/// Writes the timestamp followed by the server id, so every line names its node.
struct TimeAndServerId(String);

impl FormatTime for TimeAndServerId {
    fn format_time(&self, writer: &mut Writer<'_>) -> std::fmt::Result {
        let now = humantime::format_rfc3339_millis(std::time::SystemTime::now());
        write!(writer, "{now} server_id={}", self.0)
    }
}

/// Installs the global subscriber (level from `RUST_LOG`, default `info`).
pub fn init(server_id: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_timer(TimeAndServerId(server_id.to_owned()))
        .with_target(false)
        .with_ansi(std::env::var_os("NO_COLOR").is_none() && std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}
