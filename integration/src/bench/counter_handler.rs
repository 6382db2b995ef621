//! The fastest honest write handler: every command is one event, every event adds one to a counter. It is
//! what the *handler ceiling* baseline calls directly and what Chief of State calls in the write benchmarks.

use crate::net::accept_without_delay;
use cos_core::proto::chief_of_state::v1::write_side_handler_service_server::{
    WriteSideHandlerService, WriteSideHandlerServiceServer,
};
use cos_core::proto::chief_of_state::v1::{
    HandleCommandRequest, HandleCommandResponse, HandleEventRequest, HandleEventResponse,
};
use prost::Message;
use prost_types::Any;
use tokio::net::TcpListener;
use tonic::{Request, Response, Status};

/// Type URL of the counter state and events (`google.protobuf.UInt64Value`).
pub const COUNTER_TYPE_URL: &str = "type.googleapis.com/google.protobuf.UInt64Value";

/// Packs a counter value.
pub fn counter_any(value: u64) -> Any {
    Any {
        type_url: COUNTER_TYPE_URL.to_string(),
        value: value.encode_to_vec(),
    }
}

fn counter_of(any: Option<&Any>) -> u64 {
    match any {
        Some(any) if any.type_url == COUNTER_TYPE_URL => {
            u64::decode(any.value.as_slice()).unwrap_or_default()
        }
        _ => 0,
    }
}

/// A stateless counter handler.
#[derive(Clone, Copy, Default)]
pub struct CounterHandler;

#[tonic::async_trait]
impl WriteSideHandlerService for CounterHandler {
    async fn handle_command(
        &self,
        request: Request<HandleCommandRequest>,
    ) -> Result<Response<HandleCommandResponse>, Status> {
        let increment = counter_of(request.get_ref().command.as_ref()).max(1);
        Ok(Response::new(HandleCommandResponse {
            events: vec![counter_any(increment)],
            ..Default::default()
        }))
    }

    async fn handle_event(
        &self,
        request: Request<HandleEventRequest>,
    ) -> Result<Response<HandleEventResponse>, Status> {
        let body = request.get_ref();
        let total = counter_of(body.prior_state.as_ref()) + counter_of(body.event.as_ref());
        Ok(Response::new(HandleEventResponse {
            resulting_state: Some(counter_any(total)),
        }))
    }
}

/// Serves the counter handler on a bound listener until the process ends.
pub async fn serve(listener: TcpListener) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .add_service(WriteSideHandlerServiceServer::new(CounterHandler))
        .serve_with_incoming(accept_without_delay(listener))
        .await
}
