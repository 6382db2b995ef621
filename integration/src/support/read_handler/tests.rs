//! The read handler servers against real clients over real sockets: cos-core's own read handler client for
//! both protocols, the generated gRPC client, and a hand-written HTTP request.

use std::time::{Duration, Instant};

use cos_core::proto::chief_of_state::v1::read_side_handler_service_client::ReadSideHandlerServiceClient;
use cos_core::proto::chief_of_state::v1::{
    EventWrapper, HandleReadSideRequest, Header, MetaData, header,
};
use cos_core::readside::ReadSideProtocol;
use cos_core::readside::handler::{ReadHandlerError, ReadSideDelivery, read_handler_for};
use prost_types::Timestamp;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Answer, Behaviour, Predicate, ReadHandlerServer, Reply, Rule};
use crate::bench::process::free_port;
use crate::support::script_handler::text_any;

const PROTOCOLS: [ReadSideProtocol; 2] = [ReadSideProtocol::Grpc, ReadSideProtocol::Http];
const READ_SIDE: &str = "accounts-view";
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

async fn start(protocol: ReadSideProtocol, behaviour: Behaviour) -> ReadHandlerServer {
    ReadHandlerServer::start(protocol, 0, behaviour)
        .await
        .expect("bind a loopback port")
}

/// A stored event of `entity_id` with StringValue event `text`, state `state after <text>` and one header.
fn event(entity_id: &str, revision: u32, text: &str) -> EventWrapper {
    EventWrapper {
        event: Some(text_any(text)),
        resulting_state: Some(text_any(&format!("state after {text}"))),
        meta: Some(MetaData {
            entity_id: entity_id.to_string(),
            revision_number: revision,
            revision_date: Some(Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            data: Default::default(),
            headers: vec![Header {
                key: "x-user".to_string(),
                value: Some(header::Value::StringValue("alice".to_string())),
            }],
        }),
    }
}

/// Delivers one event per `(entity id, text)` through cos-core's client for the server's protocol, on shard
/// 7, with revisions 1, 2, …; returns the client's outcomes.
async fn deliver(
    server: &ReadHandlerServer,
    timeout: Duration,
    events: &[(&str, &str)],
) -> Vec<Result<(), ReadHandlerError>> {
    let config = server.read_side_config(READ_SIDE, timeout);
    let handler = read_handler_for(&config, None, None).expect("read handler client");
    let mut results = Vec::new();
    for (revision, (entity_id, text)) in (1..).zip(events) {
        let stored = event(entity_id, revision, text);
        let delivery = ReadSideDelivery {
            entity_type: "accounts",
            read_side_id: READ_SIDE,
            shard: 7,
            event: &stored,
        };
        results.push(handler.handle(delivery).await);
    }
    results
}

fn answers(server: &ReadHandlerServer) -> Vec<Answer> {
    let deliveries = server.deliveries();
    deliveries
        .iter()
        .map(|delivery| delivery.answered)
        .collect()
}

fn is_scripted_failure(protocol: ReadSideProtocol, result: &Result<(), ReadHandlerError>) -> bool {
    match protocol {
        ReadSideProtocol::Grpc => matches!(result, Err(ReadHandlerError::Unavailable(..))),
        ReadSideProtocol::Http => {
            matches!(
                result,
                Err(ReadHandlerError::HttpStatus { status: 500, .. })
            )
        }
    }
}

#[tokio::test]
async fn cos_client_deliveries_decode_to_the_same_delivery_over_both_protocols() {
    for protocol in PROTOCOLS {
        let server = start(protocol, Behaviour::accept_all()).await;

        let results = deliver(&server, CALL_TIMEOUT, &[("account-1", "opened")]).await;

        assert!(results[0].is_ok(), "{protocol:?}: {results:?}");
        let accepted = server.wait_for_accepted(1, CALL_TIMEOUT).await;
        let delivery = &accepted[0];
        assert_eq!(delivery.read_side_id, READ_SIDE);
        assert_eq!(delivery.entity_id, "account-1");
        assert_eq!(delivery.revision, 1);
        assert_eq!(delivery.event_text(), "opened");
        assert_eq!(delivery.state_text(), "state after opened");
        assert_eq!(delivery.header_entity_id.as_deref(), Some("account-1"));
        assert_eq!(delivery.header_event_tag.as_deref(), Some("7"));
        let meta = delivery.meta.clone().expect("meta");
        assert_eq!(
            meta.headers,
            event("account-1", 1, "opened").meta.unwrap().headers
        );
        let content_type = delivery.content_type.clone().unwrap_or_default();
        match protocol {
            ReadSideProtocol::Grpc => {
                assert!(
                    content_type.starts_with("application/grpc"),
                    "{content_type}"
                );
                assert!(delivery.raw_json.is_none());
            }
            ReadSideProtocol::Http => {
                assert_eq!(content_type, "application/json");
                let raw_json = delivery.raw_json.clone().expect("raw json");
                assert_eq!(raw_json["meta"]["entity_id"], "account-1");
                assert_eq!(raw_json["meta"]["revision_date"], "2023-11-14T22:13:20Z");
            }
        }
    }
}

#[tokio::test]
async fn generated_grpc_client_with_cos_headers_is_recorded_and_accepted() {
    let server = ReadHandlerServer::start_grpc(Behaviour::accept_all()).await;
    let address = format!("http://127.0.0.1:{}", server.port);
    let mut client = ReadSideHandlerServiceClient::connect(address)
        .await
        .expect("connect");
    let stored = event("account-9", 4, "deposited");
    let mut request = tonic::Request::new(HandleReadSideRequest {
        event: stored.event,
        state: stored.resulting_state,
        meta: stored.meta,
        read_side_id: "ledger".to_string(),
    });
    request
        .metadata_mut()
        .insert("x-cos-entity-id", "account-9".parse().unwrap());
    request
        .metadata_mut()
        .insert("x-cos-event-tag", "3".parse().unwrap());

    let response = client.handle_read_side(request).await.expect("answer");

    assert!(response.into_inner().successful);
    let deliveries = server.deliveries();
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0].read_side_id, "ledger");
    assert_eq!(deliveries[0].revision, 4);
    assert_eq!(deliveries[0].event_text(), "deposited");
    assert_eq!(deliveries[0].header_entity_id.as_deref(), Some("account-9"));
    assert_eq!(deliveries[0].header_event_tag.as_deref(), Some("3"));
    assert_eq!(deliveries[0].answered, Answer::Accepted);
}

#[tokio::test]
async fn failing_the_first_calls_then_accepting() {
    for protocol in PROTOCOLS {
        let server = start(protocol, Behaviour::new(Rule::First(2, Reply::Fail))).await;

        let events = [("account-1", "a"), ("account-1", "a"), ("account-1", "a")];
        let results = deliver(&server, CALL_TIMEOUT, &events).await;

        assert!(
            is_scripted_failure(protocol, &results[0]),
            "{protocol:?}: {results:?}"
        );
        assert!(
            is_scripted_failure(protocol, &results[1]),
            "{protocol:?}: {results:?}"
        );
        assert!(results[2].is_ok(), "{protocol:?}: {results:?}");
        let expected = [Answer::Failed, Answer::Failed, Answer::Accepted];
        assert_eq!(answers(&server), expected, "{protocol:?}");
        assert_eq!(server.accepted().len(), 1);
    }
}

#[tokio::test]
async fn answering_unsuccessful_for_the_first_calls_then_accepting() {
    for protocol in PROTOCOLS {
        let server = start(
            protocol,
            Behaviour::new(Rule::First(1, Reply::Unsuccessful)),
        )
        .await;

        let results = deliver(&server, CALL_TIMEOUT, &[("a", "x"), ("a", "x")]).await;

        assert!(
            matches!(results[0], Err(ReadHandlerError::Unsuccessful)),
            "{protocol:?}: {results:?}"
        );
        assert!(results[1].is_ok(), "{protocol:?}: {results:?}");
        assert_eq!(answers(&server), [Answer::Unsuccessful, Answer::Accepted]);
    }
}

#[tokio::test]
async fn a_poison_entity_is_always_rejected_while_others_are_accepted() {
    for protocol in PROTOCOLS {
        let rule = Rule::Entity("poison-1".to_string(), Reply::Fail);
        let server = start(protocol, Behaviour::new(rule)).await;

        let events = [("poison-1", "a"), ("account-2", "b"), ("poison-1", "c")];
        let results = deliver(&server, CALL_TIMEOUT, &events).await;

        assert!(is_scripted_failure(protocol, &results[0]), "{results:?}");
        assert!(results[1].is_ok(), "{results:?}");
        assert!(is_scripted_failure(protocol, &results[2]), "{results:?}");
        let accepted = server.accepted();
        assert_eq!(accepted.len(), 1);
        assert_eq!(accepted[0].entity_id, "account-2");
        assert_eq!(server.deliveries().len(), 3);
    }
}

#[tokio::test]
async fn event_text_and_predicate_rules_pick_their_deliveries() {
    let by_text = Rule::EventText("bad".to_string(), Reply::Unsuccessful);
    let server = ReadHandlerServer::start_http(Behaviour::new(by_text)).await;
    let results = deliver(&server, CALL_TIMEOUT, &[("a", "good"), ("a", "bad")]).await;
    assert!(results[0].is_ok(), "{results:?}");
    assert!(
        matches!(results[1], Err(ReadHandlerError::Unsuccessful)),
        "{results:?}"
    );

    let second_revision = Predicate::new(|delivery| delivery.revision == 2);
    server.set_behaviour(Behaviour::new(Rule::When(second_revision, Reply::Fail)));
    let results = deliver(&server, CALL_TIMEOUT, &[("a", "x"), ("a", "y"), ("a", "z")]).await;
    assert!(results[0].is_ok() && results[2].is_ok(), "{results:?}");
    assert!(
        is_scripted_failure(ReadSideProtocol::Http, &results[1]),
        "{results:?}"
    );
}

#[tokio::test]
async fn a_hung_entity_makes_the_client_time_out() {
    for protocol in PROTOCOLS {
        let server = start(
            protocol,
            Behaviour::new(Rule::Entity("stuck".to_string(), Reply::Hang)),
        )
        .await;

        let short_timeout = Duration::from_millis(300);
        let results = deliver(
            &server,
            short_timeout,
            &[("stuck", "a"), ("account-2", "b")],
        )
        .await;

        assert!(
            matches!(results[0], Err(ReadHandlerError::Timeout(300))),
            "{protocol:?}: {results:?}"
        );
        assert!(results[1].is_ok(), "{protocol:?}: {results:?}");
        assert_eq!(answers(&server), [Answer::Unanswered, Answer::Accepted]);
    }
}

#[tokio::test]
async fn an_answer_without_successful_is_unsuccessful_for_the_client() {
    for protocol in PROTOCOLS {
        let server = start(
            protocol,
            Behaviour::new(Rule::Always(Reply::MissingSuccessful)),
        )
        .await;

        let results = deliver(&server, CALL_TIMEOUT, &[("a", "x")]).await;

        assert!(
            matches!(results[0], Err(ReadHandlerError::Unsuccessful)),
            "{protocol:?}: {results:?}"
        );
        let expected = match protocol {
            ReadSideProtocol::Grpc => Answer::Unsuccessful,
            ReadSideProtocol::Http => Answer::MissingSuccessful,
        };
        assert_eq!(answers(&server), [expected]);
    }
}

#[tokio::test]
async fn a_delay_combines_with_a_rule() {
    let delay = Duration::from_millis(150);
    let behaviour = Behaviour::new(Rule::First(1, Reply::Unsuccessful)).with_delay(delay);
    for protocol in PROTOCOLS {
        let server = start(protocol, behaviour.clone()).await;
        let started = Instant::now();

        let results = deliver(&server, CALL_TIMEOUT, &[("a", "x"), ("a", "y")]).await;

        assert!(started.elapsed() >= delay * 2, "{:?}", started.elapsed());
        assert!(
            matches!(results[0], Err(ReadHandlerError::Unsuccessful)),
            "{results:?}"
        );
        assert!(results[1].is_ok(), "{results:?}");
    }
}

#[tokio::test]
async fn a_new_behaviour_applies_to_later_calls_and_restarts_the_count() {
    let server = ReadHandlerServer::start_grpc(Behaviour::new(Rule::Always(Reply::Fail))).await;
    let before = deliver(&server, CALL_TIMEOUT, &[("a", "x")]).await;
    assert!(
        is_scripted_failure(ReadSideProtocol::Grpc, &before[0]),
        "{before:?}"
    );

    server.set_behaviour(Behaviour::new(Rule::First(1, Reply::Unsuccessful)));
    let after = deliver(&server, CALL_TIMEOUT, &[("a", "x"), ("a", "x")]).await;

    assert!(
        matches!(after[0], Err(ReadHandlerError::Unsuccessful)),
        "{after:?}"
    );
    assert!(after[1].is_ok(), "{after:?}");
    let expected = [Answer::Failed, Answer::Unsuccessful, Answer::Accepted];
    assert_eq!(answers(&server), expected);
}

#[tokio::test]
#[should_panic(expected = "did not get 2 accepted deliveries")]
async fn waiting_for_more_than_arrived_panics_listing_what_arrived() {
    let server = ReadHandlerServer::start_http(Behaviour::accept_all()).await;
    let _ = deliver(&server, CALL_TIMEOUT, &[("account-1", "only")]).await;

    server
        .wait_for_accepted(2, Duration::from_millis(100))
        .await;
}

#[tokio::test]
async fn a_stopped_server_is_unreachable_and_a_restarted_one_takes_its_port() {
    for protocol in PROTOCOLS {
        // Below the ephemeral range: while the server is down, no port-0 bind elsewhere can take the port.
        let port = free_port().expect("a free port");
        let server = ReadHandlerServer::start(protocol, port, Behaviour::accept_all())
            .await
            .expect("start on the picked port");
        let config = server.read_side_config(READ_SIDE, CALL_TIMEOUT);
        server.shutdown().await;

        let handler = read_handler_for(&config, None, None).expect("read handler client");
        let stored = event("a", 1, "x");
        let delivery = ReadSideDelivery {
            entity_type: "accounts",
            read_side_id: READ_SIDE,
            shard: 7,
            event: &stored,
        };
        let refused = handler.handle(delivery).await;
        assert!(
            matches!(refused, Err(ReadHandlerError::Unavailable(..))),
            "{protocol:?}: {refused:?}"
        );

        let restarted = ReadHandlerServer::start(protocol, port, Behaviour::accept_all())
            .await
            .expect("rebind the same port");
        let results = deliver(&restarted, CALL_TIMEOUT, &[("a", "x")]).await;
        assert!(results[0].is_ok(), "{protocol:?}: {results:?}");
    }
}

#[tokio::test]
async fn an_unreadable_http_body_is_answered_400_and_recorded_as_failed() {
    let server = ReadHandlerServer::start_http(Behaviour::accept_all()).await;
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", server.port))
        .await
        .expect("connect");
    let request = "POST /v1/readside/handle HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
                   Content-Length: 8\r\nConnection: close\r\n\r\nnot json";

    stream.write_all(request.as_bytes()).await.expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");

    assert!(response.starts_with("HTTP/1.1 400"), "{response}");
    let deliveries = server.deliveries();
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0].answered, Answer::Failed);
    assert!(deliveries[0].raw_json.is_none());
}
