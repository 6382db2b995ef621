//! The entity actor: one per live entity id, processing its requests strictly one at a time. It recovers
//! lazily (on its first request) from the store without calling the write handler, runs commands through
//! the handler under the command's deadline, and persists all events of a command atomically.

mod command;

use std::sync::Arc;
use std::time::Duration;

use cos_core::domain::{EntityKey, initial_state, revision_of};
use cos_core::error::CommandError;
use cos_core::proto::chief_of_state::v1::StateWrapper;
use cos_core::store::{AppendRequest, StoreError};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use ractor_cluster::RactorMessage;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::census::{CountedActor, EntityCensus};
use crate::envelope::{EntityEnvelope, EntityRequest, EntityResult};
use crate::runtime::EntityTypeRuntime;
use crate::shard::ShardMessage;

pub use command::{CommandOutcome, PreparedEvents};

/// The most of a command's time kept back from the write handler for the write itself, so that a handler
/// answering at the last moment does not push the commit past the caller's deadline.
const MAX_COMMIT_RESERVE: Duration = Duration::from_millis(100);

/// Messages an entity handles.
#[derive(RactorMessage)]
pub enum EntityMessage {
    /// Boxed: a mailbox allocates room for dozens of messages up front, so a large message type costs
    /// kilobytes per idle entity.
    Request(Box<EntityEnvelope>),
    /// Stop after everything already queued is answered (sent by the shard).
    Passivate,
    /// Like [`EntityMessage::Passivate`], but first hand the recovered state to the shard, which keeps it so
    /// that the next request needs no store read (sent by the shard when the entity has been idle a while).
    Rest(oneshot::Sender<StateWrapper>),
}

/// Arguments to start an entity.
pub struct EntityArguments {
    pub key: EntityKey,
    pub shard: u32,
    /// The owning shard, told when this instance must be replaced (after a writer conflict).
    pub shard_actor: ActorRef<ShardMessage>,
    pub runtime: Arc<EntityTypeRuntime>,
    /// The state the entity had when it rested, if it did: trusted as if it had never stopped.
    pub resumed: Option<StateWrapper>,
    /// The node's census, which counts this actor while it lives.
    pub census: Arc<EntityCensus>,
}

/// The in-memory state of an entity actor.
pub struct EntityState {
    key: EntityKey,
    shard: u32,
    shard_actor: ActorRef<ShardMessage>,
    runtime: Arc<EntityTypeRuntime>,
    /// `None` until recovered, and again after a failed write (to re-read the truth from the store).
    current: Option<StateWrapper>,
    _counted: CountedActor,
}

/// The entity actor.
pub struct EntityActor;

/// The caller's reply channel; a caller that already gave up is not an error.
struct Reply(oneshot::Sender<EntityResult>);

impl Reply {
    fn send(self, result: EntityResult) {
        let _caller_gone = self.0.send(result);
    }
}

impl Actor for EntityActor {
    type Msg = EntityMessage;
    type State = EntityState;
    type Arguments = EntityArguments;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        arguments: EntityArguments,
    ) -> Result<EntityState, ActorProcessingErr> {
        Ok(EntityState {
            key: arguments.key,
            shard: arguments.shard,
            shard_actor: arguments.shard_actor,
            runtime: arguments.runtime,
            current: arguments.resumed,
            _counted: CountedActor::new(arguments.census),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: EntityMessage,
        state: &mut EntityState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            EntityMessage::Passivate => myself.stop(Some("passivated".to_string())),
            EntityMessage::Rest(hand_over) => {
                // Nothing to hand over when the state was never read or must be re-read (after a failed
                // write): the entity then simply leaves memory.
                if let Some(current) = state.current.take() {
                    let _shard_gone = hand_over.send(current);
                }
                myself.stop(Some("resting".to_string()));
            }
            // Boxed so that the actor's task, which lives as long as the entity, does not reserve room for
            // the largest state of a command (handler calls included) while the entity sits idle.
            EntityMessage::Request(envelope) => Box::pin(state.handle_request(*envelope)).await,
        }
        Ok(())
    }
}

/// The answer to `GetState` for an entity in `current` (shared with the shard, which answers it for resting
/// entities): not found until the entity has a first event.
pub(crate) fn state_reply(current: &StateWrapper) -> EntityResult {
    if revision_of(current) > 0 {
        Ok(current.clone())
    } else {
        Err(CommandError::NotFound)
    }
}

/// When the write handler must be done: the deadline, less a reserve for the write.
fn handler_deadline(deadline: Instant) -> Instant {
    let remaining = deadline.saturating_duration_since(Instant::now());
    deadline - (remaining / 10).min(MAX_COMMIT_RESERVE)
}

impl EntityState {
    /// Answers one request.
    async fn handle_request(&mut self, envelope: EntityEnvelope) {
        let EntityEnvelope {
            request,
            deadline,
            reply,
            ..
        } = envelope;
        let reply = Reply(reply);
        if Instant::now() >= deadline {
            reply.send(Err(CommandError::DeadlineExceeded(
                "request expired while queued behind earlier commands of the entity; nothing was persisted"
                    .to_string(),
            )));
            return;
        }
        if let Err(error) = self.ensure_recovered().await {
            reply.send(Err(error));
            return;
        }
        let Some(current) = self.current.as_ref() else {
            reply.send(Err(CommandError::Internal(
                "entity state missing after recovery".into(),
            )));
            return;
        };
        let command = match request {
            EntityRequest::GetState => {
                reply.send(state_reply(current));
                return;
            }
            EntityRequest::ProcessCommand(command) => command,
        };
        let handler_deadline = handler_deadline(deadline);
        let outcome = tokio::time::timeout_at(
            handler_deadline,
            command::run_command(&self.runtime, current, command, handler_deadline),
        )
        .await;
        let expected_revision = revision_of(current);
        let events = match outcome {
            Err(_elapsed) => {
                reply.send(Err(CommandError::DeadlineExceeded(
                    "command not finished within its deadline; it was abandoned and nothing was persisted"
                        .to_string(),
                )));
                return;
            }
            Ok(Err(error)) => {
                reply.send(Err(error));
                return;
            }
            Ok(Ok(CommandOutcome::NoOp)) => {
                reply.send(Ok(current.clone()));
                return;
            }
            Ok(Ok(CommandOutcome::Events(events))) => events,
        };
        self.persist(reply, expected_revision, events, deadline)
            .await;
    }

    async fn ensure_recovered(&mut self) -> Result<(), CommandError> {
        if self.current.is_some() {
            return Ok(());
        }
        let stored =
            self.runtime
                .journal
                .latest_state(&self.key)
                .await
                .map_err(|error| match error {
                    StoreError::Corrupt(reason) => {
                        CommandError::Internal(format!("cannot recover {}: {reason}", self.key))
                    }
                    other => CommandError::StoreUnavailable(other.to_string()),
                })?;
        let recovered = match stored {
            Some(stored) => {
                tracing::debug!(entity = %self.key, revision = stored.revision, source = ?stored.source,
                    "entity recovered");
                stored.state
            }
            None => initial_state(&self.key.entity_id),
        };
        self.current = Some(recovered);
        Ok(())
    }

    async fn persist(
        &mut self,
        reply: Reply,
        expected_revision: u32,
        events: PreparedEvents,
        deadline: Instant,
    ) {
        let request = AppendRequest {
            key: self.key.clone(),
            expected_revision,
            shard: self.shard,
            snapshot: events.snapshot(&self.runtime.settings.snapshots),
            events: events.encoded(),
        };
        match self.runtime.writer.append(request, Some(deadline)).await {
            Ok(()) => {
                let final_state = events.into_final_state();
                reply.send(Ok(final_state.clone()));
                self.current = Some(final_state);
            }
            Err(StoreError::Expired) => {
                reply.send(Err(CommandError::DeadlineExceeded(
                    "the deadline passed before the command's events could be written; nothing was persisted"
                        .to_string(),
                )));
            }
            Err(StoreError::Conflict(reason)) => {
                tracing::error!(entity = %self.key, expected_revision, %reason,
                    "another writer moved this entity; replacing this instance");
                self.current = None;
                reply.send(Err(CommandError::WriterConflict {
                    key: self.key.clone(),
                    revision: expected_revision + 1,
                }));
                // The shard stops this instance the ordered way: requests already queued here are answered
                // first (after re-reading the store), later ones go to the next incarnation.
                let _shard_gone = self
                    .shard_actor
                    .cast(ShardMessage::Replace(self.key.entity_id.clone()));
            }
            Err(StoreError::Rejected(reason)) => {
                reply.send(Err(CommandError::InvalidArgument(format!(
                    "the journal refused the command's data: {reason}"
                ))));
            }
            Err(error) => {
                // A failed commit normally wrote nothing; re-read the store before the next command so that
                // an acknowledged-but-lost commit cannot be overwritten either.
                self.current = None;
                reply.send(Err(CommandError::StoreUnavailable(error.to_string())));
            }
        }
    }
}
