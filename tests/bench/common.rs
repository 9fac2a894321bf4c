//! What the benchmarks share: latency samples and their summary.

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::Context as _;

#[derive(Debug, Default, Clone)]
pub struct Sample {
    pub operations: u64,
    pub elapsed: Duration,
    pub latencies_micros: Vec<u32>,
    pub errors: u64,
}

impl Sample {
    pub fn merge(&mut self, other: Self) {
        self.operations += other.operations;
        self.errors += other.errors;
        self.latencies_micros.extend(other.latencies_micros);
        self.elapsed = self.elapsed.max(other.elapsed);
    }

    /// Adds a later, sequential run of the same variant: times add up.
    pub fn append_run(&mut self, run: Self) {
        let elapsed = self.elapsed + run.elapsed;
        self.merge(run);
        self.elapsed = elapsed;
    }

    pub fn rate(&self) -> f64 {
        self.operations as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }

    pub fn percentile_ms(&mut self, percentile: f64) -> f64 {
        if self.latencies_micros.is_empty() {
            return f64::NAN;
        }
        self.latencies_micros.sort_unstable();
        let index = ((self.latencies_micros.len() - 1) as f64 * percentile).round() as usize;
        f64::from(self.latencies_micros[index]) / 1000.0
    }
}

pub async fn collect(
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<Sample>>>,
) -> anyhow::Result<Sample> {
    let mut total = Sample::default();
    for task in tasks {
        total.merge(task.await.context("benchmark task panicked")??);
    }
    Ok(total)
}

pub fn micros(duration: Duration) -> u32 {
    u32::try_from(duration.as_micros()).unwrap_or(u32::MAX)
}

/// Calls `operation` back to back for `duration`, timing each call. The
/// argument is the call's sequence number (from 1); the result is how many
/// rows or leases the call produced, or `None` when it failed.
pub async fn timed_loop<F, Fut>(duration: Duration, mut operation: F) -> Sample
where
    F: FnMut(u64) -> Fut,
    Fut: Future<Output = Option<u64>>,
{
    let mut sample = Sample::default();
    let started = Instant::now();
    let mut sequence = 0_u64;
    while started.elapsed() < duration {
        sequence += 1;
        let call = Instant::now();
        match operation(sequence).await {
            Some(done) => {
                sample.operations += done;
                sample.latencies_micros.push(micros(call.elapsed()));
            }
            None => sample.errors += 1,
        }
    }
    sample.elapsed = started.elapsed();
    sample
}
