//! Every way `cos readside` can fail, and the one place that maps gRPC statuses to those failures and
//! failures to process exit codes (0 ok, 1 the node said no, 2 usage, 3 the node cannot be reached).

use std::error::Error as StdError;
use std::time::Duration;

use tonic::{Code, Status};

/// Exit code when the node answered with an error (or an unusable reply).
pub const EXIT_SERVER_ERROR: u8 = 1;
/// Exit code for a usage error; clap uses the same code for bad arguments.
pub const EXIT_USAGE: u8 = 2;
/// Exit code when no node answered: refused, unknown host, timed out, connection lost, not a gRPC server.
pub const EXIT_UNREACHABLE: u8 = 3;

/// How tonic begins the message of a status it inferred from a plain HTTP reply (no `grpc-status`).
const NOT_GRPC_MESSAGE_PREFIX: &str = "grpc-status header missing";

/// A failed `cos readside` command; its `Display` is the one line printed after `cos readside: `.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// `--address` (or `COS_CLI_ADDRESS`) is not a usable gRPC endpoint.
    #[error("invalid address {address:?}: {reason}")]
    InvalidAddress { address: String, reason: String },
    /// Nothing answered: connection refused, DNS failure, connect or request timeout, connection lost.
    #[error("cannot reach {address}: {reason}")]
    Unreachable { address: String, reason: String },
    /// The node does not serve the read-side services: read sides are switched off there.
    #[error("read sides are not enabled on {address} (COS_READ_SIDE_ENABLED=false)")]
    ReadSidesDisabled { address: String },
    /// The node answered with a gRPC error status.
    #[error("{}", format_status(*code, message))]
    Server { code: Code, message: String },
    /// The node answered `successful: false` to a pause, resume, restart or skip.
    #[error("the node did not {action} read side {read_side_id:?} on {scope}")]
    NotSuccessful {
        action: &'static str,
        read_side_id: String,
        scope: String,
    },
    /// The node's reply lacks something the protocol promises.
    #[error("unexpected reply from the node: {reason}")]
    MalformedReply { reason: String },
    /// The JSON output could not be produced.
    #[error("cannot write JSON output: {0}")]
    Json(#[from] serde_json::Error),
    /// The async runtime for the client could not be built.
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

impl CliError {
    /// The process exit code for this failure, so scripts can tell "the node said no" from "no node".
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::InvalidAddress { .. } => EXIT_USAGE,
            CliError::Unreachable { .. } => EXIT_UNREACHABLE,
            CliError::ReadSidesDisabled { .. }
            | CliError::Server { .. }
            | CliError::NotSuccessful { .. }
            | CliError::MalformedReply { .. }
            | CliError::Json(_)
            | CliError::Runtime(_) => EXIT_SERVER_ERROR,
        }
    }

    /// Classifies a failed call: statuses tonic made up locally from a transport failure mean the node was
    /// not reached; statuses the node sent are its answer.
    pub(crate) fn from_status(
        status: Status,
        address: &str,
        request_timeout: Duration,
    ) -> CliError {
        let generated_locally = status.source().is_some();
        let transport_failure = matches!(
            status.code(),
            Code::Unavailable | Code::Cancelled | Code::DeadlineExceeded
        );
        if generated_locally && transport_failure {
            let reason = if chain_has_timeout(&status) {
                format!("no answer within {} s", request_timeout.as_secs())
            } else {
                join_messages(status.message().to_string(), status.source())
            };
            return CliError::Unreachable {
                address: address.to_string(),
                reason,
            };
        }
        // tonic's wording when an HTTP answer had no gRPC status: a proxy or some other server, not a node.
        if status.message().starts_with(NOT_GRPC_MESSAGE_PREFIX) {
            return CliError::Unreachable {
                address: address.to_string(),
                reason: format!("no gRPC server answers there ({})", status.message()),
            };
        }
        if status.code() == Code::Unimplemented {
            return CliError::ReadSidesDisabled {
                address: address.to_string(),
            };
        }
        // A skip over all shards that failed part-way names what it skipped before failing.
        let skipped = super::skipped::skipped_from_metadata(status.metadata());
        let mut message = status.message().to_string();
        if !skipped.is_empty() {
            let lines: Vec<String> = skipped.iter().map(|record| record.describe()).collect();
            message.push_str(&format!(" (before the failure: {})", lines.join("; ")));
        }
        CliError::Server {
            code: status.code(),
            message,
        }
    }
}

/// `NOT_FOUND: message`, or just the code name when the node sent no message.
fn format_status(code: Code, message: &str) -> String {
    if message.is_empty() {
        grpc_code_name(code).to_string()
    } else {
        format!("{}: {message}", grpc_code_name(code))
    }
}

/// The canonical upper-case gRPC name of a status code, as operators see it in gRPC tooling and docs.
pub fn grpc_code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

fn chain_has_timeout(error: &(dyn StdError + 'static)) -> bool {
    let mut current: Option<&(dyn StdError + 'static)> = Some(error);
    while let Some(error) = current {
        if error.is::<tonic::TimeoutExpired>() {
            return true;
        }
        current = error.source();
    }
    false
}

/// Joins an error and its sources into one line, skipping the wrappers that only say "transport error" and
/// any message that repeats the one before it (tonic and hyper often wrap without adding anything).
pub(crate) fn describe_error_chain(error: &(dyn StdError + 'static)) -> String {
    join_messages(error.to_string(), error.source())
}

fn join_messages(first: String, mut next: Option<&(dyn StdError + 'static)>) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut text = first;
    loop {
        let is_bare_wrapper = text == "transport error" || text.is_empty();
        let repeats_previous = parts
            .last()
            .is_some_and(|previous| previous.contains(&text));
        if !is_bare_wrapper && !repeats_previous {
            parts.push(text);
        }
        let Some(error) = next else { break };
        text = error.to_string();
        next = error.source();
    }
    if parts.is_empty() {
        return "transport error".to_string();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(30);

    #[test]
    fn a_partly_failed_skip_names_what_it_skipped_before_failing() {
        let mut status = Status::unavailable("skipped on 1 shard(s), failed on 1: shard 4: down");
        status.metadata_mut().append(
            super::super::skipped::SKIPPED_HEADER,
            tonic::metadata::MetadataValue::from_static(
                "shard=3 offset=42 entity_type=account entity_id=a-1 revision=7",
            ),
        );
        let error = CliError::from_status(status, "http://127.0.0.1:9000", TIMEOUT);
        assert_eq!(error.exit_code(), EXIT_SERVER_ERROR);
        assert!(
            error.to_string().ends_with(
                "(before the failure: skipped shard 3 offset 42: account/a-1 revision 7)"
            ),
            "{error}"
        );
    }

    #[test]
    fn server_status_prints_code_name_and_message() {
        let error = CliError::from_status(
            Status::not_found("read side \"x\" is not configured"),
            "http://127.0.0.1:9000",
            TIMEOUT,
        );
        assert_eq!(
            error.to_string(),
            "NOT_FOUND: read side \"x\" is not configured"
        );
        assert_eq!(error.exit_code(), EXIT_SERVER_ERROR);
    }

    #[test]
    fn server_status_without_message_prints_only_the_code_name() {
        let error = CliError::from_status(Status::new(Code::Internal, ""), "a", TIMEOUT);
        assert_eq!(error.to_string(), "INTERNAL");
    }

    #[test]
    fn unimplemented_means_read_sides_are_disabled() {
        let error = CliError::from_status(Status::unimplemented(""), "http://node-1:9000", TIMEOUT);
        assert_eq!(
            error.to_string(),
            "read sides are not enabled on http://node-1:9000 (COS_READ_SIDE_ENABLED=false)"
        );
        assert_eq!(error.exit_code(), EXIT_SERVER_ERROR);
    }

    #[test]
    fn unavailable_sent_by_the_node_is_an_answer_not_unreachability() {
        let error = CliError::from_status(Status::unavailable("shutting down"), "a", TIMEOUT);
        assert_eq!(error.to_string(), "UNAVAILABLE: shutting down");
        assert_eq!(error.exit_code(), EXIT_SERVER_ERROR);
    }

    #[test]
    fn local_timeout_is_unreachable_with_the_deadline() {
        let status = Status::from_error(Box::new(tonic::TimeoutExpired(())));
        let error = CliError::from_status(status, "http://127.0.0.1:9000", TIMEOUT);
        assert_eq!(
            error.to_string(),
            "cannot reach http://127.0.0.1:9000: no answer within 30 s"
        );
        assert_eq!(error.exit_code(), EXIT_UNREACHABLE);
    }

    #[test]
    fn plain_http_reply_means_no_node_answers_there() {
        let status =
            Status::unimplemented("grpc-status header missing, mapped from HTTP status code 404");
        let error = CliError::from_status(status, "http://proxy:9000", TIMEOUT);
        assert_eq!(
            error.to_string(),
            "cannot reach http://proxy:9000: no gRPC server answers there \
             (grpc-status header missing, mapped from HTTP status code 404)"
        );
        assert_eq!(error.exit_code(), EXIT_UNREACHABLE);
    }

    #[test]
    fn every_code_has_its_canonical_name() {
        assert_eq!(
            grpc_code_name(Code::FailedPrecondition),
            "FAILED_PRECONDITION"
        );
        assert_eq!(grpc_code_name(Code::Unauthenticated), "UNAUTHENTICATED");
        assert_eq!(grpc_code_name(Code::DataLoss), "DATA_LOSS");
    }

    #[test]
    fn error_chain_skips_bare_wrappers_and_repeats() {
        let inner =
            std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        let connect = tonic::ConnectError(Box::new(inner));
        assert_eq!(describe_error_chain(&connect), "connection refused");
        let status = Status::from_error(Box::new(tonic::ConnectError(Box::new(
            std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused"),
        ))));
        let error = CliError::from_status(status, "http://127.0.0.1:1", TIMEOUT);
        assert_eq!(
            error.to_string(),
            "cannot reach http://127.0.0.1:1: connection refused"
        );
        assert_eq!(error.exit_code(), EXIT_UNREACHABLE);
    }
}
