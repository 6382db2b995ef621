//! Read-side positions: per read side and shard, the last shard offset its handler accepted and whether it is
//! paused. Kept in the same database as the journal (PostgreSQL or SQLite) behind a trait that names no
//! database type.

use async_trait::async_trait;

use crate::store::StoreError;

/// Where a read side stands on one shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReadSidePosition {
    /// The last shard offset delivered and acknowledged; 0 before the first event.
    pub offset: u64,
    /// An operator paused it; survives restarts.
    pub paused: bool,
}

/// Storage of read-side positions.
#[async_trait]
pub trait ReadSideStore: Send + Sync + 'static {
    /// The position of a read side on a shard (the default position when none is stored).
    async fn position(
        &self,
        read_side_id: &str,
        shard: u32,
    ) -> Result<ReadSidePosition, StoreError>;

    /// Every stored position of a read side, by shard.
    async fn positions(
        &self,
        read_side_id: &str,
    ) -> Result<Vec<(u32, ReadSidePosition)>, StoreError>;

    /// Records the last offset the handler acknowledged (also used to restart from 0 or skip one).
    async fn save_offset(
        &self,
        read_side_id: &str,
        shard: u32,
        offset: u64,
    ) -> Result<(), StoreError>;

    /// Pauses or resumes a read side on a shard.
    async fn set_paused(
        &self,
        read_side_id: &str,
        shard: u32,
        paused: bool,
    ) -> Result<(), StoreError>;
}

/// A stored offset back into the API type.
pub(crate) fn offset_from_row(value: i64) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt(format!("read-side offset {value}")))
}

/// A stored shard number back into the API type.
pub(crate) fn shard_from_row(value: i64) -> Result<u32, StoreError> {
    u32::try_from(value).map_err(|_| StoreError::Corrupt(format!("shard {value}")))
}
