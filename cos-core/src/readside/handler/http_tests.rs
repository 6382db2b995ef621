//! The HTTP read handler against a real hyper server on 127.0.0.1.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prost::Message;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use super::ReadHandlerError;
use super::test_support;
use crate::readside::{ReadSideBreaker, ReadSideProtocol};

/// What the fake handler saw of one request.
#[derive(Debug, Clone)]
struct SeenRequest {
    method: String,
    path: String,
    content_type: Option<String>,
    entity_id: Option<String>,
    event_tag: Option<String>,
    body: Value,
}

/// Answers every request with `status` and `body` after `delay`; returns the port and what it saw.
async fn serve(
    status: StatusCode,
    body: &'static str,
    delay: Duration,
) -> (u16, Arc<Mutex<Vec<SeenRequest>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let recorder = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let recorder = recorder.clone();
            let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                let recorder = recorder.clone();
                async move {
                    let header = |name: &str| {
                        request
                            .headers()
                            .get(name)
                            .map(|value| value.to_str().unwrap().to_string())
                    };
                    let mut seen_request = SeenRequest {
                        method: request.method().to_string(),
                        path: request.uri().path().to_string(),
                        content_type: header("content-type"),
                        entity_id: header("x-cos-entity-id"),
                        event_tag: header("x-cos-event-tag"),
                        body: Value::Null,
                    };
                    let body_bytes = request.into_body().collect().await.unwrap().to_bytes();
                    seen_request.body = serde_json::from_slice(&body_bytes).unwrap();
                    recorder.lock().unwrap().push(seen_request);
                    tokio::time::sleep(delay).await;
                    let response = Response::builder()
                        .status(status)
                        .body(Full::new(Bytes::from_static(body.as_bytes())))
                        .unwrap();
                    Ok::<_, Infallible>(response)
                }
            });
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (port, seen)
}

async fn deliver(
    port: u16,
    timeout: Duration,
    breaker: Option<ReadSideBreaker>,
    times: usize,
) -> Vec<Result<(), ReadHandlerError>> {
    test_support::deliver(ReadSideProtocol::Http, port, timeout, breaker, 7, times).await
}

async fn deliver_once(status: StatusCode, body: &'static str) -> Result<(), ReadHandlerError> {
    let (port, _) = serve(status, body, Duration::ZERO).await;
    let mut results = deliver(port, Duration::from_secs(5), None, 1).await;
    results.remove(0)
}

#[tokio::test]
async fn http_handler_answering_true_is_success_and_gets_the_reference_request() {
    let (port, seen) = serve(StatusCode::OK, r#"{"successful":true}"#, Duration::ZERO).await;

    let results = deliver(port, Duration::from_secs(5), None, 1).await;

    assert!(results[0].is_ok(), "{results:?}");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    let request = &seen[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/v1/readside/handle");
    assert_eq!(request.content_type.as_deref(), Some("application/json"));
    assert_eq!(request.entity_id.as_deref(), Some("account-7"));
    assert_eq!(request.event_tag.as_deref(), Some("7"));

    let expected = test_support::event();
    let decode = |field: &str| {
        STANDARD
            .decode(request.body[field].as_str().unwrap())
            .unwrap()
    };
    assert_eq!(decode("event"), expected.event.unwrap().encode_to_vec());
    assert_eq!(
        decode("state"),
        expected.resulting_state.unwrap().encode_to_vec()
    );
    assert_eq!(request.body["read_side_id"], "accounts-view");
    assert_eq!(
        request.body["meta"],
        json!({
            "entity_id": "account-7",
            "revision_number": 3,
            "revision_date": "2023-11-14T22:13:20.250Z",
            "headers": [{"key": "x-user", "string_value": "alice"}]
        })
    );
}

#[tokio::test]
async fn http_handler_answering_false_is_unsuccessful() {
    let result = deliver_once(StatusCode::OK, r#"{"successful":false}"#).await;

    assert!(
        matches!(result, Err(ReadHandlerError::Unsuccessful)),
        "{result:?}"
    );
}

#[tokio::test]
async fn http_answer_without_successful_is_unsuccessful() {
    let empty = deliver_once(StatusCode::OK, "{}").await;
    let null = deliver_once(StatusCode::OK, r#"{"successful":null}"#).await;

    assert!(
        matches!(empty, Err(ReadHandlerError::Unsuccessful)),
        "{empty:?}"
    );
    assert!(
        matches!(null, Err(ReadHandlerError::Unsuccessful)),
        "{null:?}"
    );
}

#[tokio::test]
async fn http_error_status_reports_the_status_and_the_body() {
    let result = deliver_once(StatusCode::INTERNAL_SERVER_ERROR, "boom").await;

    let Err(error @ ReadHandlerError::HttpStatus { status: 500, .. }) = &result else {
        panic!("expected http status, got {result:?}");
    };
    let message = error.to_string();
    assert!(
        message.contains("500") && message.contains("boom"),
        "{message}"
    );
}

#[tokio::test]
async fn http_error_body_is_cut_to_200_characters() {
    const LONG_BODY: &str = concat!(
        "0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789",
        "0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789",
        "the end"
    );

    let result = deliver_once(StatusCode::BAD_GATEWAY, LONG_BODY).await;

    let Err(ReadHandlerError::HttpStatus {
        status: 502,
        body_start,
    }) = &result
    else {
        panic!("expected http status, got {result:?}");
    };
    assert_eq!(body_start.chars().count(), 200);
}

#[tokio::test]
async fn http_answer_that_is_not_json_is_an_invalid_response() {
    let result = deliver_once(StatusCode::OK, "successful").await;

    assert!(
        matches!(result, Err(ReadHandlerError::InvalidResponse(_))),
        "{result:?}"
    );
}

#[tokio::test]
async fn slow_http_handler_beyond_the_timeout_is_a_timeout() {
    let (port, _) = serve(
        StatusCode::OK,
        r#"{"successful":true}"#,
        Duration::from_secs(2),
    )
    .await;

    let results = deliver(port, Duration::from_millis(200), None, 1).await;

    assert!(
        matches!(results[0], Err(ReadHandlerError::Timeout(200))),
        "{results:?}"
    );
}

#[tokio::test]
async fn unreachable_http_handler_is_unavailable_naming_the_address() {
    let closed = test_support::closed_port();
    let port = closed.port;

    let results = deliver(port, Duration::from_secs(5), None, 1).await;

    let Err(ReadHandlerError::Unavailable(address, _)) = &results[0] else {
        panic!("expected unavailable, got {results:?}");
    };
    assert_eq!(address, &format!("http://127.0.0.1:{port}"));
}

#[tokio::test]
async fn http_breaker_opens_after_error_statuses_but_not_after_false_answers() {
    let breaker = ReadSideBreaker {
        max_failures: 2,
        call_timeout: Duration::from_secs(5),
        reset_timeout: Duration::from_secs(60),
    };
    let (failing_port, failing_seen) =
        serve(StatusCode::SERVICE_UNAVAILABLE, "down", Duration::ZERO).await;
    let (refusing_port, refusing_seen) =
        serve(StatusCode::OK, r#"{"successful":false}"#, Duration::ZERO).await;

    let failing = deliver(failing_port, Duration::from_secs(5), Some(breaker), 3).await;
    let refusing = deliver(refusing_port, Duration::from_secs(5), Some(breaker), 3).await;

    assert!(
        matches!(failing[2], Err(ReadHandlerError::BreakerOpen)),
        "{failing:?}"
    );
    assert_eq!(failing_seen.lock().unwrap().len(), 2);
    assert!(
        refusing
            .iter()
            .all(|result| matches!(result, Err(ReadHandlerError::Unsuccessful))),
        "{refusing:?}"
    );
    assert_eq!(refusing_seen.lock().unwrap().len(), 3);
}

/// Answers `{"successful":true}` on every request; counts the connections it accepted. With `keep_alive`
/// off it closes each connection after its answer.
async fn serve_counting_connections(keep_alive: bool) -> (u16, Arc<Mutex<usize>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let connections = Arc::new(Mutex::new(0));
    let counter = connections.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            *counter.lock().unwrap() += 1;
            let service = service_fn(|request: Request<hyper::body::Incoming>| async move {
                let _ = request.into_body().collect().await;
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
                    br#"{"successful":true}"#,
                ))))
            });
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .keep_alive(keep_alive)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (port, connections)
}

#[tokio::test]
async fn http_calls_reuse_a_kept_alive_connection() {
    let (port, connections) = serve_counting_connections(true).await;
    let results = deliver(port, Duration::from_secs(5), None, 5).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(*connections.lock().unwrap(), 1);
}

#[tokio::test]
async fn http_calls_reconnect_when_the_server_closes_connections() {
    let (port, connections) = serve_counting_connections(false).await;
    let results = deliver(port, Duration::from_secs(5), None, 5).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(*connections.lock().unwrap(), 5);
}
