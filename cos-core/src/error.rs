//! Command errors and the one place where they become gRPC statuses.
//!
//! An entity answers either a state or a `google.rpc.Status` (the original's reply model). Handler statuses
//! pass through untouched (code, message and details); our own failures get the codes documented here.

use prost::Message;
use tonic::Code;

use crate::domain::{EntityKey, IdentityError, Revision};
use crate::proto::google_rpc;

/// Everything that can make a command or a state query fail.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CommandError {
    /// Bad client input, or a handler reply that breaks the contract (INVALID_ARGUMENT).
    #[error("{0}")]
    InvalidArgument(String),
    /// The entity has no persisted event (NOT_FOUND with an empty message, as in the original).
    #[error("entity not found")]
    NotFound,
    /// The request names an entity type this node does not know (INVALID_ARGUMENT).
    #[error("unknown entity type {0:?}")]
    UnknownEntityType(String),
    /// The write handler answered with a gRPC error: the client sees exactly that status.
    #[error("write handler failed: {}", .0.message)]
    Handler(google_rpc::Status),
    /// The write handler could not be reached (UNAVAILABLE).
    #[error("write handler unavailable: {0}")]
    HandlerUnavailable(String),
    /// The command did not finish in time and was abandoned before anything was written (DEADLINE_EXCEEDED).
    #[error("{0}")]
    DeadlineExceeded(String),
    /// The journal could not be read or written; nothing was committed (UNAVAILABLE).
    #[error("journal unavailable: {0}")]
    StoreUnavailable(String),
    /// Another writer already stored this revision: this entity instance stopped instead of overwriting (ABORTED).
    #[error(
        "revision {revision} of {key} was written by another writer; command not applied, retry"
    )]
    WriterConflict { key: EntityKey, revision: Revision },
    /// The command may or may not have been committed (reply lost): reported as UNAVAILABLE, never as success.
    #[error("outcome unknown: {0}")]
    OutcomeUnknown(String),
    /// The command's result would not fit in a reply (RESOURCE_EXHAUSTED); nothing was persisted.
    #[error("{0}")]
    TooLarge(String),
    /// A bug or corrupt stored data (INTERNAL).
    #[error("{0}")]
    Internal(String),
    /// The request could not be routed right now (a shard or node is stopping or moving); nothing was done
    /// and the client may retry (UNAVAILABLE).
    #[error("{0}")]
    Retry(String),
    /// The node a request was forwarded to no longer hosts the shard (it moved); the sender re-routes.
    #[error("{0}")]
    NotHostedHere(String),
    /// The error another node's entity answered: passed on untouched.
    #[error("{}", .0.message)]
    Remote(google_rpc::Status),
}

impl From<IdentityError> for CommandError {
    fn from(error: IdentityError) -> Self {
        Self::InvalidArgument(error.to_string())
    }
}

impl CommandError {
    /// The gRPC code the client sees for this error.
    pub fn code(&self) -> Code {
        match self {
            Self::InvalidArgument(_) | Self::UnknownEntityType(_) => Code::InvalidArgument,
            Self::NotFound => Code::NotFound,
            Self::Handler(status) | Self::Remote(status) => Code::from_i32(status.code),
            Self::HandlerUnavailable(_)
            | Self::StoreUnavailable(_)
            | Self::OutcomeUnknown(_)
            | Self::Retry(_)
            | Self::NotHostedHere(_) => Code::Unavailable,
            Self::DeadlineExceeded(_) => Code::DeadlineExceeded,
            Self::WriterConflict { .. } => Code::Aborted,
            Self::TooLarge(_) => Code::ResourceExhausted,
            Self::Internal(_) => Code::Internal,
        }
    }

    /// The `google.rpc.Status` an entity replies with.
    pub fn to_rpc_status(&self) -> google_rpc::Status {
        match self {
            Self::Handler(status) | Self::Remote(status) => status.clone(),
            // The original answers NOT_FOUND with an empty description; clients may rely on it.
            Self::NotFound => google_rpc::Status {
                code: Code::NotFound as i32,
                message: String::new(),
                details: Vec::new(),
            },
            other => google_rpc::Status {
                code: other.code() as i32,
                message: other.to_string(),
                details: Vec::new(),
            },
        }
    }

    /// Keeps a handler's status whole: code, message and the details of its `grpc-status-details-bin` trailer.
    pub fn from_handler_status(status: &tonic::Status) -> Self {
        let details = google_rpc::Status::decode(status.details())
            .map(|decoded| decoded.details)
            .unwrap_or_default();
        let rpc_status = google_rpc::Status {
            code: status.code() as i32,
            message: status.message().to_string(),
            details,
        };
        match status.code() {
            Code::Unavailable => Self::HandlerUnavailable(status.message().to_string()),
            _ => Self::Handler(rpc_status),
        }
    }
}

/// Turns an entity's error reply into the status sent to the client, details included.
pub fn rpc_status_to_tonic(status: google_rpc::Status) -> tonic::Status {
    let code = Code::from_i32(status.code);
    if status.details.is_empty() {
        return tonic::Status::new(code, status.message);
    }
    let message = status.message.clone();
    tonic::Status::with_details(code, message, status.encode_to_vec().into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost_types::Any;

    #[test]
    fn handler_details_survive_the_round_trip() {
        let detail = Any {
            type_url: "type.googleapis.com/google.rpc.BadRequest".into(),
            value: vec![1, 2, 3],
        };
        let original = google_rpc::Status {
            code: Code::FailedPrecondition as i32,
            message: "insufficient funds".into(),
            details: vec![detail.clone()],
        };
        let from_handler = tonic::Status::with_details(
            Code::FailedPrecondition,
            "insufficient funds",
            original.encode_to_vec().into(),
        );
        let error = CommandError::from_handler_status(&from_handler);
        let to_client = rpc_status_to_tonic(error.to_rpc_status());
        assert_eq!(to_client.code(), Code::FailedPrecondition);
        assert_eq!(to_client.message(), "insufficient funds");
        let decoded = google_rpc::Status::decode(to_client.details()).expect("details decode");
        assert_eq!(decoded.details, vec![detail]);
    }

    #[test]
    fn not_found_has_an_empty_message_like_the_original() {
        let status = CommandError::NotFound.to_rpc_status();
        assert_eq!(status.code, Code::NotFound as i32);
        assert!(status.message.is_empty());
    }
}
