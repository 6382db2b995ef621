//! Clients for the user's read handlers (§5.6–§5.8 of the reference). A projection sees only the
//! [`ReadHandler`] trait, so gRPC and HTTP handlers, with or without a circuit breaker, are interchangeable per
//! read side; [`read_handler_for`] picks one from the read side's configuration.

mod breaker;
mod grpc;
mod http;
mod json;

#[cfg(test)]
mod grpc_tests;
#[cfg(test)]
mod http_tests;

use std::sync::Arc;

use async_trait::async_trait;

use super::{ReadSideBreaker, ReadSideConfig, ReadSideProtocol};
use crate::proto::chief_of_state::v1::EventWrapper;
use crate::settings::KeepaliveSettings;

pub use breaker::BreakerReadHandler;
pub use grpc::GrpcReadHandler;
pub use http::HttpReadHandler;

/// Request header carrying `meta.entity_id`, so a handler can route without decoding the body.
pub const ENTITY_ID_HEADER: &str = "x-cos-entity-id";
/// Request header carrying the event tag: the shard number as decimal text.
pub const EVENT_TAG_HEADER: &str = "x-cos-event-tag";
/// Request header carrying the event's entity type (not in the original, which had one type): with several
/// types, equal ids of different types are different entities and only this tells them apart.
pub const ENTITY_TYPE_HEADER: &str = "x-cos-entity-type";

/// What one delivery is: the event as stored plus where it sits.
#[derive(Debug, Clone, Copy)]
pub struct ReadSideDelivery<'a> {
    /// The read side this event is delivered for; sent to the handler as `read_side_id`.
    pub read_side_id: &'a str,
    /// The shard (event tag) the event was read from; sent as `x-cos-event-tag`.
    pub shard: u32,
    /// The entity type of the event; sent as `x-cos-entity-type`.
    pub entity_type: &'a str,
    /// The journal record: event, resulting state and meta.
    pub event: &'a EventWrapper,
}

impl ReadSideDelivery<'_> {
    /// `meta.entity_id`, or empty when the stored event has no meta.
    fn entity_id(&self) -> &str {
        self.event
            .meta
            .as_ref()
            .map_or("", |meta| meta.entity_id.as_str())
    }
}

/// One remote read handler. Implementations enforce the read side's `timeout` themselves, so a caller never
/// needs its own deadline.
#[async_trait]
pub trait ReadHandler: Send + Sync + 'static {
    /// Ok(()) only when the handler answered `successful: true`; every other outcome is a failure with a reason.
    async fn handle(&self, delivery: ReadSideDelivery<'_>) -> Result<(), ReadHandlerError>;
}

/// Why one delivery failed. The projection applies its failure policy whatever the variant; the variants exist
/// for logs and for the breaker, which counts all but [`ReadHandlerError::Unsuccessful`] as failed calls.
#[derive(Debug, thiserror::Error)]
pub enum ReadHandlerError {
    /// The handler could not be reached (refused, reset, DNS, TLS handshake, broken connection).
    #[error("read handler at {0} is unavailable: {1}")]
    Unavailable(String, String),
    /// No answer within the deadline (the read side's `timeout`, or the breaker's call timeout).
    #[error("read handler did not answer within {0} ms")]
    Timeout(u64),
    /// The gRPC handler answered with an error status.
    #[error("read handler refused the event with {}: {}", .status.code(), .status.message())]
    Refused { status: tonic::Status },
    /// The handler answered, but with `successful: false` (or, over HTTP, without `successful: true`).
    #[error("read handler answered that it did not handle the event")]
    Unsuccessful,
    /// The HTTP handler answered with a status other than 200; `body_start` is the first 200 characters.
    #[error("read handler answered http status {status}: {body_start}")]
    HttpStatus { status: u16, body_start: String },
    /// The handler answered 200 with a body that is not the expected JSON.
    #[error("read handler answered with an invalid response: {0}")]
    InvalidResponse(String),
    /// The read side's circuit breaker is open: the handler was not called.
    #[error("read handler circuit breaker is open; the handler was not called")]
    BreakerOpen,
}

/// Why a read handler client could not be built from its configuration; reported at start-up.
#[derive(Debug, thiserror::Error)]
pub enum ReadHandlerSetupError {
    /// `host:port` does not make a usable URL.
    #[error("invalid read handler address {address}: {reason}")]
    InvalidAddress { address: String, reason: String },
    /// `useTls` is set but no TLS client can be built (for example no usable system certificate).
    #[error("cannot set up tls for read handler {address}: {reason}")]
    Tls { address: String, reason: String },
}

/// Builds the client a read side calls: gRPC or HTTP per `config.protocol`, wrapped in the read side's own
/// breaker when `breaker` is given; gRPC channels use the node's `COS_GRPC_KEEPALIVE_*` settings. Nothing connects here (an unreachable handler fails events, not start-up),
/// but it must run inside a tokio runtime (the gRPC channel spawns its worker) and may read the system trust
/// store, so call it once per read side at start-up.
pub fn read_handler_for(
    config: &ReadSideConfig,
    breaker: Option<ReadSideBreaker>,
    keepalive: Option<KeepaliveSettings>,
) -> Result<Arc<dyn ReadHandler>, ReadHandlerSetupError> {
    let handler: Arc<dyn ReadHandler> = match config.protocol {
        ReadSideProtocol::Grpc => Arc::new(GrpcReadHandler::connect_lazy(config, keepalive)?),
        ReadSideProtocol::Http => Arc::new(HttpReadHandler::new(config)?),
    };
    match breaker {
        Some(settings) => Ok(Arc::new(BreakerReadHandler::new(handler, settings))),
        None => Ok(handler),
    }
}

/// The deadline in whole milliseconds, for [`ReadHandlerError::Timeout`].
fn millis(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
pub(crate) mod test_support {
    use std::time::Duration;

    use prost_types::{Any, Timestamp};

    use crate::proto::chief_of_state::v1::{EventWrapper, Header, MetaData, header};
    use crate::readside::{FailurePolicy, ReadSideConfig, ReadSideProtocol};

    /// A read side pointing at 127.0.0.1:`port`.
    pub(crate) fn config(
        protocol: ReadSideProtocol,
        port: u16,
        timeout: Duration,
    ) -> ReadSideConfig {
        ReadSideConfig {
            id: "accounts-view".to_string(),
            protocol,
            host: "127.0.0.1".to_string(),
            port,
            use_tls: false,
            timeout,
            auto_start: true,
            enabled: true,
            failure_policy: FailurePolicy::Stop,
            entity_types: None,
        }
    }

    /// Delivers the test event `times` times to a handler built for 127.0.0.1:`port`, collecting outcomes.
    pub(crate) async fn deliver(
        protocol: ReadSideProtocol,
        port: u16,
        timeout: Duration,
        breaker: Option<crate::readside::ReadSideBreaker>,
        shard: u32,
        times: usize,
    ) -> Vec<Result<(), super::ReadHandlerError>> {
        let handler = match super::read_handler_for(&config(protocol, port, timeout), breaker, None)
        {
            Ok(handler) => handler,
            Err(error) => panic!("handler setup failed: {error}"),
        };
        let event = event();
        let mut results = Vec::new();
        for _ in 0..times {
            let delivery = super::ReadSideDelivery {
                read_side_id: "accounts-view",
                shard,
                entity_type: "accounts",
                event: &event,
            };
            results.push(handler.handle(delivery).await);
        }
        results
    }

    /// A stored event with every field set.
    pub(crate) fn event() -> EventWrapper {
        EventWrapper {
            event: Some(Any {
                type_url: "type.googleapis.com/bank.Deposited".to_string(),
                value: vec![8, 42],
            }),
            resulting_state: Some(Any {
                type_url: "type.googleapis.com/bank.Account".to_string(),
                value: vec![8, 142, 1],
            }),
            meta: Some(MetaData {
                entity_id: "account-7".to_string(),
                revision_number: 3,
                revision_date: Some(Timestamp {
                    seconds: 1_700_000_000,
                    nanos: 250_000_000,
                }),
                data: Default::default(),
                headers: vec![Header {
                    key: "x-user".to_string(),
                    value: Some(header::Value::StringValue("alice".to_string())),
                }],
            }),
        }
    }

    /// A port on 127.0.0.1 where nothing listens, reserved while the value lives.
    ///
    /// The socket stays bound but never listens, so connections are refused and no
    /// other test process can be handed the same port meanwhile (a released port
    /// can be, and then "unreachable" would reach someone else's server).
    pub(crate) struct ClosedPort {
        _reservation: tokio::net::TcpSocket,
        pub(crate) port: u16,
    }

    pub(crate) fn closed_port() -> ClosedPort {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(([127, 0, 0, 1], 0).into()).unwrap();
        let port = socket.local_addr().unwrap().port();
        ClosedPort {
            _reservation: socket,
            port,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_host_that_cannot_form_a_url_is_rejected_at_setup() {
        for protocol in [ReadSideProtocol::Grpc, ReadSideProtocol::Http] {
            let mut config = test_support::config(protocol, 8080, Duration::from_secs(1));
            config.host = "bad host/x".to_string();

            let error = read_handler_for(&config, None, None).err();

            assert!(
                matches!(&error, Some(ReadHandlerSetupError::InvalidAddress { address, .. })
                    if address.contains("bad host/x")),
                "{protocol:?}: {error:?}"
            );
        }
    }
}
