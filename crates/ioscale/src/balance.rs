//! How the sticky balancer (`ioscale lb`) reads what peers send: the session id in the
//! query, its own cookie, WebSocket upgrades, a client's close packet, the sid of a node's
//! handshake answer, and the request it passes on (`X-Forwarded-For`, the node's URI).
//! Pure functions over peer-controlled bytes, in the library so that `fuzz/` reaches them.

use std::net::IpAddr;

use http::Uri;
use http::header::{self, HeaderMap, HeaderValue};

/// A query parameter's raw value (not percent-decoded: session ids are url-safe).
pub fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then_some(value)
    })
}

/// Whether `path` is the Socket.IO path `prefix` (`/socket.io/`), with or without its slash.
pub fn is_socketio_path(path: &str, prefix: &str) -> bool {
    path == prefix || path == prefix.trim_end_matches('/')
}

/// The session id of a request on the Socket.IO path: its `sid` query parameter.
pub fn session_id<'a>(uri: &'a Uri, prefix: &str) -> Option<&'a str> {
    if !is_socketio_path(uri.path(), prefix) {
        return None;
    }
    query_param(uri.query().unwrap_or(""), "sid")
}

/// The node index in the balancer's cookie `name`, when it is one of `nodes`.
pub fn cookie_node(headers: &HeaderMap, name: &str, nodes: usize) -> Option<usize> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .and_then(|(_, value)| value.parse::<usize>().ok())
        .filter(|index| *index < nodes)
}

/// Whether the request asks for a WebSocket upgrade.
pub fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.eq_ignore_ascii_case("websocket"))
}

/// Whether the request declares a body of at most `max` bytes (small enough to read whole).
pub fn content_length_at_most(headers: &HeaderMap, max: usize) -> bool {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<usize>().ok())
        .is_some_and(|length| length <= max)
}

/// Whether an Engine.IO polling payload ends with the close packet `1`.
pub fn is_close_payload(body: &[u8]) -> bool {
    body == b"1" || body.ends_with(b"\x1e1")
}

/// The sid of a node's answer to a polling handshake, an open packet `0{"sid":"...",...}`.
pub fn handshake_sid(body: &[u8]) -> Option<&str> {
    const KEY: &str = "\"sid\":\"";
    let text = std::str::from_utf8(body).ok()?;
    let start = text.find(KEY)? + KEY.len();
    let end = start + text[start..].find('"')?;
    Some(&text[start..end])
}

/// The `pingInterval` (ms) of a node's answer to a polling handshake, an open packet.
pub fn handshake_ping_interval(body: &[u8]) -> Option<u64> {
    const KEY: &str = "\"pingInterval\":";
    let text = std::str::from_utf8(body).ok()?;
    let start = text.find(KEY)? + KEY.len();
    let digits = text[start..].trim_start();
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    digits[..end].parse().ok()
}

/// The `X-Forwarded-For` to send on: the addresses the client's request already lists (all
/// its `X-Forwarded-For` lines, joined as the header's list syntax allows), then `remote`.
/// Lines that are not visible ASCII are dropped.
pub fn forwarded_for(headers: &HeaderMap, remote: IpAddr) -> HeaderValue {
    let mut list: Vec<String> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .map(str::to_owned)
        .collect();
    list.push(remote.to_string());
    // Every part is visible ASCII (`to_str` checked it), so the joined value is valid;
    // the fallback is never taken but costs no panic path.
    HeaderValue::from_str(&list.join(", ")).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// The URI of the request on node `backend` (`host:port`): the client's path and query.
/// Built from parts, not text: a target that is not a path (`OPTIONS *`) would otherwise
/// run into the authority (`host:port*`), and the failed connection would mark the node down.
pub fn upstream_uri(backend: &str, uri: &Uri) -> Result<Uri, http::Error> {
    let path = uri.path_and_query().map_or("/", |pq| pq.as_str());
    Uri::builder()
        .scheme(http::uri::Scheme::HTTP)
        .authority(backend)
        .path_and_query(path)
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn reads_the_sid_of_an_open_packet() {
        let body =
            br#"0{"sid":"lv_VI97HAXpY6yYWAAAC","upgrades":["websocket"],"pingInterval":25000}"#;
        assert_eq!(handshake_sid(body), Some("lv_VI97HAXpY6yYWAAAC"));
        assert_eq!(handshake_sid(b"0{}"), None);
        assert_eq!(handshake_sid(br#"0{"sid":"unterminated"#), None);
        assert_eq!(handshake_sid(b"\xff"), None);
        assert_eq!(handshake_ping_interval(body), Some(25000));
        assert_eq!(
            handshake_ping_interval(br#"0{"pingInterval": 300}"#),
            Some(300)
        );
        assert_eq!(handshake_ping_interval(br#"0{"pingInterval":"x"}"#), None);
        assert_eq!(
            handshake_ping_interval(br#"0{"pingInterval":99999999999999999999999}"#),
            None
        );
        assert_eq!(handshake_ping_interval(b"0{}"), None);
    }

    #[test]
    fn query_parameters_and_session_ids() {
        assert_eq!(
            query_param("EIO=4&transport=polling&sid=abc", "sid"),
            Some("abc")
        );
        assert_eq!(query_param("EIO=4", "sid"), None);
        assert_eq!(query_param("sid", "sid"), Some(""));
        let uri: Uri = "/socket.io/?EIO=4&sid=abc".parse().unwrap();
        assert_eq!(session_id(&uri, "/socket.io/"), Some("abc"));
        let uri: Uri = "/socket.io?sid=abc".parse().unwrap();
        assert_eq!(session_id(&uri, "/socket.io/"), Some("abc"));
        let uri: Uri = "/other/?sid=abc".parse().unwrap();
        assert_eq!(session_id(&uri, "/socket.io/"), None);
    }

    #[test]
    fn cookie_names_a_known_node_only() {
        let cookies = headers(&[("cookie", "io=x; ioscale_node=2"), ("cookie", "a=b")]);
        assert_eq!(cookie_node(&cookies, "ioscale_node", 3), Some(2));
        assert_eq!(cookie_node(&cookies, "ioscale_node", 2), None);
        assert_eq!(cookie_node(&cookies, "io", 3), None);
        let cookies = headers(&[("cookie", "ioscale_node=-1; ioscale_node=1")]);
        assert_eq!(cookie_node(&cookies, "ioscale_node", 3), None);
    }

    #[test]
    fn upgrades_and_small_bodies() {
        assert!(is_websocket_upgrade(&headers(&[("upgrade", "WebSocket")])));
        assert!(!is_websocket_upgrade(&headers(&[("upgrade", "h2c")])));
        assert!(content_length_at_most(
            &headers(&[("content-length", "1")]),
            16
        ));
        assert!(!content_length_at_most(
            &headers(&[("content-length", "17")]),
            16
        ));
        assert!(!content_length_at_most(&headers(&[]), 16));
        assert!(is_close_payload(b"1"));
        assert!(is_close_payload(b"4x\x1e1"));
        assert!(!is_close_payload(b"41"));
    }

    #[test]
    fn forwarded_for_appends_the_client_to_every_listed_address() {
        let remote: IpAddr = "10.0.0.9".parse().unwrap();
        assert_eq!(forwarded_for(&headers(&[]), remote), "10.0.0.9");
        let listed = headers(&[
            ("x-forwarded-for", "1.1.1.1, 2.2.2.2"),
            ("x-forwarded-for", "3.3.3.3"),
        ]);
        assert_eq!(
            forwarded_for(&listed, remote),
            "1.1.1.1, 2.2.2.2, 3.3.3.3, 10.0.0.9"
        );
        let mut opaque = HeaderMap::new();
        opaque.insert("x-forwarded-for", HeaderValue::from_bytes(b"\xff").unwrap());
        assert_eq!(forwarded_for(&opaque, remote), "10.0.0.9");
    }

    #[test]
    fn upstream_uri_keeps_the_node_as_authority() {
        let uri: Uri = "/socket.io/?EIO=4&transport=polling".parse().unwrap();
        let upstream = upstream_uri("127.0.0.1:3001", &uri).unwrap();
        assert_eq!(
            upstream.to_string(),
            "http://127.0.0.1:3001/socket.io/?EIO=4&transport=polling"
        );
        let absolute: Uri = "http://evil.example/x?y".parse().unwrap();
        let upstream = upstream_uri("127.0.0.1:3001", &absolute).unwrap();
        assert_eq!(upstream.authority().unwrap(), "127.0.0.1:3001");
        assert_eq!(upstream.path(), "/x");
        let asterisk: Uri = "*".parse().unwrap();
        let upstream = upstream_uri("127.0.0.1:3001", &asterisk).unwrap();
        assert_eq!(upstream.authority().unwrap(), "127.0.0.1:3001");
        assert_eq!(upstream.path_and_query().unwrap(), "*");
    }
}
