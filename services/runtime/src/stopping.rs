//! The signal every part of a service waits on to stop: readiness turns
//! not-ready first, then every [`Stopping`] handle resolves.

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;

use crate::admin::Readiness;

/// A cheap handle that resolves when the service starts stopping.
#[derive(Debug, Clone)]
pub struct Stopping {
    receiver: watch::Receiver<bool>,
}

impl Stopping {
    /// Spawns the task that waits for `shutdown`, marks the service not ready
    /// and then signals every [`Stopping`] handle.
    pub fn watch(
        shutdown: impl Future<Output = ()> + Send + 'static,
        readiness: Readiness,
    ) -> Self {
        let (sender, receiver) = watch::channel(false);
        tokio::spawn(async move {
            shutdown.await;
            readiness.set_ready(false);
            let _ = sender.send(true);
        });
        Self { receiver }
    }

    /// Whether stopping has begun.
    pub fn is_stopping(&self) -> bool {
        *self.receiver.borrow()
    }

    /// Resolves once stopping has begun (or the signal task is gone).
    pub async fn wait(mut self) {
        let _ = self.receiver.wait_for(|stopping| *stopping).await;
    }

    /// Runs `tick` every `period` (a slow tick delays the next rather than
    /// bunching them) until stopping begins: the shape of every background
    /// job (gauges, probes, maintenance).
    pub async fn every<F, Fut>(self, period: Duration, mut tick: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = ()>,
    {
        let stopped = self.wait();
        tokio::pin!(stopped);
        let mut interval = tokio::time::interval(period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = interval.tick() => {}
                () = &mut stopped => return,
            }
            tick().await;
        }
    }

    /// Resolves `drain` after stopping began: the bound on draining.
    pub async fn drain_deadline(self, drain: Duration) {
        self.wait().await;
        tokio::time::sleep(drain).await;
    }
}
