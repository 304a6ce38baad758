//! Attributes the heap of idle connections: a counting allocator keeps the number of live
//! blocks per size class, and each SIGUSR1 prints what changed since the previous one,
//! divided by the change in open connections. Used for the memory section of
//! `docs/benchmarks.md`:
//!
//! ```sh
//! cargo run --release -p ioscale-examples --bin heap_census -- --port 3000 &
//! kill -USR1 $!                                    # baseline
//! ioscale bench --url http://127.0.0.1:3000 --clients 5000 --hold 30 ... &
//! kill -USR1 $!                                    # while the clients are held
//! ```
//!
//! The server is the connect path of `ioscale serve`: `server-info` on connection.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use ioscale::{Io, IoConfig};
use serde_json::json;

/// Size classes: 16-byte steps up to 4 KiB, then one class per power of two.
const FINE_LIMIT: usize = 4096;
const FINE: usize = FINE_LIMIT / 16;
const CLASSES: usize = FINE + 48;

struct Counting;

static LIVE_BLOCKS: [AtomicIsize; CLASSES] = [const { AtomicIsize::new(0) }; CLASSES];
static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);

fn class(size: usize) -> usize {
    if size <= FINE_LIMIT {
        size.div_ceil(16)
    } else {
        FINE + (usize::BITS - (size - 1).leading_zeros()) as usize
    }
}

fn class_label(class: usize) -> String {
    if class <= FINE {
        format!("{:>5}..{:<5}", (class * 16).saturating_sub(15), class * 16)
    } else {
        let high = 1usize << (class - FINE);
        format!("{:>5}..{:<5}", high / 2 + 1, high)
    }
}

fn count(size: usize, delta: isize) {
    LIVE_BLOCKS[class(size).min(CLASSES - 1)].fetch_add(delta, Ordering::Relaxed);
    LIVE_BYTES.fetch_add(delta * size as isize, Ordering::Relaxed);
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so the
// `GlobalAlloc` contract is `System`'s; the bookkeeping only touches atomics (it never
// allocates, so it cannot recurse into the allocator).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's (forwarded unchanged).
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            count(layout.size(), 1);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as `alloc`.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            count(layout.size(), 1);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with `layout` (every path above forwards).
        unsafe { System.dealloc(ptr, layout) };
        count(layout.size(), -1);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as `dealloc`; `new_size` is the caller's, forwarded unchanged.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            count(layout.size(), -1);
            count(new_size, 1);
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

struct Snapshot {
    blocks: Vec<isize>,
    bytes: isize,
    connections: usize,
    rss_kib: u64,
}

fn snapshot(io: &Io) -> Snapshot {
    let rss_kib = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4);
    Snapshot {
        blocks: LIVE_BLOCKS
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect(),
        bytes: LIVE_BYTES.load(Ordering::Relaxed),
        connections: io.connection_count(),
        rss_kib,
    }
}

fn report(before: &Snapshot, after: &Snapshot) {
    let added = after.connections as isize - before.connections as isize;
    let per = |v: isize| v as f64 / added.max(1) as f64;
    eprintln!(
        "connections {} -> {}; heap {:.0} B/connection ({} KiB total); RSS {:.0} B/connection",
        before.connections,
        after.connections,
        per(after.bytes - before.bytes),
        after.bytes / 1024,
        per((after.rss_kib as isize - before.rss_kib as isize) * 1024),
    );
    let mut rows: Vec<(usize, isize)> = (0..CLASSES)
        .map(|c| (c, after.blocks[c] - before.blocks[c]))
        .filter(|(_, d)| *d != 0)
        .collect();
    rows.sort_by_key(|(c, d)| -(d.abs() * (*c as isize)));
    eprintln!("  size class (B)   blocks/connection");
    for (c, d) in rows.into_iter().take(30) {
        eprintln!("  {}    {:>8.2}", class_label(c), per(d));
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let port: u16 = std::env::args()
        .skip_while(|a| a != "--port")
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(3000);
    let io = Io::new(IoConfig::default());
    io.of("/").on_connection(|socket| {
        let _ = socket.emit(
            "server-info",
            json!({"serverId": "census", "timestamp": "2026-01-01T00:00:00.000Z"}),
        );
    });
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    eprintln!("listening on {}", listener.local_addr()?);
    let census = io.clone();
    tokio::spawn(async move {
        let Ok(mut signals) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())
        else {
            return;
        };
        let mut previous = snapshot(&census);
        while signals.recv().await.is_some() {
            let now = snapshot(&census);
            report(&previous, &now);
            previous = now;
        }
    });
    io.serve(listener, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await;
    Ok(())
}
