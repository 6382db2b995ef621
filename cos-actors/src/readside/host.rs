//! The read-side host of one node: runs a worker for every (enabled read side, shard) whose shard this node
//! owns. On a single node that is every shard. In a cluster it asks the coordinator for the home of every
//! shard (which gives a home to shards nobody has written to yet, so their history is delivered too) at
//! start-up, on membership changes and periodically; it starts the workers of shards homed here and stops
//! those homed elsewhere. A hand-off stops the shard's workers before the shard moves, so a shard's events are
//! delivered from one place at a time (and if two workers ever overlap, the offset compare-and-set keeps the
//! stored offset from going back; the overlap only means redelivery).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use ractor_cluster::RactorMessage;

use super::worker::{ReadSideWorker, WorkerArguments, WorkerMessage};
use super::{ReadSideContext, ReadSideRuntime};
use crate::cluster::routing::{RegionCluster, resolve_homes};

/// How often a clustered host checks where its shards live.
const PLACEMENT_PERIOD: Duration = Duration::from_secs(2);

/// Pause before a failed worker is started again.
const RESTART_PAUSE: Duration = Duration::from_secs(1);

/// The longest a released worker may take to finish its current handler call before it is killed (its
/// offset store is then lost and the event delivered again at the new home: at-least-once). The wait is the
/// longest read-side handler timeout plus a second, so a call is over (answered or timed out) before the new
/// home can deliver the shard's next events; capped so a hand-off stays inside the coordinator's patience.
const MAX_RELEASE_TIMEOUT: Duration = Duration::from_secs(33);

/// What a placement check learned: the shards' homes (one coordinator call for all of them), and each
/// shard's epoch when the check started, so an answer that predates a later change for the shard is ignored.
pub struct PlacementCheck {
    epochs: Vec<(u32, u64)>,
    homes: Result<HashMap<u32, String>, String>,
}

/// Messages of the host.
#[derive(RactorMessage)]
pub enum HostMessage {
    /// Check where every shard lives (cluster only).
    CheckPlacement,
    /// Where the shards live, as learned by a placement check.
    Placed(PlacementCheck),
    /// Stop the workers of a shard (it is handed off); answers once they stopped.
    Release(u32, RpcReplyPort<()>),
    /// The workers of a released shard have stopped.
    Released(u32),
    /// The shards this node runs workers for.
    HostedShards(RpcReplyPort<Vec<u32>>),
    /// An operator changed positions of a read side (one shard, or all with `None`): workers re-read them.
    Reload(String, Option<u32>),
    /// Start a worker again after it failed, if its shard is still hosted here.
    Restart(String, u32),
}

/// Where the shards of this node come from.
pub enum Placement {
    /// A single node: every shard is here.
    AllShards,
    /// A cluster: shards homed here by the coordinator.
    Cluster(RegionCluster),
}

/// Arguments of the host.
pub struct HostArguments {
    pub read_sides: Vec<Arc<ReadSideRuntime>>,
    pub context: Arc<ReadSideContext>,
    pub num_shards: u32,
    pub placement: Placement,
}

/// The state of the host.
pub struct HostState {
    read_sides: Vec<Arc<ReadSideRuntime>>,
    context: Arc<ReadSideContext>,
    num_shards: u32,
    cluster: Option<RegionCluster>,
    hosted: BTreeSet<u32>,
    /// Released shards whose workers are still finishing their current handler call, with the hand-offs
    /// waiting for them.
    releasing: HashMap<u32, Vec<RpcReplyPort<()>>>,
    /// How long a released worker may finish its call (see [`MAX_RELEASE_TIMEOUT`]).
    release_timeout: Duration,
    /// Per hosted shard, the flag that tells its workers to stop delivering (set when it is released).
    released: HashMap<u32, Arc<AtomicBool>>,
    workers: HashMap<(String, u32), WorkerEntry>,
    by_actor: HashMap<ActorId, (String, u32)>,
    /// Bumped when a shard is released: a placement answer asked for before is stale.
    epochs: HashMap<u32, u64>,
    checking: bool,
}

/// A running worker and its "reload queued" flag (set with the Reload sent to it, so it ends its turn).
struct WorkerEntry {
    actor: ActorRef<WorkerMessage>,
    reload_queued: Arc<AtomicBool>,
}

/// The host actor.
pub struct ReadSideHost;

impl Actor for ReadSideHost {
    type Msg = HostMessage;
    type State = HostState;
    type Arguments = HostArguments;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        arguments: HostArguments,
    ) -> Result<HostState, ActorProcessingErr> {
        let cluster = match arguments.placement {
            Placement::AllShards => None,
            Placement::Cluster(cluster) => Some(cluster),
        };
        let longest_call = arguments
            .read_sides
            .iter()
            .map(|runtime| runtime.config.timeout)
            .max()
            .unwrap_or_default();
        let release_timeout = (longest_call + Duration::from_secs(1)).min(MAX_RELEASE_TIMEOUT);
        let mut state = HostState {
            read_sides: arguments.read_sides,
            context: arguments.context,
            num_shards: arguments.num_shards,
            cluster,
            hosted: BTreeSet::new(),
            releasing: HashMap::new(),
            release_timeout,
            released: HashMap::new(),
            workers: HashMap::new(),
            by_actor: HashMap::new(),
            epochs: HashMap::new(),
            checking: false,
        };
        match &state.cluster {
            None => {
                for shard in 0..state.num_shards {
                    state.host(&myself, shard).await;
                }
            }
            Some(cluster) => {
                myself.send_interval(PLACEMENT_PERIOD, || HostMessage::CheckPlacement);
                let mut changes = cluster.view.clone();
                let host = myself.clone();
                tokio::spawn(async move {
                    while changes.changed().await.is_ok() {
                        if host.cast(HostMessage::CheckPlacement).is_err() {
                            break;
                        }
                    }
                });
            }
        }
        Ok(state)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut HostState,
    ) -> Result<(), ActorProcessingErr> {
        for flag in state.released.values() {
            flag.store(true, Ordering::Release);
        }
        let workers: Vec<ActorRef<WorkerMessage>> = state
            .workers
            .drain()
            .map(|(_, entry)| entry.actor)
            .collect();
        stop_all(workers, state.release_timeout).await;
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: HostMessage,
        state: &mut HostState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            HostMessage::CheckPlacement => state.check_placement(&myself),
            HostMessage::Placed(placement) => state.placed(&myself, placement).await,
            HostMessage::Release(shard, reply) => state.release(&myself, shard, Some(reply)),
            HostMessage::Released(shard) => {
                for reply in state.releasing.remove(&shard).unwrap_or_default() {
                    let _ = reply.send(());
                }
            }
            HostMessage::HostedShards(reply) => {
                // Shards still releasing count: their workers may still deliver.
                let mut hosted: BTreeSet<u32> = state.hosted.clone();
                hosted.extend(state.releasing.keys().copied());
                let hosted = hosted.into_iter().collect();
                let _ = reply.send(hosted);
            }
            HostMessage::Reload(read_side_id, shard) => state.reload(&read_side_id, shard),
            HostMessage::Restart(read_side_id, shard) => {
                let runtime = state
                    .read_sides
                    .iter()
                    .find(|runtime| runtime.config.id == read_side_id)
                    .cloned();
                if let Some(runtime) = runtime
                    && state.hosted.contains(&shard)
                    && !state.workers.contains_key(&(read_side_id, shard))
                {
                    state.start_worker(&myself, runtime, shard).await;
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut HostState,
    ) -> Result<(), ActorProcessingErr> {
        let (actor_id, failure) = match &event {
            SupervisionEvent::ActorTerminated(cell, _, _) => (cell.get_id(), None),
            SupervisionEvent::ActorFailed(cell, error) => (cell.get_id(), Some(error.to_string())),
            _ => return Ok(()),
        };
        let Some((read_side_id, shard)) = state.by_actor.remove(&actor_id) else {
            return Ok(());
        };
        let key = (read_side_id.clone(), shard);
        if state
            .workers
            .get(&key)
            .is_some_and(|entry| entry.actor.get_id() == actor_id)
        {
            state.workers.remove(&key);
        }
        if let Some(error) = failure {
            tracing::error!(read_side = %read_side_id, shard, %error, "read side worker failed; restarting it");
            myself.send_after(RESTART_PAUSE, move || {
                HostMessage::Restart(read_side_id, shard)
            });
        }
        Ok(())
    }
}

impl HostState {
    /// Starts the workers of a shard that is now homed here.
    async fn host(&mut self, myself: &ActorRef<HostMessage>, shard: u32) {
        if self.releasing.contains_key(&shard) {
            // Its previous workers are still finishing a call; the next placement check starts new ones.
            return;
        }
        if !self.hosted.insert(shard) {
            return;
        }
        self.released
            .insert(shard, Arc::new(AtomicBool::new(false)));
        for runtime in self.read_sides.clone() {
            self.start_worker(myself, runtime, shard).await;
        }
    }

    async fn start_worker(
        &mut self,
        myself: &ActorRef<HostMessage>,
        runtime: Arc<ReadSideRuntime>,
        shard: u32,
    ) {
        let read_side_id = runtime.config.id.clone();
        let released = self
            .released
            .entry(shard)
            .or_insert_with(|| Arc::new(AtomicBool::new(false)))
            .clone();
        let reload_queued = Arc::new(AtomicBool::new(false));
        let arguments = WorkerArguments {
            runtime,
            context: self.context.clone(),
            shard,
            released,
            reload_queued: reload_queued.clone(),
        };
        match Actor::spawn_linked(None, ReadSideWorker, arguments, myself.get_cell()).await {
            Ok((worker, _join)) => {
                self.by_actor
                    .insert(worker.get_id(), (read_side_id.clone(), shard));
                self.workers.insert(
                    (read_side_id, shard),
                    WorkerEntry {
                        actor: worker,
                        reload_queued,
                    },
                );
            }
            Err(error) => {
                tracing::error!(read_side = %read_side_id, shard, %error, "cannot start a read side worker");
                myself.send_after(RESTART_PAUSE, move || {
                    HostMessage::Restart(read_side_id, shard)
                });
            }
        }
    }

    /// Stops the workers of a shard without blocking the host: they end their turn after the current
    /// handler call (bounded by the release timeout); `reply`, if any, is answered once they stopped (and
    /// once an earlier release of the shard finished).
    fn release(
        &mut self,
        myself: &ActorRef<HostMessage>,
        shard: u32,
        reply: Option<RpcReplyPort<()>>,
    ) {
        *self.epochs.entry(shard).or_default() += 1;
        if let Some(flag) = self.released.remove(&shard) {
            flag.store(true, Ordering::Release);
        }
        let keys: Vec<(String, u32)> = self
            .workers
            .keys()
            .filter(|(_, worker_shard)| *worker_shard == shard)
            .cloned()
            .collect();
        let workers: Vec<ActorRef<WorkerMessage>> = keys
            .iter()
            .filter_map(|key| self.workers.remove(key))
            .map(|entry| entry.actor)
            .collect();
        let was_hosted = self.hosted.remove(&shard);
        if workers.is_empty() {
            match (self.releasing.get_mut(&shard), reply) {
                // An earlier release of this shard is still finishing: answer when it is done.
                (Some(waiting), Some(reply)) => waiting.push(reply),
                (None, Some(reply)) => {
                    let _ = reply.send(());
                }
                (_, None) => {}
            }
            return;
        }
        if was_hosted {
            tracing::info!(
                shard,
                "releasing the read-side workers of a shard that moves away"
            );
        }
        self.releasing.entry(shard).or_default().extend(reply);
        let host = myself.clone();
        let timeout = self.release_timeout;
        tokio::spawn(async move {
            stop_all(workers, timeout).await;
            let _ = host.cast(HostMessage::Released(shard));
        });
    }

    fn reload(&self, read_side_id: &str, shard: Option<u32>) {
        for ((worker_read_side, worker_shard), entry) in &self.workers {
            if worker_read_side == read_side_id
                && shard.is_none_or(|shard| shard == *worker_shard)
                && !entry.reload_queued.swap(true, Ordering::AcqRel)
            {
                let _ = entry.actor.cast(WorkerMessage::Reload);
            }
        }
    }

    /// Asks the coordinator for the home of every shard in one call, in a task; the answer comes back as
    /// `Placed`.
    fn check_placement(&mut self, myself: &ActorRef<HostMessage>) {
        let Some(cluster) = self.cluster.clone() else {
            return;
        };
        if self.checking || cluster.view.borrow().coordinator_host().is_none() {
            return;
        }
        self.checking = true;
        let epochs: Vec<(u32, u64)> = (0..self.num_shards)
            .map(|shard| (shard, self.epochs.get(&shard).copied().unwrap_or(0)))
            .collect();
        let host = myself.clone();
        tokio::spawn(async move {
            let shards: Vec<u32> = epochs.iter().map(|(shard, _)| *shard).collect();
            let homes = resolve_homes(&cluster, &shards).await;
            let _ = host.cast(HostMessage::Placed(PlacementCheck { epochs, homes }));
        });
    }

    async fn placed(&mut self, myself: &ActorRef<HostMessage>, placement: PlacementCheck) {
        self.checking = false;
        let Some(self_name) = self
            .cluster
            .as_ref()
            .map(|cluster| cluster.self_name.clone())
        else {
            return;
        };
        let homes = match placement.homes {
            Ok(homes) => homes,
            Err(reason) => {
                tracing::warn!(%reason,
                    "could not learn where the shards live; read sides wait for the next check");
                return;
            }
        };
        for (shard, epoch) in placement.epochs {
            if epoch != self.epochs.get(&shard).copied().unwrap_or(0) {
                continue;
            }
            match homes.get(&shard) {
                Some(home) if *home == self_name => self.host(myself, shard).await,
                Some(_elsewhere) => self.release(myself, shard, None),
                // Being moved: the next check (or the hand-off itself) settles it.
                None => {}
            }
        }
    }
}

/// Stops workers and waits for each (bounded), so no two workers of a shard overlap across a hand-off.
async fn stop_all(workers: Vec<ActorRef<WorkerMessage>>, timeout: Duration) {
    let stops = workers.into_iter().map(|worker| async move {
        if worker
            .stop_and_wait(Some("shard released".to_string()), Some(timeout))
            .await
            .is_err()
        {
            tracing::warn!(
                "a read-side worker did not finish its handler call in time; killed (the event comes again)"
            );
            worker.kill();
        }
    });
    futures::future::join_all(stops).await;
}
