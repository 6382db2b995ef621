//! The client-facing `ChiefOfStateService`: validates input, picks the entity type and deadline, extracts
//! headers, and hands the request to the entity router. No business rules live here.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use cos_actors::{EntityRequest, EntityRouter};
use cos_core::domain::{EntityId, EntityType};
use cos_core::error::{CommandError, rpc_status_to_tonic};
use cos_core::headers::extract_headers;
use cos_core::proto::chief_of_state::v1::chief_of_state_service_server::ChiefOfStateService;
use cos_core::proto::chief_of_state::v1::{
    GetStateRequest, GetStateResponse, ProcessCommandRequest, ProcessCommandResponse, StateWrapper,
    SubscribeAllRequest, SubscribeAllResponse, SubscribeRequest, SubscribeResponse,
    UnsubscribeAllRequest, UnsubscribeAllResponse, UnsubscribeRequest, UnsubscribeResponse,
};
use cos_core::proto::internal::ProcessCommand;
use cos_core::settings::Settings;
use futures::Stream;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};

/// gRPC metadata key that selects the entity type of a request.
pub const ENTITY_TYPE_HEADER: &str = "x-cos-entity-type";

/// The most we shave off a client's deadline to leave room for our reply to reach it.
const CLIENT_DEADLINE_MARGIN: Duration = Duration::from_millis(50);

const SUBSCRIPTION_DISABLED: &str =
    "Subscription is not enabled; configure subscription to use streaming";

/// Header lists of one entity type.
struct HeaderRules {
    propagated: Vec<String>,
    persisted: Vec<String>,
}

/// The tonic service implementation.
pub struct Gateway {
    router: Arc<EntityRouter>,
    command_timeout: Duration,
    header_rules: HashMap<EntityType, HeaderRules>,
}

impl Gateway {
    pub fn new(router: Arc<EntityRouter>, settings: &Settings) -> Self {
        let header_rules = settings
            .entity_types
            .types
            .iter()
            .map(|(name, entity_type)| {
                let rules = HeaderRules {
                    propagated: entity_type.propagated_headers.clone(),
                    persisted: entity_type.persisted_headers.clone(),
                };
                (name.clone(), rules)
            })
            .collect();
        Self {
            router,
            command_timeout: settings.command_handler_timeout,
            header_rules,
        }
    }

    fn entity_type(&self, metadata: &MetadataMap) -> Result<EntityType, Status> {
        let requested = match metadata.get(ENTITY_TYPE_HEADER) {
            None => None,
            Some(value) => Some(value.to_str().map_err(|_| {
                Status::invalid_argument(format!("{ENTITY_TYPE_HEADER} must be printable ASCII"))
            })?),
        };
        self.router.entity_type(requested).map_err(to_status)
    }

    /// The command timeout, shortened to the client's own deadline when that is sooner. We aim to answer a
    /// little before the client's deadline, so that it gets our precise DEADLINE_EXCEEDED rather than a
    /// cancelled call (tonic cancels a call whose `grpc-timeout` ran out).
    fn timeout(&self, metadata: &MetadataMap) -> Duration {
        let client_deadline = metadata
            .get("grpc-timeout")
            .and_then(|value| value.to_str().ok())
            .and_then(parse_grpc_timeout);
        match client_deadline {
            Some(client) => {
                let reply_margin = (client / 10).min(CLIENT_DEADLINE_MARGIN);
                client
                    .saturating_sub(reply_margin)
                    .min(self.command_timeout)
            }
            None => self.command_timeout,
        }
    }
}

fn to_status(error: CommandError) -> Status {
    rpc_status_to_tonic(error.to_rpc_status())
}

/// Parses the `grpc-timeout` header: up to 8 digits and a unit (H, M, S, m, u, n).
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let amount: u64 = digits.parse().ok()?;
    match unit {
        "H" => Some(Duration::from_secs(amount.checked_mul(3600)?)),
        "M" => Some(Duration::from_secs(amount.checked_mul(60)?)),
        "S" => Some(Duration::from_secs(amount)),
        "m" => Some(Duration::from_millis(amount)),
        "u" => Some(Duration::from_micros(amount)),
        "n" => Some(Duration::from_nanos(amount)),
        _ => None,
    }
}

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl ChiefOfStateService for Gateway {
    async fn process_command(
        &self,
        request: Request<ProcessCommandRequest>,
    ) -> Result<Response<ProcessCommandResponse>, Status> {
        let entity_type = self.entity_type(request.metadata())?;
        let timeout = self.timeout(request.metadata());
        let (propagated_headers, persisted_headers) = match self.header_rules.get(&entity_type) {
            Some(rules) => (
                extract_headers(request.metadata(), &rules.propagated),
                extract_headers(request.metadata(), &rules.persisted),
            ),
            None => (Vec::new(), Vec::new()),
        };
        let body = request.into_inner();
        let entity_id = EntityId::parse(body.entity_id).map_err(|error| to_status(error.into()))?;
        let command = ProcessCommand {
            command: body.command,
            propagated_headers,
            persisted_headers,
        };
        let state = self
            .router
            .ask(
                &entity_type,
                entity_id,
                EntityRequest::ProcessCommand(command),
                timeout,
            )
            .await
            .map_err(to_status)?;
        let StateWrapper { state, meta } = state;
        Ok(Response::new(ProcessCommandResponse { state, meta }))
    }

    async fn get_state(
        &self,
        request: Request<GetStateRequest>,
    ) -> Result<Response<GetStateResponse>, Status> {
        let entity_type = self.entity_type(request.metadata())?;
        let timeout = self.timeout(request.metadata());
        let entity_id = EntityId::parse(request.into_inner().entity_id)
            .map_err(|error| to_status(error.into()))?;
        let state = self
            .router
            .ask(&entity_type, entity_id, EntityRequest::GetState, timeout)
            .await
            .map_err(to_status)?;
        let StateWrapper { state, meta } = state;
        Ok(Response::new(GetStateResponse { state, meta }))
    }

    type SubscribeStream = ResponseStream<SubscribeResponse>;

    async fn subscribe(
        &self,
        _request: Request<SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        Err(Status::unimplemented(SUBSCRIPTION_DISABLED))
    }

    type SubscribeAllStream = ResponseStream<SubscribeAllResponse>;

    async fn subscribe_all(
        &self,
        _request: Request<SubscribeAllRequest>,
    ) -> Result<Response<Self::SubscribeAllStream>, Status> {
        Err(Status::unimplemented(SUBSCRIPTION_DISABLED))
    }

    async fn unsubscribe(
        &self,
        _request: Request<UnsubscribeRequest>,
    ) -> Result<Response<UnsubscribeResponse>, Status> {
        Err(Status::unimplemented(SUBSCRIPTION_DISABLED))
    }

    async fn unsubscribe_all(
        &self,
        _request: Request<UnsubscribeAllRequest>,
    ) -> Result<Response<UnsubscribeAllResponse>, Status> {
        Err(Status::unimplemented(SUBSCRIPTION_DISABLED))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_units_parse() {
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("5x"), None);
        assert_eq!(parse_grpc_timeout("123456789m"), None);
        assert_eq!(parse_grpc_timeout("m"), None);
    }
}
