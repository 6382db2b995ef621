//! Gives memory back to the kernel after many entity actors have stopped.
//!
//! When entities rest or are passivated their actors (≈ 11 KB each) are freed, but glibc's allocator keeps
//! freed memory in its arenas for reuse, so a burst that touched many entities would leave the node's
//! resident memory at its peak. This task watches the node's count of entity actors and asks the allocator
//! to return its free pages (`malloc_trim`) once a burst is over: the count has fallen by thousands and to a
//! quarter of its highest since the last trim, and is not rising. A trim holds the allocator's locks while it
//! walks the heap, and pages given back under load would only be faulted in again: measured on the write
//! benchmark, trimming whenever the count fell by 2 000 cost up to half the throughput. On other platforms it
//! does nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cos_actors::census::EntityCensus;
use tokio::time::MissedTickBehavior;

/// How often the actor count is looked at.
const CHECK_PERIOD: Duration = Duration::from_secs(2);

/// Actors that must have stopped below the highest count since the last trim (about 20 MiB of freed
/// actors) for a trim to be worth it.
const STOPPED_ACTORS_WORTH_A_TRIM: usize = 2_000;

/// The least time between two trims.
const MIN_TRIM_SPACING: Duration = Duration::from_secs(10);

/// Starts the trimming task on the current runtime; it runs until the runtime stops.
pub fn spawn_trimmer(census: Arc<EntityCensus>) {
    if !trimming_supported() {
        return;
    }
    tokio::spawn(async move {
        let mut watch = BurstWatch::new(census.counts().actors);
        let mut last_trim: Option<Instant> = None;
        let mut ticks = tokio::time::interval(CHECK_PERIOD);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let over = watch.observe(census.counts().actors);
            let spaced = last_trim.is_none_or(|at| at.elapsed() >= MIN_TRIM_SPACING);
            let Some(stopped_actors) = over.filter(|_| spaced) else {
                continue;
            };
            let started = Instant::now();
            let released = tokio::task::spawn_blocking(release_free_memory).await;
            tracing::debug!(stopped_actors, ?released, took = ?started.elapsed(),
                "returned free memory to the kernel");
            last_trim = Some(Instant::now());
            watch.trimmed();
        }
    });
}

/// Follows the actor count to tell when a burst is over.
#[derive(Debug)]
struct BurstWatch {
    highest: usize,
    previous: usize,
}

impl BurstWatch {
    fn new(actors: usize) -> Self {
        Self {
            highest: actors,
            previous: actors,
        }
    }

    /// Takes the current count; returns how many actors went since the highest count when a burst is over:
    /// thousands went, the count is down to a quarter of its highest, and it is not rising.
    fn observe(&mut self, actors: usize) -> Option<usize> {
        let rising = actors > self.previous;
        self.previous = actors;
        self.highest = self.highest.max(actors);
        let stopped = self.highest - actors;
        let over = stopped >= STOPPED_ACTORS_WORTH_A_TRIM && actors <= self.highest / 4 && !rising;
        over.then_some(stopped)
    }

    /// After a trim, the next burst is measured from the current count.
    fn trimmed(&mut self) {
        self.highest = self.previous;
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trimming_supported() -> bool {
    true
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trimming_supported() -> bool {
    false
}

/// Returns whether the allocator gave memory back.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn release_free_memory() -> bool {
    // SAFETY: malloc_trim takes no pointers and only releases memory glibc's allocator holds free; glibc
    // documents it as safe to call from any thread (MT-Safe).
    unsafe { libc::malloc_trim(0) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release_free_memory() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_over_once_thousands_went_down_to_a_quarter_and_the_count_stops_rising() {
        let mut watch = BurstWatch::new(0);
        assert_eq!(watch.observe(10_000), None, "rising");
        assert_eq!(watch.observe(6_000), None, "above a quarter of the highest");
        assert_eq!(watch.observe(2_000), Some(8_000));
        watch.trimmed();
        assert_eq!(
            watch.observe(1_000),
            None,
            "measured from the count at the trim"
        );
    }

    #[test]
    fn steady_churn_and_small_drops_never_trim() {
        let mut watch = BurstWatch::new(0);
        for actors in [20_000, 15_000, 21_000, 16_000, 20_000, 17_000] {
            assert_eq!(watch.observe(actors), None, "{actors}");
        }
        let mut small = BurstWatch::new(1_500);
        assert_eq!(small.observe(0), None, "fewer than 2 000 actors went");
    }

    #[test]
    fn a_count_that_rises_again_waits_for_the_next_look() {
        let mut watch = BurstWatch::new(10_000);
        assert_eq!(watch.observe(1_000), Some(9_000));
        let mut rising = BurstWatch::new(10_000);
        assert_eq!(rising.observe(500), Some(9_500));
        assert_eq!(rising.observe(900), None, "rising again");
        assert_eq!(rising.observe(900), Some(9_100));
    }
}
