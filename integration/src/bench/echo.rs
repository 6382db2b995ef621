//! A bare tonic server answering `GetState` with a fixed state and no work: the ceiling for any gRPC
//! service on this machine, against which Chief of State's own `GetState` is compared.

use std::pin::Pin;

use crate::net::accept_without_delay;
use cos_core::proto::chief_of_state::v1::chief_of_state_service_server::{
    ChiefOfStateService, ChiefOfStateServiceServer,
};
use cos_core::proto::chief_of_state::v1::{
    GetStateRequest, GetStateResponse, MetaData, ProcessCommandRequest, ProcessCommandResponse,
    SubscribeAllRequest, SubscribeAllResponse, SubscribeRequest, SubscribeResponse,
    UnsubscribeAllRequest, UnsubscribeAllResponse, UnsubscribeRequest, UnsubscribeResponse,
};
use futures::Stream;
use tokio::net::TcpListener;
use tonic::{Request, Response, Status};

use super::counter_handler::counter_any;

/// Answers GetState with the entity id echoed in a state of the same shape Chief of State returns.
#[derive(Clone, Copy, Default)]
pub struct EchoService;

type Empty<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl ChiefOfStateService for EchoService {
    async fn process_command(
        &self,
        _request: Request<ProcessCommandRequest>,
    ) -> Result<Response<ProcessCommandResponse>, Status> {
        Err(Status::unimplemented("echo serves GetState only"))
    }

    async fn get_state(
        &self,
        request: Request<GetStateRequest>,
    ) -> Result<Response<GetStateResponse>, Status> {
        Ok(Response::new(GetStateResponse {
            state: Some(counter_any(1)),
            meta: Some(MetaData {
                entity_id: request.into_inner().entity_id,
                revision_number: 1,
                ..MetaData::default()
            }),
        }))
    }

    type SubscribeStream = Empty<SubscribeResponse>;

    async fn subscribe(
        &self,
        _request: Request<SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        Err(Status::unimplemented("echo serves GetState only"))
    }

    type SubscribeAllStream = Empty<SubscribeAllResponse>;

    async fn subscribe_all(
        &self,
        _request: Request<SubscribeAllRequest>,
    ) -> Result<Response<Self::SubscribeAllStream>, Status> {
        Err(Status::unimplemented("echo serves GetState only"))
    }

    async fn unsubscribe(
        &self,
        _request: Request<UnsubscribeRequest>,
    ) -> Result<Response<UnsubscribeResponse>, Status> {
        Err(Status::unimplemented("echo serves GetState only"))
    }

    async fn unsubscribe_all(
        &self,
        _request: Request<UnsubscribeAllRequest>,
    ) -> Result<Response<UnsubscribeAllResponse>, Status> {
        Err(Status::unimplemented("echo serves GetState only"))
    }
}

/// Serves the echo service on a bound listener until the process ends.
pub async fn serve(listener: TcpListener) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .add_service(ChiefOfStateServiceServer::new(EchoService))
        .serve_with_incoming(accept_without_delay(listener))
        .await
}
