//! `Io::serve` after its shutdown future resolved: the drain serves the known sessions over
//! new connections (a polling client opens one per request), refuses new handshakes, and
//! returns once every session ended.

mod common;

use std::time::Duration;

use common::{http, open_polling};
use ioscale::{DisconnectReason, Io};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

#[tokio::test]
async fn a_polling_client_between_polls_collects_its_queue_and_the_close_during_the_drain() {
    let io = Io::new(common::config());
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
    let addr = listener.local_addr().expect("local addr");
    let (stop, stopped) = oneshot::channel::<()>();
    let serving = io.clone();
    let server = tokio::spawn(async move {
        serving
            .serve(listener, async {
                let _ = stopped.await;
            })
            .await;
    });

    let sid = open_polling(addr).await;
    let target = format!("/socket.io/?EIO=4&transport=polling&sid={sid}");
    let posted = http(addr, "POST", &target, &[], b"40").await;
    assert_eq!((posted.status, posted.text()), (200, "ok"));
    let connected = http(addr, "GET", &target, &[], b"").await;
    assert!(connected.text().starts_with("40{"), "{}", connected.text());
    // Queued while no poll is pending, then the shutdown.
    assert_eq!(io.emit("news", "queued"), 1);
    let _ = stop.send(());
    let shutting_down = DisconnectReason::ServerShuttingDown;
    tokio::time::timeout(Duration::from_secs(5), async {
        while io.metrics().disconnects.get(shutting_down) == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the socket is disconnected by the shutdown");

    // A new handshake is refused; the known session is served, on new connections.
    let fresh = http(addr, "GET", "/socket.io/?EIO=4&transport=polling", &[], b"").await;
    assert_eq!(fresh.status, 503);
    let queued = http(addr, "GET", &target, &[], b"").await;
    assert_eq!(
        (queued.status, queued.text()),
        (200, r#"42["news","queued"]"#)
    );
    let closing = http(addr, "GET", &target, &[], b"").await;
    assert_eq!((closing.status, closing.text()), (200, "6\u{1e}1"));
    // Every session ended: serve returns.
    tokio::time::timeout(Duration::from_secs(2), server)
        .await
        .expect("serve returns once drained")
        .expect("serve task");
}
