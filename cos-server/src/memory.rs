//! Gives memory back to the kernel after many entity actors have stopped.
//!
//! When entities rest or are passivated their actors (≈ 11 KB each) are freed, but glibc's allocator keeps
//! freed memory in its arenas for reuse, so a burst that touched many entities would leave the node's
//! resident memory at its peak. This task watches the node's count of entity actors; once it has fallen well
//! below the highest count seen since the last trim, it asks the allocator to return its free pages
//! (`malloc_trim`). Trims are spaced out, because a trim briefly holds the allocator's locks and pages given
//! back under steady churn would only be faulted in again. On other platforms it does nothing.

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
        let mut last_trim: Option<Instant> = None;
        let mut ticks = tokio::time::interval(CHECK_PERIOD);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let actors = census.counts().actors;
            highest = highest.max(actors);
            let spaced = last_trim.is_none_or(|at| at.elapsed() >= MIN_TRIM_SPACING);
            if !spaced || highest - actors < STOPPED_ACTORS_WORTH_A_TRIM {
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
