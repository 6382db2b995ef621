//! This node's view of the cluster, published by the membership actor on a watch channel so regions and the
//! coordinator can read it without asking.

use std::time::Duration;

/// The life-cycle state a member announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberState {
    /// Started, not yet able to host shards.
    Joining,
    Up,
    Leaving,
}

/// One member as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// `name@host`.
    pub name: String,
    /// `host:port` of its cluster listener.
    pub cluster_address: String,
    /// Start time in microseconds; lower is older.
    pub incarnation: u64,
    pub state: MemberState,
    pub reachable: bool,
}

/// Members (this node included), ordered oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterView {
    pub self_name: String,
    pub members: Vec<Member>,
}

impl ClusterView {
    /// The oldest member that is up (reachable or not): it hosts the shard coordinator. The singleton only
    /// moves when that member leaves or is downed, as in Pekko.
    pub fn coordinator_host(&self) -> Option<&str> {
        self.members
            .iter()
            .find(|member| member.state == MemberState::Up)
            .map(|member| member.name.as_str())
    }

    /// The oldest reachable up member: it makes downing decisions.
    pub fn leader(&self) -> Option<&str> {
        self.members
            .iter()
            .find(|member| member.state == MemberState::Up && member.reachable)
            .map(|member| member.name.as_str())
    }

    /// Members that may host shards.
    pub fn shard_hosts(&self) -> impl Iterator<Item = &Member> {
        self.members
            .iter()
            .filter(|member| member.state == MemberState::Up)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.members.iter().any(|member| member.name == name)
    }
}

/// Timing of the failure detector.
#[derive(Debug, Clone, Copy)]
pub struct DetectorTiming {
    pub heartbeat_interval: Duration,
    pub unreachable_after: Duration,
    pub down_after: Duration,
}
