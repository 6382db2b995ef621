//! Clients for the user's write handler. The entity sees only the [`WriteHandler`] trait, so a gRPC and
//! (later) an HTTP handler are interchangeable per entity type.

mod breaker;
mod direct;
mod grpc;

use std::time::Duration;

use async_trait::async_trait;

use crate::error::CommandError;
use crate::proto::chief_of_state::v1::{
    HandleCommandRequest, HandleCommandResponse, HandleEventRequest, HandleEventResponse, Header,
};

pub use breaker::{BreakerWriteHandler, cut_for_scheduling};
pub use grpc::{GrpcWriteHandler, HandlerSetupError};

/// The two calls CoS makes to a write handler. `timeout` is the time left for this call: the smaller of the
/// per-call deadline and what remains of the command's deadline.
#[async_trait]
pub trait WriteHandler: Send + Sync + 'static {
    /// Turns a command and the prior state into events; `propagated_headers` go out as request metadata.
    async fn handle_command(
        &self,
        request: HandleCommandRequest,
        propagated_headers: &[Header],
        timeout: Duration,
    ) -> Result<HandleCommandResponse, CommandError>;

    /// Applies one event to the prior state.
    async fn handle_event(
        &self,
        request: HandleEventRequest,
        timeout: Duration,
    ) -> Result<HandleEventResponse, CommandError>;
}
