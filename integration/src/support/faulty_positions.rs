//! Fault injection for read-side positions: a real position store whose worker commits can be made to fail,
//! which is what a crash between "the handler said yes" and "the offset is stored" looks like to the next
//! attempt.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use cos_core::store::StoreError;
use cos_core::store::read_sides::{ReadSidePosition, ReadSideStore};

/// A real position store whose next `advance_offset` calls can fail.
pub struct FaultyPositions {
    inner: Arc<dyn ReadSideStore>,
    failing_advances: AtomicUsize,
}

impl FaultyPositions {
    pub fn new(inner: Arc<dyn ReadSideStore>) -> Self {
        Self {
            inner,
            failing_advances: AtomicUsize::new(0),
        }
    }

    /// The next `count` offset commits fail as if the database connection dropped (nothing is stored).
    pub fn fail_next_advances(&self, count: usize) {
        self.failing_advances.store(count, Ordering::SeqCst);
    }
}

#[async_trait]
impl ReadSideStore for FaultyPositions {
    async fn position(&self, id: &str, shard: u32) -> Result<ReadSidePosition, StoreError> {
        self.inner.position(id, shard).await
    }

    async fn positions(&self, id: &str) -> Result<Vec<(u32, ReadSidePosition)>, StoreError> {
        self.inner.positions(id).await
    }

    async fn ensure_positions(
        &self,
        id: &str,
        num_shards: u32,
        paused: bool,
    ) -> Result<(), StoreError> {
        self.inner.ensure_positions(id, num_shards, paused).await
    }

    async fn advance_offset(
        &self,
        id: &str,
        shard: u32,
        expected: u64,
        expected_epoch: u64,
        offset: u64,
    ) -> Result<bool, StoreError> {
        let failing =
            self.failing_advances
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                    left.checked_sub(1)
                });
        if failing.is_ok() {
            return Err(StoreError::Unavailable(
                "injected fault: connection lost before the offset commit".to_string(),
            ));
        }
        self.inner
            .advance_offset(id, shard, expected, expected_epoch, offset)
            .await
    }

    async fn reset_offset(
        &self,
        id: &str,
        shard: u32,
        expected: Option<u64>,
        offset: u64,
    ) -> Result<bool, StoreError> {
        self.inner.reset_offset(id, shard, expected, offset).await
    }

    async fn set_paused(&self, id: &str, shard: u32, paused: bool) -> Result<(), StoreError> {
        self.inner.set_paused(id, shard, paused).await
    }

    async fn set_stopped(
        &self,
        id: &str,
        shard: u32,
        expected: u64,
        expected_epoch: u64,
        reason: &str,
    ) -> Result<bool, StoreError> {
        self.inner
            .set_stopped(id, shard, expected, expected_epoch, reason)
            .await
    }

    async fn latest_offsets(&self) -> Result<Vec<(u32, u64)>, StoreError> {
        self.inner.latest_offsets().await
    }
}
