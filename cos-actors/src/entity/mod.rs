//! The entity actor: one per live entity id, processing its requests strictly one at a time. It recovers
//! lazily (on its first request) from the store without calling the write handler, runs commands through
//! the handler under the command's deadline, and persists all events of a command atomically.

mod command;

use std::sync::Arc;

use cos_core::domain::{EntityKey, initial_state, revision_of};
use cos_core::error::CommandError;
use cos_core::proto::chief_of_state::v1::StateWrapper;
use cos_core::store::{AppendRequest, StoreError};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use ractor_cluster::RactorMessage;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::envelope::{EntityEnvelope, EntityRequest, EntityResult};
use crate::runtime::EntityTypeRuntime;

pub use command::CommandOutcome;

/// Messages an entity handles.
#[derive(RactorMessage)]
pub enum EntityMessage {
    Request(EntityEnvelope),
    /// Stop after everything already queued is answered (sent by the shard).
    Passivate,
}

/// Arguments to start an entity.
pub struct EntityArguments {
    pub key: EntityKey,
    pub shard: u32,
    pub runtime: Arc<EntityTypeRuntime>,
}

/// The in-memory state of an entity actor.
pub struct EntityState {
    key: EntityKey,
    shard: u32,
    runtime: Arc<EntityTypeRuntime>,
    /// `None` until recovered (and again after a failed write, to re-read the truth from the store).
    current: Option<StateWrapper>,
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
            runtime: arguments.runtime,
            current: None,
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
            EntityMessage::Request(envelope) => {
                if let Some(stop_reason) = state.handle_request(envelope).await {
                    myself.stop(Some(stop_reason));
                }
            }
        }
        Ok(())
    }
}

impl EntityState {
    /// Answers one request; returns a reason when this entity instance must stop.
    async fn handle_request(&mut self, envelope: EntityEnvelope) -> Option<String> {
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
            return None;
        }
        let current = match self.recovered_state().await {
            Ok(current) => current,
            Err(error) => {
                reply.send(Err(error));
                return None;
            }
        };
        let command = match request {
            EntityRequest::GetState => {
                let found = revision_of(&current) > 0;
                reply.send(if found {
                    Ok(current)
                } else {
                    Err(CommandError::NotFound)
                });
                return None;
            }
            EntityRequest::ProcessCommand(command) => command,
        };
        let outcome = tokio::time::timeout_at(
            deadline,
            command::run_command(&self.runtime, &current, command, deadline),
        )
        .await;
        let events = match outcome {
            Err(_elapsed) => {
                reply.send(Err(CommandError::DeadlineExceeded(
                    "command not finished within its deadline; it was abandoned and nothing was persisted"
                        .to_string(),
                )));
                return None;
            }
            Ok(Err(error)) => {
                reply.send(Err(error));
                return None;
            }
            Ok(Ok(CommandOutcome::NoOp)) => {
                reply.send(Ok(current));
                return None;
            }
            Ok(Ok(CommandOutcome::Events(events))) => events,
        };
        self.persist(reply, events).await
    }

    async fn recovered_state(&mut self) -> Result<StateWrapper, CommandError> {
        if let Some(current) = &self.current {
            return Ok(current.clone());
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
                tracing::debug!(entity = %self.key, revision = stored.revision, source = ?stored.source, "entity recovered");
                stored.state
            }
            None => initial_state(&self.key.entity_id),
        };
        self.current = Some(recovered.clone());
        Ok(recovered)
    }

    async fn persist(&mut self, reply: Reply, events: command::PreparedEvents) -> Option<String> {
        let first_revision = events.first_revision();
        let request = AppendRequest {
            key: self.key.clone(),
            shard: self.shard,
            snapshot: events.snapshot(&self.runtime.settings.snapshots),
            events: events.encoded(),
        };
        match self.runtime.writer.append(request).await {
            Ok(()) => {
                let final_state = events.final_state();
                self.current = Some(final_state.clone());
                reply.send(Ok(final_state));
                None
            }
            Err(StoreError::Conflict(reason)) => {
                tracing::error!(entity = %self.key, revision = first_revision, %reason,
                    "another writer stored this revision; stopping this entity instance");
                reply.send(Err(CommandError::WriterConflict {
                    key: self.key.clone(),
                    revision: first_revision,
                }));
                Some("writer conflict".to_string())
            }
            Err(error) => {
                // The outcome of a failed commit is normally "nothing written"; re-read the store before the
                // next command so that an acknowledged-but-lost commit cannot be overwritten either.
                self.current = None;
                reply.send(Err(CommandError::StoreUnavailable(error.to_string())));
                None
            }
        }
    }
}
