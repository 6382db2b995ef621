//! The gRPC side: `chief_of_state.v1.ReadSideHandlerService.HandleReadSide` answered by the recorder.

use crate::net::accept_without_delay;
use cos_core::proto::chief_of_state::v1::read_side_handler_service_server::{
    ReadSideHandlerService, ReadSideHandlerServiceServer,
};
use cos_core::proto::chief_of_state::v1::{HandleReadSideRequest, HandleReadSideResponse};
use cos_core::readside::handler::{ENTITY_ID_HEADER, ENTITY_TYPE_HEADER, EVENT_TAG_HEADER};
use tokio::net::TcpListener;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};

use super::{Answer, Delivery, DeliveryHeaders, Recorder};

struct GrpcReadHandler {
    recorder: Recorder,
}

fn text_header(metadata: &MetadataMap, name: &str) -> Option<String> {
    let value = metadata.get(name)?;
    value.to_str().ok().map(str::to_string)
}

#[tonic::async_trait]
impl ReadSideHandlerService for GrpcReadHandler {
    async fn handle_read_side(
        &self,
        request: Request<HandleReadSideRequest>,
    ) -> Result<Response<HandleReadSideResponse>, Status> {
        let headers = DeliveryHeaders {
            entity_id: text_header(request.metadata(), ENTITY_ID_HEADER),
            entity_type: text_header(request.metadata(), ENTITY_TYPE_HEADER),
            event_tag: text_header(request.metadata(), EVENT_TAG_HEADER),
            content_type: text_header(request.metadata(), "content-type"),
            raw_json: None,
        };
        let delivery = Delivery::arrived(request.into_inner(), headers);
        let successful = match self.recorder.respond(delivery).await {
            Answer::Accepted => true,
            Answer::Unsuccessful | Answer::MissingSuccessful => false,
            Answer::Failed => return Err(Status::unavailable("scripted read handler failure")),
            Answer::Unanswered => return Err(Status::unavailable("read handler server stopped")),
        };
        Ok(Response::new(HandleReadSideResponse { successful }))
    }
}

/// Serves until the recorder's stop signal, then lets open calls finish (hung ones end unanswered).
pub(super) async fn serve(
    listener: TcpListener,
    recorder: Recorder,
    identity: Option<super::TlsIdentity>,
) {
    let service = ReadSideHandlerServiceServer::new(GrpcReadHandler {
        recorder: recorder.clone(),
    });
    let mut builder = tonic::transport::Server::builder();
    if let Some(identity) = identity {
        let config = tonic::transport::ServerTlsConfig::new().identity(
            tonic::transport::Identity::from_pem(identity.certificate_pem, identity.key_pem),
        );
        builder = match builder.tls_config(config) {
            Ok(builder) => builder,
            Err(error) => {
                tracing::warn!(error = %error, "grpc read handler cannot set up tls");
                return;
            }
        };
    }
    let result = builder
        .add_service(service)
        .serve_with_incoming_shutdown(accept_without_delay(listener), recorder.until_stopped())
        .await;
    if let Err(error) = result {
        tracing::warn!(error = %error, "grpc read handler server ended with an error");
    }
}
