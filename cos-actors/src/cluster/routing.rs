//! The remote half of a region's routing: asking the coordinator where a shard lives, and forwarding a
//! request to the node that hosts it. Both run as tasks so the region never waits on the network.

use std::collections::HashMap;
use std::time::Duration;

use cos_core::error::CommandError;
use cos_core::proto::internal::{
    ShardHomeReply, ShardHomeRequest, ShardHomesReply, ShardHomesRequest,
};
use ractor::{ActorRef, RpcReplyPort};
use tokio::sync::watch;

use super::coordinator::CoordinatorMessage;
use super::endpoint::EndpointMessage;
use super::remote::{
    coordinator_group, endpoint_group, member_on, remote_member, remote_wait, reply_from_wire,
    to_wire,
};
use super::view::ClusterView;
use super::wire::Wire;
use crate::envelope::{EntityEnvelope, EntityRequest};

/// How long a region waits for the coordinator's answer.
const COORDINATOR_TIMEOUT: Duration = Duration::from_secs(5);

/// What a region needs to route across nodes.
#[derive(Clone)]
pub struct RegionCluster {
    pub self_name: String,
    pub view: watch::Receiver<ClusterView>,
}

/// Asks the coordinator (on the oldest up member) for the shard's home; follows one redirect.
pub async fn resolve_home(cluster: &RegionCluster, shard: u32) -> Result<String, String> {
    ask_coordinator(
        cluster,
        |port| CoordinatorMessage::GetHome(Wire(ShardHomeRequest { shard }), port),
        |Wire(reply): Wire<ShardHomeReply>| {
            if !reply.node.is_empty() {
                Answer::Done(Ok(reply.node))
            } else if !reply.error.is_empty() {
                Answer::Done(Err(reply.error))
            } else {
                Answer::AskLeader(reply.ask_leader)
            }
        },
    )
    .await
}

/// The homes of `shards` that have one now, in one call to the coordinator (allocating shards nobody hosts);
/// a shard being moved is left out. Follows one redirect.
pub async fn resolve_homes(
    cluster: &RegionCluster,
    shards: &[u32],
) -> Result<HashMap<u32, String>, String> {
    let request = ShardHomesRequest {
        shards: shards.to_vec(),
    };
    ask_coordinator(
        cluster,
        |port| CoordinatorMessage::GetHomes(Wire(request.clone()), port),
        |Wire(reply): Wire<ShardHomesReply>| {
            if !reply.error.is_empty() {
                Answer::Done(Err(reply.error))
            } else if !reply.ask_leader.is_empty() {
                Answer::AskLeader(reply.ask_leader)
            } else {
                let homes = reply.homes.into_iter().map(|home| (home.shard, home.node));
                Answer::Done(Ok(homes.collect()))
            }
        },
    )
    .await
}

/// What one coordinator said: the outcome, or which node to ask instead (empty: nobody knows yet).
enum Answer<T> {
    Done(Result<T, String>),
    AskLeader(String),
}

/// Calls the coordinator with `message` and reads its reply with `read`, following one redirect.
async fn ask_coordinator<Reply: Send + 'static, T>(
    cluster: &RegionCluster,
    message: impl Fn(RpcReplyPort<Reply>) -> CoordinatorMessage,
    read: impl Fn(Reply) -> Answer<T>,
) -> Result<T, String> {
    let mut coordinator_node = cluster
        .view
        .borrow()
        .coordinator_host()
        .map(str::to_string)
        .ok_or_else(|| "no coordinator: no member is up".to_string())?;
    for _attempt in 0..2 {
        let cell = member_on(
            &cluster.self_name,
            &coordinator_node,
            &coordinator_group(&coordinator_node),
        );
        let cell =
            cell.ok_or_else(|| format!("coordinator on {coordinator_node} is not reachable"))?;
        let coordinator: ActorRef<CoordinatorMessage> = cell.into();
        let answer = coordinator.call(&message, Some(COORDINATOR_TIMEOUT)).await;
        let reply = match answer {
            Ok(ractor::rpc::CallResult::Success(reply)) => reply,
            _ => return Err(format!("coordinator on {coordinator_node} did not answer")),
        };
        match read(reply) {
            Answer::Done(outcome) => return outcome,
            Answer::AskLeader(leader) if leader.is_empty() || leader == coordinator_node => {
                return Err("the cluster has no coordinator yet".to_string());
            }
            Answer::AskLeader(leader) => coordinator_node = leader,
        }
    }
    Err("the coordinator moved while asking; retry".to_string())
}

/// What became of a forwarded request.
pub enum Forwarded {
    /// The home answered (or the outcome is known to be unknown); the caller has its reply.
    Answered,
    /// The request never reached a node that could run it; the caller was told to retry.
    Unreachable,
    /// The node no longer hosts the shard, or is gone and the request was not sent: route it again.
    Moved(Box<EntityEnvelope>),
}

/// Sends a request to the region endpoint of `home` and answers the envelope with its reply, unless the shard
/// moved away from `home`, in which case the envelope comes back to be routed again.
pub async fn forward(home: &str, entity_type: &str, envelope: Box<EntityEnvelope>) -> Forwarded {
    let Some(cell) = remote_member(&endpoint_group(home)) else {
        // Nothing was sent: the node is gone (left, restarting or downed), so ask the coordinator again.
        return Forwarded::Moved(envelope);
    };
    let endpoint: ActorRef<EndpointMessage> = cell.into();
    let request = to_wire(entity_type, &envelope);
    let wait = remote_wait(&envelope);
    let is_command = matches!(envelope.request, EntityRequest::ProcessCommand(_));
    let answer = endpoint
        .call(
            |port| EndpointMessage::Forward(Wire(request), port),
            Some(wait),
        )
        .await;
    match answer {
        Ok(ractor::rpc::CallResult::Success(Wire(reply))) => match reply_from_wire(reply) {
            Err(CommandError::NotHostedHere(_)) => Forwarded::Moved(envelope),
            result => {
                envelope.answer(result);
                Forwarded::Answered
            }
        },
        _ if is_command => {
            envelope.answer(Err(CommandError::OutcomeUnknown(format!(
                "node {home} did not answer; the command may or may not have been persisted"
            ))));
            Forwarded::Unreachable
        }
        _ => {
            envelope.answer(Err(CommandError::Retry(format!(
                "node {home} did not answer; retry"
            ))));
            Forwarded::Unreachable
        }
    }
}
