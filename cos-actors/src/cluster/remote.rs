//! Requests and replies between nodes: an envelope becomes an `EntityRequest` on one side and an envelope
//! again on the other; process groups named after nodes (`cos-endpoint@name@host`) locate the peers.

use std::time::Duration;

use cos_core::domain::EntityId;
use cos_core::error::CommandError;
use cos_core::proto::internal::{
    EntityReply, EntityRequest, GetState, entity_reply, entity_request,
};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::envelope::{EntityEnvelope, EntityRequest as LocalRequest, EntityResult};
use crate::router::REPLY_GRACE;

/// The process group of a node's region endpoint.
pub fn endpoint_group(node: &str) -> String {
    format!("cos-endpoint@{node}")
}

/// The process group of a node's shard coordinator.
pub fn coordinator_group(node: &str) -> String {
    format!("cos-coordinator@{node}")
}

/// The first member of a process group that lives on another node.
pub fn remote_member(group: &str) -> Option<ractor::ActorCell> {
    ractor::pg::get_members(&group.to_string())
        .into_iter()
        .find(|cell| !cell.get_id().is_local())
}

/// The actor a node registered in `group`: the local member when `node` is this node, else a remote one.
pub fn member_on(self_name: &str, node: &str, group: &str) -> Option<ractor::ActorCell> {
    if node == self_name {
        ractor::pg::get_members(&group.to_string())
            .into_iter()
            .next()
    } else {
        remote_member(group)
    }
}

/// The wire form of a request; the deadline travels as the time left, since clocks differ between nodes.
pub fn to_wire(entity_type: &str, envelope: &EntityEnvelope) -> EntityRequest {
    let remaining = envelope.deadline.saturating_duration_since(Instant::now());
    let kind = match &envelope.request {
        LocalRequest::ProcessCommand(command) => {
            entity_request::Kind::ProcessCommand(command.clone())
        }
        LocalRequest::GetState => entity_request::Kind::GetState(GetState {}),
    };
    EntityRequest {
        entity_type: entity_type.to_string(),
        entity_id: envelope.entity_id.as_str().to_string(),
        remaining_millis: u64::try_from(remaining.as_millis()).unwrap_or(u64::MAX),
        kind: Some(kind),
    }
}

/// Rebuilds an envelope from another node's request; the reply comes back on the returned channel.
pub fn from_wire(
    request: EntityRequest,
) -> Result<(Box<EntityEnvelope>, oneshot::Receiver<EntityResult>), CommandError> {
    let entity_id = EntityId::parse(request.entity_id)?;
    let local_request = match request.kind {
        Some(entity_request::Kind::ProcessCommand(command)) => {
            LocalRequest::ProcessCommand(command)
        }
        Some(entity_request::Kind::GetState(_)) => LocalRequest::GetState,
        None => {
            return Err(CommandError::InvalidArgument(
                "request from another node has no kind".to_string(),
            ));
        }
    };
    let (reply, answer) = oneshot::channel();
    let envelope = Box::new(EntityEnvelope {
        entity_id,
        request: local_request,
        deadline: Instant::now() + Duration::from_millis(request.remaining_millis),
        from_remote: true,
        reroutes: 0,
        reply,
    });
    Ok((envelope, answer))
}

/// The wire form of an answer.
pub fn reply_to_wire(result: EntityResult) -> EntityReply {
    let not_hosted_here = matches!(result, Err(CommandError::NotHostedHere(_)));
    let reply = match result {
        Ok(state) => entity_reply::Reply::State(state),
        Err(error) => entity_reply::Reply::Error(error.to_rpc_status()),
    };
    EntityReply {
        reply: Some(reply),
        not_hosted_here,
    }
}

/// An answer from another node.
pub fn reply_from_wire(reply: EntityReply) -> EntityResult {
    if reply.not_hosted_here {
        return Err(CommandError::NotHostedHere(
            "the shard moved away from the node asked".to_string(),
        ));
    }
    match reply.reply {
        Some(entity_reply::Reply::State(state)) => Ok(state),
        Some(entity_reply::Reply::Error(status)) => Err(CommandError::Remote(status)),
        None => Err(CommandError::OutcomeUnknown(
            "another node answered with an empty reply".to_string(),
        )),
    }
}

/// How long to wait for another node's answer: the request's time plus the commit grace for commands.
pub fn remote_wait(envelope: &EntityEnvelope) -> Duration {
    let remaining = envelope.deadline.saturating_duration_since(Instant::now());
    match envelope.request {
        LocalRequest::ProcessCommand(_) => remaining + REPLY_GRACE,
        LocalRequest::GetState => remaining,
    }
}
