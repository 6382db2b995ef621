//! The gRPC read handler against a real tonic server on 127.0.0.1.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

use super::ReadHandlerError;
use super::test_support;
use crate::proto::chief_of_state::v1::read_side_handler_service_server::{
    ReadSideHandlerService, ReadSideHandlerServiceServer,
};
use crate::proto::chief_of_state::v1::{HandleReadSideRequest, HandleReadSideResponse};
use crate::readside::{ReadSideBreaker, ReadSideProtocol};

/// How the fake handler answers.
#[derive(Clone)]
enum Answer {
    Successful(bool),
    Error(Status),
    Slow(Duration),
}

/// What the fake handler saw of one call.
#[derive(Debug, Clone)]
struct SeenCall {
    entity_id_header: Option<String>,
    event_tag_header: Option<String>,
    request: HandleReadSideRequest,
}

struct FakeHandler {
    answer: Answer,
    seen: Arc<Mutex<Vec<SeenCall>>>,
}

#[tonic::async_trait]
impl ReadSideHandlerService for FakeHandler {
    async fn handle_read_side(
        &self,
        request: Request<HandleReadSideRequest>,
    ) -> Result<Response<HandleReadSideResponse>, Status> {
        let header = |name: &str| {
            request
                .metadata()
                .get(name)
                .map(|value| value.to_str().unwrap().to_string())
        };
        let seen_call = SeenCall {
            entity_id_header: header("x-cos-entity-id"),
            event_tag_header: header("x-cos-event-tag"),
            request: request.get_ref().clone(),
        };
        self.seen.lock().unwrap().push(seen_call);
        match &self.answer {
            Answer::Successful(successful) => Ok(Response::new(HandleReadSideResponse {
                successful: *successful,
            })),
            Answer::Error(status) => Err(status.clone()),
            Answer::Slow(delay) => {
                tokio::time::sleep(*delay).await;
                Ok(Response::new(HandleReadSideResponse { successful: true }))
            }
        }
    }
}

/// Starts a fake handler; returns its port and what it saw.
async fn serve(answer: Answer) -> (u16, Arc<Mutex<Vec<SeenCall>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let service = ReadSideHandlerServiceServer::new(FakeHandler {
        answer,
        seen: seen.clone(),
    });
    tokio::spawn(
        Server::builder()
            .add_service(service)
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    (port, seen)
}

async fn deliver(
    port: u16,
    timeout: Duration,
    breaker: Option<ReadSideBreaker>,
    times: usize,
) -> Vec<Result<(), ReadHandlerError>> {
    test_support::deliver(ReadSideProtocol::Grpc, port, timeout, breaker, 5, times).await
}

#[tokio::test]
async fn grpc_handler_answering_true_is_success_and_gets_the_event_headers_and_ids() {
    let (port, seen) = serve(Answer::Successful(true)).await;

    let results = deliver(port, Duration::from_secs(5), None, 1).await;

    assert!(results[0].is_ok(), "{results:?}");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    let expected = test_support::event();
    assert_eq!(seen[0].entity_id_header.as_deref(), Some("account-7"));
    assert_eq!(seen[0].event_tag_header.as_deref(), Some("5"));
    assert_eq!(seen[0].request.read_side_id, "accounts-view");
    assert_eq!(seen[0].request.event, expected.event);
    assert_eq!(seen[0].request.state, expected.resulting_state);
    assert_eq!(seen[0].request.meta, expected.meta);
}

#[tokio::test]
async fn grpc_handler_answering_false_is_unsuccessful() {
    let (port, _) = serve(Answer::Successful(false)).await;

    let results = deliver(port, Duration::from_secs(5), None, 1).await;

    assert!(
        matches!(results[0], Err(ReadHandlerError::Unsuccessful)),
        "{results:?}"
    );
}

#[tokio::test]
async fn grpc_handler_error_status_is_refused_with_the_status() {
    let (port, _) = serve(Answer::Error(Status::internal("projection table missing"))).await;

    let results = deliver(port, Duration::from_secs(5), None, 1).await;

    let Err(error @ ReadHandlerError::Refused { .. }) = &results[0] else {
        panic!("expected refused, got {results:?}");
    };
    let message = error.to_string();
    assert!(message.contains("projection table missing"), "{message}");
    assert!(message.contains("nternal"), "{message}");
}

#[tokio::test]
async fn unreachable_grpc_handler_is_unavailable_naming_the_address() {
    let closed = test_support::closed_port();
    let port = closed.port;

    let results = deliver(port, Duration::from_secs(5), None, 1).await;

    let Err(ReadHandlerError::Unavailable(address, _)) = &results[0] else {
        panic!("expected unavailable, got {results:?}");
    };
    assert_eq!(address, &format!("http://127.0.0.1:{port}"));
}

#[tokio::test]
async fn slow_grpc_handler_beyond_the_timeout_is_a_timeout() {
    let (port, _) = serve(Answer::Slow(Duration::from_secs(2))).await;

    let results = deliver(port, Duration::from_millis(200), None, 1).await;

    assert!(
        matches!(results[0], Err(ReadHandlerError::Timeout(200))),
        "{results:?}"
    );
}

#[tokio::test]
async fn grpc_breaker_opens_after_transport_failures_and_stops_calling() {
    let closed = test_support::closed_port();
    let port = closed.port;
    let breaker = ReadSideBreaker {
        max_failures: 2,
        call_timeout: Duration::from_secs(5),
        reset_timeout: Duration::from_secs(60),
    };

    let results = deliver(port, Duration::from_secs(5), Some(breaker), 3).await;

    assert!(
        matches!(results[0], Err(ReadHandlerError::Unavailable(..))),
        "{results:?}"
    );
    assert!(
        matches!(results[1], Err(ReadHandlerError::Unavailable(..))),
        "{results:?}"
    );
    assert!(
        matches!(results[2], Err(ReadHandlerError::BreakerOpen)),
        "{results:?}"
    );
}

#[tokio::test]
async fn grpc_false_answers_do_not_trip_the_breaker() {
    let (port, seen) = serve(Answer::Successful(false)).await;
    let breaker = ReadSideBreaker {
        max_failures: 1,
        call_timeout: Duration::from_secs(5),
        reset_timeout: Duration::from_secs(60),
    };

    let results = deliver(port, Duration::from_secs(5), Some(breaker), 3).await;

    assert!(
        results
            .iter()
            .all(|result| matches!(result, Err(ReadHandlerError::Unsuccessful))),
        "{results:?}"
    );
    assert_eq!(
        seen.lock().unwrap().len(),
        3,
        "every call reached the handler"
    );
}
