//! A shard: owns the live entities of its ids, starts them on demand and passivates them (idle timeout and
//! the node's active-entity limit, least recently used first). Messages for an entity that is stopping are
//! buffered and delivered, in order, to its next incarnation.
//!
//! An entity that ran no command for `COS_PASSIVATION_REST_AFTER` *rests*: its actor stops and hands its state to the
//! shard, which starts a new actor from that state on the next request. A resting entity is still live (it
//! counts against the active-entity limit and needs no store read) but costs its state, not an actor. Its
//! state sits in [`RestingStates`], which the router reads too: a `GetState` of a resting entity of a
//! settled local shard never reaches the shard. Reads alone do not keep an entity's actor (only commands
//! need it), but they count as uses for passivation.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cos_core::domain::{EntityId, EntityKey};
use cos_core::error::CommandError;
use cos_core::proto::chief_of_state::v1::StateWrapper;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use ractor_cluster::RactorMessage;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::census::CountedRest;
use crate::entity::{EntityActor, EntityArguments, EntityMessage};
use crate::envelope::{EntityEnvelope, EntityRequest};
use crate::passivation::{LruOrder, PassivationBudget};
use crate::resting::RestingStates;
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
    /// Where the shard keeps its resting entities (the region hands the same to the router).
    pub resting: RestingStates,
}

/// A shard actor on this node, with the states of its resting entities.
#[derive(Clone)]
pub struct HostedShard {
    pub actor: ActorRef<ShardMessage>,
    pub resting: RestingStates,
}

struct LiveEntity {
    actor: ActorRef<EntityMessage>,
    /// The last request of any kind (what passivation goes by).
    last_used: Instant,
    /// The last command, or the start: an entity that ran none for `rest_after` rests even if it is read.
    last_command: Instant,
    /// Requests sent to the actor and not yet taken by it (it lets queued commands share a write).
    queued: Arc<AtomicUsize>,
}

/// An entity asked to stop, with the requests that arrived meanwhile.
#[derive(Default)]
struct Stopping {
    // Envelopes travel boxed from the router to the entity; keeping the boxes avoids re-allocating them.
    #[allow(clippy::vec_box)]
    buffered: Vec<Box<EntityEnvelope>>,
    /// Set when the entity was asked to rest: where it hands its state over, and when it was last used.
    rest: Option<(oneshot::Receiver<StateWrapper>, Instant)>,
}

/// The state of a shard actor.
pub struct ShardState {
    shard: u32,
    runtime: Arc<EntityTypeRuntime>,
    budget: Arc<PassivationBudget>,
    live: HashMap<EntityId, LiveEntity>,
    resting: RestingStates,
    ids_by_actor: HashMap<ActorId, EntityId>,
    stopping: HashMap<EntityId, Stopping>,
    /// Live and resting entities, and those on their way to rest, least recently used first.
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
        let period = arguments.budget.maintenance_period(MAINTENANCE_PERIOD);
        myself.send_interval(period, || ShardMessage::Maintenance);
        arguments.budget.shard_started();
        Ok(ShardState {
            shard: arguments.shard,
            runtime: arguments.runtime,
            budget: arguments.budget,
            live: HashMap::new(),
            resting: arguments.resting,
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
        // The region unlisted this shard before stopping it, so no reader can reach these states any more.
        state.resting.clear();
        for (_, stopping) in state.stopping.drain() {
            for envelope in stopping.buffered {
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
                state.rest_idle();
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
        if let Some(stopping) = self.stopping.get_mut(&envelope.entity_id) {
            stopping.buffered.push(envelope);
            return;
        }
        let entity_id = envelope.entity_id.clone();
        // A read of a resting entity needs no actor: nothing is queued for it, so its state is current (the
        // read's stamp counts it as used, as for a read that skipped the shard).
        let is_command = matches!(envelope.request, EntityRequest::ProcessCommand(_));
        if !is_command && let Some(answer) = self.resting.read(&entity_id) {
            envelope.answer(answer);
            return;
        }
        // The entity learns from the count that requests wait behind it (no shared handle is cloned per
        // request); a send that fails below goes to an incarnation that is gone, whose count no longer matters.
        let actor = match self.live.get_mut(&entity_id) {
            Some(live) => {
                live.last_used = Instant::now();
                if is_command {
                    live.last_command = live.last_used;
                }
                live.queued.fetch_add(1, Ordering::Relaxed);
                live.actor.clone()
            }
            None => {
                let resumed = self.resting.take(&entity_id);
                match self.start_entity(myself, &entity_id, resumed).await {
                    Ok(actor) => actor,
                    // A resting state is dropped with the failed start: it was only a cache, and the next
                    // start reads the store.
                    Err(error) => {
                        self.recency.remove(&entity_id);
                        envelope.answer(Err(error));
                        return;
                    }
                }
            }
        };
        self.recency.touch(&entity_id);
        // A failed send means the entity is stopping or gone: keep the request for its next incarnation, which
        // starts once the termination event arrives.
        if let Err(ractor::MessagingErr::SendErr(EntityMessage::Request(envelope))) =
            actor.cast(EntityMessage::Request(envelope))
        {
            self.live.remove(&entity_id);
            self.recency.remove(&entity_id);
            self.stopping
                .entry(entity_id)
                .or_default()
                .buffered
                .push(envelope);
            return;
        }
        self.enforce_active_limit();
    }

    async fn start_entity(
        &mut self,
        myself: &ActorRef<ShardMessage>,
        entity_id: &EntityId,
        resumed: Option<StateWrapper>,
    ) -> Result<ActorRef<EntityMessage>, CommandError> {
        // Counts the request that starts it, which the caller sends next.
        let queued = Arc::new(AtomicUsize::new(1));
        let arguments = EntityArguments {
            key: EntityKey {
                entity_type: self.runtime.settings.name.clone(),
                entity_id: entity_id.clone(),
            },
            shard: self.shard,
            shard_actor: myself.clone(),
            runtime: self.runtime.clone(),
            resumed,
            census: self.budget.census().clone(),
            queued: queued.clone(),
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
                last_command: Instant::now(),
                queued,
            },
        );
        Ok(actor)
    }

    /// Takes an entity out of memory: a resting one at once, a live one once it has answered what is already
    /// in its mailbox.
    fn passivate(&mut self, entity_id: &EntityId) {
        if self.resting.take(entity_id).is_some() {
            self.recency.remove(entity_id);
            return;
        }
        let Some(live) = self.live.remove(entity_id) else {
            return;
        };
        self.recency.remove(entity_id);
        self.stopping.insert(entity_id.clone(), Stopping::default());
        if live.actor.cast(EntityMessage::Passivate).is_err() {
            // Already gone; the termination event finishes the bookkeeping.
            tracing::debug!(entity_id = %entity_id, "entity gone before passivation");
        }
    }

    /// Asks a live entity to hand its state over and stop once it has answered what is in its mailbox; it
    /// keeps its place in the recency order.
    fn rest(&mut self, entity_id: &EntityId) {
        let Some(live) = self.live.remove(entity_id) else {
            return;
        };
        let (hand_over, handed_over) = oneshot::channel();
        self.stopping.insert(
            entity_id.clone(),
            Stopping {
                buffered: Vec::new(),
                rest: Some((handed_over, live.last_used)),
            },
        );
        if live.actor.cast(EntityMessage::Rest(hand_over)).is_err() {
            // Already gone; the termination event finishes the bookkeeping.
            tracing::debug!(entity_id = %entity_id, "entity gone before resting");
        }
    }

    /// When a live or resting entity was last used as far as the recency order knows (reads that skipped
    /// the shard aside; `None` while it is on its way to rest).
    fn last_used(&self, entity_id: &EntityId) -> Option<Instant> {
        match self.live.get(entity_id) {
            Some(live) => Some(live.last_used),
            None => self.resting.last_used(entity_id),
        }
    }

    /// Gives a resting entity read (without the shard) since its last recorded use a second chance: the read
    /// becomes its last use and the entity takes that read's place in the order.
    fn adopt_read(&mut self, entity_id: &EntityId) -> Option<Instant> {
        let read_at = self.resting.adopt_read(entity_id)?;
        self.recency.touch_at(entity_id, read_at);
        Some(read_at)
    }

    fn enforce_active_limit(&mut self) {
        let limit = self.budget.per_shard_limit();
        // Bounded, in case reads keep arriving for every entity while this runs.
        let mut second_chances = self.recency.len();
        while self.live.len() + self.resting.len() > limit {
            let Some(oldest) = self
                .recency
                .oldest_first()
                .find(|entity_id| self.last_used(entity_id).is_some())
                .cloned()
            else {
                break;
            };
            if second_chances > 0 && self.adopt_read(&oldest).is_some() {
                second_chances -= 1;
                continue;
            }
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
            let Some(last_used) = self.last_used(entity_id) else {
                continue;
            };
            if now.duration_since(last_used) < idle_timeout {
                break;
            }
            idle.push(entity_id.clone());
        }
        for entity_id in idle {
            let read_recently = self
                .adopt_read(&entity_id)
                .is_some_and(|read_at| now.duration_since(read_at) < idle_timeout);
            if !read_recently {
                self.passivate(&entity_id);
            }
        }
    }

    fn rest_idle(&mut self) {
        let Some(rest_after) = self.budget.rest_after() else {
            return;
        };
        let now = Instant::now();
        // A scan of the live entities only: with resting on, they are the few used in the last moments.
        let idle: Vec<EntityId> = self
            .live
            .iter()
            .filter(|(_, live)| now.duration_since(live.last_command) >= rest_after)
            .map(|(entity_id, _)| entity_id.clone())
            .collect();
        for entity_id in idle {
            self.rest(&entity_id);
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
        // An entity that stopped without being asked (it failed, or was killed) is still in `live`.
        if self
            .live
            .get(&entity_id)
            .is_some_and(|live| live.actor.get_id() == actor_id)
        {
            self.live.remove(&entity_id);
            self.recency.remove(&entity_id);
        }
        let stopping = self.stopping.remove(&entity_id).unwrap_or_default();
        if let Some((mut handed_over, last_used)) = stopping.rest {
            match handed_over.try_recv() {
                // Requests that arrived meanwhile wake it again from this state (in `deliver`).
                Ok(state) => {
                    let counted = CountedRest::new(self.budget.census().clone());
                    self.resting
                        .insert(entity_id.clone(), state, last_used, counted);
                }
                // It had no state worth keeping (never read, or to be re-read) or it failed: it leaves memory.
                Err(_) => self.recency.remove(&entity_id),
            }
        }
        for envelope in stopping.buffered {
            self.deliver(myself, envelope).await;
        }
        // A state that just came to rest counts against the limit from now on.
        self.enforce_active_limit();
    }
}
