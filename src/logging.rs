//! Logs through `tracing`, every line carrying this node's server id; text or JSON.

use std::fmt;
use std::io::IsTerminal;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::config::LogFormat;

/// Writes the timestamp followed by the server id, so every text line names its node.
struct TimeAndServerId(String);

impl FormatTime for TimeAndServerId {
    fn format_time(&self, writer: &mut Writer<'_>) -> fmt::Result {
        let now = humantime::format_rfc3339_millis(std::time::SystemTime::now());
        write!(writer, "{now} server_id={}", self.0)
    }
}

/// One JSON object per line: timestamp, level, server_id, target, message and fields.
struct JsonLines(String);

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _context: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut fields = FieldMap(Map::new());
        event.record(&mut fields);
        let mut line = Map::new();
        line.insert(
            "timestamp".into(),
            Value::String(
                humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
            ),
        );
        line.insert(
            "level".into(),
            Value::String(event.metadata().level().to_string()),
        );
        line.insert("server_id".into(), Value::String(self.0.clone()));
        line.insert(
            "target".into(),
            Value::String(event.metadata().target().to_owned()),
        );
        line.extend(fields.0);
        writeln!(writer, "{}", Value::Object(line))
    }
}

struct FieldMap(Map<String, Value>);

impl Visit for FieldMap {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().to_owned(), Value::String(format!("{value:?}")));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0
            .insert(field.name().to_owned(), Value::String(value.to_owned()));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
}

/// Installs the global subscriber (level from `RUST_LOG`, default `info`), on stderr.
pub fn init(server_id: &str, format: LogFormat) {
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // The Redis client's own warnings repeat every retry in Debug text; the adapter logs each
    // change of the link's state instead. `RUST_LOG=fred=...` brings them back.
    if !std::env::var("RUST_LOG").is_ok_and(|filter| filter.contains("fred"))
        && let Ok(directive) = "fred=error".parse()
    {
        filter = filter.add_directive(directive);
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder
            .with_timer(TimeAndServerId(server_id.to_owned()))
            .with_target(false)
            .with_ansi(std::env::var_os("NO_COLOR").is_none() && std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder
            .event_format(JsonLines(server_id.to_owned()))
            .try_init(),
    };
}
