//! The HTTP side: `POST /v1/readside/handle` with the JSON body cos-core's HTTP client sends (snake_case
//! fields, every `google.protobuf.Any` as base64 of its serialized bytes), decoded into the same [`Delivery`]
//! as a gRPC call. camelCase meta fields are read too, for bodies written by hand.

use std::convert::Infallible;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use cos_core::proto::chief_of_state::v1::{HandleReadSideRequest, Header, MetaData, header};
use cos_core::readside::handler::{ENTITY_ID_HEADER, ENTITY_TYPE_HEADER, EVENT_TAG_HEADER};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::CONTENT_TYPE;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prost::Message;
use prost_types::Any;
use serde_json::{Map, Value};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use super::{Answer, Delivery, DeliveryHeaders, Recorder};

/// The handler endpoint, fixed by the contract.
const HANDLE_PATH: &str = "/v1/readside/handle";

/// Accepts connections until the recorder's stop signal; dropping the connection set closes them all.
pub(super) async fn serve(
    listener: TcpListener,
    recorder: Recorder,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = recorder.until_stopped() => return,
        };
        while connections.try_join_next().is_some() {}
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(error) => {
                tracing::warn!(error = %error, "http read handler cannot accept a connection");
                continue;
            }
        };
        let connection_recorder = recorder.clone();
        let tls = tls.clone();
        connections.spawn(async move {
            let service = service_fn(move |request| handle(request, connection_recorder.clone()));
            let http = hyper::server::conn::http1::Builder::new();
            match tls {
                None => {
                    let _ = http.serve_connection(TokioIo::new(stream), service).await;
                }
                Some(acceptor) => {
                    if let Ok(stream) = acceptor.accept(stream).await {
                        let _ = http.serve_connection(TokioIo::new(stream), service).await;
                    }
                }
            }
        });
    }
}

fn text_response(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response
}

fn json_response(body: &str) -> Response<Full<Bytes>> {
    let mut response = text_response(StatusCode::OK, body);
    let json = hyper::header::HeaderValue::from_static("application/json");
    response.headers_mut().insert(CONTENT_TYPE, json);
    response
}

async fn handle(
    request: Request<Incoming>,
    recorder: Recorder,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if request.method() != Method::POST || request.uri().path() != HANDLE_PATH {
        return Ok(text_response(StatusCode::NOT_FOUND, "not found"));
    }
    let header = |name| {
        let value = request.headers().get(name)?;
        value.to_str().ok().map(str::to_string)
    };
    let mut headers = DeliveryHeaders {
        entity_id: header(ENTITY_ID_HEADER),
        entity_type: header(ENTITY_TYPE_HEADER),
        event_tag: header(EVENT_TAG_HEADER),
        content_type: header(CONTENT_TYPE.as_str()),
        raw_json: None,
    };
    let body = match request.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) => {
            let reason = format!("cannot read the body: {error}");
            return Ok(text_response(StatusCode::BAD_REQUEST, &reason));
        }
    };
    headers.raw_json = serde_json::from_slice(&body).ok();
    let parsed = match &headers.raw_json {
        Some(json) => request_from_json(json),
        None => Err("body is not json".to_string()),
    };
    let read_side_request = match parsed {
        Ok(read_side_request) => read_side_request,
        Err(reason) => {
            tracing::warn!(reason = %reason, "http read handler got an unreadable body");
            let unreadable = Delivery::arrived(HandleReadSideRequest::default(), headers);
            recorder.record_unreadable(unreadable);
            return Ok(text_response(StatusCode::BAD_REQUEST, &reason));
        }
    };
    let delivery = Delivery::arrived(read_side_request, headers);
    let response = match recorder.respond(delivery).await {
        Answer::Accepted => json_response(r#"{"successful":true}"#),
        Answer::Unsuccessful => json_response(r#"{"successful":false}"#),
        Answer::MissingSuccessful => json_response("{}"),
        Answer::Failed => text_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "scripted read handler failure",
        ),
        Answer::Unanswered => text_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "read handler server stopped",
        ),
    };
    Ok(response)
}

/// The request the JSON body describes; `read_side_id` is required, absent Anys and meta stay `None`.
fn request_from_json(json: &Value) -> Result<HandleReadSideRequest, String> {
    let Value::Object(fields) = json else {
        return Err("body is not a json object".to_string());
    };
    let Some(Value::String(read_side_id)) = fields.get("read_side_id") else {
        return Err("read_side_id is missing or not a string".to_string());
    };
    let meta = match fields.get("meta") {
        Some(meta) => Some(meta_from_json(meta)?),
        None => None,
    };
    Ok(HandleReadSideRequest {
        event: any_from_base64("event", fields.get("event"))?,
        state: any_from_base64("state", fields.get("state"))?,
        meta,
        read_side_id: read_side_id.clone(),
    })
}

/// A `google.protobuf.Any` from standard base64 of its serialized bytes.
fn any_from_base64(field: &str, value: Option<&Value>) -> Result<Option<Any>, String> {
    let Some(value) = value else {
        return Ok(None);
    };
    let Some(text) = value.as_str() else {
        return Err(format!("{field} is not a base64 string"));
    };
    let bytes = STANDARD
        .decode(text)
        .map_err(|error| format!("{field} is not base64: {error}"))?;
    let any = Any::decode(bytes.as_slice())
        .map_err(|error| format!("{field} is not a serialized Any: {error}"))?;
    Ok(Some(any))
}

/// `MetaData` from its JSON (snake_case, or camelCase); `revision_date` is not parsed.
fn meta_from_json(json: &Value) -> Result<MetaData, String> {
    let Value::Object(fields) = json else {
        return Err("meta is not a json object".to_string());
    };
    let field = |snake: &str, camel: &str| fields.get(snake).or_else(|| fields.get(camel));
    let mut meta = MetaData::default();
    if let Some(entity_id) = field("entity_id", "entityId") {
        let Some(entity_id) = entity_id.as_str() else {
            return Err("meta.entity_id is not a string".to_string());
        };
        meta.entity_id = entity_id.to_string();
    }
    if let Some(revision) = field("revision_number", "revisionNumber") {
        let revision = revision
            .as_u64()
            .and_then(|number| u32::try_from(number).ok());
        let Some(revision) = revision else {
            return Err("meta.revision_number is not a u32".to_string());
        };
        meta.revision_number = revision;
    }
    if let Some(data) = fields.get("data") {
        let Value::Object(entries) = data else {
            return Err("meta.data is not a json object".to_string());
        };
        for (key, value) in entries {
            if let Some(any) = any_from_base64("meta.data", Some(value))? {
                meta.data.insert(key.clone(), any);
            }
        }
    }
    if let Some(headers) = fields.get("headers") {
        let Value::Array(headers) = headers else {
            return Err("meta.headers is not a json array".to_string());
        };
        for header_json in headers {
            meta.headers.push(header_from_json(header_json)?);
        }
    }
    Ok(meta)
}

fn header_from_json(json: &Value) -> Result<Header, String> {
    let Value::Object(fields) = json else {
        return Err("a meta header is not a json object".to_string());
    };
    let text = |fields: &Map<String, Value>, name: &str| {
        fields.get(name).and_then(Value::as_str).map(str::to_string)
    };
    let key = text(fields, "key").unwrap_or_default();
    let string_value = text(fields, "string_value").or_else(|| text(fields, "stringValue"));
    let bytes_value = text(fields, "bytes_value").or_else(|| text(fields, "bytesValue"));
    let value = match (string_value, bytes_value) {
        (Some(text), _) => Some(header::Value::StringValue(text)),
        (None, Some(encoded)) => {
            let bytes = STANDARD
                .decode(encoded)
                .map_err(|error| format!("header {key} bytes are not base64: {error}"))?;
            Some(header::Value::BytesValue(bytes))
        }
        (None, None) => None,
    };
    Ok(Header { key, value })
}
