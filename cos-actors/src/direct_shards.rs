//! The shards of one entity type that this node hosts and that the router may send to directly, skipping the
//! region actor: one task hand-over fewer on every request (each costs a cross-thread wake-up on a busy node,
//! more than the region's own work).
//!
//! The region alone decides what is listed. A shard is listed while its actor runs here, no hand-off of it is
//! under way and, in a cluster, the coordinator's answer cached in the region names this node; anything else
//! (a shard being resolved, moving, or homed elsewhere) goes through the region as before. A request sent to a
//! listed shard just as its hand-off starts is either queued before the shard's drain marker (and run by it,
//! like every request the region sent before the hand-off) or refused with the request handed back, which the
//! router then gives to the region.
//!
//! Order: a request sent after another's answer always runs after it. Requests in flight at the same time
//! had no defined order before either (each gRPC call runs in its own task before it reaches the router); now
//! one that arrives just after its shard is listed may also overtake requests the region is still handing
//! over (those that waited for the shard's home or for its actor to start). Each entity still runs its
//! requests one at a time.
//!
//! A `GetState` of an entity resting in a listed shard is answered from the shard's
//! [`RestingStates`](crate::resting::RestingStates) while
//! the list is held, so it cannot race a hand-off either: the region unlists a shard before it drains it.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use cos_core::domain::EntityId;
use ractor::ActorRef;

use crate::entity::state_reply;
use crate::envelope::EntityResult;
use crate::shard::{HostedShard, ShardMessage};

/// A shared, region-maintained list of shard actors that may be sent to directly.
#[derive(Clone, Default)]
pub struct DirectShards {
    listed: Arc<RwLock<HashMap<u32, HostedShard>>>,
}

impl DirectShards {
    /// The shard's actor if requests for it may skip the region.
    pub fn get(&self, shard: u32) -> Option<ActorRef<ShardMessage>> {
        self.read().get(&shard).map(|hosted| hosted.actor.clone())
    }

    /// The `GetState` answer of an entity resting in a listed shard (`None`: ask the shard or the region).
    pub fn read_resting(&self, shard: u32, entity_id: &EntityId) -> Option<EntityResult> {
        // Both locks are let go before the state is copied (a large state would hold them long).
        let state = self.read().get(&shard)?.resting.lookup(entity_id)?;
        Some(state_reply(&state))
    }

    /// Lists a shard (the region has checked that it is hosted here and not moving).
    pub(crate) fn list(&self, shard: u32, hosted: HostedShard) {
        self.write().insert(shard, hosted);
    }

    /// Unlists a shard: from now on its requests go through the region.
    pub(crate) fn unlist(&self, shard: u32) {
        // Dropped after the lock is let go: it may be the last hold on a stopped shard's resting states.
        let _unlisted = self.write().remove(&shard);
    }

    /// Keeps only the shards `keep` accepts.
    pub(crate) fn retain(&self, mut keep: impl FnMut(u32) -> bool) {
        let _unlisted: Vec<_> = self.write().extract_if(|shard, _| !keep(*shard)).collect();
    }

    /// Whether no shard is listed (every request then goes through the region).
    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    // A panic while holding the lock cannot leave the map half-changed (every change is one map call), so a
    // poisoned lock is still consistent.
    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<u32, HostedShard>> {
        self.listed.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<u32, HostedShard>> {
        self.listed.write().unwrap_or_else(PoisonError::into_inner)
    }
}
