//! HTTP answers the way Engine.IO writes them: error codes, CORS headers, the `io` cookie.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::Full;

use super::config::AllowedOrigins;
use crate::metrics::Label;

pub type Body = Full<Bytes>;

/// Engine.IO's HTTP error codes (`Server.errors` in the reference server).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineError {
    /// `transport` is missing, unknown or not allowed.
    UnknownTransport = 0,
    /// `sid` names no open session.
    UnknownSid = 1,
    /// A handshake with a method other than `GET`.
    BadHandshakeMethod = 2,
    /// A request that does not fit the session: wrong transport, refused upgrade, method.
    BadRequest = 3,
    /// The origin is not allowed.
    Forbidden = 4,
    /// `EIO` is not `4`.
    UnsupportedProtocolVersion = 5,
}

/// The `code` label of `ioscale_handshake_errors_total`: the code of the error body.
impl Label for EngineError {
    const ALL: &'static [EngineError] = &[
        EngineError::UnknownTransport,
        EngineError::UnknownSid,
        EngineError::BadHandshakeMethod,
        EngineError::BadRequest,
        EngineError::Forbidden,
        EngineError::UnsupportedProtocolVersion,
    ];

    fn as_str(self) -> &'static str {
        match self {
            EngineError::UnknownTransport => "0",
            EngineError::UnknownSid => "1",
            EngineError::BadHandshakeMethod => "2",
            EngineError::BadRequest => "3",
            EngineError::Forbidden => "4",
            EngineError::UnsupportedProtocolVersion => "5",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl EngineError {
    pub(crate) fn message(self) -> &'static str {
        match self {
            EngineError::UnknownTransport => "Transport unknown",
            EngineError::UnknownSid => "Session ID unknown",
            EngineError::BadHandshakeMethod => "Bad handshake method",
            EngineError::BadRequest => "Bad request",
            EngineError::Forbidden => "Forbidden",
            EngineError::UnsupportedProtocolVersion => "Unsupported protocol version",
        }
    }

    /// A refused WebSocket upgrade: `400`, `text/html`, the bare message.
    pub(crate) fn upgrade_response(self) -> Response<Body> {
        let mut response = Response::new(Full::new(Bytes::from_static(self.message().as_bytes())));
        *response.status_mut() = StatusCode::BAD_REQUEST;
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
        response
    }

    pub(crate) fn response(self, cors: &Cors) -> Response<Body> {
        let status = if self == EngineError::Forbidden {
            StatusCode::FORBIDDEN
        } else {
            StatusCode::BAD_REQUEST
        };
        let body = format!(
            "{{\"code\":{},\"message\":\"{}\"}}",
            self as u8,
            self.message()
        );
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        cors.apply(response.headers_mut());
        response
    }
}

/// A bare status answer with an empty body (overlapping polls, oversized bodies).
pub fn status_response(status: StatusCode, cors: &Cors) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    cors.apply(response.headers_mut());
    response
}

pub fn text_response(
    body: impl Into<Bytes>,
    content_type: &'static str,
    cors: &Cors,
) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    cors.apply(response.headers_mut());
    response
}

/// The CORS headers for one request, decided from its `Origin`.
#[derive(Debug, Default)]
pub enum Cors {
    /// No `Origin`, or not allowed: no CORS headers.
    #[default]
    None,
    /// `Access-Control-Allow-Origin: *`.
    Any,
    /// Echo this origin, with credentials.
    Origin(HeaderValue),
}

impl Cors {
    pub fn apply(&self, headers: &mut HeaderMap) {
        match self {
            Cors::None => {}
            Cors::Any => {
                headers.insert(
                    header::ACCESS_CONTROL_ALLOW_ORIGIN,
                    HeaderValue::from_static("*"),
                );
            }
            Cors::Origin(origin) => {
                headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
                headers.insert(
                    header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                    HeaderValue::from_static("true"),
                );
                headers.insert(header::VARY, HeaderValue::from_static("Origin"));
            }
        }
    }
}

/// Decides whether a request's origin is allowed. `Err` means forbidden.
pub fn check_origin(allowed: &AllowedOrigins, headers: &HeaderMap) -> Result<Cors, ()> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        // Non-browser clients send no Origin; CORS does not apply to them.
        return Ok(Cors::None);
    };
    match allowed {
        AllowedOrigins::Any => Ok(Cors::Any),
        AllowedOrigins::List(list) => {
            let origin_text = origin.to_str().map_err(|_| ())?;
            if list.iter().any(|allowed| allowed == origin_text) {
                Ok(Cors::Origin(origin.clone()))
            } else {
                Err(())
            }
        }
        AllowedOrigins::SameOrigin => {
            let origin_text = origin.to_str().map_err(|_| ())?;
            let origin_host = origin_text
                .split_once("://")
                .map(|(_, rest)| rest)
                .unwrap_or(origin_text);
            let host = headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("");
            if !host.is_empty() && origin_host.eq_ignore_ascii_case(host) {
                Ok(Cors::None)
            } else {
                Err(())
            }
        }
    }
}

/// Answer to a CORS preflight (`OPTIONS`).
pub fn preflight_response(cors: &Cors, request_headers: &HeaderMap) -> Response<Body> {
    let mut response = status_response(StatusCode::NO_CONTENT, cors);
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET,HEAD,PUT,PATCH,POST,DELETE"),
    );
    if let Some(requested) = request_headers.get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, requested.clone());
        headers.append(
            header::VARY,
            HeaderValue::from_static("Access-Control-Request-Headers"),
        );
    }
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    response
}

/// Reads one query parameter (values in Engine.IO queries need no percent-decoding).
pub fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then_some(value)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_are_the_metric_labels() {
        crate::metrics::tests::check_label::<EngineError>();
        for error in EngineError::ALL {
            assert_eq!(error.as_str(), (*error as u8).to_string(), "{error:?}");
        }
        assert_eq!(EngineError::ALL.len(), 6);
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn origin_checks() {
        let list = AllowedOrigins::List(vec!["http://a.example".into()]);
        assert!(matches!(
            check_origin(&list, &headers(&[("origin", "http://a.example")])),
            Ok(Cors::Origin(_))
        ));
        assert!(check_origin(&list, &headers(&[("origin", "http://b.example")])).is_err());
        assert!(matches!(check_origin(&list, &headers(&[])), Ok(Cors::None)));
        let same = AllowedOrigins::SameOrigin;
        assert!(
            check_origin(
                &same,
                &headers(&[("origin", "http://h:3000"), ("host", "h:3000")])
            )
            .is_ok()
        );
        assert!(
            check_origin(
                &same,
                &headers(&[("origin", "http://evil"), ("host", "h:3000")])
            )
            .is_err()
        );
        assert!(matches!(
            check_origin(&AllowedOrigins::Any, &headers(&[("origin", "http://x")])),
            Ok(Cors::Any)
        ));
    }

    #[test]
    fn query_params() {
        assert_eq!(
            query_param("EIO=4&transport=polling", "transport"),
            Some("polling")
        );
        assert_eq!(query_param("EIO=4&sid", "sid"), Some(""));
        assert_eq!(query_param("EIO=4", "sid"), None);
    }

    #[test]
    fn error_bodies_match_engine_io() {
        let response = EngineError::UnknownSid.response(&Cors::None);
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let response = EngineError::Forbidden.response(&Cors::None);
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
    }
}
