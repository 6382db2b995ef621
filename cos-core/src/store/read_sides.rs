//! Read-side positions: per read side and shard, the last shard offset its handler accepted, whether an
//! operator paused it and whether a failure policy stopped it. Kept in the same database as the journal
//! (PostgreSQL or SQLite) behind a trait that names no database type.
//!
//! Two writers touch a position: the worker delivering the shard, and operators through the manager
//! service. The worker only ever moves the offset with a compare-and-set from the offset it delivered from,
//! so an operator's restart or skip is never overwritten by a worker that was mid-delivery (it notices,
//! reloads and goes on from the operator's offset), and a stale worker on a node that just lost the shard
//! cannot move it backwards.

use async_trait::async_trait;

use crate::store::StoreError;

/// Where a read side stands on one shard.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReadSidePosition {
    /// The last shard offset delivered and acknowledged; 0 before the first event.
    pub offset: u64,
    /// An operator paused it; survives restarts.
    pub paused: bool,
    /// A failure policy stopped it, and why; survives restarts until an operator resumes, restarts or skips.
    pub stopped: Option<String>,
    /// Counts operators' moves of the offset (restart, skip): a worker's write is a compare-and-set on the
    /// offset *and* this, so a restart to the offset a worker started from still voids its pending write.
    pub epoch: u64,
}

impl ReadSidePosition {
    /// Whether a worker may deliver.
    pub fn is_running(&self) -> bool {
        !self.paused && self.stopped.is_none()
    }
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

    /// Creates the missing positions of shards `0..num_shards` at offset 0, paused when `paused` (a read side
    /// with `autoStart: false`); existing positions are left alone, so an operator's pause or resume is never
    /// undone at start-up.
    async fn ensure_positions(
        &self,
        read_side_id: &str,
        num_shards: u32,
        paused: bool,
    ) -> Result<(), StoreError>;

    /// The worker's commit: moves the offset from `expected` to `offset` only if it is still `expected` and
    /// the shard is neither paused nor stopped (a missing position is created, so a worker can never be stuck
    /// on a row somebody deleted). `false` means somebody else moved it or an operator paused it, and the
    /// caller must reload.
    async fn advance_offset(
        &self,
        read_side_id: &str,
        shard: u32,
        expected: u64,
        expected_epoch: u64,
        offset: u64,
    ) -> Result<bool, StoreError>;

    /// The operator's move (restart to 0, skip one): sets the offset, only if it is still `expected` when
    /// given, bumps the epoch and clears a failure-policy stop. `false` means the offset had moved meanwhile.
    async fn reset_offset(
        &self,
        read_side_id: &str,
        shard: u32,
        expected: Option<u64>,
        offset: u64,
    ) -> Result<bool, StoreError>;

    /// Pauses or resumes a read side on a shard; resuming also clears a failure-policy stop.
    async fn set_paused(
        &self,
        read_side_id: &str,
        shard: u32,
        paused: bool,
    ) -> Result<(), StoreError>;

    /// Records that a failure policy stopped the read side on a shard, and why, only if the offset is still
    /// `expected` and nothing stopped or paused it: `false` means an operator acted meanwhile (a skip, a
    /// restart) and the stop must not overwrite that.
    async fn set_stopped(
        &self,
        read_side_id: &str,
        shard: u32,
        expected: u64,
        expected_epoch: u64,
        reason: &str,
    ) -> Result<bool, StoreError>;

    /// The newest shard offset of every shard that has events (`0` offsets are not listed).
    async fn latest_offsets(&self) -> Result<Vec<(u32, u64)>, StoreError>;
}

/// A stored offset back into the API type.
pub(crate) fn offset_from_row(value: i64) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt(format!("read-side offset {value}")))
}

/// A stored shard number back into the API type.
pub(crate) fn shard_from_row(value: i64) -> Result<u32, StoreError> {
    u32::try_from(value).map_err(|_| StoreError::Corrupt(format!("shard {value}")))
}

/// An offset for a BIGINT column (offsets never come near `i64::MAX`).
pub(crate) fn offset_to_row(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// The guarded read sides as a JSON array, the one parameter both stores' compaction guards bind.
pub(crate) fn guard_parameter(read_side_ids: &[String]) -> String {
    let quoted: Vec<String> = read_side_ids
        .iter()
        .map(|id| format!("\"{}\"", id.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect();
    format!("[{}]", quoted.join(","))
}

/// Compaction guard state shared by both stores: the guarded ids as a JSON array, or `None` when no read side
/// guards compaction (then the delete needs no sub-query).
#[derive(Debug, Default)]
pub(crate) struct CompactionGuard {
    ids: std::sync::RwLock<Option<String>>,
}

impl CompactionGuard {
    pub(crate) fn set(&self, read_side_ids: &[String]) {
        let value = (!read_side_ids.is_empty()).then(|| guard_parameter(read_side_ids));
        if let Ok(mut ids) = self.ids.write() {
            *ids = value;
        }
    }

    pub(crate) fn get(&self) -> Option<String> {
        self.ids.read().ok().and_then(|ids| ids.clone())
    }
}
