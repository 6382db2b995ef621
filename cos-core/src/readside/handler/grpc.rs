//! The gRPC read handler client (§5.6): `ReadSideHandlerService.HandleReadSide` on a lazily connected channel,
//! with the read side's `timeout` sent as `grpc-timeout` and enforced on our side too, so a handler that
//! ignores deadlines cannot stall a projection.

use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;
use tonic::Code;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use super::{
    ENTITY_ID_HEADER, ENTITY_TYPE_HEADER, EVENT_TAG_HEADER, ReadHandler, ReadHandlerError,
    ReadHandlerSetupError, ReadSideDelivery, millis,
};
use crate::proto::chief_of_state::v1::HandleReadSideRequest;
use crate::proto::chief_of_state::v1::read_side_handler_service_client::ReadSideHandlerServiceClient;
use crate::readside::ReadSideConfig;
use crate::settings::KeepaliveSettings;

/// Longest wait for a TCP/TLS connection; the call deadline still applies on top of it.
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A read handler reached over gRPC. One HTTP/2 channel multiplexes the calls of all shards of a read side.
pub struct GrpcReadHandler {
    client: ReadSideHandlerServiceClient<Channel>,
    address: String,
    timeout: Duration,
}

impl GrpcReadHandler {
    /// Builds the channel without connecting: an unreachable handler fails events, not start-up. Must run
    /// inside a tokio runtime.
    pub fn connect_lazy(
        config: &ReadSideConfig,
        keepalive: Option<KeepaliveSettings>,
    ) -> Result<Self, ReadHandlerSetupError> {
        let scheme = if config.use_tls { "https" } else { "http" };
        let address = format!("{scheme}://{}", host_and_port(&config.host, config.port));
        let mut endpoint = Endpoint::from_shared(address.clone())
            .map_err(|error| ReadHandlerSetupError::InvalidAddress {
                address: address.clone(),
                reason: error.to_string(),
            })?
            .connect_timeout(config.timeout.min(MAX_CONNECT_TIMEOUT))
            .tcp_nodelay(true);
        if config.use_tls {
            endpoint = endpoint
                .tls_config(ClientTlsConfig::new().with_native_roots())
                .map_err(|error| ReadHandlerSetupError::Tls {
                    address: address.clone(),
                    reason: error.to_string(),
                })?;
        }
        if let Some(keepalive) = keepalive {
            endpoint = endpoint
                .http2_keep_alive_interval(keepalive.interval)
                .keep_alive_timeout(keepalive.timeout)
                .keep_alive_while_idle(keepalive.while_idle);
        }
        Ok(Self {
            client: ReadSideHandlerServiceClient::new(endpoint.connect_lazy()),
            address,
            timeout: config.timeout,
        })
    }

    fn request(&self, delivery: ReadSideDelivery<'_>) -> tonic::Request<HandleReadSideRequest> {
        let mut request = tonic::Request::new(HandleReadSideRequest {
            event: delivery.event.event.clone(),
            state: delivery.event.resulting_state.clone(),
            meta: delivery.event.meta.clone(),
            read_side_id: delivery.read_side_id.to_string(),
        });
        request.set_timeout(self.timeout);
        let metadata = request.metadata_mut();
        match MetadataValue::try_from(delivery.entity_id()) {
            Ok(entity_id) => {
                metadata.insert(ENTITY_ID_HEADER, entity_id);
            }
            // gRPC ASCII metadata cannot carry it; the handler still finds it in `meta.entity_id`.
            Err(_) => tracing::warn!(
                read_side_id = delivery.read_side_id,
                entity_id = delivery.entity_id(),
                "entity id is not valid grpc metadata; sending the event without x-cos-entity-id"
            ),
        }
        metadata.insert(EVENT_TAG_HEADER, MetadataValue::from(delivery.shard));
        // Entity type names are validated to a-z, 0-9, '_' and '-', so they are always valid metadata.
        if let Ok(entity_type) = MetadataValue::try_from(delivery.entity_type) {
            metadata.insert(ENTITY_TYPE_HEADER, entity_type);
        }
        request
    }

    fn map_status(&self, status: tonic::Status, started: Instant) -> ReadHandlerError {
        // The handler's server enforces our `grpc-timeout` and may answer CANCELLED just before our own timer
        // fires: once the time is up, any failure is the deadline.
        if status.code() == Code::DeadlineExceeded
            || (status.code() == Code::Cancelled && started.elapsed() >= self.timeout)
        {
            return ReadHandlerError::Timeout(millis(self.timeout));
        }
        // An UNAVAILABLE without details is a transport failure (refused, reset, DNS): say where we tried.
        if status.code() == Code::Unavailable && status.details().is_empty() {
            return ReadHandlerError::Unavailable(
                self.address.clone(),
                status.message().to_string(),
            );
        }
        ReadHandlerError::Refused { status }
    }
}

/// `host:port`, with an IPv6 literal bracketed as URLs require.
pub(super) fn host_and_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[async_trait]
impl ReadHandler for GrpcReadHandler {
    async fn handle(&self, delivery: ReadSideDelivery<'_>) -> Result<(), ReadHandlerError> {
        let request = self.request(delivery);
        let mut client = self.client.clone();
        let started = Instant::now();
        match tokio::time::timeout(self.timeout, client.handle_read_side(request)).await {
            Ok(Ok(response)) if response.get_ref().successful => Ok(()),
            Ok(Ok(_unsuccessful)) => Err(ReadHandlerError::Unsuccessful),
            Ok(Err(status)) => Err(self.map_status(status, started)),
            Err(_elapsed) => Err(ReadHandlerError::Timeout(millis(self.timeout))),
        }
    }
}
