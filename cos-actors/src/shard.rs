//! A shard: owns the live entities of its ids, starts them on demand and passivates them (idle timeout and
//! the node's active-entity limit, least recently used first). Messages for an entity that is stopping are
//! buffered and delivered, in order, to its next incarnation.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use cos_core::domain::{EntityId, EntityKey};
use cos_core::error::CommandError;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use ractor_cluster::RactorMessage;
use tokio::time::Instant;

use crate::entity::{EntityActor, EntityArguments, EntityMessage};
use crate::envelope::EntityEnvelope;
use crate::passivation::{LruOrder, PassivationBudget};
use crate::runtime::EntityTypeRuntime;

/// Messages a shard handles.
#[derive(RactorMessage)]
pub enum ShardMessage {
    /// Route a request to its entity, starting the entity if needed.
    Deliver(Box<EntityEnvelope>),
    /// Replace an entity instance that must not go on (it lost a write to another writer).
    Replace(EntityId),
    /// Periodic passivation: idle entities, and the active-entity limit (which can shrink as shards start).
    Maintenance,
}

/// How often a shard looks for entities to passivate when no idle timeout is set.
const MAINTENANCE_PERIOD: Duration = Duration::from_secs(1);

/// How long a stopping shard waits for its entities to finish what they have queued.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Arguments to start a shard.
pub struct ShardArguments {
    pub shard: u32,
    pub runtime: Arc<EntityTypeRuntime>,
    pub budget: Arc<PassivationBudget>,
}

struct LiveEntity {
    actor: ActorRef<EntityMessage>,
    last_used: Instant,
}

/// The state of a shard actor.
pub struct ShardState {
    shard: u32,
    runtime: Arc<EntityTypeRuntime>,
    budget: Arc<PassivationBudget>,
    live: HashMap<EntityId, LiveEntity>,
    ids_by_actor: HashMap<ActorId, EntityId>,
    /// Entities asked to stop, with the requests that arrived meanwhile.
    // Envelopes travel boxed from the router to the entity; keeping the boxes avoids re-allocating them.
    #[allow(clippy::vec_box)]
    stopping: HashMap<EntityId, Vec<Box<EntityEnvelope>>>,
    recency: LruOrder<EntityId>,
}

/// The shard actor.
pub struct ShardActor;

impl Actor for ShardActor {
    type Msg = ShardMessage;
    type State = ShardState;
    type Arguments = ShardArguments;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        arguments: ShardArguments,
    ) -> Result<ShardState, ActorProcessingErr> {
        let period = match arguments.budget.idle_timeout() {
            Some(idle_timeout) => {
                (idle_timeout / 4).clamp(Duration::from_millis(50), MAINTENANCE_PERIOD)
            }
            None => MAINTENANCE_PERIOD,
        };
        myself.send_interval(period, || ShardMessage::Maintenance);
        arguments.budget.shard_started();
        Ok(ShardState {
            shard: arguments.shard,
            runtime: arguments.runtime,
            budget: arguments.budget,
            live: HashMap::new(),
            ids_by_actor: HashMap::new(),
            stopping: HashMap::new(),
            recency: LruOrder::default(),
        })
    }

    async fn post_stop(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut ShardState,
    ) -> Result<(), ActorProcessingErr> {
        // Let every entity answer what it has queued (commands in flight included) before it stops.
        myself.drain_children_and_wait(Some(DRAIN_TIMEOUT)).await;
        state.budget.shard_stopped();
        for (_, buffered) in state.stopping.drain() {
            for envelope in buffered {
                envelope.answer(Err(CommandError::Retry(
                    "shard stopped before the entity could run the request".to_string(),
                )));
            }
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: ShardMessage,
        state: &mut ShardState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ShardMessage::Deliver(envelope) => state.deliver(&myself, envelope).await,
            ShardMessage::Replace(entity_id) => state.passivate(&entity_id),
            ShardMessage::Maintenance => {
                state.passivate_idle();
                state.enforce_active_limit();
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut ShardState,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                state.entity_stopped(&myself, cell.get_id(), None).await;
            }
            SupervisionEvent::ActorFailed(cell, error) => {
                state
                    .entity_stopped(&myself, cell.get_id(), Some(error.to_string()))
                    .await;
            }
            _ => {}
        }
        Ok(())
    }
}

impl ShardState {
    async fn deliver(&mut self, myself: &ActorRef<ShardMessage>, envelope: Box<EntityEnvelope>) {
        if let Some(buffer) = self.stopping.get_mut(&envelope.entity_id) {
            buffer.push(envelope);
            return;
        }
        let entity_id = envelope.entity_id.clone();
        let actor = match self.live.get_mut(&entity_id) {
            Some(live) => {
                live.last_used = Instant::now();
                live.actor.clone()
            }
            None => match self.start_entity(myself, &entity_id).await {
                Ok(actor) => actor,
                Err(error) => {
                    envelope.answer(Err(error));
                    return;
                }
            },
        };
        self.recency.touch(&entity_id);
        // A failed send means the entity is stopping or gone: keep the request for its next incarnation, which
        // starts once the termination event arrives.
        if let Err(ractor::MessagingErr::SendErr(EntityMessage::Request(envelope))) =
            actor.cast(EntityMessage::Request(envelope))
        {
            self.live.remove(&entity_id);
            self.recency.remove(&entity_id);
            self.stopping.entry(entity_id).or_default().push(envelope);
            return;
        }
        self.enforce_active_limit();
    }

    async fn start_entity(
        &mut self,
        myself: &ActorRef<ShardMessage>,
        entity_id: &EntityId,
    ) -> Result<ActorRef<EntityMessage>, CommandError> {
        let arguments = EntityArguments {
            key: EntityKey {
                entity_type: self.runtime.settings.name.clone(),
                entity_id: entity_id.clone(),
            },
            shard: self.shard,
            shard_actor: myself.clone(),
            runtime: self.runtime.clone(),
        };
        let (actor, _join) = Actor::spawn_linked(None, EntityActor, arguments, myself.get_cell())
            .await
            .map_err(|error| CommandError::Internal(format!("cannot start entity: {error}")))?;
        self.ids_by_actor.insert(actor.get_id(), entity_id.clone());
        self.live.insert(
            entity_id.clone(),
            LiveEntity {
                actor: actor.clone(),
                last_used: Instant::now(),
            },
        );
        Ok(actor)
    }

    /// Asks an entity to stop once it has answered what is already in its mailbox.
    fn passivate(&mut self, entity_id: &EntityId) {
        let Some(live) = self.live.remove(entity_id) else {
            return;
        };
        self.recency.remove(entity_id);
        self.stopping.insert(entity_id.clone(), Vec::new());
        if live.actor.cast(EntityMessage::Passivate).is_err() {
            // Already gone; the termination event finishes the bookkeeping.
            tracing::debug!(entity_id = %entity_id, "entity gone before passivation");
        }
    }

    fn enforce_active_limit(&mut self) {
        let limit = self.budget.per_shard_limit();
        while self.live.len() > limit {
            let Some(oldest) = self.recency.oldest().cloned() else {
                break;
            };
            self.passivate(&oldest);
        }
    }

    fn passivate_idle(&mut self) {
        let Some(idle_timeout) = self.budget.idle_timeout() else {
            return;
        };
        let now = Instant::now();
        let mut idle = Vec::new();
        for entity_id in self.recency.oldest_first() {
            let Some(live) = self.live.get(entity_id) else {
                continue;
            };
            if now.duration_since(live.last_used) < idle_timeout {
                break;
            }
            idle.push(entity_id.clone());
        }
        for entity_id in idle {
            self.passivate(&entity_id);
        }
    }

    async fn entity_stopped(
        &mut self,
        myself: &ActorRef<ShardMessage>,
        actor_id: ActorId,
        failure: Option<String>,
    ) {
        let Some(entity_id) = self.ids_by_actor.remove(&actor_id) else {
            return;
        };
        if let Some(reason) = failure {
            tracing::error!(entity_id = %entity_id, shard = self.shard, %reason, "entity failed");
        }
        // An entity that stopped by itself (writer conflict) is still in `live`.
        if self
            .live
            .get(&entity_id)
            .is_some_and(|live| live.actor.get_id() == actor_id)
        {
            self.live.remove(&entity_id);
            self.recency.remove(&entity_id);
        }
        let buffered = self.stopping.remove(&entity_id).unwrap_or_default();
        for envelope in buffered {
            self.deliver(myself, envelope).await;
        }
    }
}
