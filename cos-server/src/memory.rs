//! Gives memory back to the kernel after entity actors stop.
//!
//! When entities rest or are passivated their actors (≈ 11 KB each) are freed, but glibc's allocator keeps
//! freed memory in its arenas for reuse, so a burst that touched many entities would leave the node's
//! resident memory at its peak. This task watches the number of entity actors and, once a good number of
//! them have gone since the last look, asks the allocator to return its free pages (`malloc_trim`). On
//! other platforms it does nothing.

use std::time::Duration;

use cos_actors::census::entity_census;

/// How often the actor count is looked at.
const CHECK_PERIOD: Duration = Duration::from_secs(2);

/// Actors that must have stopped since the highest count seen before a trim is worth its cost
/// (about 20 MiB of freed actors; a trim walks the allocator's free lists).
const RELEASED_ACTORS_WORTH_A_TRIM: usize = 2_000;

/// Starts the trimming task on the current runtime; it runs until the runtime stops.
pub fn spawn_trimmer() {
    if !trimming_supported() {
        return;
    }
    tokio::spawn(async {
        let mut highest = entity_census().actors;
        let mut ticks = tokio::time::interval(CHECK_PERIOD);
        loop {
            ticks.tick().await;
            let actors = entity_census().actors;
            highest = highest.max(actors);
            if highest - actors >= RELEASED_ACTORS_WORTH_A_TRIM {
                let released = tokio::task::spawn_blocking(release_free_memory).await;
                tracing::debug!(
                    stopped_actors = highest - actors,
                    ?released,
                    "returned free memory to the kernel"
                );
                highest = actors;
            }
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
    // SAFETY: malloc_trim only releases free memory held by glibc's allocator; it takes no pointers and is
    // safe to call from any thread at any time.
    unsafe { libc::malloc_trim(0) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release_free_memory() -> bool {
    false
}
