//! Load generation: closed loop (C workers back to back, for peak throughput) and open loop (a fixed rate,
//! latency measured from each request's *scheduled* start, so a slow server cannot hide its queueing).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::Instant;

/// What one load run measured.
#[derive(Debug, Clone, Default)]
pub struct LoadResult {
    pub operations: u64,
    pub errors: u64,
    pub elapsed: Duration,
    /// Latency of every successful operation, in microseconds, sorted.
    pub latencies_micros: Vec<u64>,
}

impl LoadResult {
    /// Successful operations per second.
    pub fn throughput(&self) -> f64 {
        let seconds = self.elapsed.as_secs_f64();
        if seconds <= 0.0 {
            return 0.0;
        }
        self.operations as f64 / seconds
    }

    /// The latency below which `quantile` (0..=1) of the operations finished.
    pub fn percentile(&self, quantile: f64) -> Duration {
        percentile_of(&self.latencies_micros, quantile)
    }

    fn merge(results: Vec<WorkerResult>, elapsed: Duration) -> Self {
        let mut merged = Self {
            elapsed,
            ..Self::default()
        };
        for result in results {
            merged.operations += result.operations;
            merged.errors += result.errors;
            merged.latencies_micros.extend(result.latencies_micros);
        }
        merged.latencies_micros.sort_unstable();
        merged
    }
}

/// The value below which `quantile` (0..=1) of sorted microsecond samples lie; zero without samples.
pub fn percentile_of(sorted_micros: &[u64], quantile: f64) -> Duration {
    let Some(last) = sorted_micros.len().checked_sub(1) else {
        return Duration::ZERO;
    };
    let index = ((last as f64) * quantile.clamp(0.0, 1.0)).round() as usize;
    Duration::from_micros(sorted_micros[index.min(last)])
}

#[derive(Default, Clone)]
struct WorkerResult {
    operations: u64,
    errors: u64,
    latencies_micros: Vec<u64>,
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// Runs `concurrency` workers for `duration`; worker `w` calls `operation(w, n)` for n = 0, 1, … back to back.
/// The operation returns whether it succeeded.
pub async fn closed_loop<F, Fut>(concurrency: usize, duration: Duration, operation: F) -> LoadResult
where
    F: Fn(usize, u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send + 'static,
{
    let started = Instant::now();
    let end = started + duration;
    let mut workers = Vec::with_capacity(concurrency);
    for worker in 0..concurrency {
        let operation = operation.clone();
        workers.push(tokio::spawn(async move {
            let mut result = WorkerResult::default();
            let mut sequence = 0;
            while Instant::now() < end {
                let begun = Instant::now();
                if operation(worker, sequence).await {
                    result.operations += 1;
                    result.latencies_micros.push(micros(begun.elapsed()));
                } else {
                    result.errors += 1;
                }
                sequence += 1;
            }
            result
        }));
    }
    let mut results = Vec::with_capacity(concurrency);
    for worker in workers {
        if let Ok(result) = worker.await {
            results.push(result);
        }
    }
    LoadResult::merge(results, started.elapsed())
}

/// Issues `operation(n)` at `rate` per second for `duration`, at most `max_in_flight` at once; latency counts
/// from when each operation was due, not from when it could start.
pub async fn open_loop<F, Fut>(
    rate: f64,
    duration: Duration,
    max_in_flight: usize,
    operation: F,
) -> LoadResult
where
    F: Fn(u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send + 'static,
{
    open_loop_split(rate, duration, max_in_flight, 0, operation)
        .await
        .all
}

/// An open-loop run, and the same run split into its first operations and the rest.
pub struct SplitRun {
    pub all: LoadResult,
    /// Operations `0..leading`.
    pub leading: LoadResult,
    /// Operations from `leading` on.
    pub rest: LoadResult,
}

/// [`open_loop`], also splitting the results at operation `leading`: where the first operations do work the
/// later ones do not (an entity's first command recovers it), the two halves tell that cost apart.
pub async fn open_loop_split<F, Fut>(
    rate: f64,
    duration: Duration,
    max_in_flight: usize,
    leading: u64,
    operation: F,
) -> SplitRun
where
    F: Fn(u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send + 'static,
{
    let started = Instant::now();
    let total = (rate * duration.as_secs_f64()).max(1.0) as u64;
    let interval = Duration::from_secs_f64(1.0 / rate.max(1.0));
    let slots = Arc::new(Semaphore::new(max_in_flight.max(1)));
    let mut tasks = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    for sequence in 0..total {
        let due = started + interval.mul_f64(sequence as f64);
        tokio::time::sleep_until(due).await;
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        let operation = operation.clone();
        tasks.push(tokio::spawn(async move {
            let succeeded = operation(sequence).await;
            drop(slot);
            (succeeded, micros(due.elapsed()))
        }));
    }
    let (mut first, mut rest) = (WorkerResult::default(), WorkerResult::default());
    for (sequence, task) in (0u64..).zip(tasks) {
        let part = if sequence < leading {
            &mut first
        } else {
            &mut rest
        };
        match task.await {
            Ok((true, latency)) => {
                part.operations += 1;
                part.latencies_micros.push(latency);
            }
            _ => part.errors += 1,
        }
    }
    let elapsed = started.elapsed();
    SplitRun {
        all: LoadResult::merge(vec![first.clone(), rest.clone()], elapsed),
        leading: LoadResult::merge(vec![first], elapsed),
        rest: LoadResult::merge(vec![rest], elapsed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_sorted_latencies() {
        let result = LoadResult {
            operations: 100,
            latencies_micros: (1..=100).collect(),
            elapsed: Duration::from_secs(2),
            ..LoadResult::default()
        };
        assert_eq!(result.percentile(0.5), Duration::from_micros(51));
        assert_eq!(result.percentile(0.99), Duration::from_micros(99));
        assert!((result.throughput() - 50.0).abs() < f64::EPSILON);
    }

    #[tokio::test]
    async fn closed_loop_counts_successes_and_errors() {
        let result = closed_loop(2, Duration::from_millis(50), |_, sequence| async move {
            tokio::time::sleep(Duration::from_millis(1)).await;
            sequence % 2 == 0
        })
        .await;
        assert!(result.operations > 0);
        assert!(result.errors > 0);
    }

    #[tokio::test]
    async fn a_split_run_keeps_the_leading_operations_apart() {
        // 200/s for 50 ms: operations 0..10; the first three take 20 ms (a lower bound, never flaky),
        // operation 5 fails.
        let run = open_loop_split(
            200.0,
            Duration::from_millis(50),
            16,
            3,
            |sequence| async move {
                let pause = if sequence < 3 { 20 } else { 0 };
                tokio::time::sleep(Duration::from_millis(pause)).await;
                sequence != 5
            },
        )
        .await;
        assert_eq!((run.leading.operations, run.leading.errors), (3, 0));
        assert_eq!((run.rest.operations, run.rest.errors), (6, 1));
        assert_eq!((run.all.operations, run.all.errors), (9, 1));
        assert!(run.leading.percentile(0.0) >= Duration::from_millis(20));
        assert_eq!(run.all.latencies_micros.len(), 9);
    }
}
