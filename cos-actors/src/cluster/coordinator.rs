//! The shard coordinator: decides which node hosts each shard (least-shards allocation). Every node runs
//! one, but only the one on the oldest up member answers; the others point callers to it. A coordinator that
//! takes over rebuilds the allocation by asking every member which shards it hosts, and holds requests
//! until it knows. When a member is downed or leaves, its shards lose their home and are allocated again on
//! their next request. (Rebalancing onto joining members and hand-off are not built yet.)

use std::time::Duration;

use cos_core::cluster::allocation::{NodeName, ShardAllocation};
use cos_core::proto::internal::{
    HostedShardsReport, HostedShardsRequest, ShardHomeReply, ShardHomeRequest,
};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::RactorClusterMessage;
use tokio::sync::watch;

use super::endpoint::EndpointMessage;
use super::remote::{coordinator_group, endpoint_group, remote_member};
use super::view::ClusterView;
use super::wire::Wire;

/// How long a new coordinator waits for each member's report of its shards.
const REPORT_TIMEOUT: Duration = Duration::from_secs(2);

/// Messages of the coordinator.
#[derive(RactorClusterMessage)]
pub enum CoordinatorMessage {
    /// Which node hosts this shard (allocating it if nobody does)?
    #[rpc]
    GetHome(Wire<ShardHomeRequest>, RpcReplyPort<Wire<ShardHomeReply>>),
    /// The membership view changed.
    ViewChanged(()),
    /// The members' reports of what they host, gathered after taking over.
    Rebuilt(Wire<HostedShardsReport>),
}

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
    waiting: Vec<(u32, RpcReplyPort<Wire<ShardHomeReply>>)>,
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
            waiting: Vec::new(),
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
            CoordinatorMessage::ViewChanged(()) => state.view_changed(&myself),
            CoordinatorMessage::Rebuilt(Wire(report)) => state.rebuilt(report),
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
        let _ = reply.send(Wire(answer(allocation, shard)));
    }

    fn view_changed(&mut self, myself: &ActorRef<CoordinatorMessage>) {
        let view = self.current_view();
        if !self.is_coordinator(&view) {
            if self.allocation.take().is_some() {
                tracing::info!("no longer the shard coordinator");
            }
            self.rebuilding = false;
            let leader = view.coordinator_host().unwrap_or_default().to_string();
            for (_, reply) in self.waiting.drain(..) {
                let _ = reply.send(Wire(ShardHomeReply {
                    ask_leader: leader.clone(),
                    ..ShardHomeReply::default()
                }));
            }
            return;
        }
        match self.allocation.as_mut() {
            None => self.start_rebuild(myself, &view),
            Some(allocation) => sync_members(allocation, &view),
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
        let members: Vec<String> = view
            .shard_hosts()
            .map(|member| member.name.clone())
            .collect();
        let self_name = self.self_name.clone();
        let coordinator = myself.clone();
        tokio::spawn(async move {
            let mut reports = Vec::new();
            for member in members {
                let group = endpoint_group(&member);
                let cell = if member == self_name {
                    ractor::pg::get_members(&group).into_iter().next()
                } else {
                    remote_member(&group)
                };
                let Some(cell) = cell else {
                    continue;
                };
                let endpoint: ActorRef<EndpointMessage> = cell.into();
                let answer = endpoint
                    .call(
                        |port| EndpointMessage::HostedShards(Wire(HostedShardsRequest {}), port),
                        Some(REPORT_TIMEOUT),
                    )
                    .await;
                if let Ok(ractor::rpc::CallResult::Success(Wire(report))) = answer {
                    reports.push(report);
                }
            }
            let _ = coordinator.cast(CoordinatorMessage::Rebuilt(Wire(HostedShardsReport {
                reports,
            })));
        });
    }

    fn rebuilt(&mut self, report: HostedShardsReport) {
        self.rebuilding = false;
        let view = self.current_view();
        if !self.is_coordinator(&view) {
            return;
        }
        let hosted = report
            .reports
            .into_iter()
            .filter(|report| !report.node.is_empty())
            .map(|report| (NodeName::new(report.node), report.shards));
        let (mut allocation, conflicts) = ShardAllocation::from_hosted(hosted);
        for conflict in conflicts {
            tracing::warn!(shard = conflict.shard, kept = %conflict.kept, dropped = %conflict.dropped,
                "a shard was hosted twice; keeping one home");
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

/// Makes the allocation's members the view's up members; shards of members that left lose their home.
fn sync_members(allocation: &mut ShardAllocation, view: &ClusterView) {
    let up: Vec<NodeName> = view
        .shard_hosts()
        .map(|member| NodeName::new(member.name.clone()))
        .collect();
    let gone: Vec<NodeName> = allocation
        .members()
        .filter(|member| !up.contains(member))
        .cloned()
        .collect();
    for member in gone {
        let orphaned = allocation.remove_node(&member);
        tracing::warn!(member = %member, shards = orphaned.len(), "member gone; its shards will be reallocated");
    }
    for member in up {
        allocation.add_node(member);
    }
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
