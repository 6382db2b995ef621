//! Fault injection at the storage seam (the TiKV failpoint idea without the macro): a journal that wraps a
//! real store and can delay or fail its appends, to test what happens between "decided" and "committed".
//! It also counts the append calls (transactions) and the recoveries (newest-event reads) that reach it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use cos_core::domain::{EntityKey, Revision};
use cos_core::store::{AppendRequest, Journal, NewestRows, ShardEvent, StoreError, StoredRow};

/// A real journal with switchable faults on the write path.
pub struct FaultyJournal {
    inner: Arc<dyn Journal>,
    append_delay_millis: AtomicU64,
    failing_appends: AtomicUsize,
    /// The 1-based number of the one append call that fails (0: none).
    failing_call: AtomicUsize,
    /// The 1-based number of the one append call whose data the database refuses (0: none).
    refused_call: AtomicUsize,
    append_calls: AtomicUsize,
    recovery_reads: AtomicUsize,
}

impl FaultyJournal {
    pub fn new(inner: Arc<dyn Journal>) -> Self {
        Self {
            inner,
            append_delay_millis: AtomicU64::new(0),
            failing_appends: AtomicUsize::new(0),
            failing_call: AtomicUsize::new(0),
            refused_call: AtomicUsize::new(0),
            append_calls: AtomicUsize::new(0),
            recovery_reads: AtomicUsize::new(0),
        }
    }

    /// Every append waits this long before reaching the database.
    pub fn delay_appends(&self, delay: Duration) {
        let millis = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.append_delay_millis.store(millis, Ordering::SeqCst);
    }

    /// The next `count` appends fail as if the database were unreachable (nothing is written).
    pub fn fail_next_appends(&self, count: usize) {
        self.failing_appends.store(count, Ordering::SeqCst);
    }

    /// The append call with this number (counting from 1 since the journal was made) fails as if the
    /// database were unreachable; the others are unaffected.
    pub fn fail_append_number(&self, number: usize) {
        self.failing_call.store(number, Ordering::SeqCst);
    }

    /// The append call with this number refuses the data of every request in it, as the database refuses a
    /// value it cannot store (each request fails with [`StoreError::Rejected`]; nothing is written).
    pub fn refuse_append_number(&self, number: usize) {
        self.refused_call.store(number, Ordering::SeqCst);
    }

    /// How many append calls (each one transaction or statement) reached this journal.
    pub fn append_calls(&self) -> usize {
        self.append_calls.load(Ordering::SeqCst)
    }

    /// How many times an entity's newest rows were read: once per recovery from the store.
    pub fn recovery_reads(&self) -> usize {
        self.recovery_reads.load(Ordering::SeqCst)
    }

    /// Counts the call, waits the delay, fails it if asked; returns its number.
    async fn before_append(&self) -> Result<usize, StoreError> {
        let number = self.append_calls.fetch_add(1, Ordering::SeqCst) + 1;
        let delay = self.append_delay_millis.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        let failing =
            self.failing_appends
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                    left.checked_sub(1)
                });
        if failing.is_ok() || number == self.failing_call.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable(
                "injected fault: connection reset".to_string(),
            ));
        }
        Ok(number)
    }
}

#[async_trait]
impl Journal for FaultyJournal {
    async fn append_atomically(&self, requests: &[AppendRequest]) -> Result<(), StoreError> {
        self.before_append().await?;
        self.inner.append_atomically(requests).await
    }

    async fn append_batch(
        &self,
        requests: &[AppendRequest],
    ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        let number = self.before_append().await?;
        if number == self.refused_call.load(Ordering::SeqCst) {
            let refused =
                StoreError::Rejected("injected: value too long for the column".to_string());
            return Ok(vec![Err(refused); requests.len()]);
        }
        self.inner.append_batch(requests).await
    }

    async fn newest_rows(&self, key: &EntityKey) -> Result<NewestRows, StoreError> {
        self.recovery_reads.fetch_add(1, Ordering::SeqCst);
        self.inner.newest_rows(key).await
    }

    async fn events_after(
        &self,
        key: &EntityKey,
        after: Revision,
    ) -> Result<Vec<StoredRow>, StoreError> {
        self.inner.events_after(key, after).await
    }

    async fn head_revision(&self, key: &EntityKey) -> Result<Revision, StoreError> {
        self.inner.head_revision(key).await
    }

    async fn shard_events_after(
        &self,
        shard: u32,
        after_offset: u64,
        limit: u32,
    ) -> Result<Vec<ShardEvent>, StoreError> {
        self.inner
            .shard_events_after(shard, after_offset, limit)
            .await
    }

    async fn snapshot_revisions(&self, key: &EntityKey) -> Result<Vec<Revision>, StoreError> {
        self.inner.snapshot_revisions(key).await
    }

    async fn close(&self) {
        self.inner.close().await;
    }

    fn guard_compaction(&self, read_side_ids: Vec<String>) {
        self.inner.guard_compaction(read_side_ids);
    }
}

/// A running test node whose journal is a [`FaultyJournal`] over a fresh store, with the script handler.
pub struct FaultyNode {
    pub store: super::node::TestStore,
    pub handler: super::script_handler::ScriptHandler,
    pub running: super::script_handler::RunningHandler,
    pub journal: Arc<FaultyJournal>,
    pub node: super::node::TestNode,
}

impl FaultyNode {
    /// Starts one on `backend`, with `extra` settings.
    pub async fn start(
        backend: super::node::Backend,
        extra: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let store = super::node::TestStore::new(backend)?;
        let handler = super::script_handler::ScriptHandler::default();
        let running = handler.serve().await?;
        let journal = Arc::new(FaultyJournal::new(store.open_journal().await?));
        let settings = super::node::test_settings(&store, running.address, extra)?;
        let node = super::node::TestNode::start_with_journal(settings, journal.clone()).await?;
        Ok(Self {
            store,
            handler,
            running,
            journal,
            node,
        })
    }
}
