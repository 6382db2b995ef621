//! The command pipeline (§2 of the original, with multi-event commands fixed): HandleCommand once, then
//! HandleEvent for each event with the state produced by the previous one and revisions prior+1, prior+2, ….
//! Nothing here writes: the caller persists the prepared events only if this finishes before the deadline.

use std::time::{Duration, SystemTime};

use cos_core::domain::{is_empty_any, revision_of};
use cos_core::error::CommandError;
use cos_core::limits::{MAX_MESSAGE_BYTES, state_reply_len};
use cos_core::proto::chief_of_state::v1::{
    EventWrapper, HandleCommandRequest, HandleEventRequest, MetaData, StateWrapper,
};
use cos_core::proto::internal::ProcessCommand;
use cos_core::settings::SnapshotSettings;
use cos_core::store::snapshot_policy::{revision_to_snapshot, snapshot_write};
use cos_core::store::{EncodedEvent, SnapshotWrite};
use prost::Message;
use prost_types::{Any, Timestamp};
use tokio::time::Instant;

use crate::runtime::EntityTypeRuntime;

/// What a command produced.
pub enum CommandOutcome {
    /// No events: nothing is persisted and the state is unchanged.
    NoOp,
    /// Events ready to be persisted, in order.
    Events(PreparedEvents),
}

/// The events of one command with their resulting states and metas.
pub struct PreparedEvents {
    wrappers: Vec<EventWrapper>,
}

impl PreparedEvents {
    pub fn first_revision(&self) -> u32 {
        self.wrappers.first().map_or(0, revision_of_event)
    }

    pub fn last_revision(&self) -> u32 {
        self.wrappers.last().map_or(0, revision_of_event)
    }

    pub fn encoded(&self) -> Vec<EncodedEvent> {
        self.wrappers
            .iter()
            .map(|wrapper| EncodedEvent {
                revision: revision_of_event(wrapper),
                payload: wrapper.encode_to_vec(),
            })
            .collect()
    }

    /// The snapshot to write with these events, if one is due (decided from revisions before copying).
    pub fn snapshot(&self, settings: &SnapshotSettings) -> Option<SnapshotWrite> {
        let revision = revision_to_snapshot(settings, self.first_revision(), self.last_revision())?;
        let wrapper = self
            .wrappers
            .iter()
            .find(|wrapper| revision_of_event(wrapper) == revision)?;
        Some(snapshot_write(
            settings,
            &StateWrapper {
                state: wrapper.resulting_state.clone(),
                meta: wrapper.meta.clone(),
            },
        ))
    }

    /// Refuses a result whose reply (the final state and its meta) would exceed the message limit: it could
    /// not be sent back, and once stored the entity could no longer be read.
    fn check_reply_fits(&self) -> Result<(), CommandError> {
        let Some(last) = self.wrappers.last() else {
            return Ok(());
        };
        let reply_len = state_reply_len(last.resulting_state.as_ref(), last.meta.as_ref());
        if reply_len > MAX_MESSAGE_BYTES {
            return Err(CommandError::TooLarge(format!(
                "the resulting state makes a reply of {reply_len} bytes, over the {MAX_MESSAGE_BYTES}-byte \
                 message limit; nothing was persisted"
            )));
        }
        Ok(())
    }

    /// Adds the events of the next command, which ran on the state these produced.
    pub fn extend(&mut self, next: PreparedEvents) {
        self.wrappers.extend(next.wrappers);
    }

    /// How many events there are (never none: a command without events is [`CommandOutcome::NoOp`]).
    pub(crate) fn len(&self) -> usize {
        self.wrappers.len()
    }

    /// The bytes these events take in the journal.
    pub fn encoded_len(&self) -> usize {
        self.wrappers.iter().map(Message::encoded_len).sum()
    }

    /// The state after the event at `index` (a copy).
    pub fn state_after(&self, index: usize) -> StateWrapper {
        self.wrappers
            .get(index)
            .map(|wrapper| StateWrapper {
                state: wrapper.resulting_state.clone(),
                meta: wrapper.meta.clone(),
            })
            .unwrap_or_default()
    }

    /// The state after the last event.
    pub fn into_final_state(self) -> StateWrapper {
        match self.wrappers.into_iter().last() {
            Some(last) => StateWrapper {
                state: last.resulting_state,
                meta: last.meta,
            },
            None => StateWrapper::default(),
        }
    }
}

fn revision_of_event(wrapper: &EventWrapper) -> u32 {
    wrapper.meta.as_ref().map_or(0, |meta| meta.revision_number)
}

fn time_left(deadline: Instant, call_timeout: Duration) -> Duration {
    deadline
        .saturating_duration_since(Instant::now())
        .min(call_timeout)
}

fn now_timestamp() -> Timestamp {
    let since_epoch = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp {
        seconds: i64::try_from(since_epoch.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(since_epoch.subsec_nanos()).unwrap_or(0),
    }
}

/// Runs a command against the write handler and prepares (but does not persist) its events.
pub async fn run_command(
    runtime: &EntityTypeRuntime,
    prior: &StateWrapper,
    command: ProcessCommand,
    deadline: Instant,
) -> Result<CommandOutcome, CommandError> {
    let call_timeout = runtime.settings.write_handler.call_timeout;
    let prior_meta = prior.meta.clone().unwrap_or_default();
    let response = runtime
        .handler
        .handle_command(
            HandleCommandRequest {
                command: Some(command.command.unwrap_or_default()),
                prior_state: prior.state.clone(),
                prior_event_meta: Some(prior_meta.clone()),
            },
            &command.propagated_headers,
            time_left(deadline, call_timeout),
        )
        .await?;
    #[allow(deprecated)]
    let single_event = response.event;
    let events: Vec<Any> = if response.events.is_empty() {
        single_event.into_iter().collect()
    } else {
        response.events
    };
    let events: Vec<Any> = events
        .into_iter()
        .filter(|event| !is_empty_any(event))
        .collect();
    for event in &events {
        runtime.settings.validation.check_event(event)?;
    }
    if events.is_empty() {
        return Ok(CommandOutcome::NoOp);
    }

    let mut revision = revision_of(prior);
    let mut state = prior.state.clone();
    let mut wrappers = Vec::with_capacity(events.len());
    for event in events {
        revision = revision.checked_add(1).ok_or_else(|| {
            CommandError::Internal("revision number overflow (more than 2^32 events)".to_string())
        })?;
        let meta = MetaData {
            entity_id: prior_meta.entity_id.clone(),
            revision_number: revision,
            revision_date: Some(now_timestamp()),
            data: Default::default(),
            headers: command.persisted_headers.clone(),
        };
        let reply = runtime
            .handler
            .handle_event(
                HandleEventRequest {
                    event: Some(event.clone()),
                    prior_state: state.clone(),
                    event_meta: Some(meta.clone()),
                },
                time_left(deadline, call_timeout),
            )
            .await?;
        let resulting_state = reply.resulting_state.ok_or_else(|| {
            CommandError::InvalidArgument("event handler replied with empty state".to_string())
        })?;
        runtime.settings.validation.check_state(&resulting_state)?;
        state = Some(resulting_state.clone());
        wrappers.push(EventWrapper {
            event: Some(event),
            resulting_state: Some(resulting_state),
            meta: Some(meta),
        });
    }
    let prepared = PreparedEvents { wrappers };
    prepared.check_reply_fits()?;
    Ok(CommandOutcome::Events(prepared))
}
