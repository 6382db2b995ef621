//! Group commit: appends from many entities share one transaction, so throughput is not one fsync per
//! command. Per-entity order stays strict because an entity never has two appends in flight: its next
//! commands wait for (or share) the append after the one in flight settles.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::store::{AppendRequest, Journal, ShardCommits, StoreError};

/// Limits of the group-commit writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterOptions {
    /// Most append requests in one transaction.
    pub max_batch_requests: usize,
    /// Transactions in flight at once (1 for SQLite, which has a single writer).
    pub max_concurrent_batches: usize,
    /// Requests queued before `append` waits (backpressure).
    pub queue_capacity: usize,
}

impl Default for WriterOptions {
    fn default() -> Self {
        Self {
            max_batch_requests: 512,
            max_concurrent_batches: 1,
            queue_capacity: 16_384,
        }
    }
}

struct PendingAppend {
    request: AppendRequest,
    /// Queued until a batch claims it; the caller may withdraw it before that, at its deadline.
    claim: Arc<AtomicU8>,
    reply: oneshot::Sender<Result<(), StoreError>>,
}

const QUEUED: u8 = 0;
const CLAIMED: u8 = 1;
const WITHDRAWN: u8 = 2;

/// A cloneable handle to the group-commit task; the task ends when every handle is dropped, after
/// finishing what was queued.
#[derive(Clone)]
pub struct JournalWriter {
    sender: mpsc::Sender<PendingAppend>,
}

impl JournalWriter {
    /// Starts the writer task on the current tokio runtime; every commit is announced on `commits`.
    pub fn spawn(
        journal: Arc<dyn Journal>,
        options: WriterOptions,
        commits: ShardCommits,
    ) -> (Self, JoinHandle<()>) {
        let (sender, receiver) = mpsc::channel(options.queue_capacity.max(1));
        let task = tokio::spawn(run_writer(journal, options, commits, receiver));
        (Self { sender }, task)
    }

    /// Appends one entity's events (atomically) and waits until they are committed. If `deadline` passes
    /// while the request is still queued (no transaction has taken it yet), it is withdrawn and answered
    /// [`StoreError::Expired`] at once: it is never written. Once a transaction has it, the outcome of that
    /// transaction is awaited, whatever the time.
    pub async fn append(
        &self,
        request: AppendRequest,
        deadline: Option<Instant>,
    ) -> Result<(), StoreError> {
        let (reply, mut answer) = oneshot::channel();
        let claim = Arc::new(AtomicU8::new(QUEUED));
        let pending = PendingAppend {
            request,
            claim: claim.clone(),
            reply,
        };
        let queued = match deadline {
            Some(deadline) => tokio::time::timeout_at(deadline, self.sender.send(pending)).await,
            None => Ok(self.sender.send(pending).await),
        };
        match queued {
            Err(_elapsed) => return Err(StoreError::Expired),
            Ok(Err(_closed)) => {
                return Err(StoreError::Unavailable(
                    "journal writer stopped".to_string(),
                ));
            }
            Ok(Ok(())) => {}
        }
        if let Some(deadline) = deadline {
            tokio::select! {
                outcome = &mut answer => return flatten(outcome),
                () = tokio::time::sleep_until(deadline) => {}
            }
            let withdrawn = claim
                .compare_exchange(QUEUED, WITHDRAWN, Ordering::AcqRel, Ordering::Acquire)
                .is_ok();
            if withdrawn {
                return Err(StoreError::Expired);
            }
        }
        flatten(answer.await)
    }
}

fn flatten(
    outcome: Result<Result<(), StoreError>, oneshot::error::RecvError>,
) -> Result<(), StoreError> {
    outcome.map_err(|_| {
        StoreError::Unavailable("journal writer stopped before answering".to_string())
    })?
}

async fn run_writer(
    journal: Arc<dyn Journal>,
    options: WriterOptions,
    commits: ShardCommits,
    mut receiver: mpsc::Receiver<PendingAppend>,
) {
    let max_concurrent = options.max_concurrent_batches.max(1);
    let slots = Arc::new(Semaphore::new(max_concurrent));
    while let Some(first) = receiver.recv().await {
        // Wait for a free transaction slot before collecting the batch: requests that arrive meanwhile join it.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        let mut batch = vec![first];
        while batch.len() < options.max_batch_requests {
            match receiver.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let journal = journal.clone();
        let commits = commits.clone();
        tokio::spawn(async move {
            commit_batch(journal.as_ref(), &commits, batch).await;
            drop(slot);
        });
    }
    // Wait for the batches still in flight.
    let permits = u32::try_from(max_concurrent).unwrap_or(u32::MAX);
    let _all_done = slots.acquire_many(permits).await;
}

/// Commits a batch with [`Journal::append_batch`], so a conflicting or refused request fails alone.
/// Requests withdrawn by their callers (deadline passed) are skipped before anything is written.
async fn commit_batch(journal: &dyn Journal, commits: &ShardCommits, batch: Vec<PendingAppend>) {
    let mut requests = Vec::with_capacity(batch.len());
    let mut replies = Vec::with_capacity(batch.len());
    for pending in batch {
        let claimed = pending
            .claim
            .compare_exchange(QUEUED, CLAIMED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if claimed {
            requests.push(pending.request);
            replies.push(pending.reply);
        }
    }
    if requests.is_empty() {
        return;
    }
    let started = Instant::now();
    let outcomes = match journal.append_batch(&requests).await {
        Ok(outcomes) => outcomes,
        Err(error) => vec![Err(error); requests.len()],
    };
    // For attributing command latency: a commit stall shows as a long batch
    // (`LOG_LEVEL=warn,cos_core::store::writer=debug`).
    tracing::debug!(
        requests = requests.len(),
        micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
        "journal batch committed"
    );
    let mut shards: Vec<u32> = requests
        .iter()
        .zip(&outcomes)
        .filter(|(request, outcome)| outcome.is_ok() && !request.events.is_empty())
        .map(|(request, _)| request.shard)
        .collect();
    shards.sort_unstable();
    shards.dedup();
    for shard in shards {
        commits.committed(shard);
    }
    for (reply, outcome) in replies.into_iter().zip(outcomes) {
        let _receiver_gone = reply.send(outcome);
    }
}
