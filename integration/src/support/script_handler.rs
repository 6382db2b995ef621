//! A write handler driven by its commands, for the edge cases the bank example never produces: several
//! events, no-ops, errors with details, slow answers, contract violations. It records what it receives.
//!
//! A command is a packed `google.protobuf.StringValue` holding a script:
//! - `emit:a,b,c` — events `a`, `b`, `c` (in the `events` field)
//! - `emit-legacy:a` — one event in the deprecated `event` field
//! - `noop` — no events
//! - `fail:<grpc code number>:<message>` — that status; `fail-details:<code>:<message>` adds a
//!   `google.rpc.BadRequest` detail
//! - `sleep:<ms>:<event>` — answer after a delay with one event
//! - `emit-type:<type url>` — one event whose type URL is given
//!
//! Events are StringValues; HandleEvent appends the event text to the prior state (a StringValue, `""` for a
//! new entity) with `|` between. An event `!nostate` gets a reply without `resulting_state`; `!slow-<ms>`
//! delays HandleEvent.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

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
use tokio::task::JoinHandle;
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// Type URL of the StringValue scripts, events and states.
pub const STRING_VALUE_URL: &str = "type.googleapis.com/google.protobuf.StringValue";

/// Packs text as a `google.protobuf.StringValue`.
pub fn text_any(text: &str) -> Any {
    Any {
        type_url: STRING_VALUE_URL.to_string(),
        value: text.to_string().encode_to_vec(),
    }
}

/// Reads a packed StringValue ("" for anything else, e.g. the initial Empty state).
pub fn any_text(any: Option<&Any>) -> String {
    match any {
        Some(any) if any.type_url == STRING_VALUE_URL => {
            String::decode(any.value.as_slice()).unwrap_or_default()
        }
        _ => String::new(),
    }
}

/// What one HandleCommand call carried.
#[derive(Debug, Clone)]
pub struct ObservedCommand {
    pub script: String,
    pub prior_state: String,
    pub prior_revision: u32,
    /// Request metadata as (key, value) text pairs (binary values base64-free: raw bytes lossily decoded).
    pub metadata: Vec<(String, String)>,
}

/// What one HandleEvent call carried.
#[derive(Debug, Clone)]
pub struct ObservedEvent {
    pub event: String,
    pub prior_state: String,
    pub revision: u32,
    pub header_keys: Vec<String>,
}

#[derive(Default)]
struct Observations {
    commands: Vec<ObservedCommand>,
    events: Vec<ObservedEvent>,
    /// `sleep:` scripts that have finished sleeping and answered.
    finished_sleeps: usize,
}

/// The scriptable handler; clones share their observations.
#[derive(Clone, Default)]
pub struct ScriptHandler {
    observations: Arc<Mutex<Observations>>,
}

impl ScriptHandler {
    pub fn commands(&self) -> Vec<ObservedCommand> {
        self.lock().commands.clone()
    }

    pub fn events(&self) -> Vec<ObservedEvent> {
        self.lock().events.clone()
    }

    /// How many `sleep:` commands have been answered (late answers included).
    pub fn finished_sleeps(&self) -> usize {
        self.lock().finished_sleeps
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Observations> {
        self.observations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Serves the handler on a fresh loopback port.
    pub async fn serve(&self) -> std::io::Result<RunningHandler> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let service = WriteSideHandlerServiceServer::new(self.clone());
        let task = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(accept_without_delay(listener))
                .await;
        });
        Ok(RunningHandler { address, task })
    }
}

/// A handler server; stops when dropped.
pub struct RunningHandler {
    pub address: std::net::SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for RunningHandler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn metadata_pairs(metadata: &tonic::metadata::MetadataMap) -> Vec<(String, String)> {
    metadata
        .iter()
        .map(|entry| match entry {
            tonic::metadata::KeyAndValueRef::Ascii(key, value) => (
                key.as_str().to_string(),
                value.to_str().unwrap_or_default().to_string(),
            ),
            tonic::metadata::KeyAndValueRef::Binary(key, value) => (
                key.as_str().to_string(),
                String::from_utf8_lossy(&value.to_bytes().unwrap_or_default()).into_owned(),
            ),
        })
        .collect()
}

fn failure(code_text: &str, message: &str, with_details: bool) -> Status {
    let code = Code::from_i32(code_text.parse().unwrap_or(2));
    if !with_details {
        return Status::new(code, message);
    }
    let mut details = ErrorDetails::new();
    details.add_bad_request_violation("amount", "must be positive");
    Status::with_error_details(code, message, details)
}

#[tonic::async_trait]
impl WriteSideHandlerService for ScriptHandler {
    async fn handle_command(
        &self,
        request: Request<HandleCommandRequest>,
    ) -> Result<Response<HandleCommandResponse>, Status> {
        let metadata = metadata_pairs(request.metadata());
        let body = request.into_inner();
        let script = any_text(body.command.as_ref());
        self.lock().commands.push(ObservedCommand {
            script: script.clone(),
            prior_state: any_text(body.prior_state.as_ref()),
            prior_revision: body
                .prior_event_meta
                .as_ref()
                .map_or(0, |meta| meta.revision_number),
            metadata,
        });
        let (verb, argument) = script.split_once(':').unwrap_or((script.as_str(), ""));
        let mut response = HandleCommandResponse::default();
        match verb {
            "emit" => response.events = argument.split(',').map(text_any).collect(),
            "emit-legacy" => {
                #[allow(deprecated)]
                {
                    response.event = Some(text_any(argument));
                }
            }
            "noop" => {}
            "fail" | "fail-details" => {
                let (code, message) = argument.split_once(':').unwrap_or((argument, ""));
                return Err(failure(code, message, verb == "fail-details"));
            }
            "sleep" => {
                let (millis, event) = argument.split_once(':').unwrap_or((argument, "late"));
                // The work runs detached, like a real handler's would: it completes (and is counted) even
                // when the call is cancelled because its deadline passed.
                let delay = Duration::from_millis(millis.parse().unwrap_or(0));
                let observations = self.observations.clone();
                let work = tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    observations
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .finished_sleeps += 1;
                });
                let _ = work.await;
                response.events = vec![text_any(event)];
            }
            "emit-type" => {
                response.events = vec![Any {
                    type_url: argument.to_string(),
                    value: Vec::new(),
                }];
            }
            other => {
                return Err(Status::invalid_argument(format!(
                    "unknown script {other:?}"
                )));
            }
        }
        Ok(Response::new(response))
    }

    async fn handle_event(
        &self,
        request: Request<HandleEventRequest>,
    ) -> Result<Response<HandleEventResponse>, Status> {
        let body = request.into_inner();
        let event = any_text(body.event.as_ref());
        let prior_state = any_text(body.prior_state.as_ref());
        let meta = body.event_meta.unwrap_or_default();
        self.lock().events.push(ObservedEvent {
            event: event.clone(),
            prior_state: prior_state.clone(),
            revision: meta.revision_number,
            header_keys: meta
                .headers
                .iter()
                .map(|header| header.key.clone())
                .collect(),
        });
        if event == "!nostate" {
            return Ok(Response::new(HandleEventResponse::default()));
        }
        if let Some(millis) = event.strip_prefix("!slow-") {
            tokio::time::sleep(Duration::from_millis(millis.parse().unwrap_or(0))).await;
        }
        if let Some(length) = event.strip_prefix("!state-of-") {
            // A state of exactly this many characters, whatever came before: for the message-size limits.
            let length = length.parse().unwrap_or(0);
            return Ok(Response::new(HandleEventResponse {
                resulting_state: Some(text_any(&"s".repeat(length))),
            }));
        }
        let resulting = if prior_state.is_empty() {
            event
        } else {
            format!("{prior_state}|{event}")
        };
        Ok(Response::new(HandleEventResponse {
            resulting_state: Some(text_any(&resulting)),
        }))
    }
}
