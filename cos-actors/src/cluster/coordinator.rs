//! The shard coordinator: decides which node hosts each shard (least-shards allocation). Every node runs
//! one, but only the one on the oldest up member answers; the others point callers to it. A coordinator that
//! takes over rebuilds the allocation by asking every member which shards it hosts, and holds requests
//! until it knows. When a member is downed, its shards lose their home and are allocated again on their next
//! request. Every rebalance interval it moves shards from leaving members (all of them) and from the most
//! loaded members to the least loaded (a bounded number per round): the owner hands the shard off (its
//! entities finish their queues), then the move is recorded; requests for a moving shard wait for the move.

use std::time::Duration;

use cos_core::cluster::allocation::{NodeName, RebalanceLimits, ShardAllocation, ShardMove};
use cos_core::proto::internal::{
    HandOffReply, HandOffRequest, HostedShardsReply, HostedShardsReport, HostedShardsRequest,
    ShardHome, ShardHomeReply, ShardHomeRequest, ShardHomesReply, ShardHomesRequest,
    ShardMoveResult,
};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::RactorClusterMessage;
use tokio::sync::watch;

use super::endpoint::EndpointMessage;
use super::remote::{coordinator_group, endpoint_group, member_on};
use super::view::{ClusterView, MemberState};
use super::wire::Wire;

/// How long a new coordinator waits for each member's report of its shards.
const REPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// How often a new coordinator asks a member that did not report.
const REPORT_ATTEMPTS: u32 = 3;

/// Messages of the coordinator.
#[derive(RactorClusterMessage)]
pub enum CoordinatorMessage {
    /// Which node hosts this shard (allocating it if nobody does)?
    #[rpc]
    GetHome(Wire<ShardHomeRequest>, RpcReplyPort<Wire<ShardHomeReply>>),
    /// Where do these shards live (allocating those nobody hosts)? Shards being moved are left out.
    #[rpc]
    GetHomes(Wire<ShardHomesRequest>, RpcReplyPort<Wire<ShardHomesReply>>),
    /// The membership view changed.
    ViewChanged(()),
    /// The members' reports of what they host, gathered after taking over.
    Rebuilt(Wire<HostedShardsReport>),
    /// Time to drain leaving members and rebalance.
    Rebalance(()),
    /// A hand-off finished (or failed).
    MoveFinished(Wire<ShardMoveResult>),
    /// What a member that joined after the allocation was built already hosts.
    Adopt(Wire<HostedShardsReply>),
}

/// How often the coordinator drains leaving members and rebalances.
const REBALANCE_INTERVAL: Duration = Duration::from_secs(2);

/// How long the coordinator waits for one hand-off.
const HAND_OFF_WAIT: Duration = Duration::from_secs(40);

/// Arguments of the coordinator.
pub struct CoordinatorArguments {
    pub self_name: String,
    pub view: watch::Receiver<ClusterView>,
}

/// The state of the coordinator.
pub struct CoordinatorState {
    self_name: String,
    view: watch::Receiver<ClusterView>,
    allocation: Option<ShardAllocation>,
    rebuilding: bool,
    /// Counts take-overs; reports gathered for an earlier one are ignored.
    rebuild_epoch: u64,
    waiting: Vec<(u32, RpcReplyPort<Wire<ShardHomeReply>>)>,
    /// Requests for shards that are moving, answered when the move ends.
    waiting_for_moves: Vec<(u32, RpcReplyPort<Wire<ShardHomeReply>>)>,
    limits: RebalanceLimits,
}

/// The coordinator actor.
pub struct CoordinatorActor;

impl Actor for CoordinatorActor {
    type Msg = CoordinatorMessage;
    type State = CoordinatorState;
    type Arguments = CoordinatorArguments;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        arguments: CoordinatorArguments,
    ) -> Result<CoordinatorState, ActorProcessingErr> {
        ractor::pg::join(
            coordinator_group(&arguments.self_name),
            vec![myself.get_cell()],
        );
        myself.send_interval(REBALANCE_INTERVAL, || CoordinatorMessage::Rebalance(()));
        let mut changes = arguments.view.clone();
        let coordinator = myself.clone();
        tokio::spawn(async move {
            while changes.changed().await.is_ok() {
                if coordinator
                    .cast(CoordinatorMessage::ViewChanged(()))
                    .is_err()
                {
                    break;
                }
            }
        });
        Ok(CoordinatorState {
            self_name: arguments.self_name,
            view: arguments.view,
            allocation: None,
            rebuilding: false,
            rebuild_epoch: 0,
            waiting: Vec::new(),
            waiting_for_moves: Vec::new(),
            limits: RebalanceLimits::default(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: CoordinatorMessage,
        state: &mut CoordinatorState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            CoordinatorMessage::GetHome(Wire(request), reply) => {
                state.get_home(&myself, request.shard, reply)
            }
            CoordinatorMessage::GetHomes(Wire(request), reply) => {
                state.get_homes(&myself, &request.shards, reply)
            }
            CoordinatorMessage::ViewChanged(()) => state.view_changed(&myself),
            CoordinatorMessage::Rebuilt(Wire(report)) => state.rebuilt(report),
            CoordinatorMessage::Rebalance(()) => state.rebalance(&myself),
            CoordinatorMessage::MoveFinished(Wire(result)) => state.move_finished(result),
            CoordinatorMessage::Adopt(Wire(report)) => state.adopt(report),
        }
        Ok(())
    }
}

impl CoordinatorState {
    fn current_view(&self) -> ClusterView {
        self.view.borrow().clone()
    }

    fn is_coordinator(&self, view: &ClusterView) -> bool {
        view.coordinator_host() == Some(self.self_name.as_str())
    }

    fn get_home(
        &mut self,
        myself: &ActorRef<CoordinatorMessage>,
        shard: u32,
        reply: RpcReplyPort<Wire<ShardHomeReply>>,
    ) {
        let view = self.current_view();
        if !self.is_coordinator(&view) {
            let _ = reply.send(Wire(ShardHomeReply {
                ask_leader: view.coordinator_host().unwrap_or_default().to_string(),
                ..ShardHomeReply::default()
            }));
            return;
        }
        let Some(allocation) = self.allocation.as_mut() else {
            self.waiting.push((shard, reply));
            self.start_rebuild(myself, &view);
            return;
        };
        if allocation.move_of(shard).is_some() {
            self.waiting_for_moves.push((shard, reply));
            return;
        }
        let _ = reply.send(Wire(answer(allocation, shard)));
    }

    /// Answers at once with what is known: unlike [`Self::get_home`] it never waits for a move or a rebuild
    /// (the caller asks again on its next check).
    fn get_homes(
        &mut self,
        myself: &ActorRef<CoordinatorMessage>,
        shards: &[u32],
        reply: RpcReplyPort<Wire<ShardHomesReply>>,
    ) {
        let view = self.current_view();
        if !self.is_coordinator(&view) {
            let _ = reply.send(Wire(ShardHomesReply {
                ask_leader: view.coordinator_host().unwrap_or_default().to_string(),
                ..ShardHomesReply::default()
            }));
            return;
        }
        let Some(allocation) = self.allocation.as_mut() else {
            self.start_rebuild(myself, &view);
            let _ = reply.send(Wire(ShardHomesReply {
                error: "the coordinator is rebuilding its allocation".to_string(),
                ..ShardHomesReply::default()
            }));
            return;
        };
        let mut homes = Vec::with_capacity(shards.len());
        for &shard in shards {
            if allocation.move_of(shard).is_some() {
                continue;
            }
            if let Some(node) = allocation.allocate(shard) {
                homes.push(ShardHome {
                    shard,
                    node: node.as_str().to_string(),
                });
            }
        }
        let _ = reply.send(Wire(ShardHomesReply {
            homes,
            ..ShardHomesReply::default()
        }));
    }

    /// Drains leaving members, then runs one bounded rebalance round; each move is handed off in a task.
    fn rebalance(&mut self, myself: &ActorRef<CoordinatorMessage>) {
        let view = self.current_view();
        if !self.is_coordinator(&view) {
            return;
        }
        let Some(allocation) = self.allocation.as_mut() else {
            return;
        };
        let mut moves = Vec::new();
        for member in view
            .members
            .iter()
            .filter(|member| member.state == MemberState::Leaving)
        {
            let node = NodeName::new(member.name.clone());
            if allocation.is_member(&node) {
                let drained = allocation.drain_node(&node);
                tracing::info!(member = %node, moves = drained.len(), hosted = allocation.shards_of(&node).map_or(0, |shards| shards.len()), "draining a leaving member");
                moves.extend(drained);
            } else {
                tracing::debug!(member = %node, "leaving member hosts nothing here");
            }
        }
        if moves.is_empty() {
            moves = allocation.rebalance(&self.limits);
        }
        for planned in moves {
            tracing::info!(shard = planned.shard, from = %planned.from, to = %planned.to, "moving shard");
            let coordinator = myself.clone();
            let self_name = self.self_name.clone();
            tokio::spawn(async move {
                let done = hand_off(&self_name, &planned.from, planned.shard).await;
                let _ = coordinator.cast(CoordinatorMessage::MoveFinished(Wire(ShardMoveResult {
                    shard: planned.shard,
                    from: planned.from.as_str().to_string(),
                    to: planned.to.as_str().to_string(),
                    done,
                })));
            });
        }
    }

    /// Takes over what a joined member already hosts; copies of shards homed elsewhere are handed off.
    fn adopt(&mut self, report: HostedShardsReply) {
        let Some(allocation) = self.allocation.as_mut() else {
            return;
        };
        let node = NodeName::new(report.node);
        for shard in report.shards {
            if let Some(owner) = allocation.adopt(&node, shard) {
                tracing::warn!(shard, %node, %owner, "a joined member hosts a shard homed elsewhere; handing its copy off");
                hand_off_copy(&self.self_name, &node, shard);
            }
        }
    }

    fn move_finished(&mut self, result: ShardMoveResult) {
        let Some(allocation) = self.allocation.as_mut() else {
            return;
        };
        let finished = ShardMove {
            shard: result.shard,
            from: NodeName::new(result.from),
            to: NodeName::new(result.to),
        };
        if result.done {
            let completion = allocation.complete_move(&finished);
            tracing::info!(shard = finished.shard, to = %finished.to, ?completion, "shard moved");
        } else {
            allocation.abort_move(&finished);
            tracing::warn!(shard = finished.shard, from = %finished.from, "hand-off failed; shard stays");
        }
        let (ready, still_moving): (Vec<_>, Vec<_>) = self
            .waiting_for_moves
            .drain(..)
            .partition(|(shard, _)| allocation.move_of(*shard).is_none());
        self.waiting_for_moves = still_moving;
        for (shard, reply) in ready {
            let _ = reply.send(Wire(answer(allocation, shard)));
        }
    }

    fn view_changed(&mut self, myself: &ActorRef<CoordinatorMessage>) {
        let view = self.current_view();
        if !self.is_coordinator(&view) {
            if self.allocation.take().is_some() {
                tracing::info!("no longer the shard coordinator");
            }
            self.rebuilding = false;
            let leader = view.coordinator_host().unwrap_or_default().to_string();
            let waiting: Vec<_> = self
                .waiting
                .drain(..)
                .chain(self.waiting_for_moves.drain(..))
                .collect();
            for (_, reply) in waiting {
                let _ = reply.send(Wire(ShardHomeReply {
                    ask_leader: leader.clone(),
                    ..ShardHomeReply::default()
                }));
            }
            return;
        }
        match self.allocation.as_mut() {
            None => self.start_rebuild(myself, &view),
            Some(allocation) => {
                for joined in sync_members(allocation, &view) {
                    ask_for_report(myself, &self.self_name, joined);
                }
            }
        }
    }

    /// Asks every up member which shards it hosts (including shards it kept while no coordinator ran).
    fn start_rebuild(&mut self, myself: &ActorRef<CoordinatorMessage>, view: &ClusterView) {
        if self.rebuilding {
            return;
        }
        self.rebuilding = true;
        tracing::info!(
            members = view.members.len(),
            "taking over as shard coordinator"
        );
        // Leaving members too: they still host shards until drained.
        let members: Vec<String> = view
            .members
            .iter()
            .map(|member| member.name.clone())
            .collect();
        self.rebuild_epoch += 1;
        let epoch = self.rebuild_epoch;
        let self_name = self.self_name.clone();
        let coordinator = myself.clone();
        tokio::spawn(async move {
            let asks = members
                .into_iter()
                .map(|member| report_of(self_name.clone(), member));
            let reports: Vec<HostedShardsReply> = futures::future::join_all(asks)
                .await
                .into_iter()
                .flatten()
                .collect();
            let _ = coordinator.cast(CoordinatorMessage::Rebuilt(Wire(HostedShardsReport {
                reports,
                epoch,
            })));
        });
    }

    fn rebuilt(&mut self, report: HostedShardsReport) {
        if report.epoch != self.rebuild_epoch {
            return;
        }
        self.rebuilding = false;
        let view = self.current_view();
        if !self.is_coordinator(&view) {
            return;
        }
        for hosted in &report.reports {
            tracing::debug!(node = %hosted.node, shards = hosted.shards.len(), "member reported its shards");
        }
        let hosted = report
            .reports
            .into_iter()
            .filter(|report| !report.node.is_empty())
            .map(|report| (NodeName::new(report.node), report.shards));
        let (mut allocation, conflicts) = ShardAllocation::from_hosted(hosted);
        let mut conflicts_to_resolve = Vec::new();
        for conflict in conflicts {
            tracing::warn!(shard = conflict.shard, kept = %conflict.kept, dropped = %conflict.dropped,
                "a shard was hosted twice; the other copy is handed off");
            conflicts_to_resolve.push((conflict.dropped, conflict.shard));
        }
        sync_members(&mut allocation, &view);
        tracing::info!(
            allocated = allocation.allocated_shards(),
            "shard allocation rebuilt"
        );
        for (shard, reply) in self.waiting.drain(..) {
            let _ = reply.send(Wire(answer(&mut allocation, shard)));
        }
        self.allocation = Some(allocation);
    }
}

/// Makes the allocation's members the view's members: up members join, members no longer in the view (downed)
/// lose their shards. Leaving members stay until drained. Returns the members that joined.
fn sync_members(allocation: &mut ShardAllocation, view: &ClusterView) -> Vec<NodeName> {
    let up: Vec<NodeName> = view
        .shard_hosts()
        .map(|member| NodeName::new(member.name.clone()))
        .collect();
    let gone: Vec<NodeName> = allocation
        .members()
        .filter(|member| !view.contains(member.as_str()))
        .cloned()
        .collect();
    for member in gone {
        let orphaned = allocation.remove_node(&member);
        tracing::warn!(member = %member, shards = orphaned.len(), "member gone; its shards will be reallocated");
    }
    let mut joined = Vec::new();
    for member in up {
        allocation.undrain(&member);
        if allocation.add_node(member.clone()) {
            joined.push(member);
        }
    }
    joined
}

/// A member's report of the shards it hosts, asked up to `REPORT_ATTEMPTS` times; `None` if it never
/// answered (it is then treated as hosting nothing, and its own regions hand off whatever the new allocation
/// homes elsewhere).
async fn report_of(self_name: String, member: String) -> Option<HostedShardsReply> {
    for attempt in 1..=REPORT_ATTEMPTS {
        let cell = member_on(&self_name, &member, &endpoint_group(&member));
        if let Some(cell) = cell {
            let endpoint: ActorRef<EndpointMessage> = cell.into();
            let answer = endpoint
                .call(
                    |port| EndpointMessage::HostedShards(Wire(HostedShardsRequest {}), port),
                    Some(REPORT_TIMEOUT),
                )
                .await;
            if let Ok(ractor::rpc::CallResult::Success(Wire(report))) = answer {
                return Some(report);
            }
        }
        tracing::warn!(%member, attempt, "a member did not report its shards");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    None
}

/// Asks a member that joined what it already hosts (it may have run alone before joining).
fn ask_for_report(coordinator: &ActorRef<CoordinatorMessage>, self_name: &str, member: NodeName) {
    let coordinator = coordinator.clone();
    let self_name = self_name.to_string();
    tokio::spawn(async move {
        if let Some(report) = report_of(self_name, member.as_str().to_string()).await {
            let _ = coordinator.cast(CoordinatorMessage::Adopt(Wire(report)));
        }
    });
}

/// Tells `node` to drop its copy of a shard homed elsewhere (fire and forget; the copy is stopped after its
/// queued requests are answered).
fn hand_off_copy(self_name: &str, node: &NodeName, shard: u32) {
    let self_name = self_name.to_string();
    let node = node.clone();
    tokio::spawn(async move {
        if !hand_off(&self_name, &node, shard).await {
            tracing::warn!(shard, %node, "could not stop a duplicate copy of a shard");
        }
    });
}

/// Asks `from`'s region endpoint to stop hosting `shard`; true once it has.
async fn hand_off(self_name: &str, from: &NodeName, shard: u32) -> bool {
    let cell = member_on(self_name, from.as_str(), &endpoint_group(from.as_str()));
    let Some(cell) = cell else {
        return false;
    };
    let endpoint: ActorRef<EndpointMessage> = cell.into();
    let reply = endpoint
        .call(
            |port| EndpointMessage::HandOff(Wire(HandOffRequest { shard }), port),
            Some(HAND_OFF_WAIT),
        )
        .await;
    matches!(
        reply,
        Ok(ractor::rpc::CallResult::Success(Wire(HandOffReply {
            done: true
        })))
    )
}

fn answer(allocation: &mut ShardAllocation, shard: u32) -> ShardHomeReply {
    match allocation.allocate(shard) {
        Some(node) => ShardHomeReply {
            node: node.as_str().to_string(),
            ..ShardHomeReply::default()
        },
        None => ShardHomeReply {
            error: "no member can host shards".to_string(),
            ..ShardHomeReply::default()
        },
    }
}
