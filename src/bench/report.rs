//! The result of a run: one JSON object (`--json`, read by the scripts under `bench/`), a
//! table for people, and the one-line verdict with the exit status.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{Value, json};

use super::{BenchOptions, EXIT_CONNECT_FAILED, EXIT_DELIVERY_FAILED, Shared};

/// `(RSS KiB, CPU seconds)` of a measured server, when /proc could be read.
type Usage = Option<(u64, f64)>;

/// What a finished run measured.
pub struct Run<'a> {
    pub options: &'a BenchOptions,
    pub shared: &'a Shared,
    pub connected: u64,
    pub expected: u64,
    pub connect_elapsed: Duration,
    pub broadcast_elapsed: Duration,
    /// Per `--pid`: before connecting, once connected, after the broadcast.
    pub usage: [Vec<Usage>; 3],
    pub bench_cpu_seconds: f64,
}

pub fn json(run: &Run) -> Value {
    let (options, shared) = (run.options, run.shared);
    let received = shared.received.load(Ordering::Relaxed);
    let latencies = shared.latencies.lock();
    let connect_times = shared.connect_times.lock();
    // Connections per measured server, assuming an even spread.
    let per_server = run.connected / options.pids.len().max(1) as u64;
    let [before, connected, after] = &run.usage;
    let servers: Vec<_> = options
        .pids
        .iter()
        .enumerate()
        .map(|(i, pid)| {
            let (before, connected, after) = (before[i], connected[i], after[i]);
            let per_connection_kib = match (before, connected) {
                (Some((b, _)), Some((c, _))) if per_server > 0 => {
                    Some((c as f64 - b as f64) / per_server as f64)
                }
                _ => None,
            };
            json!({
                "pid": pid,
                "rssKibBefore": before.map(|u| u.0),
                "rssKibConnected": connected.map(|u| u.0),
                "rssKibAfter": after.map(|u| u.0),
                "rssKibPerConnection": per_connection_kib,
                "cpuSecondsConnecting": before.zip(connected).map(|(b, c)| c.1 - b.1),
                "cpuSecondsBroadcast": connected.zip(after).map(|(c, a)| a.1 - c.1),
            })
        })
        .collect();
    let server_cpu_broadcast: f64 = servers
        .iter()
        .filter_map(|s| s["cpuSecondsBroadcast"].as_f64())
        .sum();
    json!({
        "clients": options.clients,
        "connected": run.connected,
        "connectFailed": shared.connect_failed.load(Ordering::Relaxed),
        "connectSeconds": run.connect_elapsed.as_secs_f64(),
        "connectRate": run.connected as f64 / run.connect_elapsed.as_secs_f64().max(1e-9),
        "connectMicros": {"p50": connect_times.value_at_quantile(0.5), "p99": connect_times.value_at_quantile(0.99), "max": connect_times.max()},
        "perServer": *shared.per_server.lock(),
        "senders": options.senders,
        "messagesPerSender": options.messages,
        "sent": shared.sent.load(Ordering::Relaxed),
        "expected": run.expected,
        "received": received,
        "lost": run.expected.saturating_sub(received),
        "duplicates": shared.duplicates.load(Ordering::Relaxed),
        "reordered": shared.reordered.load(Ordering::Relaxed),
        "disconnected": shared.disconnected.load(Ordering::Relaxed),
        "broadcastSeconds": run.broadcast_elapsed.as_secs_f64(),
        "deliveriesPerSecond": received as f64 / run.broadcast_elapsed.as_secs_f64().max(1e-9),
        "latencyMicros": {
            "p50": latencies.value_at_quantile(0.5),
            "p90": latencies.value_at_quantile(0.9),
            "p99": latencies.value_at_quantile(0.99),
            "max": latencies.max(),
        },
        "servers": servers,
        "serverCpuMicrosPerDelivery": (received > 0 && server_cpu_broadcast > 0.0).then(|| server_cpu_broadcast * 1e6 / received as f64),
        "benchCpuSeconds": run.bench_cpu_seconds,
        "firstError": *shared.first_error.lock(),
    })
}

fn u(report: &Value, key: &str) -> u64 {
    report[key].as_u64().unwrap_or(0)
}

fn f(report: &Value, key: &str) -> f64 {
    report[key].as_f64().unwrap_or(0.0)
}

/// The one-line verdict and the exit status: every client connected, and every message
/// reached every client once and in order.
pub fn verdict(report: &Value) -> (String, u8) {
    let (clients, connected) = (u(report, "clients"), u(report, "connected"));
    let error = report["firstError"]
        .as_str()
        .map_or_else(String::new, |error| format!(": {error}"));
    let (expected, received) = (u(report, "expected"), u(report, "received"));
    let (lost, duplicated, reordered) = (
        u(report, "lost"),
        u(report, "duplicates"),
        u(report, "reordered"),
    );
    let p99 = micros(report["latencyMicros"]["p99"].as_u64().unwrap_or(0));
    if connected == 0 {
        let line = format!("FAIL: no client connected (0 of {}){error}", count(clients));
        (line, EXIT_CONNECT_FAILED)
    } else if connected < clients {
        let line = format!(
            "FAIL: {} of {} clients connected, {} did not{error}",
            count(connected),
            count(clients),
            count(clients - connected)
        );
        (line, EXIT_CONNECT_FAILED)
    } else if lost + duplicated + reordered > 0 {
        let line = format!(
            "FAIL: {} of {} delivered: {} lost, {} duplicated, {} reordered, p99 {p99}",
            count(received),
            count(expected),
            count(lost),
            count(duplicated),
            count(reordered)
        );
        (line, EXIT_DELIVERY_FAILED)
    } else if expected == 0 {
        let line = format!(
            "PASS: {} of {} clients connected, no message sent",
            count(connected),
            count(clients)
        );
        (line, 0)
    } else {
        let line = format!(
            "PASS: {} of {} delivered, none lost, duplicated or reordered, p99 {p99}",
            count(received),
            count(expected)
        );
        (line, 0)
    }
}

/// The table for people (the verdict follows it).
pub fn human(report: &Value, options: &BenchOptions) -> String {
    let mut rows: Vec<(String, String)> = Vec::new();
    let mut row = |label: &str, value: String| rows.push((label.to_owned(), value));
    let (clients, connected) = (u(report, "clients"), u(report, "connected"));
    let connect_seconds = f(report, "connectSeconds");
    let times = &report["connectMicros"];
    let connect_times = if connected == 0 {
        String::new()
    } else {
        format!(
            " ({}/s); connect p50 {}, p99 {}, max {}",
            count(f(report, "connectRate").round() as u64),
            micros(times["p50"].as_u64().unwrap_or(0)),
            micros(times["p99"].as_u64().unwrap_or(0)),
            micros(times["max"].as_u64().unwrap_or(0)),
        )
    };
    row(
        "connected",
        format!(
            "{} of {} in {:.2} s{connect_times}",
            count(connected),
            count(clients),
            connect_seconds,
        ),
    );
    if let Some(per_server) = report["perServer"].as_object().filter(|m| !m.is_empty()) {
        let counts: Vec<u64> = per_server.values().filter_map(Value::as_u64).collect();
        let (min, max) = (
            counts.iter().min().copied().unwrap_or(0),
            counts.iter().max().copied().unwrap_or(0),
        );
        let mut listed: Vec<String> = per_server
            .iter()
            .take(8)
            .map(|(id, n)| format!("{id} {}", count(n.as_u64().unwrap_or(0))))
            .collect();
        if per_server.len() > 8 {
            listed.push(format!("and {} more", per_server.len() - 8));
        }
        row(
            "clients per server",
            format!(
                "{} server{}, {} to {} each: {}",
                per_server.len(),
                if per_server.len() == 1 { "" } else { "s" },
                count(min),
                count(max),
                listed.join(", ")
            ),
        );
    }
    let expected = u(report, "expected");
    row(
        "delivered",
        format!(
            "{} of {} ({} sender{} x {} message{} x {} clients) in {:.2} s",
            count(u(report, "received")),
            count(expected),
            options.senders,
            if options.senders == 1 { "" } else { "s" },
            count(options.messages as u64),
            if options.messages == 1 { "" } else { "s" },
            count(connected),
            f(report, "broadcastSeconds"),
        ),
    );
    row("lost", count(u(report, "lost")));
    row("duplicated", count(u(report, "duplicates")));
    row("reordered", count(u(report, "reordered")));
    row("disconnected", count(u(report, "disconnected")));
    row(
        "deliveries/s",
        count(f(report, "deliveriesPerSecond").round() as u64),
    );
    let latency = &report["latencyMicros"];
    let at = |q: &str| micros(latency[q].as_u64().unwrap_or(0));
    row(
        "latency",
        if u(report, "received") == 0 {
            "- (nothing delivered)".to_owned()
        } else {
            format!(
                "p50 {}, p90 {}, p99 {}, max {}",
                at("p50"),
                at("p90"),
                at("p99"),
                at("max")
            )
        },
    );
    for server in report["servers"].as_array().into_iter().flatten() {
        let kib = |key: &str| server[key].as_u64().map_or("?".to_owned(), mebibytes);
        let seconds = |key: &str| {
            server[key]
                .as_f64()
                .map_or("?".to_owned(), |s| format!("{s:.2} s"))
        };
        let per_connection = server["rssKibPerConnection"]
            .as_f64()
            .map_or_else(String::new, |k| format!(" ({k:.1} KiB per connection)"));
        row(
            &format!("server pid {}", server["pid"]),
            format!(
                "RSS {} before, {} connected{per_connection}, {} after; CPU {} connecting, {} broadcasting",
                kib("rssKibBefore"),
                kib("rssKibConnected"),
                kib("rssKibAfter"),
                seconds("cpuSecondsConnecting"),
                seconds("cpuSecondsBroadcast"),
            ),
        );
    }
    if let Some(per_delivery) = report["serverCpuMicrosPerDelivery"].as_f64() {
        row("server CPU", format!("{per_delivery:.2} µs per delivery"));
    }
    row(
        "bench CPU",
        format!("{:.2} s", f(report, "benchCpuSeconds")),
    );
    if let Some(error) = report["firstError"].as_str() {
        row("first error", error.to_owned());
    }

    let mut out = format!(
        "ioscale bench: {} {} clients on {}\n\n",
        count(clients),
        options.transport,
        options.urls.join(", ")
    );
    let width = rows.iter().map(|(label, _)| label.len()).max().unwrap_or(0);
    for (label, value) in rows {
        let _ = writeln!(out, "  {label:width$}  {value}");
    }
    out
}

/// `1234567` as `1,234,567`.
fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// A duration in microseconds, in the unit that reads best.
fn micros(us: u64) -> String {
    match us {
        0..1_000 => format!("{us} µs"),
        1_000..1_000_000 => format!("{:.1} ms", us as f64 / 1e3),
        _ => format!("{:.2} s", us as f64 / 1e6),
    }
}

fn mebibytes(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_counts_and_durations() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1_000), "1,000");
        assert_eq!(count(1_000_000), "1,000,000");
        assert_eq!(micros(850), "850 µs");
        assert_eq!(micros(12_345), "12.3 ms");
        assert_eq!(micros(2_500_000), "2.50 s");
    }

    #[test]
    fn verdicts_and_exit_statuses() {
        let base = json!({
            "clients": 1000, "connected": 1000, "expected": 1_000_000, "received": 1_000_000,
            "lost": 0, "duplicates": 0, "reordered": 0, "latencyMicros": {"p99": 12_345},
            "firstError": null,
        });
        assert_eq!(
            verdict(&base),
            (
                "PASS: 1,000,000 of 1,000,000 delivered, none lost, duplicated or reordered, p99 12.3 ms".to_owned(),
                0
            )
        );
        let mut lost = base.clone();
        lost["received"] = 999_990.into();
        lost["lost"] = 10.into();
        assert_eq!(verdict(&lost).1, EXIT_DELIVERY_FAILED);
        let mut duplicated = base.clone();
        duplicated["duplicates"] = 1.into();
        assert_eq!(verdict(&duplicated).1, EXIT_DELIVERY_FAILED);
        let mut partial = base.clone();
        partial["connected"] = 998.into();
        partial["firstError"] = "connect timed out".into();
        assert_eq!(
            verdict(&partial),
            (
                "FAIL: 998 of 1,000 clients connected, 2 did not: connect timed out".to_owned(),
                EXIT_CONNECT_FAILED
            )
        );
        let mut none = base;
        none["connected"] = 0.into();
        none["expected"] = 0.into();
        none["received"] = 0.into();
        assert_eq!(verdict(&none).1, EXIT_CONNECT_FAILED);
    }
}
