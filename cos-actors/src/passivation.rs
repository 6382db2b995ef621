//! The per-node active-entity limit, divided evenly between the shards a node hosts (as Pekko does), and
//! the least-recently-used order each shard keeps to decide whom to passivate first.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use std::sync::Arc;

use cos_core::settings::PassivationSettings;
use tokio::time::Instant;

use crate::census::EntityCensus;

/// Node-wide passivation limits and the node's entity census, shared by every shard of every entity type.
#[derive(Debug)]
pub struct PassivationBudget {
    max_active_entities: usize,
    idle_timeout: Option<Duration>,
    rest_after: Option<Duration>,
    local_shards: AtomicUsize,
    census: Arc<EntityCensus>,
}

impl PassivationBudget {
    pub fn new(settings: &PassivationSettings) -> Self {
        Self {
            max_active_entities: settings.max_active_entities.max(1),
            idle_timeout: settings.idle_timeout,
            rest_after: settings.rest_after,
            local_shards: AtomicUsize::new(0),
            census: Arc::default(),
        }
    }

    /// The node's counts of entity actors and resting entities.
    pub fn census(&self) -> &Arc<EntityCensus> {
        &self.census
    }

    /// How long an entity may go without requests before it leaves memory.
    pub fn idle_timeout(&self) -> Option<Duration> {
        self.idle_timeout
    }

    /// How long an entity may go without requests before it gives up its actor and rests in its shard.
    pub fn rest_after(&self) -> Option<Duration> {
        self.rest_after
    }

    /// How often a shard looks for entities to rest or passivate: a quarter of the shortest of the two
    /// periods, between 50 ms and `longest`.
    pub fn maintenance_period(&self, longest: Duration) -> Duration {
        [self.idle_timeout, self.rest_after]
            .into_iter()
            .flatten()
            .min()
            .map_or(longest, |shortest| {
                (shortest / 4).clamp(Duration::from_millis(50), longest)
            })
    }

    /// Called when a shard starts on this node.
    pub fn shard_started(&self) {
        self.local_shards.fetch_add(1, Ordering::Relaxed);
    }

    /// Called when a shard stops on this node.
    pub fn shard_stopped(&self) {
        let _ = self
            .local_shards
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |count| {
                Some(count.saturating_sub(1))
            });
    }

    /// How many entities one shard may keep live right now.
    pub fn per_shard_limit(&self) -> usize {
        let shards = self.local_shards.load(Ordering::Relaxed).max(1);
        (self.max_active_entities / shards).max(1)
    }
}

/// Keys ordered by the time of their last use (ties in touch order): O(log n) touch, oldest first. A use
/// learned late (a read that skipped the shard) takes its place by its own time, not at the recent end.
#[derive(Debug)]
pub struct LruOrder<K: Clone + Eq + Hash + Ord> {
    sequence: u64,
    position_of: HashMap<K, (Instant, u64)>,
    by_position: BTreeMap<(Instant, u64), K>,
}

impl<K: Clone + Eq + Hash + Ord> Default for LruOrder<K> {
    fn default() -> Self {
        Self {
            sequence: 0,
            position_of: HashMap::new(),
            by_position: BTreeMap::new(),
        }
    }
}

impl<K: Clone + Eq + Hash + Ord> LruOrder<K> {
    /// Marks a key as just used.
    pub fn touch(&mut self, key: &K) {
        self.touch_at(key, Instant::now());
    }

    /// Marks a key as used at `at`.
    pub fn touch_at(&mut self, key: &K, at: Instant) {
        self.sequence += 1;
        let position = (at, self.sequence);
        if let Some(previous) = self.position_of.insert(key.clone(), position) {
            self.by_position.remove(&previous);
        }
        self.by_position.insert(position, key.clone());
    }

    pub fn remove(&mut self, key: &K) {
        if let Some(position) = self.position_of.remove(key) {
            self.by_position.remove(&position);
        }
    }

    /// The least recently used key.
    pub fn oldest(&self) -> Option<&K> {
        self.by_position.values().next()
    }

    /// Keys from least to most recently used.
    pub fn oldest_first(&self) -> impl Iterator<Item = &K> {
        self.by_position.values()
    }

    pub fn len(&self) -> usize {
        self.position_of.len()
    }

    pub fn is_empty(&self) -> bool {
        self.position_of.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lru_returns_the_least_recently_touched_key() {
        let mut order = LruOrder::default();
        order.touch(&"a");
        order.touch(&"b");
        order.touch(&"a");
        assert_eq!(order.oldest(), Some(&"b"));
        order.remove(&"b");
        assert_eq!(order.oldest(), Some(&"a"));
        assert_eq!(order.len(), 1);
    }

    #[test]
    fn a_use_learned_late_takes_its_place_by_its_time() {
        let start = Instant::now();
        let at = |millis| start + Duration::from_millis(millis);
        let mut order = LruOrder::default();
        order.touch_at(&"read", at(0));
        order.touch_at(&"old", at(10));
        order.touch_at(&"recent", at(30));
        // "read" was read at 20 ms without the shard seeing it: it moves between the two, not past "recent".
        order.touch_at(&"read", at(20));
        let oldest_first: Vec<_> = order.oldest_first().copied().collect();
        assert_eq!(oldest_first, ["old", "read", "recent"]);
    }

    #[test]
    fn the_node_limit_is_split_between_local_shards() {
        let budget = PassivationBudget::new(&PassivationSettings {
            idle_timeout: None,
            max_active_entities: 100,
            rest_after: None,
        });
        assert_eq!(budget.per_shard_limit(), 100);
        for _ in 0..4 {
            budget.shard_started();
        }
        assert_eq!(budget.per_shard_limit(), 25);
        budget.shard_stopped();
        assert_eq!(budget.per_shard_limit(), 33);
    }

    #[test]
    fn maintenance_runs_at_a_quarter_of_the_shortest_period_within_bounds() {
        let longest = Duration::from_secs(1);
        let period = |idle_timeout, rest_after| {
            PassivationBudget::new(&PassivationSettings {
                idle_timeout,
                max_active_entities: 1,
                rest_after,
            })
            .maintenance_period(longest)
        };
        assert_eq!(period(None, None), longest);
        assert_eq!(period(Some(Duration::from_secs(600)), None), longest);
        assert_eq!(
            period(Some(Duration::from_secs(600)), Some(Duration::from_secs(2))),
            Duration::from_millis(500)
        );
        assert_eq!(
            period(None, Some(Duration::from_millis(100))),
            Duration::from_millis(50)
        );
    }
}
