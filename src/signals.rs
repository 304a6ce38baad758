//! SIGINT and SIGTERM, counted from the start: the first starts a graceful shutdown, the
//! second aborts it. Shared by `ioscale serve` and `ioscale cluster`.

use std::future::Future;

use anyhow::Context;

pub struct Signals {
    received: tokio::sync::watch::Receiver<u32>,
}

impl Signals {
    /// Registers the handlers at once: a signal right after startup must not take the
    /// default action (killing the process without a drain).
    pub fn new() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
        let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
        let (count, received) = tokio::sync::watch::channel(0u32);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = interrupt.recv() => {}
                    _ = terminate.recv() => {}
                }
                count.send_modify(|count| *count += 1);
            }
        });
        Ok(Signals { received })
    }

    /// Resolves once `at_least` signals arrived.
    pub fn wait_for(&self, at_least: u32) -> impl Future<Output = ()> + Send + 'static {
        let mut received = self.received.clone();
        async move {
            // The counting task ends only when the runtime shuts down, after a clean
            // shutdown: a closed channel is no signal. Taking it for one made the task
            // waiting for a second signal exit 130 now and then (44 of 1500 clean exits),
            // when a worker thread polled it between the counting task's drop and its own.
            if received.wait_for(|count| *count >= at_least).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    pub fn first(&self) -> impl Future<Output = ()> + Send + 'static {
        self.wait_for(1)
    }

    pub fn second(&self) -> impl Future<Output = ()> + Send + 'static {
        self.wait_for(2)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn the_signal_channel_closing_at_exit_is_not_a_second_signal() {
        let (count, received) = tokio::sync::watch::channel(0u32);
        let signals = Signals { received };
        count.send_modify(|count| *count += 1);
        signals.first().await;
        // What the runtime's shutdown does to the counting task after a clean shutdown.
        drop(count);
        let second = tokio::time::timeout(Duration::from_millis(100), signals.second()).await;
        assert!(
            second.is_err(),
            "one signal, then the channel closed: no second signal"
        );
    }
}
