//! The states of one shard's resting entities, kept by the shard and read by the router too: a `GetState`
//! of a resting entity on a settled local shard is answered in the caller's own task, with no actor and no
//! task hand-over (each hand-over is a cross-thread wake-up, which costs more than the read itself).
//!
//! Only the shard changes the map. A resting entity has no actor and nothing queued, so the state kept is
//! the entity's current one: the shard takes it out before it starts an actor for a command, and a state
//! only comes back once the entity has answered every command it took. A reader that finds the state
//! therefore sees the last answered write, never an unanswered one.
//!
//! Reads that skip the shard cannot move an entity in the shard's least-recently-used order, so each one
//! leaves a time stamp in the entry instead; the shard looks at it before it passivates a resting entity as
//! idle or least recently used, and an entity read since then takes that read's place in the order instead
//! (see `ShardState`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use cos_core::domain::EntityId;
use cos_core::proto::chief_of_state::v1::StateWrapper;
use tokio::time::Instant;

use crate::census::CountedRest;
use crate::entity::state_reply;
use crate::envelope::EntityResult;

/// The resting entities of one shard, shared between the shard (which changes them) and the router.
#[derive(Clone)]
pub struct RestingStates {
    shared: Arc<Shared>,
}

struct Shared {
    /// What read stamps count from.
    epoch: Instant,
    entities: RwLock<HashMap<EntityId, RestingEntity>>,
}

/// An entity without an actor whose state the shard keeps for its next request.
struct RestingEntity {
    /// Shared so that a reader copies it after letting go of the lock.
    state: Arc<StateWrapper>,
    /// The shard's own last use of it, which matches its place in the shard's recency order.
    last_used: Instant,
    /// The latest read, in milliseconds after the epoch plus one (0: none since `last_used`).
    read_stamp: AtomicU64,
    _counted: CountedRest,
}

impl Default for RestingStates {
    fn default() -> Self {
        Self {
            shared: Arc::new(Shared {
                epoch: Instant::now(),
                entities: RwLock::default(),
            }),
        }
    }
}

impl RestingStates {
    /// The `GetState` answer of a resting entity (`None` when it is not resting here); the read counts as a
    /// use of the entity.
    pub fn read(&self, entity_id: &EntityId) -> Option<EntityResult> {
        let state = self.lookup(entity_id)?;
        Some(state_reply(&state))
    }

    /// The state of a resting entity, for a reader that copies it later (no lock is held meanwhile); the
    /// look-up counts as a use of the entity.
    pub(crate) fn lookup(&self, entity_id: &EntityId) -> Option<Arc<StateWrapper>> {
        let entities = self.entities();
        let resting = entities.get(entity_id)?;
        resting
            .read_stamp
            .fetch_max(self.stamp(Instant::now()), Ordering::Relaxed);
        Some(resting.state.clone())
    }

    /// Keeps the state of an entity that just gave up its actor.
    pub(crate) fn insert(
        &self,
        entity_id: EntityId,
        state: StateWrapper,
        last_used: Instant,
        counted: CountedRest,
    ) {
        let resting = RestingEntity {
            state: Arc::new(state),
            last_used,
            read_stamp: AtomicU64::new(0),
            _counted: counted,
        };
        self.entities_mut().insert(entity_id, resting);
    }

    /// Takes the state of an entity out (it wakes, or leaves memory).
    pub(crate) fn take(&self, entity_id: &EntityId) -> Option<StateWrapper> {
        let resting = self.entities_mut().remove(entity_id)?;
        // A reader may still hold the state for a moment; then the entity wakes from a copy.
        Some(Arc::try_unwrap(resting.state).unwrap_or_else(|shared| (*shared).clone()))
    }

    /// The shard's own last use of a resting entity, reads since then aside.
    pub(crate) fn last_used(&self, entity_id: &EntityId) -> Option<Instant> {
        self.entities()
            .get(entity_id)
            .map(|resting| resting.last_used)
    }

    /// When the entity was last read, if that was after the shard's own last use of it; that read then
    /// becomes the shard's last use (the caller moves the entity to the recent end of its order).
    pub(crate) fn adopt_read(&self, entity_id: &EntityId) -> Option<Instant> {
        let mut entities = self.entities_mut();
        let resting = entities.get_mut(entity_id)?;
        let stamp = resting.read_stamp.swap(0, Ordering::Relaxed);
        let read_at = self.instant_of(stamp)?;
        if read_at <= resting.last_used {
            return None;
        }
        resting.last_used = read_at;
        Some(read_at)
    }

    pub(crate) fn len(&self) -> usize {
        self.entities().len()
    }

    /// Lets go of every state (the shard stops); they are freed after the lock is released.
    pub(crate) fn clear(&self) {
        let states = std::mem::take(&mut *self.entities_mut());
        drop(states);
    }

    fn stamp(&self, at: Instant) -> u64 {
        let millis = at.saturating_duration_since(self.shared.epoch).as_millis();
        u64::try_from(millis).unwrap_or(u64::MAX - 1) + 1
    }

    fn instant_of(&self, stamp: u64) -> Option<Instant> {
        let millis = stamp.checked_sub(1)?;
        Some(self.shared.epoch + Duration::from_millis(millis))
    }

    // Every change is one map call, so a panic elsewhere while the lock was held cannot leave the map
    // half-changed: a poisoned lock is still consistent.
    fn entities(&self) -> RwLockReadGuard<'_, HashMap<EntityId, RestingEntity>> {
        self.shared
            .entities
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn entities_mut(&self) -> RwLockWriteGuard<'_, HashMap<EntityId, RestingEntity>> {
        self.shared
            .entities
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use cos_core::domain::initial_state;
    use cos_core::error::CommandError;

    use super::*;
    use crate::census::{EntityCensus, EntityCounts};

    fn id(text: &str) -> EntityId {
        EntityId::parse(text).expect("a valid test id")
    }

    /// A state as stored after three events.
    fn stored_state(entity_id: &EntityId) -> StateWrapper {
        let mut state = initial_state(entity_id);
        if let Some(meta) = state.meta.as_mut() {
            meta.revision_number = 3;
        }
        state
    }

    #[tokio::test]
    async fn reads_answer_from_the_kept_state_and_leave_a_stamp_the_shard_adopts_once() {
        let census = Arc::new(EntityCensus::default());
        let resting = RestingStates::default();
        let entity = id("rested");
        let rested_at = Instant::now();
        resting.insert(
            entity.clone(),
            stored_state(&entity),
            rested_at,
            CountedRest::new(census.clone()),
        );
        assert_eq!(census.counts().resting, 1);
        assert!(resting.read(&id("elsewhere")).is_none());
        assert_eq!(
            resting.adopt_read(&entity),
            None,
            "not read since it rested"
        );

        tokio::time::sleep(Duration::from_millis(20)).await;
        let answer = resting.read(&entity).expect("resting here");
        let revision = answer
            .expect("has events")
            .meta
            .map(|meta| meta.revision_number);
        assert_eq!(revision, Some(3));
        let adopted = resting.adopt_read(&entity).expect("read since it rested");
        assert!(adopted > rested_at);
        assert_eq!(resting.last_used(&entity), Some(adopted));
        assert_eq!(
            resting.adopt_read(&entity),
            None,
            "each read is adopted once"
        );

        assert!(resting.take(&entity).is_some());
        assert!(resting.read(&entity).is_none());
        assert_eq!(
            census.counts(),
            EntityCounts {
                actors: 0,
                resting: 0
            }
        );
    }

    #[tokio::test]
    async fn an_entity_without_events_reads_as_not_found() {
        let resting = RestingStates::default();
        let entity = id("never-written");
        let census = Arc::new(EntityCensus::default());
        resting.insert(
            entity.clone(),
            initial_state(&entity),
            Instant::now(),
            CountedRest::new(census),
        );
        assert!(matches!(
            resting.read(&entity),
            Some(Err(CommandError::NotFound))
        ));
        resting.clear();
        assert_eq!(resting.len(), 0);
    }
}
