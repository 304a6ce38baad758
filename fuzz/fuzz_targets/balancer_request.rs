//! Feeds arbitrary bytes to the balancer's reading of requests (`ioscale::balance`): as an
//! HTTP request head parsed the way hyper parses it (httparse), plus its body; the whole
//! input also as a node's handshake answer. Checks what the balancer relies on: a sid comes
//! from the query, a cookie names a known node, X-Forwarded-For keeps the client's list and
//! ends with the peer, and the upstream URI always names the chosen node, whatever the path.

#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use http::Uri;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use ioscale::balance::{
    content_length_at_most, cookie_node, forwarded_for, handshake_ping_interval, handshake_sid,
    is_close_payload, is_websocket_upgrade, session_id, upstream_uri,
};
use libfuzzer_sys::fuzz_target;

const PREFIX: &str = "/socket.io/";
const NODES: usize = 3;
const NODE: &str = "10.0.0.1:3000";

fuzz_target!(|input: &[u8]| {
    check_answer(input);
    let mut slots = [httparse::EMPTY_HEADER; 64];
    let mut request = httparse::Request::new(&mut slots);
    let Ok(httparse::Status::Complete(head_len)) = request.parse(input) else {
        return;
    };
    let body = &input[head_len..];
    check_answer(body);
    if is_close_payload(body) {
        assert!(body.ends_with(b"1"));
    }
    let Some(Ok(uri)) = request.path.map(Uri::try_from) else {
        return;
    };
    let mut headers = HeaderMap::new();
    for header in request.headers.iter() {
        // hyper refuses a request with an invalid header; skipping one explores more.
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(header.name.as_bytes()),
            HeaderValue::from_bytes(header.value),
        ) {
            headers.append(name, value);
        }
    }
    check_request(&uri, &headers);
});

fn check_request(uri: &Uri, headers: &HeaderMap) {
    if let Some(sid) = session_id(uri, PREFIX) {
        let query = uri.query().unwrap_or_default();
        assert!(!sid.contains('&'), "a sid is one query parameter");
        assert!(query.contains(&format!("sid={sid}")) || (sid.is_empty() && query.contains("sid")));
    }
    if let Some(node) = cookie_node(headers, "ioscale_node", NODES) {
        assert!(node < NODES);
    }
    let _ = is_websocket_upgrade(headers);
    if content_length_at_most(headers, 16) {
        let declared = headers.get("content-length").and_then(|v| v.to_str().ok());
        assert!(
            declared
                .and_then(|v| v.parse::<usize>().ok())
                .is_some_and(|n| n <= 16)
        );
    }
    for remote in [
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)),
        IpAddr::V6(Ipv6Addr::LOCALHOST),
    ] {
        let value = forwarded_for(headers, remote);
        let list = value.to_str().expect("X-Forwarded-For is visible ASCII");
        let peer = remote.to_string();
        let earlier: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        let expected = earlier
            .iter()
            .copied()
            .chain(std::iter::once(peer.as_str()))
            .collect::<Vec<_>>()
            .join(", ");
        assert_eq!(list, expected);
    }
    // Whatever the request target (absolute form, `*`, odd characters), the request goes to
    // the node the balancer chose, never to a host the client names, with the client's path.
    let upstream = upstream_uri(NODE, uri).expect("a parsed target makes an upstream URI");
    assert_eq!(upstream.scheme_str(), Some("http"));
    assert_eq!(upstream.authority().map(|a| a.as_str()), Some(NODE));
    let path = uri.path_and_query().map_or("/", |pq| pq.as_str());
    assert_eq!(upstream.path_and_query().map(|pq| pq.as_str()), Some(path));
}

fn check_answer(body: &[u8]) {
    if let Some(sid) = handshake_sid(body) {
        assert!(!sid.contains('"'));
        let text = std::str::from_utf8(body).expect("a sid comes from UTF-8");
        assert!(text.contains(&format!("\"sid\":\"{sid}\"")));
    }
    if let Some(interval) = handshake_ping_interval(body) {
        let text = std::str::from_utf8(body).expect("an interval comes from UTF-8");
        assert!(text.contains(&interval.to_string()));
    }
}
