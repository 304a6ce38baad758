//! Timeouts that a stall of the whole process does not turn into refusals.
//!
//! After the process was stopped (a VM pause, a swap storm, SIGSTOP), the runtime's first
//! turn fires every timer that expired meanwhile before it learns which sockets became
//! readable (`epoll_wait` returns EINTR after SIGCONT, so that turn reports no readiness).
//! A plain header timer then closes connections whose request head is already in the
//! socket buffer, and the kernel resets them for the unread data. These timers, once their
//! deadline is seen passed, wait a grace more: the connection reads in between, so a
//! request that arrived is served, and a real slowloris client is cut a grace later.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::rt::{Sleep, Timer};

/// The grace for a timeout: a quarter of it, at most one second. One runtime turn is
/// enough in principle; the margin covers a turn that reports more sockets than it polls.
pub(crate) fn grace_for(timeout: Duration) -> Duration {
    (timeout / 4).min(Duration::from_secs(1))
}

/// hyper's timer (header read timeout) with a grace after each deadline.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PatientTimer {
    pub grace: Duration,
}

impl Timer for PatientTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Sleep>> {
        self.sleep_until(Instant::now() + duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Sleep>> {
        Box::pin(PatientSleep::new(deadline, self.grace))
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn Sleep>>, new_deadline: Instant) {
        match sleep.as_mut().downcast_mut_pin::<PatientSleep>() {
            Some(patient) => patient.get_mut().reset(new_deadline),
            None => *sleep = self.sleep_until(new_deadline),
        }
    }
}

/// Resolves once its deadline has been seen passed twice, a grace apart.
pub(crate) struct PatientSleep {
    sleep: Pin<Box<tokio::time::Sleep>>,
    grace: Duration,
    in_grace: bool,
}

impl PatientSleep {
    pub(crate) fn new(deadline: Instant, grace: Duration) -> Self {
        PatientSleep {
            sleep: Box::pin(tokio::time::sleep_until(deadline.into())),
            grace,
            in_grace: false,
        }
    }

    fn reset(&mut self, deadline: Instant) {
        self.in_grace = false;
        self.sleep.as_mut().reset(deadline.into());
    }
}

impl Future for PatientSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        std::task::ready!(this.sleep.as_mut().poll(cx));
        if this.in_grace {
            return Poll::Ready(());
        }
        this.in_grace = true;
        let later = tokio::time::Instant::now() + this.grace;
        this.sleep.as_mut().reset(later);
        // Registers the waker for the new deadline (ready only with a zero grace).
        this.sleep.as_mut().poll(cx)
    }
}

impl Sleep for PatientSleep {}

/// `future`'s output, or `None` if it did not finish within `timeout` (plus its grace).
// The TLS handshake uses it; the tests use it without the feature too.
#[cfg(any(feature = "tls", test))]
pub(crate) async fn timeout<F: Future>(timeout: Duration, future: F) -> Option<F::Output> {
    let sleep = PatientSleep::new(Instant::now() + timeout, grace_for(timeout));
    tokio::select! {
        // The work first: after a stall, what is ready is done before the timer counts.
        biased;
        output = future => Some(output),
        () = sleep => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_millis(150);

    #[tokio::test]
    async fn a_deadline_fires_a_grace_after_it_is_seen_passed() {
        let start = Instant::now();
        PatientSleep::new(start + Duration::from_millis(100), GRACE).await;
        assert!(start.elapsed() >= Duration::from_millis(250));
    }

    #[tokio::test]
    async fn after_a_stall_the_first_look_at_a_passed_deadline_is_not_a_timeout() {
        // The deadline passed while nobody polled, as through a stall of the process.
        let timer = PatientTimer { grace: GRACE };
        let mut sleep = timer.sleep(Duration::from_millis(10));
        std::thread::sleep(Duration::from_millis(50));
        assert!(futures_util::poll!(sleep.as_mut()).is_pending());
        let seen = Instant::now();
        sleep.as_mut().await;
        assert!(seen.elapsed() >= GRACE - Duration::from_millis(5));
        // A reset starts over, grace included.
        let reset = Instant::now();
        timer.reset(&mut sleep, reset + Duration::from_millis(50));
        sleep.await;
        assert!(reset.elapsed() >= Duration::from_millis(50) + GRACE);
    }

    #[tokio::test]
    async fn work_that_is_ready_wins_over_a_passed_deadline() {
        assert_eq!(timeout(Duration::ZERO, async { 7 }).await, Some(7));
        assert_eq!(
            timeout(Duration::from_millis(20), std::future::pending::<()>()).await,
            None
        );
    }
}
