//! Which node hosts which shard: Pekko's least-shards allocation and its bounded rebalancing (the newer
//! `LeastShardAllocationStrategy` with an absolute and a relative limit), as plain data so the shard
//! coordinator actor can own one [`ShardAllocation`] and test nothing but messages.
//!
//! Design note (2026-11-27), scaling limits with `N` member nodes and `S` allocated shards:
//! - [`ShardAllocation::allocate`] of a new shard is O(N) (a scan for the least loaded member); of an
//!   allocated shard O(1).
//! - [`ShardAllocation::rebalance`] is O(N log N + moves × (log N + log S)) per round: it sorts the members
//!   by load once, then each move costs two updates of that ordered index and one ordered lookup of a shard.
//!   It never looks at every shard of every node, so it is not O(N × S).
//! - [`ShardAllocation::remove_node`] is O(shards of that node); [`ShardAllocation::from_hosted`] is
//!   O(S log S) over the reported shards.
//!
//! Rebalancing differs from Pekko in one deliberate way: a round names the target node of every move, and
//! its moves are chosen from the most loaded member to the least loaded one until `max − min ≤ 1` or the
//! limit is reached, so a round that the limit does not cut short always ends balanced (Pekko may need a
//! second round for the last shards). The number of moves is then the minimum any balancing needs.

use std::collections::btree_map::Entry as BTreeEntry;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::ops::Bound;

/// The name of a cluster member (`name@host`), ordered so every tie between nodes is broken the same way
/// on every coordinator.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeName(String);

impl NodeName {
    /// Wraps a member name as the cluster reports it.
    pub fn new(name: impl Into<String>) -> Self {
        Self(name.into())
    }

    /// The name as text, for messages and logs.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeName {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

impl From<String> for NodeName {
    fn from(name: String) -> Self {
        Self(name)
    }
}

impl From<&str> for NodeName {
    fn from(name: &str) -> Self {
        Self(name.to_owned())
    }
}

/// How many shards one rebalance round may move, so a join does not stop a large part of the cluster's
/// entities at once. Mirrors Pekko's `least-shard-allocation-strategy.rebalance-absolute-limit` and
/// `rebalance-relative-limit`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RebalanceLimits {
    /// At most this many moves per round, whatever the cluster size. Default 20 (as Pekko recommends).
    pub absolute_limit: usize,
    /// At most this fraction of the allocated shards moves per round (rounded up). Default 0.1.
    pub relative_limit: f64,
}

impl RebalanceLimits {
    /// Pekko's recommended absolute limit: 20 shards per round.
    pub const DEFAULT_ABSOLUTE_LIMIT: usize = 20;
    /// Pekko's default relative limit: a tenth of the allocated shards per round.
    pub const DEFAULT_RELATIVE_LIMIT: f64 = 0.1;

    /// The most moves one round may hold for `total_shards` allocated shards:
    /// `max(1, min(absolute_limit, ceil(relative_limit × total_shards)))`. Never 0, so a badly configured
    /// limit slows rebalancing down but cannot stop it.
    pub fn max_moves(&self, total_shards: usize) -> usize {
        let relative_moves_float = (self.relative_limit * total_shards as f64).ceil();
        // `as` saturates: NaN and negative values become 0, huge values usize::MAX.
        let relative_moves = relative_moves_float as usize;
        self.absolute_limit.min(relative_moves).max(1)
    }
}

impl Default for RebalanceLimits {
    fn default() -> Self {
        Self {
            absolute_limit: Self::DEFAULT_ABSOLUTE_LIMIT,
            relative_limit: Self::DEFAULT_RELATIVE_LIMIT,
        }
    }
}

/// One shard hand-off a rebalance round asks for: stop `shard` on `from`, then host it on `to`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ShardMove {
    /// The shard to hand off.
    pub shard: u32,
    /// Its owner when the round was computed.
    pub from: NodeName,
    /// The least loaded member that should host it next.
    pub to: NodeName,
}

/// What [`ShardAllocation::complete_move`] did, so the coordinator knows whether the shard still needs a
/// home.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MoveCompletion {
    /// The shard now belongs to the move's `to`.
    Moved,
    /// The move's `from` no longer owned the shard (it left, or the shard moved meanwhile): nothing changed.
    Stale,
    /// The move's `to` left during the hand-off: the shard is unallocated now, and the next
    /// [`ShardAllocation::allocate`] picks a new home for it.
    TargetGone,
}

/// A shard that two nodes said they host after a coordinator fail-over: the coordinator keeps `kept` and
/// must tell `dropped` to stop its copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostingConflict {
    /// The shard reported twice.
    pub shard: u32,
    /// The node that stays its owner (the smallest node name among the reporters).
    pub kept: NodeName,
    /// A node that must drop the shard.
    pub dropped: NodeName,
}

/// The coordinator's view of the cluster's shards: which member hosts each allocated shard, which members
/// may host shards, and which rebalance moves are still being handed off.
///
/// Invariants kept by every method: each allocated shard has exactly one owner, every owner is a member,
/// and `owners` and `hosted` describe the same assignment.
#[derive(Debug, Clone, Default)]
pub struct ShardAllocation {
    /// Shard -> owner, for allocated shards only.
    owners: HashMap<u32, NodeName>,
    /// Member -> the shards it hosts; the keys are exactly the members.
    hosted: BTreeMap<NodeName, BTreeSet<u32>>,
    /// Moves returned by `rebalance` that were neither completed nor aborted, by shard.
    in_flight: BTreeMap<u32, ShardMove>,
    /// Members that are leaving: they get no new shards and give theirs away.
    draining: BTreeSet<NodeName>,
}

impl ShardAllocation {
    /// An allocation with no members and no shards, for a coordinator starting a fresh cluster.
    pub fn new() -> Self {
        Self::default()
    }

    /// Rebuilds the allocation after a coordinator fail-over from what each region says it hosts (Pekko
    /// asks the regions instead of persisting the allocation). Every reporting node becomes a member, even
    /// one hosting nothing.
    ///
    /// A shard reported by several nodes stays with the smallest node name, whatever the order of the
    /// reports, and each other reporter comes back as a [`HostingConflict`] (sorted by shard, then node) so
    /// the caller can tell it to drop its copy. O(S log S) for S reported shards.
    pub fn from_hosted(
        reports: impl IntoIterator<Item = (NodeName, Vec<u32>)>,
    ) -> (Self, Vec<HostingConflict>) {
        let mut reported: BTreeMap<NodeName, BTreeSet<u32>> = BTreeMap::new();
        for (node, shards) in reports {
            reported.entry(node).or_default().extend(shards);
        }

        let mut allocation = Self::new();
        let mut conflicts = Vec::new();
        // Name order makes "the first reporter" the smallest node name.
        for (node, shards) in reported {
            let mut kept_shards = BTreeSet::new();
            for shard in shards {
                match allocation.owners.get(&shard) {
                    Some(existing_owner) => conflicts.push(HostingConflict {
                        shard,
                        kept: existing_owner.clone(),
                        dropped: node.clone(),
                    }),
                    None => {
                        allocation.owners.insert(shard, node.clone());
                        kept_shards.insert(shard);
                    }
                }
            }
            allocation.hosted.insert(node, kept_shards);
        }
        conflicts
            .sort_by(|left, right| (left.shard, &left.dropped).cmp(&(right.shard, &right.dropped)));
        (allocation, conflicts)
    }

    /// Makes `node` eligible to host shards (it became an up member with a region). Returns false if it
    /// was already a member. It gets shards through later allocations and rebalance rounds.
    pub fn add_node(&mut self, node: NodeName) -> bool {
        match self.hosted.entry(node) {
            BTreeEntry::Occupied(_) => false,
            BTreeEntry::Vacant(vacant) => {
                vacant.insert(BTreeSet::new());
                true
            }
        }
    }

    /// Removes a member that left or was downed. Its shards become unallocated and are returned (sorted)
    /// so the coordinator can allocate them again; moves in flight from or to it are forgotten. Returns
    /// an empty list for a node that was not a member. O(shards of that node).
    pub fn remove_node(&mut self, node: &NodeName) -> Vec<u32> {
        self.draining.remove(node);
        let Some(freed_shards) = self.hosted.remove(node) else {
            return Vec::new();
        };
        for shard in &freed_shards {
            self.owners.remove(shard);
        }
        self.in_flight
            .retain(|_, pending_move| &pending_move.from != node && &pending_move.to != node);
        freed_shards.into_iter().collect()
    }

    /// The home of `shard`: its owner if it has one, otherwise the member with the fewest shards (ties go
    /// to the smallest node name, so every coordinator decides alike), which is then recorded as its
    /// owner. None when there is no member to host it. O(1) for an allocated shard, O(N) otherwise.
    pub fn allocate(&mut self, shard: u32) -> Option<NodeName> {
        if let Some(owner) = self.owners.get(&shard) {
            return Some(owner.clone());
        }
        let mut least_loaded: Option<(&NodeName, usize)> = None;
        // Name order plus a strict comparison keeps the smallest name among equally loaded members.
        for (node, shards) in &self.hosted {
            if self.draining.contains(node) {
                continue;
            }
            let is_less_loaded = match least_loaded {
                None => true,
                Some((_, fewest_shards)) => shards.len() < fewest_shards,
            };
            if is_less_loaded {
                least_loaded = Some((node, shards.len()));
            }
        }
        let (chosen_node, _) = least_loaded?;
        let chosen_node = chosen_node.clone();
        self.assign(shard, chosen_node.clone());
        Some(chosen_node)
    }

    /// Computes one rebalance round: moves from the most loaded member to the least loaded one, one shard
    /// at a time, until `max − min ≤ 1` or `limits.max_moves(allocated shards)` moves are planned. Ties
    /// go to the smallest node name, and a donor gives its lowest-numbered shards first.
    ///
    /// The moves are not applied: each shard still belongs to `from` until the coordinator reports its
    /// hand-off with [`Self::complete_move`] (or gives up with [`Self::abort_move`]). Like Pekko, no new
    /// round starts while moves of the previous one are in flight; this returns an empty list then, as it
    /// does with fewer than two members or when already balanced.
    ///
    /// O(N log N + moves × (log N + log S)); the moves are the fewest any balancing needs.
    pub fn rebalance(&mut self, limits: &RebalanceLimits) -> Vec<ShardMove> {
        if !self.in_flight.is_empty() || self.hosted.len() < 2 {
            return Vec::new();
        }
        let move_limit = limits.max_moves(self.owners.len());

        // (planned shard count, node), so the first entry is the least loaded member and the entries
        // with the last entry's count are the most loaded ones.
        let mut loads: BTreeSet<(usize, &NodeName)> = self
            .hosted
            .iter()
            .filter(|(node, _)| !self.draining.contains(*node))
            .map(|(node, shards)| (shards.len(), node))
            .collect();
        // Highest shard already given by each donor in this round; a donor never receives in the same
        // round (it would have to be both the most and the least loaded), so its next shard is simply
        // the next one in its set.
        let mut last_given_by_donor: HashMap<&NodeName, u32> = HashMap::new();
        let smallest_possible_name = NodeName(String::new());
        let mut moves = Vec::new();

        while moves.len() < move_limit {
            let (Some(&(fewest_shards, recipient)), Some(&(most_shards, _))) =
                (loads.first(), loads.last())
            else {
                break;
            };
            if most_shards <= fewest_shards + 1 {
                break;
            }
            let Some(&(_, donor)) = loads.range((most_shards, &smallest_possible_name)..).next()
            else {
                break;
            };
            let Some(donor_shards) = self.hosted.get(donor) else {
                break;
            };
            let next_shard = match last_given_by_donor.get(donor) {
                None => donor_shards.iter().next(),
                Some(&last_given) => donor_shards
                    .range((Bound::Excluded(last_given), Bound::Unbounded))
                    .next(),
            };
            let Some(&shard) = next_shard else {
                break;
            };

            last_given_by_donor.insert(donor, shard);
            loads.remove(&(most_shards, donor));
            loads.insert((most_shards - 1, donor));
            loads.remove(&(fewest_shards, recipient));
            loads.insert((fewest_shards + 1, recipient));
            moves.push(ShardMove {
                shard,
                from: donor.clone(),
                to: recipient.clone(),
            });
        }

        for planned_move in &moves {
            self.in_flight
                .insert(planned_move.shard, planned_move.clone());
        }
        moves
    }

    /// Records that the hand-off of a rebalance move finished: the shard now belongs to `to`. A move whose
    /// `from` no longer owns the shard is ignored ([`MoveCompletion::Stale`]); if `to` left meanwhile the
    /// shard becomes unallocated ([`MoveCompletion::TargetGone`]) because `from` has already stopped it.
    pub fn complete_move(&mut self, finished_move: &ShardMove) -> MoveCompletion {
        self.forget_in_flight(finished_move);
        if self.owners.get(&finished_move.shard) != Some(&finished_move.from) {
            return MoveCompletion::Stale;
        }
        self.unassign(finished_move.shard);
        if !self.hosted.contains_key(&finished_move.to) {
            return MoveCompletion::TargetGone;
        }
        self.assign(finished_move.shard, finished_move.to.clone());
        MoveCompletion::Moved
    }

    /// Starts moving every shard of a leaving member to the least loaded of the others (each move counted
    /// as soon as it is planned), and stops giving it new shards. The moves are completed or aborted like
    /// rebalance moves; shards already in flight are not planned twice. O(S × N) for S shards of the node.
    pub fn drain_node(&mut self, node: &NodeName) -> Vec<ShardMove> {
        if !self.hosted.contains_key(node) {
            return Vec::new();
        }
        self.draining.insert(node.clone());
        let mut planned: HashMap<NodeName, usize> = self
            .hosted
            .iter()
            .filter(|(member, _)| !self.draining.contains(*member))
            .map(|(member, shards)| (member.clone(), shards.len()))
            .collect();
        let shards: Vec<u32> = self
            .hosted
            .get(node)
            .map(|shards| shards.iter().copied().collect())
            .unwrap_or_default();
        let mut moves = Vec::new();
        for shard in shards {
            if self.in_flight.contains_key(&shard) {
                continue;
            }
            let target = planned
                .iter()
                .min_by(|left, right| (left.1, left.0).cmp(&(right.1, right.0)))
                .map(|(member, _)| member.clone());
            let Some(target) = target else {
                break;
            };
            if let Some(count) = planned.get_mut(&target) {
                *count += 1;
            }
            let planned_move = ShardMove {
                shard,
                from: node.clone(),
                to: target,
            };
            self.in_flight.insert(shard, planned_move.clone());
            moves.push(planned_move);
        }
        moves
    }

    /// Records that `node` already hosts `shard` (a member that was running before it joined, e.g. after a
    /// partition healed): an unowned shard becomes its; returns the other owner when the shard has one, so
    /// the caller can tell `node` to drop its copy.
    pub fn adopt(&mut self, node: &NodeName, shard: u32) -> Option<NodeName> {
        match self.owners.get(&shard) {
            Some(owner) if owner == node => None,
            Some(owner) => Some(owner.clone()),
            None if self.hosted.contains_key(node) => {
                self.assign(shard, node.clone());
                None
            }
            None => None,
        }
    }

    /// A member that was leaving is up again (a restart under the same name): it may host shards again.
    pub fn undrain(&mut self, node: &NodeName) {
        self.draining.remove(node);
    }

    /// Whether a member is leaving (draining its shards).
    pub fn is_draining(&self, node: &NodeName) -> bool {
        self.draining.contains(node)
    }

    /// The move in flight for a shard, if any: its home is about to change.
    pub fn move_of(&self, shard: u32) -> Option<&ShardMove> {
        self.in_flight.get(&shard)
    }

    /// Forgets a move whose hand-off failed or timed out, leaving the shard with `from`, so the next
    /// round can start. Returns false if the move was not in flight.
    pub fn abort_move(&mut self, abandoned_move: &ShardMove) -> bool {
        self.forget_in_flight(abandoned_move)
    }

    /// The owner of `shard`, without allocating it.
    pub fn owner(&self, shard: u32) -> Option<&NodeName> {
        self.owners.get(&shard)
    }

    /// The shards `node` hosts, in order; None if it is not a member.
    pub fn shards_of(&self, node: &NodeName) -> Option<&BTreeSet<u32>> {
        self.hosted.get(node)
    }

    /// Each member with its number of allocated shards, by node name: what balance is measured on.
    pub fn counts(&self) -> impl Iterator<Item = (&NodeName, usize)> + '_ {
        self.hosted
            .iter()
            .map(|(node, shards)| (node, shards.len()))
    }

    /// The members that may host shards, by node name.
    pub fn members(&self) -> impl Iterator<Item = &NodeName> + '_ {
        self.hosted.keys()
    }

    /// Whether `node` may host shards.
    pub fn is_member(&self, node: &NodeName) -> bool {
        self.hosted.contains_key(node)
    }

    /// How many shards have an owner (never-requested shards are not counted).
    pub fn allocated_shards(&self) -> usize {
        self.owners.len()
    }

    /// The moves of the last round that are still being handed off, by shard.
    pub fn moves_in_flight(&self) -> impl Iterator<Item = &ShardMove> + '_ {
        self.in_flight.values()
    }

    /// Removes `pending_move` from the moves in flight if it is exactly the one recorded for its shard.
    fn forget_in_flight(&mut self, pending_move: &ShardMove) -> bool {
        if self.in_flight.get(&pending_move.shard) == Some(pending_move) {
            self.in_flight.remove(&pending_move.shard);
            return true;
        }
        false
    }

    /// Gives an unallocated shard to a member, keeping `owners` and `hosted` in step.
    fn assign(&mut self, shard: u32, node: NodeName) {
        self.hosted.entry(node.clone()).or_default().insert(shard);
        self.owners.insert(shard, node);
    }

    /// Takes a shard away from its owner, keeping `owners` and `hosted` in step.
    fn unassign(&mut self, shard: u32) {
        if let Some(previous_owner) = self.owners.remove(&shard)
            && let Some(shards) = self.hosted.get_mut(&previous_owner)
        {
            shards.remove(&shard);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str) -> NodeName {
        NodeName::from(name)
    }

    /// `node-007@10.0.0.7`: zero-padded so name order is numeric order.
    fn numbered_node(index: usize) -> NodeName {
        NodeName::new(format!("node-{index:03}@10.0.0.{index}"))
    }

    /// Limits that never cut a round short, for small examples where the default relative limit
    /// would allow a single move.
    fn unlimited() -> RebalanceLimits {
        RebalanceLimits {
            absolute_limit: usize::MAX,
            relative_limit: 1.0,
        }
    }

    fn allocation_with_members(names: &[&str]) -> ShardAllocation {
        let mut allocation = ShardAllocation::new();
        for name in names {
            allocation.add_node(node(name));
        }
        allocation
    }

    fn spread(allocation: &ShardAllocation) -> usize {
        let counts: Vec<usize> = allocation.counts().map(|(_, count)| count).collect();
        let most = counts.iter().copied().max().unwrap_or(0);
        let fewest = counts.iter().copied().min().unwrap_or(0);
        most - fewest
    }

    /// The fewest moves any balancing needs: the most loaded members keep `base + 1` shards, the others
    /// `base`, and every shard above a member's target must move.
    fn minimal_moves_to_balance(allocation: &ShardAllocation) -> usize {
        let mut counts: Vec<usize> = allocation.counts().map(|(_, count)| count).collect();
        counts.sort_unstable_by(|left, right| right.cmp(left));
        let total: usize = counts.iter().sum();
        let base = total / counts.len();
        let members_with_one_more = total % counts.len();
        counts
            .iter()
            .enumerate()
            .map(|(position, &count)| {
                let target = if position < members_with_one_more {
                    base + 1
                } else {
                    base
                };
                count.saturating_sub(target)
            })
            .sum()
    }

    /// Runs rounds of (rebalance, then complete every move) until a round plans nothing, checking the
    /// limit on each; returns the number of rounds that moved shards.
    fn rebalance_until_stable(allocation: &mut ShardAllocation, limits: &RebalanceLimits) -> usize {
        let mut rounds = 0;
        loop {
            let move_limit = limits.max_moves(allocation.allocated_shards());
            let moves = allocation.rebalance(limits);
            if moves.is_empty() {
                return rounds;
            }
            assert!(moves.len() <= move_limit, "round exceeded the move limit");
            rounds += 1;
            for planned_move in &moves {
                assert_eq!(
                    allocation.complete_move(planned_move),
                    MoveCompletion::Moved
                );
            }
            assert!(rounds < 10_000, "rebalancing does not converge");
        }
    }

    #[test]
    fn allocate_gives_a_new_shard_to_the_member_with_the_fewest_shards() {
        let mut allocation = allocation_with_members(&["a@h", "b@h", "c@h"]);
        for shard in 0..3 {
            allocation.allocate(shard);
        }
        allocation.add_node(node("d@h"));
        assert_eq!(allocation.allocate(10), Some(node("d@h")));
        // a, b, c hold one each, d holds one: the tie goes to the smallest name.
        assert_eq!(allocation.allocate(11), Some(node("a@h")));
        assert_eq!(allocation.owner(11), Some(&node("a@h")));
    }

    #[test]
    fn allocate_breaks_ties_by_node_name_whatever_the_insertion_order() {
        let mut allocation = allocation_with_members(&["c@h", "a@h", "b@h"]);
        let owners: Vec<NodeName> = (0..6)
            .filter_map(|shard| allocation.allocate(shard))
            .collect();
        let expected: Vec<NodeName> = ["a@h", "b@h", "c@h", "a@h", "b@h", "c@h"]
            .into_iter()
            .map(node)
            .collect();
        assert_eq!(owners, expected);
    }

    #[test]
    fn allocate_returns_the_existing_owner_of_an_allocated_shard() {
        let mut allocation = allocation_with_members(&["a@h", "b@h"]);
        assert_eq!(allocation.allocate(7), Some(node("a@h")));
        assert_eq!(allocation.allocate(7), Some(node("a@h")));
        assert_eq!(allocation.allocated_shards(), 1);
    }

    #[test]
    fn allocate_without_members_returns_none_and_records_nothing() {
        let mut allocation = ShardAllocation::new();
        assert_eq!(allocation.allocate(0), None);
        assert_eq!(allocation.owner(0), None);
        assert_eq!(allocation.allocated_shards(), 0);
    }

    #[test]
    fn adding_a_member_twice_is_a_no_op() {
        let mut allocation = ShardAllocation::new();
        assert!(allocation.add_node(node("a@h")));
        allocation.allocate(1);
        assert!(!allocation.add_node(node("a@h")));
        assert_eq!(
            allocation.shards_of(&node("a@h")).map(BTreeSet::len),
            Some(1)
        );
    }

    #[test]
    fn removing_a_node_frees_exactly_its_shards() {
        let mut allocation = allocation_with_members(&["a@h", "b@h", "c@h"]);
        for shard in 0..9 {
            allocation.allocate(shard);
        }
        let b_shards: Vec<u32> = allocation
            .shards_of(&node("b@h"))
            .map(|shards| shards.iter().copied().collect())
            .unwrap_or_default();

        let freed = allocation.remove_node(&node("b@h"));

        assert_eq!(freed, b_shards);
        assert_eq!(freed, vec![1, 4, 7]);
        assert!(!allocation.is_member(&node("b@h")));
        assert_eq!(allocation.allocated_shards(), 6);
        for shard in &freed {
            assert_eq!(allocation.owner(*shard), None);
        }
        for shard in [0, 3, 6] {
            assert_eq!(allocation.owner(shard), Some(&node("a@h")));
        }
        for shard in [2, 5, 8] {
            assert_eq!(allocation.owner(shard), Some(&node("c@h")));
        }
        assert_eq!(allocation.remove_node(&node("b@h")), Vec::<u32>::new());
        // The freed shards find new homes among the remaining members.
        for shard in freed {
            let new_owner = allocation.allocate(shard);
            assert!(new_owner == Some(node("a@h")) || new_owner == Some(node("c@h")));
        }
    }

    #[test]
    fn removing_a_node_forgets_the_moves_in_flight_from_or_to_it() {
        let mut allocation = allocation_with_members(&["a@h"]);
        for shard in 0..4 {
            allocation.allocate(shard);
        }
        allocation.add_node(node("b@h"));
        let moves = allocation.rebalance(&unlimited());
        assert_eq!(moves.len(), 2);

        allocation.remove_node(&node("b@h"));

        assert_eq!(allocation.moves_in_flight().count(), 0);
        assert_eq!(
            allocation.complete_move(&moves[0]),
            MoveCompletion::TargetGone
        );
        assert_eq!(allocation.owner(moves[0].shard), None);
    }

    #[test]
    fn max_moves_is_the_smaller_limit_but_at_least_one() {
        let defaults = RebalanceLimits::default();
        assert_eq!(defaults.absolute_limit, 20);
        assert_eq!(defaults.relative_limit, 0.1);
        assert_eq!(defaults.max_moves(1000), 20);
        assert_eq!(defaults.max_moves(150), 15);
        // ceil(0.1 × 11) = 2
        assert_eq!(defaults.max_moves(11), 2);
        assert_eq!(defaults.max_moves(0), 1);
        let zero_limits = RebalanceLimits {
            absolute_limit: 0,
            relative_limit: 0.0,
        };
        assert_eq!(zero_limits.max_moves(1000), 1);
        let nonsense_limits = RebalanceLimits {
            absolute_limit: 5,
            relative_limit: f64::NAN,
        };
        assert_eq!(nonsense_limits.max_moves(1000), 1);
    }

    #[test]
    fn rebalance_respects_the_move_limit() {
        let mut allocation = allocation_with_members(&["a@h"]);
        for shard in 0..100 {
            allocation.allocate(shard);
        }
        allocation.add_node(node("b@h"));
        let limits = RebalanceLimits {
            absolute_limit: 7,
            relative_limit: 0.5,
        };

        let moves = allocation.rebalance(&limits);

        assert_eq!(moves.len(), 7);
        for planned_move in &moves {
            assert_eq!(planned_move.from, node("a@h"));
            assert_eq!(planned_move.to, node("b@h"));
        }
        // The lowest-numbered shards go first.
        let moved_shards: Vec<u32> = moves
            .iter()
            .map(|planned_move| planned_move.shard)
            .collect();
        assert_eq!(moved_shards, vec![0, 1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn rebalance_does_not_apply_its_moves() {
        let mut allocation = allocation_with_members(&["a@h"]);
        for shard in 0..4 {
            allocation.allocate(shard);
        }
        allocation.add_node(node("b@h"));

        let moves = allocation.rebalance(&unlimited());

        assert_eq!(moves.len(), 2);
        for planned_move in &moves {
            assert_eq!(allocation.owner(planned_move.shard), Some(&node("a@h")));
        }
        assert_eq!(allocation.moves_in_flight().count(), 2);
        for planned_move in &moves {
            assert_eq!(
                allocation.complete_move(planned_move),
                MoveCompletion::Moved
            );
            assert_eq!(allocation.owner(planned_move.shard), Some(&node("b@h")));
        }
        assert_eq!(spread(&allocation), 0);
        assert_eq!(allocation.moves_in_flight().count(), 0);
    }

    #[test]
    fn rebalance_starts_no_round_while_moves_are_in_flight() {
        let mut allocation = allocation_with_members(&["a@h"]);
        for shard in 0..10 {
            allocation.allocate(shard);
        }
        allocation.add_node(node("b@h"));
        let limits = RebalanceLimits {
            absolute_limit: 2,
            relative_limit: 1.0,
        };
        let first_round = allocation.rebalance(&limits);
        assert_eq!(first_round.len(), 2);

        assert!(allocation.rebalance(&limits).is_empty());

        assert_eq!(
            allocation.complete_move(&first_round[0]),
            MoveCompletion::Moved
        );
        assert!(allocation.rebalance(&limits).is_empty());
        assert!(allocation.abort_move(&first_round[1]));
        assert!(!allocation.abort_move(&first_round[1]));
        assert_eq!(allocation.owner(first_round[1].shard), Some(&node("a@h")));
        assert_eq!(allocation.rebalance(&limits).len(), 2);
    }

    #[test]
    fn rebalance_of_a_balanced_allocation_moves_nothing() {
        let mut allocation = allocation_with_members(&["a@h", "b@h", "c@h"]);
        for shard in 0..8 {
            allocation.allocate(shard);
        }
        assert_eq!(spread(&allocation), 1);
        assert!(allocation.rebalance(&RebalanceLimits::default()).is_empty());
        let mut single_member = allocation_with_members(&["a@h"]);
        single_member.allocate(0);
        assert!(
            single_member
                .rebalance(&RebalanceLimits::default())
                .is_empty()
        );
    }

    #[test]
    fn unallocated_shards_do_not_count_towards_balance() {
        // 1000 possible shards, only 3 ever requested: a new member gets one, not a third of 1000.
        let mut allocation = allocation_with_members(&["a@h"]);
        for shard in [5, 500, 999] {
            allocation.allocate(shard);
        }
        allocation.add_node(node("b@h"));
        let moves = allocation.rebalance(&RebalanceLimits::default());
        assert_eq!(moves.len(), 1);
        assert_eq!(moves[0].shard, 5);
    }

    #[test]
    fn complete_move_ignores_a_stale_move() {
        let mut allocation = allocation_with_members(&["a@h"]);
        for shard in 0..4 {
            allocation.allocate(shard);
        }
        allocation.add_node(node("b@h"));
        allocation.add_node(node("c@h"));
        let moves = allocation.rebalance(&unlimited());
        let first_move = moves[0].clone();
        assert_eq!(allocation.complete_move(&first_move), MoveCompletion::Moved);

        // The same completion delivered twice, and a move from a node that never owned the shard.
        assert_eq!(allocation.complete_move(&first_move), MoveCompletion::Stale);
        let move_from_wrong_owner = ShardMove {
            shard: first_move.shard,
            from: node("c@h"),
            to: node("a@h"),
        };
        assert_eq!(
            allocation.complete_move(&move_from_wrong_owner),
            MoveCompletion::Stale
        );
        assert_eq!(allocation.owner(first_move.shard), Some(&first_move.to));

        // A move whose source left before the hand-off finished.
        let second_move = moves[1].clone();
        let freed = allocation.remove_node(&second_move.from);
        assert!(freed.contains(&second_move.shard));
        assert_eq!(
            allocation.complete_move(&second_move),
            MoveCompletion::Stale
        );
        assert_eq!(allocation.owner(second_move.shard), None);
    }

    #[test]
    fn complete_move_to_a_departed_node_leaves_the_shard_unallocated() {
        let mut allocation = allocation_with_members(&["a@h"]);
        for shard in 0..2 {
            allocation.allocate(shard);
        }
        allocation.add_node(node("b@h"));
        let moves = allocation.rebalance(&RebalanceLimits::default());
        assert_eq!(moves.len(), 1);
        allocation.remove_node(&node("b@h"));

        assert_eq!(
            allocation.complete_move(&moves[0]),
            MoveCompletion::TargetGone
        );

        assert_eq!(allocation.owner(moves[0].shard), None);
        assert_eq!(
            allocation.shards_of(&node("a@h")).map(BTreeSet::len),
            Some(1)
        );
        assert_eq!(allocation.allocate(moves[0].shard), Some(node("a@h")));
    }

    #[test]
    fn rebuild_from_hosted_reports_keeps_the_smallest_node_name_and_returns_conflicts() {
        let reports = vec![
            (node("c@h"), vec![4, 5, 1]),
            (node("a@h"), vec![1, 2]),
            (node("b@h"), vec![3, 1, 5]),
            (node("d@h"), vec![]),
        ];
        let mut reversed_reports = reports.clone();
        reversed_reports.reverse();

        let (allocation, conflicts) = ShardAllocation::from_hosted(reports);
        let (reversed_allocation, reversed_conflicts) =
            ShardAllocation::from_hosted(reversed_reports);

        assert_eq!(
            conflicts,
            vec![
                HostingConflict {
                    shard: 1,
                    kept: node("a@h"),
                    dropped: node("b@h"),
                },
                HostingConflict {
                    shard: 1,
                    kept: node("a@h"),
                    dropped: node("c@h"),
                },
                HostingConflict {
                    shard: 5,
                    kept: node("b@h"),
                    dropped: node("c@h"),
                },
            ]
        );
        assert_eq!(reversed_conflicts, conflicts);
        let counts: Vec<(&NodeName, usize)> = allocation.counts().collect();
        assert_eq!(
            counts,
            vec![
                (&node("a@h"), 2),
                (&node("b@h"), 2),
                (&node("c@h"), 1),
                (&node("d@h"), 0),
            ]
        );
        assert_eq!(
            reversed_allocation.counts().collect::<Vec<_>>(),
            counts.clone()
        );
        assert_eq!(allocation.owner(1), Some(&node("a@h")));
        assert_eq!(allocation.owner(5), Some(&node("b@h")));
        assert_eq!(allocation.owner(4), Some(&node("c@h")));
        assert_eq!(allocation.allocated_shards(), 5);
        assert!(allocation.is_member(&node("d@h")));
    }

    #[test]
    fn an_unlimited_round_balances_with_the_fewest_possible_moves() {
        // Deterministic pseudo-random loads (a linear congruential generator), no new dependency.
        let mut seed: u64 = 0x5eed;
        let mut next_random = move |bound: u64| {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) % bound
        };
        for _ in 0..200 {
            let member_count = 2 + next_random(12) as usize;
            let mut allocation = ShardAllocation::new();
            let mut next_shard = 0u32;
            for index in 0..member_count {
                let member = numbered_node(index);
                allocation.add_node(member.clone());
                for _ in 0..next_random(40) {
                    allocation.assign(next_shard, member.clone());
                    next_shard += 1;
                }
            }
            let fewest_moves = minimal_moves_to_balance(&allocation);

            let moves = allocation.rebalance(&unlimited());

            assert_eq!(moves.len(), fewest_moves);
            for planned_move in &moves {
                assert_eq!(
                    allocation.complete_move(planned_move),
                    MoveCompletion::Moved
                );
            }
            assert!(spread(&allocation) <= 1);
        }
    }

    #[test]
    fn hundred_nodes_with_a_thousand_shards_are_balanced_within_two_rounds_after_a_join() {
        let mut allocation = ShardAllocation::new();
        for index in 0..100 {
            allocation.add_node(numbered_node(index));
        }
        for shard in 0..1000 {
            assert!(allocation.allocate(shard).is_some());
        }
        assert_eq!(spread(&allocation), 0);
        allocation.add_node(numbered_node(100));
        assert_eq!(spread(&allocation), 10);

        let rounds = rebalance_until_stable(&mut allocation, &RebalanceLimits::default());

        // 1000 shards on 101 nodes: 91 keep 10, 10 hold 9; the newcomer receives 9, within one round of
        // at most 20 moves.
        assert!(rounds <= 2);
        assert_eq!(rounds, 1);
        assert!(spread(&allocation) <= 1);
        assert_eq!(
            allocation.shards_of(&numbered_node(100)).map(BTreeSet::len),
            Some(9)
        );
        assert_eq!(allocation.allocated_shards(), 1000);
    }

    #[test]
    fn three_nodes_with_a_thousand_shards_are_balanced_within_the_rounds_the_limit_implies_after_a_fourth_joins()
     {
        let limits = RebalanceLimits::default();
        let mut allocation = ShardAllocation::new();
        for index in 0..3 {
            allocation.add_node(numbered_node(index));
        }
        for shard in 0..1000 {
            assert!(allocation.allocate(shard).is_some());
        }
        allocation.add_node(numbered_node(3));
        // 334 + 333 + 333 must become 250 each: 250 moves at max(1, min(20, ceil(0.1 × 1000))) = 20 per
        // round.
        let fewest_moves = minimal_moves_to_balance(&allocation);
        let move_limit = limits.max_moves(allocation.allocated_shards());
        let expected_rounds = fewest_moves.div_ceil(move_limit);
        assert_eq!((fewest_moves, move_limit, expected_rounds), (250, 20, 13));

        let rounds = rebalance_until_stable(&mut allocation, &limits);

        assert_eq!(rounds, expected_rounds);
        assert_eq!(spread(&allocation), 0);
        assert_eq!(
            allocation.shards_of(&numbered_node(3)).map(BTreeSet::len),
            Some(250)
        );
    }

    #[test]
    fn a_draining_member_gives_all_its_shards_away_and_gets_no_new_ones() {
        let mut allocation = ShardAllocation::new();
        for name in ["a", "b", "c"] {
            allocation.add_node(NodeName::new(name));
        }
        for shard in 0..9 {
            allocation.allocate(shard);
        }
        let leaving = NodeName::new("a");
        let moves = allocation.drain_node(&leaving);
        assert_eq!(moves.len(), 3);
        assert!(moves.iter().all(|planned| planned.to != leaving));
        for planned in &moves {
            assert_eq!(allocation.complete_move(planned), MoveCompletion::Moved);
        }
        assert_ne!(allocation.allocate(100), Some(leaving.clone()));
        assert_eq!(allocation.shards_of(&leaving).map(BTreeSet::len), Some(0));
        let counts: Vec<usize> = allocation
            .counts()
            .filter(|(node, _)| **node != leaving)
            .map(|(_, count)| count)
            .collect();
        assert_eq!(counts.iter().sum::<usize>(), 10);
        assert!(counts.iter().max().unwrap_or(&0) - counts.iter().min().unwrap_or(&0) <= 1);
    }
}
