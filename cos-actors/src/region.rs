//! The shard region of one entity type on this node: maps an entity id to its shard (Java-compatible hash)
//! and forwards to the shard actor, starting it on first use. With a single node every shard is local; the
//! cluster issue adds remote homes and the coordinator here, behind the same message.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use cos_core::error::CommandError;
use cos_core::sharding::shard_of;
use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use ractor_cluster::RactorMessage;

use crate::envelope::EntityEnvelope;
use crate::passivation::PassivationBudget;
use crate::runtime::EntityTypeRuntime;
use crate::shard::{ShardActor, ShardArguments, ShardMessage};

/// How long a stopping region waits for its shards (and their entities) to finish.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Messages a region handles.
#[derive(RactorMessage)]
pub enum RegionMessage {
    /// Route a request to the shard of its entity.
    Deliver(Box<EntityEnvelope>),
}

/// Arguments to start a region.
pub struct RegionArguments {
    pub runtime: Arc<EntityTypeRuntime>,
    pub budget: Arc<PassivationBudget>,
}

/// The state of a region actor.
pub struct RegionState {
    runtime: Arc<EntityTypeRuntime>,
    budget: Arc<PassivationBudget>,
    shards: HashMap<u32, ActorRef<ShardMessage>>,
}

/// The shard region actor.
pub struct RegionActor;

impl Actor for RegionActor {
    type Msg = RegionMessage;
    type State = RegionState;
    type Arguments = RegionArguments;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        arguments: RegionArguments,
    ) -> Result<RegionState, ActorProcessingErr> {
        Ok(RegionState {
            runtime: arguments.runtime,
            budget: arguments.budget,
            shards: HashMap::new(),
        })
    }

    async fn post_stop(
        &self,
        myself: ActorRef<Self::Msg>,
        _state: &mut RegionState,
    ) -> Result<(), ActorProcessingErr> {
        // Shards forward what they have queued, then drain their entities (see ShardActor::post_stop).
        myself.drain_children_and_wait(Some(DRAIN_TIMEOUT)).await;
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: RegionMessage,
        state: &mut RegionState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            RegionMessage::Deliver(envelope) => state.deliver(&myself, envelope).await,
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut RegionState,
    ) -> Result<(), ActorProcessingErr> {
        let stopped = match &event {
            SupervisionEvent::ActorTerminated(cell, _, _) => Some(cell.get_id()),
            SupervisionEvent::ActorFailed(cell, error) => {
                tracing::error!(entity_type = %state.runtime.settings.name, %error, "shard failed");
                Some(cell.get_id())
            }
            _ => None,
        };
        if let Some(actor_id) = stopped {
            state.shards.retain(|_, shard| shard.get_id() != actor_id);
        }
        Ok(())
    }
}

impl RegionState {
    async fn deliver(&mut self, myself: &ActorRef<RegionMessage>, envelope: Box<EntityEnvelope>) {
        let shard = shard_of(envelope.entity_id.as_str(), self.runtime.num_shards);
        let actor = match self.shards.get(&shard) {
            Some(actor) => actor.clone(),
            None => match self.start_shard(myself, shard).await {
                Ok(actor) => actor,
                Err(error) => {
                    envelope.answer(Err(error));
                    return;
                }
            },
        };
        if let Err(ractor::MessagingErr::SendErr(ShardMessage::Deliver(envelope))) =
            actor.cast(ShardMessage::Deliver(envelope))
        {
            self.shards.remove(&shard);
            envelope.answer(Err(CommandError::StoreUnavailable(format!(
                "shard {shard} stopped unexpectedly; retry"
            ))));
        }
    }

    async fn start_shard(
        &mut self,
        myself: &ActorRef<RegionMessage>,
        shard: u32,
    ) -> Result<ActorRef<ShardMessage>, CommandError> {
        let arguments = ShardArguments {
            shard,
            runtime: self.runtime.clone(),
            budget: self.budget.clone(),
        };
        let (actor, _join) = Actor::spawn_linked(None, ShardActor, arguments, myself.get_cell())
            .await
            .map_err(|error| {
                CommandError::Internal(format!("cannot start shard {shard}: {error}"))
            })?;
        self.shards.insert(shard, actor.clone());
        Ok(actor)
    }
}
