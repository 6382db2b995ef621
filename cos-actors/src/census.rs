//! A node's counts of entity actors and of entities resting in their shards: what shows that idle entities
//! give their actors up, for operators (the allocator trim, logs, later metrics) and for tests.
//!
//! Each count is kept by a guard that lives exactly as long as what it counts, so no stop path (normal,
//! failed, shard shut down) can forget to decrement it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The live counts of one node, shared by all its shards and entities.
#[derive(Debug, Default)]
pub struct EntityCensus {
    actors: AtomicUsize,
    resting: AtomicUsize,
}

/// How many entities a node holds, by form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntityCounts {
    /// Entities running as actors.
    pub actors: usize,
    /// Entities whose state is held by their shard without an actor.
    pub resting: usize,
}

impl EntityCensus {
    /// The current counts.
    pub fn counts(&self) -> EntityCounts {
        EntityCounts {
            actors: self.actors.load(Ordering::Relaxed),
            resting: self.resting.load(Ordering::Relaxed),
        }
    }
}

/// Counts one entity actor while it lives (held in the actor's state).
#[derive(Debug)]
pub(crate) struct CountedActor(Arc<EntityCensus>);

impl CountedActor {
    pub(crate) fn new(census: Arc<EntityCensus>) -> Self {
        census.actors.fetch_add(1, Ordering::Relaxed);
        Self(census)
    }
}

impl Drop for CountedActor {
    fn drop(&mut self) {
        self.0.actors.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Counts one resting entity while its shard holds it.
#[derive(Debug)]
pub(crate) struct CountedRest(Arc<EntityCensus>);

impl CountedRest {
    pub(crate) fn new(census: Arc<EntityCensus>) -> Self {
        census.resting.fetch_add(1, Ordering::Relaxed);
        Self(census)
    }
}

impl Drop for CountedRest {
    fn drop(&mut self) {
        self.0.resting.fetch_sub(1, Ordering::Relaxed);
    }
}
