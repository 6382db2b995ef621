//! The shard region of one entity type on this node: maps an entity id to its shard (Java-compatible hash)
//! and routes to the shard's home. A single node hosts every shard. In a cluster the region asks the
//! coordinator where a shard lives (buffering its requests meanwhile, in order), remembers the answer, and
//! either delivers locally or forwards to the home node's region endpoint. It also lists, for the router, the
//! local shards that requests may reach without passing through it ([`DirectShards`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use cos_core::error::CommandError;
use cos_core::sharding::shard_of;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use ractor_cluster::RactorMessage;

use crate::cluster::routing::{Forwarded, RegionCluster, forward, resolve_home};
use crate::direct_shards::DirectShards;
use crate::envelope::EntityEnvelope;
use crate::passivation::PassivationBudget;
use crate::resting::RestingStates;
use crate::runtime::EntityTypeRuntime;
use crate::shard::{HostedShard, ShardActor, ShardArguments, ShardMessage};

/// How long a stopping region waits for its shards (and their entities) to finish.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Messages a region handles.
#[derive(RactorMessage)]
pub enum RegionMessage {
    /// Route a request to the shard of its entity.
    Deliver(Box<EntityEnvelope>),
    /// The coordinator's answer for a shard: its home node, or why there is none.
    HomeResolved(u32, u64, Result<String, String>),
    /// A forward to this shard's home failed: ask the coordinator again next time.
    ForgetHome(u32),
    /// Members changed: forget homes on nodes that are gone.
    ViewChanged,
    /// The shards with a live shard actor here.
    LocalShards(RpcReplyPort<Vec<u32>>),
    /// Stop hosting a shard: its entities finish their queues; requests meanwhile wait, then follow it.
    HandOff(u32, RpcReplyPort<bool>),
    /// The shard actor of a hand-off has stopped (true), or was killed after not draining in time.
    HandOffFinished(u32, bool),
    /// Retry resolving a shard's home after the coordinator could not answer.
    RetryResolve(u32),
    /// A forwarded request found its shard moved: route it again.
    Reroute(u32, Box<EntityEnvelope>),
}

/// Pause before asking the coordinator again after it could not answer.
const RESOLVE_RETRY_PAUSE: Duration = Duration::from_millis(250);

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
    /// Where the region lists the shards the router may send to directly.
    pub direct_shards: DirectShards,
}

/// The state of a region actor.
pub struct RegionState {
    runtime: Arc<EntityTypeRuntime>,
    budget: Arc<PassivationBudget>,
    cluster: Option<RegionCluster>,
    shards: HashMap<u32, HostedShard>,
    homes: HashMap<u32, String>,
    /// Requests waiting for the coordinator's answer, per shard, in arrival order.
    #[allow(clippy::vec_box)]
    resolving: HashMap<u32, Vec<Box<EntityEnvelope>>>,
    /// Shards being handed off, with the callers waiting for the hand-off; their requests wait in `resolving`.
    handing_off: HashMap<u32, Vec<RpcReplyPort<bool>>>,
    /// Bumped at each hand-off: a coordinator answer asked for before it is stale.
    epochs: HashMap<u32, u64>,
    /// The coordinator's node when homes were last learned: a new coordinator means re-checking them.
    coordinator: Option<String>,
    /// Kept in step with `shards`, `homes` and `handing_off` by [`RegionState::relist`].
    direct_shards: DirectShards,
}

/// A region that fails (panics) skips `post_stop`; its shards must not stay listed for the router.
impl Drop for RegionState {
    fn drop(&mut self) {
        self.direct_shards.retain(|_| false);
    }
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
            handing_off: HashMap::new(),
            epochs: HashMap::new(),
            coordinator: None,
            direct_shards: arguments.direct_shards,
        })
    }

    async fn post_stop(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut RegionState,
    ) -> Result<(), ActorProcessingErr> {
        state.direct_shards.retain(|_| false);
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
            RegionMessage::HomeResolved(shard, epoch, home) => {
                state.home_resolved(&myself, shard, epoch, home).await
            }
            RegionMessage::RetryResolve(shard) => state.resolve_waiting(&myself, shard),
            RegionMessage::ForgetHome(shard) => {
                state.homes.remove(&shard);
                state.relist(shard);
            }
            RegionMessage::ViewChanged => state.view_changed(&myself),
            RegionMessage::LocalShards(reply) => {
                let _ = reply.send(state.shards.keys().copied().collect());
            }
            RegionMessage::HandOff(shard, reply) => state.hand_off(&myself, shard, reply),
            RegionMessage::HandOffFinished(shard, drained) => {
                for reply in state.handing_off.remove(&shard).unwrap_or_default() {
                    let _ = reply.send(drained);
                }
                state.relist(shard);
                state.resolve_waiting(&myself, shard);
            }
            RegionMessage::Reroute(shard, mut envelope) => {
                state.homes.remove(&shard);
                state.relist(shard);
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
            let gone: Vec<u32> = state
                .shards
                .iter()
                .filter(|(_, hosted)| hosted.actor.get_id() == actor_id)
                .map(|(shard, _)| *shard)
                .collect();
            for shard in gone {
                state.shards.remove(&shard);
                state.relist(shard);
            }
        }
        Ok(())
    }
}

impl RegionState {
    /// Lists a shard for direct delivery, or unlists it, by the rule of [`DirectShards`]: its actor runs here,
    /// it is not being handed off, and in a cluster the cached home is this node. Called after every change
    /// to one of those for that shard.
    fn relist(&self, shard: u32) {
        let homed_here = match &self.cluster {
            None => true,
            Some(cluster) => self
                .homes
                .get(&shard)
                .is_some_and(|home| *home == cluster.self_name),
        };
        match self.shards.get(&shard) {
            Some(hosted) if homed_here && !self.handing_off.contains_key(&shard) => {
                self.direct_shards.list(shard, hosted.clone());
            }
            _ => self.direct_shards.unlist(shard),
        }
    }

    /// Unlists every shard whose cached home is no longer this node (after homes were forgotten in bulk).
    fn unlist_unhomed(&self) {
        let Some(cluster) = &self.cluster else {
            return;
        };
        self.direct_shards.retain(|shard| {
            self.homes
                .get(&shard)
                .is_some_and(|home| *home == cluster.self_name)
        });
    }

    async fn deliver(&mut self, myself: &ActorRef<RegionMessage>, envelope: Box<EntityEnvelope>) {
        let shard = shard_of(envelope.entity_id.as_str(), self.runtime.num_shards);
        let Some(cluster) = self.cluster.clone() else {
            self.deliver_locally(myself, shard, envelope).await;
            return;
        };
        if let Some(home) = self.homes.get(&shard).cloned() {
            // A request from another node is only trusted to a cached "here": any other cached home may be
            // stale (the shard may just have moved here), so ask the coordinator instead of refusing.
            if !envelope.from_remote || home == cluster.self_name {
                self.route(myself, &cluster, shard, &home, envelope).await;
                return;
            }
            self.homes.remove(&shard);
            self.relist(shard);
        }
        let waiting = self.resolving.entry(shard).or_default();
        waiting.push(envelope);
        if waiting.len() > 1 || self.handing_off.contains_key(&shard) {
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
        let epoch = self.epochs.get(&shard).copied().unwrap_or(0);
        tokio::spawn(async move {
            let home = resolve_home(&cluster, shard).await;
            let _ = region.cast(RegionMessage::HomeResolved(shard, epoch, home));
        });
    }

    /// Stops the local shard actor (after its entities answer their queues) and forgets its home. A shard that
    /// does not drain in time is killed and the hand-off reported as failed, so it never runs in two places.
    fn hand_off(
        &mut self,
        myself: &ActorRef<RegionMessage>,
        shard: u32,
        reply: RpcReplyPort<bool>,
    ) {
        self.homes.remove(&shard);
        *self.epochs.entry(shard).or_default() += 1;
        if let Some(waiting) = self.handing_off.get_mut(&shard) {
            waiting.push(reply);
            return;
        }
        let Some(HostedShard { actor, .. }) = self.shards.remove(&shard) else {
            self.relist(shard);
            let _ = reply.send(true);
            return;
        };
        self.handing_off.insert(shard, vec![reply]);
        // Unlisted before the drain starts: a request sent directly after this is refused by the draining
        // shard and handed to the region, which holds it until the hand-off is over.
        self.relist(shard);
        let region = myself.clone();
        tokio::spawn(async move {
            let drained = actor.drain_and_wait(Some(DRAIN_TIMEOUT)).await.is_ok();
            if !drained {
                tracing::error!(
                    shard,
                    "shard did not drain in time during hand-off; killing it"
                );
                actor.kill();
            }
            let _ = region.cast(RegionMessage::HandOffFinished(shard, drained));
        });
    }

    async fn home_resolved(
        &mut self,
        myself: &ActorRef<RegionMessage>,
        shard: u32,
        epoch: u64,
        home: Result<String, String>,
    ) {
        if self.handing_off.contains_key(&shard) {
            // The hand-off resolves again when it finishes.
            return;
        }
        if epoch != self.epochs.get(&shard).copied().unwrap_or(0) {
            // Asked before a hand-off: the answer is stale.
            self.resolve_waiting(myself, shard);
            return;
        }
        let Some(cluster) = self.cluster.clone() else {
            return;
        };
        match home {
            Ok(home) => {
                let waiting = self.resolving.remove(&shard).unwrap_or_default();
                self.homes.insert(shard, home.clone());
                self.relist(shard);
                for envelope in waiting {
                    self.route(myself, &cluster, shard, &home, envelope).await;
                }
            }
            Err(reason) => {
                // Answer the requests that ran out of time; the others wait for another try.
                let now = tokio::time::Instant::now();
                let waiting = self.resolving.remove(&shard).unwrap_or_default();
                let (expired, alive): (Vec<_>, Vec<_>) = waiting
                    .into_iter()
                    .partition(|envelope| envelope.deadline <= now);
                for envelope in expired {
                    envelope.answer(Err(CommandError::Retry(format!(
                        "shard {shard} has no home: {reason}; retry"
                    ))));
                }
                if !alive.is_empty() {
                    self.resolving.insert(shard, alive);
                    let region = myself.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(RESOLVE_RETRY_PAUSE).await;
                        let _ = region.cast(RegionMessage::RetryResolve(shard));
                    });
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

    /// Forgets homes on members that are gone. When the coordinator moved (a take-over, or this node merged
    /// into another cluster), every cached home is forgotten and each local shard is checked with the new
    /// coordinator: a shard it homes elsewhere is handed off here, so it never runs in two places.
    fn view_changed(&mut self, myself: &ActorRef<RegionMessage>) {
        let Some(cluster) = self.cluster.clone() else {
            return;
        };
        let view = cluster.view.borrow().clone();
        let coordinator = view.coordinator_host().map(str::to_string);
        if coordinator != self.coordinator {
            self.coordinator = coordinator.clone();
            self.homes.clear();
            self.unlist_unhomed();
            if coordinator.is_some() {
                self.reconcile_local_shards(myself, &cluster);
            }
            return;
        }
        self.homes
            .retain(|_, home| view.shard_hosts().any(|member| member.name == *home));
        self.unlist_unhomed();
    }

    fn reconcile_local_shards(&self, myself: &ActorRef<RegionMessage>, cluster: &RegionCluster) {
        let local: Vec<u32> = self.shards.keys().copied().collect();
        if local.is_empty() {
            return;
        }
        let cluster = cluster.clone();
        let region = myself.clone();
        tokio::spawn(async move {
            for shard in local {
                let Ok(home) = resolve_home(&cluster, shard).await else {
                    continue;
                };
                if home != cluster.self_name {
                    tracing::warn!(shard, %home, "the coordinator homes a local shard elsewhere; handing it off");
                    let (sender, _receiver) = ractor::concurrency::oneshot();
                    let _ = region.cast(RegionMessage::HandOff(shard, sender.into()));
                }
            }
        });
    }

    async fn deliver_locally(
        &mut self,
        myself: &ActorRef<RegionMessage>,
        shard: u32,
        envelope: Box<EntityEnvelope>,
    ) {
        let actor = match self.shards.get(&shard) {
            Some(hosted) => hosted.actor.clone(),
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
            self.relist(shard);
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
        let resting = RestingStates::default();
        let arguments = ShardArguments {
            shard,
            runtime: self.runtime.clone(),
            budget: self.budget.clone(),
            resting: resting.clone(),
        };
        let (actor, _join) = Actor::spawn_linked(None, ShardActor, arguments, myself.get_cell())
            .await
            .map_err(|error| {
                CommandError::Internal(format!("cannot start shard {shard}: {error}"))
            })?;
        let hosted = HostedShard {
            actor: actor.clone(),
            resting,
        };
        self.shards.insert(shard, hosted);
        self.relist(shard);
        Ok(actor)
    }
}
