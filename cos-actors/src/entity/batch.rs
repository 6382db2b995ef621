//! The commands of one entity that share one write.
//!
//! An entity whose requests queue up while it writes runs the queued commands through the handler one by one,
//! each on the state the previous one produced, and writes all their events in one append (one commit instead
//! of one per command; Pekko's entities write each command separately). Nothing is answered before that
//! write settles: a command's answer, even a rejection, was computed on states that exist only if the write
//! commits. If it fails, every command in it fails the same way and nothing of any of them is stored.

use cos_core::domain::EntityKey;
use cos_core::error::CommandError;
use cos_core::limits::MAX_MESSAGE_BYTES;
use cos_core::proto::chief_of_state::v1::StateWrapper;
use cos_core::settings::SnapshotSettings;
use cos_core::store::AppendRequest;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::PreparedEvents;
use crate::envelope::EntityResult;

/// Most commands in one write: bounds how long the first of them waits for the last.
const MAX_COMMANDS: usize = 64;

/// Most event bytes in one write: bounds the memory and the transaction of a batch of large states.
const MAX_EVENT_BYTES: usize = MAX_MESSAGE_BYTES;

/// The caller's reply channel; a caller that already gave up is not an error.
pub(super) struct Reply(pub(super) oneshot::Sender<EntityResult>);

impl Reply {
    pub(super) fn send(self, result: EntityResult) {
        let _caller_gone = self.0.send(result);
    }
}

/// An answer waiting for the write.
enum Held {
    /// The command's events are in the write: its answer is the state after its last event.
    Committed { last_event: usize },
    /// The command wrote nothing (a rejection, or no events) but ran on a state the write is still making.
    Answer(EntityResult),
}

/// The events of the commands collected so far and their held answers.
#[derive(Default)]
pub(super) struct PendingWrite {
    /// The revision the entity had before the first command of the write.
    expected_revision: u32,
    events: Option<PreparedEvents>,
    held: Vec<(Reply, Held)>,
    /// The earliest deadline of the commands with events: the write is withdrawn if still queued then.
    deadline: Option<Instant>,
    /// The earliest time by which the handler phase of one of them had to end: the write must start by then
    /// to keep the reserve for the write that a single command has.
    write_by: Option<Instant>,
    event_bytes: usize,
}

impl PendingWrite {
    /// True once a command's events are waiting to be written.
    pub(super) fn has_events(&self) -> bool {
        self.events.is_some()
    }

    /// True when no further command should join.
    pub(super) fn is_full(&self) -> bool {
        self.held.len() >= MAX_COMMANDS || self.event_bytes >= MAX_EVENT_BYTES
    }

    /// The state the next command runs on, when earlier commands produced events.
    pub(super) fn chained_state(&self) -> Option<StateWrapper> {
        let events = self.events.as_ref()?;
        Some(events.state_after(events.len().checked_sub(1)?))
    }

    /// Adds a command's events; `prior_revision` is the revision the command ran on.
    pub(super) fn add_events(
        &mut self,
        reply: Reply,
        prior_revision: u32,
        events: PreparedEvents,
        deadline: Instant,
        handler_deadline: Instant,
    ) {
        self.event_bytes += events.encoded_len();
        let all = match self.events.take() {
            Some(mut earlier) => {
                earlier.extend(events);
                earlier
            }
            None => {
                self.expected_revision = prior_revision;
                events
            }
        };
        let last_event = all.len().saturating_sub(1);
        self.events = Some(all);
        self.held.push((reply, Held::Committed { last_event }));
        self.deadline = Some(earliest(self.deadline, deadline));
        self.write_by = Some(earliest(self.write_by, handler_deadline));
    }

    /// When the write must start, once a command has events: no command may still be running then.
    pub(super) fn write_by(&self) -> Option<Instant> {
        self.write_by
    }

    /// Holds the answer of a command that wrote nothing but ran on a state this write is making; answers at
    /// once when there is no such state.
    pub(super) fn answer(&mut self, reply: Reply, answer: EntityResult) {
        if self.has_events() {
            self.held.push((reply, Held::Answer(answer)));
        } else {
            reply.send(answer);
        }
    }

    /// How many commands the write answers.
    pub(super) fn commands(&self) -> usize {
        self.held.len()
    }

    /// The revision the entity had before the first command of the write.
    pub(super) fn expected_revision(&self) -> u32 {
        self.expected_revision
    }

    /// The append for the journal writer and its deadline, or `None` when no command produced events.
    pub(super) fn append_request(
        &self,
        key: &EntityKey,
        shard: u32,
        snapshots: &SnapshotSettings,
    ) -> Option<(AppendRequest, Instant)> {
        let events = self.events.as_ref()?;
        let deadline = self.deadline?;
        let request = AppendRequest {
            key: key.clone(),
            expected_revision: self.expected_revision,
            shard,
            snapshot: events.snapshot(snapshots),
            events: events.encoded(),
        };
        Some((request, deadline))
    }

    /// The write committed: answers every command and returns the entity's new state.
    pub(super) fn committed(self) -> Option<StateWrapper> {
        let events = self.events?;
        for (reply, held) in self.held {
            match held {
                Held::Committed { last_event } => reply.send(Ok(events.state_after(last_event))),
                Held::Answer(answer) => reply.send(answer),
            }
        }
        Some(events.into_final_state())
    }

    /// The write failed: every command gets `error`, since each ran on states that were never stored.
    pub(super) fn failed(self, error: &CommandError) {
        for (reply, _) in self.held {
            reply.send(Err(error.clone()));
        }
    }
}

fn earliest(known: Option<Instant>, candidate: Instant) -> Instant {
    known.map_or(candidate, |known| known.min(candidate))
}
