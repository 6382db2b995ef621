//! The region endpoint: the remotable face of this node's shard regions. Other nodes' regions forward
//! requests for shards homed here to it, and a new coordinator asks it which shards this node hosts.
//! Entities and regions themselves stay local actors.

use std::collections::HashMap;

use cos_core::error::CommandError;
use cos_core::proto::internal::{
    EntityReply, EntityRequest, HandOffReply, HandOffRequest, HostedShardsReply,
    HostedShardsRequest,
};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::RactorClusterMessage;

use super::remote::{endpoint_group, from_wire, reply_to_wire};
use super::wire::Wire;
use crate::readside::host::HostMessage;
use crate::region::RegionMessage;
use crate::router::REPLY_GRACE;

/// Messages of the region endpoint.
#[derive(RactorClusterMessage)]
pub enum EndpointMessage {
    /// Run a request on an entity of this node and answer.
    #[rpc]
    Forward(Wire<EntityRequest>, RpcReplyPort<Wire<EntityReply>>),
    /// Which shards does this node host?
    #[rpc]
    HostedShards(
        Wire<HostedShardsRequest>,
        RpcReplyPort<Wire<HostedShardsReply>>,
    ),
    /// Stop hosting a shard (the coordinator moves it elsewhere once this answers).
    #[rpc]
    HandOff(Wire<HandOffRequest>, RpcReplyPort<Wire<HandOffReply>>),
}

/// How long a hand-off may take on this node (entities finish their queues first).
const HAND_OFF_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(35);

/// Arguments of the endpoint.
pub struct EndpointArguments {
    pub self_name: String,
    pub regions: HashMap<String, ActorRef<RegionMessage>>,
    /// This node's read-side host, when read sides are enabled: its workers move with their shards.
    pub read_sides: Option<ActorRef<HostMessage>>,
}

/// The endpoint actor.
pub struct EndpointActor;

impl Actor for EndpointActor {
    type Msg = EndpointMessage;
    type State = EndpointArguments;
    type Arguments = EndpointArguments;

    async fn post_stop(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut EndpointArguments,
    ) -> Result<(), ActorProcessingErr> {
        ractor::pg::leave(endpoint_group(&state.self_name), vec![myself.get_cell()]);
        Ok(())
    }

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        arguments: EndpointArguments,
    ) -> Result<EndpointArguments, ActorProcessingErr> {
        ractor::pg::join(
            endpoint_group(&arguments.self_name),
            vec![myself.get_cell()],
        );
        Ok(arguments)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: EndpointMessage,
        state: &mut EndpointArguments,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            EndpointMessage::Forward(Wire(request), reply) => state.forward(request, reply),
            EndpointMessage::HostedShards(_, reply) => state.hosted_shards(reply),
            EndpointMessage::HandOff(Wire(request), reply) => state.hand_off(request.shard, reply),
        }
        Ok(())
    }
}

impl EndpointArguments {
    fn forward(&self, request: EntityRequest, reply: RpcReplyPort<Wire<EntityReply>>) {
        let Some(region) = self.regions.get(&request.entity_type).cloned() else {
            let error = CommandError::UnknownEntityType(request.entity_type.clone());
            let _ = reply.send(Wire(reply_to_wire(Err(error))));
            return;
        };
        let (envelope, answer) = match from_wire(request) {
            Ok(parts) => parts,
            Err(error) => {
                let _ = reply.send(Wire(reply_to_wire(Err(error))));
                return;
            }
        };
        let wait_until = envelope.deadline + REPLY_GRACE;
        if region.cast(RegionMessage::Deliver(envelope)).is_err() {
            // This node is stopping: the sender routes the request again.
            let error = CommandError::NotHostedHere("region stopped".to_string());
            let _ = reply.send(Wire(reply_to_wire(Err(error))));
            return;
        }
        tokio::spawn(async move {
            let result = match tokio::time::timeout_at(wait_until, answer).await {
                Ok(Ok(result)) => result,
                _ => Err(CommandError::OutcomeUnknown(
                    "the entity did not answer; the request may or may not have been applied"
                        .into(),
                )),
            };
            let _ = reply.send(Wire(reply_to_wire(result)));
        });
    }

    fn hand_off(&self, shard: u32, reply: RpcReplyPort<Wire<HandOffReply>>) {
        let regions: Vec<ActorRef<RegionMessage>> = self.regions.values().cloned().collect();
        let read_sides = self.read_sides.clone();
        tokio::spawn(async move {
            // The shard's read-side workers stop (the new home's start from the stored offsets) while its
            // entities drain: both in parallel, so a slow read handler does not lengthen the move.
            let release_read_sides = async {
                let Some(host) = read_sides else {
                    return true;
                };
                let released = host
                    .call(
                        |port| HostMessage::Release(shard, port),
                        Some(HAND_OFF_TIMEOUT),
                    )
                    .await;
                let done = matches!(released, Ok(ractor::rpc::CallResult::Success(())));
                if !done {
                    tracing::warn!(shard, "read-side workers did not confirm their release");
                }
                done
            };
            let hand_off_regions =
                futures::future::join_all(regions.into_iter().map(|region| async move {
                    let stopped = region
                        .call(
                            |port| RegionMessage::HandOff(shard, port),
                            Some(HAND_OFF_TIMEOUT),
                        )
                        .await;
                    matches!(stopped, Ok(ractor::rpc::CallResult::Success(true)))
                }));
            let (read_sides_done, regions_done) =
                futures::future::join(release_read_sides, hand_off_regions).await;
            let done = read_sides_done && regions_done.into_iter().all(|done| done);
            let _ = reply.send(Wire(HandOffReply { done }));
        });
    }

    fn hosted_shards(&self, reply: RpcReplyPort<Wire<HostedShardsReply>>) {
        let regions: Vec<ActorRef<RegionMessage>> = self.regions.values().cloned().collect();
        let read_sides = self.read_sides.clone();
        let node = self.self_name.clone();
        tokio::spawn(async move {
            let asks = regions.into_iter().map(|region| async move {
                region
                    .call(
                        RegionMessage::LocalShards,
                        Some(std::time::Duration::from_secs(2)),
                    )
                    .await
            });
            let mut shards = std::collections::BTreeSet::new();
            for local in futures::future::join_all(asks).await {
                if let Ok(ractor::rpc::CallResult::Success(list)) = local {
                    shards.extend(list);
                }
            }
            // Shards with read-side workers but no live entities are hosted here too.
            if let Some(host) = read_sides {
                let hosted = host
                    .call(
                        HostMessage::HostedShards,
                        Some(std::time::Duration::from_secs(2)),
                    )
                    .await;
                match hosted {
                    Ok(ractor::rpc::CallResult::Success(list)) => shards.extend(list),
                    _ => tracing::warn!("the read-side host did not report its shards"),
                }
            }
            let _ = reply.send(Wire(HostedShardsReply {
                node,
                shards: shards.into_iter().collect(),
            }));
        });
    }
}
