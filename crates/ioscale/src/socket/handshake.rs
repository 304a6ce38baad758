//! Socket.IO's `socket.handshake` object, as Node builds it (and as `fetchSockets` sends
//! it to other nodes): headers, time, address, xdomain, secure, issued, url, query, auth.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

use crate::engine::RequestInfo;

/// The handshake object of a socket, field for field as socket.io 4 builds it.
pub fn to_json(request: &RequestInfo, auth: &Value) -> Value {
    let mut headers = Map::new();
    for (name, value) in request.headers() {
        let value = String::from_utf8_lossy(value).into_owned();
        headers.insert(name.to_owned(), Value::String(value));
    }
    let query: Map<String, Value> = request
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(key), Value::String(percent_decode(value)))
        })
        .collect();
    let issued_ms = request
        .issued
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let url = request.target().to_owned();
    let mut handshake = Map::new();
    handshake.insert("headers".into(), Value::Object(headers));
    handshake.insert("time".into(), Value::String(js_date_string(request.issued)));
    handshake.insert(
        "address".into(),
        Value::String(request.remote_addr.ip().to_string()),
    );
    handshake.insert(
        "xdomain".into(),
        Value::Bool(request.header("origin").is_some()),
    );
    handshake.insert("secure".into(), Value::Bool(false));
    handshake.insert("issued".into(), Value::from(issued_ms));
    handshake.insert("url".into(), Value::String(url));
    handshake.insert("query".into(), Value::Object(query));
    handshake.insert("auth".into(), auth.clone());
    Value::Object(handshake)
}

/// Decodes `%XX` escapes and `+` (query strings as Node's `querystring` reads them).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'%' if index + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[index + 1..index + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(byte) => {
                        out.push(byte);
                        index += 3;
                    }
                    None => {
                        out.push(b'%');
                        index += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                index += 1;
            }
            byte => {
                out.push(byte);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `String(new Date())` in UTC: `Sat Nov 28 2026 01:03:46 GMT+0000 (Coordinated Universal Time)`.
pub fn js_date_string(time: SystemTime) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let seconds = time
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = seconds / 86_400;
    let (year, month, day) = civil_from_days(days as i64);
    let rest = seconds % 86_400;
    format!(
        "{} {} {:02} {} {:02}:{:02}:{:02} GMT+0000 (Coordinated Universal Time)",
        DAYS[(days % 7) as usize],
        MONTHS[(month - 1) as usize],
        day,
        year,
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// Days since 1970-01-01 to (year, month 1-12, day 1-31), proleptic Gregorian.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn formats_dates_like_javascript() {
        // 1795827826 s = the spec capture's "Sat Nov 28 2026 01:03:46".
        let time = UNIX_EPOCH + Duration::from_secs(1_795_827_826);
        assert_eq!(
            js_date_string(time),
            "Sat Nov 28 2026 01:03:46 GMT+0000 (Coordinated Universal Time)"
        );
        assert_eq!(
            js_date_string(UNIX_EPOCH),
            "Thu Jan 01 1970 00:00:00 GMT+0000 (Coordinated Universal Time)"
        );
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert!(js_date_string(leap).starts_with("Tue Feb 29 2000"));
    }

    #[test]
    fn decodes_query_values() {
        assert_eq!(percent_decode("a%20b+c"), "a b c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(percent_decode("%C3%A9"), "é");
    }
}
