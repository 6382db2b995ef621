//! What travels from the gateway to an entity, and the way back.

use cos_core::domain::EntityId;
use cos_core::error::CommandError;
use cos_core::proto::chief_of_state::v1::StateWrapper;
use cos_core::proto::internal::ProcessCommand;
use tokio::sync::oneshot;
use tokio::time::Instant;

/// The answer of an entity: its state after the request, or the error the client must see.
pub type EntityResult = Result<StateWrapper, CommandError>;

/// What the caller wants from the entity.
#[derive(Debug)]
pub enum EntityRequest {
    /// Run a command through the write handler and persist its events.
    ProcessCommand(ProcessCommand),
    /// Return the current state.
    GetState,
}

/// One request for one entity, with its deadline and reply channel.
#[derive(Debug)]
pub struct EntityEnvelope {
    pub entity_id: EntityId,
    pub request: EntityRequest,
    /// After this instant the entity abandons the request before writing anything.
    pub deadline: Instant,
    /// Sent by another node's region: deliver here or refuse, never forward again.
    pub from_remote: bool,
    /// How often this request was sent again after its shard moved (bounded, against ping-pong).
    pub reroutes: u8,
    pub reply: oneshot::Sender<EntityResult>,
}

impl EntityEnvelope {
    /// Answers the caller; a caller that already gave up is not an error.
    pub fn answer(self, result: EntityResult) {
        let _caller_gone = self.reply.send(result);
    }
}
