//! Batched recovery: entities recovering at the same moment (a burst of new entities, the shards a node has
//! just taken over) share one statement instead of each waiting for a pooled connection of its own. A lone
//! recovery is read as before, by itself; reads never take more connections than they are given, so the
//! group-commit writer keeps its own.

use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::domain::EntityKey;
use crate::store::{Journal, NewestRows, StoreError, StoredState};

/// Limits of the recovery reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecoveryOptions {
    /// Most entities read by one statement.
    pub max_batch_keys: usize,
    /// Statements in flight at once (pooled connections the reads may hold).
    pub max_concurrent_reads: usize,
}

impl Default for RecoveryOptions {
    fn default() -> Self {
        Self {
            max_batch_keys: 64,
            max_concurrent_reads: 1,
        }
    }
}

struct PendingRead {
    key: EntityKey,
    reply: oneshot::Sender<Result<Option<StoredState>, StoreError>>,
}

/// A cloneable handle to the reader task; the task ends when every handle is dropped.
#[derive(Clone)]
pub struct RecoveryReader {
    sender: mpsc::UnboundedSender<PendingRead>,
}

impl RecoveryReader {
    /// Starts the reader task on the current tokio runtime.
    pub fn spawn(journal: Arc<dyn Journal>, options: RecoveryOptions) -> Self {
        let (sender, receiver) = mpsc::unbounded_channel();
        tokio::spawn(run_reader(journal, options, receiver));
        Self { sender }
    }

    /// The entity's stored state (see [`Journal::latest_state`]), read together with the other entities
    /// recovering at the same time.
    pub async fn latest_state(&self, key: EntityKey) -> Result<Option<StoredState>, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.sender
            .send(PendingRead { key, reply })
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

fn stopped() -> StoreError {
    StoreError::Unavailable("recovery reader stopped".to_string())
}

async fn run_reader(
    journal: Arc<dyn Journal>,
    options: RecoveryOptions,
    mut receiver: mpsc::UnboundedReceiver<PendingRead>,
) {
    let slots = Arc::new(Semaphore::new(options.max_concurrent_reads.max(1)));
    let max_batch = options.max_batch_keys.max(1);
    while let Some(first) = receiver.recv().await {
        // Wait for a free slot before collecting the batch: reads that arrive meanwhile join it.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        let mut batch = vec![first];
        while batch.len() < max_batch {
            match receiver.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let journal = journal.clone();
        tokio::spawn(async move {
            read_batch(journal.as_ref(), batch).await;
            drop(slot);
        });
    }
}

/// Reads a batch (a lone key by itself) and answers each reader with its own outcome.
async fn read_batch(journal: &dyn Journal, batch: Vec<PendingRead>) {
    let outcomes: Vec<Result<NewestRows, StoreError>> = if let [single] = batch.as_slice() {
        vec![journal.newest_rows(&single.key).await]
    } else {
        let keys: Vec<EntityKey> = batch.iter().map(|pending| pending.key.clone()).collect();
        match journal.newest_rows_of_many(&keys).await {
            Ok(outcomes) if outcomes.len() == keys.len() => outcomes,
            Ok(outcomes) => {
                let reason = format!("{} results for {} entities", outcomes.len(), keys.len());
                vec![Err(StoreError::Corrupt(reason)); keys.len()]
            }
            Err(error) => vec![Err(error); keys.len()],
        }
    };
    for (pending, outcome) in batch.into_iter().zip(outcomes) {
        let _reader_gone = pending.reply.send(outcome.and_then(NewestRows::into_state));
    }
}
