//! The HTTP layer's limits over real sockets: oversized request heads (431, or 414 past
//! hyper's own URI bound) and the header read timeout (slowloris, also during a TLS
//! handshake) close the connection and count in `Metrics::limit_rejections`; a keep-alive
//! connection idle between requests is closed by the same timer without counting.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ioscale::http::{HttpLimits, serve_http_with, tls_acceptor};
use ioscale::metrics::{Limit, Metrics};
use ioscale::{Io, IoConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

const TIMEOUT: Duration = Duration::from_millis(300);

struct Server {
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    _stop: oneshot::Sender<()>,
}

async fn start(limits: HttpLimits) -> Server {
    let io = Io::new(IoConfig::default());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let limits = HttpLimits {
        metrics: io.metrics().clone(),
        ..limits
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let metrics = io.metrics().clone();
    tokio::spawn(serve_http_with(
        listener,
        limits,
        async {
            let _ = stopped.await;
        },
        move |request, remote| {
            let io = io.clone();
            async move { io.handle(request, remote).await }
        },
    ));
    Server {
        addr,
        metrics,
        _stop: stop,
    }
}

fn limits(max_header_bytes: usize) -> HttpLimits {
    HttpLimits {
        header_read_timeout: TIMEOUT,
        max_header_bytes,
        ..Default::default()
    }
}

fn count(metrics: &Metrics, limit: Limit) -> u64 {
    metrics.limit_rejections[limit as usize].load(Ordering::Relaxed)
}

/// The server counts a refusal just after it closes the connection, so the client may see
/// the close first: wait for the counter to reach `at_least`, then give its value.
async fn counted(metrics: &Metrics, limit: Limit, at_least: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(5);
    while count(metrics, limit) < at_least && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    count(metrics, limit)
}

/// Writes `data` (the server may close before reading it all), then reads until the server
/// closes: what it answered, and how long after `since` it closed.
async fn answer(stream: &mut TcpStream, data: &[u8], since: Instant) -> (String, Duration) {
    let _ = stream.write_all(data).await;
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    // A reset after the answer (the server closed with unread bytes) also ends it.
    while let Ok(n @ 1..) = stream.read(&mut chunk).await {
        received.extend_from_slice(&chunk[..n]);
    }
    (
        String::from_utf8_lossy(&received).into_owned(),
        since.elapsed(),
    )
}

fn handshake_with(headers: &str) -> String {
    format!(
        "GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{headers}\r\n"
    )
}

fn assert_closed_by_timeout(label: &str, after: Duration) {
    assert!(
        after >= TIMEOUT - Duration::from_millis(50) && after < TIMEOUT + Duration::from_secs(3),
        "{label}: closed {after:?} after it began (timeout {TIMEOUT:?})"
    );
}

#[tokio::test]
async fn oversized_request_heads_get_431_and_are_counted() {
    let server = start(limits(16 * 1024)).await;
    let now = Instant::now();

    let small = handshake_with(&format!("X-Pad: {}\r\n", "a".repeat(12_000)));
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let (served, _) = answer(&mut stream, small.as_bytes(), now).await;
    assert!(
        served.starts_with("HTTP/1.1 200 OK\r\n"),
        "12 KB of headers: {served:.80}"
    );

    let big = handshake_with(&format!("X-Pad: {}\r\n", "a".repeat(20_000)));
    let many: String = (0..150).map(|i| format!("X-H{i}: v\r\n")).collect();
    for (label, request) in [
        ("20 KB header", big),
        ("150 headers", handshake_with(&many)),
    ] {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        let (refused, _) = answer(&mut stream, request.as_bytes(), now).await;
        assert!(
            refused.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
            "{label}: {refused:.80}"
        );
    }

    assert_eq!(counted(&server.metrics, Limit::HeaderBytes, 2).await, 2);
    assert_eq!(count(&server.metrics, Limit::HeaderReadTimeout), 0);
    assert_eq!(count(&server.metrics, Limit::UrlLength), 0);
}

#[tokio::test]
async fn a_head_just_over_the_limit_in_one_write_is_refused() {
    // hyper's buffer bound alone lets a complete head through when its last read carries
    // it past the bound: the limit must hold for a head that arrives at once.
    let server = start(limits(64 * 1024)).await;
    for pad in [66_000, 70_000, 100_000] {
        let request = handshake_with(&format!("X-Pad: {}\r\n", "a".repeat(pad)));
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        let (answered, _) = answer(&mut stream, request.as_bytes(), Instant::now()).await;
        assert!(
            answered.starts_with("HTTP/1.1 431 "),
            "{pad} bytes of headers: {answered:.80}"
        );
    }
    assert_eq!(counted(&server.metrics, Limit::HeaderBytes, 3).await, 3);
}

#[tokio::test]
async fn a_target_past_hypers_own_bound_gets_414_counted_as_url_length() {
    // With a buffer over 64 KiB, hyper refuses a target longer than 65534 bytes itself.
    let server = start(limits(128 * 1024)).await;
    let target = format!(
        "/socket.io/?EIO=4&transport=polling&pad={}",
        "u".repeat(70_000)
    );
    let request = format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let (refused, _) = answer(&mut stream, request.as_bytes(), Instant::now()).await;
    assert!(
        refused.starts_with("HTTP/1.1 414 URI Too Long\r\n"),
        "{refused:.80}"
    );
    assert_eq!(counted(&server.metrics, Limit::UrlLength, 1).await, 1);
    assert_eq!(count(&server.metrics, Limit::HeaderBytes), 0);
}

#[tokio::test]
async fn slowloris_connections_are_closed_and_counted_idle_keep_alive_is_not() {
    let server = start(limits(64 * 1024)).await;

    // A keep-alive connection served once, then quiet: closed by the timer, not a refusal.
    let mut idle = TcpStream::connect(server.addr).await.unwrap();
    let request = b"GET /elsewhere HTTP/1.1\r\nHost: x\r\n\r\n";
    let (answered, after) = answer(&mut idle, request, Instant::now()).await;
    assert!(
        answered.starts_with("HTTP/1.1 404 Not Found\r\n"),
        "{answered:.80}"
    );
    assert_closed_by_timeout("idle keep-alive", after);

    let start = "GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\n";
    let partial = async {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        answer(&mut stream, start.as_bytes(), Instant::now()).await
    };
    let silent = async {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        answer(&mut stream, b"", Instant::now()).await
    };
    // A header line every 50 ms, never the end of the headers: bytes do not reset the timer.
    let trickle = async {
        let began = Instant::now();
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        stream.write_all(start.as_bytes()).await.unwrap();
        let mut ticks = tokio::time::interval(Duration::from_millis(50));
        let (mut line, mut received) = (0, Vec::new());
        loop {
            tokio::select! {
                _ = ticks.tick() => {
                    line += 1;
                    if stream.write_all(format!("X-Slow-{line}: z\r\n").as_bytes()).await.is_err() {
                        break;
                    }
                }
                read = stream.readable() => {
                    read.unwrap();
                    let mut chunk = [0u8; 256];
                    match stream.try_read(&mut chunk) {
                        Ok(0) => break,
                        Ok(n) => received.extend_from_slice(&chunk[..n]),
                        Err(e) if e.kind() != std::io::ErrorKind::WouldBlock => break,
                        Err(_) => {}
                    }
                }
            }
        }
        (
            String::from_utf8_lossy(&received).into_owned(),
            began.elapsed(),
        )
    };
    let (partial, silent, trickle) = tokio::join!(partial, silent, trickle);
    for (label, (answered, after)) in [
        ("partial headers", partial),
        ("silent", silent),
        ("trickle", trickle),
    ] {
        assert_eq!(answered, "", "{label}: a slowloris client gets no answer");
        assert_closed_by_timeout(label, after);
    }

    // The idle connection's close came long before: it would have counted by now.
    assert_eq!(
        counted(&server.metrics, Limit::HeaderReadTimeout, 3).await,
        3
    );
    assert_eq!(count(&server.metrics, Limit::HeaderBytes), 0);
}

#[tokio::test]
async fn a_tls_handshake_past_the_timeout_is_counted() {
    let dir = std::env::temp_dir().join(format!("ioscale-http-limits-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let status = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "1", "-subj", "/CN=127.0.0.1", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl must be installed");
    assert!(status.success());
    let acceptor = tls_acceptor(cert.to_str().unwrap(), key.to_str().unwrap()).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let server = start(HttpLimits {
        tls: Some(acceptor),
        ..limits(64 * 1024)
    })
    .await;

    // The first bytes of a ClientHello record, then nothing.
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let (answered, after) = answer(&mut stream, b"\x16\x03\x01\x02\x00", Instant::now()).await;
    assert_eq!(answered, "");
    assert_closed_by_timeout("stalled TLS handshake", after);
    assert_eq!(
        counted(&server.metrics, Limit::HeaderReadTimeout, 1).await,
        1
    );
}
