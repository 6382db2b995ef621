//! The shard region of one entity type on this node: maps an entity id to its shard (Java-compatible hash)
//! and routes to the shard's home. A single node hosts every shard. In a cluster the region asks the
//! coordinator where a shard lives (buffering its requests meanwhile, in order), remembers the answer, and
//! either delivers locally or forwards to the home node's region endpoint.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use cos_core::error::CommandError;
use cos_core::sharding::shard_of;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use ractor_cluster::RactorMessage;

use crate::cluster::routing::{Forwarded, RegionCluster, forward, resolve_home};
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
    /// The coordinator's answer for a shard: its home node, or why there is none.
    HomeResolved(u32, Result<String, String>),
    /// A forward to this shard's home failed: ask the coordinator again next time.
    ForgetHome(u32),
    /// Members changed: forget homes on nodes that are gone.
    ViewChanged,
    /// The shards with a live shard actor here.
    LocalShards(RpcReplyPort<Vec<u32>>),
    /// Stop hosting a shard: its entities finish their queues; requests meanwhile wait, then follow it.
    HandOff(u32, RpcReplyPort<bool>),
    /// The shard actor of a hand-off has stopped.
    HandOffFinished(u32, RpcReplyPort<bool>),
    /// A forwarded request found its shard moved: route it again.
    Reroute(u32, Box<EntityEnvelope>),
}

/// How often one request may follow a moving shard before it is refused (its deadline bounds it too).
const MAX_REROUTES: u8 = 10;

/// Pause before routing a request again, times the number of reroutes so far: a shard in the middle of a
/// move or a node that is restarting needs a moment.
const REROUTE_PAUSE: Duration = Duration::from_millis(50);

/// Arguments to start a region.
pub struct RegionArguments {
    pub runtime: Arc<EntityTypeRuntime>,
    pub budget: Arc<PassivationBudget>,
    /// `None` on a single node.
    pub cluster: Option<RegionCluster>,
}

/// The state of a region actor.
pub struct RegionState {
    runtime: Arc<EntityTypeRuntime>,
    budget: Arc<PassivationBudget>,
    cluster: Option<RegionCluster>,
    shards: HashMap<u32, ActorRef<ShardMessage>>,
    homes: HashMap<u32, String>,
    /// Requests waiting for the coordinator's answer, per shard, in arrival order.
    #[allow(clippy::vec_box)]
    resolving: HashMap<u32, Vec<Box<EntityEnvelope>>>,
    /// Shards being handed off: their requests wait in `resolving` until the shard actor has stopped.
    handing_off: std::collections::HashSet<u32>,
}

/// The shard region actor.
pub struct RegionActor;

impl Actor for RegionActor {
    type Msg = RegionMessage;
    type State = RegionState;
    type Arguments = RegionArguments;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        arguments: RegionArguments,
    ) -> Result<RegionState, ActorProcessingErr> {
        if let Some(cluster) = &arguments.cluster {
            let mut changes = cluster.view.clone();
            let region = myself.clone();
            tokio::spawn(async move {
                while changes.changed().await.is_ok() {
                    if region.cast(RegionMessage::ViewChanged).is_err() {
                        break;
                    }
                }
            });
        }
        Ok(RegionState {
            runtime: arguments.runtime,
            budget: arguments.budget,
            cluster: arguments.cluster,
            shards: HashMap::new(),
            homes: HashMap::new(),
            resolving: HashMap::new(),
            handing_off: Default::default(),
        })
    }

    async fn post_stop(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut RegionState,
    ) -> Result<(), ActorProcessingErr> {
        for (_, waiting) in state.resolving.drain() {
            for envelope in waiting {
                envelope.answer(Err(CommandError::Retry(
                    "node shutting down; retry".to_string(),
                )));
            }
        }
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
            RegionMessage::HomeResolved(shard, home) => {
                state.home_resolved(&myself, shard, home).await
            }
            RegionMessage::ForgetHome(shard) => {
                state.homes.remove(&shard);
            }
            RegionMessage::ViewChanged => state.forget_departed_homes(),
            RegionMessage::LocalShards(reply) => {
                let _ = reply.send(state.shards.keys().copied().collect());
            }
            RegionMessage::HandOff(shard, reply) => state.hand_off(&myself, shard, reply),
            RegionMessage::HandOffFinished(shard, reply) => {
                state.handing_off.remove(&shard);
                let _ = reply.send(true);
                state.resolve_waiting(&myself, shard);
            }
            RegionMessage::Reroute(shard, mut envelope) => {
                state.homes.remove(&shard);
                envelope.reroutes += 1;
                if envelope.reroutes > MAX_REROUTES {
                    envelope.answer(Err(CommandError::Retry(format!(
                        "shard {shard} keeps moving; retry"
                    ))));
                } else {
                    state.deliver(&myself, envelope).await;
                }
            }
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
        let Some(cluster) = self.cluster.clone() else {
            self.deliver_locally(myself, shard, envelope).await;
            return;
        };
        if let Some(home) = self.homes.get(&shard).cloned() {
            self.route(myself, &cluster, shard, &home, envelope).await;
            return;
        }
        let waiting = self.resolving.entry(shard).or_default();
        waiting.push(envelope);
        if waiting.len() > 1 || self.handing_off.contains(&shard) {
            return;
        }
        self.resolve_waiting(myself, shard);
    }

    /// Asks the coordinator for the home of a shard whose requests are waiting.
    fn resolve_waiting(&mut self, myself: &ActorRef<RegionMessage>, shard: u32) {
        let has_waiting = self
            .resolving
            .get(&shard)
            .is_some_and(|waiting| !waiting.is_empty());
        let Some(cluster) = self.cluster.clone() else {
            return;
        };
        if !has_waiting {
            return;
        }
        let region = myself.clone();
        tokio::spawn(async move {
            let home = resolve_home(&cluster, shard).await;
            let _ = region.cast(RegionMessage::HomeResolved(shard, home));
        });
    }

    /// Stops the local shard actor (after its entities answer their queues) and forgets its home.
    fn hand_off(
        &mut self,
        myself: &ActorRef<RegionMessage>,
        shard: u32,
        reply: RpcReplyPort<bool>,
    ) {
        self.homes.remove(&shard);
        let Some(actor) = self.shards.remove(&shard) else {
            let _ = reply.send(true);
            return;
        };
        self.handing_off.insert(shard);
        let region = myself.clone();
        tokio::spawn(async move {
            if actor.drain_and_wait(Some(DRAIN_TIMEOUT)).await.is_err() {
                tracing::error!(shard, "shard did not drain in time during hand-off");
            }
            let _ = region.cast(RegionMessage::HandOffFinished(shard, reply));
        });
    }

    async fn home_resolved(
        &mut self,
        myself: &ActorRef<RegionMessage>,
        shard: u32,
        home: Result<String, String>,
    ) {
        if self.handing_off.contains(&shard) {
            // Asked before the hand-off began: the answer is stale; ask again once the shard has stopped.
            return;
        }
        let waiting = self.resolving.remove(&shard).unwrap_or_default();
        let Some(cluster) = self.cluster.clone() else {
            return;
        };
        match home {
            Ok(home) => {
                self.homes.insert(shard, home.clone());
                for envelope in waiting {
                    self.route(myself, &cluster, shard, &home, envelope).await;
                }
            }
            Err(reason) => {
                for envelope in waiting {
                    envelope.answer(Err(CommandError::Retry(format!(
                        "shard {shard} has no home: {reason}; retry"
                    ))));
                }
            }
        }
    }

    async fn route(
        &mut self,
        myself: &ActorRef<RegionMessage>,
        cluster: &RegionCluster,
        shard: u32,
        home: &str,
        envelope: Box<EntityEnvelope>,
    ) {
        if home == cluster.self_name {
            self.deliver_locally(myself, shard, envelope).await;
            return;
        }
        if envelope.from_remote {
            // The sender thinks this node is the home and it is not (the shard moved): the sender routes
            // the request again, this node never bounces it onward.
            envelope.answer(Err(CommandError::NotHostedHere(format!(
                "shard {shard} is not hosted on {}",
                cluster.self_name
            ))));
            return;
        }
        let region = myself.clone();
        let home = home.to_string();
        let entity_type = self.runtime.settings.name.as_str().to_string();
        tokio::spawn(async move {
            match forward(&home, &entity_type, envelope).await {
                Forwarded::Answered => {}
                Forwarded::Unreachable => {
                    let _ = region.cast(RegionMessage::ForgetHome(shard));
                }
                Forwarded::Moved(envelope) => {
                    tokio::time::sleep(REROUTE_PAUSE * u32::from(envelope.reroutes)).await;
                    let _ = region.cast(RegionMessage::Reroute(shard, envelope));
                }
            }
        });
    }

    fn forget_departed_homes(&mut self) {
        let Some(cluster) = &self.cluster else {
            return;
        };
        let view = cluster.view.borrow().clone();
        self.homes
            .retain(|_, home| view.shard_hosts().any(|member| member.name == *home));
    }

    async fn deliver_locally(
        &mut self,
        myself: &ActorRef<RegionMessage>,
        shard: u32,
        envelope: Box<EntityEnvelope>,
    ) {
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
            envelope.answer(Err(CommandError::Retry(format!(
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
