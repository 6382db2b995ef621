//! The worker of one read side on one shard: reads the shard's events after its stored offset (gap-free, in
//! commit order, so per-entity order holds), hands each to the read handler and moves the offset only after
//! the handler said `successful: true` — at-least-once, never skipping.
//!
//! It wakes on the node's commit notices for its shard, and on a slow tick as a fallback. It delivers a
//! bounded number of events per message (a turn) and stores the offset once per turn, so a backlog costs one
//! position write per turn rather than per event; a crash then redelivers at most one turn (at-least-once).
//! A turn ends early when the shard is released or a reload is asked for, so a hand-off or an operator's
//! action waits at most one handler call. Replays wait on a timer, not in the handler, for the same reason.
//! Every write of the position is a compare-and-set from the offset this worker stands on, and only while the
//! shard runs: an operator's pause, skip or restart (made on any node) makes the next write fail, and the
//! worker reloads.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cos_core::readside::FailurePolicy;
use cos_core::readside::handler::ReadSideDelivery;
use cos_core::store::read_sides::ReadSidePosition;
use cos_core::store::{ShardEvent, decode_shard_event};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use ractor_cluster::RactorMessage;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{ReadSideContext, ReadSideRuntime};

/// Events delivered per message before the worker lets other messages in.
const EVENTS_PER_TURN: usize = 64;

/// Pause after the store failed (reading events or writing the position) before trying again.
const STORE_RETRY_PAUSE: Duration = Duration::from_secs(1);

/// A caught-up worker stores its offset at most this often (a full turn is stored at once): a trickle of
/// events then costs a few position writes per second per shard, not one per event, and a crash redelivers
/// at most this much.
const OFFSET_STORE_INTERVAL: Duration = Duration::from_millis(100);

/// Messages of a worker.
#[derive(RactorMessage)]
pub enum WorkerMessage {
    /// New events may be there (a commit notice, a timer, or the worker's own "more to do").
    Wake,
    /// The stored position may have changed (an operator paused, resumed, restarted or skipped): read it.
    Reload,
}

/// Arguments of a worker.
pub struct WorkerArguments {
    pub runtime: Arc<ReadSideRuntime>,
    pub context: Arc<ReadSideContext>,
    pub shard: u32,
    /// Set by the host when the shard is released: the worker ends its turn after the current event, so a
    /// hand-off waits for at most one handler call.
    pub released: Arc<AtomicBool>,
    /// Set while a Reload is queued (a poll tick, or an operator's change forwarded by the host): the worker
    /// ends its turn after the current event to read its position.
    pub reload_queued: Arc<AtomicBool>,
}

/// The state of a worker.
pub struct WorkerState {
    runtime: Arc<ReadSideRuntime>,
    context: Arc<ReadSideContext>,
    shard: u32,
    /// The stored position as this worker last wrote or read it.
    position: ReadSidePosition,
    /// `position` is not known to match the store (not read yet, or a write was refused and the reload
    /// failed): nothing is delivered until it has been read.
    needs_reload: bool,
    /// Events read but not yet delivered, in offset order.
    pending: VecDeque<ShardEvent>,
    /// The newest event dealt with (acknowledged by the handler, passed over because the read side does not
    /// listen to its type, or skipped by the failure policy) whose offset is not stored yet: stored at the
    /// end of the turn, before a stop and before a replay pause.
    uncommitted_through: Option<u64>,
    /// Events dealt with since the offset was last stored, and when that was.
    dealt_since_store: usize,
    last_store: Instant,
    /// A Wake is scheduled to store what a caught-up turn left unstored.
    store_scheduled: bool,
    /// Failed deliveries of the first pending event so far (for replays).
    failed_attempts: u32,
    /// Nothing is tried before this instant (a replay interval or a store back-off); a timer wakes it.
    resume_at: Option<Instant>,
    /// Set while a Wake is queued, so a burst of commit notices queues one Wake.
    wake_queued: Arc<AtomicBool>,
    /// Set while a Reload is queued, so a long turn does not pile up poll ticks.
    reload_queued: Arc<AtomicBool>,
    /// Forward commit notices and poll ticks; aborted when the worker stops.
    background: Vec<JoinHandle<()>>,
    released: Arc<AtomicBool>,
}

/// The worker actor.
pub struct ReadSideWorker;

impl Actor for ReadSideWorker {
    type Msg = WorkerMessage;
    type State = WorkerState;
    type Arguments = WorkerArguments;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        arguments: WorkerArguments,
    ) -> Result<WorkerState, ActorProcessingErr> {
        let WorkerArguments {
            runtime,
            context,
            shard,
            released,
            reload_queued,
        } = arguments;
        let wake_queued = Arc::new(AtomicBool::new(false));
        let mut background = Vec::with_capacity(2);
        if let Some(mut receiver) = context.commits.subscribe(shard) {
            let worker = myself.clone();
            let queued = wake_queued.clone();
            background.push(tokio::spawn(async move {
                while receiver.changed().await.is_ok() {
                    if !queued.swap(true, Ordering::AcqRel)
                        && worker.cast(WorkerMessage::Wake).is_err()
                    {
                        break;
                    }
                }
            }));
        }
        // The fallback poll re-reads the position too: an operator's change made on another node.
        let worker = myself.clone();
        let queued = reload_queued.clone();
        let poll_interval = context.poll_interval;
        background.push(tokio::spawn(async move {
            let mut ticks = tokio::time::interval(poll_interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                if !queued.swap(true, Ordering::AcqRel)
                    && worker.cast(WorkerMessage::Reload).is_err()
                {
                    break;
                }
            }
        }));
        tracing::debug!(read_side = %runtime.config.id, shard, "read side worker started");
        Ok(WorkerState {
            runtime,
            context,
            shard,
            position: ReadSidePosition::default(),
            needs_reload: true,
            pending: VecDeque::new(),
            uncommitted_through: None,
            dealt_since_store: 0,
            last_store: Instant::now(),
            store_scheduled: false,
            failed_attempts: 0,
            resume_at: None,
            wake_queued,
            reload_queued,
            background,
            released,
        })
    }

    async fn post_stop(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut WorkerState,
    ) -> Result<(), ActorProcessingErr> {
        for task in state.background.drain(..) {
            task.abort();
        }
        // Store what was delivered, so the shard's next worker (here or at its new home) goes on from it.
        state.store_progress(&myself).await;
        tracing::debug!(read_side = %state.runtime.config.id, shard = state.shard, "read side worker stopped");
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: WorkerMessage,
        state: &mut WorkerState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            WorkerMessage::Wake => {
                state.wake_queued.store(false, Ordering::Release);
                state.store_scheduled = false;
                state.deliver_turn(&myself).await;
            }
            WorkerMessage::Reload => {
                state.reload_queued.store(false, Ordering::Release);
                if state.reload().await {
                    state.deliver_turn(&myself).await;
                } else {
                    state.pause_for(&myself, STORE_RETRY_PAUSE);
                }
            }
        }
        Ok(())
    }
}

/// What became of one delivery attempt.
enum Outcome {
    /// Dealt with (its offset is stored at the end of the turn): go on with the next event.
    Next,
    /// Stop this turn; a timer, a notice or an operator wakes the worker again.
    Wait,
}

impl WorkerState {
    fn read_side_id(&self) -> &str {
        &self.runtime.config.id
    }

    /// Reads the stored position; when it is not where this worker left it (an operator restarted or skipped,
    /// or a stale worker elsewhere committed), what was read ahead is dropped and delivery resumes from it.
    /// False when the store could not be read.
    async fn reload(&mut self) -> bool {
        let stored = match self
            .context
            .positions
            .position(self.read_side_id(), self.shard)
            .await
        {
            Ok(stored) => stored,
            Err(error) => {
                tracing::warn!(read_side = %self.read_side_id(), shard = self.shard, %error,
                    "cannot read the read side position; retrying");
                self.needs_reload = true;
                return false;
            }
        };
        self.needs_reload = false;
        if stored.offset != self.position.offset
            || stored.epoch != self.position.epoch
            || !stored.is_running()
        {
            self.pending.clear();
            self.uncommitted_through = None;
            self.failed_attempts = 0;
            self.resume_at = None;
        }
        if stored.stopped.is_some() && self.position.stopped.is_none() {
            tracing::warn!(read_side = %self.read_side_id(), shard = self.shard,
                reason = stored.stopped.as_deref().unwrap_or_default(), "read side is stopped");
        }
        self.position = stored;
        true
    }

    /// Delivers up to [`EVENTS_PER_TURN`] events and stores the offset reached; queues another turn when
    /// more may be waiting.
    async fn deliver_turn(&mut self, myself: &ActorRef<WorkerMessage>) {
        if let Some(resume_at) = self.resume_at {
            if Instant::now() < resume_at {
                return;
            }
            self.resume_at = None;
            // A replay is due: an operator may have skipped, restarted or paused meanwhile.
            if self.failed_attempts > 0 {
                self.needs_reload = true;
            }
        }
        // Never deliver from a position that was not read: it may be paused, stopped or elsewhere.
        if self.needs_reload && !self.reload().await {
            self.pause_for(myself, STORE_RETRY_PAUSE);
            return;
        }
        if !self.position.is_running() {
            return;
        }
        let mut more = true;
        let mut read_everything = false;
        for _ in 0..EVENTS_PER_TURN {
            if self.released.load(Ordering::Acquire)
                || self.reload_queued.load(Ordering::Acquire)
                || !self.position.is_running()
            {
                more = false;
                break;
            }
            if self.pending.is_empty() {
                // A short read means the journal had nothing more: a commit notice wakes the next turn.
                if read_everything {
                    more = false;
                    break;
                }
                match self.read_ahead(myself).await {
                    Some(short) => read_everything = short,
                    None => {
                        more = false;
                        break;
                    }
                }
                if self.pending.is_empty() {
                    more = false;
                    break;
                }
            }
            if let Outcome::Wait = self.deliver_first(myself).await {
                more = false;
                break;
            }
        }
        if let Outcome::Wait = self.store_progress_if_due(myself).await {
            return;
        }
        if more {
            self.queue_wake(myself);
        }
    }

    /// Fills `pending` from the journal: `Some(true)` when the read came back short (nothing more is
    /// there now), `None` when the journal could not be read.
    async fn read_ahead(&mut self, myself: &ActorRef<WorkerMessage>) -> Option<bool> {
        let after = self.uncommitted_through.unwrap_or(self.position.offset);
        let read = self
            .context
            .journal
            .shard_events_after(self.shard, after, self.context.batch_size)
            .await;
        match read {
            Ok(events) => {
                let short = events.len() < usize::try_from(self.context.batch_size).unwrap_or(0);
                self.pending.extend(events);
                Some(short)
            }
            Err(error) => {
                tracing::warn!(read_side = %self.read_side_id(), shard = self.shard, %error,
                    "cannot read the journal; retrying");
                self.pause_for(myself, STORE_RETRY_PAUSE);
                None
            }
        }
    }

    /// Delivers the first pending event and applies the failure policy when the handler did not take it.
    async fn deliver_first(&mut self, myself: &ActorRef<WorkerMessage>) -> Outcome {
        let Some(event) = self.pending.front() else {
            return Outcome::Wait;
        };
        let offset = event.offset;
        if !self.runtime.listens_to(event.key.entity_type.as_str()) {
            // Not for this read side: passed over.
            return self.dealt_with(offset);
        }
        let failure = match decode_shard_event(event) {
            Ok(wrapper) => {
                let delivery = ReadSideDelivery {
                    read_side_id: &self.runtime.config.id,
                    shard: self.shard,
                    entity_type: event.key.entity_type.as_str(),
                    event: &wrapper,
                };
                match self.runtime.handler.handle(delivery).await {
                    Ok(()) => None,
                    Err(error) => Some(error.to_string()),
                }
            }
            Err(error) => Some(format!("the stored event cannot be decoded: {error}")),
        };
        let Some(reason) = failure else {
            self.failed_attempts = 0;
            return self.dealt_with(offset);
        };
        let event = self.pending.front().map(describe).unwrap_or_default();
        self.failed(myself, offset, &event, &reason).await
    }

    /// Applies the failure policy to the event at `offset`.
    async fn failed(
        &mut self,
        myself: &ActorRef<WorkerMessage>,
        offset: u64,
        event: &str,
        reason: &str,
    ) -> Outcome {
        self.failed_attempts += 1;
        let policy = self.runtime.config.failure_policy;
        let (retries, interval, skip_at_end) = match policy {
            FailurePolicy::Stop => (0, Duration::ZERO, false),
            FailurePolicy::Skip => (0, Duration::ZERO, true),
            FailurePolicy::ReplayStop { retries, interval } => (retries, interval, false),
            FailurePolicy::ReplaySkip { retries, interval } => (retries, interval, true),
        };
        if self.failed_attempts <= retries {
            tracing::warn!(read_side = %self.read_side_id(), shard = self.shard, offset, event, reason,
                attempt = self.failed_attempts, retries, "read handler failed; replaying the event");
            // What came before the failing event is done: store it before waiting.
            if let Outcome::Next = self.store_progress(myself).await {
                self.pause_for(myself, interval);
            }
            return Outcome::Wait;
        }
        self.failed_attempts = 0;
        if skip_at_end {
            tracing::warn!(read_side = %self.read_side_id(), shard = self.shard, offset, event, reason,
                policy = policy.name(), "read handler failed; skipping the event");
            return self.dealt_with(offset);
        }
        if let Outcome::Wait = self.store_progress(myself).await {
            return Outcome::Wait;
        }
        self.stop(myself, offset, event, reason, policy).await
    }

    /// Records a failure-policy stop, unless an operator moved the position meanwhile (then reloads).
    async fn stop(
        &mut self,
        myself: &ActorRef<WorkerMessage>,
        offset: u64,
        event: &str,
        reason: &str,
        policy: FailurePolicy,
    ) -> Outcome {
        let stop_reason = format!(
            "{} stopped at shard offset {offset} ({event}): {reason}",
            policy.name()
        );
        self.pending.clear();
        self.uncommitted_through = None;
        let recorded = self
            .context
            .positions
            .set_stopped(
                self.read_side_id(),
                self.shard,
                self.position.offset,
                self.position.epoch,
                &stop_reason,
            )
            .await;
        match recorded {
            Ok(true) => {
                tracing::error!(read_side = %self.read_side_id(), shard = self.shard, reason = %stop_reason,
                    "read side stopped; resume, restart or skip it to go on");
                self.position.stopped = Some(stop_reason);
            }
            Ok(false) => {
                tracing::info!(read_side = %self.read_side_id(), shard = self.shard,
                    "read side position changed while the event failed; following it instead of stopping");
                if !self.reload().await {
                    self.pause_for(myself, STORE_RETRY_PAUSE);
                }
            }
            Err(error) => {
                tracing::error!(read_side = %self.read_side_id(), shard = self.shard, %error,
                    reason = %stop_reason, "cannot record the stop; the event is tried again shortly");
                self.pause_for(myself, STORE_RETRY_PAUSE);
            }
        }
        Outcome::Wait
    }

    /// Marks the first pending event (at `offset`) as dealt with; its offset is stored with the turn's.
    fn dealt_with(&mut self, offset: u64) -> Outcome {
        self.pending.pop_front();
        self.uncommitted_through = Some(offset);
        self.dealt_since_store += 1;
        Outcome::Next
    }

    /// Stores the offset at the end of a turn when a full turn's worth is waiting or the last store is
    /// [`OFFSET_STORE_INTERVAL`] old; otherwise schedules a turn that will.
    async fn store_progress_if_due(&mut self, myself: &ActorRef<WorkerMessage>) -> Outcome {
        if self.uncommitted_through.is_none() {
            return Outcome::Next;
        }
        let since_store = self.last_store.elapsed();
        if self.dealt_since_store >= EVENTS_PER_TURN || since_store >= OFFSET_STORE_INTERVAL {
            return self.store_progress(myself).await;
        }
        if !self.store_scheduled {
            self.store_scheduled = true;
            myself.send_after(OFFSET_STORE_INTERVAL - since_store, || WorkerMessage::Wake);
        }
        Outcome::Next
    }

    /// Stores the offset of the last event dealt with (compare-and-set from where this worker stands, only
    /// while the shard runs). `Wait` when it could not: what was delivered since the last stored offset then
    /// comes again (at-least-once).
    async fn store_progress(&mut self, myself: &ActorRef<WorkerMessage>) -> Outcome {
        let Some(offset) = self.uncommitted_through else {
            return Outcome::Next;
        };
        let committed = self
            .context
            .positions
            .advance_offset(
                self.read_side_id(),
                self.shard,
                self.position.offset,
                self.position.epoch,
                offset,
            )
            .await;
        self.uncommitted_through = None;
        self.dealt_since_store = 0;
        self.last_store = Instant::now();
        match committed {
            Ok(true) => {
                self.position.offset = offset;
                Outcome::Next
            }
            Ok(false) => {
                // Somebody else moved it or stopped the shard: an operator, or a worker on a node that had
                // the shard before.
                tracing::info!(read_side = %self.read_side_id(), shard = self.shard,
                    "read side position changed elsewhere; reloading");
                self.pending.clear();
                if self.reload().await {
                    self.queue_wake(myself);
                } else {
                    self.pause_for(myself, STORE_RETRY_PAUSE);
                }
                Outcome::Wait
            }
            Err(error) => {
                tracing::warn!(read_side = %self.read_side_id(), shard = self.shard, offset, %error,
                    "cannot store the read side offset; the events since the last one will be delivered again");
                self.pending.clear();
                self.pause_for(myself, STORE_RETRY_PAUSE);
                Outcome::Wait
            }
        }
    }

    /// Waits `pause` before the next attempt; a timer wakes the worker.
    fn pause_for(&mut self, myself: &ActorRef<WorkerMessage>, pause: Duration) {
        self.resume_at = Some(Instant::now() + pause);
        myself.send_after(pause, || WorkerMessage::Wake);
    }

    fn queue_wake(&self, myself: &ActorRef<WorkerMessage>) {
        if !self.wake_queued.swap(true, Ordering::AcqRel) {
            let _ = myself.cast(WorkerMessage::Wake);
        }
    }
}

/// `type/id@revision`, for logs and stop reasons.
fn describe(event: &ShardEvent) -> String {
    format!("{}@{}", event.key, event.revision)
}
