//! Read sides: one [`worker::ReadSideWorker`] per (read side, shard) delivers the shard's events, in commit
//! order, to the read side's handler; the node's [`host::ReadSideHost`] runs the workers of the shards this
//! node owns and moves them with their shards.

pub mod host;
pub mod worker;

use std::sync::Arc;
use std::time::Duration;

use cos_core::readside::ReadSideConfig;
use cos_core::readside::handler::ReadHandler;
use cos_core::store::read_sides::ReadSideStore;
use cos_core::store::{Journal, ShardCommits};

/// One enabled read side: its configuration and the handler client its workers share (and with it, its
/// circuit breaker).
pub struct ReadSideRuntime {
    pub config: ReadSideConfig,
    pub handler: Arc<dyn ReadHandler>,
}

impl ReadSideRuntime {
    /// Whether this read side receives events of `entity_type` (all types unless it lists some).
    pub fn listens_to(&self, entity_type: &str) -> bool {
        self.config
            .entity_types
            .as_ref()
            .is_none_or(|types| types.iter().any(|listened| listened == entity_type))
    }
}

/// What every worker of the node shares.
pub struct ReadSideContext {
    pub journal: Arc<dyn Journal>,
    pub positions: Arc<dyn ReadSideStore>,
    /// Commit notices of this node's journal writer: the low-latency path.
    pub commits: ShardCommits,
    /// The fallback: how often an idle worker looks at the journal and its position anyway (events written
    /// by another node during a shard move, an operator's change made on another node).
    pub poll_interval: Duration,
    /// Events read from the journal per query.
    pub batch_size: u32,
}
