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
        let mut highest = census.counts().actors;
        let mut previous = highest;
        let mut last_trim: Option<Instant> = None;
        let mut ticks = tokio::time::interval(CHECK_PERIOD);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let actors = census.counts().actors;
            let rising = actors > previous;
            previous = actors;
            highest = highest.max(actors);
            let spaced = last_trim.is_none_or(|at| at.elapsed() >= MIN_TRIM_SPACING);
            let burst_over =
                highest - actors >= STOPPED_ACTORS_WORTH_A_TRIM && actors <= highest / 4 && !rising;
            if !spaced || !burst_over {
                continue;
            }
            let started = Instant::now();
            let released = tokio::task::spawn_blocking(release_free_memory).await;
            tracing::debug!(stopped_actors = highest - actors, ?released, took = ?started.elapsed(),
                "returned free memory to the kernel");
            last_trim = Some(Instant::now());
            highest = actors;
        }
    });
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
