//! The entry point the gateway uses: picks the region of the requested entity type, sends the request, and
//! waits for the answer with the right error when none comes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use cos_core::domain::{EntityId, EntityType};
use cos_core::error::CommandError;
use cos_core::proto::chief_of_state::v1::StateWrapper;
use ractor::{Actor, ActorRef};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::cluster::routing::RegionCluster;
use crate::envelope::{EntityEnvelope, EntityRequest};
use crate::passivation::PassivationBudget;
use crate::region::{RegionActor, RegionArguments, RegionMessage};
use crate::runtime::EntityTypeRuntime;

/// How long after a command's deadline we still wait for its reply: the entity stops calling the handler at
/// the deadline, but a write already started must be allowed to finish so its outcome can be reported.
pub const REPLY_GRACE: Duration = Duration::from_secs(10);

/// Why the router could not start.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    #[error("cannot start the shard region of entity type {entity_type}: {reason}")]
    RegionStart { entity_type: String, reason: String },
    #[error("default entity type {0} has no runtime")]
    MissingDefaultType(String),
}

/// Routes requests to the shard regions of this node, one region per entity type.
pub struct EntityRouter {
    regions: HashMap<EntityType, ActorRef<RegionMessage>>,
    default_type: EntityType,
}

impl EntityRouter {
    /// Starts one shard region per entity type.
    pub async fn start(
        runtimes: Vec<Arc<EntityTypeRuntime>>,
        default_type: EntityType,
        budget: Arc<PassivationBudget>,
        cluster: Option<RegionCluster>,
    ) -> Result<Self, RouterError> {
        let mut regions = HashMap::new();
        for runtime in runtimes {
            let entity_type = runtime.settings.name.clone();
            let arguments = RegionArguments {
                runtime,
                budget: budget.clone(),
                cluster: cluster.clone(),
            };
            let (region, _join) =
                Actor::spawn(None, RegionActor, arguments)
                    .await
                    .map_err(|error| RouterError::RegionStart {
                        entity_type: entity_type.to_string(),
                        reason: error.to_string(),
                    })?;
            regions.insert(entity_type, region);
        }
        if !regions.contains_key(&default_type) {
            return Err(RouterError::MissingDefaultType(default_type.to_string()));
        }
        Ok(Self {
            regions,
            default_type,
        })
    }

    /// The region of every entity type, for the cluster endpoint.
    pub fn regions(&self) -> HashMap<String, ActorRef<RegionMessage>> {
        self.regions
            .iter()
            .map(|(entity_type, region)| (entity_type.as_str().to_string(), region.clone()))
            .collect()
    }

    /// Resolves the `x-cos-entity-type` value: absent means the default type.
    pub fn entity_type(&self, requested: Option<&str>) -> Result<EntityType, CommandError> {
        let Some(name) = requested else {
            return Ok(self.default_type.clone());
        };
        self.regions
            .keys()
            .find(|entity_type| entity_type.as_str() == name)
            .cloned()
            .ok_or_else(|| CommandError::UnknownEntityType(name.to_string()))
    }

    /// Sends a request to an entity and waits for its answer until `timeout` (plus [`REPLY_GRACE`] for
    /// commands whose write may already be under way).
    pub async fn ask(
        &self,
        entity_type: &EntityType,
        entity_id: EntityId,
        request: EntityRequest,
        timeout: Duration,
    ) -> Result<StateWrapper, CommandError> {
        let region = self
            .regions
            .get(entity_type)
            .ok_or_else(|| CommandError::UnknownEntityType(entity_type.to_string()))?;
        let is_command = matches!(request, EntityRequest::ProcessCommand(_));
        let deadline = Instant::now() + timeout;
        let (reply, answer) = oneshot::channel();
        let envelope = Box::new(EntityEnvelope {
            entity_id,
            request,
            deadline,
            from_remote: false,
            reroutes: 0,
            reply,
        });
        if region.cast(RegionMessage::Deliver(envelope)).is_err() {
            return Err(CommandError::Retry(format!(
                "shard region of {entity_type} is not running"
            )));
        }
        let wait_until = if is_command {
            deadline + REPLY_GRACE
        } else {
            deadline
        };
        match tokio::time::timeout_at(wait_until, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_dropped)) if is_command => Err(CommandError::OutcomeUnknown(
                "the entity stopped before answering; the command may or may not have been persisted"
                    .to_string(),
            )),
            Ok(Err(_dropped)) => Err(CommandError::Retry(
                "the entity stopped before answering; retry".to_string(),
            )),
            Err(_elapsed) if is_command => Err(CommandError::OutcomeUnknown(
                "no reply in time; the command may or may not have been persisted".to_string(),
            )),
            Err(_elapsed) => Err(CommandError::DeadlineExceeded(
                "no reply from the entity within the deadline".to_string(),
            )),
        }
    }

    /// Stops every region (and with them their shards and entities) and waits for them to finish.
    pub async fn stop(&self) {
        for region in self.regions.values() {
            let _already_stopped = region
                .stop_and_wait(
                    Some("node shutting down".to_string()),
                    Some(Duration::from_secs(30)),
                )
                .await;
        }
    }
}
