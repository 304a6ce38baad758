//! Gives the heap that a crowd of connections left behind back to the kernel.
//!
//! Each connection's setup allocates and frees far more than it keeps (hyper's request
//! buffers, the HTTP task); glibc keeps those freed holes between the live sessions, where
//! they count in RSS: at 19,900 idle WebSockets about 0.8 KiB per connection. `malloc_trim`
//! returns every free page of every arena (3.7 ms for a 100 MB heap, during which that arena's
//! allocations wait), so it runs only once the connection count moved a lot and then settled.

use std::time::Duration;

use ioscale::Io;

/// How often the connection count is looked at.
const TICK: Duration = Duration::from_secs(5);

/// Trims after the connection count changed by at least 10% (and 1,000) since the last trim
/// and then stayed within 1% (and 100) for one tick.
pub async fn trim_after_churn(io: Io) {
    let mut ticks = tokio::time::interval(TICK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut previous = 0usize;
    let mut at_last_trim = 0usize;
    loop {
        ticks.tick().await;
        let now = io.connection_count();
        if should_trim(previous, now, at_last_trim) {
            release_free_heap();
            at_last_trim = now;
        }
        previous = now;
    }
}

fn should_trim(previous: usize, now: usize, at_last_trim: usize) -> bool {
    let settled = now.abs_diff(previous) <= (now / 100).max(100);
    let moved = now.abs_diff(at_last_trim) >= (at_last_trim / 10).max(1000);
    settled && moved
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn release_free_heap() {
    // SAFETY: `malloc_trim` takes no pointer and touches only glibc's own free lists (it
    // locks each arena while it walks it), so it is sound to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release_free_heap() {}

#[cfg(test)]
mod tests {
    use super::should_trim;

    #[test]
    fn trims_once_a_large_change_has_settled() {
        // 19,900 clients arrived and the count holds: trim.
        assert!(should_trim(19_850, 19_900, 0));
        // Still arriving: wait.
        assert!(!should_trim(12_000, 19_900, 0));
        // Small moves never trim.
        assert!(!should_trim(19_900, 19_950, 19_900));
        // A crowd left: trim.
        assert!(should_trim(1_000, 1_000, 19_900));
    }
}
