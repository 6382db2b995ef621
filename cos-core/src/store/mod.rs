//! Journal and snapshot storage behind one trait that never names a database type (the TiKV rule), with a
//! PostgreSQL and an embedded SQLite implementation, and a group-commit writer in front of either.
//!
//! Payloads are the protobuf bytes of `EventWrapper` (journal) and `StateWrapper` (snapshots), as in the
//! original. The key (entity type, entity id, revision) is unique: a second writer for a revision is
//! rejected with [`StoreError::Conflict`], never overwritten.

mod commits;
pub mod postgres;
pub mod read_sides;
pub mod snapshot_policy;
mod sql_errors;
pub mod sqlite;
mod writer;

use async_trait::async_trait;
use prost::Message;

use crate::domain::{EntityKey, Revision};
use crate::proto::chief_of_state::v1::{EventWrapper, StateWrapper};

pub use commits::ShardCommits;
pub use writer::{JournalWriter, WriterOptions};

/// Manifest stored beside each event payload (the original's serializer manifest).
pub const EVENT_MANIFEST: &str = "chief_of_state.v1.EventWrapper";
/// Manifest stored beside each snapshot payload.
pub const SNAPSHOT_MANIFEST: &str = "chief_of_state.v1.StateWrapper";

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// A revision being written already exists, or the entity moved on: another writer got there first.
    #[error("revision already written by another writer: {0}")]
    Conflict(String),
    /// The request's deadline passed before its transaction started; nothing was written.
    #[error("deadline passed before the write started; nothing was written")]
    Expired,
    /// The database refused this request's data (for example bytes a text column cannot hold).
    #[error("write refused by the database: {0}")]
    Rejected(String),
    /// The database could not be reached or refused the operation; nothing was committed.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// Stored bytes do not decode, or disagree with their row.
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
    /// The schema could not be created or migrated.
    #[error("migration failed: {0}")]
    Migration(String),
}

/// One event ready to be written: its revision and its encoded `EventWrapper`.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedEvent {
    pub revision: Revision,
    pub payload: Vec<u8>,
}

/// A snapshot to save with an append, and what it makes obsolete.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotWrite {
    pub revision: Revision,
    /// Encoded `StateWrapper`.
    pub payload: Vec<u8>,
    /// Snapshots with a lower revision are deleted (the retention limit).
    pub delete_snapshots_before: Revision,
    /// Events up to and including this revision are deleted (journal compaction), when set.
    pub delete_events_through: Option<Revision>,
}

/// All events of one command for one entity, written atomically, plus an optional snapshot. The events'
/// revisions follow `expected_revision` without gaps.
#[derive(Debug, Clone, PartialEq)]
pub struct AppendRequest {
    pub key: EntityKey,
    /// The revision the writer believes is the entity's newest (0 for a new entity). The append fails with
    /// [`StoreError::Conflict`] unless the stored head is exactly this: a stale writer can never write.
    pub expected_revision: Revision,
    /// The entity's shard, stored for read sides.
    pub shard: u32,
    pub events: Vec<EncodedEvent>,
    pub snapshot: Option<SnapshotWrite>,
}

impl AppendRequest {
    /// The entity's revision once this request is written.
    pub fn new_revision(&self) -> Revision {
        self.events
            .last()
            .map_or(self.expected_revision, |event| event.revision)
    }
}

/// A raw stored row: its revision and payload bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRow {
    pub revision: Revision,
    pub payload: Vec<u8>,
}

/// One event as a read side consumes it: its position in its shard (gap-free, in commit order), whose event
/// it is, and its `EventWrapper` bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardEvent {
    pub offset: u64,
    pub key: EntityKey,
    pub revision: Revision,
    pub payload: Vec<u8>,
}

/// Where a recovered state came from (for logs and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecoverySource {
    Snapshot,
    Event,
}

/// The newest state of an entity as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredState {
    pub revision: Revision,
    pub state: StateWrapper,
    pub source: RecoverySource,
}

/// The storage contract shared by PostgreSQL and SQLite.
#[async_trait]
pub trait Journal: Send + Sync + 'static {
    /// Writes every request in one transaction: all of them or none. A revision that already exists fails
    /// the whole call with [`StoreError::Conflict`].
    async fn append_atomically(&self, requests: &[AppendRequest]) -> Result<(), StoreError>;

    /// Writes each request atomically on its own, in as few round trips as the backend allows (PostgreSQL:
    /// one statement for a batch without snapshots; otherwise one transaction with a savepoint per
    /// request). A request whose entity is not at its expected revision gets [`StoreError::Conflict`], one
    /// whose data the database refuses gets [`StoreError::Rejected`]; the others are committed. This is
    /// the group-commit writer's path. The outer error means nothing was committed.
    async fn append_batch(
        &self,
        requests: &[AppendRequest],
    ) -> Result<Vec<Result<(), StoreError>>, StoreError>;

    /// The newest event row and the newest snapshot row of an entity, in one statement: recovery needs both,
    /// and a second round trip would delay the first command of every entity.
    async fn newest_rows(&self, key: &EntityKey) -> Result<NewestRows, StoreError>;

    /// Events of an entity with a revision above `after`, in revision order.
    async fn events_after(
        &self,
        key: &EntityKey,
        after: Revision,
    ) -> Result<Vec<StoredRow>, StoreError>;

    /// Up to `limit` events of a shard with an offset above `after_offset`, in offset order. Offsets are
    /// numbered per shard in commit order without gaps, so reading from the last offset seen never skips an
    /// event that committed late.
    async fn shard_events_after(
        &self,
        shard: u32,
        after_offset: u64,
        limit: u32,
    ) -> Result<Vec<ShardEvent>, StoreError>;

    /// The revision of an entity's newest write (its head), 0 if none.
    async fn head_revision(&self, key: &EntityKey) -> Result<Revision, StoreError>;

    /// Revisions of the snapshots kept for an entity, ascending.
    async fn snapshot_revisions(&self, key: &EntityKey) -> Result<Vec<Revision>, StoreError>;

    /// Closes connections; later calls fail.
    async fn close(&self);

    /// The read sides whose undelivered events journal compaction must keep: compaction then deletes an
    /// event only once every one of them has delivered it (a position at or past its shard offset). Set at
    /// start-up; an empty list turns the guard off.
    fn guard_compaction(&self, read_side_ids: Vec<String>);

    /// The entity's current state. Every event stores its resulting state, so the newest of (newest
    /// snapshot, newest event) *is* the state: recovery reads at most one snapshot and one event, whatever the
    /// length of the history, and never calls the write handler.
    async fn latest_state(&self, key: &EntityKey) -> Result<Option<StoredState>, StoreError> {
        self.newest_rows(key).await?.into_state()
    }
}

/// An entity's newest event row and newest snapshot row (either may be missing), read together.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NewestRows {
    pub event: Option<StoredRow>,
    pub snapshot: Option<StoredRow>,
}

impl NewestRows {
    /// Which of the two rows a `newest_rows` statement's `kind` column names: the backends select the
    /// newest event with kind 0 and the newest snapshot with kind 1.
    const SNAPSHOT_KIND: i64 = 1;

    /// Collects the rows of a `newest_rows` statement, whichever the database: columns `kind`, `revision`
    /// and `payload`.
    pub(crate) fn from_rows<R>(rows: Vec<R>) -> Result<Self, StoreError>
    where
        R: sqlx::Row,
        usize: sqlx::ColumnIndex<R>,
        for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
        for<'r> Vec<u8>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    {
        let mut newest = Self::default();
        for row in rows {
            let kind: i64 = row.try_get(0).map_err(sql_errors::store_error)?;
            let revision: i64 = row.try_get(1).map_err(sql_errors::store_error)?;
            let stored = StoredRow {
                revision: sql_errors::revision_from_row(revision)?,
                payload: row.try_get(2).map_err(sql_errors::store_error)?,
            };
            if kind == Self::SNAPSHOT_KIND {
                newest.snapshot = Some(stored);
            } else {
                newest.event = Some(stored);
            }
        }
        Ok(newest)
    }

    /// The state the rows stand for: the newer of the two (a snapshot wins a tie, it is the same state).
    pub fn into_state(self) -> Result<Option<StoredState>, StoreError> {
        let snapshot_is_newer = match (&self.event, &self.snapshot) {
            (Some(event), Some(snapshot)) => snapshot.revision >= event.revision,
            (None, Some(_)) => true,
            (_, None) => false,
        };
        if snapshot_is_newer && let Some(snapshot) = self.snapshot {
            return Ok(Some(StoredState {
                revision: snapshot.revision,
                state: decode_state(&snapshot)?,
                source: RecoverySource::Snapshot,
            }));
        }
        let Some(event) = self.event else {
            return Ok(None);
        };
        let wrapper = decode_event(&event)?;
        Ok(Some(StoredState {
            revision: event.revision,
            state: StateWrapper {
                state: wrapper.resulting_state,
                meta: wrapper.meta,
            },
            source: RecoverySource::Event,
        }))
    }
}

/// Decodes a journal row and checks it against its revision.
pub fn decode_event(row: &StoredRow) -> Result<EventWrapper, StoreError> {
    decode_event_bytes(row.revision, &row.payload)
}

/// Decodes a read side's event (without copying its payload) and checks it against its revision.
pub fn decode_shard_event(event: &ShardEvent) -> Result<EventWrapper, StoreError> {
    decode_event_bytes(event.revision, &event.payload)
}

fn decode_event_bytes(revision: Revision, payload: &[u8]) -> Result<EventWrapper, StoreError> {
    let wrapper = EventWrapper::decode(payload)
        .map_err(|error| StoreError::Corrupt(format!("event {revision}: {error}")))?;
    let meta_revision = wrapper.meta.as_ref().map_or(0, |meta| meta.revision_number);
    if meta_revision != revision {
        return Err(StoreError::Corrupt(format!(
            "event row {revision} carries revision {meta_revision} in its meta"
        )));
    }
    Ok(wrapper)
}

/// Decodes a snapshot row and checks it against its revision.
pub fn decode_state(row: &StoredRow) -> Result<StateWrapper, StoreError> {
    let state = StateWrapper::decode(row.payload.as_slice())
        .map_err(|error| StoreError::Corrupt(format!("snapshot {}: {error}", row.revision)))?;
    let meta_revision = state.meta.as_ref().map_or(0, |meta| meta.revision_number);
    if meta_revision != row.revision {
        return Err(StoreError::Corrupt(format!(
            "snapshot row {} carries revision {meta_revision} in its meta",
            row.revision
        )));
    }
    Ok(state)
}

/// Builds a [`ShardEvent`] from a row's columns, refusing values that cannot be right.
pub(crate) fn shard_event_from_row(
    offset: i64,
    entity_type: String,
    entity_id: String,
    revision: i64,
    payload: Vec<u8>,
) -> Result<ShardEvent, StoreError> {
    let corrupt = |what: String| StoreError::Corrupt(what);
    Ok(ShardEvent {
        offset: u64::try_from(offset).map_err(|_| corrupt(format!("shard offset {offset}")))?,
        key: EntityKey {
            entity_type: crate::domain::EntityType::parse(entity_type)
                .map_err(|error| corrupt(error.to_string()))?,
            entity_id: crate::domain::EntityId::parse(entity_id)
                .map_err(|error| corrupt(error.to_string()))?,
        },
        revision: Revision::try_from(revision)
            .map_err(|_| corrupt(format!("revision {revision} out of range")))?,
        payload,
    })
}

/// Milliseconds since the Unix epoch, for `written_at` columns.
pub(crate) fn now_epoch_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        })
}
