//! Commit notices per shard: the journal writer announces every shard it committed events to, so read-side
//! workers of this node start delivering at once instead of waiting for their fallback poll.

use std::sync::Arc;

use tokio::sync::watch;

/// A counter per shard, bumped after each commit that wrote events to it. Cheap to clone and to bump (no
/// allocation, no wake-up when nobody listens).
#[derive(Clone, Debug)]
pub struct ShardCommits {
    counters: Arc<Vec<watch::Sender<u64>>>,
}

impl ShardCommits {
    /// Counters for shards `0..num_shards`.
    pub fn new(num_shards: u32) -> Self {
        let counters = (0..num_shards).map(|_| watch::Sender::new(0)).collect();
        Self {
            counters: Arc::new(counters),
        }
    }

    /// Announces that events of `shard` were committed (shards out of range are ignored).
    pub fn committed(&self, shard: u32) {
        if let Some(counter) = usize::try_from(shard)
            .ok()
            .and_then(|index| self.counters.get(index))
        {
            counter.send_modify(|count| *count = count.wrapping_add(1));
        }
    }

    /// A receiver that changes after each commit to `shard`; `None` for a shard out of range.
    pub fn subscribe(&self, shard: u32) -> Option<watch::Receiver<u64>> {
        usize::try_from(shard)
            .ok()
            .and_then(|index| self.counters.get(index))
            .map(watch::Sender::subscribe)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_commit_wakes_only_the_subscribers_of_its_shard() {
        let commits = ShardCommits::new(3);
        let mut shard_one = commits.subscribe(1).expect("shard 1 exists");
        let shard_two = commits.subscribe(2).expect("shard 2 exists");

        commits.committed(1);

        assert!(shard_one.has_changed().expect("sender alive"));
        assert!(!shard_two.has_changed().expect("sender alive"));
        shard_one.changed().await.expect("sender alive");
        assert_eq!(*shard_one.borrow_and_update(), 1);
        assert!(commits.subscribe(3).is_none());
        commits.committed(7);
        assert!(!shard_two.has_changed().expect("sender alive"));
    }
}
