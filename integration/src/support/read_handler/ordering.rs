//! Checks on what a read handler received that tolerate at-least-once delivery: redeliveries after a crash
//! or a shard move are allowed, gaps and reordering are not.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use super::{Delivery, ReadHandlerServer};
use crate::support::wait_until;

impl ReadHandlerServer {
    /// How many distinct events (entity, revision) were accepted; redeliveries count once.
    pub fn distinct_accepted(&self) -> usize {
        self.accepted()
            .into_iter()
            .map(|delivery| (delivery.entity_id, delivery.revision))
            .collect::<HashSet<_>>()
            .len()
    }

    /// Waits until at least `count` distinct events were accepted (panics after `limit`), and returns every
    /// accepted delivery.
    pub async fn wait_for_distinct(&self, count: usize, limit: Duration) -> Vec<Delivery> {
        let complete = wait_until(limit, || self.distinct_accepted() >= count).await;
        assert!(
            complete,
            "{count} distinct events within {limit:?}, got {}",
            self.distinct_accepted()
        );
        self.accepted()
    }
}

/// Every one of `entities` entities got revisions 1..=`expected`, in order. A redelivery may only re-send
/// what came before, in order: each revision is the next one after the previous delivery or a step back to
/// an earlier one (the start of a re-send), never a jump ahead.
pub fn assert_complete_and_ordered(deliveries: &[Delivery], entities: usize, expected: u32) {
    let mut revisions: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    for delivery in deliveries {
        revisions
            .entry(delivery.entity_id.as_str())
            .or_default()
            .push(delivery.revision);
    }
    assert_eq!(revisions.len(), entities, "every entity's events arrived");
    for (entity, seen) in &revisions {
        let mut distinct: Vec<u32> = seen.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(
            distinct,
            (1..=expected).collect::<Vec<_>>(),
            "{entity}: {seen:?}"
        );
        let mut previous = 0;
        for revision in seen {
            assert!(
                *revision == previous + 1 || *revision <= previous,
                "{entity}: revision {revision} right after {previous}: {seen:?}"
            );
            previous = *revision;
        }
    }
}
