//! The entity actor: one per live entity id, processing its requests strictly one at a time. It recovers
//! lazily (on its first request) from the store without calling the write handler, runs commands through
//! the handler under the command's deadline, and persists all events of a command atomically.
//!
//! While a write is in flight and more requests are queued, the entity keeps taking them from its mailbox
//! (without answering) so that the queued commands can share the next write (see `entity/batch.rs`).

mod batch;
mod command;

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cos_core::domain::{EntityKey, initial_state, revision_of};
use cos_core::error::CommandError;
use cos_core::handler::cut_for_scheduling;
use cos_core::proto::chief_of_state::v1::StateWrapper;
use cos_core::store::StoreError;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use ractor_cluster::RactorMessage;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::census::{CountedActor, EntityCensus};
use crate::envelope::{EntityEnvelope, EntityRequest, EntityResult};
use crate::runtime::EntityTypeRuntime;
use crate::shard::ShardMessage;
use batch::{PendingWrite, Reply};

pub use command::{CommandOutcome, PreparedEvents};

/// The most of a command's time kept back from the write handler for the write itself, so that a handler
/// answering at the last moment does not push the commit past the caller's deadline.
const MAX_COMMIT_RESERVE: Duration = Duration::from_millis(100);

/// Room for waiting requests an entity keeps after a burst.
const MAX_IDLE_QUEUE_CAPACITY: usize = 64;

/// How early a timer may fire or a timed-out call may return (tokio's timer has millisecond ticks).
const TIMER_SLACK: Duration = Duration::from_millis(5);

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
    /// The write in flight has finished (sent by the task that awaited it).
    WriteSettled,
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
    /// Requests the shard has sent that this entity has not taken yet (the shard adds, the entity takes away).
    pub queued: Arc<AtomicUsize>,
}

/// The in-memory state of an entity actor.
pub struct EntityState {
    key: EntityKey,
    shard: u32,
    shard_actor: ActorRef<ShardMessage>,
    runtime: Arc<EntityTypeRuntime>,
    /// `None` until recovered, and again after a failed write (to re-read the truth from the store).
    current: Option<StateWrapper>,
    /// Requests sent by the shard and not taken yet: when some are, a write does not block the mailbox.
    queued: Arc<AtomicUsize>,
    /// What arrived while a write was in flight, in arrival order; run once it settles.
    waiting: VecDeque<EntityMessage>,
    /// The write in flight, if any.
    /// Boxed: most entities never have one, and every idle entity would carry its room otherwise.
    in_flight: Option<Box<WriteInFlight>>,
    _counted: CountedActor,
}

/// Sends [`EntityMessage::WriteSettled`] when dropped: when the write's task finishes or unwinds. A stopping
/// entity no longer takes it and collects the outcome from the task in its `post_stop` instead.
struct SettledNotice(ActorRef<EntityMessage>);

impl Drop for SettledNotice {
    fn drop(&mut self) {
        let _entity_stopping = self.0.cast(EntityMessage::WriteSettled);
    }
}

/// A write the entity does not wait for in its handler, and the answers it holds.
struct WriteInFlight {
    pending: PendingWrite,
    task: JoinHandle<Result<(), StoreError>>,
}

/// The entity actor.
pub struct EntityActor;

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
            queued: arguments.queued,
            waiting: VecDeque::new(),
            in_flight: None,
            _counted: CountedActor::new(arguments.census),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: EntityMessage,
        state: &mut EntityState,
    ) -> Result<(), ActorProcessingErr> {
        if let EntityMessage::Request(_) = &message {
            state.queued.fetch_sub(1, Ordering::Relaxed);
        }
        match message {
            // Boxed, like a request below: it runs commands.
            EntityMessage::WriteSettled => Box::pin(state.after_write(Some(&myself))).await,
            message if state.in_flight.is_some() => state.waiting.push_back(message),
            EntityMessage::Passivate => myself.stop(Some("passivated".to_string())),
            EntityMessage::Rest(hand_over) => {
                state.hand_over(hand_over);
                myself.stop(Some("resting".to_string()));
            }
            // Boxed so that the actor's task, which lives as long as the entity, does not reserve room for
            // the largest state of a command (handler calls included) while the entity sits idle.
            EntityMessage::Request(envelope) => {
                Box::pin(state.run_requests(*envelope, Some(&myself))).await;
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut EntityState,
    ) -> Result<(), ActorProcessingErr> {
        // Stopped from outside (the shard draining) with a write in flight or requests taken but not run:
        // finish them as if the entity had waited for each write, so every accepted request is answered.
        Box::pin(state.after_write(None)).await;
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
    /// Runs a request, and with it the requests already waiting that can share its write.
    async fn run_requests(
        &mut self,
        first: EntityEnvelope,
        myself: Option<&ActorRef<EntityMessage>>,
    ) {
        let mut pending = PendingWrite::default();
        self.run_request(first, &mut pending).await;
        // Stop taking commands once the first write-by time has come: the write must still be queued before
        // the earliest deadline in it, with the reserve a single command would have.
        while !pending.is_full()
            && pending
                .write_by()
                .is_none_or(|write_by| Instant::now() < write_by)
        {
            let joins = match self.waiting.front() {
                Some(EntityMessage::Request(next)) => {
                    // A read after a command waits for the write, so that it only ever sees stored states.
                    !(pending.has_events() && matches!(next.request, EntityRequest::GetState))
                }
                _ => false,
            };
            if !joins {
                break;
            }
            let Some(EntityMessage::Request(next)) = self.waiting.pop_front() else {
                break;
            };
            let waiting_before = self.waiting.len();
            self.run_request(*next, &mut pending).await;
            if self.waiting.len() > waiting_before {
                // It was cut short and put back (a handler may also answer DEADLINE_EXCEEDED a little early):
                // write now rather than run it again on the same state.
                break;
            }
        }
        self.write(pending, myself).await;
    }

    /// Settles the write in flight, then runs what arrived meanwhile.
    async fn after_write(&mut self, myself: Option<&ActorRef<EntityMessage>>) {
        self.settle_in_flight().await;
        self.run_waiting(myself).await;
    }

    /// Runs what arrived while a write was in flight, until a write is in flight again or nothing is left.
    /// Without `myself` (the actor is stopping) every write is awaited here and stop requests only hand over.
    async fn run_waiting(&mut self, myself: Option<&ActorRef<EntityMessage>>) {
        while self.in_flight.is_none() {
            match self.waiting.pop_front() {
                None => break,
                Some(EntityMessage::Request(envelope)) => {
                    self.run_requests(*envelope, myself).await;
                }
                Some(EntityMessage::Passivate) => {
                    if let Some(myself) = myself {
                        myself.stop(Some("passivated".to_string()));
                        break;
                    }
                }
                Some(EntityMessage::Rest(hand_over)) => {
                    self.hand_over(hand_over);
                    if let Some(myself) = myself {
                        myself.stop(Some("resting".to_string()));
                        break;
                    }
                }
                Some(EntityMessage::WriteSettled) => {}
            }
        }
        // A burst can leave a large queue behind; an entity lives long.
        if self.waiting.is_empty() && self.waiting.capacity() > MAX_IDLE_QUEUE_CAPACITY {
            self.waiting = VecDeque::new();
        }
    }

    /// Hands the state to the shard, which keeps it while the entity rests. Nothing is handed over when the
    /// state was never read or must be re-read (after a failed write): the entity then simply leaves memory.
    fn hand_over(&mut self, hand_over: oneshot::Sender<StateWrapper>) {
        if let Some(current) = self.current.take() {
            let _shard_gone = hand_over.send(current);
        }
    }

    /// Runs one request: answers it, or adds its events (and answer) to `pending`.
    async fn run_request(&mut self, envelope: EntityEnvelope, pending: &mut PendingWrite) {
        let EntityEnvelope {
            entity_id,
            request,
            deadline,
            from_remote,
            reroutes,
            reply,
        } = envelope;
        let reply = Reply(reply);
        if Instant::now() >= deadline {
            reply.send(Err(CommandError::DeadlineExceeded(
                "request expired while queued behind earlier commands of the entity; nothing was persisted"
                    .to_string(),
            )));
            return;
        }
        let chained = pending.chained_state();
        if chained.is_none()
            && let Err(error) = self.ensure_recovered().await
        {
            reply.send(Err(error));
            return;
        }
        let Some(prior) = chained.as_ref().or(self.current.as_ref()) else {
            reply.send(Err(CommandError::Internal(
                "entity state missing after recovery".into(),
            )));
            return;
        };
        let command = match request {
            // Only ever first in a write (see `run_requests`): the state is the stored one.
            EntityRequest::GetState => {
                reply.send(state_reply(prior));
                return;
            }
            EntityRequest::ProcessCommand(command) => command,
        };
        // A command joining a write must finish by that write's write-by time, not only by its own deadline.
        let own_handler_deadline = handler_deadline(deadline);
        let (handler_deadline, joined_copy) = match pending.write_by() {
            Some(write_by) if write_by < own_handler_deadline => (write_by, Some(command.clone())),
            _ => (own_handler_deadline, None),
        };
        let pipeline = tokio::time::timeout_at(
            handler_deadline,
            command::run_command(&self.runtime, prior, command, handler_deadline),
        );
        let outcome = if joined_copy.is_some() {
            // Cutting it short at the write's time says nothing about the handler's health.
            cut_for_scheduling(pipeline).await
        } else {
            pipeline.await
        };
        // Out of time because of the write it joined (its own deadline is later): the handler call itself may
        // have timed out first, or the pipeline as a whole. A handler answering DEADLINE_EXCEEDED on its own
        // before that time gets its answer.
        let cut_short = matches!(outcome, Err(_) | Ok(Err(CommandError::DeadlineExceeded(_))))
            && Instant::now() + TIMER_SLACK >= handler_deadline;
        let answer = match outcome {
            // Cut short for the commands before it, not by its own deadline: it runs again after their write
            // (nothing of this call is used).
            _ if cut_short && let Some(command) = joined_copy => {
                self.waiting.push_front(EntityMessage::Request(Box::new(EntityEnvelope {
                    entity_id,
                    request: EntityRequest::ProcessCommand(command),
                    deadline,
                    from_remote,
                    reroutes,
                    reply: reply.0,
                })));
                return;
            }
            Err(_elapsed) => Err(CommandError::DeadlineExceeded(
                "command not finished within its deadline; it was abandoned and nothing was persisted"
                    .to_string(),
            )),
            Ok(Err(error)) => Err(error),
            Ok(Ok(CommandOutcome::NoOp)) => Ok(prior.clone()),
            Ok(Ok(CommandOutcome::Events(events))) => {
                pending.add_events(reply, revision_of(prior), events, deadline, handler_deadline);
                return;
            }
        };
        pending.answer(reply, answer);
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

    /// Writes the pending events. With requests queued behind them (and an actor to tell), the write runs
    /// in its own task so that they can be taken meanwhile and share the next write; otherwise it is awaited
    /// here, which costs no extra task.
    async fn write(&mut self, pending: PendingWrite, myself: Option<&ActorRef<EntityMessage>>) {
        let Some((request, deadline)) =
            pending.append_request(&self.key, self.shard, &self.runtime.settings.snapshots)
        else {
            return;
        };
        let queued = self.queued.load(Ordering::Relaxed) > 0 || !self.waiting.is_empty();
        match myself {
            Some(myself) if queued => {
                // How often writes are shared (`LOG_LEVEL=warn,cos_actors::entity=debug`).
                tracing::debug!(entity = %self.key, events = request.events.len(), "write in flight, taking queued requests");
                let writer = self.runtime.writer.clone();
                let entity = myself.clone();
                let task = tokio::spawn(async move {
                    // Tells the entity however the task ends (a panic included), or it would wait for ever.
                    let _notice = SettledNotice(entity);
                    writer.append(request, Some(deadline)).await
                });
                self.in_flight = Some(Box::new(WriteInFlight { pending, task }));
            }
            _ => {
                let outcome = self.runtime.writer.append(request, Some(deadline)).await;
                self.settle(pending, outcome);
            }
        }
    }

    /// Takes the outcome of the write in flight, if any, and answers its commands.
    async fn settle_in_flight(&mut self) {
        let Some(in_flight) = self.in_flight.take() else {
            return;
        };
        let WriteInFlight { pending, task } = *in_flight;
        let outcome = task.await.unwrap_or_else(|error| {
            Err(StoreError::Unavailable(format!(
                "the write's task ended without an outcome: {error}"
            )))
        });
        self.settle(pending, outcome);
    }

    /// Answers the commands of a write with its outcome.
    fn settle(&mut self, pending: PendingWrite, outcome: Result<(), StoreError>) {
        let expected_revision = pending.expected_revision();
        let error = match outcome {
            Ok(()) => {
                if let Some(final_state) = pending.committed() {
                    self.current = Some(final_state);
                }
                return;
            }
            Err(StoreError::Expired) => CommandError::DeadlineExceeded(
                "the deadline passed before the command's events could be written; nothing was persisted"
                    .to_string(),
            ),
            Err(StoreError::Conflict(reason)) => {
                tracing::error!(entity = %self.key, expected_revision, %reason,
                    "another writer moved this entity; replacing this instance");
                self.current = None;
                // The shard stops this instance the ordered way: requests already queued here are answered
                // first (after re-reading the store), later ones go to the next incarnation.
                let _shard_gone = self
                    .shard_actor
                    .cast(ShardMessage::Replace(self.key.entity_id.clone()));
                CommandError::WriterConflict {
                    key: self.key.clone(),
                    revision: expected_revision + 1,
                }
            }
            Err(StoreError::Rejected(reason)) if pending.commands() == 1 => {
                CommandError::InvalidArgument(format!(
                    "the journal refused the command's data: {reason}"
                ))
            }
            // Which command's data it was cannot be told, and most of them are innocent: retryable.
            Err(StoreError::Rejected(reason)) => {
                self.current = None;
                CommandError::StoreUnavailable(format!(
                    "the journal refused a write shared by {} commands ({reason}); nothing was persisted",
                    pending.commands()
                ))
            }
            Err(error) => {
                // A failed commit normally wrote nothing; re-read the store before the next command so that
                // an acknowledged-but-lost commit cannot be overwritten either.
                self.current = None;
                CommandError::StoreUnavailable(error.to_string())
            }
        };
        pending.failed(&error);
    }
}
