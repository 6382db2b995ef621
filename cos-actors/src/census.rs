//! Process-wide counts of entity actors and of entities resting in their shards: what shows that idle
//! entities give their actors up, for operators (logs, later metrics) and for tests.
//!
//! Each count is kept by a guard that lives exactly as long as what it counts, so no stop path (normal,
//! failed, shard shut down) can forget to decrement it.

use std::sync::atomic::{AtomicUsize, Ordering};

static ENTITY_ACTORS: AtomicUsize = AtomicUsize::new(0);
static RESTING_ENTITIES: AtomicUsize = AtomicUsize::new(0);

/// How many entities this process holds, by form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntityCensus {
    /// Entities running as actors.
    pub actors: usize,
    /// Entities whose state is held by their shard without an actor.
    pub resting: usize,
}

/// The current counts.
pub fn entity_census() -> EntityCensus {
    EntityCensus {
        actors: ENTITY_ACTORS.load(Ordering::Relaxed),
        resting: RESTING_ENTITIES.load(Ordering::Relaxed),
    }
}

/// Counts one entity actor while it lives (held in the actor's state).
#[derive(Debug)]
pub(crate) struct CountedActor(());

impl CountedActor {
    pub(crate) fn new() -> Self {
        ENTITY_ACTORS.fetch_add(1, Ordering::Relaxed);
        Self(())
    }
}

impl Drop for CountedActor {
    fn drop(&mut self) {
        ENTITY_ACTORS.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Counts one resting entity while its shard holds it.
#[derive(Debug)]
pub(crate) struct CountedRest(());

impl CountedRest {
    pub(crate) fn new() -> Self {
        RESTING_ENTITIES.fetch_add(1, Ordering::Relaxed);
        Self(())
    }
}

impl Drop for CountedRest {
    fn drop(&mut self) {
        RESTING_ENTITIES.fetch_sub(1, Ordering::Relaxed);
    }
}
