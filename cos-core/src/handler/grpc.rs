//! The gRPC write-handler client: lazily connected connections (a pool, used round-robin; plaintext handlers
//! over the direct HTTP/2 transport, TLS ones over tonic's channel), per-call deadlines
//! enforced on our side, and handler statuses passed through untouched.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use async_trait::async_trait;
use tonic::Code;
use tonic::codegen::http::Uri;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use super::WriteHandler;
use super::direct::DirectChannel;
use crate::error::CommandError;
use crate::headers::append_headers;
use crate::proto::chief_of_state::v1::write_side_handler_service_client::WriteSideHandlerServiceClient;
use crate::proto::chief_of_state::v1::{
    HandleCommandRequest, HandleCommandResponse, HandleEventRequest, HandleEventResponse, Header,
};
use crate::settings::{GrpcClientSettings, WriteHandlerSettings};

/// Why a handler client could not be built from its settings.
#[derive(Debug, thiserror::Error)]
pub enum HandlerSetupError {
    #[error("invalid write handler address {address}: {reason}")]
    InvalidAddress { address: String, reason: String },
}

/// One client of the pool: tonic's channel for TLS handlers, the direct HTTP/2 transport otherwise.
#[derive(Clone)]
enum PooledClient {
    Tonic(WriteSideHandlerServiceClient<Channel>),
    Direct(WriteSideHandlerServiceClient<DirectChannel>),
}

impl PooledClient {
    async fn handle_command(
        self,
        request: tonic::Request<HandleCommandRequest>,
    ) -> Result<tonic::Response<HandleCommandResponse>, tonic::Status> {
        match self {
            Self::Tonic(mut client) => client.handle_command(request).await,
            Self::Direct(mut client) => client.handle_command(request).await,
        }
    }

    async fn handle_event(
        self,
        request: tonic::Request<HandleEventRequest>,
    ) -> Result<tonic::Response<HandleEventResponse>, tonic::Status> {
        match self {
            Self::Tonic(mut client) => client.handle_event(request).await,
            Self::Direct(mut client) => client.handle_event(request).await,
        }
    }
}

/// A write handler reached over gRPC.
pub struct GrpcWriteHandler {
    clients: Vec<PooledClient>,
    next_client: AtomicUsize,
    address: String,
}

impl GrpcWriteHandler {
    /// Builds the channels without connecting: an unreachable handler fails commands, not start-up.
    pub fn connect_lazy(
        handler: &WriteHandlerSettings,
        client: &GrpcClientSettings,
    ) -> Result<Self, HandlerSetupError> {
        let scheme = if handler.use_tls { "https" } else { "http" };
        let address = format!("{scheme}://{}:{}", handler.host, handler.port);
        let invalid = |reason: String| HandlerSetupError::InvalidAddress {
            address: address.clone(),
            reason,
        };
        let connect_timeout = handler.call_timeout.min(Duration::from_secs(5));
        let pool_size = client.pool_size.max(1);
        let clients = if handler.use_tls {
            let mut endpoint = Endpoint::from_shared(address.clone())
                .map_err(|error| invalid(error.to_string()))?
                .connect_timeout(connect_timeout)
                .tcp_nodelay(true)
                .tls_config(ClientTlsConfig::new().with_native_roots())
                .map_err(|error| invalid(error.to_string()))?;
            if let Some(keepalive) = client.keepalive {
                endpoint = endpoint
                    .http2_keep_alive_interval(keepalive.interval)
                    .keep_alive_timeout(keepalive.timeout)
                    .keep_alive_while_idle(keepalive.while_idle);
            }
            (0..pool_size)
                .map(|_| {
                    PooledClient::Tonic(WriteSideHandlerServiceClient::new(endpoint.connect_lazy()))
                })
                .collect()
        } else {
            let authority = address
                .parse::<Uri>()
                .map_err(|error| invalid(error.to_string()))?
                .authority()
                .cloned()
                .ok_or_else(|| invalid("no host and port".to_string()))?;
            (0..pool_size)
                .map(|_| {
                    PooledClient::Direct(WriteSideHandlerServiceClient::new(DirectChannel::new(
                        authority.clone(),
                        connect_timeout,
                        client.keepalive,
                    )))
                })
                .collect()
        };
        Ok(Self {
            clients,
            next_client: AtomicUsize::new(0),
            address,
        })
    }

    fn client(&self) -> PooledClient {
        let index = self.next_client.fetch_add(1, Ordering::Relaxed) % self.clients.len();
        self.clients[index].clone()
    }

    fn map_status(&self, status: &tonic::Status) -> CommandError {
        // An UNAVAILABLE without details is a transport failure (refused, reset, DNS): say where we tried.
        if status.code() == Code::Unavailable && status.details().is_empty() {
            return CommandError::HandlerUnavailable(format!(
                "{}: {}",
                self.address,
                status.message()
            ));
        }
        CommandError::from_handler_status(status)
    }

    fn deadline_error(&self, call: &str, timeout: Duration) -> CommandError {
        CommandError::DeadlineExceeded(format!(
            "write handler at {} did not answer {call} within {} ms; nothing was persisted",
            self.address,
            timeout.as_millis()
        ))
    }
}

/// A handler's server enforces our `grpc-timeout` itself and may answer CANCELLED ("Timeout expired", as
/// tonic does) just before our own timer fires: once the time is up, any failure is the deadline.
fn is_deadline(status: &tonic::Status, started: Instant, timeout: Duration) -> bool {
    status.code() == Code::DeadlineExceeded
        || (status.code() == Code::Cancelled && started.elapsed() >= timeout)
}

#[async_trait]
impl WriteHandler for GrpcWriteHandler {
    async fn handle_command(
        &self,
        request: HandleCommandRequest,
        propagated_headers: &[Header],
        timeout: Duration,
    ) -> Result<HandleCommandResponse, CommandError> {
        let mut grpc_request = tonic::Request::new(request);
        grpc_request.set_timeout(timeout);
        append_headers(grpc_request.metadata_mut(), propagated_headers);
        let client = self.client();
        let started = Instant::now();
        match tokio::time::timeout(timeout, client.handle_command(grpc_request)).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) if is_deadline(&status, started, timeout) => {
                Err(self.deadline_error("HandleCommand", timeout))
            }
            Ok(Err(status)) => Err(self.map_status(&status)),
            Err(_elapsed) => Err(self.deadline_error("HandleCommand", timeout)),
        }
    }

    async fn handle_event(
        &self,
        request: HandleEventRequest,
        timeout: Duration,
    ) -> Result<HandleEventResponse, CommandError> {
        let mut grpc_request = tonic::Request::new(request);
        grpc_request.set_timeout(timeout);
        let client = self.client();
        let started = Instant::now();
        match tokio::time::timeout(timeout, client.handle_event(grpc_request)).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) if is_deadline(&status, started, timeout) => {
                Err(self.deadline_error("HandleEvent", timeout))
            }
            Ok(Err(status)) => Err(self.map_status(&status)),
            Err(_elapsed) => Err(self.deadline_error("HandleEvent", timeout)),
        }
    }
}
